//! The errors of a call; the whole story is on [`Error`].

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::coding::{BodyLimit, DecodeError};
use crate::ids::CorrelationId;
use crate::redact::Redactor;

use crate::validate::ValidationError;

/// What every [`Error`] knows about the call that produced it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallMeta {
    /// How many attempts were started (the first one included); 0 when nothing was sent.
    pub attempts: u32,
    /// Time from the start of the exchange to the moment it ended, in the exchange's own time.
    pub elapsed: Duration,
    /// The correlation ID sent on every attempt, if the call got that far.
    pub correlation_id: Option<CorrelationId>,
    /// Why the exchange stopped retrying, when it stopped on a failure.
    pub stop: Option<StopReason>,
    /// Whether any attempt may have reached the server, as the exchange tracked it; `None` for
    /// errors made outside an exchange.
    pub may_have_been_sent: Option<bool>,
}

/// Why an exchange stopped on a failure instead of trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The classifier said the failure must not be retried.
    NotRetryable,
    /// The classifier allowed a retry, but the request may have been processed and is not
    /// idempotent, so it was not re-sent.
    NotIdempotent,
    /// Every allowed attempt was used.
    AttemptsExhausted,
    /// The next attempt could not start before the whole-call deadline.
    Deadline,
    /// The retry budget refused the retry.
    Budget,
    /// The server asked for a wait longer than the cap or past the deadline.
    RateLimited,
    /// The host is held (another call was throttled, or the quota is used up) past the deadline.
    HostHold,
    /// The host's circuit is open.
    CircuitOpen,
    /// The client-side rate limiter had no slot before the deadline.
    RateLimiter,
    /// The fleet's coordinator could not answer and the client fails closed.
    FleetUnavailable,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotRetryable => "not retryable",
            Self::NotIdempotent => "not idempotent",
            Self::AttemptsExhausted => "attempts exhausted",
            Self::Deadline => "deadline reached",
            Self::Budget => "retry budget exhausted",
            Self::RateLimited => "rate limited",
            Self::HostHold => "host held",
            Self::CircuitOpen => "circuit open",
            Self::RateLimiter => "client rate limit",
            Self::FleetUnavailable => "fleet unavailable",
        })
    }
}

/// Which time limit expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// Establishing the connection (TCP and TLS). Never sent.
    Connect,
    /// Waiting for a pooled connection. Never sent.
    Pool,
    /// Writing the request. May have been sent.
    Write,
    /// Waiting for the response head, or for the next body chunk. May have been sent.
    Read,
    /// The per-attempt timeout. May have been sent.
    Attempt,
    /// The whole-call deadline. May have been sent.
    Deadline,
}

impl TimeoutKind {
    /// Whether the request may have reached the server when this limit expired.
    pub fn may_have_been_sent(self) -> bool {
        !matches!(self, Self::Connect | Self::Pool)
    }

