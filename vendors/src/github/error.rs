//! The domain error of a GitHub call ([`GitHubApiError`]).

use std::time::SystemTime;

use egress_core::http::StatusCode;
use egress_core::{CorrelationId, Error, RetryAfter};
use egress_core::{resolve_retry_after, response_date};

use super::rate_limit::{GitHubClassifier, RateLimitKind};
use super::types::GitHubError;

/// The error of a [`GitHubClient`](super::GitHubClient) call.
///
/// Every variant but [`ForeignLink`](Self::ForeignLink) keeps the core error it came from (with
/// the attempts, elapsed time and correlation ID of the call); variants for an error status also
/// keep GitHub's decoded error body when it had one. Retries have already happened by the time
/// one of these is returned.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitHubApiError {
    /// 404: no such resource, or one the credentials may not see (GitHub answers 404 rather than
    /// 403 for private repositories).
    #[error("not found on GitHub")]
    NotFound {
        /// GitHub's error body.
        error: Option<Box<GitHubError>>,
        /// The core error.
        #[source]
        source: Error,
    },
    /// 401: the token is missing, invalid or expired.
    #[error("GitHub refused the credentials")]
    Unauthorized {
        /// GitHub's error body.
        error: Option<Box<GitHubError>>,
        /// The core error.
        #[source]
        source: Error,
    },
    /// 403 that is not a rate limit: the token lacks a permission or scope, or the resource is
    /// blocked.
    #[error("forbidden by GitHub")]
    Forbidden {
        /// GitHub's error body.
        error: Option<Box<GitHubError>>,
        /// The core error.
        #[source]
        source: Error,
    },
    /// A primary or secondary rate limit, when waiting was not allowed (past the call's deadline
    /// or the client's [`max_rate_limit_wait`](super::GitHubClient::with_max_rate_limit_wait))
    /// or did not help.
    #[error("rate limited by GitHub ({kind:?})")]
    RateLimited {
        /// Which limit.
        kind: RateLimitKind,
        /// When a retry may succeed, when GitHub said so (the reset time, `Retry-After`, or a
        /// minute after the response for a secondary limit without it).
        retry_at: Option<SystemTime>,
        /// GitHub's error body.
        error: Option<Box<GitHubError>>,
        /// The core error.
        #[source]
        source: Error,
    },
    /// 422: GitHub rejected the request's content; [`GitHubError::errors`] says which fields.
    #[error("GitHub rejected the request: {error}")]
    Validation {
        /// GitHub's error body.
        error: Box<GitHubError>,
        /// The core error.
        #[source]
        source: Error,
    },
    /// GitHub is unavailable for now: 5xx after the allowed retries, timeouts, connection
    /// failures, or the retry budget refusing more retries.
    #[error("GitHub is unavailable")]
    Unavailable {
        /// The core error.
        #[source]
        source: Error,
    },
    /// A success whose body is not what GitHub documents (wrong content type, bad JSON, a
    /// field of the wrong type).
    #[error("invalid GitHub payload{}: {message}", path.as_deref().map(|p| format!(" at {p}")).unwrap_or_default())]
    InvalidPayload {
        /// The JSON path of the problem, when there is one.
        path: Option<String>,
        /// What is wrong.
        message: String,
        /// The core error, with a redacted excerpt of the body.
        #[source]
        source: Error,
    },
    /// A pagination link points outside the API's origin or path; it is not followed, since the
    /// request would carry the token there.
    #[error("GitHub sent a pagination link outside the API: {url}")]
    ForeignLink {
        /// The link's target.
        url: String,
    },
    /// Anything else (another status, an invalid request, a TLS failure): see the core error.
    #[error("GitHub call failed")]
    Upstream(#[source] Error),
}

