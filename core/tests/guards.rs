//! Decisions across calls in virtual time: many exchanges sharing one policy (and so one circuit
//! breaker, hold and rate limiter per host), driven by hand against a scripted upstream. Each
//! test states the worked numbers it expects; the property tests check the invariants of
//! the across-call state over long arbitrary timelines.

mod common;
use common::{epoch, ms};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use egress_core::http::{self, Method};
use egress_core::test_util::WALL_EPOCH_SECS;
use egress_core::{Backoff, BudgetConfig, JitterMode, RetryPolicy};
use egress_core::{
    Breaker, CircuitBreakerConfig, CircuitCheck, CircuitState, CircuitVerdict, Gcra,
};
use egress_core::{
    Config, Error, Exchange, HoldConfig, Input, Output, Policy, RateLimitConfig, Request, Response,
    StopReason, WaitReason,
};
use proptest::prelude::*;

const URL: &str = "https://api.example.com/x";

fn wall_at(at: Instant) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS) + (at - epoch())
}

/// What the upstream answers: a status and headers.
#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
    }
}

impl Reply {
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn response(&self) -> http::Response<Bytes> {
        let mut builder = http::Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value.as_str());
        }
        builder
            .body(Bytes::new())
            .expect("a valid scripted response")
    }
}

/// One call of a crowd: when it starts and what it asks.
#[derive(Clone, Debug)]
struct Call {
    start: Duration,
    request: fn() -> Request,
}

fn get() -> Request {
    Request::new(Method::GET, URL).expect("a valid url")
}

/// What a crowd run produced.
#[derive(Debug)]
struct Crowd {
    results: Vec<Result<Response, Error>>,
    /// Every request the upstream saw: (call, virtual time).
    seen: Vec<(usize, Duration)>,
    /// Every wait asked for between attempts: (call, from, until, reason).
    waits: Vec<(usize, Duration, Duration, WaitReason)>,
}

