//! A loopback fault server: scriptable per request, recording every request it sees.
//!
//! It speaks HTTP/1.x by hand over raw TCP (so that it can misbehave in every way a real
//! upstream does: close or reset before the head or mid-body, lie about the length, drip,
//! stall, never answer, answer as HTTP/1.0, send a broken chunk), optionally under TLS with a
//! freshly generated self-signed certificate, and HTTP/2 over TLS (ALPN `h2`) through hyper.
//! It binds 127.0.0.1 on a random port and stops when dropped.
//!
//! ```no_run
//! use egress_tests::server::{FaultServer, Reply};
//! let server = FaultServer::start(FaultServer::script([Reply::status(503), Reply::json(200, "{}")]));
//! // ... point a client at server.url("/entities/7") ...
//! assert_eq!(server.requests().len(), 2);
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test server: a panicking handler must not hide every later request.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a reply misbehaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// None: a well-formed response with `Content-Length`.
    #[default]
    None,
    /// Close the connection after reading the request, before any byte of the head.
    CloseBeforeHead,
    /// Reset the connection (linger 0) before any byte of the head.
    ResetBeforeHead,
    /// Send the head and `after` body bytes, then close.
    CloseMidBody {
        /// Body bytes sent before closing.
        after: usize,
    },
    /// Send the head and `after` body bytes, then reset (linger 0).
    ResetMidBody {
        /// Body bytes sent before resetting.
        after: usize,
    },
    /// Declare `Content-Length: declared` but send only the body, then close.
    WrongLength {
        /// The length announced in the head.
        declared: usize,
    },
    /// Announce no length (chunked) and send chunks of the body forever, until the client closes.
    EndlessBody,
    /// Send the body in `chunk`-byte pieces, one every `every`.
    Drip {
        /// Bytes per piece.
        chunk: usize,
        /// Time between pieces.
        every: Duration,
    },
    /// Send the head and `after` body bytes, then go silent for `pause`, then the rest.
    StallMidBody {
        /// Body bytes sent before the stall.
        after: usize,
        /// How long the stall lasts.
        pause: Duration,
    },
    /// Read the request and never answer (the connection stays open until the server stops).
    NeverAnswer,
    /// Answer as an HTTP/1.0 peer: no `Content-Length`, body delimited by closing.
    Http10,
    /// Chunked encoding with an invalid chunk-size line after the first chunk.
    BadChunk,
    /// Send an interim `103 Early Hints` response (with a `link` header) first, then the reply.
    EarlyHints,
    /// Send the head with the reply's own headers only (no `Content-Length` or
    /// `Transfer-Encoding` of the server's), then the body, then close: a body delimited by the
    /// close (RFC 9112 6.3 item 8). With a reply header `transfer-encoding: chunked, gzip`
    /// (chunked not the final coding) it is RFC 9112 6.3 item 4's case: the body still runs
    /// until the close, whatever chunk framing it seems to contain.
    CloseDelimited,
    /// Send the head with the reply's own headers only (no framing header added) and no body,
    /// and keep the connection open: what a server answers to a HEAD, or with a 204 or 304,
    /// whose `Content-Length` (set one with [`Reply::header`]) announces a body it never sends
    /// (RFC 9112 6.3 item 1).
    NoBody,
    /// Send an unsolicited `101 Switching Protocols` (`upgrade: h2c`, `connection: upgrade`)
    /// instead of the reply, whatever the request asked for; then keep reading requests on the
    /// connection as HTTP/1.1 and answer them normally, so that a client that reuses the
    /// connection shows up as a second request on the same [`Seen::connection`].
    SwitchingProtocols,
    /// Announce `Transfer-Encoding: chunked` and send the body verbatim as the chunked framing
    /// (chunk-size lines and all: for malformed framing), then wait for the client to close
    /// (at most 2 s) and close.
    RawChunked,
    /// Answer as soon as the request head is read, before reading its body: send the reply with
    /// `connection: close` and shut the write side (FIN). Then, with `drain`, read and discard
    /// whatever the client still sends until it closes (at most 2 s) before closing: the
    /// lingering close of RFC 9112 9.6, so that the kernel resets nothing before the client has
    /// read the answer. Without `drain`, read nothing more, wait 500 ms (on loopback the answer
    /// is long acknowledged, after which RFC 9112 9.6 lets a server stop reading) and close,
    /// which sends a reset if request bytes are left unread. Only a server started with
    /// [`FaultServer::start_answering_on_the_head`] calls its handler before the body is read;
    /// another one sends this reply after reading the body.
    EarlyResponse {
        /// Read the rest of the request until the client closes, before closing.
        drain: bool,
    },
    /// Over HTTP/2 (a server started with [`FaultServer::start_tls_h2_frames`]): reset the
    /// request's stream with `REFUSED_STREAM` instead of answering, which tells the client
    /// that the request was not processed (RFC 9113 8.7). HTTP/1.1 has no such signal: there
    /// the connection is closed before the head, as [`Fault::CloseBeforeHead`].
    RefusedStream,
    /// Answer, then end the connection: over HTTP/2 (a server started with
    /// [`FaultServer::start_tls_h2_frames`]) a graceful shutdown, `GOAWAY` (RFC 9113 6.8),
    /// the streams in flight answered and the connection closed; over HTTP/1.1 the reply
    /// carries `connection: close` and the connection is closed after it.
    GoAwayAfter,
}

