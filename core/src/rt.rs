//! The runtime seam: the three small object-safe traits a backend implements (plus a source of
//! random bytes for IDs and jitter seeds). Std futures only, so no runtime is a dependency here.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use crate::error::TransportError;
use crate::io::AttemptRequest;

/// A boxed, sendable future, as returned by the runtime traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where time comes from. Backends route it through their runtime's clock, so a paused test
/// clock controls egress time too.
pub trait Clock: Debug + Send + Sync {
    /// The monotonic time now.
    fn now(&self) -> Instant;
    /// The wall-clock time now (only used to resolve `Retry-After` dates).
    fn wall(&self) -> SystemTime;
    /// [`now`](Self::now) and [`wall`](Self::wall) of one moment. The driver takes both when a
    /// response arrives; a clock that derives its wall time from its monotonic time (as the
    /// backends' do) reads the time once instead of twice.
    fn now_and_wall(&self) -> (Instant, SystemTime) {
        (self.now(), self.wall())
    }
}

/// How the driver waits.
pub trait Sleeper: Debug + Send + Sync {
    /// A future that completes at `at` (at once when `at` has passed).
    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()>;
}

/// How one attempt goes over the wire.
///
/// A transport sends [`AttemptRequest::request`] exactly as given, enforces the phase limits it
/// carries (connect and pool deadlines, read and write timeouts), reads the body chunk by chunk
/// and fails with [`TransportErrorKind::BodyTooLarge`](crate::TransportErrorKind::BodyTooLarge)
/// as soon as it passes [`AttemptRequest::body_limit`], without buffering beyond it. It never
/// retries, follows redirects or decides anything else: that is the core's job. The attempt and
/// whole-call deadlines are enforced by the driver, which drops the future when they pass.
pub trait Transport: Debug + Send + Sync {
    /// Sends one attempt and reads its whole response.
    fn send(
        &self,
        attempt: AttemptRequest,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>>;
}

/// Random bytes for correlation IDs, idempotency keys and jitter seeds. Backends use the
/// operating system's generator; tests use a seeded one.
pub trait Entropy: Debug + Send + Sync {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]);
}

/// State shared with the other replicas of a service: rate slots, holds and open circuits (see
/// [`guard::fleet`](crate::guard::fleet)). The core decides; a coordinator only loads and stores.
///
/// Only [`acquire`](Self::acquire) does IO, and the driver runs it (on
/// [`Output::Acquire`](crate::Output::Acquire)), racing it against the exchange's timer. The
/// other methods run on the call path and must answer from memory at once: holds and circuits
/// are published fire-and-forget and read from a local cache the coordinator keeps up to date
/// in the background. [`LocalCoordinator`](crate::guard::fleet::LocalCoordinator) is the
/// in-memory one; `egress-fleet` has the Redis one.
pub trait Coordinator: Debug + Send + Sync {
    /// Reserves up to `ask.count` GCRA slots for `ask.key`, with the core's arithmetic
    /// ([`Gcra::reserve`](crate::guard::Gcra::reserve) once per slot) and the coordinator's
    /// own clock.
    fn acquire(
        &self,
        ask: &crate::guard::fleet::SlotAsk,
    ) -> BoxFuture<
        'static,
        Result<crate::guard::fleet::SlotGrant, crate::guard::fleet::CoordinatorError>,
    >;
    /// The hold on `key` in force at `now` that another replica published, from memory.
    fn hold(&self, key: &str, now: Instant) -> Option<crate::guard::Hold>;
    /// Tells the fleet that `key` is held (fire-and-forget; never blocks).
    fn publish_hold(&self, key: &str, now: Instant, hold: &crate::guard::Hold);
    /// Until when another replica opened the circuit of `key`, if it is still open at `now`,
    /// from memory.
    fn circuit_open_until(&self, key: &str, now: Instant) -> Option<Instant>;
    /// Tells the fleet that the circuit of `key` opened for `open_for` (fire-and-forget).
    fn publish_circuit_open(&self, key: &str, now: Instant, open_for: std::time::Duration);
}
