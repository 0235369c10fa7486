//! Decisions across calls; the whole story is on [`Guards`].

pub(crate) mod breaker;
pub(crate) mod fleet;
pub(crate) mod hedge;
pub(crate) mod hints;
pub(crate) mod limiter;
pub(crate) mod shared;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::rt::Coordinator;
use std::time::{Duration, Instant, SystemTime};

use crate::ids::CorrelationId;
use serde::{Deserialize, Serialize};

pub use breaker::{
    Breaker, CircuitBreakerConfig, CircuitCheck, CircuitState, CircuitVerdict, ProbeId,
};
pub use fleet::{CircuitSharing, FailureMode, FleetConfig, FleetUrl, LocalCoordinator};
pub use hedge::{HedgeAfter, HedgingConfig, InvalidHedgeAfter, Latencies, MAX_HEDGES, Percentile};
pub use hints::{Quota, rate_limit_quota};
pub use limiter::{Gcra, InvalidRate, Rate, RateLimitConfig};
pub use shared::{Hold, HoldReason};

/// Host-wide hold settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HoldConfig {
    /// Whether a throttling answer with `Retry-After` holds every call to its host.
    pub enabled: bool,
    /// Whether rate-limit fields saying no quota is left (`RateLimit`, `X-RateLimit-*`) hold
    /// the host until their reset too.
    pub rate_limit_fields: bool,
}

impl Default for HoldConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rate_limit_fields: true,
        }
    }
}

impl HoldConfig {
    /// No holds at all.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            rate_limit_fields: false,
        }
    }

    /// Turns holds on throttling on or off.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Turns holds on exhausted quotas (rate-limit fields) on or off.
    pub fn with_rate_limit_fields(mut self, on: bool) -> Self {
        self.rate_limit_fields = on;
        self
    }
}

impl Hold {
    /// A hold until `until` (monotonic), the server's `retry_at`, for `reason`.
    pub fn new(until: Instant, retry_at: SystemTime, reason: HoldReason) -> Self {
        Self {
            until,
            retry_at,
            reason,
        }
    }
}

/// How one call takes part in the state it shares with the other calls to its host. Every part
/// is on by default except waiting for an open circuit; an endpoint that knows better turns a
/// part off (GitHub's `/rate_limit`, which does not count against the quota, skips the hold and
/// the limiter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallGuards {
    /// Refused while the circuit is open, and counted by the breaker.
    pub circuit_breaker: bool,
    /// Waits for the circuit to half-open (within the deadline) instead of failing at once.
    pub wait_for_circuit: bool,
    /// Held while its host is held.
    pub hold: bool,
    /// Limited by the client-side rate limit.
    pub rate_limit: bool,
}

impl CallGuards {
    /// Sets whether the circuit breaker applies.
    pub fn with_circuit_breaker(mut self, on: bool) -> Self {
        self.circuit_breaker = on;
        self
    }

    /// Sets whether the call waits for an open circuit to half-open.
    pub fn with_wait_for_circuit(mut self, wait: bool) -> Self {
        self.wait_for_circuit = wait;
        self
    }

    /// Sets whether the hold applies.
    pub fn with_hold(mut self, on: bool) -> Self {
        self.hold = on;
        self
    }

    /// Sets whether the client-side rate limit applies.
    pub fn with_rate_limit(mut self, on: bool) -> Self {
        self.rate_limit = on;
        self
    }
}

impl Default for CallGuards {
    fn default() -> Self {
        Self {
            circuit_breaker: true,
            wait_for_circuit: false,
            hold: true,
            rate_limit: true,
        }
    }
}

/// What a call may do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send; `probe` when the attempt is a half-open probe.
    Go { probe: Option<breaker::ProbeId> },
    /// Wait until then; `slot` when a rate-limiter slot at `until` is reserved for this call.
    Wait {
        until: Instant,
        why: WaitWhy,
        slot: bool,
    },
    /// End the call at once.
    Refuse(Refusal),
    /// Ask the fleet's coordinator for rate slots first (only with a coordinator).
    Acquire(Box<fleet::SlotAsk>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitWhy {
    Hold(HoldReason),
    Circuit,
    RateLimit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Held(Hold),
    CircuitOpen { until: Instant },
    RateLimited { slot: Instant },
}

/// What a call asks [`Guards::admit`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ask<'a> {
    pub(crate) key: &'a str,
    /// The call that asks: a state change it causes is logged with its correlation ID.
    pub(crate) correlation_id: &'a CorrelationId,
    pub(crate) now: Instant,
    pub(crate) deadline: Instant,
    pub(crate) guards: CallGuards,
    /// The call waited for a limiter slot that is now due.
    pub(crate) has_slot: bool,
    /// The fleet's coordinator failed this call and it fails open: the local limiter decides.
    pub(crate) local_only: bool,
}

