//! The tokio backend of egress: the sans-IO core driven over hyper through egress-transport,
//! on tokio sockets, rustls and tokio's timers.
//!
//! # Build one client, share it, and what dropping a call does
//!
//! Build one [`Client`](egress_core::Client) at start-up and pass it (or a vendor client built
//! on it) to whatever needs it; clones are cheap and share the connection pool and the retry
//! budget. Never build one per call: you would lose both.
//!
//! A call is a future. **Dropping it cancels the attempt in flight** (its HTTP/1.1 connection
//! is closed, not returned to the pool; on HTTP/2 only its stream is reset) **and schedules nothing more**: no retry, no backoff timer, nothing
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
//! - **Transport**: [`egress_transport`], shared with egress-async-std: hyper's HTTP/1.1 and
//!   HTTP/2 connections (HTTP/2 when ALPN picks `h2`, one multiplexed connection per origin),
//!   one pool for `http://` and `https://` (idle timeout and idle connections per host from
//!   [`PoolConfig`](egress_core::PoolConfig), idle connections closed on time), an HTTP/1.1
//!   connection returned only once its response was read to the end. This crate gives it
//!   tokio TCP sockets (TCP_NODELAY), rustls with the ring provider and ALPN `h2`/`http/1.1`
//!   (trusting Mozilla's roots by default; the `native-roots` feature and
//!   [`Builder::with_root_certificate`] for others), `tokio::spawn` and tokio's timers.
//!   [`Builder::build_with_connector`] takes a connector of your own. Redirects are not
//!   followed.
//! - **Networks**: outbound proxies from `[proxy]` or the environment (`HTTPS_PROXY`,
//!   `HTTP_PROXY`, `NO_PROXY`; see [`ProxyConfig`](egress_core::ProxyConfig) for
//!   the rules), `CONNECT` tunnels with TLS and ALPN to the origin inside; a client
//!   certificate for mutual TLS from `[tls]` or [`Builder::with_client_identity`] (PEM).
//! - **Time**: `tokio::time::Instant` and `tokio::time::sleep_until`, so
//!   `#[tokio::test(start_paused = true)]` controls egress time (the pool's idle timers
//!   included); the wall clock advances with it ([`egress_transport::RuntimeClock`]).
//! - **Correlation**: [`with_correlation_id`] sets an ambient ID (a task-local) used by every call
//!   inside it that carries none.
//!
//! # Timeouts: which are exact
//!
//! The same on both backends (the transport enforces them):
//!
//! | limit | enforcement |
//! |---|---|
//! | connect (DNS, TCP and TLS) | exact: the attempt's connect deadline, around the whole connect |
//! | pool acquire | a pooled connection not ready by the attempt's pool deadline fails with `PoolTimeout`; nothing queues (a call takes an idle connection, shares the origin's HTTP/2 connection, or opens one) |
//! | write | not observable separately (hyper does not report when writing ends): the head must arrive within `min(write, read)` of the attempt's start (stricter) |
//! | read: to the response head | as above, `min(write, read)` from the attempt's start |
//! | read: between body chunks | exact |
//! | per attempt, whole call | exact, by the core's driver |
//! | body size | exact: refused from `Content-Length`, else stopped at the limit while reading; responses without a body (to `HEAD`; 1xx, 204, 304) are never checked against it |
//!
//! # Errors
//!
//! Connector, hyper and IO errors are mapped into the core's
//! [`TransportErrorKind`](egress_core::TransportErrorKind) by the transport's one table
//! ([`egress_transport::error_kind`]), with the native error kept as the source: failed
//! resolution, refused or failed connects, connect timeouts and TLS failures are "never sent";
//! resets and closes after connecting "may have been sent"; malformed framing is a
//! `Protocol` error, never retried.

mod client;
mod connector;
mod rt;

pub use egress_core;
/// The shared transport, for [`Builder::build_with_connector`]'s [`Connect`](egress_transport::Connect).
pub use egress_transport;

pub use client::{Builder, client};
pub use egress_transport::ClientIdentity;
pub use rt::{OsEntropy, ThreadEntropy, current_correlation_id, with_correlation_id};
