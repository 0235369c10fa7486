//! Secrets end to end: through each real backend and the fault server, no secret reaches the
//! captured telemetry, any `Debug` of the objects involved, or any error's `Display`; the
//! same for a proxy's password and `Proxy-Authorization`, through a real proxy (tinyproxy).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, Buffer};
use egress_core::RetryPolicy;
use egress_core::{Config, Credentials, SecretString};
use egress_tests::server::{Fault, FaultServer, Reply};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;

const BEARER: &str = "e2e-bearer-secret-1";
const API_KEY: &str = "e2e-apikey-secret-2";
const COOKIE: &str = "e2e-cookie-secret-3";
const PASSWORD: &str = "e2e-userinfo-secret-4";
const QUERY: &str = "e2e-query-secret-5";
const SET_COOKIE: &str = "e2e-setcookie-secret-6";
const BODY: &str = "e2e-body-secret-7";

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)] // decoded to validate
struct Entity {
    id: String,
}

/// A subscriber that writes every span and event, at every level, into the returned buffer.
fn capture() -> (impl tracing::Subscriber + Send + Sync, Arc<Mutex<Vec<u8>>>) {
    let text = Arc::new(Mutex::new(Vec::new()));
    let writer = text.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(move || Buffer(writer.clone()))
            .with_span_events(FmtSpan::FULL),
    );
    (subscriber, text)
}

/// The `Debug` of an error, its `Display` and every source's.
fn show_error(shown: &mut Vec<String>, e: &egress_core::Error) {
    shown.push(format!("{e:?}"));
    shown.push(e.to_string());
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        shown.push(s.to_string());
        source = s.source();
    }
}

/// No secret in the captured telemetry nor in anything shown.
fn assert_no_leak<S: AsRef<str>>(
    backend: Backend,
    captured: &str,
    shown: &[String],
    secrets: &[S],
) {
    for secret in secrets.iter().map(AsRef::as_ref) {
        assert!(
            !captured.contains(secret),
            "{backend:?}: telemetry leaks {secret}:\n{captured}"
        );
        for s in shown {
            assert!(
                !s.contains(secret),
                "{backend:?}: a Debug or Display leaks {secret}:\n{s}"
            );
        }
    }
}

