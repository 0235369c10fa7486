//! A client with a token source, against a scripted upstream in virtual time: the token
//! endpoint and the API answer from one script, in the order the client sends to them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use egress_core::rt::{BoxFuture, Clock, Sleeper};
use egress_core::test_util::{ManualClock, ScriptedTransport, SeededEntropy, block_on, hang, step};
use egress_core::{Client, Config, Runtime};
use egress_core::{ClientAuthMethod, FetchContext, OAuth2Config, Token, TokenError, TokenSource};

const TOKEN_URL: &str = "https://login.example.com/oauth2/token";
const SECRET: &str = "client-secret-0001";

fn token_json(token: &str, expires_in: u64) -> String {
    format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#)
}

fn oauth2() -> OAuth2Config {
    OAuth2Config::new(TOKEN_URL, "svc", SECRET.into()).with_scopes(["entities:read"])
}

fn client(upstream: &ScriptedTransport, oauth2: OAuth2Config) -> Client {
    Client::builder(
        Config::default().with_base_url("https://api.example.com"),
        upstream.runtime(),
    )
    .with_oauth2(oauth2)
    .build()
    .expect("the configuration is valid")
}

/// `WWW-Authenticate` of a revoked or expired token (RFC 6750 3.1).
const INVALID_TOKEN: &str = r#"Bearer realm="api", error="invalid_token""#;

fn uris(upstream: &ScriptedTransport) -> Vec<String> {
    upstream
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.uri.path()))
        .collect()
}

