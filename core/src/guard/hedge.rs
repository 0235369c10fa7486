//! Hedged requests; the whole story is on [`HedgingConfig`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The most hedges one call may send ([`HedgingConfig::max_hedges`]).
pub const MAX_HEDGES: u32 = 3;

/// Hedging settings: the `[hedging]` section of a [`Config`](crate::Config).
///
/// Hedged requests: for an idempotent call whose attempt has not answered after a delay, a
/// second attempt goes out beside it and the first acceptable answer wins (the "tail at scale"
/// remedy; Polly's hedging strategy, gRPC's A6 hedging policy, tower's `hedge`).
///
/// Off by default. The delay is fixed ([`HedgeAfter::Fixed`]) or a percentile of the recent
/// attempt latencies to the host ([`HedgeAfter::Percentile`]), which the core measures from the
/// times it is given into a small fixed ring per host ([`Latencies`], kept with the host's
/// other state in [`Guards`](super::Guards)): no clock, no allocation per call.
///
/// A hedge is an attempt like any other (numbered in sequence, same headers and idempotency
/// key), but it is only sent when all of this holds at the moment it is due: the call is
/// idempotent (RFC 9110 9.2.2 method, an idempotency key, or the caller's word), it has hedges
/// left ([`HedgingConfig::max_hedges`], 1 by default), the whole-call deadline has not passed,
/// the circuit is closed, the host is not held, the retry budget pays for it and the rate limiter
/// has a slot now (a hedge never waits for one). A hedge refused once ends hedging for the call.
///
/// ```
/// use std::time::Duration;
/// use egress_core::{Config, Request, http::Method};
/// use egress_core::{HedgeAfter, HedgingConfig};
/// use egress_core::test_util::{Scenario, hang, step};
///
/// let hedging = HedgingConfig::enabled(HedgeAfter::Fixed(Duration::from_millis(50)));
/// let policy = Config::default().with_hedging(hedging).build().unwrap();
/// let request = Request::new(Method::GET, "https://api.example.com/x").unwrap();
/// // The first attempt meets the slow replica; the hedge, sent at 50 ms, answers in 10 ms.
/// let run = Scenario::new(request, &policy)
///     .steps([step(200).after(Duration::from_secs(2)), step(200).after(Duration::from_millis(10))])
///     .run();
/// run.assert_timeline(&[
///     "0ms send #1",
///     "50ms send #2 (hedge)",
///     "60ms #2 -> 200",
///     "60ms #1 cancelled",
///     "60ms done ok 200 after 2",
/// ]);
/// ```
///
/// ```
/// use egress_core::Config;
/// use egress_core::{HedgeAfter, Percentile};
///
/// let config: Config = serde_json::from_str(
///     r#"{"hedging": {"enabled": true, "hedge_after": "p90", "max_hedges": 1}}"#,
/// ).unwrap();
/// assert_eq!(config.hedging.hedge_after, HedgeAfter::Percentile(Percentile::P90));
/// let fixed: Config = serde_json::from_str(r#"{"hedging": {"hedge_after": "150ms"}}"#).unwrap();
/// assert_eq!(fixed.hedging.hedge_after, HedgeAfter::Fixed(std::time::Duration::from_millis(150)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HedgingConfig {
    /// Whether idempotent calls are hedged (off by default; a request can turn it on or off for
    /// itself).
    pub enabled: bool,
    /// How long an attempt may go unanswered before a hedge is sent (default `p95`).
    pub hedge_after: HedgeAfter,
    /// The delay while the host has fewer than 16 measured attempts, for a
    /// percentile `hedge_after` (default 1 s).
    #[serde(with = "humantime_serde")]
    pub fallback: Duration,
    /// The most hedges per call, on top of the first attempt (default 1, at most
    /// [`MAX_HEDGES`]).
    pub max_hedges: u32,
}

impl Default for HedgingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            hedge_after: HedgeAfter::Percentile(Percentile::P95),
            fallback: Duration::from_secs(1),
            max_hedges: 1,
        }
    }
}

