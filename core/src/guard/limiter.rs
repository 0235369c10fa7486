//! The client-side rate limit: [`Gcra`].

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A rate: `count` requests per `period`, written `"50/s"`, `"600/min"`, `"5000/h"` or
/// `"10/250ms"`.
///
/// ```
/// use std::time::Duration;
/// use egress_core::Rate;
/// let rate: Rate = "50/s".parse().unwrap();
/// assert_eq!(rate.interval(), Duration::from_millis(20));
/// assert!("50".parse::<Rate>().is_err());
/// assert!("0/s".parse::<Rate>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    period: Duration,
}

/// Why a rate was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate {0:?}: expected COUNT/PERIOD, such as 50/s, 600/min or 10/250ms")]
pub struct InvalidRate(String);

impl Rate {
    /// `count` requests per `period`; `None` when either is zero or the interval would be
    /// shorter than a nanosecond.
    pub fn new(count: u32, period: Duration) -> Option<Self> {
        let rate = Self { count, period };
        (count > 0 && !rate.interval().is_zero()).then_some(rate)
    }

    /// Requests per period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The emission interval: one request per this long.
    pub fn interval(&self) -> Duration {
        self.period / self.count.max(1)
    }
}

impl FromStr for Rate {
    type Err = InvalidRate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidRate(s.to_owned());
        let (count, period) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = match period.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => humantime_serde::re::humantime::parse_duration(other).map_err(|_| bad())?,
        };
        Self::new(count, period).ok_or_else(bad)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period.as_secs() {
            1 if self.period.subsec_nanos() == 0 => write!(f, "{}/s", self.count),
            60 if self.period.subsec_nanos() == 0 => write!(f, "{}/min", self.count),
            3600 if self.period.subsec_nanos() == 0 => write!(f, "{}/h", self.count),
            _ => write!(
                f,
                "{}/{}",
                self.count,
                humantime_serde::re::humantime::format_duration(self.period)
            ),
        }
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rate({self})")
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Client-side rate limit settings: off by default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// Whether calls are limited at all.
    pub enabled: bool,
    /// The sustained rate, such as `"50/s"`.
    pub rate: Rate,
    /// How many requests may go at once on top of the rate.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            rate: Rate {
                count: 50,
                period: Duration::from_secs(1),
            },
            burst: 10,
        }
    }
}

impl RateLimitConfig {
    /// A limit of `rate` with `burst`, switched on.
    pub fn new(rate: Rate, burst: u32) -> Self {
        Self {
            enabled: true,
            rate,
            burst,
        }
    }

    /// Turns the limit on or off.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the rate.
    pub fn with_rate(mut self, rate: Rate) -> Self {
        self.rate = rate;
        self
    }

    /// Sets the burst.
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }
}

/// GCRA over one `tat`.
///
/// The client-side rate limit of one host (or vendor key): GCRA, the generic cell rate
/// algorithm, with the semantics of the `governor` crate.
///
/// A rate of `n` per `period` gives an emission interval `T = period / n`; a burst of `b` gives
/// a tolerance `tau = (b - 1) * T` (governor's `Gcra::new`). The state is one instant, the theoretical arrival time `tat`. A
/// request at `now` conforms when `now >= tat - tau`, and then `tat = max(tat, now) + T`. So a
/// fresh limiter lets `b` requests through at once, then one per `T`, and over any window of
/// length `w` at most `b + w / T` requests conform.
///
/// A call that does not conform yet may reserve the first instant at which it will
/// ([`Gcra::reserve`]): the limiter moves on as if it had arrived then, so waiting calls get
/// distinct slots instead of racing for the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    interval: Duration,
    tolerance: Duration,
}

impl Gcra {
    /// The algorithm for `config` (a burst of 0 counts as 1).
    pub fn new(config: &RateLimitConfig) -> Self {
        let interval = config.rate.interval();
        Self {
            interval,
            tolerance: interval.saturating_mul(config.burst.max(1) - 1),
        }
    }

    /// The algorithm with emission interval `interval` and tolerance `tolerance` (as a
    /// coordinator receives them in a [`SlotAsk`](super::fleet::SlotAsk)).
    pub fn from_parts(interval: Duration, tolerance: Duration) -> Self {
        Self {
            interval,
            tolerance,
        }
    }

    /// The emission interval `T`.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The tolerance `tau = (burst - 1) * T`.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Asks for one request at `now` with state `tat` (`None` for a limiter never used).
    ///
    /// - `Ok(now)`: it conforms now; `tat` moved on.
    /// - `Ok(slot)` with `slot > now`: it will conform at `slot`, which is before `latest`; the
    ///   slot is reserved (`tat` moved on) and the call must send at `slot`.
    /// - `Err(slot)`: its slot is at or after `latest`; nothing was reserved.
    pub fn reserve(
        &self,
        tat: &mut Option<Instant>,
        now: Instant,
        latest: Instant,
    ) -> Result<Instant, Instant> {
        let current = tat.unwrap_or(now);
        let earliest = current.checked_sub(self.tolerance).unwrap_or(now);
        let slot = earliest.max(now);
        if slot > now && slot >= latest {
            return Err(slot);
        }
        let base = current.max(slot);
        *tat = Some(base.checked_add(self.interval).unwrap_or(base));
        Ok(slot)
    }

