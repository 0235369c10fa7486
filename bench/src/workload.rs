//! The modes, the workloads and one child run: a fixed number of calls by `concurrency` workers
//! over one reused client, each body read in full and decoded into [`Entity`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The typed struct every body is decoded into.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // decoded for the work of it; only `id` is looked at
pub(crate) struct Entity {
    pub(crate) id: u64,
    name: String,
    kind: String,
    owner: String,
    created_at: String,
    updated_at: String,
    tags: Vec<String>,
    version: u32,
    active: bool,
    description: String,
}

/// A client under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Mode {
    /// egress on tokio (`egress-tokio`: egress-transport's hyper connections, rustls).
    EgressTokio,
    /// egress on tokio with hedging at the p90 of the host's recent latencies (one hedge).
    /// Not in [`Mode::ALL`]: asked for by name, with the `slow` workload.
    EgressTokioHedged,
    /// hyper-util's pooled legacy client alone (behind hyper-rustls for HTTPS): the floor.
    HyperUtil,
    /// The same raw client sending the headers egress sends by default (`User-Agent`,
    /// `Accept-Encoding`, a new `X-Correlation-ID` per call marked sensitive, as egress marks
    /// it): what the same request costs without egress, for information. Not in
    /// [`Mode::ALL`]: asked for by name.
    HyperUtilHeaders,
    /// reqwest + reqwest-middleware + reqwest-retry.
    ReqwestRetry,
    /// egress on async-std (`egress-async-std`: the same transport, native-tls).
    EgressAsyncStd,
    /// surf's h1 client alone (async-h1, native-tls): for information.
    Surf,
}

impl Mode {
    /// Every mode, in the order a round runs them.
    pub(crate) const ALL: [Mode; 5] = [
        Mode::EgressTokio,
        Mode::HyperUtil,
        Mode::ReqwestRetry,
        Mode::EgressAsyncStd,
        Mode::Surf,
    ];

    /// The name on the command line and in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::EgressTokio => "egress-tokio",
            Mode::EgressTokioHedged => "egress-tokio-hedged",
            Mode::HyperUtil => "hyper-util",
            Mode::HyperUtilHeaders => "hyper-util-headers",
            Mode::ReqwestRetry => "reqwest-retry",
            Mode::EgressAsyncStd => "egress-async-std",
            Mode::Surf => "surf",
        }
    }

    /// The mode called `name`.
    pub(crate) fn parse(name: &str) -> Option<Mode> {
        Mode::ALL
            .into_iter()
            .chain([Mode::EgressTokioHedged, Mode::HyperUtilHeaders])
            .find(|m| m.name() == name)
    }

    /// Whether the client retries (and so belongs in the outage run).
    pub(crate) fn retries(self) -> bool {
        !matches!(self, Mode::HyperUtil | Mode::HyperUtilHeaders | Mode::Surf)
    }
}

/// The scheme a child calls the upstream with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Scheme {
    /// Plain HTTP/1.1 over TCP.
    Http,
    /// TLS (rustls on the upstream), HTTP/2 or HTTP/1.1 as ALPN picks.
    Https,
}

impl Scheme {
    /// The name on the command line and in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The scheme called `name`.
    pub(crate) fn parse(name: &str) -> Option<Scheme> {
        [Scheme::Http, Scheme::Https]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// Where a child sends its calls, and what it must trust there.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// For HTTPS, the upstream's self-signed certificate (DER): the only root the client trusts.
    pub(crate) certificate: Option<Vec<u8>>,
}

/// What is asked of the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Workload {
    /// `GET /entity/{id}`, always 200.
    Entity,
    /// `GET /flaky`: every 10th request upstream answers 503.
    Flaky,
    /// `GET /outage`: always 503.
    Outage,
    /// `GET /slow`: 10 ms, but every 10th request upstream 200 ms.
    Slow,
}

impl Workload {
    /// The name on the command line and in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Entity => "entity",
            Workload::Flaky => "flaky",
            Workload::Outage => "outage",
            Workload::Slow => "slow",
        }
    }

    /// The workload called `name`.
    pub(crate) fn parse(name: &str) -> Option<Workload> {
        [
            Workload::Entity,
            Workload::Flaky,
            Workload::Outage,
            Workload::Slow,
        ]
        .into_iter()
        .find(|w| w.name() == name)
    }

    /// The path of call `i`.
    pub(crate) fn path(self, i: usize) -> String {
        match self {
            Workload::Entity => format!("/entity/{}", i % 1000),
            Workload::Flaky => "/flaky".to_owned(),
            Workload::Outage => "/outage".to_owned(),
            Workload::Slow => "/slow".to_owned(),
        }
    }
}

/// What one child run tells its parent (one JSON line on stdout).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct RunReport {
    /// Measured calls (the warm-up excluded).
    pub(crate) calls: usize,
    /// Calls that ended with a decoded entity.
    pub(crate) ok: usize,
    /// Calls that ended with an error (a status the client gave up on, or worse).
    pub(crate) failed: usize,
    /// The first error, for the curious.
    pub(crate) first_error: Option<String>,
    /// Wall time of the measured calls, seconds.
    pub(crate) elapsed_s: f64,
    /// User CPU time of the whole child process during the measured calls, microseconds.
    pub(crate) user_us: f64,
    /// System CPU time of the whole child process during the measured calls, microseconds.
    pub(crate) sys_us: f64,
    /// Peak RSS of the child process, KiB.
    pub(crate) max_rss_kib: i64,
    /// Median latency of a call, microseconds.
    pub(crate) p50_us: f64,
    /// 99th percentile latency of a call, microseconds.
    pub(crate) p99_us: f64,
    /// Whether the child pinned itself to its core.
    pub(crate) pinned: bool,
}

/// The outcome of some calls, as the workers counted them.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Latency of every call.
    pub(crate) latencies: Vec<Duration>,
    /// Calls that ended with a decoded entity.
    pub(crate) ok: usize,
    /// Calls that failed.
    pub(crate) failed: usize,
    /// The first failure.
    pub(crate) first_error: Option<String>,
}

impl Tally {
    /// Records one call.
    pub(crate) fn record(&mut self, latency: Duration, result: Result<Entity, String>) {
        self.latencies.push(latency);
        match result {
            Ok(entity) => {
                std::hint::black_box(entity.id);
                self.ok += 1;
            }
            Err(e) => {
                self.failed += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
    }

    /// Adds another worker's tally.
    pub(crate) fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// A measured batch of calls.
#[derive(Debug)]
pub(crate) struct Measured {
    /// What the workers counted.
    pub(crate) tally: Tally,
    /// Wall time of the batch.
    pub(crate) elapsed: Duration,
    /// The process's usage just before.
    pub(crate) before: crate::measure::Usage,
    /// The process's usage just after.
    pub(crate) after: crate::measure::Usage,
}
