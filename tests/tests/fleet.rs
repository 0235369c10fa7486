//! The fleet across processes (issue 19): four replica processes, each with 16 concurrent
//! callers and a client of its own (replicas 0 and 2 on egress-tokio, 1 and 3 on
//! egress-async-std), share one `redis-server` the test starts on a free loopback port, against
//! a loopback upstream that records when each request arrived and from which replica
//! (`x-replica`).
//!
//! A replica process is this very test binary, run again with `EGRESS_FLEET_REPLICA` holding its
//! plan (JSON) and only the ignored test [`a_replica_process_runs_its_callers_and_reports`]
//! selected: nothing else to build, so it runs the same under `cargo test` and `cargo nextest`.
//! The replica writes one `FLEET-REPORT {json}` line: every outcome of its calls by kind, how
//! many calls it started and ended, how many did not end within their deadline and a second
//! (hung), and when its fleet went local and shared again.
//!
//! Every test has its own Redis and upstream: the tests of this file run in parallel threads.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use egress_core::{Client, Config, Error, RateLimitConfig, Response, RetryPolicy};
use egress_core::{FailureMode, FleetConfig};
use egress_fleet::Fleet;
use egress_tests::server::{FaultServer, Handler, Reply, Seen};
use egress_tests::tools::{Spawned, free_port, redis_server};
use serde_json::{Value, json};

/// The environment variable that makes this binary a replica process (its plan, JSON).
const ROLE: &str = "EGRESS_FLEET_REPLICA";
const REPLICAS: usize = 4;
const CALLERS: usize = 16;
/// The shared quota: 200 requests/s with a burst of 20.
const RATE: usize = 200;
const BURST: usize = 20;
/// Each call's deadline: long enough to wait for a slot behind 63 other callers, or through a
/// 2 s hold.
const DEADLINE: Duration = Duration::from_secs(5);
/// How long the replicas have to start and connect before the common start.
const LEAD: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// The replica process

/// What one replica process does, from its plan.
#[derive(Clone, Debug)]
struct Plan {
    index: usize,
    redis: u16,
    upstream: String,
    /// The common start, milliseconds since the Unix epoch.
    start_ms: u64,
    run: Duration,
    lease: u32,
    closed: bool,
}

impl Plan {
    fn to_json(&self) -> String {
        json!({
            "index": self.index,
            "redis": self.redis,
            "upstream": self.upstream,
            "start_ms": self.start_ms,
            "run_ms": self.run.as_millis() as u64,
            "lease": self.lease,
            "closed": self.closed,
        })
        .to_string()
    }

    fn from_json(text: &str) -> Self {
        let plan: Value = serde_json::from_str(text).expect("the parent writes its plan as JSON");
        let number = |name: &str| {
            plan[name]
                .as_u64()
                .unwrap_or_else(|| panic!("the plan has a number {name}"))
        };
        Self {
            index: number("index") as usize,
            redis: number("redis") as u16,
            upstream: plan["upstream"]
                .as_str()
                .expect("the plan has an upstream URL")
                .to_owned(),
            start_ms: number("start_ms"),
            run: Duration::from_millis(number("run_ms")),
            lease: number("lease") as u32,
            closed: plan["closed"]
                .as_bool()
                .expect("the plan says open or closed"),
        }
    }

    fn config(&self) -> Config {
        let mode = if self.closed {
            FailureMode::Closed
        } else {
            FailureMode::Open
        };
        Config::default()
            .with_base_url(&self.upstream)
            .with_retry(RetryPolicy::disabled())
            .with_rate_limit(RateLimitConfig::new(
                format!("{RATE}/s").parse().expect("a valid rate"),
                BURST as u32,
            ))
            .with_fleet(
                FleetConfig::new(format!("redis://127.0.0.1:{}/0", self.redis))
                    .with_key_prefix("fleet-test")
                    .with_lease(self.lease)
                    .with_failure_mode(mode)
                    // Not the 50 ms default: on a loaded 2-core machine a slot request may
                    // wait that long for the CPU, and a replica that falls back spends its own
                    // local quota on top of the fleet's. A killed Redis is seen at once anyway
                    // (its connections are reset).
                    .with_timeout(Duration::from_millis(500)),
            )
    }
}

