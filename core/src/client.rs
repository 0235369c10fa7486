//! The base [`Client`] and its builder.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::config::{Config, ConfigError, Credentials, Policy};
use crate::drive::drive_mut;
use crate::error::Error;
use crate::exchange::Exchange;
use crate::ids::{CorrelationId, IdempotencyKey};
use crate::request::{KeyChoice, Request};
use crate::response::Response;
use crate::retry::Classifier;
use crate::rt::{Clock, Entropy, Sleeper, Transport};
use crate::token::cache::Pieces;
use crate::token::{ClientCredentials, CurrentToken, OAuth2Config, Token, TokenCache, TokenSource};

/// Reads the correlation ID of the ambient scope (a backend's task-local), if any.
pub type AmbientCorrelation = Arc<dyn Fn() -> Option<CorrelationId> + Send + Sync>;

/// The runtime pieces a client needs; every one is required.
#[derive(Clone)]
pub struct Runtime {
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
    entropy: Arc<dyn Entropy>,
    ambient: Option<AmbientCorrelation>,
}

impl Runtime {
    /// Bundles a backend's transport, clock, sleeper and entropy.
    pub fn new(
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        sleeper: Arc<dyn Sleeper>,
        entropy: Arc<dyn Entropy>,
    ) -> Self {
        Self {
            transport,
            clock,
            sleeper,
            entropy,
            ambient: None,
        }
    }

    /// Sets where the ambient correlation ID is read from when a request carries none.
    pub fn with_ambient_correlation(mut self, ambient: AmbientCorrelation) -> Self {
        self.ambient = Some(ambient);
        self
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pieces themselves are not shown: a transport may hold anything (a test script, a
        // connection pool), and none of it belongs in a log line.
        f.debug_struct("Runtime")
            .field("ambient_correlation", &self.ambient.is_some())
            .finish_non_exhaustive()
    }
}

/// Adds credentials to every request of a client. Implementations must mark the values they
/// add as sensitive ([`HeaderValue::set_sensitive`]) so that they never appear in `Debug`.
pub trait Auth: fmt::Debug + Send + Sync {
    /// Adds the credentials to the request's headers.
    fn apply(&self, headers: &mut HeaderMap) -> Result<(), Error>;
}

fn sensitive(value: &str) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| Error::invalid_request("a credential is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct BearerToken(SecretString);

impl BearerToken {
    /// Wraps a token.
    pub fn new(token: SecretString) -> Self {
        Self(token)
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken([REDACTED])")
    }
}

impl Auth for BearerToken {
    fn apply(&self, headers: &mut HeaderMap) -> Result<(), Error> {
        let value = sensitive(&format!("Bearer {}", self.0.expose_secret()))?;
        headers.insert(AUTHORIZATION, value);
        Ok(())
    }
}

/// An API key in a header of the vendor's choosing (such as `X-Api-Key`).
#[derive(Clone)]
pub struct ApiKeyHeader {
    name: HeaderName,
    key: SecretString,
}

impl ApiKeyHeader {
    /// An API key sent in header `name`.
    pub fn new(name: &str, key: SecretString) -> Result<Self, ConfigError> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ConfigError::new(
                "auth.header",
                format!("{name:?} is not a valid header name"),
            )
        })?;
        Ok(Self { name, key })
    }
}

impl fmt::Debug for ApiKeyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyHeader({}: [REDACTED])", self.name)
    }
}

impl Auth for ApiKeyHeader {
    fn apply(&self, headers: &mut HeaderMap) -> Result<(), Error> {
        headers.insert(self.name.clone(), sensitive(self.key.expose_secret())?);
        Ok(())
    }
}

struct Inner {
    policy: Policy,
    runtime: Runtime,
    default_headers: HeaderMap,
    auth: Option<Arc<dyn Auth>>,
    service: Option<Cow<'static, str>>,
    tokens: Option<TokenCache>,
}

/// Where a client's access tokens come from, as set on a builder.
#[derive(Clone, Debug)]
enum Tokens {
    Source(Arc<dyn TokenSource>),
    OAuth2(Box<OAuth2Config>),
}

