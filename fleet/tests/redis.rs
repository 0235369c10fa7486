//! The fleet against a real `redis-server` the tests start on a free loopback port (installed
//! from the OS packages when missing), on both runtimes: tokio, and async-io (what
//! egress-async-std runs on).
//!
//! - the Lua GCRA leases exactly the slots the core's `Gcra::lease` does, on the same
//!   timelines (a property test), and leases of any size never let the fleet past rate +
//!   burst in any window (another);
//! - two replicas share one quota, holds and open circuits;
//! - with Redis killed a slot request fails, the fleet says it is local, and it shares again
//!   after a restart;
//! - the Redis password never reaches `Debug`, errors or logs.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use egress_core::FleetConfig;
use egress_core::rt::Coordinator;
use egress_core::rt::{CoordinatorError, SlotAsk, SlotGrant};
use egress_core::{Gcra, Hold, HoldReason};
use egress_fleet::Fleet;
use egress_fleet::script::{ACQUIRE, grant};
use egress_tests::tools::{free_port, redis_server};
use proptest::prelude::*;

/// Runs `test` on tokio, then on async-io (no tokio runtime: redis takes its smol path).
fn on_both_runtimes<F: Future<Output = ()>>(mut test: impl FnMut() -> F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test());
    async_io::block_on(test());
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/0")
}

async fn connection(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url(port))
        .expect("a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("the test's redis-server answers")
}

async fn started(config: &FleetConfig) -> Arc<Fleet> {
    let fleet = Fleet::start(config).expect("a valid fleet config");
    assert!(
        fleet.wait_shared(Duration::from_secs(10)).await,
        "the fleet did not connect to the test's redis-server"
    );
    fleet
}

/// One step of a timeline: advance by `advance` µs, then ask for `count` slots that must come
/// within `max_wait` µs.
#[derive(Clone, Debug)]
struct Step {
    advance: u64,
    count: u32,
    max_wait: u64,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (0u64..300_000, 1u32..20, 0u64..2_000_000).prop_map(|(advance, count, max_wait)| Step {
            advance,
            count,
            max_wait,
        }),
        1..40,
    )
}

/// Microseconds since the Unix epoch where chosen timelines start: far from zero, as Redis's
/// TIME gives them.
const BASE_US: u64 = 1_764_800_000_000_000;

/// Runs the script on a chosen timeline of `case`'s own keys (GCRA of `interval_us` and
/// `burst`; from [`BASE_US`]) and hands
/// each step, its time and the script's answer to `check`.
async fn on_timeline(
    port: u16,
    (interval_us, burst): (u64, u32),
    timeline: &[Step],
    case: &str,
    mut check: impl FnMut(&Step, u64, SlotGrant),
) {
    let mut conn = connection(port).await;
    let script = redis::Script::new(ACQUIRE);
    let (tat, hold) = (format!("{case}:tat"), format!("{case}:hold"));
    let tolerance = interval_us * u64::from(burst.max(1) - 1);
    let mut now_us = BASE_US;
    for step in timeline {
        now_us += step.advance;
        let reply: Vec<i64> = script
            .key(&tat)
            .key(&hold)
            .arg(interval_us)
            .arg(tolerance)
            .arg(step.count)
            .arg(step.max_wait)
            .arg(now_us)
            .invoke_async(&mut conn)
            .await
            .expect("the script runs");
        let got = grant(&reply, step.count, Duration::from_micros(step.max_wait))
            .expect("the script's answer is well formed");
        check(step, now_us, got);
    }
    let _: () = redis::cmd("DEL")
        .arg(&tat)
        .query_async(&mut conn)
        .await
        .expect("DEL");
}

/// Runs `future` on tokio for even cases, on async-io for odd ones: both run the same script.
fn on_runtime_of<F: Future>(case: u64, future: F) -> F::Output {
    if case % 2 == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(future)
    } else {
        async_io::block_on(future)
    }
}

/// The script on a chosen timeline versus the core's `Gcra::lease` on the same one, slot by
/// slot.
async fn compare(port: u16, interval_us: u64, burst: u32, timeline: &[Step], case: u64) {
    let interval = Duration::from_micros(interval_us);
    let gcra = Gcra::from_parts(interval, interval.saturating_mul(burst.max(1) - 1));
    let epoch = Instant::now();
    let mut tat = None;
    on_timeline(
        port,
        (interval_us, burst),
        timeline,
        &format!("prop:{{case{case}}}"),
        |step, now_us, got| {
            let now = epoch + Duration::from_micros(now_us - BASE_US);
            let latest = now + Duration::from_micros(step.max_wait);
            let (slots, next) = gcra.lease(&mut tat, now, step.count, latest);
            let expected: Vec<Duration> = slots.into_iter().map(|slot| slot - now).collect();
            assert_eq!(got.slots, expected, "slots at {step:?}");
            assert_eq!(
                got.next,
                next.map(|slot| slot - now),
                "next slot at {step:?}"
            );
        },
    )
    .await;
}

