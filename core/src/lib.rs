//! The sans-IO core of egress: every decision of an outbound HTTP call, as a deterministic
//! state machine.
//!
//! # Scope
//!
//! In scope: the exact request of each attempt; timeouts and the whole-call deadline; which
//! failures retry; how long to back off; honouring `Retry-After`; the retry budget; decisions
//! across calls ([`Guards`]: the circuit breaker, the host-wide hold, the client-side rate limit
//! and servers' rate-limit fields); idempotency keys and correlation IDs; access tokens and
//! their lifecycle ([`TokenSource`]: OAuth 2.0 client credentials, refresh ahead of expiry, one refresh
//! at a time, one re-send when the API rejects a token); the mapping of failures to typed
//! errors.
//!
//! Out of scope: sockets, TLS, timers, clocks and randomness. The backend crates (`egress-tokio`,
//! `egress-async-std`) bring those and drive this core through [`rt`] and [`drive()`]. Anyone can
//! drive an [`Exchange`] by hand instead: a blocking loop, a third runtime, a test.
//!
//! # Where things are
//!
//! Every type, trait and function a service or a vendor client uses is at the crate root, at
//! that one path. Three modules hold the rest: [`rt`], the hooks of backends and transports (the
//! runtime seam, the fleet coordinator, what an attempt hands a transport, the body decoder),
//! which may change between minor versions; [`test_util`] (feature `test-util`); and
//! [`telemetry_reference`], which is documentation only.
//!
//! # The drive loop
//!
//! One [`Exchange`] is one logical call, every attempt included. It is driven with two methods:
//! [`Exchange::handle_input`] takes what happened ([`Input`]), and [`Exchange::poll_output`] says
//! what to do next ([`Output`]). The contract:
//!
//! 1. Call `poll_output(now)` until it returns [`Output::Wait`] or [`Output::Done`].
//! 2. On [`Output::Send`], send the attempt (keep polling: the next output is the wait for its
//!    deadline).
//! 3. On [`Output::Wait`], wait until an attempt in flight completes or `until` passes,
//!    whichever first.
//! 4. Feed exactly one input: the response, the failure, or [`Input::Timer`]. Then cancel
//!    (drop) every attempt in flight that the exchange no longer waits for
//!    ([`Exchange::is_waiting_for`]).
//! 5. Go to 1.
//! 6. On [`Output::Done`], the call is over: cancel whatever is still in flight; polling again
//!    returns the same result.
//!
//! Without hedging one attempt at most is in flight and step 4's cancelling only drops an
//! attempt past its deadline. With hedging ([`HedgingConfig`]) a `Send` may come while an
//! earlier attempt is still in flight (the wait before it has [`WaitReason::Hedge`]): keep both
//! going and feed whichever finishes first. The first acceptable answer ends the call; the
//! exchange then waits for no other attempt, and the driver drops them (there is no output to
//! say so: [`Exchange::is_waiting_for`] turns false, and after `Done` every attempt is a loser).
//! A failed attempt while another is in flight does not end the call.
//!
//! Here is that loop by hand, with no async runtime, against a scripted upstream that fails
//! twice with 503 and then answers 200:
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use egress_core::{Config, Exchange, Input, Output, Request, http};
//!
//! let policy = Config::default().build().unwrap();
//! let request = Request::new(http::Method::GET, "https://api.example.com/entities/7").unwrap();
//! let start = Instant::now();
//! let mut now = start;
//! let mut exchange = Exchange::new(request, &policy, now, /* jitter seed */ 42);
//! let mut upstream = [503, 503, 200].into_iter();
//!
//! let result = loop {
//!     match exchange.poll_output(now) {
//!         Output::Send(attempt) => {
//!             // A real driver sends `attempt.request` here. This one answers at once.
//!             let status = upstream.next().unwrap();
//!             let response = http::Response::builder().status(status).body(Default::default()).unwrap();
//!             let wall = SystemTime::now();
//!             exchange.handle_input(Input::Response { attempt: attempt.attempt, at: now, wall, response });
//!         }
//!         Output::Wait { until, .. } => {
//!             now = until; // a real driver sleeps until then
//!             exchange.handle_input(Input::Timer { at: now });
//!         }
//!         Output::Done(result) => break result,
//!         _ => unreachable!("Output is non_exhaustive; these are all its variants today"),
//!     }
//! };
//! let response = result.unwrap();
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.attempts(), 3);
//! // Two backoffs with full jitter: each at most 100 ms and 200 ms.
//! assert!(now - start <= Duration::from_millis(300));
//! ```
//!
//! The same loop with a hedge: the first attempt meets a slow replica (800 ms), the hedge sent
//! after 50 ms answers in 20 ms and wins, and the first attempt is cancelled.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use egress_core::{HedgeAfter, HedgingConfig};
//! use egress_core::{Config, Exchange, Input, Output, Request, http};
//!
//! let hedging = HedgingConfig::enabled(HedgeAfter::Fixed(Duration::from_millis(50)));
//! let policy = Config::default().with_hedging(hedging).build().unwrap();
//! let request = Request::new(http::Method::GET, "https://api.example.com/entities/7").unwrap();
//! let start = Instant::now();
//! let mut now = start;
//! let mut exchange = Exchange::new(request, &policy, now, 42);
//! // Attempts in flight: their number and when their answer arrives.
//! let mut in_flight: Vec<(u32, Instant)> = Vec::new();
//! let result = loop {
//!     match exchange.poll_output(now) {
//!         Output::Send(attempt) => {
//!             let latency = if attempt.attempt == 1 { 800 } else { 20 };
//!             in_flight.push((attempt.attempt, now + Duration::from_millis(latency)));
//!         }
//!         Output::Wait { until, .. } => {
//!             in_flight.sort_by_key(|(_, at)| *at);
//!             match in_flight.first().copied() {
//!                 Some((attempt, at)) if at < until => {
//!                     in_flight.remove(0);
//!                     now = at;
//!                     let response = http::Response::new(Default::default());
//!                     let wall = SystemTime::now();
//!                     exchange.handle_input(Input::Response { attempt, at, wall, response });
//!                 }
//!                 _ => {
//!                     now = until;
//!                     exchange.handle_input(Input::Timer { at: now });
//!                 }
//!             }
//!             // Step 4: cancel what the exchange no longer waits for.
//!             in_flight.retain(|(attempt, _)| exchange.is_waiting_for(*attempt));
//!         }
//!         Output::Done(result) => break result,
//!         _ => unreachable!("Output is non_exhaustive; these are all its variants today"),
//!     }
//! };
//! assert_eq!(result.unwrap().attempts(), 2);
//! assert_eq!(now - start, Duration::from_millis(70));
//! assert!(in_flight.is_empty(), "the slow first attempt was cancelled");
//! ```
//!
//! # Time and randomness
//!
//! The core never reads a clock and never draws randomness. Time enters as data: `now` at
//! construction and on every poll, `at` on every input, and a wall-clock `SystemTime` with each
//! response (only to resolve `Retry-After` dates). Input time must be monotonic; a time earlier
//! than one already seen is treated as that one. Deadlines leave the core as absolute
//! [`Instant`](std::time::Instant)s, never as durations from an unknown "now". Jitter comes from
//! the seed given to [`Exchange::new`], so the same seed and inputs give the same timeline.
//! IDs are minted from bytes the [`rt::Entropy`] of a backend supplies (see [`CorrelationId`]).
//!
//! # Telemetry
//!
//! Every span, event and metric, with its level and fields: [`telemetry_reference`].
//!
//! # Errors and panics
//!
//! Every failure is a typed [`Error`], sorted by phase, with stable predicates
//! ([`Error::is_timeout`], [`Error::is_retryable`], [`Error::may_have_been_sent`],
//! [`Error::status`]) and the attempts, elapsed time and correlation ID of the call. Nothing a
//! server sends, and no configuration, makes the core panic; bad configuration is a
//! [`ConfigError`] naming the field.
//!
//! # Features
//!
//! - `test-util`: [`test_util`], the scripted transport, manual clock, instant sleeper and
//!   scenario runner. Not for production.
//! - `metrics`: attempt durations, retries and budget refusals through the `metrics` facade.
//! - `gzip`, `deflate`, `brotli`, `zstd`: decoding those content codings (each adds its
//!   coding to `Accept-Encoding`). Off in the core; the backend crates turn all four on by
//!   default.
//!
//! # MSRV
//!
//! The `rust-version` of the workspace manifest (Rust 1.85, for edition 2024).

