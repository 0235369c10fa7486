//! `load`: the end-to-end load benchmark of egress (both backends) against raw hyper-util, raw
//! surf and reqwest + reqwest-middleware + reqwest-retry, over plain HTTP and over HTTPS. A
//! program that prints figures, not a test.
//!
//! ```text
//! cargo run --release -p egress-bench --bin load -- [--requests N] [--rounds R] [--schemes http,https]
//!     [--callgrind N]
//! ```
//!
//! The parent process starts the loopback upstreams (see [`upstream`]: plain HTTP/1.1, and HTTPS
//! with ALPN `h2`/`http/1.1` behind rustls and a self-signed certificate) on their own thread,
//! pinned to core 1 when the machine has two cores, then runs every measurement in a child
//! process (this same binary with `--child`) pinned to core 0: modes run interleaved and
//! counterbalanced (A B C D E, E D C B A, A B C D E, ...) for `--rounds` rounds, for each
//! workload, concurrency and scheme. One child is one scheme, one mode, one workload and one
//! concurrency: it builds one client (over HTTPS trusting the upstream's certificate alone,
//! which the parent passes on its command line as hex DER), warms it up, then makes a fixed
//! number of calls with `concurrency` workers, each reading the whole body and decoding it
//! into a typed struct.
//!
//! What each figure is:
//! - **req/s**: measured calls / wall time of the measured calls (the median over rounds).
//! - **p50, p99**: latency of one call, retries and backoff included (medians over rounds).
//! - **CPU µs/call**: user + system time of the whole child process (`getrusage(RUSAGE_SELF)`)
//!   over the measured calls, divided by the calls. The child holds the client and nothing else
//!   (the upstream lives in the parent), so this is the client's whole cost: its runtime, its
//!   reactor, the kernel's share of its sockets.
//! - **instr/call**: with `--callgrind N`, the instructions one call costs the child (workload
//!   `entity`), counted by valgrind's callgrind: the child runs twice under
//!   `valgrind --tool=callgrind`, once with the warm-up and `N` calls and once with the warm-up
//!   alone, against the same (native) upstream; the difference divided by `N` leaves out
//!   start-up, the client's build, the TLS handshakes and the warm-up.
//! - **peak RSS**: the child's `ru_maxrss` (the highest over rounds): the client plus the
//!   process's own baseline.
//! - **conns**: connections the upstream accepted during the child's life (warm-up included;
//!   the median over rounds).
//! - **proto**: the share of the child's requests the upstream received over HTTP/2 (`h1`:
//!   none, `h2`: all).
//! - **upstream req/call**: requests the upstream answered / calls made, warm-ups included.
//! - **upstream busy**: CPU time of the upstream's thread / wall time of the child's life; near
//!   100 % means the upstream, not the client, sets the pace.

mod async_std_modes;
mod measure;
mod tokio_modes;
mod upstream;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use workload::{Measured, Mode, RunReport, Scheme, Target, Workload};

/// The command-line options.
#[derive(Debug)]
struct Options {
    requests: usize,
    flaky_requests: Option<usize>,
    outage_calls: usize,
    rounds: usize,
    warmup: usize,
    concurrency: Vec<usize>,
    modes: Vec<Mode>,
    workloads: Vec<Workload>,
    schemes: Vec<Scheme>,
    /// Calls per callgrind count (0: no counts).
    callgrind: usize,
    /// Where callgrind's output files are kept.
    callgrind_dir: PathBuf,
}

const USAGE: &str = "usage: load [--requests N] [--flaky-requests N] [--outage-calls N] \
[--rounds R] [--warmup N] [--concurrency 1,32] [--modes egress-tokio,hyper-util,...] \
[--workloads entity,flaky,slow] [--schemes http,https] [--callgrind N] [--callgrind-dir DIR]";