#[test]
fn the_lua_gcra_reserves_the_same_slots_as_the_core_gcra_on_the_same_timelines() {
    let port = free_port();
    let _redis = redis_server(port, None);
    let cases = Mutex::new(0u64);
    let config = ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    };
    proptest!(config, |(interval_us in 1u64..200_000, burst in 1u32..30, timeline in steps())| {
        let case = {
            let mut n = cases.lock().unwrap();
            *n += 1;
            *n
        };
        // Each case on one runtime, alternating.
        on_runtime_of(case, compare(port, interval_us, burst, &timeline, case));
    });
}

/// Leases of any size from any replicas on a chosen timeline: every slot the script grants,
/// in absolute time.
async fn leased_slots(
    port: u16,
    interval_us: u64,
    burst: u32,
    timeline: &[Step],
    case: u64,
) -> Vec<u64> {
    let mut slots = Vec::new();
    on_timeline(
        port,
        (interval_us, burst),
        timeline,
        &format!("lease:{{case{case}}}"),
        |_, now_us, got| {
            slots.extend(got.slots.iter().map(|d| now_us + d.as_micros() as u64));
        },
    )
    .await;
    slots
}

#[test]
fn leases_of_any_size_never_let_the_fleet_past_rate_plus_burst_in_any_window() {
    let port = free_port();
    let _redis = redis_server(port, None);
    let cases = Mutex::new(0u64);
    let config = ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    };
    // Each step is one replica's request for a lease of 1 to 19 slots (which replica does not
    // matter to Redis: one key, one GCRA), at any pace.
    proptest!(config, |(interval_us in 100u64..50_000, burst in 1u32..30, window_slots in 1u64..50, timeline in steps())| {
        let case = {
            let mut n = cases.lock().unwrap();
            *n += 1;
            *n
        };
        let mut slots = on_runtime_of(case, leased_slots(port, interval_us, burst, &timeline, case));
        slots.sort_unstable();
        // In any window [t, t + w): fewer than burst + w / T slots (GCRA's bound: the n-th slot
        // after the first lies at least (n - 1) T - tau later).
        let window = window_slots * interval_us;
        for (i, first) in slots.iter().enumerate() {
            let n = slots[i..].iter().take_while(|t| **t < first + window).count() as u64;
            prop_assert!(
                n * interval_us < u64::from(burst) * interval_us + window,
                "{n} slots in {window} µs from {first} (T {interval_us} µs, burst {burst})"
            );
        }
    });
}

#[test]
fn two_replicas_share_one_quota_through_redis() {
    let port = free_port();
    let _redis = redis_server(port, None);
    on_both_runtimes(|| async move {
        let config = FleetConfig::new(url(port)).with_key_prefix(format!("quota{}", rand_tag()));
        let (a, b) = (started(&config).await, started(&config).await);
        // 1/s, burst 1: the first replica takes the slot now, the second gets the next one,
        // about a second later (less the time between the two requests).
        let gcra = Gcra::from_parts(Duration::from_secs(1), Duration::ZERO);
        let ask = SlotAsk::new(
            "api.example.com",
            Instant::now(),
            1,
            &gcra,
            Duration::from_secs(5),
        );
        let first = a.acquire(&ask).await.expect("redis answers");
        let second = b.acquire(&ask).await.expect("redis answers");
        assert_eq!(first.slots, vec![Duration::ZERO]);
        assert_eq!(second.slots.len(), 1);
        assert!(second.slots[0] > Duration::from_millis(500), "{second:?}");
        assert!(second.slots[0] <= Duration::from_secs(1), "{second:?}");
        // No slot before a deadline 100 ms away: refused, with the next slot said.
        let short = SlotAsk::new(
            "api.example.com",
            Instant::now(),
            1,
            &gcra,
            Duration::from_millis(100),
        );
        let refused = a.acquire(&short).await.expect("redis answers");
        assert!(
            refused.slots.is_empty() && refused.next.is_some(),
            "{refused:?}"
        );
        assert_eq!(a.redis_ops() + b.redis_ops(), 3);
    });
}

