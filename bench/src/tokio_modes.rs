//! The tokio modes: egress-tokio, raw hyper-util and reqwest-retry, each on a current-thread
//! runtime (the child is pinned to one core, so one thread is all it gets). Over HTTPS each
//! trusts the upstream's certificate alone and offers `h2` and `http/1.1` by ALPN.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use egress_core::{Config, RetryPolicy};
use egress_core::{HedgeAfter, HedgingConfig, Percentile};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reqwest_middleware::ClientWithMiddleware;
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{Jitter, RetryTransientMiddleware};

use crate::measure;
use crate::workload::{Entity, Measured, Mode, Tally, Target, Workload};

/// One reused client of a tokio mode (one per process, so the sizes of the variants do not
/// matter).
#[allow(clippy::large_enum_variant)]
enum Client {
    Egress(egress_core::Client),
    Hyper(HyperClient<HttpConnector, Full<Bytes>>, Raw),
    /// The same over HTTPS: the legacy client behind hyper-rustls (a separate variant so that
    /// plain HTTP keeps the bare `HttpConnector`, as before).
    HyperTls(HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>, Raw),
    Reqwest(ClientWithMiddleware, String),
}

/// How the raw hyper-util modes write a request: to `base`, with no headers (`hyper-util`) or
/// with those egress sends by default (`hyper-util-headers`).
struct Raw {
    base: String,
    headers: Option<EgressHeaders>,
}

/// The headers an egress client sends on every request by default, made as a service using
/// hyper-util alone would make them: names and fixed values once, the correlation ID per call
/// (a version-4 UUID from a counter mixed by splitmix64: no system call, as egress draws its
/// IDs from a thread-local generator), marked sensitive as egress marks it.
struct EgressHeaders {
    user_agent: http::HeaderValue,
    accept_encoding: http::HeaderValue,
    correlation: http::HeaderName,
    counter: std::sync::atomic::AtomicU64,
}

