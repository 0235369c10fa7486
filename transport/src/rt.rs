//! What a backend gives the transport: a runtime (spawn, sleep, now) and a connector (TCP and
//! TLS to an origin). Std futures and hyper's IO traits only, so no runtime is named here.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use egress_core::rt::BoxFuture;
use http::uri::{Authority, Scheme, Uri};

/// A boxed error of any source, as connectors report them.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The runtime pieces the transport needs: running connection drivers and the idle reaper in
/// the background, sleeping until an instant, and reading the monotonic clock the sleeps use.
pub trait Runtime: fmt::Debug + Send + Sync + 'static {
    /// Runs `future` in the background until it completes.
    fn spawn(&self, future: BoxFuture<'static, ()>);
    /// A future that completes at `at` (at once when `at` has passed).
    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()>;
    /// The monotonic time now, on the clock [`sleep_until`](Self::sleep_until) uses.
    fn now(&self) -> Instant;
}

/// A byte stream hyper can drive: a TCP connection, or TLS over one.
pub trait Io: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static {}

impl<T: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static> Io for T {}

/// Opens connections to origins: name resolution, TCP and, for `https`, TLS with ALPN
/// offering `h2` and `http/1.1`. The transport bounds the whole of it by the attempt's connect
/// deadline, so a connector needs no timeout of its own.
pub trait Connect: fmt::Debug + Send + Sync + 'static {
    /// A new connection to `origin`.
    fn connect<'a>(&'a self, origin: &'a Origin) -> BoxFuture<'a, Result<Connected, ConnectError>>;

    /// How `http://` requests to `origin` are written on connections this connector opened:
    /// `Some` when they go to an HTTP proxy (in absolute-form, RFC 9112 3.2.2, with its
    /// `Proxy-Authorization`), `None` (the default) when the connection goes to the origin.
    fn forward_proxy(&self, origin: &Origin) -> Option<Forward> {
        let _ = origin;
        None
    }
}

/// How requests are written to an HTTP proxy that forwards them (see
/// [`Connect::forward_proxy`]).
#[derive(Clone, Debug, Default)]
pub struct Forward {
    /// The `Proxy-Authorization` value sent with each request (marked sensitive).
    pub authorization: Option<http::HeaderValue>,
}

/// The protocols a TLS handshake offers by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Alpn {
    /// `h2` and `http/1.1`: to an origin.
    Http2AndHttp1,
    /// `http/1.1` only: to an `https://` proxy, which is spoken to in HTTP/1.1 (`CONNECT`, or
    /// requests in absolute-form).
    Http1,
}

impl Alpn {
    /// `to_origin` for [`Http2AndHttp1`](Self::Http2AndHttp1), `to_proxy` for
    /// [`Http1`](Self::Http1): a backend keeps one TLS connector for each.
    pub fn choose<'a, T>(self, to_origin: &'a T, to_proxy: &'a T) -> &'a T {
        match self {
            Self::Http2AndHttp1 => to_origin,
            Self::Http1 => to_proxy,
        }
    }
}

/// The runtime-specific steps of opening a connection, which the transport's [`Connector`]
/// composes into direct connections, connections through an HTTP proxy (plain or TLS) and
/// `CONNECT` tunnels (RFC 9110 9.3.6) with TLS to the origin inside. A backend implements this
/// instead of [`Connect`] to get proxies for free.
///
/// [`Connector`]: crate::Connector
pub trait Dial: fmt::Debug + Send + Sync + 'static {
    /// A TCP connection as the backend's runtime has it.
    type Tcp: Send + 'static;

    /// A TCP connection to `host:port` (resolved, each address tried in turn; see
    /// [`connect_first`]).
    fn tcp(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<Self::Tcp, ConnectError>> + Send;

    /// `tcp` as it is: plain HTTP/1.1.
    fn plain(&self, tcp: Self::Tcp) -> Connected;

    /// A TLS handshake over `under` with `server_name`, offering `alpn`, presenting the
    /// client identity if the backend has one; the protocol ALPN chose.
    fn tls(
        &self,
        under: TlsOver<Self::Tcp>,
        server_name: &str,
        alpn: Alpn,
    ) -> impl Future<Output = Result<Connected, ConnectError>> + Send;
}

