//! The [`Exchange`] state machine; its documentation tells the whole story.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, HOST, USER_AGENT};
use http::{HeaderMap, Method, Uri};

use crate::coding::BodyLimit;
use crate::config::Policy;
use crate::error::{
    CallMeta, Error, StatusError, StopReason, TimeoutKind, TransportError, TransportErrorKind,
};
use crate::guard::fleet::{CoordinatorError, FailureMode, SlotGrant};
use crate::guard::hedge::HedgeAfter;
use crate::guard::{
    Admission, Ask, CallGuards, CircuitVerdict, Hold, HoldReason, Refusal, WaitWhy, hints,
    rate_limit_quota,
};
use crate::ids::{CorrelationId, IdempotencyKey};
use crate::messages::{AttemptDeadlines, AttemptRequest, Input, Output, WaitReason};
use crate::redact::Redactor;
use crate::request::{KeyChoice, Request};
use crate::response::Response;
use crate::retry::{
    ClassifyContext, Jitter, Outcome, RetryAction, RetryReason, SeededJitter, is_idempotent_method,
};
use crate::retry_after::{resolve_retry_after, response_date};
use crate::telemetry::Telemetry;

#[derive(Debug)]
enum State {
    Ready,
    /// At least one attempt is in flight ([`Exchange::flights`]).
    InFlight,
    Waiting {
        until: Instant,
        reason: WaitReason,
    },
    Done(Result<Response, Error>),
}

/// One attempt in flight: its number, when it started, and its deadline (its own timeout or
/// the whole call's).
#[derive(Clone, Copy, Debug)]
struct Flight {
    attempt: u32,
    started: Instant,
    until: Instant,
    kind: TimeoutKind,
    hedge: bool,
}

/// The state machine of one logical call, every attempt and wait included; the crate docs show
/// the drive loop. Its `Debug` shows the URI redacted and no header values.
///
/// ```text
///              new()
///                |
///                v
///   +------> [Ready] --poll_output--> Send(attempt n) --> [InFlight n]
///   |                                                        |   poll_output -> Wait(attempt deadline)
///   |                                                        |
///   |        Response / Failed / Timer past the deadline     |
///   |        (stale attempts and early timers are ignored)   v
///   |                                                   classify + schedule
///   |                                                    /           \
///   |      retry allowed (attempts, deadline, budget)   /             \  success or final failure
///   |                                                  v               v
///   +---- poll_output at/after until <-- [Waiting until]            [Done] -- poll_output --> Done(result), forever
/// ```
///
/// Before every attempt leaves `[Ready]`, the state the exchange shares with the other calls to
/// its host ([`Guards`](crate::Guards)) admits it, makes it wait (`[Waiting until]` with
/// [`WaitReason::HostHold`], [`WaitReason::CircuitOpen`] or [`WaitReason::RateLimiter`]), or
/// ends it at once (`[Done]` with `RateLimited` or `CircuitOpen`, the request never sent); every
/// attempt's outcome is reported back to it.
///
/// The exchange reads no clock and draws no randomness: the caller passes `now` to
/// [`Exchange::poll_output`], the time of every [`Input`], and a jitter seed to [`Exchange::new`].
/// The same seed and the same inputs always give the same outputs.
pub struct Exchange {
    policy: Policy,
    method: Method,
    uri: Uri,
    /// The headers the next attempt sends, composed ([`compose_headers`]); the first attempt
    /// takes them, and a retry composes them again.
    next_headers: Option<HeaderMap>,
    /// The caller's headers (secret values marked), kept to compose a retry's; empty when the
    /// caller gave none or no attempt can follow the first.
    caller_headers: HeaderMap,
    body: Bytes,
    classifier: Option<std::sync::Arc<dyn crate::retry::Classifier>>,
    idempotent: bool,
    correlation_id: CorrelationId,
    idempotency_key: Option<IdempotencyKey>,
    max_attempts: u32,
    attempt_timeout: Duration,
    retry_after_cap: Duration,
    start: Instant,
    deadline: Instant,
    last_now: Instant,
    jitter: SeededJitter,
    attempts: u32,
    previous_delay: Duration,
    /// Whether any attempt may have reached the server.
    maybe_sent: bool,
    /// How this call takes part in the state shared across calls.
    call_guards: CallGuards,
    /// The vendor's key for that state, when it is not the host.
    guard_key: Option<std::borrow::Cow<'static, str>>,
    /// Where the host starts in the URI's authority (past any userinfo), found once: the budget
    /// and the state shared across calls look the host up several times per call.
    host_offset: usize,
    /// The wait in progress ends at a rate-limiter slot reserved for this call.
    slot_due: bool,
    /// This call's dealings with the fleet's coordinator (all empty without one).
    fleet: FleetCall,
    /// The attempt in flight is a half-open probe (of this episode).
    probe: Option<crate::guard::breaker::ProbeId>,
    /// A monotonic time and the wall-clock time at that moment, to express local refusals
    /// (circuit, limiter) as wall-clock times.
    anchor: Option<(Instant, SystemTime)>,
    /// The failure of the last attempt while a retry is pending, for an error that ends the
    /// call before the retry is sent.
    last_error: Option<Box<Error>>,
    /// The attempts in flight, oldest first: one, or more while hedging.
    flights: smallvec::SmallVec<[Flight; 2]>,
    /// Whether this call hedges (hedging on for it, and the request idempotent).
    hedge: bool,
    /// Hedges sent.
    hedges: u32,
    /// When the next hedge is due, while attempts are in flight and one may still go.
    hedge_at: Option<Instant>,
    /// A hedge was refused: the call sends no more.
    hedging_stopped: bool,
    state: State,
    redactor: Redactor,
    telemetry: Telemetry,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("method", &self.method)
            .field("uri", &self.redactor.uri(&self.uri))
            .field(
                "headers",
                &self
                    .redactor
                    .headers(self.next_headers.as_ref().unwrap_or(&self.caller_headers)),
            )
            .field("correlation_id", &self.correlation_id)
            .field("idempotency_key", &self.idempotency_key)
            .field("idempotent", &self.idempotent)
            .field("attempts", &self.attempts)
            .field("max_attempts", &self.max_attempts)
            .field("deadline", &self.deadline)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The headers an attempt sends: the caller's, then the `User-Agent` (unless the caller gave
/// one), the `Host` (unless given; [`crate::url::host_header`] has the rule), the
/// correlation ID and the idempotency key. Composed into the caller's own map, which the first
/// attempt then takes whole, so that an attempt does not clone a map (and a transport that adds
/// a header does not grow a copy made without spare room).
fn compose_headers(
    mut headers: HeaderMap,
    policy: &Policy,
    uri: &Uri,
    correlation_id: &CorrelationId,
    idempotency_key: Option<&IdempotencyKey>,
) -> HeaderMap {
    // Most calls give no headers of their own: then none can be there already (a lookup in a
    // map that has some hashes the name).
    let given = !headers.is_empty();
    if !(given && headers.contains_key(USER_AGENT)) {
        headers.insert(USER_AGENT, policy.user_agent().clone());
    }
    if let Some(accepted) = policy.accept_encoding() {
        if !(given && headers.contains_key(ACCEPT_ENCODING)) {
            headers.insert(ACCEPT_ENCODING, accepted.clone());
        }
    }
    // `host_header` gives none only for a URI that is not absolute http or https.
    if !(given && headers.contains_key(HOST)) {
        let host = match policy.base_target() {
            Some(base) => base.host_header(uri),
            None => crate::url::host_header(uri),
        };
        if let Some(host) = host {
            headers.insert(HOST, host);
        }
    }
    headers.insert(
        policy.correlation_header().clone(),
        correlation_id.header_value(),
    );
    if let Some(key) = idempotency_key {
        headers.insert(policy.idempotency_header().clone(), key.header_value());
    }
    headers
}

/// Salt for the ID stream, so that minting IDs does not shift the jitter sequence.
const ID_STREAM: u64 = 0x6567_7265_7373_4944; // "egressID"

impl Exchange {
    /// Starts an exchange for `request` under `policy` at `now`, drawing jitter from `seed`.
    ///
    /// A request the policy cannot send (a bad override, a URL that is not a valid URI) gives an
    /// exchange that is already done with [`Error::InvalidRequest`].
    pub fn new(request: Request, policy: &Policy, now: Instant, seed: u64) -> Self {
        Self::refusing(request, policy, now, seed, None, None)
    }

