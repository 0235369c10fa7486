//! Classification: given what happened to one attempt, may it be retried at all? Scheduling
//! (how long to wait, whether attempts, deadline and budget allow it) is decided separately.

use std::fmt::Debug;
use std::time::SystemTime;

use http::{HeaderMap, Method, StatusCode};

use super::RetryPolicy;
use crate::error::{TimeoutKind, TransportError};
use crate::retry_after::{RetryAfter, retry_after_from_headers};

/// What happened to one attempt.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Outcome<'a> {
    /// A response head arrived (the body is complete and within the limit).
    Response {
        /// The status.
        status: StatusCode,
        /// The headers.
        headers: &'a HeaderMap,
        /// The body (complete, within the limit), for vendors that signal in it.
        body: &'a bytes::Bytes,
    },
    /// The transport failed.
    Failed(&'a TransportError),
    /// The exchange's own timer expired while the attempt was in flight.
    TimedOut(TimeoutKind),
}

/// What a classifier knows about the request.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ClassifyContext<'a> {
    /// The request method.
    pub method: &'a Method,
    /// Whether the request may safely be sent twice: an idempotent method (RFC 9110 9.2.2), an
    /// idempotency key, or the caller's explicit word.
    pub idempotent: bool,
    /// The policy in force.
    pub policy: &'a RetryPolicy,
    /// The wall-clock time at which the outcome arrived, for hints given as absolute times.
    pub wall: SystemTime,
}

/// Why a retry is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// The request never reached the server (refused, DNS, connect or pool timeout).
    NeverSent,
    /// The connection failed after the request may have been sent (reset, closed, read/write timeout).
    Transport,
    /// The attempt timed out.
    Timeout,
    /// A transient server error (by default 408, 500, 502, 503, 504).
    ServerError,
    /// The server throttled the request (429, 503 with `Retry-After`, or a vendor's signal).
    Throttled,
}

impl RetryReason {
    /// Whether the server certainly did not process the request, so that any method may be re-sent.
    pub fn is_safe_for_any_method(self) -> bool {
        matches!(self, Self::NeverSent | Self::Throttled)
    }

    /// A short stable name for telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeverSent => "never_sent",
            Self::Transport => "transport",
            Self::Timeout => "timeout",
            Self::ServerError => "server_error",
            Self::Throttled => "throttled",
        }
    }
}

/// Why a retry is refused even though the failure is of a transient kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForbidReason {
    /// The request may have been processed and is not idempotent.
    NotIdempotent,
}

/// The verdict of a classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryAction {
    /// Nothing to retry: a success, or a final failure.
    NoAction,
    /// Retry, after the hint when there is one, else after the backoff.
    Retry {
        /// Why.
        reason: RetryReason,
        /// The server's (or vendor's) word on when to retry; malformed hints are `None`.
        hint: Option<RetryAfter>,
    },
    /// The failure is transient but must not be retried.
    Forbidden(ForbidReason),
}

impl RetryAction {
    /// A retry with no hint.
    pub fn retry(reason: RetryReason) -> Self {
        Self::Retry { reason, hint: None }
    }
}

/// A pluggable classifier, for vendors with their own signals (GitHub's 403 with
/// `x-ratelimit-remaining: 0`, Stripe's `Stripe-Should-Retry`). Delegate to [`classify`] for
/// everything you do not override.
pub trait Classifier: Debug + Send + Sync {
    /// Classifies one attempt's outcome.
    fn classify(&self, outcome: &Outcome<'_>, ctx: &ClassifyContext<'_>) -> RetryAction;

    /// Whether a final `status` is an answer of the API (a lookup's 404: the call is logged
    /// at DEBUG) rather than a failure (logged at WARN). The default is [`is_answer`].
    fn is_answer(&self, status: http::StatusCode) -> bool {
        is_answer(status)
    }
}

/// The statuses that are answers by default, not failures: 304 Not Modified, 404 Not Found,
/// 409 Conflict, 410 Gone and 412 Precondition Failed (RFC 9110 15). A call that ends with one
/// is logged at DEBUG; every other final error at WARN.
pub fn is_answer(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 304 | 404 | 409 | 410 | 412)
}

