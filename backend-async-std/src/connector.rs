//! Opening connections on async-std: name resolution, TCP (TCP_NODELAY) through async-io and,
//! for `https`, TLS by native-tls on the system's OpenSSL with ALPN offering `h2` and
//! `http/1.1`. The transport bounds the whole of it by the attempt's connect deadline.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};

use async_io::Async;
use async_std::net::ToSocketAddrs;
use egress_core::rt::BoxFuture;
use egress_transport::{
    Connect, ConnectError, ConnectStep, Connected, Origin, Protocol, connect_first,
};

use crate::io::HyperIo;
use crate::tls;

/// Opens TCP connections, and TLS over them for `https` with a native-tls connector built once.
#[derive(Clone)]
pub(crate) struct AsyncStdConnector {
    tls: native_tls::TlsConnector,
}

impl fmt::Debug for AsyncStdConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncStdConnector").finish_non_exhaustive()
    }
}

impl AsyncStdConnector {
    /// A connector speaking TLS with `tls` (built with ALPN `h2` and `http/1.1` requested).
    pub(crate) fn new(tls: native_tls::TlsConnector) -> Self {
        Self { tls }
    }
}

/// A TCP connection to `origin` with TCP_NODELAY (requests are written whole: no reason to
/// wait for acknowledgements).
async fn tcp(origin: &Origin) -> Result<Async<TcpStream>, ConnectError> {
    let addresses: Vec<SocketAddr> = match origin.host().parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, origin.port())],
        Err(_) => (origin.host(), origin.port())
            .to_socket_addrs()
            .await
            .map_err(|e| ConnectError::new(ConnectStep::Resolve, e))?
            .collect(),
    };
    connect_first(addresses, |address| async move {
        let stream = Async::<TcpStream>::connect(address).await?;
        stream.get_ref().set_nodelay(true)?;
        Ok(stream)
    })
    .await
}

/// The step a failed handshake failed at: TLS when OpenSSL refused it, TCP when the
/// connection broke under it.
fn handshake_step(error: &native_tls::Error) -> ConnectStep {
    match std::error::Error::source(error).and_then(|e| e.downcast_ref::<io::Error>()) {
        Some(_) => ConnectStep::Tcp,
        None => ConnectStep::Tls,
    }
}

impl Connect for AsyncStdConnector {
    fn connect<'a>(&'a self, origin: &'a Origin) -> BoxFuture<'a, Result<Connected, ConnectError>> {
        Box::pin(async move {
            let stream = tcp(origin).await?;
            if !origin.is_https() {
                // async-io's socket writes several buffers with one `writev`.
                return Ok(Connected::new(HyperIo::new(stream, true), Protocol::Http1));
            }
            let tls = tls::connect(&self.tls, origin.host(), stream)
                .await
                .map_err(|e| ConnectError::new(handshake_step(&e), e))?;
            let protocol = match tls.alpn().as_deref() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            Ok(Connected::new(HyperIo::new(tls, false), protocol))
        })
    }
}