/// The base client. Cheap to clone; build it once at start-up..
///
/// The base [`Client`]: configuration, the shared retry budget, default headers, user agent,
/// authentication and correlation, over the runtime pieces a backend supplies.
///
/// A client is built once at start-up and cloned wherever it is needed (clones share the
/// connection pool and the retry budget). It can only be built with all of its runtime pieces, so
/// there is no "no timer configured" failure at call time.
///
/// A backend crate builds it (`egress_tokio::client(config)`); tests build it over the
/// scripted transport (feature `test-util`):
///
/// ```
/// use egress_core::Config;
/// use egress_core::test_util::{ScriptedTransport, block_on, step};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = ScriptedTransport::new();
/// upstream.push(step(503)).push(step(200).json(r#"{"id":"7"}"#));
/// let client = upstream.client(Config::default().with_base_url("https://api.example.com/v1"))?;
///
/// let response = block_on(client.get("/entities/7").send())?;
/// assert_eq!(response.attempts(), 2); // the 503 was retried
/// assert_eq!(upstream.requests()[1].uri, "https://api.example.com/v1/entities/7");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("policy", &self.inner.policy)
            .field("runtime", &self.inner.runtime)
            .field(
                "default_headers",
                &self
                    .inner
                    .policy
                    .redactor()
                    .headers(&self.inner.default_headers),
            )
            .field("auth", &self.inner.auth)
            .field("tokens", &self.inner.tokens)
            .finish()
    }
}

/// The settings every client builder takes, whatever its backend: default headers,
/// authentication, access tokens, the service name and the fleet coordinator.
///
/// This is their one home: [`ClientBuilder`] and each backend's `Builder` hold a
/// `ClientOptions` and offer the same `with_*` methods, which hand over to these (through
/// [`client_options_methods!`](crate::client_options_methods)). Values are checked when the
/// client is built, so every builder reports a bad default header the same way: a
/// [`ConfigError`] from `build`.
#[derive(Clone, Default)]
pub struct ClientOptions {
    default_headers: Vec<(String, String)>,
    auth: Option<Arc<dyn Auth>>,
    service: Option<Cow<'static, str>>,
    tokens: Option<Tokens>,
    coordinator: Option<Arc<dyn crate::rt::Coordinator>>,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials: names only.
        let names: Vec<&str> = self
            .default_headers
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        f.debug_struct("ClientOptions")
            .field("default_headers", &names)
            .field("auth", &self.auth)
            .field("service", &self.service)
            .field("tokens", &self.tokens)
            .field("coordinator", &self.coordinator)
            .finish()
    }
}

impl ClientOptions {
    /// Adds a header sent with every request unless the request sets it. The name and value
    /// are checked when the client is built (a [`ConfigError`] naming `default_headers`); a
    /// value the redaction rules call sensitive never appears in telemetry or `Debug`.
    pub fn with_default_header(mut self, name: &str, value: &str) -> Self {
        self.default_headers
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the authentication hook, in place of the configuration's credentials.
    pub fn with_auth(mut self, auth: Arc<dyn Auth>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_bearer_token(self, token: SecretString) -> Self {
        self.with_auth(Arc::new(BearerToken::new(token)))
    }

    /// Sends an OAuth 2.0 client-credentials access token (RFC 6749 4.4) with every request:
    /// fetched from the token endpoint, cached, refreshed ahead of expiry by one call at a time,
    /// and replaced once when the API rejects it ([`TokenSource`](crate::TokenSource)). The token requests go
    /// through a client of the same runtime and configuration (no base URL, no credentials). An
    /// `[auth.oauth2]` section of the configuration does the same without this line.
    ///
    /// ```no_run
    /// use egress_core::OAuth2Config;
    ///
    /// let oauth2 = OAuth2Config::from_env("https://login.example.com/oauth2/token", "inventory", "INVENTORY_SECRET")
    ///     .with_scopes(["entities:read"]);
    /// let options = egress_core::ClientOptions::default().with_oauth2(oauth2);
    /// # drop(options);
    /// ```
    pub fn with_oauth2(mut self, config: OAuth2Config) -> Self {
        self.tokens = Some(Tokens::OAuth2(Box::new(config)));
        self
    }

    /// Sends an access token from a token source of your own with every request, with the
    /// same lifecycle as [`with_oauth2`](Self::with_oauth2). It takes the place of
    /// [`with_auth`](Self::with_auth) and of the configuration's credentials.
    pub fn with_token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(Tokens::Source(source));
        self
    }

    /// Names the service (vendor) in the telemetry of every call, such as `github`.
    pub fn with_service(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// Shares the rate limit, host holds and open circuits with the other replicas through
    /// `coordinator` (such as `egress_fleet::Fleet::start(&config.fleet)?`), when the
    /// configuration's `[fleet]` is enabled.
    pub fn with_coordinator(mut self, coordinator: Arc<dyn crate::rt::Coordinator>) -> Self {
        self.coordinator = Some(coordinator);
        self
    }

    /// These options with `later`'s on top: its default headers added after these, and each
    /// of its other settings in place of this one's when it has it.
    fn merged(mut self, later: ClientOptions) -> Self {
        self.default_headers.extend(later.default_headers);
        self.auth = later.auth.or(self.auth);
        self.service = later.service.or(self.service);
        self.tokens = later.tokens.or(self.tokens);
        self.coordinator = later.coordinator.or(self.coordinator);
        self
    }

    /// The default headers as a map, each name and value checked.
    fn header_map(&self) -> Result<HeaderMap, ConfigError> {
        let mut map = HeaderMap::new();
        for (name, value) in &self.default_headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::new(
                    "default_headers",
                    format!("{name:?} is not a valid header name"),
                )
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                ConfigError::new("default_headers", format!("invalid value for {name}"))
            })?;
            map.append(name, value);
        }
        Ok(map)
    }
}

