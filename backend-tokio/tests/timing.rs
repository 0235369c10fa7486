//! Waits measured in egress time: under `#[tokio::test(start_paused = true)]` the tokio clock is
//! virtual and the backend's clock reads it, so backoff and `Retry-After` waits are exact. The
//! fault server runs on the test's own runtime so that it shares the virtual clock.

use std::time::{Duration, SystemTime};

use egress_core::{Backoff, JitterMode, RetryPolicy};
use egress_core::{Client, Config, Error};
use egress_tests::server::{FaultServer, Reply};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn client(server: &FaultServer, jitter: JitterMode) -> Client {
    let backoff = Backoff::default().with_jitter(jitter);
    let config = Config::default()
        .with_base_url(server.url(""))
        .with_retry(RetryPolicy::standard().with_backoff(backoff));
    egress_tokio::client(config).unwrap()
}

fn gaps(server: &FaultServer) -> Vec<Duration> {
    let seen = server.requests();
    seen.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test(start_paused = true)]
async fn backoff_without_jitter_waits_exactly_100ms_then_200ms() {
    let server = FaultServer::spawn(FaultServer::script([
        Reply::status(503),
        Reply::status(503),
        Reply::json(200, "{}"),
    ]))
    .await;
    let response = client(&server, JitterMode::None)
        .get("/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.attempts(), 3);
    // initial 100 ms, doubling: 100 ms then 200 ms, and nothing else takes virtual time.
    assert_eq!(gaps(&server), [ms(100), ms(200)]);
    assert_eq!(response.elapsed(), ms(300));
}

#[tokio::test(start_paused = true)]
async fn full_jitter_waits_stay_within_the_exponential_bound() {
    let server = FaultServer::spawn(FaultServer::script([
        Reply::status(503),
        Reply::status(503),
        Reply::json(200, "{}"),
    ]))
    .await;
    client(&server, JitterMode::Full)
        .get("/x")
        .send()
        .await
        .unwrap();
    let gaps = gaps(&server);
    assert!(gaps[0] <= ms(100), "{gaps:?}");
    assert!(gaps[1] <= ms(200), "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_seconds_is_waited_exactly() {
    let server = FaultServer::spawn(FaultServer::script([
        Reply::status(429).header("retry-after", "2"),
        Reply::json(200, "{}"),
    ]))
    .await;
    let response = client(&server, JitterMode::Full)
        .get("/x")
        .send()
        .await
        .unwrap();
    assert_eq!(gaps(&server), [Duration::from_secs(2)]);
    assert_eq!(response.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_date_is_measured_from_the_response_date() {
    // The server's clock says 2015-10-21 07:28:00 and asks for a retry 3 s later; our own wall
    // clock (years later) plays no part.
    let server = FaultServer::spawn(FaultServer::script([
        Reply::status(503)
            .header("date", "Wed, 21 Oct 2015 07:28:00 GMT")
            .header("retry-after", "Wed, 21 Oct 2015 07:28:03 GMT"),
        Reply::json(200, "{}"),
    ]))
    .await;
    client(&server, JitterMode::Full)
        .get("/x")
        .send()
        .await
        .unwrap();
    assert_eq!(gaps(&server), [Duration::from_secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_deadline_fails_at_once_with_rate_limited() {
    let server = FaultServer::spawn(FaultServer::always(
        Reply::status(429).header("retry-after", "25"),
    ))
    .await;
    let started = tokio::time::Instant::now();
    let wall_before = SystemTime::now();
    let error = client(&server, JitterMode::Full)
        .get("/x")
        .deadline(Duration::from_secs(20))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
    assert_eq!(
        tokio::time::Instant::now() - started,
        Duration::ZERO,
        "no virtual time passed"
    );
    let retry_at = error.retry_at().unwrap();
    let ahead = retry_at.duration_since(wall_before).unwrap();
    assert!(
        ahead >= Duration::from_secs(25) && ahead < Duration::from_secs(26),
        "{ahead:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_retries_short() {
    let server = FaultServer::spawn(FaultServer::always(Reply::status(503))).await;
    let backoff = Backoff::default()
        .with_jitter(JitterMode::None)
        .with_initial(Duration::from_secs(4));
    let config = Config::default()
        .with_base_url(server.url(""))
        .with_retry(
            RetryPolicy::standard()
                .with_max_attempts(5)
                .with_backoff(backoff),
        )
        .with_attempt_timeout(Duration::from_secs(5))
        .with_deadline(Duration::from_secs(10));
    let error = egress_tokio::client(config)
        .unwrap()
        .get("/x")
        .send()
        .await
        .unwrap_err();
    // Attempts at 0 s and 4 s; the next backoff (8 s) would end at 12 s, past the 10 s deadline.
    assert_eq!(gaps(&server), [Duration::from_secs(4)]);
    assert_eq!(error.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(error.elapsed(), Duration::from_secs(4));
}
