//! The `metrics` feature: attempt and call durations, retries, refusals and guard state reach the
//! `metrics` facade with OpenTelemetry's names, units and labels, and no URL, ID or secret.

use std::time::Duration;

use egress_core::test_util::{ScriptedTransport, block_on, step};
use egress_core::{Backoff, BudgetConfig, JitterMode, RetryPolicy};
use egress_core::{Client, Config};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};

type Row = (
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
);

fn rows(snapshotter: &Snapshotter) -> Vec<Row> {
    snapshotter.snapshot().into_vec()
}

fn label<'a>(key: &'a CompositeKey, name: &str) -> Option<&'a str> {
    key.key()
        .labels()
        .find(|l| l.key() == name)
        .map(|l| l.value())
}

/// The label names of a row, sorted.
fn label_names(key: &CompositeKey) -> Vec<&str> {
    let mut names: Vec<&str> = key.key().labels().map(|l| l.key()).collect();
    names.sort_unstable();
    names
}

#[test]
fn every_attempt_records_its_duration_in_seconds_with_its_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let transport = ScriptedTransport::new();
        transport
            .push(step(503).after(Duration::from_millis(250)))
            .push(step(200).after(Duration::from_millis(50)));
        let no_jitter =
            RetryPolicy::standard().with_backoff(Backoff::default().with_jitter(JitterMode::None));
        let client = transport
            .client(
                Config::default()
                    .with_base_url("https://api.example.com")
                    .with_retry(no_jitter),
            )
            .unwrap();
        block_on(client.get("/x").send()).unwrap();
    });
    let rows = rows(&snapshotter);
    let mut durations: Vec<(Option<String>, Option<String>, Vec<f64>)> = rows
        .iter()
        .filter(|(k, ..)| {
            k.kind() == MetricKind::Histogram && k.key().name() == "http.client.request.duration"
        })
        .map(|(k, unit, description, v)| {
            let DebugValue::Histogram(values) = v else {
                unreachable!("a histogram key holds histogram values")
            };
            // Registered with its unit, so that an exporter names it `..._seconds`.
            assert_eq!(*unit, Some(metrics::Unit::Seconds));
            assert!(description.is_some());
            assert_eq!(label(k, "http.request.method"), Some("GET"));
            assert_eq!(label(k, "server.address"), Some("api.example.com"));
            assert_eq!(label(k, "server.port"), Some("443"), "the scheme's default");
            assert_eq!(
                label(k, "egress.service"),
                Some("egress"),
                "an unnamed client"
            );
            (
                label(k, "http.response.status_code").map(str::to_owned),
                label(k, "error.type").map(str::to_owned),
                values.iter().map(|f| f.into_inner()).collect(),
            )
        })
        .collect();
    durations.sort_by(|a, b| a.0.cmp(&b.0));
    // Virtual time: the 503 took 250 ms and the 200 took 50 ms. The success has no
    // `error.type` at all (an attribute that does not apply is left out, not sent empty).
    assert_eq!(
        durations,
        vec![
            (Some("200".into()), None, vec![0.05]),
            (Some("503".into()), Some("503".into()), vec![0.25]),
        ]
    );
    let retries: Vec<_> = rows
        .iter()
        .filter(|(k, ..)| k.key().name() == "egress.retries")
        .map(|(k, _, _, v)| {
            (
                label(k, "reason").map(str::to_owned),
                label(k, "server.address").map(str::to_owned),
                format!("{v:?}"),
            )
        })
        .collect();
    assert_eq!(
        retries,
        vec![(
            Some("server_error".into()),
            Some("api.example.com".into()),
            format!("{:?}", DebugValue::Counter(1))
        )]
    );
    // The whole call: 250 ms, the backoff (100 ms, no jitter), 50 ms; one success.
    let calls: Vec<_> = rows
        .iter()
        .filter(|(k, ..)| k.key().name() == "egress.call.duration")
        .map(|(k, unit, _, v)| {
            assert_eq!(*unit, Some(metrics::Unit::Seconds));
            assert_eq!(label(k, "egress.outcome"), Some("success"));
            assert_eq!(label(k, "http.response.status_code"), Some("200"));
            assert_eq!(label(k, "error.type"), None);
            let DebugValue::Histogram(values) = v else {
                unreachable!("a histogram key holds histogram values")
            };
            values.iter().map(|f| f.into_inner()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(calls.len(), 1, "{rows:?}");
    assert_eq!(calls[0].len(), 1);
    assert!(
        (calls[0][0] - 0.4).abs() < 1e-9,
        "250 ms + 100 ms backoff + 50 ms: {calls:?}"
    );
}

/// Two upstreams on one host (different ports) and two vendor clients in one service are
/// separate series; a failed call's duration says how it ended.
#[test]
fn port_and_service_labels_keep_upstreams_and_clients_apart() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let transport = ScriptedTransport::new();
        transport.push(step(200)).push(step(200)).push(step(400));
        let one = Client::builder(
            Config::default().with_base_url("http://10.0.0.7:8081"),
            transport.runtime(),
        )
        .with_service("billing")
        .build()
        .unwrap();
        let two = Client::builder(
            Config::default().with_base_url("http://10.0.0.7:8082"),
            transport.runtime(),
        )
        .with_service("search")
        .build()
        .unwrap();
        block_on(one.get("/a").send()).unwrap();
        block_on(two.get("/b").send()).unwrap();
        let _ = block_on(two.get("/c").send());
    });
    let rows = rows(&snapshotter);
    let mut series: Vec<(String, String, String)> = rows
        .iter()
        .filter(|(k, ..)| k.key().name() == "egress.call.duration")
        .map(|(k, ..)| {
            (
                label(k, "server.port").unwrap_or_default().to_owned(),
                label(k, "egress.service").unwrap_or_default().to_owned(),
                label(k, "egress.outcome").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    series.sort();
    assert_eq!(
        series,
        [
            ("8081".into(), "billing".into(), "success".into()),
            ("8082".into(), "search".into(), "failure".into()),
            ("8082".into(), "search".into(), "success".into()),
        ]
    );
    let failure = rows
        .iter()
        .find(|(k, ..)| label(k, "egress.outcome") == Some("failure"))
        .unwrap();
    assert_eq!(label(&failure.0, "error.type"), Some("status"));
    assert_eq!(label(&failure.0, "http.response.status_code"), Some("400"));
}

/// No label carries a URL, a path, a query, a correlation ID, an idempotency key or a secret:
/// label values have bounded cardinality and are safe to export.
#[test]
fn no_metric_label_carries_a_url_an_id_or_a_secret() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let transport = ScriptedTransport::new();
        transport.push(step(503)).push(step(201));
        let client = Client::builder(
            Config::default().with_base_url("https://user:hunter2@api.example.com/v1"),
            transport.runtime(),
        )
        .with_bearer_token(egress_core::SecretString::from("tok-very-secret"))
        .build()
        .unwrap();
        block_on(
            client
                .post("/orders/4711?api_key=s3cr3t&token=qqq")
                .correlation_id(egress_core::CorrelationId::new("corr-xyz-1").unwrap())
                .idempotency_key(egress_core::IdempotencyKey::new("idem-abc-2").unwrap())
                .send(),
        )
        .unwrap();
    });
    let rows = rows(&snapshotter);
    assert!(!rows.is_empty());
    let allowed = [
        "egress.outcome",
        "egress.service",
        "error.type",
        "http.request.method",
        "http.response.status_code",
        "kind",
        "network.protocol.version",
        "reason",
        "server.address",
        "server.port",
        "state",
    ];
    for (key, ..) in &rows {
        for name in label_names(key) {
            assert!(
                allowed.contains(&name),
                "unexpected label {name} on {key:?}"
            );
        }
        for l in key.key().labels() {
            for forbidden in [
                "hunter2", "s3cr3t", "tok-very", "qqq", "4711", "corr-xyz", "idem-abc", "/", "?",
            ] {
                assert!(
                    !l.value().contains(forbidden),
                    "label {}={} carries {forbidden}",
                    l.key(),
                    l.value()
                );
            }
        }
    }
}

