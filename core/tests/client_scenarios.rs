//! Scenario tests of the base `Client` over a `ScriptedTransport` in virtual time: the result,
//! every request the transport saw (count, headers, virtual arrival time) and the elapsed time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use egress_core::http::Method;
use egress_core::test_util::{
    ScriptedTransport, SeenRequest, Step, WALL_EPOCH_SECS, block_on, fail, hang, step,
};
use egress_core::{Backoff, BudgetConfig, JitterMode, RetryPolicy};
use egress_core::{
    Client, Config, CorrelationId, Error, IdempotencyKey, Response, Runtime, StopReason,
    TimeoutKind, TransportErrorKind,
};
use secrecy::SecretString;

const BASE: &str = "https://api.example.com/v1";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The default configuration on [`BASE`], with un-jittered backoff: 100 ms, 200 ms, 400 ms ...
fn no_jitter() -> Config {
    let backoff = Backoff::default().with_jitter(JitterMode::None);
    Config::default()
        .with_base_url(BASE)
        .with_retry(RetryPolicy::standard().with_backoff(backoff))
}

/// The shipped virtual-time runtime of `transport`.
fn runtime(transport: &ScriptedTransport) -> Runtime {
    transport.runtime()
}

/// A scripted upstream and a client over it.
fn upstream(config: Config, steps: impl IntoIterator<Item = Step>) -> (ScriptedTransport, Client) {
    let transport = ScriptedTransport::new();
    for s in steps {
        transport.push(s);
    }
    let client = Client::new(config, runtime(&transport)).expect("test config is valid");
    (transport, client)
}

/// The wall-clock time of the transport's clock `after` its start.
fn wall(after: Duration) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS) + after
}

/// When each request reached the transport, in virtual time since the start.
fn arrivals(transport: &ScriptedTransport) -> Vec<Duration> {
    transport.requests().iter().map(|r| r.at).collect()
}

fn header_values(requests: &[SeenRequest], name: &str) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            r.header(name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .to_owned()
        })
        .collect()
}

#[track_caller]
fn ok(result: Result<Response, Error>) -> Response {
    result.unwrap_or_else(|e| panic!("expected a response, got {e:?}"))
}

#[track_caller]
fn err(result: Result<Response, Error>) -> Error {
    match result {
        Ok(response) => panic!("expected an error, got {response:?}"),
        Err(error) => error,
    }
}

#[track_caller]
fn assert_display_mentions(error: &Error, parts: &[&str]) {
    let text = error.to_string();
    for part in parts {
        assert!(text.contains(part), "{text:?} does not mention {part:?}");
    }
}

