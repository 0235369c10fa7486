//! Property tests of whole exchanges: arbitrary scripts of outcomes, methods, policies and seeds,
//! driven in virtual time, by hand and through the `test_util` scenario runner.

mod common;
use common::{epoch, ms};
use std::time::{Duration, Instant, SystemTime};

use egress_core::http::{self, Method, StatusCode};
use egress_core::rt::AttemptRequest;
use egress_core::test_util::{Run, Scenario, Step, WALL_EPOCH_SECS, fail, hang, step};
use egress_core::{Backoff, BudgetConfig, JitterMode, RetryPolicy};
use egress_core::{
    Config, CorrelationId, Error, Exchange, IdempotencyKey, Input, KeyChoice, Output, Policy,
    Request, Response, StopReason, TransportError, TransportErrorKind, WaitReason,
};
use proptest::prelude::*;

const URL: &str = "https://api.example.com/things/7";
const IDEMPOTENCY_HEADER: &str = "idempotency-key";
const CORRELATION_HEADER: &str = "x-correlation-id";

/// The wall clock at [`epoch`], as the `test_util` manual clock has it.
fn wall_epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS)
}

/// The wall clock at virtual time `at`.
fn wall_at(at: Instant) -> SystemTime {
    wall_epoch() + (at - epoch())
}

// ---------------------------------------------------------------------------------------------
// Scripts: what the upstream does with each attempt.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum DateForm {
    Imf,
    Rfc850,
    Asctime,
}

/// A `Retry-After` value.
#[derive(Clone, Debug)]
enum Hint {
    /// delay-seconds.
    Seconds(u64),
    /// An HTTP-date `secs` after the wall-clock epoch, in one of the three forms.
    Date { secs: u64, form: DateForm },
    /// Something that is not a `Retry-After` value.
    Garbage(&'static str),
}

impl Hint {
    fn header_value(&self) -> String {
        match self {
            Self::Seconds(s) => s.to_string(),
            Self::Garbage(g) => (*g).to_owned(),
            Self::Date { secs, form } => {
                // "Thu, 01 Jan 2026 00:00:00 GMT"
                let imf = httpdate::fmt_http_date(wall_epoch() + Duration::from_secs(*secs));
                let (weekday, rest) = imf.split_once(", ").expect("IMF-fixdate has a comma");
                let f: Vec<&str> = rest.split(' ').collect();
                let (day, month, year, time) = (f[0], f[1], f[2], f[3]);
                match form {
                    DateForm::Imf => imf.clone(),
                    DateForm::Rfc850 => {
                        let long = match weekday {
                            "Mon" => "Monday",
                            "Tue" => "Tuesday",
                            "Wed" => "Wednesday",
                            "Thu" => "Thursday",
                            "Fri" => "Friday",
                            "Sat" => "Saturday",
                            _ => "Sunday",
                        };
                        format!("{long}, {day}-{month}-{} {time} GMT", &year[2..])
                    }
                    DateForm::Asctime => {
                        let day: u8 = day.parse().expect("IMF-fixdate day is a number");
                        format!("{weekday} {month} {day:>2} {time} {year}")
                    }
                }
            }
        }
    }

    /// The wait the hint asks for, measured from `now` (the response's `Date` when it has one,
    /// else the wall clock when it arrived); `None` when the value is malformed. Delay-seconds
    /// saturate at `u32::MAX` seconds.
    fn delay(&self, now: SystemTime) -> Option<Duration> {
        match self {
            Self::Seconds(s) => Some(Duration::from_secs((*s).min(u64::from(u32::MAX)))),
            Self::Date { secs, .. } => Some(
                (wall_epoch() + Duration::from_secs(*secs))
                    .duration_since(now)
                    .unwrap_or(Duration::ZERO),
            ),
            Self::Garbage(_) => None,
        }
    }
}

/// A response of a script.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    hint: Option<Hint>,
    /// A `Date` header, this many seconds after the wall-clock epoch.
    date: Option<u64>,
    /// The body length.
    body: usize,
}

impl Answer {
    fn new(status: u16, hint: Option<Hint>) -> Self {
        Self {
            status,
            hint,
            date: None,
            body: 0,
        }
    }

    fn date(&self) -> Option<SystemTime> {
        self.date
            .map(|secs| wall_epoch() + Duration::from_secs(secs))
    }

    fn response(&self) -> http::Response<bytes::Bytes> {
        let mut builder = http::Response::builder().status(self.status);
        if let Some(hint) = &self.hint {
            builder = builder.header(http::header::RETRY_AFTER, hint.header_value());
        }
        if let Some(date) = self.date() {
            builder = builder.header(http::header::DATE, httpdate::fmt_http_date(date));
        }
        builder
            .body(vec![b'x'; self.body].into())
            .expect("test script: a valid response")
    }
}

#[derive(Clone, Debug)]
enum Act {
    Respond(Answer),
    Fail(TransportErrorKind),
    Hang,
}

/// One step of a script: what happens to an attempt, and after how long.
#[derive(Clone, Debug)]
struct Move {
    after: Duration,
    act: Act,
}

impl Move {
    fn step(&self) -> Step {
        let s = match &self.act {
            Act::Respond(answer) => {
                let mut s = step(answer.status).body(vec![b'x'; answer.body]);
                if let Some(hint) = &answer.hint {
                    s = s.header("retry-after", &hint.header_value());
                }
                if let Some(date) = answer.date() {
                    s = s.header("date", &httpdate::fmt_http_date(date));
                }
                s
            }
            Act::Fail(kind) => fail(*kind),
            Act::Hang => hang(),
        };
        s.after(self.after)
    }
}

fn response(status: u16) -> http::Response<bytes::Bytes> {
    Answer::new(status, None).response()
}