/// The `with_*` methods of [`ClientOptions`] on a builder that holds one in the field named
/// `$field`: [`ClientBuilder`] and each backend's `Builder` take them from here, so that the
/// settings every builder shares are written once. Each method hands its arguments to the
/// `ClientOptions` method of the same name, whose documentation it links.
#[doc(hidden)]
#[macro_export]
macro_rules! client_options_methods {
    ($field:ident) => {
        /// Adds a header sent with every request unless the request sets it, checked when
        /// the client is built
        /// ([`ClientOptions::with_default_header`](egress_core::ClientOptions::with_default_header)).
        pub fn with_default_header(mut self, name: &str, value: &str) -> Self {
            self.$field = ::core::mem::take(&mut self.$field).with_default_header(name, value);
            self
        }

        /// Sets the authentication hook, in place of the configuration's credentials
        /// ([`ClientOptions::with_auth`](egress_core::ClientOptions::with_auth)).
        pub fn with_auth(mut self, auth: ::std::sync::Arc<dyn $crate::Auth>) -> Self {
            self.$field = ::core::mem::take(&mut self.$field).with_auth(auth);
            self
        }

        /// Sends `Authorization: Bearer <token>` with every request
        /// ([`ClientOptions::with_bearer_token`](egress_core::ClientOptions::with_bearer_token)).
        pub fn with_bearer_token(mut self, token: $crate::SecretString) -> Self {
            self.$field = ::core::mem::take(&mut self.$field).with_bearer_token(token);
            self
        }

        /// Sends an OAuth 2.0 client-credentials access token with every request: cached,
        /// refreshed ahead of expiry, replaced once when the API rejects it
        /// ([`ClientOptions::with_oauth2`](egress_core::ClientOptions::with_oauth2)).
        pub fn with_oauth2(mut self, config: $crate::OAuth2Config) -> Self {
            self.$field = ::core::mem::take(&mut self.$field).with_oauth2(config);
            self
        }

        /// Sends an access token from a token source of your own with every request
        /// ([`ClientOptions::with_token_source`](egress_core::ClientOptions::with_token_source)).
        pub fn with_token_source(
            mut self,
            source: ::std::sync::Arc<dyn $crate::TokenSource>,
        ) -> Self {
            self.$field = ::core::mem::take(&mut self.$field).with_token_source(source);
            self
        }

        /// Names the service (vendor) in the telemetry of every call
        /// ([`ClientOptions::with_service`](egress_core::ClientOptions::with_service)).
        pub fn with_service(
            mut self,
            name: impl ::core::convert::Into<::std::borrow::Cow<'static, str>>,
        ) -> Self {
            self.$field = ::core::mem::take(&mut self.$field).with_service(name);
            self
        }

        /// Shares the rate limit, host holds and open circuits with the other replicas
        /// ([`ClientOptions::with_coordinator`](egress_core::ClientOptions::with_coordinator)).
        pub fn with_coordinator(
            mut self,
            coordinator: ::std::sync::Arc<dyn $crate::rt::Coordinator>,
        ) -> Self {
            self.$field = ::core::mem::take(&mut self.$field).with_coordinator(coordinator);
            self
        }
    };
}

/// Builds a [`Client`] over a backend's runtime pieces ([`Client::builder`]). The backends'
/// own builders (`egress_tokio::Builder`, `egress_async_std::Builder`) make one of these when
/// they build.
pub struct ClientBuilder {
    config: Config,
    runtime: Runtime,
    options: ClientOptions,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .field("runtime", &self.runtime)
            .field("options", &self.options)
            .finish()
    }
}