fn list<T>(value: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    value
        .split(',')
        .map(|v| parse(v.trim()).ok_or_else(|| format!("unknown value {v:?}")))
        .collect()
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        requests: 20_000,
        flaky_requests: None,
        outage_calls: 1_000,
        rounds: 3,
        warmup: 1_000,
        concurrency: vec![1, 32],
        modes: Mode::ALL.to_vec(),
        workloads: vec![Workload::Entity, Workload::Flaky],
        schemes: vec![Scheme::Http, Scheme::Https],
        callgrind: 0,
        callgrind_dir: std::env::temp_dir().join("egress-bench-callgrind"),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--requests" => o.requests = number()?.max(1),
            "--flaky-requests" => o.flaky_requests = Some(number()?.max(1)),
            "--outage-calls" => o.outage_calls = number()?,
            // 0 rounds: no load runs (for callgrind counts alone).
            "--rounds" => o.rounds = number()?,
            "--warmup" => o.warmup = number()?,
            "--concurrency" => o.concurrency = list(value, |v| v.parse().ok().filter(|&c| c > 0))?,
            "--modes" => o.modes = list(value, Mode::parse)?,
            "--workloads" => o.workloads = list(value, Workload::parse)?,
            "--schemes" => o.schemes = list(value, Scheme::parse)?,
            "--callgrind" => o.callgrind = number()?,
            "--callgrind-dir" => o.callgrind_dir = PathBuf::from(value),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let options = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    parent(&options);
}

/// One child run: `--child SCHEME MODE WORKLOAD CONCURRENCY WARMUP CALLS PORT CORE|- CERT|-`,
/// where `CERT` is the HTTPS upstream's certificate as hex DER.
fn child(args: &[String]) {
    let [
        scheme,
        mode,
        workload,
        concurrency,
        warmup,
        n,
        port,
        core,
        certificate,
    ] = args
    else {
        panic!("--child takes 9 arguments");
    };
    let scheme = Scheme::parse(scheme).expect("a known scheme");
    let mode = Mode::parse(mode).expect("a known mode");
    let workload = Workload::parse(workload).expect("a known workload");
    let number = |s: &String| s.parse::<usize>().expect("a number");
    let (concurrency, warmup, n) = (number(concurrency), number(warmup), number(n));
    // Pinned before any thread starts: every thread the client starts inherits the core.
    let pinned = core.parse::<usize>().is_ok_and(measure::pin_to);
    let target = Target {
        base: format!("{}://127.0.0.1:{port}", scheme.name()),
        certificate: (certificate != "-").then(|| from_hex(certificate)),
    };
    let measured = match mode {
        Mode::EgressTokio
        | Mode::EgressTokioHedged
        | Mode::HyperUtil
        | Mode::HyperUtilHeaders
        | Mode::ReqwestRetry => tokio_modes::run(mode, workload, concurrency, warmup, n, target),
        Mode::EgressAsyncStd | Mode::Surf => {
            async_std_modes::run(mode, workload, concurrency, warmup, n, target)
        }
    };
    let Measured {
        mut tally,
        elapsed,
        before,
        after,
    } = measured;
    tally.latencies.sort_unstable();
    let (user, sys) = after.since(&before);
    let report = RunReport {
        calls: n,
        ok: tally.ok,
        failed: tally.failed,
        first_error: tally.first_error,
        elapsed_s: elapsed.as_secs_f64(),
        user_us: user.as_secs_f64() * 1e6,
        sys_us: sys.as_secs_f64() * 1e6,
        max_rss_kib: measure::process().max_rss_kib,
        p50_us: measure::percentile(&tally.latencies, 50.0).as_secs_f64() * 1e6,
        p99_us: measure::percentile(&tally.latencies, 99.0).as_secs_f64() * 1e6,
        pinned,
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("a report serializes")
    );
}

/// `bytes` as lowercase hex (the certificate on a child's command line).
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lowercase or uppercase hex.
fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// What one child is asked to do.
#[derive(Clone, Copy, Debug)]
struct Job {
    scheme: Scheme,
    mode: Mode,
    workload: Workload,
    concurrency: usize,
    warmup: usize,
    /// Measured calls.
    n: usize,
}

