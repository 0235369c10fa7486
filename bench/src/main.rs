//! `load`: the end-to-end load benchmark of egress (both backends) against raw hyper-util, raw
//! surf and reqwest + reqwest-middleware + reqwest-retry. A program that prints figures, not a
//! test.
//!
//! ```text
//! cargo run --release -p egress-bench --bin load -- [--requests N] [--rounds R]
//! ```
//!
//! The parent process starts the loopback upstream (see [`upstream`]) on its own thread, pinned to
//! core 1 when the machine has two cores, then runs every measurement in a child process (this
//! same binary with `--child`) pinned to core 0: modes run interleaved and counterbalanced
//! (A B C D E, E D C B A, A B C D E, ...) for `--rounds` rounds, for each workload and
//! concurrency. One child is one mode, one workload and
//! one concurrency: it builds one client, warms it up, then makes a fixed number of calls with
//! `concurrency` workers, each reading the whole body and decoding it into a typed struct.
//!
//! What each figure is:
//! - **req/s**: measured calls / wall time of the measured calls (the median over rounds).
//! - **p50, p99**: latency of one call, retries and backoff included (medians over rounds).
//! - **CPU µs/call**: user + system time of the whole child process (`getrusage(RUSAGE_SELF)`)
//!   over the measured calls, divided by the calls. The child holds the client and nothing else
//!   (the upstream lives in the parent), so this is the client's whole cost: its runtime, its
//!   reactor, the kernel's share of its sockets.
//! - **peak RSS**: the child's `ru_maxrss` (the highest over rounds): the client plus the
//!   process's own baseline.
//! - **conns**: connections the upstream accepted during the child's life (warm-up included;
//!   the median over rounds).
//! - **upstream req/call**: requests the upstream answered / calls made, warm-ups included.
//! - **upstream busy**: CPU time of the upstream's thread / wall time of the child's life; near
//!   100 % means the upstream, not the client, sets the pace.

mod async_std_modes;
mod measure;
mod tokio_modes;
mod upstream;
mod workload;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use workload::{Measured, Mode, RunReport, Workload};

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
}

const USAGE: &str = "usage: load [--requests N] [--flaky-requests N] [--outage-calls N] \
[--rounds R] [--warmup N] [--concurrency 1,32] [--modes egress-tokio,hyper-util,...] \
[--workloads entity,flaky]";

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
            "--rounds" => o.rounds = number()?.max(1),
            "--warmup" => o.warmup = number()?,
            "--concurrency" => o.concurrency = list(value, |v| v.parse().ok().filter(|&c| c > 0))?,
            "--modes" => o.modes = list(value, Mode::parse)?,
            "--workloads" => o.workloads = list(value, Workload::parse)?,
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

