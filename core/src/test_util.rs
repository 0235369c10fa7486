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
/// time advances instantly.
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
        Box::pin(std::future::poll_fn(move |_| {
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

    /// Answers (or fails) only after `delay` of virtual time. A delay past the read timeout
    /// fails with a read timeout; past the attempt deadline, the attempt hangs until it.
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
        match resolve(step, now, &attempt) {
            Resolved::Respond(at, response) => {
                self.clock.advance_to(at);
                Box::pin(std::future::ready(Ok(response)))
            }
            Resolved::Fail(at, error) => {
                self.clock.advance_to(at);
                Box::pin(std::future::ready(Err(error)))
            }
            Resolved::Hang => Box::pin(std::future::pending()),
        }
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
    pub fn run(mut self) -> Run {
        let clock = ManualClock::new();
        let epoch = clock.epoch();
        let mut exchange =
            Exchange::new(self.request, &self.policy, epoch, self.seed).with_wall(clock.wall());
        let mut timeline = Vec::new();
        let mut requests = Vec::new();
        let mut waits = Vec::new();
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
                    };
                }
                Output::Send(attempt) => {
                    let n = attempt.attempt;
                    timeline.push(format!("{t} send #{n}"));
                    requests.push(SeenRequest::new(&attempt, now - epoch));
                    match resolve(self.steps.pop_front(), now, &attempt) {
                        Resolved::Respond(at, response) => {
                            clock.advance_to(at);
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
                        Resolved::Fail(at, error) => {
                            clock.advance_to(at);
                            timeline.push(format!("{} #{n} -> {}", ms(at - epoch), error.kind()));
                            exchange.handle_input(Input::Failed {
                                attempt: n,
                                at,
                                error,
                            });
                        }
                        Resolved::Hang => {}
                    }
                }
                Output::Wait { until, reason } => {
                    if let WaitReason::AttemptDeadline { attempt } = reason {
                        timeline.push(format!("{} #{attempt} -> deadline", ms(until - epoch)));
                    } else {
                        let d = until - now;
                        timeline.push(format!("{t} wait {} {}", ms(d), reason.as_str()));
                        waits.push((d, reason));
                    }
                    clock.advance_to(until);
                    exchange.handle_input(Input::Timer { at: until });
                }
                Output::Acquire(acquire) => {
                    // A coordinator answers at once in virtual time.
                    timeline.push(format!("{t} acquire {}", acquire.ask.count));
                    let result = block_on(acquire.start());
                    exchange.handle_input(Input::Slots { at: now, result });
                }
            }
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