// ---------------------------------------------------------------------------------------------
// Policies and calls.
// ---------------------------------------------------------------------------------------------

/// The knobs of a policy, kept so that a test can state its expectations.
#[derive(Clone, Debug)]
struct Spec {
    max_attempts: u32,
    jitter: JitterMode,
    initial: Duration,
    max: Duration,
    cap: Duration,
    attempt: Duration,
    deadline: Duration,
    read: Duration,
    connect: Duration,
    pool: Duration,
    max_body: u64,
}

impl Spec {
    /// A fresh policy (with a fresh retry budget).
    fn policy(&self) -> Policy {
        let backoff = Backoff::default()
            .with_jitter(self.jitter)
            .with_initial(self.initial)
            .with_max(self.max);
        let retry = RetryPolicy::standard()
            .with_max_attempts(self.max_attempts)
            .with_backoff(backoff)
            .with_retry_after_cap(self.cap);
        Config::default()
            .with_retry(retry)
            .with_attempt_timeout(self.attempt)
            .with_deadline(self.deadline)
            .with_read_timeout(self.read)
            .with_connect_timeout(self.connect)
            .with_pool_timeout(self.pool)
            .with_max_response_body(self.max_body)
            .build()
            .expect("generated policies are valid")
    }
}

#[derive(Clone, Debug)]
enum Key {
    None,
    Mint,
    Given(String),
}

/// One logical call: the request and its per-call knobs.
#[derive(Clone, Debug)]
struct Call {
    method: Method,
    key: Key,
    correlation: Option<String>,
    idempotent: Option<bool>,
    max_attempts: Option<u32>,
    deadline: Option<Duration>,
    attempt_timeout: Option<Duration>,
    seed: u64,
}

impl Call {
    fn request(&self) -> Request {
        let key = match &self.key {
            Key::None => KeyChoice::None,
            Key::Mint => KeyChoice::Mint,
            Key::Given(key) => KeyChoice::Given(IdempotencyKey::new(key.clone()).unwrap()),
        };
        let mut request = Request::new(self.method.clone(), URL)
            .unwrap()
            .with_body(r#"{"n":7}"#)
            .with_idempotency_key(key);
        if let Some(id) = &self.correlation {
            request = request.with_correlation_id(CorrelationId::new(id.clone()).unwrap());
        }
        if let Some(n) = self.max_attempts {
            request = request.with_max_attempts(n);
        }
        if let Some(d) = self.deadline {
            request = request.with_deadline(d);
        }
        if let Some(t) = self.attempt_timeout {
            request = request.with_attempt_timeout(t);
        }
        if let Some(idempotent) = self.idempotent {
            request = request.with_idempotent(idempotent);
        }
        request
    }

    fn max_attempts(&self, spec: &Spec) -> u32 {
        self.max_attempts.unwrap_or(spec.max_attempts)
    }

    /// The absolute whole-call deadline of an exchange started at [`epoch`].
    fn deadline(&self, spec: &Spec) -> Instant {
        epoch() + self.deadline.unwrap_or(spec.deadline)
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------------------------

const KINDS: [TransportErrorKind; 13] = [
    TransportErrorKind::Dns,
    TransportErrorKind::ConnectRefused,
    TransportErrorKind::Connect,
    TransportErrorKind::ConnectTimeout,
    TransportErrorKind::PoolTimeout,
    TransportErrorKind::Tls,
    TransportErrorKind::WriteTimeout,
    TransportErrorKind::ReadTimeout,
    TransportErrorKind::ClosedBeforeResponse,
    TransportErrorKind::ClosedDuringBody,
    TransportErrorKind::Protocol,
    TransportErrorKind::BodyTooLarge,
    TransportErrorKind::Other,
];

const NEVER_RETRIED: [u16; 6] = [400, 401, 403, 404, 409, 422];

fn kinds() -> impl Strategy<Value = TransportErrorKind> {
    prop::sample::select(KINDS.to_vec())
}

fn never_sent_kinds() -> impl Strategy<Value = TransportErrorKind> {
    prop::sample::select(
        KINDS
            .iter()
            .copied()
            .filter(|k| !k.may_have_been_sent())
            .collect::<Vec<_>>(),
    )
}

fn may_have_been_sent_kinds() -> impl Strategy<Value = TransportErrorKind> {
    prop::sample::select(
        KINDS
            .iter()
            .copied()
            .filter(|k| k.may_have_been_sent())
            .collect::<Vec<_>>(),
    )
}

fn statuses() -> impl Strategy<Value = u16> {
    prop_oneof![
        9 => prop::sample::select(vec![200, 201, 400, 404, 408, 429, 500, 502, 503, 504]),
        1 => prop::sample::select(NEVER_RETRIED.to_vec()),
    ]
}

fn date_forms() -> impl Strategy<Value = DateForm> {
    prop::sample::select(vec![DateForm::Imf, DateForm::Rfc850, DateForm::Asctime])
}

fn valid_hints() -> impl Strategy<Value = Hint> {
    prop_oneof![
        2 => (0u64..=3).prop_map(Hint::Seconds),
        2 => (0u64..=45).prop_map(Hint::Seconds),
        1 => any::<u64>().prop_map(Hint::Seconds),
        1 => (0u64..=60, date_forms()).prop_map(|(secs, form)| Hint::Date { secs, form }),
    ]
}

fn hints() -> impl Strategy<Value = Option<Hint>> {
    prop_oneof![
        4 => Just(None),
        3 => valid_hints().prop_map(Some),
        1 => prop::sample::select(vec!["soon", "1.5", "-1", "", "120s", "Wed, 32 Oct 2015 07:28:00 GMT"])
            .prop_map(|g| Some(Hint::Garbage(g))),
    ]
}

fn answers() -> impl Strategy<Value = Answer> {
    (
        statuses(),
        hints(),
        prop::option::weighted(0.25, 0u64..=30),
        prop_oneof![3 => Just(0usize), 1 => 0usize..=80],
    )
        .prop_map(|(status, hint, date, body)| Answer {
            status,
            hint,
            date,
            body,
        })
}

fn afters() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => Just(Duration::ZERO),
        2 => (0u64..=300).prop_map(ms),
        1 => (0u64..=8_000).prop_map(ms),
    ]
}

fn acts() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => answers().prop_map(Act::Respond),
        3 => kinds().prop_map(Act::Fail),
        1 => Just(Act::Hang),
    ]
}

