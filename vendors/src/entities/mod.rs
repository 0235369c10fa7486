//! The entities service: the canonical vendor client.
//!
//! It shows the whole shape in a few lines of code per endpoint: paths, payload types validated
//! then mapped to domain types, a domain error enum, idempotency for creation, and bounded
//! concurrency for fan-out. Build one [`EntitiesClient`] at start-up from the base client of your
//! backend, keep it in your application state, and clone it freely (clones share the
//! connection pool and the retry budget).
//!
//! | call | request | success | typical errors |
//! |---|---|---|---|
//! | [`get_entity`](EntitiesClient::get_entity) | `GET /entities/{id}` | 200 + [`EntityPayload`] | [`NotFound`](EntitiesError::NotFound), [`Unavailable`](EntitiesError::Unavailable) |
//! | [`get_entities`](EntitiesClient::get_entities) | one `GET` per ID, at most N at once | one result per ID, in order | per ID |
//! | [`create_entity`](EntitiesClient::create_entity) | `POST /entities` with an `Idempotency-Key` | 2xx + [`EntityPayload`] | [`InvalidPayload`](EntitiesError::InvalidPayload), [`Upstream`](EntitiesError::Upstream) (400, 409) |
//!
//! # Credentials: OAuth 2.0 client credentials
//!
//! The vendor client never handles credentials: the base client does. When the entities service
//! sits behind an OAuth 2.0 authorization server, give the base client an `[auth.oauth2]`
//! section, or one line on the backend's builder:
//!
//! ```no_run
//! use egress_tokio::egress_core::{Config, OAuth2Config};
//! use egress_vendors::entities::EntitiesClient;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let oauth2 = OAuth2Config::from_env(
//!     "https://login.example.com/oauth2/token",
//!     "inventory-service",
//!     "ENTITIES_CLIENT_SECRET", // read once, when the client is built; held as a SecretString
//! )
//! .with_scopes(["entities:read", "entities:write"]);
//! let base = egress_tokio::Builder::new(Config::default().with_base_url("https://entities.internal/v1"))
//!     .with_oauth2(oauth2)
//!     .build()?;
//! let entities = EntitiesClient::new(base);
//! # drop(entities); Ok(()) }
//! ```
//!
//! Every call then carries a bearer token, fetched once and shared by concurrent calls,
//! refreshed ahead of expiry, and replaced once when the service answers 401 with
//! `error="invalid_token"`. A token that cannot be obtained maps to
//! [`EntitiesError::Unauthorized`] when the authorization server refused the credentials, and to
//! [`EntitiesError::Unavailable`] when it could not be reached (see [`egress_core::TokenSource`]). The same in virtual time:
//!
//! ```
//! use egress_core::test_util::{ScriptedTransport, block_on, step};
//! use egress_core::{Client, Config, OAuth2Config};
//! use egress_vendors::entities::{EntitiesClient, EntitiesError};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = ScriptedTransport::new(); // the token endpoint and the service, in order
//! upstream
//!     .push(step(200).json(r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#))
//!     .push(step(401).header("www-authenticate", r#"Bearer error="invalid_token""#))
//!     .push(step(200).json(r#"{"access_token":"tok-2","token_type":"Bearer","expires_in":3600}"#))
//!     .push(step(200).json(r#"{"id":"e-7","name":"Widget","status":"active","version":1}"#))
//!     .push(step(401).json(r#"{"error":"invalid_client"}"#));
//! let oauth2 = OAuth2Config::new("https://login.example.com/oauth2/token", "inventory", "s3cret".into());
//! let base = Client::builder(Config::default().with_base_url("https://entities.internal/v1"), upstream.runtime())
//!     .with_oauth2(oauth2.clone())
//!     .build()?;
//! let entities = EntitiesClient::new(base);
//! // The first token was revoked: replaced once, and the request re-sent.
//! let entity = block_on(entities.get_entity(&"e-7".parse()?))?;
//! assert_eq!(entity.name, "Widget");
//! assert_eq!(upstream.requests()[3].header("authorization"), Some("Bearer tok-2"));
//!
//! // Credentials the authorization server refuses: the service is never called.
//! let base = Client::builder(Config::default().with_base_url("https://entities.internal/v1"), upstream.runtime())
//!     .with_oauth2(oauth2)
//!     .build()?;
//! let error = block_on(EntitiesClient::new(base).get_entity(&"e-7".parse()?)).unwrap_err();
//! assert!(matches!(error, EntitiesError::Unauthorized { .. }), "{error:?}");
//! assert_eq!(upstream.requests().len(), 5);
//! # Ok(()) }
//! ```

mod error;
mod types;