    /// A short stable name, as used in the `error.type` telemetry field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect_timeout",
            Self::Pool => "pool_timeout",
            Self::Write => "write_timeout",
            Self::Read => "read_timeout",
            Self::Attempt => "attempt_timeout",
            Self::Deadline => "deadline",
        }
    }
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a transport failure. Backends map their native errors into these, so that
/// classification is identical on every backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The host name did not resolve. Never sent.
    Dns,
    /// The peer refused the connection. Never sent.
    ConnectRefused,
    /// Any other failure while connecting (unreachable, reset during connect). Never sent.
    Connect,
    /// Connecting took longer than the connect timeout. Never sent.
    ConnectTimeout,
    /// No pooled connection became available in time. Never sent.
    PoolTimeout,
    /// The TLS handshake failed (untrusted certificate, bad name, protocol). Never sent, never retried.
    Tls,
    /// Writing the request took longer than the write timeout. May have been sent.
    WriteTimeout,
    /// The response head, or the next body chunk, did not arrive in time. May have been sent.
    ReadTimeout,
    /// The connection was reset or closed before the response head arrived. May have been sent.
    ClosedBeforeResponse,
    /// The connection was reset or closed while the body was being read. May have been sent.
    ClosedDuringBody,
    /// The peer broke the HTTP protocol (malformed head, bad chunk, wrong length). May have been sent.
    Protocol,
    /// The response body exceeded the size limit (received, decoded, or the decoding ratio).
    /// The request was sent.
    BodyTooLarge,
    /// The response body could not be decoded: a content coding that is unknown or not
    /// enabled, or a corrupt or truncated stream. The request was sent; never retried.
    Decode,
    /// The backend cannot express this request (a method or header value its HTTP stack cannot
    /// carry). Never sent, never retried.
    Unsupported,
    /// The outbound proxy refused to carry the request: it answered `CONNECT` with a status
    /// other than 2xx (RFC 9110 9.3.6), such as 403 or 407 Proxy Authentication Required
    /// (RFC 9110 15.5.8), or answered a forwarded `http://` request with 407. Never sent to
    /// the origin, never retried; [`TransportError::proxy_status`] has the status.
    ProxyRefused,
    /// The server refused the request before processing any of it: HTTP/2's `RST_STREAM`
    /// with `REFUSED_STREAM` (RFC 9113 8.7), or a `GOAWAY` whose last stream identifier is
    /// below the request's stream (RFC 9113 6.8), as a server sends when it sheds load or
    /// shuts down gracefully. The request reached the server but had no effect there, so it
    /// counts as never sent and is retried whatever its method.
    NotProcessed,
    /// Anything else. Treated as "may have been sent".
    Other,
}

impl TransportErrorKind {
    /// Whether the request may have reached the server when this failure happened.
    pub fn may_have_been_sent(self) -> bool {
        !matches!(
            self,
            Self::Dns
                | Self::ConnectRefused
                | Self::Connect
                | Self::ConnectTimeout
                | Self::PoolTimeout
                | Self::Tls
                | Self::Unsupported
                | Self::ProxyRefused
                | Self::NotProcessed
        )
    }

    /// The timeout this failure stands for, if it is one.
    pub fn timeout_kind(self) -> Option<TimeoutKind> {
        match self {
            Self::ConnectTimeout => Some(TimeoutKind::Connect),
            Self::PoolTimeout => Some(TimeoutKind::Pool),
            Self::WriteTimeout => Some(TimeoutKind::Write),
            Self::ReadTimeout => Some(TimeoutKind::Read),
            _ => None,
        }
    }

    /// A short stable name, as used in the `error.type` telemetry field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::ConnectRefused => "connect_refused",
            Self::Connect => "connect",
            Self::ConnectTimeout => "connect_timeout",
            Self::PoolTimeout => "pool_timeout",
            Self::Tls => "tls",
            Self::WriteTimeout => "write_timeout",
            Self::ReadTimeout => "read_timeout",
            Self::ClosedBeforeResponse => "closed_before_response",
            Self::ClosedDuringBody => "closed_during_body",
            Self::Protocol => "protocol",
            Self::BodyTooLarge => "body_too_large",
            Self::Decode => "decode",
            Self::Unsupported => "unsupported",
            Self::ProxyRefused => "proxy_refused",
            Self::NotProcessed => "not_processed",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of one attempt below HTTP: connecting, TLS, writing or reading.
///
/// Backends build it with [`TransportError::new`] and keep the native error as its source.
#[derive(Clone)]
pub struct TransportError {
    kind: TransportErrorKind,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
    /// Whether the failure was on the way to the outbound proxy, and what it answered.
    proxy: Option<ProxyFailure>,
}

/// What a failure at the outbound proxy knows.
#[derive(Clone, Copy, Debug)]
struct ProxyFailure {
    status: Option<http::StatusCode>,
}

impl TransportError {
    /// A failure of the given kind, with the backend's native error as its source.
    pub fn new(
        kind: TransportErrorKind,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            kind,
            source: Some(Arc::from(source.into())),
            proxy: None,
        }
    }

    /// A failure of the given kind with no underlying error.
    pub fn from_kind(kind: TransportErrorKind) -> Self {
        Self {
            kind,
            source: None,
            proxy: None,
        }
    }

    /// Marks this failure as one at the outbound proxy (connecting to it, TLS with it, or its
    /// answer `status` to `CONNECT`), not at the origin.
    pub fn at_proxy(mut self, status: Option<http::StatusCode>) -> Self {
        self.proxy = Some(ProxyFailure { status });
        self
    }

