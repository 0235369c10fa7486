//! Spans, events and (behind the `metrics` feature) metrics of an exchange. The exchange decides
//! what happened; this module only reports it, with secrets already redacted.
//!
//! - One INFO span `egress.call` per logical call: `service`, `operation`, `correlation_id`,
//!   `http.request.method`, `url.full`, and `attempts` (recorded once, when the call ends).
//! - One DEBUG span `egress.attempt` per attempt (a CLIENT span in OpenTelemetry terms) with the
//!   HTTP semantic-convention fields `http.request.method`, `server.address`, `server.port`,
//!   `url.full`, `http.response.status_code`, `http.request.resend_count` (resends only),
//!   `error.type`, and for a body: `http.response.body.size` (bytes received),
//!   `egress.response.content_coding` and `egress.response.decoded_size` (when it was decoded;
//!   recorded by the transport). Drivers run the transport inside it ([`AttemptRequest::span`](crate::AttemptRequest::span)).
//! - Events: each attempt's end at DEBUG; each retry decision at INFO with what failed
//!   (`error.type`: the status, or the transport or timeout kind), its reason and delay source
//!   (`backoff`, `retry_after`); the final failure at WARN with why retrying stopped
//!   (`deadline`, `retry budget exhausted`, `rate limited`, ...), except a final status the
//!   classifier calls an answer ([`Classifier::is_answer`](crate::retry::Classifier::is_answer):
//!   404, 409, ... by default), "call answered" at DEBUG; success at DEBUG; a response
//!   that fails validation ([`Response::json`](crate::Response::json) and friends) at WARN,
//!   "response failed validation", with `correlation_id`, `http.response.status_code`,
//!   `error.type = "validation"`, `validation.kind` and `json.path`.
//! - Metrics (feature `metrics`): `http.client.request.duration` (histogram, seconds, per attempt;
//!   labels `http.request.method`, `server.address`, `http.response.status_code`, `error.type`),
//!   `egress.retries` (counter; label `reason`), `egress.retry_budget.refusals` (counter; label
//!   `server.address`), `egress.validation.failures` (counter; label `kind`),
//!   `egress.guard.waits` (counter; labels `server.address`, `reason`: `host_hold`,
//!   `circuit_open`, `rate_limiter`), `egress.guard.refusals` (counter; labels `server.address`,
//!   `reason`: `host_hold`, `circuit_open`, `rate_limiter`). The shared state itself
//!   ([`guard`](crate::guard)) reports `egress.circuit.state` (gauge: 0 closed, 1 half-open,
//!   2 open), `egress.circuit.transitions` (counter; label `state`) and `egress.holds` (counter;
//!   label `reason`), each with `server.address`, and an event for every circuit state change
//!   (WARN) and every new hold (INFO).
//! - Events for waits across calls: each wait for a hold, an open circuit or a limiter slot at
//!   INFO, with its reason and how long.

use std::time::{Duration, Instant};

use http::{Method, Uri};
use tracing::Span;
use tracing::field::Empty;

use crate::error::Error;
use crate::ids::CorrelationId;
use crate::io::WaitReason;
use crate::redact::Redactor;
use crate::request::Request;
use crate::retry::RetryReason;

/// The URI's port, or its scheme's default (80, 443; 0 for another scheme).
fn port_or_known_default(uri: &Uri) -> u16 {
    uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ => 0,
    })
}

#[derive(Debug)]
pub(crate) struct Telemetry {
    call: Span,
    attempt: Span,
    attempt_started: Instant,
    method: Method,
    host: String,
    port: u16,
    url: String,
}

impl Telemetry {
    pub(crate) fn new(
        request: &Request,
        correlation_id: &CorrelationId,
        redactor: &Redactor,
        now: Instant,
    ) -> Self {
        let overrides = request.overrides();
        let method = request.method();
        let call = tracing::info_span!(
            "egress.call",
            service = overrides.service.as_deref().unwrap_or("egress"),
            operation = overrides.operation.as_deref().unwrap_or(""),
            correlation_id = %correlation_id,
            http.request.method = %method,
            url.full = Empty,
            attempts = Empty,
        );
        // The redacted URL and the host are copied only for someone who may read them: a
        // subscriber that takes this call's span or could take its attempts' (DEBUG), or the
        // metrics. Without one a call pays for no string here.
        let listening = !call.is_disabled() || tracing::level_enabled!(tracing::Level::DEBUG);
        let url_full = if listening {
            redactor.url(request.url())
        } else {
            String::new()
        };
        if !call.is_disabled() {
            call.record("url.full", url_full.as_str());
        }
        // From the URI to send (a request built from a client's base has no parsed URL).
        let uri = request.uri.as_ref();
        let host = if listening || cfg!(feature = "metrics") {
            uri.and_then(Uri::host).unwrap_or_default().to_owned()
        } else {
            String::new()
        };
        Self {
            call,
            attempt: Span::none(),
            attempt_started: now,
            method: method.clone(),
            host,
            // Only an attempt span shows it; reading the port parses the authority again.
            port: if listening {
                uri.map_or(0, port_or_known_default)
            } else {
                0
            },
            url: url_full,
        }
    }

