//! The retry budget: retries earn on successful attempts, up to a fixed share of them over a
//! sliding window, plus a small reserve so that a cold client can still retry. Shared by every
//! exchange of a client and kept per host, so one failing upstream cannot spend another's budget.
//!
//! The arithmetic, with the defaults (window 10 s, ratio 0.2, reserve 10 retries/s): over the last
//! 10 s a host may see at most `10 * 10 + 0.2 * successes` retries, where a success is an attempt
//! the upstream answered without a transient failure (AWS's token bucket and gRPC's retry
//! throttling earn the same way). During a full outage nothing succeeds, so 1000 calls get the
//! reserve's 100 retries and the server sees 1.10 requests per call instead of 3; an upstream
//! failing one attempt in ten earns 0.2 * 900 = 180 retries per 1000 calls, more than the ~111 it
//! needs. Time enters as data (`now` on every call), so the budget is as deterministic as the rest
//! of the core.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Retry budget settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// Whether retries are limited by the budget at all.
    pub enabled: bool,
    /// The sliding window over which requests and retries are counted.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Retries earned per successful attempt in the window (0.2 = at most 20 % extra load).
    pub retry_ratio: f64,
    /// The reserve: retries allowed per second of window without any success.
    pub min_retries_per_sec: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            retry_ratio: 0.2,
            min_retries_per_sec: 10,
        }
    }
}

impl BudgetConfig {
    /// Turns the budget on or off.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the window.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets the retries earned per successful attempt.
    pub fn with_retry_ratio(mut self, ratio: f64) -> Self {
        self.retry_ratio = ratio;
        self
    }

    /// Sets the reserve, in retries per second of window.
    pub fn with_min_retries_per_sec(mut self, n: u32) -> Self {
        self.min_retries_per_sec = n;
        self
    }
}

/// How many slots the window is cut into: the window slides in steps of `window / SLOTS`.
const SLOTS: usize = 10;
/// Hosts idle for longer than a window are forgotten once the map holds this many.
const MAX_HOSTS: usize = 256;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    index: u64,
    successes: u64,
    retries: u64,
}

#[derive(Debug)]
struct HostWindow {
    epoch: Instant,
    last_seen: Instant,
    slots: [Slot; SLOTS],
}

impl HostWindow {
    fn new(now: Instant) -> Self {
        Self {
            epoch: now,
            last_seen: now,
            slots: [Slot::default(); SLOTS],
        }
    }

    fn index(&self, now: Instant, width: Duration) -> u64 {
        // In u64 nanoseconds (584 years; longer saturates): a u128 division is a library call,
        // and this runs on every call.
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        nanos(now.saturating_duration_since(self.epoch)) / nanos(width).max(1)
    }

    /// Concurrent exchanges report times slightly out of order; the window never moves back, so
    /// a late report counts in the newest slot and sees the whole window.
    fn clamp(&mut self, now: Instant) -> Instant {
        self.last_seen = self.last_seen.max(now);
        self.last_seen
    }

    fn slot(&mut self, now: Instant, width: Duration) -> &mut Slot {
        let now = self.clamp(now);
        let index = self.index(now, width);
        let slot = &mut self.slots[(index % SLOTS as u64) as usize];
        if slot.index < index || (slot.index == 0 && slot.successes == 0 && slot.retries == 0) {
            *slot = Slot {
                index,
                successes: 0,
                retries: 0,
            };
        }
        slot
    }

    fn totals(&mut self, now: Instant, width: Duration) -> (u64, u64) {
        let now = self.clamp(now);
        let current = self.index(now, width);
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        self.slots
            .iter()
            .filter(|s| s.index >= oldest && s.index <= current)
            .fold((0, 0), |(r, t), s| (r + s.successes, t + s.retries))
    }
}

/// The shared retry budget of one client. Cheap to share behind an `Arc`; every method takes the
/// current time as data.
#[derive(Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    /// Keyed by host with foldhash rather than SipHash: a short host name is hashed on every
    /// call, the keys come from the service's own configuration, the map stays small (idle
    /// hosts are dropped past `MAX_HOSTS`), and foldhash's per-process seed still varies the
    /// layout.
    hosts: Mutex<HashMap<String, HostWindow, foldhash::fast::RandomState>>,
}

