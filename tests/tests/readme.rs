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

/// The README's `[auth.oauth2]` block is a valid configuration, read through TOML (whose
/// tables reach `Credentials` through its own deserializer, not JSON's).
#[test]
fn the_readme_oauth2_example_parses_into_client_credentials() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("```toml\n  [auth.oauth2]")
        .expect("the README has an [auth.oauth2] example")
        + "```toml\n".len();
    let end = readme[start..].find("```").expect("the block is closed");
    let block: String = readme[start..start + end]
        .lines()
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    let config: Config = toml::from_str(&block).expect("the example parses");
    match &config.auth {
        Some(egress_core::Credentials::OAuth2(oauth2)) => {
            assert_eq!(oauth2.client_id, "inventory-service");
            assert_eq!(
                oauth2.client_secret_env.as_deref(),
                Some("INVENTORY_CLIENT_SECRET")
            );
            assert_eq!(oauth2.scopes, ["entities:read"]);
        }
        other => panic!("expected OAuth 2.0 credentials, got {other:?}"),
    }
    // A misspelt key is refused with the section's name.
    let error = toml::from_str::<Config>(&block.replace("scopes", "scope")).unwrap_err();
    assert!(error.to_string().contains("auth.oauth2"), "{error}");
}
