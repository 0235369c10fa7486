//! The tokio backend of egress: the sans-IO core driven over hyper and hyper-util.
//!
//! # Build one client, share it, and what dropping a call does
//!
//! Build one [`Client`](egress_core::Client) at start-up and pass it (or a vendor client built
//! on it) to whatever needs it; clones are cheap and share the connection pool and the retry
//! budget. Never build one per call: you would lose both.
//!
//! A call is a future. **Dropping it cancels the attempt in flight** (its connection is closed,
//! not returned to the pool) **and schedules nothing more**: no retry, no backoff timer, nothing
//! left running in the background. Only the retry budget's record of the attempts already made
//! survives. Calls need a tokio runtime with the time and IO drivers enabled.
//!
//! ```no_run
//! use std::time::Duration;
//! use egress_tokio::egress_core::{Config, RetryPolicy};
//!
//! #[derive(serde::Deserialize)]
//! struct Entity { id: String }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Once, at start-up:
//! let client = egress_tokio::client(
//!     Config::default()
//!         .with_base_url("https://api.example.com/v1")
//!         .with_retry(RetryPolicy::standard().with_max_attempts(4))
//!         .with_deadline(Duration::from_secs(20)),
//! )?;
//!
//! // Anywhere, with a clone:
//! let entity: Entity = client.get("/entities/7").send().await?.json()?;
//! # let _ = entity.id; Ok(()) }
//! ```
//!
//! # What it does
//!
//! - **Transport**: HTTPS through hyper-util's pooled client, HTTP/1.1 or HTTP/2 negotiated by
//!   ALPN; plain HTTP through egress's own pool of hyper HTTP/1.1 connections (opened by the same
//!   connector), which does for these requests what hyper-util's client did at about a tenth of
//!   its cost per request (BENCHMARKS.md) and hands out a connection only once its previous
//!   response was read to the end. A client built with [`Builder::build_with_connector`] or
//!   [`Builder::build_with_hyper_client`] sends everything through hyper-util. rustls with the
//!   ring provider, trusting Mozilla's roots by default (`native-roots` feature and
//!   [`Builder::with_root_certificate`] for others); TCP_NODELAY; pool idle timeout and idle
//!   connections per host from [`PoolConfig`](egress_core::PoolConfig) in both pools. Redirects
//!   are not followed.
//! - **Time**: [`TokioClock`] reads `tokio::time::Instant`, so `#[tokio::test(start_paused = true)]`
//!   controls egress time; [`TokioSleeper`] uses `tokio::time::sleep_until`.
//! - **Correlation**: [`with_correlation_id`] sets an ambient ID (a task-local) used by every call
//!   inside it that carries none.
//!
//! # Timeouts: which are exact
//!
//! | limit | enforcement on this backend |
//! |---|---|
//! | connect (TCP and TLS) | exact, on the connector |
//! | pool acquire | neither pool queues: a call takes an idle connection or opens one, so there is no wait to bound; covered by the connect limit (and the head limit while a returned connection's driver catches up) |
//! | write | not observable separately: the head must arrive within `min(write, read)` of the attempt's start (stricter) |
//! | read: to the response head | as above, `min(write, read)` from the attempt's start (stricter) |
//! | read: between body chunks | exact |
//! | per attempt, whole call | exact, by the core's driver |
//! | body size | exact: refused from `Content-Length`, else stopped at the limit while reading |
//!
//! # Errors
//!
//! hyper, hyper-util, rustls and IO errors are mapped into the core's
//! [`TransportErrorKind`](egress_core::TransportErrorKind) with the native error kept as the
//! source: refused or failed connects, connect timeouts and TLS failures are "never sent";
//! resets and closes after connecting are "may have been sent".

mod client;
mod connector;
mod rt;

pub use egress_core;
/// The shared transport, for [`Builder::build_with_connector`]'s [`Connect`](egress_transport::Connect).
pub use egress_transport;

pub use client::{Builder, client};
pub use rt::{
    OsEntropy, ThreadEntropy, TokioClock, TokioSleeper, current_correlation_id, with_correlation_id,
};
