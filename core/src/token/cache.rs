//! The token source of one client, shared by all its calls: the [`TokenLifecycle`] under a lock,
//! the wakers of the calls waiting for a refresh, and the refresh itself run by the call the
//! lifecycle chose. It decides nothing: every decision is the lifecycle's.

use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::lifecycle::{CurrentToken, RefreshReason, RefreshTicket, TokenDecision, TokenLifecycle};
use super::{FetchContext, TokenError, TokenSource};
use crate::error::ConfigError;
use crate::rt::{Clock, Entropy, Sleeper};

struct Shared {
    lifecycle: TokenLifecycle,
    /// Bumped on every change a waiting call may care about.
    version: u64,
    waiters: Vec<Waker>,
}

/// A client's token source with its lifecycle.
pub(crate) struct TokenCache {
    source: Arc<dyn TokenSource>,
    shared: Mutex<Shared>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The lifecycle's Debug shows the token redacted, but its state is no one's business.
        f.debug_struct("TokenCache")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The runtime pieces a refresh needs.
pub(crate) struct Pieces<'a> {
    pub(crate) clock: &'a dyn Clock,
    pub(crate) sleeper: &'a dyn Sleeper,
    pub(crate) entropy: &'a dyn Entropy,
    /// The correlation ID of the call asking, for the events of its refresh.
    pub(crate) correlation_id: &'a str,
}

impl TokenCache {
    pub(crate) fn new(source: Arc<dyn TokenSource>) -> Result<Self, ConfigError> {
        let policy = source.refresh_policy();
        policy.validate()?;
        Ok(Self {
            source,
            shared: Mutex::new(Shared {
                lifecycle: TokenLifecycle::new(policy),
                version: 0,
                waiters: Vec::new(),
            }),
        })
    }

    pub(crate) fn source(&self) -> &dyn TokenSource {
        &*self.source
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // The lifecycle is consistent after every method, so a panic elsewhere leaves it usable.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the lifecycle and wakes every waiting call.
    fn update<T>(&self, f: impl FnOnce(&mut TokenLifecycle) -> T) -> T {
        let (out, waiters) = {
            let mut shared = self.lock();
            let out = f(&mut shared.lifecycle);
            shared.version += 1;
            (out, std::mem::take(&mut shared.waiters))
        };
        waiters.into_iter().for_each(Waker::wake);
        out
    }

    /// The token a call sends, by `deadline`: the valid one, a refreshed one (this call
    /// refreshing, or waiting for the call that does), or the reason there is none.
    pub(crate) async fn token(
        &self,
        rt: &Pieces<'_>,
        deadline: Instant,
    ) -> Result<CurrentToken, TokenError> {
        loop {
            let now = rt.clock.now();
            let (decision, seen) = {
                let mut shared = self.lock();
                (shared.lifecycle.decide(now), shared.version)
            };
            match decision {
                TokenDecision::Use(token) => return Ok(token),
                TokenDecision::Fail(error) => return Err(error),
                TokenDecision::Wait => {
                    if now >= deadline || !self.changed(seen, deadline, rt.sleeper).await {
                        return Err(TokenError::Deadline);
                    }
                }
                TokenDecision::Refresh {
                    ticket,
                    reason,
                    fallback,
                } => return self.refresh(rt, ticket, reason, fallback, deadline).await,
            }
        }
    }

    /// Waits until the lifecycle changes after `seen` (true) or `deadline` passes (false).
    async fn changed(&self, seen: u64, deadline: Instant, sleeper: &dyn Sleeper) -> bool {
        let mut timer = sleeper.sleep_until(deadline);
        poll_fn(|cx| {
            {
                let mut shared = self.lock();
                if shared.version != seen {
                    return Poll::Ready(true);
                }
                if !shared.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    shared.waiters.push(cx.waker().clone());
                }
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await
    }

    async fn refresh(
        &self,
        rt: &Pieces<'_>,
        ticket: RefreshTicket,
        reason: RefreshReason,
        fallback: Option<CurrentToken>,
        deadline: Instant,
    ) -> Result<CurrentToken, TokenError> {
        let started = rt.clock.now();
        // Dropped with the call's future: the flight is handed to the next call.
        let mut flight = Flight {
            cache: self,
            ticket: Some(ticket),
        };
        let mut fetch = self.source.fetch(FetchContext {
            now: started,
            deadline,
            reason,
        });
        let mut timer = rt.sleeper.sleep_until(deadline);
        let outcome = poll_fn(|cx| {
            if let Poll::Ready(result) = fetch.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        flight.ticket = None;
        let at = rt.clock.now();
        let took = at.saturating_duration_since(started);
        let error = match outcome {
            None => {
                self.update(|l| l.handle_abandoned(ticket));
                TokenError::Deadline
            }
            Some(Ok(token)) => {
                let mut jitter = [0u8; 8];
                rt.entropy.fill(&mut jitter);
                let jitter = u64::from_le_bytes(jitter);
                let expires_in = token.expires_in;
                match self.update(|l| l.handle_refreshed(ticket, at, token, jitter)) {
                    Some(Ok(current)) => {
                        refreshed(rt.correlation_id, reason, took, expires_in);
                        return Ok(current);
                    }
                    Some(Err(error)) => error,
                    // Only this call held the ticket, and it is still held: unreachable, but a
                    // call without its token is a failed refresh, not a panic.
                    None => TokenError::Deadline,
                }
            }
            Some(Err(error)) => {
                self.update(|l| l.handle_failed(ticket, at, error.clone()));
                error
            }
        };
        failed(rt.correlation_id, reason, took, &error);
        // A refresh-ahead that failed still has a token to send.
        match fallback.filter(|t| t.is_valid_at(at)) {
            Some(token) => Ok(token),
            None => Err(error),
        }
    }

    /// The API rejected the token of `generation`; drops it unless a newer one replaced it.
    pub(crate) fn reject(&self, generation: u64, correlation_id: &str) {
        if self.update(|l| l.handle_rejected(generation)) {
            tracing::debug!(correlation_id, generation, "token rejected");
        }
    }
}

/// The refresh a call holds; handed over when the call's future is dropped mid-refresh.
struct Flight<'a> {
    cache: &'a TokenCache,
    ticket: Option<RefreshTicket>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.cache.update(|l| l.handle_abandoned(ticket));
        }
    }
}

fn refreshed(
    correlation_id: &str,
    reason: RefreshReason,
    took: Duration,
    expires_in: Option<Duration>,
) {
    let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    match expires_in {
        Some(expires_in) => tracing::debug!(
            correlation_id,
            reason = reason.as_str(),
            took_ms,
            expires_in_s = expires_in.as_secs(),
            "token refreshed"
        ),
        None => tracing::debug!(
            correlation_id,
            reason = reason.as_str(),
            took_ms,
            "token refreshed"
        ),
    }
    #[cfg(feature = "metrics")]
    metrics::counter!("egress.token.refreshes", "reason" => reason.as_str()).increment(1);
}

fn failed(correlation_id: &str, reason: RefreshReason, took: Duration, error: &TokenError) {
    let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    tracing::warn!(
        correlation_id,
        reason = reason.as_str(),
        took_ms,
        error.type = error.type_name(),
        is_final = error.is_final(),
        "token refresh failed: {error}"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!("egress.token.failures", "error.type" => error.type_name()).increment(1);
}