    /// Tells the exchange the wall-clock time at the `now` it was created with, so that the
    /// `retry_at` of a call refused by the circuit breaker or the rate limiter is a wall-clock
    /// time (a [`Client`](crate::Client) does this). Without it, and before any response, such a
    /// `retry_at` is counted from the Unix epoch.
    pub fn with_wall(mut self, wall: SystemTime) -> Self {
        self.anchor = Some((self.start, wall));
        self
    }

    /// [`new`](Self::new), already done with `refused` when it is given (a request the client
    /// could not prepare, such as one its authentication refused). The exchange is built in
    /// place with its state, so that refusing does not copy a whole exchange.
    pub(crate) fn refusing(
        mut request: Request,
        policy: &Policy,
        now: Instant,
        seed: u64,
        refused: Option<Error>,
        wall: Option<SystemTime>,
    ) -> Self {
        // The URI to send: built already by a client from its prepared base, else parsed from
        // the URL (which must then be an http URI too).
        let bad_uri = match &request.uri {
            Some(_) => None,
            None => match request.url().as_str().parse::<Uri>() {
                Ok(uri) => {
                    request.uri = Some(uri);
                    None
                }
                Err(e) => Some(format!("the url is not a valid http uri: {e}")),
            },
        };
        let mut ids = SeededJitter::new(seed ^ ID_STREAM);
        let mut mint = || {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&ids.next_u64().to_le_bytes());
            bytes[8..].copy_from_slice(&ids.next_u64().to_le_bytes());
            bytes
        };
        let o = &request.overrides;
        // The caller's ID: the override, else a valid raw header, else a new one.
        let from_header = || {
            let value = request
                .headers
                .get(policy.correlation_header())?
                .to_str()
                .ok()?;
            CorrelationId::new(value).ok()
        };
        let correlation_id = o
            .correlation_id
            .clone()
            .or_else(from_header)
            .unwrap_or_else(|| CorrelationId::from_random_bytes(mint()));
        let idempotency_key = match &o.idempotency_key {
            KeyChoice::None => None,
            KeyChoice::Mint => Some(IdempotencyKey::from_random_bytes(mint())),
            KeyChoice::Given(key) => Some(key.clone()),
        };
        let config = policy.config();
        let has_key =
            idempotency_key.is_some() || request.headers.contains_key(policy.idempotency_header());
        let idempotent = o
            .idempotent
            .unwrap_or(is_idempotent_method(&request.method) || has_key);
        // Only an idempotent request is ever hedged, whatever the client or request asks.
        let hedge = idempotent && o.hedge.unwrap_or(config.hedging.enabled);
        let max_attempts = o.max_attempts.unwrap_or(config.retry.max_attempts);
        let attempt_timeout = o.attempt_timeout.unwrap_or(config.timeouts.attempt);
        let deadline_after = o.deadline.unwrap_or(config.timeouts.deadline);

