//! Scenario tests of one `Exchange`, driven by hand through `test_util::Scenario` in virtual time:
//! every retry decision is asserted as an exact timeline.

use std::time::{Duration, SystemTime};

use egress_core::http::Method;
use egress_core::test_util::{Run, Scenario, Step, WALL_EPOCH_SECS, fail, hang, step};
use egress_core::{Backoff, BudgetConfig, JitterMode, RetryPolicy};
use egress_core::{
    Config, CorrelationId, Error, IdempotencyKey, KeyChoice, Policy, Request, StopReason,
    TimeoutKind, TransportErrorKind, WaitReason,
};

const URL: &str = "https://api.example.com/entities/7";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The default configuration, but with un-jittered backoff: 100 ms, 200 ms, 400 ms ...
fn no_jitter() -> Config {
    let backoff = Backoff::default().with_jitter(JitterMode::None);
    Config::default().with_retry(RetryPolicy::standard().with_backoff(backoff))
}

fn policy(config: Config) -> Policy {
    config.build().expect("test config is valid")
}

fn get() -> Request {
    Request::new(Method::GET, URL).unwrap()
}

fn post() -> Request {
    Request::new(Method::POST, URL)
        .unwrap()
        .with_body(r#"{"amount":42}"#)
}

fn run(request: Request, config: Config, steps: impl IntoIterator<Item = Step>) -> Run {
    Scenario::new(request, &policy(config)).steps(steps).run()
}

/// The wall-clock time of a scenario's clock `after` its start.
fn wall(after: Duration) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS) + after
}

fn error_of(run: &Run) -> &Error {
    match &run.result {
        Ok(response) => panic!("expected an error, got {response:?}\n{run}"),
        Err(error) => error,
    }
}

fn header_values<'a>(run: &'a Run, name: &str) -> Vec<&'a str> {
    run.requests
        .iter()
        .map(|r| r.header(name).unwrap_or_else(|| panic!("{name} missing")))
        .collect()
}

#[track_caller]
fn assert_display_mentions(error: &Error, parts: &[&str]) {
    let text = error.to_string();
    for part in parts {
        assert!(text.contains(part), "{text:?} does not mention {part:?}");
    }
}