impl ClientBuilder {
    crate::client_options_methods!(options);

    /// Adds `options` (a backend builder's): their default headers after those set so far,
    /// and each of their other settings in place of the one set so far.
    pub fn with_options(mut self, options: ClientOptions) -> Self {
        self.options = self.options.merged(options);
        self
    }

    /// Validates the configuration and builds the client. Credentials from the configuration
    /// are used unless [`with_auth`](Self::with_auth) set others.
    pub fn build(self) -> Result<Client, ConfigError> {
        let mut default_headers = self.options.header_map()?;
        let ClientOptions {
            default_headers: _,
            auth,
            service,
            tokens,
            coordinator,
        } = self.options;
        let auth = match (auth, &self.config.auth) {
            (Some(auth), _) => Some(auth),
            (None, Some(Credentials::Bearer { token })) => {
                Some(Arc::new(BearerToken::new(token.clone())) as Arc<dyn Auth>)
            }
            (None, Some(Credentials::ApiKey { header, key })) => {
                Some(Arc::new(ApiKeyHeader::new(header, key.clone())?) as Arc<dyn Auth>)
            }
            (None, _) => None,
        };
        let tokens = match (tokens, &self.config.auth) {
            (Some(Tokens::Source(source)), _) => Some(source),
            (Some(Tokens::OAuth2(oauth2)), _) => {
                Some(client_credentials(*oauth2, &self.config, &self.runtime)?)
            }
            (None, Some(Credentials::OAuth2(oauth2))) if auth.is_none() => Some(
                client_credentials(oauth2.clone(), &self.config, &self.runtime)?,
            ),
            (None, _) => None,
        };
        let tokens = tokens.map(TokenCache::new).transpose()?;
        let policy = self.config.build_with_coordinator(coordinator)?;
        // Units and descriptions reach the recorder installed now (see `describe_metrics`).
        #[cfg(feature = "metrics")]
        crate::describe_metrics();
        policy.redactor().mark_sensitive(&mut default_headers);
        Ok(Client {
            inner: Arc::new(Inner {
                policy,
                runtime: self.runtime,
                default_headers,
                auth,
                service,
                tokens,
            }),
        })
    }
}

/// The OAuth 2.0 client-credentials source of a client: its token requests go through a client
/// of the same runtime and configuration, without base URL or credentials.
fn client_credentials(
    oauth2: OAuth2Config,
    config: &Config,
    runtime: &Runtime,
) -> Result<Arc<dyn TokenSource>, ConfigError> {
    let mut token_config = config.clone();
    token_config.base_url = None;
    token_config.auth = None;
    let client = Client::new(token_config, runtime.clone())?;
    Ok(Arc::new(ClientCredentials::new(oauth2, client)?))
}

impl Client {
    /// A builder over a backend's runtime pieces.
    pub fn builder(config: Config, runtime: Runtime) -> ClientBuilder {
        ClientBuilder {
            config,
            runtime,
            options: ClientOptions::default(),
        }
    }

    /// A client with no default headers and no authentication.
    pub fn new(config: Config, runtime: Runtime) -> Result<Self, ConfigError> {
        Self::builder(config, runtime).build()
    }