        let redactor = request.with_secrets(policy.redactor());
        let telemetry = Telemetry::new(&request, &correlation_id, &redactor, now);
        let mut headers = request.headers;
        redactor.mark_sensitive(&mut headers);
        // A copy only for retries to compose their headers from; most calls give no headers,
        // and then a retry needs no copy either.
        let caller_headers = if headers.is_empty() || (max_attempts <= 1 && !hedge) {
            HeaderMap::new()
        } else {
            headers.clone()
        };
        let uri = request.uri.unwrap_or_default();
        // Userinfo ends at the last `@` of the authority: a byte search, cheaper than `rsplit`.
        let host_offset = uri.authority().map_or(0, |a| {
            a.as_str()
                .bytes()
                .rposition(|b| b == b'@')
                .map_or(0, |at| at + 1)
        });
        let next_headers = compose_headers(
            headers,
            policy,
            &uri,
            &correlation_id,
            idempotency_key.as_ref(),
        );

        let problem = if max_attempts == 0 {
            Some("max_attempts override must be at least 1".to_owned())
        } else if deadline_after.is_zero() || attempt_timeout.is_zero() {
            Some("deadline and attempt timeout overrides must be greater than zero".to_owned())
        } else {
            bad_uri
        };
        // The client's refusal comes first, then the request's own problem.
        let state = match refused.or_else(|| problem.map(Error::invalid_request)) {
            Some(mut error) => {
                // `meta(now, None)` of a call that has not started.
                *error.meta_mut() = CallMeta {
                    may_have_been_sent: Some(false),
                    attempts: 0,
                    elapsed: Duration::ZERO,
                    correlation_id: Some(correlation_id.clone()),
                    stop: None,
                };
                State::Done(Err(error))
            }
            None => State::Ready,
        };
        Self {
            policy: policy.clone(),
            method: request.method,
            uri,
            next_headers: Some(next_headers),
            caller_headers,
            body: request.body,
            classifier: o.classifier.clone(),
            idempotent,
            correlation_id,
            idempotency_key,
            max_attempts,
            attempt_timeout,
            retry_after_cap: o.retry_after_cap.unwrap_or(config.retry.retry_after_cap),
            start: now,
            deadline: saturating_add(now, deadline_after),
            last_now: now,
            jitter: SeededJitter::new(seed),
            attempts: 0,
            previous_delay: Duration::ZERO,
            maybe_sent: false,
            call_guards: o.guards,
            guard_key: o.guard_key.clone(),
            host_offset,
            slot_due: false,
            fleet: FleetCall::default(),
            probe: None,
            anchor: wall.map(|wall| (now, wall)),
            last_error: None,
            flights: smallvec::SmallVec::new(),
            hedge,
            hedges: 0,
            hedge_at: None,
            hedging_stopped: false,
            state,
            redactor,
            telemetry,
        }
    }

    /// Feeds one input. Inputs for an attempt that is not in flight (any more), and timers that
    /// fire before anything is due, are ignored.
    pub fn handle_input(&mut self, input: Input) {
        match input {
            Input::Timer { at } => {
                let at = self.observe(at);
                self.check_expiry(at);
            }
            Input::Response {
                attempt,
                at,
                wall,
                response,
            } => {
                if !self.is_in_flight(attempt) {
                    return;
                }
                let at = self.observe(at);
                self.on_response(attempt, at, wall, response);
            }
            Input::Failed { attempt, at, error } => {
                if !self.is_in_flight(attempt) {
                    return;
                }
                let at = self.observe(at);
                self.on_failure(attempt, at, error);
            }
            Input::Slots { at, result } => {
                if !self.fleet.waiting {
                    return;
                }
                let at = self.observe(at);
                self.on_slots(at, result);
            }
        }
    }

    /// Returns what to do next. Call it after every [`handle_input`](Self::handle_input) until it
    /// returns [`Output::Wait`] or [`Output::Done`].
    pub fn poll_output(&mut self, now: Instant) -> Output {
        self.poll(now, false)
    }

    /// [`poll_output`](Self::poll_output) for a driver that stops at [`Output::Done`] and drops
    /// the exchange (as [`drive`](crate::drive()) does): the result is moved out instead of
    /// cloned. Never poll the exchange again after it returned `Done` this way.
    pub(crate) fn poll_output_to_end(&mut self, now: Instant) -> Output {
        self.poll(now, true)
    }

