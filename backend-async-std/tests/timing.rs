//! Time on async-std. async-std has no paused clock: its timers are measured in real time by
//! the unit tests of `src/rt.rs`. Backoff, `Retry-After` and deadline timelines against the
//! loopback server are rows of the parity suite (`egress-tests`), run on both backends.
//!
//! Virtual time (the core's `ManualClock` and `InstantSleeper`) cannot drive a real socket:
//! the instant sleeper would end every attempt's deadline at its first poll. It is used where
//! it means something here: the correlation scope of this crate around a whole virtual
//! timeline, retries and backoff included, on an async-std task.

use std::sync::Arc;
use std::time::Duration;

use egress_core::test_util::{ScriptedTransport, step};
use egress_core::{Backoff, JitterMode, RetryPolicy};
use egress_core::{Client, Config, CorrelationId};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_ambient_correlation_id_holds_across_a_virtual_backoff_on_an_async_std_task() {
    let transport = ScriptedTransport::new();
    transport.push(step(503)).push(step(503)).push(step(200));
    let runtime = transport
        .runtime()
        .with_ambient_correlation(Arc::new(egress_async_std::current_correlation_id));
    let backoff = Backoff::default().with_jitter(JitterMode::None);
    let config = Config::default()
        .with_base_url("https://api.example.com")
        .with_retry(RetryPolicy::standard().with_backoff(backoff));
    let client = Client::new(config, runtime).unwrap();
    let id = CorrelationId::new("inbound-virtual-1").unwrap();
    let response = async_std::task::block_on(async_std::task::spawn(
        egress_async_std::with_correlation_id(
            id.clone(),
            async move { client.get("/x").send().await },
        ),
    ))
    .unwrap();
    assert_eq!(response.attempts(), 3);
    // Virtual time: exactly the two backoffs, 100 ms then 200 ms.
    assert_eq!(response.elapsed(), ms(300));
    let seen = transport.requests();
    let at: Vec<_> = seen.iter().map(|s| s.at).collect();
    assert_eq!(at, [ms(0), ms(100), ms(300)]);
    assert!(
        seen.iter()
            .all(|s| s.header("x-correlation-id") == Some("inbound-virtual-1"))
    );
}
