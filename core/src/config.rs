//! Configuration; the whole story is on [`Config`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use secrecy::{ExposeSecret, SecretString};

pub(crate) use crate::error::ConfigError;
use crate::guard::hedge::HedgingConfig;
use crate::guard::{CircuitBreakerConfig, Guards, HoldConfig, RateLimitConfig};
use crate::network::{ProxyConfig, TlsConfig};
use crate::redact::{RedactConfig, Redactor};
use crate::retry::{BudgetConfig, RetryBudget, RetryPolicy};
use crate::token::OAuth2Config;
use crate::url::Url;

/// Per-phase time limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Timeouts {
    /// Establishing a connection, TCP and TLS.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// Waiting for the response head, and between two body chunks.
    #[serde(with = "humantime_serde")]
    pub read: Duration,
    /// Writing the request.
    #[serde(with = "humantime_serde")]
    pub write: Duration,
    /// Waiting for a connection from the pool.
    #[serde(with = "humantime_serde")]
    pub pool: Duration,
    /// One attempt, from the moment it is sent to the last body byte.
    #[serde(with = "humantime_serde")]
    pub attempt: Duration,
    /// The whole call, every attempt and wait included.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(10),
            write: Duration::from_secs(10),
            pool: Duration::from_secs(3),
            attempt: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
        }
    }
}

/// Connection pool settings, used by the backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// How long an idle connection is kept.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The most idle connections kept per host.
    pub max_idle_per_host: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(90),
            max_idle_per_host: 32,
        }
    }
}

/// The decoding `config` asks for.
fn decoding(config: &Config) -> crate::coding::Decoding {
    let mut limits = crate::coding::DecodeLimits::new(config.max_response_body);
    limits.max_ratio = config.max_decompression_ratio;
    crate::coding::Decoding::new(config.decompress, limits)
}

