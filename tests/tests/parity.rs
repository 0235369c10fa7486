//! The parity suite: one list of scenarios against the loopback fault server, run on every
//! backend by one macro, so that each scenario appears once per backend with the backend's name
//! in the test name (`scenario::tokio`, `scenario::async_std`). Each asserts the typed outcome,
//! the number of requests the server saw, and the timeline within a stated tolerance.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, config, ms};
use egress_core::{BudgetConfig, RetryPolicy};
use egress_core::{
    CircuitBreakerConfig, Error, PoolConfig, RateLimitConfig, Response, StopReason, TimeoutKind,
    TransportErrorKind, ValidationKind,
};
use egress_tests::server::{
    Blackhole, Fault, FaultServer, GoAwayBelowFirstStream, Reply, Seen, Silent,
};

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

/// Waits `d` on backend `b`'s own timer.
async fn sleep(b: Backend, d: Duration) {
    let _ = b.timeout(d, std::future::pending::<()>()).await;
}

/// Asserts that `error` is a timeout of `kind`.
#[track_caller]
fn assert_timeout(error: &Error, kind: TimeoutKind) {
    assert!(
        matches!(error, Error::Timeout { kind: k, .. } if *k == kind),
        "expected a {kind:?} timeout: {error:?}"
    );
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
        assert_timeout(&error, TimeoutKind::Read);
        assert!(
            started.elapsed() >= ms(300) && started.elapsed() < ms(300) + SLACK,
            "{:?}",
            started.elapsed()
        );
        assert!(error.may_have_been_sent());
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
        assert_timeout(&error, TimeoutKind::Read);
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

    /// An HTTP/1.0 response (no `Content-Length`, body delimited by the close) is understood:
    /// a recipient of a lower minor version of the same major version processes it as HTTP/1.1
    /// would (RFC 9110 2.5 and 6.2), and without a length the body is everything up to the close
    /// (RFC 9112 6.3 item 8). hyper reads it so (role.rs, `Client::decoder`: no framing header
    /// is `CLOSE_DELIMITED`; keep-alive is off for HTTP/1.0 without `connection: keep-alive`).
    pub(super) async fn an_http_1_0_peer_is_understood(b: Backend) {
        let server = FaultServer::start(FaultServer::always(
            Reply::json(200, ENTITY).with_fault(Fault::Http10),
        ));
        let response = get(b, &server).await.unwrap();
        assert_eq!(response.body().as_ref(), ENTITY.as_bytes());
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
        assert_eq!(response.attempts(), 1);
        assert_eq!(server.requests().len(), 1);
    }

    /// An HTTP/1.1 response with neither `Content-Length` nor `Transfer-Encoding` has a body
    /// that runs until the server closes the connection (RFC 9112 6.3 item 8); it is read whole.
    /// hyper: role.rs, `Client::decoder` ("neither Transfer-Encoding nor Content-Length":
    /// `CLOSE_DELIMITED`), decode.rs reads until EOF.
    pub(super) async fn a_body_delimited_by_the_close_is_read_whole(b: Backend) {
        let body = format!(
            r#"{{"id":"7","items":[{{"id":"a"}}],"pad":"{}"}}"#,
            "x".repeat(256 * 1024)
        );
        let server = FaultServer::start(FaultServer::always(
            Reply::json(200, &body).with_fault(Fault::CloseDelimited),
        ));
        let response = get(b, &server).await.unwrap();
        assert_eq!(response.body().len(), body.len());
        assert_eq!(response.body().as_ref(), body.as_bytes());
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
        assert_eq!(response.attempts(), 1);
        assert_eq!(server.requests().len(), 1);
    }

    /// Response desync: with `Transfer-Encoding: chunked, gzip` chunked is not the final
    /// coding, so the body runs until the server closes the connection (RFC 9112 6.3 item 4;
    /// RFC 9112 7 and 11.2 on smuggling). The server sends bytes that read as a chunk, a
    /// terminating chunk and a smuggled second response, then closes: all of it is the first
    /// body, the connection is not reused, and the second call gets the server's real second
    /// answer on a new connection. hyper: role.rs, `Client::decoder` (a `Transfer-Encoding`
    /// not ending in chunked is `CLOSE_DELIMITED`, "not chunked, read till eof").
    pub(super) async fn a_transfer_coding_not_ending_in_chunked_runs_until_the_close(b: Backend) {
        let smuggled_body = r#"{"id":"smuggled","items":[]}"#;
        let smuggled = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{smuggled_body}",
            smuggled_body.len()
        );
        let wire = format!("{:x}\r\n{ENTITY}\r\n0\r\n\r\n{smuggled}", ENTITY.len());
        let server = FaultServer::start(FaultServer::script([
            Reply::status(200)
                .header("content-type", "application/octet-stream")
                .header("transfer-encoding", "chunked, gzip")
                .body(wire.clone())
                .with_fault(Fault::CloseDelimited),
            Reply::json(200, r#"{"id":"second","items":[]}"#),
        ]));
        let client = b.client(config(&server.url("")));
        let first = client.get("/x").send().await.unwrap();
        assert_eq!(
            first.body().as_ref(),
            wire.as_bytes(),
            "the whole stream up to the close is the body"
        );
        assert_eq!(first.attempts(), 1);
        let second = client.get("/x").send().await.unwrap();
        assert_eq!(second.json::<Entity>().unwrap().id, "second");
        assert_eq!(second.attempts(), 1);
        let seen = server.requests();
        assert_eq!(seen.len(), 2, "the server saw the second request");
        assert_ne!(
            seen[0].connection, seen[1].connection,
            "the second request went on a new connection"
        );
    }

    /// An unsolicited `101 Switching Protocols`: a server must not switch to a protocol the
    /// request did not offer in `Upgrade` (RFC 9110 7.8, 15.2.2), and after a 101 the
    /// connection no longer speaks HTTP/1.1 (RFC 9110 7.8: the new protocol starts right after
    /// the 101's empty line; RFC 9112 6.3 item 1: a 1xx has no body), so it is never reused.
    /// hyper (role.rs, `Client::decoder`: `101 => (DecodedLength::ZERO, wants_upgrade)`, and
    /// `keep_alive: keep_alive && !is_upgrade`) hands the 101 to the caller as the final
    /// response, with an empty body, and the connection ends: egress sees a final non-2xx
    /// status, not retried. The next call gets its own answer on a new connection.
    pub(super) async fn an_unsolicited_101_ends_the_exchange_and_its_connection(b: Backend) {
        let server = FaultServer::start(FaultServer::script([
            Reply::fault(Fault::SwitchingProtocols),
            Reply::json(200, ENTITY),
        ]));
        let client = b.client(config(&server.url("")));
        let error = client.get("/x").send().await.unwrap_err();
        assert_eq!(
            error.status(),
            Some(http::StatusCode::SWITCHING_PROTOCOLS),
            "{error:?}"
        );
        assert_eq!(error.stop_reason(), Some(StopReason::NotRetryable));
        assert_eq!(error.attempts(), 1);
        assert!(error.status_error().unwrap().body().is_empty());
        let response = client.get("/x").send().await.unwrap();
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
        assert_eq!(response.attempts(), 1);
        let seen = server.requests();
        assert_eq!(seen.len(), 2);
        assert_ne!(
            seen[0].connection, seen[1].connection,
            "the switched connection was reused"
        );
    }

    /// An early final response while the request body is still being written: the server
    /// reads the head of a 5 MB POST, answers `413 Content Too Large` (RFC 9110 15.5.14) with
    /// `connection: close` and half-closes, then either drains the rest until the client closes
    /// (the lingering close of RFC 9112 9.6) or, once its answer is surely acknowledged, stops
    /// reading and closes (also allowed by RFC 9112 9.6; the unread bytes make it a reset). The
    /// client, which "SHOULD monitor the network connection for an error response while it is
    /// transmitting the request" and then stop sending (RFC 9112 9.6), surfaces the 413 in both
    /// cases, not a reset, broken pipe or write timeout, and does not retry it. hyper's
    /// dispatcher reads the response while the body is written (dispatch.rs, `poll_read` and
    /// `poll_write` in one loop) and resolves the call with the response.
    pub(super) async fn an_early_413_during_a_large_upload_is_surfaced(b: Backend) {
        let mut failures = Vec::new();
        for drain in [true, false] {
            let server = FaultServer::start_answering_on_the_head(FaultServer::always(
                Reply::json(413, r#"{"message":"too large"}"#)
                    .with_fault(Fault::EarlyResponse { drain }),
            ));
            let body = vec![b'x'; 5 * 1024 * 1024];
            let result = b
                .client(config(&server.url("")))
                .post("/upload")
                .body(body)
                .send()
                .await;
            let outcome = match &result {
                Ok(response) => format!("Ok({})", response.status()),
                Err(error) => format!(
                    "{:?} {:?} {:?} after {} attempt(s), body {:?}",
                    error.status(),
                    transport_kind(error),
                    error.stop_reason(),
                    error.attempts(),
                    error.status_error().map(|s| s.body_excerpt().to_owned())
                ),
            };
            let expected = format!(
                "{:?} None {:?} after 1 attempt(s), body {:?}",
                Some(http::StatusCode::PAYLOAD_TOO_LARGE),
                Some(StopReason::NotRetryable),
                Some(r#"{"message":"too large"}"#)
            );
            let requests = server.requests().len();
            if outcome != expected || requests != 1 {
                failures.push(format!(
                    "drain {drain}: {outcome}, {requests} request(s); {result:?}"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "expected the 413, not retried:\n{}",
            failures.join("\n")
        );
    }

    /// No `Content-Length: 0` on a GET or a HEAD without content: "A user agent SHOULD NOT
    /// send a Content-Length header field when the request message does not contain content
    /// and the method semantics do not anticipate such data" (RFC 9110 8.6). hyper
    /// (role.rs, `Client::set_length`): a request without a body gets no length header.
    pub(super) async fn a_get_or_head_without_content_sends_no_content_length(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let client = b.client(config(&server.url("")));
        client.get("/x").send().await.unwrap();
        let head = client
            .request(http::Method::HEAD, "/x")
            .send()
            .await
            .unwrap();
        assert!(head.body().is_empty());
        let seen = server.requests();
        assert_eq!(seen.len(), 2);
        for request in &seen {
            assert_eq!(
                request.header("content-length"),
                None,
                "{} {:?}",
                request.method,
                request.headers
            );
            assert_eq!(
                request.header("transfer-encoding"),
                None,
                "{}",
                request.method
            );
        }
        assert_eq!(seen[1].method, "HEAD");
    }

    /// A response to `method` with `status` announcing a `Content-Length` beyond the client's
    /// body limit but, as RFC 9112 6.3 item 1 says, with no body: it ends at the head, and the
    /// connection is reused for the next call.
    async fn no_body_whatever_its_length(b: Backend, method: http::Method, status: u16) {
        let announced = 20 * 1024 * 1024;
        let server = FaultServer::start(FaultServer::script([
            Reply::status(status)
                .header("content-length", &announced.to_string())
                .with_fault(Fault::NoBody),
            Reply::json(200, ENTITY),
        ]));
        let config = config(&server.url("")).with_max_response_body(1024 * 1024);
        let client = b.client(config);
        let result = client.request(method, "/x").send().await;
        if (200..300).contains(&status) {
            let response = result.unwrap();
            assert_eq!(response.status().as_u16(), status);
            assert!(response.body().is_empty());
            assert_eq!(response.attempts(), 1);
        } else {
            let error = result.unwrap_err();
            assert_eq!(
                error.status().map(|s| s.as_u16()),
                Some(status),
                "{error:?}"
            );
            assert!(error.status_error().unwrap().body().is_empty());
            assert_eq!(error.stop_reason(), Some(StopReason::NotRetryable));
            assert_eq!(error.attempts(), 1);
        }
        // The connection goes back to the pool once the exchange ends; give it a moment.
        sleep(b, ms(20)).await;
        let response = client.get("/x").send().await.unwrap();
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
        let seen = server.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[0].connection, seen[1].connection),
            (1, 1),
            "the connection is reused"
        );
        assert_eq!(server.connections(), 1);
    }

    /// A HEAD response has no body whatever its `Content-Length` (RFC 9112 6.3 item 1;
    /// RFC 9110 9.3.2 and 8.6: the length is the one a GET would have had). hyper: role.rs,
    /// `Client::decoder` (`Some(Method::HEAD) => DecodedLength::ZERO`).
    pub(super) async fn a_head_response_has_no_body_whatever_its_length(b: Backend) {
        no_body_whatever_its_length(b, http::Method::HEAD, 200).await;
    }

    /// A 304 has no body whatever its `Content-Length` (RFC 9112 6.3 item 1; RFC 9110
    /// 15.4.5). hyper: role.rs, `Client::decoder` (`204 | 304 => DecodedLength::ZERO`). egress
    /// reports the 304 as a final non-2xx status, with an empty body.
    pub(super) async fn a_304_has_no_body_whatever_its_length(b: Backend) {
        no_body_whatever_its_length(b, http::Method::GET, 304).await;
    }

    /// A 204 has no body, even with a (forbidden, RFC 9110 8.6) `Content-Length`: it ends at
    /// the head "regardless of the header fields present" (RFC 9112 6.3 item 1; RFC 9110
    /// 15.3.5). hyper: role.rs, `Client::decoder` (`204 | 304 => DecodedLength::ZERO`).
    pub(super) async fn a_204_has_no_body_whatever_its_length(b: Backend) {
        no_body_whatever_its_length(b, http::Method::GET, 204).await;
    }

    /// An idle pooled connection is closed when its idle timeout passes, without waiting for
    /// the next call: "A client or server that wishes to time out SHOULD issue a graceful close
    /// on the connection" (RFC 9112 9.5; 9.3 on persistence). (hyper-util's pool runs an idle
    /// interval that drops expired connections, `Builder::pool_idle_timeout` with a timer.)
    pub(super) async fn an_idle_connection_is_closed_when_its_idle_timeout_passes(b: Backend) {
        let idle = ms(300);
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let mut pool = PoolConfig::default();
        pool.idle_timeout = idle;
        let client = b.client(config(&server.url("")).with_pool(pool));
        client.get("/x").send().await.unwrap();
        let idle_since = Instant::now();
        let limit = idle + Duration::from_millis(1500);
        while server.closed_connections().is_empty() && idle_since.elapsed() < limit {
            sleep(b, ms(20)).await;
        }
        let closed = server.closed_connections();
        assert_eq!(
            closed.iter().map(|c| c.connection).collect::<Vec<_>>(),
            [1],
            "the idle connection is closed within {limit:?} of the call, with no other call"
        );
        assert!(
            closed[0].at.saturating_duration_since(idle_since) <= limit,
            "closed {:?} after the call",
            closed[0].at.saturating_duration_since(idle_since)
        );
        assert_eq!(server.requests().len(), 1);
        assert_eq!(server.open_connections(), 0);
        drop(client);
    }

    /// HTTP/2 over TLS: an `https` origin whose server offers `h2` by ALPN is spoken to in
    /// HTTP/2 (RFC 9113 3.2; RFC 9110 4.2.2 and 2.5 on versions), and concurrent calls share
    /// one multiplexed connection ("Clients SHOULD NOT open more than one HTTP/2 connection to
    /// a given host and port pair", RFC 9113 9.1; RFC 9112 9.4 limits HTTP/1.1 instead). hyper:
    /// `client::conn::http2` multiplexes streams on one connection; hyper-util's pool keeps one
    /// HTTP/2 connection per origin.
    pub(super) async fn https_speaks_http_2_over_one_multiplexed_connection(b: Backend) {
        let server =
            FaultServer::start_tls(FaultServer::always(Reply::json(200, ENTITY).delay(ms(200))));
        let client = b.client_trusting(config(&server.url("")), server.certificate_der().unwrap());
        let first = client.get("/x").send().await.unwrap();
        assert_eq!(first.version(), http::Version::HTTP_2);
        assert_eq!(first.json::<Entity>().unwrap().id, "7");
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let client = client.clone();
                async move {
                    client
                        .get("/x")
                        .send()
                        .await
                        .map(|r| (r.status().as_u16(), r.version()))
                        .map_err(|e| format!("{e:?}"))
                }
            })
            .collect();
        for result in b.join_all(calls).await {
            assert_eq!(result, Ok((200, http::Version::HTTP_2)));
        }
        let seen = server.requests();
        assert_eq!(seen.len(), 9);
        let versions: Vec<&str> = seen.iter().map(|s| s.version).collect();
        assert!(versions.iter().all(|v| *v == "HTTP/2"), "{versions:?}");
        assert_eq!(server.connections(), 1, "one multiplexed connection");
    }

    /// An HTTP/2 server that resets a stream with `REFUSED_STREAM` has not processed the
    /// request ("Any request that was sent on the reset stream can be safely retried", RFC
    /// 9113 8.7), so even a `POST` without an idempotency key is retried; when every attempt is
    /// refused, the error says the request was not processed. (reqwest re-sends such a request
    /// too; hyper keeps h2's error as the source of its own.)
    pub(super) async fn a_post_whose_http_2_stream_is_refused_unprocessed_is_retried(b: Backend) {
        let refused = || Reply::fault(Fault::RefusedStream);
        let server = FaultServer::start_tls_h2_frames(FaultServer::script([
            refused(),
            Reply::json(200, ENTITY),
        ]));
        let client = b.client_trusting(config(&server.url("")), server.certificate_der().unwrap());
        let response = client.post("/x").body("{}").send().await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.attempts(), 2);
        let seen = server.requests();
        assert_eq!(seen.len(), 2);
        assert!(
            seen.iter().all(|s| s.method == "POST" && s.body == "{}"),
            "{seen:?}"
        );

        let server = FaultServer::start_tls_h2_frames(FaultServer::always(refused()));
        let client = b.client_trusting(config(&server.url("")), server.certificate_der().unwrap());
        let error = client.post("/x").body("{}").send().await.unwrap_err();
        assert_eq!(
            transport_kind(&error),
            Some(TransportErrorKind::NotProcessed),
            "{error:?}"
        );
        assert!(!error.may_have_been_sent(), "{error:?}");
        assert_eq!(error.stop_reason(), Some(StopReason::AttemptsExhausted));
        assert_eq!(server.requests().len(), 3);
    }

    /// A server that ends an HTTP/2 connection after an answer (`GOAWAY`, RFC 9113 6.8: what
    /// servers do after so many requests on a connection, or when they shut down) leaves the
    /// next call a new connection: the closing one is not handed out again, and the call is
    /// sent once.
    pub(super) async fn after_an_http_2_goaway_the_next_call_opens_a_new_connection(b: Backend) {
        let server = FaultServer::start_tls_h2_frames(FaultServer::script([
            Reply::json(200, ENTITY).with_fault(Fault::GoAwayAfter),
            Reply::json(200, ENTITY),
        ]));
        let client = b.client_trusting(config(&server.url("")), server.certificate_der().unwrap());
        let first = client.get("/x").send().await.unwrap();
        assert_eq!(first.version(), http::Version::HTTP_2);
        // The GOAWAY follows the answer on the wire; give it the time to arrive.
        sleep(b, ms(200)).await;
        let second = client.post("/x").body("{}").send().await.unwrap();
        assert_eq!(second.attempts(), 1);
        assert_eq!(second.json::<Entity>().unwrap().id, "7");
        let seen = server.requests();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_ne!(seen[0].connection, seen[1].connection);
        assert_eq!(server.connections(), 2);
    }

    /// A request whose HTTP/2 stream lies above the last stream identifier of the server's
    /// `GOAWAY` was not processed ("can be safely retried", RFC 9113 6.8): even a `POST` is
    /// sent again, on a new connection.
    pub(super) async fn a_post_on_a_stream_above_an_http_2_goaways_last_stream_is_sent_again(
        b: Backend,
    ) {
        let server = GoAwayBelowFirstStream::start();
        let client = b.client_trusting(config(&server.url("")), server.certificate_der());
        let response = client.post("/x").body("{}").send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.attempts(), 2);
        assert_eq!(server.requests(), 2);
        assert_eq!(server.connections(), 2);
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

    /// `Host` over TLS: over HTTP/1.1 every request carries exactly one, naming the host and
    /// the port unless it is the scheme's default (RFC 9112 3.2: a client MUST send Host in
    /// every HTTP/1.1 request; RFC 9110 7.2); over HTTP/2 the authority travels as
    /// `:authority` and no `Host` is sent beside it (RFC 9113 8.3.1). The core decides the
    /// value once; the transport only moves it for HTTP/2.
    pub(super) async fn the_host_goes_in_one_header_over_http_1_1_and_as_the_authority_over_http_2(
        b: Backend,
    ) {
        let h1 = FaultServer::start_tls_http1_only(FaultServer::always(Reply::json(200, ENTITY)));
        let client = b.client_trusting(config(&h1.url("")), h1.certificate_der().unwrap());
        client.get("/x").send().await.unwrap();
        let seen = h1.requests();
        assert_eq!(seen[0].version, "HTTP/1.1");
        let hosts: Vec<&str> = seen[0]
            .headers
            .iter()
            .filter(|(name, _)| name == "host")
            .map(|(_, value)| value.as_str())
            .collect();
        assert_eq!(hosts, [format!("localhost:{}", h1.addr().port())], "{b:?}");

        let h2 = FaultServer::start_tls(FaultServer::always(Reply::json(200, ENTITY)));
        let client = b.client_trusting(config(&h2.url("")), h2.certificate_der().unwrap());
        client.get("/x").send().await.unwrap();
        let seen = h2.requests();
        assert_eq!(seen[0].version, "HTTP/2");
        assert_eq!(seen[0].header("host"), None, "{b:?}");
    }

    /// Malformed chunked framing is an unrecoverable framing error (RFC 9112 7.1: `chunk-size =
    /// 1*HEXDIG`, and `chunk-data` is exactly `chunk-size` octets followed by CRLF; RFC 9112 8
    /// and 11.2 on incomplete and smuggled messages): a typed protocol error, never retried,
    /// even for a GET under the default retry policy. Four malformations after a valid first
    /// chunk: bad hex, a negative size, a `0x` prefix, and a chunk longer than its size. hyper:
    /// decode.rs, `read_size` refuses any byte but a hex digit, blank, `;` or CR ("Invalid
    /// chunk size line: Invalid Size") and `read_body_cr` a chunk not followed by CRLF
    /// ("Invalid chunk body CR"), both `io::ErrorKind::InvalidInput` (an overflowing size is
    /// `InvalidData`; only a close mid-body is `UnexpectedEof`).
    pub(super) async fn a_broken_chunk_is_a_protocol_error(b: Backend) {
        let cases = [
            ("bad hex", "5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"),
            ("negative size", "5\r\nhello\r\n-5\r\nworld\r\n0\r\n\r\n"),
            ("0x prefix", "5\r\nhello\r\n0x5\r\nworld\r\n0\r\n\r\n"),
            ("longer than declared", "5\r\nhello, world\r\n0\r\n\r\n"),
        ];
        let mut failures = Vec::new();
        for (name, wire) in cases {
            let server = FaultServer::start(FaultServer::always(
                Reply::status(200)
                    .header("content-type", "text/plain")
                    .body(wire)
                    .with_fault(Fault::RawChunked),
            ));
            let result = get(b, &server).await;
            let requests = server.requests().len();
            let outcome = match &result {
                Ok(response) => format!("Ok({} {:?})", response.status(), response.body()),
                Err(error) => format!(
                    "{:?} {:?} after {} attempt(s)",
                    transport_kind(error),
                    error.stop_reason(),
                    error.attempts()
                ),
            };
            let expected = format!(
                "{:?} {:?} after 1 attempt(s)",
                Some(TransportErrorKind::Protocol),
                Some(StopReason::NotRetryable)
            );
            if outcome != expected || requests != 1 {
                failures.push(format!("{name}: {outcome}, {requests} request(s)"));
            }
        }
        assert!(
            failures.is_empty(),
            "expected a protocol error, not retried:\n{}",
            failures.join("\n")
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
        // `/ok` answers 200, everything else 503.
        let server = FaultServer::start(Arc::new(|_, seen: &Seen| {
            if seen.path == "/ok" {
                Reply::status(200)
            } else {
                Reply::status(503)
            }
        }));
        // No reserve and 20 %: retries are allowed only as successes earn them.
        let budget = BudgetConfig::default().with_min_retries_per_sec(0);
        let config = config(&server.url(""))
            .with_budget(budget)
            .with_retry(RetryPolicy::standard().with_max_attempts(2));
        let client = b.client(config);
        // 10 successes earn 2 retries (10 * 0.2).
        for _ in 0..10 {
            client.get("/ok").send().await.unwrap();
        }
        let mut refused = 0;
        for _ in 0..20 {
            let error = client.get("/x").send().await.unwrap_err();
            if matches!(error, Error::RetryBudgetExhausted { .. }) {
                assert_eq!(error.stop_reason(), Some(StopReason::Budget));
                assert_eq!(error.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
                refused += 1;
            }
        }
        // 10 successes, then 20 failing calls of which 2 are retried: 32 requests, 18 refusals.
        assert_eq!(server.requests().len(), 32);
        assert_eq!(refused, 18);
    }

    pub(super) async fn a_failing_host_opens_the_circuit_and_the_upstream_sees_nothing_until_the_break_ends(
        b: Backend,
    ) {
        let server = FaultServer::start(FaultServer::always(Reply::status(503)));
        // Opens after 10 attempts that all failed; a 1 s break (doubling on a failed probe).
        let breaker = CircuitBreakerConfig::default()
            .with_min_throughput(10)
            .with_break_duration(Duration::from_secs(1))
            .with_max_break_duration(Duration::from_secs(4));
        let config = config(&server.url(""))
            .with_circuit_breaker(breaker)
            .with_retry(RetryPolicy::disabled());
        let client = b.client(config);
        for _ in 0..10 {
            let error = client.get("/x").send().await.unwrap_err();
            assert_eq!(error.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
        }
        let opened = Instant::now();
        for _ in 0..20 {
            let error = client.get("/x").send().await.unwrap_err();
            assert!(error.is_circuit_open(), "{error:?}");
            assert_eq!(error.attempts(), 0);
            assert!(!error.may_have_been_sent());
        }
        assert_eq!(
            server.requests().len(),
            10,
            "refused calls reached the upstream"
        );
        // After the break, one probe goes; it fails and the circuit re-opens (for 2 s).
        let left = Duration::from_secs(1).saturating_sub(opened.elapsed());
        sleep(b, left + ms(50)).await;
        let probe = client.get("/x").send().await.unwrap_err();
        assert_eq!(probe.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
        let refused = client.get("/x").send().await.unwrap_err();
        assert!(refused.is_circuit_open(), "{refused:?}");
        assert_eq!(server.requests().len(), 11);
    }

    pub(super) async fn a_429_with_retry_after_to_one_of_32_concurrent_calls_holds_the_other_31(
        b: Backend,
    ) {
        // The upstream throttles for 2 s from its first request, answering 429 with
        // `Retry-After: 2` (RFC 9110 section 10.2.3), then 200.
        let first: Arc<std::sync::OnceLock<Instant>> = Arc::default();
        let throttled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server = {
            let (first, throttled) = (first.clone(), throttled.clone());
            FaultServer::start(Arc::new(move |_, seen: &Seen| {
                let start = *first.get_or_init(|| seen.at);
                if seen.at.duration_since(start) < Duration::from_secs(2) {
                    throttled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Reply::status(429).header("retry-after", "2")
                } else {
                    Reply::json(200, ENTITY)
                }
            }))
        };
        let client = b.client(config(&server.url("")));
        let call = |client: egress_core::Client| async move { client.get("/x").send().await };
        let leader = b.join_all(vec![call(client.clone())]);
        let followers = async {
            // The other 31 start once the leader's 429 has arrived.
            while server.requests().is_empty() {
                sleep(b, ms(10)).await;
            }
            sleep(b, ms(200)).await;
            b.join_all((0..31).map(|_| call(client.clone())).collect())
                .await
        };
        let (leader, followers) = futures_lite::future::zip(leader, followers).await;
        assert!(leader.into_iter().chain(followers).all(|r| r.is_ok()));
        assert_eq!(throttled.load(std::sync::atomic::Ordering::SeqCst), 1);
        let seen = server.requests();
        assert_eq!(seen.len(), 33);
        let start = seen[0].at;
        assert!(
            seen[1..]
                .iter()
                .all(|s| s.at.duration_since(start) >= Duration::from_secs(2)),
            "a request went before retry_at"
        );
    }

    pub(super) async fn a_quota_of_20_per_second_holds_a_burst_of_100_calls(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let limit = RateLimitConfig::new("20/s".parse().unwrap(), 10);
        let client = b.client(config(&server.url("")).with_rate_limit(limit));
        let started = Instant::now();
        let calls = (0..100)
            .map(|_| {
                let client = client.clone();
                async move { client.get("/x").send().await }
            })
            .collect();
        let results = b.join_all(calls).await;
        assert!(results.iter().all(Result::is_ok));
        let mut arrivals: Vec<Instant> = server.requests().iter().map(|s| s.at).collect();
        arrivals.sort();
        assert_eq!(arrivals.len(), 100);
        // Over any window, at most 20/s * window + burst (10) arrived; the sockets may bunch
        // arrivals that left on time, so each window is widened by 50 ms.
        for (i, a) in arrivals.iter().enumerate() {
            for (j, z) in arrivals.iter().enumerate().skip(i) {
                let window = z.duration_since(*a) + ms(50);
                let allowed = (window.as_secs_f64() * 20.0).floor() as usize + 10;
                let arrived = j - i + 1;
                assert!(arrived <= allowed, "{arrived} arrivals in {window:?}");
            }
        }
        // The 100th slot is (100 - 10) / 20 = 4.5 s after the first call asked for one (the
        // first arrivals may come later than that: they open connections).
        let last = arrivals[99].duration_since(started);
        assert!(
            last + ms(5) >= ms(4_500) && last <= ms(4_500) + SLACK,
            "{last:?}"
        );
    }

    pub(super) async fn ratelimit_fields_with_no_quota_left_hold_the_next_call(b: Backend) {
        // draft-ietf-httpapi-ratelimit-headers-10, section 4: `r=0` leaves no quota until `t`.
        let server = FaultServer::start(FaultServer::script([
            Reply::json(200, ENTITY).header("ratelimit", r#""default";r=0;t=1"#),
            Reply::json(200, ENTITY),
        ]));
        let client = b.client(config(&server.url("")));
        client.get("/x").send().await.unwrap();
        client.get("/x").send().await.unwrap();
        assert_gaps(&server.requests(), &[Duration::from_secs(1)]);
    }

    // What crosses the wire, connections, phase timeouts and broken connections: scenarios
    // that each backend's own loopback file once repeated.

    pub(super) async fn a_successful_call_decodes_its_json_body(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let response = b
            .client(config(&server.url("")))
            .get("/entities/7")
            .send()
            .await
            .unwrap();
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
        assert_eq!(response.attempts(), 1);
        assert_eq!(response.version(), http::Version::HTTP_11);
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/entities/7");
        assert_eq!(seen[0].method, "GET");
        assert!(seen[0].header("user-agent").unwrap().starts_with("egress/"));
        assert_eq!(
            seen[0].header("content-type"),
            None,
            "no header the core did not ask for"
        );
    }

    pub(super) async fn a_post_body_and_its_headers_arrive_exactly_as_given(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(201, r#"{"id":"9"}"#)));
        let response = b
            .client(config(&server.url("")))
            .post("/entities?dry_run=false")
            .json(&serde_json::json!({"name": "a"}))
            .header("x-tenant", "acme")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let seen = &server.requests()[0];
        assert_eq!(seen.path, "/entities?dry_run=false");
        assert_eq!(seen.body.as_ref(), br#"{"name":"a"}"#);
        assert_eq!(seen.header("content-type"), Some("application/json"));
        assert_eq!(seen.header("x-tenant"), Some("acme"));
    }

    pub(super) async fn a_body_larger_than_one_write_arrives_whole_and_in_order(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(201, r#"{"id":"9"}"#)));
        // Several of hyper's write pieces, and not a multiple of them.
        let body: Vec<u8> = (0..300_007u32).map(|i| (i % 251) as u8).collect();
        let response = b
            .client(config(&server.url("")))
            .post("/entities")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let seen = &server.requests()[0];
        assert_eq!(seen.header("content-length"), Some("300007"));
        assert!(
            seen.body.as_ref() == body.as_slice(),
            "the body arrived altered"
        );
    }

    /// RFC 9110 9.1: methods are extensible; any valid token is sent as given.
    pub(super) async fn an_extension_method_is_sent_as_given(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, "{}")));
        let method = http::Method::from_bytes(b"FROBNICATE").unwrap();
        let response = b
            .client(config(&server.url("")))
            .request(method, "/x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(server.requests()[0].method, "FROBNICATE");
    }

    pub(super) async fn a_connection_is_reused_after_a_response_read_to_its_end(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let client = b.client(config(&server.url("")));
        for _ in 0..3 {
            client.get("/x").send().await.unwrap();
        }
        assert_eq!(server.requests().len(), 3);
        assert_eq!(
            server.connections(),
            1,
            "one pooled connection for three calls"
        );
    }

    /// RFC 9112 7.1: a chunked body ends with its last chunk; the connection is then ready
    /// for the next request.
    pub(super) async fn a_connection_is_reused_after_a_chunked_response_read_to_its_end(
        b: Backend,
    ) {
        let (base, connections) = raw_server(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\n\r\n\
             5\r\n{\"id\"\r\n6\r\n:\"ch\"}\r\n0\r\n\r\n",
            false,
        );
        let client = b.client(config(&base));
        for _ in 0..3 {
            let response = client.get("/x").send().await.unwrap();
            assert_eq!(response.json::<serde_json::Value>().unwrap()["id"], "ch");
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    pub(super) async fn with_keep_alive_off_every_call_opens_its_own_connection(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, "{}")));
        let mut config = config(&server.url(""));
        config.pool.max_idle_per_host = 0;
        let client = b.client(config);
        for _ in 0..2 {
            client.get("/x").send().await.unwrap();
        }
        assert_eq!(server.connections(), 2);
    }

    pub(super) async fn a_connect_that_never_completes_hits_the_connect_timeout(b: Backend) {
        let Ok(blackhole) = Blackhole::new() else {
            panic!("could not fill a loopback accept queue; the connect-timeout test needs one");
        };
        let config = config(&blackhole.url(""))
            .with_connect_timeout(ms(200))
            .with_retry(RetryPolicy::disabled());
        let started = Instant::now();
        let error = b.client(config).get("/x").send().await.unwrap_err();
        assert_timeout(&error, TimeoutKind::Connect);
        assert!(!error.may_have_been_sent());
        assert!(
            started.elapsed() < ms(200) + SLACK,
            "bounded by the connect timeout, not the attempt timeout: {:?}",
            started.elapsed()
        );
    }

    pub(super) async fn a_tls_handshake_that_never_completes_is_a_connect_timeout(b: Backend) {
        // Accepts and says nothing: the ClientHello is never answered.
        let silent = Silent::start();
        let config = config(&silent.url("https"))
            .with_connect_timeout(ms(200))
            .with_retry(RetryPolicy::disabled());
        let error = b.client(config).get("/x").send().await.unwrap_err();
        assert_timeout(&error, TimeoutKind::Connect);
        assert!(!error.may_have_been_sent());
    }

    /// hyper does not report when writing ends, so the head is due within min(write, read)
    /// of the attempt's start; 64 MiB cannot fit in the socket buffers of a peer that never
    /// reads.
    pub(super) async fn a_server_that_never_reads_the_request_hits_the_head_limit_of_min_write_read(
        b: Backend,
    ) {
        let silent = Silent::start();
        let config = config(&silent.url("http"))
            .with_write_timeout(ms(300))
            .with_retry(RetryPolicy::disabled());
        let started = Instant::now();
        let error = b
            .client(config)
            .put("/blobs/1")
            .body(vec![b'w'; 64 << 20])
            .send()
            .await
            .unwrap_err();
        assert_timeout(&error, TimeoutKind::Read);
        assert!(error.may_have_been_sent());
        assert!(
            started.elapsed() < ms(300) + SLACK,
            "{:?}",
            started.elapsed()
        );
    }

    /// The first answer comes after the read timeout: a client that pooled that connection
    /// would read it as the answer to the retry.
    pub(super) async fn a_retry_after_a_read_timeout_uses_a_new_connection_and_never_reads_the_late_answer(
        b: Backend,
    ) {
        let server = FaultServer::start(FaultServer::script([
            Reply::json(200, r#"{"id":"late"}"#).delay(ms(500)),
            Reply::json(200, r#"{"id":"fresh"}"#),
        ]));
        let config = config(&server.url("")).with_read_timeout(ms(200));
        let response = b.client(config).get("/x").send().await.unwrap();
        assert_eq!(response.json::<serde_json::Value>().unwrap()["id"], "fresh");
        assert_eq!(response.attempts(), 2);
        assert_eq!(server.connections(), 2);
    }

    pub(super) async fn a_stall_between_body_chunks_hits_the_read_timeout_and_a_get_is_retried(
        b: Backend,
    ) {
        let body = format!(r#"{{"id":"{}"}}"#, "x".repeat(100));
        let server = FaultServer::start(FaultServer::script([
            Reply::json(200, &body).with_fault(Fault::StallMidBody {
                after: 20,
                pause: Duration::from_secs(2),
            }),
            Reply::json(200, &body),
        ]));
        let config = config(&server.url("")).with_read_timeout(ms(300));
        let response = b.client(config).get("/x").send().await.unwrap();
        assert_eq!(response.attempts(), 2);
        assert_eq!(server.requests().len(), 2);
        assert_eq!(
            server.connections(),
            2,
            "the stalled connection is not reused"
        );
    }

    pub(super) async fn a_close_before_the_head_is_reported_as_closed_before_the_response(
        b: Backend,
    ) {
        let server = FaultServer::start(FaultServer::always(Reply::fault(Fault::CloseBeforeHead)));
        let config = config(&server.url("")).with_retry(RetryPolicy::disabled());
        let error = b.client(config).get("/x").send().await.unwrap_err();
        assert_eq!(
            transport_kind(&error),
            Some(TransportErrorKind::ClosedBeforeResponse),
            "{error:?}"
        );
    }

    pub(super) async fn a_reset_or_close_in_the_middle_of_the_body_is_closed_during_the_body(
        b: Backend,
    ) {
        let body = "y".repeat(4096);
        for fault in [
            Fault::ResetMidBody { after: 100 },
            Fault::CloseMidBody { after: 4 },
        ] {
            let server = FaultServer::start(FaultServer::always(
                Reply::json(200, &body).with_fault(fault.clone()),
            ));
            let config = config(&server.url("")).with_retry(RetryPolicy::disabled());
            let error = b.client(config).get("/x").send().await.unwrap_err();
            assert_eq!(
                transport_kind(&error),
                Some(TransportErrorKind::ClosedDuringBody),
                "{fault:?}: {error:?}"
            );
        }
    }

    pub(super) async fn clones_of_a_client_share_its_connections(b: Backend) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let client = b.client(config(&server.url("")));
        for _ in 0..3 {
            client.clone().get("/x").send().await.unwrap();
        }
        assert_eq!(server.connections(), 1);
    }

    /// RFC 9112 9.4 leaves the number of HTTP/1.1 connections to the client: concurrent calls
    /// each take one, and later calls reuse them instead of opening more.
    pub(super) async fn concurrent_calls_open_connections_that_later_calls_reuse(b: Backend) {
        let server =
            FaultServer::start(FaultServer::always(Reply::json(200, ENTITY).delay(ms(20))));
        let client = b.client(config(&server.url("")));
        for _ in 0..3 {
            let calls: Vec<_> = (0..8)
                .map(|_| {
                    let client = client.clone();
                    async move { client.get("/x").send().await.map(|r| r.status().as_u16()) }
                })
                .collect();
            for result in b.join_all(calls).await {
                assert_eq!(result.unwrap(), 200);
            }
        }
        assert_eq!(server.requests().len(), 24);
        assert_eq!(server.connections(), 8);
    }

    /// RFC 9112 9.6: `Connection: close` ends the connection after the response; the next call
    /// gets a new one.
    pub(super) async fn a_response_that_closes_its_connection_leaves_the_next_call_a_new_one(
        b: Backend,
    ) {
        let server = FaultServer::start(FaultServer::always(Reply::json(200, ENTITY)));
        let client = b.client(config(&server.url("")));
        client
            .get("/x")
            .header("connection", "close")
            .send()
            .await
            .unwrap();
        let response = client.get("/x").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(server.connections(), 2);
    }

    /// A server closes idle keep-alive connections on its own (RFC 9112 9.5); the pool must
    /// not hand such a connection to the next call. A POST without an idempotency key is never
    /// re-sent after it may have been sent, so it succeeds only on a live connection.
    pub(super) async fn a_connection_the_server_closed_while_idle_is_not_handed_to_the_next_call(
        b: Backend,
    ) {
        let (base, connections) = raw_server(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n\
             {\"id\":\"7\"}",
            true,
        );
        let client = b.client(config(&base));
        client.get("/x").send().await.unwrap();
        // Time for the connection's driver to see the server's close.
        sleep(b, ms(50)).await;
        let response = client.post("/x").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.attempts(), 1);
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// Hedging at p90 against an upstream slow (2 s) on every tenth request, normal (20 ms)
    /// otherwise. Asserted on structure, not speed: every call is answered by one of its own
    /// requests; a call whose first request met the slow replica was hedged, and a fast hedge
    /// won; the upstream saw at most the attempts the calls report (1 + hedge rate per call);
    /// and no loser's connection carried a later request (cancelled, not pooled half-read).
    pub(super) async fn hedging_at_p90_takes_the_slow_tenth_request_off_the_tail(b: Backend) {
        use egress_core::{HedgeAfter, HedgingConfig, Percentile};
        const CALLS: usize = 40;
        let slow = |index: usize| index % 10 == 9;
        let server = FaultServer::start(Arc::new(move |index, _: &Seen| {
            let delay = if slow(index) { ms(2000) } else { ms(20) };
            Reply::status(200).body(index.to_string()).delay(delay)
        }));
        let hedging =
            HedgingConfig::enabled(HedgeAfter::Percentile(Percentile::P90)).with_fallback(ms(100));
        let client = b.client(config(&server.url("")).with_hedging(hedging));
        let mut answers = Vec::new();
        for _ in 0..CALLS {
            let response = client.get("/x").send().await.unwrap();
            let id = response.correlation_id().to_string();
            let body = String::from_utf8(response.body().to_vec()).unwrap();
            answers.push((id, body.parse::<usize>().unwrap(), response.attempts()));
        }
        // The server numbers requests as they arrive; a request's index is its position here.
        let seen = server.requests();
        let requests_of = |id: &str| -> Vec<usize> {
            (0..seen.len())
                .filter(|i| seen[*i].header("x-correlation-id") == Some(id))
                .collect()
        };
        let mut slow_first = 0;
        let mut hedged = 0;
        for (id, winner, attempts) in &answers {
            let own = requests_of(id);
            // A hedge cancelled at once (the first attempt answered just after it started) may
            // never reach the server: it sees at most the attempts the call reports.
            assert!(own.len() as u32 <= *attempts, "call {id}: {own:?}");
            assert!(own.len() <= 2, "more than 1 + max_hedges requests: {own:?}");
            assert!(
                own.contains(winner),
                "call {id} answered by request {winner} of {own:?}"
            );
            hedged += usize::from(own.len() == 2);
            if slow(own[0]) {
                slow_first += 1;
                assert_eq!(own.len(), 2, "a slow first attempt was not hedged: {own:?}");
                if !slow(own[1]) {
                    assert_eq!(*winner, own[1], "the fast hedge did not win: {own:?}");
                }
            }
            // A loser was dropped mid-wait: its connection carries nothing after it.
            for loser in own.iter().filter(|i| *i != winner) {
                let conn = seen[*loser].connection;
                let reused = (loser + 1..seen.len()).find(|i| seen[*i].connection == conn);
                assert_eq!(reused, None, "the loser {loser}'s connection was reused");
            }
        }
        assert!(
            slow_first >= 3,
            "the slow replica met {slow_first} first attempts"
        );
        assert!(seen.len() <= answers.iter().map(|(_, _, a)| *a as usize).sum::<usize>());
        // About 10 % of normal calls pass the p90, plus the slow ones: far below half.
        assert!(hedged * 2 < CALLS, "{hedged} of {CALLS} calls hedged");
    }
}

parity!(
    hedging_at_p90_takes_the_slow_tenth_request_off_the_tail,
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
    a_body_delimited_by_the_close_is_read_whole,
    a_transfer_coding_not_ending_in_chunked_runs_until_the_close,
    an_unsolicited_101_ends_the_exchange_and_its_connection,
    an_early_413_during_a_large_upload_is_surfaced,
    a_get_or_head_without_content_sends_no_content_length,
    a_head_response_has_no_body_whatever_its_length,
    a_304_has_no_body_whatever_its_length,
    a_204_has_no_body_whatever_its_length,
    a_broken_chunk_is_a_protocol_error,
    an_idle_connection_is_closed_when_its_idle_timeout_passes,
    https_speaks_http_2_over_one_multiplexed_connection,
    a_post_whose_http_2_stream_is_refused_unprocessed_is_retried,
    after_an_http_2_goaway_the_next_call_opens_a_new_connection,
    a_post_on_a_stream_above_an_http_2_goaways_last_stream_is_sent_again,
    an_unregistered_status_is_read_like_any_other,
    a_header_value_that_is_not_ascii_is_kept_as_its_bytes,
    an_interim_response_before_the_answer_is_skipped,
    every_request_names_the_server_in_one_host_header,
    the_host_goes_in_one_header_over_http_1_1_and_as_the_authority_over_http_2,
    tls_with_a_trusted_certificate_succeeds,
    tls_with_an_untrusted_certificate_fails_without_retry,
    the_correlation_id_and_idempotency_key_are_identical_on_every_attempt,
    the_budget_refuses_retries_during_a_storm,
    a_failing_host_opens_the_circuit_and_the_upstream_sees_nothing_until_the_break_ends,
    a_429_with_retry_after_to_one_of_32_concurrent_calls_holds_the_other_31,
    a_quota_of_20_per_second_holds_a_burst_of_100_calls,
    ratelimit_fields_with_no_quota_left_hold_the_next_call,
    a_successful_call_decodes_its_json_body,
    a_post_body_and_its_headers_arrive_exactly_as_given,
    a_body_larger_than_one_write_arrives_whole_and_in_order,
    an_extension_method_is_sent_as_given,
    a_connection_is_reused_after_a_response_read_to_its_end,
    a_connection_is_reused_after_a_chunked_response_read_to_its_end,
    with_keep_alive_off_every_call_opens_its_own_connection,
    a_connect_that_never_completes_hits_the_connect_timeout,
    a_tls_handshake_that_never_completes_is_a_connect_timeout,
    a_server_that_never_reads_the_request_hits_the_head_limit_of_min_write_read,
    a_retry_after_a_read_timeout_uses_a_new_connection_and_never_reads_the_late_answer,
    a_stall_between_body_chunks_hits_the_read_timeout_and_a_get_is_retried,
    a_close_before_the_head_is_reported_as_closed_before_the_response,
    a_reset_or_close_in_the_middle_of_the_body_is_closed_during_the_body,
    clones_of_a_client_share_its_connections,
    concurrent_calls_open_connections_that_later_calls_reuse,
    a_response_that_closes_its_connection_leaves_the_next_call_a_new_one,
    a_connection_the_server_closed_while_idle_is_not_handed_to_the_next_call,
);

/// A raw HTTP/1.1 server (for framings the fault server does not send): on every connection it
/// answers each request head with `reply`, verbatim, and with `close` closes the connection
/// after the first answer (as servers do with idle keep-alive connections). Returns its base
/// URL and a count of connections; its threads end when the test process does. Requests must
/// have no body.
fn raw_server(reply: &'static str, close: bool) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    if stream.write_all(reply.as_bytes()).is_err() || close {
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                }
            });
        }
    });
    (base, connections)
}
