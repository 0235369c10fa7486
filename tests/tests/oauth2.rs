//! OAuth 2.0 client credentials against a real authorization server (oidc-provider, see
//! `egress_tests::oauth`), on both backends: tokens are shared and refreshed with one token
//! request at a time, a revoked token is replaced after one 401, and a wrong client secret is a
//! typed error after one token request.

#[macro_use]
mod common;

use std::time::Duration;

use common::Backend;
use egress_core::{Client, Config, OAuth2Config};
use egress_core::{ClientAuthMethod, TokenError};
use egress_tests::oauth::{AuthServer, BASIC_CLIENT, POST_CLIENT};

const SECRET: &str = "oauth2-it-client-secret-1";

fn client(backend: Backend, server: &AuthServer, oauth2: OAuth2Config) -> Client {
    let config = Config::default().with_base_url(server.api_url());
    match backend {
        Backend::Tokio => egress_tokio::Builder::new(config)
            .with_oauth2(oauth2)
            .build(),
        Backend::AsyncStd => egress_async_std::Builder::new(config)
            .with_oauth2(oauth2)
            .build(),
    }
    .expect("the configuration is valid")
}

mod scenarios {
    use super::*;

    /// Tokens live 5 s; after the first one has expired, 100 calls start together: one token
    /// request serves them all (the new token's refresh-ahead moment, at least 2.25 s away, is
    /// far beyond the burst).
    pub(super) async fn a_hundred_concurrent_calls_at_token_expiry_make_one_token_request(
        backend: Backend,
    ) {
        let server = AuthServer::start(SECRET, Duration::from_secs(5));
        let oauth2 = OAuth2Config::new(server.token_url(), BASIC_CLIENT, SECRET.into())
            .with_scopes(["entities:read"]);
        let client = client(backend, &server, oauth2);
        let first = client
            .get("/entities/0")
            .send()
            .await
            .expect("the first call");
        assert_eq!(first.status(), 200);
        assert_eq!(server.token_requests(), 1);
        // Past its expiry, on the backend's own timer.
        let _ = backend
            .timeout(Duration::from_millis(5_300), std::future::pending::<()>())
            .await;
        let calls = (0..100)
            .map(|i| {
                let client = client.clone();
                async move { client.get(&format!("/entities/{i}")).send().await }
            })
            .collect();
        for result in backend.join_all(calls).await {
            assert_eq!(result.expect("every call succeeds").status(), 200);
        }
        assert_eq!(
            server.token_requests(),
            2,
            "one token request for the 100 calls"
        );
    }

    /// The server revokes the token the client holds; the next call gets a 401 with
    /// `error="invalid_token"` (RFC 6750 3.1), fetches one new token and re-sends once.
    pub(super) async fn a_revoked_token_is_replaced_after_one_401(backend: Backend) {
        let server = AuthServer::start(SECRET, Duration::from_secs(600));
        let oauth2 = OAuth2Config::new(server.token_url(), POST_CLIENT, SECRET.into())
            .with_auth_method(ClientAuthMethod::ClientSecretPost);
        let client = client(backend, &server, oauth2);
        client
            .get("/entities/1")
            .send()
            .await
            .expect("the first call");
        assert_eq!(server.token_requests(), 1);
        server.revoke_accepted();
        let response = client
            .get("/entities/2")
            .send()
            .await
            .expect("re-sent with a new token");
        assert_eq!(response.status(), 200);
        assert_eq!(response.attempts(), 2, "the rejected send and the re-send");
        assert_eq!(server.token_requests(), 2);
        // The new token serves the next calls.
        client
            .get("/entities/3")
            .send()
            .await
            .expect("the third call");
        assert_eq!(server.token_requests(), 2);
    }

    /// A wrong client secret: the provider answers `invalid_client` (RFC 6749 5.2), which ends
    /// the call with the typed error after exactly one token request; the API is never called.
    pub(super) async fn a_wrong_client_secret_gives_the_typed_error_after_one_token_request(
        backend: Backend,
    ) {
        let server = AuthServer::start(SECRET, Duration::from_secs(600));
        let oauth2 = OAuth2Config::new(server.token_url(), BASIC_CLIENT, "not-the-secret".into());
        let client = client(backend, &server, oauth2);
        let error = client.get("/entities/1").send().await.unwrap_err();
        match error.token_error() {
            Some(TokenError::Refused { code, status, .. }) => {
                assert_eq!(code, "invalid_client");
                assert_eq!(*status, 401);
            }
            other => panic!("expected the refusal, got {other:?} ({error})"),
        }
        assert!(!error.is_retryable());
        assert!(!error.may_have_been_sent());
        assert_eq!(server.token_requests(), 1);
        assert!(server.accepted_tokens().is_empty());
    }
}

parity!(
    a_hundred_concurrent_calls_at_token_expiry_make_one_token_request,
    a_revoked_token_is_replaced_after_one_401,
    a_wrong_client_secret_gives_the_typed_error_after_one_token_request,
);