/// One scripted reply.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// Response headers (besides the framing headers the server adds).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// Delay before the head is sent.
    pub delay: Duration,
    /// How the reply misbehaves.
    pub fault: Fault,
}

impl Reply {
    /// A reply with `status`, no headers and an empty body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
            fault: Fault::None,
        }
    }

    /// A JSON reply.
    pub fn json(status: u16, body: &str) -> Self {
        Self::status(status)
            .header("content-type", "application/json")
            .body(body.to_owned())
    }

    /// A reply that only misbehaves (the status is 200 for faults that send a head).
    pub fn fault(fault: Fault) -> Self {
        Self {
            fault,
            ..Self::status(200)
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Waits before sending the head.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the fault.
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }
}

/// A request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// Headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// When the request was complete (tokio time: virtual under a paused test clock).
    pub at: Instant,
    /// The connection it came on (numbered from 1).
    pub connection: u64,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub version: &'static str,
}

impl Seen {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What decides the reply to each request: its index (from 0) and the request.
pub type Handler = Arc<dyn Fn(usize, &Seen) -> Reply + Send + Sync>;

/// A connection the client closed: [`FaultServer::closed_connections`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The connection (numbered from 1, as in [`Seen::connection`]).
    pub connection: u64,
    /// When the server saw the end of the stream or a reset (tokio time).
    pub at: Instant,
}

struct Shared {
    handler: Handler,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicU64,
    closed: Mutex<Vec<Closed>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Call the handler once the head is read, before the body.
    on_the_head: bool,
    /// Serve HTTP/2 with the h2 crate's server (see [`FaultServer::start_tls_h2_frames`]).
    h2_frames: bool,
}

impl Shared {
    fn new(handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>, on_the_head: bool) -> Self {
        Self {
            handler,
            seen: Mutex::default(),
            connections: AtomicU64::new(0),
            closed: Mutex::default(),
            tls,
            on_the_head,
            h2_frames: false,
        }
    }
}

/// A running fault server; see the [module docs](self).
pub struct FaultServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    certificate: Option<Vec<u8>>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for FaultServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultServer")
            .field("addr", &self.addr)
            .field("tls", &self.certificate.is_some())
            .finish()
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, as DER.
#[derive(Clone, Debug)]
pub struct TestCertificate {
    /// The certificate.
    pub certificate: Vec<u8>,
    /// Its private key (PKCS#8).
    pub key: Vec<u8>,
}

