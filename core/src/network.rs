//! Proxies and client certificates; the whole story is on [`ProxyConfig`].

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A proxy URL such as `http://proxy.internal:3128` or `https://user:pass@proxy:443`. It may
/// carry credentials, so it is held as a secret: `Debug` and serialization show it with the
/// userinfo replaced by `***`.
#[derive(Clone)]
pub struct ProxyUrl(SecretString);

impl ProxyUrl {
    /// The URL, credentials included: for the transport that connects through it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with its userinfo (if any) replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_userinfo(self.expose())
    }
}

impl From<&str> for ProxyUrl {
    fn from(url: &str) -> Self {
        Self(SecretString::from(url))
    }
}

impl From<String> for ProxyUrl {
    fn from(url: String) -> Self {
        Self(SecretString::from(url))
    }
}

impl PartialEq for ProxyUrl {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl Serialize for ProxyUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for ProxyUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(SecretString::deserialize(deserializer)?))
    }
}

/// `scheme://user:pass@host:port/...` as `scheme://***@host:port/...`; text without userinfo
/// as it is.
pub(crate) fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => match scheme {
            Some(scheme) => format!("{scheme}://***@{host}{tail}"),
            None => format!("***@{host}{tail}"),
        },
        None => url.to_owned(),
    }
}

/// The outbound proxy of a client (`[proxy]`).
///
/// Network paths: the outbound proxy (`[proxy]`) and the TLS client identity (`[tls]`) of a
/// client. The backends act on them (egress-transport routes connections through the proxy and
/// presents the identity); the core only holds and shows them, secrets redacted.
///
/// ```
/// use egress_core::Config;
///
/// let config: Config = from_file(r#"{
///     "proxy": { "https": "http://user:s3cret@proxy.internal:3128", "no_proxy": "localhost,.internal" },
///     "tls": { "client_cert": "/etc/egress/client.pem", "client_key": "/etc/egress/client.key" }
/// }"#);
/// let shown = format!("{config:?}");
/// assert!(shown.contains("proxy.internal:3128"));
/// assert!(!shown.contains("s3cret"), "the proxy password is never shown");
/// # fn from_file(s: &str) -> Config { serde_json::from_str(s).unwrap() }
/// ```
///
/// Which proxy a request takes, in order:
/// 1. `no_proxy` (here, and `NO_PROXY` when the environment is read) names the host: no proxy.
/// 2. `http` (for `http://` targets) or `https` (for `https://` targets) is set here: that one.
///    Setting either turns the environment off, as reqwest does for an explicit proxy.
/// 3. `from_env` (default true) and neither is set: the environment, read once when the client
///    is built, with the rules of reqwest (hyper-util's matcher), which are curl's but for
///    the order of the two spellings: `HTTPS_PROXY`, then `https_proxy`, for `https://`
///    targets; `HTTP_PROXY`, then `http_proxy`, for `http://` targets; `ALL_PROXY`, then
///    `all_proxy`, for either when its own is unset; `NO_PROXY`, then `no_proxy`. When
///    `REQUEST_METHOD` is set (a CGI program, where `HTTP_PROXY` may come from a request
///    header: "httpoxy") the environment's proxies are ignored.
///
/// `no_proxy` is a comma-separated list: `*` (every host), a domain (`example.com` or
/// `.example.com`: that domain and all its subdomains), an IP address or a CIDR block
/// (`10.0.0.0/8`, `::1`). A proxy URL is `http://` (plain to the proxy) or `https://` (TLS to
/// the proxy); `user:password@` in it is sent as `Proxy-Authorization: Basic` (RFC 9110
/// 11.7.1), never shown.
///
/// ```
/// use egress_core::ProxyConfig;
///
/// let proxy = ProxyConfig::default()
///     .with_https("http://proxy.internal:3128")
///     .with_no_proxy("localhost,127.0.0.1,.svc.cluster.local");
/// assert!(proxy.is_configured());
/// assert!(!ProxyConfig::default().with_from_env(false).is_configured());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// The proxy for `http://` targets (requests in absolute-form, RFC 9112 3.2.2).
    pub http: Option<ProxyUrl>,
    /// The proxy for `https://` targets (a `CONNECT` tunnel, RFC 9110 9.3.6; TLS with the
    /// origin inside it).
    pub https: Option<ProxyUrl>,
    /// Hosts reached directly (the `NO_PROXY` syntax).
    pub no_proxy: Option<String>,
    /// Whether the environment variables are read when neither `http` nor `https` is set
    /// (default true).
    pub from_env: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            http: None,
            https: None,
            no_proxy: None,
            from_env: true,
        }
    }
}