#[test]
fn a_get_that_succeeds_at_once_makes_one_attempt() {
    let run = run(get(), no_jitter(), [step(200).json(r#"{"id":"7"}"#)]);
    run.assert_timeline(&["0ms send #1", "0ms #1 -> 200", "0ms done ok 200 after 1"]);
    let response = run.result.as_ref().unwrap();
    assert_eq!(response.body().as_ref(), br#"{"id":"7"}"#);
    assert_eq!(response.elapsed(), Duration::ZERO);
    assert!(run.waits.is_empty());
}

#[test]
fn a_get_is_retried_after_two_503s_with_doubling_backoff() {
    // No jitter: retry 1 waits 100 ms * 2^0 = 100 ms, retry 2 waits 100 ms * 2^1 = 200 ms;
    // the third attempt goes out at 0 + 100 + 200 = 300 ms.
    let run = run(get(), no_jitter(), [step(503), step(503), step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 503",
        "0ms wait 100ms backoff",
        "100ms send #2",
        "100ms #2 -> 503",
        "100ms wait 200ms backoff",
        "300ms send #3",
        "300ms #3 -> 200",
        "300ms done ok 200 after 3",
    ]);
    assert_eq!(
        run.waits,
        [
            (ms(100), WaitReason::Backoff { retry: 1 }),
            (ms(200), WaitReason::Backoff { retry: 2 })
        ]
    );
    assert_eq!(run.result.as_ref().unwrap().elapsed(), ms(300));
}

#[test]
fn a_404_is_never_retried() {
    let run = run(get(), no_jitter(), [step(404), step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 404",
        "0ms done err status after 1",
    ]);
    let error = error_of(&run);
    assert!(matches!(error, Error::Status { .. }));
    assert_eq!(error.status().map(|s| s.as_u16()), Some(404));
    assert_eq!(error.stop_reason(), Some(StopReason::NotRetryable));
    assert_eq!(error.attempts(), 1);
    assert!(!error.is_retryable());
    assert!(error.may_have_been_sent());
    assert!(!error.is_timeout());
    assert_display_mentions(error, &["404", "after 1 attempt"]);
}

#[test]
fn a_post_is_not_resent_after_a_reset() {
    let reset = fail(TransportErrorKind::ClosedBeforeResponse);
    let run = run(post(), no_jitter(), [reset, step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> closed_before_response",
        "0ms done err closed_before_response after 1",
    ]);
    let error = error_of(&run);
    let Error::Transport { source, .. } = error else {
        panic!("expected a transport error, got {error:?}");
    };
    assert_eq!(source.kind(), TransportErrorKind::ClosedBeforeResponse);
    assert_eq!(error.stop_reason(), Some(StopReason::NotIdempotent));
    assert!(error.may_have_been_sent());
    assert!(error.is_retryable(), "a reset is transient in itself");
    assert!(!error.is_timeout());
    assert_eq!(error.status(), None);
    assert_display_mentions(error, &["closed before the response", "after 1 attempt"]);
}

#[test]
fn a_post_is_resent_after_a_connect_refusal() {
    // A refused connection never reached the server, so even a POST goes again after 100 ms.
    let refused = fail(TransportErrorKind::ConnectRefused);
    let run = run(post(), no_jitter(), [refused, step(201)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> connect_refused",
        "0ms wait 100ms backoff",
        "100ms send #2",
        "100ms #2 -> 201",
        "100ms done ok 201 after 2",
    ]);
    assert_eq!(run.requests[1].method, Method::POST);
    assert_eq!(run.requests[1].body, run.requests[0].body);
}

#[test]
fn a_refused_connection_that_is_final_reports_the_request_as_never_sent() {
    let request = post().with_max_attempts(1);
    let run = run(
        request,
        no_jitter(),
        [fail(TransportErrorKind::ConnectRefused)],
    );
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> connect_refused",
        "0ms done err connect_refused after 1",
    ]);
    let error = error_of(&run);
    assert!(!error.may_have_been_sent());
    assert!(error.is_retryable());
    assert_eq!(error.stop_reason(), Some(StopReason::AttemptsExhausted));
    assert_display_mentions(error, &["connection refused"]);
}

#[test]
fn a_post_with_an_idempotency_key_is_resent_after_a_reset_with_the_same_key() {
    let key = IdempotencyKey::new("order-42").unwrap();
    let request = post().with_idempotency_key(KeyChoice::Given(key));
    let reset = fail(TransportErrorKind::ClosedBeforeResponse);
    let run = run(request, no_jitter(), [reset, step(201)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> closed_before_response",
        "0ms wait 100ms backoff",
        "100ms send #2",
        "100ms #2 -> 201",
        "100ms done ok 201 after 2",
    ]);
    assert_eq!(
        header_values(&run, "idempotency-key"),
        ["order-42", "order-42"]
    );
}

#[test]
fn a_minted_idempotency_key_is_the_same_on_every_attempt() {
    let request = post().with_idempotency_key(KeyChoice::Mint);
    let reset = || fail(TransportErrorKind::ClosedBeforeResponse);
    let run = run(request, no_jitter(), [reset(), reset(), step(201)]);
    let keys = header_values(&run, "idempotency-key");
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    // A minted key is a UUID v4: 8-4-4-4-12 hex digits.
    assert_eq!(keys[0].len(), 36);
    assert!(run.result.is_ok(), "{run}");
}

#[test]
fn a_429_with_retry_after_seconds_waits_exactly_the_hint() {
    // Retry-After: 2 -> the second attempt goes out at 0 + 2000 ms, not after the 100 ms backoff.
    let throttled = step(429).header("retry-after", "2");
    let run = run(get(), no_jitter(), [throttled, step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 429",
        "0ms wait 2000ms retry_after",
        "2000ms send #2",
        "2000ms #2 -> 200",
        "2000ms done ok 200 after 2",
    ]);
    assert_eq!(
        run.waits,
        [(ms(2_000), WaitReason::RetryAfter { retry: 1 })]
    );
}

#[test]
fn a_throttled_post_is_resent_after_the_retry_after_wait() {
    // 429 means the server did not process the request, so a POST goes again too.
    let throttled = step(429).header("retry-after", "1");
    let run = run(post(), no_jitter(), [throttled, step(201)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 429",
        "0ms wait 1000ms retry_after",
        "1000ms send #2",
        "1000ms #2 -> 201",
        "1000ms done ok 201 after 2",
    ]);
}

#[test]
fn a_503_with_retry_after_is_throttling_and_resends_a_post() {
    let throttled = step(503).header("retry-after", "1");
    let run = run(post(), no_jitter(), [throttled, step(201)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 503",
        "0ms wait 1000ms retry_after",
        "1000ms send #2",
        "1000ms #2 -> 201",
        "1000ms done ok 201 after 2",
    ]);
}

#[test]
fn a_retry_after_date_is_measured_from_the_response_date_header() {
    // The server's clock is 100 s behind ours: Date = epoch - 100 s, Retry-After = Date + 3 s.
    // Measured from Date the wait is 3 s; measured from our wall clock the date would already be
    // 97 s in the past, which would mean no wait at all.
    let date = wall(Duration::ZERO) - Duration::from_secs(100);
    let retry_at = date + Duration::from_secs(3);
    let throttled = step(429)
        .header("date", &httpdate::fmt_http_date(date))
        .header("retry-after", &httpdate::fmt_http_date(retry_at));
    let run = run(get(), no_jitter(), [throttled, step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 429",
        "0ms wait 3000ms retry_after",
        "3000ms send #2",
        "3000ms #2 -> 200",
        "3000ms done ok 200 after 2",
    ]);
}

#[test]
fn a_retry_after_date_without_a_date_header_is_measured_from_the_wall_clock() {
    // Retry-After = wall epoch + 5 s, the response arrives at the wall epoch: wait 5 s.
    let throttled = step(429).header("retry-after", &httpdate::fmt_http_date(wall(ms(5_000))));
    let run = run(get(), no_jitter(), [throttled, step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 429",
        "0ms wait 5000ms retry_after",
        "5000ms send #2",
        "5000ms #2 -> 200",
        "5000ms done ok 200 after 2",
    ]);
}

#[test]
fn a_retry_after_beyond_the_cap_ends_at_once_with_rate_limited() {
    // Retry-After: 60 is past the 30 s cap: no wait, RateLimited with retry_at = wall + 60 s.
    let throttled = step(429).header("retry-after", "60");
    let run = run(get(), no_jitter(), [throttled, step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 429",
        "0ms done err rate_limited after 1",
    ]);
    assert!(run.waits.is_empty());
    let error = error_of(&run);
    let Error::RateLimited { retry_at, last, .. } = error else {
        panic!("expected RateLimited, got {error:?}");
    };
    assert_eq!(*retry_at, wall(ms(60_000)));
    assert_eq!(error.retry_at(), Some(wall(ms(60_000))));
    let last = last.as_ref().expect("the throttled attempt's failure");
    assert_eq!(last.status().map(|s| s.as_u16()), Some(429));
    assert_eq!(error.status().map(|s| s.as_u16()), Some(429));
    assert_eq!(error.stop_reason(), Some(StopReason::RateLimited));
    assert!(error.is_retryable());
    assert!(error.may_have_been_sent());
    assert!(!error.is_timeout());
    // 2026-01-01T00:00:00Z + 60 s.
    assert_display_mentions(error, &["rate limited", "Thu, 01 Jan 2026 00:01:00 GMT"]);
}

#[test]
fn a_retry_after_past_the_deadline_ends_at_once_with_rate_limited() {
    // Deadline 5 s, Retry-After: 10 (under the 30 s cap): 0 + 10 s is past the deadline.
    let config = no_jitter()
        .with_attempt_timeout(ms(5_000))
        .with_deadline(ms(5_000));
    let throttled = step(429).header("retry-after", "10");
    let run = run(get(), config, [throttled, step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 429",
        "0ms done err rate_limited after 1",
    ]);
    let error = error_of(&run);
    assert_eq!(error.retry_at(), Some(wall(ms(10_000))));
    assert_eq!(error.stop_reason(), Some(StopReason::RateLimited));
    assert_eq!(error.attempts(), 1);
}

#[test]
fn a_rate_limited_error_after_a_wait_dates_retry_at_from_the_response() {
    // 503 at 0 ms, backoff 100 ms, then 429 at 100 ms with Retry-After: 45 (past the cap):
    // retry_at = wall epoch + 100 ms + 45 s.
    let throttled = step(429).header("retry-after", "45");
    let run = run(get(), no_jitter(), [step(503), throttled]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 503",
        "0ms wait 100ms backoff",
        "100ms send #2",
        "100ms #2 -> 429",
        "100ms done err rate_limited after 2",
    ]);
    let error = error_of(&run);
    assert_eq!(error.retry_at(), Some(wall(ms(45_100))));
    assert_eq!(error.elapsed(), ms(100));
}

#[test]
fn a_garbage_retry_after_falls_back_to_backoff() {
    let throttled = step(429).header("retry-after", "soon");
    let run = run(get(), no_jitter(), [throttled, step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 429",
        "0ms wait 100ms backoff",
        "100ms send #2",
        "100ms #2 -> 200",
        "100ms done ok 200 after 2",
    ]);
}

#[test]
fn the_deadline_cuts_a_backoff_short() {
    // Deadline 1 s, attempt timeout 1 s, backoff 800 ms doubling, no jitter.
    // Retry 1 waits 800 ms (0.8 s < 1 s); retry 2 would wait 1600 ms, to 2.4 s, past the
    // deadline, so the call ends at 800 ms with the last 503 and no wait is scheduled.
    let backoff = Backoff::default()
        .with_jitter(JitterMode::None)
        .with_initial(ms(800));
    let config = Config::default()
        .with_retry(RetryPolicy::standard().with_backoff(backoff))
        .with_attempt_timeout(ms(1_000))
        .with_deadline(ms(1_000));
    let run = run(get(), config, [step(503), step(503), step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 503",
        "0ms wait 800ms backoff",
        "800ms send #2",
        "800ms #2 -> 503",
        "800ms done err status after 2",
    ]);
    let error = error_of(&run);
    assert_eq!(error.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(error.stop_reason(), Some(StopReason::Deadline));
    assert_eq!(error.elapsed(), ms(800));
    assert!(error.is_retryable());
}

#[test]
fn a_hanging_attempt_hits_the_attempt_timeout_and_a_get_is_retried() {
    // Attempt timeout 1 s: attempt 1 expires at 1000 ms, backoff 100 ms, attempt 2 at 1100 ms.
    let request = get().with_attempt_timeout(ms(1_000));
    let run = run(request, no_jitter(), [hang(), step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "1000ms #1 -> deadline",
        "1000ms wait 100ms backoff",
        "1100ms send #2",
        "1100ms #2 -> 200",
        "1100ms done ok 200 after 2",
    ]);
}

#[test]
fn a_hanging_last_attempt_ends_with_an_attempt_timeout() {
    // Two attempts of 1 s each with a 100 ms backoff between them: 1000 + 100 + 1000 = 2100 ms.
    let request = get().with_attempt_timeout(ms(1_000)).with_max_attempts(2);
    let run = run(request, no_jitter(), [hang(), hang()]);
    run.assert_timeline(&[
        "0ms send #1",
        "1000ms #1 -> deadline",
        "1000ms wait 100ms backoff",
        "1100ms send #2",
        "2100ms #2 -> deadline",
        "2100ms done err attempt_timeout after 2",
    ]);
    let error = error_of(&run);
    assert!(matches!(
        error,
        Error::Timeout {
            kind: TimeoutKind::Attempt,
            ..
        }
    ));
    assert!(error.is_timeout());
    assert!(error.is_retryable());
    assert!(error.may_have_been_sent());
    assert_eq!(error.stop_reason(), Some(StopReason::AttemptsExhausted));
    assert_eq!(error.elapsed(), ms(2_100));
    assert_display_mentions(error, &["timed out", "attempt_timeout", "after 2 attempt"]);
}

#[test]
fn a_hanging_post_is_not_resent_after_its_attempt_timeout() {
    let request = post().with_attempt_timeout(ms(1_000));
    let run = run(request, no_jitter(), [hang(), step(201)]);
    run.assert_timeline(&[
        "0ms send #1",
        "1000ms #1 -> deadline",
        "1000ms done err attempt_timeout after 1",
    ]);
    assert_eq!(
        error_of(&run).stop_reason(),
        Some(StopReason::NotIdempotent)
    );
}

#[test]
fn an_attempt_cut_by_the_whole_call_deadline_ends_with_a_deadline_timeout() {
    // Deadline 1 s, attempt timeout 10 s (default): the attempt's own limit is the deadline.
    let request = get().with_deadline(ms(1_000));
    let run = run(request, no_jitter(), [hang(), step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "1000ms #1 -> deadline",
        "1000ms done err deadline after 1",
    ]);
    let error = error_of(&run);
    assert!(matches!(
        error,
        Error::Timeout {
            kind: TimeoutKind::Deadline,
            ..
        }
    ));
    assert!(error.is_timeout());
    assert!(error.may_have_been_sent());
}

#[test]
fn a_response_slower_than_the_read_timeout_gives_a_read_timeout() {
    // Read timeout 2 s, the response would come after 5 s: the read fails at 2000 ms.
    let config = no_jitter().with_read_timeout(ms(2_000));
    let request = get().with_max_attempts(1);
    let run = run(request, config, [step(200).after(ms(5_000))]);
    run.assert_timeline(&[
        "0ms send #1",
        "2000ms #1 -> read_timeout",
        "2000ms done err read_timeout after 1",
    ]);
    let error = error_of(&run);
    let Error::Timeout { kind, source, .. } = error else {
        panic!("expected a timeout, got {error:?}");
    };
    assert_eq!(*kind, TimeoutKind::Read);
    assert_eq!(
        source.as_ref().map(|s| s.kind()),
        Some(TransportErrorKind::ReadTimeout)
    );
    assert!(error.is_timeout());
    assert!(error.may_have_been_sent());
    assert_eq!(error.stop_reason(), Some(StopReason::AttemptsExhausted));
}

#[test]
fn a_response_slower_than_the_read_timeout_is_retried_for_a_get() {
    // Read timeout 2 s: attempt 1 fails at 2000 ms, backoff 100 ms, attempt 2 at 2100 ms
    // answers after 500 ms (under the read timeout), at 2600 ms.
    let config = no_jitter().with_read_timeout(ms(2_000));
    let steps = [step(200).after(ms(5_000)), step(200).after(ms(500))];
    let run = run(get(), config, steps);
    run.assert_timeline(&[
        "0ms send #1",
        "2000ms #1 -> read_timeout",
        "2000ms wait 100ms backoff",
        "2100ms send #2",
        "2600ms #2 -> 200",
        "2600ms done ok 200 after 2",
    ]);
}

#[test]
fn the_budget_refuses_retries_in_a_storm() {
    // Floor 1 retry/s over a 10 s window and no load share: 1 * 10 = 10 retries in the window.
    // Ten calls spend them (each 503 then 200); the eleventh call's retry is refused.
    let budget = BudgetConfig::default()
        .with_min_retries_per_sec(1)
        .with_window(ms(10_000))
        .with_retry_ratio(0.0);
    let shared = policy(no_jitter().with_budget(budget));
    for call in 1..=10 {
        let run = Scenario::new(get(), &shared)
            .steps([step(503), step(200)])
            .run();
        assert!(run.result.is_ok(), "call {call}:\n{run}");
        assert_eq!(run.requests.len(), 2, "call {call}");
    }
    let run = Scenario::new(get(), &shared)
        .steps([step(503), step(200)])
        .run();
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 503",
        "0ms done err retry_budget_exhausted after 1",
    ]);
    let error = error_of(&run);
    let Error::RetryBudgetExhausted { last, .. } = error else {
        panic!("expected RetryBudgetExhausted, got {error:?}");
    };
    assert_eq!(last.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(error.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(error.stop_reason(), Some(StopReason::Budget));
    assert!(error.is_retryable());
    assert!(error.may_have_been_sent());
    assert!(!error.is_timeout());
    assert_display_mentions(error, &["retry budget exhausted", "503"]);
}

#[test]
fn the_correlation_id_is_the_same_on_every_attempt_and_on_the_response() {
    let run = run(get(), no_jitter(), [step(503), step(503), step(200)]);
    let ids = header_values(&run, "x-correlation-id");
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let response = run.result.as_ref().unwrap();
    assert_eq!(response.correlation_id().as_str(), ids[0]);
}

#[test]
fn the_correlation_id_on_an_error_is_the_one_sent() {
    let run = run(get(), no_jitter(), [step(503), step(503), step(503)]);
    let ids = header_values(&run, "x-correlation-id");
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let error = error_of(&run);
    assert_eq!(error.stop_reason(), Some(StopReason::AttemptsExhausted));
    assert_eq!(error.correlation_id().map(|c| c.as_str()), Some(ids[0]));
}

#[test]
fn a_caller_supplied_correlation_id_is_used() {
    let id = CorrelationId::new("checkout-7f3a").unwrap();
    let request = get().with_correlation_id(id.clone());
    let run = run(request, no_jitter(), [step(503), step(200)]);
    assert_eq!(
        header_values(&run, "x-correlation-id"),
        ["checkout-7f3a", "checkout-7f3a"]
    );
    assert_eq!(run.result.as_ref().unwrap().correlation_id(), &id);
}

#[test]
fn a_body_larger_than_the_limit_gives_body_too_large_and_is_not_retried() {
    // Limit 16 bytes; the body is 17.
    let config = no_jitter().with_max_response_body(16);
    let run = run(get(), config, [step(200).body(vec![b'x'; 17]), step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> body_too_large",
        "0ms done err body_too_large after 1",
    ]);
    let error = error_of(&run);
    assert!(matches!(error, Error::BodyTooLarge { limit: 16, .. }));
    assert_eq!(error.stop_reason(), Some(StopReason::NotRetryable));
    assert!(!error.is_retryable());
    assert!(error.may_have_been_sent());
    assert!(!error.is_timeout());
    assert_eq!(error.status(), None);
    assert_display_mentions(error, &["16-byte limit"]);
}

#[test]
fn a_body_exactly_at_the_limit_is_accepted() {
    let config = no_jitter().with_max_response_body(16);
    let run = run(get(), config, [step(200).body(vec![b'x'; 16])]);
    run.assert_timeline(&["0ms send #1", "0ms #1 -> 200", "0ms done ok 200 after 1"]);
}

#[test]
fn an_invalid_override_ends_the_exchange_before_anything_is_sent() {
    let run = run(get().with_max_attempts(0), no_jitter(), [step(200)]);
    run.assert_timeline(&["0ms done err invalid_request after 0"]);
    assert!(run.requests.is_empty());
    let error = error_of(&run);
    assert!(matches!(error, Error::InvalidRequest { .. }));
    assert!(!error.may_have_been_sent());
    assert!(!error.is_retryable());
    assert!(!error.is_timeout());
    assert_eq!(error.attempts(), 0);
    assert_display_mentions(error, &["invalid request", "max_attempts"]);
}

#[test]
fn a_bad_header_is_rejected_when_the_request_is_built() {
    let error = get().with_header("bad header", "v").unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }));
    assert!(!error.may_have_been_sent());
    assert_eq!(error.attempts(), 0);
    let error = get().with_header("x-ok", "line\nbreak").unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }));
    assert_display_mentions(&error, &["invalid request", "x-ok"]);
}

