//! The fleet demo: several replicas of a service, each with a client of its own and its own
//! connection to one `redis-server`, share one quota against a loopback upstream; the upstream
//! prints what it saw per second. Half-way, one replica gets `429 Retry-After: 1` (all of them
//! hold), then Redis is killed and restarted (the replicas fall back to their local limits, then
//! share again).
//!
//! ```text
//! cargo run -p egress-vendors --example fleet                    # 3 replicas, lease 1, fail open
//! cargo run -p egress-vendors --example fleet -- --replicas 4 --lease 16
//! cargo run -p egress-vendors --example fleet -- --failure-mode closed
//! ```
//!
//! Needs `redis-server` on the `PATH` (Debian/Ubuntu: `apt-get install redis-server`; macOS:
//! `brew install redis`); it starts its own on a free loopback port with a temporary folder
//! and stops it by its PID. Each replica runs on a thread of its own: even-numbered ones on
//! egress-tokio, odd ones on egress-async-std. About 8 s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egress_core::{Client, Config, RateLimitConfig, RetryPolicy};
use egress_core::{FailureMode, FleetConfig};
use egress_fleet::Fleet;
use egress_tests::server::{FaultServer, Handler, Reply, Seen};
use egress_tests::tools::{find_on_path, free_port, redis_server_of};

const CALLERS: usize = 8;
const RATE: u32 = 100;
const BURST: u32 = 10;
const RUN: Duration = Duration::from_secs(8);
/// When the upstream answers one replica `429 Retry-After: 1`.
const THROTTLE_AT: Duration = Duration::from_secs(2);
/// When Redis is killed, and started again.
const KILL_AT: Duration = Duration::from_millis(4500);
const RESTART_AT: Duration = Duration::from_millis(5500);

struct Args {
    replicas: usize,
    lease: u32,
    mode: FailureMode,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        replicas: 3,
        lease: 1,
        mode: FailureMode::Open,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or(format!("{word} needs a value"));
        match word.as_str() {
            "--replicas" => {
                args.replicas = value()?
                    .parse()
                    .ok()
                    .filter(|n| (2..=8).contains(n))
                    .ok_or("--replicas takes 2 to 8")?;
            }
            "--lease" => {
                args.lease = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or("--lease takes 1 to 1000")?;
            }
            "--failure-mode" => {
                args.mode = match value()?.as_str() {
                    "open" => FailureMode::Open,
                    "closed" => FailureMode::Closed,
                    _ => return Err("--failure-mode takes open or closed".to_owned()),
                };
            }
            other => {
                return Err(format!(
                    "unknown argument {other}: use --replicas N, --lease N, --failure-mode open|closed"
                ));
            }
        }
    }
    Ok(args)
}

/// What the replicas' callers got, by outcome.
type Outcomes = Arc<Mutex<BTreeMap<String, u64>>>;

/// Calls until `end`; after an error a caller pauses 20 ms (as a worker would, rather than spin).
async fn caller(client: Client, replica: usize, end: Instant, outcomes: Outcomes) {
    let name = replica.to_string();
    while Instant::now() < end {
        let result = client
            .get("/work")
            .header("x-replica", &name)
            .deadline(Duration::from_secs(3))
            .send()
            .await;
        let outcome = match &result {
            Ok(response) => response.status().to_string(),
            Err(e) => match e.status() {
                Some(status) => status.to_string(),
                None if e.is_fleet_unavailable() => "refused: fleet unavailable".to_owned(),
                None if e.is_rate_limited() => "refused: rate limited".to_owned(),
                None => format!("error: {e}"),
            },
        };
        *outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome)
            .or_default() += 1;
        if result.is_err() {
            async_io::Timer::after(Duration::from_millis(20)).await;
        }
    }
}