/// One child run as the parent saw it.
#[derive(Debug)]
struct Sample {
    job: Job,
    report: RunReport,
    /// Calls the child made, warm-up included.
    total_calls: usize,
    connections: u64,
    upstream_requests: u64,
    /// Of those, over HTTP/2.
    h2_requests: u64,
    /// Upstream thread CPU / child wall time.
    upstream_busy: f64,
}

/// The child's arguments after `--child`.
fn child_args(upstream: &upstream::Upstream, client_core: Option<usize>, job: Job) -> Vec<String> {
    let (port, certificate) = match job.scheme {
        Scheme::Http => (upstream.port(), "-".to_owned()),
        Scheme::Https => (upstream.tls_port(), to_hex(upstream.certificate())),
    };
    let mut args = vec![
        "--child".to_owned(),
        job.scheme.name().to_owned(),
        job.mode.name().to_owned(),
        job.workload.name().to_owned(),
    ];
    args.extend([job.concurrency, job.warmup, job.n].map(|v| v.to_string()));
    args.push(port.to_string());
    args.push(client_core.map_or("-".to_owned(), |c| c.to_string()));
    args.push(certificate);
    args
}

fn run_child(upstream: &upstream::Upstream, client_core: Option<usize>, job: Job) -> Sample {
    let exe = std::env::current_exe().expect("the benchmark knows its own path");
    let before = upstream.snapshot();
    let start = Instant::now();
    let output = Command::new(exe)
        .args(child_args(upstream, client_core, job))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("the child starts");
    let wall = start.elapsed();
    let after = upstream.snapshot();
    assert!(
        output.status.success(),
        "the {} {} child failed",
        job.scheme.name(),
        job.mode.name()
    );
    let line = String::from_utf8_lossy(&output.stdout);
    let report: RunReport = serde_json::from_str(line.trim().lines().last().unwrap_or_default())
        .expect("the child prints its report");
    Sample {
        job,
        report,
        total_calls: job.warmup + job.n,
        connections: after.connections - before.connections,
        upstream_requests: after.requests - before.requests,
        h2_requests: after.h2_requests - before.h2_requests,
        upstream_busy: (after.cpu.saturating_sub(before.cpu)).as_secs_f64()
            / wall.as_secs_f64().max(1e-9),
    }
}

/// Runs the child of `job` under `valgrind --tool=callgrind`, writing its profile to `out`, and
/// returns the instructions it executed (callgrind's `totals`).
fn callgrind_child(
    upstream: &upstream::Upstream,
    client_core: Option<usize>,
    job: Job,
    out: &Path,
) -> u64 {
    let exe = std::env::current_exe().expect("the benchmark knows its own path");
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args(child_args(upstream, client_core, job))
        .stdin(Stdio::null())
        .output()
        .expect("valgrind starts (is it installed?)");
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!(
            "the {} {} child failed under callgrind",
            job.scheme.name(),
            job.mode.name()
        );
    }
    let profile = std::fs::read_to_string(out).expect("callgrind wrote its profile");
    profile
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("callgrind's profile has a total")
}

/// One callgrind count: a child's instructions with the warm-up and `n` calls, and with the
/// warm-up alone.
#[derive(Debug)]
struct Count {
    job: Job,
    with_calls: u64,
    warmup_only: u64,
}

impl Count {
    /// Instructions per measured call.
    fn per_call(&self) -> f64 {
        self.with_calls.saturating_sub(self.warmup_only) as f64 / self.job.n.max(1) as f64
    }
}