    /// The validated policy (configuration and shared retry budget).
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// A request with any method. `path` is joined onto the base URL (it cannot leave the base's
    /// origin); without a base URL it must be an absolute URL.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let policy = &self.inner.policy;
        // A common path joins onto the prepared base without parsing a URL; any other takes
        // the checked join.
        let request = match (
            policy.base_target().and_then(|t| t.join(path)),
            policy.base_url(),
        ) {
            (Some(uri), _) => Ok(Request::from_uri(method, uri)),
            (None, Some(base)) => crate::url::join(base, path)
                .map_err(|e| Error::invalid_request(e.to_string()))
                .and_then(|url| Request::from_url(method, url)),
            (None, None) => Request::new(method, path),
        };
        RequestBuilder {
            client: self.clone(),
            request,
        }
    }

    /// A `GET` request.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// A `POST` request.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// A `PUT` request.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    /// A `PATCH` request.
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    /// A `DELETE` request.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// Sends a prepared request: default headers and authentication are added, a correlation ID
    /// (ambient, else minted) and a requested idempotency key are fixed for every attempt, then
    /// the exchange is driven to its end.
    ///
    /// Dropping the returned future cancels the attempt in flight and schedules nothing more;
    /// only the retry budget's bookkeeping of attempts already made survives.
    pub async fn send(&self, request: Request) -> Result<Response, Error> {
        if let Some(tokens) = &self.inner.tokens {
            // Boxed: a client without a token source keeps its smaller future.
            return Box::pin(self.send_with_token(tokens, request)).await;
        }
        // The call starts on the first poll, inside whatever scope the caller wraps the future
        // in (an ambient correlation ID is read then). The exchange is a local of this future
        // and the driver borrows it: held once, not also inside the driver's future.
        let mut exchange = self.start(request);
        let rt = &self.inner.runtime;
        drive_mut(&mut exchange, &*rt.clock, &*rt.sleeper, &*rt.transport).await
    }

    /// The exchange of `request`: default headers, authentication, IDs and the jitter seed
    /// added. A request the authentication cannot be applied to gives an exchange that is
    /// already done with that error.
    fn start(&self, mut request: Request) -> Exchange {
        let (seed, refused) = self.prepare(&mut request);
        let (now, wall) = self.inner.runtime.clock.now_and_wall();
        Exchange::refusing(request, &self.inner.policy, now, seed, refused, Some(wall))
    }

    /// Adds default headers, authentication and IDs to `request`; returns the jitter seed and
    /// the authentication's refusal, if any.
    fn prepare(&self, request: &mut Request) -> (u64, Option<Error>) {
        let inner = &*self.inner;
        let rt = &inner.runtime;
        for (name, value) in &inner.default_headers {
            if !request.headers.contains_key(name) {
                request.headers.append(name, value.clone());
            }
        }
        let refused = inner
            .auth
            .as_ref()
            .and_then(|auth| auth.apply(&mut request.headers).err());
        let o = &mut request.overrides;
        if o.service.is_none() {
            o.service.clone_from(&inner.service);
        }
        if o.correlation_id.is_none() {
            o.correlation_id = rt.ambient.as_ref().and_then(|read| read());
        }
        let mint_id = o.correlation_id.is_none();
        let mint_key = o.idempotency_key == KeyChoice::Mint;
        // One draw for everything this call needs (one system call on the real backends instead
        // of one per value), in a fixed order: ID, key, jitter seed (so that a seeded entropy
        // source gives the same IDs and timeline whatever the call asks for).
        let mut random = [0u8; 40];
        let len = 16 * (usize::from(mint_id) + usize::from(mint_key)) + 8;
        rt.entropy.fill(&mut random[..len]);
        let mut rest = &random[..len];
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head
        };
        if mint_id {
            let bytes = take(16).try_into().unwrap_or_default();
            o.correlation_id = Some(CorrelationId::from_random_bytes(bytes));
        }
        if mint_key {
            let bytes = take(16).try_into().unwrap_or_default();
            o.idempotency_key = KeyChoice::Given(IdempotencyKey::from_random_bytes(bytes));
        }
        let seed = u64::from_le_bytes(take(8).try_into().unwrap_or_default());
        (seed, refused)
    }

    /// A call with an access token from the client's token source: the token is obtained within
    /// the call's deadline (or the call ends with [`Error::Token`], unsent), and a response that
    /// rejects it ([`TokenSource::is_rejection`]) makes the token be replaced and the request
    /// re-sent once, within what is left of the deadline. A request that carries its own
    /// `Authorization` is sent as it is.
    async fn send_with_token(
        &self,
        tokens: &TokenCache,
        mut request: Request,
    ) -> Result<Response, Error> {
        if request.headers.contains_key(AUTHORIZATION) {
            return self.drive(self.start(request)).await;
        }
        let rt = &self.inner.runtime;
        let started = rt.clock.now();
        let deadline_after = request
            .overrides
            .deadline
            .unwrap_or(self.inner.policy.config().timeouts.deadline);
        let deadline = crate::exchange::saturating_add(started, deadline_after);
        // Headers, correlation ID and idempotency key once: the same on a re-send.
        let (seed, refused) = self.prepare(&mut request);
        // Fixed by `prepare` (the caller's, the ambient one, or a new one).
        let correlation_id = request.overrides.correlation_id.clone();
        let pieces = Pieces {
            clock: &*rt.clock,
            sleeper: &*rt.sleeper,
            entropy: &*rt.entropy,
            correlation_id: correlation_id.as_ref().map_or("", CorrelationId::as_str),
        };
        let (token, result) = self
            .send_once(tokens, &pieces, request.clone(), deadline, seed, refused)
            .await;
        let rejected = match (&result, token) {
            (Err(Error::Status { source, .. }), Some(token))
                if tokens.source().is_rejection(source) =>
            {
                token
            }
            _ => return result,
        };
        // Rejected: replace the token and re-send once, never more (a 401 proves the request
        // was not processed, so any method may be re-sent), if time is left.
        tokens.reject(rejected.generation(), pieces.correlation_id);
        if rt.clock.now() >= deadline {
            return result;
        }
        let sent = result.as_ref().err().map_or(1, Error::attempts);
        let seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let (_, mut result) = self
            .send_once(tokens, &pieces, request, deadline, seed, None)
            .await;
        // One call: the attempts and time of the first send count too.
        let elapsed = rt.clock.now().saturating_duration_since(started);
        match &mut result {
            Ok(response) => {
                response.attempts += sent;
                response.elapsed = elapsed;
            }
            Err(error) => {
                let meta = error.meta_mut();
                meta.attempts += sent;
                meta.elapsed = elapsed;
                meta.may_have_been_sent = Some(true);
            }
        }
        result
    }

    /// One exchange of `request` with the current token, within what is left before
    /// `deadline`; the token sent (`None` when there was none: then the exchange ends at once
    /// with [`Error::Token`]) and the result.
    async fn send_once(
        &self,
        tokens: &TokenCache,
        pieces: &Pieces<'_>,
        mut request: Request,
        deadline: Instant,
        seed: u64,
        mut refused: Option<Error>,
    ) -> (Option<CurrentToken>, Result<Response, Error>) {
        let token = tokens
            .token(pieces, deadline)
            .await
            .and_then(|token| Ok((Token::header_value(token.value())?, token)));
        let token = match token {
            Ok((value, token)) => {
                request.headers.insert(AUTHORIZATION, value);
                Some(token)
            }
            Err(error) => {
                refused.get_or_insert(Error::Token {
                    source: Box::new(error),
                    meta: crate::error::CallMeta::default(),
                });
                None
            }
        };
        // The exchange gets what is left of the call's deadline (the token took some).
        let (now, wall) = self.inner.runtime.clock.now_and_wall();
        let left = deadline.saturating_duration_since(now);
        request.overrides.deadline = Some(left.max(Duration::from_millis(1)));
        let mut exchange =
            Exchange::refusing(request, &self.inner.policy, now, seed, refused, Some(wall));
        (token, self.drive_ref(&mut exchange).await)
    }

    async fn drive(&self, mut exchange: Exchange) -> Result<Response, Error> {
        self.drive_ref(&mut exchange).await
    }

    async fn drive_ref(&self, exchange: &mut Exchange) -> Result<Response, Error> {
        let rt = &self.inner.runtime;
        drive_mut(exchange, &*rt.clock, &*rt.sleeper, &*rt.transport).await
    }
}