fn no_secret_leaks(backend: Backend) {
    let echo = format!(r#"{{"error":"bad token {BEARER}","token":"{BODY}","cookie":"{COOKIE}"}}"#);
    let set_cookie = format!("sid={SET_COOKIE}; Secure");
    let server = FaultServer::start(FaultServer::script([
        // 1 success; 2 a retry then success; 3 a timeout; 4 a validation failure; 5 a 401.
        Reply::json(200, r#"{"id":"1"}"#).header("set-cookie", &set_cookie),
        Reply::json(503, &echo).header("set-cookie", &set_cookie),
        Reply::json(200, r#"{"id":"2"}"#),
        Reply::fault(Fault::NeverAnswer),
        Reply::json(200, &echo).header("set-cookie", &set_cookie),
        Reply::json(401, &echo).header("set-cookie", &set_cookie),
    ]));
    let base = server
        .url("")
        .replace("http://", &format!("http://alice:{PASSWORD}@"));
    let config = Config::default()
        .with_base_url(base)
        .with_read_timeout(Duration::from_millis(200))
        .with_auth(Credentials::Bearer {
            token: SecretString::from(BEARER),
        })
        .with_retry(RetryPolicy::standard().with_backoff(common::config("http://x").retry.backoff));
    let (subscriber, text) = capture();
    let mut shown = vec![format!("{config:?}")];
    tracing::subscriber::with_default(subscriber, || {
        backend.run_here(async {
            let client = backend.client(config);
            shown.push(format!("{client:?}"));
            for n in 1..=5 {
                let builder = client
                    .get(&format!("/entities/{n}?token={QUERY}&page=1"))
                    .header("cookie", &format!("sid={COOKIE}"))
                    .header("x-api-key", API_KEY)
                    .max_attempts(if n == 3 { 1 } else { 3 });
                shown.push(format!("{builder:?}"));
                match builder.send().await {
                    Ok(response) => {
                        shown.push(format!("{response:?}"));
                        if let Err(e) = response.json::<Entity>() {
                            shown.push(format!("{e:?}"));
                            shown.push(e.to_string());
                        }
                    }
                    Err(e) => show_error(&mut shown, &e),
                }
            }
        });
    });
    let seen = server.requests();
    assert_eq!(seen.len(), 6, "every scenario reached the server");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {BEARER}").as_str())
    );
    let captured = String::from_utf8_lossy(&text.lock().unwrap()).into_owned();
    assert!(
        captured.contains("egress.attempt"),
        "telemetry was captured:\n{captured}"
    );
    let secrets = [BEARER, API_KEY, COOKIE, PASSWORD, QUERY, SET_COOKIE, BODY];
    assert_no_leak(backend, &captured, &shown, &secrets);
}

const PROXY_PASSWORD: &str = "e2e-proxy-secret-8";
const WRONG_PROXY_PASSWORD: &str = "e2e-proxy-secret-9";

/// RFC 4648 base64, to look for the `Proxy-Authorization: Basic` value itself.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Through a real proxy that requires credentials (tinyproxy): the proxy URL's password and
/// the `Proxy-Authorization` value (RFC 9110 11.7.1) reach no telemetry, no `Debug` of the
/// configuration, client or errors, and no error text; the origin never sees them either.
fn no_proxy_secret_leaks(backend: Backend) {
    use egress_core::ProxyConfig;
    use egress_tests::proxy::{Tinyproxy, TinyproxyConfig};
    let plain = FaultServer::start(FaultServer::always(Reply::json(200, r#"{"id":"1"}"#)));
    let tls = FaultServer::start_tls(FaultServer::always(Reply::json(200, r#"{"id":"1"}"#)));
    let proxy = Tinyproxy::start(TinyproxyConfig {
        basic_auth: Some(("alice".to_owned(), PROXY_PASSWORD.to_owned())),
        connect_ports: vec![tls.addr().port()],
    });
    let good = proxy.url(Some(("alice", PROXY_PASSWORD)));
    let wrong = proxy.url(Some(("alice", WRONG_PROXY_PASSWORD)));
    let via = |base: String, url: &str| {
        Config::default()
            .with_base_url(base)
            .with_proxy(ProxyConfig::default().with_all(url).with_from_env(false))
    };
    let text = Arc::new(Mutex::new(Vec::new()));
    let writer = text.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(move || Buffer(writer.clone()))
            .with_span_events(FmtSpan::FULL),
    );
    let mut shown = Vec::new();
    let mut outcomes = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        backend.run_here(async {
            let certificate = tls.certificate_der().unwrap();
            for (base, url, trusted) in [
                (plain.url(""), &good, None),
                (tls.url(""), &good, Some(certificate)),
                (plain.url(""), &wrong, None),
                (tls.url(""), &wrong, Some(certificate)),
            ] {
                let config = via(base, url);
                shown.push(format!("{config:?}"));
                let client = match trusted {
                    Some(der) => backend.client_trusting(config, der),
                    None => backend.client(config),
                };
                shown.push(format!("{client:?}"));
                match client.get("/entities/1").send().await {
                    Ok(response) => {
                        outcomes.push(response.status().to_string());
                        shown.push(format!("{response:?}"));
                    }
                    Err(e) => {
                        outcomes.push(match &e {
                            egress_core::Error::Transport { source, .. } => {
                                format!("{:?} {:?}", source.kind(), source.proxy_status())
                            }
                            other => format!("{:?}", other.status()),
                        });
                        shown.push(format!("{e:?}"));
                        shown.push(e.to_string());
                        let mut source = std::error::Error::source(&e);
                        while let Some(s) = source {
                            shown.push(format!("{s} {s:?}"));
                            source = s.source();
                        }
                    }
                }
            }
        });
    });
    // The right password passes. tinyproxy answers a wrong one with 401 and WWW-Authenticate
    // (RFC 9110 15.5.8 would have 407): to a forwarded request that is a status like the
    // origin's (the call ends there: 401 is not retried); to CONNECT, the typed refusal.
    assert_eq!(
        outcomes,
        ["200 OK", "200 OK", "Some(401)", "ProxyRefused Some(401)"]
    );
    let captured = String::from_utf8_lossy(&text.lock().unwrap()).into_owned();
    assert!(
        captured.contains("egress.attempt"),
        "telemetry was captured"
    );
    let secrets = [
        PROXY_PASSWORD.to_owned(),
        WRONG_PROXY_PASSWORD.to_owned(),
        base64(format!("alice:{PROXY_PASSWORD}").as_bytes()),
        base64(format!("alice:{WRONG_PROXY_PASSWORD}").as_bytes()),
    ];
    for secret in &secrets {
        assert!(
            !captured.contains(secret.as_str()),
            "{backend:?}: telemetry leaks {secret}:\n{captured}"
        );
        for s in &shown {
            assert!(
                !s.contains(secret.as_str()),
                "{backend:?}: leaks {secret}:\n{s}"
            );
        }
    }
    for seen in plain.requests().iter().chain(tls.requests().iter()) {
        assert_eq!(
            seen.header("proxy-authorization"),
            None,
            "the origin never sees it"
        );
    }
}

#[test]
fn base64_is_rfc_4648() {
    assert_eq!(
        base64(b"Aladdin:open sesame"),
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
    assert_eq!(base64(b"ab"), "YWI=");
}

mod no_proxy_secret_leaks {
    use super::common::Backend;

    #[test]
    fn tokio() {
        super::no_proxy_secret_leaks(Backend::Tokio);
    }

    #[test]
    fn async_std() {
        super::no_proxy_secret_leaks(Backend::AsyncStd);
    }
}

mod no_secret_leaks {
    use super::common::Backend;

    #[test]
    fn tokio() {
        super::no_secret_leaks(Backend::Tokio);
    }

    #[test]
    fn async_std() {
        super::no_secret_leaks(Backend::AsyncStd);
    }
}

/// OAuth 2.0 end to end against a real authorization server (oidc-provider): the client secret
/// (right and wrong, in the body and in Basic credentials) and every access token the API
/// accepted never reach the telemetry, a `Debug` or an error's `Display`.
fn oauth2_secrets_never_leak(backend: Backend) {
    use egress_core::ClientAuthMethod;
    use egress_core::{Client, OAuth2Config};
    use egress_tests::oauth::{AuthServer, BASIC_CLIENT, POST_CLIENT};

    const CLIENT_SECRET: &str = "e2e-oauth2-client-secret-8";
    const WRONG_SECRET: &str = "e2e-oauth2-wrong-secret-9";
    let server = AuthServer::start(CLIENT_SECRET, Duration::from_secs(600));
    // From the configuration (client_secret_post: the secret travels in the body) ...
    let config = Config::default()
        .with_base_url(server.api_url())
        .with_auth(Credentials::OAuth2(
            OAuth2Config::new(server.token_url(), POST_CLIENT, CLIENT_SECRET.into())
                .with_auth_method(ClientAuthMethod::ClientSecretPost),
        ));
    // ... and from a builder (client_secret_basic), with a wrong secret.
    let wrong = OAuth2Config::new(server.token_url(), BASIC_CLIENT, WRONG_SECRET.into());
    let (subscriber, text) = capture();
    let mut shown = vec![format!("{config:?}"), format!("{wrong:?}")];
    tracing::subscriber::with_default(subscriber, || {
        backend.run_here(async {
            let client = backend.client(config);
            let refused: Client = match backend {
                Backend::Tokio => {
                    egress_tokio::Builder::new(Config::default().with_base_url(server.api_url()))
                        .with_oauth2(wrong)
                        .build()
                }
                Backend::AsyncStd => egress_async_std::Builder::new(
                    Config::default().with_base_url(server.api_url()),
                )
                .with_oauth2(wrong)
                .build(),
            }
            .expect("the configuration is valid");
            shown.push(format!("{client:?}"));
            shown.push(format!("{refused:?}"));
            let mut results = vec![client.get("/entities/1").send().await];
            server.revoke_accepted(); // the next call is rejected once, then re-sent
            results.push(client.get("/entities/2").send().await);
            results.push(refused.get("/entities/3").send().await);
            for result in results {
                match result {
                    Ok(response) => shown.push(format!("{response:?}")),
                    Err(e) => show_error(&mut shown, &e),
                }
            }
        });
    });
    let tokens = server.accepted_tokens();
    assert_eq!(
        tokens.len(),
        2,
        "two tokens were issued and used: {tokens:?}"
    );
    let captured = String::from_utf8_lossy(&text.lock().unwrap()).into_owned();
    assert!(
        captured.contains("token refreshed") && captured.contains("token refresh failed"),
        "the token telemetry was captured:\n{captured}"
    );
    let basic = |secret: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_CLIENT}:{secret}"))
    };
    let secrets = [
        CLIENT_SECRET.to_owned(),
        WRONG_SECRET.to_owned(),
        basic(CLIENT_SECRET),
        basic(WRONG_SECRET),
    ];
    let everything: Vec<&String> = secrets.iter().chain(&tokens).collect();
    assert_no_leak(backend, &captured, &shown, &everything);
}

mod oauth2_secrets_never_leak {
    use super::common::Backend;

    #[test]
    fn tokio() {
        super::oauth2_secrets_never_leak(Backend::Tokio);
    }

    #[test]
    fn async_std() {
        super::oauth2_secrets_never_leak(Backend::AsyncStd);
    }
}