/// What a TLS handshake runs over.
pub enum TlsOver<T> {
    /// A TCP connection of the backend's own.
    Tcp(T),
    /// Another stream: a `CONNECT` tunnel (TLS with the origin inside it).
    Stream(Box<dyn Io>),
}

impl<T> fmt::Debug for TlsOver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp(_) => "TlsOver::Tcp",
            Self::Stream(_) => "TlsOver::Stream",
        })
    }
}

/// Where a connection goes: scheme, host and port. Connections are pooled per origin.
///
/// Made for every request (the pool's key); the host and port are read from the authority
/// only when a connection is opened, so that a request on a pooled connection does not parse
/// them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    https: bool,
    /// The authority as the URI spells it (the pool's key).
    authority: Authority,
}

impl Origin {
    /// The origin of an absolute `http` or `https` URI; `None` for any other URI, or one with
    /// no host.
    pub fn of(uri: &Uri) -> Option<Self> {
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        // The host is what follows the userinfo up to the port: none when that part is empty,
        // starts with the port's `:`, or is an empty IPv6 literal.
        let text = authority.as_str();
        let after_userinfo = text.rsplit_once('@').map_or(text, |(_, rest)| rest);
        if after_userinfo.is_empty()
            || after_userinfo.starts_with(':')
            || after_userinfo.starts_with("[]")
        {
            return None;
        }
        Some(Self {
            https,
            authority: authority.clone(),
        })
    }

    /// Whether the connection needs TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host name or IP address, without brackets: what to resolve, and the TLS server name.
    pub fn host(&self) -> &str {
        let host = self.authority.host();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// The port (the scheme's default when the URI names none).
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.https { 443 } else { 80 })
    }

    /// The authority as the URI spells it.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

/// The protocol ALPN chose for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (plain HTTP, or TLS where ALPN chose `http/1.1` or nothing).
    Http1,
    /// HTTP/2 (TLS where ALPN chose `h2`).
    Http2,
}

impl Protocol {
    /// The protocol of a TLS connection whose ALPN chose `alpn`: HTTP/2 for `h2`, else
    /// HTTP/1.1.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Self::Http2,
            _ => Self::Http1,
        }
    }
}

/// A connection a [`Connect`] opened.
pub struct Connected {
    pub(crate) io: Box<dyn Io>,
    pub(crate) protocol: Protocol,
    /// Set once TLS failed on the stream after the handshake (see [`Connected::tls`]).
    pub(crate) tls_failed: Option<Arc<AtomicBool>>,
}

impl Connected {
    /// `io`, over which the transport will speak `protocol`.
    pub fn new(io: impl Io, protocol: Protocol) -> Self {
        Self {
            io: Box::new(io),
            protocol,
            tls_failed: None,
        }
    }

    /// A TLS stream `io` over which the transport will speak `protocol`. Read and write
    /// errors for which `is_tls_error` holds (an alert, a TLS protocol failure: not the socket's
    /// own errors) become [`ConnectStep::Tls`] failures, and a request that fails on the new
    /// connection after one fails with `TransportErrorKind::Tls` (never retried) rather than
    /// a retryable close, whatever hyper's HTTP/2 layer makes of the error. In TLS 1.3 the
    /// client's handshake ends before the server has checked the client certificate: a server
    /// that rejects it says so with an alert on the first read (RFC 8446 4.4.2.4).
    pub fn tls(io: impl Io, protocol: Protocol, is_tls_error: fn(&io::Error) -> bool) -> Self {
        let failed = Arc::new(AtomicBool::new(false));
        let io = TlsErrors {
            io,
            is_tls_error,
            failed: Arc::clone(&failed),
        };
        Self {
            tls_failed: Some(failed),
            ..Self::new(io, protocol)
        }
    }
}

/// A TLS stream whose TLS errors are marked as such (see [`Connected::tls`]).
struct TlsErrors<S> {
    io: S,
    is_tls_error: fn(&io::Error) -> bool,
    failed: Arc<AtomicBool>,
}