impl TestCertificate {
    /// Generates a new one.
    pub fn generate() -> Self {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let cert = rcgen::generate_simple_self_signed(names)
            .expect("rcgen makes a certificate for valid names");
        Self {
            certificate: cert.cert.der().to_vec(),
            key: cert.key_pair.serialize_der(),
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor_offering(&[b"h2", b"http/1.1"])
    }

    fn acceptor_offering(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.certificate.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
            )
            .expect("rcgen's key matches its certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// A private certificate authority for mutual TLS (rcgen): a server certificate for
/// `localhost` and `127.0.0.1` and a client certificate signed by it, and a client
/// certificate from another CA, which the server does not trust. Client identities are PEM
/// (chain, and a PKCS#8 key), as a service keeps them on disk.
#[derive(Clone, Debug)]
pub struct MutualTls {
    /// The CA certificate (DER): clients trust it for the server, the server for clients.
    pub ca: Vec<u8>,
    /// The client certificate (PEM).
    pub client_cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub client_key_pem: String,
    /// A client certificate from a CA the server does not trust (PEM).
    pub stranger_cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub stranger_key_pem: String,
    server: TestCertificate,
}

impl MutualTls {
    /// Generates a CA, the server's certificate and both client certificates.
    pub fn generate() -> Self {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
        fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
            let key = KeyPair::generate().expect("rcgen makes keys");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key).expect("a CA certificate");
            (cert, key)
        }
        fn leaf(
            names: &[&str],
            usage: ExtendedKeyUsagePurpose,
            issuer: &(rcgen::Certificate, KeyPair),
        ) -> (rcgen::Certificate, KeyPair) {
            let key = KeyPair::generate().expect("rcgen makes keys");
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut params = CertificateParams::new(names).expect("valid names");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "egress test");
            params.extended_key_usages = vec![usage];
            let cert = params
                .signed_by(&key, &issuer.0, &issuer.1)
                .expect("the CA signs");
            (cert, key)
        }
        let authority = ca("egress test CA");
        let server = leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &authority,
        );
        let client = leaf(&[], ExtendedKeyUsagePurpose::ClientAuth, &authority);
        let other = ca("someone else's CA");
        let stranger = leaf(&[], ExtendedKeyUsagePurpose::ClientAuth, &other);
        Self {
            ca: authority.0.der().to_vec(),
            client_cert_pem: client.0.pem(),
            client_key_pem: client.1.serialize_pem(),
            stranger_cert_pem: stranger.0.pem(),
            stranger_key_pem: stranger.1.serialize_pem(),
            server: TestCertificate {
                certificate: server.0.der().to_vec(),
                key: server.1.serialize_der(),
            },
        }
    }

    /// A TLS acceptor that requires a client certificate signed by the CA.
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.clone()))
            .expect("rcgen's CA certificate parses");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("a client verifier with one root builds");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(self.server.certificate.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server.key.clone())),
            )
            .expect("rcgen's key matches its certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl FaultServer {
    /// A handler that answers with `replies` in order, then 500 "script exhausted".
    pub fn script(replies: impl IntoIterator<Item = Reply>) -> Handler {
        let queue = Mutex::new(replies.into_iter().collect::<VecDeque<_>>());
        Arc::new(move |_, _| {
            lock(&queue)
                .pop_front()
                .unwrap_or_else(|| Reply::json(500, r#"{"error":"script exhausted"}"#))
        })
    }

    /// A handler that always gives the same reply.
    pub fn always(reply: Reply) -> Handler {
        Arc::new(move |_, _| reply.clone())
    }

    /// Starts a plain HTTP server on its own thread and runtime.
    pub fn start(handler: Handler) -> Self {
        Self::start_with(handler, None, false)
    }

    /// Starts a plain HTTP server that calls the handler as soon as a request's head is read,
    /// before its body, so that a reply with [`Fault::EarlyResponse`] goes out while the client
    /// is still sending. The handler's [`Seen`] has an empty body; the recorded one gets the
    /// body once read, unless the reply was early (the body is then discarded).
    pub fn start_answering_on_the_head(handler: Handler) -> Self {
        Self::start_with(handler, None, true)
    }

    /// Starts a TLS server (HTTP/1.1 and HTTP/2 by ALPN) with a fresh self-signed certificate.
    pub fn start_tls(handler: Handler) -> Self {
        Self::start_with(handler, Some(TestCertificate::generate()), false)
    }

    /// Starts a TLS server that offers only `http/1.1` by ALPN, with a fresh self-signed
    /// certificate.
    pub fn start_tls_http1_only(handler: Handler) -> Self {
        let cert = TestCertificate::generate();
        let acceptor = cert.acceptor_offering(&[b"http/1.1"]);
        Self::start_with_acceptor(handler, Some((acceptor, cert.certificate)), false)
    }

    /// Starts a TLS server (HTTP/1.1 and HTTP/2 by ALPN) that requires a client certificate
    /// signed by `tls`'s CA (mutual TLS); its own certificate is signed by that CA too.
    pub fn start_mutual_tls(handler: Handler, tls: &MutualTls) -> Self {
        Self::start_with_acceptor(
            handler,
            Some((tls.acceptor(), tls.server.certificate.clone())),
            false,
        )
    }

    /// Starts a TLS server (HTTP/1.1 and HTTP/2 by ALPN) with a fresh self-signed certificate
    /// that serves HTTP/2 with the h2 crate's server instead of hyper's, so that a reply can
    /// refuse its stream ([`Fault::RefusedStream`]) or end the connection with a `GOAWAY`
    /// after it is answered ([`Fault::GoAwayAfter`]): what hyper's server cannot be told to do.
    pub fn start_tls_h2_frames(handler: Handler) -> Self {
        let cert = TestCertificate::generate();
        let mut shared = Shared::new(handler, Some(cert.acceptor()), false);
        shared.h2_frames = true;
        Self::start_shared(shared, Some(cert.certificate))
    }

    fn start_with(handler: Handler, cert: Option<TestCertificate>, on_the_head: bool) -> Self {
        let tls = cert.map(|c| (c.acceptor(), c.certificate));
        Self::start_with_acceptor(handler, tls, on_the_head)
    }

    fn start_with_acceptor(
        handler: Handler,
        tls: Option<(tokio_rustls::TlsAcceptor, Vec<u8>)>,
        on_the_head: bool,
    ) -> Self {
        let (acceptor, certificate) = tls.unzip();
        Self::start_shared(Shared::new(handler, acceptor, on_the_head), certificate)
    }

    fn start_shared(shared: Shared, certificate: Option<Vec<u8>>) -> Self {
        let (std_listener, addr) = loopback_listener();
        let shared = Arc::new(shared);
        let (stop, stopped) = watch::channel(false);
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-server-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(std_listener)
                        .expect("the listener joins the runtime");
                    accept_loop(listener, serving, stopped).await;
                });
                // Dropping the runtime cancels every connection task.
            })
            .expect("a thread can be spawned");
        Self {
            addr,
            shared,
            certificate,
            stop,
            thread: Some(thread),
        }
    }

    /// Starts a plain HTTP server on the current tokio runtime (for paused-time tests, where the
    /// server must share the test's clock).
    pub async fn spawn(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback has free ports");
        let addr = listener
            .local_addr()
            .expect("a bound socket has an address");
        let shared = Arc::new(Shared::new(handler, None, false));
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, shared.clone(), stopped));
        Self {
            addr,
            shared,
            certificate: None,
            stop,
            thread: None,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}` (or `https://localhost:PORT{path}` under TLS).
    pub fn url(&self, path: &str) -> String {
        match self.certificate {
            Some(_) => format!("https://localhost:{}{path}", self.addr.port()),
            None => format!("http://{}{path}", self.addr),
        }
    }

    /// The server certificate (DER), under TLS.
    pub fn certificate_der(&self) -> Option<&[u8]> {
        self.certificate.as_deref()
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The HTTP/1.x connections the client closed (end of stream or reset) while the server
    /// was waiting for the head of a request on them, in the order seen. Connections the server
    /// closed itself (after a fault, or `connection: close`) are not listed.
    pub fn closed_connections(&self) -> Vec<Closed> {
        lock(&self.shared.closed).clone()
    }

    /// How many accepted connections the client has not closed yet (by
    /// [`closed_connections`](Self::closed_connections)); connections the server closed itself
    /// still count as open here.
    pub fn open_connections(&self) -> u64 {
        self.connections() - lock(&self.shared.closed).len() as u64
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let id = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let shared = shared.clone();
                let stopped = stopped.clone();
                tasks.spawn(async move { serve_connection(stream, id, shared, stopped).await });
            }
        }
    }
    tasks.abort_all();
}