#[test]
fn a_max_attempts_override_of_one_makes_one_attempt() {
    let run = run(
        get().with_max_attempts(1),
        no_jitter(),
        [step(503), step(200)],
    );
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 503",
        "0ms done err status after 1",
    ]);
    let error = error_of(&run);
    assert_eq!(error.stop_reason(), Some(StopReason::AttemptsExhausted));
    assert!(error.is_retryable(), "a 503 is transient in itself");
}

#[test]
fn the_same_seed_gives_the_same_jittered_timeline() {
    // Full jitter: each wait is somewhere in [0, 100 ms] and [0, 200 ms], but the seed fixes it.
    let p = policy(Config::default());
    let script = || [step(503), step(503), step(200)];
    let a = Scenario::new(get(), &p).seed(7).steps(script()).run();
    let b = Scenario::new(get(), &p).seed(7).steps(script()).run();
    assert_eq!(a.timeline, b.timeline);
    assert!(a.waits[0].0 <= ms(100) && a.waits[1].0 <= ms(200), "{a}");
}

#[test]
fn a_deadline_too_large_to_represent_means_no_deadline() {
    // Duration::MAX is the usual way to say "no limit"; `now + Duration::MAX` overflows `Instant`.
    let request = get().with_deadline(Duration::MAX);
    let run = run(request, no_jitter(), [step(200)]);
    run.assert_timeline(&["0ms send #1", "0ms #1 -> 200", "0ms done ok 200 after 1"]);
}

