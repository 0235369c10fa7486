//! Replicas end to end: clients of the tokio and async-std backends, each with a fleet of its
//! own, against one `redis-server` the test starts and a loopback upstream that records when
//! every request arrived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use egress_core::FleetConfig;
use egress_core::{Client, Config, RateLimitConfig, RetryPolicy};
use egress_fleet::Fleet;
use egress_tests::server::{FaultServer, Reply};
use egress_tests::tools::{free_port, redis_server};

fn config(upstream: &FaultServer, redis: u16, prefix: &str) -> Config {
    Config::default()
        .with_base_url(upstream.url("/"))
        .with_retry(RetryPolicy::disabled())
        .with_fleet(
            FleetConfig::new(format!("redis://127.0.0.1:{redis}/0")).with_key_prefix(prefix),
        )
}

async fn tokio_replica(config: &Config) -> Client {
    let fleet = Fleet::start(&config.fleet).expect("a valid fleet");
    assert!(fleet.wait_shared(Duration::from_secs(10)).await);
    egress_tokio::Builder::new(config.clone())
        .with_coordinator(fleet)
        .build()
        .expect("a valid config")
}

fn async_std_replica(config: &Config) -> Client {
    async_std::task::block_on(async {
        let fleet = Fleet::start(&config.fleet).expect("a valid fleet");
        assert!(fleet.wait_shared(Duration::from_secs(10)).await);
        egress_async_std::Builder::new(config.clone())
            .with_coordinator(fleet)
            .build()
            .expect("a valid config")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_to_one_replica_holds_the_host_for_every_replica() {
    let redis = free_port();
    let _redis = redis_server(redis, None);
    let upstream = FaultServer::start(Arc::new(|_, seen: &egress_tests::server::Seen| {
        if seen.path == "/throttle" {
            Reply::status(429).header("retry-after", "2")
        } else {
            Reply::status(200)
        }
    }));
    let config = config(&upstream, redis, "hold-e2e");
    let tokio_one = tokio_replica(&config).await;
    let async_std_one = Arc::new(async_std_replica(&config));
    // Both listen before the 429 comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let throttled = tokio_one.get("/throttle").send().await.unwrap_err();
    assert_eq!(
        throttled.status().map(|s| s.as_u16()),
        Some(429),
        "{throttled:?}"
    );
    let held_from = Instant::now();
    // The other replica (the other backend): a call that cannot wait 2 s is refused unsent; one
    // that can goes after the hold.
    let other = async_std_one.clone();
    let (refused, waited) = async_std::task::spawn(async move {
        tokio_free_sleep(Duration::from_millis(100)).await;
        let refused = other
            .get("/a")
            .deadline(Duration::from_millis(500))
            .send()
            .await;
        let waited = other
            .get("/b")
            .deadline(Duration::from_secs(10))
            .send()
            .await;
        (refused, waited)
    })
    .await;
    let refused = refused.unwrap_err();
    assert!(
        refused.is_rate_limited() && refused.attempts() == 0,
        "{refused:?}"
    );
    waited.expect("sent after the hold");
    let seen = upstream.requests();
    assert!(seen.iter().all(|r| r.path != "/a"));
    let b = seen.iter().find(|r| r.path == "/b").expect("/b was sent");
    // The hold ran from the 429's arrival: nothing reached the upstream for ~2 s after it.
    let throttle = seen.iter().find(|r| r.path == "/throttle").expect("sent");
    assert!(
        b.at.duration_since(throttle.at) >= Duration::from_millis(1900),
        "/b came {:?} after the 429",
        b.at.duration_since(throttle.at)
    );
    assert!(held_from.elapsed() < Duration::from_secs(10));
}

async fn tokio_free_sleep(d: Duration) {
    async_io::Timer::after(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_eight_callers_share_one_quota_within_rate_plus_burst() {
    const RATE: usize = 25;
    const BURST: usize = 5;
    let redis = free_port();
    let _redis = redis_server(redis, None);
    let upstream = FaultServer::start(FaultServer::always(Reply::status(200)));
    let config = config(&upstream, redis, "quota-e2e").with_rate_limit(RateLimitConfig::new(
        format!("{RATE}/s").parse().unwrap(),
        BURST as u32,
    ));
    let replicas = [tokio_replica(&config).await, tokio_replica(&config).await];
    let start = Instant::now();
    let run = Duration::from_secs(2);
    let mut callers = Vec::new();
    for replica in &replicas {
        for _ in 0..8 {
            let client = replica.clone();
            callers.push(tokio::spawn(async move {
                let mut outcomes = 0;
                while start.elapsed() < run {
                    // Every call ends: sent after its slot, or refused unsent. (A deadline near
                    // the queue's length wastes slots: a call woken at a slot just before its
                    // deadline has no time left to send.)
                    let _ = client
                        .get("/x")
                        .deadline(Duration::from_secs(5))
                        .send()
                        .await;
                    outcomes += 1;
                }
                outcomes
            }));
        }
    }
    for caller in callers {
        caller.await.expect("a caller finished");
    }
    let seen = upstream.requests();
    let in_run: Vec<Duration> = seen.iter().map(|r| r.at.duration_since(start)).collect();
    // At most the burst plus the rate, for the run and in every 1 s window from the start.
    for second in 0..2u64 {
        let from = Duration::from_secs(second);
        let n = in_run
            .iter()
            .filter(|t| **t >= from && **t < from + Duration::from_secs(1))
            .count();
        assert!(n <= RATE + BURST, "{n} requests in second {second}");
    }
    let total = in_run.iter().filter(|t| **t < run).count();
    assert!(total <= 2 * RATE + BURST, "{total} requests in 2 s");
    // The quota is used, not split: at least 90 % of what 2 s allow.
    assert!(total * 10 >= 2 * RATE * 9, "only {total} requests in 2 s");
}