/// The default rules:
/// - never-sent transport failures retry for every method;
/// - may-have-been-sent failures (reset, closed, read/write/attempt timeout) retry only when
///   the request is idempotent;
/// - the retryable statuses (408, 500, 502, 503, 504) retry only when idempotent;
/// - throttling (429, and 503 with a valid `Retry-After`) retries for any method, honouring the hint;
/// - TLS, protocol, body-too-large, the whole-call deadline and every other status are final.
pub fn classify(outcome: &Outcome<'_>, ctx: &ClassifyContext<'_>) -> RetryAction {
    let gate = |reason: RetryReason, hint| {
        if reason.is_safe_for_any_method() || ctx.idempotent {
            RetryAction::Retry { reason, hint }
        } else {
            RetryAction::Forbidden(ForbidReason::NotIdempotent)
        }
    };
    match *outcome {
        Outcome::Response {
            status, headers, ..
        } => {
            let code = status.as_u16();
            let throttled = ctx.policy.throttling_statuses.contains(&code);
            let retryable = ctx.policy.retryable_statuses.contains(&code);
            if !throttled && !retryable && code != 503 {
                // Most responses: no header to look up.
                return RetryAction::NoAction;
            }
            let hint = retry_after_from_headers(headers).and_then(Result::ok);
            if throttled || (code == 503 && hint.is_some()) {
                gate(RetryReason::Throttled, hint)
            } else if retryable {
                gate(RetryReason::ServerError, hint)
            } else {
                RetryAction::NoAction
            }
        }
        Outcome::Failed(error) => {
            use crate::error::TransportErrorKind as K;
            match error.kind() {
                K::Tls
                | K::Protocol
                | K::BodyTooLarge
                | K::Decode
                | K::Unsupported
                | K::ProxyRefused => RetryAction::NoAction,
                kind if !kind.may_have_been_sent() => gate(RetryReason::NeverSent, None),
                K::WriteTimeout | K::ReadTimeout => gate(RetryReason::Timeout, None),
                _ => gate(RetryReason::Transport, None),
            }
        }
        Outcome::TimedOut(TimeoutKind::Deadline) => RetryAction::NoAction,
        Outcome::TimedOut(kind) if !kind.may_have_been_sent() => gate(RetryReason::NeverSent, None),
        Outcome::TimedOut(_) => gate(RetryReason::Timeout, None),
    }
}

/// The default classifier as a [`Classifier`] value.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl Classifier for DefaultClassifier {
    fn classify(&self, outcome: &Outcome<'_>, ctx: &ClassifyContext<'_>) -> RetryAction {
        classify(outcome, ctx)
    }
}