#[derive(Debug)]
struct HostState {
    last_seen: Instant,
    breaker: Option<Breaker>,
    hold: Option<Hold>,
    tat: Option<Instant>,
    /// Rate slots the fleet's coordinator leased for this key, ascending, not yet taken.
    lease: VecDeque<Instant>,
    /// Recent attempt latencies, for a percentile hedge delay (boxed once per host, only by a
    /// client that hedges at a percentile).
    latencies: Option<Box<hedge::Latencies>>,
}

/// Hosts idle for longer than this are forgotten once the map holds [`MAX_HOSTS`].
const IDLE: Duration = Duration::from_secs(600);
const MAX_HOSTS: usize = 256;

/// The across-call state of one client: per host (or vendor key), a circuit breaker, a hold and
/// a GCRA limiter. Shared by every exchange of a client through its
/// [`Policy`](crate::Policy); every method takes the time as data.
///
/// Decisions across calls: the circuit breaker, the host-wide hold and the
/// client-side rate limit, kept per client and host (or a vendor-given key) in [`Guards`].
///
/// Like the retry budget, this is pure state shared by every exchange of a client, with time as
/// data on every method; the exchanges consult it and the backends know nothing of it.
///
/// Before each attempt an exchange asks, in this order:
///
/// 1. **Hold**: has any call to this host been told to come back later (a throttling answer with
///    `Retry-After`, or a response whose rate-limit fields say no quota is left)? Then wait until
///    then if that is before the call's deadline, else end at once with `RateLimited`.
/// 2. **Circuit breaker**: is the circuit open (or half-open with its probes taken)? Then end at
///    once with `CircuitOpen`, or wait, when the call asked to, if that is before its deadline.
/// 3. **Rate limit**: is there a GCRA slot now? Otherwise reserve the next one and wait for it
///    if it comes before the deadline, else end at once with `RateLimited`; a refused request is
///    never sent.
///
/// After each attempt the exchange reports its [`CircuitVerdict`] (to the breaker) and any hold the
/// response asked for.
///
/// ```
/// use std::time::Duration;
/// use egress_core::{CircuitBreakerConfig, Config, RetryPolicy};
/// use egress_core::test_util::{ScriptedTransport, block_on, step};
///
/// let upstream = ScriptedTransport::new();
/// upstream.push(step(503)).push(step(503)).push(step(429).header("retry-after", "20"));
/// // A breaker that opens after 2 failed attempts (the default waits for 100), no retries.
/// let breaker = CircuitBreakerConfig::default()
///     .with_min_throughput(2)
///     .with_break_duration(Duration::from_secs(5));
/// let config = Config::default()
///     .with_base_url("https://api.example.com")
///     .with_retry(RetryPolicy::disabled())
///     .with_circuit_breaker(breaker);
/// let client = upstream.client(config).unwrap();
/// for _ in 0..2 {
///     block_on(client.get("/x").send()).unwrap_err();
/// }
/// // Open: refused at once, never sent.
/// let refused = block_on(client.get("/x").send()).unwrap_err();
/// assert!(refused.is_circuit_open() && refused.attempts() == 0);
/// assert_eq!(upstream.requests().len(), 2);
///
/// // After the break the probe meets a 429 with Retry-After: 20: the host is held, and a
/// // call whose deadline ends first is refused with `RateLimited`, unsent.
/// upstream.clock().advance(Duration::from_secs(5));
/// block_on(client.get("/x").send()).unwrap_err();
/// let held = block_on(client.get("/x").deadline(Duration::from_secs(10)).send()).unwrap_err();
/// assert!(held.is_rate_limited() && held.attempts() == 0);
/// assert_eq!(upstream.requests().len(), 3);
/// ```
#[derive(Debug)]
pub struct Guards {
    breaker: CircuitBreakerConfig,
    hold: HoldConfig,
    limit: RateLimitConfig,
    gcra: Gcra,
    fleet: Option<fleet::FleetLink>,
    hosts: Mutex<HashMap<String, HostState, foldhash::fast::RandomState>>,
}

