//! Building a [`Client`] on tokio.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use egress_core::client::{AmbientCorrelation, Auth};
use egress_core::rt::Transport;
use egress_core::{Client, ClientOptions, Config, ConfigError, Runtime, SecretString};
use http_body_util::Full;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

use crate::connector::TimeoutConnector;
use crate::pool::PlainPool;
use crate::rt::{ThreadEntropy, TokioClock, TokioSleeper, current_correlation_id};
use crate::transport::HyperTransport;

/// Which certificates a client trusts.
#[derive(Clone, Debug, Default)]
enum Roots {
    /// Mozilla's roots (webpki-roots).
    #[default]
    Webpki,
    /// The operating system's roots.
    #[cfg(feature = "native-roots")]
    Native,
    /// Only the certificates given.
    Custom,
}

/// Builds a tokio [`Client`]: configuration, trust roots, default headers, authentication, or a
/// connector or hyper-util client of your own.
pub struct Builder {
    config: Config,
    roots: Roots,
    custom_roots: Vec<CertificateDer<'static>>,
    options: ClientOptions,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("roots", &self.roots)
            .field("custom_roots", &self.custom_roots.len())
            .field("options", &self.options)
            .finish()
    }
}

impl Builder {
    /// A builder with `config`, trusting Mozilla's roots.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            roots: Roots::default(),
            custom_roots: Vec::new(),
            options: ClientOptions::default(),
        }
    }

    /// Trusts Mozilla's root certificates (the default).
    #[cfg(feature = "webpki-roots")]
    pub fn with_webpki_roots(mut self) -> Self {
        self.roots = Roots::Webpki;
        self
    }

    /// Trusts the operating system's root certificates.
    #[cfg(feature = "native-roots")]
    pub fn with_native_roots(mut self) -> Self {
        self.roots = Roots::Native;
        self
    }

    /// Trusts this certificate (DER), and only the certificates given this way.
    pub fn with_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.roots = Roots::Custom;
        self.custom_roots.push(CertificateDer::from(der.into()));
        self
    }

    /// Adds a header sent with every request.
    pub fn with_default_header(mut self, name: &str, value: &str) -> Self {
        self.options = self.options.with_default_header(name, value);
        self
    }

    /// Sets the authentication hook.
    pub fn with_auth(mut self, auth: Arc<dyn Auth>) -> Self {
        self.options = self.options.with_auth(auth);
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_bearer_token(mut self, token: SecretString) -> Self {
        self.options = self.options.with_bearer_token(token);
        self
    }

    /// Names the service (vendor) in telemetry.
    pub fn with_service(mut self, name: impl Into<String>) -> Self {
        self.options = self.options.with_service(name.into());
        self
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, ConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        match self.roots {
            #[cfg(feature = "webpki-roots")]
            Roots::Webpki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            #[cfg(not(feature = "webpki-roots"))]
            Roots::Webpki => {
                return Err(ConfigError::new(
                    "tls.roots",
                    "the webpki-roots feature is off: choose native or custom roots",
                ));
            }
            #[cfg(feature = "native-roots")]
            Roots::Native => {
                let loaded = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(loaded.certs);
                if added == 0 {
                    return Err(ConfigError::new(
                        "tls.roots",
                        "no usable certificate in the system's trust store",
                    ));
                }
            }
            Roots::Custom => {
                for der in &self.custom_roots {
                    roots.add(der.clone()).map_err(|e| {
                        ConfigError::new("tls.roots", format!("a root certificate is invalid: {e}"))
                    })?;
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("tls", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    /// Builds the client over TCP (TCP_NODELAY) and rustls: HTTPS through hyper-util's pooled
    /// client (ALPN `h2` or `http/1.1`), plain HTTP through egress's own pool of HTTP/1.1
    /// connections over the same connector (see [`HyperTransport`]).
    pub fn build(self) -> Result<Client, ConfigError> {
        let tls = self.tls_config()?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let connector = TimeoutConnector::new(https, self.config.timeouts.connect);
        let plain = PlainPool::new(connector.clone(), &self.config.pool);
        let transport = HyperTransport::with_plain_pool(self.hyper_client(connector), plain);
        self.build_with_transport(transport)
    }

    /// Builds the client over your own connector (which handles TLS itself); the connect timeout
    /// from the configuration is applied around it. Every request goes through hyper-util's
    /// pooled client.
    pub fn build_with_connector<C>(self, connector: C) -> Result<Client, ConfigError>
    where
        TimeoutConnector<C>: Connect + Clone + Send + Sync + 'static,
    {
        let connector = TimeoutConnector::new(connector, self.config.timeouts.connect);
        let client = self.hyper_client(connector);
        self.build_with_hyper_client(client)
    }

    /// hyper-util's pooled client over `connector`, with the configuration's pool limits.
    fn hyper_client<C>(&self, connector: C) -> HyperClient<C, Full<Bytes>>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let pool = &self.config.pool;
        HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(pool.idle_timeout)
            .pool_max_idle_per_host(pool.max_idle_per_host)
            .build(connector)
    }

    /// Builds the client over an existing hyper-util client. Its connector's own limits apply;
    /// the configuration's connect timeout does not wrap it.
    pub fn build_with_hyper_client<C>(
        self,
        client: HyperClient<C, Full<Bytes>>,
    ) -> Result<Client, ConfigError>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        self.build_with_transport(HyperTransport::new(client))
    }

    fn build_with_transport(
        self,
        transport: impl Transport + 'static,
    ) -> Result<Client, ConfigError> {
        let ambient: AmbientCorrelation = Arc::new(current_correlation_id);
        let runtime = Runtime::new(
            Arc::new(transport),
            Arc::new(TokioClock::new()),
            Arc::new(TokioSleeper),
            Arc::new(ThreadEntropy),
        )
        .with_ambient_correlation(ambient);
        Client::builder(self.config, runtime)
            .with_options(self.options)?
            .build()
    }
}

/// A client for `config`, trusting Mozilla's roots. Build it once at start-up and clone it.
pub fn client(config: Config) -> Result<Client, ConfigError> {
    Builder::new(config).build()
}
