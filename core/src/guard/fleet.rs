//! The fleet seam: the data a [`Coordinator`] exchanges with the core,
//! the `[fleet]` configuration section, and [`LocalCoordinator`], an in-memory coordinator.
//!
//! A coordinator shares three things across the replicas of a service (the `egress-fleet`
//! crate does it on Redis):
//!
//! - **rate slots**: the GCRA of the client-side rate limit, run where the fleet keeps it, with
//!   the core's arithmetic ([`Gcra::reserve`](super::Gcra::reserve)) and the core's interval and
//!   tolerance. The exchange asks for slots with [`Output::Acquire`](crate::Output::Acquire)
//!   (only when a coordinator is installed and the rate limit is on), the driver performs it and
//!   answers with [`Input::Slots`](crate::Input::Slots); slots leased beyond the call's own
//!   are spent locally by the next calls. A lease never reaches further ahead than its size
//!   at the rate ([`Gcra::lease`](super::Gcra::lease)): under a saturated quota it shrinks to
//!   the caller's own slot, so no replica hoards the fleet's quota.
//! - **holds**: published fire-and-forget, read from the coordinator's local cache (memory),
//!   never with a round trip on the call path.
//! - **open circuits** (when [`CircuitSharing::Shared`]): the same.
//!
//! Without a coordinator none of this exists: the core decides from its own state alone, as it
//! always did, and no call pays for the seam.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use egress_core::{Client, Config, RetryPolicy};
//! use egress_core::{FleetConfig, LocalCoordinator};
//! use egress_core::test_util::{ScriptedTransport, block_on, step};
//!
//! // Two "replicas" in one process share a LocalCoordinator: a 429 with Retry-After seen by
//! // one holds the host for the other.
//! let fleet = Arc::new(LocalCoordinator::new());
//! let config = Config::default()
//!     .with_base_url("https://api.example.com")
//!     .with_retry(RetryPolicy::disabled())
//!     .with_fleet(FleetConfig::new("redis://unused"));
//! let a = ScriptedTransport::new();
//! let b = ScriptedTransport::with_clock(a.clock().clone());
//! a.push(step(429).header("retry-after", "20"));
//! let replica = |t: &ScriptedTransport| {
//!     Client::builder(config.clone(), t.runtime()).with_coordinator(fleet.clone()).build()
//! };
//! let (first, second) = (replica(&a).unwrap(), replica(&b).unwrap());
//! block_on(first.get("/x").send()).unwrap_err();
//! let held = block_on(second.get("/x").deadline(Duration::from_secs(5)).send()).unwrap_err();
//! assert!(held.is_rate_limited() && held.attempts() == 0);
//! assert!(b.requests().is_empty());
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

pub(crate) use super::shared::{CoordinatorError, SlotAsk, SlotGrant};
use super::{Gcra, Hold};
use crate::error::ConfigError;
use crate::rt::{BoxFuture, Coordinator};

/// What the client does when the coordinator cannot answer in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureMode {
    /// Fall back to the local limits (the client's own rate limiter, holds and breaker).
    #[default]
    Open,
    /// Fail the call with [`Error::FleetUnavailable`](crate::Error::FleetUnavailable), unsent.
    Closed,
}

impl FailureMode {
    /// A short stable name (`open`, `closed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// Whether circuit openings are shared across the fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CircuitSharing {
    /// A replica that opens its circuit publishes it; the others treat the host as open until
    /// the break ends.
    #[default]
    Shared,
    /// Each replica keeps its own circuit.
    Local,
}

/// The Redis URL of the fleet. Its password never leaves: `Debug` and every message show the
/// URL with its userinfo password replaced by `***`.
#[derive(Clone)]
pub struct FleetUrl(SecretString);