impl Guards {
    /// The state for these settings, empty.
    pub fn new(breaker: CircuitBreakerConfig, hold: HoldConfig, limit: RateLimitConfig) -> Self {
        Self {
            gcra: Gcra::new(&limit),
            breaker,
            hold,
            limit,
            fleet: None,
            hosts: Mutex::new(HashMap::default()),
        }
    }

    /// Shares the rate limit, holds and (when configured) open circuits through `coordinator`.
    pub fn with_coordinator(
        mut self,
        coordinator: Arc<dyn Coordinator>,
        config: &fleet::FleetConfig,
    ) -> Self {
        self.fleet = Some(fleet::FleetLink::new(coordinator, config));
        self
    }

    /// The coordinator and its settings, when the client has one.
    pub(crate) fn fleet(&self) -> Option<&fleet::FleetLink> {
        self.fleet.as_ref()
    }

    /// Whether any part is on (else exchanges skip the state entirely).
    pub fn is_active(&self) -> bool {
        self.breaker.enabled
            || self.hold.enabled
            || self.hold.rate_limit_fields
            || self.limit.enabled
    }

    /// The hold settings.
    pub fn hold_config(&self) -> &HoldConfig {
        &self.hold
    }

    fn with_host<R>(&self, key: &str, now: Instant, f: impl FnOnce(&mut HostState) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of plain values.
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(key) {
            hosts.retain(|_, h| {
                now.saturating_duration_since(h.last_seen) < IDLE
                    || h.hold.is_some_and(|hold| hold.until > now)
            });
        }
        if let Some(state) = hosts.get_mut(key) {
            state.last_seen = state.last_seen.max(now);
            return f(state);
        }
        let state = hosts.entry(key.to_owned()).or_insert_with(|| HostState {
            last_seen: now,
            breaker: None,
            hold: None,
            tat: None,
            lease: VecDeque::new(),
            latencies: None,
        });
        f(state)
    }

    /// The circuit state of `key` at `now` (closed when it was never used).
    pub fn circuit_state(&self, key: &str, now: Instant) -> CircuitState {
        self.with_host(key, now, |h| {
            h.breaker
                .as_ref()
                .map_or(CircuitState::Closed, |b| b.state(now))
        })
    }

    /// The hold on `key` at `now`, if one is in force.
    pub fn hold(&self, key: &str, now: Instant) -> Option<Hold> {
        self.with_host(key, now, |h| h.hold.filter(|hold| hold.until > now))
    }

    /// Records the latency of an attempt to `key` that answered at `now`.
    pub(crate) fn record_latency(&self, key: &str, now: Instant, latency: Duration) {
        self.with_host(key, now, |h| {
            h.latencies.get_or_insert_with(Box::default).record(latency);
        });
    }

    /// The percentile `p` of the recent attempt latencies to `key`, once it has enough.
    pub fn latency_percentile(
        &self,
        key: &str,
        now: Instant,
        p: hedge::Percentile,
    ) -> Option<Duration> {
        self.with_host(key, now, |h| h.latencies.as_ref()?.percentile(p))
    }

