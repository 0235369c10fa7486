//! The runtime-agnostic transport of egress, shared by both backends: hyper's HTTP/1.1 and
//! HTTP/2 client connections (`hyper::client::conn`), one connection pool for `http://` and
//! `https://`, the per-phase limits of each attempt, body collection under the core's size
//! limit, and the one mapping of hyper and IO errors into the core's
//! [`TransportErrorKind`].
//!
//! It has no protocol code of its own: parsing, framing, keep-alive and HTTP/2 are hyper's.
//! It names no runtime either. A backend gives it a [`Runtime`] (spawn, sleep, now) and a
//! [`Connect`] (TCP and TLS with ALPN), and gets an [`HttpTransport`], which implements the
//! core's [`Transport`]:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use egress_core::PoolConfig;
//! use egress_core::rt::BoxFuture;
//! use egress_transport::{Connect, ConnectError, ConnectStep, Connected, HttpTransport, Origin, Runtime};
//!
//! #[derive(Debug)]
//! struct NoNetwork;
//! impl Connect for NoNetwork {
//!     fn connect<'a>(&'a self, _: &'a Origin) -> BoxFuture<'a, Result<Connected, ConnectError>> {
//!         Box::pin(async { Err(ConnectError::new(ConnectStep::Tcp, "no network here")) })
//!     }
//! }
//!
//! #[derive(Debug)]
//! struct MyRuntime;
//! impl Runtime for MyRuntime {
//!     fn spawn(&self, future: BoxFuture<'static, ()>) { drop(future) /* a real one runs it */ }
//!     fn sleep_until(&self, _: Instant) -> BoxFuture<'static, ()> { Box::pin(async {}) }
//!     fn now(&self) -> Instant { Instant::now() }
//! }
//!
//! let transport = HttpTransport::new(NoNetwork, Arc::new(MyRuntime), &PoolConfig::default());
//! # let _ = transport;
//! ```
//!
//! # What it does
//!
//! - **One pool** for both schemes: HTTP/1.1 connections kept idle per origin (up to
//!   `max_idle_per_host`, most recently used first) and one multiplexed HTTP/2 connection per
//!   origin when ALPN picks `h2`. Idle connections are closed when they pass the idle timeout,
//!   by a timer on the runtime. An HTTP/1.1 connection returns to the pool only after its
//!   response was read to the end; an abandoned one (a timeout, a dropped call, a body over
//!   the limit) is closed. A request that a reused connection closed before writing it is sent
//!   again on another connection (hyper gives it back unsent).
//! - **The request as given**: the core decides every header, `Host` included; for HTTP/1.1
//!   the request line is in origin form (RFC 9112 3.2.1), and over HTTP/2 the authority goes
//!   as `:authority` with no `Host` beside it (RFC 9113 8.3.1).
//! - **Limits**: opening a connection within the attempt's connect deadline; a pooled
//!   connection ready within its pool deadline; the response head within `min(write, read)`
//!   of the attempt's start (hyper does not report when writing ends); each body chunk within
//!   `read` of the previous; the body refused from `Content-Length` or stopped at the limit.
//!   Responses that have no body (to `HEAD`; 1xx, 204, 304: RFC 9112 6.3) are never checked
//!   against the body limit.
//! - **Errors**: connector failures by step (`Dns`, `ConnectRefused`, `Connect`, `Tls`), hyper
//!   and IO errors by stage (closed before the response or during the body; malformed
//!   framing is `Protocol`, never a close).

mod client;
mod error;
mod identity;
mod limit;
mod pool;
mod proxy;
mod rt;

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use egress_core::rt::AttemptRequest;
use egress_core::rt::{BodyDecoder, Decoding};
use egress_core::rt::{BoxFuture, Transport};
use egress_core::{PoolConfig, TransportError, TransportErrorKind};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};

pub use crate::client::{Backend, RuntimeClock, RuntimeSleeper};
pub use crate::error::{Stage, error_kind};
pub use crate::identity::ClientIdentity;
use crate::limit::{Limit, within};
use crate::pool::{Pool, Sent};
pub use crate::proxy::{Connector, Proxies, Proxy};
pub use crate::rt::{
    Alpn, BoxError, Connect, ConnectError, ConnectStep, Connected, Dial, Forward, Io, Origin,
    Protocol, Runtime, TlsOver, connect_first,
};

/// Sends attempts over hyper connections from one pool; see the [crate docs](crate).
///
/// Clones share the pool.
#[derive(Clone)]
pub struct HttpTransport {
    pool: Pool,
}

impl HttpTransport {
    /// A transport opening connections with `connector` on `runtime`, pooling them as `pool`
    /// says (`max_idle_per_host = 0` or a zero idle timeout turns keep-alive off).
    pub fn new(connector: impl Connect, runtime: Arc<dyn Runtime>, pool: &PoolConfig) -> Self {
        Self {
            pool: Pool::new(Box::new(connector), runtime, pool),
        }
    }
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("pool", &self.pool)
            .finish()
    }
}

/// An attempt's request and limits, taken apart before the future is made: the boxed future
/// then holds only what it needs.
struct Prepared {
    request: http::Request<Full<Bytes>>,
    connect: Limit,
    pool: Limit,
    head: Limit,
    read: Limit,
    body_limit: u64,
    /// Whether the response can have no body whatever its head says (a `HEAD` request).
    head_request: bool,
    decoding: Decoding,
    span: tracing::Span,
}