impl RetryBudget {
    /// A budget with the given settings.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            hosts: Mutex::new(HashMap::default()),
        }
    }

    fn width(&self) -> Duration {
        self.config.window / SLOTS as u32
    }

    fn with_host<R>(&self, host: &str, now: Instant, f: impl FnOnce(&mut HostWindow) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of plain counters; the
        // counters are still usable, so keep going rather than spreading the panic.
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(host) {
            let window = self.config.window;
            hosts.retain(|_, w| now.saturating_duration_since(w.last_seen) < window);
        }
        // Look the host up before inserting it: `entry` would need an owned key on every call.
        if let Some(window) = hosts.get_mut(host) {
            return f(window);
        }
        let window = hosts
            .entry(host.to_owned())
            .or_insert_with(|| HostWindow::new(now));
        f(window)
    }

    /// Records a successful attempt to `host` at `now`: one the upstream answered without a
    /// transient failure. It earns `retry_ratio` retries for the window.
    pub fn record_success(&self, host: &str, now: Instant) {
        if !self.config.enabled {
            return;
        }
        let width = self.width();
        self.with_host(host, now, |w| w.slot(now, width).successes += 1);
    }

    /// The successful attempts and the retries to `host` counted in the window ending at `now`
    /// (for observability and tests).
    pub fn usage(&self, host: &str, now: Instant) -> (u64, u64) {
        let width = self.width();
        self.with_host(host, now, |w| w.totals(now, width))
    }

    /// Asks for one retry to `host` at `now`; records it and returns `true` when allowed.
    pub fn try_retry(&self, host: &str, now: Instant) -> bool {
        if !self.config.enabled {
            return true;
        }
        let width = self.width();
        // Retries the reserve allows per window: rate * window, rounded down (0.4 s * 1/s = 0).
        let floor =
            (f64::from(self.config.min_retries_per_sec) * self.config.window.as_secs_f64()) as u64;
        let ratio = self.config.retry_ratio;
        self.with_host(host, now, |w| {
            let (successes, retries) = w.totals(now, width);
            // Allowed retries in the window: reserve + ratio * successes (rounded down).
            let allowed = floor.saturating_add((ratio * successes as f64) as u64);
            if retries < allowed {
                w.slot(now, width).retries += 1;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(floor: u32) -> RetryBudget {
        RetryBudget::new(BudgetConfig::default().with_min_retries_per_sec(floor))
    }

    #[test]
    fn with_no_reserve_one_retry_is_earned_per_five_successes() {
        let b = budget(0);
        let t = Instant::now();
        // 10 successes * 0.2 = 2 retries.
        for _ in 0..10 {
            b.record_success("h", t);
        }
        assert!(b.try_retry("h", t));
        assert!(b.try_retry("h", t));
        assert!(!b.try_retry("h", t));
    }

    #[test]
    fn the_reserve_allows_ten_retries_per_second_of_window_without_any_success() {
        let b = budget(10);
        let t = Instant::now();
        // 10 retries/s * 10 s = 100 retries, then refusal.
        assert_eq!((0..150).filter(|_| b.try_retry("h", t)).count(), 100);
    }

    #[test]
    fn the_budget_recovers_once_the_window_has_slid_past() {
        let b = budget(1);
        let t = Instant::now();
        // Floor 1/s * 10 s = 10 retries at t.
        assert_eq!((0..20).filter(|_| b.try_retry("h", t)).count(), 10);
        // 9.9 s later the retries at t are still in the window (slots of 1 s: t is slot 0, 9.9 s is slot 9).
        assert!(!b.try_retry("h", t + Duration::from_millis(9_900)));
        // 10 s later slot 0 has left the window.
        assert!(b.try_retry("h", t + Duration::from_secs(10)));
    }

    #[test]
    fn a_full_outage_of_a_thousand_calls_gets_only_the_reserve() {
        // Nothing succeeds: 1000 calls wanting 2 retries each get 10/s * 10 s = 100 retries,
        // 1100 requests for 1000 calls (1.10 per call).
        let b = budget(10);
        let t = Instant::now();
        let granted = (0..2000).filter(|_| b.try_retry("h", t)).count();
        assert_eq!(granted, 100);
    }

    #[test]
    fn an_upstream_failing_one_attempt_in_ten_earns_more_retries_than_it_needs() {
        // 1000 calls, 900 first attempts succeed (earning 0.2 * 900 = 180) and 100 fail; with
        // no reserve at all, every one of the 100 retries is still granted.
        let b = budget(0);
        let t = Instant::now();
        for _ in 0..900 {
            b.record_success("h", t);
        }
        assert_eq!((0..100).filter(|_| b.try_retry("h", t)).count(), 100);
        assert_eq!(b.usage("h", t), (900, 100));
    }

    #[test]
    fn hosts_have_separate_budgets() {
        let b = budget(0);
        let t = Instant::now();
        for _ in 0..5 {
            b.record_success("a", t);
        }
        // 5 successes * 0.2 = 1 retry for a, none for b.
        assert!(!b.try_retry("b", t));
        assert!(b.try_retry("a", t));
        assert!(!b.try_retry("a", t));
    }

    #[test]
    fn a_disabled_budget_allows_every_retry() {
        let b = RetryBudget::new(
            BudgetConfig::default()
                .with_enabled(false)
                .with_min_retries_per_sec(0),
        );
        let t = Instant::now();
        assert!((0..1000).all(|_| b.try_retry("h", t)));
    }

    #[test]
    fn a_late_report_from_a_concurrent_exchange_still_sees_the_whole_window() {
        let b = budget(0);
        let t = Instant::now();
        // 10 successes in slot 0 earn 2 retries (10 * 0.2), both spent at 1.5 s (slot 1).
        for _ in 0..10 {
            b.record_success("h", t);
        }
        assert!(b.try_retry("h", t + Duration::from_millis(1_500)));
        assert!(b.try_retry("h", t + Duration::from_millis(1_500)));
        // An exchange whose input time is older (slot 0) must still see the spent retries.
        assert!(!b.try_retry("h", t + Duration::from_millis(900)));
    }

    #[test]
    fn time_running_backwards_counts_in_the_current_slot_instead_of_panicking() {
        let b = budget(0);
        let t = Instant::now() + Duration::from_secs(100);
        for _ in 0..5 {
            b.record_success("h", t);
        }
        assert!(b.try_retry("h", t - Duration::from_secs(50)));
    }
}