    /// Whether a hedge to `key` may go at `now` without waiting: the circuit is closed (when
    /// the call takes part in the breaker) and the host is not held (when it takes part in
    /// holds). The rate limiter is asked afterwards, through [`admit`](Self::admit) with no
    /// time to wait.
    pub(crate) fn hedge_refusal(
        &self,
        key: &str,
        now: Instant,
        g: CallGuards,
        local_only: bool,
    ) -> Option<&'static str> {
        let fleet = self.fleet.as_ref().filter(|_| !local_only);
        if g.hold
            && (self.hold(key, now).is_some()
                || fleet.is_some_and(|f| f.coordinator.hold(key, now).is_some()))
        {
            return Some("host_hold");
        }
        let breaker_on = self.breaker.enabled && g.circuit_breaker;
        if breaker_on
            && (self.circuit_state(key, now) != CircuitState::Closed
                || fleet.is_some_and(|f| {
                    f.share_circuit && f.coordinator.circuit_open_until(key, now).is_some()
                }))
        {
            return Some("circuit_open");
        }
        None
    }

    /// Decides whether a call may send now (see the [module docs](self) for the order).
    pub(crate) fn admit(&self, ask: &Ask<'_>) -> Admission {
        let now = ask.now;
        let g = ask.guards;
        let breaker_on = self.breaker.enabled && g.circuit_breaker;
        let limit_on = self.limit.enabled && g.rate_limit && !ask.has_slot;
        // The fleet's word, from the coordinator's memory (no round trip): a hold or an open
        // circuit another replica published.
        let fleet = self.fleet.as_ref();
        let shared_hold = fleet
            .filter(|_| g.hold)
            .and_then(|f| f.coordinator.hold(ask.key, now));
        let shared_open = fleet
            .filter(|f| breaker_on && f.share_circuit)
            .and_then(|f| f.coordinator.circuit_open_until(ask.key, now));
        let (admission, changed) = self.with_host(ask.key, now, |h| {
            if let Some(shared) = shared_hold {
                if h.hold.is_none_or(|local| local.until < shared.until) {
                    h.hold = Some(shared);
                }
            }
            if g.hold {
                if let Some(hold) = h.hold {
                    if hold.until > now {
                        if hold.until < ask.deadline {
                            let why = WaitWhy::Hold(hold.reason);
                            let wait = Admission::Wait {
                                until: hold.until,
                                why,
                                slot: false,
                            };
                            return (wait, None);
                        }
                        return (Admission::Refuse(Refusal::Held(hold)), None);
                    }
                    h.hold = None;
                }
            }
            let mut probe = false;
            let mut changed = None;
            if let Some(until) = shared_open {
                if g.wait_for_circuit && until < ask.deadline {
                    let wait = Admission::Wait {
                        until,
                        why: WaitWhy::Circuit,
                        slot: false,
                    };
                    return (wait, None);
                }
                return (Admission::Refuse(Refusal::CircuitOpen { until }), None);
            }
            if breaker_on {
                let breaker = h
                    .breaker
                    .get_or_insert_with(|| Breaker::new(&self.breaker, now));
                let (check, change) = breaker.check(now, &self.breaker);
                changed = change;
                match check {
                    breaker::CircuitCheck::Pass => {}
                    breaker::CircuitCheck::Probe => probe = true,
                    breaker::CircuitCheck::Blocked { until } => {
                        if g.wait_for_circuit && until < ask.deadline {
                            let wait = Admission::Wait {
                                until,
                                why: WaitWhy::Circuit,
                                slot: false,
                            };
                            return (wait, changed);
                        }
                        return (Admission::Refuse(Refusal::CircuitOpen { until }), changed);
                    }
                }
            }
            let shared_limit = fleet.filter(|_| !ask.local_only);
            if let (true, Some(fleet)) = (limit_on, shared_limit) {
                // A leased slot more than one interval (at least 1 ms) old is dropped, never
                // spent late: a window of the upstream sees at most 1 ms worth of slots more.
                let stale = self.gcra.interval().max(Duration::from_millis(1));
                while h
                    .lease
                    .front()
                    .is_some_and(|s| now.saturating_duration_since(*s) > stale)
                {
                    h.lease.pop_front();
                }
                match h.lease.front().copied() {
                    Some(slot) if slot <= now => {
                        h.lease.pop_front();
                    }
                    Some(slot) if slot < ask.deadline => {
                        h.lease.pop_front();
                        let wait = Admission::Wait {
                            until: slot,
                            why: WaitWhy::RateLimit,
                            slot: true,
                        };
                        return (wait, changed);
                    }
                    // Kept for a call with a later deadline.
                    Some(slot) => {
                        return (Admission::Refuse(Refusal::RateLimited { slot }), changed);
                    }
                    None => {
                        let ask = fleet::SlotAsk::new(
                            ask.key,
                            now,
                            fleet.lease,
                            &self.gcra,
                            ask.deadline.saturating_duration_since(now),
                        );
                        return (Admission::Acquire(Box::new(ask)), changed);
                    }
                }
            } else if limit_on {
                match self.gcra.reserve(&mut h.tat, now, ask.deadline) {
                    Ok(slot) if slot <= now => {}
                    Ok(slot) => {
                        let wait = Admission::Wait {
                            until: slot,
                            why: WaitWhy::RateLimit,
                            slot: true,
                        };
                        return (wait, changed);
                    }
                    Err(slot) => {
                        return (Admission::Refuse(Refusal::RateLimited { slot }), changed);
                    }
                }
            }
            let probe = match (&mut h.breaker, probe) {
                (Some(breaker), true) => Some(breaker.take_probe(now)),
                (Some(breaker), false) if breaker_on => {
                    // Counted as it is sent: an attempt that ends well reports nothing more.
                    breaker.record_attempt(now);
                    None
                }
                _ => None,
            };
            (Admission::Go { probe }, changed)
        });
        if let Some(state) = changed {
            circuit_changed(ask.key, state, None, ask.correlation_id);
        }
        admission
    }

    /// Records the verdict of an attempt to `key` that ended at `now`.
    pub(crate) fn record(
        &self,
        key: &str,
        now: Instant,
        verdict: CircuitVerdict,
        probe: Option<breaker::ProbeId>,
        cause: &CorrelationId,
    ) {
        if !self.breaker.enabled {
            return;
        }
        let config = &self.breaker;
        let changed = self.with_host(key, now, |h| {
            let breaker = h.breaker.get_or_insert_with(|| Breaker::new(config, now));
            breaker
                .record(now, config, verdict, probe)
                .map(|state| (state, breaker.break_duration()))
        });
        if let Some((state, break_for)) = changed {
            let until = (state == CircuitState::Open).then_some(break_for);
            if let (Some(open_for), Some(fleet)) = (until, &self.fleet) {
                if fleet.share_circuit {
                    fleet.coordinator.publish_circuit_open(key, now, open_for);
                }
            }
            circuit_changed(key, state, until, cause);
        }
    }

    /// Takes the slots a coordinator leased for `key` (offsets from `at`, when its answer
    /// arrived: a slot is never earlier than the coordinator meant), and any hold it found
    /// (`retry_at`: the wall-clock time that hold ends).
    pub(crate) fn lease(
        &self,
        key: &str,
        at: Instant,
        grant: &fleet::SlotGrant,
        retry_at: impl Fn(Instant) -> SystemTime,
    ) {
        let until = |d: Duration| at.checked_add(d).unwrap_or(at);
        self.with_host(key, at, |h| {
            h.lease.extend(grant.slots.iter().map(|d| until(*d)));
            h.lease.make_contiguous().sort_unstable();
            if let Some(left) = grant.hold.filter(|d| !d.is_zero()) {
                let end = until(left);
                let hold = Hold::new(end, retry_at(end), HoldReason::RetryAfter);
                if h.hold.is_none_or(|local| local.until < hold.until) {
                    h.hold = Some(hold);
                }
            }
        });
    }

    /// Holds `key` until `hold.until` (a later hold already in force stays).
    pub(crate) fn hold_host(&self, key: &str, now: Instant, hold: Hold, cause: &CorrelationId) {
        let longer = self.with_host(key, now, |h| match h.hold {
            Some(current) if current.until >= hold.until => false,
            _ => {
                h.hold = Some(hold);
                true
            }
        });
        if longer {
            if let Some(fleet) = &self.fleet {
                fleet.coordinator.publish_hold(key, now, &hold);
            }
            let until = hold.until.saturating_duration_since(now);
            tracing::info!(
                correlation_id = %cause,
                server.address = key,
                reason = hold.reason.as_str(),
                until_ms = until.as_millis() as u64,
                "host held"
            );
            #[cfg(feature = "metrics")]
            metrics::counter!(
                crate::metric_names::HOLDS,
                "server.address" => key.to_owned(),
                "reason" => hold.reason.as_str()
            )
            .increment(1);
        }
    }
}

/// A circuit changed state; `cause` is the call whose attempt (or admission) changed it.
fn circuit_changed(
    key: &str,
    state: CircuitState,
    open_for: Option<Duration>,
    cause: &CorrelationId,
) {
    tracing::warn!(
        correlation_id = %cause,
        server.address = key,
        state = state.as_str(),
        until_ms = open_for.map(|d| d.as_millis() as u64),
        "circuit state changed"
    );
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!(crate::metric_names::CIRCUIT_STATE, "server.address" => key.to_owned())
            .set(state.gauge());
        metrics::counter!(
            crate::metric_names::CIRCUIT_TRANSITIONS,
            "server.address" => key.to_owned(),
            "state" => state.as_str()
        )
        .increment(1);
    }
}

/// The key of a call: the vendor's, else the host.
pub(crate) fn key<'a>(vendor: Option<&'a Cow<'static, str>>, host: &'a str) -> &'a str {
    vendor.map_or(host, |k| k.as_ref())
}
