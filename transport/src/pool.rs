//! The one connection pool: hyper HTTP/1.1 connections (idle ones kept per origin, most
//! recently used first) and HTTP/2 connections (one multiplexed connection per origin), for
//! `http://` and `https://` alike.
//!
//! A checkout takes the origin's HTTP/2 connection if it has one, else its most recently used
//! idle HTTP/1.1 connection, else opens a new one through the backend's [`Connect`] (ALPN
//! decides which protocol it speaks) under the attempt's connect deadline. An HTTP/1.1
//! connection comes back only after its response was read to the end ([`Lease::check_in`]);
//! one abandoned for any reason (a timeout, a dropped call, a body over the limit, an error) is
//! closed. A request that a reused connection closed before writing it is sent again on
//! another connection: it never left this process. Idle connections past the idle timeout are
//! closed by a reaper task on the runtime's timer (it runs only while something is idle), not
//! only when the next checkout meets them.

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use egress_core::{PoolConfig, TransportError, TransportErrorKind};
use http::header::{HOST, PROXY_AUTHORIZATION};
use http::uri::Uri;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};

use crate::error;
use crate::limit::{Limit, within};
use crate::rt::{Connect, Exec, Forward, Origin, Protocol, Runtime};

type Body = Full<Bytes>;
type H1 = http1::SendRequest<Body>;
type H2 = http2::SendRequest<Body>;

/// Origins are keyed by scheme (an index: 0 for `http`, 1 for `https`) and authority text.
type ByAuthority<T> = HashMap<Box<str>, T, foldhash::fast::RandomState>;

struct Idle {
    sender: H1,
    since: Instant,
}

struct Shared2 {
    sender: H2,
    last_used: Instant,
}

/// An origin that answered with HTTP/2: calls share its one connection, and while it has none,
/// one call opens it and the others wait for that connect instead of opening their own.
#[derive(Default)]
struct H2Origin {
    /// The shared connection, while there is one.
    conn: Option<Shared2>,
    /// Whether a call is opening the connection now.
    connecting: bool,
    /// The calls waiting for it.
    waiters: Vec<Waker>,
}

#[derive(Default)]
struct State {
    /// Idle HTTP/1.1 connections per origin, most recently used last.
    idle: [ByAuthority<Vec<Idle>>; 2],
    /// The origins known to speak HTTP/2.
    h2: [ByAuthority<H2Origin>; 2],
    /// Whether a reaper task is running.
    reaping: bool,
}

impl State {
    /// The earliest moment something kept here becomes older than `timeout`.
    fn next_expiry(&self, timeout: Duration) -> Option<Instant> {
        let idle = self
            .idle
            .iter()
            .flat_map(|m| m.values().flatten().map(|i| i.since));
        let h2 = self
            .h2
            .iter()
            .flat_map(|m| m.values().filter_map(|o| Some(o.conn.as_ref()?.last_used)));
        idle.chain(h2).min().map(|t| t + timeout)
    }

    /// Drops (so closes) everything older than `timeout` at `now`, and closed connections.
    fn expire(&mut self, now: Instant, timeout: Duration) {
        let fresh = |since: Instant| now.saturating_duration_since(since) < timeout;
        for map in &mut self.idle {
            map.retain(|_, list| {
                list.retain(|i| fresh(i.since) && !i.sender.is_closed());
                !list.is_empty()
            });
        }
        for map in &mut self.h2 {
            map.retain(|_, o| {
                if o.conn
                    .as_ref()
                    .is_some_and(|c| !fresh(c.last_used) || c.sender.is_closed())
                {
                    o.conn = None;
                }
                o.conn.is_some() || o.connecting
            });
        }
    }
}

struct Inner {
    connector: Box<dyn Connect>,
    runtime: Arc<dyn Runtime>,
    state: Mutex<State>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the maps are still valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether connections are kept between requests at all.
    fn keeps_alive(&self) -> bool {
        self.max_idle_per_host > 0 && !self.idle_timeout.is_zero()
    }

