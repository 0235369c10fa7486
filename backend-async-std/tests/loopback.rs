//! What only the async-std backend can show against a loopback server: the ambient correlation ID
//! on its runtime's tasks, a dropped call on its runtime, and its TLS root options (native-tls).
//! Every behaviour both backends
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
    egress_async_std::client(config(&server.url(""))).unwrap()
}

#[async_std::test]
async fn an_invalid_root_certificate_is_refused_at_build_time() {
    let error = egress_async_std::Builder::new(Config::default())
        .with_root_certificate(b"not a certificate".to_vec())
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("tls.roots"), "{error}");
}

#[async_std::test]
async fn the_ambient_correlation_id_is_sent_when_the_request_has_none() {
    let server = FaultServer::start(FaultServer::always(Reply::json(200, "{}")));
    let client = client(&server);
    let id = CorrelationId::new("inbound-req-42").unwrap();
    let response = egress_async_std::with_correlation_id(id.clone(), client.get("/x").send())
        .await
        .unwrap();
    assert_eq!(response.correlation_id(), &id);
    assert_eq!(
        server.requests()[0].header("x-correlation-id"),
        Some("inbound-req-42")
    );
}

#[async_std::test]
async fn the_ambient_correlation_id_holds_on_a_spawned_task_across_retries() {
    let server = FaultServer::start(FaultServer::script([
        Reply::status(503),
        Reply::json(200, "{}"),
    ]));
    let client = client(&server);
    let id = CorrelationId::new("inbound-req-43").unwrap();
    let task = async_std::task::spawn(egress_async_std::with_correlation_id(
        id.clone(),
        async move { client.get("/x").send().await },
    ));
    let response = task.await.unwrap();
    assert_eq!(response.attempts(), 2);
    for seen in server.requests() {
        assert_eq!(seen.header("x-correlation-id"), Some("inbound-req-43"));
    }
    assert_eq!(egress_async_std::current_correlation_id(), None);
}

#[async_std::test]
async fn dropping_a_call_cancels_it_and_schedules_nothing_more() {
    let server = FaultServer::start(FaultServer::always(Reply::status(503).delay(ms(200))));
    let client = client(&server);
    let call = client.get("/x").send();
    // Drop the call while its first attempt waits for the head.
    let _ = async_std::future::timeout(ms(50), call).await;
    async_std::task::sleep(ms(600)).await;
    assert_eq!(
        server.requests().len(),
        1,
        "no retry after the call was dropped"
    );
}