/// Everything a client is configured with. All fields are optional in a file; missing ones take
/// their defaults: timeouts connect 3 s, read 10 s, write 10 s, pool 3 s, attempt 10 s,
/// deadline 30 s; 3 attempts with exponential backoff from 100 ms to 10 s and full jitter; the
/// retry budget on (0.2 retries earned per successful attempt over 10 s, plus a reserve of
/// 10/s); the circuit breaker on (50 % over 30 s, at least 100 attempts, break 5 s to 30 s);
/// the host-wide hold on; the client-side rate limit and hedging off; 10 MiB bodies; decompression on.
///
/// Configuration: a plain serde struct with defaults (each field's docs give its own; the
/// README's "Default policy" table lists them), consuming `with_*` setters, and one validating
/// [`Config::build`] that turns it into a [`Policy`].
///
/// ```
/// use std::time::Duration;
/// use egress_core::{Config, RetryPolicy};
///
/// // From a file (durations as human strings; every field optional):
/// let config: Config = serde_json::from_str(r#"{
///     "base_url": "https://api.example.com/v1",
///     "timeouts": { "connect": "1s", "attempt": "2s", "deadline": "5s" },
///     "retry": { "max_attempts": 4, "backoff": { "jitter": "equal", "initial": "50ms" } }
/// }"#).unwrap();
/// let policy = config.build().unwrap();
/// assert_eq!(policy.config().retry.max_attempts, 4);
///
/// // Or in code:
/// let policy = Config::default()
///     .with_retry(RetryPolicy::standard().with_max_attempts(5))
///     .with_deadline(Duration::from_secs(20))
///     .build()
///     .unwrap();
///
/// // Nonsense is rejected with the field's name:
/// let err = Config::default().with_retry(RetryPolicy::standard().with_max_attempts(0)).build();
/// assert_eq!(err.unwrap_err().field(), "retry.max_attempts");
/// ```
///
/// ```
/// use std::time::Duration;
/// use egress_core::{Config, RetryPolicy};
///
/// // From a file (durations as text), then adjusted in code.
/// let config: Config = serde_json::from_str(
///     r#"{ "base_url": "https://api.example.com/v1", "timeouts": { "attempt": "2s" } }"#,
/// )
/// .unwrap();
/// let config = config
///     .with_retry(RetryPolicy::standard().with_max_attempts(4))
///     .with_deadline(Duration::from_secs(20));
/// assert_eq!(config.timeouts.attempt, Duration::from_secs(2));
///
/// // Nonsense is refused, naming the field.
/// let bad = Config::default().with_max_response_body(0).build().unwrap_err();
/// assert_eq!(bad.field(), "max_response_body");
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The base URL request paths are joined onto. Without one, requests need absolute URLs.
    pub base_url: Option<String>,
    /// Per-phase time limits.
    pub timeouts: Timeouts,
    /// The retry policy.
    pub retry: RetryPolicy,
    /// The retry budget.
    pub budget: BudgetConfig,
    /// The circuit breaker, per host (on by default).
    pub circuit_breaker: CircuitBreakerConfig,
    /// The host-wide hold on throttling and exhausted quotas (on by default).
    pub hold: HoldConfig,
    /// Hedged requests for slow idempotent calls (off by default).
    pub hedging: HedgingConfig,
    /// The client-side rate limit, per host (off by default).
    pub rate_limit: RateLimitConfig,
    /// Quota, holds and circuits shared across replicas (off by default; needs a coordinator
    /// such as `egress-fleet`'s on the client builder).
    pub fleet: crate::guard::fleet::FleetConfig,
    /// The largest response body accepted, in bytes (default 10 MiB): received, and decoded.
    pub max_response_body: u64,
    /// Whether requests ask for compressed bodies (`Accept-Encoding` with every coding this
    /// build decodes) and responses are decoded (default true).
    pub decompress: bool,
    /// The most decoded bytes per received byte past the first MiB of a decoded body
    /// (default 100): a larger ratio is a decompression bomb, refused as a body too large.
    pub max_decompression_ratio: u32,
    /// The `User-Agent` sent with every request.
    pub user_agent: String,
    /// The header carrying the idempotency key.
    pub idempotency_key_header: String,
    /// The header carrying the correlation ID.
    pub correlation_id_header: String,
    /// The connection pool.
    pub pool: PoolConfig,
    /// Extra header and field names to redact.
    pub redact: RedactConfig,
    /// Credentials sent with every request (never serialized, never shown).
    #[serde(skip_serializing)]
    pub auth: Option<Credentials>,
    /// The outbound proxy (`[proxy]`); by default the environment's (`HTTPS_PROXY`, ...).
    pub proxy: ProxyConfig,
    /// TLS settings (`[tls]`): the client identity for mutual TLS.
    pub tls: TlsConfig,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The base URL may carry userinfo or a secret query parameter: show it redacted.
        let base_url = self.base_url.as_ref().map(|raw| match Url::parse(raw) {
            Ok(url) => Redactor::new(&self.redact).url(&url),
            Err(_) => "<unparsable>".to_owned(),
        });
        f.debug_struct("Config")
            .field("base_url", &base_url)
            .field("timeouts", &self.timeouts)
            .field("retry", &self.retry)
            .field("budget", &self.budget)
            .field("circuit_breaker", &self.circuit_breaker)
            .field("hold", &self.hold)
            .field("hedging", &self.hedging)
            .field("rate_limit", &self.rate_limit)
            .field("fleet", &self.fleet)
            .field("max_response_body", &self.max_response_body)
            .field("decompress", &self.decompress)
            .field("max_decompression_ratio", &self.max_decompression_ratio)
            .field("user_agent", &self.user_agent)
            .field("idempotency_key_header", &self.idempotency_key_header)
            .field("correlation_id_header", &self.correlation_id_header)
            .field("pool", &self.pool)
            .field("redact", &self.redact)
            .field("auth", &self.auth)
            .field("proxy", &self.proxy)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Credentials from configuration, held as [`SecretString`]s: a static token or key
/// (`kind = "bearer"` or `kind = "api_key"`), or OAuth 2.0 client credentials (an
/// `[auth.oauth2]` section, see [`OAuth2Config`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Credentials {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: SecretString,
    },
    /// An API key in a header.
    ApiKey {
        /// The header name, such as `X-Api-Key`.
        header: String,
        /// The key.
        key: SecretString,
    },
    /// OAuth 2.0 client credentials (RFC 6749 4.4): tokens fetched, cached and refreshed
    /// ([`TokenSource`](crate::TokenSource)).
    OAuth2(OAuth2Config),
}