fn moves() -> impl Strategy<Value = Move> {
    (afters(), acts()).prop_map(|(after, act)| Move { after, act })
}

fn scripts() -> impl Strategy<Value = Vec<Move>> {
    prop::collection::vec(moves(), 0..=8)
}

/// Scripts heavy in throttling: 429 (and 503) with valid hints, answered quickly.
fn throttling_scripts() -> impl Strategy<Value = Vec<Move>> {
    let throttle = (
        0u64..=100,
        prop::sample::select(vec![429, 429, 429, 503]),
        valid_hints(),
    )
        .prop_map(|(after, status, hint)| Move {
            after: ms(after),
            act: Act::Respond(Answer::new(status, Some(hint))),
        });
    prop::collection::vec(prop_oneof![3 => throttle, 1 => moves()], 0..=8)
}

/// Scripts that go through retries any method may take, then fail in a way that may have
/// reached the server, then anything.
fn risky_scripts() -> impl Strategy<Value = Vec<Move>> {
    let safe = prop_oneof![
        (0u64..=50, never_sent_kinds()).prop_map(|(after, kind)| Move {
            after: ms(after),
            act: Act::Fail(kind),
        }),
        (0u64..=50, prop::option::of(0u64..=2)).prop_map(|(after, secs)| Move {
            after: ms(after),
            act: Act::Respond(Answer::new(429, secs.map(Hint::Seconds))),
        }),
    ];
    let risky = prop_oneof![
        3 => may_have_been_sent_kinds().prop_map(Act::Fail),
        1 => Just(Act::Hang),
    ];
    (
        prop::collection::vec(safe, 0..=4),
        (afters(), risky).prop_map(|(after, act)| Move { after, act }),
        prop::collection::vec(moves(), 0..=3),
    )
        .prop_map(|(mut script, risky, rest)| {
            script.push(risky);
            script.extend(rest);
            script
        })
}

fn jitters() -> impl Strategy<Value = JitterMode> {
    prop::sample::select(vec![
        JitterMode::None,
        JitterMode::Full,
        JitterMode::Equal,
        JitterMode::Decorrelated,
    ])
}

fn specs() -> impl Strategy<Value = Spec> {
    let max_body = prop_oneof![3 => Just(10 * 1024 * 1024), 1 => 1u64..=64];
    (
        (
            1u32..=6,
            jitters(),
            0u64..=500,
            0u64..=5_000,
            0u64..=40,
            50u64..=5_000,
            0u64..=20_000,
            20u64..=10_000,
            10u64..=5_000,
            10u64..=5_000,
        ),
        max_body,
    )
        .prop_map(
            |(
                (max_attempts, jitter, initial, extra, cap, attempt, slack, read, connect, pool),
                max_body,
            )| {
                Spec {
                    max_attempts,
                    jitter,
                    initial: ms(initial),
                    max: ms(initial + extra),
                    cap: Duration::from_secs(cap),
                    attempt: ms(attempt),
                    deadline: ms(attempt + slack),
                    read: ms(read),
                    connect: ms(connect),
                    pool: ms(pool),
                    max_body,
                }
            },
        )
}

fn methods() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ])
}

fn keys() -> impl Strategy<Value = Key> {
    prop_oneof![
        1 => Just(Key::None),
        2 => Just(Key::Mint),
        2 => "[A-Za-z0-9_-]{1,40}".prop_map(Key::Given),
    ]
}

fn calls_with(
    methods: impl Strategy<Value = Method>,
    keys: impl Strategy<Value = Key>,
    idempotent: impl Strategy<Value = Option<bool>>,
) -> impl Strategy<Value = Call> {
    (
        methods,
        keys,
        idempotent,
        prop::option::of("[A-Za-z0-9._:-]{1,64}"),
        prop::option::weighted(0.25, 1u32..=6),
        prop::option::weighted(0.2, (1u64..=20_000).prop_map(ms)),
        prop::option::weighted(0.1, (1u64..=5_000).prop_map(ms)),
        any::<u64>(),
    )
        .prop_map(
            |(
                method,
                key,
                idempotent,
                correlation,
                max_attempts,
                deadline,
                attempt_timeout,
                seed,
            )| {
                Call {
                    method,
                    key,
                    correlation,
                    idempotent,
                    max_attempts,
                    deadline,
                    attempt_timeout,
                    seed,
                }
            },
        )
}

fn calls() -> impl Strategy<Value = Call> {
    calls_with(
        methods(),
        keys(),
        prop::option::weighted(0.1, any::<bool>()),
    )
}

/// Requests that must not be re-sent once they may have been processed: POST or PATCH with no
/// idempotency key and no override, or any request marked not idempotent.
fn non_idempotent_calls() -> impl Strategy<Value = Call> {
    prop_oneof![
        3 => calls_with(
            prop::sample::select(vec![Method::POST, Method::PATCH]),
            Just(Key::None),
            Just(None),
        ),
        1 => calls_with(methods(), keys(), Just(Some(false))),
    ]
}

