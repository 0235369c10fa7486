//! Spans, events and (behind the `metrics` feature) metrics of an exchange. The exchange decides
//! what happened; this module only reports it, with secrets already redacted.
//!
//! What is reported, with levels, fields and labels, is listed once, in `telemetry.md`
//! (published as [`telemetry_reference`](crate::telemetry_reference)); a test fails when this
//! module and that page disagree. In short: an INFO span `egress.call` per call and a DEBUG span
//! `egress.attempt` per attempt (OpenTelemetry HTTP client fields); events that each carry the
//! call's `correlation_id` (and, for one attempt, `egress.attempt`); OpenTelemetry-named
//! metrics whose labels are the call's method, host, port and service, never a URL, ID or
//! secret.

use std::time::{Duration, Instant};

use http::{Method, Uri};
use tracing::Span;
use tracing::field::Empty;

use crate::error::Error;
use crate::ids::CorrelationId;
use crate::messages::WaitReason;
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
    /// The attempt in flight or last finished (0 before the first).
    attempt_number: u32,
    /// Whether `attempt` is still open (in flight).
    attempt_open: bool,
    /// Earlier attempts still in flight beside the latest one (hedging only): their number,
    /// span and start. Empty, and never allocated, for a call that does not hedge.
    earlier: Vec<(u32, Span, Instant)>,
    /// On every event, so that a log line names its call even where the subscriber shows no
    /// span (`fmt().json()` lists only entered spans, and egress's spans are not entered).
    correlation_id: CorrelationId,
    method: Method,
    host: String,
    port: u16,
    url: String,
    /// The client's or vendor's name: a metrics label that tells two clients apart.
    #[cfg(feature = "metrics")]
    service: metrics::SharedString,
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
        let service = overrides.service.as_deref().unwrap_or("egress");
        let call = tracing::info_span!(
            "egress.call",
            service,
            operation = overrides.operation.as_deref().unwrap_or(""),
            correlation_id = %correlation_id,
            http.request.method = %method,
            url.full = Empty,
            attempts = Empty,
            egress.hedges = Empty,
            egress.winner = Empty,
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
            attempt_number: 0,
            attempt_open: false,
            earlier: Vec::new(),
            correlation_id: correlation_id.clone(),
            method: method.clone(),
            host,
            // Only an attempt span and the metrics show it; reading the port parses the
            // authority again.
            port: if listening || cfg!(feature = "metrics") {
                uri.map_or(0, port_or_known_default)
            } else {
                0
            },
            url: url_full,
            #[cfg(feature = "metrics")]
            service: metrics::SharedString::from(service.to_owned()),
        }
    }

    /// Opens the span of attempt `n` (a hedge when `hedge`) and returns a handle for the
    /// driver.
    pub(crate) fn attempt_started(&mut self, n: u32, now: Instant, hedge: bool) -> Span {
        if self.attempt_open {
            let span = std::mem::replace(&mut self.attempt, Span::none());
            self.earlier
                .push((self.attempt_number, span, self.attempt_started));
        }
        self.attempt_open = true;
        self.attempt_started = now;
        self.attempt_number = n;
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
            network.protocol.version = Empty,
            error.type = Empty,
            http.response.body.size = Empty,
            egress.response.content_coding = Empty,
            egress.response.decoded_size = Empty,
            egress.attempt = n,
            egress.hedge = Empty,
        );
        if n > 1 {
            span.record("http.request.resend_count", n - 1);
        }
        if hedge {
            span.record("egress.hedge", true);
        }
        self.attempt = span.clone();
        span
    }

    /// Records the end of attempt `n` and closes its span.
    pub(crate) fn attempt_finished(
        &mut self,
        n: u32,
        at: Instant,
        status: Option<u16>,
        version: Option<http::Version>,
        error_type: Option<&str>,
    ) {
        let (span, started) = if n == self.attempt_number && self.attempt_open {
            self.attempt_open = false;
            let span = std::mem::replace(&mut self.attempt, Span::none());
            (span, self.attempt_started)
        } else {
            match self.earlier.iter().position(|(m, ..)| *m == n) {
                Some(i) => {
                    let (_, span, started) = self.earlier.swap_remove(i);
                    (span, started)
                }
                None => (Span::none(), at),
            }
        };
        let duration = at.saturating_duration_since(started);
        if let Some(status) = status {
            span.record("http.response.status_code", status);
        }
        let version = version.and_then(protocol_version);
        if let Some(version) = version {
            span.record("network.protocol.version", version);
        }
        if let Some(error_type) = error_type {
            span.record("error.type", error_type);
        }
        tracing::debug!(
            parent: &span,
            correlation_id = %self.correlation_id,
            egress.attempt = n,
            http.response.status_code = status,
            error.type = error_type,
            duration_ms = duration.as_millis() as u64,
            "attempt finished"
        );
        #[cfg(feature = "metrics")]
        {
            let mut labels = self.labels();
            push_outcome(&mut labels, status, error_type);
            if let Some(version) = version {
                labels.push(metrics::Label::from_static_parts(
                    "network.protocol.version",
                    version,
                ));
            }
            metrics::histogram!(crate::metric_names::REQUEST_DURATION, labels)
                .record(duration.as_secs_f64());
        }
    }

    /// The labels every metric of this call has: `http.request.method`, `server.address`,
    /// `server.port` and `egress.service`. No URL, ID or secret is ever a label.
    #[cfg(feature = "metrics")]
    fn labels(&self) -> Vec<metrics::Label> {
        let mut labels = Vec::with_capacity(6);
        labels.push(metrics::Label::from_static_parts(
            "http.request.method",
            // The standard methods are static strings; an extension method is copied.
            match self.method.as_str() {
                "GET" => "GET",
                "POST" => "POST",
                "PUT" => "PUT",
                "DELETE" => "DELETE",
                "PATCH" => "PATCH",
                "HEAD" => "HEAD",
                "OPTIONS" => "OPTIONS",
                "CONNECT" => "CONNECT",
                "TRACE" => "TRACE",
                // OpenTelemetry's name for a method outside RFC 9110 (bounded cardinality).
                _ => "_OTHER",
            },
        ));
        labels.push(metrics::Label::new("server.address", self.host.clone()));
        labels.push(metrics::Label::new("server.port", self.port.to_string()));
        labels.push(metrics::Label::new("egress.service", self.service.clone()));
        labels
    }

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
            correlation_id = %self.correlation_id,
            egress.attempt = self.attempt_number,
            retry,
            reason = reason.as_str(),
            error.type = error_type,
            delay_source = wait.as_str(),
            delay_ms = delay.as_millis() as u64,
            "retrying"
        );
        #[cfg(feature = "metrics")]
        {
            let mut labels = self.labels();
            labels.push(metrics::Label::from_static_parts("reason", reason.as_str()));
            metrics::counter!(crate::metric_names::RETRIES, labels).increment(1);
        }
    }

    /// Hedge `n` goes out, `after` the attempt before it started.
    pub(crate) fn hedge(&self, n: u32, after: Duration) {
        tracing::info!(
            parent: &self.call,
            correlation_id = %self.correlation_id,
            egress.attempt = n,
            after_ms = after.as_millis() as u64,
            "hedging"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!(crate::metric_names::HEDGES, self.labels()).increment(1);
    }

    /// A hedge that was due was not sent (`reason`: `host_hold`, `circuit_open`, `budget`,
    /// `rate_limiter`); the call hedges no more.
    pub(crate) fn hedge_refused(&self, n: u32, reason: &'static str) {
        tracing::debug!(
            parent: &self.call,
            correlation_id = %self.correlation_id,
            egress.attempt = n,
            reason,
            "hedge refused"
        );
    }

    /// Attempt `winner` (a hedge when `hedge`) ended a call that sent `hedges` hedges.
    pub(crate) fn hedge_won(&self, winner: u32, hedge: bool, hedges: u32) {
        self.call.record("egress.hedges", hedges);
        self.call.record("egress.winner", winner);
        // Only the metrics label which kind of attempt won.
        #[cfg(not(feature = "metrics"))]
        let _ = hedge;
        #[cfg(feature = "metrics")]
        {
            let mut labels = self.labels();
            let won = if hedge { "hedge" } else { "first" };
            labels.push(metrics::Label::from_static_parts("winner", won));
            metrics::counter!(crate::metric_names::HEDGED_CALLS, labels).increment(1);
        }
    }

    /// The call waits for the state it shares with other calls (a hold, the circuit, a limiter
    /// slot).
    pub(crate) fn guard_wait(&self, wait: WaitReason, delay: Duration) {
        tracing::info!(
            parent: &self.call,
            correlation_id = %self.correlation_id,
            egress.attempt = self.attempt_number + 1,
            server.address = %self.host,
            reason = wait.as_str(),
            until_ms = delay.as_millis() as u64,
            "waiting"
        );
        #[cfg(feature = "metrics")]
        {
            let mut labels = self.labels();
            labels.push(metrics::Label::from_static_parts("reason", wait.as_str()));
            metrics::counter!(crate::metric_names::GUARD_WAITS, labels).increment(1);
        }
    }

    /// The fleet's coordinator failed this call: it goes on with local limits (`open`) or
    /// ends (`closed`).
    pub(crate) fn fleet_fallback(
        &self,
        mode: crate::guard::fleet::FailureMode,
        error: &crate::guard::fleet::CoordinatorError,
    ) {
        tracing::warn!(
            parent: &self.call,
            correlation_id = %self.correlation_id,
            server.address = %self.host,
            mode = mode.as_str(),
            "fleet coordinator failed: {error}"
        );
        #[cfg(feature = "metrics")]
        {
            let mut labels = self.labels();
            labels.push(metrics::Label::from_static_parts("mode", mode.as_str()));
            metrics::counter!(crate::metric_names::FLEET_FALLBACKS, labels).increment(1);
        }
    }

    pub(crate) fn succeeded(&self, status: u16, attempts: u32, elapsed: Duration) {
        // Recorded once, at the end: a field recorded per attempt shows once per attempt in
        // `tracing_subscriber::fmt`'s output.
        self.call.record("attempts", attempts);
        // A success that needed retries is news at INFO (the retries were); a first-try
        // success is not.
        macro_rules! succeeded {
            ($level:expr) => {
                tracing::event!(
                    parent: &self.call,
                    $level,
                    correlation_id = %self.correlation_id,
                    http.response.status_code = status,
                    attempts,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "call succeeded"
                )
            };
        }
        if attempts > 1 {
            succeeded!(tracing::Level::INFO);
        } else {
            succeeded!(tracing::Level::DEBUG);
        }
        #[cfg(feature = "metrics")]
        self.record_call(elapsed, "success", Some(status), None);
    }

    /// The whole call's duration (backoff and waits included) and its outcome.
    #[cfg(feature = "metrics")]
    fn record_call(
        &self,
        elapsed: Duration,
        outcome: &'static str,
        status: Option<u16>,
        error_type: Option<&str>,
    ) {
        let mut labels = self.labels();
        labels.push(metrics::Label::from_static_parts("egress.outcome", outcome));
        push_outcome(&mut labels, status, error_type);
        metrics::histogram!(crate::metric_names::CALL_DURATION, labels)
            .record(elapsed.as_secs_f64());
    }

    /// The call's end with `error`: an `answer` of the API (see
    /// [`Classifier::is_answer`](crate::retry::Classifier::is_answer)) at DEBUG, a failure at
    /// WARN.
    pub(crate) fn failed(&self, error: &Error, answer: bool) {
        let meta = error.meta();
        self.call.record("attempts", meta.attempts);
        let stop = meta.stop.map(|s| s.to_string()).unwrap_or_default();
        #[cfg(feature = "metrics")]
        self.record_call(
            meta.elapsed,
            if answer { "answer" } else { "failure" },
            error.status().map(|s| s.as_u16()),
            Some(error.type_name()),
        );
        if answer {
            tracing::debug!(
                parent: &self.call,
                correlation_id = %self.correlation_id,
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
            correlation_id = %self.correlation_id,
            error.type = error.type_name(),
            http.response.status_code = error.status().map(|s| s.as_u16()),
            stop = %stop,
            attempts = meta.attempts,
            elapsed_ms = meta.elapsed.as_millis() as u64,
            "call failed: {error}"
        );
        #[cfg(feature = "metrics")]
        if matches!(error, Error::RetryBudgetExhausted { .. }) {
            metrics::counter!(crate::metric_names::BUDGET_REFUSALS, self.labels()).increment(1);
        }
        #[cfg(feature = "metrics")]
        {
            use crate::error::StopReason as S;
            let reason = match meta.stop {
                Some(S::HostHold) => Some("host_hold"),
                Some(S::CircuitOpen) => Some("circuit_open"),
                Some(S::RateLimiter) => Some("rate_limiter"),
                Some(S::FleetUnavailable) => Some("fleet_unavailable"),
                _ => None,
            };
            if let Some(reason) = reason {
                let mut labels = self.labels();
                labels.push(metrics::Label::from_static_parts("reason", reason));
                metrics::counter!(crate::metric_names::GUARD_REFUSALS, labels).increment(1);
            }
        }
    }
}

/// OpenTelemetry's `network.protocol.version` of an HTTP version (`1.1`, `2`, ...).
fn protocol_version(version: http::Version) -> Option<&'static str> {
    match version {
        http::Version::HTTP_09 => Some("0.9"),
        http::Version::HTTP_10 => Some("1.0"),
        http::Version::HTTP_11 => Some("1.1"),
        http::Version::HTTP_2 => Some("2"),
        http::Version::HTTP_3 => Some("3"),
        _ => None,
    }
}

