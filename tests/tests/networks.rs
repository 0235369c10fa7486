//! Enterprise network paths on both backends, against real parts: a real HTTP proxy
//! (tinyproxy, installed from the OS packages when missing, started per test on a free
//! loopback port, stopped by PID) and the loopback TLS server requiring client certificates
//! from an rcgen-made CA (mutual TLS).

#[macro_use]
mod common;

use std::process::Command;
use std::time::Instant;

use common::{Backend, config, ms};
use egress_core::{Config, Error, TransportErrorKind};
use egress_core::{ProxyConfig, TlsConfig};
use egress_tests::proxy::{Tinyproxy, TinyproxyConfig};
use egress_tests::server::{Fault, FaultServer, MutualTls, Reply};
use egress_tokio::ClientIdentity;

const ENTITY: &str = r#"{"id":"7"}"#;
const USER: &str = "alice";
const PASSWORD: &str = "proxy-pass-1";

fn transport(error: &Error) -> &egress_core::TransportError {
    match error {
        Error::Transport { source, .. } => source,
        other => panic!("expected a transport error, got {other:?}"),
    }
}

/// A configuration sending every request through `proxy` (environment off).
fn via(base: &str, proxy: &str) -> Config {
    config(base).with_proxy(ProxyConfig::default().with_all(proxy).with_from_env(false))
}

fn tinyproxy(auth: bool, connect_ports: &[u16]) -> Tinyproxy {
    Tinyproxy::start(TinyproxyConfig {
        basic_auth: auth.then(|| (USER.to_owned(), PASSWORD.to_owned())),
        connect_ports: connect_ports.to_vec(),
    })
}

/// A client on `b` trusting `server`'s certificate, if it has one.
fn client(b: Backend, server: &FaultServer, config: Config) -> egress_core::Client {
    match server.certificate_der() {
        Some(certificate) => b.client_trusting(config, certificate),
        None => b.client(config),
    }
}

mod scenarios {
    use super::*;

    /// RFC 9112 3.2.2: to a proxy, the request target is in absolute-form; the proxy forwards
    /// it (and, being tinyproxy, says so in `Via`, RFC 9110 7.6.3).
    pub(super) async fn proxy_http_goes_through_the_proxy_in_absolute_form(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let proxy = tinyproxy(false, &[]);
        let client = b.client(via(&server.url(""), &proxy.url(None)));
        let response = client.get("/entities/7?x=1").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        assert!(
            seen[0]
                .header("via")
                .is_some_and(|v| v.contains("tinyproxy")),
            "{:?}",
            seen[0].headers
        );
        let line = format!(
            "GET http://127.0.0.1:{}/entities/7?x=1 ",
            server.addr().port()
        );
        assert!(proxy.log().contains(&line), "{}", proxy.log());
    }

    /// RFC 9110 9.3.6: `https://` goes through a CONNECT tunnel; TLS and ALPN are with the
    /// origin inside it, so HTTP/2 is still negotiated end to end (RFC 9113 3.2).
    pub(super) async fn proxy_https_tunnels_with_connect_and_speaks_http_2_with_the_origin(
        b: Backend,
    ) {
        let server = FaultServer::start_tls(FaultServer::always(Reply::json(200, ENTITY)));
        let port = server.addr().port();
        let proxy = tinyproxy(false, &[port]);
        let client = client(b, &server, via(&server.url(""), &proxy.url(None)));
        let response = client.get("/x").send().await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        // A second call shares the tunnelled HTTP/2 connection.
        client.get("/y").send().await.unwrap();
        assert_eq!(server.connections(), 1);
        assert_eq!(server.requests().len(), 2);
        assert_eq!(
            proxy
                .log()
                .matches(&format!("CONNECT localhost:{port} "))
                .count(),
            1,
            "{}",
            proxy.log()
        );
    }