    /// Opens the span of attempt `n` and returns a handle for the driver.
    pub(crate) fn attempt_started(&mut self, n: u32, now: Instant) -> Span {
        self.attempt_started = now;
        let span = tracing::debug_span!(
            parent: &self.call,
            "egress.attempt",
            otel.kind = "client",
            http.request.method = %self.method,
            server.address = %self.host,
            server.port = self.port,
            url.full = %self.url,
            http.request.resend_count = Empty,
            http.response.status_code = Empty,
            error.type = Empty,
            http.response.body.size = Empty,
            egress.response.content_coding = Empty,
            egress.response.decoded_size = Empty,
            egress.attempt = n,
        );
        if n > 1 {
            span.record("http.request.resend_count", n - 1);
        }
        self.attempt = span.clone();
        span
    }

    /// Records the end of the attempt in flight and closes its span.
    pub(crate) fn attempt_finished(
        &mut self,
        at: Instant,
        status: Option<u16>,
        error_type: Option<&str>,
    ) {
        let span = std::mem::replace(&mut self.attempt, Span::none());
        let duration = at.saturating_duration_since(self.attempt_started);
        if let Some(status) = status {
            span.record("http.response.status_code", status);
        }
        if let Some(error_type) = error_type {
            span.record("error.type", error_type);
        }
        tracing::debug!(
            parent: &span,
            http.response.status_code = status,
            error.type = error_type,
            duration_ms = duration.as_millis() as u64,
            "attempt finished"
        );
        self.record_duration(duration, status, error_type);
    }

    #[cfg(feature = "metrics")]
    fn record_duration(&self, duration: Duration, status: Option<u16>, error_type: Option<&str>) {
        let labels = [
            ("http.request.method", self.method.as_str().to_owned()),
            ("server.address", self.host.clone()),
            (
                "http.response.status_code",
                status.map(|s| s.to_string()).unwrap_or_default(),
            ),
            ("error.type", error_type.unwrap_or_default().to_owned()),
        ];
        metrics::histogram!("http.client.request.duration", &labels).record(duration.as_secs_f64());
    }

    #[cfg(not(feature = "metrics"))]
    fn record_duration(&self, _: Duration, _: Option<u16>, _: Option<&str>) {}

    /// A retry of the attempt that failed with `error`: its `error.type` says what failed
    /// (the status, or the transport or timeout kind), `reason` why that is retried.
    pub(crate) fn retry(
        &self,
        retry: u32,
        reason: RetryReason,
        wait: WaitReason,
        delay: Duration,
        error: &Error,
    ) {
        let status = error.status();
        let error_type = match &status {
            Some(status) => status.as_str(),
            None => error.type_name(),
        };
        tracing::info!(
            parent: &self.call,
            retry,
            reason = reason.as_str(),
            error.type = error_type,
            delay_source = wait.as_str(),
            delay_ms = delay.as_millis() as u64,
            "retrying"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!("egress.retries", "reason" => reason.as_str()).increment(1);
    }

    /// The call waits for the state it shares with other calls (a hold, the circuit, a limiter
    /// slot).
    pub(crate) fn guard_wait(&self, wait: WaitReason, delay: Duration) {
        tracing::info!(
            parent: &self.call,
            server.address = %self.host,
            reason = wait.as_str(),
            until_ms = delay.as_millis() as u64,
            "waiting"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "egress.guard.waits",
            "server.address" => self.host.clone(),
            "reason" => wait.as_str()
        )
        .increment(1);
    }

    pub(crate) fn succeeded(&self, status: u16, attempts: u32, elapsed: Duration) {
        // Recorded once, at the end: a field recorded per attempt shows once per attempt in
        // `tracing_subscriber::fmt`'s output.
        self.call.record("attempts", attempts);
        tracing::debug!(
            parent: &self.call,
            http.response.status_code = status,
            attempts,
            elapsed_ms = elapsed.as_millis() as u64,
            "call succeeded"
        );
    }

    /// The call's end with `error`: an `answer` of the API (see
    /// [`Classifier::is_answer`](crate::retry::Classifier::is_answer)) at DEBUG, a failure at
    /// WARN.
    pub(crate) fn failed(&self, error: &Error, answer: bool) {
        let meta = error.meta();
        self.call.record("attempts", meta.attempts);
        let stop = meta.stop.map(|s| s.to_string()).unwrap_or_default();
        if answer {
            tracing::debug!(
                parent: &self.call,
                error.type = error.type_name(),
                http.response.status_code = error.status().map(|s| s.as_u16()),
                attempts = meta.attempts,
                elapsed_ms = meta.elapsed.as_millis() as u64,
                "call answered: {error}"
            );
            return;
        }
        tracing::warn!(
            parent: &self.call,
            error.type = error.type_name(),
            http.response.status_code = error.status().map(|s| s.as_u16()),
            stop = %stop,
            attempts = meta.attempts,
            elapsed_ms = meta.elapsed.as_millis() as u64,
            "call failed: {error}"
        );
        #[cfg(feature = "metrics")]
        if matches!(error, Error::RetryBudgetExhausted { .. }) {
            metrics::counter!("egress.retry_budget.refusals", "server.address" => self.host.clone()).increment(1);
        }
        #[cfg(feature = "metrics")]
        {
            use crate::error::StopReason as S;
            let reason = match meta.stop {
                Some(S::HostHold) => Some("host_hold"),
                Some(S::CircuitOpen) => Some("circuit_open"),
                Some(S::RateLimiter) => Some("rate_limiter"),
                _ => None,
            };
            if let Some(reason) = reason {
                metrics::counter!(
                    "egress.guard.refusals",
                    "server.address" => self.host.clone(),
                    "reason" => reason
                )
                .increment(1);
            }
        }
    }
}