    fn poll(&mut self, now: Instant, take: bool) -> Output {
        let now = self.observe(now);
        loop {
            if take && matches!(self.state, State::Done(_)) {
                // The driver drops the exchange at once; `Ready` is never looked at again.
                if let State::Done(result) = std::mem::replace(&mut self.state, State::Ready) {
                    return Output::Done(result);
                }
            }
            match &self.state {
                State::Done(result) => return Output::Done(result.clone()),
                State::Ready => {
                    if now >= self.deadline {
                        self.fail(
                            now,
                            StopReason::Deadline,
                            Error::Timeout {
                                kind: TimeoutKind::Deadline,
                                source: None,
                                meta: CallMeta::default(),
                            },
                        );
                        continue;
                    }
                    if !self.admit(now) {
                        if let Some(acquire) = self.fleet.pending.take() {
                            return Output::Acquire(*acquire);
                        }
                        continue;
                    }
                    return Output::Send(self.start_attempt(now, false));
                }
                State::InFlight => {
                    let Some(first) = self.next_expiry() else {
                        // Never: an exchange in flight has an attempt in flight. Were it to
                        // happen, the call would end rather than hang.
                        self.fail(
                            now,
                            StopReason::NotRetryable,
                            Error::invalid_request("no attempt in flight"),
                        );
                        continue;
                    };
                    if now >= first.until {
                        self.check_expiry(now);
                        continue;
                    }
                    match self.hedge_at {
                        Some(due) if now >= due => {
                            if let Some(attempt) = self.try_hedge(now) {
                                return Output::Send(attempt);
                            }
                            continue;
                        }
                        Some(due) if due < first.until => {
                            return Output::Wait {
                                until: due,
                                reason: WaitReason::Hedge {
                                    attempt: self.attempts + 1,
                                },
                            };
                        }
                        _ => {}
                    }
                    return Output::Wait {
                        until: first.until,
                        reason: WaitReason::AttemptDeadline {
                            attempt: first.attempt,
                        },
                    };
                }
                State::Waiting { until, reason } => {
                    if now >= *until {
                        if self.fleet.waiting {
                            // The coordinator did not answer in time.
                            self.on_slots(now, Err(CoordinatorError::Timeout));
                            continue;
                        }
                        self.state = State::Ready;
                        continue;
                    }
                    return Output::Wait {
                        until: *until,
                        reason: *reason,
                    };
                }
            }
        }
    }

    /// How many attempts have been started.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The attempt in flight, if one is (the latest, when hedges are in flight beside it).
    pub fn in_flight(&self) -> Option<u32> {
        self.flights.last().map(|f| f.attempt)
    }

    /// Whether the exchange still waits for attempt `attempt`. A driver cancels (drops) every
    /// attempt the exchange no longer waits for: a hedge's loser once another attempt won, an
    /// attempt past its deadline, every attempt once the call is done.
    pub fn is_waiting_for(&self, attempt: u32) -> bool {
        self.is_in_flight(attempt)
    }

    /// How many hedges the call has sent.
    pub fn hedges(&self) -> u32 {
        self.hedges
    }

    /// Whether the exchange has finished.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// The correlation ID sent on every attempt.
    pub fn correlation_id(&self) -> &CorrelationId {
        &self.correlation_id
    }

    /// The idempotency key sent on every attempt, if any.
    pub fn idempotency_key(&self) -> Option<&IdempotencyKey> {
        self.idempotency_key.as_ref()
    }

    /// The absolute whole-call deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the request counts as safe to re-send after it may have been processed.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// The host (and port, when not the scheme's default) the retry budget is kept for, as
    /// [`Request::budget_key`] names it: the URI's authority (which never carries userinfo,
    /// `Request` moves it into a header), read from the URI rather than copied per call.
    fn budget_key(&self) -> &str {
        self.uri
            .authority()
            .and_then(|a| a.as_str().get(self.host_offset..))
            .unwrap_or("")
    }

    /// The key of the state shared across calls: the vendor's, else the host.
    fn guard_key(&self) -> &str {
        crate::guard::key(self.guard_key.as_ref(), self.budget_key())
    }

    /// The wall-clock time at monotonic time `t`, from the anchor.
    fn wall_at(&self, t: Instant) -> SystemTime {
        let (base, wall) = self.anchor.unwrap_or((self.start, SystemTime::UNIX_EPOCH));
        if t >= base {
            wall.checked_add(t - base).unwrap_or(wall)
        } else {
            wall.checked_sub(base - t).unwrap_or(wall)
        }
    }

    /// Asks the shared state whether the next attempt may go now. `false` when the exchange
    /// now waits or has ended instead.
    fn admit(&mut self, now: Instant) -> bool {
        let guards = self.policy.guards();
        if !guards.is_active() {
            return true;
        }
        let ask = Ask {
            key: self.guard_key(),
            correlation_id: &self.correlation_id,
            now,
            deadline: self.deadline,
            guards: self.call_guards,
            has_slot: self.slot_due,
            local_only: self.fleet.local,
        };
        let admission = guards.admit(&ask);
        self.slot_due = false;
        match admission {
            Admission::Go { probe } => {
                self.probe = probe;
                true
            }
            Admission::Wait { until, why, slot } => {
                self.slot_due = slot;
                let reason = match why {
                    WaitWhy::Hold(_) => WaitReason::HostHold,
                    WaitWhy::Circuit => WaitReason::CircuitOpen,
                    WaitWhy::RateLimit => WaitReason::RateLimiter,
                };
                self.telemetry
                    .guard_wait(reason, until.saturating_duration_since(now));
                self.state = State::Waiting { until, reason };
                false
            }
            Admission::Refuse(refusal) => {
                let last = self.last_error.take();
                let meta = CallMeta::default();
                let (stop, error) = match refusal {
                    Refusal::Held(hold) => (
                        StopReason::HostHold,
                        Error::RateLimited {
                            retry_at: hold.retry_at,
                            last,
                            meta,
                        },
                    ),
                    Refusal::CircuitOpen { until } => (
                        StopReason::CircuitOpen,
                        Error::CircuitOpen {
                            retry_at: self.wall_at(until),
                            last,
                            meta,
                        },
                    ),
                    Refusal::RateLimited { slot } => (
                        StopReason::RateLimiter,
                        Error::RateLimited {
                            retry_at: self.wall_at(slot),
                            last,
                            meta,
                        },
                    ),
                };
                self.fail(now, stop, error);
                false
            }
            Admission::Acquire(ask) => {
                let Some(fleet) = self.policy.guards().fleet() else {
                    // Only a client with a coordinator is asked to acquire; go unlimited
                    // rather than stall if that ever changes.
                    return true;
                };
                let until = saturating_add(now, fleet.timeout).min(self.deadline);
                let acquire = crate::messages::Acquire::new(*ask, fleet.coordinator.clone());
                self.fleet.pending = Some(Box::new(acquire));
                self.fleet.waiting = true;
                let reason = WaitReason::Coordinator;
                self.state = State::Waiting { until, reason };
                false
            }
        }
    }

