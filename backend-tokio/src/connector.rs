//! Opening connections on tokio: name resolution, TCP (TCP_NODELAY) and, for `https`, rustls
//! with ALPN offering `h2` and `http/1.1`. The transport bounds the whole of it by the
//! attempt's connect deadline.

use std::io;
use std::sync::Arc;

use egress_core::rt::BoxFuture;
use egress_transport::{
    Connect, ConnectError, ConnectStep, Connected, Origin, Protocol, connect_first,
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Opens TCP connections with TCP_NODELAY, and TLS over them with rustls for `https`.
#[derive(Clone)]
pub(crate) struct TokioConnector {
    tls: TlsConnector,
}

impl std::fmt::Debug for TokioConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioConnector").finish_non_exhaustive()
    }
}

impl TokioConnector {
    /// A connector speaking TLS with `tls` (its ALPN protocols are set here).
    pub(crate) fn new(mut tls: rustls::ClientConfig) -> Self {
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            tls: TlsConnector::from(Arc::new(tls)),
        }
    }
}

/// A TCP connection to `origin` with TCP_NODELAY (requests are written whole: no reason to
/// wait for acknowledgements).
async fn tcp(origin: &Origin) -> Result<TcpStream, ConnectError> {
    let addresses = tokio::net::lookup_host((origin.host(), origin.port()))
        .await
        .map_err(|e| ConnectError::new(ConnectStep::Resolve, e))?;
    connect_first(addresses, |address| async move {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
    .await
}

/// The step a failed handshake failed at: TLS when rustls refused it, TCP when the
/// connection broke under it.
fn handshake_step(error: &io::Error) -> ConnectStep {
    match error.get_ref() {
        Some(inner) if inner.is::<rustls::Error>() => ConnectStep::Tls,
        _ => ConnectStep::Tcp,
    }
}

impl Connect for TokioConnector {
    fn connect<'a>(&'a self, origin: &'a Origin) -> BoxFuture<'a, Result<Connected, ConnectError>> {
        Box::pin(async move {
            let stream = tcp(origin).await?;
            if !origin.is_https() {
                return Ok(Connected::new(TokioIo::new(stream), Protocol::Http1));
            }
            let name = ServerName::try_from(origin.host().to_owned())
                .map_err(|e| ConnectError::new(ConnectStep::Tls, e))?;
            let tls = self
                .tls
                .connect(name, stream)
                .await
                .map_err(|e| ConnectError::new(handshake_step(&e), e))?;
            let protocol = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            Ok(Connected::new(TokioIo::new(tls), protocol))
        })
    }
}
