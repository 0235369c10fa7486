//! An example service: an axum HTTP service that calls the entities vendor through egress, run
//! the way an operator runs one.
//!
//! What it shows:
//! - the vendor client is built **once at start-up** from a TOML file plus environment
//!   overrides, stored in the application state, and never constructed in a handler;
//! - the inbound `X-Correlation-ID` (or a new one) is the ambient correlation ID of the handler,
//!   so every outbound call carries it, and it is echoed on the response;
//! - vendor errors map to HTTP answers in one place;
//! - logs through `tracing-subscriber`: `RUST_LOG` filters (default `info`), human lines by
//!   default, JSON lines with `LOG_FORMAT=json`; every egress event carries its call's
//!   correlation ID;
//! - `/metrics` in Prometheus text format: egress's OpenTelemetry-named metrics
//!   (`http_client_request_duration_seconds`, `egress_call_duration_seconds` histograms, ...);
//! - shutdown on SIGTERM (Kubernetes, systemd, `docker stop`) or SIGINT (Ctrl-C): new
//!   connections are refused, requests in flight finish within `shutdown_timeout` (default 30 s),
//!   then whatever is left is closed and the process exits 0; an inbound connection that does
//!   not send a whole request head within `header_read_timeout` (default 10 s) is closed.
//!
//! ```text
//! cargo run -p egress-vendors --example service                       # examples/service.toml
//! cargo run -p egress-vendors --example service -- path/to/service.toml
//! LOG_FORMAT=json RUST_LOG=info,egress_core=debug ENTITIES_BASE_URL=http://127.0.0.1:9090 \
//!     cargo run -p egress-vendors --example service
//! ```
//!
//! It prints `listening on ADDRESS` on stdout and logs on stderr. Environment overrides:
//! `SERVICE_LISTEN`, `SERVICE_SHUTDOWN_TIMEOUT`, `SERVICE_HEADER_READ_TIMEOUT`,
//! `ENTITIES_BASE_URL`, `ENTITIES_DEADLINE` (such as `5s`), `ENTITIES_MAX_ATTEMPTS`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use egress_core::rt::Entropy as _;
use egress_core::{Config, CorrelationId};
use egress_vendors::entities::{EntitiesClient, EntitiesError, EntityId};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The service's configuration file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The address to listen on.
    pub listen: String,
    /// How long requests in flight may take to finish after a shutdown signal.
    #[serde(with = "humantime_serde", default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// How long an inbound connection may take to send a whole request head.
    #[serde(with = "humantime_serde", default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// The entities vendor's egress configuration.
    pub entities: Config,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The configuration file when none is given: this example's own, wherever cargo runs from.
pub fn default_config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/service.toml")
}

/// Reads `path` (TOML), then applies the environment overrides from `env`.
pub fn load_config(
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ServiceConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut config: ServiceConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(listen) = env("SERVICE_LISTEN") {
        config.listen = listen;
    }
    let duration = |name: &str| -> Result<Option<Duration>, String> {
        env(name)
            .map(|text| humantime::parse_duration(&text).map_err(|e| format!("{name}: {e}")))
            .transpose()
    };
    if let Some(timeout) = duration("SERVICE_SHUTDOWN_TIMEOUT")? {
        config.shutdown_timeout = timeout;
    }
    if let Some(timeout) = duration("SERVICE_HEADER_READ_TIMEOUT")? {
        config.header_read_timeout = timeout;
    }
    if let Some(url) = env("ENTITIES_BASE_URL") {
        config.entities = config.entities.with_base_url(url);
    }
    if let Some(deadline) = duration("ENTITIES_DEADLINE")? {
        config.entities = config.entities.with_deadline(deadline);
    }
    if let Some(n) = env("ENTITIES_MAX_ATTEMPTS") {
        let n = n
            .parse()
            .map_err(|e| format!("ENTITIES_MAX_ATTEMPTS: {e}"))?;
        let retry = config.entities.retry.clone().with_max_attempts(n);
        config.entities = config.entities.with_retry(retry);
    }
    Ok(config)
}

/// What every handler shares: built once at start-up.
#[derive(Clone, Debug)]
pub struct AppState {
    entities: EntitiesClient,
    /// The Prometheus exposition, when this process installed the exporter.
    metrics: Option<PrometheusHandle>,
}

/// Builds the application state: the one vendor client of the process. Install the metrics
/// recorder first ([`install_metrics`]): building the client registers egress's metric units.
pub fn state(
    config: &ServiceConfig,
    metrics: Option<PrometheusHandle>,
) -> Result<AppState, String> {
    let client = egress_tokio::Builder::new(config.entities.clone())
        .with_service("entities")
        .build()
        .map_err(|e| e.to_string())?;
    Ok(AppState {
        entities: EntitiesClient::new(client),
        metrics,
    })
}

/// Installs the process-wide Prometheus recorder: OpenTelemetry's buckets for egress's
/// duration histograms, Prometheus's recommended names (`_seconds`, `_total`).
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    let mut builder = PrometheusBuilder::new().with_recommended_naming(true);
    for name in ["http.client.request.duration", "egress.call.duration"] {
        builder = builder
            .set_buckets_for_metric(
                Matcher::Full(name.to_owned()),
                egress_core::DURATION_BUCKETS,
            )
            .map_err(|e| format!("metrics buckets: {e}"))?;
    }
    builder
        .install_recorder()
        .map_err(|e| format!("metrics recorder: {e}"))
}