/// One child run: `--child MODE WORKLOAD CONCURRENCY WARMUP CALLS PORT CORE|-`.
fn child(args: &[String]) {
    let [mode, workload, concurrency, warmup, n, port, core] = args else {
        panic!("--child takes 7 arguments");
    };
    let mode = Mode::parse(mode).expect("a known mode");
    let workload = Workload::parse(workload).expect("a known workload");
    let number = |s: &String| s.parse::<usize>().expect("a number");
    let (concurrency, warmup, n) = (number(concurrency), number(warmup), number(n));
    // Pinned before any thread starts: every thread the client starts inherits the core.
    let pinned = core.parse::<usize>().is_ok_and(measure::pin_to);
    let base = format!("http://127.0.0.1:{port}");
    let measured = match mode {
        Mode::EgressTokio | Mode::HyperUtil | Mode::ReqwestRetry => {
            tokio_modes::run(mode, workload, concurrency, warmup, n, base)
        }
        Mode::EgressAsyncStd | Mode::Surf => {
            async_std_modes::run(mode, workload, concurrency, warmup, n, base)
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

/// One child run as the parent saw it.
#[derive(Debug)]
struct Sample {
    mode: Mode,
    workload: Workload,
    concurrency: usize,
    report: RunReport,
    /// Calls the child made, warm-up included.
    total_calls: usize,
    connections: u64,
    upstream_requests: u64,
    /// Upstream thread CPU / child wall time.
    upstream_busy: f64,
}

fn run_child(
    upstream: &upstream::Upstream,
    client_core: Option<usize>,
    mode: Mode,
    workload: Workload,
    concurrency: usize,
    warmup: usize,
    n: usize,
) -> Sample {
    let exe = std::env::current_exe().expect("the benchmark knows its own path");
    let before = upstream.snapshot();
    let start = Instant::now();
    let output = Command::new(exe)
        .arg("--child")
        .args([mode.name(), workload.name()])
        .args([concurrency, warmup, n].map(|v| v.to_string()))
        .arg(upstream.port().to_string())
        .arg(client_core.map_or("-".to_owned(), |c| c.to_string()))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("the child starts");
    let wall = start.elapsed();
    let after = upstream.snapshot();
    assert!(output.status.success(), "the {} child failed", mode.name());
    let line = String::from_utf8_lossy(&output.stdout);
    let report: RunReport = serde_json::from_str(line.trim().lines().last().unwrap_or_default())
        .expect("the child prints its report");
    Sample {
        mode,
        workload,
        concurrency,
        report,
        total_calls: warmup + n,
        connections: after.connections - before.connections,
        upstream_requests: after.requests - before.requests,
        upstream_busy: (after.cpu.saturating_sub(before.cpu)).as_secs_f64()
            / wall.as_secs_f64().max(1e-9),
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
        "load: upstream on 127.0.0.1:{} ({}), {} cores, {} round(s)",
        upstream.port(),
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
                // Counterbalanced (A B C, C B A, ...): every mode holds every place in a round
                // equally often, so that neither a drift of the machine over a round nor an
                // effect of the place itself favours one mode (on the reference VM a few runs
                // suggested a place effect of 0.1x, which more runs did not confirm).
                let order: Vec<Mode> = if round % 2 == 1 {
                    o.modes.clone()
                } else {
                    o.modes.iter().rev().copied().collect()
                };
                for mode in order {
                    let s = run_child(
                        &upstream,
                        client_core,
                        mode,
                        workload,
                        concurrency,
                        warmup,
                        n,
                    );
                    eprintln!(
                        "round {round} {:>6} c={concurrency:<3} {:<16} {:>8.0} req/s {:>7.1} µs CPU/call ({:.1} user + {:.1} sys)  ok {} failed {}",
                        workload.name(),
                        mode.name(),
                        s.report.calls as f64 / s.report.elapsed_s,
                        (s.report.user_us + s.report.sys_us) / s.report.calls as f64,
                        s.report.user_us / s.report.calls as f64,
                        s.report.sys_us / s.report.calls as f64,
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
    let mut outage = Vec::new();
    if o.outage_calls > 0 {
        for &mode in o.modes.iter().filter(|m| m.retries()) {
            let s = run_child(
                &upstream,
                client_core,
                mode,
                Workload::Outage,
                32,
                0,
                o.outage_calls,
            );
            eprintln!(
                "outage c=32 {:<16} {:.2} upstream requests per call",
                mode.name(),
                s.upstream_requests as f64 / s.total_calls as f64
            );
            outage.push(s);
        }
    }
    drop(upstream);
    print_report(o, &samples, &outage, started.elapsed());
}

/// The figures of one (workload, concurrency, mode) over every round.
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
        ok: samples.iter().map(|s| s.report.ok).sum(),
        failed: samples.iter().map(|s| s.report.failed).sum(),
        upstream_busy: of(&|s| s.upstream_busy),
    }
}

/// The mode a mode is compared with: the raw client of its runtime.
fn floor_of(mode: Mode) -> Mode {
    match mode {
        Mode::EgressTokio | Mode::HyperUtil | Mode::ReqwestRetry => Mode::HyperUtil,
        Mode::EgressAsyncStd | Mode::Surf => Mode::Surf,
    }
}

fn print_report(o: &Options, samples: &[Sample], outage: &[Sample], took: Duration) {
    type Key = (usize, usize, usize); // workload, concurrency, mode (by position)
    let position = |w: Workload, c: usize, m: Mode| -> Key {
        (
            o.workloads.iter().position(|&x| x == w).unwrap_or(0),
            o.concurrency.iter().position(|&x| x == c).unwrap_or(0),
            o.modes.iter().position(|&x| x == m).unwrap_or(0),
        )
    };
    let mut groups: BTreeMap<Key, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        groups
            .entry(position(s.workload, s.concurrency, s.mode))
            .or_default()
            .push(s);
    }
    let rows: BTreeMap<Key, Row> = groups.iter().map(|(k, v)| (*k, row(v))).collect();
    let find = |w: Workload, c: usize, m: Mode| -> Option<&Row> {
        o.modes.contains(&m).then(|| rows.get(&position(w, c, m)))?
    };

    println!();
    println!(
        "{} calls per run ({} for flaky), {} round(s), modes interleaved; took {:.0} s",
        o.requests,
        o.flaky_requests.unwrap_or((o.requests / 10).max(1)),
        o.rounds,
        took.as_secs_f64()
    );
    println!();
    println!(
        "| workload | conc | mode | req/s (min–max) | p50 µs | p99 µs | CPU µs/call | peak RSS MiB | conns | upstream req/call | failed calls | upstream busy | req/s vs floor | CPU vs floor |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for ((w, c, m), r) in &rows {
        let (workload, concurrency, mode) = (o.workloads[*w], o.concurrency[*c], o.modes[*m]);
        let floor = floor_of(mode);
        let (vs_rps, vs_cpu) = match find(workload, concurrency, floor) {
            Some(f) if floor != mode => (
                format!("{:.2}x {}", r.rps / f.rps, floor.name()),
                format!("{:.2}x", r.cpu_us / f.cpu_us),
            ),
            _ => ("—".to_owned(), "—".to_owned()),
        };
        println!(
            "| {} | {} | {} | {:.0} ({:.0}–{:.0}) | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.3} | {} / {} | {:.0} % | {} | {} |",
            workload.name(),
            concurrency,
            mode.name(),
            r.rps,
            r.rps_min,
            r.rps_max,
            r.p50_us,
            r.p99_us,
            r.cpu_us,
            r.rss_mib,
            r.connections,
            r.per_call,
            r.failed,
            r.ok + r.failed,
            r.upstream_busy * 100.0,
            vs_rps,
            vs_cpu,
        );
    }

    if !outage.is_empty() {
        println!();
        println!(
            "Retry amplification during a full outage (`GET /outage` always 503), concurrency 32, default policy (3 attempts, exponential backoff from 100 ms, full jitter; egress's retry budget on):"
        );
        println!();
        println!("| mode | calls | upstream requests | upstream req/call | took s |");
        println!("|---|---:|---:|---:|---:|");
        for s in outage {
            println!(
                "| {} | {} | {} | {:.3} | {:.1} |",
                s.mode.name(),
                s.total_calls,
                s.upstream_requests,
                s.upstream_requests as f64 / s.total_calls as f64,
                s.report.elapsed_s
            );
        }
    }

    println!();
    println!(
        "Targets (workload `entity`, concurrency 32, verdict on the ratio of the medians over rounds; then each round's own ratio, its runs made moments apart, and the median of those):"
    );
    println!();
    /// A figure as the table has it (a median) and as one run measured it.
    type Figure = (fn(&Row) -> f64, fn(&Sample) -> f64);
    let rps: Figure = (|r| r.rps, |s| s.report.calls as f64 / s.report.elapsed_s);
    let cpu: Figure = (
        |r| r.cpu_us,
        |s| (s.report.user_us + s.report.sys_us) / s.report.calls as f64,
    );
    let at32 = |m: Mode| find(Workload::Entity, 32, m);
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
        let rounds = |m: Mode| groups.get(&position(Workload::Entity, 32, m));
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
        println!(
            "- {name}: {v:.3}x (target {} {limit:.2}x): {}; round by round: {} (their median {paired:.3}x: {})",
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
        "egress-async-std req/s vs surf",
        (Mode::EgressAsyncStd, Mode::Surf),
        rps,
        0.95,
        true,
    );
    target(
        "egress-tokio req/s vs reqwest-retry",
        (Mode::EgressTokio, Mode::ReqwestRetry),
        rps,
        1.30,
        true,
    );
}
