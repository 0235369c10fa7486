//! The loopback upstreams: two hyper servers on one thread and current-thread runtime, pinned to
//! its own core when the machine has two.
//!
//! - Plain HTTP: HTTP/1.1 with keep-alive.
//! - HTTPS: rustls (the ring provider) with a self-signed certificate for `localhost` and
//!   `127.0.0.1` that rcgen makes at start-up, ALPN offering `h2` and `http/1.1`; the connection
//!   is served by hyper's HTTP/2 server when the client picked `h2`, by its HTTP/1.1 server
//!   (keep-alive) otherwise.
//!
//! Both answer the same paths, count into the same counters (the parent runs one child at a
//! time), and count HTTP/2 requests apart, so that the table can say which protocol a mode
//! used.
//!
//! - `GET /entity/{id}`: 200 with a JSON entity of about 300 bytes.
//! - `GET /flaky`: the same entity, except every 10th request to it answers 503.
//! - `GET /outage`: always 503 (a full outage).
//! - `GET /slow`: the same entity after 10 ms, except every 10th request to it, answered after
//!   200 ms (one slow replica behind a load balancer: the tail hedging is for).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
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
    h2_requests: AtomicU64,
    flaky: AtomicU64,
    slow: AtomicU64,
}

/// What the upstream has seen so far, and its thread's CPU time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    /// Connections accepted.
    pub(crate) connections: u64,
    /// Requests answered.
    pub(crate) requests: u64,
    /// Of those, requests that came over HTTP/2.
    pub(crate) h2_requests: u64,
    /// CPU time of the server thread (user + system).
    pub(crate) cpu: Duration,
}

/// The running upstream; stops when dropped.
#[derive(Debug)]
pub(crate) struct Upstream {
    addr: SocketAddr,
    tls_addr: SocketAddr,
    certificate: Vec<u8>,
    counters: Arc<Counters>,
    handle: tokio::runtime::Handle,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Whether the server thread is pinned to its own core.
    pub(crate) pinned: Option<usize>,
}

impl Upstream {
    /// Starts both servers on 127.0.0.1 (free ports), pinned to `core` if given.
    pub(crate) fn start(core: Option<usize>) -> Self {
        let bind = || {
            let listener =
                std::net::TcpListener::bind("127.0.0.1:0").expect("loopback has free ports");
            listener.set_nonblocking(true).expect("non-blocking socket");
            let addr = listener
                .local_addr()
                .expect("a bound socket has an address");
            (listener, addr)
        };
        let (listener, addr) = bind();
        let (tls_listener, tls_addr) = bind();
        let (certificate, acceptor) = self_signed();
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
                    let tls_listener =
                        TcpListener::from_std(tls_listener).expect("listener joins the runtime");
                    loop {
                        tokio::select! {
                            _ = stopped.changed() => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                tokio::spawn(serve_plain(stream, serving.clone()));
                            }
                            accepted = tls_listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                tokio::spawn(serve_tls(stream, acceptor.clone(), serving.clone()));
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
            tls_addr,
            certificate,
            counters,
            handle,
            stop,
            thread: Some(thread),
            pinned,
        }
    }

    /// The plain HTTP server's port.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The HTTPS server's port.
    pub(crate) fn tls_port(&self) -> u16 {
        self.tls_addr.port()
    }

    /// The HTTPS server's self-signed certificate (DER), the one root a client must trust.
    pub(crate) fn certificate(&self) -> &[u8] {
        &self.certificate
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
            h2_requests: self.counters.h2_requests.load(Ordering::Relaxed),
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

/// A fresh self-signed certificate for `localhost` and `127.0.0.1` (DER) and a TLS acceptor
/// serving it with ALPN `h2` and `http/1.1` (the server's preference first).
fn self_signed() -> (Vec<u8>, tokio_rustls::TlsAcceptor) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let made = rcgen::generate_simple_self_signed(names)
        .expect("rcgen makes a certificate for valid names");
    let certificate = made.cert.der().to_vec();
    let key = made.key_pair.serialize_der();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(certificate.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .expect("rcgen's key matches its certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (
        certificate,
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

/// Serves one plain-HTTP connection (HTTP/1.1, keep-alive).
async fn serve_plain(stream: TcpStream, counters: Arc<Counters>) {
    let _ = stream.set_nodelay(true);
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), Answering(counters))
        .await;
}

/// Serves one HTTPS connection: the handshake, then HTTP/2 if ALPN picked `h2`, else HTTP/1.1.
async fn serve_tls(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    counters: Arc<Counters>,
) {
    let _ = stream.set_nodelay(true);
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, Answering(counters))
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, Answering(counters))
            .await;
    }
}

/// The service both servers run: [`answer`] with the shared counters.
#[derive(Clone, Debug)]
struct Answering(Arc<Counters>);

impl hyper::service::Service<Request<Incoming>> for Answering {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        match answer(&req, &self.0) {
            (response, None) => Answer::Now(Some(response)),
            (response, Some(delay)) => {
                Answer::Later(Box::pin(tokio::time::sleep(delay)), Some(response))
            }
        }
    }
}

/// A response now, or after a sleep (the `slow` path only: no allocation for the others).
#[derive(Debug)]
enum Answer {
    Now(Option<Response<Full<Bytes>>>),
    Later(
        std::pin::Pin<Box<tokio::time::Sleep>>,
        Option<Response<Full<Bytes>>>,
    ),
}

impl std::future::Future for Answer {
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let response = match self.get_mut() {
            Answer::Now(response) => response,
            Answer::Later(sleep, response) => {
                if sleep.as_mut().poll(cx).is_pending() {
                    return std::task::Poll::Pending;
                }
                response
            }
        };
        std::task::Poll::Ready(Ok(response
            .take()
            .expect("hyper polls a service future only until it is ready")))
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

/// The response to `req`, and how long to wait before sending it (the `slow` path only).
fn answer(
    req: &Request<Incoming>,
    counters: &Counters,
) -> (Response<Full<Bytes>>, Option<Duration>) {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    if req.version() == http::Version::HTTP_2 {
        counters.h2_requests.fetch_add(1, Ordering::Relaxed);
    }
    let unavailable = || {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"unavailable"}"#.to_owned(),
        )
    };
    let path = req.uri().path();
    if path == "/slow" {
        let n = counters.slow.fetch_add(1, Ordering::Relaxed) + 1;
        let delay = if n % 10 == 0 { 200 } else { 10 };
        return (
            json(StatusCode::OK, entity_json(n)),
            Some(Duration::from_millis(delay)),
        );
    }
    let response = if let Some(id) = path.strip_prefix("/entity/") {
        match id.parse::<u64>() {
            Ok(id) => json(StatusCode::OK, entity_json(id)),
            Err(_) => json(
                StatusCode::NOT_FOUND,
                r#"{"error":"no such entity"}"#.to_owned(),
            ),
        }
    } else {
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
    };
    (response, None)
}