use egress_core::ValidationError;
use egress_core::{Client, IdempotencyKey, Response};

use crate::common::ordered;

pub use error::EntitiesError;
pub use types::{
    Entity, EntityId, EntityPayload, EntityStatus, InvalidEntityId, MAX_ID_LEN, NewEntity,
};

/// How many requests [`EntitiesClient::get_entities`] has in flight at once by default.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// A client of the entities service. Cheap to clone; build it once at start-up.
///
/// The base client decides the base URL (such as `https://entities.internal/v1`), timeouts,
/// retries, credentials and telemetry; this type adds the endpoints and the domain mapping.
#[derive(Clone, Debug)]
pub struct EntitiesClient {
    client: Client,
    concurrency: usize,
}

impl EntitiesClient {
    /// Wraps a base client whose base URL is the entities service's root.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Sets how many requests [`get_entities`](Self::get_entities) has in flight at once
    /// (at least 1; default [`DEFAULT_CONCURRENCY`]).
    pub fn with_concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit.max(1);
        self
    }

    /// The base client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `GET /entities/{id}`: the entity, validated.
    ///
    /// Retried on transient failures by the base client's policy (a `GET` is idempotent).
    pub async fn get_entity(&self, id: &EntityId) -> Result<Entity, EntitiesError> {
        let response = self
            .client
            .get(&format!("/entities/{id}"))
            .operation("get_entity")
            .send()
            .await
            .map_err(|e| EntitiesError::from_core(e, Some(id)))?;
        entity(&response, Some(id))
    }

    /// Fetches many entities with at most [`with_concurrency`](Self::with_concurrency)
    /// requests in flight at once.
    ///
    /// Partial failures do not fail the batch: the result has exactly one entry per input ID,
    /// in the input's order (a repeated ID is fetched and reported once per occurrence), each
    /// entry the [`Result`] of [`get_entity`](Self::get_entity) for that ID. One ID's failure
    /// never cancels the others. Dropping the returned future cancels every request in flight.
    pub async fn get_entities(&self, ids: &[EntityId]) -> Vec<Result<Entity, EntitiesError>> {
        // Collected first: unstarted futures are small, and a `Map` over a closure would make the
        // returned future `!Send` (the closure's higher-ranked lifetime trips the auto trait).
        let calls: Vec<_> = ids.iter().map(|id| self.get_entity(id)).collect();
        ordered(calls, self.concurrency).await
    }

    /// `POST /entities`: creates an entity, with a new idempotency key for this call.
    ///
    /// The key is sent on every attempt, so a retry after a connection reset cannot create the
    /// entity twice. To survive a restart of your own process too, store a key before calling
    /// and use [`create_entity_with_key`](Self::create_entity_with_key).
    pub async fn create_entity(&self, new: &NewEntity) -> Result<Entity, EntitiesError> {
        self.create(new, None).await
    }

    /// `POST /entities` with the caller's idempotency key.
    pub async fn create_entity_with_key(
        &self,
        new: &NewEntity,
        key: IdempotencyKey,
    ) -> Result<Entity, EntitiesError> {
        self.create(new, Some(key)).await
    }

    async fn create(
        &self,
        new: &NewEntity,
        key: Option<IdempotencyKey>,
    ) -> Result<Entity, EntitiesError> {
        let request = self
            .client
            .post("/entities")
            .operation("create_entity")
            .json(new);
        let request = match key {
            Some(key) => request.idempotency_key(key),
            None => request.with_new_idempotency_key(),
        };
        let response = request
            .send()
            .await
            .map_err(|e| EntitiesError::from_core(e, None))?;
        entity(&response, None)
    }
}

/// Validates a response as an [`EntityPayload`] and maps it. When `expected` is given, the
/// payload must be about that entity.
///
/// A failed check is a core validation error made from this response, so it carries the call's
/// attempts, elapsed time and correlation ID, and a redacted excerpt of the body.
fn entity(response: &Response, expected: Option<&EntityId>) -> Result<Entity, EntitiesError> {
    let payload: EntityPayload = response
        .json_checked()
        .map_err(|e| EntitiesError::from_core(e, expected))?;
    let invalid = |path: &str, message: &str| {
        let error = response.validation_error(ValidationError::semantic(path, message));
        EntitiesError::from_core(error, expected)
    };
    if let Some(id) = expected.filter(|id| id.as_str() != payload.id) {
        return Err(invalid(
            "id",
            &format!("asked for entity {id}, got {:?}", payload.id),
        ));
    }
    // `json_checked` ran the same checks, so this cannot fail; map it anyway rather than panic.
    Entity::try_from(payload).map_err(|e| invalid(e.path(), e.message()))
}