    /// Whether this failure happened at the outbound proxy rather than at the origin.
    pub fn is_proxy(&self) -> bool {
        self.proxy.is_some()
    }

    /// The status the outbound proxy refused the request with (403, 407, ...), if it did.
    pub fn proxy_status(&self) -> Option<http::StatusCode> {
        self.proxy.and_then(|p| p.status)
    }

    /// A body that could not be decoded: [`Decode`](TransportErrorKind::Decode), or
    /// [`BodyTooLarge`](TransportErrorKind::BodyTooLarge) when it passed a limit while decoding.
    pub fn decode(error: DecodeError) -> Self {
        let kind = match error {
            DecodeError::TooLarge(_) => TransportErrorKind::BodyTooLarge,
            _ => TransportErrorKind::Decode,
        };
        Self::new(kind, error)
    }

    /// Which body limit a [`BodyTooLarge`](TransportErrorKind::BodyTooLarge) failure passed:
    /// the decoder's when decoding passed it, else the limit on received bytes.
    pub fn body_limit(&self) -> BodyLimit {
        match self
            .source
            .as_deref()
            .and_then(|e| e.downcast_ref::<DecodeError>())
        {
            Some(DecodeError::TooLarge(which)) => *which,
            _ => BodyLimit::Wire,
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// Whether the request may have reached the server.
    pub fn may_have_been_sent(&self) -> bool {
        self.kind.may_have_been_sent()
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TransportError");
        d.field("kind", &self.kind);
        if let Some(proxy) = &self.proxy {
            d.field("proxy_status", &proxy.status);
        }
        if let Some(source) = &self.source {
            d.field("source", &format_args!("{source}"));
        }
        d.finish()
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            TransportErrorKind::Dns => "dns lookup failed",
            TransportErrorKind::ConnectRefused => "connection refused",
            TransportErrorKind::Connect => "connect failed",
            TransportErrorKind::ConnectTimeout => "connect timed out",
            TransportErrorKind::PoolTimeout => "timed out waiting for a pooled connection",
            TransportErrorKind::Tls => "tls handshake failed",
            TransportErrorKind::WriteTimeout => "write timed out",
            TransportErrorKind::ReadTimeout => "read timed out",
            TransportErrorKind::ClosedBeforeResponse => "connection closed before the response",
            TransportErrorKind::ClosedDuringBody => "connection closed during the response body",
            TransportErrorKind::Protocol => "http protocol error",
            TransportErrorKind::BodyTooLarge => "response body too large",
            TransportErrorKind::Decode => "the response body could not be decoded",
            TransportErrorKind::Unsupported => "the backend cannot express this request",
            TransportErrorKind::ProxyRefused => "the proxy refused the request",
            TransportErrorKind::NotProcessed => "the server refused the request unprocessed",
            TransportErrorKind::Other => "transport error",
        };
        match self.proxy {
            Some(ProxyFailure {
                status: Some(status),
            }) => write!(f, "{what} ({status})"),
            Some(_) => write!(f, "proxy: {what}"),
            None => f.write_str(what),
        }
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The response of an unexpected status, as carried by [`Error::Status`].
///
/// The body is kept whole (it is already within the size limit) so that a vendor can decode its
/// own error type from it with [`StatusError::body`]; `Debug` and `Display` show only a short
/// excerpt.
#[derive(Clone)]
pub struct StatusError {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// Made on first use: a response that is retried and never shown costs no copy.
    excerpt: OnceLock<String>,
    redactor: Redactor,
}

impl StatusError {
    /// Builds a status error from a response's parts, with the default redaction.
    pub fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        Self::redacted(status, headers, body, &Redactor::default())
    }

    pub(crate) fn redacted(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        redactor: &Redactor,
    ) -> Self {
        redactor.mark_sensitive(&mut headers);
        Self {
            status,
            headers,
            body,
            excerpt: OnceLock::new(),
            redactor: redactor.clone(),
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers. Sensitive values are marked sensitive.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The whole response body (within the size limit).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// A short redacted excerpt of the body for messages: at most [`EXCERPT_LEN`] bytes, lossy
    /// UTF-8, secret fields and the request's secret values masked.
    pub fn body_excerpt(&self) -> &str {
        self.excerpt
            .get_or_init(|| self.redactor.excerpt(&self.body))
    }

    /// Decodes the body as the vendor's own JSON error type (any content type is accepted,
    /// since error bodies are often mislabelled).
    pub fn json<E: serde::de::DeserializeOwned>(&self) -> Result<E, ValidationError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        crate::validate::validate(
            StatusCode::OK,
            &headers,
            &self.body,
            &crate::validate::Expect::default(),
        )
    }
}

/// How many bytes of a body an error message shows at most (the redactor cuts excerpts to it).
pub use crate::redact::EXCERPT_LEN;

impl fmt::Debug for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusError")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .field("headers", &Redactor::default().headers(&self.headers))
            .field("body_excerpt", &self.body_excerpt())
            .finish_non_exhaustive()
    }
}

impl StdError for StatusError {}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unexpected status {}", self.status)
    }
}