impl GitHubApiError {
    /// Maps a core error to GitHub's terms, reading GitHub's error body and rate-limit headers.
    /// `secret` (the token) is masked in the decoded body.
    pub(crate) fn from_core(
        error: Error,
        classifier: &GitHubClassifier,
        secret: Option<&str>,
    ) -> Self {
        if let Some(validation) = error.validation() {
            return Self::InvalidPayload {
                path: validation.path().map(str::to_owned),
                message: validation.message().to_owned(),
                source: error,
            };
        }
        let response = error.status_error();
        let body = response
            .and_then(|r| r.json::<GitHubError>().ok())
            .map(|mut body| {
                if let Some(secret) = secret {
                    body.redact(secret);
                }
                Box::new(body)
            });
        // The classifier's own reading of the response (headers, then GitHub's message): which
        // limit it was, and when the response said a retry may succeed, measured from its `Date`.
        let signal = response.and_then(|r| {
            let date = response_date(r.headers());
            let wall = date.unwrap_or(SystemTime::UNIX_EPOCH);
            let (kind, hint) = classifier.signal(r.status(), r.headers(), r.body(), wall)?;
            let retry_at = match hint {
                RetryAfter::At(at) => Some(at),
                RetryAfter::Delay(_) => {
                    date.and_then(|d| d.checked_add(resolve_retry_after(hint, Some(d), d)))
                }
            };
            Some((kind, retry_at))
        });
        // The core gave up on a rate limit (the wait was past the cap or the deadline, or the
        // last attempt was throttled): its `retry_at` is the time the classifier's hint named.
        if let Error::RateLimited { retry_at, .. } = &error {
            let kind = signal.map_or(RateLimitKind::Secondary, |(kind, _)| kind);
            return Self::RateLimited {
                kind,
                retry_at: Some(*retry_at),
                error: body,
                source: error,
            };
        }
        // A final 403 or 429 that is a rate limit (for example when the retry budget refused
        // the retry).
        if let Some((kind, retry_at)) = signal {
            return Self::RateLimited {
                kind,
                retry_at,
                error: body,
                source: error,
            };
        }
        match error.status() {
            Some(StatusCode::UNAUTHORIZED) => Self::Unauthorized {
                error: body,
                source: error,
            },
            Some(StatusCode::FORBIDDEN) => Self::Forbidden {
                error: body,
                source: error,
            },
            Some(StatusCode::NOT_FOUND) => Self::NotFound {
                error: body,
                source: error,
            },
            Some(StatusCode::UNPROCESSABLE_ENTITY) if body.is_some() => Self::Validation {
                error: body.unwrap_or_default(),
                source: error,
            },
            _ if error.is_retryable() => Self::Unavailable { source: error },
            _ => Self::Upstream(error),
        }
    }

    /// The core error behind this one.
    pub fn upstream(&self) -> Option<&Error> {
        match self {
            Self::NotFound { source, .. }
            | Self::Unauthorized { source, .. }
            | Self::Forbidden { source, .. }
            | Self::RateLimited { source, .. }
            | Self::Validation { source, .. }
            | Self::Unavailable { source }
            | Self::InvalidPayload { source, .. }
            | Self::Upstream(source) => Some(source),
            Self::ForeignLink { .. } => None,
        }
    }

    /// GitHub's error body, when the response had one.
    pub fn github_error(&self) -> Option<&GitHubError> {
        match self {
            Self::NotFound { error, .. }
            | Self::Unauthorized { error, .. }
            | Self::Forbidden { error, .. }
            | Self::RateLimited { error, .. } => error.as_deref(),
            Self::Validation { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The correlation ID of the call.
    pub fn correlation_id(&self) -> Option<&CorrelationId> {
        self.upstream().and_then(Error::correlation_id)
    }

    /// When a retry may succeed, for [`RateLimited`](Self::RateLimited).
    pub fn retry_at(&self) -> Option<SystemTime> {
        match self {
            Self::RateLimited { retry_at, .. } => *retry_at,
            _ => None,
        }
    }
}