async fn serve_connection(
    stream: TcpStream,
    id: u64,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
) {
    let Some(acceptor) = shared.tls.clone() else {
        return serve_http1(Conn::Plain(stream), id, &shared, stopped).await;
    };
    let tls = match acceptor.accept(stream).into_fallible().await {
        Ok(tls) => tls,
        Err((_, mut stream)) => {
            // rustls has written its alert (a rejected client certificate, say). Close the
            // way nginx's lingering close does: send FIN, then read what the client already
            // sent, so that closing with unread data does not turn into a reset that could
            // destroy the alert before the client reads it.
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        if shared.h2_frames {
            return serve_h2_frames(tls, id, shared).await;
        }
        return serve_h2(tls, id, shared).await;
    }
    serve_http1(Conn::Tls(Box::new(tls)), id, &shared, stopped).await;
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    async fn read_some(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = match self {
            Self::Plain(s) => s.read(&mut chunk).await?,
            Self::Tls(s) => s.read(&mut chunk).await?,
        };
        buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.write_all(bytes).await,
            Self::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    /// Shuts the write side (FIN; under TLS, close_notify first).
    async fn shutdown_write(&mut self) {
        let _ = match self {
            Self::Plain(s) => s.shutdown().await,
            Self::Tls(s) => s.shutdown().await,
        };
    }

    /// Makes the coming close a reset: linger 0 sends RST instead of FIN.
    fn arm_reset(&self) {
        let tcp = match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        };
        let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
    }
}

/// How a request body is delimited.
enum Framing {
    Length(usize),
    Chunked,
}

/// Reads one request head; `None` at the end of the connection or on garbage. A connection
/// the client closed (or reset) between requests is recorded in `shared.closed`.
async fn read_head(
    conn: &mut Conn,
    buf: &mut Vec<u8>,
    id: u64,
    shared: &Shared,
) -> Option<(Seen, bool, Framing)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = req.method?.to_owned();
                let path = req.path?.to_owned();
                let version = if req.version == Some(0) {
                    "HTTP/1.0"
                } else {
                    "HTTP/1.1"
                };
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let find = |n: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.to_ascii_lowercase())
                };
                let close = find("connection").is_some_and(|v| v.contains("close"))
                    || version == "HTTP/1.0";
                let framing = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                    Framing::Chunked
                } else {
                    Framing::Length(
                        find("content-length")
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0),
                    )
                };
                buf.drain(..head_len);
                let seen = Seen {
                    method,
                    path,
                    headers,
                    body: Bytes::new(),
                    at: tokio::time::Instant::now().into_std(),
                    connection: id,
                    version,
                };
                return Some((seen, close, framing));
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > 1 << 20 {
                    return None;
                }
                match conn.read_some(buf).await {
                    Ok(n) if n > 0 => {}
                    _ => {
                        lock(&shared.closed).push(Closed {
                            connection: id,
                            at: tokio::time::Instant::now().into_std(),
                        });
                        return None;
                    }
                }
            }
            Err(_) => return None,
        }
    }
}

