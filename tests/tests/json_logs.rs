//! JSON logs tie every line to its call: two concurrent calls to the same URL, one of them
//! retried, logged by `tracing_subscriber::fmt().json()` as a service would, are told apart by
//! the correlation ID and attempt number on each event. Its own test binary: tracing caches a
//! callsite first met without a subscriber as uninteresting process-wide.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, Buffer, config};
use egress_core::CorrelationId;
use egress_tests::server::{FaultServer, Reply};
use serde_json::Value;

/// Runs two concurrent calls (`call-a`, `call-b`) against an upstream whose first answer is a
/// 503, under a JSON subscriber at `level`; returns the parsed log lines of egress.
fn two_concurrent_calls(b: Backend, level: tracing::Level) -> Vec<Value> {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::{Layer as _, SubscriberExt};

    let server = FaultServer::start(FaultServer::script([
        Reply::status(503),
        Reply::json(200, "{}").delay(Duration::from_millis(100)),
        Reply::json(200, "{}"),
    ]));
    let text = Arc::new(Mutex::new(Vec::new()));
    let writer = text.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(move || Buffer(writer.clone()))
            .with_filter(LevelFilter::from_level(level)),
    );
    tracing::subscriber::with_default(subscriber, || {
        b.run_here(async {
            let client = b.client(config(&server.url("")));
            let call = |id: &'static str| {
                client
                    .get("/same")
                    .correlation_id(CorrelationId::new(id).unwrap())
                    .send()
            };
            let (a, b) = futures_lite::future::zip(call("call-a"), call("call-b")).await;
            assert_eq!(a.unwrap().status(), 200);
            assert_eq!(b.unwrap().status(), 200);
        })
    });
    let text = String::from_utf8(text.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .filter(|line| {
            line["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("egress"))
        })
        .collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

fn field<'a>(line: &'a Value, name: &str) -> &'a Value {
    &line["fields"][name]
}

fn every_event_carries_its_calls_correlation_id_and_attempt(b: Backend) {
    let lines = two_concurrent_calls(b, tracing::Level::DEBUG);
    let mut calls: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for line in &lines {
        let id = field(line, "correlation_id")
            .as_str()
            .unwrap_or_else(|| panic!("{b:?}: an event without a correlation_id: {line}"));
        calls.entry(id.to_owned()).or_default().push(line);
    }
    assert_eq!(
        calls.keys().collect::<Vec<_>>(),
        ["call-a", "call-b"],
        "{b:?}: {lines:#?}"
    );
    let mut attempts_seen = Vec::new();
    for (id, events) in &calls {
        let finished: Vec<u64> = events
            .iter()
            .filter(|e| message(e) == "attempt finished")
            .map(|e| {
                field(e, "egress.attempt")
                    .as_u64()
                    .unwrap_or_else(|| panic!("{b:?}: no attempt number on {e}"))
            })
            .collect();
        let end: Vec<&&Value> = events
            .iter()
            .filter(|e| message(e) == "call succeeded")
            .collect();
        assert_eq!(end.len(), 1, "{b:?} {id}: one outcome line: {events:#?}");
        let attempts = field(end[0], "attempts").as_u64().unwrap();
        assert_eq!(
            finished,
            (1..=attempts).collect::<Vec<_>>(),
            "{b:?} {id}: each attempt's end, numbered, in order"
        );
        let retries = events.iter().filter(|e| message(e) == "retrying").count() as u64;
        assert_eq!(retries, attempts - 1, "{b:?} {id}");
        attempts_seen.push(attempts);
    }
    attempts_seen.sort();
    assert_eq!(attempts_seen, [1, 2], "{b:?}: one call was retried once");
}

/// At INFO a call that needed retries says how it ended; a first-try success stays quiet.
fn a_retried_success_has_an_outcome_line_at_info(b: Backend) {
    let lines = two_concurrent_calls(b, tracing::Level::INFO);
    let outcomes: Vec<&Value> = lines
        .iter()
        .filter(|e| message(e) == "call succeeded")
        .collect();
    assert_eq!(outcomes.len(), 1, "{b:?}: {lines:#?}");
    let outcome = outcomes[0];
    assert_eq!(outcome["level"], "INFO");
    assert_eq!(field(outcome, "attempts"), 2);
    assert!(field(outcome, "elapsed_ms").as_u64().is_some(), "{outcome}");
    let retried = field(outcome, "correlation_id").as_str().unwrap();
    let retry = lines.iter().find(|e| message(e) == "retrying").unwrap();
    assert_eq!(field(retry, "correlation_id"), retried);
}

on_each_backend!(
    every_event_carries_its_calls_correlation_id_and_attempt,
    a_retried_success_has_an_outcome_line_at_info,
);
