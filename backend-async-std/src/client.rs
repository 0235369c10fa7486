//! Building a [`Client`] on async-std.

use std::sync::Arc;

use egress_core::{Client, ClientOptions, Config, ConfigError};

use egress_transport::{ClientIdentity, Connect, Connector, Proxies};

use crate::connector::AsyncStdDial;
use crate::rt::{AsyncStdRuntime, current_correlation_id};
use crate::surf::SurfTransport;

/// Which certificates a client trusts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Roots {
    /// The operating system's trust store, as OpenSSL finds it.
    #[default]
    Native,
    /// Only the certificates given.
    Custom,
}

/// Builds an async-std [`Client`]: configuration, trust roots, TLS versions, default headers,
/// authentication, a connector of your own, or a surf client of your own.
///
/// The settings every backend shares (default headers, credentials, tokens, the service name)
/// are the same methods as on `egress_tokio::Builder`; what is this backend's own is OpenSSL's
/// trust and TLS versions:
///
/// ```no_run
/// use egress_async_std::egress_core::Config;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::default().with_base_url("https://api.internal/v1");
/// let client = egress_async_std::Builder::new(config)
///     .with_root_certificate(std::fs::read("internal-ca.der")?) // trust only this CA
///     .with_min_tls_version(native_tls::Protocol::Tlsv12)
///     .with_service("internal-api")
///     .build()?;
/// # drop(client); Ok(()) }
/// ```
#[derive(Debug)]
pub struct Builder {
    config: Config,
    roots: Roots,
    custom_roots: Vec<Vec<u8>>,
    min_tls_version: Option<native_tls::Protocol>,
    identity: Option<ClientIdentity>,
    options: ClientOptions,
}

