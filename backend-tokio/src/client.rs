//! Building a [`Client`] on tokio.

use std::fmt;
use std::sync::Arc;

use egress_core::client::{AmbientCorrelation, Auth};
use egress_core::rt::Transport;
use egress_core::{Client, ClientOptions, Config, ConfigError, Runtime, SecretString};
use egress_transport::{Connect, HttpTransport};
use rustls::pki_types::CertificateDer;

use crate::connector::TokioConnector;
use crate::rt::{ThreadEntropy, TokioClock, TokioRuntime, TokioSleeper, current_correlation_id};

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
/// connector of your own.
///
/// ```no_run
/// use std::sync::Arc;
/// use egress_tokio::egress_core::{Config, SecretString};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = egress_tokio::Builder::new(Config::default().with_base_url("https://api.internal/v1"))
///     .with_root_certificate(std::fs::read("internal-ca.der")?) // trust only this CA
///     .with_bearer_token(SecretString::from(std::env::var("API_TOKEN")?))
///     .with_default_header("x-team", "platform")
///     .with_service("internal-api") // the name telemetry gives this upstream
///     .build()?;
/// # drop(client); Ok(()) }
/// ```
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

    /// Shares the rate limit, host holds and open circuits with the other replicas through
    /// `coordinator` (such as `egress_fleet::Fleet::start(&config.fleet)?`), when the
    /// configuration's `[fleet]` is enabled.
    pub fn with_coordinator(mut self, coordinator: Arc<dyn egress_core::rt::Coordinator>) -> Self {
        self.options = self.options.with_coordinator(coordinator);
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

    /// Builds the client: one pool of hyper connections for `http://` and `https://` (TCP with
    /// TCP_NODELAY; rustls with ALPN `h2` and `http/1.1`), as the [crate docs](crate) say.
    pub fn build(self) -> Result<Client, ConfigError> {
        let connector = TokioConnector::new(self.tls_config()?);
        self.build_with_connector(connector)
    }

    /// Builds the client over a connector of your own (which opens TCP, and TLS for
    /// `https`, as it likes); the pool, the limits and the error mapping stay egress's. The
    /// trust roots set on this builder do not apply to it.
    pub fn build_with_connector(self, connector: impl Connect) -> Result<Client, ConfigError> {
        let runtime: Arc<dyn egress_transport::Runtime> = Arc::new(TokioRuntime);
        let transport = HttpTransport::new(connector, runtime, &self.config.pool);
        self.build_with_transport(transport)
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
///
/// ```no_run
/// use egress_tokio::egress_core::Config;
///
/// #[derive(serde::Deserialize)]
/// struct Entity { id: String }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = egress_tokio::client(Config::default().with_base_url("https://api.example.com/v1"))?;
/// let entity: Entity = client.get("/entities/7").send().await?.json()?;
/// # let _ = entity.id; Ok(()) }
/// ```
pub fn client(config: Config) -> Result<Client, ConfigError> {
    Builder::new(config).build()
}