/// Reads a request body; `None` if the connection ends first or the framing is garbage.
async fn read_body(conn: &mut Conn, buf: &mut Vec<u8>, framing: Framing) -> Option<Vec<u8>> {
    match framing {
        Framing::Chunked => read_chunked(conn, buf).await,
        Framing::Length(length) => {
            while buf.len() < length {
                if conn.read_some(buf).await.ok()? == 0 {
                    return None;
                }
            }
            Some(buf.drain(..length).collect())
        }
    }
}

/// Reads and drops whatever the client sends until it closes, for at most `limit`.
async fn drain(conn: &mut Conn, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        let mut sink = Vec::with_capacity(8192);
        loop {
            sink.clear();
            match conn.read_some(&mut sink).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    })
    .await;
}

async fn read_chunked(conn: &mut Conn, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                break p;
            }
            if conn.read_some(buf).await.ok()? == 0 {
                return None;
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            if conn.read_some(buf).await.ok()? == 0 {
                return None;
            }
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
        if size == 0 {
            return Some(body);
        }
    }
}

fn head(reply: &Reply, framing: &str, version: &str) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut head = format!("{version} {} {reason}\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(framing);
    head.push_str("\r\n");
    head.into_bytes()
}

async fn serve_http1(mut conn: Conn, id: u64, shared: &Shared, mut stopped: watch::Receiver<bool>) {
    let mut buf = Vec::new();
    loop {
        let Some((mut seen, close, framing)) = read_head(&mut conn, &mut buf, id, shared).await
        else {
            return;
        };
        let reply = if shared.on_the_head {
            let index = {
                let mut all = lock(&shared.seen);
                all.push(seen.clone());
                all.len() - 1
            };
            let reply = (shared.handler)(index, &seen);
            if !matches!(reply.fault, Fault::EarlyResponse { .. }) {
                let Some(body) = read_body(&mut conn, &mut buf, framing).await else {
                    return;
                };
                lock(&shared.seen)[index].body = Bytes::from(body);
            }
            reply
        } else {
            let Some(body) = read_body(&mut conn, &mut buf, framing).await else {
                return;
            };
            seen.body = Bytes::from(body);
            seen.at = tokio::time::Instant::now().into_std();
            let index = {
                let mut all = lock(&shared.seen);
                all.push(seen.clone());
                all.len() - 1
            };
            (shared.handler)(index, &seen)
        };
        // A correct server sends no body in answer to a HEAD (RFC 9110 9.3.2).
        let is_head = seen.method == "HEAD";
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let body = reply.body.clone();
        let length = format!("content-length: {}\r\n", body.len());
        let result: std::io::Result<bool> = async {
            match reply.fault.clone() {
                Fault::None => {
                    let body = if is_head { &[][..] } else { &body[..] };
                    conn.write(&[head(&reply, &length, "HTTP/1.1"), body.to_vec()].concat())
                        .await?;
                    Ok(!close)
                }
                Fault::EarlyHints => {
                    let hints =
                        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n";
                    conn.write(hints).await?;
                    let body = if is_head { &[][..] } else { &body[..] };
                    conn.write(&[head(&reply, &length, "HTTP/1.1"), body.to_vec()].concat())
                        .await?;
                    Ok(!close)
                }
                Fault::CloseDelimited => {
                    conn.write(&[head(&reply, "", "HTTP/1.1"), body.to_vec()].concat())
                        .await?;
                    Ok(false)
                }
                Fault::NoBody => {
                    conn.write(&head(&reply, "", "HTTP/1.1")).await?;
                    Ok(!close)
                }
                Fault::SwitchingProtocols => {
                    conn.write(
                        b"HTTP/1.1 101 Switching Protocols\r\n\
                          connection: upgrade\r\nupgrade: h2c\r\n\r\n",
                    )
                    .await?;
                    Ok(true)
                }
                Fault::RawChunked => {
                    conn.write(
                        &[
                            head(&reply, "transfer-encoding: chunked\r\n", "HTTP/1.1"),
                            body.to_vec(),
                        ]
                        .concat(),
                    )
                    .await?;
                    drain(&mut conn, Duration::from_secs(2)).await;
                    Ok(false)
                }
                Fault::EarlyResponse { drain: read_on } => {
                    let framing = format!("{length}connection: close\r\n");
                    conn.write(&[head(&reply, &framing, "HTTP/1.1"), body.to_vec()].concat())
                        .await?;
                    conn.shutdown_write().await;
                    if read_on {
                        drain(&mut conn, Duration::from_secs(2)).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Ok(false)
                }
                Fault::CloseBeforeHead | Fault::RefusedStream => Ok(false),
                Fault::GoAwayAfter => {
                    let body = if is_head { &[][..] } else { &body[..] };
                    let framing = format!("{length}connection: close\r\n");
                    conn.write(&[head(&reply, &framing, "HTTP/1.1"), body.to_vec()].concat())
                        .await?;
                    Ok(false)
                }
                Fault::ResetBeforeHead => {
                    conn.arm_reset();
                    Ok(false)
                }
                Fault::CloseMidBody { after } => {
                    conn.write(&head(&reply, &length, "HTTP/1.1")).await?;
                    conn.write(&body[..after.min(body.len())]).await?;
                    Ok(false)
                }
                Fault::ResetMidBody { after } => {
                    conn.write(&head(&reply, &length, "HTTP/1.1")).await?;
                    conn.write(&body[..after.min(body.len())]).await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    conn.arm_reset();
                    Ok(false)
                }
                Fault::WrongLength { declared } => {
                    let framing = format!("content-length: {declared}\r\n");
                    conn.write(&[head(&reply, &framing, "HTTP/1.1"), body.to_vec()].concat())
                        .await?;
                    Ok(false)
                }
                Fault::EndlessBody => {
                    conn.write(&head(&reply, "transfer-encoding: chunked\r\n", "HTTP/1.1"))
                        .await?;
                    let chunk = [b'x'; 16 * 1024];
                    let frame = [
                        format!("{:x}\r\n", chunk.len()).into_bytes(),
                        chunk.to_vec(),
                        b"\r\n".to_vec(),
                    ]
                    .concat();
                    loop {
                        if *stopped.borrow() {
                            return Ok(false);
                        }
                        conn.write(&frame).await?;
                    }
                }
                Fault::Drip { chunk, every } => {
                    conn.write(&head(&reply, &length, "HTTP/1.1")).await?;
                    for piece in body.chunks(chunk.max(1)) {
                        tokio::time::sleep(every).await;
                        conn.write(piece).await?;
                    }
                    Ok(!close)
                }
                Fault::StallMidBody { after, pause } => {
                    let after = after.min(body.len());
                    conn.write(&head(&reply, &length, "HTTP/1.1")).await?;
                    conn.write(&body[..after]).await?;
                    tokio::time::sleep(pause).await;
                    conn.write(&body[after..]).await?;
                    Ok(!close)
                }
                Fault::NeverAnswer => {
                    let _ = stopped.changed().await;
                    Ok(false)
                }
                Fault::Http10 => {
                    conn.write(&[head(&reply, "", "HTTP/1.0"), body.to_vec()].concat())
                        .await?;
                    Ok(false)
                }
                Fault::BadChunk => {
                    let first = format!("{:x}\r\n", body.len().min(4));
                    let bytes = [
                        head(&reply, "transfer-encoding: chunked\r\n", "HTTP/1.1"),
                        first.into_bytes(),
                        body[..body.len().min(4)].to_vec(),
                        b"\r\nzz-not-hex\r\n".to_vec(),
                    ]
                    .concat();
                    conn.write(&bytes).await?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(false)
                }
            }
        }
        .await;
        match result {
            Ok(true) => continue,
            _ => return,
        }
    }
}

async fn serve_h2<S>(tls: S, id: u64, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Full};
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let shared = shared.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let reply = h2_reply(&shared, &parts, body, id).await;
                let (head, ()) = h2_head(&reply).into_parts();
                Ok::<_, std::convert::Infallible>(http::Response::from_parts(
                    head,
                    Full::new(reply.body.clone()),
                ))
            }
        });
    let io = hyper_util::rt::TokioIo::new(tls);
    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