/// The common start as an `Instant` of this process.
fn instant_of(unix_ms: u64) -> Instant {
    let at = UNIX_EPOCH + Duration::from_millis(unix_ms);
    let now = SystemTime::now();
    match at.duration_since(now) {
        Ok(ahead) => Instant::now() + ahead,
        Err(behind) => Instant::now() - behind.duration(),
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis() as u64
}

/// What the callers of one replica saw.
#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, u64>,
    hung: u64,
    longest: Duration,
}

/// Calls started and ended, across the callers of a replica: equal when none was lost.
#[derive(Default)]
struct Calls {
    started: AtomicU64,
    ended: AtomicU64,
}

fn outcome(result: &Result<Response, Error>) -> String {
    match result {
        Ok(response) => format!("ok_{}", response.status().as_u16()),
        Err(error) => {
            if error.is_fleet_unavailable() {
                "fleet_unavailable".to_owned()
            } else if let Some(status) = error.status() {
                format!("status_{}", status.as_u16())
            } else if error.is_rate_limited() {
                "rate_limited".to_owned()
            } else if error.is_timeout() {
                "timeout".to_owned()
            } else if error.is_circuit_open() {
                "circuit_open".to_owned()
            } else {
                eprintln!("replica: unexpected error {error:?}");
                "other".to_owned()
            }
        }
    }
}

/// One caller: calls until `end`, each call bounded by its deadline and one second more (past
/// that it counts as hung and is dropped). After an error it pauses 20 ms, as a service's
/// worker would rather than spin.
async fn caller(client: Client, index: usize, end: Instant, calls: Arc<Calls>) -> Tally {
    let mut tally = Tally::default();
    let replica = index.to_string();
    while Instant::now() < end {
        calls.started.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let call = client
            .get("/work")
            .header("x-replica", &replica)
            .deadline(DEADLINE)
            .send();
        let bounded = futures_lite::future::or(async { Some(call.await) }, async {
            async_io::Timer::after(DEADLINE + Duration::from_secs(1)).await;
            None
        })
        .await;
        tally.longest = tally.longest.max(began.elapsed());
        let Some(result) = bounded else {
            tally.hung += 1;
            continue;
        };
        calls.ended.fetch_add(1, Ordering::Relaxed);
        *tally.outcomes.entry(outcome(&result)).or_default() += 1;
        if result.is_err() {
            async_io::Timer::after(Duration::from_millis(20)).await;
        }
    }
    tally
}

