//! Telemetry and secrets: a capturing subscriber records every span, field and event of
//! exchanges that succeed, retry, time out, fail validation and fail with a status; no secret
//! may appear there, in any `Debug` of the objects involved, or in any error's `Display`. The
//! attempt spans carry the OpenTelemetry HTTP client fields.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use egress_core::http::Method;
use egress_core::test_util::{ScriptedTransport, block_on, hang, step};
use egress_core::{Config, Credentials, Exchange, Output, Request, RetryPolicy};
use secrecy::SecretString;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};

const BEARER: &str = "bearer-secret-0001";
const API_KEY: &str = "apikey-secret-0002";
const COOKIE: &str = "cookie-secret-0003";
const PASSWORD: &str = "userinfo-secret-0004";
const QUERY_TOKEN: &str = "query-secret-0005";
const SET_COOKIE: &str = "setcookie-secret-0006";
const BODY_TOKEN: &str = "body-secret-0007";

fn secrets() -> Vec<String> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"));
    [
        BEARER,
        API_KEY,
        COOKIE,
        PASSWORD,
        QUERY_TOKEN,
        SET_COOKIE,
        BODY_TOKEN,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([basic])
    .collect()
}

/// A span as the subscriber saw it: name and every field recorded on it.
#[derive(Clone, Debug, Default)]
struct SpanRecord {
    name: String,
    fields: BTreeMap<String, String>,
}

type EventRecord = (tracing::Level, BTreeMap<String, String>);

#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<(Id, SpanRecord)>>>,
    events: Arc<Mutex<Vec<EventRecord>>>,
    text: Arc<Mutex<Vec<u8>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut record = SpanRecord {
            name: attrs.metadata().name().to_owned(),
            ..Default::default()
        };
        attrs.record(&mut Fields(&mut record.fields));
        self.spans.lock().unwrap().push((id.clone(), record));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.spans.lock().unwrap();
        if let Some((_, record)) = spans.iter_mut().rev().find(|(i, _)| i == id) {
            values.record(&mut Fields(&mut record.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.events
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields));
    }
}

struct TextWriter(Arc<Mutex<Vec<u8>>>);

impl Write for TextWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Runs `f` with this capture as the thread's subscriber: structured records plus the full
    /// text a fmt subscriber prints (span opens and closes included, with all their fields).
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let text = self.text.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(move || TextWriter(text.clone()))
            .with_span_events(FmtSpan::FULL);
        let subscriber = Registry::default().with(self.clone()).with(fmt);
        tracing::subscriber::with_default(subscriber, f)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    fn spans(&self, name: &str) -> Vec<SpanRecord> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| r.name == name)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in secrets() {
        assert!(!text.contains(&secret), "{what} leaks {secret:?}:\n{text}");
    }
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)] // decoded only to trigger validation
struct Entity {
    id: String,
}

