//! The entities client over a scripted upstream in virtual time: request shapes, the mapping of
//! every failure to its `EntitiesError`, bounded concurrency and idempotent creation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use egress_core::ValidationKind;
use egress_core::bytes::Bytes;
use egress_core::http::Method;
use egress_core::rt::AttemptRequest;
use egress_core::rt::{BoxFuture, Sleeper, Transport};
use egress_core::test_util::{
    ScriptedTransport, SeededEntropy, Step, WALL_EPOCH_SECS, block_on, fail, hang, step,
};
use egress_core::{Backoff, JitterMode, RetryPolicy};
use egress_core::{Client, Config, IdempotencyKey, Runtime, TransportError, TransportErrorKind};
use egress_vendors::entities::{
    EntitiesClient, EntitiesError, Entity, EntityId, EntityStatus, NewEntity,
};

const BASE: &str = "https://entities.example.com/v1";

fn config() -> Config {
    let backoff = Backoff::default().with_jitter(JitterMode::None);
    Config::default()
        .with_base_url(BASE)
        .with_retry(RetryPolicy::standard().with_backoff(backoff))
}

fn upstream(steps: impl IntoIterator<Item = Step>) -> (ScriptedTransport, EntitiesClient) {
    let transport = ScriptedTransport::new();
    for s in steps {
        transport.push(s);
    }
    let client = transport.client(config()).expect("test config is valid");
    (transport, EntitiesClient::new(client))
}

fn id(s: &str) -> EntityId {
    s.parse().expect("test ids are valid")
}

fn payload(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","name":"Widget {id}","status":"active","version":3,"tags":["blue"],"extra":true}}"#
    )
}

fn found(id: &str) -> Step {
    step(200).json(&payload(id))
}

fn wall(after: Duration) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_EPOCH_SECS) + after
}

#[track_caller]
fn get_err(steps: impl IntoIterator<Item = Step>) -> (ScriptedTransport, EntitiesError) {
    let (transport, entities) = upstream(steps);
    let error = block_on(entities.get_entity(&id("ent_7"))).expect_err("expected an error");
    (transport, error)
}

#[test]
fn get_entity_sends_one_get_and_maps_the_payload_to_an_entity() {
    let (transport, entities) = upstream([found("ent_7")]);
    let entity = block_on(entities.get_entity(&id("ent_7"))).unwrap();
    assert_eq!(entity.id, id("ent_7"));
    assert_eq!(entity.name, "Widget ent_7");
    assert_eq!(entity.status, EntityStatus::Active);
    assert_eq!(entity.version, 3);
    assert_eq!(entity.tags, ["blue"]);
    let requests = transport.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, Method::GET);
    assert_eq!(
        requests[0].uri.to_string(),
        format!("{BASE}/entities/ent_7")
    );
    assert!(requests[0].header("x-correlation-id").is_some());
}

#[test]
fn a_transient_503_is_retried_before_the_entity_is_returned() {
    let (transport, entities) = upstream([step(503), found("ent_7")]);
    let entity = block_on(entities.get_entity(&id("ent_7"))).unwrap();
    assert_eq!(entity.id, id("ent_7"));
    assert_eq!(transport.requests().len(), 2);
}

#[test]
fn a_404_maps_to_not_found_with_the_id_and_is_not_retried() {
    let (transport, error) = get_err([step(404), found("ent_7")]);
    assert!(
        matches!(&error, EntitiesError::NotFound(i) if *i == id("ent_7")),
        "{error:?}"
    );
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(error.to_string(), "entity ent_7 not found");
}

#[test]
fn a_retry_after_past_the_deadline_maps_to_rate_limited_at_once_with_its_time() {
    let (transport, error) = get_err([step(429).header("retry-after", "120"), found("ent_7")]);
    let EntitiesError::RateLimited { retry_at, source } = &error else {
        panic!("expected RateLimited, got {error:?}");
    };
    assert_eq!(*retry_at, Some(wall(Duration::from_secs(120))));
    assert_eq!(source.attempts(), 1);
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(transport.clock().elapsed(), Duration::ZERO);
}

