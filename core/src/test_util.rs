//! Test doubles: a scripted transport, a manual clock, an instant sleeper, seeded entropy, a tiny
//! `block_on`, and a scenario runner that asserts a whole attempt timeline in virtual time.
//!
//! **Not for production.** Behind the `test-util` feature; enable it in `[dev-dependencies]` only.
//!
//! ```
//! use egress_core::Config;
//! use egress_core::test_util::{ScriptedTransport, block_on, step};
//!
//! let transport = ScriptedTransport::new();
//! transport.push(step(503));
//! transport.push(step(200).json(r#"{"id":"7"}"#));
//! let client = transport.client(Config::default().with_base_url("https://api.example.com")).unwrap();
//!
//! let response = block_on(client.get("/entities/7").send()).unwrap();
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.attempts(), 2);
//! assert_eq!(transport.requests().len(), 2);
//! ```

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

use crate::client::{Client, Runtime};
use crate::config::{Config, ConfigError, Policy};
use crate::error::{Error, TransportError, TransportErrorKind};
use crate::exchange::Exchange;
use crate::messages::{AttemptRequest, Input, Output, WaitReason};
use crate::request::Request;
use crate::response::Response;
use crate::rt::{BoxFuture, Clock, Entropy, Sleeper, Transport};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Test doubles: a panic in another test thread must not hide this test's own result.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The wall-clock time a [`ManualClock`] starts at: 2026-01-01T00:00:00Z.
pub const WALL_EPOCH_SECS: u64 = 1_767_225_600;

/// A clock that moves only when told to (or when an [`InstantSleeper`] sleeps on it).
/// Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    epoch: Instant,
    state: Arc<Mutex<(Instant, SystemTime)>>,
    /// When scripted answers still in flight are due: an [`InstantSleeper`] stops there first.
    due: Arc<Mutex<Vec<Instant>>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock at a fresh epoch, with the wall clock at [`WALL_EPOCH_SECS`].
    pub fn new() -> Self {
        // The one place the test doubles read the real clock: an `Instant` cannot be made any other way.
        let epoch = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS);
        Self {
            epoch,
            state: Arc::new(Mutex::new((epoch, wall))),
            due: Arc::default(),
        }
    }

    /// Moves both clocks forward.
    pub fn advance(&self, by: Duration) {
        let mut s = lock(&self.state);
        s.0 += by;
        s.1 += by;
    }

    /// Moves both clocks forward to `at`, if it is later.
    pub fn advance_to(&self, at: Instant) {
        let by = at.saturating_duration_since(lock(&self.state).0);
        self.advance(by);
    }

    /// The epoch the clock started at.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Time since the epoch.
    pub fn elapsed(&self) -> Duration {
        lock(&self.state).0 - self.epoch
    }

    /// The earliest scripted answer due after `after` and before `before`.
    fn next_due(&self, after: Instant, before: Instant) -> Option<Instant> {
        lock(&self.due)
            .iter()
            .copied()
            .filter(|t| *t > after && *t < before)
            .min()
    }

    fn forget_due(&self, at: Instant) {
        let mut due = lock(&self.due);
        if let Some(i) = due.iter().position(|t| *t == at) {
            due.swap_remove(i);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        lock(&self.state).0
    }

    fn wall(&self) -> SystemTime {
        lock(&self.state).1
    }

    fn now_and_wall(&self) -> (Instant, SystemTime) {
        *lock(&self.state)
    }
}

/// A sleeper that completes at once, moving its [`ManualClock`] to the wake-up time: virtual
/// time advances instantly. When a [`ScriptedTransport`] answer on the same clock is due
/// earlier, the sleeper first moves the clock there and yields, so that the answer (a hedge's,
/// say) is seen at its own time.
#[derive(Clone, Debug)]
pub struct InstantSleeper {
    clock: ManualClock,
}

impl InstantSleeper {
    /// A sleeper that advances `clock`.
    pub fn new(clock: ManualClock) -> Self {
        Self { clock }
    }
}