    /// The coordinator's answer to this call's [`Output::Acquire`] (or its timeout).
    fn on_slots(&mut self, at: Instant, result: Result<SlotGrant, CoordinatorError>) {
        self.fleet.waiting = false;
        self.state = State::Ready;
        let failure = match result {
            Ok(grant) if !grant.slots.is_empty() => {
                let key = self.guard_key().to_owned();
                self.policy
                    .guards()
                    .lease(&key, at, &grant, |t| self.wall_at(t));
                return;
            }
            Ok(grant) => match grant.next {
                // No slot before the deadline anywhere in the fleet: refused, never sent.
                Some(next) => {
                    let error = Error::RateLimited {
                        retry_at: self.wall_at(saturating_add(at, next)),
                        last: self.last_error.take(),
                        meta: CallMeta::default(),
                    };
                    return self.fail(at, StopReason::RateLimiter, error);
                }
                None => CoordinatorError::Protocol("no slot and no next slot".to_owned()),
            },
            Err(error) => error,
        };
        let mode = self
            .policy
            .guards()
            .fleet()
            .map_or(FailureMode::Open, |f| f.failure_mode);
        self.telemetry.fleet_fallback(mode, &failure);
        match mode {
            FailureMode::Closed => {
                let error = Error::FleetUnavailable {
                    source: failure,
                    meta: CallMeta::default(),
                };
                self.fail(at, StopReason::FleetUnavailable, error);
            }
            // Fail open: this call's limits are the local ones from now on.
            _ => self.fleet.local = true,
        }
    }

    /// Reports what attempt said about its host: a success earns retry budget; the breaker
    /// counts successes and failures (and a neutral outcome frees a probe permit).
    fn report(&mut self, at: Instant, verdict: CircuitVerdict) {
        let probe = self.probe.take();
        if verdict == CircuitVerdict::Success {
            self.policy.budget().record_success(self.budget_key(), at);
        }
        // The breaker counted the attempt when it admitted it; only failures and probes report.
        if self.call_guards.circuit_breaker
            && (verdict == CircuitVerdict::Failure || probe.is_some())
        {
            self.policy
                .guards()
                .record(self.guard_key(), at, verdict, probe, &self.correlation_id);
        }
    }

    /// Holds this call's host (with every other call to it) until `at + delay`, the delay
    /// capped like a `Retry-After`; `retry_at` is the server's own (uncapped) time.
    fn hold_host(&self, at: Instant, delay: Duration, retry_at: SystemTime, reason: HoldReason) {
        if delay.is_zero() {
            return;
        }
        let until = saturating_add(at, delay.min(self.retry_after_cap));
        let hold = Hold {
            until,
            retry_at,
            reason,
        };
        self.policy
            .guards()
            .hold_host(self.guard_key(), at, hold, &self.correlation_id);
    }

    fn observe(&mut self, at: Instant) -> Instant {
        self.last_now = self.last_now.max(at);
        self.last_now
    }

    fn is_in_flight(&self, attempt: u32) -> bool {
        matches!(self.state, State::InFlight) && self.flights.iter().any(|f| f.attempt == attempt)
    }

    /// The attempt in flight whose deadline comes first.
    fn next_expiry(&self) -> Option<Flight> {
        self.flights.iter().copied().min_by_key(|f| f.until)
    }

    /// Takes attempt `attempt` out of the flights.
    fn land(&mut self, attempt: u32) -> Option<Flight> {
        let i = self.flights.iter().position(|f| f.attempt == attempt)?;
        Some(self.flights.remove(i))
    }

    /// Ends every attempt still in flight when the call ends (the driver drops them).
    fn cancel_flights(&mut self, at: Instant) {
        self.hedge_at = None;
        for f in std::mem::take(&mut self.flights) {
            self.telemetry
                .attempt_finished(f.attempt, at, None, None, Some("cancelled"));
        }
    }

    /// Sends a hedge now if nothing forbids it (see [`guard::hedge`](crate::guard::hedge));
    /// otherwise the call hedges no more.
    fn try_hedge(&mut self, now: Instant) -> Option<AttemptRequest> {
        self.hedge_at = None;
        let n = self.attempts + 1;
        if now >= self.deadline {
            return None;
        }
        let guards = self.policy.guards();
        let key = self.guard_key();
        let mut refusal = guards.hedge_refusal(key, now, self.call_guards, self.fleet.local);
        if refusal.is_none() && !self.policy.budget().try_retry(self.budget_key(), now) {
            refusal = Some("budget");
        }
        if refusal.is_none() && guards.is_active() {
            // A hedge never waits: asked with no time left, the limiter refuses rather than
            // reserving a later slot.
            let ask = Ask {
                key,
                correlation_id: &self.correlation_id,
                now,
                deadline: now,
                guards: self.call_guards,
                has_slot: false,
                local_only: self.fleet.local,
            };
            match guards.admit(&ask) {
                Admission::Go { probe } => {
                    if probe.is_some() {
                        self.probe = probe;
                    }
                }
                Admission::Refuse(Refusal::Held(_)) => refusal = Some("host_hold"),
                Admission::Refuse(Refusal::CircuitOpen { .. }) => refusal = Some("circuit_open"),
                _ => refusal = Some("rate_limiter"),
            }
        }
        if let Some(reason) = refusal {
            self.hedging_stopped = true;
            self.telemetry.hedge_refused(n, reason);
            return None;
        }
        let after = self
            .flights
            .last()
            .map_or(Duration::ZERO, |f| now.saturating_duration_since(f.started));
        self.hedges += 1;
        self.telemetry.hedge(n, after);
        Some(self.start_attempt(now, true))
    }

