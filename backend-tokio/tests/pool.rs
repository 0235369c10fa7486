//! egress-transport's pool on tokio's multi-thread runtime. The pool's behaviour on both
//! backends (reuse, limits, closed connections, HTTP/2 multiplexing) is in the parity suite
//! (`egress-tests`, `tests/parity.rs`).

use egress_core::Config;
use egress_tests::server::{FaultServer, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_thread_runtime_a_returned_connection_is_reused_not_replaced() {
    // The connection's driver may run on the other thread and become ready a moment after the
    // body ended: the pool waits for it instead of opening another connection.
    let server = FaultServer::start(FaultServer::always(Reply::json(200, r#"{"id":"7"}"#)));
    let client = egress_tokio::client(Config::default().with_base_url(server.url(""))).unwrap();
    for _ in 0..50 {
        client.get("/x").send().await.unwrap();
    }
    assert_eq!(server.connections(), 1);
}
