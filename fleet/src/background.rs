//! The fleet's background work, off every call's path: (re)connecting with backoff, listening
//! to the fleet's channel, and running the fire-and-forget publishes. It runs on the current
//! tokio runtime when there is one, else on a thread of its own under async-io; it ends when
//! the [`Fleet`](crate::Fleet) is dropped.

use std::future::Future;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{Either, select};

use crate::{FleetError, Inner, Publish};

/// Reconnection delays: 50 ms, doubling, at most 2 s.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Self(Self::FIRST)
    }

    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        now
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the connector looks whether the connection was lost.
const CHECK_EVERY: Duration = Duration::from_millis(20);

pub(crate) fn start(
    inner: Weak<Inner>,
    queue: async_channel::Receiver<Publish>,
    closed: async_channel::Receiver<()>,
) -> Result<(), FleetError> {
    let task = async move {
        let work = futures_util::future::join3(
            connector(inner.clone()),
            listener(inner.clone()),
            publisher(inner, queue),
        );
        // `closed` ends when the fleet is dropped (its sender lives in `Inner`).
        let _ = select(Box::pin(work), Box::pin(closed.recv())).await;
    };
    #[cfg(feature = "tokio")]
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        drop(handle.spawn(task));
        return Ok(());
    }
    #[cfg(feature = "smol")]
    {
        std::thread::Builder::new()
            .name("egress-fleet".to_owned())
            .spawn(move || async_io::block_on(task))
            .map_err(|_| FleetError::NoRuntime)?;
        Ok(())
    }
    #[cfg(not(feature = "smol"))]
    {
        drop(task);
        Err(FleetError::NoRuntime)
    }
}

async fn sleep(d: Duration) {
    // async-io's timers run on its own reactor thread: they work under any executor.
    async_io::Timer::after(d).await;
}

/// `future`, or `None` after `within`.
async fn timeout<F: Future>(within: Duration, future: F) -> Option<F::Output> {
    match select(Box::pin(future), Box::pin(sleep(within))).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// The replica's mode changed: sharing through Redis, or local limits (Redis unreachable).
pub(crate) fn mode_changed(url: &str, shared: bool, why: Option<&str>) {
    let mode = if shared { "shared" } else { "local" };
    if shared {
        tracing::info!(mode, url, "fleet mode changed");
    } else {
        tracing::warn!(
            mode,
            url,
            reason = why.unwrap_or("unreachable"),
            "fleet mode changed"
        );
    }
    #[cfg(feature = "metrics")]
    metrics::gauge!("egress.fleet.shared").set(if shared { 1.0 } else { 0.0 });
}

/// Keeps one multiplexed connection: connects, and reconnects with backoff once a call or a
/// publish found it broken.
async fn connector(inner: Weak<Inner>) {
    let mut backoff = Backoff::new();
    let mut announced_down = false;
    loop {
        let Some(fleet) = inner.upgrade() else { return };
        if fleet.connection().is_some() {
            drop(fleet);
            sleep(CHECK_EVERY).await;
            continue;
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(fleet.timeout));
        let connecting = fleet
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match timeout(CONNECT_TIMEOUT, connecting).await {
            Some(Ok(conn)) => {
                *fleet.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
                if !fleet.shared.swap(true, Ordering::Relaxed) {
                    mode_changed(&fleet.url, true, None);
                }
                announced_down = false;
                backoff.reset();
            }
            _ => {
                if !announced_down {
                    announced_down = true;
                    fleet.shared.store(false, Ordering::Relaxed);
                    mode_changed(&fleet.url, false, Some("cannot connect"));
                }
                drop(fleet);
                sleep(backoff.next()).await;
            }
        }
    }
}

/// Listens to the fleet's channel and applies holds and circuits to the local cache.
async fn listener(inner: Weak<Inner>) {
    let mut backoff = Backoff::new();
    loop {
        let Some((client, channel)) = inner.upgrade().map(|f| (f.client.clone(), f.channel()))
        else {
            return;
        };
        if let Some(Ok(mut pubsub)) = timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
            if let Some(Ok(())) = timeout(CONNECT_TIMEOUT, pubsub.subscribe(&channel)).await {
                backoff.reset();
                let mut messages = pubsub.into_on_message();
                // Ends when the connection does (Redis gone): then reconnect.
                while let Some(message) = messages.next().await {
                    let Some(fleet) = inner.upgrade() else { return };
                    if let Ok(text) = message.get_payload::<String>() {
                        fleet.apply(&text);
                    }
                }
            }
        }
        sleep(backoff.next()).await;
    }
}

/// Runs the publishes queued by calls, in order; one that finds Redis down is dropped.
async fn publisher(inner: Weak<Inner>, queue: async_channel::Receiver<Publish>) {
    while let Ok(publish) = queue.recv().await {
        let Some(fleet) = inner.upgrade() else { return };
        let Some(mut conn) = fleet.connection() else {
            continue;
        };
        let reply: redis::RedisResult<i64> = fleet
            .hold
            .key(&publish.key)
            .arg(publish.ms)
            .arg(fleet.channel())
            .arg(&publish.message)
            .invoke_async(&mut conn)
            .await;
        match reply {
            Ok(_) => {}
            Err(error) if error.is_io_error() || error.is_connection_dropped() => {
                fleet.lost("a publish failed");
            }
            Err(error) => tracing::debug!(%error, "fleet publish failed"),
        }
    }
}
