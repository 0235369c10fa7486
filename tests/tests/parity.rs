//! The parity suite: one list of scenarios against the loopback fault server, run on every
//! backend by one macro, so that each scenario appears once per backend with the backend's name
//! in the test name (`scenario::tokio`, `scenario::async_std`). Each asserts the typed outcome,
//! the number of requests the server saw, and the timeline within a stated tolerance.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, config, ms};
use egress_core::retry::{BudgetConfig, RetryPolicy};
use egress_core::{Error, Response, StopReason, TimeoutKind, TransportErrorKind, ValidationKind};
use egress_tests::server::{Fault, FaultServer, Reply, Seen};

/// Waits are asserted at least as long as scheduled, and at most this much longer: generous,
/// because CI machines are small and busy, and never used as a lower bound.
const SLACK: Duration = Duration::from_millis(750);

fn gaps(seen: &[Seen]) -> Vec<Duration> {
    seen.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// Asserts each gap between arrivals is within [expected - 5 ms, expected + SLACK].
#[track_caller]
fn assert_gaps(seen: &[Seen], expected: &[Duration]) {
    let gaps = gaps(seen);
    assert_eq!(
        gaps.len(),
        expected.len(),
        "gaps {gaps:?}, expected {expected:?}"
    );
    for (gap, want) in gaps.iter().zip(expected) {
        assert!(
            *gap + ms(5) >= *want && *gap <= *want + SLACK,
            "gap {gap:?}, expected {want:?} (all: {gaps:?})"
        );
    }
}

fn transport_kind(error: &Error) -> Option<TransportErrorKind> {
    match error {
        Error::Transport { source, .. } => Some(source.kind()),
        _ => None,
    }
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)] // decoded to validate
struct Entity {
    id: String,
    items: Vec<Item>,
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Item {
    id: String,
}

const ENTITY: &str = r#"{"id":"7","items":[{"id":"a"}]}"#;

mod scenarios {
    use super::*;

    /// `GET /x` through a client of backend `b` with the suite's configuration on `server`.
    async fn get(b: Backend, server: &FaultServer) -> Result<Response, Error> {
        b.client(config(&server.url(""))).get("/x").send().await
    }

