//! Helpers the core's test files share. Each test file uses some of them.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::test_runner::Config as ProptestConfig;

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The one real `Instant` of a test binary: every virtual timeline starts here.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `cases` cases (unless `PROPTEST_CASES` says otherwise), and no regression files: the suites
/// write nothing to the source tree.
pub(crate) fn proptest_config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: std::env::var_os("PROPTEST_CASES").map_or(cases, |_| default.cases),
        failure_persistence: None,
        ..default
    }
}
