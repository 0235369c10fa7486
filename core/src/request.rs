//! The request model: one logical call, before any attempt, with the caller's per-request
//! overrides.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::error::Error;
use crate::guard::CallGuards;
use crate::ids::{CorrelationId, IdempotencyKey};
use crate::redact::{Redactor, percent_decode};
use crate::retry::Classifier;
use crate::url::{Url, check_absolute};

/// Whether and how the request carries an idempotency key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyChoice {
    /// No key.
    #[default]
    None,
    /// Mint one for this exchange (a UUID v4), the same on every attempt.
    Mint,
    /// Use this key on every attempt.
    Given(IdempotencyKey),
}

/// What an endpoint knows better than the client-wide policy.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Overrides {
    /// Attempts for this call, the first one included.
    pub max_attempts: Option<u32>,
    /// The whole-call deadline for this call.
    pub deadline: Option<Duration>,
    /// The per-attempt timeout for this call.
    pub attempt_timeout: Option<Duration>,
    /// `Some(true)` marks a non-idempotent method safe to re-send; `Some(false)` forbids
    /// re-sending even an idempotent method after it may have been sent.
    pub idempotent: Option<bool>,
    /// The idempotency key.
    pub idempotency_key: KeyChoice,
    /// The correlation ID; minted when absent.
    pub correlation_id: Option<CorrelationId>,
    /// A classifier replacing the default rules for this call.
    pub classifier: Option<Arc<dyn Classifier>>,
    /// The service (vendor) name for telemetry, such as `github`.
    pub service: Option<Cow<'static, str>>,
    /// The operation name for telemetry, such as `get_repository`.
    pub operation: Option<Cow<'static, str>>,
    /// The longest `Retry-After` (or vendor hint) honoured for this call; longer ones end it
    /// with `RateLimited` at once.
    pub retry_after_cap: Option<Duration>,
    /// How this call takes part in the circuit breaker, the hold and the rate limit.
    pub guards: CallGuards,
    /// The key the circuit, hold and rate limit are kept under instead of the host (a vendor's
    /// quota scope, such as one API resource).
    pub guard_key: Option<Cow<'static, str>>,
    /// `Some(true)` hedges this call (an idempotent one only) under the client's
    /// [`HedgingConfig`](crate::guard::hedge::HedgingConfig) even when the client does not hedge
    /// by default; `Some(false)` never hedges it.
    pub hedge: Option<bool>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field("max_attempts", &self.max_attempts)
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("idempotent", &self.idempotent)
            .field("idempotency_key", &self.idempotency_key)
            .field("correlation_id", &self.correlation_id)
            .field("classifier", &self.classifier)
            .field("service", &self.service)
            .field("operation", &self.operation)
            .field("retry_after_cap", &self.retry_after_cap)
            .field("guards", &self.guards)
            .field("guard_key", &self.guard_key)
            .field("hedge", &self.hedge)
            .finish()
    }
}

/// One logical request: method, absolute URL, headers, body and overrides.
///
/// ```
/// use egress_core::{Request, http::Method};
/// let req = Request::new(Method::GET, "https://api.example.com/entities/7").unwrap()
///     .with_header("accept", "application/json").unwrap()
///     .with_max_attempts(5);
/// assert_eq!(req.url().path(), "/entities/7");
/// ```
#[derive(Clone)]
pub struct Request {
    pub(crate) method: Method,
    /// The URL; for a request built by a client from its prepared base, parsed from `uri` on
    /// first use (most calls never ask).
    url: OnceLock<Url>,
    /// The URI to send, when already built (by a client from its prepared base); otherwise the
    /// exchange parses it from `url`. At least one of the two is set.
    pub(crate) uri: Option<Uri>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) overrides: Overrides,
}

impl Request {
    /// A request to an absolute `http` or `https` URL.
    pub fn new(method: Method, url: &str) -> Result<Self, Error> {
        let url =
            Url::parse(url).map_err(|e| Error::invalid_request(format!("invalid url: {e}")))?;
        Self::from_url(method, url)
    }

