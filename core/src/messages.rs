//! The messages an [`Exchange`](crate::Exchange) and its driver exchange: [`Input`] (what
//! happened) in, [`Output`] (what to do) out. Plain data, no IO.

use std::fmt;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use crate::error::{Error, TransportError};
use crate::redact::Redactor;
use crate::response::Response;
pub(crate) use crate::rt::{AttemptDeadlines, AttemptRequest};

/// Something that happened, fed to [`Exchange::handle_input`](crate::Exchange::handle_input).
/// Every variant carries the monotonic time at which it happened; times must never go backwards
/// (a time earlier than one already seen is treated as that one).
#[non_exhaustive]
pub enum Input {
    /// Attempt `attempt` got a complete response: head and body, the body already read under
    /// the attempt's [`body_limit`](AttemptRequest::body_limit).
    Response {
        /// The attempt number from the [`AttemptRequest`].
        attempt: u32,
        /// When the last body byte arrived.
        at: Instant,
        /// The wall-clock time at that moment, for `Retry-After` dates.
        wall: SystemTime,
        /// The response.
        response: http::Response<Bytes>,
    },
    /// Attempt `attempt` failed below HTTP.
    Failed {
        /// The attempt number from the [`AttemptRequest`].
        attempt: u32,
        /// When it failed.
        at: Instant,
        /// The classified failure.
        error: TransportError,
    },
    /// A timer the driver was asked for (by [`Output::Wait`]) fired. Spurious timers are harmless.
    Timer {
        /// When it fired.
        at: Instant,
    },
    /// The fleet's coordinator answered the [`Output::Acquire`] (only with a coordinator).
    /// When it has not answered by the wait that follows the `Acquire`, feed
    /// [`Input::Timer`] instead: the exchange counts that as the coordinator failing.
    Slots {
        /// When the answer arrived.
        at: Instant,
        /// The slots reserved, or why none could be.
        result: Result<crate::guard::shared::SlotGrant, crate::guard::shared::CoordinatorError>,
    },
}

/// What the driver must do next, from [`Exchange::poll_output`](crate::Exchange::poll_output).
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send this attempt, then keep polling: the next output is the wait for its deadline (or
    /// for a hedge). With hedging, a `Send` may come while an earlier attempt is still in
    /// flight: keep both going, and feed whichever answers first.
    Send(AttemptRequest),
    /// Nothing to do before `until` unless an input arrives: sleep until then, then feed
    /// [`Input::Timer`].
    Wait {
        /// The absolute time to wake up at.
        until: Instant,
        /// Why.
        reason: WaitReason,
    },
    /// The call is over. Polling again returns the same result.
    Done(Result<Response, Error>),
    /// Ask the fleet's coordinator for rate slots ([`Acquire::start`]), then keep polling: the
    /// next output is the wait for its answer ([`WaitReason::Coordinator`]). Feed the answer
    /// as [`Input::Slots`]. Only a client with a coordinator and a rate limit asks this.
    Acquire(Acquire),
}

/// A request for rate slots to the fleet's coordinator, from [`Output::Acquire`].
#[non_exhaustive]
pub struct Acquire {
    /// What to reserve.
    pub ask: crate::guard::shared::SlotAsk,
    coordinator: std::sync::Arc<dyn crate::rt::Coordinator>,
}

impl Acquire {
    pub(crate) fn new(
        ask: crate::guard::shared::SlotAsk,
        coordinator: std::sync::Arc<dyn crate::rt::Coordinator>,
    ) -> Self {
        Self { ask, coordinator }
    }

    /// Starts the request on the client's coordinator.
    pub fn start(
        &self,
    ) -> crate::rt::BoxFuture<
        'static,
        Result<crate::guard::shared::SlotGrant, crate::guard::shared::CoordinatorError>,
    > {
        self.coordinator.acquire(&self.ask)
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("ask", &self.ask)
            .finish_non_exhaustive()
    }
}

/// Why the exchange is waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitReason {
    /// An attempt is in flight; `until` is its deadline (attempt timeout or whole-call deadline).
    AttemptDeadline {
        /// The attempt in flight.
        attempt: u32,
    },
    /// An attempt is in flight and hedge `attempt` goes at `until` unless an answer comes first
    /// (only for a call that hedges; see [`HedgingConfig`](crate::HedgingConfig)).
    Hedge {
        /// The attempt number the hedge will have.
        attempt: u32,
    },
    /// Backing off before retry `retry` (1 for the first retry).
    Backoff {
        /// The retry about to be made.
        retry: u32,
    },
    /// Honouring the server's `Retry-After` (or a vendor's equivalent) before retry `retry`.
    RetryAfter {
        /// The retry about to be made.
        retry: u32,
    },
    /// The host is held: another call was told to come back later, or the quota is used up.
    HostHold,
    /// The circuit is open and the call asked to wait for it to half-open.
    CircuitOpen,
    /// Waiting for the client-side rate limiter's slot.
    RateLimiter,
    /// Waiting for the fleet's coordinator to answer an [`Output::Acquire`]; `until` is its
    /// timeout (never past the call's deadline).
    Coordinator,
}

impl WaitReason {
    /// A short stable name for telemetry (`backoff`, `retry_after`, `attempt_deadline`, `hedge`,
    /// `host_hold`, `circuit_open`, `rate_limiter`, `coordinator`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AttemptDeadline { .. } => "attempt_deadline",
            Self::Hedge { .. } => "hedge",
            Self::Backoff { .. } => "backoff",
            Self::RetryAfter { .. } => "retry_after",
            Self::HostHold => "host_hold",
            Self::CircuitOpen => "circuit_open",
            Self::RateLimiter => "rate_limiter",
            Self::Coordinator => "coordinator",
        }
    }
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redactor = Redactor::default();
        match self {
            Self::Response {
                attempt,
                at,
                wall,
                response,
            } => f
                .debug_struct("Response")
                .field("attempt", attempt)
                .field("at", at)
                .field("wall", wall)
                .field("status", &response.status())
                .field("headers", &redactor.headers(response.headers()))
                .field("body_len", &response.body().len())
                .finish(),
            Self::Failed { attempt, at, error } => f
                .debug_struct("Failed")
                .field("attempt", attempt)
                .field("at", at)
                .field("error", error)
                .finish(),
            Self::Timer { at } => f.debug_struct("Timer").field("at", at).finish(),
            Self::Slots { at, result } => f
                .debug_struct("Slots")
                .field("at", at)
                .field("result", result)
                .finish(),
        }
    }
}