#[test]
fn a_get_that_succeeds_at_once_makes_one_request() {
    let (transport, client) = upstream(no_jitter(), [step(200).json(r#"{"id":"7"}"#)]);
    let response = ok(block_on(client.get("/entities/7").send()));
    assert_eq!(response.status(), 200);
    assert_eq!(response.attempts(), 1);
    assert_eq!(response.body().as_ref(), br#"{"id":"7"}"#);
    assert_eq!(response.headers()["content-type"], "application/json");
    let requests = transport.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, Method::GET);
    assert_eq!(
        requests[0].uri.to_string(),
        "https://api.example.com/v1/entities/7"
    );
    assert!(
        requests[0]
            .header("user-agent")
            .unwrap()
            .starts_with("egress/")
    );
    assert_eq!(requests[0].at, Duration::ZERO);
    assert_eq!(transport.clock().elapsed(), Duration::ZERO);
}

#[test]
fn every_attempt_to_a_plain_http_url_carries_one_host_header_unless_the_caller_gave_one() {
    let config = no_jitter().with_base_url("http://127.0.0.1:8080/v1");
    let (transport, client) = upstream(config, [step(503), step(200), step(200), step(200)]);
    ok(block_on(client.get("/entities/7").send()));
    let elsewhere = egress_core::Request::new(Method::GET, "http://other.example/x").unwrap();
    ok(block_on(client.send(elsewhere)));
    ok(block_on(
        client
            .get("/entities/7")
            .header("host", "given.example")
            .send(),
    ));
    let hosts: Vec<Vec<String>> = transport
        .requests()
        .iter()
        .map(|r| {
            r.headers
                .get_all("host")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        hosts,
        [
            vec!["127.0.0.1:8080".to_owned()],
            vec!["127.0.0.1:8080".to_owned()],
            vec!["other.example".to_owned()],
            vec!["given.example".to_owned()],
        ]
    );
}

#[test]
fn a_callers_own_user_agent_and_accept_encoding_are_sent_instead_of_egresss_once_each() {
    let (transport, client) = upstream(no_jitter(), [step(503), step(200)]);
    ok(block_on(
        client
            .get("/entities/7")
            .header("user-agent", "billing/4.2")
            .header("accept-encoding", "identity")
            .send(),
    ));
    for request in transport.requests() {
        for (name, value) in [
            ("user-agent", "billing/4.2"),
            ("accept-encoding", "identity"),
        ] {
            let sent: Vec<_> = request.headers.get_all(name).iter().collect();
            assert_eq!(sent, [value], "{name}");
        }
    }
}

#[test]
fn every_attempt_of_a_call_sends_the_same_headers_with_or_without_the_callers_own() {
    let config = no_jitter().with_base_url("http://127.0.0.1:8080/v1");
    let steps = [step(503), step(503), step(200), step(503), step(200)];
    let (transport, client) = upstream(config, steps);
    ok(block_on(client.get("/entities/7").send()));
    ok(block_on(
        client
            .post("/entities")
            .header("accept", "application/json")
            .header("x-tenant", "t-1")
            .header("x-tenant", "t-2")
            .with_new_idempotency_key()
            .send(),
    ));
    let requests = transport.requests();
    let sorted = |i: usize| {
        let mut all: Vec<(String, String)> = requests[i]
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        all.sort();
        all
    };
    // The plain GET: three attempts, the same headers each time.
    assert_eq!(sorted(0), sorted(1));
    assert_eq!(sorted(0), sorted(2));
    let names: Vec<String> = sorted(0).into_iter().map(|(n, _)| n).collect();
    // `accept-encoding`: these tests build every content coding (RFC 9110 12.5.3).
    assert_eq!(
        names,
        ["accept-encoding", "host", "user-agent", "x-correlation-id"]
    );
    // The POST with the caller's headers (one of them twice) and a minted key: both attempts
    // carry all of them.
    assert_eq!(sorted(3), sorted(4));
    let names: Vec<String> = sorted(3).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "accept",
            "accept-encoding",
            "host",
            "idempotency-key",
            "user-agent",
            "x-correlation-id",
            "x-tenant",
            "x-tenant"
        ]
    );
}

#[test]
fn a_get_is_retried_after_two_503s_in_virtual_time() {
    // No jitter: 100 ms then 200 ms of backoff, so the requests arrive at 0, 100 and 300 ms.
    let (transport, client) = upstream(no_jitter(), [step(503), step(503), step(200)]);
    let response = ok(block_on(client.get("/entities/7").send()));
    assert_eq!(response.attempts(), 3);
    assert_eq!(response.elapsed(), ms(300));
    assert_eq!(arrivals(&transport), [ms(0), ms(100), ms(300)]);
    let attempts: Vec<u32> = transport.requests().iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(transport.clock().elapsed(), ms(300));
}

#[test]
fn a_404_is_never_retried() {
    let (transport, client) = upstream(no_jitter(), [step(404).body("no such entity"), step(200)]);
    let error = err(block_on(client.get("/entities/7").send()));
    assert!(matches!(error, Error::Status { .. }));
    assert_eq!(error.status().map(|s| s.as_u16()), Some(404));
    assert_eq!(
        error.status_error().map(|s| s.body().as_ref()),
        Some(&b"no such entity"[..])
    );
    assert_eq!(error.stop_reason(), Some(StopReason::NotRetryable));
    assert!(!error.is_retryable());
    assert!(error.may_have_been_sent());
    assert!(!error.is_timeout());
    assert_display_mentions(&error, &["404", "after 1 attempt"]);
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(transport.remaining(), 1);
}

#[test]
fn a_post_is_not_resent_after_a_reset() {
    let reset = fail(TransportErrorKind::ClosedBeforeResponse);
    let (transport, client) = upstream(no_jitter(), [reset, step(201)]);
    let call = client
        .post("/payments")
        .json(&serde_json::json!({"amount": 42}));
    let error = err(block_on(call.send()));
    let Error::Transport { source, .. } = &error else {
        panic!("expected a transport error, got {error:?}");
    };
    assert_eq!(source.kind(), TransportErrorKind::ClosedBeforeResponse);
    assert!(error.may_have_been_sent());
    assert_eq!(error.stop_reason(), Some(StopReason::NotIdempotent));
    assert!(!error.is_timeout());
    assert_eq!(error.status(), None);
    assert_display_mentions(&error, &["closed before the response"]);
    let requests = transport.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body.as_ref(), br#"{"amount":42}"#);
    assert_eq!(transport.clock().elapsed(), Duration::ZERO);
}

#[test]
fn a_post_is_resent_after_a_connect_refusal() {
    // Refused at 0 ms (never sent), backoff 100 ms, sent again at 100 ms.
    let refused = fail(TransportErrorKind::ConnectRefused);
    let (transport, client) = upstream(no_jitter(), [refused, step(201)]);
    let response = ok(block_on(client.post("/payments").body("amount=42").send()));
    assert_eq!(response.status(), 201);
    assert_eq!(response.attempts(), 2);
    assert_eq!(arrivals(&transport), [ms(0), ms(100)]);
    let requests = transport.requests();
    assert!(requests.iter().all(|r| r.body.as_ref() == b"amount=42"));
}

#[test]
fn a_post_with_a_new_idempotency_key_is_resent_after_a_reset_with_the_same_key() {
    let reset = fail(TransportErrorKind::ClosedBeforeResponse);
    let (transport, client) = upstream(no_jitter(), [reset, step(201)]);
    let call = client.post("/payments").with_new_idempotency_key();
    let response = ok(block_on(call.send()));
    assert_eq!(response.attempts(), 2);
    let keys = header_values(&transport.requests(), "idempotency-key");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[0].len(), 36, "a minted key is a UUID: {keys:?}");
    assert_eq!(arrivals(&transport), [ms(0), ms(100)]);
}

#[test]
fn a_post_with_a_caller_idempotency_key_is_resent_after_a_reset_with_that_key() {
    let reset = fail(TransportErrorKind::ClosedBeforeResponse);
    let (transport, client) = upstream(no_jitter(), [reset, step(201)]);
    let key = IdempotencyKey::new("order-42").unwrap();
    let response = ok(block_on(
        client.post("/payments").idempotency_key(key).send(),
    ));
    assert_eq!(response.attempts(), 2);
    assert_eq!(
        header_values(&transport.requests(), "idempotency-key"),
        ["order-42", "order-42"]
    );
}

#[test]
fn a_post_with_an_idempotency_key_header_is_resent_after_a_reset() {
    // A key set as a plain header counts too, and is left as the caller wrote it.
    let reset = fail(TransportErrorKind::ClosedBeforeResponse);
    let (transport, client) = upstream(no_jitter(), [reset, step(201)]);
    let call = client
        .post("/payments")
        .header("Idempotency-Key", "order-43");
    let response = ok(block_on(call.send()));
    assert_eq!(response.attempts(), 2);
    assert_eq!(
        header_values(&transport.requests(), "idempotency-key"),
        ["order-43", "order-43"]
    );
}

#[test]
fn a_429_with_retry_after_2_waits_two_seconds() {
    // Retry-After: 2 -> the second request arrives 2 s after the first, not after 100 ms backoff.
    let throttled = step(429).header("retry-after", "2");
    let (transport, client) = upstream(no_jitter(), [throttled, step(200)]);
    let response = ok(block_on(client.get("/entities/7").send()));
    assert_eq!(response.attempts(), 2);
    assert_eq!(arrivals(&transport), [ms(0), ms(2_000)]);
    assert_eq!(response.elapsed(), ms(2_000));
}

#[test]
fn a_429_with_an_http_date_retry_after_waits_relative_to_the_response_date() {
    // The server's clock is 100 s behind ours: Date = epoch - 100 s, Retry-After = Date + 3 s.
    // Relative to Date the wait is 3 s; relative to our own wall clock it would be none.
    let date = wall(Duration::ZERO) - Duration::from_secs(100);
    let throttled = step(429)
        .header("date", &httpdate::fmt_http_date(date))
        .header(
            "retry-after",
            &httpdate::fmt_http_date(date + Duration::from_secs(3)),
        );
    let (transport, client) = upstream(no_jitter(), [throttled, step(200)]);
    let response = ok(block_on(client.get("/entities/7").send()));
    assert_eq!(response.attempts(), 2);
    assert_eq!(arrivals(&transport), [ms(0), ms(3_000)]);
    assert_eq!(transport.clock().elapsed(), ms(3_000));
}

#[test]
fn a_429_with_a_retry_after_past_the_deadline_ends_at_once_with_rate_limited() {
    // Deadline 5 s; the 429 arrives after 250 ms with Retry-After: 10 (under the 30 s cap, but
    // 0.25 + 10 s is past the deadline): no wait, retry_at = wall epoch + 250 ms + 10 s.
    let config = no_jitter()
        .with_attempt_timeout(ms(5_000))
        .with_deadline(ms(5_000));
    let throttled = step(429).header("retry-after", "10").after(ms(250));
    let (transport, client) = upstream(config, [throttled, step(200)]);
    let error = err(block_on(client.get("/entities/7").send()));
    assert!(matches!(error, Error::RateLimited { .. }));
    assert_eq!(error.retry_at(), Some(wall(ms(10_250))));
    assert_eq!(error.stop_reason(), Some(StopReason::RateLimited));
    assert_eq!(error.status().map(|s| s.as_u16()), Some(429));
    assert!(error.is_retryable());
    assert!(error.may_have_been_sent());
    assert!(!error.is_timeout());
    assert_display_mentions(&error, &["rate limited"]);
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(transport.clock().elapsed(), ms(250));
    assert_eq!(error.elapsed(), ms(250));
}

#[test]
fn a_429_with_a_retry_after_beyond_the_cap_ends_at_once_with_rate_limited() {
    // Cap lowered to 5 s: Retry-After: 6 is past the cap, though well inside the 30 s deadline.
    // No wait; retry_at = wall epoch + 6 s.
    let config = no_jitter().with_retry(
        RetryPolicy::standard()
            .with_backoff(Backoff::default().with_jitter(JitterMode::None))
            .with_retry_after_cap(ms(5_000)),
    );
    let throttled = step(429).header("retry-after", "6");
    let (transport, client) = upstream(config, [throttled, step(200)]);
    let error = err(block_on(client.get("/entities/7").send()));
    assert_eq!(error.retry_at(), Some(wall(ms(6_000))));
    assert_eq!(error.stop_reason(), Some(StopReason::RateLimited));
    assert_eq!(error.attempts(), 1);
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(transport.clock().elapsed(), Duration::ZERO);
}

#[test]
fn a_garbage_retry_after_falls_back_to_backoff() {
    let throttled = step(429).header("retry-after", "in a while");
    let (transport, client) = upstream(no_jitter(), [throttled, step(200)]);
    let response = ok(block_on(client.get("/entities/7").send()));
    assert_eq!(response.attempts(), 2);
    assert_eq!(arrivals(&transport), [ms(0), ms(100)]);
}

#[test]
fn the_deadline_cuts_a_backoff_short() {
    // Deadline 1 s, attempt timeout 1 s, backoff 800 ms doubling, no jitter: 503 at 0, wait
    // 800 ms, 503 at 800 ms; the next wait (1600 ms, to 2.4 s) would pass the deadline, so the
    // call ends at 800 ms with the 503 and never sleeps past it.
    let backoff = Backoff::default()
        .with_jitter(JitterMode::None)
        .with_initial(ms(800));
    let config = Config::default()
        .with_base_url(BASE)
        .with_retry(RetryPolicy::standard().with_backoff(backoff))
        .with_attempt_timeout(ms(1_000))
        .with_deadline(ms(1_000));
    let (transport, client) = upstream(config, [step(503), step(503), step(200)]);
    let error = err(block_on(client.get("/entities/7").send()));
    assert_eq!(error.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(error.stop_reason(), Some(StopReason::Deadline));
    assert_eq!(error.attempts(), 2);
    assert_eq!(arrivals(&transport), [ms(0), ms(800)]);
    assert_eq!(transport.clock().elapsed(), ms(800));
    assert_eq!(transport.remaining(), 1);
}

#[test]
fn a_hanging_attempt_hits_the_attempt_timeout_and_a_get_is_retried() {
    // Attempt timeout 1 s: attempt 1 is abandoned at 1000 ms, backoff 100 ms, attempt 2 at 1100 ms.
    let config = no_jitter().with_attempt_timeout(ms(1_000));
    let (transport, client) = upstream(config, [hang(), step(200)]);
    let response = ok(block_on(client.get("/entities/7").send()));
    assert_eq!(response.attempts(), 2);
    assert_eq!(arrivals(&transport), [ms(0), ms(1_100)]);
    assert_eq!(response.elapsed(), ms(1_100));
}

#[test]
fn a_hanging_last_attempt_ends_with_an_attempt_timeout() {
    // Two attempts of 1 s with 100 ms between them: the call ends at 1000 + 100 + 1000 = 2100 ms.
    let (transport, client) = upstream(no_jitter(), [hang(), hang()]);
    let call = client
        .get("/entities/7")
        .attempt_timeout(ms(1_000))
        .max_attempts(2);
    let error = err(block_on(call.send()));
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
    assert_display_mentions(&error, &["attempt_timeout", "after 2 attempt"]);
    assert_eq!(arrivals(&transport), [ms(0), ms(1_100)]);
    assert_eq!(transport.clock().elapsed(), ms(2_100));
    assert_eq!(error.elapsed(), ms(2_100));
}

#[test]
fn a_response_slower_than_the_read_timeout_gives_a_read_timeout() {
    // Read timeout 2 s, the response would take 5 s: the read fails at 2 s.
    let config = no_jitter().with_read_timeout(ms(2_000));
    let (transport, client) = upstream(config, [step(200).after(ms(5_000))]);
    let error = err(block_on(client.get("/entities/7").max_attempts(1).send()));
    let Error::Timeout { kind, source, .. } = &error else {
        panic!("expected a timeout, got {error:?}");
    };
    assert_eq!(*kind, TimeoutKind::Read);
    assert_eq!(
        source.as_ref().map(|s| s.kind()),
        Some(TransportErrorKind::ReadTimeout)
    );
    assert!(error.is_timeout());
    assert!(error.may_have_been_sent());
    assert_display_mentions(&error, &["read_timeout"]);
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(transport.clock().elapsed(), ms(2_000));
}

#[test]
fn a_response_slower_than_the_read_timeout_is_retried_for_a_get() {
    // Attempt 1 times out reading at 2000 ms, backoff 100 ms, attempt 2 at 2100 ms answers in
    // 500 ms: done at 2600 ms.
    let config = no_jitter().with_read_timeout(ms(2_000));
    let steps = [step(200).after(ms(5_000)), step(200).after(ms(500))];
    let (transport, client) = upstream(config, steps);
    let response = ok(block_on(client.get("/entities/7").send()));
    assert_eq!(response.attempts(), 2);
    assert_eq!(arrivals(&transport), [ms(0), ms(2_100)]);
    assert_eq!(response.elapsed(), ms(2_600));
}

/// A client whose budget allows 10 retries per 10 s window and nothing more: a floor of
/// 1 retry/s times a 10 s window, and no share of load.
fn storm_client() -> (ScriptedTransport, Client) {
    let budget = BudgetConfig::default()
        .with_min_retries_per_sec(1)
        .with_window(ms(10_000))
        .with_retry_ratio(0.0);
    upstream(no_jitter().with_budget(budget), [])
}

/// Ten calls that each fail once with 503 and succeed on their retry: they spend the budget.
/// Call k starts at (k - 1) * 100 ms and retries after 100 ms, so they end at 1000 ms.
fn spend_the_budget(transport: &ScriptedTransport, client: &Client) {
    for call in 1..=10 {
        transport.push(step(503)).push(step(200));
        let response = ok(block_on(client.clone().get("/entities/7").send()));
        assert_eq!(response.attempts(), 2, "call {call}");
    }
    assert_eq!(transport.requests().len(), 20);
    assert_eq!(transport.clock().elapsed(), ms(1_000));
}

#[test]
fn the_budget_refuses_retries_in_a_storm() {
    let (transport, client) = storm_client();
    spend_the_budget(&transport, &client);
    // Calls 11 to 15 at 1000 ms: 10 retries are already in the window, so each ends after its
    // first 503, at once, with the retry refused.
    for call in 11..=15 {
        transport.push(step(503));
        let error = err(block_on(client.get("/entities/7").send()));
        let Error::RetryBudgetExhausted { last, .. } = &error else {
            panic!("call {call}: expected RetryBudgetExhausted, got {error:?}");
        };
        assert_eq!(last.status().map(|s| s.as_u16()), Some(503));
        assert_eq!(error.status().map(|s| s.as_u16()), Some(503));
        assert_eq!(error.stop_reason(), Some(StopReason::Budget));
        assert_eq!(error.attempts(), 1);
        assert!(error.is_retryable());
        assert!(error.may_have_been_sent());
        assert!(!error.is_timeout());
        assert_display_mentions(&error, &["retry budget exhausted", "503"]);
    }
    // 20 requests from the first ten calls, then one each.
    assert_eq!(transport.requests().len(), 25);
    assert_eq!(
        transport.clock().elapsed(),
        ms(1_000),
        "no refused call waited"
    );
}

#[test]
fn the_budget_recovers_once_the_window_has_passed() {
    let (transport, client) = storm_client();
    spend_the_budget(&transport, &client);
    transport.push(step(503));
    let error = err(block_on(client.get("/entities/7").send()));
    assert_eq!(error.stop_reason(), Some(StopReason::Budget));
    // Advance by the 10 s window: from 1 s to 11 s, the retries made in [0 s, 1 s) have left it.
    transport.clock().advance(ms(10_000));
    transport.push(step(503)).push(step(200));
    let response = ok(block_on(client.get("/entities/7").send()));
    assert_eq!(response.attempts(), 2);
    // Skip the 20 requests that spent the budget and the refused one.
    let at: Vec<Duration> = arrivals(&transport).into_iter().skip(21).collect();
    assert_eq!(at, [ms(11_000), ms(11_100)]);
}

#[test]
fn the_correlation_id_is_the_same_on_every_attempt_and_on_the_response() {
    let (transport, client) = upstream(no_jitter(), [step(503), step(503), step(200)]);
    let response = ok(block_on(client.get("/entities/7").send()));
    let ids = header_values(&transport.requests(), "x-correlation-id");
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(response.correlation_id().as_str(), ids[0]);
}

#[test]
fn the_correlation_id_on_an_error_is_the_one_sent() {
    let (transport, client) = upstream(no_jitter(), [step(503), step(503), step(503)]);
    let error = err(block_on(client.get("/entities/7").send()));
    let ids = header_values(&transport.requests(), "x-correlation-id");
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(
        error.correlation_id().map(|c| c.as_str()),
        Some(ids[0].as_str())
    );
}

#[test]
fn each_call_gets_its_own_correlation_id() {
    let (transport, client) = upstream(no_jitter(), [step(200), step(200)]);
    let first = ok(block_on(client.get("/a").send()));
    let second = ok(block_on(client.get("/b").send()));
    assert_ne!(first.correlation_id(), second.correlation_id());
    assert_eq!(transport.requests().len(), 2);
}

#[test]
fn a_caller_supplied_correlation_id_is_sent_and_reported() {
    let (transport, client) = upstream(no_jitter(), [step(503), step(200)]);
    let id = CorrelationId::new("checkout-7f3a").unwrap();
    let response = ok(block_on(
        client.get("/entities/7").correlation_id(id.clone()).send(),
    ));
    assert_eq!(response.correlation_id(), &id);
    assert_eq!(
        header_values(&transport.requests(), "x-correlation-id"),
        ["checkout-7f3a", "checkout-7f3a"]
    );
}

#[test]
fn an_ambient_correlation_id_is_used_when_the_request_has_none() {
    let transport = ScriptedTransport::new();
    transport.push(step(200));
    let ambient = CorrelationId::new("from-the-task").unwrap();
    let read = {
        let ambient = ambient.clone();
        Arc::new(move || Some(ambient.clone()))
    };
    let runtime = runtime(&transport).with_ambient_correlation(read);
    let client = Client::new(no_jitter(), runtime).unwrap();
    let response = ok(block_on(client.get("/entities/7").send()));
    assert_eq!(response.correlation_id(), &ambient);
    assert_eq!(
        header_values(&transport.requests(), "x-correlation-id"),
        ["from-the-task"]
    );
}

#[test]
fn a_bearer_token_is_sent_on_every_attempt_and_marked_sensitive() {
    let transport = ScriptedTransport::new();
    transport.push(step(503)).push(step(200));
    let client = Client::builder(no_jitter(), runtime(&transport))
        .with_bearer_token(SecretString::from("s3cr3t".to_owned()))
        .build()
        .unwrap();
    ok(block_on(client.get("/entities/7").send()));
    let requests = transport.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        let value = &r.headers["authorization"];
        assert_eq!(value, "Bearer s3cr3t");
        assert!(value.is_sensitive());
    }
    assert!(!format!("{client:?}").contains("s3cr3t"));
}

#[test]
fn a_body_larger_than_the_limit_gives_body_too_large_and_is_not_retried() {
    // Limit 16 bytes; the body is 17.
    let config = no_jitter().with_max_response_body(16);
    let (transport, client) = upstream(config, [step(200).body(vec![b'x'; 17]), step(200)]);
    let error = err(block_on(client.get("/entities/7").send()));
    assert!(matches!(error, Error::BodyTooLarge { limit: 16, .. }));
    assert_eq!(error.stop_reason(), Some(StopReason::NotRetryable));
    assert!(!error.is_retryable());
    assert!(error.may_have_been_sent());
    assert_display_mentions(&error, &["16-byte limit"]);
    assert_eq!(transport.requests().len(), 1);
}

#[test]
fn a_path_escaping_the_base_url_is_rejected_with_nothing_sent() {
    let (transport, client) = upstream(no_jitter(), [step(200)]);
    for path in ["//evil.example/x", "https://evil.example/x", "../admin"] {
        let error = err(block_on(client.get(path).send()));
        assert!(
            matches!(error, Error::InvalidRequest { .. }),
            "{path}: {error:?}"
        );
        assert!(!error.may_have_been_sent(), "{path}");
        assert!(!error.is_retryable(), "{path}");
        assert_eq!(error.attempts(), 0, "{path}");
        assert_display_mentions(&error, &["invalid request"]);
    }
    assert!(transport.requests().is_empty());
}

#[test]
fn a_bad_header_is_rejected_with_nothing_sent() {
    let (transport, client) = upstream(no_jitter(), [step(200)]);
    let bad_name = client.get("/entities/7").header("bad header", "v");
    let error = err(block_on(bad_name.send()));
    assert!(matches!(error, Error::InvalidRequest { .. }));
    let bad_value = client.get("/entities/7").header("x-note", "line\r\nbreak");
    let error = err(block_on(bad_value.send()));
    assert!(matches!(error, Error::InvalidRequest { .. }));
    assert!(!error.may_have_been_sent());
    assert_eq!(error.attempts(), 0);
    assert!(transport.requests().is_empty());
}

#[test]
fn a_max_attempts_override_of_one_makes_one_attempt() {
    let (transport, client) = upstream(no_jitter(), [step(503), step(200)]);
    let error = err(block_on(client.get("/entities/7").max_attempts(1).send()));
    assert_eq!(error.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(error.stop_reason(), Some(StopReason::AttemptsExhausted));
    assert_eq!(error.attempts(), 1);
    assert!(error.is_retryable(), "a 503 is transient in itself");
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(transport.clock().elapsed(), Duration::ZERO);
}

#[test]
fn a_get_is_not_resent_when_the_caller_says_it_is_not_idempotent() {
    let reset = fail(TransportErrorKind::ClosedBeforeResponse);
    let (transport, client) = upstream(no_jitter(), [reset, step(200)]);
    let error = err(block_on(client.get("/jobs/run").idempotent(false).send()));
    assert_eq!(error.stop_reason(), Some(StopReason::NotIdempotent));
    assert_eq!(transport.requests().len(), 1);
}

#[test]
fn the_shipped_runtime_sees_an_instant_response_at_time_zero() {
    let transport = ScriptedTransport::new();
    transport.push(step(200));
    let client = transport.client(no_jitter()).unwrap();
    let response = ok(block_on(client.get("/entities/7").send()));
    // The upstream answered at 0 ms; today this is 10 s, the default attempt timeout.
    assert_eq!(response.elapsed(), Duration::ZERO);
    assert_eq!(transport.clock().elapsed(), Duration::ZERO);
}

#[test]
fn the_shipped_runtime_sends_retries_after_the_backoff_alone() {
    let transport = ScriptedTransport::new();
    transport.push(step(503)).push(step(503)).push(step(200));
    let client = transport.client(no_jitter()).unwrap();
    let response = ok(block_on(client.get("/entities/7").send()));
    // 100 ms then 200 ms of backoff: 0, 100, 300 ms. Today: 0, 10.1 s, 20.3 s, done at 30.3 s.
    assert_eq!(arrivals(&transport), [ms(0), ms(100), ms(300)]);
    assert_eq!(response.elapsed(), ms(300));
}

#[test]
fn a_per_request_retry_after_cap_lets_a_long_hint_be_waited() {
    // The client-wide cap is 30 s; this call allows 90 s, so Retry-After: 60 is honoured.
    let (transport, client) = upstream(
        no_jitter(),
        [step(429).header("retry-after", "60"), step(200)],
    );
    let response = block_on(
        client
            .get("/x")
            .retry_after_cap(Duration::from_secs(90))
            .deadline(Duration::from_secs(120))
            .send(),
    )
    .unwrap();
    assert_eq!(response.attempts(), 2);
    assert_eq!(arrivals(&transport), [ms(0), ms(60_000)]);
}

/// Retries a 403 whose body says "secondary rate limit", as some vendors signal only there.
#[derive(Debug)]
struct BodySignal;

impl egress_core::Classifier for BodySignal {
    fn classify(
        &self,
        outcome: &egress_core::Outcome<'_>,
        ctx: &egress_core::ClassifyContext<'_>,
    ) -> egress_core::RetryAction {
        if let egress_core::Outcome::Response { status, body, .. } = outcome {
            if status.as_u16() == 403 && body.windows(9).any(|w| w == b"secondary") {
                return egress_core::RetryAction::Retry {
                    reason: egress_core::RetryReason::Throttled,
                    hint: Some(egress_core::RetryAfter::Delay(Duration::from_secs(1))),
                };
            }
        }
        egress_core::classify(outcome, ctx)
    }
}

#[test]
fn a_classifier_can_read_the_response_body() {
    let (transport, client) = upstream(
        no_jitter(),
        [
            step(403).json(r#"{"message":"You have exceeded a secondary rate limit"}"#),
            step(200),
        ],
    );
    let response = block_on(client.get("/x").classifier(Arc::new(BodySignal)).send()).unwrap();
    assert_eq!(response.attempts(), 2);
    assert_eq!(arrivals(&transport), [ms(0), ms(1_000)]);
}

#[test]
fn a_caller_found_semantic_failure_carries_the_call_metadata() {
    let (_transport, client) = upstream(no_jitter(), [step(200).json(r#"{"id":"8"}"#)]);
    let response = block_on(client.get("/entities/7").send()).unwrap();
    let failure = egress_core::ValidationError::semantic("id", "expected 7, got 8");
    let error = response.validation_error(failure);
    let validation = error.validation().unwrap();
    assert_eq!(validation.path(), Some("id"));
    assert_eq!(validation.excerpt(), r#"{"id":"8"}"#);
    assert_eq!(error.attempts(), 1);
    assert_eq!(error.correlation_id(), Some(response.correlation_id()));
    assert!(!error.is_retryable());
}

#[test]
fn client_options_from_a_backend_reach_every_request_and_bad_headers_fail_the_build() {
    let transport = ScriptedTransport::new();
    transport.push(step(200));
    let options = egress_core::ClientOptions::default()
        .with_default_header("x-team", "payments")
        .with_bearer_token(SecretString::from("opt-token-1"))
        .with_service("entities");
    let client = Client::builder(no_jitter(), transport.runtime())
        .with_service("overridden")
        .with_default_header("x-first", "builder")
        .with_options(options)
        .build()
        .unwrap();
    block_on(client.get("/x").send()).unwrap();
    let seen = &transport.requests()[0];
    assert_eq!(seen.header("x-team"), Some("payments"));
    assert_eq!(seen.header("authorization"), Some("Bearer opt-token-1"));
    // The builder's own header stays: options add to what was set, and replace the rest.
    assert_eq!(seen.header("x-first"), Some("builder"));
    let bad = egress_core::ClientOptions::default().with_default_header("bad header", "v");
    let error = Client::builder(no_jitter(), transport.runtime())
        .with_options(bad)
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "default_headers");
    // The same check, the same error, whichever builder took the header.
    let error = Client::builder(no_jitter(), transport.runtime())
        .with_default_header("bad header", "v")
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "default_headers");
    assert!(
        !format!(
            "{:?}",
            egress_core::ClientOptions::default().with_default_header("x-api-key", "k-secret-9")
        )
        .contains("k-secret-9")
    );
}

#[test]
fn a_credential_that_is_not_a_header_value_is_refused_with_nothing_sent_and_not_shown() {
    let transport = ScriptedTransport::new();
    transport.push(step(200));
    let client = Client::builder(no_jitter(), runtime(&transport))
        .with_bearer_token(SecretString::from("s3cret\nvalue"))
        .build()
        .expect("test config is valid");
    let error = err(block_on(client.get("/entities/7").send()));
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");
    assert!(!error.may_have_been_sent());
    assert_eq!(error.attempts(), 0);
    assert!(error.correlation_id().is_some());
    for shown in [format!("{error}"), format!("{error:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
    assert!(transport.requests().is_empty());
}

/// A configured deadline shorter than the attempt timeout bounds the attempt: it ends at the
/// deadline, reported as the deadline.
#[test]
fn a_deadline_shorter_than_the_attempt_timeout_ends_the_attempt_at_the_deadline() {
    use egress_core::test_util::hang;
    let config = no_jitter()
        .with_base_url("https://api.example.com")
        .with_attempt_timeout(ms(10_000))
        .with_deadline(ms(2_000));
    let (transport, client) = upstream(config, [hang()]);
    let error = block_on(client.get("/x").send()).unwrap_err();
    assert!(
        matches!(
            error,
            egress_core::Error::Timeout {
                kind: egress_core::TimeoutKind::Deadline,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.meta().elapsed, ms(2_000));
    assert_eq!(transport.requests().len(), 1);
}
