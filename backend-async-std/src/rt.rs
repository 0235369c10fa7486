//! The async-std runtime pieces: clock, sleeper, entropy and the correlation scope.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::time::Instant;

use egress_core::CorrelationId;
use egress_core::rt::BoxFuture;
pub use egress_entropy::{OsEntropy, ThreadEntropy};

thread_local! {
    /// The correlation ID of the scope being polled on this thread, if any.
    static CORRELATION_ID: RefCell<Option<CorrelationId>> = const { RefCell::new(None) };
}

/// Puts `id` in the thread-local for as long as it lives, then restores what was there (also
/// when the poll panics), so that scopes nest.
struct Entered {
    previous: Option<CorrelationId>,
}

impl Entered {
    fn new(id: &CorrelationId) -> Self {
        let previous = CORRELATION_ID.with(|cell| cell.replace(Some(id.clone())));
        Self { previous }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CORRELATION_ID.with(|cell| *cell.borrow_mut() = previous);
    }
}

/// Runs `future` with `id` as the ambient correlation ID: every call made inside it without its
/// own ID carries this one. Typically set by an inbound-request middleware.
///
/// The ID is set in a thread-local around each poll of `future` and restored after it, so it
/// follows the future across the threads of async-std's executor (and works on any other
/// executor). Tasks spawned inside the scope do not inherit it: wrap them too.
///
/// ```
/// # async_std::task::block_on(async {
/// use egress_async_std::{current_correlation_id, with_correlation_id};
/// use egress_async_std::egress_core::CorrelationId;
/// let id = CorrelationId::new("req-42").unwrap();
/// let seen = with_correlation_id(id.clone(), async { current_correlation_id() }).await;
/// assert_eq!(seen, Some(id));
/// assert_eq!(current_correlation_id(), None);
/// # });
/// ```
pub async fn with_correlation_id<F: Future>(id: CorrelationId, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    poll_fn(|cx| {
        let _entered = Entered::new(&id);
        future.as_mut().poll(cx)
    })
    .await
}

/// The ambient correlation ID of the scope being polled, if inside [`with_correlation_id`].
pub fn current_correlation_id() -> Option<CorrelationId> {
    CORRELATION_ID.with(|cell| cell.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore_the_outer_id() {
        let outer = CorrelationId::new("outer").unwrap();
        let inner = CorrelationId::new("inner").unwrap();
        let seen = async_std::task::block_on(with_correlation_id(outer.clone(), async {
            let before = current_correlation_id();
            let nested = with_correlation_id(inner.clone(), async {
                async_std::task::yield_now().await;
                current_correlation_id()
            })
            .await;
            let after = current_correlation_id();
            (before, nested, after)
        }));
        assert_eq!(seen, (Some(outer.clone()), Some(inner), Some(outer)));
        assert_eq!(current_correlation_id(), None);
    }

    #[test]
    fn a_sleep_ends_at_its_instant_and_not_before_and_a_past_instant_ends_at_once() {
        use egress_transport::Runtime;
        // Slack for a loaded 2-core machine: a wait may end this much later, never earlier.
        const LATE: std::time::Duration = std::time::Duration::from_millis(750);
        let wait = std::time::Duration::from_millis(50);
        async_std::task::block_on(async {
            let started = Instant::now();
            AsyncStdRuntime.sleep_until(started + wait).await;
            let slept = started.elapsed();
            assert!(slept >= wait && slept < wait + LATE, "{slept:?}");
            let again = Instant::now();
            AsyncStdRuntime.sleep_until(started).await;
            assert!(again.elapsed() < LATE);
        });
    }

    #[test]
    fn the_id_follows_the_future_across_awaits_on_async_std_tasks() {
        let id = CorrelationId::new("task-7").unwrap();
        let seen = async_std::task::block_on(async_std::task::spawn(with_correlation_id(
            id.clone(),
            async {
                async_io::Timer::after(std::time::Duration::from_millis(5)).await;
                async_std::task::yield_now().await;
                current_correlation_id()
            },
        )));
        assert_eq!(seen, Some(id));
    }
}

/// The runtime on async-std: `async_std::task::spawn`, sleeps over one async-io timer
/// ([`crate::sleeps`]: a sleep ends at its instant however late it was started) and the std
/// clock async-io's timers run on. async-std has no paused
/// or virtual time: tests that need it drive the core with
/// `egress_core::test_util::{ManualClock, InstantSleeper}` instead.
#[derive(Debug, Default)]
pub(crate) struct AsyncStdRuntime;

impl egress_transport::Runtime for AsyncStdRuntime {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        // Dropping the handle detaches the task.
        drop(async_std::task::spawn(future));
    }

    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()> {
        Box::pin(crate::sleeps::sleep_until(at))
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}
