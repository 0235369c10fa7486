//! Hedged requests: scenarios with exact timelines, the guards a hedge must pass, the async
//! driver on the scripted transport, and property tests over several calls sharing one client's
//! state, driven by hand in virtual time.

mod common;
use common::{epoch, ms};
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use egress_core::CircuitState;
use egress_core::http::{self, Method};
use egress_core::test_util::{Scenario, ScriptedTransport, WALL_EPOCH_SECS, block_on, hang, step};
use egress_core::{Backoff, BudgetConfig, JitterMode, RetryPolicy};
use egress_core::{
    CircuitBreakerConfig, Config, Error, Exchange, Input, KeyChoice, Output, Policy, Rate,
    RateLimitConfig, Request, Response, TransportError, TransportErrorKind, WaitReason,
};
use egress_core::{HedgeAfter, HedgingConfig, Percentile};
use proptest::prelude::*;

const URL: &str = "https://api.example.com/things/7";
const HOST: &str = "api.example.com";

fn wall_at(at: Instant) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS) + (at - epoch())
}

fn no_jitter() -> RetryPolicy {
    RetryPolicy::standard().with_backoff(Backoff::default().with_jitter(JitterMode::None))
}

/// Hedging after a fixed 50 ms, retries without jitter.
fn hedged(after: u64) -> Config {
    Config::default()
        .with_retry(no_jitter())
        .with_hedging(HedgingConfig::enabled(HedgeAfter::Fixed(ms(after))))
}

fn get() -> Request {
    Request::new(Method::GET, URL).expect("the test URL is valid")
}

fn policy(config: Config) -> Policy {
    config.build().expect("the test config is valid")
}

// ---------------------------------------------------------------------------------------------
// Timelines
// ---------------------------------------------------------------------------------------------

#[test]
fn a_slow_first_attempt_is_overtaken_by_its_hedge_and_cancelled() {
    let run = Scenario::new(get(), &policy(hedged(50)))
        .steps([step(200).after(ms(900)), step(200).after(ms(20))])
        .run();
    run.assert_timeline(&[
        "0ms send #1",
        "50ms send #2 (hedge)",
        "70ms #2 -> 200",
        "70ms #1 cancelled",
        "70ms done ok 200 after 2",
    ]);
    assert_eq!(run.max_in_flight, 2);
}

#[test]
fn an_answer_before_the_hedge_delay_sends_no_hedge() {
    let run = Scenario::new(get(), &policy(hedged(50)))
        .steps([step(200).after(ms(49)), step(200)])
        .run();
    run.assert_timeline(&["0ms send #1", "49ms #1 -> 200", "49ms done ok 200 after 1"]);
    assert_eq!(run.max_in_flight, 1);
}

/// Asserts that `request` under `policy` sends one attempt only, however slow it is.
#[track_caller]
fn assert_one_slow_attempt(request: Request, policy: &Policy) {
    let run = Scenario::new(request, policy)
        .steps([step(200).after(ms(900)), step(200)])
        .run();
    run.assert_timeline(&[
        "0ms send #1",
        "900ms #1 -> 200",
        "900ms done ok 200 after 1",
    ]);
}

#[test]
fn hedging_is_off_by_default_and_the_default_policy_sends_one_attempt_at_a_time() {
    assert_one_slow_attempt(get(), &policy(Config::default().with_retry(no_jitter())));
}

#[test]
fn a_failed_attempt_while_a_hedge_is_in_flight_does_not_end_the_call() {
    let run = Scenario::new(get(), &policy(hedged(50)))
        .steps([step(503).after(ms(80)), step(200).after(ms(100))])
        .run();
    run.assert_timeline(&[
        "0ms send #1",
        "50ms send #2 (hedge)",
        "80ms #1 -> 503",
        "150ms #2 -> 200",
        "150ms done ok 200 after 2",
    ]);
}

#[test]
fn when_every_attempt_of_a_round_fails_the_retry_rules_apply_to_the_whole() {
    let config = hedged(50).with_retry(no_jitter().with_max_attempts(2));
    let run = Scenario::new(get(), &policy(config))
        .steps([
            step(503).after(ms(80)),
            fail(TransportErrorKind::ClosedBeforeResponse).after(ms(40)),
            step(200).after(ms(10)),
        ])
        .run();
    // The hedge fails at 90 ms, the first attempt at 80 ms: one round, so one retry, after the
    // first backoff (100 ms); the call's one hedge is spent, so the retry goes alone.
    run.assert_timeline(&[
        "0ms send #1",
        "50ms send #2 (hedge)",
        "80ms #1 -> 503",
        "90ms #2 -> closed_before_response",
        "90ms wait 100ms backoff",
        "190ms send #3",
        "200ms #3 -> 200",
        "200ms done ok 200 after 3",
    ]);
}

