//! egress's own pool of HTTP/1.1 connections, for the plain-HTTP (`http://`) origins of a
//! client built with the default connector ([`Builder::build`](crate::Builder::build)).
//!
//! hyper-util's legacy client spends about 10k instructions per request of its own on top of
//! hyper (BENCHMARKS.md): its pool looks the origin up three times in a SipHash map, it boxes a
//! 3.4 KB future per request, and it races a wait for an idle connection against a new
//! connect. Here a checkout pops the most recently used idle connection of the authority, under
//! one lock, and a connection comes back only after the transport read its response to the end
//! ([`Lease::check_in`]); one abandoned for any reason (a timeout, a dropped call, a body over
//! the limit, an error) is closed. Connections are opened with the same connector as the
//! hyper-util client (so with the same connect timeout) and driven by hyper's own HTTP/1.1
//! connection, spawned on the runtime.
//!
//! What hyper-util's client did for these requests, this pool does too: the request line in
//! origin form, a `Host` header when the request has none, idle connections dropped after the
//! idle timeout and beyond `max_idle_per_host`, and a request that a reused connection closed
//! before writing it is sent again on another connection (it never left this process).
//! HTTPS stays with hyper-util (ALPN may choose HTTP/2).

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use egress_core::{PoolConfig, TransportError, TransportErrorKind};
use http::header::HOST;
use http::uri::{Authority, Scheme, Uri};
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use tower_service::Service;

use crate::connector::BoxError;
use crate::error;

type Sender = SendRequest<Full<Bytes>>;

/// What sending gives back: the response head, and the pool's lease on its connection (none
/// for hyper-util's client, which keeps its own).
pub(crate) type Sent<'a> = (Response<Incoming>, Option<Lease<'a>>);

/// From this many authorities on, adding one first forgets those with no idle connection left
/// (an authority's list is kept when it empties, so that the next check-in of a client's usual
/// origin does not allocate its key again).
const FORGET_EMPTY_FROM: usize = 256;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Idle connections per authority (all of them plain HTTP), most recently used last.
struct Shared {
    idle: Mutex<HashMap<Box<str>, Vec<Idle>, foldhash::fast::RandomState>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
}

impl Shared {
    fn idle(&self) -> MutexGuard<'_, HashMap<Box<str>, Vec<Idle>, foldhash::fast::RandomState>> {
        // Nothing panics while holding the lock; if something did, the map is still valid.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh(&self, since: Instant, now: Instant) -> bool {
        now.saturating_duration_since(since) < self.idle_timeout
    }
}

/// The pool and the connector it opens connections with.
pub(crate) struct PlainPool<C> {
    connector: C,
    shared: Shared,
}

