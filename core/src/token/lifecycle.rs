//! The token lifecycle as data: a pure state machine over absent, valid, refreshing and failed,
//! with time and jitter as inputs. See [`TokenLifecycle`].

use std::fmt;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{Token, TokenError};
use crate::error::ConfigError;
use crate::exchange::saturating_add;

/// When tokens are refreshed. Defaults: at 80 % of the lifetime or 60 s before expiry,
/// whichever comes first (never before half the lifetime), up to 10 % earlier by jitter, and a
/// 5 s cooldown after a failed refresh.
///
/// ```
/// use std::time::{Duration, Instant};
/// use egress_core::RefreshPolicy;
///
/// let policy = RefreshPolicy::default();
/// let t0 = Instant::now();
/// let hour = Duration::from_secs(3600);
/// // 80 % of an hour (2880 s) comes before 60 s ahead of expiry (3540 s).
/// assert_eq!(policy.refresh_at(t0, hour, 0), t0 + Duration::from_secs(2880));
/// // The most jitter moves it 10 % earlier: 2880 - 288 = 2592 s.
/// assert_eq!(policy.refresh_at(t0, hour, u64::MAX), t0 + Duration::from_millis(2_592_000));
/// // A 2-minute token: 60 s before expiry (60 s) comes before 80 % (96 s).
/// assert_eq!(policy.refresh_at(t0, Duration::from_secs(120), 0), t0 + Duration::from_secs(60));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RefreshPolicy {
    /// Refresh once this percentage of the lifetime has passed (1 to 100; default 80).
    pub ahead_percent: u8,
    /// Refresh at the latest this long before expiry (default 60 s), but never before half of
    /// the lifetime, so that short-lived tokens are not fetched for every call.
    #[serde(with = "humantime_serde")]
    pub ahead_of_expiry: Duration,
    /// Move the refresh earlier by up to this percentage of its moment, from the jitter
    /// (0 to 50; default 10), so that replicas do not refresh together.
    pub jitter_percent: u8,
    /// After a failed refresh, calls use the old token while it is valid, or fail at once with
    /// the same error, for this long before another refresh is tried (default 5 s).
    #[serde(with = "humantime_serde")]
    pub failure_cooldown: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            ahead_percent: 80,
            ahead_of_expiry: Duration::from_secs(60),
            jitter_percent: 10,
            failure_cooldown: Duration::from_secs(5),
        }
    }
}

impl RefreshPolicy {
    /// Sets the percentage of the lifetime after which a token is refreshed.
    pub fn with_ahead_percent(mut self, percent: u8) -> Self {
        self.ahead_percent = percent;
        self
    }

    /// Sets how long before expiry a token is refreshed at the latest.
    pub fn with_ahead_of_expiry(mut self, ahead: Duration) -> Self {
        self.ahead_of_expiry = ahead;
        self
    }

    /// Sets the jitter, in percent of the refresh moment.
    pub fn with_jitter_percent(mut self, percent: u8) -> Self {
        self.jitter_percent = percent;
        self
    }

    /// Sets the cooldown after a failed refresh.
    pub fn with_failure_cooldown(mut self, cooldown: Duration) -> Self {
        self.failure_cooldown = cooldown;
        self
    }

