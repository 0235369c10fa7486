//! Bounded load and retry amplification, on every backend.
//!
//! - 20 000 calls at concurrency 64 against a server failing every 10th request with 503: every
//!   call ends with `Ok` or a typed error (none lost, none hung), open file descriptors return
//!   to their baseline, and the whole run is bounded by a timeout well under a minute.
//! - A full outage (every request 503) with the default policy but the circuit breaker off (the
//!   budget alone): once the retry budget's reserve is spent, nothing succeeds and so nothing is
//!   earned, and the server sees one request per call (plus the reserve again each window).
//!
//! The tests of this file run one at a time (they count the process's file descriptors).

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Backend;
use egress_core::{Client, Config, Error};
use egress_tests::server::{FaultServer, Reply};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Runs `calls` calls through `client` with `concurrency` workers; returns (ok, typed errors).
async fn hammer(
    backend: Backend,
    client: Client,
    calls: usize,
    concurrency: usize,
) -> (usize, Vec<Error>) {
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new((0usize, Vec::new())));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, results) = (client.clone(), next.clone(), results.clone());
            async move {
                while next.fetch_add(1, Ordering::Relaxed) < calls {
                    let outcome = client.get("/entity/1").send().await;
                    let mut r = results.lock().unwrap();
                    match outcome {
                        Ok(_) => r.0 += 1,
                        Err(e) => r.1.push(e),
                    }
                }
            }
        })
        .collect();
    backend.join_all(workers).await;
    std::mem::take(&mut *results.lock().unwrap())
}

fn load(backend: Backend) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Process-wide state keeps descriptors once started: async-std's reactor (an epoll, an
    // eventfd, a timerfd) and, when the build has tokio's `signal` feature (egress-vendors turns
    // it on in a workspace build), tokio's signal socket pair, made by the first runtime with
    // a signal driver (the fault server's). Start both before counting, so that the baseline
    // does not depend on whether another test of this process ran first (under nextest none
    // did, and this test failed with two sockets "leaked").
    backend.run(async {
        let _ = backend
            .timeout(Duration::from_millis(1), std::future::pending::<()>())
            .await;
    });
    drop(FaultServer::start(FaultServer::always(Reply::status(204))));
    let baseline = open_fds();
    let before = fd_targets();
    let started = Instant::now();
    {
        let handler = Arc::new(|index: usize, _: &egress_tests::server::Seen| {
            if index % 10 == 9 {
                Reply::status(503)
            } else {
                Reply::json(200, r#"{"id":"1"}"#)
            }
        });
        let server = FaultServer::start(handler);
        let (ok, errors) = backend.run(async {
            let client = backend.client(common::config(&server.url("")));
            let run = hammer(backend, client, 20_000, 64);
            backend
                .timeout(Duration::from_secs(50), run)
                .await
                .expect("the load run finished within 50 s")
        });
        assert_eq!(ok + errors.len(), 20_000, "every call ended");
        // A 503 is retried; only a call whose every attempt hit a 503 fails, and it fails typed.
        for e in &errors {
            assert!(
                matches!(e, Error::Status { .. } | Error::RetryBudgetExhausted { .. }),
                "{e:?}"
            );
        }
        let requests = server.requests().len();
        assert!(
            (20_000..=20_000 + 20_000 / 5 + 100).contains(&requests),
            "{requests} requests"
        );
        println!(
            "{backend:?}: 20000 calls, {ok} ok, {} errors, {requests} requests, {:?}",
            errors.len(),
            started.elapsed()
        );
    }
    // Everything dropped: the client's pooled connections and the server's sockets close.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds() > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        open_fds() <= baseline,
        "file descriptors leaked: {} now, {baseline} before\nnow: {:?}\nbefore: {before:?}",
        open_fds(),
        fd_targets()
    );
}

/// What each open descriptor is (`socket:[..]`, `anon_inode:[eventpoll]`, ...), for a failure;
/// a TCP socket with its line of `/proc/self/net/tcp` (local and remote address, state).
fn fd_targets() -> Vec<String> {
    let tcp = std::fs::read_to_string("/proc/self/net/tcp").unwrap_or_default();
    std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|target| {
            let target = target.display().to_string();
            let inode = target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'));
            let line = inode.and_then(|inode| {
                tcp.lines()
                    .find(|line| line.split_whitespace().nth(9) == Some(inode))
            });
            match line {
                Some(line) => {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    format!(
                        "{target} tcp {} -> {} state {}",
                        fields[1], fields[2], fields[3]
                    )
                }
                None => target,
            }
        })
        .collect()
}

fn amplification(backend: Backend) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let server = FaultServer::start(FaultServer::always(Reply::status(503)));
    let config = Config::default()
        .with_base_url(server.url(""))
        .with_circuit_breaker(egress_core::CircuitBreakerConfig::disabled());
    let (calls, requests, elapsed, since_warmup, warmup_requests) = backend.run(async {
        let client = backend.client(config);
        // Warm up until the budget refuses a retry: its reserve (10/s over 10 s) is spent. Calls
        // run 64 at a time so that the warm-up takes a fraction of the 10 s window.
        let warmup_started = Instant::now();
        let mut warmup = 0;
        loop {
            warmup += 64;
            assert!(warmup < 5_000, "the budget never engaged");
            let (_, errors) = hammer(backend, client.clone(), 64, 64).await;
            if errors
                .iter()
                .any(|e| matches!(e, Error::RetryBudgetExhausted { .. }))
            {
                break;
            }
        }
        let warmup_requests = server.requests().len();
        let before = server.requests().len();
        let started = Instant::now();
        let calls = 5_000;
        let (ok, errors) = hammer(backend, client, calls, 64).await;
        assert_eq!(ok, 0);
        assert_eq!(errors.len(), calls);

        let since_warmup = warmup_started.elapsed();
        (
            calls,
            server.requests().len() - before,
            started.elapsed(),
            since_warmup,
            warmup_requests,
        )
    });
    let ratio = requests as f64 / calls as f64;
    // Nothing succeeds, so retries earn nothing: once the reserve is spent, one request per
    // call, plus one retry of rounding. Only if the run outlasts the 10 s window (a very slow
    // machine) do earlier retries leave it and make room again: at most the warm-up's retries
    // (all its requests beyond one per call), then the reserve's 100 per further window.
    let refills = if since_warmup.as_secs_f64() < 10.0 {
        0.0
    } else {
        warmup_requests as f64 + 100.0 * (since_warmup.as_secs_f64() / 10.0).floor()
    };
    let bound = 1.0 + (refills + 1.0) / calls as f64;
    println!(
        "{backend:?}: full outage, {calls} calls -> {requests} requests ({ratio:.4} per call) in \
         {elapsed:?} ({since_warmup:?} since the warm-up began)"
    );
    assert!(
        ratio <= bound,
        "{ratio:.4} requests per call; the bound is {bound:.4}"
    );
}

on_each_backend!(load, amplification);
