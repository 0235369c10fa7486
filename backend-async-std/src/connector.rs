//! Opening connections: name resolution, TCP (TCP_NODELAY) and TLS through native-tls (the
//! system's OpenSSL), all under the connect timeout, so that a TLS handshake that never
//! completes is a connect timeout too. Each failure says which step failed.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_io::Async;
use async_native_tls::{TlsConnector, TlsStream};
use async_std::io::{Read as AsyncRead, Write as AsyncWrite};
use async_std::net::ToSocketAddrs;
use surf::Url;

/// Where a connection goes: scheme, host and port. Connections are pooled per origin.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    tls: bool,
    /// The host name or IP address, without brackets; also the TLS server name.
    host: String,
    ip: Option<IpAddr>,
    port: u16,
}

impl Origin {
    /// The origin of an `http` or `https` URL.
    pub(crate) fn of(url: &Url) -> Result<Self, ConnectError> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(ConnectError::new(
                    ConnectFailure::Other,
                    format!("unsupported URL scheme {other:?}"),
                ));
            }
        };
        let (host, ip) = match url.host() {
            Some(surf::http::url::Host::Domain(name)) => (name.to_owned(), None),
            Some(surf::http::url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(surf::http::url::Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
            None => {
                return Err(ConnectError::new(
                    ConnectFailure::Other,
                    "the URL has no host",
                ));
            }
        };
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            tls,
            host,
            ip,
            port,
        })
    }
}

/// Which step of connecting failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectFailure {
    /// The host name did not resolve.
    Dns,
    /// Every address refused the connection.
    Refused,
    /// Resolution, TCP and TLS together took longer than the connect timeout.
    TimedOut,
    /// The TLS handshake failed.
    Tls,
    /// Anything else before the connection was established.
    Other,
}

/// A failure to establish a connection: nothing was sent. The native error is the source.
#[derive(Debug)]
pub(crate) struct ConnectError {
    failure: ConnectFailure,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ConnectError {
    fn new(failure: ConnectFailure, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            failure,
            source: Some(source.into()),
        }
    }

    fn timed_out() -> Self {
        Self {
            failure: ConnectFailure::TimedOut,
            source: None,
        }
    }

    /// Which step failed.
    pub(crate) fn failure(&self) -> ConnectFailure {
        self.failure
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.failure {
            ConnectFailure::Dns => "name resolution failed",
            ConnectFailure::Refused => "connection refused",
            ConnectFailure::TimedOut => "connect timed out",
            ConnectFailure::Tls => "tls handshake failed",
            ConnectFailure::Other => "connect failed",
        })
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// An established connection, plain or TLS, over async-io's `Async` (the socket under
/// async-std's `TcpStream`), which can wait for readiness without reading.
pub(crate) enum Conn {
    Plain(Async<TcpStream>),
    Tls(Box<TlsStream<Async<TcpStream>>>),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, tcp) = match self {
            Self::Plain(s) => ("Plain", s.get_ref()),
            Self::Tls(s) => ("Tls", s.get_ref().get_ref()),
        };
        f.debug_struct(kind)
            .field("peer", &tcp.peer_addr().ok())
            .finish()
    }
}

impl Conn {
    /// Whether an idle connection can carry another request: the peer has not closed it and
    /// has sent nothing unasked. Polls once without waiting.
    pub(crate) fn is_reusable(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(Pin::new(self).poll_read(&mut cx, &mut probe), Poll::Pending)
    }

    /// Ready when a plain connection has something to read (or an error), without reading:
    /// right after a request is written the answer cannot be there yet, and async-io would
    /// first try a read that fails (a wasted system call per request). A TLS connection may
    /// hold decrypted bytes already: always ready.
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Plain(s) => s.poll_readable(cx),
            Self::Tls(_) => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_close(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Opens connections under the connect timeout.
pub(crate) struct Connector {
    tls: Arc<TlsConnector>,
    timeout: Duration,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Connects with `tls` for `https`, giving up after `timeout`.
    pub(crate) fn new(tls: TlsConnector, timeout: Duration) -> Self {
        Self {
            tls: Arc::new(tls),
            timeout,
        }
    }

    /// Resolves, connects and (for `https`) completes the TLS handshake within the timeout.
    pub(crate) async fn connect(&self, origin: &Origin) -> Result<Conn, ConnectError> {
        match async_std::future::timeout(self.timeout, self.establish(origin)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::timed_out()),
        }
    }

    async fn establish(&self, origin: &Origin) -> Result<Conn, ConnectError> {
        let addrs: Vec<SocketAddr> = match origin.ip {
            Some(ip) => vec![SocketAddr::new(ip, origin.port)],
            None => (origin.host.as_str(), origin.port)
                .to_socket_addrs()
                .await
                .map_err(|e| ConnectError::new(ConnectFailure::Dns, e))?
                .collect(),
        };
        let mut last: Option<io::Error> = None;
        let mut stream = None;
        // Every address in turn (`localhost` may resolve to ::1 before 127.0.0.1).
        for addr in addrs {
            match Async::<TcpStream>::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(ConnectError::new(ConnectFailure::Refused, e));
            }
            (None, Some(e)) => return Err(ConnectError::new(ConnectFailure::Other, e)),
            (None, None) => {
                return Err(ConnectError::new(
                    ConnectFailure::Dns,
                    "the host name resolved to no address",
                ));
            }
        };
        // Requests are written whole; never hold the last segment back.
        let _ = stream.get_ref().set_nodelay(true);
        if !origin.tls {
            return Ok(Conn::Plain(stream));
        }
        let tls = self
            .tls
            .connect(origin.host.as_str(), stream)
            .await
            .map_err(|e| ConnectError::new(ConnectFailure::Tls, e))?;
        Ok(Conn::Tls(Box::new(tls)))
    }
}

#[cfg(test)]
impl ConnectError {
    /// A failure of the given step with a made-up source.
    pub(crate) fn for_test(failure: ConnectFailure) -> Self {
        Self::new(failure, "test")
    }
}
