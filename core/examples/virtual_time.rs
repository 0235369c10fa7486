//! The egress core's story, in virtual time: a scripted flaky upstream and the decisions the
//! core makes about each call. Runs in milliseconds, with no network.
//!
//! ```text
//! cargo run -p egress-core --example virtual_time
//! ```

use std::time::Duration;

use egress_core::TransportErrorKind;
use egress_core::http::Method;
use egress_core::test_util::{Run, Scenario, Step, fail, hang, step};
use egress_core::{Backoff, BudgetConfig, JitterMode, RetryPolicy};
use egress_core::{Config, KeyChoice, Policy, Request};

fn policy(config: Config) -> Policy {
    config.build().expect("the demo's configuration is valid")
}

fn request(method: Method, path: &str) -> Request {
    Request::new(method, &format!("https://entities.example{path}"))
        .expect("the demo's URLs are valid")
}

fn story(title: &str, request: Request, policy: &Policy, steps: Vec<Step>) -> (String, Run) {
    let run = Scenario::new(request, policy).seed(7).steps(steps).run();
    println!("\n== {title}");
    print!("{run}");
    (title.to_owned(), run)
}

fn main() {
    let standard = policy(Config::default());
    let mut stories = vec![
        story(
            "transient 503s, then success",
            request(Method::GET, "/entity/1"),
            &standard,
            vec![step(503), step(503), step(200).json(r#"{"id":"1"}"#)],
        ),
        story(
            "429 with Retry-After: 2 is honoured",
            request(Method::GET, "/entity/2"),
            &standard,
            vec![step(429).header("retry-after", "2"), step(200)],
        ),
        story(
            "429 asking for 120 s ends at once as RateLimited (cap 30 s)",
            request(Method::GET, "/entity/3"),
            &standard,
            vec![step(429).header("retry-after", "120")],
        ),
        story(
            "a slow response hits the 1 s attempt timeout, then succeeds",
            request(Method::GET, "/entity/4").with_attempt_timeout(Duration::from_secs(1)),
            &standard,
            vec![hang(), step(200)],
        ),
        story(
            "404 is final",
            request(Method::GET, "/entity/404"),
            &standard,
            vec![step(404)],
        ),
        story(
            "POST without a key is not re-sent after a reset",
            request(Method::POST, "/entities"),
            &standard,
            vec![fail(TransportErrorKind::ClosedBeforeResponse), step(201)],
        ),
        story(
            "POST with an idempotency key is re-sent safely",
            request(Method::POST, "/entities").with_idempotency_key(KeyChoice::Mint),
            &standard,
            vec![fail(TransportErrorKind::ClosedBeforeResponse), step(201)],
        ),
    ];

    // A storm: every call fails; the budget (floor 1 retry/s, 20 % of load) stops retrying.
    let stingy = policy(
        Config::default()
            .with_retry(
                RetryPolicy::standard()
                    .with_backoff(Backoff::default().with_jitter(JitterMode::None)),
            )
            .with_budget(BudgetConfig::default().with_min_retries_per_sec(1)),
    );
    println!("\n== a storm of 503s: 20 calls share one retry budget");
    let mut sent = 0;
    let mut refused = 0;
    for i in 0..20 {
        let run = Scenario::new(request(Method::GET, &format!("/entity/{i}")), &stingy)
            .steps(vec![step(503), step(503), step(503)])
            .run();
        sent += run.requests.len();
        if run
            .result
            .as_ref()
            .is_err_and(|e| e.type_name() == "retry_budget_exhausted")
        {
            refused += 1;
        }
        if i == 19 {
            print!("{run}");
            stories.push(("storm: the 20th call".to_owned(), run));
        }
    }
    println!("  20 calls -> {sent} requests upstream; {refused} calls stopped by the budget");

    println!(
        "\n{:<64} {:>8} {:>10}  outcome",
        "story", "attempts", "time"
    );
    for (title, run) in &stories {
        let outcome = match &run.result {
            Ok(r) => format!("ok {}", r.status().as_u16()),
            Err(e) => format!("error: {e}"),
        };
        let time = format!("{}ms", run.elapsed.as_millis());
        println!(
            "{title:<64} {:>8} {time:>10}  {outcome}",
            run.requests.len()
        );
    }
}