fn parent(o: &Options) {
    let cores = measure::cores();
    let (server_core, client_core) = if cores >= 2 {
        (Some(1), Some(0))
    } else {
        (None, None)
    };
    let upstream = upstream::Upstream::start(server_core);
    let started = Instant::now();
    eprintln!(
        "load: upstream on 127.0.0.1:{} (http) and :{} (https, h2 and http/1.1) ({}), {} cores, {} round(s)",
        upstream.port(),
        upstream.tls_port(),
        match upstream.pinned {
            Some(c) => format!("pinned to core {c}; clients pinned to core 0"),
            None => "not pinned".to_owned(),
        },
        cores,
        o.rounds
    );
    let mut samples = Vec::new();
    for round in 1..=o.rounds {
        for &workload in &o.workloads {
            let n = match workload {
                Workload::Flaky => o.flaky_requests.unwrap_or((o.requests / 10).max(1)),
                _ => o.requests,
            };
            let warmup = o.warmup.min(n / 5);
            for &concurrency in &o.concurrency {
                for &scheme in &o.schemes {
                    // Counterbalanced (A B C, C B A, ...): every mode holds every place in a
                    // round equally often, so that neither a drift of the machine over a round
                    // nor an effect of the place itself favours one mode.
                    let order: Vec<Mode> = if round % 2 == 1 {
                        o.modes.clone()
                    } else {
                        o.modes.iter().rev().copied().collect()
                    };
                    for mode in order {
                        let job = Job {
                            scheme,
                            mode,
                            workload,
                            concurrency,
                            warmup,
                            n,
                        };
                        let s = run_child(&upstream, client_core, job);
                        eprintln!(
                            "round {round} {:<5} {:>6} c={concurrency:<3} {:<16} {:>8.0} req/s {:>7.1} µs CPU/call ({:.1} user + {:.1} sys)  {} conns {}  ok {} failed {}",
                            scheme.name(),
                            workload.name(),
                            mode.name(),
                            s.report.calls as f64 / s.report.elapsed_s,
                            (s.report.user_us + s.report.sys_us) / s.report.calls as f64,
                            s.report.user_us / s.report.calls as f64,
                            s.report.sys_us / s.report.calls as f64,
                            s.connections,
                            protocol(s.h2_requests, s.upstream_requests),
                            s.report.ok,
                            s.report.failed
                        );
                        if !s.report.pinned && client_core.is_some() {
                            eprintln!("  (the child could not pin itself)");
                        }
                        samples.push(s);
                    }
                }
            }
        }
    }
    let mut outage = Vec::new();
    if o.outage_calls > 0 {
        for &scheme in &o.schemes {
            for &mode in o.modes.iter().filter(|m| m.retries()) {
                let job = Job {
                    scheme,
                    mode,
                    workload: Workload::Outage,
                    concurrency: 32,
                    warmup: 0,
                    n: o.outage_calls,
                };
                let s = run_child(&upstream, client_core, job);
                eprintln!(
                    "outage {:<5} c=32 {:<16} {:.2} upstream requests per call",
                    scheme.name(),
                    mode.name(),
                    s.upstream_requests as f64 / s.total_calls as f64
                );
                outage.push(s);
            }
        }
    }
    let mut counts = Vec::new();
    if o.callgrind > 0 {
        std::fs::create_dir_all(&o.callgrind_dir).expect("the callgrind directory can be made");
        let warmup = o.warmup.min(o.callgrind / 5);
        for &concurrency in &o.concurrency {
            for &scheme in &o.schemes {
                for &mode in &o.modes {
                    let job = Job {
                        scheme,
                        mode,
                        workload: Workload::Entity,
                        concurrency,
                        warmup,
                        n: o.callgrind,
                    };
                    let file = |n: usize| {
                        o.callgrind_dir.join(format!(
                            "{}-{}-c{concurrency}-{n}.out",
                            scheme.name(),
                            mode.name()
                        ))
                    };
                    let with_calls = callgrind_child(&upstream, client_core, job, &file(job.n));
                    let warmup_only =
                        callgrind_child(&upstream, client_core, Job { n: 0, ..job }, &file(0));
                    let count = Count {
                        job,
                        with_calls,
                        warmup_only,
                    };
                    eprintln!(
                        "callgrind {:<5} c={concurrency:<3} {:<16} {:.1}k instructions per call",
                        scheme.name(),
                        mode.name(),
                        count.per_call() / 1e3
                    );
                    counts.push(count);
                }
            }
        }
    }
    drop(upstream);
    print_report(o, &samples, &outage, &counts, started.elapsed());
}