/// Every kind of call, with every kind of secret in the request and echoed in responses.
#[test]
fn no_secret_reaches_spans_events_debug_or_display() {
    let capture = Capture::default();
    let mut shown = Vec::new();
    capture.run(|| {
        let transport = ScriptedTransport::new();
        let echo_body = format!(
            r#"{{"message":"token {BEARER} rejected","token":"{BODY_TOKEN}","cookie":"{COOKIE}"}}"#
        );
        let set_cookie = format!("sid={SET_COOKIE}; HttpOnly");
        // 1 success, 2 retry then success, 3 timeout, 4 validation failure, 5 status failure.
        transport.push(
            step(200)
                .json(r#"{"id":"1"}"#)
                .header("set-cookie", &set_cookie),
        );
        transport.push(step(503).json(&echo_body).header("set-cookie", &set_cookie));
        transport.push(step(200).json(r#"{"id":"2"}"#));
        transport.push(hang());
        transport.push(step(200).json(&echo_body).header("set-cookie", &set_cookie));
        transport.push(step(401).json(&echo_body).header("set-cookie", &set_cookie));
        let config = Config::default()
            .with_base_url(format!("https://alice:{PASSWORD}@api.example.com/v1"))
            .with_auth(Credentials::Bearer {
                token: SecretString::from(BEARER),
            });
        shown.push(format!("{config:?}"));
        let client = egress_core::Client::builder(config, transport.runtime())
            .with_default_header("x-api-key", API_KEY)
            .with_service("secrets-test")
            .build()
            .unwrap();
        shown.push(format!("{client:?}"));
        let call = |n: u32| {
            let builder = client
                .get(&format!("/entities/{n}?token={QUERY_TOKEN}&page=1"))
                .header("cookie", &format!("sid={COOKIE}"))
                .attempt_timeout(Duration::from_secs(1))
                .operation("get_entity");
            let request = builder.build().unwrap();
            format!("{request:?}")
        };
        for n in 1..=5 {
            shown.push(call(n));
            let result = block_on(
                client
                    .get(&format!("/entities/{n}?token={QUERY_TOKEN}&page=1"))
                    .header("cookie", &format!("sid={COOKIE}"))
                    .max_attempts(if n == 3 { 1 } else { 3 })
                    .attempt_timeout(Duration::from_secs(1))
                    .operation("get_entity")
                    .send(),
            );
            match result {
                Ok(response) => {
                    shown.push(format!("{response:?}"));
                    match response.json::<Entity>() {
                        Ok(entity) => shown.push(format!("{entity:?}")),
                        Err(e) => {
                            assert_eq!(n, 4, "only call 4 fails validation");
                            shown.push(format!("{e:?}"));
                            shown.push(e.to_string());
                        }
                    }
                }
                Err(e) => {
                    assert!(n == 3 || n == 5, "call {n} failed: {e}");
                    shown.push(format!("{e:?}"));
                    shown.push(e.to_string());
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        shown.push(s.to_string());
                        source = s.source();
                    }
                }
            }
        }
        // The sans-IO objects too: an exchange, its attempt request and the input it gets.
        let request = Request::new(
            Method::GET,
            &format!("https://alice:{PASSWORD}@h.example/x?token={QUERY_TOKEN}"),
        )
        .unwrap()
        .with_header("authorization", &format!("Bearer {BEARER}"))
        .unwrap();
        shown.push(format!("{request:?}"));
        let policy = Config::default()
            .with_retry(RetryPolicy::disabled())
            .build()
            .unwrap();
        let mut exchange = Exchange::new(request, &policy, transport.clock().epoch(), 1);
        shown.push(format!("{exchange:?}"));
        if let Output::Send(attempt) = exchange.poll_output(transport.clock().epoch()) {
            shown.push(format!("{attempt:?}"));
        }
        shown.push(format!("{exchange:?}"));
        assert_eq!(transport.requests().len(), 6);
        // The secrets did go out on the wire, where they belong.
        let first = &transport.requests()[0];
        assert_eq!(
            first.header("authorization"),
            Some(format!("Bearer {BEARER}").as_str())
        );
        assert!(first.uri.to_string().contains(QUERY_TOKEN));
    });
    let text = capture.text();
    assert!(
        text.contains("egress.attempt"),
        "the capture saw the attempt spans:\n{text}"
    );
    assert!(
        text.contains("retrying"),
        "the capture saw the retry event:\n{text}"
    );
    assert_no_secret("the captured telemetry", &text);
    for spans in capture.spans.lock().unwrap().iter() {
        assert_no_secret("a span's fields", &format!("{spans:?}"));
    }
    for s in &shown {
        assert_no_secret("a Debug or Display", s);
    }
}

#[test]
fn attempt_spans_carry_the_opentelemetry_http_client_fields() {
    let capture = Capture::default();
    capture.run(|| {
        let transport = ScriptedTransport::new();
        transport.push(step(503)).push(step(502)).push(step(200));
        let client = transport
            .client(Config::default().with_base_url("https://api.example.com:8443/v1"))
            .unwrap();
        let response = block_on(
            client
                .get("/entities/7?token=abc")
                .operation("get_entity")
                .send(),
        )
        .unwrap();
        assert_eq!(response.attempts(), 3);
    });
    let calls = capture.spans("egress.call");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].fields.get("url.full").map(String::as_str),
        Some("https://api.example.com:8443/v1/entities/7?token=REDACTED")
    );
    let attempts = capture.spans("egress.attempt");
    assert_eq!(attempts.len(), 3);
    let field = |i: usize, name: &str| attempts[i].fields.get(name).cloned();
    for (i, status) in ["503", "502", "200"].iter().enumerate() {
        assert_eq!(field(i, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(
            field(i, "server.address").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(field(i, "server.port").as_deref(), Some("8443"));
        assert_eq!(
            field(i, "url.full").as_deref(),
            Some("https://api.example.com:8443/v1/entities/7?token=REDACTED")
        );
        assert_eq!(
            field(i, "http.response.status_code").as_deref(),
            Some(*status)
        );
        assert_eq!(field(i, "otel.kind").as_deref(), Some("client"));
    }
    // resend_count is absent on the first attempt and 1, 2 on the resends.
    assert_eq!(field(0, "http.request.resend_count"), None);
    assert_eq!(field(1, "http.request.resend_count").as_deref(), Some("1"));
    assert_eq!(field(2, "http.request.resend_count").as_deref(), Some("2"));
    // error.type is the status code on failed attempts and absent on success.
    assert_eq!(field(0, "error.type").as_deref(), Some("503"));
    assert_eq!(field(1, "error.type").as_deref(), Some("502"));
    assert_eq!(field(2, "error.type"), None);

    let calls = capture.spans("egress.call");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].fields.get("operation").map(String::as_str),
        Some("get_entity")
    );
    assert!(calls[0].fields.contains_key("correlation_id"));

    // One INFO event per retry decision, with its reason and delay source.
    let events = capture.events.lock().unwrap().clone();
    let retries: Vec<_> = events
        .iter()
        .filter(|(_, f)| f.get("message").map(String::as_str) == Some("retrying"))
        .collect();
    assert_eq!(retries.len(), 2);
    for (level, fields) in retries {
        assert_eq!(*level, tracing::Level::INFO);
        assert_eq!(
            fields.get("reason").map(String::as_str),
            Some("server_error")
        );
        assert_eq!(
            fields.get("delay_source").map(String::as_str),
            Some("backoff")
        );
    }
}

#[test]
fn a_final_failure_is_a_warning_that_says_why_retrying_stopped() {
    let capture = Capture::default();
    capture.run(|| {
        let transport = ScriptedTransport::new();
        transport.push(step(429).header("retry-after", "120"));
        let client = transport
            .client(Config::default().with_base_url("https://api.example.com"))
            .unwrap();
        let err = block_on(client.get("/x").send()).unwrap_err();
        assert!(err.retry_at().is_some());
    });
    let events = capture.events.lock().unwrap().clone();
    let warnings: Vec<_> = events
        .iter()
        .filter(|(level, _)| *level == tracing::Level::WARN)
        .collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    assert_eq!(
        warnings[0].1.get("error.type").map(String::as_str),
        Some("rate_limited")
    );
    assert_eq!(
        warnings[0].1.get("stop").map(String::as_str),
        Some("rate limited")
    );
}

/// A retry event says what failed (the status, or the transport failure's kind) beside why it
/// is retried, so that the log does not hide the cause until the final warning.
#[test]
fn a_retry_event_names_what_failed() {
    use egress_core::TransportErrorKind;
    use egress_core::test_util::fail;
    let capture = Capture::default();
    capture.run(|| {
        let transport = ScriptedTransport::new();
        transport
            .push(step(503))
            .push(fail(TransportErrorKind::ConnectRefused))
            .push(step(200).json(r#"{"id":"1"}"#));
        let client = transport
            .client(Config::default().with_base_url("https://api.example.com"))
            .unwrap();
        block_on(client.get("/x").send()).unwrap();
    });
    let retries: Vec<_> = capture
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, fields)| fields.get("message").is_some_and(|m| m == "retrying"))
        .map(|(_, fields)| {
            (
                fields.get("error.type").cloned().unwrap_or_default(),
                fields.get("reason").cloned().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        retries,
        [
            ("503".to_owned(), "server_error".to_owned()),
            ("connect_refused".to_owned(), "never_sent".to_owned())
        ]
    );
}

/// The call span's `attempts` is recorded once, when the call ends: `fmt` would print a field
/// recorded per attempt once per attempt (`attempts=1 attempts=2 attempts=3`).
#[test]
fn the_call_span_records_attempts_once_when_the_call_ends() {
    let capture = Capture::default();
    capture.run(|| {
        let transport = ScriptedTransport::new();
        transport
            .push(step(503))
            .push(step(503))
            .push(step(200).json(r#"{"id":"1"}"#));
        let client = transport
            .client(Config::default().with_base_url("https://api.example.com"))
            .unwrap();
        block_on(client.get("/x").send()).unwrap();
    });
    let text = capture.text();
    let close = text
        .lines()
        .find(|l| {
            l.contains("egress.call{") && !l.contains("egress.attempt{") && l.contains("close")
        })
        .unwrap_or_else(|| panic!("the call span closes:\n{text}"));
    assert_eq!(close.matches("attempts=").count(), 1, "{close}");
    assert!(close.contains("attempts=3"), "{close}");
}

/// A hedged call reports each attempt (the hedge marked, the loser cancelled), the hedge event
/// and which attempt won.
#[test]
fn a_hedged_call_reports_every_attempt_the_hedge_and_the_winner() {
    let capture = Capture::default();
    capture.run(|| {
        let upstream = ScriptedTransport::new();
        upstream
            .push(step(200).after(Duration::from_secs(2)))
            .push(step(200).after(Duration::from_millis(10)));
        let hedging = egress_core::HedgingConfig::enabled(egress_core::HedgeAfter::Fixed(
            Duration::from_millis(50),
        ));
        let config = Config::default()
            .with_base_url("https://api.example.com")
            .with_hedging(hedging);
        let client = upstream.client(config).unwrap();
        block_on(client.get("/x").send()).unwrap();
    });
    let spans = capture.spans.lock().unwrap().clone();
    let attempts: Vec<_> = spans
        .iter()
        .filter(|(_, r)| r.name == "egress.attempt")
        .map(|(_, r)| r.fields.clone())
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let first = &attempts[0];
    let hedge = &attempts[1];
    assert_eq!(first.get("egress.hedge"), None);
    assert_eq!(
        first.get("error.type").map(String::as_str),
        Some("cancelled")
    );
    assert_eq!(hedge.get("egress.hedge").map(String::as_str), Some("true"));
    assert_eq!(
        hedge.get("http.request.resend_count").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        hedge.get("http.response.status_code").map(String::as_str),
        Some("200")
    );
    let call = spans
        .iter()
        .find(|(_, r)| r.name == "egress.call")
        .map(|(_, r)| r.fields.clone())
        .expect("a call span");
    assert_eq!(call.get("egress.winner").map(String::as_str), Some("2"));
    assert_eq!(call.get("egress.hedges").map(String::as_str), Some("1"));
    let events = capture.events.lock().unwrap().clone();
    let hedging: Vec<_> = events
        .iter()
        .filter(|(_, f)| f.get("message").is_some_and(|m| m == "hedging"))
        .collect();
    assert_eq!(hedging.len(), 1, "{events:#?}");
    assert_eq!(hedging[0].1.get("after_ms").map(String::as_str), Some("50"));
}

/// A response that fails validation is telemetry of the call, not a silent success: a WARN
/// event with the call's correlation ID, the error kind and the JSON path.
#[test]
fn a_failed_validation_is_a_warning_with_the_correlation_id_kind_and_path() {
    let capture = Capture::default();
    let correlation_id = capture.run(|| {
        let transport = ScriptedTransport::new();
        transport.push(step(200).json(r#"{"id":7}"#));
        let client = transport
            .client(Config::default().with_base_url("https://api.example.com"))
            .unwrap();
        let response = block_on(client.get("/x").send()).unwrap();
        assert!(response.json::<Entity>().is_err());
        response.correlation_id().to_string()
    });
    let events = capture.events.lock().unwrap().clone();
    let warnings: Vec<_> = events
        .iter()
        .filter(|(level, _)| *level == tracing::Level::WARN)
        .map(|(_, fields)| fields)
        .collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    let w = warnings[0];
    assert!(
        w["message"].starts_with("response failed validation"),
        "{w:?}"
    );
    assert_eq!(w["correlation_id"], correlation_id);
    assert_eq!(w["error.type"], "validation");
    assert_eq!(w["validation.kind"], "schema");
    assert_eq!(w["json.path"], "id");
}

/// Log levels follow meaning: a lookup's 404 is an answer (DEBUG), a 500 after its retries a
/// failure (WARN); a vendor classifier can say otherwise.
#[test]
fn an_answer_logs_at_debug_and_a_failure_at_warn() {
    use egress_core::{Classifier, ClassifyContext, Outcome, RetryAction, classify};

    #[derive(Debug)]
    struct ConflictsAreFailures;
    impl Classifier for ConflictsAreFailures {
        fn classify(&self, outcome: &Outcome<'_>, ctx: &ClassifyContext<'_>) -> RetryAction {
            classify(outcome, ctx)
        }
        fn is_answer(&self, status: egress_core::http::StatusCode) -> bool {
            status == 404
        }
    }

    let levels = |status: u16, classifier: Option<std::sync::Arc<dyn Classifier>>| {
        let capture = Capture::default();
        capture.run(|| {
            let transport = ScriptedTransport::new();
            transport.push(step(status));
            let client = transport
                .client(
                    Config::default()
                        .with_base_url("https://api.example.com")
                        .with_retry(RetryPolicy::disabled()),
                )
                .unwrap();
            let mut builder = client.get("/x");
            if let Some(c) = classifier {
                builder = builder.classifier(c);
            }
            assert!(block_on(builder.send()).is_err());
        });
        let events = capture.events.lock().unwrap().clone();
        events
            .into_iter()
            .filter(|(_, f)| {
                f.get("message")
                    .is_some_and(|m| m.starts_with("call answered") || m.starts_with("call failed"))
            })
            .map(|(level, _)| level)
            .collect::<Vec<_>>()
    };
    assert_eq!(levels(404, None), [tracing::Level::DEBUG]);
    assert_eq!(levels(409, None), [tracing::Level::DEBUG]);
    assert_eq!(levels(500, None), [tracing::Level::WARN]);
    assert_eq!(levels(401, None), [tracing::Level::WARN]);
    let vendor: std::sync::Arc<dyn Classifier> = std::sync::Arc::new(ConflictsAreFailures);
    assert_eq!(levels(409, Some(vendor.clone())), [tracing::Level::WARN]);
    assert_eq!(levels(404, Some(vendor)), [tracing::Level::DEBUG]);
}

/// The public telemetry reference (`egress_core::telemetry_reference`) names every span, event
/// and field egress emits: a new one fails here until the page says what it is.
#[test]
fn every_span_event_and_field_emitted_is_in_the_telemetry_reference() {
    use egress_core::TransportErrorKind;
    use egress_core::test_util::fail;
    let reference = include_str!("../src/telemetry.md");
    let capture = Capture::default();
    capture.run(|| {
        let transport = ScriptedTransport::new();
        transport
            .push(step(503))
            .push(fail(TransportErrorKind::ConnectRefused))
            .push(step(200).json(r#"{"id":7}"#))
            .push(step(404))
            .push(step(500))
            .push(step(500))
            .push(step(500))
            .push(step(429).header("retry-after", "600"));
        let client = transport
            .client(Config::default().with_base_url("https://api.example.com/v1"))
            .unwrap();
        let response = block_on(client.get("/x").send()).unwrap();
        assert!(response.json::<Entity>().is_err());
        assert!(block_on(client.get("/missing").send()).is_err());
        assert!(block_on(client.get("/broken").send()).is_err());
        assert!(block_on(client.get("/throttled").send()).is_err());
        // Across calls: a circuit that opens and refuses, a hold that a call waits out.
        let upstream = ScriptedTransport::new();
        upstream
            .push(step(503))
            .push(step(429).header("retry-after", "1"))
            .push(step(200));
        let breaker = egress_core::CircuitBreakerConfig::default()
            .with_min_throughput(1)
            .with_break_duration(std::time::Duration::from_secs(1));
        let config = Config::default()
            .with_base_url("https://api.example.com/v1")
            .with_retry(egress_core::RetryPolicy::disabled())
            .with_circuit_breaker(breaker);
        let client = upstream.client(config).unwrap();
        assert!(block_on(client.get("/down").send()).is_err());
        assert!(
            block_on(client.get("/down").send())
                .unwrap_err()
                .is_circuit_open()
        );
        upstream.clock().advance(std::time::Duration::from_secs(1));
        assert!(block_on(client.get("/busy").send()).is_err());
        assert!(block_on(client.get("/busy").send()).is_ok());
        // Hedging: a hedge that wins (its loser cancelled), then one the budget refuses.
        let upstream = ScriptedTransport::new();
        upstream
            .push(step(200).after(Duration::from_secs(2)))
            .push(step(200).after(Duration::from_millis(10)))
            .push(step(200).after(Duration::from_secs(2)));
        let hedging = egress_core::HedgingConfig::enabled(egress_core::HedgeAfter::Fixed(
            Duration::from_millis(50),
        ));
        let empty = egress_core::BudgetConfig::default()
            .with_retry_ratio(0.0)
            .with_min_retries_per_sec(0);
        let base = Config::default()
            .with_base_url("https://api.example.com/v1")
            .with_hedging(hedging);
        let client = upstream.client(base.clone()).unwrap();
        assert!(block_on(client.get("/slow").send()).is_ok());
        let client = upstream.client(base.with_budget(empty)).unwrap();
        assert!(block_on(client.get("/slow").send()).is_ok());
        // A token source: a refresh, a rejected token, a refused refresh.
        let upstream = ScriptedTransport::new();
        upstream
            .push(step(200).json(r#"{"access_token":"t-1","token_type":"Bearer","expires_in":60}"#))
            .push(step(401).header("www-authenticate", r#"Bearer error="invalid_token""#))
            .push(step(400).json(r#"{"error":"invalid_client"}"#));
        let oauth2 =
            egress_core::OAuth2Config::new("https://login.example.com/token", "id", "s".into());
        let client = egress_core::Client::builder(
            Config::default().with_base_url("https://api.example.com/v1"),
            upstream.runtime(),
        )
        .with_oauth2(oauth2)
        .build()
        .unwrap();
        assert!(
            block_on(client.get("/x").send())
                .unwrap_err()
                .token_error()
                .is_some()
        );
    });
    let mut missing = Vec::new();
    for (name, record) in capture
        .spans
        .lock()
        .unwrap()
        .iter()
        .map(|(_, r)| (&r.name, r))
    {
        if !reference.contains(&format!("`{name}`")) {
            missing.push(format!("span {name}"));
        }
        for field in record.fields.keys() {
            if !reference.contains(&format!("`{field}`")) {
                missing.push(format!("field {field} of span {name}"));
            }
        }
    }
    for (_, fields) in capture.events.lock().unwrap().iter() {
        let message = fields.get("message").cloned().unwrap_or_default();
        let name = message.split(':').next().unwrap_or_default();
        if !reference.contains(&format!("`{name}")) {
            missing.push(format!("event {name:?}"));
        }
        for field in fields.keys().filter(|f| *f != "message") {
            if !reference.contains(&format!("`{field}`")) {
                missing.push(format!("field {field} of event {name:?}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in core/src/telemetry.md: {missing:#?}"
    );
    assert!(!capture.events.lock().unwrap().is_empty());
}

/// The token source's events: a refresh at DEBUG with why, how long and the lifetime; a
/// rejected token at DEBUG; a failed refresh at WARN with the OAuth 2.0 error; each with the
/// correlation ID of the call it happened in, and never the token.
#[test]
fn token_events_say_why_and_how_long_with_the_calls_correlation_id_and_no_token() {
    let capture = Capture::default();
    let error =
        capture.run(|| {
            let upstream = ScriptedTransport::new();
            upstream
                .push(step(200).json(
                    r#"{"access_token":"tok-secret-77","token_type":"Bearer","expires_in":600}"#,
                ))
                .push(step(401).header("www-authenticate", r#"Bearer error="invalid_token""#))
                .push(step(401).json(r#"{"error":"invalid_client"}"#));
            let oauth2 =
                egress_core::OAuth2Config::new("https://login.example.com/token", "id", "s".into());
            let client = egress_core::Client::builder(
                Config::default().with_base_url("https://api.example.com"),
                upstream.runtime(),
            )
            .with_oauth2(oauth2)
            .build()
            .unwrap();
            block_on(client.get("/x").send()).unwrap_err()
        });
    let id = error
        .correlation_id()
        .expect("the call has one")
        .as_str()
        .to_owned();
    let events = capture.events.lock().unwrap().clone();
    let find = |message: &str| {
        events
            .iter()
            .find(|(_, f)| f.get("message").is_some_and(|m| m.starts_with(message)))
            .unwrap_or_else(|| panic!("no {message:?} event in {events:?}"))
            .clone()
    };
    let (level, refreshed) = find("token refreshed");
    assert_eq!(level, tracing::Level::DEBUG);
    assert_eq!(refreshed["reason"], "initial");
    assert_eq!(refreshed["expires_in_s"], "600");
    assert!(refreshed.contains_key("took_ms"));
    let (level, rejected) = find("token rejected");
    assert_eq!(level, tracing::Level::DEBUG);
    assert_eq!(rejected["generation"], "1");
    let (level, failed) = find("token refresh failed");
    assert_eq!(level, tracing::Level::WARN);
    assert_eq!(failed["error.type"], "invalid_client");
    assert_eq!(failed["is_final"], "true");
    assert_eq!(failed["reason"], "rejected");
    for fields in [&refreshed, &rejected, &failed] {
        assert_eq!(fields["correlation_id"], id, "{fields:?}");
    }
    assert!(!capture.text().contains("tok-secret-77"));
}
