//! What only the tokio backend can show against a loopback server: the ambient correlation ID
//! on its runtime's tasks, and a dropped call on its runtime. Every behaviour both backends
//! share is a row of the parity suite (`egress-tests`, `tests/parity.rs`), run on each.

use std::time::Duration;

use egress_core::{Backoff, JitterMode, RetryPolicy};
use egress_core::{Client, Config, CorrelationId};
use egress_tests::server::{FaultServer, Reply};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Fast retries so that the suite stays quick: no jitter, 10 ms then 20 ms.
fn config(base: &str) -> Config {
    let backoff = Backoff::default()
        .with_jitter(JitterMode::None)
        .with_initial(ms(10));
    Config::default()
        .with_base_url(base)
        .with_retry(RetryPolicy::standard().with_backoff(backoff))
}

fn client(server: &FaultServer) -> Client {
    egress_tokio::client(config(&server.url(""))).unwrap()
}

#[tokio::test]
async fn the_ambient_correlation_id_is_sent_when_the_request_has_none() {
    let server = FaultServer::start(FaultServer::always(Reply::json(200, "{}")));
    let client = client(&server);
    let id = CorrelationId::new("inbound-req-42").unwrap();
    let response = egress_tokio::with_correlation_id(id.clone(), client.get("/x").send())
        .await
        .unwrap();
    assert_eq!(response.correlation_id(), &id);
    assert_eq!(
        server.requests()[0].header("x-correlation-id"),
        Some("inbound-req-42")
    );
}

#[tokio::test]
async fn dropping_a_call_cancels_it_and_schedules_nothing_more() {
    let server = FaultServer::start(FaultServer::always(Reply::status(503).delay(ms(200))));
    let client = client(&server);
    let call = client.get("/x").send();
    // Drop the call while its first attempt waits for the head.
    let _ = tokio::time::timeout(ms(50), call).await;
    tokio::time::sleep(ms(600)).await;
    assert_eq!(
        server.requests().len(),
        1,
        "no retry after the call was dropped"
    );
}
