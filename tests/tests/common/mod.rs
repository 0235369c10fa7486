//! What every cross-backend test needs: the list of backends, a client on each, and a way to
//! run a future on each backend's own runtime.

#![allow(dead_code, unreachable_pub)] // each test file uses its own part of this module

use std::future::Future;
use std::time::Duration;

use egress_core::{Backoff, JitterMode, RetryPolicy};
use egress_core::{Client, Config};

/// One test module per scenario, with a test per backend (`scenario::tokio`,
/// `scenario::async_std`): each runs `scenarios::NAME(backend)` on that backend's runtime.
#[allow(unused_macros)] // not every test file has scenarios
macro_rules! parity {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::common::Backend;

            #[test]
            fn tokio() {
                Backend::Tokio.run(super::scenarios::$name(Backend::Tokio));
            }

            #[test]
            fn async_std() {
                Backend::AsyncStd.run(super::scenarios::$name(Backend::AsyncStd));
            }
        }
    )*};
}

/// One test module per function, with a test per backend (`name::tokio`, `name::async_std`):
/// each calls `name(backend)`, which runs its own runtime (for tests that install a
/// thread-local subscriber around it).
#[allow(unused_macros)] // not every test file has such functions
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::common::Backend;

            #[test]
            fn tokio() {
                super::$name(Backend::Tokio);
            }

            #[test]
            fn async_std() {
                super::$name(Backend::AsyncStd);
            }
        }
    )*};
}

/// A runtime backend under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// egress-tokio.
    Tokio,
    /// egress-async-std.
    AsyncStd,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Backend; 2] = [Backend::Tokio, Backend::AsyncStd];

    /// A client on this backend.
    pub fn client(self, config: Config) -> Client {
        match self {
            Backend::Tokio => egress_tokio::client(config).expect("test config is valid"),
            Backend::AsyncStd => egress_async_std::client(config).expect("test config is valid"),
        }
    }

    /// A client on this backend trusting `certificate` (DER) only.
    pub fn client_trusting(self, config: Config, certificate: &[u8]) -> Client {
        match self {
            Backend::Tokio => egress_tokio::Builder::new(config)
                .with_root_certificate(certificate.to_vec())
                .build()
                .expect("test config is valid"),
            Backend::AsyncStd => egress_async_std::Builder::new(config)
                .with_root_certificate(certificate.to_vec())
                .build()
                .expect("test config is valid"),
        }
    }

    /// A client on this backend trusting `certificate` (DER) only and presenting `identity`
    /// (mutual TLS), or the configuration error its builder gives.
    pub fn client_with_identity(
        self,
        config: Config,
        certificate: &[u8],
        identity: Option<egress_tokio::ClientIdentity>,
    ) -> Result<Client, egress_core::ConfigError> {
        match self {
            Backend::Tokio => {
                let builder =
                    egress_tokio::Builder::new(config).with_root_certificate(certificate.to_vec());
                match identity {
                    Some(identity) => builder.with_client_identity(identity).build(),
                    None => builder.build(),
                }
            }
            Backend::AsyncStd => {
                let builder = egress_async_std::Builder::new(config)
                    .with_root_certificate(certificate.to_vec());
                match identity {
                    Some(identity) => builder.with_client_identity(identity).build(),
                    None => builder.build(),
                }
            }
        }
    }

    /// Runs `future` to completion on this backend's runtime.
    pub fn run<F: Future>(self, future: F) -> F::Output {
        match self {
            Backend::Tokio => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime builds")
                .block_on(future),
            Backend::AsyncStd => async_std::task::block_on(future),
        }
    }

    /// Runs `future` on this backend's runtime, all on the calling thread (so that a
    /// thread-local tracing subscriber sees everything).
    pub fn run_here<F: Future>(self, future: F) -> F::Output {
        match self {
            Backend::Tokio => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime builds")
                .block_on(future),
            // `block_on` polls the future on the calling thread.
            Backend::AsyncStd => async_std::task::block_on(future),
        }
    }
}

impl Backend {
    /// Runs `futures` concurrently on this backend and waits for all of them.
    pub async fn join_all<F>(self, futures: Vec<F>) -> Vec<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Backend::Tokio => {
                let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
                let mut out = Vec::with_capacity(handles.len());
                for handle in handles {
                    out.push(handle.await.expect("a load worker panicked"));
                }
                out
            }
            Backend::AsyncStd => {
                let handles: Vec<_> = futures.into_iter().map(async_std::task::spawn).collect();
                let mut out = Vec::with_capacity(handles.len());
                for handle in handles {
                    out.push(handle.await);
                }
                out
            }
        }
    }

    /// `future`, or `Err(())` if it takes longer than `limit`.
    pub async fn timeout<F: Future>(self, limit: Duration, future: F) -> Result<F::Output, ()> {
        match self {
            Backend::Tokio => tokio::time::timeout(limit, future).await.map_err(|_| ()),
            Backend::AsyncStd => async_std::future::timeout(limit, future)
                .await
                .map_err(|_| ()),
        }
    }
}

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The test policy: the defaults with fast, jitter-free backoff (50 ms, 100 ms, ...), so that
/// timelines are predictable.
pub fn config(base_url: &str) -> Config {
    let backoff = Backoff::default()
        .with_jitter(JitterMode::None)
        .with_initial(ms(50));
    Config::default()
        .with_base_url(base_url)
        .with_retry(RetryPolicy::standard().with_backoff(backoff))
}

/// A writer into a shared buffer, for a `tracing_subscriber::fmt` layer whose output a test reads.
pub struct Buffer(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `data` gzip-encoded at `level`.
pub fn gzip_at(data: &[u8], level: flate2::Compression) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
    e.write_all(data).expect("in memory");
    e.finish().expect("in memory")
}

/// `data` gzip-encoded.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    gzip_at(data, flate2::Compression::default())
}

/// A 200 with a JSON content type, `wire` as its body and `coding` as its `Content-Encoding`.
pub fn encoded(coding: &str, wire: Vec<u8>) -> egress_tests::server::Reply {
    egress_tests::server::Reply::status(200)
        .header("content-type", "application/json")
        .header("content-encoding", coding)
        .body(wire)
}
