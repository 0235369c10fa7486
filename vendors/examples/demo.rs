//! The egress demo: the `entities` vendor client against an embedded flaky upstream on loopback,
//! through a scripted story, with a readable timeline of every call and a summary table.
//!
//! ```text
//! cargo run -p egress-vendors --example demo                      # tokio backend, embedded upstream
//! cargo run -p egress-vendors --example demo -- --backend async-std
//! cargo run -p egress-vendors --example demo -- --upstream http://127.0.0.1:8080
//! cargo run -p egress-vendors --example demo -- --json            # events as JSON lines
//! ```
//!
//! The timeline comes from egress's own telemetry: a small `tracing` layer listens to the
//! attempt spans, the retry-decision events and the events across calls (circuit state changes,
//! holds, waits), exactly as a service's log pipeline would. The last two stories show the
//! circuit breaker (a failing host: 30 calls, 10 reach it) and the host-wide hold (one 429 with
//! `Retry-After: 1` holds 15 concurrent calls), each with the counts the upstream saw.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egress_core::{BudgetConfig, HedgeAfter, HedgingConfig, RetryPolicy};
use egress_core::{CircuitBreakerConfig, Client, Config};
use egress_tests::server::{Fault, FaultServer, Reply, Seen};
use egress_vendors::entities::{EntitiesClient, EntitiesError, EntityId, NewEntity};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

// ---------------------------------------------------------------------------------------------
// Command line

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Tokio,
    AsyncStd,
}

