//! [`EntitiesError`]: what can go wrong with a call to the entities service, in its own terms.

use std::time::SystemTime;

use egress_core::{CorrelationId, Error};

use super::EntityId;

/// The error of an [`EntitiesClient`](super::EntitiesClient) call.
///
/// Each variant is a question a caller can act on: "does it exist?", "when may I come back?",
/// "is it worth trying again later?", "is our configuration wrong?". Every variant but
/// [`NotFound`](Self::NotFound) keeps the core error it came from (with the attempts, the elapsed
/// time and the correlation ID of the call); [`upstream`](Self::upstream) and
/// [`correlation_id`](Self::correlation_id) reach it without matching. Retries have already
/// happened by the time one of these is returned; see [`egress_core::Error`] for the rules.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntitiesError {
    /// The service answered 404: there is no entity with this ID. An answer, not a failure.
    #[error("entity {0} not found")]
    NotFound(EntityId),
    /// The service throttled the call (429, or a `Retry-After` longer than the client may wait).
    #[error("rate limited by the entities service")]
    RateLimited {
        /// When the service said a retry may succeed, when it said so.
        retry_at: Option<SystemTime>,
        /// The core error.
        #[source]
        source: Error,
    },
    /// The service is unavailable for now: 5xx after the allowed retries, timeouts, connection
    /// failures, or the retry budget refusing more retries. Worth trying again later.
    #[error("the entities service is unavailable")]
    Unavailable {
        /// The core error.
        #[source]
        source: Error,
    },
    /// The service answered, but not with a valid entity (wrong content type, bad JSON, a field
    /// of the wrong type, or a failed semantic check). Never retried: it is a contract breach.
    #[error("invalid entity payload{}: {message}", path.as_deref().map(|p| format!(" at {p}")).unwrap_or_default())]
    InvalidPayload {
        /// The JSON path of the problem (`tags[2]`), when there is one.
        path: Option<String>,
        /// What is wrong.
        message: String,
        /// The core error, with a redacted excerpt of the body.
        #[source]
        source: Error,
    },
    /// The service refused our credentials (401) or their rights (403), or the authorization
    /// server refused to issue an access token for them (such as `invalid_client`). A
    /// configuration problem: retrying will not help.
    #[error("the entities service refused our credentials")]
    Unauthorized {
        /// The core error.
        #[source]
        source: Error,
    },
    /// Anything else (a 400 or 409, an invalid request, a TLS failure): see the core error.
    #[error("entities call failed")]
    Upstream(#[source] Error),
}

impl EntitiesError {
    /// Maps a core error of a call about entity `id` (if it is about one).
    pub(crate) fn from_core(error: Error, id: Option<&EntityId>) -> Self {
        if let Some(validation) = error.validation() {
            return Self::InvalidPayload {
                path: validation.path().map(str::to_owned),
                message: validation.message().to_owned(),
                source: error,
            };
        }
        if error.is_rate_limited() {
            return Self::RateLimited {
                retry_at: error.retry_at(),
                source: error,
            };
        }
        if let (true, Some(id)) = (error.is_not_found(), id) {
            return Self::NotFound(id.clone());
        }
        // An access token the authorization server refused to issue is our credentials too.
        let token_refused = error
            .token_error()
            .is_some_and(egress_core::TokenError::is_final);
        if error.is_unauthorized() || error.is_forbidden() || token_refused {
            return Self::Unauthorized { source: error };
        }
        if error.is_retryable() {
            return Self::Unavailable { source: error };
        }
        Self::Upstream(error)
    }

    /// The core error behind this one (every variant but `NotFound` has one).
    pub fn upstream(&self) -> Option<&Error> {
        match self {
            Self::NotFound(_) => None,
            Self::RateLimited { source, .. }
            | Self::Unavailable { source }
            | Self::InvalidPayload { source, .. }
            | Self::Unauthorized { source }
            | Self::Upstream(source) => Some(source),
        }
    }

    /// The correlation ID of the call, to find it in the service's logs.
    pub fn correlation_id(&self) -> Option<&CorrelationId> {
        self.upstream().and_then(Error::correlation_id)
    }
}