    /// Rejects nonsense, naming the field under `prefix` (such as `auth.oauth2.refresh`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.ahead_percent) {
            return Err(ConfigError::new(
                "auth.oauth2.refresh.ahead_percent",
                "must be between 1 and 100",
            ));
        }
        if self.jitter_percent > 50 {
            return Err(ConfigError::new(
                "auth.oauth2.refresh.jitter_percent",
                "must be at most 50",
            ));
        }
        if self.failure_cooldown.is_zero() {
            return Err(ConfigError::new(
                "auth.oauth2.refresh.failure_cooldown",
                "must be greater than zero",
            ));
        }
        Ok(())
    }

    /// When a token obtained at `obtained` with `lifetime` should be refreshed; `jitter` is a
    /// uniform random value (the caller's, from its jitter source).
    pub fn refresh_at(&self, obtained: Instant, lifetime: Duration, jitter: u64) -> Instant {
        // At most u64::MAX ns (584 years), so that the products below fit in a u128.
        let nanos = lifetime.as_nanos().min(u128::from(u64::MAX));
        let by_percent = nanos * u128::from(self.ahead_percent.min(100)) / 100;
        let by_margin = nanos.saturating_sub(self.ahead_of_expiry.as_nanos());
        let ahead = by_percent.min(by_margin).max(nanos / 2);
        // Up to `jitter_percent` of it earlier: the top 53 bits of the jitter as a fraction of
        // their largest value (so `u64::MAX` is the whole spread).
        let spread = ahead * u128::from(self.jitter_percent.min(50)) / 100;
        let earlier = spread * u128::from(jitter >> 11) / ((1u128 << 53) - 1);
        let at = ahead - earlier;
        saturating_add(obtained, duration_from_nanos(at))
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits.
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

/// Why a refresh started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshReason {
    /// There was no token yet.
    Initial,
    /// The token is still valid, but its refresh moment has passed (refresh-ahead).
    Ahead,
    /// The token expired.
    Expired,
    /// The API rejected the token (a 401 with `invalid_token`, or a vendor's rule).
    Rejected,
}

impl RefreshReason {
    /// A short stable name for telemetry (`reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Ahead => "ahead",
            Self::Expired => "expired",
            Self::Rejected => "rejected",
        }
    }
}

/// The token a call sends: the value, its generation (which token of the source it is, for
/// [`TokenLifecycle::handle_rejected`]) and when it expires.
#[derive(Clone)]
pub struct CurrentToken {
    value: SecretString,
    generation: u64,
    expires_at: Option<Instant>,
}

impl CurrentToken {
    /// The token (never shown by `Debug`).
    pub fn value(&self) -> &SecretString {
        &self.value
    }

