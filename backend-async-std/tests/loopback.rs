//! The async-std backend against loopback servers (127.0.0.1, random ports): every failure mode
//! of the default retry rules ([`egress_core::retry::classify`]) and the phase timeouts, as a real service would meet them. The same scenarios
//! as egress-tokio's `tests/loopback.rs`, run on async-std; the fault server runs on its own
//! thread and runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    egress_async_std::client(config(&server.url(""))).unwrap()
}

fn transport_kind(error: &Error) -> Option<TransportErrorKind> {
    match error {
        Error::Transport { source, .. } => Some(source.kind()),
        _ => None,
    }
}

/// A loopback listener that accepts connections and holds them without reading or answering.
/// Its task is cancelled when the value is dropped.
struct Silent {
    port: u16,
    task: Option<async_std::task::JoinHandle<()>>,
}

impl Silent {
    async fn start() -> Self {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = async_std::task::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Self {
            port,
            task: Some(task),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            async_std::task::block_on(task.cancel());
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct Entity {
    id: String,
}

#[async_std::test]
async fn a_successful_call_decodes_its_json_body() {
    let server = FaultServer::start(FaultServer::always(Reply::json(200, r#"{"id":"7"}"#)));
    let response = client(&server).get("/entities/7").send().await.unwrap();
    let entity: Entity = response.json().unwrap();
    assert_eq!(entity.id, "7");
    assert_eq!(response.attempts(), 1);
    assert_eq!(response.version(), http::Version::HTTP_11);
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/entities/7");
    assert_eq!(seen[0].method, "GET");
    assert!(seen[0].header("user-agent").unwrap().starts_with("egress/"));
    assert_eq!(
        seen[0].header("content-type"),
        None,
        "no header the core did not ask for"
    );
}

#[async_std::test]
async fn a_post_body_and_its_headers_arrive_exactly_as_given() {
    let server = FaultServer::start(FaultServer::always(Reply::json(201, r#"{"id":"9"}"#)));
    let response = client(&server)
        .post("/entities?dry_run=false")
        .json(&serde_json::json!({"name": "a"}))
        .header("x-tenant", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let seen = &server.requests()[0];
    assert_eq!(seen.path, "/entities?dry_run=false");
    assert_eq!(seen.body.as_ref(), br#"{"name":"a"}"#);
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("x-tenant"), Some("acme"));
}

#[async_std::test]
async fn a_body_larger_than_one_write_arrives_whole_and_in_order() {
    let server = FaultServer::start(FaultServer::always(Reply::json(201, r#"{"id":"9"}"#)));
    // Several of the transport's 64 KiB write pieces, and not a multiple of them.
    let body: Vec<u8> = (0..300_007u32).map(|i| (i % 251) as u8).collect();
    let response = client(&server)
        .post("/entities")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let seen = &server.requests()[0];
    assert_eq!(seen.header("content-length"), Some("300007"));
    assert!(
        seen.body.as_ref() == body.as_slice(),
        "the body arrived altered"
    );
}

#[async_std::test]
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

#[async_std::test]
async fn a_connection_is_reused_after_a_response_read_to_its_end() {
    let server = FaultServer::start(FaultServer::always(Reply::json(200, r#"{"id":"7"}"#)));
    let client = client(&server);
    for _ in 0..3 {
        client.get("/entities/7").send().await.unwrap();
    }
    assert_eq!(server.requests().len(), 3);
    assert_eq!(
        server.connections(),
        1,
        "one pooled connection for three calls"
    );
}

/// A server that answers every request on a connection with the same well-formed chunked
/// response (the fault server only sends broken or endless chunked bodies), counting
/// connections.
async fn chunked_server() -> (u16, Arc<AtomicUsize>) {
    use async_std::io::{ReadExt, WriteExt};
    let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    async_std::task::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            async_std::task::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear(); // GET requests: no body
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                 transfer-encoding: chunked\r\n\r\n\
                                 5\r\n{\"id\"\r\n6\r\n:\"ch\"}\r\n0\r\n\r\n";
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, connections)
}

#[async_std::test]
async fn a_connection_is_reused_after_a_chunked_response_read_to_its_end() {
    let (port, connections) = chunked_server().await;
    let client = egress_async_std::client(config(&format!("http://127.0.0.1:{port}"))).unwrap();
    for _ in 0..3 {
        let response = client.get("/x").send().await.unwrap();
        assert_eq!(response.json::<Entity>().unwrap().id, "ch");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[async_std::test]
async fn with_keep_alive_off_every_call_opens_its_own_connection() {
    let server = FaultServer::start(FaultServer::always(Reply::json(200, "{}")));
    let mut config = config(&server.url(""));
    config.pool.max_idle_per_host = 0;
    let client = egress_async_std::client(config).unwrap();
    for _ in 0..2 {
        client.get("/x").send().await.unwrap();
    }
    assert_eq!(server.connections(), 2);
}

#[async_std::test]
async fn a_refused_connection_is_retried_for_any_method_and_reported_as_never_sent() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // dropped: nothing listens there now
    let client = egress_async_std::client(config(&format!("http://127.0.0.1:{port}"))).unwrap();
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

#[async_std::test]
async fn a_connect_that_never_completes_hits_the_connect_timeout() {
    let Ok(blackhole) = Blackhole::new() else {
        panic!("could not fill a loopback accept queue; the connect-timeout test needs one");
    };
    let config = config(&blackhole.url(""))
        .with_connect_timeout(ms(200))
        .with_retry(RetryPolicy::disabled());
    let client = egress_async_std::client(config).unwrap();
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

#[async_std::test]
async fn a_tls_handshake_that_never_completes_is_a_connect_timeout() {
    // A TCP listener that accepts and then says nothing: the ClientHello is never answered.
    let silent = Silent::start().await;
    let config = config(&format!("https://localhost:{}", silent.port))
        .with_connect_timeout(ms(200))
        .with_retry(RetryPolicy::disabled());
    let started = Instant::now();
    let error = egress_async_std::client(config)
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
    assert!(!error.may_have_been_sent());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[async_std::test]
async fn a_server_that_never_reads_the_request_hits_the_head_limit_of_min_write_read() {
    // 64 MiB cannot fit in the loopback socket buffers of a peer that never reads. hyper does
    // not report when writing ends, so the head is due within min(write, read) of the start.
    let silent = Silent::start().await;
    let config = config(&format!("http://127.0.0.1:{}", silent.port))
        .with_write_timeout(ms(300))
        .with_retry(RetryPolicy::disabled());
    let started = Instant::now();
    let error = egress_async_std::client(config)
        .unwrap()
        .put("/blobs/1")
        .body(vec![b'w'; 64 << 20])
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
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[async_std::test]
async fn a_server_that_never_answers_hits_the_read_timeout() {
    let server = FaultServer::start(FaultServer::always(Reply::fault(Fault::NeverAnswer)));
    let config = config(&server.url(""))
        .with_read_timeout(ms(300))
        .with_retry(RetryPolicy::disabled());
    let started = Instant::now();
    let error = egress_async_std::client(config)
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
    assert!(started.elapsed() >= ms(300));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.requests().len(), 1);
}

#[async_std::test]
async fn a_retry_after_a_read_timeout_uses_a_new_connection_and_never_reads_the_late_answer() {
    // The first answer comes after the read timeout: a client that pooled that connection
    // would read it as the answer to the retry.
    let server = FaultServer::start(FaultServer::script([
        Reply::json(200, r#"{"id":"late"}"#).delay(ms(500)),
        Reply::json(200, r#"{"id":"fresh"}"#),
    ]));
    let config = config(&server.url("")).with_read_timeout(ms(200));
    let response = egress_async_std::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Entity>().unwrap().id, "fresh");
    assert_eq!(response.attempts(), 2);
    assert_eq!(server.connections(), 2);
}

#[async_std::test]
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
    let response = egress_async_std::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.attempts(), 2);
    assert_eq!(server.requests().len(), 2);
    assert_eq!(
        server.connections(),
        2,
        "the stalled connection is not reused"
    );
}

#[async_std::test]
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
    let error = egress_async_std::client(config)
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

#[async_std::test]
async fn a_slow_drip_within_the_read_timeout_is_read_whole() {
    let body = format!(r#"{{"id":"{}"}}"#, "d".repeat(50));
    let server = FaultServer::start(FaultServer::always(Reply::json(200, &body).with_fault(
        Fault::Drip {
            chunk: 10,
            every: ms(20),
        },
    )));
    let config = config(&server.url("")).with_read_timeout(ms(500));
    let response = egress_async_std::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Entity>().unwrap().id.len(), 50);
}

#[async_std::test]
async fn a_reset_before_the_head_is_retried_for_a_get() {
    let server = FaultServer::start(FaultServer::script([
        Reply::fault(Fault::ResetBeforeHead),
        Reply::json(200, r#"{"id":"1"}"#),
    ]));
    let response = client(&server).get("/x").send().await.unwrap();
    assert_eq!(response.attempts(), 2);
    assert_eq!(server.requests().len(), 2);
}

#[async_std::test]
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

#[async_std::test]
async fn a_close_before_the_head_is_reported_as_closed_before_the_response() {
    let server = FaultServer::start(FaultServer::always(Reply::fault(Fault::CloseBeforeHead)));
    let config = config(&server.url("")).with_retry(RetryPolicy::disabled());
    let error = egress_async_std::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        transport_kind(&error),
        Some(TransportErrorKind::ClosedBeforeResponse),
        "{error:?}"
    );
}

#[async_std::test]
async fn a_reset_in_the_middle_of_the_body_is_reported_as_closed_during_the_body() {
    let body = "y".repeat(4096);
    let server = FaultServer::start(FaultServer::always(
        Reply::json(200, &body).with_fault(Fault::ResetMidBody { after: 100 }),
    ));
    let config = config(&server.url("")).with_retry(RetryPolicy::disabled());
    let error = egress_async_std::client(config)
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

#[async_std::test]
async fn a_truncated_body_is_retried_for_a_get() {
    let server = FaultServer::start(FaultServer::script([
        Reply::json(200, r#"{"id":"1"}"#).with_fault(Fault::WrongLength { declared: 500 }),
        Reply::json(200, r#"{"id":"1"}"#),
    ]));
    let response = client(&server).get("/x").send().await.unwrap();
    assert_eq!(response.attempts(), 2);
}

#[async_std::test]
async fn a_truncated_body_is_reported_as_closed_during_the_body() {
    let server = FaultServer::start(FaultServer::always(
        Reply::json(200, r#"{"id":"1"}"#).with_fault(Fault::CloseMidBody { after: 4 }),
    ));
    let config = config(&server.url("")).with_retry(RetryPolicy::disabled());
    let error = egress_async_std::client(config)
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

#[async_std::test]
async fn a_broken_chunk_is_a_protocol_error_that_is_not_retried() {
    let server = FaultServer::start(FaultServer::always(
        Reply::json(200, r#"{"id":"1"}"#).with_fault(Fault::BadChunk),
    ));
    let error = client(&server).get("/x").send().await.unwrap_err();
    assert_eq!(
        transport_kind(&error),
        Some(TransportErrorKind::Protocol),
        "{error:?}"
    );
    assert_eq!(error.attempts(), 1);
}

#[async_std::test]
async fn a_body_over_the_limit_is_refused_from_its_content_length_and_not_retried() {
    let server = FaultServer::start(FaultServer::always(Reply::json(200, &"z".repeat(4096))));
    let config = config(&server.url("")).with_max_response_body(1024);
    let error = egress_async_std::client(config)
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

#[async_std::test]
async fn an_endless_body_stops_at_the_limit() {
    let server = FaultServer::start(FaultServer::always(Reply::fault(Fault::EndlessBody)));
    let config = config(&server.url("")).with_max_response_body(256 * 1024);
    let error = egress_async_std::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::BodyTooLarge { .. }), "{error:?}");
    assert_eq!(server.requests().len(), 1);
}

#[async_std::test]
async fn tls_works_with_a_certificate_trusted_through_custom_roots() {
    let server = FaultServer::start_tls(FaultServer::always(Reply::json(200, r#"{"id":"tls"}"#)));
    let client = egress_async_std::Builder::new(config(&server.url("")))
        .with_root_certificate(server.certificate_der().unwrap())
        .build()
        .unwrap();
    for _ in 0..2 {
        let response = client.get("/entities/tls").send().await.unwrap();
        // ALPN: the server offers h2 (RFC 9113 3.2).
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.json::<Entity>().unwrap().id, "tls");
    }
    assert_eq!(server.requests()[0].version, "HTTP/2");
    assert_eq!(server.connections(), 1, "the TLS connection is pooled");
}

#[async_std::test]
async fn an_untrusted_certificate_is_a_tls_error_that_is_not_retried() {
    let server = FaultServer::start_tls(FaultServer::always(Reply::json(200, "{}")));
    let error = egress_async_std::client(config(&server.url("")))
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

#[async_std::test]
async fn an_invalid_root_certificate_is_refused_at_build_time() {
    let error = egress_async_std::Builder::new(Config::default())
        .with_root_certificate(b"not a certificate".to_vec())
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("tls.roots"), "{error}");
}

#[async_std::test]
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

#[async_std::test]
async fn an_extension_method_is_sent_as_given() {
    // RFC 9110 9.1: methods are extensible; hyper writes any valid token.
    let server = FaultServer::start(FaultServer::always(Reply::json(200, "{}")));
    let method = http::Method::from_bytes(b"FROBNICATE").unwrap();
    let response = client(&server).request(method, "/x").send().await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(server.requests()[0].method, "FROBNICATE");
}