/// The static forms of [`Credentials`], as written in a configuration.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum StaticCredentials {
    Bearer { token: SecretString },
    ApiKey { header: String, key: SecretString },
}

impl<'de> Deserialize<'de> for Credentials {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        use serde_json::{Map, Value};
        // `[auth.oauth2]` is a table of its own; the static forms are tagged with `kind`.
        let mut map = Map::<String, Value>::deserialize(d)?;
        if let Some(oauth2) = map.remove("oauth2") {
            if !map.is_empty() {
                return Err(D::Error::custom(
                    "auth.oauth2 stands alone: no other key beside it in [auth]",
                ));
            }
            return serde_json::from_value(oauth2)
                .map(Self::OAuth2)
                .map_err(|e| D::Error::custom(format!("auth.oauth2: {e}")));
        }
        match serde_json::from_value(Value::Object(map)).map_err(D::Error::custom)? {
            StaticCredentials::Bearer { token } => Ok(Self::Bearer { token }),
            StaticCredentials::ApiKey { header, key } => Ok(Self::ApiKey { header, key }),
        }
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bearer { token: a }, Self::Bearer { token: b }) => {
                a.expose_secret() == b.expose_secret()
            }
            (Self::ApiKey { header: h1, key: a }, Self::ApiKey { header: h2, key: b }) => {
                h1 == h2 && a.expose_secret() == b.expose_secret()
            }
            (Self::OAuth2(a), Self::OAuth2(b)) => a == b,
            _ => false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base_url: None,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::standard(),
            budget: BudgetConfig::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
            hold: HoldConfig::default(),
            hedging: HedgingConfig::default(),
            rate_limit: RateLimitConfig::default(),
            fleet: crate::guard::fleet::FleetConfig::default(),
            max_response_body: 10 * 1024 * 1024,
            decompress: true,
            max_decompression_ratio: 100,
            user_agent: concat!("egress/", env!("CARGO_PKG_VERSION")).to_owned(),
            idempotency_key_header: "idempotency-key".to_owned(),
            correlation_id_header: "x-correlation-id".to_owned(),
            pool: PoolConfig::default(),
            redact: RedactConfig::default(),
            auth: None,
            proxy: ProxyConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident, $($field:ident).+ : $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.$($field).+ = value.into();
            self
        }
    };
}