impl Prepared {
    fn new(attempt: AttemptRequest) -> Self {
        let deadlines = attempt.deadlines;
        // Limits run from the attempt's start as the core saw it (no clock read here).
        let now = deadlines.started;
        let (parts, body) = attempt.request.into_parts();
        Self {
            head_request: parts.method == Method::HEAD,
            request: http::Request::from_parts(parts, Full::new(body)),
            connect: Limit::by(deadlines.connect, deadlines),
            pool: Limit::by(deadlines.pool, deadlines),
            head: Limit::idle(
                attempt.read_timeout.min(attempt.write_timeout),
                now,
                deadlines,
            ),
            read: Limit::idle(attempt.read_timeout, now, deadlines),
            body_limit: attempt.body_limit,
            decoding: attempt.decoding,
            span: attempt.span,
        }
    }
}

impl Transport for HttpTransport {
    fn send(
        &self,
        attempt: AttemptRequest,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        let Prepared {
            request,
            connect,
            pool,
            head,
            read,
            body_limit,
            head_request,
            decoding,
            span,
        } = Prepared::new(attempt);
        // Sending has a box of its own, so that the receiving future stays small.
        let sending = Box::pin(self.pool.send(request, connect, pool));
        let body = Body {
            limit: body_limit,
            head_request,
            decoding,
            span,
        };
        Box::pin(receive(&self.pool, sending, head, read, body))
    }
}

fn timed_out(what: &'static str) -> TransportError {
    TransportError::new(TransportErrorKind::ReadTimeout, what)
}

/// Whether a response carries no body whatever its head says (RFC 9112 6.3 rule 1): one to a
/// `HEAD` request, and every 1xx, 204 and 304. Its `Content-Length` is then never held
/// against the body limit. Shared with egress-async-std's surf path.
pub fn has_no_body(head_request: bool, status: StatusCode) -> bool {
    head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// What receiving a body needs to know.
struct Body {
    /// The most bytes received (and, decoding, decoded).
    limit: u64,
    /// Whether the response can have no body whatever its head says (a `HEAD` request).
    head_request: bool,
    decoding: Decoding,
    /// The attempt's span, for the body's sizes and coding.
    span: tracing::Span,
}

/// Receives one attempt's response: the head within `head`, then the body, each chunk within
/// `read`, stopping past the limit, decoded as it arrives when its `Content-Encoding` names a
/// coding. An HTTP/1.1 connection goes back to its pool once the body was read to its end.
async fn receive(
    pool: &Pool,
    mut sending: BoxFuture<'_, Result<Sent, TransportError>>,
    head: Limit,
    read: Limit,
    spec: Body,
) -> Result<http::Response<Bytes>, TransportError> {
    let Body {
        limit,
        head_request,
        decoding,
        span,
    } = spec;
    let runtime = pool.runtime();
    let (response, lease) = match within(runtime, head, sending.as_mut()).await {
        None => return Err(timed_out("no response head within the read timeout")),
        Some(result) => result?,
    };
    let (mut parts, mut body) = response.into_parts();
    let declared = if has_no_body(head_request, parts.status) {
        None
    } else {
        parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(TransportError::new(
            TransportErrorKind::BodyTooLarge,
            "content-length exceeds the body limit",
        ));
    }
    let capacity = declared.unwrap_or(0).min(limit).min(1 << 20) as usize;
    // The first chunk is kept as hyper gives it (most bodies are one chunk: no copy); a
    // second one starts a buffer.
    let mut first = Bytes::new();
    let mut more: Option<BytesMut> = None;
    let mut received: u64 = 0;
    // Made at the first body byte: a response without a body is never decoded.
    let mut decoder: Option<Option<BodyDecoder>> = None;
    loop {
        let frame = match within(runtime, read, body.frame()).await {
            None => return Err(timed_out("the body stalled longer than the read timeout")),
            Some(None) => break,
            Some(Some(Err(e))) => return Err(error::from_body(e)),
            Some(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            if received > limit {
                // Dropping the body closes the connection instead of draining the rest.
                return Err(TransportError::new(
                    TransportErrorKind::BodyTooLarge,
                    "the body exceeds the limit",
                ));
            }
            let decoder = match &mut decoder {
                Some(d) => d,
                None => decoder.insert(
                    decoding
                        .decoder(&parts.headers)
                        .map_err(TransportError::decode)?,
                ),
            };
            if let Some(decoder) = decoder {
                decoder.push(&data).map_err(TransportError::decode)?;
            } else if first.is_empty() && more.is_none() {
                first = data;
            } else {
                more.get_or_insert_with(|| {
                    let mut buffer = BytesMut::with_capacity(capacity.max(first.len()));
                    buffer.extend_from_slice(&first);
                    buffer
                })
                .extend_from_slice(&data);
            }
        }
    }
    let body = match decoder.flatten() {
        Some(decoder) => {
            let coding = parts.headers.get(CONTENT_ENCODING).cloned();
            let decoded = decoder.finish().map_err(TransportError::decode)?;
            if !span.is_disabled() {
                if let Some(coding) = coding.as_ref().and_then(|c| c.to_str().ok()) {
                    span.record("egress.response.content_coding", coding);
                }
                span.record("egress.response.decoded_size", decoded.len() as u64);
            }
            // It described the encoded body.
            parts.headers.remove(CONTENT_LENGTH);
            decoded
        }
        None => more.map_or(first, BytesMut::freeze),
    };
    span.record("http.response.body.size", received);
    if let Some(lease) = lease {
        lease.check_in();
    }
    Ok(http::Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9112 6.3 (1): responses to HEAD, and 1xx, 204 and 304 responses, end at the head.
    #[test]
    fn head_responses_and_bodiless_statuses_have_no_body() {
        assert!(has_no_body(true, StatusCode::OK));
        for status in [100, 103, 204, 304] {
            assert!(
                has_no_body(false, StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [200, 201, 206, 404, 500] {
            assert!(
                !has_no_body(false, StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }
}