/// Watches the replica's fleet: when it went local and when it shared again (from `start`).
async fn watch(fleet: Arc<Fleet>, start: Instant, end: Instant) -> Vec<(Duration, bool)> {
    let mut changes = Vec::new();
    let mut shared = fleet.is_shared();
    while Instant::now() < end {
        if fleet.is_shared() != shared {
            shared = !shared;
            changes.push((start.elapsed(), shared));
        }
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
    changes
}

/// One replica: its own fleet (its own Redis connection) and client, `CALLERS` callers.
fn replica(
    index: usize,
    config: Config,
    start: Instant,
    outcomes: Outcomes,
) -> Result<Vec<(Duration, bool)>, String> {
    let end = start + RUN;
    let fleet = |config: &Config| Fleet::start(&config.fleet).map_err(|e| e.to_string());
    if index % 2 == 0 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let fleet = fleet(&config)?;
            fleet.wait_shared(Duration::from_secs(5)).await;
            let client = egress_tokio::Builder::new(config)
                .with_coordinator(fleet.clone())
                .build()
                .map_err(|e| e.to_string())?;
            async_io::Timer::at(start).await;
            let watcher = tokio::spawn(watch(fleet, start, end));
            let callers: Vec<_> = (0..CALLERS)
                .map(|_| tokio::spawn(caller(client.clone(), index, end, outcomes.clone())))
                .collect();
            for c in callers {
                c.await.map_err(|e| e.to_string())?;
            }
            watcher.await.map_err(|e| e.to_string())
        })
    } else {
        async_std::task::block_on(async {
            let fleet = fleet(&config)?;
            fleet.wait_shared(Duration::from_secs(5)).await;
            let client = egress_async_std::Builder::new(config)
                .with_coordinator(fleet.clone())
                .build()
                .map_err(|e| e.to_string())?;
            async_io::Timer::at(start).await;
            let watcher = async_std::task::spawn(watch(fleet, start, end));
            let callers: Vec<_> = (0..CALLERS)
                .map(|_| {
                    async_std::task::spawn(caller(client.clone(), index, end, outcomes.clone()))
                })
                .collect();
            for c in callers {
                c.await;
            }
            Ok(watcher.await)
        })
    }
}

fn main() {
    if let Err(message) = run() {
        eprintln!("fleet demo: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let Some(redis_binary) = find_on_path("redis-server") else {
        return Err(
            "redis-server is not installed. Install it from your OS packages \
                    (Debian/Ubuntu: sudo apt-get install redis-server; Fedora: sudo dnf install \
                    redis; macOS: brew install redis) and run the demo again: it starts its own \
                    on a free loopback port, it needs no running Redis."
                .to_owned(),
        );
    };
    let port = free_port();
    let mut redis = Some(redis_server_of(&redis_binary, port, None));
    // Everything starts a second from now, once every replica is connected.
    let start = Instant::now() + Duration::from_secs(1);
    let throttled = Arc::new(Mutex::new(None::<(usize, Duration)>));
    let noted = throttled.clone();
    let fired = AtomicBool::new(false);
    let handler: Handler = Arc::new(move |_, seen: &Seen| {
        let replica = seen
            .header("x-replica")
            .and_then(|r| r.parse::<usize>().ok());
        if seen.at >= start + THROTTLE_AT
            && replica == Some(1)
            && !fired.swap(true, Ordering::SeqCst)
        {
            *noted.lock().unwrap_or_else(|p| p.into_inner()) = Some((1, seen.at - start));
            return Reply::status(429).header("retry-after", "1");
        }
        Reply::status(200)
    });
    let upstream = FaultServer::start(handler);
    let config = Config::default()
        .with_base_url(upstream.url("/"))
        .with_retry(RetryPolicy::disabled())
        .with_rate_limit(RateLimitConfig::new(
            format!("{RATE}/s").parse().map_err(|e| format!("{e}"))?,
            BURST,
        ))
        .with_fleet(
            FleetConfig::new(format!("redis://127.0.0.1:{port}/0"))
                .with_key_prefix("fleet-demo")
                .with_lease(args.lease)
                .with_failure_mode(args.mode),
        );
    let backends: Vec<&str> = (0..args.replicas)
        .map(|i| if i % 2 == 0 { "tokio" } else { "async-std" })
        .collect();
    println!(
        "{} replicas ({}), {CALLERS} callers each, one quota of {RATE}/s (burst {BURST}) in \
         redis-server on 127.0.0.1:{port}; lease {}, fail {}",
        args.replicas,
        backends.join(", "),
        args.lease,
        args.mode.as_str(),
    );
    let outcomes: Outcomes = Arc::default();
    let threads: Vec<_> = (0..args.replicas)
        .map(|i| {
            let (config, outcomes) = (config.clone(), outcomes.clone());
            std::thread::spawn(move || replica(i, config, start, outcomes))
        })
        .collect();
    // Redis dies mid-run (SIGKILL by its PID) and comes back on the same port, empty.
    std::thread::sleep((start + KILL_AT).saturating_duration_since(Instant::now()));
    drop(redis.take());
    std::thread::sleep((start + RESTART_AT).saturating_duration_since(Instant::now()));
    redis = Some(redis_server_of(&redis_binary, port, None));
    let mut changes = Vec::new();
    for (i, thread) in threads.into_iter().enumerate() {
        let replica_changes = thread
            .join()
            .map_err(|_| format!("replica {i} panicked"))??;
        changes.extend(
            replica_changes
                .into_iter()
                .map(|(at, shared)| (at, i, shared)),
        );
    }
    drop(redis);
    print_table(
        &args,
        start,
        &upstream.requests(),
        *throttled.lock().unwrap_or_else(|p| p.into_inner()),
        &changes,
    );
    println!("\nwhat the callers got:");
    for (outcome, n) in outcomes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("  {n:>5}  {outcome}");
    }
    Ok(())
}