impl Config {
    /// Sets the base URL request paths are joined onto.
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }
    setter!(/// Sets all per-phase time limits.
        with_timeouts, timeouts: Timeouts);
    setter!(/// Sets the connect timeout.
        with_connect_timeout, timeouts.connect: Duration);
    setter!(/// Sets the read timeout (to the head, and between body chunks).
        with_read_timeout, timeouts.read: Duration);
    setter!(/// Sets the write timeout.
        with_write_timeout, timeouts.write: Duration);
    setter!(/// Sets the pool-acquire timeout.
        with_pool_timeout, timeouts.pool: Duration);
    setter!(/// Sets the per-attempt timeout.
        with_attempt_timeout, timeouts.attempt: Duration);
    setter!(/// Sets the whole-call deadline.
        with_deadline, timeouts.deadline: Duration);
    setter!(/// Sets the retry policy.
        with_retry, retry: RetryPolicy);
    setter!(/// Sets the retry budget.
        with_budget, budget: BudgetConfig);
    setter!(/// Sets the circuit breaker.
        with_circuit_breaker, circuit_breaker: CircuitBreakerConfig);
    setter!(/// Sets the host-wide hold.
        with_hold, hold: HoldConfig);
    setter!(/// Sets hedging (a second attempt in flight for slow idempotent calls).
        with_hedging, hedging: HedgingConfig);
    setter!(/// Sets the client-side rate limit.
        with_rate_limit, rate_limit: RateLimitConfig);
    setter!(/// Sets the fleet section (state shared across replicas).
        with_fleet, fleet: crate::guard::fleet::FleetConfig);
    setter!(/// Sets the largest response body accepted, in bytes.
        with_max_response_body, max_response_body: u64);
    setter!(/// Turns asking for and decoding compressed bodies on or off.
        with_decompress, decompress: bool);
    setter!(/// Sets the most decoded bytes per received byte past the first MiB.
        with_max_decompression_ratio, max_decompression_ratio: u32);
    setter!(/// Sets the `User-Agent`.
        with_user_agent, user_agent: String);
    setter!(/// Sets the idempotency-key header name.
        with_idempotency_key_header, idempotency_key_header: String);
    setter!(/// Sets the correlation-ID header name.
        with_correlation_id_header, correlation_id_header: String);
    setter!(/// Sets the connection pool settings.
        with_pool, pool: PoolConfig);
    setter!(/// Sets the extra names to redact.
        with_redact, redact: RedactConfig);
    setter!(/// Sets the outbound proxy.
        with_proxy, proxy: ProxyConfig);
    setter!(/// Sets the TLS settings (the client identity).
        with_tls, tls: TlsConfig);

    /// Sets the credentials sent with every request.
    pub fn with_auth(mut self, credentials: Credentials) -> Self {
        self.auth = Some(credentials);
        self
    }

    /// Validates the configuration and builds the [`Policy`] exchanges run under, with a fresh
    /// retry budget.
    pub fn build(self) -> Result<Policy, ConfigError> {
        self.build_with_coordinator(None)
    }

    /// [`build`](Self::build), sharing the rate limit, holds and circuits through
    /// `coordinator` when one is given and `[fleet]` is enabled.
    pub fn build_with_coordinator(
        self,
        coordinator: Option<Arc<dyn crate::rt::Coordinator>>,
    ) -> Result<Policy, ConfigError> {
        self.fleet.validate()?;
        let t = &self.timeouts;
        for (field, value) in [
            ("timeouts.connect", t.connect),
            ("timeouts.read", t.read),
            ("timeouts.write", t.write),
            ("timeouts.pool", t.pool),
            ("timeouts.attempt", t.attempt),
            ("timeouts.deadline", t.deadline),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(field, "must be greater than zero"));
            }
        }
        // A deadline shorter than the attempt timeout is no contradiction: it bounds every
        // attempt, as a per-request deadline does.
        let r = &self.retry;
        if r.max_attempts == 0 {
            return Err(ConfigError::new(
                "retry.max_attempts",
                "must be at least 1 (the first attempt)",
            ));
        }
        if r.max_attempts > 100 {
            return Err(ConfigError::new(
                "retry.max_attempts",
                "more than 100 attempts is not a retry policy",
            ));
        }
        if r.backoff.max < r.backoff.initial {
            return Err(ConfigError::new(
                "retry.backoff.max",
                format!(
                    "{:?} is smaller than retry.backoff.initial ({:?})",
                    r.backoff.max, r.backoff.initial
                ),
            ));
        }
        for (field, statuses) in [
            ("retry.retryable_statuses", &r.retryable_statuses),
            ("retry.throttling_statuses", &r.throttling_statuses),
        ] {
            if let Some(bad) = statuses.iter().find(|s| !(100..=599).contains(*s)) {
                return Err(ConfigError::new(
                    field,
                    format!("{bad} is not an HTTP status"),
                ));
            }
            if let Some(ok) = statuses.iter().find(|s| (200..=299).contains(*s)) {
                return Err(ConfigError::new(
                    field,
                    format!("{ok} is a success; it cannot be retried"),
                ));
            }
        }
        if let Some((field, problem)) = self.hedging.problem() {
            return Err(ConfigError::new(field, problem));
        }
        let b = &self.budget;
        if !b.retry_ratio.is_finite() || b.retry_ratio < 0.0 || b.retry_ratio > 1000.0 {
            return Err(ConfigError::new(
                "budget.retry_ratio",
                "must be a number between 0 and 1000",
            ));
        }
        if b.window < Duration::from_millis(10) {
            return Err(ConfigError::new("budget.window", "must be at least 10ms"));
        }
        let c = &self.circuit_breaker;
        if !c.failure_ratio.is_finite() || c.failure_ratio <= 0.0 || c.failure_ratio > 1.0 {
            return Err(ConfigError::new(
                "circuit_breaker.failure_ratio",
                "must be a number above 0 and at most 1",
            ));
        }
        if c.sampling_window < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "circuit_breaker.sampling_window",
                "must be at least 10ms",
            ));
        }
        if c.min_throughput == 0 {
            return Err(ConfigError::new(
                "circuit_breaker.min_throughput",
                "must be at least 1",
            ));
        }
        if c.break_duration.is_zero() {
            return Err(ConfigError::new(
                "circuit_breaker.break_duration",
                "must be greater than zero",
            ));
        }
        if c.max_break_duration < c.break_duration {
            return Err(ConfigError::new(
                "circuit_breaker.max_break_duration",
                format!(
                    "{:?} is shorter than circuit_breaker.break_duration ({:?})",
                    c.max_break_duration, c.break_duration
                ),
            ));
        }
        if c.half_open_probes == 0 {
            return Err(ConfigError::new(
                "circuit_breaker.half_open_probes",
                "must be at least 1",
            ));
        }
        if self.rate_limit.burst == 0 {
            return Err(ConfigError::new("rate_limit.burst", "must be at least 1"));
        }
        if self.max_response_body == 0 {
            return Err(ConfigError::new(
                "max_response_body",
                "must be greater than zero",
            ));
        }
        if self.max_decompression_ratio == 0 {
            return Err(ConfigError::new(
                "max_decompression_ratio",
                "must be greater than zero (decoded bytes per received byte)",
            ));
        }
        let base_url = match &self.base_url {
            Some(s) => Some(
                crate::url::parse_base(s)
                    .map_err(|e| ConfigError::new("base_url", e.to_string()))?,
            ),
            None => None,
        };
        let idempotency_header =
            header_name("idempotency_key_header", &self.idempotency_key_header)?;
        let correlation_header = header_name("correlation_id_header", &self.correlation_id_header)?;
        let user_agent = http::HeaderValue::from_str(&self.user_agent)
            .map_err(|_| ConfigError::new("user_agent", "is not a valid header value"))?;
        for (field, names) in [("redact.headers", &self.redact.headers)] {
            if let Some(bad) = names
                .iter()
                .find(|n| HeaderName::from_bytes(n.as_bytes()).is_err())
            {
                return Err(ConfigError::new(
                    field,
                    format!("{bad:?} is not a valid header name"),
                ));
            }
        }
        if let Some(Credentials::ApiKey { header, .. }) = &self.auth {
            header_name("auth.header", header)?;
        }
        let redactor = Redactor::new(&self.redact);
        let budget = Arc::new(RetryBudget::new(self.budget.clone()));
        let mut guards = Guards::new(
            self.circuit_breaker.clone(),
            self.hold.clone(),
            self.rate_limit.clone(),
        );
        if let (true, Some(coordinator)) = (self.fleet.enabled, coordinator) {
            guards = guards.with_coordinator(coordinator, &self.fleet);
        }
        let guards = Arc::new(guards);
        Ok(Policy {
            inner: Arc::new(PolicyInner {
                base_target: base_url.as_ref().and_then(crate::url::BaseTarget::new),
                base_url,
                idempotency_header,
                correlation_header,
                user_agent,
                accept_encoding: decoding(&self).accept_encoding(),
                budget,
                guards,
                redactor,
                config: self,
            }),
        })
    }
}