fn fail(kind: TransportErrorKind) -> egress_core::test_util::Step {
    egress_core::test_util::fail(kind)
}

#[test]
fn a_final_answer_ends_the_call_even_while_a_hedge_is_in_flight() {
    let run = Scenario::new(get(), &policy(hedged(50)))
        .steps([step(404).after(ms(60)), step(200).after(ms(100))])
        .run();
    run.assert_timeline(&[
        "0ms send #1",
        "50ms send #2 (hedge)",
        "60ms #1 -> 404",
        "60ms #2 cancelled",
        "60ms done err status after 2",
    ]);
}

#[test]
fn up_to_max_hedges_go_one_delay_apart() {
    let config = hedged(50)
        .with_hedging(HedgingConfig::enabled(HedgeAfter::Fixed(ms(50))).with_max_hedges(2));
    let run = Scenario::new(get(), &policy(config))
        .steps([hang(), hang(), step(200).after(ms(5)), step(200)])
        .run();
    run.assert_timeline(&[
        "0ms send #1",
        "50ms send #2 (hedge)",
        "100ms send #3 (hedge)",
        "105ms #3 -> 200",
        "105ms #1 cancelled",
        "105ms #2 cancelled",
        "105ms done ok 200 after 3",
    ]);
    assert_eq!(run.max_in_flight, 3);
}

#[test]
fn no_hedge_is_due_at_or_past_the_deadline() {
    let config = hedged(50).with_deadline(ms(50));
    let run = Scenario::new(get(), &policy(config))
        .steps([hang(), step(200)])
        .run();
    run.assert_timeline(&[
        "0ms send #1",
        "50ms #1 -> deadline",
        "50ms done err deadline after 1",
    ]);
}

#[test]
fn a_non_idempotent_request_is_never_hedged_even_when_it_asks() {
    let post = Request::new(Method::POST, URL).unwrap().with_hedge(true);
    assert_one_slow_attempt(post, &policy(hedged(50)));
}

#[test]
fn a_post_with_an_idempotency_key_is_hedged_with_the_same_key() {
    let post = Request::new(Method::POST, URL)
        .unwrap()
        .with_idempotency_key(KeyChoice::Mint);
    let run = Scenario::new(post, &policy(hedged(50)))
        .steps([step(200).after(ms(900)), step(201).after(ms(10))])
        .run();
    assert_eq!(run.max_in_flight, 2);
    let keys: Vec<_> = run
        .requests
        .iter()
        .map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].is_some() && keys[0] == keys[1], "{keys:?}");
}

#[test]
fn a_request_turns_hedging_on_or_off_for_itself() {
    let off = policy(
        Config::default()
            .with_hedging(HedgingConfig::enabled(HedgeAfter::Fixed(ms(50))).with_enabled(false)),
    );
    let run = Scenario::new(get().with_hedge(true), &off)
        .steps([step(200).after(ms(900)), step(200).after(ms(10))])
        .run();
    assert_eq!(run.max_in_flight, 2, "{run}");
    let run = Scenario::new(get().with_hedge(false), &policy(hedged(50)))
        .steps([step(200).after(ms(900)), step(200).after(ms(10))])
        .run();
    assert_eq!(run.max_in_flight, 1, "{run}");
}

#[test]
fn a_percentile_hedge_delay_follows_the_hosts_recent_latencies() {
    let config = Config::default().with_hedging(
        HedgingConfig::enabled(HedgeAfter::Percentile(Percentile::P90)).with_fallback(ms(500)),
    );
    let policy = policy(config);
    // Before the host has enough answers, the fallback: 500 ms.
    let run = Scenario::new(get(), &policy)
        .steps([step(200).after(ms(600)), step(200).after(ms(10))])
        .run();
    assert_eq!(run.timeline[1], "500ms send #2 (hedge)", "{run}");
    // Nine fast answers in ten: the p90 is the fast latency.
    for i in 0..40 {
        let latency = if i % 10 == 9 { ms(400) } else { ms(30) };
        Scenario::new(get(), &policy)
            .steps([step(200).after(latency)])
            .run();
    }
    assert_eq!(
        policy
            .guards()
            .latency_percentile(HOST, epoch(), Percentile::P90),
        Some(ms(30))
    );
    let run = Scenario::new(get(), &policy)
        .steps([step(200).after(ms(400)), step(200).after(ms(30))])
        .run();
    run.assert_timeline(&[
        "0ms send #1",
        "30ms send #2 (hedge)",
        "60ms #2 -> 200",
        "60ms #1 cancelled",
        "60ms done ok 200 after 2",
    ]);
}

