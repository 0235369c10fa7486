//! The circuit breaker of one host (or vendor key): closed, open, half-open, over attempts.
//!
//! ```text
//!            failure ratio >= threshold over the sampling window
//!            (with at least min_throughput attempts in it)
//!   [Closed] ---------------------------------------------------> [Open until t + break]
//!      ^                                                              |
//!      | a probe succeeds (break back to its base)                    | t >= until: the next call
//!      |                                                              v
//!      +------------------------------------------------------- [HalfOpen: `probes` permits]
//!                       a probe fails: [Open] again, break doubled up to the cap
//! ```
//!
//! Attempts are counted when they are sent ([`Breaker::record_attempt`]); failures when they end
//! ([`Breaker::record`]): the attempts the classifier calls transient (the retryable 5xx,
//! timeouts, transport errors). Throttling, other answers and local refusals are not failures,
//! so an attempt that ends well reports nothing at all. The sampling window slides in tenths of
//! its length, as the retry budget's does. A probe permit lapses after
//! the current break duration, so a probe whose call was dropped cannot keep the circuit half-open
//! forever. Time enters as data on every method.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Circuit breaker settings (defaults: see [`CircuitBreakerConfig::default`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// Whether the breaker is on.
    pub enabled: bool,
    /// The share of failed attempts in the sampling window that opens the circuit (0.5 = 50 %).
    pub failure_ratio: f64,
    /// The window over which attempts and failures are counted.
    #[serde(with = "humantime_serde")]
    pub sampling_window: Duration,
    /// The fewest attempts in the window before the ratio is looked at.
    pub min_throughput: u32,
    /// How long the circuit stays open the first time.
    #[serde(with = "humantime_serde")]
    pub break_duration: Duration,
    /// The longest break: a failed probe doubles the break up to this.
    #[serde(with = "humantime_serde")]
    pub max_break_duration: Duration,
    /// How many probes may be in flight while half-open.
    pub half_open_probes: u32,
}

impl Default for CircuitBreakerConfig {
    /// On; 50 % failures over 30 s with at least 100 attempts; break 5 s doubling to 30 s; one
    /// probe. The ratio is resilience4j's and Hystrix's default rather than .NET's 10 %: an
    /// upstream failing one attempt in ten has every failure retried successfully, and a 10 %
    /// threshold would turn that into whole seconds of refused calls (README, "Default policy").
    fn default() -> Self {
        Self {
            enabled: true,
            failure_ratio: 0.5,
            sampling_window: Duration::from_secs(30),
            min_throughput: 100,
            break_duration: Duration::from_secs(5),
            max_break_duration: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

impl CircuitBreakerConfig {
    /// The breaker switched off.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Turns the breaker on or off.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the failure ratio that opens the circuit.
    pub fn with_failure_ratio(mut self, ratio: f64) -> Self {
        self.failure_ratio = ratio;
        self
    }

    /// Sets the sampling window.
    pub fn with_sampling_window(mut self, window: Duration) -> Self {
        self.sampling_window = window;
        self
    }

    /// Sets the minimum throughput.
    pub fn with_min_throughput(mut self, n: u32) -> Self {
        self.min_throughput = n;
        self
    }

    /// Sets the first break duration.
    pub fn with_break_duration(mut self, d: Duration) -> Self {
        self.break_duration = d;
        self
    }

    /// Sets the longest break duration.
    pub fn with_max_break_duration(mut self, d: Duration) -> Self {
        self.max_break_duration = d;
        self
    }

    /// Sets how many probes may be in flight while half-open.
    pub fn with_half_open_probes(mut self, n: u32) -> Self {
        self.half_open_probes = n;
        self
    }
}

/// What one attempt says about the health of its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitVerdict {
    /// The upstream answered and the classifier saw no transient failure (a 2xx, a 404...).
    Success,
    /// A transient failure: a retryable 5xx, a timeout, a transport error.
    Failure,
    /// Neither: throttling, a failure of ours (TLS, an oversize body), a cancelled attempt.
    Neutral,
}

/// The state of a circuit, as telemetry names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the break ends.
    Open,
    /// A few probes may go; their outcome closes or re-opens the circuit.
    HalfOpen,
}

impl CircuitState {
    /// A short stable name (`closed`, `open`, `half_open`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The value of the `egress.circuit.state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

/// What the breaker says to a call about to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircuitCheck {
    /// Closed: send.
    Pass,
    /// Half-open with a permit free: send as a probe ([`Breaker::take_probe`]).
    Probe,
    /// Open (or half-open with every permit taken) until then.
    Blocked {
        /// When a call may ask again.
        until: Instant,
    },
}

const SLOTS: usize = 10;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    index: u64,
    attempts: u64,
    failures: u64,
}

