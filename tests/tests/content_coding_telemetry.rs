//! Telemetry of compressed responses on both backends. Its own test binary: a callsite first
//! met by a test without a subscriber is cached as uninteresting process-wide, which would hide
//! the events of a test that installs one (tracing's callsite cache).

#[macro_use]
mod common;

use common::{Backend, Buffer, config, encoded, gzip};
use egress_tests::server::FaultServer;

const ENTITY: &str = r#"{"id":"7","items":[{"id":"a"}]}"#;

#[derive(Debug, serde::Deserialize)]
struct Entity {
    id: String,
}

/// The attempt span records the coding and both sizes: received (OpenTelemetry's
/// `http.response.body.size`, the encoded size) and decoded.
fn the_attempt_span_records_the_coding_and_both_sizes(b: Backend) {
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::layer::SubscriberExt;

    let wire = gzip(ENTITY.as_bytes());
    let server = FaultServer::start(FaultServer::always(encoded("gzip", wire.clone())));
    let text = Arc::new(Mutex::new(Vec::new()));
    let writer = text.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(move || Buffer(writer.clone()))
            .with_span_events(FmtSpan::CLOSE),
    );
    tracing::subscriber::with_default(subscriber, || {
        b.run_here(async {
            let response = b
                .client(config(&server.url("")))
                .get("/x")
                .send()
                .await
                .unwrap();
            assert_eq!(response.json::<Entity>().unwrap().id, "7");
        })
    });
    let captured = String::from_utf8_lossy(&text.lock().unwrap()).into_owned();
    for field in [
        format!("http.response.body.size={}", wire.len()),
        "egress.response.content_coding=\"gzip\"".to_owned(),
        format!("egress.response.decoded_size={}", ENTITY.len()),
    ] {
        assert!(
            captured.contains(&field),
            "{b:?}: no {field} in\n{captured}"
        );
    }
}

on_each_backend!(the_attempt_span_records_the_coding_and_both_sizes,);
