//! The demo (the README's main command) as a new user meets it: bad arguments get one clear
//! line and exit 2; an upstream that cannot be reached is said so, claims no story, and exits
//! non-zero. The test runs the example binary `cargo test` builds beside the tests.

use std::path::PathBuf;
use std::process::{Command, Output};

/// `target/<profile>/examples/demo`, built by `cargo test` for this package.
fn demo() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let demo = profile.join("examples").join("demo");
    assert!(
        demo.exists(),
        "{} is missing: cargo test builds the examples of egress-vendors",
        demo.display()
    );
    demo
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