fn header_name(field: &'static str, value: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(value.as_bytes())
        .map_err(|_| ConfigError::new(field, format!("{value:?} is not a valid header name")))
}

/// A validated configuration plus the state every exchange of one client shares (the retry
/// budget, the circuit breakers, holds and rate limiters). Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Policy {
    inner: Arc<PolicyInner>,
}

struct PolicyInner {
    config: Config,
    base_url: Option<Url>,
    /// The base URL prepared for joining common paths without parsing.
    base_target: Option<crate::url::BaseTarget>,
    idempotency_header: HeaderName,
    correlation_header: HeaderName,
    user_agent: http::HeaderValue,
    /// What every request asks for (none when decoding is off or the build decodes nothing).
    accept_encoding: Option<http::HeaderValue>,
    budget: Arc<RetryBudget>,
    guards: Arc<Guards>,
    redactor: Redactor,
}

impl Policy {
    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Whether and within what limits response bodies are decoded.
    pub fn decoding(&self) -> crate::coding::Decoding {
        decoding(&self.inner.config)
    }

    /// The parsed base URL.
    pub fn base_url(&self) -> Option<&Url> {
        self.inner.base_url.as_ref()
    }

    /// The base URL prepared for the common paths ([`BaseTarget`](crate::url::BaseTarget)).
    pub(crate) fn base_target(&self) -> Option<&crate::url::BaseTarget> {
        self.inner.base_target.as_ref()
    }

