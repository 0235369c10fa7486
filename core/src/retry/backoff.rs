//! The backoff delay as a pure function of the retry number, the policy and one random value.
//! Saturates instead of overflowing, and never exceeds the cap.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the exponential delay is randomised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JitterMode {
    /// The exponential delay itself: `min(cap, initial * 2^(n-1))`.
    None,
    /// Uniform in `[0, exp]` (AWS "full jitter"; the default).
    Full,
    /// `exp / 2` plus uniform in `[0, exp / 2]`.
    Equal,
    /// Uniform in `[initial, 3 * previous]`, capped (AWS "decorrelated jitter").
    Decorrelated,
}

/// Backoff settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Backoff {
    /// How the delay is randomised.
    pub jitter: JitterMode,
    /// The delay before the first retry, before jitter.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// The cap on any delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            jitter: JitterMode::Full,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// Sets the jitter mode.
    pub fn with_jitter(mut self, jitter: JitterMode) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the initial delay.
    pub fn with_initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets the cap.
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The un-jittered delay before retry `retry` (1 for the first retry):
    /// `min(max, initial * 2^(retry - 1))`, saturating.
    pub fn exponential(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(63);
        let factor = 1u128 << shift;
        let nanos = self.initial.as_nanos().saturating_mul(factor);
        from_nanos(nanos).min(self.max)
    }

    /// The delay before retry `retry` (1 for the first retry), given the previous delay (for
    /// decorrelated jitter; pass `Duration::ZERO` before the first retry) and one random value.
    /// Always within `[0, max]`.
    pub fn delay(&self, retry: u32, previous: Duration, random: u64) -> Duration {
        let exp = self.exponential(retry);
        let d = match self.jitter {
            JitterMode::None => exp,
            JitterMode::Full => scale(exp, random),
            JitterMode::Equal => {
                let half = exp / 2;
                half.saturating_add(scale(exp - half, random))
            }
            JitterMode::Decorrelated => {
                let previous = previous.max(self.initial);
                let top = previous.saturating_mul(3);
                let span = top.saturating_sub(self.initial);
                self.initial.saturating_add(scale(span, random))
            }
        };
        d.min(self.max)
    }
}

/// `d * random / 2^64`, in integer nanoseconds: uniform over `[0, d]` as `random` spans `u64`.
fn scale(d: Duration, random: u64) -> Duration {
    let nanos = (d.as_nanos().saturating_mul(u128::from(random))) >> 64;
    // `random == u64::MAX` maps to `d` itself, so `NoJitter` gives the top of the range.
    if random == u64::MAX {
        d
    } else {
        from_nanos(nanos)
    }
}

fn from_nanos(nanos: u128) -> Duration {
    let secs = nanos / 1_000_000_000;
    if secs > u128::from(u64::MAX) {
        return Duration::MAX;
    }
    Duration::new(secs as u64, (nanos % 1_000_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(jitter: JitterMode) -> Backoff {
        Backoff {
            jitter,
            initial: ms(100),
            max: ms(10_000),
        }
    }

    #[test]
    fn exponential_doubles_from_the_initial_delay_until_the_cap() {
        let b = policy(JitterMode::None);
        // 100 ms * 2^(n-1): 100, 200, 400, 800, ..., 100 * 2^6 = 6400, 100 * 2^7 = 12800 -> 10000.
        assert_eq!(b.delay(1, Duration::ZERO, 0), ms(100));
        assert_eq!(b.delay(2, Duration::ZERO, 0), ms(200));
        assert_eq!(b.delay(3, Duration::ZERO, 0), ms(400));
        assert_eq!(b.delay(7, Duration::ZERO, 0), ms(6_400));
        assert_eq!(b.delay(8, Duration::ZERO, 0), ms(10_000));
    }

    #[test]
    fn huge_retry_numbers_saturate_at_the_cap_instead_of_overflowing() {
        let b = Backoff {
            jitter: JitterMode::None,
            initial: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(b.delay(u32::MAX, Duration::MAX, u64::MAX), Duration::MAX);
        assert_eq!(
            policy(JitterMode::None).delay(u32::MAX, Duration::ZERO, 0),
            ms(10_000)
        );
        assert_eq!(
            policy(JitterMode::None).delay(0, Duration::ZERO, 0),
            ms(100)
        );
    }

    #[test]
    fn full_jitter_spans_zero_to_the_exponential_delay() {
        let b = policy(JitterMode::Full);
        // Retry 3: exp = 400 ms. random = 0 -> 0; random = 2^63 -> 400 * 1/2 = 200 ms; MAX -> 400 ms.
        assert_eq!(b.delay(3, Duration::ZERO, 0), Duration::ZERO);
        assert_eq!(b.delay(3, Duration::ZERO, 1 << 63), ms(200));
        assert_eq!(b.delay(3, Duration::ZERO, u64::MAX), ms(400));
    }

    #[test]
    fn equal_jitter_keeps_at_least_half_of_the_exponential_delay() {
        let b = policy(JitterMode::Equal);
        // Retry 2: exp = 200 ms: 100 ms + [0, 100] ms. random = 2^63 -> 100 + 50 = 150 ms.
        assert_eq!(b.delay(2, Duration::ZERO, 0), ms(100));
        assert_eq!(b.delay(2, Duration::ZERO, 1 << 63), ms(150));
        assert_eq!(b.delay(2, Duration::ZERO, u64::MAX), ms(200));
    }

    #[test]
    fn decorrelated_jitter_draws_between_the_initial_and_three_times_the_previous_delay() {
        let b = policy(JitterMode::Decorrelated);
        // previous = 1000 ms: range [100, 3000]; random = 2^63 -> 100 + 2900 / 2 = 1550 ms.
        assert_eq!(b.delay(5, ms(1_000), 0), ms(100));
        assert_eq!(b.delay(5, ms(1_000), 1 << 63), ms(1_550));
        assert_eq!(b.delay(5, ms(1_000), u64::MAX), ms(3_000));
        // previous = 5000 ms: top 15000 ms is capped to 10000 ms.
        assert_eq!(b.delay(5, ms(5_000), u64::MAX), ms(10_000));
        // Before the first retry the previous delay counts as the initial one: [100, 300].
        assert_eq!(b.delay(1, Duration::ZERO, u64::MAX), ms(300));
    }
}