/// Runs `calls` interleaved in virtual time on one policy: the earliest due call moves next,
/// the upstream answers every attempt at once (`upstream(virtual time, index of the request)`).
fn crowd(
    policy: &Policy,
    calls: &[Call],
    mut upstream: impl FnMut(Duration, usize) -> Reply,
) -> Crowd {
    let n = calls.len();
    let mut wake: Vec<Instant> = calls.iter().map(|c| epoch() + c.start).collect();
    let mut exchanges: Vec<Option<Exchange>> = (0..n).map(|_| None).collect();
    let mut results: Vec<Option<Result<Response, Error>>> = vec![None; n];
    let mut seen = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..1_000_000 {
        let Some(i) = (0..n)
            .filter(|&i| results[i].is_none())
            .min_by_key(|&i| (wake[i], i))
        else {
            break;
        };
        let now = wake[i];
        let exchange = match &mut exchanges[i] {
            Some(exchange) => {
                exchange.handle_input(Input::Timer { at: now });
                exchange
            }
            slot @ None => slot.insert(
                Exchange::new((calls[i].request)(), policy, now, i as u64).with_wall(wall_at(now)),
            ),
        };
        loop {
            match exchange.poll_output(now) {
                Output::Send(attempt) => {
                    let answer = upstream(now - epoch(), seen.len());
                    seen.push((i, now - epoch()));
                    exchange.handle_input(Input::Response {
                        attempt: attempt.attempt,
                        at: now,
                        wall: wall_at(now),
                        response: answer.response(),
                    });
                }
                Output::Wait { until, reason } => {
                    waits.push((i, now - epoch(), until - epoch(), reason));
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
    Crowd {
        results: results
            .into_iter()
            .map(|r| r.expect("every call ended"))
            .collect(),
        seen,
        waits,
    }
}

fn no_jitter() -> RetryPolicy {
    RetryPolicy::standard().with_backoff(Backoff::default().with_jitter(JitterMode::None))
}

fn policy(config: Config) -> Policy {
    config.build().expect("a valid test policy")
}

fn calls_at(starts: impl IntoIterator<Item = Duration>) -> Vec<Call> {
    starts
        .into_iter()
        .map(|start| Call {
            start,
            request: get,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Host-wide hold.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_429_with_retry_after_to_one_call_holds_the_other_31_until_retry_at() {
    // The upstream throttles everything for 2 s after its first request. Call 0 gets the 429
    // with `Retry-After: 2` (RFC 9110 section 10.2.3) at 0 ms; calls 1..=31 start 1 ms apart
    // after it, are held until 2 s, and then all 32 succeed: one 429 upstream, not 32.
    let policy = policy(Config::default().with_retry(no_jitter()));
    let calls = calls_at((0..32).map(ms));
    let run = crowd(&policy, &calls, |at, _| {
        if at < ms(2_000) {
            reply(429).header("retry-after", "2")
        } else {
            reply(200)
        }
    });
    let throttled = run.seen.iter().filter(|(_, at)| *at < ms(2_000)).count();
    assert_eq!(throttled, 1, "{:?}", run.seen);
    assert_eq!(run.seen.len(), 33);
    assert!(run.results.iter().all(Result::is_ok));
    let held: Vec<_> = run
        .waits
        .iter()
        .filter(|w| w.3 == WaitReason::HostHold)
        .collect();
    assert_eq!(held.len(), 31);
    assert!(held.iter().all(|w| w.2 == ms(2_000)));
}

#[test]
fn without_the_hold_every_call_discovers_the_429_itself() {
    let policy = policy(
        Config::default()
            .with_retry(no_jitter())
            .with_hold(HoldConfig::disabled()),
    );
    let calls = calls_at((0..32).map(ms));
    let run = crowd(&policy, &calls, |at, _| {
        if at < ms(2_000) {
            reply(429).header("retry-after", "2")
        } else {
            reply(200)
        }
    });
    let throttled = run.seen.iter().filter(|(_, at)| *at < ms(2_000)).count();
    assert_eq!(throttled, 32);
}

#[test]
fn a_call_whose_deadline_comes_before_the_hold_ends_fails_at_once_unsent() {
    // Retry-After: 20 holds the host for 20 s; a call with a 5 s deadline starting at 1 s
    // cannot wait for it: RateLimited at once, retry_at the server's time, no attempt.
    fn short() -> Request {
        get()
            .with_deadline(Duration::from_secs(5))
            .with_max_attempts(1)
    }
    let policy = policy(Config::default().with_retry(no_jitter().with_max_attempts(1)));
    let calls = vec![
        Call {
            start: Duration::ZERO,
            request: get,
        },
        Call {
            start: ms(1_000),
            request: short,
        },
    ];
    let run = crowd(&policy, &calls, |_, _| {
        reply(429).header("retry-after", "20")
    });
    assert_eq!(run.seen.len(), 1);
    let error = run.results[1].as_ref().unwrap_err();
    assert!(
        matches!(error, Error::RateLimited { last: None, .. }),
        "{error:?}"
    );
    assert_eq!(error.stop_reason(), Some(StopReason::HostHold));
    assert_eq!(error.attempts(), 0);
    assert!(!error.may_have_been_sent());
    // 2026-01-01T00:00:00Z + 20 s, the server's time.
    assert_eq!(
        error.retry_at(),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS + 20))
    );
}

#[test]
fn ratelimit_fields_with_no_quota_left_hold_the_next_call_until_the_reset() {
    // draft-ietf-httpapi-ratelimit-headers-10, section 4: `r=0` leaves no quota until `t`.
    // Call 0 succeeds with `RateLimit: "default";r=0;t=3`; call 1 at 100 ms waits until 3 s
    // instead of earning a 429.
    let policy = policy(Config::default());
    let calls = calls_at([Duration::ZERO, ms(100)]);
    let run = crowd(&policy, &calls, |at, _| {
        if at < ms(3_000) {
            reply(200).header("ratelimit", r#""default";r=0;t=3"#)
        } else {
            reply(200)
        }
    });
    assert!(run.results.iter().all(Result::is_ok));
    assert_eq!(run.seen, vec![(0, Duration::ZERO), (1, ms(3_000))]);
    assert_eq!(run.waits[0], (1, ms(100), ms(3_000), WaitReason::HostHold));
}

#[test]
fn an_x_ratelimit_reset_far_away_is_capped_like_retry_after() {
    // x-ratelimit-reset one hour ahead (Unix seconds): the hold lasts the 30 s cap, not an
    // hour, so a misread reset can never block a host for long.
    let policy = policy(Config::default().with_deadline(Duration::from_secs(60)));
    let calls = calls_at([Duration::ZERO, ms(1_000)]);
    let reset = (WALL_EPOCH_SECS + 3600).to_string();
    let run = crowd(&policy, &calls, |at, _| {
        if at.is_zero() {
            reply(200)
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", &reset)
        } else {
            reply(200)
        }
    });
    assert_eq!(run.seen, vec![(0, Duration::ZERO), (1, ms(30_000))]);
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_failing_host_opens_the_circuit_and_the_upstream_sees_nothing_until_the_break_ends() {
    // Every attempt fails with 503; one attempt per call, calls every 10 ms. After 100
    // attempts (50 % failures over at least 100 attempts) the circuit opens at 990 ms for 5 s:
    // calls until 5990 ms are refused unsent; the call at 5990 ms is the one probe; it fails,
    // and the circuit re-opens for 10 s.
    let policy = policy(Config::default().with_retry(RetryPolicy::disabled()));
    let calls = calls_at((0..2000).map(|i| ms(10 * i)));
    let run = crowd(&policy, &calls, |_, _| reply(503));
    let times: Vec<Duration> = run.seen.iter().map(|(_, at)| *at).collect();
    assert_eq!(times.len(), 102, "{times:?}");
    assert_eq!(times[99], ms(990));
    assert_eq!(times[100], ms(5_990));
    assert_eq!(times[101], ms(15_990));
    let refused = &run.results[100];
    let error = refused.as_ref().unwrap_err();
    assert!(error.is_circuit_open(), "{error:?}");
    assert_eq!(error.stop_reason(), Some(StopReason::CircuitOpen));
    assert_eq!(error.attempts(), 0);
    assert!(!error.may_have_been_sent());
    assert!(error.is_retryable());
    // Open at 990 ms for 5 s: retry_at is 5.99 s past the wall epoch.
    assert_eq!(
        error.retry_at(),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS) + ms(5_990))
    );
    assert_eq!(
        policy
            .guards()
            .circuit_state("api.example.com", epoch() + ms(6_000)),
        CircuitState::Open
    );
}

#[test]
fn a_successful_probe_closes_the_circuit() {
    let policy = policy(Config::default().with_retry(RetryPolicy::disabled()));
    let calls = calls_at((0..700).map(|i| ms(10 * i)));
    // Fails until 5 s, then healthy: the probe at 5990 ms succeeds and calls flow again.
    let run = crowd(&policy, &calls, |at, _| {
        if at < ms(5_000) {
            reply(503)
        } else {
            reply(200)
        }
    });
    let after: Vec<_> = run.seen.iter().filter(|(_, at)| *at >= ms(5_990)).collect();
    assert_eq!(after.len(), 700 - 599);
    assert!(run.results[599..].iter().all(Result::is_ok));
}

#[test]
fn a_call_that_asks_to_wait_for_the_circuit_waits_for_half_open_within_its_deadline() {
    fn patient() -> Request {
        get().with_guards(egress_core::CallGuards::default().with_wait_for_circuit(true))
    }
    let policy = policy(Config::default().with_retry(RetryPolicy::disabled()));
    let mut calls = calls_at((0..100).map(|i| ms(10 * i)));
    calls.push(Call {
        start: ms(1_000),
        request: patient,
    });
    let run = crowd(&policy, &calls, |at, _| {
        if at < ms(5_000) {
            reply(503)
        } else {
            reply(200)
        }
    });
    // Open at 990 ms until 5990 ms: the patient call waits and is the probe.
    assert!(run.results[100].is_ok());
    assert_eq!(run.seen.last(), Some(&(100, ms(5_990))));
    assert!(
        run.waits
            .contains(&(100, ms(1_000), ms(5_990), WaitReason::CircuitOpen))
    );
}

#[test]
fn throttling_and_4xx_answers_never_open_the_circuit() {
    let policy = policy(
        Config::default()
            .with_retry(RetryPolicy::disabled())
            .with_hold(HoldConfig::disabled()),
    );
    let calls = calls_at((0..300).map(|i| ms(10 * i)));
    let run = crowd(&policy, &calls, |_, i| {
        if i % 2 == 0 { reply(429) } else { reply(404) }
    });
    assert_eq!(run.seen.len(), 300);
}

// ---------------------------------------------------------------------------------------------
// Client-side rate limit.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_quota_of_20_per_second_spreads_a_burst_of_100_calls() {
    // GCRA 20/s, burst 5: 5 requests at 0 ms, then one every 50 ms; the 100th at 4750 ms.
    let limit = RateLimitConfig::new("20/s".parse().unwrap(), 5);
    let policy = policy(Config::default().with_rate_limit(limit));
    let calls = calls_at((0..100).map(|_| Duration::ZERO));
    let run = crowd(&policy, &calls, |_, _| reply(200));
    assert!(run.results.iter().all(Result::is_ok));
    let mut times: Vec<Duration> = run.seen.iter().map(|(_, at)| *at).collect();
    times.sort();
    assert_eq!(&times[..6], &[ms(0), ms(0), ms(0), ms(0), ms(0), ms(50)]);
    assert_eq!(times[99], ms(4_750));
    assert_within_rate(&times, ms(50), 5);
}

#[test]
fn a_slot_past_the_deadline_is_refused_at_once_and_never_sent() {
    fn hurried() -> Request {
        get().with_deadline(ms(200))
    }
    // 1/s, burst 1: the second call's slot is at 1 s, past its 200 ms deadline.
    let limit = RateLimitConfig::new("1/s".parse().unwrap(), 1);
    let policy = policy(Config::default().with_rate_limit(limit));
    let calls = vec![
        Call {
            start: Duration::ZERO,
            request: get,
        },
        Call {
            start: Duration::ZERO,
            request: hurried,
        },
    ];
    let run = crowd(&policy, &calls, |_, _| reply(200));
    assert_eq!(run.seen.len(), 1);
    let error = run.results[1].as_ref().unwrap_err();
    assert!(
        matches!(error, Error::RateLimited { last: None, .. }),
        "{error:?}"
    );
    assert_eq!(error.stop_reason(), Some(StopReason::RateLimiter));
    assert_eq!(error.attempts(), 0);
    assert_eq!(
        error.retry_at(),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS + 1))
    );
}

/// Asserts that over every window between two sends, at most `window / interval + burst`
/// requests went (GCRA's bound).
#[track_caller]
fn assert_within_rate(times: &[Duration], interval: Duration, burst: u32) {
    let mut sorted = times.to_vec();
    sorted.sort();
    for (i, a) in sorted.iter().enumerate() {
        for (j, b) in sorted.iter().enumerate().skip(i) {
            let count = (j - i + 1) as u128;
            let allowed = (*b - *a).as_nanos() / interval.as_nanos() + u128::from(burst);
            assert!(
                count <= allowed,
                "{count} requests in [{a:?}, {b:?}], at most {allowed} allowed"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The retry budget earns on successes.
// ---------------------------------------------------------------------------------------------

fn budget_only() -> Config {
    Config::default()
        .with_retry(no_jitter())
        .with_circuit_breaker(CircuitBreakerConfig::disabled())
}

#[test]
fn a_full_outage_of_1000_calls_costs_at_most_1_10_requests_per_call() {
    // 1000 calls, 32 at a time (every 1 ms), all answered 503: only the reserve (10/s over
    // 10 s = 100 retries) is granted, so 1100 requests.
    let policy = policy(budget_only());
    let calls = calls_at((0..1000).map(|i| ms(i / 32)));
    let run = crowd(&policy, &calls, |_, _| reply(503));
    assert_eq!(run.seen.len(), 1100);
    assert!(run.results.iter().all(Result::is_err));
}

#[test]
fn an_upstream_failing_one_request_in_ten_still_gets_every_failure_retried() {
    // Every 10th request fails with 503; one call every 400 ms (so calls never overlap), and no
    // reserve at all: the successes alone (about 22 per 10 s window, earning 4 retries) pay
    // for the at most 3 failures per window. 1000 calls take 1111 requests (each failure adds
    // one: r = 1000 + r / 10, rounded), and none fails.
    let budget = BudgetConfig::default().with_min_retries_per_sec(0);
    let policy = policy(budget_only().with_budget(budget));
    let calls = calls_at((0..1000).map(|i| ms(400 * i)));
    let run = crowd(&policy, &calls, |_, i| {
        if i % 10 == 9 { reply(503) } else { reply(200) }
    });
    assert!(run.results.iter().all(Result::is_ok));
    assert_eq!(run.seen.len(), 1111);
}

#[test]
fn with_the_circuit_breaker_on_ten_seconds_of_outage_cost_about_a_tenth_of_a_request_per_call() {
    // The default policy (breaker on) and 1000 calls over 10 s (one every 10 ms), every
    // attempt answered 503. The first 100 attempts (first attempts and retries alike) open the
    // circuit for 5 s; every call after that is refused unsent, retries included; the one probe
    // 5 s later fails and re-opens it for 10 s, past the end. 101 requests for 1000 calls.
    let policy = policy(Config::default());
    let calls = calls_at((0..1000).map(|i| ms(10 * i)));
    let run = crowd(&policy, &calls, |_, _| reply(503));
    assert_eq!(run.seen.len(), 101);
    let refused = run
        .results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.is_circuit_open()))
        .count();
    assert!(refused > 800, "{refused} calls refused by the open circuit");
}

#[test]
fn the_budget_alone_refuses_what_the_reserve_cannot_cover_with_no_success() {
    let budget = BudgetConfig::default().with_min_retries_per_sec(0);
    let policy = policy(budget_only().with_budget(budget));
    let calls = calls_at((0..20).map(ms));
    let run = crowd(&policy, &calls, |_, _| reply(503));
    // No success, no reserve: no retry at all.
    assert_eq!(run.seen.len(), 20);
    assert!(
        run.results
            .iter()
            .all(|r| matches!(r, Err(Error::RetryBudgetExhausted { .. })))
    );
}

// ---------------------------------------------------------------------------------------------
// Properties over long arbitrary timelines.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Event {
    /// Time moves on.
    Advance(u64),
    /// A call asks to send; if allowed it is in flight.
    Ask,
    /// The oldest attempt in flight ends with this verdict.
    Report(u8),
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        prop_oneof![
            (0u64..3_000).prop_map(Event::Advance),
            Just(Event::Ask),
            (0u8..3).prop_map(Event::Report),
        ],
        1..2_000,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_breaker_lets_nothing_through_while_open_and_at_most_its_probes_while_half_open(
        probes in 1u32..4,
        min in 1u32..30,
        percent in 1u32..=100,
        events in events(),
    ) {
        let config = CircuitBreakerConfig::default()
            .with_half_open_probes(probes)
            .with_min_throughput(min)
            .with_failure_ratio(f64::from(percent) / 100.0)
            .with_break_duration(ms(500))
            .with_max_break_duration(ms(4_000));
        let mut now = epoch();
        let mut b = Breaker::new(&config, now);
        // Attempts in flight: the probe id of each probe, when its permit lapses, and the
        // half-open episode it was sent in.
        let mut in_flight: Vec<(Option<u64>, Instant, u32)> = Vec::new();
        let mut episode = 0;
        for event in events {
            match event {
                Event::Advance(d) => now += ms(d),
                Event::Ask => {
                    let before = b.state(now);
                    let (check, changed) = b.check(now, &config);
                    if changed == Some(CircuitState::HalfOpen) {
                        episode += 1;
                    }
                    match check {
                        CircuitCheck::Pass => {
                            prop_assert_eq!(before, CircuitState::Closed);
                            b.record_attempt(now);
                            in_flight.push((None, now, episode));
                        }
                        CircuitCheck::Probe => {
                            prop_assert_eq!(b.state(now), CircuitState::HalfOpen);
                            let id = b.take_probe(now);
                            in_flight.push((Some(id), now + b.break_duration(), episode));
                            let live = in_flight
                                .iter()
                                .filter(|(p, lapse, e)| p.is_some() && *lapse > now && *e == episode)
                                .count();
                            prop_assert!(live <= probes as usize, "{} probes in flight", live);
                        }
                        CircuitCheck::Blocked { until } => {
                            prop_assert!(until > now);
                            prop_assert_ne!(before, CircuitState::Closed);
                        }
                        _ => {}
                    }
                }
                Event::Report(v) => {
                    if !in_flight.is_empty() {
                        let (probe, _, _) = in_flight.remove(0);
                        let verdict = [CircuitVerdict::Success, CircuitVerdict::Failure, CircuitVerdict::Neutral][v as usize];
                        b.record(now, &config, verdict, probe);
                    }
                }
            }
        }
    }

    #[test]
    fn the_limiter_never_exceeds_rate_times_time_plus_burst_and_never_waits_past_a_deadline(
        per_sec in 1u32..200,
        burst in 1u32..20,
        arrivals in prop::collection::vec((0u64..50, 0u64..2_000), 1..300),
    ) {
        let config = RateLimitConfig::new(egress_core::Rate::new(per_sec, Duration::from_secs(1)).unwrap(), burst);
        let gcra = Gcra::new(&config);
        let mut tat = None;
        let mut now = epoch();
        let mut sends = Vec::new();
        for (gap, patience) in arrivals {
            now += ms(gap);
            let deadline = now + ms(patience);
            match gcra.reserve(&mut tat, now, deadline) {
                Ok(slot) => {
                    prop_assert!(slot >= now);
                    prop_assert!(slot == now || slot < deadline, "waits past its deadline");
                    sends.push(slot - epoch());
                }
                Err(slot) => prop_assert!(slot >= deadline),
            }
        }
        let interval = config.rate.interval();
        sends.sort();
        for (i, a) in sends.iter().enumerate() {
            for (j, b) in sends.iter().enumerate().skip(i) {
                let count = (j - i + 1) as u128;
                let allowed = (*b - *a).as_nanos() / interval.as_nanos() + u128::from(burst);
                prop_assert!(count <= allowed, "{} in [{:?}, {:?}]", count, a, b);
            }
        }
    }

    #[test]
    fn the_limiter_agrees_with_governor_on_every_decision_and_every_earliest_time(
        per_sec in 1u32..500,
        burst in 1u32..30,
        gaps in prop::collection::vec(0u64..200, 1..400),
    ) {
        // The oracle: governor's GCRA on a fake clock, asked at the same instants. A request
        // that may not wait (its deadline is now) conforms exactly when governor's `check`
        // passes, and a refusal names the instant governor names.
        use governor::clock::FakeRelativeClock;
        use governor::{Quota, RateLimiter};
        let config = RateLimitConfig::new(egress_core::Rate::new(per_sec, Duration::from_secs(1)).unwrap(), burst);
        let quota = Quota::with_period(config.rate.interval())
            .expect("a non-zero interval")
            .allow_burst(std::num::NonZeroU32::new(burst).expect("burst >= 1"));
        let clock = FakeRelativeClock::default();
        let oracle = RateLimiter::direct_with_clock(quota, clock.clone());
        let gcra = Gcra::new(&config);
        let mut tat = None;
        let mut now = epoch();
        for gap in gaps {
            now += ms(gap);
            clock.advance(ms(gap));
            let ours = gcra.reserve(&mut tat, now, now);
            match oracle.check() {
                Ok(()) => prop_assert_eq!(ours, Ok(now)),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(governor::clock::Clock::now(&clock));
                    prop_assert_eq!(ours, Err(now + wait));
                }
            }
        }
    }

    #[test]
    fn the_hold_never_lets_a_request_through_before_retry_at_and_nothing_waits_past_a_deadline(
        starts in prop::collection::vec(0u64..6_000, 1..40),
        throttle_at in 0usize..20,
        retry_after in 1u64..5,
        deadline in 1u64..8,
    ) {
        let retry_after_ms = retry_after * 1000;
        let config = Config::default()
            .with_retry(no_jitter())
            .with_attempt_timeout(Duration::from_secs(1))
            .with_deadline(Duration::from_secs(deadline));
        let policy = policy(config);
        let calls = calls_at(starts.iter().map(|&s| ms(s)));
        let run = crowd(&policy, &calls, |_, i| {
            if i == throttle_at {
                reply(429).header("retry-after", &retry_after.to_string())
            } else {
                reply(200)
            }
        });
        if let Some(from) = run.seen.get(throttle_at).map(|s| s.1) {
            let until = from + ms(retry_after_ms);
            for (call, at) in &run.seen[throttle_at + 1..] {
                prop_assert!(*at >= until, "call {} sent at {:?}, held until {:?}", call, at, until);
            }
        }
        for (call, from, until, _) in &run.waits {
            let start = ms(starts[*call]);
            prop_assert!(*until < start + Duration::from_secs(deadline), "call {} waits from {:?} past its deadline until {:?}", call, from, until);
        }
    }

    #[test]
    fn the_same_seed_and_script_give_the_same_timeline_across_calls(
        starts in prop::collection::vec(0u64..3_000, 1..60),
        failing in prop::collection::vec(any::<bool>(), 1..50),
    ) {
        let config = || Config::default()
            .with_rate_limit(RateLimitConfig::new("30/s".parse().unwrap(), 3))
            .with_circuit_breaker(CircuitBreakerConfig::default().with_min_throughput(5));
        let calls = calls_at(starts.iter().map(|&s| ms(s)));
        let upstream = |_: Duration, i: usize| if failing[i % failing.len()] { reply(503) } else { reply(200) };
        let a = crowd(&policy(config()), &calls, upstream);
        let b = crowd(&policy(config()), &calls, upstream);
        prop_assert_eq!(&a.seen, &b.seen);
        prop_assert_eq!(&a.waits, &b.waits);
        let render = |r: &Crowd| r.results.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>();
        // Correlation IDs and elapsed times included: everything is the same.
        prop_assert_eq!(render(&a), render(&b));
    }
}