    fn meta(&self, at: Instant, stop: Option<StopReason>) -> CallMeta {
        CallMeta {
            may_have_been_sent: Some(self.maybe_sent),
            attempts: self.attempts,
            elapsed: at.saturating_duration_since(self.start),
            correlation_id: Some(self.correlation_id.clone()),
            stop,
        }
    }

    fn start_attempt(&mut self, now: Instant, hedge: bool) -> AttemptRequest {
        self.attempts += 1;
        if !hedge {
            self.last_error = None;
        }
        let own = saturating_add(now, self.attempt_timeout);
        let (until, kind) = if own < self.deadline {
            (own, TimeoutKind::Attempt)
        } else {
            (self.deadline, TimeoutKind::Deadline)
        };
        self.flights.push(Flight {
            attempt: self.attempts,
            started: now,
            until,
            kind,
            hedge,
        });
        self.state = State::InFlight;
        self.hedge_at = self.next_hedge(now);
        let span = self.telemetry.attempt_started(self.attempts, now, hedge);
        let t = &self.policy.config().timeouts;
        let phase = |d: Duration| now.checked_add(d).map_or(until, |p| p.min(until));
        let left = until.saturating_duration_since(now);
        let mut request = http::Request::new(self.body.clone());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = match self.next_headers.take() {
            Some(headers) => headers,
            None => compose_headers(
                self.caller_headers.clone(),
                &self.policy,
                &self.uri,
                &self.correlation_id,
                self.idempotency_key.as_ref(),
            ),
        };
        AttemptRequest {
            attempt: self.attempts,
            request,
            deadlines: AttemptDeadlines {
                started: now,
                connect: phase(t.connect),
                pool: phase(t.pool),
                attempt: until,
            },
            read_timeout: t.read.min(left),
            write_timeout: t.write.min(left),
            body_limit: self.policy.config().max_response_body,
            decoding: self.policy.decoding(),
            span,
        }
    }

    /// When the next hedge is due, for an attempt starting at `now`: `None` when the call does
    /// not hedge, has sent its hedges, or the delay ends at or past the deadline.
    fn next_hedge(&self, now: Instant) -> Option<Instant> {
        let config = &self.policy.config().hedging;
        if !self.hedge || self.hedging_stopped || self.hedges >= config.max_hedges {
            return None;
        }
        let guards = self.policy.guards();
        let key = self.guard_key();
        let delay = config.delay(|p| guards.latency_percentile(key, now, p));
        let at = saturating_add(now, delay);
        (at < self.deadline).then_some(at)
    }

    /// Ends every attempt whose deadline has passed at `at`, earliest first.
    fn check_expiry(&mut self, at: Instant) {
        while matches!(self.state, State::InFlight) {
            match self.next_expiry() {
                Some(flight) if at >= flight.until => self.expire(flight, at),
                _ => return,
            }
        }
    }

    fn expire(&mut self, flight: Flight, at: Instant) {
        let kind = flight.kind;
        self.land(flight.attempt);
        self.telemetry
            .attempt_finished(flight.attempt, at, None, None, Some(kind.as_str()));
        // The request was handed to the transport and may be on its way.
        self.maybe_sent = true;
        let error = Error::Timeout {
            kind,
            source: None,
            meta: CallMeta::default(),
        };
        if kind == TimeoutKind::Deadline {
            // The upstream did not answer in time: a failure for the breaker too.
            self.report(at, CircuitVerdict::Failure);
            return self.fail(at, StopReason::Deadline, error);
        }
        self.decide(&Outcome::TimedOut(kind), at, None, error);
    }

    fn on_failure(&mut self, attempt: u32, at: Instant, failure: TransportError) {
        // A transport timeout at or past the attempt's deadline is that deadline expiring (the
        // transport's limits are capped by it and may fire first): report it as the core's own.
        if let Some(flight) = self.flights.iter().copied().find(|f| f.attempt == attempt) {
            if at >= flight.until && failure.kind().timeout_kind().is_some() {
                return self.expire(flight, at);
            }
        }
        self.land(attempt);
        self.maybe_sent |= failure.may_have_been_sent();
        self.telemetry
            .attempt_finished(attempt, at, None, None, Some(failure.kind().as_str()));
        let limit = self.policy.config().max_response_body;
        let meta = CallMeta::default();
        let error = match failure.kind() {
            TransportErrorKind::BodyTooLarge => Error::BodyTooLarge {
                limit,
                exceeded: failure.body_limit(),
                meta,
            },
            kind => match kind.timeout_kind() {
                Some(kind) => Error::Timeout {
                    kind,
                    source: Some(failure.clone()),
                    meta,
                },
                None => Error::Transport {
                    source: failure.clone(),
                    meta,
                },
            },
        };
        self.decide(&Outcome::Failed(&failure), at, None, error);
    }

