//! Waits on async-std. async-std has no paused clock, so the backend's own timers are measured
//! in real time against the loopback fault server, with short waits: a timer never fires early,
//! so lower bounds are exact, and upper bounds are generous enough for a loaded machine.
//!
//! Virtual time (the core's `ManualClock` and `InstantSleeper`) cannot drive a real socket:
//! the instant sleeper would end every attempt's deadline at its first poll. It is used where
//! it means something here: the correlation scope of this crate around a whole virtual
//! timeline, retries and backoff included, on an async-std task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use egress_core::retry::{Backoff, JitterMode, RetryPolicy};
use egress_core::test_util::{ScriptedTransport, step};
use egress_core::{Client, Config, CorrelationId, Error};
use egress_tests::server::{FaultServer, Reply};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Slack for a loaded 2-core machine: a wait may end this much later than asked, never earlier.
const LATE: Duration = Duration::from_millis(750);

fn client(server: &FaultServer, backoff: Backoff) -> Client {
    let config = Config::default()
        .with_base_url(server.url(""))
        .with_retry(RetryPolicy::standard().with_backoff(backoff));
    egress_async_std::client(config).unwrap()
}

fn gaps(server: &FaultServer) -> Vec<Duration> {
    let seen = server.requests();
    seen.windows(2).map(|w| w[1].at - w[0].at).collect()
}

fn within(actual: Duration, expected: Duration) -> bool {
    // The server stamps a request when it has read it whole, so a gap can come out a little
    // shorter than the wait between two sends; allow 5 ms for that.
    actual + ms(5) >= expected && actual <= expected + LATE
}

#[async_std::test]
async fn backoff_without_jitter_waits_100ms_then_200ms() {
    let server = FaultServer::start(FaultServer::script([
        Reply::status(503),
        Reply::status(503),
        Reply::json(200, "{}"),
    ]));
    let backoff = Backoff::default().with_jitter(JitterMode::None);
    let response = client(&server, backoff).get("/x").send().await.unwrap();
    assert_eq!(response.attempts(), 3);
    let gaps = gaps(&server);
    assert!(within(gaps[0], ms(100)), "{gaps:?}");
    assert!(within(gaps[1], ms(200)), "{gaps:?}");
    assert!(response.elapsed() >= ms(300), "{:?}", response.elapsed());
}

#[async_std::test]
async fn retry_after_in_seconds_is_honoured() {
    let server = FaultServer::start(FaultServer::script([
        Reply::status(429).header("retry-after", "1"),
        Reply::json(200, "{}"),
    ]));
    let response = client(&server, Backoff::default())
        .get("/x")
        .send()
        .await
        .unwrap();
    let gaps = gaps(&server);
    assert!(within(gaps[0], Duration::from_secs(1)), "{gaps:?}");
    assert!(response.elapsed() >= Duration::from_secs(1));
}

#[async_std::test]
async fn a_retry_after_beyond_the_deadline_fails_at_once_with_rate_limited() {
    let server = FaultServer::start(FaultServer::always(
        Reply::status(429).header("retry-after", "25"),
    ));
    let started = Instant::now();
    let error = client(&server, Backoff::default())
        .get("/x")
        .deadline(Duration::from_secs(20))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
    assert!(started.elapsed() < LATE, "no wait: {:?}", started.elapsed());
    assert_eq!(server.requests().len(), 1);
}

#[async_std::test]
async fn the_deadline_cuts_retries_short() {
    let server = FaultServer::start(FaultServer::always(Reply::status(503)));
    let backoff = Backoff::default()
        .with_jitter(JitterMode::None)
        .with_initial(ms(200));
    let config = Config::default()
        .with_base_url(server.url(""))
        .with_retry(
            RetryPolicy::standard()
                .with_max_attempts(5)
                .with_backoff(backoff),
        )
        .with_attempt_timeout(ms(250))
        .with_deadline(ms(500));
    let error = egress_async_std::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap_err();
    // Attempts at 0 ms and 200 ms; the next backoff (400 ms) would end at 600 ms, past the
    // 500 ms deadline, so the call ends with the second 503.
    assert_eq!(server.requests().len(), 2);
    assert_eq!(error.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    assert!(error.elapsed() >= ms(200) && error.elapsed() < ms(200) + LATE);
}

#[async_std::test]
async fn the_sleeper_ends_at_its_instant_and_not_before() {
    use egress_core::rt::Sleeper;
    let sleeper = egress_async_std::AsyncStdSleeper;
    let started = Instant::now();
    sleeper.sleep_until(started + ms(50)).await;
    let slept = started.elapsed();
    assert!(slept >= ms(50) && slept < ms(50) + LATE, "{slept:?}");
    // An instant already past ends at once.
    let again = Instant::now();
    sleeper.sleep_until(started).await;
    assert!(again.elapsed() < LATE);
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