fn durations() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (0u64..=20_000_000_000).prop_map(Duration::from_nanos),
        any::<u64>().prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running exchanges.
// ---------------------------------------------------------------------------------------------

fn scenario(spec: &Spec, call: &Call, script: &[Move]) -> Run {
    Scenario::new(call.request(), &spec.policy())
        .seed(call.seed)
        .steps(script.iter().map(Move::step))
        .run()
}

/// How one attempt ended, as the upstream answered it.
#[derive(Debug)]
enum Outcome {
    Response {
        status: u16,
        at: Instant,
        wall: SystemTime,
        /// The valid `Retry-After` it carried, resolved to a delay.
        hint: Option<Duration>,
    },
    Failed {
        kind: TransportErrorKind,
    },
}

#[derive(Debug)]
struct Attempt {
    sent_at: Instant,
    request: AttemptRequest,
    /// `None`: the upstream never answered; the attempt ended by its deadline.
    outcome: Option<Outcome>,
}

#[derive(Debug)]
struct Waited {
    at: Instant,
    until: Instant,
    reason: WaitReason,
}

#[derive(Debug)]
struct Trace {
    attempts: Vec<Attempt>,
    waits: Vec<Waited>,
    result: Result<Response, Error>,
    end: Instant,
    exchange: Exchange,
}

impl Trace {
    /// Everything observable, for comparing two runs from the same epoch: every request exactly
    /// as sent with its limits, every outcome, every wait, the result and when it came.
    fn fingerprint(&self) -> String {
        let attempts: Vec<String> = self
            .attempts
            .iter()
            .map(|a| {
                let r = &a.request;
                format!(
                    "#{} at {:?}: {} {} {:?} {:?} {:?} read {:?} write {:?} limit {} -> {:?}",
                    r.attempt,
                    a.sent_at - epoch(),
                    r.request.method(),
                    r.request.uri(),
                    r.request.headers(),
                    r.request.body(),
                    r.deadlines,
                    r.read_timeout,
                    r.write_timeout,
                    r.body_limit,
                    a.outcome,
                )
            })
            .collect();
        format!(
            "{attempts:#?}\n{:?}\n{:?}\n{:?}",
            self.waits,
            self.result,
            self.end - epoch()
        )
    }

    fn last_status(&self) -> Option<u16> {
        match self.attempts.last()?.outcome.as_ref()? {
            Outcome::Response { status, .. } => Some(*status),
            Outcome::Failed { .. } => None,
        }
    }
}

/// What the scripted upstream does with one attempt sent at `now`, by the same rules as the
/// `test_util` doubles: a missing step fails with `Other`; a delay past the read timeout (when
/// that fires before the attempt deadline) fails with `ReadTimeout`; anything due at or past
/// the attempt deadline never comes. `None` means no answer.
fn answer(step: Option<&Move>, now: Instant, request: &AttemptRequest) -> Option<(Instant, Act)> {
    let Some(step) = step else {
        return Some((now, Act::Fail(TransportErrorKind::Other)));
    };
    let deadline = request.deadlines.attempt;
    let read_fires = now + request.read_timeout;
    let hangs = matches!(step.act, Act::Hang);
    if step.after >= request.read_timeout && read_fires < deadline && !hangs {
        return Some((read_fires, Act::Fail(TransportErrorKind::ReadTimeout)));
    }
    let at = now + step.after;
    if at >= deadline || hangs {
        return None;
    }
    Some((at, step.act.clone()))
}

/// Feeds inputs that must change nothing: a timer before anything is due, and responses and
/// failures for every attempt that is not in flight.
fn meddle(exchange: &mut Exchange, at: Instant, live: Option<u32>, sent: u32) {
    exchange.handle_input(Input::Timer { at });
    for attempt in [0, sent.saturating_sub(1), sent, sent + 1, u32::MAX] {
        if Some(attempt) == live {
            continue;
        }
        exchange.handle_input(Input::Response {
            attempt,
            at,
            wall: wall_at(at),
            response: response(200),
        });
        exchange.handle_input(Input::Failed {
            attempt,
            at,
            error: TransportError::from_kind(TransportErrorKind::ClosedBeforeResponse),
        });
    }
}

