//! Outbound proxies: which requests take one (hyper-util's matcher: the rules of reqwest and
//! curl), and the [`Connector`] that opens connections directly, to an HTTP proxy (plain or
//! TLS), or through a `CONNECT` tunnel (RFC 9110 9.3.6) with TLS to the origin inside.
//!
//! The `CONNECT` exchange is hyper's (`client::conn::http1` and `hyper::upgrade`), not
//! hyper-util's `Tunnel`: that one lives behind hyper-util's `client-legacy` feature, which
//! brings tokio's networking, socket2 and libc into this runtime-agnostic crate (and into
//! every async-std build), and it reports a refusal without its status (403 and 407 must be
//! told apart).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use egress_core::ConfigError;
use egress_core::ProxyConfig;
use egress_core::rt::BoxFuture;
use http::header::{HOST, PROXY_AUTHORIZATION};
use http::uri::{Scheme, Uri};
use http::{HeaderValue, Method, Request};
use http_body_util::Empty;
use hyper_util::client::proxy::matcher::Matcher;

use crate::rt::{
    Alpn, Connect, ConnectError, ConnectStep, Connected, Dial, Forward, Io, Origin, Runtime,
    TlsOver,
};

/// The proxy a request to an origin goes through.
#[derive(Clone)]
pub struct Proxy {
    /// Where the proxy is: `https` for TLS to the proxy; the port is the URL's, else the
    /// scheme's default.
    origin: Origin,
    authorization: Option<HeaderValue>,
}

impl Proxy {
    /// The proxy's own scheme, host and port.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("origin", &self.origin)
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Which requests go through which proxy, decided once when the client is built from its
/// [`ProxyConfig`] and (unless turned off, or a proxy is configured) the environment. See
/// [`ProxyConfig`] for the rules; matching is hyper-util's [`Matcher`] (reqwest's), plus
/// `host:port` entries in `no_proxy`, which bypass the proxy for that port only.
#[derive(Clone, Default)]
pub struct Proxies {
    inner: Option<Arc<Rules>>,
}

struct Rules {
    matcher: Matcher,
    /// `no_proxy` entries with a port: the host (a matcher that intercepts everything else)
    /// and the port.
    ports: Vec<(Matcher, u16)>,
}

/// The environment variables read, in order, for each setting (upper case first, as reqwest).
const ENV_HTTP: [&str; 2] = ["HTTP_PROXY", "http_proxy"];
const ENV_HTTPS: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
const ENV_ALL: [&str; 2] = ["ALL_PROXY", "all_proxy"];
const ENV_NO: [&str; 2] = ["NO_PROXY", "no_proxy"];

impl Proxies {
    /// No proxy for any request.
    pub fn none() -> Self {
        Self::default()
    }

    /// The proxies `config` sets, or the environment's (read through `env`, normally
    /// `|name| std::env::var(name).ok()`). A configured proxy URL that is not `http://` or
    /// `https://` with a host is refused; an unusable one in the environment is ignored with a
    /// warning that names the variable (never its value, which may hold a password).
    pub fn from_config(
        config: &ProxyConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut no_proxy = config.no_proxy.clone().unwrap_or_default();
        let (http, https, all) = if config.is_configured() {
            let check = |field: &'static str, url: Option<&egress_core::ProxyUrl>| {
                url.map(|url| {
                    check_url(url.expose())
                        .map(|()| url.expose().to_owned())
                        .map_err(|reason| ConfigError::new(field, reason))
                })
                .transpose()
            };
            (
                check("proxy.http", config.http.as_ref())?,
                check("proxy.https", config.https.as_ref())?,
                None,
            )
        } else if config.from_env && env("REQUEST_METHOD").is_none() {
            let read = |names: [&'static str; 2]| {
                let (name, value) = names
                    .into_iter()
                    .find_map(|name| env(name).map(|value| (name, value)))?;
                if value.is_empty() {
                    return None;
                }
                match check_url(&value) {
                    Ok(()) => Some(value),
                    Err(reason) => {
                        tracing::warn!(variable = name, reason, "proxy variable ignored");
                        None
                    }
                }
            };
            if let Some(list) = ENV_NO.into_iter().find_map(&env) {
                no_proxy = if no_proxy.is_empty() {
                    list
                } else {
                    format!("{no_proxy},{list}")
                };
            }
            (read(ENV_HTTP), read(ENV_HTTPS), read(ENV_ALL))
        } else {
            (None, None, None)
        };
        if http.is_none() && https.is_none() && all.is_none() {
            return Ok(Self::none());
        }
        let (hosts, ports) = split_ports(&no_proxy);
        // `*` bypasses every host, as in curl (hyper-util's matcher applies it to names only,
        // not to IP addresses).
        if hosts.contains(&"*") {
            return Ok(Self::none());
        }
        let mut builder = Matcher::builder().no(hosts.join(","));
        if let Some(url) = http {
            builder = builder.http(url);
        }
        if let Some(url) = https {
            builder = builder.https(url);
        }
        if let Some(url) = all {
            builder = builder.all(url);
        }
        let ports = ports
            .into_iter()
            .map(|(host, port)| {
                let matcher = Matcher::builder()
                    .all("http://bypass.invalid")
                    .no(host)
                    .build();
                (matcher, port)
            })
            .collect();
        Ok(Self {
            inner: Some(Arc::new(Rules {
                matcher: builder.build(),
                ports,
            })),
        })
    }

