//! # egress-fleet: one view for the whole fleet, on Redis
//!
//! Vendor quotas belong to an API key, not to a process. With this crate every replica of a
//! service shares, through one Redis:
//!
//! - the **client-side rate limit** (`[rate_limit]`): one GCRA per host or vendor key, run
//!   atomically in Redis by a Lua script with the core's arithmetic and Redis's `TIME` as the
//!   clock (replica clock skew does not matter);
//! - the **host hold**: a `429`/`503` with `Retry-After`, or rate-limit fields with no quota
//!   left, seen by one replica, holds the host for all of them;
//! - **open circuits** (`circuit = "shared"`, the default): a replica that opens its circuit
//!   makes the others treat the host as open until the break ends.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use egress_core::FleetConfig;
//! use egress_core::{Config, RateLimitConfig};
//!
//! let config = Config::default()
//!     .with_base_url("https://api.example.com")
//!     .with_rate_limit(RateLimitConfig::new("200/s".parse()?, 20))
//!     .with_fleet(FleetConfig::new("redis://:password@10.0.0.5:6379/0").with_lease(16));
//! // The one line: a client of either backend, with the fleet as its coordinator.
//! let client = egress_tokio::Builder::new(config.clone())
//!     .with_coordinator(egress_fleet::Fleet::start(&config.fleet)?)
//!     .build()?;
//! let _ = client.get("/v1/things").send().await;
//! # Ok(()) }
//! ```
//! (`egress_async_std::Builder` has the same `with_coordinator`.)
//!
//! ## Who decides what
//!
//! The core keeps every decision and its arithmetic; this crate only loads and stores state.
//!
//! - **Rate slots** take one explicit step of the exchange's protocol: when the limit is on
//!   and no leased slot is left, the exchange returns `Output::Acquire` and then waits at most
//!   `timeout` (never past the call's deadline); the driver runs [`Fleet`]'s acquire (one
//!   `EVALSHA`) and feeds the answer back as `Input::Slots`. The exchange then waits for its
//!   slot, or refuses the call (`RateLimited`) when no slot comes before its deadline, exactly
//!   as with the local limiter. A client without a fleet never takes this step.
//! - **Leases**: the script reserves up to `lease` consecutive slots per round trip
//!   (`lease = 1`, the default, is exact); the replica spends them locally on its next calls.
//!   Slots after the first are leased only while they lie less than `lease` emission
//!   intervals from Redis's now ([`Gcra::lease`](egress_core::Gcra::lease)): while the
//!   quota has room a lease is full, under a saturated quota it shrinks to the caller's own
//!   slot, so no replica hoards the fleet's quota (16 workers leasing 16 at once at 200/s hold
//!   48 slots, not the 256 of 16 full leases, more than a second of the quota). A leased slot
//!   not taken within one emission interval (at least 1 ms) of its time is dropped (quota
//!   wasted, never spent late). Every slot comes from the one GCRA in Redis, so the fleet
//!   never exceeds rate + burst whatever the lease; a lease only shifts who gets the slots.
//!   With 32 callers and a quota with room, a lease of 16 cuts the round trips per call to
//!   about a fifth (BENCHMARKS.md); under a saturated quota round trips are at most one per
//!   slot, so Redis sees at most the quota's own rate.
//! - **Holds and circuits** never cost a round trip on the call path: they are published
//!   fire-and-forget (a script sets a key with an expiry and `PUBLISH`es), and every replica
//!   applies them from pub/sub to a local cache that the exchange reads from memory. The hold
//!   key is also read by the acquire script, so a replica that missed a message (it was
//!   reconnecting) learns of a hold on its next slot request.
//!
//! ## When Redis fails
//!
//! No call ever stalls or is lost because of Redis:
//!
//! - every slot request is raced against `timeout` (default 50 ms) and the call's deadline by
//!   the driver; the Redis connection also has its own response timeout;
//! - when Redis is down (connection refused, reset, timed out) the fleet drops its connection
//!   and answers at once "unavailable" until its background task has reconnected (backoff
//!   from 50 ms doubling to 2 s); so only the calls in flight at the moment Redis fails pay
//!   the timeout;
//! - the call then **fails open** (default): it goes on under the local limits (the local GCRA
//!   with the same rate, per replica; holds and circuits of this replica), or **fails closed**
//!   (`failure_mode = "closed"`): it ends unsent with `Error::FleetUnavailable`;
//! - the event `fleet mode changed` (`mode` = `shared` or `local`) and the gauge
//!   `egress.fleet.shared` (1 or 0) say which mode the replica is in; each call that fell back
//!   logs `fleet coordinator failed` and counts in `egress.fleet.fallbacks`.
//!
//! ## Keys, Redis Cluster and failover
//!
//! For a key prefix `egress` and a host or vendor key `K`:
//!
//! | key | holds | expires |
//! |---|---|---|
//! | `egress:{K}:tat` | the GCRA's theoretical arrival time, µs since the epoch (Redis time) | when it has passed (then a missing key means the same) |
//! | `egress:{K}:hold` | a hold | when the hold ends |
//! | `egress:{K}:circuit` | an open circuit | when the break ends |
//! | channel `egress:events` | `h\|ms\|r\|K` (hold), `c\|ms\|K` (circuit) | |
//!
//! `{K}` is a Redis Cluster hash tag: the keys of one vendor key live in one slot, so the
//! acquire script (which reads the tat and the hold) is legal on a cluster, and different
//! vendor keys spread over the shards. Pub/sub is cluster-wide. The crate connects to one
//! node URL; a cluster client (`redis::cluster_async`) would slot in behind the same
//! scripts.
//!
//! On a failover (Sentinel or Cluster promoting a replica), Redis's replication is
//! asynchronous: the newest `tat` writes may be lost, so for a moment the fleet may admit up to
//! one burst more than the quota (the state restarts from an older tat or from empty), and holds
//! written in the last instant may be lost (replicas that got the pub/sub message still hold).
//! During the switch the fleet fails open or closed as configured.
//!
//! ## Redis operations per call (measured, see BENCHMARKS.md)
//!
//! - without a rate limit: 0 on the call path (holds and circuits are memory reads);
//! - with a rate limit and `lease = 1`: 1 (`EVALSHA`) per call;
//! - with `lease = n` and room in the quota: about 1/n or more (0.21 at `lease = 16` with 32
//!   callers: callers that find the lease empty at once each ask);
//! - with `lease = n` under a saturated quota: about 1 (a lease shrinks to the caller's own
//!   slot rather than hoard the quota), so at most the quota's own rate per second;
//! - plus one fire-and-forget script per hold or circuit opening (not per call).
//!
//! Fleet state is kept in the process's monotonic clock (`std::time::Instant`): a client whose
//! clock is virtual (tokio's paused time) sees holds from the fleet in real time.