/// The error of a call, sorted by phase.
///
/// Every error type of the core, sorted by the phase of the call in which it happens.
///
/// [`Error`] is what a call returns. Its predicates ([`Error::is_timeout`],
/// [`Error::is_retryable`], [`Error::may_have_been_sent`], [`Error::status`]) are the stable
/// contract; the `Display` text is for humans and may change in any release.
///
/// # Mapping to a domain error
///
/// A vendor client turns [`Error`] into the errors its callers think in, once, with the
/// predicates and helpers (never by parsing messages), and keeps the original for the rest:
///
/// ```
/// use std::time::SystemTime;
/// use egress_core::Error;
///
/// /// What callers of an entities service care about.
/// #[derive(Debug, thiserror::Error)]
/// pub enum EntitiesError {
///     #[error("entity {0} not found")]
///     NotFound(String),
///     #[error("rate limited")]
///     RateLimited { retry_at: Option<SystemTime> },
///     #[error("entities service unavailable")]
///     Unavailable(#[source] Error),
///     #[error("invalid payload at {path}")]
///     InvalidPayload { path: String, #[source] source: Error },
///     #[error("unauthorized")]
///     Unauthorized,
///     #[error(transparent)]
///     Upstream(Error),
/// }
///
/// #[derive(serde::Deserialize)]
/// struct ApiError { code: String }
///
/// fn map(id: &str, error: Error) -> EntitiesError {
///     if error.is_not_found() {
///         return EntitiesError::NotFound(id.to_owned());
///     }
///     if error.is_unauthorized() || error.is_forbidden() {
///         return EntitiesError::Unauthorized;
///     }
///     if error.is_rate_limited() {
///         return EntitiesError::RateLimited { retry_at: error.retry_at() };
///     }
///     if let Some(v) = error.validation() {
///         let path = v.path().unwrap_or("").to_owned();
///         return EntitiesError::InvalidPayload { path, source: error };
///     }
///     // A vendor error body, decoded from the status error when there is one.
///     if let Some(Ok(body)) = error.status_error().map(|s| s.json::<ApiError>()) {
///         if body.code == "maintenance" {
///             return EntitiesError::Unavailable(error);
///         }
///     }
///     if error.is_server_error() || error.is_timeout() || error.is_retryable() {
///         return EntitiesError::Unavailable(error);
///     }
///     EntitiesError::Upstream(error)
/// }
///
/// // Against a scripted upstream (the `test-util` doubles):
/// use egress_core::Config;
/// use egress_core::test_util::{ScriptedTransport, block_on, step};
/// let upstream = ScriptedTransport::new();
/// upstream.push(step(404)).push(step(503).json(r#"{"code":"maintenance"}"#));
/// let client = upstream.client(Config::default().with_base_url("https://entities.example")).unwrap();
/// let error = block_on(client.get("/entities/7").send()).unwrap_err();
/// assert!(matches!(map("7", error), EntitiesError::NotFound(id) if id == "7"));
/// let error = block_on(client.post("/entities").send()).unwrap_err();
/// assert!(matches!(map("8", error), EntitiesError::Unavailable(_)));
/// ```
///
/// Every variant documents whether the request may have reached the server; ask
/// [`Error::may_have_been_sent`] rather than matching when that is all you need. Every variant
/// carries a [`CallMeta`] (attempts, elapsed time, correlation ID, why retrying stopped).
///
/// Most callers ask its predicates instead of matching variants:
///
/// ```
/// use egress_core::{Config, Error};
/// use egress_core::test_util::{ScriptedTransport, block_on, step};
///
/// fn what_to_do(error: &Error) -> &'static str {
///     if error.is_not_found() {
///         "an answer: there is no such entity"
///     } else if let Some(_at) = error.retry_at() {
///         "rate limited: come back at `at`"
///     } else if error.is_retryable() {
///         "transient: try again later"
///     } else if error.validation().is_some() {
///         "the upstream broke its contract"
///     } else {
///         "permanent"
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = ScriptedTransport::new();
/// upstream.push(step(404)).push(step(429).header("retry-after", "600"));
/// let client = upstream.client(Config::default().with_base_url("https://api.example.com"))?;
/// let error = block_on(client.get("/entities/404").send()).unwrap_err();
/// assert_eq!(what_to_do(&error), "an answer: there is no such entity");
/// assert_eq!(error.attempts(), 1);
/// let error = block_on(client.get("/entities/7").send()).unwrap_err();
/// assert_eq!(what_to_do(&error), "rate limited: come back at `at`");
/// assert!(!error.may_have_been_sent() || error.status().is_some());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request could not be built (bad URL, bad header, bad override). Never sent.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
        /// The call's metadata.
        meta: CallMeta,
    },
    /// A time limit expired. Sent or not depending on [`TimeoutKind::may_have_been_sent`].
    #[error("timed out ({kind}) after {} attempt(s)", meta.attempts)]
    Timeout {
        /// Which limit expired.
        kind: TimeoutKind,
        /// The transport failure behind it, when the transport reported it.
        #[source]
        source: Option<TransportError>,
        /// The call's metadata.
        meta: CallMeta,
    },
    /// The transport failed. Sent or not depending on [`TransportErrorKind::may_have_been_sent`].
    #[error("transport failed: {source} after {} attempt(s)", meta.attempts)]
    Transport {
        /// The failure, with the backend's native error as its source.
        #[source]
        source: TransportError,
        /// The call's metadata.
        meta: CallMeta,
    },
    /// The server answered with a status that is not a success. Sent.
    #[error("{source} after {} attempt(s)", meta.attempts)]
    Status {
        /// The response (boxed: it holds the headers and body).
        source: Box<StatusError>,
        /// The call's metadata.
        meta: CallMeta,
    },
    /// Rate limited, so the call ended at once instead of sleeping for nothing: the server
    /// asked to wait longer than the Retry-After cap or past the deadline (sent), or its host is
    /// held past the deadline, or the client-side rate limiter has no slot before it (then not
    /// sent by this attempt: [`CallMeta::attempts`] says how many were).
    #[error("rate limited until {}", httpdate::fmt_http_date(*retry_at))]
    RateLimited {
        /// When a retry may succeed (wall-clock time): the server's word, or the limiter's slot.
        retry_at: SystemTime,
        /// The throttled attempt's failure (usually [`Error::Status`] with 429 or 503), or the
        /// last attempt's failure; `None` when the call was refused before any attempt.
        last: Option<Box<Error>>,
        /// The call's metadata.
        meta: CallMeta,
    },
    /// The host's circuit is open (its recent attempts mostly failed), so the call was refused
    /// without sending. A call refused before any attempt has [`CallMeta::attempts`] 0.
    #[error("circuit open until {}", httpdate::fmt_http_date(*retry_at))]
    CircuitOpen {
        /// When the circuit half-opens (wall-clock time).
        retry_at: SystemTime,
        /// The last attempt's failure, when the circuit opened between two attempts of the call.
        last: Option<Box<Error>>,
        /// The call's metadata.
        meta: CallMeta,
    },
    /// The fleet's coordinator (shared rate limit) could not answer in time and the client is
    /// configured to fail closed, so the call was refused without sending.
    #[error("fleet coordinator unavailable: {source}")]
    FleetUnavailable {
        /// What went wrong with the coordinator.
        source: crate::guard::shared::CoordinatorError,
        /// The call's metadata.
        meta: CallMeta,
    },
    /// The retry budget refused a retry. The attempt before it was sent.
    #[error("retry budget exhausted; last attempt: {last}")]
    RetryBudgetExhausted {
        /// The failure the exchange wanted to retry.
        last: Box<Error>,
        /// The call's metadata.
        meta: CallMeta,
    },
    /// The response failed validation (status, content type, size, JSON shape, semantic checks).
    /// Sent; never retried.
    #[error("invalid response: {source}")]
    Validation {
        /// What is wrong, with the JSON path and a redacted excerpt.
        source: Box<ValidationError>,
        /// The call's metadata.
        meta: CallMeta,
    },
    /// No access token could be obtained from the client's token source (the token endpoint
    /// refused, failed or answered no token, or the call's deadline passed while waiting for
    /// it). Never sent.
    #[error("no access token: {source}")]
    Token {
        /// Why: [`TokenError`], whose [`is_final`](TokenError::is_final) says whether retrying
        /// can help.
        source: Box<TokenError>,
        /// The call's metadata.
        meta: CallMeta,
    },
    /// The response body was larger than the limit. Sent.
    #[error("response body exceeds the {limit}-byte limit ({} bytes)", .exceeded.as_str())]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
        /// Which limit: on the received bytes, on the decoded bytes, or the decoding ratio.
        exceeded: BodyLimit,
        /// The call's metadata.
        meta: CallMeta,
    },
}

