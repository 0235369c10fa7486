//! The loopback upstream: a hyper HTTP/1.1 server (keep-alive) on its own thread and
//! current-thread runtime, pinned to its own core when the machine has two.
//!
//! - `GET /entity/{id}`: 200 with a JSON entity of about 300 bytes.
//! - `GET /flaky`: the same entity, except every 10th request to it answers 503.
//! - `GET /outage`: always 503 (a full outage).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::measure;

/// The JSON entity every successful answer carries (about 300 bytes).
pub(crate) fn entity_json(id: u64) -> String {
    format!(
        concat!(
            r#"{{"id":{id},"name":"entity-{id}","kind":"widget","owner":"team-platform","#,
            r#""created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-02T00:00:00Z","#,
            r#""tags":["alpha","beta","gamma"],"version":7,"active":true,"#,
            r#""description":"A loopback entity with a fixed description, long enough to make the body about three hundred bytes."}}"#
        ),
        id = id
    )
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    flaky: AtomicU64,
}

/// What the upstream has seen so far, and its thread's CPU time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    /// Connections accepted.
    pub(crate) connections: u64,
    /// Requests answered.
    pub(crate) requests: u64,
    /// CPU time of the server thread (user + system).
    pub(crate) cpu: Duration,
}

/// The running upstream; stops when dropped.
#[derive(Debug)]
pub(crate) struct Upstream {
    addr: SocketAddr,
    counters: Arc<Counters>,
    handle: tokio::runtime::Handle,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Whether the server thread is pinned to its own core.
    pub(crate) pinned: Option<usize>,
}

impl Upstream {
    /// Starts the server on 127.0.0.1 (a free port), pinned to `core` if given.
    pub(crate) fn start(core: Option<usize>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback has free ports");
        listener.set_nonblocking(true).expect("non-blocking socket");
        let addr = listener
            .local_addr()
            .expect("a bound socket has an address");
        let counters = Arc::new(Counters::default());
        let (stop, mut stopped) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let serving = counters.clone();
        let thread = std::thread::Builder::new()
            .name("upstream".into())
            .spawn(move || {
                let pinned = core.filter(|&c| measure::pin_to(c));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                let _ = ready_tx.send((runtime.handle().clone(), pinned));
                runtime.block_on(async move {
                    let listener =
                        TcpListener::from_std(listener).expect("listener joins the runtime");
                    loop {
                        tokio::select! {
                            _ = stopped.changed() => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let _ = stream.set_nodelay(true);
                                serving.connections.fetch_add(1, Ordering::Relaxed);
                                let counters = serving.clone();
                                tokio::spawn(async move {
                                    let service = service_fn(move |req| {
                                        let counters = counters.clone();
                                        async move { Ok::<_, Infallible>(answer(&req, &counters)) }
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .keep_alive(true)
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
                // Dropping the runtime ends every connection task.
            })
            .expect("a thread can be spawned");
        let (handle, pinned) = ready_rx.recv().expect("the upstream thread starts");
        Self {
            addr,
            counters,
            handle,
            stop,
            thread: Some(thread),
            pinned,
        }
    }

    /// The bound port.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The counters now, and the server thread's CPU time (read on that thread).
    pub(crate) fn snapshot(&self) -> Snapshot {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(measure::thread().cpu());
        });
        let cpu = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        Snapshot {
            connections: self.counters.connections.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            cpu,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn answer(req: &Request<Incoming>, counters: &Counters) -> Response<Full<Bytes>> {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let unavailable = || {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"unavailable"}"#.to_owned(),
        )
    };
    let path = req.uri().path();
    if let Some(id) = path.strip_prefix("/entity/") {
        return match id.parse::<u64>() {
            Ok(id) => json(StatusCode::OK, entity_json(id)),
            Err(_) => json(
                StatusCode::NOT_FOUND,
                r#"{"error":"no such entity"}"#.to_owned(),
            ),
        };
    }
    match path {
        "/flaky" => {
            let n = counters.flaky.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 10 == 0 {
                unavailable()
            } else {
                json(StatusCode::OK, entity_json(n))
            }
        }
        "/outage" => unavailable(),
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.to_owned()),
    }
}