// The crate by its own name, so that the documentation of `client_options_methods!` links
// the same paths wherever the macro is used.
extern crate self as egress_core;

mod client;
mod coding;
mod config;
mod drive;
mod error;
mod exchange;
mod guard;
mod ids;
mod messages;
#[cfg(feature = "metrics")]
mod metric_names;
mod network;
mod redact;
mod request;
mod response;
mod retry;
mod retry_after;
pub mod rt;
mod telemetry;
#[doc = include_str!("telemetry.md")]
pub mod telemetry_reference {}
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
mod token;
mod url;
mod validate;

pub use bytes;
pub use http;
pub use secrecy;
pub use secrecy::SecretString;
pub use url::Url;

// The client, its requests and responses.
pub use client::{
    AmbientCorrelation, ApiKeyHeader, Auth, BearerToken, Client, ClientBuilder, ClientOptions,
    RequestBuilder, Runtime,
};
pub use ids::{CorrelationId, IdempotencyKey, InvalidId, MAX_ID_LEN};
pub use request::{KeyChoice, Overrides, Request};
pub use response::Response;

// Configuration.
pub use config::{Config, Credentials, Policy, PoolConfig, Timeouts};
pub use network::{ProxyConfig, ProxyUrl, TlsConfig};
pub use redact::{REDACTED, RedactConfig, Redactor};