impl Builder {
    /// A builder with `config`, trusting the operating system's root certificates.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            roots: Roots::default(),
            custom_roots: Vec::new(),
            min_tls_version: None,
            identity: None,
            options: ClientOptions::default(),
        }
    }

    /// Trusts the operating system's root certificates (the default), as OpenSSL finds them.
    pub fn with_native_roots(mut self) -> Self {
        self.roots = Roots::Native;
        self
    }

    /// Trusts this certificate (DER), and only the certificates given this way.
    pub fn with_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.roots = Roots::Custom;
        self.custom_roots.push(der.into());
        self
    }

    /// Refuses TLS versions older than `version` (native-tls's default floor is TLS 1.0 on
    /// some systems; OpenSSL 3's own configuration usually raises it).
    pub fn with_min_tls_version(mut self, version: native_tls::Protocol) -> Self {
        self.min_tls_version = Some(version);
        self
    }

    /// Presents `identity` to servers that ask for a client certificate (mutual TLS), in
    /// place of the one `[tls]` names: PEM (the key PKCS#8) or PKCS#12, both read by
    /// native-tls.
    ///
    /// ```no_run
    /// use egress_async_std::{ClientIdentity, egress_core::{Config, SecretString}};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let identity = ClientIdentity::from_pkcs12(
    ///     std::fs::read("client.p12")?,
    ///     SecretString::from(std::env::var("CLIENT_P12_PASSWORD")?),
    /// );
    /// let client = egress_async_std::Builder::new(Config::default().with_base_url("https://bank.example/api"))
    ///     .with_client_identity(identity)
    ///     .build()?;
    /// # drop(client); Ok(()) }
    /// ```
    pub fn with_client_identity(mut self, identity: ClientIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    egress_core::client_options_methods!(options);

    /// The native-tls connector, built once for the client (an OpenSSL context reads the
    /// system's CA bundle when it is made), requesting ALPN `alpns`, presenting the client
    /// identity if there is one.
    fn tls_connector(
        &self,
        identity: Option<&ClientIdentity>,
        alpns: &[&str],
    ) -> Result<native_tls::TlsConnector, ConfigError> {
        let mut tls = native_tls::TlsConnector::builder();
        if let Some(identity) = identity {
            // Errors name what is wrong, never the key's or the archive's bytes.
            let identity = match (identity.pem(), identity.pkcs12()) {
                (Some((chain, key)), _) => {
                    native_tls::Identity::from_pkcs8(chain, key).map_err(|e| {
                        ConfigError::new(
                            "tls.client_key",
                            format!("not a PEM certificate chain and PKCS#8 key: {e}"),
                        )
                    })?
                }
                (None, Some((archive, password))) => {
                    native_tls::Identity::from_pkcs12(archive, password).map_err(|e| {
                        ConfigError::new(
                            "tls.client_pkcs12",
                            format!("the PKCS#12 archive cannot be opened: {e}"),
                        )
                    })?
                }
                (None, None) => return Err(ConfigError::new("tls", "an empty client identity")),
            };
            tls.identity(identity);
        }
        if self.roots == Roots::Custom {
            tls.disable_built_in_roots(true);
            for der in &self.custom_roots {
                let certificate = native_tls::Certificate::from_der(der).map_err(|e| {
                    ConfigError::new("tls.roots", format!("a root certificate is invalid: {e}"))
                })?;
                tls.add_root_certificate(certificate);
            }
        }
        tls.min_protocol_version(self.min_tls_version);
        tls.request_alpns(alpns);
        // Fail at start-up, not at the first call, if OpenSSL refuses the settings.
        tls.build()
            .map_err(|e| ConfigError::new("tls", e.to_string()))
    }

    /// Builds the client: one pool of hyper connections for `http://` and `https://` (TCP
    /// with TCP_NODELAY; native-tls with ALPN `h2` and `http/1.1`), as the [crate docs](crate)
    /// say.
    ///
    /// Connections go through the proxy `[proxy]` or the environment names, and present the
    /// client identity set here or in `[tls]`.
    pub fn build(self) -> Result<Client, ConfigError> {
        let proxies = Proxies::from_config_and_env(&self.config.proxy)?;
        let identity = match &self.identity {
            Some(identity) => Some(identity.clone()),
            None => ClientIdentity::from_config(&self.config.tls)?,
        };
        let origin = self.tls_connector(identity.as_ref(), &["h2", "http/1.1"])?;
        // Each connector costs an OpenSSL context and a read of the CA bundle (~45 ms of CPU):
        // a client that can take no proxy never speaks TLS to one, and shares the origin's.
        let proxy = if proxies.is_empty() {
            origin.clone()
        } else {
            self.tls_connector(identity.as_ref(), &["http/1.1"])?
        };
        let dial = AsyncStdDial::new(origin, proxy);
        self.build_with_connector(Connector::new(dial, proxies, backend().runtime()))
    }

    /// Builds the client over a connector of your own (which opens TCP, and TLS for
    /// `https`, as it likes); the pool, the limits and the error mapping stay egress's. The
    /// trust roots, TLS version, client identity and proxies set on this builder or in
    /// `[proxy]` and `[tls]` do not apply to it.
    pub fn build_with_connector(self, connector: impl Connect) -> Result<Client, ConfigError> {
        backend().http_client(self.config, self.options, connector)
    }

    /// Builds the client over an existing surf client (its HTTP client and middleware apply),
    /// for services that bring surf middleware. Read what this path gives up in
    /// [`SurfTransport`]'s docs: surf's pool can hand a request an earlier response, async-h1
    /// logs secrets at TRACE, HTTP/1.1 only. The trust roots and TLS version set on this
    /// builder do not apply.
    pub fn build_with_surf_client(self, surf: surf::Client) -> Result<Client, ConfigError> {
        backend().client(self.config, self.options, SurfTransport::new(surf))
    }
}

/// A client for `config`, trusting the operating system's roots. Build it once at start-up
/// and clone it.
/// The [crate docs](crate) show it in use.
pub fn client(config: Config) -> Result<Client, ConfigError> {
    Builder::new(config).build()
}

/// This backend, as the transport builds clients on it.
fn backend() -> egress_transport::Backend {
    egress_transport::Backend::new(Arc::new(AsyncStdRuntime), Arc::new(current_correlation_id))
}