/// Drives an exchange by hand (`Exchange::new`, `poll_output`, `handle_input`) through a script
/// in virtual time from [`epoch`]. With `meddling`, spurious timers and stale inputs are fed
/// before every real input.
fn drive(call: &Call, policy: &Policy, script: &[Move], meddling: bool) -> Trace {
    let start = epoch();
    let mut now = start;
    let mut exchange = Exchange::new(call.request(), policy, start, call.seed);
    let mut script = script.iter();
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut waits = Vec::new();
    let mut pending: Option<(Instant, Input)> = None;
    let mut live: Option<u32> = None;
    for _ in 0..10_000 {
        match exchange.poll_output(now) {
            Output::Send(request) => {
                assert!(live.is_none(), "a new attempt while #{live:?} is in flight");
                let number = request.attempt;
                assert_eq!(
                    number as usize,
                    attempts.len() + 1,
                    "attempts are numbered 1, 2, ..."
                );
                let step = script.next();
                let exhausted = step.is_none();
                let (outcome, input) = match answer(step, now, &request) {
                    None => (None, None),
                    Some((at, Act::Respond(answer))) => {
                        let wall = wall_at(at);
                        // An oversized body is fed as it is: the exchange must refuse it itself.
                        let outcome = if answer.body as u64 > request.body_limit {
                            Outcome::Failed {
                                kind: TransportErrorKind::BodyTooLarge,
                            }
                        } else {
                            Outcome::Response {
                                status: answer.status,
                                at,
                                wall,
                                hint: answer
                                    .hint
                                    .as_ref()
                                    .and_then(|h| h.delay(answer.date().unwrap_or(wall))),
                            }
                        };
                        let input = Input::Response {
                            attempt: number,
                            at,
                            wall,
                            response: answer.response(),
                        };
                        (Some(outcome), Some((at, input)))
                    }
                    Some((at, Act::Fail(kind))) => {
                        let error = if exhausted {
                            TransportError::new(kind, "scripted transport: script exhausted")
                        } else {
                            TransportError::from_kind(kind)
                        };
                        let input = Input::Failed {
                            attempt: number,
                            at,
                            error,
                        };
                        (Some(Outcome::Failed { kind }), Some((at, input)))
                    }
                    Some((_, Act::Hang)) => unreachable!("a hang never answers"),
                };
                attempts.push(Attempt {
                    sent_at: now,
                    request,
                    outcome,
                });
                pending = input;
                live = Some(number);
            }
            Output::Wait { until, reason } => {
                assert!(until > now, "a wait for a time already reached: {reason:?}");
                waits.push(Waited {
                    at: now,
                    until,
                    reason,
                });
                let next = match &pending {
                    Some((at, _)) => {
                        assert!(
                            matches!(reason, WaitReason::AttemptDeadline { .. }) && *at < until,
                            "an answer is due but the exchange waits for {reason:?}"
                        );
                        *at
                    }
                    None => until,
                };
                if meddling {
                    meddle(
                        &mut exchange,
                        now + (next - now) / 2,
                        live,
                        attempts.len() as u32,
                    );
                }
                if matches!(reason, WaitReason::AttemptDeadline { .. }) {
                    live = None;
                }
                match pending.take() {
                    Some((at, input)) => {
                        now = at;
                        exchange.handle_input(input);
                    }
                    None => {
                        now = until;
                        exchange.handle_input(Input::Timer { at: until });
                    }
                }
            }
            Output::Done(result) => {
                return Trace {
                    attempts,
                    waits,
                    result,
                    end: now,
                    exchange,
                };
            }
            other => panic!("an output this driver does not know: {other:?}"),
        }
    }
    panic!("the exchange neither finished nor advanced within 10 000 outputs");
}