fn print_table(
    args: &Args,
    start: Instant,
    seen: &[Seen],
    throttled: Option<(usize, Duration)>,
    changes: &[(Duration, usize, bool)],
) {
    let seconds = RUN.as_secs() as usize;
    let mut counts = vec![vec![0usize; args.replicas]; seconds];
    for request in seen {
        let (Some(at), Some(replica)) = (
            request.at.checked_duration_since(start),
            request
                .header("x-replica")
                .and_then(|r| r.parse::<usize>().ok()),
        ) else {
            continue;
        };
        if let Some(row) = counts.get_mut(at.as_secs() as usize) {
            if let Some(cell) = row.get_mut(replica) {
                *cell += 1;
            }
        }
    }
    let mut notes: Vec<Vec<String>> = vec![Vec::new(); seconds];
    let mut note = |at: Duration, text: String| {
        if let Some(n) = notes.get_mut(at.as_secs() as usize) {
            n.push(text);
        }
    };
    if let Some((replica, at)) = throttled {
        note(
            at,
            format!(
                "429 Retry-After: 1 to replica {replica} at {:.2} s: every replica holds",
                at.as_secs_f64()
            ),
        );
    }
    note(
        KILL_AT,
        format!("Redis killed at {:.2} s", KILL_AT.as_secs_f64()),
    );
    note(
        RESTART_AT,
        format!("Redis restarted at {:.2} s", RESTART_AT.as_secs_f64()),
    );
    for (at, replica, shared) in changes {
        let mode = if *shared { "shared again" } else { "local" };
        note(
            *at,
            format!("replica {replica} {mode} at {:.2} s", at.as_secs_f64()),
        );
    }
    println!(
        "\nwhat the upstream saw, per second (quota {RATE}/s + burst {BURST} for the whole fleet):"
    );
    let header: Vec<String> = (0..args.replicas).map(|i| format!("r{i:<3}")).collect();
    println!("second | {} | total | what happened", header.join(" | "));
    for (second, row) in counts.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|n| format!("{n:>4}")).collect();
        let total: usize = row.iter().sum();
        println!(
            "{second:>6} | {} | {total:>5} | {}",
            cells.join(" | "),
            notes[second].join("; ")
        );
    }
}