    /// A request to an already parsed URL.
    ///
    /// Credentials in the URL's userinfo (`https://user:pass@host/`) are moved into an
    /// `Authorization: Basic` header marked sensitive, and removed from the URL, so that they are
    /// never sent in the request line or `Host` header and never logged.
    pub fn from_url(method: Method, mut url: Url) -> Result<Self, Error> {
        check_absolute(&url).map_err(|e| Error::invalid_request(e.to_string()))?;
        let mut headers = HeaderMap::new();
        if !url.username().is_empty() || url.password().is_some() {
            let user = percent_decode(url.username());
            let password = url.password().map(percent_decode).unwrap_or_default();
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                .expect("invariant: base64 output is a valid header value");
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        Ok(Self {
            method,
            url: OnceLock::from(url),
            uri: None,
            headers,
            body: Bytes::new(),
            overrides: Overrides::default(),
        })
    }

    /// A request to a URI a client built from its prepared base URL (absolute, `http` or
    /// `https`, no userinfo, and text the URL parser keeps as it is).
    pub(crate) fn from_uri(method: Method, uri: Uri) -> Self {
        Self {
            method,
            url: OnceLock::new(),
            uri: Some(uri),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            overrides: Overrides::default(),
        }
    }

    /// Converts an `http::Request` with an absolute URI.
    pub fn from_http(request: http::Request<Bytes>) -> Result<Self, Error> {
        let (parts, body) = request.into_parts();
        let mut req = Self::new(parts.method, &parts.uri.to_string())?;
        let mut last: Option<HeaderName> = None;
        for (name, value) in parts.headers {
            // `None` repeats the previous name (a header with several values).
            let name = match name.or(last.take()) {
                Some(name) => name,
                None => continue,
            };
            req.headers.append(name.clone(), value);
            last = Some(name);
        }
        req.body = body;
        Ok(req)
    }

    /// Adds a header (appending to earlier values of the same name).
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, Error> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::invalid_request(format!("invalid header name {name:?}")))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| Error::invalid_request(format!("invalid value for header {name}")))?;
        if Redactor::default().is_secret_header(name.as_str()) {
            value.set_sensitive(true);
        }
        self.headers.append(name, value);
        Ok(self)
    }

    /// Replaces the headers.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the attempts for this call.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.overrides.max_attempts = Some(n);
        self
    }

    /// Sets the whole-call deadline for this call.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.overrides.deadline = Some(deadline);
        self
    }

    /// Sets the per-attempt timeout for this call.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.overrides.attempt_timeout = Some(timeout);
        self
    }

    /// Marks the request as safe (or not) to re-send after it may have been processed.
    pub fn with_idempotent(mut self, idempotent: bool) -> Self {
        self.overrides.idempotent = Some(idempotent);
        self
    }

    /// Turns hedging on or off for this call (see [`Overrides::hedge`]).
    pub fn with_hedge(mut self, hedge: bool) -> Self {
        self.overrides.hedge = Some(hedge);
        self
    }

    /// Sets the idempotency key choice.
    pub fn with_idempotency_key(mut self, key: KeyChoice) -> Self {
        self.overrides.idempotency_key = key;
        self
    }

    /// Sets the correlation ID.
    pub fn with_correlation_id(mut self, id: CorrelationId) -> Self {
        self.overrides.correlation_id = Some(id);
        self
    }

    /// Sets the longest `Retry-After` honoured for this call.
    pub fn with_retry_after_cap(mut self, cap: Duration) -> Self {
        self.overrides.retry_after_cap = Some(cap);
        self
    }

    /// Sets how this call takes part in the circuit breaker, the hold and the rate limit.
    pub fn with_guards(mut self, guards: CallGuards) -> Self {
        self.overrides.guards = guards;
        self
    }

    /// Keeps the circuit, hold and rate limit of this call under `key` instead of its host.
    pub fn with_guard_key(mut self, key: impl Into<Cow<'static, str>>) -> Self {
        self.overrides.guard_key = Some(key.into());
        self
    }

    /// Replaces the default classifier for this call.
    pub fn with_classifier(mut self, classifier: Arc<dyn Classifier>) -> Self {
        self.overrides.classifier = Some(classifier);
        self
    }

    /// Names the service (vendor) and operation in telemetry.
    pub fn with_operation(
        mut self,
        service: impl Into<Cow<'static, str>>,
        operation: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.overrides.service = Some(service.into());
        self.overrides.operation = Some(operation.into());
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The URL.
    pub fn url(&self) -> &Url {
        self.url.get_or_init(|| {
            let uri = self
                .uri
                .as_ref()
                .expect("invariant: a request without its url was built with its uri");
            Url::parse(&uri.to_string())
                .expect("invariant: a uri built from a parsed base url and a verbatim path parses")
        })
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The overrides.
    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// `redactor` extended with the secrets this request carries ([`Redactor::with_request_secrets`]),
    /// without parsing the URL of a request built from a client's prepared base.
    pub(crate) fn with_secrets(&self, redactor: &Redactor) -> Redactor {
        match self.url.get() {
            Some(url) => redactor.with_request_secrets(url, &self.headers),
            // Built from a base without userinfo: only the query can carry a secret.
            None => redactor.with_secrets_of(
                "",
                None,
                self.uri.as_ref().and_then(Uri::query),
                &self.headers,
            ),
        }
    }

    /// The host (and port, when not the scheme's default) the retry budget is kept for.
    pub fn budget_key(&self) -> &str {
        match self.uri.as_ref().and_then(Uri::authority) {
            // Built from the base URL's text from the host to the port.
            Some(authority) => authority.as_str(),
            // The URL's own text from the host to the port: no copy.
            None => &self.url()[::url::Position::BeforeHost..::url::Position::AfterPort],
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redactor = Redactor::default();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &redactor.url(self.url()))
            .field("headers", &redactor.headers(&self.headers))
            .field("body_len", &self.body.len())
            .field("overrides", &self.overrides)
            .finish()
    }
}