#[test]
fn a_hold_or_an_open_circuit_from_one_replica_reaches_the_others_from_memory() {
    let port = free_port();
    let _redis = redis_server(port, None);
    on_both_runtimes(|| async move {
        let config = FleetConfig::new(url(port)).with_key_prefix(format!("hold{}", rand_tag()));
        let (a, b) = (started(&config).await, started(&config).await);
        // Both listen before anything is published.
        async_io::Timer::after(Duration::from_millis(200)).await;
        let now = Instant::now();
        let hold = Hold::new(
            now + Duration::from_secs(2),
            SystemTime::now(),
            HoldReason::RetryAfter,
        );
        a.publish_hold("api.example.com", now, &hold);
        a.publish_circuit_open("pay.example.com", now, Duration::from_secs(3));
        let seen = poll_until(|| {
            b.hold("api.example.com", Instant::now()).is_some()
                && b.circuit_open_until("pay.example.com", Instant::now())
                    .is_some()
        })
        .await;
        assert!(
            seen,
            "the other replica never heard of the hold and the circuit"
        );
        let held = b.hold("api.example.com", Instant::now()).expect("held");
        assert!(held.until <= Instant::now() + Duration::from_secs(2));
        assert_eq!(held.reason, HoldReason::RetryAfter);
        assert_eq!(b.hold("other.example.com", Instant::now()), None);
        // The hold key is in Redis too: a slot request of a third replica learns of it.
        let c = started(&config).await;
        let gcra = Gcra::from_parts(Duration::from_millis(1), Duration::ZERO);
        let ask = SlotAsk::new(
            "api.example.com",
            Instant::now(),
            1,
            &gcra,
            Duration::from_secs(5),
        );
        let grant = c.acquire(&ask).await.expect("redis answers");
        assert!(
            grant
                .hold
                .is_some_and(|left| left <= Duration::from_secs(2)),
            "{grant:?}"
        );
        // Holds from the fleet are not calls' business: no round trip was counted for them.
        assert_eq!(a.redis_ops() + b.redis_ops(), 0);
    });
}

#[test]
fn with_redis_killed_a_slot_request_fails_and_sharing_resumes_after_a_restart() {
    let port = free_port();
    let mut redis = Some(redis_server(port, None));
    on_both_runtimes(|| {
        if redis.is_none() {
            redis = Some(redis_server(port, None));
        }
        let killed = redis.take().expect("running");
        async move {
            let config = FleetConfig::new(url(port)).with_key_prefix(format!("kill{}", rand_tag()));
            let fleet = started(&config).await;
            let gcra = Gcra::from_parts(Duration::from_millis(1), Duration::ZERO);
            let ask = || SlotAsk::new("k", Instant::now(), 1, &gcra, Duration::from_secs(5));
            fleet.acquire(&ask()).await.expect("redis answers");
            drop(killed); // SIGKILL by PID, reaped
            // The request in flight when Redis dies fails (or the driver's timer would end it);
            // every later one fails at once, without a round trip, until Redis is back.
            let failed = within(Duration::from_secs(2), fleet.acquire(&ask())).await;
            assert!(matches!(failed, None | Some(Err(_))), "{failed:?}");
            poll_until(|| !fleet.is_shared()).await;
            let at_once = within(Duration::from_millis(5), fleet.acquire(&ask())).await;
            assert_eq!(at_once, Some(Err(CoordinatorError::Unavailable)));
            let restarted = redis_server(port, None);
            assert!(
                fleet.wait_shared(Duration::from_secs(10)).await,
                "no reconnect"
            );
            fleet.acquire(&ask()).await.expect("shared again");
            drop(restarted);
        }
    });
}

#[test]
fn the_redis_password_never_reaches_debug_errors_or_logs() {
    const SECRET: &str = "fleet-secret-0009";
    let port = free_port();
    let _redis = redis_server(port, Some(SECRET));
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let logs = logs.clone();
        move || Sink(logs.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(writer)
        .finish();
    // Global: the fleet's background work runs on a thread of its own. Each test is a process
    // of its own under nextest; under `cargo test` a failed install means another test set one.
    let installed = tracing::subscriber::set_global_default(subscriber).is_ok();
    {
        async_io::block_on(async {
            // The right password: connected; the wrong one: refused, and logged as local.
            let good = FleetConfig::new(format!("redis://:{SECRET}@127.0.0.1:{port}/0"));
            let fleet = started(&good).await;
            let bad = FleetConfig::new(format!("redis://:{SECRET}x@127.0.0.1:{port}/0"));
            let refused = Fleet::start(&bad).expect("valid");
            assert!(!refused.wait_shared(Duration::from_millis(300)).await);
            let invalid =
                Fleet::start(&FleetConfig::new(format!("redis://:{SECRET}@[::1"))).unwrap_err();
            for text in [
                format!("{fleet:?}"),
                format!("{refused:?}"),
                format!("{good:?}"),
                format!("{invalid:?} {invalid}"),
            ] {
                assert!(!text.contains(SECRET), "{text}");
            }
        });
    }
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    if installed {
        assert!(logs.contains("fleet mode changed"), "{logs}");
    }
    assert!(!logs.contains(SECRET), "{logs}");
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A tag that keeps one test's keys apart from another's on a shared server.
fn rand_tag() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `future`, or `None` after `limit`.
async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    use futures_util::future::{Either, select};
    match select(Box::pin(future), Box::pin(async_io::Timer::after(limit))).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// Polls `done` every 10 ms for at most 5 s.
async fn poll_until(done: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
    done()
}