impl Sleeper for InstantSleeper {
    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()> {
        // Time moves when the sleep is first polled, not when it is created: a driver that races
        // a sleep against a ready response must see the response at its own time.
        let clock = self.clock.clone();
        Box::pin(std::future::poll_fn(move |cx| {
            if let Some(due) = clock.next_due(clock.now(), at) {
                clock.advance_to(due);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            clock.advance_to(at);
            Poll::Ready(())
        }))
    }
}

/// Deterministic "random" bytes (SplitMix64 from a seed).
#[derive(Debug)]
pub struct SeededEntropy {
    state: AtomicU64,
}

impl SeededEntropy {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let mut z = self
                .state
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
                .wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// What a scripted upstream does with one attempt.
#[derive(Clone, Debug)]
pub struct Step {
    after: Duration,
    action: Action,
}

#[derive(Clone, Debug)]
enum Action {
    Respond {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Fail(TransportErrorKind),
    Hang,
}

/// A step answering with `status` (no headers, empty body) at once.
pub fn step(status: u16) -> Step {
    let status = StatusCode::from_u16(status).expect("test script: status must be 100..=999");
    Step {
        after: Duration::ZERO,
        action: Action::Respond {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        },
    }
}

/// A step failing the attempt with a transport error of `kind`.
pub fn fail(kind: TransportErrorKind) -> Step {
    Step {
        after: Duration::ZERO,
        action: Action::Fail(kind),
    }
}

/// A step that never answers: the attempt ends by its deadline.
pub fn hang() -> Step {
    Step {
        after: Duration::ZERO,
        action: Action::Hang,
    }
}

impl Step {
    /// Adds a response header.
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Action::Respond { headers, .. } = &mut self.action {
            let value =
                HeaderValue::from_str(value).expect("test script: header value must be valid");
            headers.append(HeaderName::from_static(name), value);
        }
        self
    }

