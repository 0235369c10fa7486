//! The demo (the README's main command) as a new user meets it: bad arguments get one clear
//! line and exit 2; an upstream that cannot be reached is said so, claims no story, and exits
//! non-zero. The test runs the example binary `cargo test` builds beside the tests.

use std::path::PathBuf;
use std::process::{Command, Output};

fn demo() -> PathBuf {
    egress_tests::tools::cargo_example("demo")
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(demo())
        .args(args)
        .output()
        .expect("the demo starts");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_get_one_clear_line_and_exit_2() {
    for (args, says) in [
        (
            &["--backend", "foo"][..],
            "--backend takes tokio or async-std, not \"foo\"",
        ),
        (&["--backend"][..], "--backend takes tokio or async-std"),
        (
            &["--upstream", "notaurl"][..],
            "--upstream \"notaurl\" cannot be used",
        ),
        (&["--frobnicate"][..], "unknown argument \"--frobnicate\""),
    ] {
        let (code, _, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_unreachable_upstream_is_said_so_and_exits_non_zero() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let upstream = format!("http://127.0.0.1:{port}");
    let (code, stdout, stderr) = run(&["--upstream", &upstream]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("did not happen"), "{stdout}");
    assert!(stderr.contains("could not be reached"), "{stderr}");
    assert!(
        !stdout.contains("storm"),
        "no story past the first ones: {stdout}"
    );
}

#[test]
fn the_header_names_the_backend_as_typed() {
    let (code, stdout, stderr) = run(&["--backend", "async-std", "--upstream", "notaurl"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.contains("backend async-std"), "{stdout}");
}

#[test]
fn json_output_has_one_outcome_per_story_numbered_storm_calls_a_summary_and_no_repeated_values() {
    let (code, stdout, stderr) = run(&["--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let outcomes: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "outcome")
        .map(|e| e["story"].as_str().unwrap())
        .collect();
    let mut unique = outcomes.clone();
    unique.dedup();
    assert_eq!(
        unique.len(),
        outcomes.len(),
        "one outcome per story: {outcomes:?}"
    );
    for story in ["storm", "circuit breaker", "host-wide hold"] {
        assert!(
            outcomes.contains(&story),
            "{story} has an outcome: {outcomes:?}"
        );
    }
    assert!(outcomes.len() >= 9, "{outcomes:?}");
    let storm: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["story"] == "storm" && e["event"] != "outcome")
        .collect();
    assert!(!storm.is_empty());
    assert!(
        storm.iter().all(|e| e["call"].is_u64()),
        "every storm event has its call number"
    );
    assert!(
        events
            .iter()
            .all(|e| e.get("error").is_none() || e.get("error") != e.get("status")),
        "a status is not repeated as the error"
    );
    let last = events.last().expect("some output");
    assert_eq!(last["event"], "summary", "{last}");
    assert!(last["stories"].as_array().unwrap().len() >= outcomes.len());
}