    /// Starts the reaper unless one runs. Called with the lock held, after adding something.
    fn reap_later(self: &Arc<Self>, state: &mut State) {
        if state.reaping {
            return;
        }
        state.reaping = true;
        let pool = Arc::downgrade(self);
        self.runtime.spawn(Box::pin(reap(pool)));
    }
}

/// Closes idle connections as they pass the idle timeout, and ends when nothing is left or the
/// pool is gone.
async fn reap(pool: Weak<Inner>) {
    // Dropped with the task (its runtime shut down, say) before it ended by itself: the pool
    // must be free to start another reaper.
    struct Running<'a>(Option<&'a Weak<Inner>>);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            if let Some(inner) = self.0.and_then(Weak::upgrade) {
                inner.state().reaping = false;
            }
        }
    }
    let mut running = Running(Some(&pool));
    loop {
        let sleep = {
            let Some(inner) = pool.upgrade() else { return };
            let mut state = inner.state();
            state.expire(inner.runtime.now(), inner.idle_timeout);
            let Some(at) = state.next_expiry(inner.idle_timeout) else {
                state.reaping = false;
                // Ended by itself: a reaper started from now on is not this one's business.
                running.0 = None;
                return;
            };
            inner.runtime.sleep_until(at)
        };
        sleep.await;
    }
}

/// The pool, shared by every clone of a client.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state();
        let idle: usize = state
            .idle
            .iter()
            .flat_map(|m| m.values())
            .map(Vec::len)
            .sum();
        let h2: usize = state
            .h2
            .iter()
            .flat_map(|m| m.values())
            .filter(|o| o.conn.is_some())
            .count();
        f.debug_struct("Pool")
            .field("connector", &self.inner.connector)
            .field("idle_http1", &idle)
            .field("http2", &h2)
            .field("max_idle_per_host", &self.inner.max_idle_per_host)
            .field("idle_timeout", &self.inner.idle_timeout)
            .finish()
    }
}

/// A connection checked out for one request.
enum Conn {
    H1(H1),
    H2(H2),
}

/// What a checkout found.
enum Checkout {
    /// A pooled connection.
    Reuse(Conn),
    /// Another call is opening the origin's HTTP/2 connection: wait for it.
    Wait,
    /// Nothing to reuse: open a connection (as the origin's HTTP/2 leader, if it has one).
    Open(Option<Leader>),
}

/// The call opening an HTTP/2 origin's connection. When it is dropped (the connect done,
/// failed or abandoned), the waiting calls look again.
struct Leader {
    pool: Arc<Inner>,
    origin: Origin,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut state = self.pool.state();
        let key = self.origin.authority().as_str();
        if let Some(o) = state.h2[self.origin.is_https() as usize].get_mut(key) {
            o.connecting = false;
            o.waiters.drain(..).for_each(Waker::wake);
        }
    }
}

/// What sending gives back: the response head, and the lease on its HTTP/1.1 connection (none
/// for HTTP/2, whose connection stays shared in the pool).
pub(crate) type Sent = (Response<Incoming>, Option<Lease>);