impl Error {
    /// The call's metadata.
    pub fn meta(&self) -> &CallMeta {
        match self {
            Self::InvalidRequest { meta, .. }
            | Self::Timeout { meta, .. }
            | Self::Transport { meta, .. }
            | Self::Status { meta, .. }
            | Self::RateLimited { meta, .. }
            | Self::CircuitOpen { meta, .. }
            | Self::FleetUnavailable { meta, .. }
            | Self::RetryBudgetExhausted { meta, .. }
            | Self::Validation { meta, .. }
            | Self::Token { meta, .. }
            | Self::BodyTooLarge { meta, .. } => meta,
        }
    }

    pub(crate) fn meta_mut(&mut self) -> &mut CallMeta {
        match self {
            Self::InvalidRequest { meta, .. }
            | Self::Timeout { meta, .. }
            | Self::Transport { meta, .. }
            | Self::Status { meta, .. }
            | Self::RateLimited { meta, .. }
            | Self::CircuitOpen { meta, .. }
            | Self::FleetUnavailable { meta, .. }
            | Self::RetryBudgetExhausted { meta, .. }
            | Self::Validation { meta, .. }
            | Self::Token { meta, .. }
            | Self::BodyTooLarge { meta, .. } => meta,
        }
    }

    pub(crate) fn invalid_request(reason: impl Into<String>) -> Self {
        Self::InvalidRequest {
            reason: reason.into(),
            meta: CallMeta::default(),
        }
    }