impl EgressHeaders {
    fn new() -> Self {
        Self {
            // egress's own values: its User-Agent, and the codings its default features decode.
            user_agent: http::HeaderValue::from_static(concat!(
                "egress/",
                env!("CARGO_PKG_VERSION")
            )),
            accept_encoding: http::HeaderValue::from_static("gzip, deflate, br, zstd"),
            correlation: http::HeaderName::from_static("x-correlation-id"),
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn correlation_id(&self) -> http::HeaderValue {
        let next = || {
            let mut z = self
                .counter
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
                .wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let random = (u128::from(next()) << 64) | u128::from(next());
        let uuid = uuid::Builder::from_random_bytes(random.to_le_bytes()).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let mut value =
            http::HeaderValue::from_bytes(uuid.hyphenated().encode_lower(&mut text).as_bytes())
                .expect("a UUID is a valid header value");
        value.set_sensitive(true);
        value
    }
}

impl Raw {
    fn new(base: String, mode: Mode) -> Self {
        let headers = (mode == Mode::HyperUtilHeaders).then(EgressHeaders::new);
        Self { base, headers }
    }

    fn request(&self, path: &str) -> Result<http::Request<Full<Bytes>>, String> {
        let mut request = http::Request::get(format!("{}{path}", self.base));
        if let Some(h) = &self.headers {
            request = request
                .header(http::header::USER_AGENT, h.user_agent.clone())
                .header(http::header::ACCEPT_ENCODING, h.accept_encoding.clone())
                .header(h.correlation.clone(), h.correlation_id());
        }
        request
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())
    }
}

fn decode(status: http::StatusCode, body: &[u8]) -> Result<Entity, String> {
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// The retry policy reqwest-retry gets: egress's defaults (3 attempts, exponential backoff from
/// 100 ms capped at 10 s, full jitter), so that both retry the same way.
pub(crate) fn reqwest_policy() -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(100), Duration::from_secs(10))
        .jitter(Jitter::Full)
        .base(2)
        .build_with_max_retries(RetryPolicy::standard().max_attempts - 1)
}

/// A rustls client configuration (ring) trusting `certificate` alone.
fn rustls_config(certificate: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            certificate.to_vec(),
        ))
        .expect("the upstream's certificate is a valid root");
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl Client {
    fn new(mode: Mode, target: Target) -> Self {
        let Target { base, certificate } = target;
        match mode {
            Mode::EgressTokio | Mode::EgressTokioHedged => {
                let mut config = Config::default().with_base_url(base);
                if mode == Mode::EgressTokioHedged {
                    let p90 = HedgeAfter::Percentile(Percentile::P90);
                    config = config.with_hedging(HedgingConfig::enabled(p90));
                }
                let mut builder = egress_tokio::Builder::new(config);
                if let Some(der) = certificate {
                    builder = builder.with_root_certificate(der);
                }
                Client::Egress(builder.build().expect("the default configuration is valid"))
            }
            Mode::HyperUtil | Mode::HyperUtilHeaders => {
                let raw = Raw::new(base, mode);
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                let builder = HyperClient::builder(TokioExecutor::new());
                match certificate {
                    None => Client::Hyper(builder.build(http), raw),
                    Some(der) => {
                        // hyper-rustls hands plain `http://` to the inner connector only when
                        // told; TLS needs the inner connector to accept `https://` URIs.
                        http.enforce_http(false);
                        let https = hyper_rustls::HttpsConnectorBuilder::new()
                            .with_tls_config(rustls_config(&der))
                            .https_only()
                            .enable_http1()
                            .enable_http2()
                            .wrap_connector(http);
                        Client::HyperTls(builder.build(https), raw)
                    }
                }
            }
            Mode::ReqwestRetry => {
                // reqwest is built without a crypto provider of its own (see Cargo.toml).
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut builder = reqwest::Client::builder().tcp_nodelay(true);
                if let Some(der) = certificate {
                    builder = builder.tls_certs_only([reqwest::Certificate::from_der(&der)
                        .expect("the upstream's certificate parses")]);
                }
                let client = builder.build().expect("reqwest builds");
                let client = reqwest_middleware::ClientBuilder::new(client)
                    .with(RetryTransientMiddleware::new_with_policy(reqwest_policy()))
                    .build();
                Client::Reqwest(client, base)
            }
            Mode::EgressAsyncStd | Mode::Surf => unreachable!("not a tokio mode"),
        }
    }

    async fn call(&self, path: &str) -> Result<Entity, String> {
        match self {
            Client::Egress(client) => client
                .get(path)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json::<Entity>()
                .map_err(|e| e.to_string()),
            Client::Hyper(client, raw) => {
                let response = client.request(raw.request(path)?).await;
                read(response.map_err(|e| e.to_string())?).await
            }
            Client::HyperTls(client, raw) => {
                let response = client.request(raw.request(path)?).await;
                read(response.map_err(|e| e.to_string())?).await
            }
            Client::Reqwest(client, base) => {
                let response = client
                    .get(format!("{base}{path}"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                decode(status, &body)
            }
        }
    }
}

/// Reads a raw hyper-util response's body whole and decodes it.
async fn read(response: http::Response<hyper::body::Incoming>) -> Result<Entity, String> {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    decode(status, &body)
}

async fn calls(client: Arc<Client>, workload: Workload, concurrency: usize, n: usize) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let next = next.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break tally;
                }
                let path = workload.path(i);
                let start = Instant::now();
                let result = client.call(&path).await;
                tally.record(start.elapsed(), result);
            }
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = workers.join_next().await {
        total.merge(tally.expect("a worker does not panic"));
    }
    total
}

/// Runs `warmup` calls, then measures `n` calls: their tally, wall time, and the process's
/// usage just before and just after them.
pub(crate) fn run(
    mode: Mode,
    workload: Workload,
    concurrency: usize,
    warmup: usize,
    n: usize,
    target: Target,
) -> Measured {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(async move {
        let client = Arc::new(Client::new(mode, target));
        if warmup > 0 {
            let _ = calls(client.clone(), workload, concurrency, warmup).await;
        }
        let before = measure::process();
        let start = Instant::now();
        let tally = calls(client, workload, concurrency, n).await;
        let elapsed = start.elapsed();
        let after = measure::process();
        Measured {
            tally,
            elapsed,
            before,
            after,
        }
    })
}