/// Records an HTTP/2 request as seen, asks the handler for its reply and waits out the reply's
/// delay.
async fn h2_reply(shared: &Shared, parts: &http::request::Parts, body: Bytes, id: u64) -> Reply {
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        at: tokio::time::Instant::now().into_std(),
        connection: id,
        version: "HTTP/2",
    };
    let index = {
        let mut all = lock(&shared.seen);
        all.push(seen.clone());
        all.len() - 1
    };
    let reply = (shared.handler)(index, &seen);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    reply
}

/// The response head of `reply` (its status and its own headers) for HTTP/2.
fn h2_head(reply: &Reply) -> http::Response<()> {
    let mut response = http::Response::new(());
    *response.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &reply.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
}

/// HTTP/2 through the h2 crate's server (for [`FaultServer::start_tls_h2_frames`]): each
/// stream is answered by a task of its own while this one drives the connection; a reply with
/// [`Fault::RefusedStream`] resets its stream with `REFUSED_STREAM`, one with
/// [`Fault::GoAwayAfter`] starts a graceful shutdown once it is answered. Other faults are
/// answered as [`Fault::None`].
async fn serve_h2_frames<S>(tls: S, id: u64, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(mut connection) = h2::server::handshake(tls).await else {
        return;
    };
    let (go_away, mut going_away) = tokio::sync::mpsc::unbounded_channel::<()>();
    loop {
        tokio::select! {
            next = connection.accept() => {
                let Some(Ok((request, respond))) = next else {
                    return;
                };
                tokio::spawn(answer_h2_stream(request, respond, id, shared.clone(), go_away.clone()));
            }
            Some(()) = going_away.recv() => connection.graceful_shutdown(),
        }
    }
}