#[test]
fn the_first_call_fetches_a_token_and_later_calls_reuse_it() {
    let upstream = ScriptedTransport::new();
    upstream
        .push(step(200).json(&token_json("tok-1", 3600)))
        .push(step(200))
        .push(step(200));
    let client = client(&upstream, oauth2());
    block_on(client.get("/a").send()).unwrap();
    block_on(client.get("/b").send()).unwrap();
    assert_eq!(uris(&upstream), ["POST /oauth2/token", "GET /a", "GET /b"]);
    let seen = upstream.requests();
    // RFC 6749 4.4.2: the grant and the scope, form-encoded; 2.3.1: client_secret_basic.
    assert_eq!(
        seen[0].body.as_ref(),
        b"grant_type=client_credentials&scope=entities%3Aread"
    );
    assert_eq!(
        seen[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(
        seen[0]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    assert_eq!(seen[1].header("authorization"), Some("Bearer tok-1"));
    assert_eq!(seen[2].header("authorization"), Some("Bearer tok-1"));
}

#[test]
fn a_401_with_invalid_token_causes_exactly_one_refresh_and_one_resend_rfc_6750_3_1() {
    let upstream = ScriptedTransport::new();
    upstream
        .push(step(200).json(&token_json("tok-1", 3600)))
        .push(step(401).header("www-authenticate", INVALID_TOKEN))
        .push(step(200).json(&token_json("tok-2", 3600)))
        .push(step(201));
    let client = client(&upstream, oauth2());
    // A POST without an idempotency key: re-sent anyway, since a 401 proves it was not processed.
    let response = block_on(client.post("/entities").body("{}").send()).unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.attempts(), 2);
    assert_eq!(
        uris(&upstream),
        [
            "POST /oauth2/token",
            "POST /entities",
            "POST /oauth2/token",
            "POST /entities"
        ]
    );
    let seen = upstream.requests();
    assert_eq!(seen[1].header("authorization"), Some("Bearer tok-1"));
    assert_eq!(seen[3].header("authorization"), Some("Bearer tok-2"));
    // The same call: one correlation ID on both sends.
    assert_eq!(
        seen[1].header("x-correlation-id"),
        seen[3].header("x-correlation-id")
    );
}

#[test]
fn a_second_rejection_ends_the_call_with_the_401_and_never_loops() {
    let upstream = ScriptedTransport::new();
    upstream
        .push(step(200).json(&token_json("tok-1", 3600)))
        .push(step(401).header("www-authenticate", INVALID_TOKEN))
        .push(step(200).json(&token_json("tok-2", 3600)))
        .push(step(401).header("www-authenticate", INVALID_TOKEN))
        .push(step(200).json(&token_json("tok-3", 3600)))
        .push(step(200));
    let client = client(&upstream, oauth2());
    let error = block_on(client.get("/a").send()).unwrap_err();
    assert!(error.is_unauthorized());
    assert_eq!(error.attempts(), 2);
    assert_eq!(upstream.requests().len(), 4, "{:?}", uris(&upstream));
}

#[test]
fn a_401_without_invalid_token_is_an_answer_not_a_rejected_token() {
    // RFC 6750 3.1: a challenge without an error code (or another code) says nothing about the
    // token's validity, so it is not replaced.
    for challenge in [
        r#"Bearer realm="api""#,
        r#"Bearer error="insufficient_scope""#,
    ] {
        let upstream = ScriptedTransport::new();
        upstream
            .push(step(200).json(&token_json("tok-1", 3600)))
            .push(step(401).header("www-authenticate", challenge))
            .push(step(200));
        let client = client(&upstream, oauth2());
        let error = block_on(client.get("/a").send()).unwrap_err();
        assert!(error.is_unauthorized());
        assert_eq!(upstream.requests().len(), 2, "{challenge}");
        // The token was kept: the next call sends it without a token request.
        block_on(client.get("/b").send()).unwrap();
        assert_eq!(
            upstream.requests()[2].header("authorization"),
            Some("Bearer tok-1")
        );
    }
}

#[test]
fn a_wrong_client_secret_is_a_typed_final_error_after_one_token_request_rfc_6749_5_2() {
    let upstream = ScriptedTransport::new();
    upstream.push(
        step(401)
            .header("www-authenticate", r#"Basic realm="login""#)
            .json(
                r#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
            ),
    );
    let client = client(&upstream, oauth2());
    let error = block_on(client.get("/a").send()).unwrap_err();
    let token_error = error.token_error().expect("a token error");
    match token_error {
        TokenError::Refused { code, status, .. } => {
            assert_eq!(code, "invalid_client");
            assert_eq!(*status, 401);
        }
        other => panic!("{other:?}"),
    }
    assert!(token_error.is_final());
    assert!(!error.is_retryable());
    assert!(!error.may_have_been_sent());
    assert_eq!(error.attempts(), 0);
    assert!(error.correlation_id().is_some());
    assert_eq!(uris(&upstream), ["POST /oauth2/token"]);
    // Within the cooldown the next call fails the same way without another token request.
    let again = block_on(client.get("/a").send()).unwrap_err();
    assert!(again.token_error().is_some());
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn an_invalid_scope_answer_says_so_and_client_secret_post_sends_the_secret_in_the_body() {
    let upstream = ScriptedTransport::new();
    upstream.push(step(400).json(r#"{"error":"invalid_scope"}"#));
    let client = client(
        &upstream,
        oauth2().with_auth_method(ClientAuthMethod::ClientSecretPost),
    );
    let error = block_on(client.get("/a").send()).unwrap_err();
    assert_eq!(error.token_error().unwrap().type_name(), "invalid_scope");
    let seen = &upstream.requests()[0];
    assert_eq!(seen.header("authorization"), None);
    let body = String::from_utf8(seen.body.to_vec()).unwrap();
    assert!(body.contains("client_id=svc") && body.contains(&format!("client_secret={SECRET}")));
}

#[test]
fn a_transient_token_endpoint_failure_is_retried_by_the_token_request_itself() {
    let upstream = ScriptedTransport::new();
    upstream
        .push(step(503))
        .push(step(200).json(&token_json("tok-1", 3600)))
        .push(step(200));
    let client = client(&upstream, oauth2());
    block_on(client.get("/a").send()).unwrap();
    assert_eq!(
        uris(&upstream),
        ["POST /oauth2/token", "POST /oauth2/token", "GET /a"]
    );
}

#[test]
fn a_hanging_token_endpoint_ends_the_call_with_a_typed_error_within_its_deadline() {
    let upstream = ScriptedTransport::new();
    upstream.push(hang()).push(hang()).push(hang());
    let client = client(&upstream, oauth2());
    let started = upstream.clock().now();
    let error = block_on(client.get("/a").deadline(Duration::from_secs(4)).send()).unwrap_err();
    let took = upstream.clock().now() - started;
    assert!(error.token_error().is_some(), "{error:?}");
    assert!(error.is_timeout(), "{error:?}");
    assert!(took <= Duration::from_secs(4), "took {took:?}");
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| r.uri.path() == "/oauth2/token")
    );
}

#[test]
fn a_token_is_refreshed_ahead_of_expiry_and_an_expired_one_is_never_sent() {
    let upstream = ScriptedTransport::new();
    upstream
        .push(step(200).json(&token_json("tok-1", 100)))
        .push(step(200))
        .push(step(200))
        .push(step(200).json(&token_json("tok-2", 100)))
        .push(step(200))
        .push(step(200).json(&token_json("tok-3", 100)))
        .push(step(200));
    let client = client(
        &upstream,
        oauth2().with_refresh(egress_core::RefreshPolicy::default().with_jitter_percent(0)),
    );
    block_on(client.get("/a").send()).unwrap();
    // 100 s: 80 % is 80 s, 60 s ahead is 40 s, never before half: 50 s.
    upstream.clock().advance(Duration::from_secs(49));
    block_on(client.get("/b").send()).unwrap();
    upstream.clock().advance(Duration::from_secs(2));
    block_on(client.get("/c").send()).unwrap();
    // Past expiry of tok-2 (obtained at 51 s, expires at 151 s) without any call in between.
    upstream.clock().advance(Duration::from_secs(150));
    block_on(client.get("/d").send()).unwrap();
    let auth: Vec<Option<String>> = upstream
        .requests()
        .iter()
        .map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(uris(&upstream)[3], "POST /oauth2/token");
    assert_eq!(auth[1].as_deref(), Some("Bearer tok-1"));
    assert_eq!(auth[2].as_deref(), Some("Bearer tok-1"));
    assert_eq!(auth[4].as_deref(), Some("Bearer tok-2"));
    assert_eq!(auth[6].as_deref(), Some("Bearer tok-3"));
}

#[test]
fn the_client_secret_can_come_from_the_environment_and_a_missing_variable_is_a_config_error() {
    let upstream = ScriptedTransport::new();
    let config = OAuth2Config::from_env(TOKEN_URL, "svc", "EGRESS_TEST_UNSET_SECRET_VARIABLE");
    let error = Client::builder(Config::default(), upstream.runtime())
        .with_oauth2(config)
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "auth.oauth2.client_secret_env");
    assert!(error.reason().contains("EGRESS_TEST_UNSET_SECRET_VARIABLE"));
}

#[test]
fn an_auth_oauth2_section_of_the_configuration_gives_a_client_with_a_token_source() {
    let config: Config = serde_json::from_str(&format!(
        r#"{{"base_url": "https://api.example.com",
            "auth": {{"oauth2": {{"token_url": "{TOKEN_URL}", "client_id": "svc",
                                 "client_secret": "{SECRET}", "auth_method": "client_secret_post",
                                 "refresh": {{"failure_cooldown": "2s"}}}}}}}}"#
    ))
    .unwrap();
    let upstream = ScriptedTransport::new();
    upstream
        .push(step(200).json(&token_json("tok-1", 3600)))
        .push(step(200));
    let client = Client::new(config, upstream.runtime()).unwrap();
    block_on(client.get("/a").send()).unwrap();
    assert_eq!(
        upstream.requests()[1].header("authorization"),
        Some("Bearer tok-1")
    );
    // Unknown keys are refused, naming the section.
    let bad = serde_json::from_str::<Config>(
        r#"{"auth": {"oauth2": {"token_url": "https://x", "client_id": "a", "scope": "x"}}}"#,
    )
    .unwrap_err();
    assert!(bad.to_string().contains("auth.oauth2"), "{bad}");
    // The static forms still read as before.
    let bearer: Config =
        serde_json::from_str(r#"{"auth": {"kind": "bearer", "token": "t-123456"}}"#).unwrap();
    assert!(matches!(
        bearer.auth,
        Some(egress_core::Credentials::Bearer { .. })
    ));
}

/// A sleeper whose sleeps never end: calls waiting for a refresh wake only when it completes.
#[derive(Debug)]
struct NeverSleeper;

impl Sleeper for NeverSleeper {
    fn sleep_until(&self, _at: Instant) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// A token source whose fetches wait for a gate, counting them.
#[derive(Debug, Default)]
struct Gated {
    open: AtomicBool,
    fetches: AtomicUsize,
    wakers: Mutex<Vec<Waker>>,
}

impl Gated {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.wakers.lock().unwrap().drain(..).for_each(Waker::wake);
    }
}

impl TokenSource for Gated {
    fn fetch(&self, _ctx: FetchContext) -> BoxFuture<'_, Result<Token, TokenError>> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(std::future::poll_fn(move |cx| {
            if self.open.load(Ordering::SeqCst) {
                let value = format!("tok-{n}").into();
                return Poll::Ready(Ok(Token::bearer(value, Some(Duration::from_secs(60)))));
            }
            self.wakers.lock().unwrap().push(cx.waker().clone());
            Poll::Pending
        }))
    }
}

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Polls every future until all are done: a single-threaded executor for concurrent calls.
fn run_all<T>(
    mut futures: Vec<Pin<Box<dyn Future<Output = T> + '_>>>,
    between: impl Fn(usize),
) -> Vec<T> {
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    for round in 0..1000 {
        for (i, future) in futures.iter_mut().enumerate() {
            if results[i].is_none() {
                if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
                    results[i] = Some(v);
                }
            }
        }
        if results.iter().all(Option::is_some) {
            return results.into_iter().map(Option::unwrap).collect();
        }
        between(round);
    }
    panic!("the calls did not finish");
}

