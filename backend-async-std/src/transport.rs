//! The transport: a surf client, with the per-phase limits of each attempt.

use std::any::Any;
use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::Timer;
use async_std::io::{Read as AsyncRead, ReadExt};
use bytes::{Bytes, BytesMut};
use egress_core::rt::{BoxFuture, Transport};
use egress_core::{AttemptDeadlines, AttemptRequest, TransportError, TransportErrorKind};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};

use crate::convert;
use crate::decode;
use crate::error::{self, CloseDelimited, Panicked, Truncated};
use crate::h1::{Outgoing, Phase, PooledH1, Probe};

/// Sends attempts over surf's HTTP/1.1 engine or a surf client.
///
/// With the transport a [`Builder`](crate::Builder) makes, every phase is timed apart: connecting
/// (TCP and TLS) within the connect timeout, writing the request within the write timeout, the
/// response head within the read timeout of the end of writing, every body chunk within the
/// read timeout of the previous one; the body stops at the limit, and a connection goes back
/// to the pool only after a response read to its exact end. Over another surf client (see
/// [`SurfTransport::new`]) the head must arrive within `min(write, read)` of the attempt's
/// start, and connection reuse is that client's business. The attempt and whole-call
/// deadlines are the driver's.
pub struct SurfTransport {
    client: Client,
    urls: convert::Urls,
}

/// What a [`SurfTransport`] sends through.
enum Client {
    /// This crate's pooled async-h1 client, called directly (see [`PooledH1`]).
    Pooled(PooledH1),
    /// A surf client of the caller's, with its HTTP client and middleware.
    Surf(surf::Client),
}

impl SurfTransport {
    /// A transport over an existing surf client, with its HTTP client and middleware.
    ///
    /// Prefer the client a [`Builder`](crate::Builder) makes. surf's own `H1Client` (what
    /// `surf::Client::new()` gives with the `h1-client` feature) returns connections to its
    /// pool even when an exchange was abandoned half-way (a timeout, a dropped call), so a
    /// later request can read an earlier response: if you must use it, turn its keep-alive
    /// off (`surf::Config::new().set_http_keep_alive(false)`).
    pub fn new(client: surf::Client) -> Self {
        Self {
            client: Client::Surf(client),
            urls: convert::Urls::default(),
        }
    }

