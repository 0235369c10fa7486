//! Counts the heap allocations of one exchange, phase by phase, with a counting global
//! allocator. A program that prints figures: `cargo bench -p egress-core --bench allocations`.

use std::time::{Instant, SystemTime};

use bytes::Bytes;
use egress_core::{Config, Exchange, Input, Output, Policy, Request, http};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const URL: &str = "https://api.example.com/v1/entities/7";
const BODY: &[u8] =
    br#"{"id":7,"name":"entity-7","kind":"widget","owner":"team-platform","active":true}"#;

#[derive(serde::Deserialize)]
#[allow(dead_code)] // decoded for the work of it
struct Entity {
    id: u64,
    name: String,
    kind: String,
    owner: String,
    active: bool,
}

fn response(status: u16) -> http::Response<Bytes> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Bytes::from_static(BODY))
        .expect("a valid response")
}

/// One exchange to its end: a 503 first when `retry`, then a 200. Returns each phase's
/// allocation count and bytes.
fn exchange(policy: &Policy, retry: bool) -> Vec<(&'static str, usize, usize)> {
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut phases = Vec::with_capacity(16);
    let mut region = Region::new(GLOBAL);
    let mut phase = |name: &'static str, region: &mut Region<'_, std::alloc::System>| {
        let s = region.change_and_reset();
        phases.push((name, s.allocations + s.reallocations, s.bytes_allocated));
    };

    let request = Request::new(http::Method::GET, URL).expect("a valid url");
    phase("build the request (Request::new)", &mut region);
    let mut exchange = Exchange::new(request, policy, now, 42);
    phase("Exchange::new", &mut region);
    let mut statuses = if retry { vec![503, 200] } else { vec![200] };
    statuses.reverse();
    phase("(the benchmark's own list)", &mut region);
    let result = loop {
        match exchange.poll_output(now) {
            Output::Send(attempt) => {
                phase(
                    "poll_output -> Send (the attempt's http::Request)",
                    &mut region,
                );
                let number = attempt.attempt;
                drop(attempt);
                let Output::Wait { .. } = exchange.poll_output(now) else {
                    unreachable!()
                };
                phase("poll_output -> Wait (attempt deadline)", &mut region);
                let status = statuses.pop().expect("scripted");
                let response = response(status);
                phase("build the response (http::Response)", &mut region);
                exchange.handle_input(Input::Response {
                    attempt: number,
                    at: now,
                    wall,
                    response,
                });
                phase(
                    if status == 200 {
                        "handle_input(200)"
                    } else {
                        "handle_input(503): the retry decision"
                    },
                    &mut region,
                );
            }
            Output::Wait { .. } => {
                phase("poll_output -> Wait (backoff)", &mut region);
                exchange.handle_input(Input::Timer {
                    at: now + std::time::Duration::from_secs(1),
                });
                phase("handle_input(Timer)", &mut region);
            }
            Output::Done(result) => break result,
            _ => unreachable!("Output's variants today"),
        }
    };
    phase(
        "poll_output -> Done (a clone of the result; drive() moves it instead: 0)",
        &mut region,
    );
    let response = result.expect("the call succeeds");
    let entity: Entity = response.json().expect("valid json");
    std::hint::black_box(entity);
    phase("Response::json::<Entity> (not the exchange)", &mut region);
    drop(response);
    drop(exchange);
    phases
}

fn print(title: &str, phases: &[(&str, usize, usize)]) {
    println!("{title}");
    let mut total = (0, 0);
    for (name, count, bytes) in phases {
        println!("  {count:>4} allocations {bytes:>7} bytes  {name}");
        if !name.starts_with('(') {
            total = (total.0 + count, total.1 + bytes);
        }
    }
    println!("  {:>4} allocations {:>7} bytes  in all", total.0, total.1);
}

fn main() {
    // `cargo test --all-targets` and `cargo bench` pass their own flags; this counts either way.
    let policy = Config::default().build().expect("the defaults are valid");
    // Once first, so that one-time initialisation (tracing callsites, the budget's host entry)
    // is not counted.
    let _ = exchange(&policy, true);
    print(
        "one GET, 200 at once (default policy):",
        &exchange(&policy, false),
    );
    println!();
    print(
        "one GET, 503 then 200 (default policy):",
        &exchange(&policy, true),
    );
}
