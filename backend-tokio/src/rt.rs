//! The tokio runtime pieces: spawn, timers, clock, entropy and the correlation scope.

use std::future::Future;
use std::time::Instant;

use egress_core::CorrelationId;
use egress_core::rt::BoxFuture;
pub use egress_entropy::{OsEntropy, ThreadEntropy};

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

/// The runtime on tokio: `tokio::spawn`, tokio's timers, and `tokio::time::Instant` as the
/// clock, so that `#[tokio::test(start_paused = true)]` controls egress time too (the pool's
/// idle timers included).
#[derive(Debug, Default)]
pub(crate) struct TokioRuntime;

impl egress_transport::Runtime for TokioRuntime {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        drop(tokio::spawn(future));
    }

    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at)))
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_core::rt::Clock;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_clock_of_a_tokio_client_follows_paused_time_wall_clock_included() {
        let clock = egress_transport::RuntimeClock::new(Arc::new(TokioRuntime));
        let (now, wall) = clock.now_and_wall();
        tokio::time::advance(Duration::from_secs(3)).await;
        let (later, later_wall) = clock.now_and_wall();
        assert_eq!(later - now, Duration::from_secs(3));
        assert_eq!(
            later_wall.duration_since(wall).unwrap(),
            Duration::from_secs(3)
        );
    }
}