// Errors.
pub use coding::{BodyLimit, Coding};
pub use error::{
    CallMeta, ConfigError, EXCERPT_LEN, Error, StatusError, StopReason, TimeoutKind, TokenError,
    TransportError, TransportErrorKind,
};
pub use url::InvalidUrl;

// Retries and `Retry-After`.
pub use retry::{
    Backoff, BudgetConfig, Classifier, ClassifyContext, DefaultClassifier, ForbidReason, Jitter,
    JitterMode, NoJitter, Outcome, RetryAction, RetryBudget, RetryPolicy, RetryReason,
    SeededJitter, classify, is_answer, is_idempotent_method,
};
pub use retry_after::{
    RetryAfter, RetryAfterError, parse_retry_after, resolve_retry_after, response_date,
    retry_after_from_headers,
};

// Decisions across calls: circuit breaker, hold, rate limit, rate-limit fields, the fleet.
pub use guard::{
    Breaker, CallGuards, CircuitBreakerConfig, CircuitCheck, CircuitSharing, CircuitState,
    CircuitVerdict, FailureMode, FleetConfig, FleetUrl, Gcra, Guards, HedgeAfter, HedgingConfig,
    Hold, HoldConfig, HoldReason, InvalidHedgeAfter, InvalidRate, Latencies, LocalCoordinator,
    MAX_HEDGES, Percentile, ProbeId, Quota, Rate, RateLimitConfig, rate_limit_quota,
};

// Access tokens.
pub use token::{
    ClientAuthMethod, ClientCredentials, CurrentToken, FetchContext, OAuth2Config, RefreshPolicy,
    RefreshReason, RefreshTicket, RejectionRule, Token, TokenDecision, TokenLifecycle, TokenSource,
    bearer_error, is_invalid_token, parse_token_response, token_request_failed,
};

// Validation of response bodies.
pub use validate::{
    ContentTypes, Expect, Invalid, Validate, ValidationError, ValidationKind, is_json_content_type,
    validate, validate_checked,
};

// The sans-IO engine and its driver.
pub use drive::drive;
pub use exchange::Exchange;
pub use messages::{Acquire, Input, Output, WaitReason};

#[cfg(feature = "metrics")]
pub use telemetry::{DURATION_BUCKETS, describe_metrics};
