//! Access tokens and their lifecycle; the whole story is on [`TokenSource`].

pub(crate) mod cache;
mod challenge;
mod lifecycle;
mod oauth2;

use std::fmt;
use std::time::{Duration, Instant};

use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

use crate::error::StatusError;
pub(crate) use crate::error::TokenError;
use crate::rt::BoxFuture;

pub(crate) use cache::TokenCache;
pub use challenge::{bearer_error, is_invalid_token};
pub use lifecycle::{
    CurrentToken, RefreshPolicy, RefreshReason, RefreshTicket, TokenDecision, TokenLifecycle,
};
pub use oauth2::{
    ClientAuthMethod, ClientCredentials, OAuth2Config, RejectionRule, parse_token_response,
    token_request_failed,
};

/// An access token as a token source returns it.
#[derive(Clone)]
#[non_exhaustive]
pub struct Token {
    /// The token itself (never shown).
    pub value: SecretString,
    /// How long it is valid from the moment it was requested; `None` when the source does not
    /// say (then it is used until the API rejects it).
    pub expires_in: Option<Duration>,
}

impl Token {
    /// A bearer token (RFC 6750), valid for `expires_in` when known.
    pub fn bearer(value: SecretString, expires_in: Option<Duration>) -> Self {
        Self { value, expires_in }
    }

    /// `Bearer <token>`, marked sensitive.
    pub(crate) fn header_value(value: &SecretString) -> Result<HeaderValue, TokenError> {
        let mut header = HeaderValue::from_str(&format!("Bearer {}", value.expose_secret()))
            .map_err(|_| {
                TokenError::InvalidResponse("the access token is not a valid header value".into())
            })?;
        header.set_sensitive(true);
        Ok(header)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"[REDACTED]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What a token source knows when it is asked for a token.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct FetchContext {
    /// The time the refresh started.
    pub now: Instant,
    /// The deadline of the call that asked: the fetch is dropped (cancelled) when it passes, so
    /// a source may give its own request this deadline.
    pub deadline: Instant,
    /// Why the token is being fetched.
    pub reason: RefreshReason,
}

/// Where access tokens come from: OAuth 2.0 client credentials ([`ClientCredentials`]), or a
/// vendor's own scheme. An example of one follows.
///
/// Access tokens with a lifecycle: fetched from a [`TokenSource`], cached, refreshed ahead of
/// expiry by one call at a time, shared by every concurrent call, and replaced once when the API
/// says the token was rejected.
///
/// # What a client does with a token source
///
/// A [`Client`](crate::Client) built with a token source (an `[auth.oauth2]` section in its
/// configuration, [`ClientBuilder::with_oauth2`](crate::ClientBuilder::with_oauth2) or
/// [`ClientBuilder::with_token_source`](crate::ClientBuilder::with_token_source)) asks it for a
/// token before each call, as [`TokenLifecycle`] decides:
///
/// - **Refresh ahead.** A token is refreshed once 80 % of its lifetime has passed or 60 s before
///   it expires, whichever comes first, but never before half of its lifetime; the moment is
///   moved earlier by up to 10 % from the jitter the client draws, so replicas do not refresh
///   together ([`RefreshPolicy`]).
/// - **Single flight.** One refresh at a time per token source. While it runs, other calls use
///   the current token if it is still valid, or wait for the refresh within their own deadlines.
///   The call that refreshes waits for the new token itself (on a refresh ahead of expiry, it
///   sends the old one if the refresh fails); when its deadline passes or its future is
///   dropped, its token request is cancelled and the next call takes the refresh over.
/// - **No expired token is sent.** A token past its `expires_in` is never used.
/// - **One retry on rejection.** When the API answers 401 with `WWW-Authenticate: Bearer
///   error="invalid_token"` (RFC 6750 3.1, or a vendor's rule: [`TokenSource::is_rejection`]),
///   the token is invalidated, a new one is fetched and the request is re-sent once, whatever
///   its method (a 401 proves the request was not processed). A second rejection ends the call.
/// - **Failures are typed.** A token that cannot be obtained ends the call with
///   [`Error::Token`](crate::Error::Token), which says why ([`TokenError`]); the request itself
///   is never sent. After a failed refresh, calls fail at once for
///   [`RefreshPolicy::failure_cooldown`] (or use the old token while it is valid) instead of
///   hammering the token endpoint.
///
/// The decisions are the pure state machine [`TokenLifecycle`] (time and jitter enter as data);
/// the client's only additions are a lock, a list of wakers and the runtime's clock and sleeper.
///
/// # OAuth 2.0 client credentials
///
/// [`ClientCredentials`] is the token source of RFC 6749 4.4, configured by [`OAuth2Config`].
/// Its token request is itself an egress call, with the client's timeouts, retries on transient
/// failures, and redaction of the client secret and of the token everywhere.
///
/// # A token source of your own
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use egress_core::Config;
/// use egress_core::rt::BoxFuture;
/// use egress_core::test_util::{ScriptedTransport, block_on, step};
/// use egress_core::{FetchContext, Token, TokenError, TokenSource};
///
/// /// Tokens minted by an in-house signer (here: numbered).
/// #[derive(Debug, Default)]
/// struct Signer { minted: AtomicU32 }
///
/// impl TokenSource for Signer {
///     fn fetch(&self, _ctx: FetchContext) -> BoxFuture<'_, Result<Token, TokenError>> {
///         let n = self.minted.fetch_add(1, Ordering::SeqCst);
///         Box::pin(async move {
///             Ok(Token::bearer(format!("signed-{n}").into(), Some(Duration::from_secs(300))))
///         })
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = ScriptedTransport::new();
/// upstream.push(step(200)).push(step(200));
/// let signer = Arc::new(Signer::default());
/// let client = egress_core::Client::builder(
///     Config::default().with_base_url("https://api.example.com"),
///     upstream.runtime(),
/// )
/// .with_token_source(signer.clone())
/// .build()?;
///
/// block_on(client.get("/a").send())?;
/// block_on(client.get("/b").send())?;
/// // One token for both calls, sent as a bearer token.
/// assert_eq!(signer.minted.load(Ordering::SeqCst), 1);
/// assert_eq!(upstream.requests()[1].header("authorization"), Some("Bearer signed-0"));
/// # Ok(()) }
/// ```
///
/// The client calls [`fetch`](Self::fetch) at most once at a time per source (single flight)
/// and caches what it returns; the source itself keeps no state about expiry.
pub trait TokenSource: fmt::Debug + Send + Sync {
    /// Obtains a new token. Failures that are final (wrong credentials, a scope the server
    /// refuses) should say so ([`TokenError::is_final`]).
    fn fetch(&self, ctx: FetchContext) -> BoxFuture<'_, Result<Token, TokenError>>;

    /// Whether an API response says the token was rejected, so it is replaced and the request
    /// re-sent once. The default: a 401 whose `WWW-Authenticate` carries the `Bearer` error
    /// `invalid_token` (RFC 6750 3.1).
    fn is_rejection(&self, response: &StatusError) -> bool {
        is_invalid_token(response)
    }

    /// When to refresh tokens of this source (default: [`RefreshPolicy::default`]).
    fn refresh_policy(&self) -> RefreshPolicy {
        RefreshPolicy::default()
    }
}