#[test]
fn a_429_on_every_attempt_without_a_hint_maps_to_rate_limited_without_a_time() {
    let (transport, error) = get_err([step(429), step(429), step(429)]);
    assert!(
        matches!(error, EntitiesError::RateLimited { retry_at: None, .. }),
        "{error:?}"
    );
    assert_eq!(transport.requests().len(), 3);
}

#[test]
fn repeated_503s_map_to_unavailable_after_every_attempt() {
    let (transport, error) = get_err([step(503), step(503), step(503)]);
    let EntitiesError::Unavailable { source } = &error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert_eq!(source.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(transport.requests().len(), 3);
    assert!(error.correlation_id().is_some());
}

#[test]
fn an_upstream_that_never_answers_maps_to_unavailable_at_the_deadline() {
    let (transport, error) = get_err([hang(), hang(), hang()]);
    let EntitiesError::Unavailable { source } = &error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert!(source.is_timeout());
    // Three attempts of 10 s each, the last one cut by the 30 s deadline.
    assert_eq!(transport.requests().len(), 3);
    assert_eq!(transport.clock().elapsed(), Duration::from_secs(30));
}

#[test]
fn refused_connections_map_to_unavailable() {
    let refused = || fail(TransportErrorKind::ConnectRefused);
    let (_, error) = get_err([refused(), refused(), refused()]);
    assert!(
        matches!(error, EntitiesError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(!error.upstream().unwrap().may_have_been_sent());
}

#[test]
fn a_field_of_the_wrong_type_maps_to_invalid_payload_with_its_json_path() {
    let body = r#"{"id":"ent_7","name":"Widget","status":"active","version":"three"}"#;
    let (transport, error) = get_err([step(200).json(body)]);
    let EntitiesError::InvalidPayload {
        path,
        message,
        source,
    } = &error
    else {
        panic!("expected InvalidPayload, got {error:?}");
    };
    assert_eq!(path.as_deref(), Some("version"));
    assert!(message.contains("invalid type"), "{message}");
    assert!(source.validation().is_some());
    // Validation is never retried.
    assert_eq!(transport.requests().len(), 1);
}

#[test]
fn a_failed_semantic_check_maps_to_invalid_payload_with_its_json_path() {
    let body = r#"{"id":"ent_7","name":"Widget","status":"active","version":1,"tags":["a",""]}"#;
    let (_, error) = get_err([step(200).json(body)]);
    assert!(
        matches!(&error, EntitiesError::InvalidPayload { path: Some(p), .. } if p == "tags[1]"),
        "{error:?}"
    );
    let body = r#"{"id":"ent_7","name":"Widget","status":"deleted","version":1}"#;
    let (_, error) = get_err([step(200).json(body)]);
    assert!(
        matches!(&error, EntitiesError::InvalidPayload { path: Some(p), .. } if p == "status"),
        "{error:?}"
    );
}

#[test]
fn a_payload_about_another_entity_maps_to_invalid_payload_at_id() {
    let (_, error) = get_err([found("ent_8")]);
    let EntitiesError::InvalidPayload {
        path,
        message,
        source,
    } = &error
    else {
        panic!("expected InvalidPayload, got {error:?}");
    };
    assert_eq!(path.as_deref(), Some("id"));
    assert!(message.contains("ent_8"), "{message}");
    assert_eq!(source.attempts(), 1);
    assert!(source.correlation_id().is_some());
    assert_eq!(
        error.to_string(),
        format!("invalid entity payload at id: {message}")
    );
}

#[test]
fn a_payload_about_another_entity_carries_the_real_bodys_excerpt_and_the_calls_correlation_id() {
    let (transport, entities) = upstream([step(503), found("ent_8")]);
    let error = block_on(entities.get_entity(&id("ent_7"))).expect_err("expected an error");
    let EntitiesError::InvalidPayload { source, .. } = &error else {
        panic!("expected InvalidPayload, got {error:?}");
    };
    let validation = source.validation().expect("a validation error");
    assert_eq!(validation.kind(), ValidationKind::Semantic);
    assert_eq!(validation.path(), Some("id"));
    assert_eq!(
        validation.excerpt(),
        payload("ent_8"),
        "the excerpt is the response's body, not a made-up document"
    );
    let requests = transport.requests();
    assert_eq!(requests.len(), 2);
    let sent = requests[1]
        .header("x-correlation-id")
        .expect("an id is sent");
    assert_eq!(error.correlation_id().map(|c| c.as_str()), Some(sent));
    assert_eq!(source.attempts(), 2, "the 503 and the answer");
    assert!(source.may_have_been_sent());
    assert!(!source.is_retryable());
}

#[test]
fn a_secret_in_the_body_is_masked_in_the_excerpt_of_a_semantic_error() {
    let body =
        r#"{"id":"ent_8","name":"Widget","status":"active","version":1,"password":"hunter2"}"#;
    let (_, error) = get_err([step(200).json(body)]);
    let excerpt = error
        .upstream()
        .and_then(|e| e.validation())
        .map(|v| v.excerpt().to_owned())
        .expect("a validation error");
    assert!(excerpt.contains(r#""id":"ent_8""#), "{excerpt}");
    assert!(!excerpt.contains("hunter2"), "the secret leaked: {excerpt}");
}

#[test]
fn a_response_that_is_not_json_maps_to_invalid_payload_without_a_path() {
    let (_, error) = get_err([step(200).header("content-type", "text/html").body("<html>")]);
    assert!(
        matches!(error, EntitiesError::InvalidPayload { path: None, .. }),
        "{error:?}"
    );
}

#[test]
fn a_401_or_403_maps_to_unauthorized() {
    for status in [401, 403] {
        let (transport, error) = get_err([step(status), found("ent_7")]);
        assert!(
            matches!(error, EntitiesError::Unauthorized { .. }),
            "{status}: {error:?}"
        );
        assert_eq!(transport.requests().len(), 1);
    }
}

#[test]
fn any_other_failure_maps_to_upstream_with_the_core_error() {
    let (_, error) = get_err([step(400).json(r#"{"error":"bad"}"#)]);
    let EntitiesError::Upstream(source) = &error else {
        panic!("expected Upstream, got {error:?}");
    };
    assert_eq!(source.status().map(|s| s.as_u16()), Some(400));
    let (_, error) = get_err([fail(TransportErrorKind::Tls)]);
    assert!(matches!(error, EntitiesError::Upstream(_)), "{error:?}");
}

#[test]
fn get_entities_keeps_the_input_order_and_reports_each_failure_in_its_place() {
    let (transport, entities) =
        upstream([found("a"), step(404), step(503), found("c"), found("d")]);
    let ids = [id("a"), id("b"), id("c"), id("d")];
    let results = block_on(entities.get_entities(&ids));
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap().id, id("a"));
    assert!(matches!(&results[1], Err(EntitiesError::NotFound(i)) if *i == id("b")));
    // The 503 for "c" was retried and succeeded.
    assert_eq!(results[2].as_ref().unwrap().id, id("c"));
    assert_eq!(results[3].as_ref().unwrap().id, id("d"));
    assert_eq!(transport.requests().len(), 5);
}

#[test]
fn get_entities_of_no_ids_sends_nothing() {
    let (transport, entities) = upstream([]);
    assert!(block_on(entities.get_entities(&[])).is_empty());
    assert!(transport.requests().is_empty());
}

/// A transport that delays each answer of a [`ScriptedTransport`] by a scripted number of
/// yields (so that requests finish out of order) and records how many are in flight.
#[derive(Debug)]
struct Gate {
    inner: ScriptedTransport,
    yields: Mutex<Vec<usize>>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Transport for Gate {
    fn send(
        &self,
        attempt: AttemptRequest,
    ) -> BoxFuture<'_, Result<egress_core::http::Response<Bytes>, TransportError>> {
        // The scripted transport records the request and answers at once; the gate holds the
        // answer back for a few polls.
        let answer = self.inner.send(attempt);
        let yields = {
            let mut yields = self.yields.lock().unwrap();
            if yields.is_empty() {
                0
            } else {
                yields.remove(0)
            }
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let in_flight = Arc::clone(&self.in_flight);
        Box::pin(async move {
            let result = answer.await;
            for _ in 0..yields {
                yield_now().await;
            }
            in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        })
    }
}

/// Pending once (waking itself at once), then ready.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// A sleeper that never fires: attempts end only when the transport answers.
#[derive(Debug)]
struct NeverSleeper;

impl Sleeper for NeverSleeper {
    fn sleep_until(&self, _: std::time::Instant) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

#[test]
fn get_entities_never_has_more_requests_in_flight_than_its_limit() {
    let inner = ScriptedTransport::new();
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    for name in names {
        inner.push(found(name));
    }
    let gate = Arc::new(Gate {
        inner: inner.clone(),
        // "a" is the slowest, so later requests finish first and take its slot's turn.
        yields: Mutex::new(vec![6, 0, 2, 0, 3, 1, 0]),
        in_flight: Arc::default(),
        peak: Arc::default(),
    });
    let runtime = Runtime::new(
        gate.clone(),
        Arc::new(inner.clock().clone()),
        Arc::new(NeverSleeper),
        Arc::new(SeededEntropy::new(7)),
    );
    let client = Client::new(config(), runtime).unwrap();
    let entities = EntitiesClient::new(client).with_concurrency(3);
    let ids: Vec<EntityId> = names.iter().map(|n| id(n)).collect();

    let results = block_on(entities.get_entities(&ids));

    let got: Vec<EntityId> = results.into_iter().map(|r| r.unwrap().id).collect();
    assert_eq!(got, ids);
    assert_eq!(gate.peak.load(Ordering::SeqCst), 3);
    assert_eq!(gate.in_flight.load(Ordering::SeqCst), 0);
    // Requests start in the input's order as slots free up.
    let paths: Vec<String> = inner
        .requests()
        .iter()
        .map(|r| r.uri.path().to_owned())
        .collect();
    let expected: Vec<String> = names.iter().map(|n| format!("/v1/entities/{n}")).collect();
    assert_eq!(paths, expected);
}

#[test]
fn create_entity_posts_json_with_one_idempotency_key_for_every_attempt() {
    let (transport, entities) = upstream([
        fail(TransportErrorKind::ClosedBeforeResponse),
        step(201).json(&payload("ent_9")),
    ]);
    let new = NewEntity::new("Gadget").with_tags(["red"]);
    let entity: Entity = block_on(entities.create_entity(&new)).unwrap();
    assert_eq!(entity.id, id("ent_9"));
    let requests = transport.requests();
    assert_eq!(requests.len(), 2, "a reset POST with a key is retried");
    assert_eq!(requests[0].method, Method::POST);
    assert_eq!(requests[0].uri.to_string(), format!("{BASE}/entities"));
    assert_eq!(
        requests[0].body.as_ref(),
        br#"{"name":"Gadget","tags":["red"]}"#
    );
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    let key = requests[0]
        .header("idempotency-key")
        .expect("a key is sent");
    assert_eq!(requests[1].header("idempotency-key"), Some(key));
}

#[test]
fn create_entity_with_key_sends_the_callers_key() {
    let (transport, entities) = upstream([step(201).json(&payload("ent_9"))]);
    let key = IdempotencyKey::new("order-42").unwrap();
    block_on(entities.create_entity_with_key(&NewEntity::new("Gadget"), key)).unwrap();
    assert_eq!(
        transport.requests()[0].header("idempotency-key"),
        Some("order-42")
    );
}

#[test]
fn the_futures_of_the_client_are_send_so_any_executor_can_spawn_them() {
    fn assert_send<T: Send>(_: &T) {}
    let (_, entities) = upstream([]);
    let ids = [id("a")];
    assert_send(&entities.get_entity(&ids[0]));
    assert_send(&entities.get_entities(&ids));
    assert_send(&entities.create_entity(&NewEntity::new("x")));
}