impl<S> TlsErrors<S> {
    fn mark<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(Err(e)) if (self.is_tls_error)(&e) => {
                self.failed.store(true, Ordering::Release);
                Poll::Ready(Err(io::Error::other(ConnectError::new(
                    ConnectStep::Tls,
                    e,
                ))))
            }
            other => other,
        }
    }
}

impl<S: hyper::rt::Read + Unpin> hyper::rt::Read for TlsErrors<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        this.mark(poll)
    }
}

impl<S: hyper::rt::Write + Unpin> hyper::rt::Write for TlsErrors<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.mark(poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.mark(poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.mark(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.mark(poll)
    }
}

impl fmt::Debug for Connected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connected")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// Which step of connecting failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectStep {
    /// Resolving the host name.
    Resolve,
    /// Opening the TCP connection.
    Tcp,
    /// The TLS handshake (or building its configuration).
    Tls,
    /// The `CONNECT` exchange with a proxy (RFC 9110 9.3.6).
    Tunnel,
}

/// A failure to open a connection: nothing was sent. The native error is the source.
#[derive(Debug)]
pub struct ConnectError {
    step: ConnectStep,
    source: BoxError,
    /// Whether the step failed with the proxy rather than the origin.
    proxy: bool,
    /// The proxy's answer to `CONNECT`, when it refused the tunnel.
    status: Option<http::StatusCode>,
}

impl ConnectError {
    /// `step` failed with `source`.
    pub fn new(step: ConnectStep, source: impl Into<BoxError>) -> Self {
        Self {
            step,
            source: source.into(),
            proxy: false,
            status: None,
        }
    }

    /// The proxy answered `CONNECT` with `status`, not 2xx: it refused the tunnel.
    pub fn refused_by_proxy(status: http::StatusCode) -> Self {
        let mut error = Self::new(ConnectStep::Tunnel, format!("the proxy answered {status}"));
        error.proxy = true;
        error.status = Some(status);
        error
    }

    /// Marks the failure as one with the proxy (resolving, connecting to, or TLS with it).
    pub fn at_proxy(mut self) -> Self {
        self.proxy = true;
        self
    }

    /// Which step failed.
    pub fn step(&self) -> ConnectStep {
        self.step
    }

    /// Whether the step failed with the proxy rather than the origin.
    pub fn is_proxy(&self) -> bool {
        self.proxy
    }

    /// The status the proxy refused `CONNECT` with, if it did.
    pub fn proxy_status(&self) -> Option<http::StatusCode> {
        self.status
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.proxy {
            f.write_str("proxy: ")?;
        }
        if let Some(status) = self.status {
            return write!(f, "the proxy refused the tunnel ({status})");
        }
        f.write_str(match self.step {
            ConnectStep::Resolve => "name resolution failed",
            ConnectStep::Tcp => "tcp connect failed",
            ConnectStep::Tls => "tls handshake failed",
            ConnectStep::Tunnel => "the CONNECT exchange failed",
        })
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// hyper's executor: spawns through the backend's [`Runtime`].
#[derive(Clone)]
pub(crate) struct Exec(pub(crate) Arc<dyn Runtime>);

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(Box::pin(future));
    }
}

/// Tries `connect` on each resolved address in turn (`localhost` may resolve to `::1` before
/// `127.0.0.1`) and returns the first stream; the last failure (a [`ConnectStep::Tcp`]
/// error) when none connects, or a [`ConnectStep::Resolve`] error when there was no address.
/// The connectors of both backends open TCP with it.
pub async fn connect_first<A, S, F, Fut>(
    addresses: impl IntoIterator<Item = A>,
    mut connect: F,
) -> Result<S, ConnectError>
where
    F: FnMut(A) -> Fut,
    Fut: Future<Output = std::io::Result<S>>,
{
    let mut last = None;
    for address in addresses {
        match connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => ConnectError::new(ConnectStep::Tcp, e),
        None => ConnectError::new(
            ConnectStep::Resolve,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host resolved to no address",
            ),
        ),
    })
}