/// Whether a method is idempotent by RFC 9110 section 9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
pub fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TransportErrorKind as K;
    use http::HeaderValue;
    use std::time::Duration;

    fn ctx<'a>(method: &'a Method, policy: &'a RetryPolicy) -> ClassifyContext<'a> {
        ClassifyContext {
            method,
            idempotent: is_idempotent_method(method),
            policy,
            wall: SystemTime::UNIX_EPOCH,
        }
    }

    fn status(code: u16, headers: &HeaderMap, method: Method) -> RetryAction {
        let policy = RetryPolicy::standard();
        let body = bytes::Bytes::new();
        let outcome = Outcome::Response {
            status: StatusCode::from_u16(code).unwrap(),
            headers,
            body: &body,
        };
        classify(&outcome, &ctx(&method, &policy))
    }

    fn failure(kind: K, method: Method) -> RetryAction {
        let policy = RetryPolicy::standard();
        let error = TransportError::from_kind(kind);
        classify(&Outcome::Failed(&error), &ctx(&method, &policy))
    }

    #[test]
    fn rfc_9110_idempotent_methods_are_recognised() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_idempotent_method(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent_method(&m), "{m}");
        }
    }

    #[test]
    fn never_sent_failures_retry_for_every_method() {
        for kind in [
            K::Dns,
            K::ConnectRefused,
            K::Connect,
            K::ConnectTimeout,
            K::PoolTimeout,
            // Reached the server, which refused it unprocessed (RFC 9113 8.7: safe to retry).
            K::NotProcessed,
        ] {
            assert_eq!(
                failure(kind, Method::POST),
                RetryAction::retry(RetryReason::NeverSent),
                "{kind}"
            );
        }
    }

    #[test]
    fn may_have_been_sent_failures_retry_only_idempotent_requests() {
        for kind in [
            K::ClosedBeforeResponse,
            K::ClosedDuringBody,
            K::ReadTimeout,
            K::WriteTimeout,
            K::Other,
        ] {
            assert!(
                matches!(failure(kind, Method::GET), RetryAction::Retry { .. }),
                "{kind}"
            );
            assert_eq!(
                failure(kind, Method::POST),
                RetryAction::Forbidden(ForbidReason::NotIdempotent),
                "{kind}"
            );
        }
    }

    #[test]
    fn tls_protocol_and_oversize_failures_are_final() {
        for kind in [K::Tls, K::Protocol, K::BodyTooLarge, K::Decode] {
            assert_eq!(failure(kind, Method::GET), RetryAction::NoAction, "{kind}");
        }
    }

    #[test]
    fn transient_statuses_retry_idempotent_requests_only() {
        let h = HeaderMap::new();
        for code in [408, 500, 502, 503, 504] {
            assert_eq!(
                status(code, &h, Method::GET),
                RetryAction::retry(RetryReason::ServerError),
                "{code}"
            );
            assert_eq!(
                status(code, &h, Method::POST),
                RetryAction::Forbidden(ForbidReason::NotIdempotent)
            );
        }
    }

    #[test]
    fn other_statuses_are_final() {
        let h = HeaderMap::new();
        for code in [
            200, 201, 204, 301, 304, 400, 401, 403, 404, 409, 422, 501, 505,
        ] {
            assert_eq!(
                status(code, &h, Method::GET),
                RetryAction::NoAction,
                "{code}"
            );
        }
    }

    #[test]
    fn throttling_retries_any_method_and_carries_the_hint() {
        let mut h = HeaderMap::new();
        assert_eq!(
            status(429, &h, Method::POST),
            RetryAction::retry(RetryReason::Throttled)
        );
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("2"));
        let hint = Some(RetryAfter::Delay(Duration::from_secs(2)));
        assert_eq!(
            status(429, &h, Method::POST),
            RetryAction::Retry {
                reason: RetryReason::Throttled,
                hint
            }
        );
        // 503 with a valid Retry-After is throttling too, so POST may retry.
        assert_eq!(
            status(503, &h, Method::POST),
            RetryAction::Retry {
                reason: RetryReason::Throttled,
                hint
            }
        );
    }

    #[test]
    fn a_503_with_a_malformed_retry_after_is_an_ordinary_server_error() {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("later"));
        assert_eq!(
            status(503, &h, Method::GET),
            RetryAction::retry(RetryReason::ServerError)
        );
        assert_eq!(
            status(503, &h, Method::POST),
            RetryAction::Forbidden(ForbidReason::NotIdempotent)
        );
    }

    #[test]
    fn an_idempotency_key_makes_a_post_retryable_after_a_reset() {
        let policy = RetryPolicy::standard();
        let mut c = ctx(&Method::POST, &policy);
        c.idempotent = true;
        let error = TransportError::from_kind(K::ClosedBeforeResponse);
        assert_eq!(
            classify(&Outcome::Failed(&error), &c),
            RetryAction::retry(RetryReason::Transport)
        );
    }

    #[test]
    fn attempt_timeouts_retry_idempotent_requests_and_the_deadline_never_retries() {
        let policy = RetryPolicy::standard();
        let get = ctx(&Method::GET, &policy);
        let post = ctx(&Method::POST, &policy);
        assert_eq!(
            classify(&Outcome::TimedOut(TimeoutKind::Attempt), &get),
            RetryAction::retry(RetryReason::Timeout)
        );
        assert_eq!(
            classify(&Outcome::TimedOut(TimeoutKind::Attempt), &post),
            RetryAction::Forbidden(ForbidReason::NotIdempotent)
        );
        assert_eq!(
            classify(&Outcome::TimedOut(TimeoutKind::Deadline), &get),
            RetryAction::NoAction
        );
    }
}
