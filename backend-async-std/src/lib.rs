//! The async-std backend of egress: the sans-IO core driven over surf on async-std.
//!
//! # Build once, share; dropping a call cancels the attempt in flight and schedules nothing more
//!
//! Build one [`Client`](egress_core::Client) at start-up and pass it (or a vendor client built
//! on it) to whatever needs it; clones are cheap and share the connection pool and the retry
//! budget. Never build one per call: you would lose both.
//!
//! A call is a future. **Dropping it cancels the attempt in flight** (its connection is closed,
//! never returned to the pool) **and schedules nothing more**: no retry, no backoff timer,
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
//! smol) and **surf is unmaintained** (no release since 2.3.2; it still speaks `http-types` 2,
//! not `http` 1). This backend exists for services that already run on async-std. New services
//! should pick `egress-tokio`. Everything runtime-specific sits behind the core's small runtime
//! seam, so a later smol backend would reuse the connector, pool and conversions here.
//!
//! # What it does
//!
//! - **Transport**: [`SurfTransport`] sends through this crate's HTTP client: async-h1 (surf's
//!   HTTP/1.1 engine, from surf with default features off and its `h1-client` feature), called
//!   directly rather than through a `surf::Client` (which would add only its empty middleware
//!   chain), over TCP with TCP_NODELAY, and TLS through native-tls on the system's OpenSSL 3, trusting
//!   the system's roots by default ([`Builder::with_root_certificate`] for others). HTTP/1.1
//!   only: no HTTP/2. Pool idle timeout and idle connections per host from
//!   [`PoolConfig`](egress_core::PoolConfig) (an idle connection past its timeout is closed
//!   when the pool is next used for its host); `max_idle_per_host = 0` turns keep-alive off.
//!   Redirects are not followed.
//!
//!   surf's built-in `H1Client` is not used by default, because its pool takes back a
//!   connection whose exchange was abandoned (a timeout, a dropped call, a body over the limit)
//!   and can then hand the next request the previous response; it also has no connect timeout
//!   on pooled connections and turns connect failures into strings. Here a connection returns
//!   to the pool only after its response was read to the exact end.
//! - **Time**: [`AsyncStdClock`] reads `std::time::Instant`, the clock of async-io's timers;
//!   [`AsyncStdSleeper`] uses `async_io::Timer::at`. async-std has no paused time: tests that
//!   need virtual time use the core's `test-util` clock and sleeper.
//! - **Correlation**: [`with_correlation_id`] sets an ambient ID (a thread-local set around
//!   each poll of the wrapped future) used by every call inside it that carries none.
//!
//! # Timeouts: which are exact
//!
//! | limit | enforcement on this backend | on egress-tokio |
//! |---|---|---|
//! | connect (DNS, TCP and TLS) | exact, on the connector | exact, on the connector |
//! | pool acquire | no wait to bound: a new connection is opened when none is idle; covered by the connect limit | the same |
//! | write | exact: from the first byte of the request to the last | not observable: the head must arrive within `min(write, read)` of the attempt's start |
//! | read: to the response head | exact: from the end of writing | within `min(write, read)` of the attempt's start |
//! | read: between body chunks | exact | exact |
//! | per attempt, whole call | exact, by the core's driver | exact, by the core's driver |
//! | body size | exact: refused from `Content-Length`, else stopped at the limit while reading | the same |
//!
//! Over a surf client of your own ([`Builder::build_with_surf_client`]) only the driver's
//! deadlines, the body limits and the body read timeout stay exact; the head must arrive within
//! `min(write, read)` of the attempt's start, and connects are bounded by that client.
//!
//! # Differences from egress-tokio that a service may notice
//!
//! - HTTP/1.1 only, and only responses framed by `Content-Length` or chunked encoding:
//!   a body delimited by closing the connection (HTTP/1.0 style) is a
//!   [`Protocol`](egress_core::TransportErrorKind::Protocol) error, as is an HTTP/1.0 response
//!   or a response head over 8 KiB.
//! - A stale pooled connection that the server closed just as it was reused fails the attempt
//!   (reported as closed before the response; retried only when the request is idempotent)
//!   instead of being retried transparently on a new connection as hyper-util does.
//! - Every request carries `Content-Length`, also `content-length: 0` on a `GET`.
//! - A request `http-types` cannot express (a method it does not know, such as a custom
//!   extension method) fails before anything is sent, as
//!   [`Unsupported`](egress_core::TransportErrorKind::Unsupported), never retried.
//! - Over a surf client of your own, a server can make async-h1 or http-types panic (a
//!   non-ASCII header value); the transport catches it and reports a protocol error, but the
//!   panic message still reaches the panic hook (stderr by default). The client a [`Builder`]
//!   makes reads responses itself (httparse into `http` types) and keeps such a value as its
//!   bytes, as hyper does.
//!
//! # Errors
//!
//! surf, async-h1, native-tls and IO errors are mapped into the core's
//! [`TransportErrorKind`](egress_core::TransportErrorKind) with the native error kept as the
//! source, by the tokio backend's rules: refused or failed connects, connect timeouts and TLS
//! failures are "never sent"; resets and closes after connecting are "may have been sent".

mod client;
mod connector;
mod convert;
mod error;
mod rt;
mod surf;
mod tls;

pub use egress_core;
/// The shared transport, for [`Builder::build_with_connector`]'s [`Connect`](egress_transport::Connect).
pub use egress_transport;
/// native-tls, for the TLS options of [`Builder`] (such as [`native_tls::Protocol`]).
pub use native_tls;

pub use client::{Builder, client};
pub use rt::{
    AsyncStdClock, AsyncStdSleeper, OsEntropy, ThreadEntropy, current_correlation_id,
    with_correlation_id,
};
pub use surf::SurfTransport;