    pub(super) async fn a_5xx_storm_retries_until_attempts_run_out(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::status(502)));
        let error = get(b, &server).await.unwrap_err();
        assert_eq!(error.status(), Some(http::StatusCode::BAD_GATEWAY));
        assert_eq!(error.stop_reason(), Some(StopReason::AttemptsExhausted));
        assert!(error.is_retryable());
        let seen = server.requests();
        assert_eq!(seen.len(), 3);
        assert_gaps(&seen, &[ms(50), ms(100)]);
    }

    pub(super) async fn a_503_then_success(b: Backend) {
        let server = FaultServer::start(FaultServer::script([
            Reply::status(503),
            Reply::json(200, ENTITY),
        ]));
        let response = get(b, &server).await.unwrap();
        assert_eq!(response.attempts(), 2);
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
        assert_gaps(&server.requests(), &[ms(50)]);
    }

    pub(super) async fn a_429_with_retry_after_seconds_is_honoured(b: Backend) {
        let server = FaultServer::start(FaultServer::script([
            Reply::status(429).header("retry-after", "1"),
            Reply::json(200, ENTITY),
        ]));
        let response = b
            .client(config(&server.url("")))
            .post("/x")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.attempts(), 2, "throttling retries even a POST");
        assert_gaps(&server.requests(), &[Duration::from_secs(1)]);
    }

    pub(super) async fn a_429_with_an_http_date_retry_after_is_honoured(b: Backend) {
        // The server's Date and Retry-After are 1 s apart; our wall clock plays no part.
        let server = FaultServer::start(FaultServer::script([
            Reply::status(429)
                .header("date", "Wed, 21 Oct 2015 07:28:00 GMT")
                .header("retry-after", "Wed, 21 Oct 2015 07:28:01 GMT"),
            Reply::json(200, ENTITY),
        ]));
        let response = get(b, &server).await.unwrap();
        assert_eq!(response.attempts(), 2);
        assert_gaps(&server.requests(), &[Duration::from_secs(1)]);
    }

    pub(super) async fn a_429_with_retry_after_beyond_the_deadline_fails_fast(b: Backend) {
        let server = FaultServer::start(FaultServer::always(
            Reply::status(429).header("retry-after", "3600"),
        ));
        let started = Instant::now();
        let error = get(b, &server).await.unwrap_err();
        assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
        assert!(error.retry_at().is_some());
        assert_eq!(server.requests().len(), 1);
        assert!(
            started.elapsed() < SLACK,
            "no sleep: {:?}",
            started.elapsed()
        );
    }

    pub(super) async fn a_garbage_retry_after_falls_back_to_backoff(b: Backend) {
        let server = FaultServer::start(FaultServer::script([
            Reply::status(503).header("retry-after", "soon-ish"),
            Reply::json(200, ENTITY),
        ]));
        let response = get(b, &server).await.unwrap();
        assert_eq!(response.attempts(), 2);
        assert_gaps(&server.requests(), &[ms(50)]);
    }

    async fn final_status(b: Backend, status: u16, check: fn(&Error) -> bool) {
        let server = FaultServer::start(FaultServer::always(Reply::json(
            status,
            r#"{"message":"no"}"#,
        )));
        let error = get(b, &server).await.unwrap_err();
        assert_eq!(error.status().map(|s| s.as_u16()), Some(status));
        assert!(check(&error), "{error:?}");
        assert_eq!(error.stop_reason(), Some(StopReason::NotRetryable));
        assert!(!error.is_retryable());
        let body: serde_json::Value = error.status_error().unwrap().json().unwrap();
        assert_eq!(body["message"], "no");
        assert_eq!(server.requests().len(), 1);
    }

    pub(super) async fn a_404_is_never_retried(b: Backend) {
        final_status(b, 404, Error::is_not_found).await;
    }

    pub(super) async fn a_401_is_never_retried(b: Backend) {
        final_status(b, 401, Error::is_unauthorized).await;
    }

    pub(super) async fn a_403_is_never_retried(b: Backend) {
        final_status(b, 403, Error::is_forbidden).await;
    }

    pub(super) async fn a_400_is_never_retried(b: Backend) {
        final_status(b, 400, |e| matches!(e, Error::Status { .. })).await;
    }

    pub(super) async fn a_409_is_never_retried(b: Backend) {
        final_status(b, 409, Error::is_conflict).await;
    }

    pub(super) async fn a_422_is_never_retried(b: Backend) {
        final_status(b, 422, Error::is_unprocessable).await;
    }

    pub(super) async fn a_reset_before_the_head_is_retried_for_a_get(b: Backend) {
        let server = FaultServer::start(FaultServer::script([
            Reply::fault(Fault::ResetBeforeHead),
            Reply::json(200, ENTITY),
        ]));
        let response = get(b, &server).await.unwrap();
        assert_eq!(response.attempts(), 2);
        assert_gaps(&server.requests(), &[ms(50)]);
    }

    pub(super) async fn a_reset_before_the_head_is_not_retried_for_a_post(b: Backend) {
        let server = FaultServer::start(FaultServer::script([
            Reply::fault(Fault::ResetBeforeHead),
            Reply::json(201, ENTITY),
        ]));
        let error = b
            .client(config(&server.url("")))
            .post("/x")
            .body("{}")
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            transport_kind(&error),
            Some(TransportErrorKind::ClosedBeforeResponse),
            "{error:?}"
        );
        assert!(error.may_have_been_sent());
        assert_eq!(error.stop_reason(), Some(StopReason::NotIdempotent));
        assert_eq!(server.requests().len(), 1);
    }

    pub(super) async fn a_post_with_an_idempotency_key_is_retried(b: Backend) {
        let server = FaultServer::start(FaultServer::script([
            Reply::fault(Fault::ResetBeforeHead),
            Reply::json(201, ENTITY),
        ]));
        let response = b
            .client(config(&server.url("")))
            .post("/x")
            .body("{}")
            .with_new_idempotency_key()
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let seen = server.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[0].header("idempotency-key"),
            seen[1].header("idempotency-key")
        );
        assert!(seen[0].header("idempotency-key").is_some());
    }

    pub(super) async fn a_refused_connection_is_retried_for_any_method(b: Backend) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = Instant::now();
        let error = b
            .client(config(&format!("http://127.0.0.1:{port}")))
            .delete("/x")
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            transport_kind(&error),
            Some(TransportErrorKind::ConnectRefused),
            "{error:?}"
        );
        assert_eq!(error.attempts(), 3);
        assert!(!error.may_have_been_sent());
        // Two backoffs: 50 ms + 100 ms.
        assert!(
            started.elapsed() >= ms(150) && started.elapsed() < ms(150) + SLACK,
            "{:?}",
            started.elapsed()
        );
        let error = b
            .client(config(&format!("http://127.0.0.1:{port}")))
            .post("/x")
            .send()
            .await
            .unwrap_err();
        assert_eq!(error.attempts(), 3, "a never-sent POST is retried too");
    }

    pub(super) async fn a_server_that_never_answers_hits_the_read_timeout(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::fault(Fault::NeverAnswer)));
        let config = config(&server.url(""))
            .with_read_timeout(ms(300))
            .with_retry(RetryPolicy::disabled());
        let started = Instant::now();
        let error = b.client(config).get("/x").send().await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Timeout {
                    kind: TimeoutKind::Read,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            started.elapsed() >= ms(300) && started.elapsed() < ms(300) + SLACK,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(server.requests().len(), 1);
    }

    pub(super) async fn a_body_that_arrives_in_pieces_is_read_whole(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY).with_fault(
            Fault::Drip {
                chunk: 5,
                every: ms(5),
            },
        )));
        let config = config(&server.url("")).with_retry(RetryPolicy::disabled());
        let response = b.client(config).get("/x").send().await.unwrap();
        assert_eq!(response.body().as_ref(), ENTITY.as_bytes());
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
    }

    pub(super) async fn a_slow_drip_hits_the_read_timeout(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY).with_fault(
            Fault::Drip {
                chunk: 4,
                every: ms(600),
            },
        )));
        let config = config(&server.url(""))
            .with_read_timeout(ms(250))
            .with_retry(RetryPolicy::disabled());
        let error = b.client(config).get("/x").send().await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Timeout {
                    kind: TimeoutKind::Read,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(server.requests().len(), 1);
    }

    pub(super) async fn the_deadline_cuts_the_retries_short(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::status(503).delay(ms(400))));
        let config = config(&server.url(""))
            .with_retry(RetryPolicy::standard().with_max_attempts(10))
            .with_attempt_timeout(ms(1000))
            .with_deadline(ms(1000));
        let started = Instant::now();
        let error = b.client(config).get("/x").send().await.unwrap_err();
        // Attempts take 400 ms each: at 0, ~450, and the third would end past 1 s.
        assert!(
            started.elapsed() <= ms(1000) + SLACK,
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(error.stop_reason(), Some(StopReason::Deadline)),
            "{error:?}"
        );
        let n = server.requests().len();
        assert!((2..=3).contains(&n), "{n} requests");
    }

    pub(super) async fn a_truncated_body_is_retried_for_a_get(b: Backend) {
        let server = FaultServer::start(FaultServer::script([
            Reply::json(200, ENTITY).with_fault(Fault::WrongLength { declared: 1000 }),
            Reply::json(200, ENTITY),
        ]));
        let response = get(b, &server).await.unwrap();
        assert_eq!(response.attempts(), 2);
        assert_eq!(server.requests().len(), 2);
    }

    pub(super) async fn a_truncated_body_on_the_last_attempt_is_closed_during_the_body(b: Backend) {
        let server = FaultServer::start(FaultServer::always(
            Reply::json(200, ENTITY).with_fault(Fault::WrongLength { declared: 1000 }),
        ));
        let config = config(&server.url("")).with_retry(RetryPolicy::disabled());
        let error = b.client(config).get("/x").send().await.unwrap_err();
        assert_eq!(
            transport_kind(&error),
            Some(TransportErrorKind::ClosedDuringBody),
            "{error:?}"
        );
    }

    pub(super) async fn an_oversize_body_is_refused_and_not_retried(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(
            200,
            &"x".repeat(64 * 1024),
        )));
        let config = config(&server.url("")).with_max_response_body(16 * 1024);
        let error = b.client(config).get("/x").send().await.unwrap_err();
        assert!(
            matches!(error, Error::BodyTooLarge { limit: 16384, .. }),
            "{error:?}"
        );
        assert_eq!(server.requests().len(), 1);
    }

    pub(super) async fn an_endless_body_stops_at_the_limit(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::fault(Fault::EndlessBody)));
        let config = config(&server.url("")).with_max_response_body(128 * 1024);
        let error = b.client(config).get("/x").send().await.unwrap_err();
        assert!(matches!(error, Error::BodyTooLarge { .. }), "{error:?}");
    }

    pub(super) async fn malformed_json_names_the_path_in_the_error(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(
            200,
            r#"{"id":"7","items":[{"id":"a"},{"id":null}]}"#,
        )));
        let response = get(b, &server).await.unwrap();
        let error = response.json::<Entity>().unwrap_err();
        let validation = error.validation().unwrap();
        assert_eq!(validation.kind(), ValidationKind::Schema);
        assert_eq!(validation.path(), Some("items[1].id"));
        assert!(error.to_string().contains("items[1].id"), "{error}");
        assert!(!error.is_retryable());
        assert_eq!(server.requests().len(), 1);
    }

    pub(super) async fn a_wrong_content_type_is_a_validation_error(b: Backend) {
        let server = FaultServer::start(FaultServer::always(
            Reply::status(200)
                .header("content-type", "text/html")
                .body(ENTITY),
        ));
        let response = get(b, &server).await.unwrap();
        let error = response.json::<Entity>().unwrap_err();
        assert_eq!(
            error.validation().unwrap().kind(),
            ValidationKind::ContentType
        );
    }

    pub(super) async fn an_empty_body_is_a_validation_error(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, "")));
        let response = get(b, &server).await.unwrap();
        let error = response.json::<Entity>().unwrap_err();
        assert_eq!(error.validation().unwrap().kind(), ValidationKind::Empty);
    }

    /// RFC 9112 2.6 and RFC 9110 6.2: a client accepts an HTTP/1.0 response, whose body
    /// (without `Content-Length`) runs until the server closes (RFC 9112 6.3, rule 8).
    pub(super) async fn an_http_1_0_peer_is_understood(b: Backend) {
        let server = FaultServer::start(FaultServer::always(
            Reply::json(200, ENTITY).with_fault(Fault::Http10),
        ));
        let response = get(b, &server).await.unwrap();
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
        assert_eq!(server.requests().len(), 1);
    }

    pub(super) async fn an_unregistered_status_is_read_like_any_other(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(299, ENTITY)));
        let response = get(b, &server).await.unwrap();
        assert_eq!(response.status().as_u16(), 299);
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
    }

    pub(super) async fn a_header_value_that_is_not_ascii_is_kept_as_its_bytes(b: Backend) {
        let server = FaultServer::start(FaultServer::always(
            Reply::json(200, ENTITY).header("x-name", "caf\u{e9}"),
        ));
        let response = get(b, &server).await.unwrap();
        assert_eq!(
            response.headers()["x-name"].as_bytes(),
            "caf\u{e9}".as_bytes()
        );
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
    }

    pub(super) async fn an_interim_response_before_the_answer_is_skipped(b: Backend) {
        let server = FaultServer::start(FaultServer::always(
            Reply::json(200, ENTITY).with_fault(Fault::EarlyHints),
        ));
        let response = get(b, &server).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert!(response.headers().get("link").is_none());
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
        assert_eq!(server.requests().len(), 1);
    }

    pub(super) async fn every_request_names_the_server_in_one_host_header(b: Backend) {
        let server = FaultServer::start(FaultServer::script([
            Reply::status(503),
            Reply::json(200, ENTITY),
        ]));
        get(b, &server).await.unwrap();
        let seen = server.requests();
        assert_eq!(seen.len(), 2);
        for request in &seen {
            let hosts: Vec<&str> = request
                .headers
                .iter()
                .filter(|(name, _)| name == "host")
                .map(|(_, value)| value.as_str())
                .collect();
            assert_eq!(hosts, [server.addr().to_string()], "{b:?}");
        }
    }

    pub(super) async fn a_broken_chunk_is_a_protocol_error(b: Backend) {
        let server = FaultServer::start(FaultServer::always(
            Reply::json(200, ENTITY).with_fault(Fault::BadChunk),
        ));
        let config = config(&server.url("")).with_retry(RetryPolicy::disabled());
        let error = b.client(config).get("/x").send().await.unwrap_err();
        let kind = transport_kind(&error);
        assert!(
            matches!(
                kind,
                Some(TransportErrorKind::Protocol | TransportErrorKind::ClosedDuringBody)
            ),
            "{error:?}"
        );
    }

    pub(super) async fn tls_with_a_trusted_certificate_succeeds(b: Backend) {
        let server = FaultServer::start_tls(FaultServer::always(Reply::json(200, ENTITY)));
        let client = b.client_trusting(config(&server.url("")), server.certificate_der().unwrap());
        let response = client.get("/x").send().await.unwrap();
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
        assert_eq!(server.requests().len(), 1);
    }

    pub(super) async fn tls_with_an_untrusted_certificate_fails_without_retry(b: Backend) {
        let server = FaultServer::start_tls(FaultServer::always(Reply::json(200, ENTITY)));
        let error = get(b, &server).await.unwrap_err();
        assert_eq!(
            transport_kind(&error),
            Some(TransportErrorKind::Tls),
            "{error:?}"
        );
        assert_eq!(error.attempts(), 1);
        assert!(!error.may_have_been_sent());
        assert_eq!(server.requests().len(), 0);
        assert_eq!(server.connections(), 1, "one handshake, no retry");
    }

    pub(super) async fn the_correlation_id_and_idempotency_key_are_identical_on_every_attempt(
        b: Backend,
    ) {
        let server = FaultServer::start(FaultServer::script([
            Reply::status(503),
            Reply::status(502),
            Reply::json(201, ENTITY),
        ]));
        let response = b
            .client(config(&server.url("")))
            .post("/x")
            .json(&serde_json::json!({"name": "n"}))
            .with_new_idempotency_key()
            .send()
            .await
            .unwrap();
        let seen = server.requests();
        assert_eq!(seen.len(), 3);
        for s in &seen {
            assert_eq!(
                s.header("x-correlation-id"),
                Some(response.correlation_id().as_str())
            );
            assert_eq!(
                s.header("idempotency-key"),
                seen[0].header("idempotency-key")
            );
            assert_eq!(s.body.as_ref(), br#"{"name":"n"}"#);
        }
        assert_gaps(&seen, &[ms(50), ms(100)]);
    }

    pub(super) async fn the_budget_refuses_retries_during_a_storm(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::status(503)));
        // No floor and 20 %: of 20 sequential calls, retries are allowed only as the load earns them.
        let budget = BudgetConfig::default().with_min_retries_per_sec(0);
        let config = config(&server.url(""))
            .with_budget(budget)
            .with_retry(RetryPolicy::standard().with_max_attempts(2));
        let client = b.client(config);
        let mut refused = 0;
        for _ in 0..20 {
            let error = client.get("/x").send().await.unwrap_err();
            if matches!(error, Error::RetryBudgetExhausted { .. }) {
                assert_eq!(error.stop_reason(), Some(StopReason::Budget));
                assert_eq!(error.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
                refused += 1;
            }
        }
        // 20 first attempts earn 4 retries (20 * 0.2): 24 requests, 16 refusals.
        assert_eq!(server.requests().len(), 24);
        assert_eq!(refused, 16);
    }
}

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