struct Args {
    backend: Backend,
    upstream: Option<String>,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        backend: Backend::Tokio,
        upstream: None,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--backend" => {
                args.backend = match it.next().as_deref() {
                    Some("tokio") => Backend::Tokio,
                    Some("async-std") => Backend::AsyncStd,
                    Some(other) => {
                        return Err(format!("--backend takes tokio or async-std, not {other:?}"));
                    }
                    None => return Err("--backend takes tokio or async-std".into()),
                }
            }
            "--upstream" => args.upstream = Some(it.next().ok_or("--upstream takes a URL")?),
            "--json" => args.json = true,
            "--help" | "-h" => {
                return Err(
                    "usage: demo [--backend tokio|async-std] [--upstream URL] [--json]".into(),
                );
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------------
// The embedded upstream: an entities service with a bad day, scripted per path.

fn entity_json(id: &str, name: &str) -> String {
    format!(r#"{{"id":"{id}","name":"{name}","status":"active","version":3,"tags":["demo"]}}"#)
}

fn upstream() -> FaultServer {
    let counts: Mutex<HashMap<String, usize>> = Mutex::default();
    // When the upstream first answered `/entities/busy-*`: it throttles them for 1 s from then.
    let busy_since: Mutex<Option<Instant>> = Mutex::default();
    FaultServer::start(Arc::new(move |_, seen: &Seen| {
        let n = {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts
                .entry(format!("{} {}", seen.method, seen.path))
                .or_insert(0);
            *n += 1;
            *n
        };
        match (seen.method.as_str(), seen.path.as_str(), n) {
            ("GET", "/entities/e-1", 1 | 2) => Reply::json(503, r#"{"error":"overloaded"}"#),
            ("GET", "/entities/e-1", _) => Reply::json(200, &entity_json("e-1", "Ada")),
            ("GET", "/entities/e-2", 1) => {
                Reply::json(429, r#"{"error":"slow down"}"#).header("retry-after", "1")
            }
            ("GET", "/entities/e-2", _) => Reply::json(200, &entity_json("e-2", "Brian")),
            ("GET", "/entities/e-3", 1) => {
                Reply::json(200, &entity_json("e-3", "Cleo")).delay(Duration::from_secs(2))
            }
            ("GET", "/entities/e-3", _) => Reply::json(200, &entity_json("e-3", "Cleo")),
            // One slow replica: the first request waits 2 s, a hedge is answered at once.
            ("GET", "/entities/e-6", 1) => {
                Reply::json(200, &entity_json("e-6", "Finn")).delay(Duration::from_secs(2))
            }
            ("GET", "/entities/e-6", _) => Reply::json(200, &entity_json("e-6", "Finn")),
            ("GET", "/entities/e-4", _) => Reply::json(
                200,
                r#"{"id":"e-4","name":"Dora","status":"active","version":3,"tags":["demo",7]}"#,
            ),
            ("GET", "/entities/e-404", _) => Reply::json(404, r#"{"error":"no such entity"}"#),
            ("POST", "/entities", 1) => Reply::fault(Fault::ResetBeforeHead),
            ("POST", "/entities", _) => Reply::json(201, &entity_json("e-5", "Eve")),
            ("GET", path, _)
                if path.starts_with("/entities/storm-") || path.starts_with("/entities/down-") =>
            {
                Reply::json(503, r#"{"error":"down"}"#)
            }
            ("GET", path, _) if path.starts_with("/entities/busy-") => {
                let since = *busy_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(seen.at);
                if seen.at.duration_since(since) < Duration::from_secs(1) {
                    Reply::json(429, r#"{"error":"slow down"}"#).header("retry-after", "1")
                } else {
                    let id = path.trim_start_matches("/entities/");
                    Reply::json(200, &entity_json(id, "Busy"))
                }
            }
            _ => Reply::json(404, r#"{"error":"unknown route"}"#),
        }
    }))
}

// ---------------------------------------------------------------------------------------------
// The timeline: a tracing layer that turns egress's telemetry into demo events.

#[derive(Clone, Debug, serde::Serialize)]
struct Event_ {
    story: String,
    t_ms: u128,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    /// The call's number within a story of many calls (the storm).
    #[serde(skip_serializing_if = "Option::is_none")]
    call: Option<usize>,
}

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[derive(Clone, Default)]
struct Timeline {
    inner: Arc<Mutex<TimelineState>>,
}

#[derive(Default)]
struct TimelineState {
    story: String,
    started: Option<Instant>,
    events: Vec<Event_>,
    attempts: HashMap<Id, u64>,
}

impl Timeline {
    fn begin(&self, story: &str) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.story = story.to_owned();
        s.started = Some(Instant::now());
        s.events.clear();
    }

    fn take(&self) -> Vec<Event_> {
        std::mem::take(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()).events)
    }

    fn push(&self, event: &'static str, attempt: Option<u64>, f: &Fields) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let t_ms = s.started.map_or(0, |t| t.elapsed().as_millis());
        let get = |k: &str| f.0.get(k).cloned().filter(|v| !v.is_empty());
        let e = Event_ {
            story: s.story.clone(),
            t_ms,
            event,
            attempt,
            status: get("http.response.status_code"),
            error: get("error.type"),
            reason: get("reason")
                .or_else(|| get("state"))
                .or_else(|| get("stop"))
                .or_else(|| get("validation.kind")),
            wait_ms: get("delay_ms")
                .or_else(|| get("until_ms"))
                .or_else(|| get("after_ms"))
                .and_then(|v| v.parse().ok()),
            source: get("delay_source"),
            path: get("json.path"),
            call: None,
        };
        // The same value twice says nothing more (`"status":"503","error":"503"`).
        let mut e = e;
        if e.error.is_some() && e.error == e.status {
            e.error = None;
        }
        s.events.push(e);
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Timeline {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() != "egress.attempt" {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        let n =
            f.0.get("egress.attempt")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .attempts
            .insert(id.clone(), n);
        self.push("attempt_sent", Some(n), &f);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let message = f.0.get("message").cloned().unwrap_or_default();
        let parent = event
            .parent()
            .cloned()
            .or_else(|| ctx.current_span().id().cloned());
        let attempt = parent.and_then(|id| {
            self.inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .attempts
                .get(&id)
                .copied()
        });
        match message.as_str() {
            "attempt finished" => self.push("attempt_finished", attempt, &f),
            "retrying" => self.push("retry", None, &f),
            "hedging" => {
                let n = f.0.get("egress.attempt").and_then(|v| v.parse().ok());
                self.push("hedge", n, &f)
            }
            "call succeeded" => self.push("succeeded", None, &f),
            "circuit state changed" => self.push("circuit", None, &f),
            "host held" => self.push("hold", None, &f),
            "waiting" => self.push("wait", None, &f),
            m if m.starts_with("call failed") => self.push("failed", None, &f),
            m if m.starts_with("call answered") => self.push("answered", None, &f),
            m if m.starts_with("response failed validation") => {
                self.push("validation_failed", None, &f)
            }
            _ => {}
        }
    }
}

/// Why retrying stopped, in the words of the docs (`StopReason`'s text is terse).
fn stop_in_words(stop: Option<&str>) -> String {
    match stop {
        Some("not retryable") => "the failure is final, a retry would not help".to_owned(),
        Some("attempts exhausted") => "every allowed attempt was made".to_owned(),
        Some("retry budget exhausted") => {
            "the retry budget refused a retry (retries are limited per host)".to_owned()
        }
        Some("deadline") => "the call's deadline has passed".to_owned(),
        Some("not idempotent") => "the request may have been sent and is not idempotent".to_owned(),
        Some("rate limited") => "the server asked to come back later than the deadline".to_owned(),
        Some(other) => other.to_owned(),
        None => "it is final".to_owned(),
    }
}

fn print_timeline(events: &[Event_], json: bool) {
    for e in events {
        if json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
            continue;
        }
        let t = format!("+{}ms", e.t_ms);
        let line = match e.event {
            "attempt_sent" => format!("attempt {} sent", e.attempt.unwrap_or(0)),
            "attempt_finished" => {
                let what = e
                    .error
                    .clone()
                    .filter(|err| e.status.as_deref() != Some(err.as_str()));
                match (&e.status, what) {
                    (Some(s), _) => format!("attempt {} -> {s}", e.attempt.unwrap_or(0)),
                    (None, Some(err)) => format!("attempt {} -> {err}", e.attempt.unwrap_or(0)),
                    _ => format!("attempt {} done", e.attempt.unwrap_or(0)),
                }
            }
            "retry" => format!(
                "decision: retry ({}), wait {}ms [{}]",
                e.reason.clone().unwrap_or_default(),
                e.wait_ms.unwrap_or(0),
                e.source.clone().unwrap_or_default()
            ),
            "hedge" => format!(
                "decision: hedge, attempt {} goes beside one silent for {}ms",
                e.attempt.unwrap_or(0),
                e.wait_ms.unwrap_or(0)
            ),
            "succeeded" => "decision: done, a 2xx response".to_owned(),
            "answered" => format!(
                "decision: done, the answer {}",
                e.status
                    .clone()
                    .or_else(|| e.error.clone())
                    .unwrap_or_default()
            ),
            "validation_failed" => format!(
                "validation failed: {} at {}",
                e.reason.clone().unwrap_or_default(),
                e.path.clone().unwrap_or_else(|| "the root".into())
            ),
            "circuit" => format!(
                "circuit {}{}",
                e.reason.clone().unwrap_or_default(),
                e.wait_ms
                    .map(|ms| format!(" for {ms}ms"))
                    .unwrap_or_default()
            ),
            "hold" => format!(
                "host held ({}) for {}ms",
                e.reason.clone().unwrap_or_default(),
                e.wait_ms.unwrap_or(0)
            ),
            "wait" => format!(
                "waiting {}ms [{}]",
                e.wait_ms.unwrap_or(0),
                e.reason.clone().unwrap_or_default()
            ),
            "failed" => format!(
                "the call ends without another attempt: {} (error: {})",
                stop_in_words(e.reason.as_deref()),
                e.status
                    .as_ref()
                    .map(|s| format!("status {s}"))
                    .or_else(|| e.error.clone())
                    .unwrap_or_default()
            ),
            other => other.to_owned(),
        };
        println!("  {t:>8}  {line}");
    }
}

// ---------------------------------------------------------------------------------------------
// Backends

/// The demo's retry budget: the default, with a reserve of 1 retry/s so that the storm meets it.
fn demo_budget() -> BudgetConfig {
    BudgetConfig::default().with_min_retries_per_sec(1)
}

/// The entities client's base client on `backend`.
fn build(backend: Backend, config: Config) -> Result<Client, egress_core::ConfigError> {
    match backend {
        Backend::Tokio => egress_tokio::Builder::new(config)
            .with_service("entities")
            .build(),
        Backend::AsyncStd => egress_async_std::Builder::new(config)
            .with_service("entities")
            .build(),
    }
}

/// The proxy the demo's client takes to `base`: the default `[proxy]` reads `HTTPS_PROXY`,
/// `HTTP_PROXY` and `NO_PROXY` (see the README's "Networks").
fn proxy_for(base: &str) -> String {
    use egress_tokio::egress_transport::{Origin, Proxies};
    let origin = base.parse().ok().and_then(|uri| Origin::of(&uri));
    match (
        Proxies::from_config_and_env(&Config::default().proxy),
        origin,
    ) {
        (Ok(proxies), Some(origin)) => match proxies.route(&origin) {
            Some(proxy) => format!("through proxy {}", proxy.origin().authority()),
            None => "direct (no proxy for it in HTTP_PROXY/HTTPS_PROXY/NO_PROXY)".to_owned(),
        },
        (Err(e), _) => format!("proxy settings unusable: {e}"),
        (_, None) => "direct".to_owned(),
    }
}

fn client(backend: Backend, base: &str) -> Client {
    // Short limits so that the story fits in seconds; a budget floor of 1 retry/s so that the
    // storm at the end meets it.
    let config = Config::default()
        .with_base_url(base)
        .with_attempt_timeout(Duration::from_secs(1))
        .with_deadline(Duration::from_secs(8))
        .with_budget(demo_budget());
    build(backend, config).unwrap_or_else(|e| {
        // The only part of the configuration that comes from the command line.
        eprintln!("--upstream {base:?} cannot be used: {e}");
        std::process::exit(2);
    })
}

/// A client that hedges an idempotent call whose attempt has not answered within 100 ms.
fn hedging_client(backend: Backend, base: &str) -> Client {
    let hedging = HedgingConfig::enabled(HedgeAfter::Fixed(Duration::from_millis(100)));
    let config = Config::default().with_base_url(base).with_hedging(hedging);
    build(backend, config).expect("the demo's configuration is valid")
}

/// A client whose circuit breaker opens after 10 attempts (all failed) for 1 s, with no retries:
/// the circuit-breaker story in seconds rather than minutes.
fn breaker_client(backend: Backend, base: &str) -> Client {
    let breaker = CircuitBreakerConfig::default()
        .with_min_throughput(10)
        .with_break_duration(Duration::from_secs(1));
    let config = Config::default()
        .with_base_url(base)
        .with_retry(RetryPolicy::disabled())
        .with_circuit_breaker(breaker);
    build(backend, config).expect("the demo's configuration is valid")
}

/// Polls every future until all are done, on whatever runtime polls this: the demo's
/// concurrent calls, with no spawning.
async fn join_all<T>(futures: Vec<std::pin::Pin<Box<dyn Future<Output = T> + '_>>>) -> Vec<T> {
    let mut futures: Vec<_> = futures.into_iter().map(Some).collect();
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (slot, result) in futures.iter_mut().zip(results.iter_mut()) {
            if let Some(future) = slot {
                if let std::task::Poll::Ready(value) = future.as_mut().poll(cx) {
                    *result = Some(value);
                    *slot = None;
                }
            }
        }
        if futures.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("invariant: every future finished"))
        .collect()
}

/// Waits `d` on the backend's own timer.
async fn pause(backend: Backend, d: Duration) {
    match backend {
        Backend::Tokio => tokio::time::sleep(d).await,
        Backend::AsyncStd => async_std::task::sleep(d).await,
    }
}

fn block_on<F: Future>(backend: Backend, future: F) -> F::Output {
    match backend {
        Backend::Tokio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime builds")
            .block_on(future),
        Backend::AsyncStd => async_std::task::block_on(future),
    }
}

// ---------------------------------------------------------------------------------------------
// The story

struct Row {
    story: &'static str,
    attempts: usize,
    elapsed: Duration,
    outcome: String,
}

fn describe(result: &Result<String, EntitiesError>) -> String {
    match result {
        Ok(what) => format!("ok: {what}"),
        Err(EntitiesError::InvalidPayload { path, message, .. }) => {
            format!(
                "InvalidPayload at {}: {message}",
                path.as_deref().unwrap_or("the root")
            )
        }
        Err(e @ EntitiesError::NotFound(_)) => format!("NotFound ({e})"),
        Err(EntitiesError::RateLimited { .. }) => "RateLimited".to_owned(),
        Err(EntitiesError::Unavailable { source }) => {
            format!("Unavailable ({})", source.type_name())
        }
        Err(e) => format!("error: {e}"),
    }
}

/// Whether a call failed without ever reaching the upstream (nothing connected).
fn never_reached(result: &Result<String, EntitiesError>) -> bool {
    matches!(result, Err(EntitiesError::Unavailable { source }) if !source.may_have_been_sent())
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let embedded = args.upstream.is_none().then(upstream);
    let base = args
        .upstream
        .clone()
        .unwrap_or_else(|| embedded.as_ref().map(|s| s.url("")).unwrap_or_default());
    let timeline = Timeline::default();
    let subscriber = tracing_subscriber::registry().with(timeline.clone());
    tracing::subscriber::set_global_default(subscriber)
        .expect("the demo installs the only subscriber");

    if !args.json {
        let backend = match args.backend {
            Backend::Tokio => "tokio",
            Backend::AsyncStd => "async-std",
        };
        println!(
            "egress demo: backend {backend}, upstream {base}, {}",
            proxy_for(&base)
        );
    }
    let backend = args.backend;
    let entities = EntitiesClient::new(client(backend, &base));
    let mut rows = Vec::new();
    let mut unreached_stories = 0;
    let id = |s: &str| EntityId::new(s).expect("the demo's ids are valid");

    let mut run = |story: &'static str, call: &dyn Fn() -> Result<String, EntitiesError>| {
        if !args.json {
            println!("\n== {story}");
        }
        timeline.begin(story);
        let started = Instant::now();
        let result = call();
        let elapsed = started.elapsed();
        let events = timeline.take();
        print_timeline(&events, args.json);
        let outcome = describe(&result);
        let unreached = never_reached(&result);
        if args.json {
            let attempts = events.iter().filter(|e| e.event == "attempt_sent").count();
            println!(
                "{}",
                serde_json::json!({
                    "story": story,
                    "event": "outcome",
                    "attempts": attempts,
                    "elapsed_ms": elapsed.as_millis() as u64,
                    "outcome": outcome,
                    "reached_upstream": !unreached,
                })
            );
        } else {
            println!("  result: {outcome}");
            if unreached {
                println!("  (the upstream was not reached: this story did not happen)");
            }
        }
        unreached_stories += usize::from(unreached);
        let attempts = events.iter().filter(|e| e.event == "attempt_sent").count();
        rows.push(Row {
            story,
            attempts,
            elapsed,
            outcome,
        });
    };

    let get = |name: &str| {
        let entity = block_on(backend, entities.get_entity(&id(name)))?;
        Ok(format!("{} {:?}", entity.id, entity.name))
    };
    run("transient 503s, then success", &|| get("e-1"));
    run("429 with Retry-After honoured", &|| get("e-2"));
    run(
        "slow response hits the attempt timeout, then succeeds",
        &|| get("e-3"),
    );
    run("malformed payload reported with its JSON path", &|| {
        get("e-4")
    });
    run("404 mapped to NotFound", &|| get("e-404"));
    run("POST with an idempotency key retried safely", &|| {
        let entity = block_on(backend, entities.create_entity(&NewEntity::new("Eve")))?;
        Ok(format!("created {}", entity.id))
    });
    if let Some(server) = &embedded {
        let posts: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|s| s.method == "POST")
            .collect();
        let keys: Vec<_> = posts
            .iter()
            .filter_map(|s| s.header("idempotency-key"))
            .collect();
        if !args.json && keys.len() >= 2 {
            println!(
                "  the upstream saw {} POSTs with the same idempotency key: {}",
                posts.len(),
                keys.iter().all(|k| *k == keys[0])
            );
        }
    }

    let hedged = EntitiesClient::new(hedging_client(backend, &base));
    run("slow replica: a hedge after 100 ms wins", &|| {
        let entity = block_on(backend, hedged.get_entity(&id("e-6")))?;
        Ok(format!("{} {:?}", entity.id, entity.name))
    });

    if unreached_stories == rows.len() {
        eprintln!(
            "\nthe upstream at {base} could not be reached (no connection was made): none of the stories happened"
        );
        std::process::exit(1);
    }

    // The storm: every call fails; the retry budget stops retrying once its share is spent.
    let budget = demo_budget();
    if !args.json {
        println!("\n== a storm of 503s: 20 calls, one shared retry budget");
        println!(
            "  budget: retries earn {} per successful attempt over {:?}, plus a reserve of {} retry/s ({} per window); each call may make 3 attempts",
            budget.retry_ratio,
            budget.window,
            budget.min_retries_per_sec,
            u64::from(budget.min_retries_per_sec) * budget.window.as_secs(),
        );
    }
    let started = Instant::now();
    let (mut stopped, mut attempts, mut failed) = (0, 0, 0);
    for n in 0..20 {
        timeline.begin("storm");
        let result = block_on(backend, entities.get_entity(&id(&format!("storm-{n}"))));
        let mut events = timeline.take();
        let sent = events.iter().filter(|e| e.event == "attempt_sent").count();
        attempts += sent;
        let refused = matches!(&result, Err(EntitiesError::Unavailable { source }) if source.type_name() == "retry_budget_exhausted");
        stopped += usize::from(refused);
        failed += usize::from(result.is_err());
        if args.json {
            for e in &mut events {
                e.call = Some(n);
            }
            print_timeline(&events, true);
        } else {
            let how = match (&result, refused) {
                (Ok(_), _) => "succeeded".to_owned(),
                (Err(_), true) => "failed: the budget refused its retry".to_owned(),
                (Err(_), false) => "failed: every attempt met a 503".to_owned(),
            };
            println!("  call {n:>2}: {sent} attempt(s), {how}");
        }
    }
    if !args.json {
        let retries = attempts - 20;
        println!(
            "  20 calls -> {attempts} upstream requests (20 first attempts + {retries} retries); {failed} calls failed, {stopped} of them because the budget refused a retry"
        );
        println!(
            "  the stories above spent part of the same window's allowance; the README's figure (1.10 requests per call in a full outage) is for many calls, over which the reserve of {} retries per window is spread thin",
            u64::from(budget.min_retries_per_sec) * budget.window.as_secs(),
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "story": "storm",
                "event": "outcome",
                "calls": 20,
                "attempts": attempts,
                "failed": failed,
                "refused_a_retry": stopped,
            })
        );
    }
    rows.push(Row {
        story: "storm stopped by the retry budget",
        attempts,
        elapsed: started.elapsed(),
        outcome: format!("{stopped} calls refused a retry"),
    });

    // The circuit breaker: a host that fails every request. After 10 failed attempts the
    // circuit opens; the next calls fail at once without reaching the upstream; after the 1 s
    // break one probe goes.
    let upstream_count = |prefix: &str| {
        embedded.as_ref().map(|server| {
            server
                .requests()
                .iter()
                .filter(|s| s.path.starts_with(prefix))
                .count()
        })
    };
    let breaker = EntitiesClient::new(breaker_client(backend, &base));
    if !args.json {
        println!("\n== a failing host opens the circuit: 30 calls, then one after the break");
    }
    timeline.begin("circuit breaker");
    let started = Instant::now();
    let mut refused = 0;
    for n in 0..30 {
        let result = block_on(backend, breaker.get_entity(&id(&format!("down-{n}"))));
        let open = matches!(&result, Err(EntitiesError::Unavailable { source }) if source.is_circuit_open());
        refused += usize::from(open);
    }
    let before_break = upstream_count("/entities/down-");
    block_on(backend, pause(backend, Duration::from_millis(1_100)));
    let probe = block_on(backend, breaker.get_entity(&id("down-probe")));
    let events = timeline.take();
    print_timeline(&events, args.json);
    let seen = upstream_count("/entities/down-");
    let summary = serde_json::json!({
        "story": "circuit breaker",
        "event": "outcome",
        "calls": 31,
        "refused_at_once": refused,
        "upstream_requests_before_break": before_break,
        "upstream_requests": seen,
        "probe": describe(&probe.map(|e| e.id.to_string())),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "  30 calls -> {} upstream requests; {refused} refused at once (circuit open); after the break the probe: {}",
            before_break.map_or("?".to_owned(), |n| n.to_string()),
            summary["probe"].as_str().unwrap_or_default()
        );
    }
    rows.push(Row {
        story: "failing host: the circuit opens",
        attempts: events.iter().filter(|e| e.event == "attempt_sent").count(),
        elapsed: started.elapsed(),
        outcome: format!("{refused} of 30 calls refused unsent"),
    });

    // The host-wide hold: one call meets a 429 with `Retry-After: 1`; 15 calls made while it
    // waits are held with it instead of each earning a 429 of its own.
    if !args.json {
        println!("\n== a 429 to one call holds the host: 1 call, then 15 concurrent ones");
    }
    timeline.begin("host-wide hold");
    // A client of its own: the storm above spent the first client's retry budget.
    let entities = EntitiesClient::new(client(backend, &base));
    let started = Instant::now();
    let leader_id = id("busy-0");
    type Fetched = Result<egress_vendors::entities::Entity, EntitiesError>;
    let results: Vec<Fetched> = block_on(backend, async {
        let leader: std::pin::Pin<Box<dyn Future<Output = Fetched>>> =
            Box::pin(entities.get_entity(&leader_id));
        let followers: std::pin::Pin<Box<dyn Future<Output = Vec<Fetched>>>> = Box::pin(async {
            pause(backend, Duration::from_millis(200)).await;
            let calls = (1..16)
                .map(|n| {
                    let ids = id(&format!("busy-{n}"));
                    let entities = &entities;
                    Box::pin(async move { entities.get_entity(&ids).await })
                        as std::pin::Pin<Box<dyn Future<Output = Fetched>>>
                })
                .collect();
            join_all(calls).await
        });
        let mut both = join_all(vec![
            Box::pin(async { vec![leader.await] })
                as std::pin::Pin<Box<dyn Future<Output = Vec<Fetched>>>>,
            followers,
        ])
        .await;
        let mut all = both.remove(0);
        all.extend(both.remove(0));
        all
    });
    let events = timeline.take();
    print_timeline(&events, args.json);
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let throttled = embedded.as_ref().map(|server| {
        server
            .requests()
            .iter()
            .filter(|s| s.path.starts_with("/entities/busy-"))
            .filter(|s| s.at.duration_since(started) < Duration::from_millis(1_000))
            .count()
    });
    let summary = serde_json::json!({
        "story": "host-wide hold",
        "event": "outcome",
        "calls": 16,
        "ok": ok,
        "upstream_requests": upstream_count("/entities/busy-"),
        "upstream_429s": throttled,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "  16 calls -> {} upstream requests, {} of them throttled (429); {ok} calls succeeded",
            summary["upstream_requests"], summary["upstream_429s"],
        );
    }
    rows.push(Row {
        story: "429 to one call holds the host",
        attempts: events.iter().filter(|e| e.event == "attempt_sent").count(),
        elapsed: started.elapsed(),
        outcome: format!(
            "{ok} of 16 ok, {} 429(s) upstream",
            throttled.map_or("?".to_owned(), |n| n.to_string())
        ),
    });

    if args.json {
        let stories: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "story": r.story,
                    "attempts": r.attempts,
                    "elapsed_ms": r.elapsed.as_millis() as u64,
                    "outcome": r.outcome,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "event": "summary", "stories": stories })
        );
        return;
    }
    println!("\n{:<56} {:>8} {:>9}  outcome", "story", "attempts", "time");
    for row in &rows {
        let time = format!("{}ms", row.elapsed.as_millis());
        println!(
            "{:<56} {:>8} {time:>9}  {}",
            row.story, row.attempts, row.outcome
        );
    }
}