impl FleetUrl {
    /// Wraps a URL such as `redis://:password@127.0.0.1:6379/0`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(SecretString::from(url.into()))
    }

    /// The URL with its secret, for the connection only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with its password (and any query) replaced by `***`; `<unparsable>` when it is
    /// not a URL.
    ///
    /// ```
    /// use egress_core::FleetUrl;
    /// let url = FleetUrl::new("redis://user:hunter2@cache:6379/0");
    /// assert_eq!(url.redacted(), "redis://user:***@cache:6379/0");
    /// assert!(!format!("{url:?}").contains("hunter2"));
    /// ```
    pub fn redacted(&self) -> String {
        match url::Url::parse(self.0.expose_secret()) {
            Ok(mut url) => {
                if url.password().is_some() {
                    // Setting a password fails only for URLs that cannot have one.
                    let _ = url.set_password(Some("***"));
                }
                if url.query().is_some() {
                    url.set_query(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "<unparsable>".to_owned(),
        }
    }
}

impl fmt::Debug for FleetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FleetUrl({})", self.redacted())
    }
}

impl PartialEq for FleetUrl {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose_secret() == other.0.expose_secret()
    }
}

impl<'de> Deserialize<'de> for FleetUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// The `[fleet]` section: state shared across replicas (off by default). The core reads the
/// lease size, the timeout, the failure mode and the circuit sharing; the coordinator (such as
/// `egress-fleet`'s) reads the URL and the key prefix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FleetConfig {
    /// Whether a coordinator is used (it must also be given to the client builder).
    pub enabled: bool,
    /// The Redis URL (never serialized; redacted in `Debug`).
    #[serde(skip_serializing)]
    pub url: Option<FleetUrl>,
    /// The prefix of every key and channel (default `egress`).
    pub key_prefix: String,
    /// Rate slots leased per round trip (default 1: exact; more keeps Redis off most calls).
    pub lease: u32,
    /// The longest wait for one coordinator operation (default 50 ms), never past the call's
    /// deadline.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Fail open (local limits, default) or closed (typed error).
    pub failure_mode: FailureMode,
    /// Whether open circuits are shared (default) or local.
    pub circuit: CircuitSharing,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: None,
            key_prefix: "egress".to_owned(),
            lease: 1,
            timeout: Duration::from_millis(50),
            failure_mode: FailureMode::Open,
            circuit: CircuitSharing::Shared,
        }
    }
}