    /// Which token of the source this is: 1 for the first, one more for every refresh.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When it expires, if known.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// Whether it may still be sent at `now`.
    pub fn is_valid_at(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

impl fmt::Debug for CurrentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentToken")
            .field("value", &"[REDACTED]")
            .field("generation", &self.generation)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The right to run one refresh; its outcome is fed back with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefreshTicket(u64);

/// What a call should do about its token now.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenDecision {
    /// Send this token.
    Use(CurrentToken),
    /// Fetch a new token (this call holds the single flight), then feed the outcome back with
    /// `ticket`. `fallback` is a token still valid now (refresh-ahead): the call may send it if
    /// the refresh fails.
    Refresh {
        /// The flight this call holds.
        ticket: RefreshTicket,
        /// Why.
        reason: RefreshReason,
        /// The still-valid token, on a refresh-ahead.
        fallback: Option<CurrentToken>,
    },
    /// Another call is refreshing and there is no valid token: wait until the state changes
    /// (or the call's deadline passes), then decide again.
    Wait,
    /// The last refresh failed within the cooldown and there is no valid token.
    Fail(TokenError),
}

#[derive(Clone, Debug)]
struct Held {
    token: CurrentToken,
    refresh_at: Option<Instant>,
}

#[derive(Clone, Debug)]
enum State {
    Empty {
        why: RefreshReason,
    },
    Valid(Held),
    Refreshing {
        ticket: u64,
        since: Instant,
        held: Option<Held>,
    },
    Failed {
        until: Instant,
        error: TokenError,
        held: Option<Held>,
        why: RefreshReason,
    },
}

/// The state of one token source, as data: absent, valid, refreshing or failed.
///
/// ```text
///           decide: Refresh                    handle_refreshed
///   Empty ──────────────────▶ Refreshing ─────────────────────────▶ Valid
///     ▲                        │  │   ▲                               │ │
///     │   handle_abandoned     │  │   │ decide past refresh_at        │ │
///     ├────────────────────────┘  │   │ (ahead, or expired): Refresh  │ │
///     │   (to Valid if a token    │   └───────────────────────────────┘ │
///     │    is still held)         │ handle_failed                       │
///     │                           ▼                                     │
///     │                         Failed ── decide after the cooldown:    │
///     │                                   Refresh (to Refreshing)       │
///     └─────────────────── handle_rejected ─────────────────────────────┘
/// ```
///
/// [`TokenLifecycle::decide`] says what a call should do now; one call at a time is handed a
/// [`RefreshTicket`] to refresh, every other call uses a valid token or waits. The outcome of the
/// refresh is fed back with the ticket, and a stale ticket (a refresh that was abandoned and
/// taken over) is ignored.
///
/// Driven by hand (as the client does, under a lock):
///
/// ```
/// use std::time::{Duration, Instant};
/// use egress_core::{TokenDecision, RefreshPolicy, RefreshReason, Token, TokenLifecycle};
///
/// let t0 = Instant::now();
/// let mut tokens = TokenLifecycle::new(RefreshPolicy::default());
/// // The first call refreshes; a second one meanwhile waits (single flight).
/// let TokenDecision::Refresh { ticket, reason: RefreshReason::Initial, .. } = tokens.decide(t0) else { panic!() };
/// assert!(matches!(tokens.decide(t0), TokenDecision::Wait));
/// let token = Token::bearer("t-1".into(), Some(Duration::from_secs(3600)));
/// tokens.handle_refreshed(ticket, t0 + Duration::from_millis(80), token, 0);
/// assert!(matches!(tokens.decide(t0 + Duration::from_secs(1)), TokenDecision::Use(_)));
/// // At 80 % of the hour one call refreshes ahead while the others keep the valid token.
/// let later = t0 + Duration::from_secs(2900);
/// assert!(matches!(tokens.decide(later), TokenDecision::Refresh { reason: RefreshReason::Ahead, .. }));
/// assert!(matches!(tokens.decide(later), TokenDecision::Use(_)));
/// ```
#[derive(Clone, Debug)]
pub struct TokenLifecycle {
    policy: RefreshPolicy,
    state: State,
    flights: u64,
    generations: u64,
}

impl TokenLifecycle {
    /// No token yet.
    pub fn new(policy: RefreshPolicy) -> Self {
        Self {
            policy,
            state: State::Empty {
                why: RefreshReason::Initial,
            },
            flights: 0,
            generations: 0,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RefreshPolicy {
        &self.policy
    }

    /// Whether a refresh is in flight.
    pub fn is_refreshing(&self) -> bool {
        matches!(self.state, State::Refreshing { .. })
    }

    /// What a call should do at `now`. A [`TokenDecision::Refresh`] hands this call the single flight.
    pub fn decide(&mut self, now: Instant) -> TokenDecision {
        let usable = |held: &Option<Held>| {
            held.as_ref()
                .filter(|h| h.token.is_valid_at(now))
                .map(|h| h.token.clone())
        };
        match &self.state {
            State::Empty { why } => {
                let why = *why;
                self.start(now, why, None)
            }
            State::Valid(held) if !held.token.is_valid_at(now) => {
                self.start(now, RefreshReason::Expired, None)
            }
            State::Valid(held) if held.refresh_at.is_some_and(|at| at <= now) => {
                let held = held.clone();
                self.start(now, RefreshReason::Ahead, Some(held))
            }
            State::Valid(held) => TokenDecision::Use(held.token.clone()),
            State::Refreshing { held, .. } => {
                usable(held).map_or(TokenDecision::Wait, TokenDecision::Use)
            }
            State::Failed {
                until, error, held, ..
            } if now < *until => match usable(held) {
                Some(token) => TokenDecision::Use(token),
                None => TokenDecision::Fail(error.clone()),
            },
            State::Failed { held, why, .. } => {
                let (why, held) = match held {
                    Some(h) if h.token.is_valid_at(now) => (RefreshReason::Ahead, Some(h.clone())),
                    Some(_) => (RefreshReason::Expired, None),
                    None => (*why, None),
                };
                self.start(now, why, held)
            }
        }
    }

    fn start(&mut self, now: Instant, reason: RefreshReason, held: Option<Held>) -> TokenDecision {
        self.flights += 1;
        let fallback = held.as_ref().map(|h| h.token.clone());
        self.state = State::Refreshing {
            ticket: self.flights,
            since: now,
            held,
        };
        TokenDecision::Refresh {
            ticket: RefreshTicket(self.flights),
            reason,
            fallback,
        }
    }

    fn flight(&self, ticket: RefreshTicket) -> Option<(Instant, Option<Held>)> {
        match &self.state {
            State::Refreshing {
                ticket: t,
                since,
                held,
            } if *t == ticket.0 => Some((*since, held.clone())),
            _ => None,
        }
    }

    /// The refresh of `ticket` obtained `token` at `at`; `jitter` is a uniform random value for
    /// the refresh moment. Its lifetime counts from the moment the refresh started (the server
    /// issued it after that). Returns the new token; `None` when the ticket is stale, and an
    /// error when the token expired before it arrived (it is treated as a failed refresh).
    pub fn handle_refreshed(
        &mut self,
        ticket: RefreshTicket,
        at: Instant,
        token: Token,
        jitter: u64,
    ) -> Option<Result<CurrentToken, TokenError>> {
        let (since, held) = self.flight(ticket)?;
        let expires_at = token.expires_in.map(|d| saturating_add(since, d));
        if expires_at.is_some_and(|e| e <= at) {
            let error = TokenError::InvalidResponse(
                "the access token expired before it arrived (expires_in too short)".into(),
            );
            self.fail(at, error.clone(), held, RefreshReason::Expired);
            return Some(Err(error));
        }
        self.generations += 1;
        let current = CurrentToken {
            value: token.value,
            generation: self.generations,
            expires_at,
        };
        let refresh_at = token
            .expires_in
            .map(|lifetime| self.policy.refresh_at(since, lifetime, jitter));
        self.state = State::Valid(Held {
            token: current.clone(),
            refresh_at,
        });
        Some(Ok(current))
    }

    /// The refresh of `ticket` failed at `at`. Ignored when the ticket is stale.
    pub fn handle_failed(&mut self, ticket: RefreshTicket, at: Instant, error: TokenError) {
        if let Some((_, held)) = self.flight(ticket) {
            let why = match &held {
                Some(_) => RefreshReason::Expired,
                None => RefreshReason::Initial,
            };
            self.fail(at, error, held, why);
        }
    }

    fn fail(&mut self, at: Instant, error: TokenError, held: Option<Held>, why: RefreshReason) {
        self.state = State::Failed {
            until: saturating_add(at, self.policy.failure_cooldown),
            error,
            held,
            why,
        };
    }

    /// The call holding `ticket` gave up before the outcome (its deadline passed, or it was
    /// dropped): the next call to decide takes over. Ignored when the ticket is stale.
    pub fn handle_abandoned(&mut self, ticket: RefreshTicket) {
        if let Some((_, held)) = self.flight(ticket) {
            self.state = match held {
                Some(held) => State::Valid(held),
                None => State::Empty {
                    why: RefreshReason::Initial,
                },
            };
        }
    }

    /// The API rejected the token of `generation`: it is dropped, unless a newer one has
    /// replaced it already (then calls simply get the newer one). Returns whether it was dropped.
    pub fn handle_rejected(&mut self, generation: u64) -> bool {
        let is_it = |held: &Option<Held>| {
            held.as_ref()
                .is_some_and(|h| h.token.generation == generation)
        };
        match &mut self.state {
            State::Valid(held) if held.token.generation == generation => {
                self.state = State::Empty {
                    why: RefreshReason::Rejected,
                };
                true
            }
            State::Refreshing { held, .. } if is_it(held) => {
                *held = None;
                true
            }
            State::Failed { held, why, .. } if is_it(held) => {
                *held = None;
                *why = RefreshReason::Rejected;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn token(lifetime: u64) -> Token {
        Token::bearer("t".into(), Some(secs(lifetime)))
    }

    fn ticket(decision: TokenDecision) -> RefreshTicket {
        match decision {
            TokenDecision::Refresh { ticket, .. } => ticket,
            other => panic!("expected a refresh, got {other:?}"),
        }
    }

    #[test]
    fn the_refresh_moment_is_80_percent_or_60_seconds_ahead_whichever_first_never_before_half() {
        let p = RefreshPolicy::default().with_jitter_percent(0);
        let t0 = Instant::now();
        // 1 h: 80 % = 2880 s, 60 s ahead = 3540 s -> 2880 s.
        assert_eq!(p.refresh_at(t0, secs(3600), 7), t0 + secs(2880));
        // 200 s: 80 % = 160 s, 60 s ahead = 140 s -> 140 s.
        assert_eq!(p.refresh_at(t0, secs(200), 7), t0 + secs(140));
        // 60 s: 80 % = 48 s, 60 s ahead = 0 s, half = 30 s -> 30 s.
        assert_eq!(p.refresh_at(t0, secs(60), 7), t0 + secs(30));
        // 0 s: at once.
        assert_eq!(p.refresh_at(t0, secs(0), 7), t0);
    }

    #[test]
    fn jitter_moves_the_refresh_earlier_by_at_most_its_percentage() {
        let p = RefreshPolicy::default();
        let t0 = Instant::now();
        // 1 h: 2880 s, up to 10 % (288 s) earlier; half the jitter range is half of that.
        assert_eq!(p.refresh_at(t0, secs(3600), 0), t0 + secs(2880));
        assert_eq!(p.refresh_at(t0, secs(3600), u64::MAX), t0 + secs(2592));
        assert_eq!(p.refresh_at(t0, secs(3600), 1 << 63), t0 + secs(2736));
    }

    #[test]
    fn an_absurd_lifetime_saturates_instead_of_overflowing() {
        let p = RefreshPolicy::default();
        let t0 = Instant::now();
        assert!(p.refresh_at(t0, Duration::MAX, u64::MAX) > t0);
    }

    #[test]
    fn one_call_refreshes_and_every_other_waits_while_there_is_no_token() {
        let t0 = Instant::now();
        let mut l = TokenLifecycle::new(RefreshPolicy::default());
        let t = ticket(l.decide(t0));
        for _ in 0..10 {
            assert!(matches!(l.decide(t0), TokenDecision::Wait));
        }
        let got = l.handle_refreshed(t, t0 + secs(1), token(3600), 0);
        assert_eq!(got.unwrap().unwrap().generation(), 1);
        assert!(matches!(l.decide(t0 + secs(1)), TokenDecision::Use(_)));
    }

    #[test]
    fn an_expired_token_is_never_used_and_its_refresh_has_no_fallback() {
        let t0 = Instant::now();
        let mut l = TokenLifecycle::new(RefreshPolicy::default());
        let t = ticket(l.decide(t0));
        l.handle_refreshed(t, t0, token(100), 0);
        match l.decide(t0 + secs(100)) {
            TokenDecision::Refresh {
                reason: RefreshReason::Expired,
                fallback: None,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(l.decide(t0 + secs(100)), TokenDecision::Wait));
    }

    #[test]
    fn a_failed_refresh_fails_calls_for_the_cooldown_then_one_call_tries_again() {
        let t0 = Instant::now();
        let mut l = TokenLifecycle::new(RefreshPolicy::default());
        let t = ticket(l.decide(t0));
        l.handle_failed(t, t0 + secs(1), TokenError::Deadline);
        assert!(matches!(l.decide(t0 + secs(5)), TokenDecision::Fail(_)));
        // Cooldown 5 s from the failure at 1 s: until 6 s.
        assert!(matches!(
            l.decide(t0 + secs(6)),
            TokenDecision::Refresh {
                reason: RefreshReason::Initial,
                ..
            }
        ));
    }

    #[test]
    fn a_failed_refresh_ahead_keeps_the_valid_token_in_use() {
        let t0 = Instant::now();
        let mut l = TokenLifecycle::new(RefreshPolicy::default().with_jitter_percent(0));
        let t = ticket(l.decide(t0));
        l.handle_refreshed(t, t0, token(100), 0);
        // 100 s: 80 s vs 40 s ahead -> 50 s (half).
        let t = ticket(l.decide(t0 + secs(50)));
        l.handle_failed(t, t0 + secs(51), TokenError::Deadline);
        assert!(matches!(l.decide(t0 + secs(52)), TokenDecision::Use(_)));
        // After the cooldown (56 s), one call refreshes ahead again.
        assert!(matches!(
            l.decide(t0 + secs(56)),
            TokenDecision::Refresh {
                reason: RefreshReason::Ahead,
                fallback: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_rejected_token_is_dropped_once_and_a_stale_rejection_is_ignored() {
        let t0 = Instant::now();
        let mut l = TokenLifecycle::new(RefreshPolicy::default());
        let t = ticket(l.decide(t0));
        l.handle_refreshed(t, t0, token(3600), 0);
        assert!(l.handle_rejected(1));
        assert!(!l.handle_rejected(1));
        let t = match l.decide(t0) {
            TokenDecision::Refresh {
                ticket,
                reason: RefreshReason::Rejected,
                fallback: None,
            } => ticket,
            other => panic!("{other:?}"),
        };
        l.handle_refreshed(t, t0, token(3600), 0);
        // A late 401 for the first token does not drop the second.
        assert!(!l.handle_rejected(1));
        assert!(matches!(l.decide(t0), TokenDecision::Use(t) if t.generation() == 2));
    }

    #[test]
    fn an_abandoned_refresh_is_taken_over_and_its_stale_outcome_ignored() {
        let t0 = Instant::now();
        let mut l = TokenLifecycle::new(RefreshPolicy::default());
        let first = ticket(l.decide(t0));
        l.handle_abandoned(first);
        let second = ticket(l.decide(t0));
        assert_ne!(first, second);
        assert!(l.handle_refreshed(first, t0, token(60), 0).is_none());
        l.handle_failed(first, t0, TokenError::Deadline);
        assert!(l.is_refreshing());
        assert!(l.handle_refreshed(second, t0, token(60), 0).is_some());
    }

    #[test]
    fn a_token_that_expired_in_transit_is_a_failed_refresh() {
        let t0 = Instant::now();
        let mut l = TokenLifecycle::new(RefreshPolicy::default());
        let t = ticket(l.decide(t0));
        let got = l.handle_refreshed(t, t0 + secs(2), token(1), 0);
        assert!(matches!(got, Some(Err(TokenError::InvalidResponse(_)))));
        assert!(matches!(l.decide(t0 + secs(2)), TokenDecision::Fail(_)));
    }

    #[test]
    fn nonsense_refresh_settings_are_rejected_with_the_field() {
        let bad = RefreshPolicy::default().with_ahead_percent(0).validate();
        assert_eq!(
            bad.unwrap_err().field(),
            "auth.oauth2.refresh.ahead_percent"
        );
        let bad = RefreshPolicy::default().with_jitter_percent(51).validate();
        assert_eq!(
            bad.unwrap_err().field(),
            "auth.oauth2.refresh.jitter_percent"
        );
        let bad = RefreshPolicy::default()
            .with_failure_cooldown(Duration::ZERO)
            .validate();
        assert_eq!(
            bad.unwrap_err().field(),
            "auth.oauth2.refresh.failure_cooldown"
        );
        assert!(RefreshPolicy::default().validate().is_ok());
    }
}
