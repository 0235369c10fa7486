//! Retries; the whole story is on [`RetryPolicy`].

pub(crate) mod backoff;
pub(crate) mod budget;
pub mod classify;
pub(crate) mod jitter;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use backoff::{Backoff, JitterMode};
pub use budget::{BudgetConfig, RetryBudget};
pub use classify::{
    Classifier, ClassifyContext, DefaultClassifier, ForbidReason, Outcome, RetryAction,
    RetryReason, classify, is_answer, is_idempotent_method,
};
pub use jitter::{Jitter, NoJitter, SeededJitter};

/// Which failures retry, how often and how long to wait.
///
/// Retry decisions: classification ([`classify()`]), backoff ([`Backoff::delay`]), jitter
/// ([`Jitter`]) and the retry budget ([`RetryBudget`]). All pure; time and randomness come in
/// as arguments.
///
/// ```
/// use std::time::Duration;
/// use egress_core::{Backoff, JitterMode, RetryPolicy};
///
/// let policy = RetryPolicy::standard()
///     .with_max_attempts(5)
///     .with_backoff(Backoff::default().with_initial(Duration::from_millis(200)).with_jitter(JitterMode::Full));
/// assert_eq!(policy.max_attempts, 5);
/// assert_eq!(RetryPolicy::disabled().max_attempts, 1); // one attempt, no retry
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts per call, the first one included (1 disables retries).
    pub max_attempts: u32,
    /// The backoff between attempts.
    pub backoff: Backoff,
    /// Statuses retried for idempotent requests.
    pub retryable_statuses: Vec<u16>,
    /// Statuses that mean "throttled": retried for any method, honouring `Retry-After`.
    pub throttling_statuses: Vec<u16>,
    /// The longest `Retry-After` honoured; a longer one ends the call with `RateLimited`.
    #[serde(with = "humantime_serde")]
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::standard()
    }
}

impl RetryPolicy {
    /// The standard policy: 3 attempts, full-jitter exponential backoff from 100 ms capped at
    /// 10 s, 408/500/502/503/504 retried, 429 as throttling, `Retry-After` honoured up to 30 s.
    pub fn standard() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::default(),
            retryable_statuses: vec![408, 500, 502, 503, 504],
            throttling_statuses: vec![429],
            retry_after_cap: Duration::from_secs(30),
        }
    }

    /// No retries: one attempt, every failure final.
    pub fn disabled() -> Self {
        Self {
            max_attempts: 1,
            ..Self::standard()
        }
    }

    /// Sets the attempts per call (the first one included).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the statuses retried for idempotent requests.
    pub fn with_retryable_statuses(mut self, statuses: impl Into<Vec<u16>>) -> Self {
        self.retryable_statuses = statuses.into();
        self
    }

    /// Sets the throttling statuses.
    pub fn with_throttling_statuses(mut self, statuses: impl Into<Vec<u16>>) -> Self {
        self.throttling_statuses = statuses.into();
        self
    }

    /// Sets the longest `Retry-After` honoured.
    pub fn with_retry_after_cap(mut self, cap: Duration) -> Self {
        self.retry_after_cap = cap;
        self
    }
}