fn reported_attempts(result: &Result<Response, Error>) -> u32 {
    match result {
        Ok(response) => response.attempts(),
        Err(error) => error.attempts(),
    }
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(common::proptest_config(256))]

    #[test]
    fn attempts_never_exceed_the_maximum(spec in specs(), call in calls(), script in scripts()) {
        let run = scenario(&spec, &call, &script);
        let max = call.max_attempts(&spec);
        prop_assert!(!run.requests.is_empty(), "\n{run}");
        prop_assert!(run.requests.len() as u32 <= max, "{} attempts, max {max}\n{run}", run.requests.len());
        prop_assert_eq!(reported_attempts(&run.result) as usize, run.requests.len(), "\n{}", run);
        for (i, request) in run.requests.iter().enumerate() {
            prop_assert_eq!(request.attempt as usize, i + 1);
        }
    }

    #[test]
    fn nothing_is_scheduled_past_the_deadline(spec in specs(), call in calls(), script in scripts()) {
        let trace = drive(&call, &spec.policy(), &script, false);
        let deadline = call.deadline(&spec);
        prop_assert_eq!(trace.exchange.deadline(), deadline);
        for wait in &trace.waits {
            prop_assert!(wait.until <= deadline, "{wait:?} is past the deadline {deadline:?}");
        }
        for attempt in &trace.attempts {
            let d = attempt.request.deadlines;
            let n = attempt.request.attempt;
            prop_assert_eq!(d.started, attempt.sent_at, "#{}: the start is the time it was issued", n);
            prop_assert!(attempt.sent_at < d.attempt, "#{n} sent at or after its own deadline");
            prop_assert!(d.attempt <= deadline, "#{n}: attempt deadline past the call's");
            prop_assert!(d.connect <= d.attempt, "#{n}: connect deadline past the attempt's");
            prop_assert!(d.pool <= d.attempt, "#{n}: pool deadline past the attempt's");
            prop_assert!(attempt.sent_at + attempt.request.read_timeout <= d.attempt, "#{n}: read timeout");
            prop_assert!(attempt.sent_at + attempt.request.write_timeout <= d.attempt, "#{n}: write timeout");
        }
        prop_assert!(trace.end <= deadline, "the call ended after its deadline");
    }

    #[test]
    fn every_wait_after_a_retry_after_lasts_at_least_the_hint(
        spec in specs(),
        call in calls(),
        script in throttling_scripts(),
    ) {
        let trace = drive(&call, &spec.policy(), &script, false);
        let max = call.max_attempts(&spec) as usize;
        let deadline = call.deadline(&spec);
        for (i, attempt) in trace.attempts.iter().enumerate() {
            let Some(Outcome::Response { status, at, wall, hint: Some(hint) }) = &attempt.outcome else {
                continue;
            };
            match trace.attempts.get(i + 1) {
                Some(next) => {
                    let waited = next.sent_at - *at;
                    prop_assert!(waited >= *hint, "#{}: {status} asked for {hint:?}, waited {waited:?}", i + 1);
                    prop_assert!(*hint <= spec.cap, "#{}: a hint over the cap was honoured", i + 1);
                }
                None => {
                    let Err(error) = &trace.result else { continue };
                    if *status == 429 && i + 1 < max {
                        // The call ended after a throttle it had attempts left for: only because
                        // the hint was too long, and then with RateLimited.
                        prop_assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
                        prop_assert!(*hint > spec.cap || *at + *hint >= deadline, "hint {hint:?} fitted, yet {error:?}");
                        prop_assert_eq!(error.stop_reason(), Some(StopReason::RateLimited));
                    }
                    if matches!(error, Error::RateLimited { .. }) {
                        // Whenever the call ends rate limited, it says when the server asked to come back.
                        prop_assert_eq!(error.retry_at(), Some(*wall + *hint));
                        prop_assert_eq!(error.status().map(|s| s.as_u16()), Some(*status));
                    }
                }
            }
        }
    }

    #[test]
    fn non_idempotent_requests_are_never_resent_after_they_may_have_been_sent(
        spec in specs(),
        call in non_idempotent_calls(),
        script in risky_scripts(),
    ) {
        let trace = drive(&call, &spec.policy(), &script, false);
        prop_assert!(!trace.exchange.is_idempotent());
        let risky = trace.attempts.iter().position(|a| match &a.outcome {
            None => true,
            Some(Outcome::Failed { kind }) => kind.may_have_been_sent(),
            Some(Outcome::Response { .. }) => false,
        });
        if let Some(i) = risky {
            prop_assert_eq!(trace.attempts.len(), i + 1, "re-sent after #{} may have been sent: {:?}", i + 1, trace.attempts[i].outcome);
            let Err(error) = &trace.result else {
                return Err(TestCaseError::fail("a may-have-been-sent failure ended in a success"));
            };
            prop_assert!(error.may_have_been_sent(), "{error:?}");
        }
    }

    #[test]
    fn an_error_says_the_request_may_have_been_sent_whenever_an_attempt_may_have_reached_the_server(
        spec in specs(),
        call in calls(),
        script in scripts(),
    ) {
        let trace = drive(&call, &spec.policy(), &script, false);
        let Err(error) = &trace.result else { return Ok(()) };
        let reached = |a: &Attempt| match &a.outcome {
            None | Some(Outcome::Response { .. }) => true,
            Some(Outcome::Failed { kind }) => kind.may_have_been_sent(),
        };
        if let Some(a) = trace.attempts.iter().find(|a| reached(a)) {
            prop_assert!(
                error.may_have_been_sent(),
                "#{} may have reached the server ({:?}), yet {error:?}",
                a.request.attempt,
                a.outcome
            );
        }
        if let [only] = trace.attempts.as_slice() {
            if !reached(only) {
                prop_assert!(!error.may_have_been_sent(), "{error:?}");
            }
        }
    }

    #[test]
    fn never_retried_statuses_end_the_call_after_one_attempt(
        spec in specs(),
        call in calls(),
        status in prop::sample::select(NEVER_RETRIED.to_vec()),
        hint in hints(),
        rest in scripts(),
    ) {
        let mut script = vec![Move { after: Duration::ZERO, act: Act::Respond(Answer::new(status, hint)) }];
        script.extend(rest);
        let run = scenario(&spec, &call, &script);
        prop_assert_eq!(run.requests.len(), 1, "\n{}", run);
        let Err(error) = &run.result else {
            return Err(TestCaseError::fail(format!("{status} ended in a success")));
        };
        prop_assert!(matches!(error, Error::Status { .. }), "{error:?}");
        prop_assert_eq!(error.status().map(|s| s.as_u16()), Some(status));
        prop_assert_eq!(error.attempts(), 1);
        prop_assert_eq!(error.stop_reason(), Some(StopReason::NotRetryable));
    }

    #[test]
    fn the_same_seed_and_script_give_the_same_timeline(spec in specs(), call in calls(), script in scripts()) {
        let a = scenario(&spec, &call, &script);
        let b = scenario(&spec, &call, &script);
        prop_assert_eq!(&a.timeline, &b.timeline);
        prop_assert_eq!(&a.waits, &b.waits);
        let headers = |run: &Run| run.requests.iter().map(|r| format!("{:?}", r.headers)).collect::<Vec<_>>();
        prop_assert_eq!(headers(&a), headers(&b));
        prop_assert_eq!(format!("{:?}", a.result), format!("{:?}", b.result));
        // And by hand, every deadline and wait included.
        let c = drive(&call, &spec.policy(), &script, false);
        let d = drive(&call, &spec.policy(), &script, false);
        prop_assert_eq!(c.fingerprint(), d.fingerprint());
    }

    #[test]
    fn the_idempotency_key_and_correlation_id_are_the_same_on_every_attempt(
        spec in specs(),
        call in calls(),
        script in scripts(),
    ) {
        let run = scenario(&spec, &call, &script);
        let first = &run.requests[0];
        let key = first.header(IDEMPOTENCY_HEADER).map(str::to_owned);
        let id = first.header(CORRELATION_HEADER).map(str::to_owned);
        for request in &run.requests {
            prop_assert_eq!(request.headers.get_all(IDEMPOTENCY_HEADER).iter().count(), usize::from(key.is_some()));
            prop_assert_eq!(request.headers.get_all(CORRELATION_HEADER).iter().count(), 1);
            prop_assert_eq!(request.header(IDEMPOTENCY_HEADER), key.as_deref(), "#{}", request.attempt);
            prop_assert_eq!(request.header(CORRELATION_HEADER), id.as_deref(), "#{}", request.attempt);
        }
        match &call.key {
            Key::None => prop_assert_eq!(key, None),
            Key::Mint => prop_assert_eq!(key.map(|k| k.len()), Some(36), "a minted key is a UUID"),
            Key::Given(given) => prop_assert_eq!(key.as_deref(), Some(given.as_str())),
        }
        let id = id.expect("every attempt carries a correlation ID");
        if let Some(given) = &call.correlation {
            prop_assert_eq!(&id, given);
        }
        let reported = match &run.result {
            Ok(response) => Some(response.correlation_id().as_str()),
            Err(error) => error.correlation_id().map(CorrelationId::as_str),
        };
        prop_assert_eq!(reported, Some(id.as_str()));
    }

    #[test]
    fn spurious_timers_and_stale_inputs_change_nothing(spec in specs(), call in calls(), script in scripts()) {
        let clean = drive(&call, &spec.policy(), &script, false);
        let meddled = drive(&call, &spec.policy(), &script, true);
        prop_assert_eq!(clean.fingerprint(), meddled.fingerprint());
    }

    #[test]
    fn a_finished_exchange_stays_finished(spec in specs(), call in calls(), script in scripts()) {
        let mut trace = drive(&call, &spec.policy(), &script, false);
        let result = format!("{:?}", trace.result);
        let later = trace.end + Duration::from_secs(3600);
        let attempts = trace.exchange.attempts();
        prop_assert!(trace.exchange.is_done());
        prop_assert_eq!(trace.exchange.in_flight(), None);
        let poll = |exchange: &mut Exchange, at| match exchange.poll_output(at) {
            Output::Done(result) => format!("{result:?}"),
            other => format!("not done: {other:?}"),
        };
        prop_assert_eq!(poll(&mut trace.exchange, trace.end), result.clone());
        prop_assert_eq!(poll(&mut trace.exchange, later), result.clone());
        meddle(&mut trace.exchange, later, None, attempts);
        prop_assert_eq!(poll(&mut trace.exchange, later), result.clone());
        prop_assert_eq!(trace.exchange.attempts(), attempts);
    }

    #[test]
    fn the_result_reports_the_last_attempt_and_when_the_call_ended(
        spec in specs(),
        call in calls(),
        script in scripts(),
    ) {
        let trace = drive(&call, &spec.policy(), &script, false);
        let successes = trace.attempts.iter().filter(|a| matches!(
            a.outcome,
            Some(Outcome::Response { status, .. }) if (200..300).contains(&status)
        )).count();
        let last = trace.last_status();
        let elapsed = trace.end - epoch();
        match &trace.result {
            Ok(response) => {
                prop_assert_eq!(successes, 1);
                prop_assert_eq!(Some(response.status().as_u16()), last);
                prop_assert_eq!(response.elapsed(), elapsed);
            }
            Err(error) => {
                prop_assert_eq!(successes, 0, "{:?}", error);
                prop_assert_eq!(error.status().map(|s| s.as_u16()), last);
                prop_assert_eq!(error.elapsed(), elapsed);
                prop_assert!(error.stop_reason().is_some(), "{error:?}");
            }
        }
    }

    #[test]
    fn driving_by_hand_agrees_with_the_scenario_runner(spec in specs(), call in calls(), script in scripts()) {
        let run = scenario(&spec, &call, &script);
        let trace = drive(&call, &spec.policy(), &script, false);
        prop_assert_eq!(format!("{:?}", run.result), format!("{:?}", trace.result), "\n{}", run);
        let sent = |headers: &http::HeaderMap| format!("{headers:?}");
        prop_assert_eq!(
            run.requests.iter().map(|r| (r.attempt, sent(&r.headers))).collect::<Vec<_>>(),
            trace.attempts.iter().map(|a| (a.request.attempt, sent(a.request.request.headers()))).collect::<Vec<_>>()
        );
        let between: Vec<(Duration, WaitReason)> = trace
            .waits
            .iter()
            .filter(|w| !matches!(w.reason, WaitReason::AttemptDeadline { .. }))
            .map(|w| (w.until - w.at, w.reason))
            .collect();
        prop_assert_eq!(&run.waits, &between);
    }
}