    /// [`from_config`](Self::from_config) with this process's environment variables.
    pub fn from_config_and_env(config: &ProxyConfig) -> Result<Self, ConfigError> {
        Self::from_config(config, |name| std::env::var(name).ok())
    }

    /// Whether any request may take a proxy.
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// The proxy for requests to `origin`, or `None` to connect directly.
    pub fn route(&self, origin: &Origin) -> Option<Proxy> {
        let rules = self.inner.as_deref()?;
        let uri = Uri::builder()
            .scheme(if origin.is_https() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            })
            .authority(origin.authority().clone())
            .path_and_query("/")
            .build()
            .ok()?;
        let bypassed = rules
            .ports
            .iter()
            .any(|(host, port)| *port == origin.port() && host.intercept(&uri).is_none());
        if bypassed {
            return None;
        }
        let intercept = rules.matcher.intercept(&uri)?;
        let target = Origin::of(intercept.uri())?;
        let authorization = intercept.basic_auth().cloned().map(|mut value| {
            value.set_sensitive(true);
            value
        });
        Some(Proxy {
            origin: target,
            authorization,
        })
    }
}

impl fmt::Debug for Proxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // hyper-util's Debug shows proxy URLs without their credentials.
        match &self.inner {
            None => f.write_str("Proxies(none)"),
            Some(rules) => f
                .debug_struct("Proxies")
                .field("matcher", &rules.matcher)
                .field("port_rules", &rules.ports.len())
                .finish(),
        }
    }
}

/// Whether `url` names an HTTP proxy egress can use: `http://` or `https://` (or no scheme,
/// meaning `http://`, as curl reads it) and a host. The reason names no part of the URL.
fn check_url(url: &str) -> Result<(), &'static str> {
    let uri: Uri = url
        .parse()
        .map_err(|_| "not a URL (a password with reserved characters must be percent-encoded)")?;
    match uri.scheme_str() {
        None | Some("http") | Some("https") => {}
        Some(_) => return Err("only http:// and https:// proxies are supported"),
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err("the proxy URL has no host"),
    }
}

/// Splits a `NO_PROXY` list into entries without a port (for hyper-util's matcher) and
/// `host:port` entries (IPv6 with a port as `[::1]:8080`).
fn split_ports(list: &str) -> (Vec<&str>, Vec<(&str, u16)>) {
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let with_port = entry.rsplit_once(':').and_then(|(host, port)| {
            let port = port.parse::<u16>().ok()?;
            // A bare IPv6 address has colons of its own: only `[addr]:port` has a port.
            let host = match host.strip_prefix('[') {
                Some(inner) => inner.strip_suffix(']')?,
                None if host.contains(':') => return None,
                None => host,
            };
            Some((host, port))
        });
        match with_port {
            Some(rule) => ports.push(rule),
            None => hosts.push(entry),
        }
    }
    (hosts, ports)
}

/// Opens connections with a backend's [`Dial`]: directly, or through the proxy [`Proxies`]
/// choose for the origin. Through a proxy, an `http://` origin's connection goes to the proxy
/// (requests then go in absolute-form with `Proxy-Authorization`, see
/// [`Connect::forward_proxy`]); an `https://` origin's is a `CONNECT` tunnel through it with
/// TLS to the origin inside (ALPN, so HTTP/2, still with the origin). The transport bounds all
/// of it (proxy connect, `CONNECT`, TLS) by the attempt's connect timeout.
pub struct Connector<D> {
    dial: D,
    proxies: Proxies,
    runtime: Arc<dyn Runtime>,
}

