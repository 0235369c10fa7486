//! What a backend gives the transport: a runtime (spawn, sleep, now) and a connector (TCP and
//! TLS to an origin). Std futures and hyper's IO traits only, so no runtime is named here.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
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
}

/// Where a connection goes: scheme, host and port. Connections are pooled per origin.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    https: bool,
    /// The authority as the URI spells it (the pool's key).
    authority: Authority,
    /// The host without IPv6 brackets.
    host: Box<str>,
    port: u16,
}

impl Origin {
    /// The origin of an absolute `http` or `https` URI; `None` for any other URI.
    pub fn of(uri: &Uri) -> Option<Self> {
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return None,
        };
        let authority = uri.authority()?.clone();
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Some(Self {
            https,
            host: host.into(),
            authority,
            port,
        })
    }

    /// Whether the connection needs TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host name or IP address, without brackets: what to resolve, and the TLS server name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (the scheme's default when the URI names none).
    pub fn port(&self) -> u16 {
        self.port
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

/// A connection a [`Connect`] opened.
pub struct Connected {
    pub(crate) io: Box<dyn Io>,
    pub(crate) protocol: Protocol,
}

impl Connected {
    /// `io`, over which the transport will speak `protocol`.
    pub fn new(io: impl Io, protocol: Protocol) -> Self {
        Self {
            io: Box::new(io),
            protocol,
        }
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
}

/// A failure to open a connection: nothing was sent. The native error is the source.
#[derive(Debug)]
pub struct ConnectError {
    step: ConnectStep,
    source: BoxError,
}

impl ConnectError {
    /// `step` failed with `source`.
    pub fn new(step: ConnectStep, source: impl Into<BoxError>) -> Self {
        Self {
            step,
            source: source.into(),
        }
    }

    /// Which step failed.
    pub fn step(&self) -> ConnectStep {
        self.step
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.step {
            ConnectStep::Resolve => "name resolution failed",
            ConnectStep::Tcp => "tcp connect failed",
            ConnectStep::Tls => "tls handshake failed",
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
