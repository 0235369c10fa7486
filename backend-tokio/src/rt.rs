//! The tokio runtime pieces: clock, sleeper, entropy and the correlation scope.

use std::future::Future;
use std::time::{Instant, SystemTime};

use egress_core::CorrelationId;
use egress_core::rt::{BoxFuture, Clock, Sleeper};
pub use egress_entropy::{OsEntropy, ThreadEntropy};

/// Time through `tokio::time::Instant`, so that `#[tokio::test(start_paused = true)]` controls
/// egress time too. The wall clock advances with it from the moment the clock was made, which
/// keeps `Retry-After` dates consistent with paused time and immune to system clock jumps.
#[derive(Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
    wall_start: SystemTime,
}

impl TokioClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            wall_start: SystemTime::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn wall(&self) -> SystemTime {
        self.now_and_wall().1
    }

    fn now_and_wall(&self) -> (Instant, SystemTime) {
        let now = tokio::time::Instant::now();
        (now.into_std(), self.wall_start + (now - self.start))
    }
}

/// Sleeps with `tokio::time::sleep_until`.
#[derive(Debug, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at)))
    }
}

tokio::task_local! {
    static CORRELATION_ID: CorrelationId;
}

/// Runs `future` with `id` as the ambient correlation ID: every call made inside it (on this
/// task) without its own ID carries this one. Typically set by an inbound-request middleware.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use egress_tokio::{current_correlation_id, with_correlation_id};
/// use egress_core::CorrelationId;
/// let id = CorrelationId::new("req-42").unwrap();
/// let seen = with_correlation_id(id.clone(), async { current_correlation_id() }).await;
/// assert_eq!(seen, Some(id));
/// assert_eq!(current_correlation_id(), None);
/// # }
/// ```
pub async fn with_correlation_id<F: Future>(id: CorrelationId, future: F) -> F::Output {
    CORRELATION_ID.scope(id, future).await
}

/// The ambient correlation ID of the current task, if inside [`with_correlation_id`].
pub fn current_correlation_id() -> Option<CorrelationId> {
    CORRELATION_ID.try_with(CorrelationId::clone).ok()
}

/// The transport's runtime on tokio: `tokio::spawn`, tokio's timers and clock.
#[derive(Debug, Default)]
pub(crate) struct TokioRuntime;

impl egress_transport::Runtime for TokioRuntime {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        drop(tokio::spawn(future));
    }

    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()> {
        TokioSleeper.sleep_until(at)
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}