impl<D: Dial> Connector<D> {
    /// Connects with `dial`, through `proxies`; `runtime` drives `CONNECT` exchanges.
    pub fn new(dial: D, proxies: Proxies, runtime: Arc<dyn Runtime>) -> Self {
        Self {
            dial,
            proxies,
            runtime,
        }
    }

    async fn direct(&self, origin: &Origin) -> Result<Connected, ConnectError> {
        let tcp = self.dial.tcp(origin.host(), origin.port()).await?;
        if origin.is_https() {
            self.dial
                .tls(TlsOver::Tcp(tcp), origin.host(), Alpn::Http2AndHttp1)
                .await
        } else {
            Ok(self.dial.plain(tcp))
        }
    }

    async fn through(&self, proxy: &Proxy, origin: &Origin) -> Result<Connected, ConnectError> {
        let tcp = self
            .dial
            .tcp(proxy.origin().host(), proxy.origin().port())
            .await
            .map_err(ConnectError::at_proxy)?;
        let to_proxy = if proxy.origin().is_https() {
            self.dial
                .tls(TlsOver::Tcp(tcp), proxy.origin().host(), Alpn::Http1)
                .await
                .map_err(ConnectError::at_proxy)?
        } else {
            self.dial.plain(tcp)
        };
        if !origin.is_https() {
            return Ok(Connected {
                protocol: crate::Protocol::Http1,
                ..to_proxy
            });
        }
        let tunnel = tunnel(
            to_proxy.io,
            origin,
            proxy.authorization.as_ref(),
            &self.runtime,
        )
        .await?;
        let tunnel = TlsOver::Stream(Box::new(tunnel));
        self.dial
            .tls(tunnel, origin.host(), Alpn::Http2AndHttp1)
            .await
    }
}

impl<D: Dial> fmt::Debug for Connector<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("dial", &self.dial)
            .field("proxies", &self.proxies)
            .finish_non_exhaustive()
    }
}

impl<D: Dial> Connect for Connector<D> {
    fn connect<'a>(&'a self, origin: &'a Origin) -> BoxFuture<'a, Result<Connected, ConnectError>> {
        Box::pin(async move {
            match self.proxies.route(origin) {
                None => self.direct(origin).await,
                Some(proxy) => self.through(&proxy, origin).await,
            }
        })
    }

    fn forward_proxy(&self, origin: &Origin) -> Option<Forward> {
        if origin.is_https() || self.proxies.is_empty() {
            return None;
        }
        self.proxies.route(origin).map(|proxy| Forward {
            authorization: proxy.authorization,
        })
    }
}

