//! The transport over a caller's surf client, for services that bring surf middleware
//! ([`Builder::build_with_surf_client`](crate::Builder::build_with_surf_client)). Everything
//! else goes through egress's hyper transport.

use std::any::Any;
use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_io::Timer;
use async_std::io::ReadExt;
use bytes::{Bytes, BytesMut};
use egress_core::rt::{AttemptDeadlines, AttemptRequest};
use egress_core::rt::{BoxFuture, Transport};
use egress_core::{TransportError, TransportErrorKind};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};

use crate::convert;
use crate::error::{self, CloseDelimited, Panicked, Truncated};

/// Sends attempts through a surf client of the caller's, with its HTTP client and middleware.
///
/// **What this path gives up**, against the client a [`Builder`](crate::Builder) makes:
/// - surf's own `H1Client` (what `surf::Client::new()` gives with the `h1-client` feature)
///   returns connections to its pool even when an exchange was abandoned half-way (a timeout,
///   a dropped call), so a later request can read an earlier response. If you must use it,
///   turn its keep-alive off (`surf::Config::new().set_http_keep_alive(false)`).
/// - async-h1 logs every request and response in full at `log`'s TRACE level, `Authorization`,
///   cookies, API keys and secret query parameters included: never enable TRACE for
///   `async_h1` in production.
/// - HTTP/1.1 only; a body delimited by closing the connection (HTTP/1.0 style) is refused as
///   a [`Protocol`](egress_core::TransportErrorKind::Protocol) error, because async-h1 would
///   report it as empty; a server can make async-h1 or http-types panic (a non-ASCII header
///   value): the panic is caught and reported as a protocol error, but its message still
///   reaches the panic hook.
/// - Limits: the response head must arrive within `min(write, read)` of the attempt's start;
///   connects are bounded by that client; each body chunk within `read`, and the body limit,
///   stay exact, as do the driver's attempt and call deadlines.
pub struct SurfTransport {
    client: surf::Client,
}

impl SurfTransport {
    /// A transport over an existing surf client, with its HTTP client and middleware; read
    /// what this path gives up in the [type's docs](Self).
    pub fn new(client: surf::Client) -> Self {
        Self { client }
    }
}

impl fmt::Debug for SurfTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SurfTransport").finish_non_exhaustive()
    }
}

impl Transport for SurfTransport {
    fn send(
        &self,
        attempt: AttemptRequest,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        Box::pin(without_panics(self.execute(attempt)))
    }
}

/// Runs `future`, turning a panic inside it into a protocol error: async-h1 and http-types
/// `unwrap` on some server input (a non-ASCII header value), and a server must not be able to
/// panic the caller's task.
async fn without_panics<F>(future: F) -> Result<http::Response<Bytes>, TransportError>
where
    F: Future<Output = Result<http::Response<Bytes>, TransportError>>,
{
    let mut future = std::pin::pin!(future);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(TransportError::new(
                TransportErrorKind::Protocol,
                Panicked(panic_message(&*payload)),
            ))),
        },
    )
    .await
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic".to_owned()
    }
}

fn timed_out(kind: TransportErrorKind, what: &'static str) -> TransportError {
    TransportError::new(kind, what)
}

/// Awaits `sending`, the response head due within `min(write, read)` of `started`.
async fn head<F, T>(
    sending: F,
    started: Instant,
    deadlines: AttemptDeadlines,
    limit: Duration,
) -> Result<T, TransportError>
where
    F: Future<Output = surf::Result<T>>,
{
    let Some(at) = deadlines.phase_end(started, limit) else {
        return sending.await.map_err(error::from_send);
    };
    let mut sending = std::pin::pin!(sending);
    let mut timer = Timer::at(at);
    poll_fn(|cx| {
        if let Poll::Ready(result) = sending.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(error::from_send));
        }
        Pin::new(&mut timer).poll(cx).map(|_| {
            Err(timed_out(
                TransportErrorKind::ReadTimeout,
                "no response head within the read timeout",
            ))
        })
    })
    .await
}

/// The largest read of a body into memory at once.
const CHUNK: usize = 16 * 1024;

