//! The HTTP client of the clients a [`Builder`](crate::Builder) makes: this crate's connector
//! and pool, the request written directly or by async-h1's encoder (surf's HTTP/1.1 engine), the
//! response read by [`decode`](crate::decode), reporting each attempt's phase so the transport
//! can time them apart.
//!
//! surf's built-in `H1Client` is not used: its pool takes back connections whose exchange was
//! abandoned (a timeout, a dropped call), so a later request can read an earlier response; it
//! has no connect timeout on pooled connections; and it turns connect failures into strings.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_std::io::{ReadExt, WriteExt};
use surf::http::Request;

use crate::connector::{Connector, Origin};
use crate::convert::Encoded;
use crate::decode::{self, Body};
use crate::pool::{Lease, Pool, Reuse};

/// Where an attempt is, as far as timing goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No client has picked the request up (or the client does not report phases).
    Unclaimed,
    /// Taking an idle connection or opening one (the connector enforces its own timeout).
    Connecting,
    /// Writing the request, since then.
    Writing(Instant),
    /// Waiting for the response head, since then.
    Reading(Instant),
}

/// Shared between the transport (which reads it) and the client and lease (which advance it).
#[derive(Debug)]
pub(crate) struct Probe {
    phase: Mutex<Phase>,
}

impl Probe {
    /// A probe for a request no client has picked up yet.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            phase: Mutex::new(Phase::Unclaimed),
        })
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    /// The current phase.
    pub(crate) fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request is written; the wait for the head begins now.
    pub(crate) fn reading(&self) {
        self.set(Phase::Reading(Instant::now()));
    }
}

/// The response head of [`PooledH1::send`], its body on the connection, and the permission to
/// reuse the connection.
pub(crate) type Sending<'a> = Pin<
    Box<dyn Future<Output = Result<(http::Response<()>, Body, Reuse), surf::Error>> + Send + 'a>,
>;

/// This crate's HTTP/1.1 client: async-h1 (surf's HTTP/1.1 engine) over its connector and
/// pool.
///
/// The transport calls it directly rather than through a `surf::Client`: with no middleware,
/// surf's client only boxed the exchange twice more (its middleware chain and `HttpClient`'s
/// `async_trait`) and carried the probe and the reuse permission in the request's and the
/// response's extensions (type maps, one allocation and one hash each).
pub(crate) struct PooledH1 {
    connector: Connector,
    pool: Pool,
}

impl fmt::Debug for PooledH1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledH1")
            .field("connector", &self.connector)
            .field("pool", &self.pool)
            .finish()
    }
}

impl PooledH1 {
    pub(crate) fn new(connector: Connector, pool: Pool) -> Self {
        Self { connector, pool }
    }

    /// Sends `request` on an idle or a new connection and reads the response head, advancing
    /// `probe` through the phases. The body streams from the connection, which returns to the
    /// pool only if the returned [`Reuse`] is allowed before the body is dropped.
    ///
    /// Boxed: the transport holds it across the head's timers; the head is read by
    /// [`decode::read_head`].
    pub(crate) fn send(&self, request: Outgoing, probe: Arc<Probe>) -> Sending<'_> {
        Box::pin(async move {
            probe.set(Phase::Connecting);
            let (origin, mut request) = match request {
                Outgoing::Encoded(encoded) => (encoded.origin.clone(), Outgoing::Encoded(encoded)),
                Outgoing::Request(request) => {
                    (Origin::of(request.url())?, Outgoing::Request(request))
                }
            };
            let conn = match self.pool.check_out(&origin) {
                Some(conn) => conn,
                None => self.connector.connect(&origin).await?,
            };
            if let Outgoing::Request(request) = &mut request {
                if !self.pool.keeps_alive() {
                    request.insert_header("connection", "close");
                }
            }
            probe.set(Phase::Writing(Instant::now()));
            let (mut lease, reuse) = self.pool.lease(conn, origin, probe);
            match request {
                Outgoing::Encoded(encoded) => {
                    lease.write_all(&encoded.head).await?;
                    if !encoded.body.is_empty() {
                        lease.write_all(&encoded.body).await?;
                    }
                    lease.flush().await?;
                }
                Outgoing::Request(request) => write_request(&mut lease, *request).await?,
            }
            let (head, body) = decode::read_head(lease).await?;
            Ok((head, body, reuse))
        })
    }

    /// Whether connections are kept alive (else every request says `connection: close`).
    pub(crate) fn keeps_alive(&self) -> bool {
        self.pool.keeps_alive()
    }
}

/// A request for [`PooledH1::send`].
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Already in the bytes async-h1's encoder would write (see [`encode`](crate::convert::encode)), with the
    /// `connection: close` that [`PooledH1::keeps_alive`] asks for.
    Encoded(Encoded),
    /// For async-h1's encoder (boxed: the rare case, and the larger).
    Request(Box<Request>),
}

/// The most of the request held in memory at once: the head and a body up to this size go out
/// in one write; a larger body follows in pieces of this size.
const WRITE_PIECE: u64 = 64 * 1024;

/// Writes `request` with async-h1's encoder, as `async_h1::client::connect` does, but without
/// its copy's 8 KiB zero-filled buffer per request: the encoder is read into a buffer sized to
/// what it yields (the head, and the body of a small request) and written from there.
async fn write_request(lease: &mut Lease, request: Request) -> std::io::Result<()> {
    let mut encoder = async_h1::client::Encoder::new(request);
    let mut buffer = Vec::with_capacity(512);
    loop {
        buffer.clear();
        let n = (&mut encoder)
            .take(WRITE_PIECE)
            .read_to_end(&mut buffer)
            .await?;
        if n == 0 {
            break;
        }
        lease.write_all(&buffer).await?;
        if (n as u64) < WRITE_PIECE {
            break;
        }
    }
    lease.flush().await
}