    /// The same tunnel to an origin that offers only `http/1.1` by ALPN.
    pub(super) async fn proxy_https_tunnels_with_connect_and_speaks_http_1_1_when_the_origin_does(
        b: Backend,
    ) {
        let server =
            FaultServer::start_tls_http1_only(FaultServer::always(Reply::json(200, ENTITY)));
        let port = server.addr().port();
        let proxy = tinyproxy(false, &[port]);
        let client = client(b, &server, via(&server.url(""), &proxy.url(None)));
        let response = client.get("/x").send().await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_11);
        assert_eq!(server.requests().len(), 1);
        assert!(proxy.log().contains(&format!("CONNECT localhost:{port} ")));
    }

    /// RFC 9110 11.7.1: credentials in the proxy URL go as `Proxy-Authorization` on every
    /// forwarded request and on CONNECT; the proxy consumes them (the origin never sees them).
    pub(super) async fn proxy_credentials_from_the_url_are_accepted_by_a_proxy_requiring_them(
        b: Backend,
    ) {
        let plain = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let tls = FaultServer::start_tls(FaultServer::always(Reply::json(200, ENTITY)));
        let proxy = tinyproxy(true, &[tls.addr().port()]);
        let url = proxy.url(Some((USER, PASSWORD)));
        let http = b.client(via(&plain.url(""), &url));
        assert_eq!(http.get("/a").send().await.unwrap().status(), 200);
        assert_eq!(http.get("/b").send().await.unwrap().status(), 200);
        let https = client(b, &tls, via(&tls.url(""), &url));
        assert_eq!(https.get("/c").send().await.unwrap().status(), 200);
        for seen in plain.requests().iter().chain(tls.requests().iter()) {
            assert_eq!(seen.header("proxy-authorization"), None);
        }
        assert_eq!(plain.requests().len() + tls.requests().len(), 3);
    }

    /// RFC 9110 15.5.8: 407 means the proxy wants credentials. Without them the call fails at
    /// once with the typed proxy refusal: final (no retry), never sent to the origin, for a
    /// CONNECT tunnel and for a forwarded `http://` request alike.
    pub(super) async fn proxy_without_credentials_is_refused_with_407_after_one_attempt(
        b: Backend,
    ) {
        let plain = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let tls = FaultServer::start_tls(FaultServer::always(Reply::json(200, ENTITY)));
        let proxy = tinyproxy(true, &[tls.addr().port()]);
        for origin in [&plain, &tls] {
            let client = client(b, origin, via(&origin.url(""), &proxy.url(None)));
            let error = client.get("/x").send().await.unwrap_err();
            let failure = transport(&error);
            assert_eq!(
                failure.kind(),
                TransportErrorKind::ProxyRefused,
                "{error:?}"
            );
            assert_eq!(
                failure.proxy_status(),
                Some(http::StatusCode::PROXY_AUTHENTICATION_REQUIRED)
            );
            assert!(failure.is_proxy());
            assert_eq!(error.attempts(), 1, "a 407 is final");
            assert!(!error.is_retryable());
            assert!(!error.may_have_been_sent());
            assert_eq!(origin.requests().len(), 0);
        }
    }

    /// RFC 9110 9.3.6: a proxy may refuse a tunnel (tinyproxy answers 403 to a port not in
    /// its `ConnectPort` list): the typed refusal with the status, one attempt.
    pub(super) async fn proxy_refusing_a_tunnel_with_403_is_a_final_proxy_error(b: Backend) {
        let tls = FaultServer::start_tls(FaultServer::always(Reply::json(200, ENTITY)));
        let proxy = tinyproxy(false, &[]);
        let client = client(b, &tls, via(&tls.url(""), &proxy.url(None)));
        let error = client.get("/x").send().await.unwrap_err();
        let failure = transport(&error);
        assert_eq!(failure.kind(), TransportErrorKind::ProxyRefused);
        assert_eq!(failure.proxy_status(), Some(http::StatusCode::FORBIDDEN));
        assert_eq!(error.attempts(), 1);
        assert_eq!(tls.connections(), 0);
    }

    /// `no_proxy` hosts are reached directly: the proxy never sees them.
    pub(super) async fn proxy_is_bypassed_for_no_proxy_hosts(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let proxy = tinyproxy(false, &[]);
        let port = server.addr().port();
        let proxied = ProxyConfig::default()
            .with_all(proxy.url(None))
            .with_from_env(false);
        for list in [
            "127.0.0.1",
            "127.0.0.0/8",
            &format!("127.0.0.1:{port}"),
            "*",
        ] {
            let config = config(&server.url("")).with_proxy(proxied.clone().with_no_proxy(list));
            b.client(config).get("/direct").send().await.unwrap();
        }
        let other_port = config(&server.url("")).with_proxy(
            proxied
                .clone()
                .with_no_proxy(format!("127.0.0.1:{}", port + 1)),
        );
        b.client(other_port).get("/proxied").send().await.unwrap();
        let seen = server.requests();
        assert_eq!(seen.len(), 5);
        for direct in &seen[..4] {
            assert_eq!(direct.header("via"), None, "went direct");
        }
        assert!(
            seen[4].header("via").is_some(),
            "the port rule matched only its port"
        );
        assert!(!proxy.log().contains("/direct"), "{}", proxy.log());
    }

    /// An `https://` proxy URL means TLS to the proxy (trusting the client's roots): here the
    /// TLS fault server stands in for a forwarding proxy and records what it was sent: the
    /// request in absolute-form (RFC 9112 3.2.2) with the URL's credentials as
    /// `Proxy-Authorization: Basic` (RFC 9110 11.7.1).
    pub(super) async fn proxy_url_with_https_speaks_tls_to_the_proxy(b: Backend) {
        let fake_proxy = FaultServer::start_tls(FaultServer::always(Reply::json(200, ENTITY)));
        let url = fake_proxy
            .url("")
            .replace("https://", &format!("https://{USER}:{PASSWORD}@"));
        let origin = "http://origin.invalid:8080";
        let config = via(origin, &url);
        let client = b.client_trusting(config, fake_proxy.certificate_der().unwrap());
        client.get("/entities/7").send().await.unwrap();
        let seen = fake_proxy.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "http://origin.invalid:8080/entities/7");
        assert_eq!(seen[0].header("host"), Some("origin.invalid:8080"));
        // base64("alice:proxy-pass-1")
        assert_eq!(
            seen[0].header("proxy-authorization"),
            Some("Basic YWxpY2U6cHJveHktcGFzcy0x")
        );
    }

    /// A proxy that refuses connections: never sent, so retried like any refused connect,
    /// and the error says it was the proxy.
    pub(super) async fn proxy_that_is_down_fails_never_sent_and_is_retried(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let mut proxy = tinyproxy(false, &[]);
        let url = proxy.url(None);
        proxy.stop();
        let client = b.client(via(&server.url(""), &url));
        let error = client.post("/x").send().await.unwrap_err();
        let failure = transport(&error);
        assert_eq!(
            failure.kind(),
            TransportErrorKind::ConnectRefused,
            "{error:?}"
        );
        assert!(failure.is_proxy(), "{error:?}");
        assert!(failure.to_string().contains("proxy"), "{failure}");
        assert!(!error.may_have_been_sent());
        assert_eq!(error.attempts(), 3, "never sent: retried even for POST");
        assert_eq!(server.requests().len(), 0);
    }

    /// The connect timeout covers connecting to the proxy, the CONNECT exchange and TLS: a
    /// proxy that never answers CONNECT fails the attempt at the connect timeout.
    pub(super) async fn proxy_that_never_answers_connect_fails_at_the_connect_timeout(b: Backend) {
        let silent = FaultServer::start(FaultServer::always(Reply::fault(Fault::NeverAnswer)));
        let config = via("https://localhost:9/", &silent.url(""))
            .with_connect_timeout(ms(300))
            .with_retry(egress_core::RetryPolicy::disabled());
        let client = b.client(config);
        let started = Instant::now();
        let error = client.get("/x").send().await.unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(
                error,
                Error::Timeout {
                    kind: egress_core::TimeoutKind::Connect,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(took >= ms(300) && took < ms(1500), "{took:?}");
        assert_eq!(silent.requests()[0].method, "CONNECT");
    }

    /// The conventional environment variables are honoured by default and ignored when
    /// turned off (`[proxy] from_env = false`). Environment variables are process-wide (and
    /// setting them is unsafe in a threaded test), so this runs the check in a child process
    /// of this test binary with the variables set.
    pub(super) async fn proxy_environment_variables_are_honoured_and_ignored_when_turned_off(
        b: Backend,
    ) {
        if let Ok(base) = std::env::var("EGRESS_PROXY_ENV_CHILD") {
            let honoured = b.client(config(&base));
            honoured.get("/from-env").send().await.unwrap();
            let ignored =
                b.client(config(&base).with_proxy(ProxyConfig::default().with_from_env(false)));
            ignored.get("/env-off").send().await.unwrap();
            return;
        }
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let proxy = tinyproxy(false, &[]);
        let name = match b {
            Backend::Tokio => {
                "proxy_environment_variables_are_honoured_and_ignored_when_turned_off::tokio"
            }
            Backend::AsyncStd => {
                "proxy_environment_variables_are_honoured_and_ignored_when_turned_off::async_std"
            }
        };
        let mut child = Command::new(std::env::current_exe().unwrap());
        child
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env("EGRESS_PROXY_ENV_CHILD", server.url(""))
            .env("http_proxy", proxy.url(None))
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env_remove("HTTP_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env_remove("REQUEST_METHOD");
        let output = child.output().unwrap();
        assert!(
            output.status.success(),
            "the child failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let seen = server.requests();
        assert_eq!(seen.len(), 2, "the child made both calls");
        assert_eq!(seen[0].path, "/from-env");
        assert!(seen[0].header("via").is_some(), "http_proxy was honoured");
        assert_eq!(seen[1].path, "/env-off");
        assert_eq!(seen[1].header("via"), None, "from_env = false ignores it");
    }

    /// Mutual TLS: with the client identity from the CA the server trusts, calls succeed, the
    /// identity given in code (bytes) or by `[tls]` (paths).
    pub(super) async fn mutual_tls_with_the_client_identity_succeeds(b: Backend) {
        let tls = MutualTls::generate();
        let server =
            FaultServer::start_mutual_tls(FaultServer::always(Reply::json(200, ENTITY)), &tls);
        let identity =
            ClientIdentity::from_pem(tls.client_cert_pem.clone(), tls.client_key_pem.clone());
        let client = b
            .client_with_identity(config(&server.url("")), &tls.ca, Some(identity))
            .unwrap();
        let response = client.get("/x").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);

        let dir = std::env::temp_dir().join(format!("egress-mtls-{}-{b:?}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("client.pem"), &tls.client_cert_pem).unwrap();
        std::fs::write(dir.join("client.key"), &tls.client_key_pem).unwrap();
        let from_files = config(&server.url("")).with_tls(
            TlsConfig::default().with_client_pem(dir.join("client.pem"), dir.join("client.key")),
        );
        let client = b.client_with_identity(from_files, &tls.ca, None).unwrap();
        let result = client.get("/y").send().await;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(result.unwrap().status(), 200);
        assert_eq!(server.requests().len(), 2);
    }

    /// Mutual TLS: without a client certificate, or with one from a CA the server does not
    /// trust, the server rejects the handshake (RFC 8446 4.4.2.4: in TLS 1.3 after the
    /// client's Finished, so the alert arrives on the first read); the call fails with the
    /// typed TLS error after one attempt, never retried, never reaching the handler.
    pub(super) async fn mutual_tls_without_or_with_a_wrong_identity_fails_with_a_tls_error_once(
        b: Backend,
    ) {
        let tls = MutualTls::generate();
        let server =
            FaultServer::start_mutual_tls(FaultServer::always(Reply::json(200, ENTITY)), &tls);
        let stranger =
            ClientIdentity::from_pem(tls.stranger_cert_pem.clone(), tls.stranger_key_pem.clone());
        for (n, identity) in [None, Some(stranger)].into_iter().enumerate() {
            let client = b
                .client_with_identity(config(&server.url("")), &tls.ca, identity)
                .unwrap();
            let error = client.get("/x").send().await.unwrap_err();
            assert_eq!(
                transport(&error).kind(),
                TransportErrorKind::Tls,
                "{b:?} case {n}: {error:?}"
            );
            assert_eq!(error.attempts(), 1, "{error:?}");
            assert!(!error.is_retryable());
            assert_eq!(
                server.connections(),
                n as u64 + 1,
                "one handshake per case, no retry"
            );
        }
        assert_eq!(server.requests().len(), 0);
    }
}

parity!(
    proxy_http_goes_through_the_proxy_in_absolute_form,
    proxy_https_tunnels_with_connect_and_speaks_http_2_with_the_origin,
    proxy_https_tunnels_with_connect_and_speaks_http_1_1_when_the_origin_does,
    proxy_credentials_from_the_url_are_accepted_by_a_proxy_requiring_them,
    proxy_without_credentials_is_refused_with_407_after_one_attempt,
    proxy_refusing_a_tunnel_with_403_is_a_final_proxy_error,
    proxy_is_bypassed_for_no_proxy_hosts,
    proxy_url_with_https_speaks_tls_to_the_proxy,
    proxy_that_is_down_fails_never_sent_and_is_retried,
    proxy_that_never_answers_connect_fails_at_the_connect_timeout,
    proxy_environment_variables_are_honoured_and_ignored_when_turned_off,
    mutual_tls_with_the_client_identity_succeeds,
    mutual_tls_without_or_with_a_wrong_identity_fails_with_a_tls_error_once,
);

/// rustls does not read PKCS#12: the tokio builder says so instead of failing at the first
/// call.
#[test]
fn a_pkcs12_identity_is_refused_by_the_tokio_builder_with_a_config_error() {
    let identity = ClientIdentity::from_pkcs12(vec![0x30, 0x00], "pw".to_owned().into());
    let error = egress_tokio::Builder::new(Config::default())
        .with_client_identity(identity)
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "tls.client_pkcs12");
}

/// A configured proxy URL egress cannot use is refused when the client is built, naming the
/// field and not the URL (which may carry a password).
#[test]
fn an_unusable_proxy_url_is_refused_when_the_client_is_built() {
    for b in Backend::ALL {
        let config = Config::default()
            .with_proxy(ProxyConfig::default().with_https("socks5://u:hunter2@proxy:1080"));
        let error = match b {
            Backend::Tokio => egress_tokio::client(config).unwrap_err(),
            Backend::AsyncStd => egress_async_std::client(config).unwrap_err(),
        };
        assert_eq!(error.field(), "proxy.https");
        assert!(!error.to_string().contains("hunter2"));
    }
}

/// native-tls reads PKCS#12: on async-std, `[tls]` may name an archive (made here by the
/// `openssl` command from the rcgen PEM files) and its password.
#[test]
fn a_pkcs12_identity_from_the_config_is_presented_by_the_async_std_backend() {
    let openssl = egress_tests::tools::apt_binary("openssl", "openssl");
    let tls = MutualTls::generate();
    let server = FaultServer::start_mutual_tls(FaultServer::always(Reply::json(200, ENTITY)), &tls);
    let dir = std::env::temp_dir().join(format!("egress-p12-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("client.pem"), &tls.client_cert_pem).unwrap();
    std::fs::write(dir.join("client.key"), &tls.client_key_pem).unwrap();
    let status = Command::new(openssl)
        .current_dir(&dir)
        .args([
            "pkcs12",
            "-export",
            "-in",
            "client.pem",
            "-inkey",
            "client.key",
        ])
        .args(["-out", "client.p12", "-passout", "pass:p12-secret"])
        .status()
        .unwrap();
    assert!(status.success(), "openssl pkcs12 -export failed: {status}");
    let config = config(&server.url("")).with_tls(
        TlsConfig::default()
            .with_client_pkcs12(dir.join("client.p12"), "p12-secret".to_owned().into()),
    );
    let client = Backend::AsyncStd.client_with_identity(config, &tls.ca, None);
    let _ = std::fs::remove_dir_all(&dir);
    let client = client.unwrap();
    let response = Backend::AsyncStd.run(async { client.get("/x").send().await.unwrap() });
    assert_eq!(response.status(), 200);
    assert_eq!(server.requests().len(), 1);
}

/// The figure in BENCHMARKS.md: the cost per call of the proxy path on egress-tokio, as
/// the median of sequential calls to the loopback fault server, direct and through tinyproxy
/// (plain HTTP in absolute-form, where tinyproxy opens an upstream connection per request;
/// HTTPS over one CONNECT tunnel carrying HTTP/2). Not a test: run it with
/// `cargo test --release -p egress-tests --test networks -- --ignored --nocapture measure`.
#[test]
#[ignore = "a measurement, not a test"]
fn measure_the_proxy_path_cost_per_call() {
    const CALLS: usize = 2000;
    let plain = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
    let tls = FaultServer::start_tls(FaultServer::always(Reply::json(200, ENTITY)));
    let proxy = tinyproxy(false, &[tls.addr().port()]);
    let no_proxy = ProxyConfig::default().with_from_env(false);
    let cases = [
        (
            "http direct",
            config(&plain.url("")).with_proxy(no_proxy.clone()),
            &plain,
        ),
        (
            "http via tinyproxy",
            via(&plain.url(""), &proxy.url(None)),
            &plain,
        ),
        (
            "https (h2) direct",
            config(&tls.url("")).with_proxy(no_proxy),
            &tls,
        ),
        (
            "https (h2) via CONNECT",
            via(&tls.url(""), &proxy.url(None)),
            &tls,
        ),
    ];
    for (name, config, server) in cases {
        let client = client(Backend::Tokio, server, config);
        let mut took: Vec<std::time::Duration> = Backend::Tokio.run(async {
            for _ in 0..100 {
                client.get("/warm").send().await.unwrap();
            }
            let mut took = Vec::with_capacity(CALLS);
            for _ in 0..CALLS {
                let started = Instant::now();
                client.get("/x").send().await.unwrap();
                took.push(started.elapsed());
            }
            took
        });
        took.sort();
        println!(
            "{name:>24}: median {:>6.0} µs, p90 {:>6.0} µs over {CALLS} calls",
            took[CALLS / 2].as_secs_f64() * 1e6,
            took[CALLS * 9 / 10].as_secs_f64() * 1e6
        );
    }
}

/// The README's "Networks" example is a valid configuration that routes as the README says.
#[test]
fn the_readme_networks_example_parses_and_routes_as_described() {
    use egress_tokio::egress_transport::{Origin, Proxies};
    let readme = include_str!("../../README.md");
    let start = readme
        .find("```toml\n[proxy]")
        .expect("the README has a networks example")
        + "```toml\n".len();
    let end = readme[start..].find("```").expect("the block is closed");
    let config: Config = toml::from_str(&readme[start..start + end]).expect("it parses");
    assert!(!format!("{config:?}").contains("s3cret"));
    let proxies = Proxies::from_config(&config.proxy, |_| None).unwrap();
    let route = |url: &str| {
        let origin = Origin::of(&url.parse().unwrap()).unwrap();
        proxies
            .route(&origin)
            .map(|p| p.origin().authority().to_string())
    };
    assert_eq!(
        route("https://api.vendor.com/"),
        Some("proxy.internal:3128".into())
    );
    assert_eq!(
        route("http://api.vendor.com/"),
        Some("proxy.internal:3128".into())
    );
    assert_eq!(route("http://127.0.0.1:8080/"), None);
    assert_eq!(route("https://users.svc.cluster.local/"), None);
    assert_eq!(route("http://metadata.internal/"), None);
    assert!(route("http://metadata.internal:8080/").is_some());
    assert_eq!(
        config.tls.client_cert.as_deref(),
        Some(std::path::Path::new("/etc/egress/client.pem"))
    );
}