/// Installs the log subscriber: `RUST_LOG` (default `info`), JSON lines when `LOG_FORMAT` is
/// `json`, human lines otherwise; on stderr.
pub fn install_logging() -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info"));
    let filter = filter.map_err(|e| format!("RUST_LOG: {e}"))?;
    let format = std::env::var("LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format.as_str() {
        "json" => builder.json().try_init(),
        "" | "text" => builder.try_init(),
        other => return Err(format!("LOG_FORMAT takes json or text, not {other:?}")),
    };
    installed.map_err(|e| format!("logging: {e}"))
}

/// The inbound correlation ID (or a new one) becomes the ambient ID of the whole handler, and is
/// echoed on the response.
async fn correlate(request: Request, next: Next) -> Response {
    let inbound = request
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| CorrelationId::new(v).ok());
    let id = inbound.unwrap_or_else(|| {
        let mut bytes = [0u8; 16];
        egress_tokio::ThreadEntropy.fill(&mut bytes);
        CorrelationId::from_random_bytes(bytes)
    });
    let mut response = egress_tokio::with_correlation_id(id.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert("x-correlation-id", value);
    }
    response
}

#[derive(serde::Serialize)]
struct EntityView {
    id: String,
    name: String,
    version: u64,
}

async fn get_entity(State(state): State<AppState>, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(id) = EntityId::new(&id) else {
        return (StatusCode::BAD_REQUEST, "invalid entity id").into_response();
    };
    match state.entities.get_entity(&id).await {
        Ok(entity) => Json(EntityView {
            id: entity.id.to_string(),
            name: entity.name,
            version: entity.version,
        })
        .into_response(),
        Err(error) => answer(&error),
    }
}

/// The Prometheus text exposition (format 0.0.4).
async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Vendor errors as HTTP answers, in one place. Details stay in the logs, not in the answer.
fn answer(error: &EntitiesError) -> Response {
    let mut headers = HeaderMap::new();
    let status = match error {
        EntitiesError::NotFound(_) => StatusCode::NOT_FOUND,
        EntitiesError::RateLimited { retry_at, .. } => {
            let wait = retry_at.and_then(|t| t.duration_since(std::time::SystemTime::now()).ok());
            if let Some(value) =
                wait.and_then(|w| HeaderValue::from_str(&w.as_secs().max(1).to_string()).ok())
            {
                headers.insert("retry-after", value);
            }
            StatusCode::SERVICE_UNAVAILABLE
        }
        EntitiesError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    if !matches!(error, EntitiesError::NotFound(_)) {
        tracing::warn!(%error, "entities call failed");
    }
    (
        status,
        headers,
        status.canonical_reason().unwrap_or("error"),
    )
        .into_response()
}

/// The router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/entities/{id}", get(get_entity))
        .layer(middleware::from_fn(correlate))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// How the inbound side treats slow clients and shutdown.
#[derive(Clone, Copy, Debug)]
pub struct Inbound {
    /// A connection that has not sent a whole request head by then is closed.
    pub header_read_timeout: Duration,
    /// After the shutdown signal, how long requests in flight may take to finish.
    pub shutdown_timeout: Duration,
}

impl From<&ServiceConfig> for Inbound {
    fn from(config: &ServiceConfig) -> Self {
        Inbound {
            header_read_timeout: config.header_read_timeout,
            shutdown_timeout: config.shutdown_timeout,
        }
    }
}

/// How serving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every request in flight finished within the shutdown timeout.
    Drained,
    /// The shutdown timeout passed; the connections still open were closed.
    TimedOut,
}

/// Serves until `shutdown` completes, then refuses new connections and lets the requests in
/// flight finish within `inbound.shutdown_timeout`.
///
/// hyper's server (through hyper-util) rather than `axum::serve`, for its header-read timeout:
/// without one, a client that sends half a request head keeps its connection, and a graceful
/// shutdown waiting for it, open for ever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    inbound: Inbound,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let app = router(state);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(inbound.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(app.clone());
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "inbound connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    match tokio::time::timeout(inbound.shutdown_timeout, graceful.shutdown()).await {
        Ok(()) => Stopped::Drained,
        Err(_) => Stopped::TimedOut,
    }
}

/// The first of SIGTERM and SIGINT; its name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

async fn run() -> Result<(), String> {
    install_logging()?;
    let metrics = install_metrics()?;
    let path = std::env::args_os()
        .nth(1)
        .map_or_else(default_config_path, PathBuf::from);
    let config = load_config(&path, |k| std::env::var(k).ok())?;
    let state = state(&config, Some(metrics.clone()))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {address}");
    tracing::info!(%address, config = %path.display(), "service started");
    // Histogram buckets are drained by the exporter's upkeep, as its docs ask.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            metrics.run_upkeep();
        }
    });
    let inbound = Inbound::from(&config);
    let shutdown = async move {
        let signal = shutdown_signal().await;
        tracing::info!(
            signal,
            timeout_s = inbound.shutdown_timeout.as_secs_f64(),
            "shutting down: refusing new connections, finishing requests in flight"
        );
    };
    match serve(listener, state, inbound, shutdown).await {
        Stopped::Drained => tracing::info!("stopped: every request in flight finished"),
        Stopped::TimedOut => tracing::warn!(
            timeout_s = inbound.shutdown_timeout.as_secs_f64(),
            "stopped: the shutdown timeout passed; the connections still open were closed"
        ),
    }
    Ok(())
}

#[allow(dead_code)] // the test includes this file as a module and has its own entry point
#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Display, not Debug: one readable line, no escaped newlines.
            eprintln!("service: {error}");
            ExitCode::FAILURE
        }
    }
}