/// A `CONNECT` tunnel to `origin` over `io` (a connection to the proxy), by hyper: the request
/// in authority-form with `Host` (RFC 9110 9.3.6, RFC 9112 3.2.3) and `Proxy-Authorization`
/// (RFC 9110 11.7.1) when given; any 2xx opens the tunnel, any other status refuses it.
async fn tunnel(
    io: Box<dyn Io>,
    origin: &Origin,
    authorization: Option<&HeaderValue>,
    runtime: &Arc<dyn Runtime>,
) -> Result<hyper::upgrade::Upgraded, ConnectError> {
    let failed = |e: hyper::Error| ConnectError::new(ConnectStep::Tunnel, e).at_proxy();
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(failed)?;
    runtime.spawn(Box::pin(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "proxy connection ended with an error");
        }
    }));
    // The authority with the port always: CONNECT names host and port (RFC 9110 9.3.6).
    let target = format!("{}:{}", origin.authority().host(), origin.port());
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(target.as_str())
        .header(HOST, target.as_str())
        .body(Empty::new())
        .map_err(|e| ConnectError::new(ConnectStep::Tunnel, e).at_proxy())?;
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert(PROXY_AUTHORIZATION, value.clone());
    }
    let response = sender.send_request(request).await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(ConnectError::refused_by_proxy(response.status()));
    }
    hyper::upgrade::on(response).await.map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        Origin::of(&url.parse().unwrap()).unwrap()
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn configured_proxies_apply_per_scheme_and_credentials_become_basic_auth() {
        let config = ProxyConfig::default()
            .with_http("http://proxy:3128")
            .with_https("https://alice:s%40cret@tls-proxy:8443");
        let proxies = Proxies::from_config(&config, env(&[])).unwrap();
        let http = proxies.route(&origin("http://api.example.com/")).unwrap();
        assert_eq!(http.origin(), &origin("http://proxy:3128"));
        assert!(http.authorization.is_none());
        let https = proxies.route(&origin("https://api.example.com/")).unwrap();
        assert_eq!(https.origin(), &origin("https://tls-proxy:8443"));
        // RFC 9110 11.7.1 and RFC 7617: Basic base64("alice:s@cret"), percent-decoded.
        let value = https.authorization.clone().unwrap();
        assert_eq!(value, "Basic YWxpY2U6c0BjcmV0");
        assert!(value.is_sensitive());
        assert!(!format!("{https:?} {proxies:?}").contains("cret"));
    }

    #[test]
    fn a_configured_proxy_turns_the_environment_off() {
        let vars = [("HTTPS_PROXY", "http://env-proxy:1")];
        let config = ProxyConfig::default().with_http("http://proxy:3128");
        let proxies = Proxies::from_config(&config, env(&vars)).unwrap();
        assert!(proxies.route(&origin("https://a.example/")).is_none());
    }

    #[test]
    fn the_environment_is_read_upper_case_first_and_all_proxy_fills_in() {
        let vars = [
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("all_proxy", "http://all:3"),
        ];
        let proxies = Proxies::from_config(&ProxyConfig::default(), env(&vars)).unwrap();
        assert_eq!(
            proxies
                .route(&origin("https://a.example/"))
                .unwrap()
                .origin()
                .host(),
            "upper"
        );
        assert_eq!(
            proxies
                .route(&origin("http://a.example/"))
                .unwrap()
                .origin()
                .host(),
            "all"
        );
        let lower = [("https_proxy", "http://lower:2")];
        let proxies = Proxies::from_config(&ProxyConfig::default(), env(&lower)).unwrap();
        assert_eq!(
            proxies
                .route(&origin("https://a.example/"))
                .unwrap()
                .origin()
                .host(),
            "lower"
        );
    }

    #[test]
    fn the_environment_is_ignored_when_turned_off_and_in_cgi_programs() {
        let vars = [("HTTPS_PROXY", "http://env-proxy:1")];
        let off = ProxyConfig::default().with_from_env(false);
        assert!(Proxies::from_config(&off, env(&vars)).unwrap().is_empty());
        // httpoxy: in a CGI program, HTTP_PROXY can come from a request's `Proxy` header.
        let cgi = [
            ("HTTPS_PROXY", "http://env-proxy:1"),
            ("REQUEST_METHOD", "GET"),
        ];
        let proxies = Proxies::from_config(&ProxyConfig::default(), env(&cgi)).unwrap();
        assert!(proxies.is_empty());
    }

    #[test]
    fn no_proxy_matches_domains_suffixes_ips_cidrs_ports_and_star() {
        let config = ProxyConfig::default()
            .with_all("http://proxy:3128")
            .with_no_proxy(
                "example.com, .internal, 10.1.2.3, 192.168.0.0/16, ::1, localhost:8080, [::2]:9000",
            );
        let proxies = Proxies::from_config(&config, env(&[])).unwrap();
        for direct in [
            "http://example.com/",
            "https://api.example.com/",
            "http://svc.internal/",
            "http://10.1.2.3/",
            "http://192.168.7.9:8000/",
            "http://[::1]:8000/",
            "http://localhost:8080/",
            "http://[::2]:9000/",
        ] {
            assert!(
                proxies.route(&origin(direct)).is_none(),
                "{direct} goes direct"
            );
        }
        for proxied in [
            "http://notexample.com/",
            "http://10.1.2.4/",
            "http://localhost:8081/",
            "http://[::2]:9001/",
        ] {
            assert!(
                proxies.route(&origin(proxied)).is_some(),
                "{proxied} takes the proxy"
            );
        }
        let star = ProxyConfig::default()
            .with_all("http://proxy:3128")
            .with_no_proxy("*");
        let proxies = Proxies::from_config(&star, env(&[])).unwrap();
        assert!(
            proxies
                .route(&origin("https://anything.example/"))
                .is_none()
        );
        assert!(proxies.route(&origin("http://10.0.0.1:8080/")).is_none());
    }

    #[test]
    fn a_configured_proxy_url_that_cannot_be_used_is_refused_without_showing_it() {
        let bad = ProxyConfig::default().with_https("socks5://u:secret@proxy:1080");
        let error = Proxies::from_config(&bad, env(&[])).unwrap_err();
        assert_eq!(error.field(), "proxy.https");
        assert!(!error.to_string().contains("secret"));
        let unusable = [("HTTPS_PROXY", "socks5://proxy:1080")];
        let proxies = Proxies::from_config(&ProxyConfig::default(), env(&unusable)).unwrap();
        assert!(
            proxies.is_empty(),
            "an unusable environment proxy is ignored"
        );
    }
}