#[test]
fn a_501_is_neither_retried_nor_reported_as_retryable() {
    // 501 Not Implemented is not in the retryable statuses (408, 500, 502, 503, 504).
    let run = run(get(), no_jitter(), [step(501), step(200)]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> 501",
        "0ms done err status after 1",
    ]);
    let error = error_of(&run);
    assert_eq!(error.stop_reason(), Some(StopReason::NotRetryable));
    assert!(
        !error.is_retryable(),
        "the exchange itself refused to retry it"
    );
}

#[test]
fn a_post_refused_on_every_attempt_reports_the_request_as_never_sent() {
    // Three connection refusals: the server never saw the POST, so it is safe to submit again.
    let refused = || fail(TransportErrorKind::ConnectRefused);
    let run = run(post(), no_jitter(), [refused(), refused(), refused()]);
    run.assert_timeline(&[
        "0ms send #1",
        "0ms #1 -> connect_refused",
        "0ms wait 100ms backoff",
        "100ms send #2",
        "100ms #2 -> connect_refused",
        "100ms wait 200ms backoff",
        "300ms send #3",
        "300ms #3 -> connect_refused",
        "300ms done err connect_refused after 3",
    ]);
    let error = error_of(&run);
    assert_eq!(error.stop_reason(), Some(StopReason::AttemptsExhausted));
    assert!(!error.may_have_been_sent());
}