/// The protocol a share of HTTP/2 requests names: `h1`, `h2`, or `h2 N %` when mixed.
fn protocol(h2: u64, requests: u64) -> String {
    if h2 == 0 {
        "h1".to_owned()
    } else if h2 >= requests {
        "h2".to_owned()
    } else {
        format!("h2 {:.0} %", h2 as f64 * 100.0 / requests as f64)
    }
}

/// The figures of one (scheme, workload, concurrency, mode) over every round.
#[derive(Debug, Default)]
struct Row {
    rps: f64,
    rps_min: f64,
    rps_max: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
    rss_mib: f64,
    connections: f64,
    per_call: f64,
    /// `h1`, `h2` or the share of HTTP/2 (all rounds).
    protocol: String,
    ok: usize,
    failed: usize,
    upstream_busy: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn row(samples: &[&Sample]) -> Row {
    let rps: Vec<f64> = samples
        .iter()
        .map(|s| s.report.calls as f64 / s.report.elapsed_s)
        .collect();
    let of = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(|s| f(s)).collect());
    let requests: u64 = samples.iter().map(|s| s.upstream_requests).sum();
    let calls: usize = samples.iter().map(|s| s.total_calls).sum();
    Row {
        rps_min: rps.iter().copied().fold(f64::INFINITY, f64::min),
        rps_max: rps.iter().copied().fold(0.0, f64::max),
        rps: median(rps),
        p50_us: of(&|s| s.report.p50_us),
        p99_us: of(&|s| s.report.p99_us),
        cpu_us: of(&|s| (s.report.user_us + s.report.sys_us) / s.report.calls as f64),
        rss_mib: samples
            .iter()
            .map(|s| s.report.max_rss_kib as f64 / 1024.0)
            .fold(0.0, f64::max),
        connections: of(&|s| s.connections as f64),
        per_call: requests as f64 / calls.max(1) as f64,
        protocol: protocol(samples.iter().map(|s| s.h2_requests).sum(), requests),
        ok: samples.iter().map(|s| s.report.ok).sum(),
        failed: samples.iter().map(|s| s.report.failed).sum(),
        upstream_busy: of(&|s| s.upstream_busy),
    }
}

/// The mode the table compares a mode with: raw hyper-util (the floor) for the tokio modes and
/// surf, egress-tokio for egress-async-std (its target: the two share the transport).
fn reference_of(mode: Mode) -> Mode {
    match mode {
        Mode::EgressTokio
        | Mode::HyperUtil
        | Mode::HyperUtilHeaders
        | Mode::ReqwestRetry
        | Mode::Surf => Mode::HyperUtil,
        Mode::EgressAsyncStd | Mode::EgressTokioHedged => Mode::EgressTokio,
    }
}