    fn on_response(
        &mut self,
        attempt: u32,
        at: Instant,
        wall: SystemTime,
        response: http::Response<Bytes>,
    ) {
        let flight = self.land(attempt);
        let (mut parts, body) = response.into_parts();
        self.maybe_sent = true;
        self.anchor = Some((at, wall));
        self.redactor.mark_sensitive(&mut parts.headers);
        let code = parts.status.as_u16();
        let error_type = (!parts.status.is_success()).then(|| parts.status.as_str());
        self.telemetry
            .attempt_finished(attempt, at, Some(code), Some(parts.version), error_type);
        // A percentile hedge delay learns from every answer of the host.
        let hedging = &self.policy.config().hedging;
        if let (Some(flight), HedgeAfter::Percentile(_)) = (flight, hedging.hedge_after) {
            if self.hedge || hedging.enabled {
                let latency = at.saturating_duration_since(flight.started);
                self.policy
                    .guards()
                    .record_latency(self.guard_key(), at, latency);
            }
        }
        let limit = self.policy.config().max_response_body;
        if body.len() as u64 > limit {
            let failure = TransportError::from_kind(TransportErrorKind::BodyTooLarge);
            let error = Error::BodyTooLarge {
                limit,
                // The body as it arrived from the transport.
                exceeded: BodyLimit::Wire,
                meta: CallMeta::default(),
            };
            self.decide(&Outcome::Failed(&failure), at, None, error);
            return;
        }
        let outcome = Outcome::Response {
            status: parts.status,
            headers: &parts.headers,
            body: &body,
        };
        let action = self.classify(&outcome, wall);
        let verdict = match action {
            RetryAction::NoAction => CircuitVerdict::Success,
            RetryAction::Retry {
                reason: RetryReason::Throttled,
                ..
            } => CircuitVerdict::Neutral,
            _ => CircuitVerdict::Failure,
        };
        self.report(at, verdict);
        self.hold_on_response(at, wall, &parts.headers, &action);
        let status = parts.status;
        if matches!(action, RetryAction::NoAction) && status.is_success() {
            let elapsed = at.saturating_duration_since(self.start);
            if self.hedges > 0 {
                let hedge = flight.is_some_and(|f| f.hedge);
                self.telemetry.hedge_won(attempt, hedge, self.hedges);
            }
            self.cancel_flights(at);
            self.telemetry.succeeded(code, self.attempts, elapsed);
            self.state = State::Done(Ok(Response {
                status,
                version: parts.version,
                headers: parts.headers,
                body,
                attempts: self.attempts,
                elapsed,
                correlation_id: self.correlation_id.clone(),
                body_limit: limit,
                redactor: self.redactor.clone(),
            }));
            return;
        }
        let date = response_date(&parts.headers);
        let error = Error::Status {
            source: Box::new(StatusError::redacted(
                status,
                parts.headers,
                body,
                &self.redactor,
            )),
            meta: CallMeta::default(),
        };
        self.schedule(action, at, Some((wall, date)), error);
    }

    /// Holds the host when the response says to: a throttling answer with a hint, or rate-limit
    /// fields saying no quota is left.
    fn hold_on_response(
        &self,
        at: Instant,
        wall: SystemTime,
        headers: &HeaderMap,
        action: &RetryAction,
    ) {
        let config = self.policy.guards().hold_config();
        if config.enabled {
            if let RetryAction::Retry {
                reason: RetryReason::Throttled,
                hint: Some(hint),
            } = action
            {
                let date = response_date(headers);
                let delay = resolve_retry_after(*hint, date, wall);
                let retry_at = wall.checked_add(delay).unwrap_or(wall);
                self.hold_host(at, delay, retry_at, HoldReason::RetryAfter);
            }
        }
        if config.rate_limit_fields && hints::has_rate_limit_fields(headers) {
            let date = response_date(headers);
            if let Some(quota) = rate_limit_quota(headers, date, wall) {
                if let (true, Some(reset)) = (quota.is_exhausted(), quota.reset) {
                    let retry_at = wall.checked_add(reset).unwrap_or(wall);
                    self.hold_host(at, reset, retry_at, HoldReason::QuotaExhausted);
                }
            }
        }
    }

    fn classify(&self, outcome: &Outcome<'_>, wall: SystemTime) -> RetryAction {
        let ctx = ClassifyContext {
            method: &self.method,
            idempotent: self.idempotent,
            policy: &self.policy.config().retry,
            wall,
        };
        match &self.classifier {
            Some(classifier) => classifier.classify(outcome, &ctx),
            None => crate::retry::classify(outcome, &ctx),
        }
    }

    fn decide(
        &mut self,
        outcome: &Outcome<'_>,
        at: Instant,
        wall: Option<SystemTime>,
        error: Error,
    ) {
        // Failures carry no wall time; hints only come with responses, so UNIX_EPOCH is unused.
        let action = self.classify(outcome, wall.unwrap_or(SystemTime::UNIX_EPOCH));
        let verdict = match (outcome, action) {
            // The upstream did not answer within the attempt's time.
            (Outcome::TimedOut(_), _) => CircuitVerdict::Failure,
            (
                _,
                RetryAction::Retry {
                    reason: RetryReason::Throttled,
                    ..
                },
            ) => CircuitVerdict::Neutral,
            (_, RetryAction::Retry { .. } | RetryAction::Forbidden(_)) => CircuitVerdict::Failure,
            // TLS, protocol, an oversize body: not the upstream's health.
            _ => CircuitVerdict::Neutral,
        };
        self.report(at, verdict);
        self.schedule(action, at, None, error);
    }