    /// The shared retry budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.inner.budget
    }

    /// The shared circuit breakers, holds and rate limiters ([`Guards`]).
    pub fn guards(&self) -> &Guards {
        &self.inner.guards
    }

    /// The redactor of this configuration (default names plus configured ones).
    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    pub(crate) fn idempotency_header(&self) -> &HeaderName {
        &self.inner.idempotency_header
    }

    pub(crate) fn correlation_header(&self) -> &HeaderName {
        &self.inner.correlation_header
    }

    pub(crate) fn accept_encoding(&self) -> Option<&http::HeaderValue> {
        self.inner.accept_encoding.as_ref()
    }

    pub(crate) fn user_agent(&self) -> &http::HeaderValue {
        &self.inner.user_agent
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Backoff;

    #[test]
    fn defaults_match_the_design_table() {
        let c = Config::default();
        let ms = Duration::from_millis;
        assert_eq!(
            (
                c.timeouts.connect,
                c.timeouts.read,
                c.timeouts.write,
                c.timeouts.pool
            ),
            (ms(3_000), ms(10_000), ms(10_000), ms(3_000))
        );
        assert_eq!(
            (c.timeouts.attempt, c.timeouts.deadline),
            (ms(10_000), ms(30_000))
        );
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry.backoff, Backoff::default());
        assert_eq!(
            (c.retry.backoff.initial, c.retry.backoff.max),
            (ms(100), ms(10_000))
        );
        assert_eq!(c.retry.retryable_statuses, [408, 500, 502, 503, 504]);
        assert_eq!(c.retry.throttling_statuses, [429]);
        assert_eq!(c.retry.retry_after_cap, ms(30_000));
        assert_eq!(
            (
                c.budget.window,
                c.budget.retry_ratio,
                c.budget.min_retries_per_sec
            ),
            (ms(10_000), 0.2, 10)
        );
        let b = &c.circuit_breaker;
        assert!(b.enabled);
        assert_eq!(
            (b.failure_ratio, b.sampling_window, b.min_throughput),
            (0.5, ms(30_000), 100)
        );
        assert_eq!(
            (b.break_duration, b.max_break_duration, b.half_open_probes),
            (ms(5_000), ms(30_000), 1)
        );
        assert!(c.hold.enabled && c.hold.rate_limit_fields);
        assert!(!c.rate_limit.enabled);
        assert_eq!(
            (c.rate_limit.rate.to_string(), c.rate_limit.burst),
            ("50/s".to_owned(), 10)
        );
        assert_eq!(c.max_response_body, 10 * 1024 * 1024);
        assert!(c.build().is_ok());
    }

    #[test]
    fn durations_deserialize_from_human_strings_and_missing_fields_default() {
        let c: Config = serde_json::from_str(
            r#"{"timeouts": {"connect": "250ms", "deadline": "1m"}, "retry": {"retry_after_cap": "5s"}}"#,
        )
        .unwrap();
        assert_eq!(c.timeouts.connect, Duration::from_millis(250));
        assert_eq!(c.timeouts.deadline, Duration::from_secs(60));
        assert_eq!(c.timeouts.read, Duration::from_secs(10));
        assert_eq!(c.retry.retry_after_cap, Duration::from_secs(5));
    }

    #[test]
    fn the_resilience_settings_deserialize_with_rates_and_durations_as_strings() {
        let c: Config = serde_json::from_str(
            r#"{"circuit_breaker": {"failure_ratio": 0.1, "break_duration": "2s"},
                "rate_limit": {"enabled": true, "rate": "20/s", "burst": 5},
                "hold": {"rate_limit_fields": false}}"#,
        )
        .unwrap();
        assert_eq!(c.circuit_breaker.failure_ratio, 0.1);
        assert_eq!(c.circuit_breaker.break_duration, Duration::from_secs(2));
        assert_eq!(c.rate_limit.rate.interval(), Duration::from_millis(50));
        assert!(c.hold.enabled && !c.hold.rate_limit_fields);
        assert!(serde_json::from_str::<Config>(r#"{"rate_limit": {"rate": "fast"}}"#).is_err());
        assert!(c.build().is_ok());
    }

    #[test]
    fn unknown_fields_and_malformed_durations_are_rejected_when_deserializing() {
        assert!(serde_json::from_str::<Config>(r#"{"timeout": {}}"#).is_err());
        assert!(serde_json::from_str::<Config>(r#"{"timeouts": {"connect": "fast"}}"#).is_err());
    }

    fn field_of(config: Config) -> &'static str {
        config.build().unwrap_err().field()
    }

    #[test]
    fn nonsense_configurations_are_rejected_naming_the_field() {
        let d = Config::default;
        assert_eq!(
            field_of(d().with_retry(RetryPolicy::standard().with_max_attempts(0))),
            "retry.max_attempts"
        );
        let inverted = Backoff::default()
            .with_initial(Duration::from_secs(5))
            .with_max(Duration::from_secs(1));
        assert_eq!(
            field_of(d().with_retry(RetryPolicy::standard().with_backoff(inverted))),
            "retry.backoff.max"
        );
        assert_eq!(
            field_of(d().with_connect_timeout(Duration::ZERO)),
            "timeouts.connect"
        );
        assert_eq!(
            field_of(d().with_budget(BudgetConfig::default().with_retry_ratio(f64::NAN))),
            "budget.retry_ratio"
        );
        assert_eq!(
            field_of(d().with_budget(BudgetConfig::default().with_window(Duration::ZERO))),
            "budget.window"
        );
        assert_eq!(field_of(d().with_max_response_body(0)), "max_response_body");
        let cb = CircuitBreakerConfig::default;
        assert_eq!(
            field_of(d().with_circuit_breaker(cb().with_failure_ratio(0.0))),
            "circuit_breaker.failure_ratio"
        );
        assert_eq!(
            field_of(d().with_circuit_breaker(cb().with_failure_ratio(f64::NAN))),
            "circuit_breaker.failure_ratio"
        );
        assert_eq!(
            field_of(d().with_circuit_breaker(cb().with_min_throughput(0))),
            "circuit_breaker.min_throughput"
        );
        assert_eq!(
            field_of(
                d().with_circuit_breaker(cb().with_max_break_duration(Duration::from_secs(1)))
            ),
            "circuit_breaker.max_break_duration"
        );
        assert_eq!(
            field_of(d().with_circuit_breaker(cb().with_half_open_probes(0))),
            "circuit_breaker.half_open_probes"
        );
        assert_eq!(
            field_of(d().with_rate_limit(RateLimitConfig::default().with_burst(0))),
            "rate_limit.burst"
        );
        assert_eq!(field_of(d().with_base_url("ftp://x")), "base_url");
        assert_eq!(
            field_of(d().with_correlation_id_header("bad header".into())),
            "correlation_id_header"
        );
        assert_eq!(field_of(d().with_user_agent("a\nb".into())), "user_agent");
        assert_eq!(
            field_of(d().with_retry(RetryPolicy::standard().with_retryable_statuses([200]))),
            "retry.retryable_statuses"
        );
        assert_eq!(
            field_of(d().with_retry(RetryPolicy::standard().with_throttling_statuses([1000]))),
            "retry.throttling_statuses"
        );
    }

    #[test]
    fn the_error_message_names_the_field_and_the_reason() {
        let e = Config::default()
            .with_retry(RetryPolicy::standard().with_max_attempts(0))
            .build()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: retry.max_attempts: must be at least 1 (the first attempt)"
        );
    }

    #[test]
    fn a_deadline_shorter_than_the_attempt_timeout_is_valid_and_bounds_every_attempt() {
        // `deadline = "5s"` alone in a file: the attempt timeout keeps its 10 s default.
        let config: Config = serde_json::from_str(r#"{"timeouts":{"deadline":"5s"}}"#).unwrap();
        assert_eq!(config.timeouts.attempt, Duration::from_secs(10));
        assert!(config.build().is_ok());
    }

    #[test]
    fn the_disabled_preset_makes_one_attempt() {
        assert_eq!(RetryPolicy::disabled().max_attempts, 1);
        assert!(
            Config::default()
                .with_retry(RetryPolicy::disabled())
                .build()
                .is_ok()
        );
    }
}