#[test]
fn budget_refusals_are_counted_per_host() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let transport = ScriptedTransport::new();
        for _ in 0..10 {
            transport.push(step(503));
        }
        // No reserve, and retries earn on successes only: none of the 5 failing calls earns
        // one, so all 5 are refused.
        let budget = BudgetConfig::default().with_min_retries_per_sec(0);
        let config = Config::default()
            .with_base_url("https://api.example.com")
            .with_budget(budget);
        let client = transport.client(config).unwrap();
        for _ in 0..5 {
            let _ = block_on(client.get("/x").max_attempts(2).send());
        }
    });
    let refusals: Vec<_> = rows(&snapshotter)
        .into_iter()
        .filter(|(k, ..)| k.key().name() == "egress.retry_budget.refusals")
        .map(|(k, _, _, v)| (label(&k, "server.address").map(str::to_owned), v))
        .collect();
    assert_eq!(
        refusals,
        vec![(Some("api.example.com".into()), DebugValue::Counter(5))]
    );
}

#[test]
fn validation_failures_are_counted_by_kind() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // decoded to validate
    struct Entity {
        id: String,
    }
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let transport = ScriptedTransport::new();
        transport.push(step(200).json(r#"{"id":7}"#));
        transport.push(step(200).json(r#"{"id":"7","id":"8"}"#));
        let client = transport
            .client(Config::default().with_base_url("https://api.example.com"))
            .unwrap();
        for _ in 0..2 {
            let response = block_on(client.get("/x").send()).unwrap();
            assert!(response.json::<Entity>().is_err());
        }
    });
    let mut failures: Vec<_> = rows(&snapshotter)
        .into_iter()
        .filter(|(k, ..)| k.key().name() == "egress.validation.failures")
        .map(|(k, _, _, v)| (label(&k, "kind").map(str::to_owned), v))
        .collect();
    failures.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        failures,
        vec![
            (Some("duplicate_key".into()), DebugValue::Counter(1)),
            (Some("schema".into()), DebugValue::Counter(1)),
        ]
    );
}