#[test]
fn a_transport_timeout_at_the_attempt_deadline_is_reported_as_the_attempt_timeout() {
    use egress_core::{Exchange, Input, Output, TransportError, TransportErrorKind};
    let policy = Config::default()
        .with_attempt_timeout(Duration::from_secs(1))
        .with_retry(RetryPolicy::disabled())
        .build()
        .unwrap();
    let request = egress_core::Request::new(Method::GET, "https://api.example.com/x").unwrap();
    let start = std::time::Instant::now();
    let mut exchange = Exchange::new(request, &policy, start, 0);
    let Output::Send(attempt) = exchange.poll_output(start) else {
        panic!("the first output sends")
    };
    // The transport's read limit is capped by the attempt deadline, and fires with it.
    assert_eq!(attempt.read_timeout, Duration::from_secs(1));
    let at = start + attempt.read_timeout;
    let error = TransportError::from_kind(TransportErrorKind::ReadTimeout);
    exchange.handle_input(Input::Failed {
        attempt: 1,
        at,
        error,
    });
    let Output::Done(Err(error)) = exchange.poll_output(at) else {
        panic!("the exchange ends")
    };
    assert!(
        matches!(
            error,
            Error::Timeout {
                kind: TimeoutKind::Attempt,
                ..
            }
        ),
        "{error:?}"
    );
}
