//! The async-std modes: egress-async-std and raw surf (its `h1-client`), each with its workers
//! spawned on async-std's executor (one thread: the child is pinned to one core) and driven
//! from `block_on`. Over HTTPS both trust the upstream's certificate through native-tls
//! (OpenSSL); egress-async-std offers `h2` and `http/1.1` by ALPN, surf's h1 client no ALPN
//! (HTTP/1.1 only).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use egress_core::Config;

use crate::measure;
use crate::workload::{Entity, Measured, Mode, Tally, Target, Workload};

/// One reused client of an async-std mode (one per process, so the sizes of the variants do
/// not matter).
#[allow(clippy::large_enum_variant)]
enum Client {
    Egress(egress_core::Client),
    Surf(surf::Client, String),
}

impl Client {
    fn new(mode: Mode, target: Target) -> Self {
        let Target { base, certificate } = target;
        match mode {
            Mode::EgressAsyncStd => {
                let mut builder =
                    egress_async_std::Builder::new(Config::default().with_base_url(base));
                if let Some(der) = certificate {
                    builder = builder.with_root_certificate(der);
                }
                Client::Egress(builder.build().expect("the default configuration is valid"))
            }
            Mode::Surf => {
                // surf's own h1 client and defaults (keep-alive, its 60 s timeout), with
                // TCP_NODELAY like every other mode.
                let mut config = surf::Config::new().set_tcp_no_delay(true);
                if let Some(der) = certificate {
                    let root = async_native_tls::Certificate::from_der(&der)
                        .expect("the upstream's certificate parses");
                    let tls = async_native_tls::TlsConnector::new().add_root_certificate(root);
                    config = config.set_tls_config(Some(Arc::new(tls)));
                }
                let client: surf::Client = config.try_into().expect("surf builds");
                Client::Surf(client, base)
            }
            _ => unreachable!("not an async-std mode"),
        }
    }

    async fn call(&self, path: &str) -> Result<Entity, String> {
        match self {
            Client::Egress(client) => client
                .get(path)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json::<Entity>()
                .map_err(|e| e.to_string()),
            Client::Surf(client, base) => {
                let mut response = client
                    .get(format!("{base}{path}"))
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.body_bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("status {status}"));
                }
                serde_json::from_slice(&body).map_err(|e| e.to_string())
            }
        }
    }
}

async fn calls(client: Arc<Client>, workload: Workload, concurrency: usize, n: usize) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let next = next.clone();
            async_std::task::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break tally;
                    }
                    let path = workload.path(i);
                    let start = Instant::now();
                    let result = client.call(&path).await;
                    tally.record(start.elapsed(), result);
                }
            })
        })
        .collect();
    let mut total = Tally::default();
    for worker in workers {
        total.merge(worker.await);
    }
    total
}

/// Runs `warmup` calls, then measures `n` calls (see [`crate::tokio_modes::run`]).
pub(crate) fn run(
    mode: Mode,
    workload: Workload,
    concurrency: usize,
    warmup: usize,
    n: usize,
    target: Target,
) -> Measured {
    async_std::task::block_on(async move {
        let client = Arc::new(Client::new(mode, target));
        if warmup > 0 {
            let _ = calls(client.clone(), workload, concurrency, warmup).await;
        }
        let before = measure::process();
        let start = Instant::now();
        let tally = calls(client, workload, concurrency, n).await;
        let elapsed = start.elapsed();
        let after = measure::process();
        Measured {
            tally,
            elapsed,
            before,
            after,
        }
    })
}