#[test]
fn a_hundred_concurrent_calls_at_token_expiry_make_one_token_request() {
    let clock = ManualClock::new();
    let upstream = ScriptedTransport::with_clock(clock.clone());
    for _ in 0..201 {
        upstream.push(step(200));
    }
    let runtime = Runtime::new(
        Arc::new(upstream.clone()),
        Arc::new(clock.clone()),
        Arc::new(NeverSleeper),
        Arc::new(SeededEntropy::new(1)),
    );
    let source = Arc::new(Gated::default());
    let client = Client::builder(
        Config::default().with_base_url("https://api.example.com"),
        runtime,
    )
    .with_token_source(source.clone())
    .build()
    .unwrap();
    // The first token...
    source.open();
    block_on(client.get("/warm").send()).unwrap();
    source.open.store(false, Ordering::SeqCst);
    // ...expires; a hundred calls arrive together.
    clock.advance(Duration::from_secs(60));
    let calls = (0..100)
        .map(|i| {
            Box::pin(client.get(&format!("/e/{i}")).send())
                as Pin<Box<dyn Future<Output = Result<egress_core::Response, egress_core::Error>>>>
        })
        .collect();
    let results = run_all(calls, |round| {
        if round == 2 {
            source.open();
        }
    });
    assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    for result in results {
        assert_eq!(result.unwrap().status(), 200);
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 101);
    assert!(
        seen[1..]
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer tok-2"))
    );
}