async fn answer_h2_stream(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    id: u64,
    shared: Arc<Shared>,
    go_away: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let (parts, mut stream) = request.into_parts();
    let mut body = Vec::new();
    while let Some(Ok(chunk)) = stream.data().await {
        let _ = stream.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    let reply = h2_reply(&shared, &parts, Bytes::from(body), id).await;
    if reply.fault == Fault::RefusedStream {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    let empty = reply.body.is_empty() || parts.method == http::Method::HEAD;
    let Ok(mut send) = respond.send_response(h2_head(&reply), empty) else {
        return;
    };
    if !empty {
        let _ = send.send_data(reply.body.clone(), true);
    }
    if reply.fault == Fault::GoAwayAfter {
        let _ = go_away.send(());
    }
}

/// An HTTP/2 server written frame by frame (over TLS, ALPN `h2` only), for the one case the h2
/// crate's server cannot be made to produce: on its first connection it answers the first
/// request with `GOAWAY` whose last stream identifier is 0 (`NO_ERROR`), so that the request's
/// stream lies above it and was not processed (RFC 9113 6.8), then closes that connection
/// after 200 ms. Every request on a later connection gets `200` with no body and no headers
/// (one `HEADERS` frame, `:status` from the static table). Requests must fit one `HEADERS`
/// frame. It binds 127.0.0.1 on a free port; its thread and connections stop when dropped.
#[derive(Debug)]
pub struct GoAwayBelowFirstStream {
    port: u16,
    certificate: Vec<u8>,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GoAwayBelowFirstStream {
    /// Binds and starts serving, with a fresh self-signed certificate.
    pub fn start() -> Self {
        let cert = TestCertificate::generate();
        let acceptor = cert.acceptor_offering(&[b"h2"]);
        let (listener, addr) = loopback_listener();
        let port = addr.port();
        let (requests, connections) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (counted, accepted) = (requests.clone(), connections.clone());
        let (stop, mut stopped) = watch::channel(false);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            runtime.block_on(async move {
                let listener =
                    TcpListener::from_std(listener).expect("the listener joins the runtime");
                loop {
                    tokio::select! {
                        next = listener.accept() => {
                            let Ok((stream, _)) = next else { continue };
                            let first = accepted.fetch_add(1, Ordering::SeqCst) == 0;
                            let (acceptor, counted) = (acceptor.clone(), counted.clone());
                            tokio::spawn(async move {
                                if let Ok(tls) = acceptor.accept(stream).await {
                                    let _ = serve_h2_by_hand(tls, first, &counted).await;
                                }
                            });
                        }
                        _ = stopped.changed() => return,
                    }
                }
            });
        });
        Self {
            port,
            certificate: cert.certificate,
            requests,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// The server certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }

    /// Requests (`HEADERS` frames) received so far, the refused one included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for GoAwayBelowFirstStream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A non-blocking listener on 127.0.0.1 and a free port, and its address.
fn loopback_listener() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback has free ports");
    listener
        .set_nonblocking(true)
        .expect("a listener can be made non-blocking");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    (listener, addr)
}

/// One HTTP/2 frame: its 9-byte header (RFC 9113 4.1) and `payload`.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("test frames are small");
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

/// Serves one connection of [`GoAwayBelowFirstStream`].
async fn serve_h2_by_hand<S>(tls: S, first: bool, requests: &AtomicU64) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Frame types and flags (RFC 9113 6).
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    const ACK: u8 = 1;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    let (mut read, mut write) = tokio::io::split(tls);
    let mut preface = [0u8; 24];
    read.read_exact(&mut preface).await?;
    // The server's connection preface: its SETTINGS (none changed), RFC 9113 3.4.
    write.write_all(&h2_frame(SETTINGS, 0, 0, &[])).await?;
    write.flush().await?;
    loop {
        let mut head = [0u8; 9];
        read.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        read.read_exact(&mut payload).await?;
        let answer = match kind {
            SETTINGS if flags & ACK == 0 => h2_frame(SETTINGS, ACK, 0, &[]),
            PING if flags & ACK == 0 => h2_frame(PING, ACK, 0, &payload),
            HEADERS if first => {
                requests.fetch_add(1, Ordering::SeqCst);
                // Last stream identifier 0, error code NO_ERROR (RFC 9113 6.8).
                write.write_all(&h2_frame(GOAWAY, 0, 0, &[0; 8])).await?;
                write.flush().await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(());
            }
            HEADERS => {
                requests.fetch_add(1, Ordering::SeqCst);
                if flags & END_STREAM == 0 {
                    continue;
                }
                // `:status: 200` is entry 8 of HPACK's static table (RFC 7541 appendix A).
                h2_frame(HEADERS, END_HEADERS | END_STREAM, stream, &[0x88])
            }
            DATA if flags & END_STREAM != 0 => {
                h2_frame(HEADERS, END_HEADERS | END_STREAM, stream, &[0x88])
            }
            _ => continue,
        };
        write.write_all(&answer).await?;
        write.flush().await?;
    }
}

/// A loopback listener that accepts connections and holds them open without reading or
/// answering: a TLS handshake to it never completes, a request body to it never drains. Its
/// thread stops, and the connections close, when the value is dropped.
#[derive(Debug)]
pub struct Silent {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    /// Binds 127.0.0.1 on a free port and starts accepting.
    pub fn start() -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (listener, addr) = loopback_listener();
        let port = addr.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// `{scheme}://127.0.0.1:PORT` (`localhost` for `https`, so that a certificate name could
    /// match).
    pub fn url(&self, scheme: &str) -> String {
        let host = if scheme == "https" {
            "localhost"
        } else {
            "127.0.0.1"
        };
        format!("{scheme}://{host}:{}", self.port)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A loopback listener whose accept queue is full, so that a new connection never completes:
/// for connect-timeout tests. Holds the queued connections until dropped.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<std::net::TcpStream>,
}

impl Blackhole {
    /// Binds a listener with a backlog of 1 and fills its queue.
    pub fn new() -> std::io::Result<Self> {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        listener.listen(1)?;
        let addr = listener
            .local_addr()?
            .as_socket()
            .expect("an IPv4 socket has an IPv4 address");
        let mut queued = Vec::new();
        // Fill the queue: connects succeed until it is full, then hang (the SYN is dropped).
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => queued.push(stream),
                Err(_) => {
                    return Ok(Self {
                        addr,
                        _listener: listener,
                        _queued: queued,
                    });
                }
            }
        }
        Err(std::io::Error::other("the accept queue never filled up"))
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}
