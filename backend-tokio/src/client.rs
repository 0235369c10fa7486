//! Building a [`Client`] on tokio.

use std::sync::Arc;

use egress_core::{Client, ClientOptions, Config, ConfigError};
use egress_transport::{ClientIdentity, Connect, Connector, Proxies};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::connector::TokioDial;
use crate::rt::{TokioRuntime, current_correlation_id};

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
#[derive(Debug)]
pub struct Builder {
    config: Config,
    roots: Roots,
    custom_roots: Vec<CertificateDer<'static>>,
    identity: Option<ClientIdentity>,
    options: ClientOptions,
}

impl Builder {
    /// A builder with `config`, trusting Mozilla's roots.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            roots: Roots::default(),
            custom_roots: Vec::new(),
            identity: None,
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

    /// Presents `identity` to servers that ask for a client certificate (mutual TLS), in
    /// place of the one `[tls]` names. rustls takes PEM only: a PKCS#12 identity is refused
    /// at [`build`](Self::build) (convert it: `openssl pkcs12 -in id.p12 -nodes`).
    ///
    /// ```no_run
    /// use egress_tokio::{ClientIdentity, egress_core::Config};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let identity = ClientIdentity::from_pem(
    ///     std::fs::read("client.pem")?, // certificate, then intermediates
    ///     std::fs::read("client.key")?, // held as a secret from here on
    /// );
    /// let client = egress_tokio::Builder::new(Config::default().with_base_url("https://bank.example/api"))
    ///     .with_client_identity(identity)
    ///     .build()?;
    /// # drop(client); Ok(()) }
    /// ```
    pub fn with_client_identity(mut self, identity: ClientIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    egress_core::client_options_methods!(options);

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
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("tls", e.to_string()))?
            .with_root_certificates(roots);
        let identity = match &self.identity {
            Some(identity) => Some(identity.clone()),
            None => ClientIdentity::from_config(&self.config.tls)?,
        };
        let Some(identity) = identity else {
            return Ok(builder.with_no_client_auth());
        };
        let Some((chain, key)) = identity.pem() else {
            return Err(ConfigError::new(
                "tls.client_pkcs12",
                "rustls (the tokio backend) does not read PKCS#12: give a PEM certificate and key",
            ));
        };
        let chain = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                ConfigError::new(
                    "tls.client_cert",
                    format!("not a PEM certificate chain: {e}"),
                )
            })?;
        if chain.is_empty() {
            return Err(ConfigError::new(
                "tls.client_cert",
                "no certificate in the PEM",
            ));
        }
        // The error names what is wrong, never the key's bytes.
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key)
            .map_err(|_| ConfigError::new("tls.client_key", "not a PEM private key"))?;
        builder.with_client_auth_cert(chain, key).map_err(|e| {
            ConfigError::new(
                "tls.client_key",
                format!("the key does not fit the certificate: {e}"),
            )
        })
    }

    /// Builds the client: one pool of hyper connections for `http://` and `https://` (TCP with
    /// TCP_NODELAY; rustls with ALPN `h2` and `http/1.1`; the client identity if one is set),
    /// through the proxy `[proxy]` or the environment names, as the [crate docs](crate) say.
    pub fn build(self) -> Result<Client, ConfigError> {
        let proxies = Proxies::from_config_and_env(&self.config.proxy)?;
        let connector = Connector::new(
            TokioDial::new(self.tls_config()?),
            proxies,
            backend().runtime(),
        );
        self.build_with_connector(connector)
    }

    /// Builds the client over a connector of your own (which opens TCP, and TLS for
    /// `https`, as it likes); the pool, the limits and the error mapping stay egress's. The
    /// trust roots, client identity and proxies set on this builder or in `[proxy]` and `[tls]`
    /// do not apply to it.
    pub fn build_with_connector(self, connector: impl Connect) -> Result<Client, ConfigError> {
        backend().http_client(self.config, self.options, connector)
    }
}

/// A client for `config`, trusting Mozilla's roots. Build it once at start-up and clone it.
/// The [crate docs](crate) show it in use.
pub fn client(config: Config) -> Result<Client, ConfigError> {
    Builder::new(config).build()
}

/// This backend, as the transport builds clients on it.
fn backend() -> egress_transport::Backend {
    egress_transport::Backend::new(Arc::new(TokioRuntime), Arc::new(current_correlation_id))
}