// ---------------------------------------------------------------------------------------------
// The retry budget over many exchanges.
// ---------------------------------------------------------------------------------------------

/// A total outage seen by many calls sharing one policy.
#[derive(Clone, Debug)]
struct Outage {
    window: Duration,
    ratio: f64,
    floor: u32,
    max_attempts: u32,
    jitter: JitterMode,
    initial: Duration,
    max: Duration,
    /// When each call starts, in thousandths of the span calls may start in.
    starts: Vec<u32>,
    seed: u64,
}

/// The longest a call of an [`Outage`] can last: 5 backoffs of at most 50 ms.
const LONGEST_CALL: Duration = Duration::from_millis(250);

/// Outages over budget windows drawn from `windows`.
fn outages(windows: impl Strategy<Value = Duration>) -> impl Strategy<Value = Outage> {
    (
        windows,
        0u32..=100,
        0u32..=5,
        2u32..=6,
        jitters(),
        0u64..=25,
        0u64..=25,
        prop::collection::vec(0u32..=1000, 1..=40),
        any::<u64>(),
    )
        .prop_map(
            |(window, percent, floor, max_attempts, jitter, initial, extra, mut starts, seed)| {
                starts.sort_unstable();
                Outage {
                    window,
                    ratio: f64::from(percent) / 100.0,
                    floor,
                    max_attempts,
                    jitter,
                    initial: ms(initial),
                    max: ms(initial + extra),
                    starts,
                    seed,
                }
            },
        )
}

struct OutageRun {
    results: Vec<Result<Response, Error>>,
    sent: usize,
    last_event: Instant,
}