impl Pool {
    pub(crate) fn new(
        connector: Box<dyn Connect>,
        runtime: Arc<dyn Runtime>,
        config: &PoolConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                connector,
                runtime,
                state: Mutex::default(),
                max_idle_per_host: config.max_idle_per_host,
                idle_timeout: config.idle_timeout,
            }),
        }
    }

    pub(crate) fn runtime(&self) -> &dyn Runtime {
        &*self.inner.runtime
    }

    /// Sends `request` (an absolute `http` or `https` URI) on a pooled connection of its origin
    /// or a new one, and returns the response head with the lease on its connection.
    /// `connect` bounds opening a connection, `pool` waiting for a pooled one to be ready.
    pub(crate) async fn send(
        &self,
        mut request: Request<Body>,
        connect: Limit,
        pool: Limit,
    ) -> Result<Sent, TransportError> {
        let Some(origin) = Origin::of(request.uri()) else {
            return Err(TransportError::new(
                TransportErrorKind::Unsupported,
                "the request URI is not an absolute http or https URI",
            ));
        };
        let uri = request.uri().clone();
        // Through a forwarding proxy, `http://` requests go in absolute-form.
        let forward = match origin.is_https() {
            true => None,
            false => self.inner.connector.forward_proxy(&origin),
        };
        loop {
            let (conn, reused, tls_failed) = match self.check_out(&origin) {
                Checkout::Reuse(conn) => (conn, true, None),
                Checkout::Wait => {
                    if within(self.runtime(), pool, self.h2_connected(&origin))
                        .await
                        .is_none()
                    {
                        return Err(pool_timeout());
                    }
                    continue;
                }
                Checkout::Open(leader) => {
                    // Boxed: connecting (a TLS stream, hyper's handshake) would make this
                    // future several kilobytes larger.
                    let conn = Box::pin(self.connect(&origin, connect)).await;
                    drop(leader);
                    let (conn, tls_failed) = conn?;
                    (conn, false, tls_failed)
                }
            };
            match conn {
                Conn::H1(mut sender) => {
                    // An idle connection is ready at once, unless the peer just closed it.
                    match within(self.runtime(), pool, sender.ready()).await {
                        None => return Err(pool_timeout()),
                        Some(Err(_)) if reused => continue,
                        Some(Err(e)) => return Err(send_failed(e, tls_failed.as_deref())),
                        Some(Ok(())) => {}
                    }
                    for_http1(&mut request, forward.as_ref());
                    match sender.try_send_request(request).await {
                        Ok(response) if forward.is_some() && response.status() == PROXY_AUTH => {
                            // RFC 9110 15.5.8: the proxy, not the origin, wants credentials.
                            // The connection closes with the unread body.
                            return Err(TransportError::new(
                                TransportErrorKind::ProxyRefused,
                                "the proxy answered 407 Proxy Authentication Required",
                            )
                            .at_proxy(Some(PROXY_AUTH)));
                        }
                        Ok(response) => {
                            let lease = Lease {
                                sender,
                                origin,
                                pool: Arc::clone(&self.inner),
                            };
                            return Ok((response, Some(lease)));
                        }
                        Err(mut failed) => match failed.take_message() {
                            // Closed before the request was written: it never left this
                            // process, so another connection may carry it. A new connection's
                            // failure ends the attempt, so this loop ends.
                            Some(mut unsent) if reused => {
                                *unsent.uri_mut() = uri.clone();
                                request = unsent;
                            }
                            _ => {
                                let e = failed.into_error();
                                return Err(send_failed(e, tls_failed.as_deref()));
                            }
                        },
                    }
                }
                Conn::H2(mut sender) => {
                    // RFC 9113 8.3.1: the authority goes as `:authority` (from the URI), and a
                    // `Host` beside it is not sent (it must not differ, and would say it twice).
                    let host = request.headers_mut().remove(HOST);
                    *request.version_mut() = Version::HTTP_2;
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok((response, None)),
                        Err(mut failed) => match failed.take_message() {
                            Some(mut unsent) if reused => {
                                self.forget_closed_h2(&origin);
                                // It may go out over HTTP/1.1 now, which needs its `Host`.
                                if let Some(host) = host {
                                    unsent.headers_mut().insert(HOST, host);
                                }
                                *unsent.version_mut() = Version::HTTP_11;
                                request = unsent;
                            }
                            _ => {
                                let e = failed.into_error();
                                return Err(send_failed(e, tls_failed.as_deref()));
                            }
                        },
                    }
                }
            }
        }
    }

    /// The origin's HTTP/2 connection, else its most recently used open idle HTTP/1.1 one;
    /// expired and closed ones met on the way are dropped (which closes them).
    fn check_out(&self, origin: &Origin) -> Checkout {
        let inner = &*self.inner;
        let scheme = origin.is_https() as usize;
        let key = origin.authority().as_str();
        let now = inner.runtime.now();
        let fresh = |since: Instant| now.saturating_duration_since(since) < inner.idle_timeout;
        let mut state = inner.state();
        if let Some(o) = state.h2[scheme].get_mut(key) {
            if let Some(shared) = &mut o.conn {
                if fresh(shared.last_used) && !shared.sender.is_closed() {
                    shared.last_used = now;
                    return Checkout::Reuse(Conn::H2(shared.sender.clone()));
                }
                o.conn = None;
            }
            if o.connecting {
                return Checkout::Wait;
            }
            o.connecting = true;
            return Checkout::Open(Some(Leader {
                pool: Arc::clone(&self.inner),
                origin: origin.clone(),
            }));
        }
        if let Some(list) = state.idle[scheme].get_mut(key) {
            while let Some(Idle { sender, since }) = list.pop() {
                if fresh(since) && !sender.is_closed() {
                    return Checkout::Reuse(Conn::H1(sender));
                }
            }
        }
        Checkout::Open(None)
    }

    /// Ready when no call is opening `origin`'s HTTP/2 connection any more.
    async fn h2_connected(&self, origin: &Origin) {
        let scheme = origin.is_https() as usize;
        let key = origin.authority().as_str();
        poll_fn(|cx| {
            let mut state = self.inner.state();
            match state.h2[scheme].get_mut(key) {
                Some(o) if o.connecting => {
                    if !o.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        o.waiters.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            }
        })
        .await
    }

    /// Forgets the origin's HTTP/2 connection if it has closed (another call may already have
    /// replaced it with an open one, which stays).
    fn forget_closed_h2(&self, origin: &Origin) {
        let mut state = self.inner.state();
        let map = &mut state.h2[origin.is_https() as usize];
        if let Some(o) = map.get_mut(origin.authority().as_str()) {
            if o.conn.as_ref().is_some_and(|c| c.sender.is_closed()) {
                o.conn = None;
            }
        }
    }

    /// A new connection to `origin` within `limit`, its hyper driver spawned on the runtime;
    /// an HTTP/2 one becomes the origin's shared connection.
    async fn connect(
        &self,
        origin: &Origin,
        limit: Limit,
    ) -> Result<(Conn, Option<Arc<AtomicBool>>), TransportError> {
        let inner = &self.inner;
        let connecting = async {
            let connected = inner
                .connector
                .connect(origin)
                .await
                .map_err(error::from_connect)?;
            let tls_failed = connected.tls_failed.clone();
            match connected.protocol {
                Protocol::Http1 => {
                    let (sender, connection) = http1::handshake(connected.io)
                        .await
                        .map_err(error::from_handshake)?;
                    inner.runtime.spawn(Box::pin(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                    }));
                    Ok((Conn::H1(sender), tls_failed))
                }
                Protocol::Http2 => {
                    let (sender, connection) =
                        http2::handshake(Exec(Arc::clone(&inner.runtime)), connected.io)
                            .await
                            .map_err(error::from_handshake)?;
                    inner.runtime.spawn(Box::pin(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                    }));
                    if inner.keeps_alive() {
                        let mut state = inner.state();
                        let now = inner.runtime.now();
                        let map = &mut state.h2[origin.is_https() as usize];
                        let shared = Shared2 {
                            sender: sender.clone(),
                            last_used: now,
                        };
                        match map.get_mut(origin.authority().as_str()) {
                            Some(o) => o.conn = Some(shared),
                            None => {
                                let o = H2Origin {
                                    conn: Some(shared),
                                    ..H2Origin::default()
                                };
                                map.insert(origin.authority().as_str().into(), o);
                            }
                        }
                        inner.reap_later(&mut state);
                    }
                    Ok((Conn::H2(sender), tls_failed))
                }
            }
        };
        match within(self.runtime(), limit, connecting).await {
            Some(result) => result,
            None => Err(TransportError::new(
                TransportErrorKind::ConnectTimeout,
                "connect timed out",
            )),
        }
    }
}