mod background;
pub mod script;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use egress_core::FleetConfig;
use egress_core::rt::{BoxFuture, Coordinator};
use egress_core::rt::{CoordinatorError, SlotAsk, SlotGrant};
use egress_core::{Hold, HoldReason};

/// Why a fleet could not start. The Redis URL appears only redacted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The `[fleet]` section is not enabled or has no URL.
    #[error("[fleet] is not enabled or has no url")]
    NotConfigured,
    /// The URL is not one the Redis client accepts.
    #[error("invalid Redis URL {url}")]
    InvalidUrl {
        /// The URL, its password replaced by `***`.
        url: String,
    },
    /// No runtime to run the background tasks on: a tokio runtime without the `tokio`
    /// feature, or neither feature compiled in.
    #[error("egress-fleet has no runtime for its background tasks (features tokio, smol)")]
    NoRuntime,
}

/// The Redis [`Coordinator`] of one replica: give it to a backend's builder
/// (`with_coordinator`). Cheap to share; its background tasks end when the last clone of the
/// `Arc` is dropped.
pub struct Fleet {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: redis::Client,
    pub(crate) url: String,
    prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    pub(crate) shared: AtomicBool,
    holds: Mutex<HashMap<String, Hold>>,
    circuits: Mutex<HashMap<String, Instant>>,
    acquire: redis::Script,
    pub(crate) hold: redis::Script,
    pub(crate) publish: async_channel::Sender<Publish>,
    ops: AtomicU64,
    /// Never sent on: its receivers see it closed when the fleet is dropped.
    _shutdown: async_channel::Sender<()>,
}

