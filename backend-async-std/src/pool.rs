//! Idle connections per origin, and the lease an exchange holds on one.
//!
//! A connection goes back to the pool only when the transport read its response to the exact
//! end ([`Reuse::allow`]); one abandoned for any reason (a timeout, a dropped call, a body over
//! the limit, an error) is closed. That is the difference with surf's built-in client, whose
//! pool takes such connections back and can hand the next request the previous response.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_std::io::{Read as AsyncRead, Write as AsyncWrite};
use egress_core::PoolConfig;

use crate::connector::{Conn, Origin};
use crate::h1::Probe;

struct Idle {
    conn: Conn,
    since: Instant,
}

struct Shared {
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
}

impl Shared {
    fn idle(&self) -> MutexGuard<'_, HashMap<Origin, Vec<Idle>>> {
        // Nothing panics while holding the lock; if something did, the map is still valid.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_in(&self, origin: Origin, conn: Conn) {
        let mut idle = self.idle();
        let list = idle.entry(origin).or_default();
        list.retain(|i| i.since.elapsed() < self.idle_timeout);
        if list.len() < self.max_idle_per_host {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// The idle connections, shared by every clone of a client.
#[derive(Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle: usize = self.shared.idle().values().map(Vec::len).sum();
        f.debug_struct("Pool")
            .field("idle", &idle)
            .field("max_idle_per_host", &self.shared.max_idle_per_host)
            .field("idle_timeout", &self.shared.idle_timeout)
            .finish()
    }
}

impl Pool {
    /// A pool keeping at most `max_idle_per_host` connections per origin, each for at most
    /// `idle_timeout`.
    pub(crate) fn new(config: &PoolConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                idle: Mutex::default(),
                max_idle_per_host: config.max_idle_per_host,
                idle_timeout: config.idle_timeout,
            }),
        }
    }

    /// Whether connections are kept at all (HTTP keep-alive).
    pub(crate) fn keeps_alive(&self) -> bool {
        self.shared.max_idle_per_host > 0 && !self.shared.idle_timeout.is_zero()
    }

    /// The most recently used live idle connection to `origin`, if any.
    pub(crate) fn check_out(&self, origin: &Origin) -> Option<Conn> {
        loop {
            let Idle { mut conn, since } = {
                let mut idle = self.shared.idle();
                let list = idle.get_mut(origin)?;
                let found = list.pop();
                if list.is_empty() {
                    idle.remove(origin);
                }
                found?
            };
            if since.elapsed() < self.shared.idle_timeout && conn.is_reusable() {
                return Some(conn);
            }
            // Expired, closed by the peer, or holding bytes nobody asked for: close it.
        }
    }

    /// Lends `conn` to one exchange; it comes back only if the returned [`Reuse`] allows it.
    pub(crate) fn lease(&self, conn: Conn, origin: Origin, probe: Arc<Probe>) -> (Lease, Reuse) {
        let reuse = Reuse(Arc::new(AtomicBool::new(false)));
        let lease = Lease {
            conn: Some(conn),
            home: Arc::downgrade(&self.shared),
            origin: Some(origin),
            reuse: reuse.clone(),
            probe,
            reading: false,
            awaiting: false,
        };
        (lease, reuse)
    }
}

/// Permission to return a leased connection to the pool, given by whoever read the response
/// to its end.
#[derive(Clone, Debug)]
pub(crate) struct Reuse(Arc<AtomicBool>);

impl Reuse {
    /// The response was read to its exact end: the connection can carry another request.
    pub(crate) fn allow(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A connection lent to one exchange. It reports the first read to the [`Probe`] (the request
/// is written, the wait for the head begins) and, when dropped, returns to the pool if allowed
/// or closes.
pub(crate) struct Lease {
    conn: Option<Conn>,
    home: Weak<Shared>,
    origin: Option<Origin>,
    reuse: Reuse,
    probe: Arc<Probe>,
    reading: bool,
    /// The first read has not yet seen the connection readable.
    awaiting: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("conn", &self.conn)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn released() -> io::Error {
    io::Error::other("the connection was already released")
}

impl AsyncRead for Lease {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if !self.reading {
            self.reading = true;
            self.awaiting = true;
            self.probe.reading();
        }
        if self.awaiting {
            // The request was just written: wait for the answer instead of trying to read it.
            if let Some(conn) = self.conn.as_ref() {
                std::task::ready!(conn.poll_readable(cx))?;
            }
            self.awaiting = false;
        }
        match self.conn.as_mut() {
            Some(conn) => Pin::new(conn).poll_read(cx, buf),
            None => Poll::Ready(Err(released())),
        }
    }
}

impl AsyncWrite for Lease {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.conn.as_mut() {
            Some(conn) => Pin::new(conn).poll_write(cx, buf),
            None => Poll::Ready(Err(released())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.conn.as_mut() {
            Some(conn) => Pin::new(conn).poll_flush(cx),
            None => Poll::Ready(Err(released())),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.conn.as_mut() {
            Some(conn) => Pin::new(conn).poll_close(cx),
            None => Poll::Ready(Err(released())),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.reuse.0.load(Ordering::Acquire) {
            return; // dropping the connection closes it
        }
        if let (Some(conn), Some(origin), Some(home)) =
            (self.conn.take(), self.origin.take(), self.home.upgrade())
        {
            home.check_in(origin, conn);
        }
    }
}