/// Awaits `future` for at most `limit` from now: `None` when the limit passed first. A limit
/// that does not end before the attempt deadline gets no timer (see [`head`]).
async fn within<F: Future>(
    limit: Duration,
    deadlines: AttemptDeadlines,
    future: F,
) -> Option<F::Output> {
    match deadlines.phase_end(Instant::now(), limit) {
        Some(at) => {
            let mut future = std::pin::pin!(future);
            // The timer is registered with the reactor only if the future is not ready at once.
            let mut timer = Timer::at(at);
            poll_fn(|cx| {
                if let Poll::Ready(output) = future.as_mut().poll(cx) {
                    return Poll::Ready(Some(output));
                }
                Pin::new(&mut timer).poll(cx).map(|_| None)
            })
            .await
        }
        None => Some(future.await),
    }
}

/// Reads `body` chunk by chunk, each within `read_timeout` of the previous one, never holding
/// more than `limit + 1` bytes.
async fn read_body(
    body: &mut surf::Body,
    declared: Option<u64>,
    limit: u64,
    read_timeout: Duration,
    deadlines: AttemptDeadlines,
) -> Result<Bytes, TransportError> {
    let capacity = declared.unwrap_or(0).min(limit).min(1 << 20) as usize;
    let mut collected = BytesMut::with_capacity(capacity);
    // The read buffer is zero-filled once per attempt: size it to what can arrive, the declared
    // length (plus one byte, to see the end) or one past the limit, at most 16 KiB, instead of
    // always 16 KiB (the entity bodies of the load benchmark are a few hundred bytes).
    let most = declared.map_or(limit, |d| d.min(limit)).saturating_add(1);
    let mut chunk = vec![0u8; most.min(CHUNK as u64) as usize];
    loop {
        // One byte past the limit is enough to know it was passed.
        let room = (limit - collected.len() as u64)
            .saturating_add(1)
            .min(chunk.len() as u64) as usize;
        let read = within(read_timeout, deadlines, body.read(&mut chunk[..room])).await;
        let n = match read {
            None => {
                return Err(timed_out(
                    TransportErrorKind::ReadTimeout,
                    "the body stalled longer than the read timeout",
                ));
            }
            Some(Err(e)) => return Err(error::from_body(e)),
            Some(Ok(0)) => break,
            Some(Ok(n)) => n,
        };
        if (collected.len() + n) as u64 > limit {
            // Dropping the body closes the connection instead of draining the rest.
            return Err(TransportError::new(
                TransportErrorKind::BodyTooLarge,
                "the body exceeds the limit",
            ));
        }
        collected.extend_from_slice(&chunk[..n]);
    }
    if let Some(declared) = declared {
        let received = collected.len() as u64;
        if received < declared {
            return Err(TransportError::new(
                TransportErrorKind::ClosedDuringBody,
                Truncated { declared, received },
            ));
        }
    }
    Ok(collected.freeze())
}

fn has_token(headers: &http::HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl SurfTransport {
    async fn execute(
        &self,
        attempt: AttemptRequest,
    ) -> Result<http::Response<Bytes>, TransportError> {
        let deadlines = attempt.deadlines;
        let read_timeout = attempt.read_timeout;
        let head_limit = read_timeout.min(attempt.write_timeout);
        let limit = attempt.body_limit;
        let method = attempt.request.method().clone();
        let request = convert::request(attempt.request).map_err(error::from_request_convert)?;
        // Limits run from the attempt's start as the core saw it (no clock read here).
        let response = head(
            self.client.send(request),
            deadlines.started,
            deadlines,
            head_limit,
        )
        .await?;
        let mut response: surf::http::Response = response.into();
        let head = convert::response_head(&response).map_err(error::from_convert)?;
        let mut reader = response.take_body();
        let headers = head.headers();
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let chunked = has_token(headers, TRANSFER_ENCODING, "chunked");
        let status = head.status();
        let body = if egress_transport::has_no_body(method == http::Method::HEAD, status) {
            Bytes::new()
        } else if declared.is_some_and(|n| n > limit) {
            return Err(TransportError::new(
                TransportErrorKind::BodyTooLarge,
                "content-length exceeds the body limit",
            ));
        } else if declared.is_none() && !chunked {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                CloseDelimited,
            ));
        } else {
            read_body(&mut reader, declared, limit, read_timeout, deadlines).await?
        };
        let (parts, ()) = head.into_parts();
        Ok(http::Response::from_parts(parts, body))
    }
}