#[derive(Debug, Clone)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// The probes in flight, each with when its permit lapses.
    HalfOpen {
        permits: Vec<(ProbeId, Instant)>,
    },
}

/// Names one probe. Only a probe whose permit is still held counts when it reports: one that
/// reports after its permit lapsed, or after the episode it belonged to ended, changes nothing.
pub type ProbeId = u64;

/// The breaker of one host. Pure: every method takes the time as data.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    epoch: Instant,
    last_seen: Instant,
    slots: [Slot; SLOTS],
    /// The break the next opening lasts.
    break_for: Duration,
    /// The id of the next probe.
    next_probe: ProbeId,
    /// A slot's width in nanoseconds, computed once: every attempt sent computes its slot.
    width: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Breaker {
    /// A closed breaker at `now`.
    pub fn new(config: &CircuitBreakerConfig, now: Instant) -> Self {
        Self {
            state: State::Closed,
            epoch: now,
            last_seen: now,
            slots: [Slot::default(); SLOTS],
            break_for: config.break_duration,
            next_probe: 0,
            width: nanos(config.sampling_window / SLOTS as u32).max(1),
        }
    }

    /// The state at `now` (an open circuit whose break has ended reads as half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        match &self.state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if now < *until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// The break the next opening lasts.
    pub fn break_duration(&self) -> Duration {
        self.break_for
    }

    fn index(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch)) / self.width
    }

    fn totals(&self, now: Instant) -> (u64, u64) {
        let current = self.index(now);
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        self.slots
            .iter()
            .filter(|s| s.index >= oldest && s.index <= current && (s.attempts + s.failures > 0))
            .fold((0, 0), |(a, f), s| (a + s.attempts, f + s.failures))
    }

    fn slot(&mut self, now: Instant) -> &mut Slot {
        let index = self.index(now);
        let slot = &mut self.slots[(index % SLOTS as u64) as usize];
        if slot.index != index {
            *slot = Slot {
                index,
                attempts: 0,
                failures: 0,
            };
        }
        slot
    }

    /// Counts an attempt sent at `now` (while closed; a probe is counted by its permit).
    pub fn record_attempt(&mut self, now: Instant) {
        let now = now.max(self.last_seen);
        self.last_seen = now;
        if matches!(self.state, State::Closed) {
            self.slot(now).attempts += 1;
        }
    }

    /// Asks whether a call may send at `now`. Moves an open circuit whose break has ended to
    /// half-open (returning the new state as the second value when it changed) and lets lapsed
    /// probe permits go.
    pub fn check(
        &mut self,
        now: Instant,
        config: &CircuitBreakerConfig,
    ) -> (CircuitCheck, Option<CircuitState>) {
        self.last_seen = self.last_seen.max(now);
        let mut changed = None;
        if let State::Open { until } = self.state {
            if now < until {
                return (CircuitCheck::Blocked { until }, None);
            }
            self.state = State::HalfOpen {
                permits: Vec::new(),
            };
            changed = Some(CircuitState::HalfOpen);
        }
        let check = match &mut self.state {
            State::Closed => CircuitCheck::Pass,
            State::Open { until } => CircuitCheck::Blocked { until: *until },
            State::HalfOpen { permits } => {
                permits.retain(|(_, lapse)| *lapse > now);
                if permits.len() < config.half_open_probes as usize {
                    CircuitCheck::Probe
                } else {
                    let until = permits.iter().map(|(_, lapse)| *lapse).min();
                    CircuitCheck::Blocked {
                        until: until.unwrap_or(now),
                    }
                }
            }
        };
        (check, changed)
    }

    /// Takes a probe permit at `now` (after [`check`](Self::check) said [`CircuitCheck::Probe`]); it
    /// lapses after the current break duration. Report the probe's outcome with the returned id.
    pub fn take_probe(&mut self, now: Instant) -> ProbeId {
        let lapse = now.checked_add(self.break_for).unwrap_or(now);
        let id = self.next_probe;
        self.next_probe += 1;
        if let State::HalfOpen { permits } = &mut self.state {
            permits.push((id, lapse));
        }
        id
    }

    /// Records the verdict of an attempt that ended at `now`; `probe` is the id
    /// [`take_probe`](Self::take_probe) gave when it was sent as a half-open probe. Returns the
    /// new state when it changed.
    pub fn record(
        &mut self,
        now: Instant,
        config: &CircuitBreakerConfig,
        verdict: CircuitVerdict,
        probe: Option<ProbeId>,
    ) -> Option<CircuitState> {
        let now = now.max(self.last_seen);
        self.last_seen = now;
        // A probe counts only while its permit is held.
        let held = match (&mut self.state, probe) {
            (State::HalfOpen { permits }, Some(id)) => {
                match permits
                    .iter()
                    .position(|(p, lapse)| *p == id && *lapse > now)
                {
                    Some(i) => {
                        permits.swap_remove(i);
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        };
        match &mut self.state {
            State::Closed => {
                if verdict != CircuitVerdict::Failure {
                    return None;
                }
                self.slot(now).failures += 1;
                let (attempts, failures) = self.totals(now);
                let tripped = attempts >= u64::from(config.min_throughput)
                    && failures as f64 >= config.failure_ratio * attempts as f64;
                if tripped {
                    self.open(now);
                    return Some(CircuitState::Open);
                }
                None
            }
            State::HalfOpen { .. } if held => match verdict {
                CircuitVerdict::Failure => {
                    self.break_for = (self.break_for.saturating_mul(2))
                        .min(config.max_break_duration)
                        .max(config.break_duration);
                    self.open(now);
                    Some(CircuitState::Open)
                }
                CircuitVerdict::Success => {
                    self.state = State::Closed;
                    self.slots = [Slot::default(); SLOTS];
                    self.break_for = config.break_duration;
                    Some(CircuitState::Closed)
                }
                CircuitVerdict::Neutral => None,
            },
            // An attempt admitted before the circuit opened, ending now: it changes nothing.
            State::HalfOpen { .. } | State::Open { .. } => None,
        }
    }

    fn open(&mut self, now: Instant) {
        let until = now.checked_add(self.break_for).unwrap_or(now);
        self.state = State::Open { until };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CircuitBreakerConfig {
        CircuitBreakerConfig::default()
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// An attempt sent and ended at `t` with `verdict`, not a probe.
    fn attempt(
        b: &mut Breaker,
        t: Instant,
        c: &CircuitBreakerConfig,
        verdict: CircuitVerdict,
    ) -> Option<CircuitState> {
        b.record_attempt(t);
        b.record(t, c, verdict, None)
    }

    #[test]
    fn fifty_failures_in_a_hundred_attempts_open_the_circuit_for_five_seconds() {
        let c = config();
        let t = Instant::now();
        let mut b = Breaker::new(&c, t);
        // 50 successes, then 49 failures: 99 attempts, below the minimum throughput of 100.
        for _ in 0..50 {
            assert_eq!(attempt(&mut b, t, &c, CircuitVerdict::Success), None);
        }
        for _ in 0..49 {
            assert_eq!(attempt(&mut b, t, &c, CircuitVerdict::Failure), None);
        }
        // The 100th attempt fails: 50 / 100 = 0.5 >= 0.5, open until t + 5 s.
        assert_eq!(
            attempt(&mut b, t, &c, CircuitVerdict::Failure),
            Some(CircuitState::Open)
        );
        assert_eq!(b.check(t, &c).0, CircuitCheck::Blocked { until: t + s(5) });
        assert_eq!(b.state(t + s(5)), CircuitState::HalfOpen);
    }

    #[test]
    fn forty_nine_failures_in_a_hundred_attempts_keep_it_closed() {
        let c = config();
        let t = Instant::now();
        let mut b = Breaker::new(&c, t);
        for _ in 0..51 {
            attempt(&mut b, t, &c, CircuitVerdict::Success);
        }
        for _ in 0..49 {
            assert_eq!(attempt(&mut b, t, &c, CircuitVerdict::Failure), None);
        }
        assert_eq!(b.check(t, &c).0, CircuitCheck::Pass);
    }

    #[test]
    fn throttling_and_neutral_outcomes_never_count_as_failures() {
        let c = config();
        let t = Instant::now();
        let mut b = Breaker::new(&c, t);
        for _ in 0..1000 {
            assert_eq!(attempt(&mut b, t, &c, CircuitVerdict::Neutral), None);
        }
        assert_eq!(b.check(t, &c).0, CircuitCheck::Pass);
    }

    #[test]
    fn failures_older_than_the_sampling_window_are_forgotten() {
        let c = config();
        let t = Instant::now();
        let mut b = Breaker::new(&c, t);
        for _ in 0..99 {
            attempt(&mut b, t, &c, CircuitVerdict::Failure);
        }
        // 30 s later (slots of 3 s) the 99 failures at t have left the window: 1 attempt.
        assert_eq!(
            attempt(&mut b, t + s(30), &c, CircuitVerdict::Failure),
            None
        );
        assert_eq!(b.check(t + s(30), &c).0, CircuitCheck::Pass);
    }

    fn opened(c: &CircuitBreakerConfig, t: Instant) -> Breaker {
        let mut b = Breaker::new(c, t);
        for _ in 0..100 {
            attempt(&mut b, t, c, CircuitVerdict::Failure);
        }
        assert_eq!(b.state(t), CircuitState::Open);
        b
    }

    #[test]
    fn after_the_break_one_probe_goes_and_its_success_closes_the_circuit() {
        let c = config();
        let t = Instant::now();
        let mut b = opened(&c, t);
        assert_eq!(
            b.check(t + s(5), &c),
            (CircuitCheck::Probe, Some(CircuitState::HalfOpen))
        );
        let probe = b.take_probe(t + s(5));
        // The one permit is taken: the next call is blocked until it lapses (5 s later).
        assert_eq!(
            b.check(t + s(5), &c).0,
            CircuitCheck::Blocked { until: t + s(10) }
        );
        assert_eq!(
            b.record(t + s(6), &c, CircuitVerdict::Success, Some(probe)),
            Some(CircuitState::Closed)
        );
        assert_eq!(b.check(t + s(6), &c).0, CircuitCheck::Pass);
    }

    #[test]
    fn failed_probes_double_the_break_up_to_thirty_seconds() {
        let c = config();
        let mut t = Instant::now();
        let mut b = opened(&c, t);
        // Breaks: 5 s, then 10, 20, 30, 30.
        for expected in [10, 20, 30, 30] {
            t += b.break_duration();
            assert_eq!(b.check(t, &c).0, CircuitCheck::Probe);
            let probe = b.take_probe(t);
            assert_eq!(
                b.record(t, &c, CircuitVerdict::Failure, Some(probe)),
                Some(CircuitState::Open)
            );
            assert_eq!(b.break_duration(), s(expected));
            assert_eq!(
                b.check(t, &c).0,
                CircuitCheck::Blocked {
                    until: t + s(expected)
                }
            );
        }
        // A success closes it and the next opening lasts 5 s again.
        t += b.break_duration();
        b.check(t, &c);
        let probe = b.take_probe(t);
        b.record(t, &c, CircuitVerdict::Success, Some(probe));
        assert_eq!(b.break_duration(), s(5));
    }

    #[test]
    fn a_probe_that_never_reports_lapses_after_the_break() {
        let c = config();
        let t = Instant::now();
        let mut b = opened(&c, t);
        b.check(t + s(5), &c);
        b.take_probe(t + s(5));
        assert!(matches!(
            b.check(t + s(9), &c).0,
            CircuitCheck::Blocked { .. }
        ));
        assert_eq!(b.check(t + s(10), &c).0, CircuitCheck::Probe);
    }

    #[test]
    fn a_probe_reporting_after_its_permit_lapsed_frees_no_permit_of_another() {
        let c = config();
        let t = Instant::now();
        let mut b = opened(&c, t);
        b.check(t + s(5), &c);
        let first = b.take_probe(t + s(5));
        // Its permit lapses at 10 s; a second probe takes the one permit.
        assert_eq!(b.check(t + s(10), &c).0, CircuitCheck::Probe);
        b.take_probe(t + s(10));
        // The first answers late: nothing changes, the second still holds the permit.
        assert_eq!(
            b.record(t + s(11), &c, CircuitVerdict::Neutral, Some(first)),
            None
        );
        assert_eq!(
            b.record(t + s(11), &c, CircuitVerdict::Success, Some(first)),
            None
        );
        assert!(matches!(
            b.check(t + s(11), &c).0,
            CircuitCheck::Blocked { .. }
        ));
    }

    #[test]
    fn a_probe_of_an_earlier_episode_reporting_late_frees_no_permit_of_this_one() {
        let c = config();
        let t = Instant::now();
        let mut b = opened(&c, t);
        b.check(t + s(5), &c);
        let old = b.take_probe(t + s(5));
        // The permit lapses at 10 s; a second probe fails and re-opens for 10 s.
        b.check(t + s(10), &c);
        let second = b.take_probe(t + s(10));
        b.record(t + s(10), &c, CircuitVerdict::Failure, Some(second));
        b.check(t + s(20), &c);
        let third = b.take_probe(t + s(20));
        assert_ne!(old, third);
        // The first probe finally answers: it neither closes the circuit nor frees the permit.
        assert_eq!(
            b.record(t + s(21), &c, CircuitVerdict::Success, Some(old)),
            None
        );
        assert!(matches!(
            b.check(t + s(21), &c).0,
            CircuitCheck::Blocked { .. }
        ));
    }

    #[test]
    fn an_attempt_admitted_before_the_circuit_opened_changes_nothing_when_it_ends() {
        let c = config();
        let t = Instant::now();
        let mut b = opened(&c, t);
        assert_eq!(attempt(&mut b, t + s(1), &c, CircuitVerdict::Success), None);
        assert_eq!(b.state(t + s(1)), CircuitState::Open);
    }
}