    /// How many attempts were started.
    pub fn attempts(&self) -> u32 {
        self.meta().attempts
    }

    /// Time from the start of the call to its end.
    pub fn elapsed(&self) -> Duration {
        self.meta().elapsed
    }

    /// The correlation ID of the call.
    pub fn correlation_id(&self) -> Option<&CorrelationId> {
        self.meta().correlation_id.as_ref()
    }

    /// Why retrying stopped, if the exchange stopped on a failure.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.meta().stop
    }

    /// Whether a time limit expired.
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::RetryBudgetExhausted { last, .. } => last.is_timeout(),
            Self::Token { source, .. } => match &**source {
                TokenError::Deadline => true,
                TokenError::Request(error) => error.is_timeout(),
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether the failure itself was of a retryable kind (a transient status, a throttle, a
    /// transport failure that may pass), regardless of whether attempts, deadline or budget
    /// allowed one more try, and regardless of idempotency (a reset of a `POST` is transient,
    /// though re-sending it is unsafe: ask [`may_have_been_sent`](Self::may_have_been_sent) too).
    /// A caller that retries at a higher level asks this.
    pub fn is_retryable(&self) -> bool {
        // The exchange's own verdict, when it made one.
        match self.meta().stop {
            Some(StopReason::NotRetryable) => return false,
            Some(_) => return true,
            None => {}
        }
        match self {
            Self::InvalidRequest { .. } | Self::BodyTooLarge { .. } | Self::Validation { .. } => {
                false
            }
            Self::RateLimited { .. }
            | Self::CircuitOpen { .. }
            | Self::FleetUnavailable { .. }
            | Self::RetryBudgetExhausted { .. } => true,
            Self::Timeout { .. } => true,
            Self::Token { source, .. } => !source.is_final(),
            Self::Transport { source, .. } => !matches!(
                source.kind(),
                TransportErrorKind::Tls
                    | TransportErrorKind::Protocol
                    | TransportErrorKind::BodyTooLarge
                    | TransportErrorKind::Decode
                    | TransportErrorKind::Unsupported
                    | TransportErrorKind::ProxyRefused
            ),
            Self::Status { source, .. } => matches!(source.status.as_u16(), 408 | 429 | 500..=599),
        }
    }

    /// Whether the request may have reached the server (and so may have had effects).
    pub fn may_have_been_sent(&self) -> bool {
        let meta = self.meta();
        if let Some(tracked) = meta.may_have_been_sent {
            return tracked;
        }
        if meta.attempts == 0 && !matches!(self, Self::Status { .. } | Self::Validation { .. }) {
            return false;
        }
        match self {
            Self::InvalidRequest { meta, .. } | Self::Token { meta, .. } => meta.attempts > 0,
            Self::Timeout { kind, meta, .. } => kind.may_have_been_sent() || meta.attempts > 1,
            Self::Transport { source, meta } => source.may_have_been_sent() || meta.attempts > 1,
            Self::RateLimited { last, .. } | Self::CircuitOpen { last, .. } => last.is_some(),
            Self::FleetUnavailable { .. } => false,
            Self::Status { .. }
            | Self::RetryBudgetExhausted { .. }
            | Self::Validation { .. }
            | Self::BodyTooLarge { .. } => true,
        }
    }

    /// The status of the last response, if the call got one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { source, .. } => Some(source.status),
            Self::RetryBudgetExhausted { last, .. } => last.status(),
            Self::RateLimited { last, .. } | Self::CircuitOpen { last, .. } => {
                last.as_ref().and_then(|last| last.status())
            }
            _ => None,
        }
    }

    /// The response of an unexpected status, to decode a vendor's error body from.
    pub fn status_error(&self) -> Option<&StatusError> {
        match self {
            Self::Status { source, .. } => Some(source),
            Self::RetryBudgetExhausted { last, .. } => last.status_error(),
            Self::RateLimited { last, .. } | Self::CircuitOpen { last, .. } => {
                last.as_deref().and_then(Error::status_error)
            }
            _ => None,
        }
    }

    /// When a retry may succeed: for [`Error::RateLimited`] and [`Error::CircuitOpen`].
    pub fn retry_at(&self) -> Option<SystemTime> {
        match self {
            Self::RateLimited { retry_at, .. } | Self::CircuitOpen { retry_at, .. } => {
                Some(*retry_at)
            }
            _ => None,
        }
    }

    /// Whether the call was refused because the fleet's coordinator was unavailable and the
    /// client fails closed.
    pub fn is_fleet_unavailable(&self) -> bool {
        matches!(self, Self::FleetUnavailable { .. })
    }

    /// Whether the call was refused because its host's circuit is open.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Self::CircuitOpen { .. })
    }

    /// A short stable name for the `error.type` telemetry field.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Timeout { kind, .. } => kind.as_str(),
            Self::Transport { source, .. } => source.kind().as_str(),
            Self::Status { .. } => "status",
            Self::RateLimited { .. } => "rate_limited",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::FleetUnavailable { .. } => "fleet_unavailable",
            Self::RetryBudgetExhausted { .. } => "retry_budget_exhausted",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::Token { .. } => "token",
            Self::Validation { .. } => "validation",
        }
    }

    /// Why no access token could be obtained, for [`Error::Token`].
    pub fn token_error(&self) -> Option<&TokenError> {
        match self {
            Self::Token { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The validation failure, for [`Error::Validation`].
    pub fn validation(&self) -> Option<&ValidationError> {
        match self {
            Self::Validation { source, .. } => Some(source),
            _ => None,
        }
    }

    fn status_is(&self, code: u16) -> bool {
        self.status().is_some_and(|s| s.as_u16() == code)
    }

    /// 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        self.status_is(404)
    }

    /// 401 Unauthorized.
    pub fn is_unauthorized(&self) -> bool {
        self.status_is(401)
    }

    /// 403 Forbidden.
    pub fn is_forbidden(&self) -> bool {
        self.status_is(403)
    }

    /// 409 Conflict.
    pub fn is_conflict(&self) -> bool {
        self.status_is(409)
    }

    /// 422 Unprocessable Content.
    pub fn is_unprocessable(&self) -> bool {
        self.status_is(422)
    }

    /// Any 5xx.
    pub fn is_server_error(&self) -> bool {
        self.status().is_some_and(|s| s.is_server_error())
    }

    /// Rate limited: [`Error::RateLimited`], or a final 429.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Self::RateLimited { .. }) || self.status_is(429)
    }
}