// ---------------------------------------------------------------------------------------------
// The guards a hedge must pass
// ---------------------------------------------------------------------------------------------

/// Polls `exchange` at `now` until it waits or ends; returns the attempts sent and the output.
fn drain(exchange: &mut Exchange, now: Instant) -> (Vec<u32>, Output) {
    let mut sent = Vec::new();
    loop {
        match exchange.poll_output(now) {
            Output::Send(attempt) => sent.push(attempt.attempt),
            other => return (sent, other),
        }
    }
}

fn answer(exchange: &mut Exchange, attempt: u32, at: Instant, status: u16) {
    let mut response = http::Response::new(bytes::Bytes::new());
    *response.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    if status == 429 {
        response
            .headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("5"));
    }
    exchange.handle_input(Input::Response {
        attempt,
        at,
        wall: wall_at(at),
        response,
    });
}

/// A hedged call sends its first attempt at 0; other calls to the host (not hedged, no
/// retries) meet `statuses` at 10 ms; then the hedge falls due at 50 ms.
fn hedge_after_others(config: Config, statuses: &[u16]) -> (Exchange, Vec<u32>, Output) {
    let policy = policy(config.with_retry(RetryPolicy::disabled()));
    let start = epoch();
    let mut hedged = Exchange::new(get(), &policy, start, 1);
    let (sent, _) = drain(&mut hedged, start);
    assert_eq!(sent, [1]);
    for (i, status) in statuses.iter().enumerate() {
        let mut other = Exchange::new(get().with_hedge(false), &policy, start, 10 + i as u64);
        let (sent, _) = drain(&mut other, start);
        answer(&mut other, sent[0], start + ms(10), *status);
        assert!(other.is_done());
    }
    let at = start + ms(50);
    hedged.handle_input(Input::Timer { at });
    let (sent, output) = drain(&mut hedged, at);
    (hedged, sent, output)
}

#[test]
fn no_hedge_is_sent_while_the_circuit_is_open() {
    let breaker = CircuitBreakerConfig::default().with_min_throughput(3);
    let (exchange, sent, output) =
        hedge_after_others(hedged(50).with_circuit_breaker(breaker), &[503, 503]);
    assert!(sent.is_empty(), "a hedge went out: {sent:?}");
    assert_eq!(exchange.hedges(), 0);
    assert!(matches!(
        output,
        Output::Wait {
            reason: WaitReason::AttemptDeadline { attempt: 1 },
            ..
        }
    ));
    // The control: the same story with successes hedges.
    let breaker = CircuitBreakerConfig::default().with_min_throughput(3);
    let (_, sent, _) = hedge_after_others(hedged(50).with_circuit_breaker(breaker), &[200, 200]);
    assert_eq!(sent, [2]);
}

#[test]
fn no_hedge_is_sent_while_the_host_is_held() {
    let (exchange, sent, _) = hedge_after_others(hedged(50), &[429]);
    assert!(sent.is_empty(), "a hedge went out: {sent:?}");
    assert_eq!(exchange.hedges(), 0);
}

#[test]
fn a_hedge_is_paid_from_the_retry_budget() {
    let empty = BudgetConfig::default()
        .with_retry_ratio(0.0)
        .with_min_retries_per_sec(0);
    let (_, sent, _) = hedge_after_others(hedged(50).with_budget(empty), &[]);
    assert!(sent.is_empty(), "a hedge went out without budget: {sent:?}");
    let (_, sent, _) = hedge_after_others(hedged(50), &[]);
    assert_eq!(sent, [2]);
}