impl HedgingConfig {
    /// Hedging on, after `hedge_after`, one hedge per call.
    pub fn enabled(hedge_after: HedgeAfter) -> Self {
        Self {
            enabled: true,
            hedge_after,
            ..Self::default()
        }
    }

    /// Turns hedging on or off.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets when a hedge is sent.
    pub fn with_hedge_after(mut self, hedge_after: HedgeAfter) -> Self {
        self.hedge_after = hedge_after;
        self
    }

    /// Sets the delay used before the host has enough measured attempts.
    pub fn with_fallback(mut self, fallback: Duration) -> Self {
        self.fallback = fallback;
        self
    }

    /// Sets the most hedges per call.
    pub fn with_max_hedges(mut self, n: u32) -> Self {
        self.max_hedges = n;
        self
    }

    /// The field at fault and why, for [`Config::build`](crate::Config::build).
    pub(crate) fn problem(&self) -> Option<(&'static str, String)> {
        if self.max_hedges == 0 || self.max_hedges > MAX_HEDGES {
            return Some((
                "hedging.max_hedges",
                format!("must be between 1 and {MAX_HEDGES}"),
            ));
        }
        if let HedgeAfter::Fixed(d) = self.hedge_after {
            if d.is_zero() {
                return Some((
                    "hedging.hedge_after",
                    "must be greater than zero".to_owned(),
                ));
            }
        }
        if self.fallback.is_zero() {
            return Some(("hedging.fallback", "must be greater than zero".to_owned()));
        }
        None
    }

    /// The delay before a hedge, given the host's measured percentile (if it has enough).
    pub(crate) fn delay(&self, measured: impl FnOnce(Percentile) -> Option<Duration>) -> Duration {
        match self.hedge_after {
            HedgeAfter::Fixed(d) => d,
            HedgeAfter::Percentile(p) => measured(p).unwrap_or(self.fallback).max(MIN_DELAY),
        }
    }
}

/// The shortest hedge delay a percentile gives: a host answering in microseconds is not
/// hedged at once.
pub(crate) const MIN_DELAY: Duration = Duration::from_millis(1);

/// When a hedge is sent: written `"150ms"` (any humantime duration) or `"p90"`, `"p95"`, `"p99"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HedgeAfter {
    /// After this long.
    Fixed(Duration),
    /// After this percentile of the host's recent attempt latencies.
    Percentile(Percentile),
}

/// A latency percentile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Percentile {
    /// The 90th.
    P90,
    /// The 95th.
    P95,
    /// The 99th.
    P99,
}

impl Percentile {
    /// Its name: `p90`, `p95` or `p99`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P90 => "p90",
            Self::P95 => "p95",
            Self::P99 => "p99",
        }
    }

    /// The percentile as a whole number of hundredths.
    fn hundredths(self) -> usize {
        match self {
            Self::P90 => 90,
            Self::P95 => 95,
            Self::P99 => 99,
        }
    }
}

impl fmt::Display for HedgeAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(d) => write!(f, "{}", humantime_serde::re::humantime::format_duration(*d)),
            Self::Percentile(p) => f.write_str(p.as_str()),
        }
    }
}

/// Why a `hedge_after` value was not understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("hedge_after must be a duration such as \"150ms\" or one of p90, p95, p99: {0}")]
pub struct InvalidHedgeAfter(String);

impl FromStr for HedgeAfter {
    type Err = InvalidHedgeAfter;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "p90" => Ok(Self::Percentile(Percentile::P90)),
            "p95" => Ok(Self::Percentile(Percentile::P95)),
            "p99" => Ok(Self::Percentile(Percentile::P99)),
            other => humantime_serde::re::humantime::parse_duration(other)
                .map(Self::Fixed)
                .map_err(|e| InvalidHedgeAfter(e.to_string())),
        }
    }
}