/// Runs every call of the outage interleaved in virtual time, on one policy: each call starts
/// at its time, every attempt is answered 503 at once, and the earliest due call moves next.
fn run_outage(outage: &Outage) -> OutageRun {
    let window = outage.window;
    let backoff = Backoff::default()
        .with_jitter(outage.jitter)
        .with_initial(outage.initial)
        .with_max(outage.max);
    let budget = BudgetConfig::default()
        .with_window(window)
        .with_retry_ratio(outage.ratio)
        .with_min_retries_per_sec(outage.floor);
    let policy = Config::default()
        .with_retry(
            RetryPolicy::standard()
                .with_max_attempts(outage.max_attempts)
                .with_backoff(backoff),
        )
        .with_budget(budget)
        // The budget alone: the circuit breaker would refuse calls before the budget does.
        .with_circuit_breaker(egress_core::CircuitBreakerConfig::disabled())
        .build()
        .expect("a valid policy");
    let span = window - LONGEST_CALL - ms(50);
    let n = outage.starts.len();
    let mut wake: Vec<Instant> = outage
        .starts
        .iter()
        .map(|&k| epoch() + span * k / 1000)
        .collect();
    let mut exchanges: Vec<Option<Exchange>> = (0..n).map(|_| None).collect();
    let mut results: Vec<Option<Result<Response, Error>>> = vec![None; n];
    let mut sent = 0;
    let mut last_event = epoch();
    while let Some(i) = (0..n)
        .filter(|&i| results[i].is_none())
        .min_by_key(|&i| wake[i])
    {
        let now = wake[i];
        last_event = now;
        let exchange = match &mut exchanges[i] {
            Some(exchange) => {
                exchange.handle_input(Input::Timer { at: now });
                exchange
            }
            slot @ None => {
                let request = Request::new(Method::GET, URL).unwrap();
                let seed = outage.seed.wrapping_add(i as u64);
                slot.insert(Exchange::new(request, &policy, now, seed))
            }
        };
        loop {
            match exchange.poll_output(now) {
                Output::Send(attempt) => {
                    sent += 1;
                    exchange.handle_input(Input::Response {
                        attempt: attempt.attempt,
                        at: now,
                        wall: wall_at(now),
                        response: response(503),
                    });
                }
                Output::Wait { until, .. } => {
                    wake[i] = until;
                    break;
                }
                Output::Done(result) => {
                    results[i] = Some(result);
                    break;
                }
                other => panic!("an output this driver does not know: {other:?}"),
            }
        }
    }
    OutageRun {
        results: results.into_iter().map(Option::unwrap).collect(),
        sent,
        last_event,
    }
}

/// Checks the budget's arithmetic over one outage that fits in one window: nothing succeeds, so
/// nothing is earned and at most the reserve, `min_retries_per_sec * window_secs`, is retried;
/// and no refusal comes before the reserve (rounded down) is spent.
fn check_budget(outage: &Outage) -> Result<(), TestCaseError> {
    let run = run_outage(outage);
    let n = outage.starts.len();
    let window_secs = outage.window.as_secs_f64();
    // The premise: everything happened within one budget window.
    prop_assert!(run.last_event - epoch() < outage.window);
    let retries = run.sent - n;
    let floor = f64::from(outage.floor) * window_secs;
    // Retries earn on successes only (`retry_ratio * 0` here).
    let bound = floor;
    prop_assert!(
        retries as f64 <= bound + 1e-9,
        "{retries} retries over {n} calls, bound {bound}"
    );
    let mut refused = false;
    for result in &run.results {
        let Err(error) = result else {
            return Err(TestCaseError::fail(
                "a call succeeded during a total outage",
            ));
        };
        prop_assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        match error.stop_reason() {
            Some(StopReason::AttemptsExhausted) => {
                prop_assert_eq!(error.attempts(), outage.max_attempts);
            }
            Some(StopReason::Budget) => {
                prop_assert!(
                    matches!(error, Error::RetryBudgetExhausted { .. }),
                    "{error:?}"
                );
                refused = true;
            }
            other => {
                return Err(TestCaseError::fail(format!(
                    "stopped for {other:?}: {error:?}"
                )));
            }
        }
    }
    // And the budget is not stricter than it says: it refuses only once the floor is spent.
    if refused {
        prop_assert!(
            retries as f64 >= floor.floor(),
            "refused after {retries} retries, floor {floor}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(common::proptest_config(256))]

    #[test]
    fn the_retry_budget_bounds_retries_during_an_outage(
        outage in outages((1u64..=10).prop_map(Duration::from_secs)),
    ) {
        check_budget(&outage)?;
    }

    #[test]
    fn the_retry_budget_floor_scales_with_a_window_of_any_length(
        outage in outages((400u64..=10_000).prop_map(ms)),
    ) {
        check_budget(&outage)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Backoff.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(common::proptest_config(1024))]

    #[test]
    fn backoff_stays_between_zero_and_the_cap(
        retry in any::<u32>(),
        mode in jitters(),
        initial in durations(),
        max in durations(),
        previous in durations(),
        random in any::<u64>(),
    ) {
        let b = Backoff::default().with_jitter(mode).with_initial(initial).with_max(max);
        let d = b.delay(retry, previous, random);
        prop_assert!(d <= max, "{d:?} > {max:?}");
        let exp = b.exponential(retry);
        prop_assert!(exp <= max);
        match mode {
            JitterMode::None => prop_assert_eq!(d, exp),
            JitterMode::Full => prop_assert!(d <= exp, "full jitter {d:?} over {exp:?}"),
            JitterMode::Equal => prop_assert!(exp / 2 <= d && d <= exp, "equal jitter {d:?} outside [{exp:?}/2, {exp:?}]"),
            JitterMode::Decorrelated => prop_assert!(d >= initial.min(max), "decorrelated {d:?} under {initial:?}"),
            _ => {}
        }
    }

    #[test]
    fn backoff_without_jitter_never_shrinks(
        retry in 0..u32::MAX,
        initial in durations(),
        max in durations(),
        previous in durations(),
        random in any::<u64>(),
    ) {
        let b = Backoff::default().with_jitter(JitterMode::None).with_initial(initial).with_max(max);
        let delay = |n| b.delay(n, previous, random);
        prop_assert!(delay(retry + 1) >= delay(retry));
        for n in 0..70 {
            prop_assert!(delay(n + 1) >= delay(n), "retry {n}: {:?} then {:?}", delay(n), delay(n + 1));
        }
    }
}
