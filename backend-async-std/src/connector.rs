//! Opening connections on async-std: name resolution, TCP (TCP_NODELAY) through async-io and
//! TLS by native-tls on the system's OpenSSL, as the steps egress-transport's
//! [`Connector`](egress_transport::Connector) composes into direct connections, proxy
//! connections and `CONNECT` tunnels. The transport bounds the whole of it by the attempt's
//! connect deadline.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};

use async_io::Async;
use async_std::io::{Read as AsyncRead, Write as AsyncWrite};
use async_std::net::ToSocketAddrs;
use egress_transport::{
    Alpn, ConnectError, ConnectStep, Connected, Dial, Protocol, TlsOver, connect_first,
};

use crate::io::{FuturesIo, HyperIo, TcpSocket};
use crate::tls;

/// Opens TCP connections, and TLS over them (or over a tunnel) with native-tls connectors
/// built once.
#[derive(Clone)]
pub(crate) struct AsyncStdDial {
    /// ALPN `h2` and `http/1.1`: to origins.
    origin: native_tls::TlsConnector,
    /// ALPN `http/1.1`: to an `https://` proxy (the origin's connector when the client takes
    /// no proxy, and so never uses it).
    proxy: native_tls::TlsConnector,
}

impl fmt::Debug for AsyncStdDial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncStdDial").finish_non_exhaustive()
    }
}

impl AsyncStdDial {
    /// Dials with `origin` (built requesting ALPN `h2` and `http/1.1`) and `proxy`
    /// (`http/1.1` only).
    pub(crate) fn new(origin: native_tls::TlsConnector, proxy: native_tls::TlsConnector) -> Self {
        Self { origin, proxy }
    }

    /// A TLS handshake over `io` with `name`, offering `alpn`.
    async fn handshake<S>(&self, io: S, name: &str, alpn: Alpn) -> Result<Connected, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let tls = tls::connect(alpn.choose(&self.origin, &self.proxy), name, io)
            .await
            .map_err(|e| ConnectError::new(handshake_step(&e), e))?;
        let protocol = Protocol::from_alpn(tls.alpn().as_deref());
        Ok(Connected::tls(
            HyperIo::new(tls, false),
            protocol,
            is_openssl_error,
        ))
    }
}

/// Whether OpenSSL raised `error` (an alert, a protocol failure): native-tls wraps its SSL
/// errors in `io::Error`s of kind `Other`; the socket's own errors carry no inner error.
fn is_openssl_error(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::Other && error.get_ref().is_some()
}

/// The step a failed handshake failed at: TLS when OpenSSL refused it, TCP when the
/// connection broke under it.
fn handshake_step(error: &native_tls::Error) -> ConnectStep {
    match std::error::Error::source(error).and_then(|e| e.downcast_ref::<io::Error>()) {
        Some(_) => ConnectStep::Tcp,
        None => ConnectStep::Tls,
    }
}

impl Dial for AsyncStdDial {
    type Tcp = TcpSocket;

    /// A TCP connection with TCP_NODELAY (requests are written whole: no reason to wait for
    /// acknowledgements).
    async fn tcp(&self, host: &str, port: u16) -> Result<TcpSocket, ConnectError> {
        let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (host, port)
                .to_socket_addrs()
                .await
                .map_err(|e| ConnectError::new(ConnectStep::Resolve, e))?
                .collect(),
        };
        connect_first(addresses, |address| async move {
            let stream = Async::<TcpStream>::connect(address).await?;
            stream.get_ref().set_nodelay(true)?;
            Ok(TcpSocket::new(stream))
        })
        .await
    }

    fn plain(&self, tcp: TcpSocket) -> Connected {
        // async-io's socket writes several buffers with one `writev`.
        Connected::new(HyperIo::new(tcp, true), Protocol::Http1)
    }

    async fn tls(
        &self,
        under: TlsOver<TcpSocket>,
        name: &str,
        alpn: Alpn,
    ) -> Result<Connected, ConnectError> {
        match under {
            TlsOver::Tcp(tcp) => self.handshake(tcp, name, alpn).await,
            TlsOver::Stream(io) => self.handshake(FuturesIo(io), name, alpn).await,
        }
    }
}