impl Serialize for HedgeAfter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HedgeAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How many recent attempts a host's [`Latencies`] keeps.
pub(crate) const WINDOW: usize = 64;
/// How many measured attempts a percentile needs; fewer and the fallback delay is used.
pub(crate) const MIN_SAMPLES: usize = 16;

/// The latencies of a host's most recent attempts (up to 64), in a fixed ring: recording
/// one never allocates, and a percentile sorts a copy on the stack.
#[derive(Clone, Debug)]
pub struct Latencies {
    /// Microseconds, saturating at `u32::MAX` (over an hour).
    ring: [u32; WINDOW],
    len: usize,
    next: usize,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            ring: [0; WINDOW],
            len: 0,
            next: 0,
        }
    }
}

impl Latencies {
    /// Records one attempt's latency, replacing the oldest once the ring is full.
    pub fn record(&mut self, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.ring[self.next] = micros;
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
    }

    /// How many latencies are kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The nearest-rank percentile `p` of the kept latencies, once there are 16.
    pub fn percentile(&self, p: Percentile) -> Option<Duration> {
        if self.len < MIN_SAMPLES {
            return None;
        }
        let mut sorted = self.ring;
        let kept = &mut sorted[..self.len];
        kept.sort_unstable();
        // Nearest rank: the smallest value with at least p % of the values at or below it.
        let rank = (self.len * p.hundredths()).div_ceil(100).max(1);
        Some(Duration::from_micros(u64::from(kept[rank - 1])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_percentile_needs_enough_samples_and_uses_the_nearest_rank() {
        let mut l = Latencies::default();
        for i in 1..MIN_SAMPLES as u64 {
            l.record(ms(i));
        }
        assert_eq!(l.percentile(Percentile::P90), None);
        l.record(ms(MIN_SAMPLES as u64));
        // 1..=16 ms: rank ceil(16 * 0.9) = 15.
        assert_eq!(l.percentile(Percentile::P90), Some(ms(15)));
        assert_eq!(l.percentile(Percentile::P99), Some(ms(16)));
    }

    #[test]
    fn the_ring_forgets_the_oldest_latencies() {
        let mut l = Latencies::default();
        for _ in 0..WINDOW {
            l.record(ms(1000));
        }
        for _ in 0..WINDOW {
            l.record(ms(10));
        }
        assert_eq!(l.len(), WINDOW);
        assert_eq!(l.percentile(Percentile::P99), Some(ms(10)));
    }

    #[test]
    fn one_slow_attempt_in_ten_sets_the_p95_but_not_the_p90() {
        let mut l = Latencies::default();
        for i in 0..60 {
            l.record(if i % 10 == 9 { ms(500) } else { ms(20) });
        }
        assert_eq!(l.percentile(Percentile::P90), Some(ms(20)));
        assert_eq!(l.percentile(Percentile::P95), Some(ms(500)));
    }

    #[test]
    fn hedge_after_reads_durations_and_percentiles_and_rejects_the_rest() {
        assert_eq!("p99".parse(), Ok(HedgeAfter::Percentile(Percentile::P99)));
        assert_eq!("250ms".parse(), Ok(HedgeAfter::Fixed(ms(250))));
        assert!("p50".parse::<HedgeAfter>().is_err());
        assert!("soon".parse::<HedgeAfter>().is_err());
        assert_eq!(HedgeAfter::Fixed(ms(250)).to_string(), "250ms");
    }

    #[test]
    fn a_config_without_hedges_or_with_too_many_is_refused() {
        let c = HedgingConfig::default().with_max_hedges(0);
        assert_eq!(c.problem().map(|p| p.0), Some("hedging.max_hedges"));
        let c = HedgingConfig::default().with_max_hedges(MAX_HEDGES + 1);
        assert_eq!(c.problem().map(|p| p.0), Some("hedging.max_hedges"));
        let c = HedgingConfig::enabled(HedgeAfter::Fixed(Duration::ZERO));
        assert_eq!(c.problem().map(|p| p.0), Some("hedging.hedge_after"));
        assert_eq!(HedgingConfig::default().problem(), None);
    }
}
