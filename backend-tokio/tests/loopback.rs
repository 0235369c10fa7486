//! The tokio backend against loopback servers (127.0.0.1, random ports): every failure mode
//! of the default retry rules ([`egress_core::retry::classify`]) and the phase timeouts, as a real service would meet them.

use std::time::{Duration, Instant};

use egress_core::retry::{Backoff, JitterMode, RetryPolicy};
use egress_core::{
    Client, Config, CorrelationId, Error, StopReason, TimeoutKind, TransportErrorKind,
};
use egress_tests::server::{Blackhole, Fault, FaultServer, Reply};

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

fn transport_kind(error: &Error) -> Option<TransportErrorKind> {
    match error {
        Error::Transport { source, .. } => Some(source.kind()),
        _ => None,
    }
}

#[derive(Debug, serde::Deserialize)]
struct Entity {
    id: String,
}

#[tokio::test]
async fn a_successful_call_decodes_its_json_body() {
    let server = FaultServer::start(FaultServer::always(Reply::json(200, r#"{"id":"7"}"#)));
    let response = client(&server).get("/entities/7").send().await.unwrap();
    let entity: Entity = response.json().unwrap();
    assert_eq!(entity.id, "7");
    assert_eq!(response.attempts(), 1);
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/entities/7");
    assert_eq!(seen[0].method, "GET");
    assert!(seen[0].header("user-agent").unwrap().starts_with("egress/"));
}

#[tokio::test]
async fn a_503_then_a_200_makes_exactly_two_requests() {
    let server = FaultServer::start(FaultServer::script([
        Reply::status(503),
        Reply::json(200, r#"{"id":"7"}"#),
    ]));
    let response = client(&server).get("/entities/7").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.attempts(), 2);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_retried_for_any_method_and_reported_as_never_sent() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // dropped: nothing listens there now
    let client = egress_tokio::client(config(&format!("http://127.0.0.1:{port}"))).unwrap();
    let error = client
        .post("/entities")
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        transport_kind(&error),
        Some(TransportErrorKind::ConnectRefused),
        "{error:?}"
    );
    assert_eq!(
        error.attempts(),
        3,
        "a never-sent failure retries even a POST"
    );
    assert!(!error.may_have_been_sent());
    assert_eq!(error.stop_reason(), Some(StopReason::AttemptsExhausted));
}

#[tokio::test]
async fn a_connect_that_never_completes_hits_the_connect_timeout() {
    let Ok(blackhole) = Blackhole::new() else {
        panic!("could not fill a loopback accept queue; the connect-timeout test needs one");
    };
    let config = config(&blackhole.url(""))
        .with_connect_timeout(ms(200))
        .with_retry(RetryPolicy::disabled());
    let client = egress_tokio::client(config).unwrap();
    let started = Instant::now();
    let error = client.get("/x").send().await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Timeout {
                kind: TimeoutKind::Connect,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.may_have_been_sent());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the connect timeout, not the attempt timeout"
    );
}

#[tokio::test]
async fn a_tls_handshake_that_never_completes_is_a_connect_timeout() {
    // A TCP listener that accepts and then says nothing: the ClientHello is never answered.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let config = config(&format!("https://localhost:{port}"))
        .with_connect_timeout(ms(200))
        .with_retry(RetryPolicy::disabled());
    let error = egress_tokio::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Timeout {
                kind: TimeoutKind::Connect,
                ..
            }
        ),
        "{error:?}"
    );
    holder.abort();
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_read_timeout() {
    let server = FaultServer::start(FaultServer::always(Reply::fault(Fault::NeverAnswer)));
    let config = config(&server.url(""))
        .with_read_timeout(ms(300))
        .with_retry(RetryPolicy::disabled());
    let error = egress_tokio::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Timeout {
                kind: TimeoutKind::Read,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.may_have_been_sent());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_stall_between_body_chunks_hits_the_read_timeout_and_a_get_is_retried() {
    let body = format!(r#"{{"id":"{}"}}"#, "x".repeat(100));
    let server = FaultServer::start(FaultServer::script([
        Reply::json(200, &body).with_fault(Fault::StallMidBody {
            after: 20,
            pause: Duration::from_secs(2),
        }),
        Reply::json(200, &body),
    ]));
    let config = config(&server.url("")).with_read_timeout(ms(300));
    let response = egress_tokio::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.attempts(), 2);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_stall_on_the_last_attempt_is_a_read_timeout() {
    let server = FaultServer::start(FaultServer::always(
        Reply::json(200, "0123456789abcdef").with_fault(Fault::StallMidBody {
            after: 4,
            pause: Duration::from_secs(2),
        }),
    ));
    let config = config(&server.url(""))
        .with_read_timeout(ms(200))
        .with_retry(RetryPolicy::disabled());
    let error = egress_tokio::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Timeout {
                kind: TimeoutKind::Read,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_reset_before_the_head_is_retried_for_a_get() {
    let server = FaultServer::start(FaultServer::script([
        Reply::fault(Fault::ResetBeforeHead),
        Reply::json(200, r#"{"id":"1"}"#),
    ]));
    let response = client(&server).get("/x").send().await.unwrap();
    assert_eq!(response.attempts(), 2);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_reset_before_the_head_is_not_retried_for_a_post() {
    let server = FaultServer::start(FaultServer::script([
        Reply::fault(Fault::ResetBeforeHead),
        Reply::json(201, r#"{"id":"1"}"#),
    ]));
    let error = client(&server)
        .post("/entities")
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        transport_kind(&error),
        Some(TransportErrorKind::ClosedBeforeResponse),
        "{error:?}"
    );
    assert!(error.may_have_been_sent());
    assert_eq!(error.stop_reason(), Some(StopReason::NotIdempotent));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_reset_in_the_middle_of_the_body_is_reported_as_closed_during_the_body() {
    let body = "y".repeat(4096);
    let server = FaultServer::start(FaultServer::always(
        Reply::json(200, &body).with_fault(Fault::ResetMidBody { after: 100 }),
    ));
    let config = config(&server.url("")).with_retry(RetryPolicy::disabled());
    let error = egress_tokio::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        transport_kind(&error),
        Some(TransportErrorKind::ClosedDuringBody),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_truncated_body_is_retried_for_a_get() {
    let server = FaultServer::start(FaultServer::script([
        Reply::json(200, r#"{"id":"1"}"#).with_fault(Fault::WrongLength { declared: 500 }),
        Reply::json(200, r#"{"id":"1"}"#),
    ]));
    let response = client(&server).get("/x").send().await.unwrap();
    assert_eq!(response.attempts(), 2);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_from_its_content_length_and_not_retried() {
    let server = FaultServer::start(FaultServer::always(Reply::json(200, &"z".repeat(4096))));
    let config = config(&server.url("")).with_max_response_body(1024);
    let error = egress_tokio::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::BodyTooLarge { limit: 1024, .. }),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_endless_body_stops_at_the_limit() {
    let server = FaultServer::start(FaultServer::always(Reply::fault(Fault::EndlessBody)));
    let config = config(&server.url("")).with_max_response_body(256 * 1024);
    let error = egress_tokio::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::BodyTooLarge { .. }), "{error:?}");
}

#[tokio::test]
async fn http2_over_tls_works_with_a_certificate_trusted_through_custom_roots() {
    let server = FaultServer::start_tls(FaultServer::always(Reply::json(200, r#"{"id":"h2"}"#)));
    let client = egress_tokio::Builder::new(config(&server.url("")))
        .with_root_certificate(server.certificate_der().unwrap())
        .build()
        .unwrap();
    let response = client.get("/entities/h2").send().await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.json::<Entity>().unwrap().id, "h2");
    assert_eq!(server.requests()[0].version, "HTTP/2");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error_that_is_not_retried() {
    let server = FaultServer::start_tls(FaultServer::always(Reply::json(200, "{}")));
    let error = egress_tokio::client(config(&server.url("")))
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        transport_kind(&error),
        Some(TransportErrorKind::Tls),
        "{error:?}"
    );
    assert_eq!(error.attempts(), 1);
    assert!(!error.may_have_been_sent());
    assert_eq!(server.requests().len(), 0);
}

#[tokio::test]
async fn the_correlation_id_and_idempotency_key_are_identical_on_every_attempt() {
    let server = FaultServer::start(FaultServer::script([
        Reply::status(503),
        Reply::fault(Fault::ResetBeforeHead),
        Reply::json(201, r#"{"id":"1"}"#),
    ]));
    let response = client(&server)
        .post("/entities")
        .json(&serde_json::json!({"name": "a"}))
        .with_new_idempotency_key()
        .send()
        .await
        .unwrap();
    assert_eq!(response.attempts(), 3);
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    let ids: Vec<_> = seen
        .iter()
        .map(|s| s.header("x-correlation-id").unwrap().to_owned())
        .collect();
    let keys: Vec<_> = seen
        .iter()
        .map(|s| s.header("idempotency-key").unwrap().to_owned())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(response.correlation_id().as_str(), ids[0]);
    assert_ne!(ids[0], keys[0]);
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
