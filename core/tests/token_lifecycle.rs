//! The token lifecycle in virtual time: many calls arrive at random moments with their own
//! deadlines, the token endpoint answers after a random latency or fails, and the pure
//! [`TokenLifecycle`] decides everything. The simulation plays the part of the client (a call
//! that is told to refresh runs the refresh; a call told to wait is woken by the next change or
//! fails at its deadline) and checks the invariants the issue asks for.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use egress_core::{Jitter, SeededJitter};
use egress_core::{
    RefreshPolicy, RefreshReason, RefreshTicket, Token, TokenDecision, TokenError, TokenLifecycle,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct World {
    lifetime: Duration,
    latency: Vec<Duration>,
    /// Whether each successive fetch succeeds.
    outcomes: Vec<bool>,
    /// Gaps between arrivals.
    gaps: Vec<Duration>,
    deadline: Duration,
    seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Call `i` arrives (or is woken) and decides.
    Decide(usize),
    /// The refresh of this flight completes (its index among fetches).
    Complete(usize),
    /// Call `i` reaches its deadline.
    Deadline(usize),
}

#[derive(Debug, Default)]
struct Outcome {
    timeline: Vec<String>,
    /// Per call: the time it ended, relative to its arrival.
    ended_after: Vec<Option<Duration>>,
    fetches: usize,
    expired_refreshes: usize,
    waits_after_first_token: usize,
}

fn simulate(world: &World) -> Outcome {
    let t0 = Instant::now();
    let policy = RefreshPolicy::default();
    let mut tokens = TokenLifecycle::new(policy);
    let mut jitter = SeededJitter::new(world.seed);
    let mut queue: BinaryHeap<Reverse<(Duration, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |queue: &mut BinaryHeap<_>, at: Duration, event: Event| {
        seq += 1;
        queue.push(Reverse((at, seq, event)));
    };
    let mut arrival = Duration::ZERO;
    let calls = world.gaps.len();
    let mut arrivals = Vec::with_capacity(calls);
    for (i, gap) in world.gaps.iter().enumerate() {
        arrival += *gap;
        arrivals.push(arrival);
        push(&mut queue, arrival, Event::Decide(i));
        push(&mut queue, arrival + world.deadline, Event::Deadline(i));
    }
    let mut out = Outcome {
        ended_after: vec![None; calls],
        ..Outcome::default()
    };
    // The flight in progress: (ticket, the refreshing call, the fetch index, when it ends).
    let mut flight: Option<(RefreshTicket, usize, usize, Duration)> = None;
    let mut parked: Vec<usize> = Vec::new();
    let mut had_token = false;
    while let Some(Reverse((at, _, event))) = queue.pop() {
        let now = t0 + at;
        let end = |out: &mut Outcome, i: usize, what: String| {
            if out.ended_after[i].is_none() {
                out.ended_after[i] = Some(at - arrivals[i]);
                out.timeline.push(format!("{at:?} call {i} {what}"));
            }
        };
        match event {
            Event::Decide(i) if out.ended_after[i].is_none() => match tokens.decide(now) {
                TokenDecision::Use(token) => {
                    assert!(
                        token.is_valid_at(now),
                        "call {i} got an expired token at {at:?}"
                    );
                    end(&mut out, i, format!("sends token {}", token.generation()));
                }
                TokenDecision::Refresh { ticket, reason, .. } => {
                    assert!(
                        flight.is_none(),
                        "a second refresh started at {at:?} while one is in flight"
                    );
                    if reason == RefreshReason::Expired {
                        out.expired_refreshes += 1;
                    }
                    let n = out.fetches;
                    out.fetches += 1;
                    let done = at + world.latency[n % world.latency.len()];
                    flight = Some((ticket, i, n, done));
                    out.timeline
                        .push(format!("{at:?} call {i} refreshes ({})", reason.as_str()));
                    push(&mut queue, done, Event::Complete(n));
                }
                TokenDecision::Wait => {
                    if had_token {
                        out.waits_after_first_token += 1;
                    }
                    parked.push(i);
                }
                TokenDecision::Fail(error) => {
                    end(&mut out, i, format!("fails: {}", error.type_name()))
                }
                _ => unreachable!("TokenDecision is non_exhaustive; these are all its variants"),
            },
            Event::Decide(_) => {}
            Event::Complete(n) => {
                let Some((ticket, caller, fetch, _)) = flight else {
                    continue;
                };
                if fetch != n {
                    continue;
                }
                flight = None;
                if world.outcomes[n % world.outcomes.len()] {
                    let token = Token::bearer(format!("t{n}").into(), Some(world.lifetime));
                    let got = tokens.handle_refreshed(ticket, now, token, jitter.next_u64());
                    match got {
                        Some(Ok(token)) => {
                            had_token = true;
                            end(
                                &mut out,
                                caller,
                                format!("sends token {}", token.generation()),
                            );
                        }
                        other => end(&mut out, caller, format!("fails: {other:?}")),
                    }
                } else {
                    tokens.handle_failed(ticket, now, TokenError::InvalidResponse("down".into()));
                    end(&mut out, caller, "fails: refresh failed".into());
                }
                for i in parked.drain(..) {
                    push(&mut queue, at, Event::Decide(i));
                }
            }
            Event::Deadline(i) => {
                if out.ended_after[i].is_some() {
                    continue;
                }
                // The refreshing call gives up its flight; a waiting one simply stops waiting.
                if let Some((ticket, _, _, _)) = flight.filter(|f| f.1 == i) {
                    tokens.handle_abandoned(ticket);
                    flight = None;
                    for j in parked.drain(..) {
                        push(&mut queue, at, Event::Decide(j));
                    }
                }
                parked.retain(|j| *j != i);
                end(&mut out, i, "fails: deadline".into());
            }
        }
    }
    out
}

fn world() -> impl Strategy<Value = World> {
    (
        30u64..7200,
        prop::collection::vec(0u64..5_000, 1..8),
        prop::collection::vec(prop::bool::weighted(0.8), 1..8),
        prop::collection::vec(0u64..120_000, 1..150),
        1u64..30,
        any::<u64>(),
    )
        .prop_map(
            |(lifetime, latency, outcomes, gaps, deadline, seed)| World {
                lifetime: Duration::from_secs(lifetime),
                latency: latency.into_iter().map(Duration::from_millis).collect(),
                outcomes,
                gaps: gaps.into_iter().map(Duration::from_millis).collect(),
                deadline: Duration::from_secs(deadline),
                seed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the arrivals, latencies and failures: at most one refresh is in flight, no call
    /// sends an expired token (both asserted inside the simulation at every decision), and every
    /// call ends within its deadline.
    #[test]
    fn at_most_one_refresh_is_in_flight_and_no_call_sends_an_expired_token(world in world()) {
        let out = simulate(&world);
        for (i, ended) in out.ended_after.iter().enumerate() {
            let ended = ended.unwrap_or_else(|| panic!("call {i} never ended"));
            prop_assert!(ended <= world.deadline, "call {i} ended {ended:?} after arriving");
        }
    }

    /// The same seed and inputs give the same timeline, decision by decision.
    #[test]
    fn the_same_seed_gives_the_same_timeline(world in world()) {
        prop_assert_eq!(simulate(&world).timeline, simulate(&world).timeline);
    }

    /// With steady traffic (a call at least every tenth of the lifetime) and a token endpoint
    /// that always answers within a tenth of the lifetime, every token is replaced ahead of its
    /// expiry: no refresh ever starts because a token expired, and after the first token no
    /// call ever waits.
    #[test]
    fn with_steady_traffic_tokens_are_refreshed_before_they_expire(
        lifetime in 30u64..7200,
        latency in prop::collection::vec(0u64..1000, 1..8),
        gaps in prop::collection::vec(0u64..1000, 1..400),
        seed in any::<u64>(),
    ) {
        // Gaps and latencies in per-mille of the lifetime, below a tenth of it.
        let scale = |permille: u64| Duration::from_secs(lifetime) * u32::try_from(permille).unwrap() / 10_000;
        let world = World {
            lifetime: Duration::from_secs(lifetime),
            latency: latency.into_iter().map(scale).collect(),
            outcomes: vec![true],
            gaps: gaps.into_iter().map(scale).collect(),
            deadline: Duration::from_secs(lifetime),
            seed,
        };
        let out = simulate(&world);
        prop_assert_eq!(out.expired_refreshes, 0, "{:#?}", out.timeline);
        prop_assert_eq!(out.waits_after_first_token, 0, "{:#?}", out.timeline);
    }
}

#[test]
fn a_token_endpoint_that_always_fails_ends_every_call_with_a_typed_failure_within_its_deadline() {
    let world = World {
        lifetime: Duration::from_secs(3600),
        latency: vec![Duration::from_millis(200)],
        outcomes: vec![false],
        gaps: vec![Duration::from_millis(100); 200],
        deadline: Duration::from_secs(2),
        seed: 7,
    };
    let out = simulate(&world);
    // One fetch per 5 s cooldown over 20 s of arrivals, not one per call.
    assert!(
        out.fetches <= 5,
        "{} fetches: {:#?}",
        out.fetches,
        out.timeline
    );
    assert!(out.timeline.iter().all(|l| !l.contains("sends")));
    assert!(
        out.ended_after
            .iter()
            .all(|e| e.is_some_and(|e| e <= world.deadline))
    );
}