/// A failure to send on a connection: a TLS failure when TLS failed on its stream (a server
/// rejecting the client certificate; hyper's HTTP/2 layer keeps only the text of IO errors,
/// or reports the request as canceled), else what the error chain says.
fn send_failed(error: hyper::Error, tls_failed: Option<&AtomicBool>) -> TransportError {
    match tls_failed {
        Some(failed) if failed.load(Ordering::Acquire) => {
            TransportError::new(TransportErrorKind::Tls, error)
        }
        _ => error::from_send(error),
    }
}

fn pool_timeout() -> TransportError {
    TransportError::new(
        TransportErrorKind::PoolTimeout,
        "no pooled connection became ready in time",
    )
}

/// One HTTP/1.1 connection lent to one request. Dropping it closes the connection;
/// [`check_in`](Self::check_in) returns it to the pool.
pub(crate) struct Lease {
    sender: H1,
    origin: Origin,
    pool: Arc<Inner>,
}

impl Lease {
    /// Returns the connection after its response was read to the exact end.
    pub(crate) fn check_in(self) {
        let inner = &self.pool;
        if !inner.keeps_alive() || self.sender.is_closed() {
            return;
        }
        let now = inner.runtime.now();
        let mut state = inner.state();
        let map = &mut state.idle[self.origin.is_https() as usize];
        let idle = Idle {
            sender: self.sender,
            since: now,
        };
        match map.get_mut(self.origin.authority().as_str()) {
            Some(list) => {
                if list.len() < inner.max_idle_per_host {
                    list.push(idle);
                }
            }
            None => {
                map.insert(self.origin.authority().as_str().into(), vec![idle]);
            }
        }
        inner.reap_later(&mut state);
    }
}