impl FleetConfig {
    /// A fleet on the Redis at `url`, switched on.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            enabled: true,
            url: Some(FleetUrl::new(url)),
            ..Self::default()
        }
    }

    /// Sets the key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets the lease size (1 = exact).
    pub fn with_lease(mut self, lease: u32) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the timeout per coordinator operation.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the failure mode.
    pub fn with_failure_mode(mut self, mode: FailureMode) -> Self {
        self.failure_mode = mode;
        self
    }

    /// Sets whether open circuits are shared.
    pub fn with_circuit(mut self, sharing: CircuitSharing) -> Self {
        self.circuit = sharing;
        self
    }

    /// Rejects nonsense: a lease of 0 or over 10,000, a zero timeout, an empty prefix or one
    /// with `{`/`}` (they would break the hash tags), a missing or non-Redis URL when enabled.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.lease) {
            return Err(ConfigError::new(
                "fleet.lease",
                "must be between 1 and 10000",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("fleet.timeout", "must be more than zero"));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::new(
                "fleet.key_prefix",
                "must be non-empty, without braces",
            ));
        }
        if self.enabled {
            let Some(url) = &self.url else {
                return Err(ConfigError::new("fleet.url", "required when enabled"));
            };
            let scheme = url::Url::parse(url.expose()).map(|u| u.scheme().to_owned());
            if !matches!(
                scheme.as_deref(),
                Ok("redis" | "rediss" | "redis+unix" | "unix")
            ) {
                return Err(ConfigError::new(
                    "fleet.url",
                    format!("{} is not a redis:// URL", url.redacted()),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct LocalKey {
    tat: Option<Instant>,
    hold: Option<Hold>,
    open_until: Option<Instant>,
}

/// An in-memory [`Coordinator`]: the fleet of one process. Clients that share one share their
/// quota, holds and open circuits, with the core's own GCRA. Useful in tests, and as the
/// reference the Redis coordinator is compared with.
#[derive(Debug, Default)]
pub struct LocalCoordinator {
    keys: Mutex<HashMap<String, LocalKey>>,
}

impl LocalCoordinator {
    /// An empty coordinator.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_key<R>(&self, key: &str, f: impl FnOnce(&mut LocalKey) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of plain values.
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        f(keys.entry(key.to_owned()).or_default())
    }
}

impl Coordinator for LocalCoordinator {
    fn acquire(&self, ask: &SlotAsk) -> BoxFuture<'static, Result<SlotGrant, CoordinatorError>> {
        let gcra = Gcra::from_parts(ask.interval, ask.tolerance);
        let now = ask.now;
        let latest = now.checked_add(ask.max_wait).unwrap_or(now);
        let grant = self.with_key(&ask.key, |k| {
            let mut grant = SlotGrant {
                hold: k.hold.filter(|h| h.until > now).map(|h| h.until - now),
                ..SlotGrant::default()
            };
            let (slots, next) = gcra.lease(&mut k.tat, now, ask.count, latest);
            grant.slots = slots.into_iter().map(|slot| slot - now).collect();
            grant.next = next.map(|slot| slot - now);
            grant
        });
        Box::pin(std::future::ready(Ok(grant)))
    }

    fn hold(&self, key: &str, now: Instant) -> Option<Hold> {
        self.with_key(key, |k| k.hold.filter(|h| h.until > now))
    }

    fn publish_hold(&self, key: &str, _now: Instant, hold: &Hold) {
        self.with_key(key, |k| {
            if k.hold.is_none_or(|h| h.until < hold.until) {
                k.hold = Some(*hold);
            }
        });
    }

    fn circuit_open_until(&self, key: &str, now: Instant) -> Option<Instant> {
        self.with_key(key, |k| k.open_until.filter(|u| *u > now))
    }

    fn publish_circuit_open(&self, key: &str, now: Instant, open_for: Duration) {
        let until = now.checked_add(open_for).unwrap_or(now);
        self.with_key(key, |k| {
            k.open_until = Some(k.open_until.map_or(until, |u| u.max(until)));
        });
    }
}

/// The coordinator of a client, with the settings the core reads.
#[derive(Clone, Debug)]
pub(crate) struct FleetLink {
    pub(crate) coordinator: Arc<dyn Coordinator>,
    pub(crate) lease: u32,
    pub(crate) timeout: Duration,
    pub(crate) failure_mode: FailureMode,
    pub(crate) share_circuit: bool,
}

impl FleetLink {
    pub(crate) fn new(coordinator: Arc<dyn Coordinator>, config: &FleetConfig) -> Self {
        Self {
            coordinator,
            lease: config.lease.max(1),
            timeout: config.timeout,
            failure_mode: config.failure_mode,
            share_circuit: config.circuit == CircuitSharing::Shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_url_never_shows_its_password() {
        let url = FleetUrl::new("redis://:s3cr3t@127.0.0.1:6379/0");
        assert_eq!(url.redacted(), "redis://:***@127.0.0.1:6379/0");
        let config = FleetConfig::new("redis://:s3cr3t@127.0.0.1:6379/0");
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let bad = FleetConfig::new("http://:s3cr3t@host/")
            .validate()
            .unwrap_err();
        assert_eq!(bad.field(), "fleet.url");
        assert!(!bad.to_string().contains("s3cr3t"));
    }

    #[test]
    fn fleet_settings_that_make_no_sense_are_refused() {
        let ok = FleetConfig::new("redis://127.0.0.1:6379");
        assert!(ok.validate().is_ok());
        let field = |c: FleetConfig| c.validate().unwrap_err().field().to_owned();
        assert_eq!(field(ok.clone().with_lease(0)), "fleet.lease");
        assert_eq!(
            field(ok.clone().with_timeout(Duration::ZERO)),
            "fleet.timeout"
        );
        assert_eq!(
            field(ok.clone().with_key_prefix("a{b}")),
            "fleet.key_prefix"
        );
        let mut missing = ok;
        missing.url = None;
        assert_eq!(field(missing), "fleet.url");
        assert!(FleetConfig::default().validate().is_ok());
    }

    #[test]
    fn the_fleet_section_reads_from_toml_like_the_rest_of_the_config() {
        let config: FleetConfig = serde_json::from_str(
            r#"{"enabled":true,"url":"redis://:pw@h:1","lease":16,"timeout":"20ms","failure_mode":"closed","circuit":"local"}"#,
        )
        .unwrap();
        assert_eq!(config.lease, 16);
        assert_eq!(config.timeout, Duration::from_millis(20));
        assert_eq!(config.failure_mode, FailureMode::Closed);
        assert_eq!(config.circuit, CircuitSharing::Local);
        assert!(!serde_json::to_string(&config).unwrap().contains("pw"));
    }

    use crate::test_util::{ScriptedTransport, block_on, step};
    use crate::{CircuitBreakerConfig, Client, Config, RateLimitConfig, RetryPolicy};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fleet_config(fleet: FleetConfig) -> Config {
        Config::default()
            .with_base_url("https://api.example.com")
            .with_retry(RetryPolicy::disabled())
            .with_rate_limit(RateLimitConfig::new("10/s".parse().unwrap(), 1))
            .with_fleet(fleet)
    }

    fn replica(t: &ScriptedTransport, config: &Config, c: Arc<dyn Coordinator>) -> Client {
        Client::builder(config.clone(), t.runtime())
            .with_coordinator(c)
            .build()
            .unwrap()
    }

    /// A coordinator that fails every slot request, or never answers one.
    #[derive(Debug)]
    struct Broken {
        hang: bool,
    }

    impl Coordinator for Broken {
        fn acquire(&self, _: &SlotAsk) -> BoxFuture<'static, Result<SlotGrant, CoordinatorError>> {
            if self.hang {
                Box::pin(std::future::pending())
            } else {
                Box::pin(std::future::ready(Err(CoordinatorError::Unavailable)))
            }
        }
        fn hold(&self, _: &str, _: Instant) -> Option<Hold> {
            None
        }
        fn publish_hold(&self, _: &str, _: Instant, _: &Hold) {}
        fn circuit_open_until(&self, _: &str, _: Instant) -> Option<Instant> {
            None
        }
        fn publish_circuit_open(&self, _: &str, _: Instant, _: Duration) {}
    }

    #[test]
    fn two_clients_sharing_a_coordinator_share_one_quota() {
        let fleet: Arc<dyn Coordinator> = Arc::new(LocalCoordinator::new());
        let config = fleet_config(FleetConfig::new("redis://unused"));
        let a = ScriptedTransport::new();
        let b = ScriptedTransport::with_clock(a.clock().clone());
        a.push(step(200));
        b.push(step(200)).push(step(200));
        let (ca, cb) = (
            replica(&a, &config, fleet.clone()),
            replica(&b, &config, fleet),
        );
        block_on(ca.get("/x").send()).unwrap();
        // 10/s, burst 1: the other replica's first call waits for the next slot, 100 ms.
        block_on(cb.get("/x").send()).unwrap();
        assert_eq!(a.clock().elapsed(), ms(100));
        block_on(cb.get("/x").send()).unwrap();
        assert_eq!(a.clock().elapsed(), ms(200));
    }

    #[test]
    fn a_lease_is_spent_locally_before_the_coordinator_is_asked_again() {
        let fleet = Arc::new(LocalCoordinator::new());
        let config = fleet_config(FleetConfig::new("redis://unused").with_lease(3));
        let a = ScriptedTransport::new();
        for _ in 0..3 {
            a.push(step(200));
        }
        let client = replica(&a, &config, fleet.clone());
        for _ in 0..3 {
            block_on(client.get("/x").send()).unwrap();
        }
        // One round trip leased slots at 0, 100 and 200 ms; the three calls spent them.
        assert_eq!(a.clock().elapsed(), ms(200));
        let k = fleet.keys.lock().unwrap();
        assert_eq!(k["api.example.com"].tat, Some(a.clock().epoch() + ms(300)));
    }

    /// Slots `calls` concurrent calls with an empty lease reserve, each asking before any
    /// answer came: what one replica of `calls` workers can hold at once.
    fn reserved_by_concurrent_calls(calls: usize, lease: u32) -> (Vec<u32>, usize) {
        use crate::guard::{Admission, Ask, CallGuards, Guards, HoldConfig};
        let limit = RateLimitConfig::new("200/s".parse().unwrap(), 20);
        let fleet = Arc::new(LocalCoordinator::new());
        let config = FleetConfig::new("redis://unused").with_lease(lease);
        let breaker = CircuitBreakerConfig::default().with_enabled(false);
        let guards = Guards::new(breaker, HoldConfig::disabled(), limit)
            .with_coordinator(fleet.clone(), &config);
        let t = Instant::now();
        let id = crate::CorrelationId::new("c").unwrap();
        let ask = Ask {
            key: "k",
            correlation_id: &id,
            now: t,
            deadline: t + Duration::from_secs(5),
            guards: CallGuards::default(),
            has_slot: false,
            local_only: false,
        };
        let mut asked = Vec::new();
        let mut reserved = 0;
        for _ in 0..calls {
            let Admission::Acquire(slot_ask) = guards.admit(&ask) else {
                panic!("an empty lease sends the call to the coordinator");
            };
            asked.push(slot_ask.count);
            reserved += block_on(fleet.acquire(&slot_ask)).unwrap().slots.len();
        }
        (asked, reserved)
    }

    #[test]
    fn concurrent_leases_of_one_replica_never_reach_further_ahead_than_a_lease() {
        // 16 workers, lease 16, 200/s (5 ms) with a burst of 20, every worker asking before any
        // answer came. The first lease is 16 slots of the burst; the second the 4 left and 12
        // more up to 60 ms; the third its own slot (65 ms) and those before 80 ms (16 intervals
        // from now): 70, 75; the 13 others only their own slot each: 48 slots, the furthest
        // 140 ms ahead. Without the limit on how far a lease reaches, 16 leases of 16 held 256
        // slots, 1.2 s of the fleet's quota, while the other replicas waited.
        let (asked, reserved) = reserved_by_concurrent_calls(16, 16);
        assert!(asked.iter().all(|n| *n == 16), "{asked:?}");
        assert_eq!(reserved, 48);
        // Lease 1 is exact: one slot per call.
        let (asked, reserved) = reserved_by_concurrent_calls(16, 1);
        assert!(asked.iter().all(|n| *n == 1));
        assert_eq!(reserved, 16);
    }

    #[test]
    fn a_failing_coordinator_fails_open_to_the_local_limiter() {
        let config = fleet_config(FleetConfig::new("redis://unused"));
        let a = ScriptedTransport::new();
        a.push(step(200)).push(step(200));
        let client = replica(&a, &config, Arc::new(Broken { hang: false }));
        block_on(client.get("/x").send()).unwrap();
        block_on(client.get("/x").send()).unwrap();
        // The local limiter (10/s, burst 1) spaced them.
        assert_eq!(a.requests().len(), 2);
        assert_eq!(a.clock().elapsed(), ms(100));
    }

    #[test]
    fn a_failing_coordinator_fails_closed_with_a_typed_error_unsent() {
        let fleet = FleetConfig::new("redis://unused").with_failure_mode(FailureMode::Closed);
        let a = ScriptedTransport::new();
        let client = replica(&a, &fleet_config(fleet), Arc::new(Broken { hang: false }));
        let error = block_on(client.get("/x").send()).unwrap_err();
        assert!(error.is_fleet_unavailable(), "{error:?}");
        assert_eq!(error.attempts(), 0);
        assert!(!error.may_have_been_sent());
        assert!(a.requests().is_empty());
    }

    #[test]
    fn a_coordinator_that_never_answers_costs_a_call_its_timeout_and_no_more() {
        let fleet = FleetConfig::new("redis://unused").with_timeout(ms(50));
        let a = ScriptedTransport::new();
        a.push(step(200));
        let client = replica(&a, &fleet_config(fleet), Arc::new(Broken { hang: true }));
        block_on(client.get("/x").send()).unwrap();
        assert_eq!(a.clock().elapsed(), ms(50));
    }

    #[test]
    fn a_coordinator_never_waits_past_the_calls_deadline() {
        let fleet = FleetConfig::new("redis://unused").with_timeout(Duration::from_secs(60));
        let a = ScriptedTransport::new();
        let client = replica(&a, &fleet_config(fleet), Arc::new(Broken { hang: true }));
        let error = block_on(client.get("/x").deadline(ms(30)).send()).unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        assert_eq!(a.clock().elapsed(), ms(30));
        assert!(a.requests().is_empty());
    }

    #[test]
    fn an_open_circuit_is_shared_unless_the_fleet_keeps_circuits_local() {
        for (sharing, refused) in [
            (CircuitSharing::Shared, true),
            (CircuitSharing::Local, false),
        ] {
            let fleet: Arc<dyn Coordinator> = Arc::new(LocalCoordinator::new());
            let breaker = CircuitBreakerConfig::default()
                .with_min_throughput(2)
                .with_break_duration(Duration::from_secs(5));
            let config = fleet_config(FleetConfig::new("redis://unused").with_circuit(sharing))
                .with_rate_limit(RateLimitConfig::default())
                .with_circuit_breaker(breaker);
            let a = ScriptedTransport::new();
            let b = ScriptedTransport::with_clock(a.clock().clone());
            a.push(step(503)).push(step(503));
            b.push(step(200));
            let (ca, cb) = (
                replica(&a, &config, fleet.clone()),
                replica(&b, &config, fleet),
            );
            for _ in 0..2 {
                block_on(ca.get("/x").send()).unwrap_err();
            }
            let other = block_on(cb.get("/x").send());
            assert_eq!(other.is_err(), refused, "{sharing:?}");
            assert_eq!(b.requests().len(), usize::from(!refused));
        }
    }

    #[test]
    fn a_fleet_section_without_a_coordinator_keeps_the_local_behaviour() {
        let a = ScriptedTransport::new();
        a.push(step(200)).push(step(200));
        let client = a
            .client(fleet_config(FleetConfig::new("redis://unused")))
            .unwrap();
        block_on(client.get("/x").send()).unwrap();
        block_on(client.get("/x").send()).unwrap();
        assert_eq!(a.clock().elapsed(), ms(100));
    }

    #[test]
    fn the_local_coordinator_leases_the_same_slots_as_the_core_gcra() {
        let gcra = Gcra::new(&super::super::RateLimitConfig::new(
            "10/s".parse().unwrap(),
            2,
        ));
        let fleet = LocalCoordinator::new();
        let t = Instant::now();
        let ask = SlotAsk::new("k", t, 4, &gcra, Duration::from_millis(250));
        let grant = crate::test_util::block_on(fleet.acquire(&ask)).unwrap();
        // Burst 2 at once, then one per 100 ms; the slot at 300 ms is past the 250 ms wait.
        assert_eq!(grant.slots, vec![ms(0), ms(0), ms(100), ms(200)]);
        assert_eq!(grant.next, None);
        let grant = crate::test_util::block_on(fleet.acquire(&ask)).unwrap();
        assert!(grant.slots.is_empty());
        assert_eq!(grant.next, Some(ms(300)));
    }
}