/// A request being built. Errors (a bad header, a path that leaves the base URL) are kept and
/// returned by [`send`](Self::send), so the builder chains without `?` at every step.
///
/// ```
/// use std::time::Duration;
/// use egress_core::Config;
/// use egress_core::test_util::{ScriptedTransport, block_on, step};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = ScriptedTransport::new();
/// upstream.push(step(201).json(r#"{"id":"e-9"}"#));
/// let client = upstream.client(Config::default().with_base_url("https://api.example.com"))?;
///
/// let response = block_on(
///     client
///         .post("/entities")
///         .header("x-tenant", "t-1")
///         .json(&serde_json::json!({ "name": "Eve" }))
///         .with_new_idempotency_key() // a POST may now be retried safely
///         .deadline(Duration::from_secs(5))
///         .operation("create_entity")
///         .send(),
/// )?;
/// assert_eq!(response.status(), 201);
/// let sent = &upstream.requests()[0];
/// assert!(sent.headers.contains_key("idempotency-key"));
/// assert_eq!(sent.headers["content-type"], "application/json");
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    client: Client,
    request: Result<Request, Error>,
}

impl RequestBuilder {
    fn map(mut self, f: impl FnOnce(Request) -> Result<Request, Error>) -> Self {
        self.request = self.request.and_then(f);
        self
    }

    /// Adds a header.
    pub fn header(self, name: &str, value: &str) -> Self {
        self.map(|r| r.with_header(name, value))
    }

    /// Sends `Authorization: Bearer <token>`, marked sensitive.
    pub fn bearer_auth(self, token: &SecretString) -> Self {
        self.map(|mut r| {
            BearerToken::new(token.clone()).apply(&mut r.headers)?;
            Ok(r)
        })
    }

