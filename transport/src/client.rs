//! A [`Client`] over a backend's [`Runtime`]: the core's clock, sleeper and entropy made from
//! it, so that a backend hands over only what is its own (the runtime, the connector and its
//! correlation scope).

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use egress_core::AmbientCorrelation;
use egress_core::rt::{BoxFuture, Clock, Sleeper, Transport};
use egress_core::{Client, ClientOptions, Config, ConfigError};
use egress_entropy::ThreadEntropy;

use crate::Runtime;

/// The core's [`Clock`] on a backend's [`Runtime`]: the monotonic time is the runtime's (under
/// tokio, `tokio::time::Instant`, so paused time controls egress time too), and the wall clock
/// advances with it from the moment the clock was made, which keeps `Retry-After` dates
/// consistent with the runtime's time and immune to system clock jumps.
pub struct RuntimeClock {
    runtime: Arc<dyn Runtime>,
    start: Instant,
    wall_start: SystemTime,
}

impl RuntimeClock {
    /// A clock on `runtime`, starting now.
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        Self {
            start: runtime.now(),
            wall_start: SystemTime::now(),
            runtime,
        }
    }
}

impl fmt::Debug for RuntimeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeClock")
            .field("runtime", &self.runtime)
            .field("wall_start", &self.wall_start)
            .finish_non_exhaustive()
    }
}

impl Clock for RuntimeClock {
    fn now(&self) -> Instant {
        self.runtime.now()
    }

    fn wall(&self) -> SystemTime {
        self.now_and_wall().1
    }

    fn now_and_wall(&self) -> (Instant, SystemTime) {
        let now = self.runtime.now();
        (now, self.wall_start + (now - self.start))
    }
}

/// The core's [`Sleeper`] on a backend's [`Runtime`] timers.
#[derive(Debug)]
pub struct RuntimeSleeper(pub Arc<dyn Runtime>);

impl Sleeper for RuntimeSleeper {
    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()> {
        self.0.sleep_until(at)
    }
}

/// What a backend hands the transport to build its clients: its [`Runtime`] (spawn, timers,
/// the monotonic clock) and its ambient correlation scope. A backend makes one per build; the
/// core's clock, sleeper and per-thread entropy are made from it here, the same for every
/// backend.
#[derive(Clone)]
pub struct Backend {
    runtime: Arc<dyn Runtime>,
    ambient: AmbientCorrelation,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// A backend of `runtime`, whose calls take the ambient correlation ID from `ambient`.
    pub fn new(runtime: Arc<dyn Runtime>, ambient: AmbientCorrelation) -> Self {
        Self { runtime, ambient }
    }

    /// The runtime, for the pieces a backend builds on it (its [`Connector`](crate::Connector)).
    pub fn runtime(&self) -> Arc<dyn Runtime> {
        self.runtime.clone()
    }

    /// A client over egress's own pool of hyper connections opened by `connector`, pooled as
    /// `config.pool` says.
    pub fn http_client(
        self,
        config: Config,
        options: ClientOptions,
        connector: impl crate::Connect,
    ) -> Result<Client, ConfigError> {
        let transport = crate::HttpTransport::new(connector, self.runtime(), &config.pool);
        self.client(config, options, transport)
    }

    /// A client over `transport` (one of the backend's own), with the settings every builder
    /// shares (`options`).
    pub fn client(
        self,
        config: Config,
        options: ClientOptions,
        transport: impl Transport + 'static,
    ) -> Result<Client, ConfigError> {
        let runtime = egress_core::Runtime::new(
            Arc::new(transport),
            Arc::new(RuntimeClock::new(self.runtime.clone())),
            Arc::new(RuntimeSleeper(self.runtime)),
            Arc::new(ThreadEntropy),
        )
        .with_ambient_correlation(self.ambient);
        Client::builder(config, runtime)
            .with_options(options)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A runtime whose clock moves only when told.
    #[derive(Debug)]
    struct Manual(Mutex<Instant>);

    impl Runtime for Manual {
        fn spawn(&self, future: BoxFuture<'static, ()>) {
            drop(future);
        }
        fn sleep_until(&self, _: Instant) -> BoxFuture<'static, ()> {
            Box::pin(async {})
        }
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    #[test]
    fn one_clock_reading_gives_the_same_times_as_two_and_the_wall_moves_with_the_runtime() {
        let runtime = Arc::new(Manual(Mutex::new(Instant::now())));
        let clock = RuntimeClock::new(runtime.clone());
        let (now, wall) = clock.now_and_wall();
        assert_eq!((now, wall), (clock.now(), clock.wall()));
        *runtime.0.lock().unwrap() += Duration::from_secs(3);
        let (later, later_wall) = clock.now_and_wall();
        assert_eq!(later - now, Duration::from_secs(3));
        assert_eq!(
            later_wall.duration_since(wall).unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!((later, later_wall), (clock.now(), clock.wall()));
    }
}
