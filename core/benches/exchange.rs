//! Micro-benchmarks of the core alone (no IO): a whole happy-path `Exchange`, and the decision
//! after a retryable 503. `cargo bench -p egress-core --bench exchange`.

// `criterion_group!` generates a public function without docs.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use egress_core::{Config, Exchange, Input, Output, Policy, Request, http};

const URL: &str = "https://api.example.com/v1/entities/7";
const BODY: &[u8] =
    br#"{"id":7,"name":"entity-7","kind":"widget","owner":"team-platform","active":true}"#;

fn request() -> Request {
    Request::new(http::Method::GET, URL).expect("a valid url")
}

fn response(status: u16) -> http::Response<Bytes> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Bytes::from_static(BODY))
        .expect("a valid response")
}

/// Starts an exchange and takes it to its first attempt in flight.
fn in_flight(policy: &Policy, now: Instant) -> (Exchange, u32) {
    let mut exchange = Exchange::new(request(), policy, now, 42);
    let Output::Send(attempt) = exchange.poll_output(now) else {
        unreachable!("a new exchange sends first")
    };
    let number = attempt.attempt;
    black_box(attempt);
    let Output::Wait { .. } = exchange.poll_output(now) else {
        unreachable!("then it waits for the attempt")
    };
    (exchange, number)
}

fn benches(c: &mut Criterion) {
    let policy = Config::default().build().expect("the defaults are valid");
    // Retries are decided under the budget; keep it from filling over millions of iterations.
    let no_budget = Config::default()
        .with_budget(egress_core::BudgetConfig::default().with_enabled(false))
        .build()
        .expect("valid");
    let now = Instant::now();
    let wall = SystemTime::now();

    c.bench_function("exchange: happy path, new to Done", |b| {
        b.iter_batched(
            || (request(), response(200)),
            |(request, response)| {
                let mut exchange = Exchange::new(request, &policy, now, 42);
                let Output::Send(attempt) = exchange.poll_output(now) else {
                    unreachable!()
                };
                let number = attempt.attempt;
                black_box(attempt);
                black_box(exchange.poll_output(now));
                exchange.handle_input(Input::Response {
                    attempt: number,
                    at: now,
                    wall,
                    response,
                });
                match exchange.poll_output(now) {
                    Output::Done(result) => black_box(result),
                    _ => unreachable!(),
                }
            },
            BatchSize::SmallInput,
        )
    });

    c.bench_function("exchange: decision after a retryable 503", |b| {
        b.iter_batched(
            || (in_flight(&no_budget, now), response(503)),
            |((mut exchange, number), response)| {
                exchange.handle_input(Input::Response {
                    attempt: number,
                    at: now,
                    wall,
                    response,
                });
                match exchange.poll_output(now) {
                    output @ Output::Wait { .. } => black_box(output),
                    _ => unreachable!("a 503 on a GET backs off"),
                };
                exchange
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(exchange, benches);
criterion_main!(exchange);