    /// Sets a JSON body (and `Content-Type: application/json`, `Accept: application/json`).
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Self {
        self.map(|mut r| {
            let body = serde_json::to_vec(value).map_err(|e| {
                Error::invalid_request(format!("the json body cannot be serialized: {e}"))
            })?;
            r.headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers
                .entry(ACCEPT)
                .or_insert(HeaderValue::from_static("application/json"));
            r.body = Bytes::from(body);
            Ok(r)
        })
    }

    /// Sets a raw body.
    pub fn body(self, body: impl Into<Bytes>) -> Self {
        self.map(|r| Ok(r.with_body(body)))
    }

    /// Sends this idempotency key on every attempt (and allows re-sending after a failure that
    /// may have reached the server).
    pub fn idempotency_key(self, key: IdempotencyKey) -> Self {
        self.map(|r| Ok(r.with_idempotency_key(KeyChoice::Given(key))))
    }

    /// Mints an idempotency key for this call, the same on every attempt.
    pub fn with_new_idempotency_key(self) -> Self {
        self.map(|r| Ok(r.with_idempotency_key(KeyChoice::Mint)))
    }

    /// Marks the request as safe (or not) to re-send after it may have been processed.
    pub fn idempotent(self, idempotent: bool) -> Self {
        self.map(|r| Ok(r.with_idempotent(idempotent)))
    }

    /// Hedges this call (when it is idempotent) or never hedges it, whatever the client's
    /// `[hedging]` default.
    pub fn hedge(self, hedge: bool) -> Self {
        self.map(|r| Ok(r.with_hedge(hedge)))
    }

    /// Sets the correlation ID (otherwise the ambient one, otherwise a new one).
    pub fn correlation_id(self, id: CorrelationId) -> Self {
        self.map(|r| Ok(r.with_correlation_id(id)))
    }

    /// Sets the attempts for this call.
    pub fn max_attempts(self, n: u32) -> Self {
        self.map(|r| Ok(r.with_max_attempts(n)))
    }

    /// Sets the whole-call deadline for this call.
    pub fn deadline(self, deadline: Duration) -> Self {
        self.map(|r| Ok(r.with_deadline(deadline)))
    }

    /// Sets the per-attempt timeout for this call.
    pub fn attempt_timeout(self, timeout: Duration) -> Self {
        self.map(|r| Ok(r.with_attempt_timeout(timeout)))
    }

    /// Replaces the default classifier for this call.
    pub fn classifier(self, classifier: Arc<dyn Classifier>) -> Self {
        self.map(|r| Ok(r.with_classifier(classifier)))
    }

    /// Sets the longest `Retry-After` (or vendor hint) honoured for this call; a longer one ends
    /// it at once with [`Error::RateLimited`].
    pub fn retry_after_cap(self, cap: Duration) -> Self {
        self.map(|r| Ok(r.with_retry_after_cap(cap)))
    }

    /// Whether this call is refused while its host's circuit is open, and counted by the
    /// breaker (default `true`).
    pub fn circuit_breaker(self, on: bool) -> Self {
        self.map(|mut r| {
            r.overrides.guards.circuit_breaker = on;
            Ok(r)
        })
    }

    /// Waits for an open circuit to half-open, when that comes before the deadline, instead of
    /// failing at once with [`Error::CircuitOpen`] (default `false`).
    pub fn wait_for_circuit(self, wait: bool) -> Self {
        self.map(|mut r| {
            r.overrides.guards.wait_for_circuit = wait;
            Ok(r)
        })
    }

    /// Whether this call is held while its host is held (default `true`). Turn it off for an
    /// endpoint that does not count against the quota.
    pub fn hold(self, on: bool) -> Self {
        self.map(|mut r| {
            r.overrides.guards.hold = on;
            Ok(r)
        })
    }

    /// Whether the client-side rate limit applies to this call (default `true`).
    pub fn rate_limit(self, on: bool) -> Self {
        self.map(|mut r| {
            r.overrides.guards.rate_limit = on;
            Ok(r)
        })
    }

    /// Keeps the circuit, hold and rate limit of this call under `key` instead of its host.
    pub fn guard_key(self, key: impl Into<Cow<'static, str>>) -> Self {
        self.map(|r| Ok(r.with_guard_key(key)))
    }