/// Watches the fleet's mode every 10 ms until `end`: when it first went local after the
/// start, and when it was shared again after that (ms from the start).
async fn watch(fleet: Arc<Fleet>, start: Instant, end: Instant) -> (Option<u64>, Option<u64>) {
    let (mut local, mut again) = (None, None);
    let since = || start.elapsed().as_millis() as u64;
    while Instant::now() < end {
        match (fleet.is_shared(), local, again) {
            (false, None, _) => local = Some(since()),
            (true, Some(_), None) => again = Some(since()),
            _ => {}
        }
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
    (local, again)
}

async fn sleep_until(at: Instant) {
    async_io::Timer::at(at).await;
}

/// Runs a replica on its backend's runtime and returns its report.
fn run_replica(plan: &Plan) -> Value {
    let config = plan.config();
    let start = instant_of(plan.start_ms);
    let end = start + plan.run;
    let calls = Arc::new(Calls::default());
    let connect = |fleet: &Arc<Fleet>| {
        let fleet = fleet.clone();
        async move {
            assert!(
                fleet.wait_shared(Duration::from_secs(10)).await,
                "replica {}: no connection to the test's redis-server",
                plan.index
            );
        }
    };
    let (tallies, (local, again)) = if plan.index % 2 == 0 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async {
            let fleet = Fleet::start(&config.fleet).expect("a valid [fleet]");
            connect(&fleet).await;
            let client = egress_tokio::Builder::new(config.clone())
                .with_coordinator(fleet.clone())
                .build()
                .expect("a valid config");
            sleep_until(start).await;
            let watcher = tokio::spawn(watch(fleet, start, end));
            let callers: Vec<_> = (0..CALLERS)
                .map(|_| tokio::spawn(caller(client.clone(), plan.index, end, calls.clone())))
                .collect();
            let mut tallies = Vec::new();
            for handle in callers {
                tallies.push(handle.await.expect("a caller ends without panicking"));
            }
            let modes = watcher.await.expect("the watcher ends without panicking");
            (tallies, modes)
        })
    } else {
        async_std::task::block_on(async {
            let fleet = Fleet::start(&config.fleet).expect("a valid [fleet]");
            connect(&fleet).await;
            let client = egress_async_std::Builder::new(config.clone())
                .with_coordinator(fleet.clone())
                .build()
                .expect("a valid config");
            sleep_until(start).await;
            let watcher = async_std::task::spawn(watch(fleet, start, end));
            let callers: Vec<_> = (0..CALLERS)
                .map(|_| {
                    async_std::task::spawn(caller(client.clone(), plan.index, end, calls.clone()))
                })
                .collect();
            let mut tallies = Vec::new();
            for handle in callers {
                tallies.push(handle.await);
            }
            (tallies, watcher.await)
        })
    };
    let mut outcomes = BTreeMap::<String, u64>::new();
    let (mut hung, mut longest) = (0, Duration::ZERO);
    for tally in tallies {
        for (kind, n) in tally.outcomes {
            *outcomes.entry(kind).or_default() += n;
        }
        hung += tally.hung;
        longest = longest.max(tally.longest);
    }
    json!({
        "index": plan.index,
        "outcomes": outcomes,
        "started": calls.started.load(Ordering::Relaxed),
        "ended": calls.ended.load(Ordering::Relaxed),
        "hung": hung,
        "longest_ms": longest.as_millis() as u64,
        "local_ms": local,
        "shared_again_ms": again,
    })
}

#[test]
#[ignore = "a replica process: the tests of this file start it with EGRESS_FLEET_REPLICA set"]
fn a_replica_process_runs_its_callers_and_reports() {
    let Ok(plan) = std::env::var(ROLE) else {
        eprintln!("{ROLE} is not set: this test is a replica process of the other fleet tests");
        return;
    };
    let report = run_replica(&Plan::from_json(&plan));
    // On a line of its own: the harness has written "test ... " without a newline.
    println!("\nFLEET-REPORT {report}");
}

// ---------------------------------------------------------------------------------------------
// The parent's side

/// Four replica processes started, with the readers of their output.
struct Fleet4 {
    children: Vec<(
        Spawned,
        std::thread::JoinHandle<String>,
        std::thread::JoinHandle<String>,
    )>,
}

/// The common start, `LEAD` from now: milliseconds since the epoch and this process's instant.
fn common_start() -> (u64, Instant) {
    let at = SystemTime::now() + LEAD;
    let ms = unix_ms(at);
    (ms, instant_of(ms))
}