#[test]
fn a_call_whose_refresh_outlasts_its_deadline_ends_with_a_typed_error_and_the_next_call_takes_over()
{
    let upstream = ScriptedTransport::new();
    let source = Arc::new(Gated::default());
    // The instant sleeper moves time to each waiting call's deadline at once.
    let client = Client::builder(
        Config::default().with_base_url("https://api.example.com"),
        upstream.runtime(),
    )
    .with_token_source(source.clone())
    .build()
    .unwrap();
    let started = upstream.clock().now();
    let error = block_on(client.get("/a").deadline(Duration::from_secs(3)).send()).unwrap_err();
    assert!(
        matches!(error.token_error(), Some(TokenError::Deadline)),
        "{error:?}"
    );
    assert!(error.is_timeout());
    assert_eq!(upstream.clock().now() - started, Duration::from_secs(3));
    // The abandoned flight is taken over by the next call.
    source.open();
    upstream.push(step(200));
    let response = block_on(client.get("/a").send()).unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        Some("Bearer tok-2")
    );
}

#[test]
fn a_refresh_that_fails_after_a_rejection_ends_the_call_with_the_token_error_counting_the_sent_attempt()
 {
    let upstream = ScriptedTransport::new();
    upstream
        .push(step(200).json(&token_json("tok-1", 3600)))
        .push(step(401).header("www-authenticate", INVALID_TOKEN))
        .push(step(400).json(r#"{"error":"invalid_grant"}"#));
    let client = client(&upstream, oauth2());
    let error = block_on(client.get("/a").send()).unwrap_err();
    assert_eq!(error.token_error().unwrap().type_name(), "invalid_grant");
    assert_eq!(error.attempts(), 1);
    assert!(
        error.may_have_been_sent(),
        "the rejected attempt reached the API"
    );
    assert_eq!(upstream.requests().len(), 3);
}

#[test]
fn a_request_with_its_own_authorization_is_sent_as_it_is_without_a_token() {
    let upstream = ScriptedTransport::new();
    upstream.push(step(200));
    let client = client(&upstream, oauth2());
    let own = "own-token-123".into();
    block_on(client.get("/a").bearer_auth(&own).send()).unwrap();
    assert_eq!(uris(&upstream), ["GET /a"]);
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        Some("Bearer own-token-123")
    );
}

/// A sleeper whose sleeps end once its manual clock reaches their time (it never moves the
/// clock itself).
#[derive(Debug)]
struct ClockSleeper(ManualClock);

impl Sleeper for ClockSleeper {
    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()> {
        let clock = self.0.clone();
        Box::pin(std::future::poll_fn(move |_| {
            if clock.now() >= at {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }))
    }
}

#[test]
fn a_call_waiting_for_another_calls_refresh_gives_up_at_its_own_deadline() {
    let clock = ManualClock::new();
    let upstream = ScriptedTransport::with_clock(clock.clone());
    upstream.push(step(200));
    let runtime = Runtime::new(
        Arc::new(upstream.clone()),
        Arc::new(clock.clone()),
        Arc::new(ClockSleeper(clock.clone())),
        Arc::new(SeededEntropy::new(1)),
    );
    let source = Arc::new(Gated::default());
    let client = Client::builder(
        Config::default().with_base_url("https://api.example.com"),
        runtime,
    )
    .with_token_source(source.clone())
    .build()
    .unwrap();
    let start = clock.now();
    let ends = Arc::new(Mutex::new(Vec::new()));
    let call = |path: &'static str, deadline: u64| {
        let (client, clock, ends) = (client.clone(), clock.clone(), ends.clone());
        Box::pin(async move {
            let result = client
                .get(path)
                .deadline(Duration::from_secs(deadline))
                .send()
                .await;
            ends.lock().unwrap().push((path, clock.now() - start));
            result
        })
            as Pin<Box<dyn Future<Output = Result<egress_core::Response, egress_core::Error>>>>
    };
    // The first call refreshes (the token endpoint is slow); the second waits for it.
    let results = run_all(
        vec![call("/slow", 10), call("/hurried", 2)],
        |round| match round {
            0..=4 => clock.advance(Duration::from_secs(1)),
            5 => source.open(),
            _ => {}
        },
    );
    assert_eq!(
        source.fetches.load(Ordering::SeqCst),
        1,
        "one refresh for both"
    );
    assert_eq!(results[0].as_ref().unwrap().status(), 200);
    let error = results[1].as_ref().unwrap_err();
    assert!(
        matches!(error.token_error(), Some(TokenError::Deadline)),
        "{error:?}"
    );
    assert!(!error.may_have_been_sent());
    let ends = ends.lock().unwrap().clone();
    // The hurried call ended at its 2 s deadline, the slow one when the token came (5 s).
    assert_eq!(
        ends,
        [
            ("/hurried", Duration::from_secs(2)),
            ("/slow", Duration::from_secs(5))
        ]
    );
}

#[test]
fn dropping_the_call_that_refreshes_hands_the_refresh_to_the_next_call() {
    let clock = ManualClock::new();
    let upstream = ScriptedTransport::with_clock(clock.clone());
    upstream.push(step(200));
    let runtime = Runtime::new(
        Arc::new(upstream.clone()),
        Arc::new(clock.clone()),
        Arc::new(NeverSleeper),
        Arc::new(SeededEntropy::new(1)),
    );
    let source = Arc::new(Gated::default());
    let client = Client::builder(
        Config::default().with_base_url("https://api.example.com"),
        runtime,
    )
    .with_token_source(source.clone())
    .build()
    .unwrap();
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut first = Box::pin(client.get("/dropped").send());
    assert!(
        first.as_mut().poll(&mut cx).is_pending(),
        "it is refreshing"
    );
    let mut second = Box::pin(client.get("/kept").send());
    assert!(
        second.as_mut().poll(&mut cx).is_pending(),
        "it waits for the refresh"
    );
    drop(first); // cancels the token request in flight
    source.open();
    let response = block_on(second).unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        source.fetches.load(Ordering::SeqCst),
        2,
        "the second call took over"
    );
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(upstream.requests()[0].uri.path(), "/kept");
}