    /// Names the operation in telemetry, such as `get_entity`.
    pub fn operation(self, name: impl Into<Cow<'static, str>>) -> Self {
        self.map(|mut r| {
            r.overrides.operation = Some(name.into());
            Ok(r)
        })
    }

    /// The request as built so far.
    pub fn build(self) -> Result<Request, Error> {
        self.request
    }

    /// Sends the request. See [`Client::send`].
    pub async fn send(self) -> Result<Response, Error> {
        // As in `Client::send`, the call starts on the first poll; the future holds the
        // builder and the exchange, not a second future around them.
        let RequestBuilder { client, request } = self;
        if let Some(tokens) = &client.inner.tokens {
            // Boxed: a client without a token source keeps its smaller future.
            return Box::pin(client.send_with_token(tokens, request?)).await;
        }
        let mut exchange = client.start(request?);
        let rt = &client.inner.runtime;
        drive_mut(&mut exchange, &*rt.clock, &*rt.sleeper, &*rt.transport).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::ScriptedTransport;

    /// The request `client.request(method, path)` built.
    fn built(client: &Client, path: &str) -> Request {
        client
            .request(Method::GET, path)
            .request
            .expect("the path is valid")
    }

    #[test]
    fn a_request_on_the_prepared_base_is_the_request_the_checked_join_gives() {
        for base in [
            "https://api.example.com/v1",
            "http://127.0.0.1:8080/",
            "http://[::1]:80/a/",
        ] {
            let transport = ScriptedTransport::new();
            let client = transport
                .client(Config::default().with_base_url(base))
                .expect("the config is valid");
            let parsed = crate::url::parse_base(base).expect("the base is valid");
            for path in ["/entities/7", "entities/7?expand=owner&token=abcdefgh", ""] {
                let fast = built(&client, path);
                assert!(fast.uri.is_some(), "{path} on {base} took the checked join");
                let url = crate::url::join(&parsed, path).expect("the path joins");
                let slow = Request::from_url(Method::GET, url).expect("the url is valid");
                assert_eq!(fast.url(), slow.url(), "{path} on {base}");
                assert_eq!(fast.budget_key(), slow.budget_key(), "{path} on {base}");
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{path} on {base}");
                let redactor = client.policy().redactor();
                let (a, b) = (fast.with_secrets(redactor), slow.with_secrets(redactor));
                assert_eq!(
                    a.text(b"token abcdefgh"),
                    b.text(b"token abcdefgh"),
                    "{path} on {base}"
                );
                if path.contains("token") {
                    assert!(!a.text(b"token abcdefgh").contains("abcdefgh"));
                }
            }
        }
    }

    #[test]
    fn the_ambient_correlation_id_is_read_when_the_call_is_first_polled_not_when_it_is_made() {
        use std::sync::Mutex;
        let ambient: Arc<Mutex<Option<CorrelationId>>> = Arc::default();
        let read = ambient.clone();
        let transport = ScriptedTransport::new();
        transport.push(crate::test_util::step(200));
        transport.push(crate::test_util::step(200));
        let runtime = transport
            .runtime()
            .with_ambient_correlation(Arc::new(move || read.lock().expect("not poisoned").clone()));
        let client = Client::new(
            Config::default().with_base_url("https://api.example.com"),
            runtime,
        )
        .expect("the config is valid");
        // Made outside the scope, polled inside it (as a backend's `with_correlation_id` does).
        let by_builder = client.get("/x").send();
        let by_client =
            client.send(Request::new(Method::GET, "https://api.example.com/y").unwrap());
        let id = CorrelationId::new("scope-1").unwrap();
        *ambient.lock().expect("not poisoned") = Some(id.clone());
        let a = crate::test_util::block_on(by_builder).expect("the call succeeds");
        let b = crate::test_util::block_on(by_client).expect("the call succeeds");
        assert_eq!(a.correlation_id(), &id);
        assert_eq!(b.correlation_id(), &id);
    }

    #[test]
    fn a_path_the_prepared_base_cannot_take_still_joins_with_every_check() {
        let transport = ScriptedTransport::new();
        let client = transport
            .client(Config::default().with_base_url("https://api.example.com/v1"))
            .expect("the config is valid");
        let request = built(&client, "a/../b?q=it's");
        assert!(request.uri.is_none());
        assert_eq!(
            request.url().as_str(),
            "https://api.example.com/v1/b?q=it%27s"
        );
        assert!(client.request(Method::GET, "../admin").request.is_err());
        assert!(
            client
                .request(Method::GET, "//evil.example/x")
                .request
                .is_err()
        );
    }
}