    /// The transport of the clients a [`Builder`](crate::Builder) makes.
    pub(crate) fn pooled(client: PooledH1) -> Self {
        Self {
            client: Client::Pooled(client),
            urls: convert::Urls::default(),
        }
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

/// Awaits `sending` under the limit of the phase the probe reports (none: the client does not
/// report phases).
///
/// A phase limit that does not end before the attempt deadline gets no timer
/// ([`AttemptDeadlines::phase_end`]): the driver's own timer ends the attempt first, and arming
/// one cost an async-io timer entry (an insert, a removal and a reactor notification) per
/// attempt for nothing, as the core clamps the read and write timeouts to the attempt's.
async fn head<F, T>(
    sending: F,
    probe: Option<&Probe>,
    started: Instant,
    deadlines: AttemptDeadlines,
    read: Duration,
    write: Duration,
) -> Result<T, TransportError>
where
    F: Future<Output = surf::Result<T>>,
{
    let mut sending = std::pin::pin!(sending);
    let mut timer = Timer::never();
    let mut armed: Option<(Instant, TransportErrorKind)> = None;
    poll_fn(|cx| {
        if let Poll::Ready(result) = sending.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(error::from_send));
        }
        let limit = match probe.map_or(Phase::Unclaimed, Probe::phase) {
            // A client that does not report phases: the stricter bound, from the start.
            Phase::Unclaimed => Some((started, read.min(write), TransportErrorKind::ReadTimeout)),
            // The connector enforces the connect timeout itself.
            Phase::Connecting => None,
            Phase::Writing(since) => Some((since, write, TransportErrorKind::WriteTimeout)),
            Phase::Reading(since) => Some((since, read, TransportErrorKind::ReadTimeout)),
        }
        .and_then(|(since, limit, kind)| Some((deadlines.phase_end(since, limit)?, kind)));
        if limit.map(|(at, _)| at) != armed.map(|(at, _)| at) {
            match limit {
                Some((at, _)) => {
                    timer.set_at(at);
                }
                None => timer = Timer::never(),
            }
            armed = limit;
        }
        if let Some((_, kind)) = armed {
            if Pin::new(&mut timer).poll(cx).is_ready() {
                return Poll::Ready(Err(match kind {
                    TransportErrorKind::WriteTimeout => {
                        timed_out(kind, "the request was not written within the write timeout")
                    }
                    _ => timed_out(kind, "no response head within the read timeout"),
                }));
            }
        }
        Poll::Pending
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

/// A response body: read off the pooled connection, or surf's.
enum Reader {
    Pooled(decode::Body),
    Surf(surf::Body),
}

impl Reader {
    fn has_leftover(&self) -> bool {
        match self {
            Reader::Pooled(body) => body.has_leftover(),
            Reader::Surf(_) => false,
        }
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Reader::Pooled(body) => Pin::new(body).poll_read(cx, buf),
            Reader::Surf(body) => Pin::new(body).poll_read(cx, buf),
        }
    }
}

/// Reads `body` chunk by chunk, each within `read_timeout` of the previous one, never holding
/// more than `limit + 1` bytes.
async fn read_body(
    body: &mut Reader,
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
        // Limits run from the attempt's start as the core saw it (no clock read here).
        let started = attempt.deadlines.started;
        let deadlines = attempt.deadlines;
        let read_timeout = attempt.read_timeout;
        let write_timeout = attempt.write_timeout;
        let limit = attempt.body_limit;
        let method = attempt.request.method().clone();
        let asked_to_close = has_token(attempt.request.headers(), CONNECTION, "close");

        let (head, mut reader, reuse) = match &self.client {
            Client::Pooled(client) => {
                let request =
                    match convert::encode(&attempt.request, &self.urls, client.keeps_alive()) {
                        Some(encoded) => Outgoing::Encoded(encoded),
                        None => Outgoing::Request(Box::new(
                            convert::request(attempt.request, &self.urls)
                                .map_err(error::from_request_convert)?,
                        )),
                    };
                let probe = Probe::new();
                let sending = client.send(request, Arc::clone(&probe));
                let (head, body, reuse) = head(
                    sending,
                    Some(&probe),
                    started,
                    deadlines,
                    read_timeout,
                    write_timeout,
                )
                .await?;
                (head, Reader::Pooled(body), Some(reuse))
            }
            Client::Surf(client) => {
                let request = convert::request(attempt.request, &self.urls)
                    .map_err(error::from_request_convert)?;
                let sending = client.send(request);
                let response = head(
                    sending,
                    None,
                    started,
                    deadlines,
                    read_timeout,
                    write_timeout,
                )
                .await?;
                let mut response: surf::http::Response = response.into();
                let head = convert::response_head(&response).map_err(error::from_convert)?;
                let body = response.take_body();
                (head, Reader::Surf(body), None)
            }
        };
        let headers = head.headers();
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let chunked = has_token(headers, TRANSFER_ENCODING, "chunked");
        let status = head.status();
        let bodiless = method == http::Method::HEAD
            || status.is_informational()
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED;

        // Held until the end: dropping it releases the connection.
        let body = if bodiless {
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

        // Read to its exact end: the connection can carry the next request, unless either side
        // asked to close it.
        // Bytes past the body would be read as the next response's: such a connection closes.
        if !asked_to_close
            && !has_token(head.headers(), CONNECTION, "close")
            && !reader.has_leftover()
        {
            if let Some(reuse) = reuse {
                reuse.allow();
            }
        }
        drop(reader);
        let (parts, ()) = head.into_parts();
        Ok(http::Response::from_parts(parts, body))
    }
}