    /// Sets a body.
    pub fn body(mut self, bytes: impl Into<Bytes>) -> Self {
        if let Action::Respond { body, .. } = &mut self.action {
            *body = bytes.into();
        }
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json(self, text: &str) -> Self {
        self.header("content-type", "application/json")
            .body(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// Answers (or fails) only after `delay` of virtual time, counted from the attempt's send:
    /// attempts in flight together (hedges) answer in the order of their times, not of their
    /// sends. A delay past the read timeout fails with a read timeout; past the attempt
    /// deadline, the attempt hangs until it.
    pub fn after(mut self, delay: Duration) -> Self {
        self.after = delay;
        self
    }
}

/// What a step resolves to for one attempt at `now`.
enum Resolved {
    Respond(Instant, http::Response<Bytes>),
    Fail(Instant, TransportError),
    Hang,
}

impl Resolved {
    /// When the outcome arrives (never for a hang).
    fn at(&self) -> Option<Instant> {
        match self {
            Self::Respond(at, _) | Self::Fail(at, _) => Some(*at),
            Self::Hang => None,
        }
    }
}

/// A scripted answer due at a later virtual time: ready once the clock reaches it (an
/// [`InstantSleeper`] stops there). Dropping it (a cancelled attempt) forgets it.
struct Deferred {
    clock: ManualClock,
    at: Instant,
    result: Option<Result<http::Response<Bytes>, TransportError>>,
}

impl Future for Deferred {
    type Output = Result<http::Response<Bytes>, TransportError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        if self.clock.now() < self.at {
            return Poll::Pending;
        }
        match self.result.take() {
            Some(result) => {
                self.clock.forget_due(self.at);
                Poll::Ready(result)
            }
            // Polled again after it finished: a misuse of a future, answered as a failure.
            None => Poll::Ready(Err(TransportError::new(
                TransportErrorKind::Other,
                "scripted transport: answer already taken",
            ))),
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if self.result.is_some() {
            self.clock.forget_due(self.at);
        }
    }
}

fn resolve(step: Option<Step>, now: Instant, attempt: &AttemptRequest) -> Resolved {
    let Some(step) = step else {
        return Resolved::Fail(
            now,
            TransportError::new(
                TransportErrorKind::Other,
                "scripted transport: script exhausted",
            ),
        );
    };
    let deadline = attempt.deadlines.attempt;
    let read_fires = now + attempt.read_timeout;
    if step.after >= attempt.read_timeout
        && read_fires < deadline
        && !matches!(step.action, Action::Hang)
    {
        return Resolved::Fail(
            read_fires,
            TransportError::from_kind(TransportErrorKind::ReadTimeout),
        );
    }
    let at = now + step.after;
    if at >= deadline {
        return Resolved::Hang;
    }
    match step.action {
        Action::Respond {
            status,
            headers,
            body,
        } => {
            if body.len() as u64 > attempt.body_limit {
                return Resolved::Fail(
                    at,
                    TransportError::from_kind(TransportErrorKind::BodyTooLarge),
                );
            }
            // Decoded as a transport decodes it.
            let mut headers = headers;
            let body = match attempt.decoding.decode_all(&mut headers, body) {
                Ok(body) => body,
                Err(e) => return Resolved::Fail(at, TransportError::decode(e)),
            };
            let mut response = http::Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Resolved::Respond(at, response)
        }
        Action::Fail(kind) => Resolved::Fail(at, TransportError::from_kind(kind)),
        Action::Hang => Resolved::Hang,
    }
}

/// One request a [`ScriptedTransport`] (or a [`Scenario`]) saw.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// The attempt number.
    pub attempt: u32,
    /// Virtual time since the clock's epoch.
    pub at: Duration,
    /// The method.
    pub method: Method,
    /// The URI.
    pub uri: Uri,
    /// The headers, exactly as sent.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl SeenRequest {
    fn new(attempt: &AttemptRequest, at: Duration) -> Self {
        Self {
            attempt: attempt.attempt,
            at,
            method: attempt.request.method().clone(),
            uri: attempt.request.uri().clone(),
            headers: attempt.request.headers().clone(),
            body: attempt.request.body().clone(),
        }
    }

    /// A header's value as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A transport that answers from a queue of [`Step`]s in virtual time and records every request.
/// When the queue is empty it fails with [`TransportErrorKind::Other`].
///
/// ```
/// use std::time::Duration;
/// use egress_core::{Config, TransportErrorKind};
/// use egress_core::test_util::{ScriptedTransport, block_on, fail, step};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = ScriptedTransport::new();
/// upstream
///     .push(fail(TransportErrorKind::ConnectRefused)) // never sent: retried for any method
///     .push(step(429).header("retry-after", "2"))       // honoured, in virtual time
///     .push(step(200).json(r#"{"ok":true}"#).after(Duration::from_millis(30)));
/// let client = upstream.client(Config::default().with_base_url("https://api.example.com"))?;
/// let response = block_on(client.post("/jobs").send())?;
/// assert_eq!(response.attempts(), 3);
/// assert!(response.elapsed() >= Duration::from_secs(2)); // no real time passed
/// assert_eq!(upstream.requests().len(), 3);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ScriptedTransport {
    clock: ManualClock,
    steps: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl Default for ScriptedTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedTransport {
    /// A transport with an empty script and a fresh [`ManualClock`].
    pub fn new() -> Self {
        Self::with_clock(ManualClock::new())
    }

    /// A transport on an existing clock.
    pub fn with_clock(clock: ManualClock) -> Self {
        Self {
            clock,
            steps: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// Appends a step.
    pub fn push(&self, step: Step) -> &Self {
        lock(&self.steps).push_back(step);
        self
    }

    /// The clock the transport (and its runtime) runs on.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.seen).clone()
    }

    /// Steps not used yet.
    pub fn remaining(&self) -> usize {
        lock(&self.steps).len()
    }

    /// A runtime of this transport, its clock, an [`InstantSleeper`] and [`SeededEntropy`] (seed 0).
    pub fn runtime(&self) -> Runtime {
        Runtime::new(
            Arc::new(self.clone()),
            Arc::new(self.clock.clone()),
            Arc::new(InstantSleeper::new(self.clock.clone())),
            Arc::new(SeededEntropy::new(0)),
        )
    }

    /// A client over [`runtime`](Self::runtime).
    pub fn client(&self, config: Config) -> Result<Client, ConfigError> {
        Client::new(config, self.runtime())
    }
}

impl Transport for ScriptedTransport {
    fn send(
        &self,
        attempt: AttemptRequest,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        let now = self.clock.now();
        lock(&self.seen).push(SeenRequest::new(&attempt, now - self.clock.epoch));
        let step = lock(&self.steps).pop_front();
        let (at, result) = match resolve(step, now, &attempt) {
            Resolved::Respond(at, response) => (at, Ok(response)),
            Resolved::Fail(at, error) => (at, Err(error)),
            Resolved::Hang => return Box::pin(std::future::pending()),
        };
        if at <= now {
            return Box::pin(std::future::ready(result));
        }
        // Due later: the answer waits for the clock, so that another attempt sent meanwhile
        // (a hedge) can answer first.
        lock(&self.clock.due).push(at);
        Box::pin(Deferred {
            clock: self.clock.clone(),
            at,
            result: Some(result),
        })
    }
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on the current thread, with no runtime. With the virtual-time
/// doubles above every future is ready at once, so this is all a test needs.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// Drives an [`Exchange`] by hand through a script in virtual time and records its timeline,
/// with no async at all.
///
/// ```
/// use egress_core::{Config, Request, http::Method};
/// use egress_core::{Backoff, JitterMode, RetryPolicy};
/// use egress_core::test_util::{Scenario, step};
///
/// let no_jitter = Backoff::default().with_jitter(JitterMode::None);
/// let policy = Config::default()
///     .with_retry(RetryPolicy::standard().with_backoff(no_jitter))
///     .build().unwrap();
/// let request = Request::new(Method::GET, "https://api.example.com/x").unwrap();
/// let run = Scenario::new(request, &policy).steps([step(503), step(503), step(200)]).run();
/// run.assert_timeline(&[
///     "0ms send #1",
///     "0ms #1 -> 503",
///     "0ms wait 100ms backoff",
///     "100ms send #2",
///     "100ms #2 -> 503",
///     "100ms wait 200ms backoff",
///     "300ms send #3",
///     "300ms #3 -> 200",
///     "300ms done ok 200 after 3",
/// ]);
/// ```
#[derive(Debug)]
pub struct Scenario {
    request: Request,
    policy: Policy,
    seed: u64,
    steps: VecDeque<Step>,
}

/// What a [`Scenario`] produced.
#[derive(Debug)]
pub struct Run {
    /// One line per event: sends, outcomes, waits and the end.
    pub timeline: Vec<String>,
    /// Every request sent, in order.
    pub requests: Vec<SeenRequest>,
    /// Every wait the exchange asked for between attempts, with its reason.
    pub waits: Vec<(Duration, WaitReason)>,
    /// The result.
    pub result: Result<Response, Error>,
    /// Virtual time from start to end.
    pub elapsed: Duration,
    /// The most attempts that were in flight at once (more than 1 only with hedges).
    pub max_in_flight: usize,
}

impl Scenario {
    /// A scenario for `request` under `policy`, jitter seed 0, empty script.
    pub fn new(request: Request, policy: &Policy) -> Self {
        Self {
            request,
            policy: policy.clone(),
            seed: 0,
            steps: VecDeque::new(),
        }
    }

    /// Sets the jitter seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Appends steps to the script.
    pub fn steps(mut self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.steps.extend(steps);
        self
    }

    /// Runs the exchange to its end. Bounded: a machine that neither finishes nor advances
    /// time within 10 000 outputs is reported as stuck in the timeline.
    ///
    /// Attempts in flight together (hedges) are answered in the order of their virtual times,
    /// each after its own step's delay from its send; the timeline marks a hedge's send with
    /// `(hedge)` and an attempt the exchange stopped waiting for (a loser) with `cancelled`.
    pub fn run(mut self) -> Run {
        let clock = ManualClock::new();
        let epoch = clock.epoch();
        let mut exchange =
            Exchange::new(self.request, &self.policy, epoch, self.seed).with_wall(clock.wall());
        let mut timeline = Vec::new();
        let mut requests = Vec::new();
        let mut waits = Vec::new();
        // The attempts sent and not answered yet, with what each will do.
        let mut pending: Vec<(u32, Resolved)> = Vec::new();
        let mut max_in_flight = 0;
        let mut hedges = 0;
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        for _ in 0..10_000 {
            let now = clock.now();
            let t = ms(now - epoch);
            match exchange.poll_output(now) {
                Output::Done(result) => {
                    let line = match &result {
                        Ok(r) => {
                            format!("{t} done ok {} after {}", r.status().as_u16(), r.attempts())
                        }
                        Err(e) => format!("{t} done err {} after {}", e.type_name(), e.attempts()),
                    };
                    timeline.push(line);
                    return Run {
                        timeline,
                        requests,
                        waits,
                        result,
                        elapsed: now - epoch,
                        max_in_flight,
                    };
                }
                Output::Send(attempt) => {
                    let n = attempt.attempt;
                    let hedge = exchange.hedges() > hedges;
                    hedges = exchange.hedges();
                    let mark = if hedge { " (hedge)" } else { "" };
                    timeline.push(format!("{t} send #{n}{mark}"));
                    requests.push(SeenRequest::new(&attempt, now - epoch));
                    pending.push((n, resolve(self.steps.pop_front(), now, &attempt)));
                    max_in_flight = max_in_flight.max(pending.len());
                    continue;
                }
                Output::Wait { until, reason } => {
                    // The first answer due before the timer wins; the timer wins a tie.
                    let next = pending
                        .iter()
                        .enumerate()
                        .filter_map(|(i, (_, r))| r.at().map(|at| (at, i)))
                        .filter(|(at, _)| *at < until)
                        .min();
                    if let Some((at, i)) = next {
                        let (n, resolved) = pending.remove(i);
                        clock.advance_to(at);
                        match resolved {
                            Resolved::Respond(_, response) => {
                                let status = response.status().as_u16();
                                timeline.push(format!("{} #{n} -> {status}", ms(at - epoch)));
                                let wall = clock.wall();
                                exchange.handle_input(Input::Response {
                                    attempt: n,
                                    at,
                                    wall,
                                    response,
                                });
                            }
                            Resolved::Fail(_, error) => {
                                let line = format!("{} #{n} -> {}", ms(at - epoch), error.kind());
                                timeline.push(line);
                                exchange.handle_input(Input::Failed {
                                    attempt: n,
                                    at,
                                    error,
                                });
                            }
                            Resolved::Hang => {}
                        }
                    } else {
                        match reason {
                            WaitReason::AttemptDeadline { attempt } => {
                                timeline
                                    .push(format!("{} #{attempt} -> deadline", ms(until - epoch)));
                                pending.retain(|(n, _)| *n != attempt);
                            }
                            // A hedge's send says it; the wait for it is not one between attempts.
                            WaitReason::Hedge { .. } => {}
                            _ => {
                                let d = until - now;
                                timeline.push(format!("{t} wait {} {}", ms(d), reason.as_str()));
                                waits.push((d, reason));
                            }
                        }
                        clock.advance_to(until);
                        exchange.handle_input(Input::Timer { at: until });
                    }
                }
                Output::Acquire(acquire) => {
                    // A coordinator answers at once in virtual time.
                    timeline.push(format!("{t} acquire {}", acquire.ask.count));
                    let result = block_on(acquire.start());
                    exchange.handle_input(Input::Slots { at: now, result });
                }
            }
            // A driver cancels what the exchange no longer waits for.
            let at = ms(clock.now() - epoch);
            pending.retain(|(n, _)| {
                let keep = exchange.is_waiting_for(*n);
                if !keep {
                    timeline.push(format!("{at} #{n} cancelled"));
                }
                keep
            });
        }
        let mut stuck = String::new();
        let _ = write!(stuck, "stuck after {:?}", clock.elapsed());
        timeline.push(stuck);
        let result = Err(Error::invalid_request(
            "scenario did not finish within 10000 outputs",
        ));
        Run {
            timeline,
            requests,
            waits,
            result,
            elapsed: clock.elapsed(),
            max_in_flight,
        }
    }
}

impl Run {
    /// Asserts the exact timeline, printing both on mismatch.
    #[track_caller]
    pub fn assert_timeline(&self, expected: &[&str]) {
        assert_eq!(self.timeline, expected, "\nactual timeline:\n{self}");
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.timeline {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}