    /// Turns a classifier's verdict into the next state: done, or waiting before a retry.
    /// `clock` is the wall time of the response and its `Date` header, for resolving hints.
    fn schedule(
        &mut self,
        action: RetryAction,
        at: Instant,
        clock: Option<(SystemTime, Option<SystemTime>)>,
        error: Error,
    ) {
        // Another attempt still in flight may yet answer: a failure of this one does not end
        // the call (a final answer of the server, such as a 404, does).
        if !self.flights.is_empty()
            && (clock.is_none() || matches!(action, RetryAction::Retry { .. }))
        {
            self.last_error = Some(Box::new(error));
            return;
        }
        self.hedge_at = None;
        let (reason, hint) = match action {
            RetryAction::Retry { reason, hint } => (reason, hint),
            RetryAction::Forbidden(_) => return self.fail(at, StopReason::NotIdempotent, error),
            _ => return self.fail(at, StopReason::NotRetryable, error),
        };
        // Hedges are attempts, but the retry rules count the rounds: the first attempt and each
        // retry, each with its hedges.
        let rounds = self.attempts - self.hedges;
        if rounds >= self.max_attempts {
            // A throttled last attempt still says when to come back.
            if let (Some(hint), RetryReason::Throttled) = (hint, reason) {
                let (wall, date) = clock.unwrap_or((SystemTime::UNIX_EPOCH, None));
                let retry_at = wall
                    .checked_add(resolve_retry_after(hint, date, wall))
                    .unwrap_or(wall);
                let limited = Error::RateLimited {
                    retry_at,
                    last: Some(Box::new(error)),
                    meta: CallMeta::default(),
                };
                return self.fail(at, StopReason::AttemptsExhausted, limited);
            }
            return self.fail(at, StopReason::AttemptsExhausted, error);
        }
        let retry = rounds;
        let (delay, wait) = match hint {
            Some(hint) => {
                let (wall, date) = clock.unwrap_or((SystemTime::UNIX_EPOCH, None));
                let delay = resolve_retry_after(hint, date, wall);
                let cap = self.retry_after_cap;
                if delay > cap || saturating_add(at, delay) >= self.deadline {
                    let retry_at = wall.checked_add(delay).unwrap_or(wall);
                    let limited = Error::RateLimited {
                        retry_at,
                        last: Some(Box::new(error)),
                        meta: CallMeta::default(),
                    };
                    return self.fail(at, StopReason::RateLimited, limited);
                }
                (delay, WaitReason::RetryAfter { retry })
            }
            None => {
                let random = self.jitter.next_u64();
                let backoff = &self.policy.config().retry.backoff;
                let delay = backoff.delay(retry, self.previous_delay, random);
                (delay, WaitReason::Backoff { retry })
            }
        };
        let until = saturating_add(at, delay);
        if until >= self.deadline {
            return self.fail(at, StopReason::Deadline, error);
        }
        if !self.policy.budget().try_retry(self.budget_key(), at) {
            let refused = Error::RetryBudgetExhausted {
                last: Box::new(error),
                meta: CallMeta::default(),
            };
            return self.fail(at, StopReason::Budget, refused);
        }
        self.telemetry.retry(retry, reason, wait, delay, &error);
        self.previous_delay = delay;
        self.last_error = Some(Box::new(error));
        self.state = State::Waiting {
            until,
            reason: wait,
        };
    }

    fn fail(&mut self, at: Instant, stop: StopReason, mut error: Error) {
        self.cancel_flights(at);
        let meta = self.meta(at, Some(stop));
        let last = match &mut error {
            Error::RetryBudgetExhausted { last, .. } => Some(last),
            Error::RateLimited { last, .. } | Error::CircuitOpen { last, .. } => last.as_mut(),
            _ => None,
        };
        if let Some(last) = last {
            *last.meta_mut() = CallMeta {
                stop: None,
                ..meta.clone()
            };
        }
        *error.meta_mut() = meta;
        let answer = match &error {
            Error::Status { source, .. } => match &self.classifier {
                Some(classifier) => classifier.is_answer(source.status()),
                None => crate::retry::is_answer(source.status()),
            },
            _ => false,
        };
        self.telemetry.failed(&error, answer);
        self.state = State::Done(Err(error));
    }
}

/// One call's dealings with the fleet's coordinator.
#[derive(Debug, Default)]
struct FleetCall {
    /// The `Acquire` to hand out at the next poll.
    pending: Option<Box<crate::messages::Acquire>>,
    /// An `Acquire` is out and unanswered.
    waiting: bool,
    /// The coordinator failed this call, which fails open: local limits only.
    local: bool,
}

/// `at + d`, or the latest representable time not far past it: a limit too large for `Instant`
/// means "no limit", never "now".
pub(crate) fn saturating_add(at: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(t) = at.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_exchange_keeps_the_retry_budget_for_the_host_the_request_names() {
        let policy = Config::default()
            .build()
            .expect("the default config is valid");
        for url in [
            "http://a.example/",
            "http://a.example:8080/x?y=1",
            "https://A.Example:443/",
            "https://[::1]:8443/",
            "https://user:secret@h.example:9000/",
            "http://127.0.0.1:80/entity/1",
        ] {
            let request = Request::new(Method::GET, url).expect("the url is valid");
            let expected = request.budget_key().to_owned();
            let exchange = Exchange::new(request, &policy, Instant::now(), 7);
            assert_eq!(exchange.budget_key(), expected, "{url}");
            assert!(!expected.contains("secret"), "{url}");
        }
    }
}
