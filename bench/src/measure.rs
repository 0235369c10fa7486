//! What the benchmark measures with the operating system: CPU time and peak RSS through
//! `getrusage`, and core pinning through `sched_setaffinity`.

use std::time::Duration;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::resource::{UsageWho, getrusage};
use nix::unistd::Pid;

/// CPU time (user and system) and peak resident set of a process or a thread.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    /// User CPU time.
    pub(crate) user: Duration,
    /// System CPU time.
    pub(crate) sys: Duration,
    /// Peak resident set size in KiB (for a thread: the process's).
    pub(crate) max_rss_kib: i64,
}

impl Usage {
    /// User plus system time.
    pub(crate) fn cpu(&self) -> Duration {
        self.user + self.sys
    }

    /// The CPU time spent since `earlier`.
    pub(crate) fn since(&self, earlier: &Usage) -> (Duration, Duration) {
        (
            self.user.saturating_sub(earlier.user),
            self.sys.saturating_sub(earlier.sys),
        )
    }
}

fn usage(who: UsageWho) -> Usage {
    match getrusage(who) {
        Ok(u) => {
            let d = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            Usage {
                user: d(u.user_time()),
                sys: d(u.system_time()),
                max_rss_kib: u.max_rss(),
            }
        }
        Err(_) => Usage::default(),
    }
}

/// The whole calling process: every thread, the ones that ended included.
pub(crate) fn process() -> Usage {
    usage(UsageWho::RUSAGE_SELF)
}

/// The calling thread only.
pub(crate) fn thread() -> Usage {
    usage(UsageWho::RUSAGE_THREAD)
}

/// The cores this process may run on.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to `core`; threads it starts afterwards inherit the pinning.
/// Returns whether it worked.
pub(crate) fn pin_to(core: usize) -> bool {
    let mut set = CpuSet::new();
    set.set(core).is_ok() && sched_setaffinity(Pid::from_raw(0), &set).is_ok()
}

/// The `p`-th percentile (0..=100) of sorted samples, nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