/// An ID that cannot be sent is an invalid request.
impl From<crate::ids::InvalidId> for Error {
    fn from(invalid: crate::ids::InvalidId) -> Self {
        Self::invalid_request(invalid.reason())
    }
}

/// Why an access token could not be obtained. Carried by [`Error::Token`].
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token endpoint refused with an OAuth 2.0 error (RFC 6749 5.2: `invalid_client`,
    /// `invalid_grant`, `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`,
    /// `invalid_request`). Final: never retried.
    #[error("the token endpoint refused: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// The `error` code.
        code: String,
        /// The `error_description`, when the server gave one (at most 256 characters).
        description: Option<String>,
        /// The HTTP status of the answer (400 or 401).
        status: u16,
    },
    /// The token request failed (timeout, transport failure, an unexpected status after its own
    /// retries). Retryable when that error is.
    #[error("the token request failed: {0}")]
    Request(Box<Error>),
    /// The token endpoint answered 2xx with something that is not a usable token (RFC 6749
    /// 5.1: no `access_token`, a `token_type` other than `Bearer`, not JSON). Final.
    #[error("the token endpoint's answer is not a token: {0}")]
    InvalidResponse(String),
    /// The call's deadline passed while its token was being fetched (by it or by another call).
    #[error("no token before the call's deadline")]
    Deadline,
    /// A custom token source failed.
    #[error("the token source failed: {source}")]
    Source {
        /// What failed.
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
        /// Whether retrying cannot help.
        is_final: bool,
    },
}

