//! An example service: an axum HTTP service that calls the entities vendor through egress.
//!
//! What it shows:
//! - the vendor client is built **once at start-up** from a TOML file plus environment
//!   overrides, stored in the application state, and never constructed in a handler;
//! - the inbound `X-Correlation-ID` (or a new one) is the ambient correlation ID of the handler,
//!   so every outbound call carries it, and it is echoed on the response;
//! - vendor errors map to HTTP answers in one place;
//! - graceful shutdown: in-flight requests finish, new connections are refused.
//!
//! ```text
//! cargo run -p egress-vendors --example service -- examples/service.toml
//! ENTITIES_BASE_URL=http://127.0.0.1:9090 SERVICE_LISTEN=127.0.0.1:0 cargo run -p egress-vendors --example service
//! ```
//!
//! Environment overrides: `SERVICE_LISTEN`, `ENTITIES_BASE_URL`, `ENTITIES_DEADLINE` (such as
//! `5s`), `ENTITIES_MAX_ATTEMPTS`.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use egress_core::rt::Entropy as _;
use egress_core::{Config, CorrelationId};
use egress_vendors::entities::{EntitiesClient, EntitiesError, EntityId};

/// The service's configuration file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The address to listen on.
    pub listen: String,
    /// The entities vendor's egress configuration.
    pub entities: Config,
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
    if let Some(url) = env("ENTITIES_BASE_URL") {
        config.entities = config.entities.with_base_url(url);
    }
    if let Some(deadline) = env("ENTITIES_DEADLINE") {
        let deadline =
            humantime_duration(&deadline).map_err(|e| format!("ENTITIES_DEADLINE: {e}"))?;
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

/// `"5s"`, `"250ms"`: the same human durations the configuration file takes.
fn humantime_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// What every handler shares: built once at start-up.
#[derive(Clone, Debug)]
pub struct AppState {
    entities: EntitiesClient,
}

/// Builds the application state: the one vendor client of the process.
pub fn state(config: &ServiceConfig) -> Result<AppState, String> {
    let client = egress_tokio::Builder::new(config.entities.clone())
        .with_service("entities")
        .build()
        .map_err(|e| e.to_string())?;
    Ok(AppState {
        entities: EntitiesClient::new(client),
    })
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
    tracing::warn!(%error, "entities call failed");
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
        .with_state(state)
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[allow(dead_code)] // the test includes this file as a module and has its own entry point
#[tokio::main]
async fn main() -> Result<(), String> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "vendors/examples/service.toml".to_owned());
    let config = load_config(Path::new(&path), |k| std::env::var(k).ok())?;
    let state = state(&config)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("{}: {e}", config.listen))?;
    println!(
        "listening on {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(listener, state, shutdown)
        .await
        .map_err(|e| e.to_string())
}
