//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`) through the bodies of
//! the fuzz targets, on stable Rust, so that every `cargo test --workspace` run checks what
//! the fuzz targets assert. The bodies are the very file the fuzz crate builds
//! (`fuzz/src/bodies.rs`); a panic in one is a failure here.

#[path = "../../fuzz/src/bodies.rs"]
pub mod bodies;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The committed seed files of one target, sorted; panics when the directory is missing or
/// holds no file, so that the replay can never pass vacuously.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus directory {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable corpus directory").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "the corpus directory {} holds no file",
        dir.display()
    );
    files
}

/// Runs `body` over every corpus file of `target`, and fails naming every file that panicked.
fn replay(target: &str, body: fn(&[u8])) {
    let files = corpus(target);
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a readable corpus file");
            panic::catch_unwind(AssertUnwindSafe(|| body(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} corpus files failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn every_validate_json_seed_passes_the_validation_target() {
    replay("validate_json", bodies::validate_json);
}

#[test]
fn every_retry_after_seed_passes_the_retry_after_target() {
    replay("retry_after", bodies::retry_after);
}

#[test]
fn every_exchange_seed_passes_the_exchange_target() {
    replay("exchange", bodies::exchange);
}

#[test]
fn every_link_header_seed_passes_the_link_header_target() {
    replay("link_header", bodies::link_header);
}

#[test]
fn every_decode_body_seed_passes_the_decode_body_target() {
    replay("decode_body", bodies::decode_body);
}