const PROXY_AUTH: StatusCode = StatusCode::PROXY_AUTHENTICATION_REQUIRED;

/// Makes `request` what hyper's HTTP/1.1 connection writes: the request line in origin form
/// (RFC 9112 3.2.1); the `Host` header is the core's. To a forwarding proxy, the request line
/// stays in absolute-form (RFC 9112 3.2.2) and the proxy's credentials go along
/// (`Proxy-Authorization`, RFC 9110 11.7.1, marked sensitive).
fn for_http1(request: &mut Request<Body>, forward: Option<&Forward>) {
    match forward {
        None => *request.uri_mut() = origin_form(request.uri()),
        Some(forward) => {
            if let Some(value) = &forward.authorization {
                request
                    .headers_mut()
                    .insert(PROXY_AUTHORIZATION, value.clone());
            }
        }
    }
}

/// The request target in origin form: the path and query alone (`/` when empty).
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
    fn an_origin_is_read_from_http_and_https_uris_only() {
        let o = Origin::of(&"https://[::1]/x".parse().unwrap()).unwrap();
        assert_eq!((o.is_https(), o.host(), o.port()), (true, "::1", 443));
        let o = Origin::of(&"http://a.example:8080".parse().unwrap()).unwrap();
        assert_eq!(
            (o.is_https(), o.host(), o.port()),
            (false, "a.example", 8080)
        );
        assert!(Origin::of(&"ftp://a.example/".parse().unwrap()).is_none());
        assert!(Origin::of(&"/relative".parse().unwrap()).is_none());
    }

    #[test]
    fn an_origin_is_refused_exactly_when_the_uri_has_no_host() {
        let mut parsed = 0;
        for text in [
            "http://:80/",
            "http://u@:80/",
            "http://u:p@/",
            "http://u@h/",
            "http://u@h:1/",
            "https://[]/",
            "https://[]:443/",
            "https://u@[::1]:8443/",
            "http://@/",
            "http://h:/",
            "http://a@b@c:9/",
        ] {
            let Ok(uri) = text.parse::<Uri>() else {
                continue;
            };
            parsed += 1;
            let host = uri.host().unwrap_or("");
            let bare = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let origin = Origin::of(&uri);
            assert_eq!(origin.is_none(), bare.is_empty(), "{text}");
            if let Some(o) = origin {
                assert_eq!(o.host(), bare, "{text}");
                assert_eq!(
                    o.port(),
                    uri.port_u16()
                        .unwrap_or(if o.is_https() { 443 } else { 80 })
                );
            }
        }
        assert!(parsed >= 5, "only {parsed} of the URIs parsed");
    }
}
