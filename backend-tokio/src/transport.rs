//! The transport: hyper-util's pooled client, with the per-phase limits of each attempt.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use egress_core::rt::{BoxFuture, Transport};
use egress_core::{AttemptDeadlines, AttemptRequest, TransportError, TransportErrorKind};
use http::header::CONTENT_LENGTH;
use http::uri::{Scheme, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::Connect;
use tower_service::Service;

use crate::connector::BoxError;
use crate::error;
use crate::pool::{PlainPool, Sent};

/// Sends attempts over a hyper-util client.
///
/// Limits: the connect timeout is on the connector (TCP and TLS); the response head must arrive
/// within `min(write, read)` of the attempt's start (hyper does not report when writing ends, so
/// the two are enforced as one stricter bound); every body chunk must arrive within `read` of
/// the previous one; the body stops at the limit. The attempt and whole-call deadlines are the
/// driver's; a head or chunk limit that would not end before the attempt deadline is left to
/// the driver's timer, without a timer of its own.
///
/// A transport made by [`Builder::build`](crate::Builder::build) sends plain-HTTP requests
/// through egress's own pool of HTTP/1.1 connections (opened with the same connector) instead of
/// hyper-util's client: the same behaviour at a fraction of the per-request cost (the `pool`
/// module and BENCHMARKS.md say how much). HTTPS, and every request of a transport made with
/// [`new`](Self::new), go through hyper-util.
pub struct HyperTransport<C, P = ()> {
    client: HyperClient<C, Full<Bytes>>,
    /// The plain-HTTP pool (`PlainPool`), or `()` for none.
    plain: P,
}

impl<C> HyperTransport<C> {
    /// A transport over an existing hyper-util client.
    pub fn new(client: HyperClient<C, Full<Bytes>>) -> Self {
        Self { client, plain: () }
    }
}

impl<C> HyperTransport<C, PlainPool<C>> {
    /// A transport over `client` that sends plain-HTTP requests through `plain` instead.
    pub(crate) fn with_plain_pool(
        client: HyperClient<C, Full<Bytes>>,
        plain: PlainPool<C>,
    ) -> Self {
        Self { client, plain }
    }
}

impl<C, P: fmt::Debug> fmt::Debug for HyperTransport<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperTransport")
            .field("plain", &self.plain)
            .finish_non_exhaustive()
    }
}

/// An attempt's request and limits, taken apart before the future is made: the boxed future
/// then holds only what receiving needs (an `async fn` keeps its arguments for its whole
/// life), which keeps it small enough for the allocator's fast path.
struct Prepared {
    request: http::Request<Full<Bytes>>,
    started: std::time::Instant,
    head_limit: Limit,
    read_limit: Limit,
    body_limit: u64,
}

impl Prepared {
    fn new(attempt: AttemptRequest) -> Self {
        // Limits run from the attempt's start as the core saw it (no clock read here).
        let now = attempt.deadlines.started;
        let read_limit = Limit::new(attempt.read_timeout, now, attempt.deadlines);
        let head_limit = Limit::new(
            attempt.read_timeout.min(attempt.write_timeout),
            now,
            attempt.deadlines,
        );
        // `Host` is in the headers already for plain HTTP (the core sets it once per call).
        let (parts, body) = attempt.request.into_parts();
        Self {
            request: http::Request::from_parts(parts, Full::new(body)),
            started: now,
            head_limit,
            read_limit,
            body_limit: attempt.body_limit,
        }
    }
}

impl<C: Connect + Clone + Send + Sync + 'static, P> HyperTransport<C, P> {
    /// Sends through hyper-util's pooled client.
    fn send_pooled_by_hyper_util(
        &self,
        prepared: Prepared,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        let response = self.client.request(prepared.request);
        let sending = Box::pin(async move {
            match response.await {
                Ok(response) => Ok((response, None)),
                Err(e) => Err(error::from_client(e)),
            }
        });
        let Prepared {
            head_limit,
            read_limit,
            body_limit,
            ..
        } = prepared;
        Box::pin(receive(sending, head_limit, read_limit, body_limit))
    }
}

