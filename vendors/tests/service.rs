//! The example service end to end on loopback: configuration from TOML plus environment, one
//! vendor client in the state, the inbound correlation ID on every outbound call, vendor errors
//! as HTTP answers, and a graceful shutdown.

#[allow(dead_code, unreachable_pub)] // the example's own `main` and items only it uses
#[path = "../examples/service.rs"]
mod service;

use std::io::Write;

use egress_core::Config;
use egress_tests::server::{FaultServer, Reply};

/// Writes a configuration file of this test's own; it is removed when the handle drops.
fn write_config(listen: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .prefix("egress-service-")
        .suffix(".toml")
        .tempfile()
        .unwrap();
    write!(
        file,
        "listen = \"{listen}\"\n[entities]\nbase_url = \"http://127.0.0.1:1\"\n[entities.retry]\nmax_attempts = 2\n"
    )
    .unwrap();
    file.flush().unwrap();
    file
}

#[test]
fn environment_overrides_win_over_the_file() {
    let file = write_config("127.0.0.1:7000");
    let env = |k: &str| match k {
        "ENTITIES_BASE_URL" => Some("http://127.0.0.1:9999".to_owned()),
        "ENTITIES_DEADLINE" => Some("7s".to_owned()),
        "ENTITIES_MAX_ATTEMPTS" => Some("4".to_owned()),
        _ => None,
    };
    let config = service::load_config(file.path(), env).unwrap();
    assert_eq!(config.listen, "127.0.0.1:7000");
    assert_eq!(
        config.entities.base_url.as_deref(),
        Some("http://127.0.0.1:9999")
    );
    assert_eq!(
        config.entities.timeouts.deadline,
        std::time::Duration::from_secs(7)
    );
    assert_eq!(config.entities.retry.max_attempts, 4);
    let bad = |k: &str| (k == "ENTITIES_DEADLINE").then(|| "soon".to_owned());
    assert!(
        service::load_config(file.path(), bad)
            .unwrap_err()
            .contains("ENTITIES_DEADLINE")
    );
}

#[tokio::test]
async fn the_service_propagates_the_inbound_correlation_id_and_maps_vendor_errors() {
    let upstream = FaultServer::start(FaultServer::script([
        Reply::status(503),
        Reply::json(
            200,
            r#"{"id":"e-1","name":"Ada","status":"active","version":2}"#,
        ),
        Reply::json(404, r#"{"error":"missing"}"#),
        Reply::json(
            200,
            r#"{"id":"e-3","name":"Cleo","status":"active","version":1}"#,
        )
        .delay(std::time::Duration::from_millis(300)),
    ]));
    let file = write_config("127.0.0.1:0");
    let base = upstream.url("");
    let config = service::load_config(file.path(), |k| {
        (k == "ENTITIES_BASE_URL").then(|| base.clone())
    })
    .unwrap();
    let state = service::state(&config, None).unwrap();
    let listener = tokio::net::TcpListener::bind(&config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let inbound = service::Inbound::from(&config);
    let server = tokio::spawn(service::serve(listener, state, inbound, async {
        let _ = stopped.await;
    }));

    // The inbound side is itself an egress client: a caller of this service.
    let caller =
        egress_tokio::client(Config::default().with_base_url(format!("http://{addr}"))).unwrap();
    let inbound = egress_core::CorrelationId::new("inbound-abc-123").unwrap();
    let ok = caller
        .get("/entities/e-1")
        .correlation_id(inbound.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers().get("x-correlation-id").unwrap(),
        "inbound-abc-123"
    );
    let body: serde_json::Value = ok.json().unwrap();
    assert_eq!(body["name"], "Ada");
    // The vendor call retried once; both attempts carried the inbound ID.
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.header("x-correlation-id") == Some("inbound-abc-123"))
    );

    let missing = caller.get("/entities/e-2").send().await.unwrap_err();
    assert!(missing.is_not_found());
    let echoed = missing
        .status_error()
        .unwrap()
        .headers()
        .get("x-correlation-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        upstream.requests()[2].header("x-correlation-id"),
        Some(echoed.as_str()),
        "a new ID is made and propagated"
    );

    // Graceful shutdown: a request in flight finishes; then the server stops.
    let in_flight = tokio::spawn({
        let caller = caller.clone();
        async move { caller.get("/entities/e-3").send().await }
    });
    // Shut down once the handler is waiting on the (slow) vendor.
    while upstream.requests().len() < 4 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let _ = stop.send(());
    let finished = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    assert!(
        matches!(finished, Ok(Ok(service::Stopped::Drained))),
        "the service shut down cleanly: {finished:?}"
    );
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the request in flight was answered");
    let refused = caller
        .get("/entities/e-3")
        .max_attempts(1)
        .send()
        .await
        .unwrap_err();
    assert!(
        !refused.may_have_been_sent(),
        "nothing listens after shutdown: {refused:?}"
    );
}