#[test]
fn a_hedge_takes_a_rate_limiter_slot_and_never_waits_for_one() {
    let limit = |burst| {
        RateLimitConfig::default()
            .with_enabled(true)
            .with_rate("1/s".parse::<Rate>().expect("a valid rate"))
            .with_burst(burst)
    };
    let (exchange, sent, output) = hedge_after_others(hedged(50).with_rate_limit(limit(1)), &[]);
    assert!(sent.is_empty(), "a hedge went out past the limit: {sent:?}");
    assert!(matches!(
        output,
        Output::Wait {
            reason: WaitReason::AttemptDeadline { .. },
            ..
        }
    ));
    assert_eq!(exchange.hedges(), 0);
    let (_, sent, _) = hedge_after_others(hedged(50).with_rate_limit(limit(2)), &[]);
    assert_eq!(sent, [2]);
}

// ---------------------------------------------------------------------------------------------
// The async driver on the scripted transport
// ---------------------------------------------------------------------------------------------

#[test]
fn the_driver_races_a_hedge_and_takes_the_first_answer() {
    let upstream = ScriptedTransport::new();
    upstream
        .push(step(200).body("slow").after(ms(900)))
        .push(step(200).body("fast").after(ms(20)));
    let config = hedged(50).with_base_url("https://api.example.com");
    let client = upstream.client(config).unwrap();
    let response = block_on(client.get("/x").send()).unwrap();
    assert_eq!(response.body().as_ref(), b"fast");
    assert_eq!(response.attempts(), 2);
    assert_eq!(response.elapsed(), ms(70));
    let seen = upstream.requests();
    let at: Vec<_> = seen.iter().map(|s| (s.attempt, s.at)).collect();
    assert_eq!(at, [(1, ms(0)), (2, ms(50))]);
    assert_eq!(
        seen[0].header("x-correlation-id"),
        seen[1].header("x-correlation-id")
    );
    // The loser's answer was dropped with its future: the clock stopped at the winner's.
    assert_eq!(upstream.clock().elapsed(), ms(70));
}

#[test]
fn the_driver_keeps_going_when_the_first_attempt_fails_beside_a_hedge() {
    let upstream = ScriptedTransport::new();
    upstream
        .push(fail(TransportErrorKind::ClosedBeforeResponse).after(ms(60)))
        .push(step(200).body("hedge").after(ms(40)));
    let client = upstream
        .client(hedged(50).with_base_url("https://api.example.com"))
        .unwrap();
    let response = block_on(client.get("/x").send()).unwrap();
    assert_eq!(response.body().as_ref(), b"hedge");
    assert_eq!(response.elapsed(), ms(90));
}

// ---------------------------------------------------------------------------------------------
// Properties: several calls sharing one client's state, by hand, in virtual time
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Act {
    Answer(u16, u64),
    Fail(u64),
    Hang,
}

#[derive(Clone, Debug)]
struct CallSpec {
    method: Method,
    key: bool,
    hedge: Option<bool>,
    start: u64,
    seed: u64,
    script: Vec<Act>,
}

#[derive(Clone, Debug)]
struct Setup {
    hedge_after: u64,
    max_hedges: u32,
    deadline: u64,
    attempt_timeout: u64,
    max_attempts: u32,
    breaker: bool,
    calls: Vec<CallSpec>,
}

impl Setup {
    fn policy(&self) -> Policy {
        let breaker = if self.breaker {
            CircuitBreakerConfig::default()
                .with_min_throughput(3)
                .with_break_duration(ms(200))
        } else {
            CircuitBreakerConfig::disabled()
        };
        let hedging = HedgingConfig::enabled(HedgeAfter::Fixed(ms(self.hedge_after)))
            .with_max_hedges(self.max_hedges);
        policy(
            Config::default()
                .with_retry(RetryPolicy::standard().with_max_attempts(self.max_attempts))
                .with_deadline(ms(self.deadline))
                .with_attempt_timeout(ms(self.attempt_timeout))
                .with_circuit_breaker(breaker)
                .with_hedging(hedging),
        )
    }
}

/// What one call did, as the harness saw it.
#[derive(Debug, Default)]
struct CallLog {
    lines: Vec<String>,
    max_in_flight: usize,
    hedges: u32,
    /// Every answer the upstream had scheduled for the call: attempt, when, status (0: failure).
    scheduled: Vec<(u32, Instant, u16)>,
    /// The attempts whose outcome was fed to the exchange.
    fed: Vec<u32>,
    end: Option<Instant>,
    winner: Option<u32>,
    result: Option<Result<Response, Error>>,
}

struct Live {
    exchange: Exchange,
    script: VecDeque<Act>,
    /// Attempts in flight: number, and when their outcome arrives (`None`: never).
    pending: Vec<(u32, Option<(Instant, Act)>)>,
    timer: Option<Instant>,
    log: CallLog,
}