/// `http.response.status_code` and `error.type`, each only when it applies (an absent attribute
/// is left out, never sent as an empty string).
#[cfg(feature = "metrics")]
fn push_outcome(labels: &mut Vec<metrics::Label>, status: Option<u16>, error_type: Option<&str>) {
    if let Some(status) = status {
        labels.push(metrics::Label::new(
            "http.response.status_code",
            status.to_string(),
        ));
    }
    if let Some(error_type) = error_type {
        labels.push(metrics::Label::new("error.type", error_type.to_owned()));
    }
}

/// The histogram buckets, in seconds, that OpenTelemetry's HTTP conventions advise for
/// `http.client.request.duration`; fit for `egress.call.duration` too. An exporter that needs
/// buckets (Prometheus) is given these:
///
/// ```
/// # #[cfg(feature = "metrics")] {
/// assert_eq!(egress_core::DURATION_BUCKETS.first(), Some(&0.005));
/// assert_eq!(egress_core::DURATION_BUCKETS.last(), Some(&10.0));
/// # }
/// ```
#[cfg(feature = "metrics")]
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Registers the unit and description of every metric egress reports with the installed
/// `metrics` recorder, so that an exporter can name and type them (Prometheus:
/// `http_client_request_duration_seconds`, a histogram). Every client build calls it; call it
/// yourself after installing a recorder when clients were built before.
///
/// ```
/// # #[cfg(feature = "metrics")]
/// egress_core::describe_metrics();
/// ```
#[cfg(feature = "metrics")]
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        crate::metric_names::REQUEST_DURATION,
        Unit::Seconds,
        "Duration of HTTP client requests (one per attempt)."
    );
    describe_histogram!(
        crate::metric_names::CALL_DURATION,
        Unit::Seconds,
        "Duration of egress calls, from the first attempt to the outcome, backoff and waits included."
    );
    describe_counter!(
        crate::metric_names::RETRIES,
        Unit::Count,
        "Retries egress made, by reason."
    );
    describe_counter!(
        crate::metric_names::BUDGET_REFUSALS,
        Unit::Count,
        "Retries the retry budget refused."
    );
    describe_counter!(
        crate::metric_names::VALIDATION_FAILURES,
        Unit::Count,
        "Responses that failed validation, by kind."
    );
    describe_counter!(
        crate::metric_names::GUARD_WAITS,
        Unit::Count,
        "Waits for a host hold, an open circuit or a rate-limiter slot."
    );
    describe_counter!(
        crate::metric_names::GUARD_REFUSALS,
        Unit::Count,
        "Calls ended unsent by a host hold, an open circuit or the rate limiter."
    );
    describe_gauge!(
        crate::metric_names::CIRCUIT_STATE,
        "Circuit state per host: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        crate::metric_names::CIRCUIT_TRANSITIONS,
        Unit::Count,
        "Circuit state changes, by new state."
    );
    describe_counter!(
        crate::metric_names::HEDGES,
        Unit::Count,
        "Hedges egress sent (a further attempt beside a slow one)."
    );
    describe_counter!(
        crate::metric_names::HEDGED_CALLS,
        Unit::Count,
        "Calls that hedged, by which attempt won (first or hedge)."
    );
    describe_counter!(
        crate::metric_names::HOLDS,
        Unit::Count,
        "Holds put on a host, by reason."
    );
    describe_counter!(
        crate::metric_names::FLEET_FALLBACKS,
        Unit::Count,
        "Calls the fleet's coordinator failed, by failure mode (open: local limits; closed: refused)."
    );
}