/// A fire-and-forget store and publish.
#[derive(Debug)]
pub(crate) struct Publish {
    pub(crate) key: String,
    pub(crate) ms: u64,
    pub(crate) message: String,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .field("shared", &self.inner.shared.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Starts the fleet of `config`: validates it, and starts connecting in the background
    /// (on the current tokio runtime when there is one, else on a thread of its own with
    /// async-io). Never waits for Redis: until it is connected, calls fall back as configured.
    ///
    /// ```
    /// use egress_core::FleetConfig;
    /// let bad = egress_fleet::Fleet::start(&FleetConfig::new("redis://:pw@[::1")).unwrap_err();
    /// assert!(!bad.to_string().contains("pw"));
    /// assert!(egress_fleet::Fleet::start(&FleetConfig::default()).is_err());
    /// ```
    pub fn start(config: &FleetConfig) -> Result<Arc<Self>, FleetError> {
        let url = match (&config.enabled, &config.url) {
            (true, Some(url)) => url,
            _ => return Err(FleetError::NotConfigured),
        };
        let invalid = || FleetError::InvalidUrl {
            url: url.redacted(),
        };
        if config.validate().is_err() {
            return Err(invalid());
        }
        let client = redis::Client::open(url.expose()).map_err(|_| invalid())?;
        let (publish, queue) = async_channel::bounded(1024);
        let (shutdown, closed) = async_channel::bounded(1);
        let inner = Arc::new(Inner {
            client,
            url: url.redacted(),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            conn: Mutex::new(None),
            shared: AtomicBool::new(false),
            holds: Mutex::new(HashMap::new()),
            circuits: Mutex::new(HashMap::new()),
            acquire: redis::Script::new(script::ACQUIRE),
            hold: redis::Script::new(script::HOLD),
            publish,
            ops: AtomicU64::new(0),
            _shutdown: shutdown,
        });
        background::start(Arc::downgrade(&inner), queue, closed)?;
        Ok(Arc::new(Self { inner }))
    }

    /// Whether the fleet is connected and sharing (else calls fall back as configured).
    pub fn is_shared(&self) -> bool {
        self.inner.shared.load(Ordering::Relaxed)
    }

    /// Redis operations sent on the call path so far (slot requests), for measurements.
    pub fn redis_ops(&self) -> u64 {
        self.inner.ops.load(Ordering::Relaxed)
    }

    /// Waits (polling every 10 ms, at most `within`) until the fleet is connected; `false` if
    /// it is not by then. For start-up checks and tests; calls never need it.
    pub async fn wait_shared(&self, within: Duration) -> bool {
        let end = Instant::now() + within;
        while !self.is_shared() {
            if Instant::now() >= end {
                return false;
            }
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Inner {
    pub(crate) fn key(&self, key: &str, what: &str) -> String {
        format!("{}:{{{key}}}:{what}", self.prefix)
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    pub(crate) fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets the connection after a failure: calls answer "unavailable" at once until the
    /// background task has reconnected.
    pub(crate) fn lost(&self, why: &str) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if self.shared.swap(false, Ordering::Relaxed) {
            background::mode_changed(&self.url, false, Some(why));
        }
    }

    /// Applies a message from the fleet's channel to the local cache.
    pub(crate) fn apply(&self, text: &str) {
        let now = Instant::now();
        match script::parse(text) {
            Some(script::Message::Hold { key, left, quota }) => {
                let reason = if quota {
                    HoldReason::QuotaExhausted
                } else {
                    HoldReason::RetryAfter
                };
                let hold = Hold::new(now + left, SystemTime::now() + left, reason);
                let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
                holds.retain(|_, h| h.until > now);
                if holds.get(key).is_none_or(|h| h.until < hold.until) {
                    holds.insert(key.to_owned(), hold);
                }
            }
            Some(script::Message::Circuit { key, left }) => {
                let mut circuits = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
                circuits.retain(|_, until| *until > now);
                let until = now + left;
                if circuits.get(key).is_none_or(|u| *u < until) {
                    circuits.insert(key.to_owned(), until);
                }
            }
            None => tracing::debug!(len = text.len(), "fleet message ignored"),
        }
    }

    fn send(&self, key: String, left: Duration, message: String) {
        let ms = left.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
        // Fire-and-forget: a full queue (Redis far behind) drops the publish, never the call.
        let _ = self.publish.try_send(Publish { key, ms, message });
    }
}

/// A slot request that did not finish (its call's timer won): the connection is suspect.
struct Pending(Option<Arc<Inner>>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.lost("a slot request timed out");
        }
    }
}

impl Coordinator for Fleet {
    fn acquire(&self, ask: &SlotAsk) -> BoxFuture<'static, Result<SlotGrant, CoordinatorError>> {
        let Some(mut conn) = self.inner.connection() else {
            return Box::pin(std::future::ready(Err(CoordinatorError::Unavailable)));
        };
        self.inner.ops.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        let tat = inner.key(&ask.key, "tat");
        let hold = inner.key(&ask.key, "hold");
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2);
        let (interval, tolerance) = (micros(ask.interval).max(1), micros(ask.tolerance));
        let (count, max_wait) = (ask.count.max(1), ask.max_wait);
        Box::pin(async move {
            let mut pending = Pending(Some(inner.clone()));
            let reply: redis::RedisResult<Vec<i64>> = inner
                .acquire
                .key(tat)
                .key(hold)
                .arg(interval)
                .arg(tolerance)
                .arg(count)
                .arg(micros(max_wait))
                .invoke_async(&mut conn)
                .await;
            pending.0 = None;
            match reply {
                Ok(reply) => script::grant(&reply, count, max_wait),
                Err(error) if error.is_timeout() => {
                    inner.lost("a slot request timed out");
                    Err(CoordinatorError::Timeout)
                }
                Err(error) if error.is_io_error() || error.is_connection_dropped() => {
                    inner.lost("the connection failed");
                    Err(CoordinatorError::Unavailable)
                }
                // The text of a Redis error names no secret (scripts carry none).
                Err(error) => Err(CoordinatorError::Protocol(error.to_string())),
            }
        })
    }

    fn hold(&self, key: &str, now: Instant) -> Option<Hold> {
        let holds = self.inner.holds.lock().unwrap_or_else(|p| p.into_inner());
        holds.get(key).copied().filter(|h| h.until > now)
    }

    fn publish_hold(&self, key: &str, now: Instant, hold: &Hold) {
        let left = hold.until.saturating_duration_since(now);
        let message = script::Message::Hold {
            key,
            left,
            quota: hold.reason == HoldReason::QuotaExhausted,
        };
        self.inner
            .send(self.inner.key(key, "hold"), left, message.encode());
    }

    fn circuit_open_until(&self, key: &str, now: Instant) -> Option<Instant> {
        let circuits = self
            .inner
            .circuits
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        circuits.get(key).copied().filter(|u| *u > now)
    }

    fn publish_circuit_open(&self, key: &str, _now: Instant, open_for: Duration) {
        let message = script::Message::Circuit {
            key,
            left: open_for,
        };
        self.inner
            .send(self.inner.key(key, "circuit"), open_for, message.encode());
    }
}
