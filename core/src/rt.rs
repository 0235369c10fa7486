//! The hooks of egress-core for backends and transports, which may change between minor
//! versions: the runtime seam (the small object-safe traits a backend implements: a clock, a
//! sleeper, a transport and a source of random bytes for IDs and jitter seeds), the fleet
//! coordinator a shared store implements, what an attempt hands a transport, and the streaming
//! body decoder a transport runs. Std futures only, so no runtime is a dependency here.
//! Everything else is re-exported at the crate root.

use std::fmt::{self, Debug};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::error::TransportError;
use crate::redact::Redactor;

pub use crate::coding::{BodyDecoder, DecodeError, DecodeLimits, Decoding, RATIO_AFTER};
pub use crate::guard::shared::{CoordinatorError, SlotAsk, SlotGrant};

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
/// [`FleetConfig`](crate::FleetConfig)). The core decides; a coordinator only loads and stores.
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
        ask: &crate::guard::shared::SlotAsk,
    ) -> BoxFuture<
        'static,
        Result<crate::guard::shared::SlotGrant, crate::guard::shared::CoordinatorError>,
    >;
    /// The hold on `key` in force at `now` that another replica published, from memory.
    fn hold(&self, key: &str, now: Instant) -> Option<crate::guard::shared::Hold>;
    /// Tells the fleet that `key` is held (fire-and-forget; never blocks).
    fn publish_hold(&self, key: &str, now: Instant, hold: &crate::guard::shared::Hold);
    /// Until when another replica opened the circuit of `key`, if it is still open at `now`,
    /// from memory.
    fn circuit_open_until(&self, key: &str, now: Instant) -> Option<Instant>;
    /// Tells the fleet that the circuit of `key` opened for `open_for` (fire-and-forget).
    fn publish_circuit_open(&self, key: &str, now: Instant, open_for: std::time::Duration);
}

/// The absolute deadlines of one attempt. Each is already the minimum of its own phase limit
/// and what is left of the attempt and of the whole call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptDeadlines {
    /// When the attempt started: the time the driver gave the exchange when it issued the
    /// attempt, on the driver's clock. A transport measures a limit that starts with the
    /// attempt (the response head's) from here instead of reading a clock again.
    pub started: Instant,
    /// Connected (TCP and TLS) by then.
    pub connect: Instant,
    /// A pooled connection acquired by then.
    pub pool: Instant,
    /// The whole attempt, last body byte included, by then.
    pub attempt: Instant,
}

impl AttemptDeadlines {
    /// When a phase that starts at `from` and may last `limit` must end, if that is before the
    /// attempt deadline. `None` when the attempt deadline comes first: the driver's own timer
    /// then ends the attempt, so a transport needs no timer for the phase.
    pub fn phase_end(&self, from: Instant, limit: Duration) -> Option<Instant> {
        from.checked_add(limit).filter(|at| *at < self.attempt)
    }
}

/// One attempt to send: the exact request and the limits the transport must enforce.
/// Its `Debug` shows the URI and headers redacted.
#[non_exhaustive]
pub struct AttemptRequest {
    /// The attempt number, 1 for the first; echo it back in the [`Input`](crate::Input).
    pub attempt: u32,
    /// The exact request, every header included.
    pub request: http::Request<Bytes>,
    /// Absolute deadlines.
    pub deadlines: AttemptDeadlines,
    /// Idle limit for the response head and between body chunks (never past `deadlines.attempt`).
    pub read_timeout: Duration,
    /// Limit on writing the request (never past `deadlines.attempt`).
    pub write_timeout: Duration,
    /// Stop reading and fail with [`TransportErrorKind::BodyTooLarge`](crate::TransportErrorKind::BodyTooLarge)
    /// past this many body bytes.
    pub body_limit: u64,
    /// Whether the body is decoded, within which limits: a transport feeds a body whose
    /// `Content-Encoding` names a coding through [`Decoding::decoder`](crate::coding::Decoding::decoder).
    pub decoding: crate::coding::Decoding,
    /// The attempt's span (`egress.attempt`); run the transport inside it.
    pub span: tracing::Span,
}

impl fmt::Debug for AttemptRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redactor = Redactor::default();
        f.debug_struct("AttemptRequest")
            .field("attempt", &self.attempt)
            .field("method", self.request.method())
            .field("uri", &redactor.uri(self.request.uri()))
            .field("headers", &redactor.headers(self.request.headers()))
            .field("body_len", &self.request.body().len())
            .field("deadlines", &self.deadlines)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("body_limit", &self.body_limit)
            .field("decoding", &self.decoding)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_phase_gets_an_end_only_when_it_comes_before_the_attempt_deadline() {
        let start = Instant::now();
        let deadlines = AttemptDeadlines {
            started: start,
            connect: start,
            pool: start,
            attempt: start + Duration::from_secs(10),
        };
        let second = Duration::from_secs(1);
        assert_eq!(deadlines.phase_end(start, second), Some(start + second));
        assert_eq!(deadlines.phase_end(start, 10 * second), None);
        assert_eq!(deadlines.phase_end(start + 5 * second, 5 * second), None);
        assert_eq!(deadlines.phase_end(start, Duration::MAX), None);
    }
}