struct Sim {
    policy: Policy,
    max_hedges: u32,
}

impl Sim {
    /// Polls call `live` at `now` until it waits or ends, checking every hedge as it goes.
    fn drain(&self, live: &mut Live, now: Instant) {
        let t = now - epoch();
        loop {
            let before = live.exchange.hedges();
            match live.exchange.poll_output(now) {
                Output::Send(attempt) => {
                    let n = attempt.attempt;
                    let hedge = live.exchange.hedges() > before;
                    if hedge {
                        assert!(
                            now < live.exchange.deadline(),
                            "a hedge at or past the deadline"
                        );
                        assert_eq!(
                            self.policy.guards().circuit_state(HOST, now),
                            CircuitState::Closed,
                            "a hedge while the circuit is not closed"
                        );
                        assert!(
                            self.policy.guards().hold(HOST, now).is_none(),
                            "a hedge while held"
                        );
                        assert!(
                            live.exchange.is_idempotent(),
                            "a non-idempotent call hedged"
                        );
                    }
                    live.log.lines.push(format!(
                        "{t:?} send #{n}{}",
                        if hedge { " hedge" } else { "" }
                    ));
                    // An outcome at or past the attempt's deadline never arrives: the
                    // deadline ends the attempt first.
                    let deadline = attempt.deadlines.attempt;
                    let act = match live.script.pop_front().unwrap_or(Act::Hang) {
                        Act::Answer(_, after) | Act::Fail(after) if now + ms(after) >= deadline => {
                            Act::Hang
                        }
                        act => act,
                    };
                    let due = match act {
                        Act::Answer(status, after) => {
                            let at = now + ms(after);
                            live.log.scheduled.push((n, at, status));
                            Some((at, act))
                        }
                        Act::Fail(after) => {
                            let at = now + ms(after);
                            live.log.scheduled.push((n, at, 0));
                            Some((at, act))
                        }
                        Act::Hang => None,
                    };
                    live.pending.push((n, due));
                    let in_flight = live
                        .pending
                        .iter()
                        .filter(|(n, _)| live.exchange.is_waiting_for(*n))
                        .count();
                    live.log.max_in_flight = live.log.max_in_flight.max(in_flight);
                    assert!(
                        in_flight as u32 <= 1 + self.max_hedges,
                        "{in_flight} in flight"
                    );
                }
                Output::Wait { until, .. } => {
                    live.timer = Some(until);
                    break;
                }
                Output::Done(result) => {
                    live.timer = None;
                    live.log.end = Some(now);
                    live.log.hedges = live.exchange.hedges();
                    live.log.lines.push(format!(
                        "{t:?} done {:?}",
                        result
                            .as_ref()
                            .map(|r| r.status().as_u16())
                            .map_err(|e| e.type_name())
                    ));
                    live.log.winner = result
                        .as_ref()
                        .ok()
                        .and_then(|r| std::str::from_utf8(r.body()).ok()?.parse().ok());
                    live.log.result = Some(result);
                    break;
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
        live.pending
            .retain(|(n, _)| live.exchange.is_waiting_for(*n));
    }
}

fn simulate(setup: &Setup) -> Vec<CallLog> {
    let sim = Sim {
        policy: setup.policy(),
        max_hedges: setup.max_hedges,
    };
    let mut calls: Vec<Option<Live>> = setup.calls.iter().map(|_| None).collect();
    for _ in 0..100_000 {
        // The next event: a call starting, an outcome arriving, a timer firing. Earliest first;
        // on a tie starts, then outcomes, then timers, each by call.
        let mut next: Option<(Instant, u8, usize)> = None;
        let mut consider = |at: Instant, kind: u8, i: usize| {
            if next.is_none_or(|n| (at, kind, i) < n) {
                next = Some((at, kind, i));
            }
        };
        for (i, (spec, live)) in setup.calls.iter().zip(&calls).enumerate() {
            match live {
                None => consider(epoch() + ms(spec.start), 0, i),
                Some(live) => {
                    for (_, due) in &live.pending {
                        if let Some((at, _)) = due {
                            consider(*at, 1, i);
                        }
                    }
                    if let Some(timer) = live.timer {
                        consider(timer, 2, i);
                    }
                }
            }
        }
        let Some((at, kind, i)) = next else {
            break;
        };
        match kind {
            0 => {
                let spec = &setup.calls[i];
                let mut request = Request::new(spec.method.clone(), URL).expect("valid URL");
                if spec.key {
                    request = request.with_idempotency_key(KeyChoice::Mint);
                }
                if let Some(hedge) = spec.hedge {
                    request = request.with_hedge(hedge);
                }
                let exchange = Exchange::new(request, &sim.policy, at, spec.seed);
                let mut live = Live {
                    exchange,
                    script: spec.script.iter().cloned().collect(),
                    pending: Vec::new(),
                    timer: None,
                    log: CallLog::default(),
                };
                sim.drain(&mut live, at);
                calls[i] = Some(live);
            }
            1 => {
                let live = calls[i].as_mut().expect("a started call");
                let index = live
                    .pending
                    .iter()
                    .position(|(_, due)| due.as_ref().is_some_and(|(t, _)| *t == at))
                    .expect("the outcome chosen is pending");
                let (n, due) = live.pending.remove(index);
                let (_, act) = due.expect("a scheduled outcome");
                live.log.fed.push(n);
                let t = at - epoch();
                match act {
                    Act::Answer(status, _) => {
                        live.log.lines.push(format!("{t:?} #{n} -> {status}"));
                        let mut response = http::Response::new(bytes::Bytes::from(n.to_string()));
                        *response.status_mut() =
                            http::StatusCode::from_u16(status).expect("a valid status");
                        live.exchange.handle_input(Input::Response {
                            attempt: n,
                            at,
                            wall: wall_at(at),
                            response,
                        });
                    }
                    Act::Fail(_) => {
                        live.log.lines.push(format!("{t:?} #{n} -> reset"));
                        live.exchange.handle_input(Input::Failed {
                            attempt: n,
                            at,
                            error: TransportError::from_kind(
                                TransportErrorKind::ClosedBeforeResponse,
                            ),
                        });
                    }
                    Act::Hang => unreachable!("a hang has no outcome"),
                }
                sim.drain(live, at);
            }
            _ => {
                let live = calls[i].as_mut().expect("a started call");
                live.exchange.handle_input(Input::Timer { at });
                sim.drain(live, at);
            }
        }
    }
    calls
        .into_iter()
        .map(|live| live.expect("every call started").log)
        .collect()
}

fn acts() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => (prop::sample::select(vec![200u16, 200, 201, 404, 429, 500, 503]), 0u64..400)
            .prop_map(|(s, after)| Act::Answer(s, after)),
        1 => (0u64..400).prop_map(Act::Fail),
        1 => Just(Act::Hang),
    ]
}

fn call_specs(idempotent_only: bool) -> impl Strategy<Value = CallSpec> {
    let methods = if idempotent_only {
        prop::sample::select(vec![Method::GET, Method::PUT, Method::DELETE])
    } else {
        prop::sample::select(vec![Method::GET, Method::PUT, Method::POST, Method::PATCH])
    };
    (
        methods,
        any::<bool>(),
        prop::option::of(any::<bool>()),
        0u64..300,
        any::<u64>(),
        prop::collection::vec(acts(), 0..8),
    )
        .prop_map(|(method, key, hedge, start, seed, script)| CallSpec {
            method,
            key,
            hedge,
            start,
            seed,
            script,
        })
}

fn setups(idempotent_only: bool) -> impl Strategy<Value = Setup> {
    (
        1u64..150,
        1u32..=3,
        50u64..1500,
        20u64..600,
        1u32..=4,
        any::<bool>(),
        prop::collection::vec(call_specs(idempotent_only), 1..5),
    )
        .prop_map(
            |(hedge_after, max_hedges, deadline, attempt_timeout, max_attempts, breaker, calls)| {
                Setup {
                    hedge_after,
                    max_hedges,
                    deadline,
                    attempt_timeout,
                    max_attempts,
                    breaker,
                    calls,
                }
            },
        )
}

proptest! {
    #![proptest_config(common::proptest_config(256))]

    /// Also checked at every send inside the harness: no hedge past the deadline, while the
    /// circuit is not closed or while the host is held, and never for a non-idempotent call.
    #[test]
    fn never_more_than_one_plus_max_hedges_attempts_are_in_flight(setup in setups(false)) {
        for log in simulate(&setup) {
            prop_assert!(log.max_in_flight as u32 <= 1 + setup.max_hedges, "{:#?}", log.lines);
            prop_assert!(log.hedges <= setup.max_hedges);
            prop_assert!(log.result.is_some(), "a call did not finish: {:#?}", log.lines);
        }
    }

    #[test]
    fn a_non_idempotent_request_is_never_hedged(setup in setups(false)) {
        for (spec, log) in setup.calls.iter().zip(simulate(&setup)) {
            let idempotent = spec.key || !matches!(spec.method, Method::POST | Method::PATCH);
            if !idempotent {
                prop_assert_eq!(log.hedges, 0, "{:#?}", log.lines);
                prop_assert!(log.max_in_flight <= 1);
            }
        }
    }

    #[test]
    fn the_winner_is_the_first_acceptable_answer_in_virtual_time(setup in setups(true)) {
        for log in simulate(&setup) {
            let Some(Ok(response)) = &log.result else { continue };
            let end = log.end.expect("a finished call has an end");
            let winner = log.winner.expect("the winner's body names its attempt");
            prop_assert_eq!(log.fed.last(), Some(&winner), "{:#?}", log.lines);
            prop_assert!(response.status().is_success());
            // No other attempt had a success due before the winner's, and none was fed after.
            for (n, at, status) in &log.scheduled {
                if *n != winner && (200..300).contains(status) {
                    prop_assert!(*at >= end, "#{} had {} due at {:?} before the winner #{}: {:#?}",
                        n, status, *at - epoch(), winner, log.lines);
                }
            }
        }
    }

    #[test]
    fn the_same_seeds_and_scripts_give_the_same_timelines(setup in setups(false)) {
        let a: Vec<_> = simulate(&setup).into_iter().map(|l| l.lines).collect();
        let b: Vec<_> = simulate(&setup).into_iter().map(|l| l.lines).collect();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn the_scenario_runner_and_the_async_driver_agree_on_a_hedged_call(
        script in prop::collection::vec(
            (prop::sample::select(vec![200u16, 503, 404]), 0u64..300), 1..5),
        hedge_after in 1u64..200,
        max_hedges in 1u32..=3,
    ) {
        let hedging = HedgingConfig::enabled(HedgeAfter::Fixed(ms(hedge_after)))
            .with_max_hedges(max_hedges);
        let config = Config::default().with_retry(no_jitter()).with_hedging(hedging);
        let steps: Vec<_> = script
            .iter()
            .enumerate()
            .map(|(i, (status, after))| step(*status).body(i.to_string()).after(ms(*after)))
            .collect();
        let run = Scenario::new(get(), &policy(config.clone())).steps(steps.clone()).run();
        let upstream = ScriptedTransport::new();
        for s in steps {
            upstream.push(s);
        }
        let client = upstream.client(config.with_base_url("https://api.example.com")).unwrap();
        let driven = block_on(client.get("/things/7").send());
        let sends: Vec<_> = run.requests.iter().map(|r| (r.attempt, r.at)).collect();
        let seen: Vec<_> = upstream.requests().iter().map(|r| (r.attempt, r.at)).collect();
        prop_assert_eq!(sends, seen, "{}", run);
        match (&run.result, &driven) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.body(), b.body());
                prop_assert_eq!(a.elapsed(), b.elapsed());
            }
            (Err(a), Err(b)) => {
                prop_assert_eq!(a.type_name(), b.type_name());
                prop_assert_eq!(a.attempts(), b.attempts());
            }
            _ => prop_assert!(false, "runner {:?} vs driver {:?}\n{}", run.result, driven, run),
        }
    }
}

/// The properties above are not vacuous: over a fixed sample of their inputs, calls do hedge,
/// run attempts side by side, and hedges win.
#[test]
fn the_property_harness_meets_hedges_overlaps_and_winning_hedges() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut hedges, mut overlapping, mut won_by_later) = (0, 0, 0);
    for _ in 0..200 {
        let setup = setups(true)
            .new_tree(&mut runner)
            .expect("the strategy generates")
            .current();
        for log in simulate(&setup) {
            hedges += log.hedges;
            overlapping += usize::from(log.max_in_flight > 1);
            won_by_later += usize::from(log.winner.is_some_and(|w| w > 1) && log.hedges > 0);
        }
    }
    assert!(hedges > 50, "{hedges} hedges");
    assert!(
        overlapping > 50,
        "{overlapping} calls with attempts side by side"
    );
    assert!(
        won_by_later > 10,
        "{won_by_later} calls won by a later attempt"
    );
}