impl<C: Connect + Clone + Send + Sync + 'static> Transport for HyperTransport<C> {
    fn send(
        &self,
        attempt: AttemptRequest,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        self.send_pooled_by_hyper_util(Prepared::new(attempt))
    }
}

impl<C> Transport for HyperTransport<C, PlainPool<C>>
where
    C: Connect + Service<Uri, Error = BoxError> + Clone + Send + Sync + 'static,
    <C as Service<Uri>>::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    <C as Service<Uri>>::Future: Send + 'static,
{
    fn send(
        &self,
        attempt: AttemptRequest,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        let prepared = Prepared::new(attempt);
        if prepared.request.uri().scheme() != Some(&Scheme::HTTP) {
            return self.send_pooled_by_hyper_util(prepared);
        }
        let Prepared {
            request,
            started,
            head_limit,
            read_limit,
            body_limit,
        } = prepared;
        let sending = Box::pin(self.plain.send(request, started));
        Box::pin(receive(sending, head_limit, read_limit, body_limit))
    }
}

fn timed_out(kind: TransportErrorKind, what: &'static str) -> TransportError {
    TransportError::new(kind, what)
}

/// Awaits `future` for at most `limit` from now: `None` when the limit passed first.
///
/// A limit that does not end before the attempt deadline gets no timer
/// ([`AttemptDeadlines::phase_end`]): the driver's own timer ends the attempt first, and
/// registering one cost a tokio timer entry per attempt for the head and one per body frame
/// for nothing. `Limit::Never` says so was found at the attempt's start: it stays so later,
/// so the clock is not read again.
async fn within<F: Future>(limit: Limit, future: F) -> Option<F::Output> {
    match limit {
        Limit::Never => Some(future.await),
        Limit::After(limit, deadlines) => {
            match deadlines.phase_end(tokio::time::Instant::now().into_std(), limit) {
                Some(at) => tokio::time::timeout_at(at.into(), future).await.ok(),
                None => Some(future.await),
            }
        }
    }
}

/// A per-phase limit of one attempt, as [`within`] applies it.
#[derive(Clone, Copy)]
enum Limit {
    /// The limit cannot end before the attempt deadline.
    Never,
    /// `limit` from each start, when that is before the attempt deadline.
    After(Duration, AttemptDeadlines),
}

impl Limit {
    fn new(limit: Duration, now: std::time::Instant, deadlines: AttemptDeadlines) -> Self {
        match deadlines.phase_end(now, limit) {
            Some(_) => Limit::After(limit, deadlines),
            None => Limit::Never,
        }
    }
}

/// Receives one attempt's response: the head within `head_limit`, then the body, each chunk
/// within `read_limit`, stopping past `limit` bytes. A leased connection goes back to its pool
/// once the body was read to its end.
async fn receive(
    mut sending: BoxFuture<'_, Result<Sent<'_>, TransportError>>,
    head_limit: Limit,
    read_limit: Limit,
    limit: u64,
) -> Result<http::Response<Bytes>, TransportError> {
    // Sending has a box of its own: inline, its future (about 1 KB on egress's pool) made this
    // one too large for the allocator's per-thread cache, whose slower path cost ~800
    // instructions per request; moved into `within`, it would also be held twice.
    let (response, lease) = match within(head_limit, sending.as_mut()).await {
        None => {
            return Err(timed_out(
                TransportErrorKind::ReadTimeout,
                "no response head within the read timeout",
            ));
        }
        Some(result) => result?,
    };
    let (parts, mut body) = response.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
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
    loop {
        let frame = match within(read_limit, body.frame()).await {
            None => {
                return Err(timed_out(
                    TransportErrorKind::ReadTimeout,
                    "the body stalled longer than the read timeout",
                ));
            }
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
            if first.is_empty() && more.is_none() {
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
    let body = more.map_or(first, BytesMut::freeze);
    if let Some(lease) = lease {
        lease.check_in();
    }
    Ok(http::Response::from_parts(parts, body))
}
