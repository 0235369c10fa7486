//! The core stays pure: no runtime, socket or random-number crate in its normal dependency
//! tree, and no clock read outside its test doubles.

use std::path::Path;
use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "async-io",
    "surf",
    "hyper",
    "mio",
    "socket2",
    "rand",
    "getrandom",
    "fastrand",
];

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("invariant: tests/ sits in the workspace root")
}

#[test]
fn the_core_dependency_tree_contains_no_runtime_socket_or_rng_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "tree",
            "-p",
            "egress-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("cargo tree prints UTF-8");
    assert!(
        tree.lines().any(|l| l.starts_with("egress-core ")),
        "unexpected cargo tree output:\n{tree}"
    );
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| FORBIDDEN.contains(name))
        .collect();
    assert!(
        found.is_empty(),
        "egress-core depends on {found:?}:\n{tree}"
    );
}

#[test]
fn the_core_reads_no_clock_outside_its_test_doubles_and_tests() {
    let src = workspace_root().join("core/src");
    let mut offenders = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("core/src is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "tests") {
                    stack.push(path);
                }
                continue;
            }
            if path.file_name().is_some_and(|n| n == "test_util.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            // Unit tests live in `#[cfg(test)] mod tests` at the end of a file: only the code before counts.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                if line.contains("Instant::now()") || line.contains("SystemTime::now()") {
                    offenders.push(format!("{}:{}: {line}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the core reads the clock:\n{}",
        offenders.join("\n")
    );
}
