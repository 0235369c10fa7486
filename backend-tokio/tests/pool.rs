//! egress-transport's pool as a tokio client uses it: HTTP/1.1 connections are reused, closed
//! ones are never handed out, the pool's limits hold, and an HTTP/2 origin's calls share one
//! connection.

use std::time::Duration;

use egress_core::{Client, Config, PoolConfig};
use egress_tests::server::{FaultServer, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn client_with(base: &str, pool: PoolConfig) -> Client {
    egress_tokio::client(Config::default().with_base_url(base).with_pool(pool)).unwrap()
}

fn pool(idle_timeout: Duration, max_idle_per_host: usize) -> PoolConfig {
    let mut pool = PoolConfig::default();
    pool.idle_timeout = idle_timeout;
    pool.max_idle_per_host = max_idle_per_host;
    pool
}

fn ok() -> Reply {
    Reply::json(200, r#"{"id":"7"}"#)
}

#[tokio::test]
async fn sequential_calls_share_one_connection() {
    let server = FaultServer::start(FaultServer::always(ok()));
    let client = client_with(&server.url(""), PoolConfig::default());
    for _ in 0..5 {
        client.get("/x").send().await.unwrap();
    }
    assert_eq!(server.requests().len(), 5);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn clones_of_a_client_share_its_connections() {
    let server = FaultServer::start(FaultServer::always(ok()));
    let client = client_with(&server.url(""), PoolConfig::default());
    for _ in 0..3 {
        client.clone().get("/x").send().await.unwrap();
    }
    assert_eq!(server.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_thread_runtime_a_returned_connection_is_reused_not_replaced() {
    // The connection's driver may run on the other thread and become ready a moment after the
    // body ended: the pool waits for it instead of opening another connection.
    let server = FaultServer::start(FaultServer::always(ok()));
    let client = client_with(&server.url(""), PoolConfig::default());
    for _ in 0..50 {
        client.get("/x").send().await.unwrap();
    }
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn concurrent_calls_open_connections_that_later_calls_reuse() {
    let server = FaultServer::start(FaultServer::always(ok().delay(Duration::from_millis(20))));
    let client = client_with(&server.url(""), PoolConfig::default());
    for _ in 0..3 {
        let calls = (0..8).map(|_| client.get("/x").send());
        for result in futures_join_all(calls).await {
            result.unwrap();
        }
    }
    assert_eq!(server.requests().len(), 24);
    assert_eq!(server.connections(), 8);
}

/// RFC 9113 9.1: a client keeps one connection per origin and multiplexes requests on it.
#[tokio::test]
async fn calls_to_an_http2_origin_share_one_connection_concurrent_ones_included() {
    let server = FaultServer::start_tls(FaultServer::always(ok().delay(Duration::from_millis(20))));
    let client = egress_tokio::Builder::new(Config::default().with_base_url(server.url("")))
        .with_root_certificate(server.certificate_der().unwrap())
        .build()
        .unwrap();
    let first = client.get("/x").send().await.unwrap();
    assert_eq!(first.version(), http::Version::HTTP_2);
    for _ in 0..3 {
        let calls = (0..8).map(|_| client.get("/x").send());
        for result in futures_join_all(calls).await {
            assert_eq!(result.unwrap().version(), http::Version::HTTP_2);
        }
    }
    assert_eq!(server.requests().len(), 25);
    assert_eq!(server.connections(), 1);
}

/// `futures::future::join_all` without the dependency: spawns each call and awaits them all.
async fn futures_join_all<F>(calls: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("the call does not panic"));
    }
    out
}

#[tokio::test]
async fn with_no_idle_connections_allowed_every_call_opens_its_own() {
    let server = FaultServer::start(FaultServer::always(ok()));
    let client = client_with(&server.url(""), pool(Duration::from_secs(90), 0));
    for _ in 0..3 {
        client.get("/x").send().await.unwrap();
    }
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn a_connection_idle_past_the_idle_timeout_is_not_reused() {
    let server = FaultServer::start(FaultServer::always(ok()));
    let client = client_with(&server.url(""), pool(Duration::from_millis(50), 32));
    client.get("/x").send().await.unwrap();
    client.get("/x").send().await.unwrap();
    assert_eq!(server.connections(), 1, "reused while fresh");
    tokio::time::sleep(Duration::from_millis(120)).await;
    client.get("/x").send().await.unwrap();
    assert_eq!(server.connections(), 2, "expired, so replaced");
}

#[tokio::test]
async fn a_response_that_closes_its_connection_leaves_the_next_call_a_new_one() {
    let server = FaultServer::start(FaultServer::always(ok()));
    let client = client_with(&server.url(""), PoolConfig::default());
    // `Connection: close` on the request: the server closes after answering, and so does hyper.
    client
        .get("/x")
        .header("connection", "close")
        .send()
        .await
        .unwrap();
    let response = client.get("/x").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.connections(), 2);
}

/// A server that answers one request per connection with keep-alive, then closes the
/// connection itself (as servers do with idle keep-alive connections). Returns its base URL.
async fn closing_server() -> (String, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let mut connections = 0;
        while connections < 2 {
            let (mut socket, _) = listener.accept().await.unwrap();
            connections += 1;
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf[read..]).await.unwrap();
                assert!(n > 0, "the client sent a whole request head");
                read += n;
            }
            let body = r#"{"id":"7"}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
        }
        connections
    });
    (base, handle)
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_handed_to_the_next_call() {
    let (base, server) = closing_server().await;
    let client = client_with(&base, PoolConfig::default());
    client.get("/x").send().await.unwrap();
    // Time for the connection's driver to see the server's close.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A POST without an idempotency key is never re-sent after it may have been sent: it
    // succeeds only if the pool gives it a live connection.
    let response = client.post("/x").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.attempts(), 1);
    assert_eq!(server.await.unwrap(), 2);
}