impl<C> fmt::Debug for PlainPool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let idle: usize = self.shared.idle().values().map(Vec::len).sum();
        f.debug_struct("PlainPool")
            .field("idle", &idle)
            .field("max_idle_per_host", &self.shared.max_idle_per_host)
            .field("idle_timeout", &self.shared.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl<C> PlainPool<C>
where
    C: Service<Uri, Error = BoxError> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    C::Future: Send + 'static,
{
    /// A pool opening connections with `connector`, keeping idle ones as `config` says.
    pub(crate) fn new(connector: C, config: &PoolConfig) -> Self {
        Self {
            connector,
            shared: Shared {
                idle: Mutex::default(),
                max_idle_per_host: config.max_idle_per_host,
                idle_timeout: config.idle_timeout,
            },
        }
    }

    /// Sends `request` (an absolute `http` URI) on an idle connection of its authority or a new
    /// one, and returns the response head with the lease on its connection. `now` is the
    /// attempt's start, on the tokio clock.
    pub(crate) async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
        now: Instant,
    ) -> Result<Sent<'_>, TransportError> {
        // Only the authority is kept across the awaits (the URI to connect to is made again
        // from it): this future stays small enough for the allocator's per-thread cache.
        let Some(authority) = request.uri().authority().cloned() else {
            return Err(TransportError::new(
                TransportErrorKind::Other,
                "the request URI has no authority",
            ));
        };
        if !request.headers().contains_key(HOST) {
            if let Some(host) = host_of(&authority) {
                request.headers_mut().insert(HOST, host);
            }
        }
        *request.uri_mut() = origin_form(request.uri());
        loop {
            let (mut sender, reused) = match self.check_out(authority.as_str(), now) {
                Some(sender) => (sender, true),
                // Boxed: connecting (a TLS-capable stream, hyper's handshake) would make this
                // future several kilobytes larger.
                None => (Box::pin(self.connect(&authority)).await?, false),
            };
            // An idle connection is ready at once, unless the peer just closed it.
            if reused && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease {
                        sender,
                        authority,
                        shared: &self.shared,
                    };
                    return Ok((response, Some(lease)));
                }
                Err(mut failed) => match failed.take_message() {
                    // The connection closed before the request was written: it never left
                    // this process, so another connection may carry it. A new connection's
                    // failure ends the attempt, so this loop ends.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(error::from_send(failed.into_error())),
                },
            }
        }
    }

    /// The most recently used open idle connection to `authority`, if any; expired and closed
    /// ones met on the way are dropped (which closes them).
    fn check_out(&self, authority: &str, now: Instant) -> Option<Sender> {
        let mut idle = self.shared.idle();
        let list = idle.get_mut(authority)?;
        while let Some(Idle { sender, since }) = list.pop() {
            if self.shared.fresh(since, now) && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// A new connection to `http://{authority}`, its HTTP/1.1 driver spawned on the runtime.
    async fn connect(&self, authority: &Authority) -> Result<Sender, TransportError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| TransportError::new(TransportErrorKind::Connect, e))?;
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(error::from_connect)?;
        let io = connector.call(uri).await.map_err(error::from_connect)?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| error::from_connect(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// One connection lent to one attempt. Dropping it closes the connection;
/// [`check_in`](Self::check_in) returns it to the pool.
pub(crate) struct Lease<'a> {
    sender: Sender,
    authority: Authority,
    shared: &'a Shared,
}

impl Lease<'_> {
    /// Returns the connection after its response was read to the exact end.
    pub(crate) fn check_in(self) {
        let shared = self.shared;
        if shared.max_idle_per_host == 0 || shared.idle_timeout.is_zero() || self.sender.is_closed()
        {
            return;
        }
        let now = tokio::time::Instant::now().into_std();
        let mut idle = shared.idle();
        let idle_now = Idle {
            sender: self.sender,
            since: now,
        };
        match idle.get_mut(self.authority.as_str()) {
            Some(list) => {
                list.retain(|i| shared.fresh(i.since, now));
                if list.len() < shared.max_idle_per_host {
                    list.push(idle_now);
                }
            }
            None => {
                if idle.len() >= FORGET_EMPTY_FROM {
                    idle.retain(|_, list| !list.is_empty());
                }
                idle.insert(self.authority.as_str().into(), vec![idle_now]);
            }
        }
    }
}

/// The request target hyper writes: the path and query alone (`/` when empty).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(path.clone());
            Uri::from_parts(parts).expect("invariant: a path and query alone is a valid URI")
        }
        _ => Uri::from_static("/"),
    }
}

/// The `Host` hyper-util would have written for a plain-HTTP `authority`: the host, and the
/// port unless it is 80. The core sets `Host` for plain HTTP itself except where it leaves this
/// rule to the backend (userinfo in the authority, a port spelled as 80).
fn host_of(authority: &Authority) -> Option<HeaderValue> {
    let host = authority.host();
    let text = match authority.port_u16() {
        Some(port) if port != 80 => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_carries_the_path_and_query_alone() {
        for (uri, expected) in [
            ("http://a.example/x/y?q=1", "/x/y?q=1"),
            ("http://a.example/", "/"),
            ("http://a.example", "/"),
            ("http://a.example:8080/?", "/?"),
        ] {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(origin_form(&uri), expected, "{uri}");
        }
    }

    #[test]
    fn the_host_names_the_port_only_when_it_is_not_the_default() {
        for (uri, expected) in [
            ("http://a.example/x", "a.example"),
            ("http://a.example:80/x", "a.example"),
            ("http://a.example:080/x", "a.example"),
            ("http://a.example:8080/x", "a.example:8080"),
            ("http://user:pw@a.example:81/x", "a.example:81"),
            ("http://[::1]:80/x", "[::1]"),
            ("http://[::1]:9000/x", "[::1]:9000"),
        ] {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(
                host_of(uri.authority().unwrap()).unwrap(),
                expected,
                "{uri}"
            );
        }
    }
}