    /// Reserves up to `count` slots at `now` for a fleet's lease: the first as
    /// [`reserve`](Self::reserve) does (before `latest`), each further one only while it also
    /// lies less than `count` emission intervals from `now`. A lease never reaches further
    /// ahead than its own size at the rate: while the quota has room it is `count` slots, under
    /// a saturated quota it shrinks to the caller's own slot, and concurrent leases of one
    /// replica cannot hoard the fleet's quota (16 callers leasing 16 at once at 200/s, burst 20, hold
    /// 48 slots, not 256, more than a second of the quota). Returns the slots, ascending, and the
    /// first one refused when fewer than `count` were reserved.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use egress_core::Gcra;
    /// let ms = Duration::from_millis;
    /// let gcra = Gcra::from_parts(ms(10), Duration::ZERO); // 100/s, burst 1
    /// let (now, mut tat) = (Instant::now(), None);
    /// let (slots, next) = gcra.lease(&mut tat, now, 4, now + ms(1000));
    /// assert_eq!(slots, [now, now + ms(10), now + ms(20), now + ms(30)]);
    /// assert_eq!(next, None);
    /// // 40 ms of the quota is taken: the next lease gets its own slot and no more.
    /// let (slots, next) = gcra.lease(&mut tat, now, 4, now + ms(1000));
    /// assert_eq!((slots, next), (vec![now + ms(40)], Some(now + ms(50))));
    /// ```
    pub fn lease(
        &self,
        tat: &mut Option<Instant>,
        now: Instant,
        count: u32,
        latest: Instant,
    ) -> (Vec<Instant>, Option<Instant>) {
        let horizon = now
            .checked_add(self.interval.saturating_mul(count))
            .unwrap_or(latest)
            .min(latest);
        let mut slots = Vec::with_capacity(count.min(64) as usize);
        for i in 0..count {
            let before = if i == 0 { latest } else { horizon };
            match self.reserve(tat, now, before) {
                Ok(slot) => slots.push(slot),
                Err(slot) => return (slots, Some(slot)),
            }
        }
        (slots, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rates_parse_from_count_and_period() {
        let r = |s: &str| s.parse::<Rate>().map(|r| r.interval());
        assert_eq!(r("50/s"), Ok(ms(20)));
        assert_eq!(r("600/min"), Ok(ms(100)));
        assert_eq!(r("3600/h"), Ok(ms(1000)));
        assert_eq!(r(" 10 / 250ms "), Ok(ms(25)));
        for bad in ["", "50", "/s", "x/s", "0/s", "5/0s", "5/fortnight", "-1/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!("50/s".parse::<Rate>().unwrap().to_string(), "50/s");
        assert_eq!("10/250ms".parse::<Rate>().unwrap().to_string(), "10/250ms");
    }

    #[test]
    fn a_fresh_limiter_lets_the_burst_through_then_one_per_interval() {
        // 50/s with burst 10: T = 20 ms, tau = 200 ms.
        let gcra = Gcra::new(&RateLimitConfig::new("50/s".parse().unwrap(), 10));
        let t = Instant::now();
        let far = t + Duration::from_secs(60);
        let mut tat = None;
        for _ in 0..10 {
            assert_eq!(gcra.reserve(&mut tat, t, far), Ok(t));
        }
        // tat = t + 200 ms, tau = 180 ms: the 11th conforms at t + 20 ms, the 12th at t + 40 ms.
        assert_eq!(gcra.reserve(&mut tat, t, far), Ok(t + ms(20)));
        assert_eq!(gcra.reserve(&mut tat, t, far), Ok(t + ms(40)));
    }

    #[test]
    fn a_slot_at_or_past_the_deadline_is_refused_and_not_reserved() {
        let gcra = Gcra::new(&RateLimitConfig::new("1/s".parse().unwrap(), 1));
        let t = Instant::now();
        let mut tat = None;
        assert_eq!(gcra.reserve(&mut tat, t, t + ms(500)), Ok(t));
        assert_eq!(gcra.reserve(&mut tat, t, t + ms(500)), Err(t + ms(1000)));
        // Nothing was reserved: a call with a later deadline still gets the slot at 1 s.
        assert_eq!(gcra.reserve(&mut tat, t, t + ms(5000)), Ok(t + ms(1000)));
    }

    #[test]
    fn an_idle_limiter_refills_to_its_burst_and_no_further() {
        let gcra = Gcra::new(&RateLimitConfig::new("10/s".parse().unwrap(), 3));
        let t = Instant::now();
        let far = t + Duration::from_secs(600);
        let mut tat = None;
        gcra.reserve(&mut tat, t, far).unwrap();
        // An hour later: 3 at once, the 4th 100 ms later.
        let later = t + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(
                gcra.reserve(&mut tat, later, far + Duration::from_secs(3600)),
                Ok(later)
            );
        }
        assert_eq!(
            gcra.reserve(&mut tat, later, far + Duration::from_secs(3600)),
            Ok(later + ms(100))
        );
    }
}