#[test]
fn circuit_state_holds_and_refusals_across_calls_are_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let transport = ScriptedTransport::new();
        transport
            .push(step(503))
            .push(step(503))
            .push(step(429).header("retry-after", "5"));
        // Opens after 2 failed attempts, for 1 s.
        let breaker = egress_core::CircuitBreakerConfig::default()
            .with_min_throughput(2)
            .with_break_duration(Duration::from_secs(1));
        let config = Config::default()
            .with_base_url("https://api.example.com")
            .with_retry(RetryPolicy::disabled())
            .with_circuit_breaker(breaker);
        let client = transport.client(config).unwrap();
        for _ in 0..3 {
            let _ = block_on(client.get("/x").send());
        }
        // After the break: the probe meets a 429 with Retry-After (a hold), and the next call,
        // whose deadline (1 s) ends before the hold, is refused.
        transport.clock().advance(Duration::from_secs(1));
        let _ = block_on(client.get("/x").send());
        let _ = block_on(
            client
                .get("/x")
                .deadline(Duration::from_secs(1))
                .attempt_timeout(Duration::from_secs(1))
                .send(),
        );
    });
    let rows = rows(&snapshotter);
    // (label, value) of every row of metric `name`; values rendered, since `DebugValue` is
    // not `Clone`.
    let find = |name: &str, label_name: &str| -> Vec<(Option<String>, String)> {
        rows.iter()
            .filter(|(k, ..)| k.key().name() == name)
            .map(|(k, _, _, v)| (label(k, label_name).map(str::to_owned), format!("{v:?}")))
            .collect()
    };
    let counter = |n: u64| format!("{:?}", DebugValue::Counter(n));
    assert!(
        find("egress.circuit.transitions", "state").contains(&(Some("open".into()), counter(1))),
        "{rows:?}"
    );
    let refusals = find("egress.guard.refusals", "reason");
    assert!(
        refusals.contains(&(Some("circuit_open".into()), counter(1))),
        "{refusals:?}"
    );
    assert!(
        refusals.contains(&(Some("host_hold".into()), counter(1))),
        "{refusals:?}"
    );
    assert_eq!(
        find("egress.holds", "reason"),
        vec![(Some("retry_after".into()), counter(1))]
    );
    assert_eq!(find("egress.circuit.state", "server.address").len(), 1);
}

#[test]
fn token_refreshes_and_failures_are_counted_with_their_reason_and_error_type() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let transport = ScriptedTransport::new();
        transport
            .push(step(200).json(r#"{"access_token":"t-1","token_type":"Bearer","expires_in":60}"#))
            .push(step(401).header("www-authenticate", r#"Bearer error="invalid_token""#))
            .push(step(401).json(r#"{"error":"invalid_client"}"#));
        let oauth2 =
            egress_core::OAuth2Config::new("https://login.example.com/token", "id", "s".into());
        let client = egress_core::Client::builder(
            Config::default().with_base_url("https://api.example.com"),
            transport.runtime(),
        )
        .with_oauth2(oauth2)
        .build()
        .unwrap();
        // A first token, rejected by the API; its replacement is refused.
        assert!(block_on(client.get("/x").send()).is_err());
    });
    // Every token row: (name, its labels, value).
    let mut counted: Vec<(String, Vec<String>, String)> = rows(&snapshotter)
        .into_iter()
        .filter(|(k, ..)| k.key().name().starts_with("egress.token."))
        .map(|(k, _, _, v)| {
            let labels = k
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()));
            (
                k.key().name().to_owned(),
                labels.collect(),
                format!("{v:?}"),
            )
        })
        .collect();
    counted.sort();
    let counter = format!("{:?}", DebugValue::Counter(1));
    assert_eq!(
        counted,
        vec![
            (
                "egress.token.failures".to_owned(),
                vec!["error.type=invalid_client".to_owned()],
                counter.clone()
            ),
            (
                "egress.token.refreshes".to_owned(),
                vec!["reason=initial".to_owned()],
                counter
            ),
        ]
    );
}