fn spawn_replicas(
    redis: u16,
    upstream: &FaultServer,
    start_ms: u64,
    run: Duration,
    plan: impl Fn(usize) -> (u32, bool),
) -> Fleet4 {
    let exe = std::env::current_exe().expect("the test binary's path");
    let children = (0..REPLICAS)
        .map(|index| {
            let (lease, closed) = plan(index);
            let plan = Plan {
                index,
                redis,
                upstream: upstream.url("/"),
                start_ms,
                run,
                lease,
                closed,
            };
            let mut child = Command::new(&exe)
                .args([
                    "--exact",
                    "a_replica_process_runs_its_callers_and_reports",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ROLE, plan.to_json())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the test binary starts again as a replica");
            let read = |mut pipe: Box<dyn Read + Send>| {
                std::thread::spawn(move || {
                    let mut text = String::new();
                    let _ = pipe.read_to_string(&mut text);
                    text
                })
            };
            let stdout = read(Box::new(child.stdout.take().expect("stdout is piped")));
            let stderr = read(Box::new(child.stderr.take().expect("stderr is piped")));
            (
                Spawned::adopt(child, format!("replica {index}")),
                stdout,
                stderr,
            )
        })
        .collect();
    Fleet4 { children }
}

impl Fleet4 {
    /// Waits for every replica (at most `within`) and reads its report, in replica order.
    fn reports(self, within: Duration) -> Vec<Value> {
        self.children
            .into_iter()
            .enumerate()
            .map(|(index, (mut child, stdout, stderr))| {
                let status = child.wait_for_exit(within);
                let (stdout, stderr) = (
                    stdout.join().expect("the stdout reader ends"),
                    stderr.join().expect("the stderr reader ends"),
                );
                assert!(
                    status.is_some_and(|s| s.success()),
                    "replica {index} did not end well within {within:?} ({status:?}):\n{stdout}\n{stderr}"
                );
                let line = stdout
                    .lines()
                    .find_map(|l| l.split_once("FLEET-REPORT ").map(|(_, report)| report))
                    .unwrap_or_else(|| panic!("replica {index} wrote no report:\n{stdout}\n{stderr}"));
                serde_json::from_str(line).expect("the report is JSON")
            })
            .collect()
    }
}

/// Every call of every replica ended, none hung, and each outcome is one of `allowed`.
fn assert_every_call_ended(reports: &[Value], allowed: &[&str]) {
    for report in reports {
        let index = &report["index"];
        assert_eq!(report["hung"], 0, "replica {index}: calls hung: {report}");
        assert_eq!(
            report["started"], report["ended"],
            "replica {index}: calls lost: {report}"
        );
        let outcomes = report["outcomes"].as_object().expect("outcomes by kind");
        for kind in outcomes.keys() {
            assert!(
                allowed.contains(&kind.as_str()),
                "replica {index}: outcome {kind} unexpected: {report}"
            );
        }
        let total: u64 = outcomes.values().filter_map(Value::as_u64).sum();
        assert_eq!(
            Some(total),
            report["ended"].as_u64(),
            "replica {index}: every ended call has one outcome"
        );
    }
}

fn outcomes(report: &Value, kind: &str) -> u64 {
    report["outcomes"][kind].as_u64().unwrap_or(0)
}

/// When a request arrived, from the start; panics on one before the start (no replica calls
/// before it).
fn since(start: Instant, seen: &Seen) -> Duration {
    seen.at
        .checked_duration_since(start)
        .unwrap_or_else(|| panic!("a request arrived before the start: {:?}", seen.path))
}

/// Arrivals in each 1 s window from the start, for `seconds` windows.
fn per_second(start: Instant, seen: &[Seen], seconds: u64) -> Vec<usize> {
    let mut counts = vec![0; seconds as usize];
    for request in seen {
        let second = since(start, request).as_secs();
        if second < seconds {
            counts[second as usize] += 1;
        }
    }
    counts
}

fn replica_of(seen: &Seen) -> usize {
    seen.header("x-replica")
        .and_then(|r| r.parse().ok())
        .expect("every request names its replica")
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn four_replica_processes_share_200_per_second_for_10_s_within_rate_plus_burst_using_90_percent() {
    let redis = free_port();
    let _redis = redis_server(redis, None);
    let upstream = FaultServer::start(FaultServer::always(Reply::status(200)));
    let (start_ms, start) = common_start();
    let run = Duration::from_secs(10);
    // Two replicas ask Redis for every slot (lease 1, exact), two lease 16 at a time.
    let replicas = spawn_replicas(redis, &upstream, start_ms, run, |i| {
        (if i < 2 { 1 } else { 16 }, false)
    });
    let reports = replicas.reports(run + LEAD + Duration::from_secs(20));
    assert_every_call_ended(&reports, &["ok_200", "rate_limited"]);
    let seen = upstream.requests();
    let counts = per_second(start, &seen, run.as_secs());
    eprintln!("upstream per second: {counts:?}; replicas: {reports:?}");
    for (second, n) in counts.iter().enumerate() {
        assert!(
            *n <= RATE + BURST,
            "{n} requests in second {second}, over {RATE}/s + burst {BURST}: {counts:?}"
        );
    }
    let total: usize = counts.iter().sum();
    let quota = RATE * run.as_secs() as usize;
    assert!(
        total * 10 >= quota * 9,
        "only {total} of {quota} requests used: {counts:?}"
    );
    for replica in 0..REPLICAS {
        assert!(
            seen.iter().any(|r| replica_of(r) == replica),
            "replica {replica} sent nothing"
        );
    }
}

#[test]
fn a_429_with_retry_after_2_to_one_replica_process_stops_every_replica_for_2_s() {
    let redis = free_port();
    let _redis = redis_server(redis, None);
    let (start_ms, start) = common_start();
    // The first request of replica 0 a second into the run gets 429 Retry-After: 2.
    let throttled = Arc::new(Mutex::new(None::<Instant>));
    let fired = AtomicBool::new(false);
    let noted = throttled.clone();
    let handler: Handler = Arc::new(move |_, seen: &Seen| {
        let late = seen.at >= start + Duration::from_secs(1);
        if late && seen.header("x-replica") == Some("0") && !fired.swap(true, Ordering::SeqCst) {
            *noted.lock().expect("no panic holds the lock") = Some(seen.at);
            return Reply::status(429).header("retry-after", "2");
        }
        Reply::status(200)
    });
    let upstream = FaultServer::start(handler);
    let run = Duration::from_secs(4);
    let replicas = spawn_replicas(redis, &upstream, start_ms, run, |_| (1, false));
    let reports = replicas.reports(run + LEAD + Duration::from_secs(20));
    assert_every_call_ended(&reports, &["ok_200", "status_429", "rate_limited"]);
    let throttled = throttled
        .lock()
        .expect("no panic holds the lock")
        .expect("replica 0 called a second into the run");
    let statuses: u64 = reports.iter().map(|r| outcomes(r, "status_429")).sum();
    assert_eq!(statuses, 1, "one 429, to replica 0: {reports:?}");
    assert_eq!(outcomes(&reports[0], "status_429"), 1);
    let seen = upstream.requests();
    // The other processes hear of the hold through Redis (a script, then a pub/sub message): a
    // request already on its way before the word arrived may land in the hold's first moments
    // (at most what the quota lets through meanwhile, one per 5 ms). From 100 ms on, none.
    let grace = Duration::from_millis(100);
    let hold = throttled + grace..throttled + Duration::from_secs(2);
    let after = |r: &Seen| (replica_of(r), r.at - throttled);
    let early: Vec<_> = seen
        .iter()
        .filter(|r| r.at > throttled && r.at < hold.start)
        .map(after)
        .collect();
    eprintln!("(replica, after the 429) in the first {grace:?}: {early:?}");
    let during: Vec<_> = seen
        .iter()
        .filter(|r| hold.contains(&r.at))
        .map(after)
        .collect();
    assert!(
        during.is_empty(),
        "requests (replica, after the 429) during the hold: {during:?}"
    );
    for replica in 0..REPLICAS {
        assert!(
            seen.iter()
                .any(|r| replica_of(r) == replica && r.at >= hold.end),
            "replica {replica} did not call again after the hold"
        );
    }
}

#[test]
fn with_redis_killed_mid_run_every_call_ends_typed_the_limits_fall_back_as_configured_and_the_replicas_share_again_after_a_restart()
 {
    let redis = free_port();
    let server = redis_server(redis, None);
    let upstream = FaultServer::start(FaultServer::always(Reply::status(200)));
    let (start_ms, start) = common_start();
    let run = Duration::from_secs(9);
    // Replicas 0 and 1 fail open (the default), 2 and 3 fail closed.
    let replicas = spawn_replicas(redis, &upstream, start_ms, run, |i| (1, i >= 2));
    let (kill, restart) = (Duration::from_secs(2), Duration::from_millis(3500));
    std::thread::sleep((start + kill).saturating_duration_since(Instant::now()));
    drop(server); // SIGKILL by its PID
    std::thread::sleep((start + restart).saturating_duration_since(Instant::now()));
    let _server = redis_server(redis, None);
    let reports = replicas.reports(run + Duration::from_secs(20));
    assert_every_call_ended(&reports, &["ok_200", "fleet_unavailable", "rate_limited"]);
    let ms = |d: Duration| d.as_millis() as u64;
    let mut shared_again = Duration::ZERO;
    for report in &reports {
        let index = report["index"].as_u64().expect("an index") as usize;
        let local = report["local_ms"].as_u64();
        let again = report["shared_again_ms"].as_u64();
        assert!(
            local.is_some_and(|l| l >= ms(kill) && l < ms(restart)),
            "replica {index} did not go local while Redis was down: {report}"
        );
        let again = again.unwrap_or_else(|| panic!("replica {index} never shared again: {report}"));
        assert!(again >= ms(restart), "{report}");
        shared_again = shared_again.max(Duration::from_millis(again));
        let unavailable = outcomes(report, "fleet_unavailable");
        if index >= 2 {
            assert!(unavailable > 0, "fail closed ends calls typed: {report}");
        } else {
            assert_eq!(
                unavailable, 0,
                "fail open never refuses for the fleet: {report}"
            );
        }
    }
    let seen = upstream.requests();
    // While Redis is down (from a second after the kill, when every slot reserved before it
    // has been spent), the closed replicas send nothing and the open ones go on, each under
    // its own local limit: together more than the shared quota would let through, each no
    // more than its own.
    let down = start + kill + Duration::from_secs(1)..start + restart;
    let length = down.end - down.start;
    let local_limit = (RATE as f64 * length.as_secs_f64()) as usize + BURST;
    let mut open_total = 0;
    for replica in 0..REPLICAS {
        let n = seen
            .iter()
            .filter(|r| down.contains(&r.at) && replica_of(r) == replica)
            .count();
        if replica >= 2 {
            assert_eq!(n, 0, "closed replica {replica} sent while Redis was down");
        } else {
            assert!(
                n > 0 && n <= local_limit,
                "open replica {replica}: {n} requests in {length:?} (local limit {local_limit})"
            );
            open_total += n;
        }
    }
    assert!(
        open_total > local_limit,
        "the open replicas sent {open_total} in {length:?}: they did not fall back to local limits"
    );
    // Once every replica shares again: at most the shared quota per second, from all four.
    let counts = per_second(start, &seen, run.as_secs());
    eprintln!("upstream per second: {counts:?}; shared again after {shared_again:?}");
    // From the first whole second at least 500 ms after the last replica reconnected (slots a
    // replica reserved from its local limiter before then are spent by then).
    let first = (shared_again + Duration::from_millis(500)).as_secs() + 1;
    assert!(
        first < run.as_secs(),
        "the replicas shared again too late to check: {shared_again:?}"
    );
    for second in first..run.as_secs() {
        let n = counts[second as usize];
        assert!(
            n <= RATE + BURST,
            "{n} requests in second {second} after the restart: {counts:?}"
        );
        let window = start + Duration::from_secs(second)..start + Duration::from_secs(second + 1);
        for replica in 0..REPLICAS {
            assert!(
                seen.iter()
                    .any(|r| window.contains(&r.at) && replica_of(r) == replica),
                "replica {replica} sent nothing in second {second}"
            );
        }
    }
}
