//! The README's configuration example is a valid configuration (its Rust blocks are doctests
//! of this crate, see `src/lib.rs`).

use egress_core::Config;

/// The ```toml block of the README that starts with `base_url`: the configuration example.
fn config_example() -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("```toml\nbase_url")
        .expect("the README has a configuration example")
        + "```toml\n".len();
    let end = readme[start..]
        .find("```")
        .expect("the example's block is closed");
    readme[start..start + end].to_owned()
}

#[test]
fn the_readme_configuration_example_parses_and_validates() {
    let config: Config = toml::from_str(&config_example()).expect("the example parses");
    assert_eq!(
        config.base_url.as_deref(),
        Some("https://entities.internal/v1")
    );
    assert_eq!(config.retry.max_attempts, 3);
    assert!(config.rate_limit.enabled);
    assert_eq!(config.rate_limit.rate.to_string(), "50/s");
    config
        .build()
        .expect("the example is a valid configuration");
}