fn print_report(
    o: &Options,
    samples: &[Sample],
    outage: &[Sample],
    counts: &[Count],
    took: Duration,
) {
    type Key = (usize, usize, usize, usize); // scheme, workload, concurrency, mode (by position)
    let position = |job: &Job| -> Key {
        (
            o.schemes.iter().position(|&x| x == job.scheme).unwrap_or(0),
            o.workloads
                .iter()
                .position(|&x| x == job.workload)
                .unwrap_or(0),
            o.concurrency
                .iter()
                .position(|&x| x == job.concurrency)
                .unwrap_or(0),
            o.modes.iter().position(|&x| x == job.mode).unwrap_or(0),
        )
    };
    let key = |scheme: Scheme, workload: Workload, concurrency: usize, mode: Mode| -> Key {
        position(&Job {
            scheme,
            mode,
            workload,
            concurrency,
            warmup: 0,
            n: 0,
        })
    };
    let mut groups: BTreeMap<Key, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        groups.entry(position(&s.job)).or_default().push(s);
    }
    let rows: BTreeMap<Key, Row> = groups.iter().map(|(k, v)| (*k, row(v))).collect();
    let find = |s: Scheme, w: Workload, c: usize, m: Mode| -> Option<&Row> {
        (o.modes.contains(&m) && o.workloads.contains(&w)).then(|| rows.get(&key(s, w, c, m)))?
    };
    let instructions = |s: Scheme, w: Workload, c: usize, m: Mode| -> Option<f64> {
        counts
            .iter()
            .find(|n| (n.job.scheme, n.job.workload, n.job.concurrency, n.job.mode) == (s, w, c, m))
            .map(Count::per_call)
    };
    let kilo = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{:.1}k", v / 1e3));

    println!();
    println!(
        "{} calls per run ({} for flaky), {} round(s), modes interleaved; took {:.0} s",
        o.requests,
        o.flaky_requests.unwrap_or((o.requests / 10).max(1)),
        o.rounds,
        took.as_secs_f64()
    );
    if !rows.is_empty() {
        println!();
        println!(
            "| scheme | workload | conc | mode | req/s (min–max) | instr/call | p50 µs | p99 µs | CPU µs/call | peak RSS MiB | conns | proto | upstream req/call | failed calls | upstream busy | req/s vs | CPU vs |"
        );
        println!(
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
        );
    }
    for ((sc, w, c, m), r) in &rows {
        let (scheme, workload, concurrency, mode) = (
            o.schemes[*sc],
            o.workloads[*w],
            o.concurrency[*c],
            o.modes[*m],
        );
        let reference = reference_of(mode);
        let (vs_rps, vs_cpu) = match find(scheme, workload, concurrency, reference) {
            Some(f) if reference != mode => (
                format!("{:.2}x {}", r.rps / f.rps, reference.name()),
                format!("{:.2}x", r.cpu_us / f.cpu_us),
            ),
            _ => ("—".to_owned(), "—".to_owned()),
        };
        println!(
            "| {} | {} | {} | {} | {:.0} ({:.0}–{:.0}) | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {} | {:.3} | {} / {} | {:.0} % | {} | {} |",
            scheme.name(),
            workload.name(),
            concurrency,
            mode.name(),
            r.rps,
            r.rps_min,
            r.rps_max,
            kilo(instructions(scheme, workload, concurrency, mode)),
            r.p50_us,
            r.p99_us,
            r.cpu_us,
            r.rss_mib,
            r.connections,
            r.protocol,
            r.per_call,
            r.failed,
            r.ok + r.failed,
            r.upstream_busy * 100.0,
            vs_rps,
            vs_cpu,
        );
    }

    if !counts.is_empty() {
        println!();
        println!(
            "Instructions (callgrind), workload `entity`: the child with {} warm-up calls and {} measured calls, the same child with the warm-up alone, and their difference per measured call:",
            counts[0].job.warmup, counts[0].job.n
        );
        println!();
        println!(
            "| scheme | conc | mode | warm-up + calls | warm-up alone | per call | vs hyper-util |"
        );
        println!("|---|---:|---|---:|---:|---:|---:|");
        for n in counts {
            let floor = instructions(
                n.job.scheme,
                n.job.workload,
                n.job.concurrency,
                Mode::HyperUtil,
            );
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                n.job.scheme.name(),
                n.job.concurrency,
                n.job.mode.name(),
                n.with_calls,
                n.warmup_only,
                kilo(Some(n.per_call())),
                floor
                    .filter(|_| n.job.mode != Mode::HyperUtil)
                    .map_or("—".to_owned(), |f| format!("{:.2}x", n.per_call() / f)),
            );
        }
        println!();
        println!(
            "(profiles in {}; `callgrind_annotate FILE` lists the cost by function)",
            o.callgrind_dir.display()
        );
    }

    if !outage.is_empty() {
        println!();
        println!(
            "Retry amplification during a full outage (`GET /outage` always 503), concurrency 32, default policy (3 attempts, exponential backoff from 100 ms, full jitter; egress's retry budget on):"
        );
        println!();
        println!("| scheme | mode | calls | upstream requests | upstream req/call | took s |");
        println!("|---|---|---:|---:|---:|---:|");
        for s in outage {
            println!(
                "| {} | {} | {} | {} | {:.3} | {:.1} |",
                s.job.scheme.name(),
                s.job.mode.name(),
                s.total_calls,
                s.upstream_requests,
                s.upstream_requests as f64 / s.total_calls as f64,
                s.report.elapsed_s
            );
        }
    }

    /// A figure as the table has it (a median) and as one run measured it.
    type Figure = (fn(&Row) -> f64, fn(&Sample) -> f64);
    let rps: Figure = (|r| r.rps, |s| s.report.calls as f64 / s.report.elapsed_s);
    let cpu: Figure = (
        |r| r.cpu_us,
        |s| (s.report.user_us + s.report.sys_us) / s.report.calls as f64,
    );
    for &scheme in &o.schemes {
        println!();
        println!(
            "Targets, {} (workload `entity`, concurrency 32, verdict on the ratio of the medians over rounds; then each round's own ratio, its runs made moments apart, and the median of those; then the instructions per call, when counted):",
            scheme.name()
        );
        println!();
        let at32 = |m: Mode| find(scheme, Workload::Entity, 32, m);
        let target = |name: &str,
                      (a, b): (Mode, Mode),
                      (of_row, of): Figure,
                      limit: f64,
                      at_least: bool| {
            let (Some(ra), Some(rb)) = (at32(a), at32(b)) else {
                println!("- {name}: not measured in this run");
                return;
            };
            let v = of_row(ra) / of_row(rb);
            let met = if at_least { v >= limit } else { v <= limit };
            let rounds = |m: Mode| groups.get(&key(scheme, Workload::Entity, 32, m));
            let per_round: Vec<f64> = match (rounds(a), rounds(b)) {
                (Some(xs), Some(ys)) => xs.iter().zip(ys).map(|(x, y)| of(x) / of(y)).collect(),
                _ => Vec::new(),
            };
            let shown: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
            // The same comparison paired by round (the median of the rounds' own ratios): a
            // second reading, not a second chance; both are printed whichever way they fall.
            let paired = median(per_round);
            let paired_met = if at_least {
                paired >= limit
            } else {
                paired <= limit
            };
            let instr = match (
                instructions(scheme, Workload::Entity, 32, a),
                instructions(scheme, Workload::Entity, 32, b),
            ) {
                (Some(x), Some(y)) => format!(
                    "; instructions per call {:.1}k vs {:.1}k ({:.2}x)",
                    x / 1e3,
                    y / 1e3,
                    x / y
                ),
                _ => String::new(),
            };
            println!(
                "- {} {name}: {v:.3}x (target {} {limit:.2}x): {}; round by round: {} (their median {paired:.3}x: {}){instr}",
                scheme.name(),
                if at_least { ">=" } else { "<=" },
                if met { "MET" } else { "MISSED" },
                shown.join(" "),
                if paired_met {
                    "would meet"
                } else {
                    "would miss"
                },
            );
        };
        target(
            "egress-tokio req/s vs hyper-util",
            (Mode::EgressTokio, Mode::HyperUtil),
            rps,
            0.95,
            true,
        );
        target(
            "egress-tokio CPU per call vs hyper-util",
            (Mode::EgressTokio, Mode::HyperUtil),
            cpu,
            1.10,
            false,
        );
        target(
            "egress-async-std req/s vs egress-tokio",
            (Mode::EgressAsyncStd, Mode::EgressTokio),
            rps,
            0.90,
            true,
        );
        target(
            "egress-tokio req/s vs reqwest-retry",
            (Mode::EgressTokio, Mode::ReqwestRetry),
            rps,
            1.30,
            true,
        );
        if at32(Mode::HyperUtilHeaders).is_some() {
            // Information, not one of the targets: the same two bars against raw hyper-util
            // sending the same request headers as egress.
            target(
                "egress-tokio req/s vs hyper-util-headers (information: the same request headers)",
                (Mode::EgressTokio, Mode::HyperUtilHeaders),
                rps,
                0.95,
                true,
            );
            target(
                "egress-tokio CPU per call vs hyper-util-headers (information: the same request headers)",
                (Mode::EgressTokio, Mode::HyperUtilHeaders),
                cpu,
                1.10,
                false,
            );
        }
    }
}
