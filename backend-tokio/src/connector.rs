//! Opening connections on tokio: name resolution, TCP (TCP_NODELAY) and rustls, as the steps
//! egress-transport's [`Connector`](egress_transport::Connector) composes into direct
//! connections, proxy connections and `CONNECT` tunnels. The transport bounds the whole of it
//! by the attempt's connect deadline.

use std::io;
use std::sync::Arc;

use egress_transport::{
    Alpn, ConnectError, ConnectStep, Connected, Dial, Protocol, TlsOver, connect_first,
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Opens TCP connections with TCP_NODELAY, and TLS over them (or over a tunnel) with rustls.
#[derive(Clone)]
pub(crate) struct TokioDial {
    /// ALPN `h2` and `http/1.1`: to origins.
    origin: TlsConnector,
    /// ALPN `http/1.1`: to an `https://` proxy.
    proxy: TlsConnector,
}

impl std::fmt::Debug for TokioDial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioDial").finish_non_exhaustive()
    }
}

impl TokioDial {
    /// Dials with `tls` (its ALPN protocols are set here).
    pub(crate) fn new(tls: rustls::ClientConfig) -> Self {
        let mut to_proxy = tls.clone();
        to_proxy.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut to_origin = tls;
        to_origin.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            origin: TlsConnector::from(Arc::new(to_origin)),
            proxy: TlsConnector::from(Arc::new(to_proxy)),
        }
    }

    /// A TLS handshake over `io` with `name`, offering `alpn`.
    async fn handshake<S>(&self, io: S, name: &str, alpn: Alpn) -> Result<Connected, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| ConnectError::new(ConnectStep::Tls, e))?;
        let tls = alpn
            .choose(&self.origin, &self.proxy)
            .connect(name, io)
            .await
            .map_err(|e| ConnectError::new(handshake_step(&e), e))?;
        let protocol = Protocol::from_alpn(tls.get_ref().1.alpn_protocol());
        Ok(Connected::tls(TokioIo::new(tls), protocol, is_rustls_error))
    }
}

/// Whether rustls raised `error` (an alert, a protocol failure), not the socket under it.
fn is_rustls_error(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
}

/// The step a failed handshake failed at: TLS when rustls refused it, TCP when the
/// connection broke under it.
fn handshake_step(error: &io::Error) -> ConnectStep {
    match is_rustls_error(error) {
        true => ConnectStep::Tls,
        false => ConnectStep::Tcp,
    }
}

impl Dial for TokioDial {
    type Tcp = TcpStream;

    /// A TCP connection with TCP_NODELAY (requests are written whole: no reason to wait for
    /// acknowledgements).
    async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let addresses = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ConnectError::new(ConnectStep::Resolve, e))?;
        connect_first(addresses, |address| async move {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
        .await
    }

    fn plain(&self, tcp: TcpStream) -> Connected {
        Connected::new(TokioIo::new(tcp), Protocol::Http1)
    }

    async fn tls(
        &self,
        under: TlsOver<TcpStream>,
        name: &str,
        alpn: Alpn,
    ) -> Result<Connected, ConnectError> {
        match under {
            TlsOver::Tcp(tcp) => self.handshake(tcp, name, alpn).await,
            TlsOver::Stream(io) => self.handshake(TokioIo::new(io), name, alpn).await,
        }
    }
}