impl ProxyConfig {
    /// Sets the proxy for `http://` targets.
    pub fn with_http(mut self, url: impl Into<ProxyUrl>) -> Self {
        self.http = Some(url.into());
        self
    }

    /// Sets the proxy for `https://` targets.
    pub fn with_https(mut self, url: impl Into<ProxyUrl>) -> Self {
        self.https = Some(url.into());
        self
    }

    /// Sets the proxy for both `http://` and `https://` targets.
    pub fn with_all(self, url: impl Into<ProxyUrl>) -> Self {
        let url = url.into();
        self.with_http(url.clone()).with_https(url)
    }

    /// Sets the hosts reached directly (the `NO_PROXY` syntax).
    pub fn with_no_proxy(mut self, list: impl Into<String>) -> Self {
        self.no_proxy = Some(list.into());
        self
    }

    /// Turns reading the environment variables on (the default) or off.
    pub fn with_from_env(mut self, from_env: bool) -> Self {
        self.from_env = from_env;
        self
    }

    /// Whether a proxy is set here (so the environment is not read).
    pub fn is_configured(&self) -> bool {
        self.http.is_some() || self.https.is_some()
    }
}

/// TLS settings of a client (`[tls]`): the client identity presented to servers that ask for
/// one (mutual TLS). Either a PEM certificate chain and key, or a PKCS#12 archive (only the
/// async-std backend, on native-tls, reads PKCS#12; rustls does not). The files are read when
/// the client is built; the key and the archive password are held as secrets. In code, the
/// backends' builders take the same identity as bytes (`with_client_identity`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// A PEM file with the client certificate, then any intermediates.
    pub client_cert: Option<PathBuf>,
    /// A PEM file with the client certificate's private key (PKCS#8, or PKCS#1/SEC1 on tokio).
    pub client_key: Option<PathBuf>,
    /// A PKCS#12 (`.p12`/`.pfx`) file holding certificate chain and key (async-std only).
    pub client_pkcs12: Option<PathBuf>,
    /// The PKCS#12 archive's password (never serialized, never shown).
    #[serde(skip_serializing)]
    pub client_pkcs12_password: Option<SecretString>,
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.client_cert == other.client_cert
            && self.client_key == other.client_key
            && self.client_pkcs12 == other.client_pkcs12
            && self
                .client_pkcs12_password
                .as_ref()
                .map(|p| p.expose_secret())
                == other
                    .client_pkcs12_password
                    .as_ref()
                    .map(|p| p.expose_secret())
    }
}

impl TlsConfig {
    /// Presents the PEM certificate chain in `cert` with the PEM key in `key`.
    pub fn with_client_pem(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some(cert.into());
        self.client_key = Some(key.into());
        self
    }

    /// Presents the identity in the PKCS#12 archive `path`, opened with `password`.
    pub fn with_client_pkcs12(mut self, path: impl Into<PathBuf>, password: SecretString) -> Self {
        self.client_pkcs12 = Some(path.into());
        self.client_pkcs12_password = Some(password);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_userinfo_of_a_proxy_url_is_replaced_when_shown() {
        assert_eq!(
            redact_userinfo("http://user:pa%40ss@proxy:3128/"),
            "http://***@proxy:3128/"
        );
        assert_eq!(redact_userinfo("proxy:3128"), "proxy:3128");
        assert_eq!(redact_userinfo("user:pw@proxy:3128"), "***@proxy:3128");
        let url = ProxyUrl::from("https://a:b@p:1");
        assert_eq!(format!("{url:?}"), "\"https://***@p:1\"");
        assert_eq!(serde_json::to_string(&url).unwrap(), "\"https://***@p:1\"");
    }

    #[test]
    fn a_proxy_config_is_read_from_a_file_with_the_environment_on_by_default() {
        let config: ProxyConfig =
            serde_json::from_str(r#"{ "https": "http://u:p@proxy:3128" }"#).unwrap();
        assert!(config.from_env);
        assert_eq!(config.https.unwrap().expose(), "http://u:p@proxy:3128");
        assert!(serde_json::from_str::<ProxyConfig>(r#"{ "htps": "x" }"#).is_err());
    }

    #[test]
    fn the_pkcs12_password_is_never_shown() {
        let tls = TlsConfig::default().with_client_pkcs12("id.p12", SecretString::from("hunter2"));
        assert!(!format!("{tls:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&tls).unwrap().contains("hunter2"));
    }
}
