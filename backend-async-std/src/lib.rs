//! The async-std backend of egress: the sans-IO core driven over hyper through
//! egress-transport, on async-io sockets, native-tls (the system's OpenSSL) and async-io's
//! timers.
//!
//! # Build once, share; dropping a call cancels the attempt in flight and schedules nothing more
//!
//! Build one [`Client`](egress_core::Client) at start-up and pass it (or a vendor client built
//! on it) to whatever needs it; clones are cheap and share the connection pool and the retry
//! budget. Never build one per call: you would lose both.
//!
//! A call is a future. **Dropping it cancels the attempt in flight** (its HTTP/1.1 connection
//! is closed, not returned to the pool; on HTTP/2 only its stream is reset) **and schedules nothing more**: no retry, no backoff timer,
//! nothing left running in the background. Only the retry budget's record of the attempts
//! already made survives. Calls run on any async-std task (or `async_std::task::block_on`).
//!
//! ```no_run
//! use std::time::Duration;
//! use egress_async_std::egress_core::{Config, RetryPolicy};
//!
//! #[derive(serde::Deserialize)]
//! struct Entity { id: String }
//!
//! # #[async_std::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Once, at start-up:
//! let client = egress_async_std::client(
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
//! Switching from `egress-tokio` is a one-line change: `egress_tokio::client(config)` becomes
//! `egress_async_std::client(config)`; [`Builder`], [`with_correlation_id`] and
//! [`current_correlation_id`] have the same names and shapes.
//!
//! # Maintenance status: prefer `egress-tokio` for new services
//!
//! **async-std is discontinued** (RUSTSEC-2025-0052; its last release, 1.13, points users to
//! smol) and **surf is unmaintained** (no release since 2.3.2). This backend exists for
//! services that already run on async-std. New services should pick `egress-tokio`. The
//! protocol engine is shared ([`egress_transport`]): everything here is runtime glue, so a
//! later smol backend would be a screen of code.
//!
//! # What it does
//!
//! - **Transport**: [`egress_transport`], the same as egress-tokio's: hyper's HTTP/1.1 and
//!   HTTP/2 connections (HTTP/2 when ALPN picks `h2`), one pool for `http://` and `https://`
//!   (idle timeout and idle connections per host from [`PoolConfig`](egress_core::PoolConfig),
//!   idle connections closed on time; `max_idle_per_host = 0` turns keep-alive off), an
//!   HTTP/1.1 connection returned only once its response was read to the end. This crate
//!   gives it async-io TCP sockets (TCP_NODELAY), TLS by native-tls on the system's OpenSSL 3
//!   with ALPN `h2`/`http/1.1` (the connector, and so OpenSSL's context and the system's CA
//!   bundle, is built once per client; trusting the system's roots by default,
//!   [`Builder::with_root_certificate`] for others), `async_std::task::spawn` and async-io's
//!   timers. [`Builder::build_with_connector`] takes a connector of your own. Redirects are
//!   not followed.
//! - **surf**, only behind [`Builder::build_with_surf_client`], for services that bring surf
//!   middleware. [`SurfTransport`] says what that path gives up: surf's pool reuses
//!   connections whose exchange was abandoned, **async-h1 logs whole requests, secrets
//!   included, at `log` TRACE**, HTTP/1.1 only.
//! - **Time**: `std::time::Instant`, the clock of async-io's timers; sleeps (attempt deadlines,
//!   backoff, the idle reaper) are entries under one background task that sleeps on one
//!   `async_io::Timer` until the earliest (in the workspace's benchmark at 4f66bcb, 43.3k
//!   instructions per call against 45.8k with an async-io timer per sleep); the wall clock advances with
//!   it ([`egress_transport::RuntimeClock`]). async-std has no
//!   paused time: tests that need virtual time use the core's `test-util` clock and sleeper.
//! - **Correlation**: [`with_correlation_id`] sets an ambient ID (a thread-local set around
//!   each poll of the wrapped future) used by every call inside it that carries none.
//!
//! # Timeouts: which are exact
//!
//! The transport enforces them, the same as on egress-tokio:
//!
//! | limit | enforcement |
//! |---|---|
//! | connect (DNS, TCP and TLS) | exact: the attempt's connect deadline, around the whole connect |
//! | pool acquire | a pooled connection not ready by the attempt's pool deadline fails with `PoolTimeout`; nothing queues |
//! | write | not observable separately (hyper does not report when writing ends): the head must arrive within `min(write, read)` of the attempt's start (stricter) |
//! | read: to the response head | as above |
//! | read: between body chunks | exact |
//! | per attempt, whole call | exact, by the core's driver |
//! | body size | exact: refused from `Content-Length`, else stopped at the limit while reading; responses without a body (to `HEAD`; 1xx, 204, 304) are never checked against it |
//!
//! # Differences from egress-tokio
//!
//! None in behaviour: both backends share the transport and pass the same parity suite.
//! What differs is the runtime and the TLS library (native-tls on OpenSSL here, rustls
//! there), so TLS error messages and the default trust store (the system's here, Mozilla's
//! there) differ.
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
mod convert;
mod error;
mod io;
mod rt;
mod sleeps;
mod surf;
mod tls;

pub use egress_core;
/// The shared transport, for [`Builder::build_with_connector`]'s [`Connect`](egress_transport::Connect).
pub use egress_transport;
/// native-tls, for the TLS options of [`Builder`] (such as [`native_tls::Protocol`]).
pub use native_tls;

pub use client::{Builder, client};
pub use egress_transport::ClientIdentity;
pub use rt::{OsEntropy, ThreadEntropy, current_correlation_id, with_correlation_id};
pub use surf::SurfTransport;