parity!(
    a_5xx_storm_retries_until_attempts_run_out,
    a_503_then_success,
    a_429_with_retry_after_seconds_is_honoured,
    a_429_with_an_http_date_retry_after_is_honoured,
    a_429_with_retry_after_beyond_the_deadline_fails_fast,
    a_garbage_retry_after_falls_back_to_backoff,
    a_404_is_never_retried,
    a_401_is_never_retried,
    a_403_is_never_retried,
    a_400_is_never_retried,
    a_409_is_never_retried,
    a_422_is_never_retried,
    a_reset_before_the_head_is_retried_for_a_get,
    a_reset_before_the_head_is_not_retried_for_a_post,
    a_post_with_an_idempotency_key_is_retried,
    a_refused_connection_is_retried_for_any_method,
    a_server_that_never_answers_hits_the_read_timeout,
    a_body_that_arrives_in_pieces_is_read_whole,
    a_slow_drip_hits_the_read_timeout,
    the_deadline_cuts_the_retries_short,
    a_truncated_body_is_retried_for_a_get,
    a_truncated_body_on_the_last_attempt_is_closed_during_the_body,
    an_oversize_body_is_refused_and_not_retried,
    an_endless_body_stops_at_the_limit,
    malformed_json_names_the_path_in_the_error,
    a_wrong_content_type_is_a_validation_error,
    an_empty_body_is_a_validation_error,
    an_http_1_0_peer_is_understood,
    a_broken_chunk_is_a_protocol_error,
    an_unregistered_status_is_read_like_any_other,
    a_header_value_that_is_not_ascii_is_kept_as_its_bytes,
    an_interim_response_before_the_answer_is_skipped,
    every_request_names_the_server_in_one_host_header,
    tls_with_a_trusted_certificate_succeeds,
    tls_with_an_untrusted_certificate_fails_without_retry,
    the_correlation_id_and_idempotency_key_are_identical_on_every_attempt,
    the_budget_refuses_retries_during_a_storm,
);
