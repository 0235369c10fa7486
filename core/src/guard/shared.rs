//! The values the client's state shares with a [`Coordinator`](crate::rt::Coordinator): holds,
//! and rate slots asked and granted. A leaf of the crate, so that the runtime seam, the errors
//! and the guards can all name them.

use std::time::{Duration, Instant, SystemTime};

use super::limiter::Gcra;

/// Why a host is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HoldReason {
    /// A throttling answer with `Retry-After` (or a vendor's equivalent).
    RetryAfter,
    /// A response whose rate-limit fields say no quota is left.
    QuotaExhausted,
}

impl HoldReason {
    /// A short stable name (`retry_after`, `quota_exhausted`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetryAfter => "retry_after",
            Self::QuotaExhausted => "quota_exhausted",
        }
    }
}

/// A hold on one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Hold {
    /// No call is sent before this (monotonic time).
    pub until: Instant,
    /// When the server said a request may succeed again (wall-clock time; may lie past `until`
    /// when the hold was capped).
    pub retry_at: SystemTime,
    /// Why.
    pub reason: HoldReason,
}

/// A request for rate slots, from [`Output::Acquire`](crate::Output::Acquire).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotAsk {
    /// The vendor key or host the quota belongs to.
    pub key: String,
    /// The driver's time when the exchange asked (a coordinator with a clock of its own, such
    /// as Redis's `TIME`, ignores it).
    pub now: Instant,
    /// How many slots to reserve (the lease size).
    pub count: u32,
    /// The GCRA emission interval `T`.
    pub interval: Duration,
    /// The GCRA tolerance `tau = (burst - 1) * T`.
    pub tolerance: Duration,
    /// Reserve no slot this far or further from the coordinator's now (the call's deadline).
    pub max_wait: Duration,
}

impl SlotAsk {
    /// A request for `count` slots of `gcra` for `key`.
    pub fn new(
        key: impl Into<String>,
        now: Instant,
        count: u32,
        gcra: &Gcra,
        max_wait: Duration,
    ) -> Self {
        Self {
            key: key.into(),
            now,
            count,
            interval: gcra.interval(),
            tolerance: gcra.tolerance(),
            max_wait,
        }
    }
}

/// What a coordinator reserved, each time as an offset from its own now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotGrant {
    /// The reserved slots, ascending; each conforms at its offset and lies before `max_wait`.
    pub slots: Vec<Duration>,
    /// When fewer slots than asked were reserved: the offset of the first one refused.
    pub next: Option<Duration>,
    /// A hold in force for the key, found on the way (time left).
    pub hold: Option<Duration>,
}

impl SlotGrant {
    /// A grant of `slots` (offsets), `next` the first refused one.
    pub fn new(slots: Vec<Duration>, next: Option<Duration>, hold: Option<Duration>) -> Self {
        Self { slots, next, hold }
    }
}

/// Why a coordinator could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// Not connected (the coordinator is reconnecting in the background).
    #[error("coordinator unavailable")]
    Unavailable,
    /// The operation took longer than its timeout (or the call's deadline came first).
    #[error("coordinator timed out")]
    Timeout,
    /// The answer made no sense (a script or protocol mismatch); the text names no secret.
    #[error("coordinator answered nonsense: {0}")]
    Protocol(String),
}
