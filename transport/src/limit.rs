//! Per-phase limits of one attempt, enforced with the runtime's sleeps.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use egress_core::rt::AttemptDeadlines;

use crate::rt::Runtime;

/// A limit on one phase of an attempt, as [`within`] applies it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Limit {
    /// The phase cannot end after the attempt deadline, which the driver enforces: no timer.
    Never,
    /// The phase ends by this instant.
    At(Instant),
    /// `limit` from each start, when that is before the attempt deadline.
    After(Duration, AttemptDeadlines),
}

impl Limit {
    /// `limit` from each start of a phase, the first at `now`.
    pub(crate) fn idle(limit: Duration, now: Instant, deadlines: AttemptDeadlines) -> Self {
        match deadlines.phase_end(now, limit) {
            Some(_) => Limit::After(limit, deadlines),
            None => Limit::Never,
        }
    }

    /// A phase that must end by `at` (the core already capped it at the attempt deadline).
    pub(crate) fn by(at: Instant, deadlines: AttemptDeadlines) -> Self {
        if at < deadlines.attempt {
            Limit::At(at)
        } else {
            Limit::Never
        }
    }

    fn end(self, runtime: &dyn Runtime) -> Option<Instant> {
        match self {
            Limit::Never => None,
            Limit::At(at) => Some(at),
            Limit::After(limit, deadlines) => deadlines.phase_end(runtime.now(), limit),
        }
    }
}

/// Awaits `future` for at most `limit`: `None` when the limit passed first.
///
/// A limit that does not end before the attempt deadline gets no timer: the driver's own
/// timer ends the attempt first.
pub(crate) async fn within<F: Future>(
    runtime: &dyn Runtime,
    limit: Limit,
    future: F,
) -> Option<F::Output> {
    match limit.end(runtime) {
        None => Some(future.await),
        Some(at) => {
            let mut future = pin!(future);
            let mut sleep = runtime.sleep_until(at);
            poll_fn(|cx| {
                if let Poll::Ready(output) = future.as_mut().poll(cx) {
                    return Poll::Ready(Some(output));
                }
                sleep.as_mut().poll(cx).map(|()| None)
            })
            .await
        }
    }
}