impl TokenError {
    /// A custom source's failure.
    pub fn from_source(
        source: impl std::error::Error + Send + Sync + 'static,
        is_final: bool,
    ) -> Self {
        Self::Source {
            source: std::sync::Arc::new(source),
            is_final,
        }
    }

    /// Whether retrying cannot help: the server refused the credentials or the request, or its
    /// answer is not a token.
    pub fn is_final(&self) -> bool {
        match self {
            Self::Refused { .. } | Self::InvalidResponse(_) => true,
            Self::Request(error) => !error.is_retryable(),
            Self::Deadline => false,
            Self::Source { is_final, .. } => *is_final,
        }
    }

    /// A short stable name for telemetry (`error.type`): the OAuth 2.0 error code when the
    /// server refused, else the kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            // Only the codes RFC 6749 5.2 defines: a server's own code is no metric label.
            Self::Refused { code, .. } => match code.as_str() {
                "invalid_request" => "invalid_request",
                "invalid_client" => "invalid_client",
                "invalid_grant" => "invalid_grant",
                "unauthorized_client" => "unauthorized_client",
                "unsupported_grant_type" => "unsupported_grant_type",
                "invalid_scope" => "invalid_scope",
                _ => "refused",
            },
            Self::Request(error) => error.type_name(),
            Self::InvalidResponse(_) => "invalid_token_response",
            Self::Deadline => "deadline",
            Self::Source { .. } => "token_source",
        }
    }
}

/// A configuration that was rejected, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    field: &'static str,
    reason: String,
}

impl ConfigError {
    /// A rejected setting: `field` is its dotted path (such as `tls.roots`), `reason` what is wrong.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The dotted path of the offending field, such as `retry.max_attempts`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
