//! OAuth 2.0 client credentials (RFC 6749 4.4): the configuration, the token request and the
//! reading of the token endpoint's answers, as pure functions, and [`ClientCredentials`], the
//! token source that sends the request through an egress client.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::form_urlencoded;

use super::{FetchContext, RefreshPolicy, Token, TokenError, TokenSource};
use crate::client::Client;
use crate::error::ConfigError;
use crate::error::{Error, StatusError};
use crate::request::Request;
use crate::rt::BoxFuture;

/// How the client authenticates to the token endpoint (RFC 6749 2.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded client ID and secret (`client_secret_basic`, the
    /// method every server must support).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the request body (`client_secret_post`).
    ClientSecretPost,
}

/// The `[auth.oauth2]` section: OAuth 2.0 client credentials (RFC 6749 4.4).
///
/// ```
/// use egress_core::{Config, Credentials};
///
/// let config: Config = toml_like(r#"{
///     "base_url": "https://graph.example.com/v1",
///     "auth": { "oauth2": {
///         "token_url": "https://login.example.com/oauth2/token",
///         "client_id": "inventory-service",
///         "client_secret_env": "INVENTORY_CLIENT_SECRET",
///         "scopes": ["entities:read"],
///         "audience": "https://graph.example.com",
///         "refresh": { "ahead_percent": 75 }
///     } }
/// }"#);
/// let Some(Credentials::OAuth2(oauth2)) = &config.auth else { panic!() };
/// assert_eq!(oauth2.scopes, ["entities:read"]);
/// assert_eq!(oauth2.refresh.ahead_percent, 75);
/// # fn toml_like(json: &str) -> Config { serde_json::from_str(json).unwrap() }
/// ```
///
/// In TOML, the same:
///
/// ```toml
/// [auth.oauth2]
/// token_url = "https://login.example.com/oauth2/token"
/// client_id = "inventory-service"
/// client_secret_env = "INVENTORY_CLIENT_SECRET"   # or client_secret = "..."
/// auth_method = "client_secret_basic"             # or "client_secret_post"
/// scopes = ["entities:read"]
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OAuth2Config {
    /// The token endpoint (`https://`, or `http://` for a loopback test server).
    pub token_url: String,
    /// The client identifier.
    pub client_id: String,
    /// The client secret, when given in the configuration.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// The environment variable holding the client secret, when it is not in the configuration.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// How the client authenticates (default `client_secret_basic`).
    #[serde(default)]
    pub auth_method: ClientAuthMethod,
    /// The scopes requested (RFC 6749 3.3), sent space-separated; none by default.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The `audience` parameter (Auth0, Okta and others), if any.
    #[serde(default)]
    pub audience: Option<String>,
    /// The `resource` parameters (RFC 8707 resource indicators), if any.
    #[serde(default)]
    pub resource: Vec<String>,
    /// When tokens are refreshed.
    #[serde(default)]
    pub refresh: RefreshPolicy,
    /// The whole-call deadline of a token request (default: the client's deadline); never
    /// longer than what is left of the call that needs the token.
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
}

impl OAuth2Config {
    /// Client credentials for `token_url`, with the secret given.
    pub fn new(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        secret: SecretString,
    ) -> Self {
        Self {
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: Some(secret),
            client_secret_env: None,
            auth_method: ClientAuthMethod::default(),
            scopes: Vec::new(),
            audience: None,
            resource: Vec::new(),
            refresh: RefreshPolicy::default(),
            deadline: None,
        }
    }

    /// Client credentials for `token_url`, the secret read from the environment variable
    /// `variable` when the client is built.
    pub fn from_env(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        variable: impl Into<String>,
    ) -> Self {
        Self {
            client_secret: None,
            client_secret_env: Some(variable.into()),
            ..Self::new(token_url, client_id, SecretString::from(""))
        }
    }

    /// Sets how the client authenticates.
    pub fn with_auth_method(mut self, method: ClientAuthMethod) -> Self {
        self.auth_method = method;
        self
    }

    /// Sets the scopes requested.
    pub fn with_scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the `audience` parameter.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Adds a `resource` parameter (RFC 8707).
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource.push(resource.into());
        self
    }

    /// Sets when tokens are refreshed.
    pub fn with_refresh(mut self, refresh: RefreshPolicy) -> Self {
        self.refresh = refresh;
        self
    }

    /// Sets the deadline of a token request.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Checks the settings and finds the client secret (in the configuration, or in the
    /// environment through `env`). Errors name the field under `auth.oauth2`.
    pub fn resolve_secret(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SecretString, ConfigError> {
        let url = url::Url::parse(&self.token_url)
            .map_err(|e| ConfigError::new("auth.oauth2.token_url", format!("is not a URL: {e}")))?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if !(url.scheme() == "https" || url.scheme() == "http" && loopback) {
            return Err(ConfigError::new(
                "auth.oauth2.token_url",
                "must be https (http only on loopback): the client secret travels in it",
            ));
        }
        if self.client_id.is_empty() {
            return Err(ConfigError::new(
                "auth.oauth2.client_id",
                "must not be empty",
            ));
        }
        // RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
        let scope_char =
            |b: u8| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b);
        if let Some(bad) = self
            .scopes
            .iter()
            .find(|s| s.is_empty() || !s.bytes().all(scope_char))
        {
            return Err(ConfigError::new(
                "auth.oauth2.scopes",
                format!("{bad:?} is not a scope token (RFC 6749 3.3)"),
            ));
        }
        self.refresh.validate()?;
        let secret = match (&self.client_secret, &self.client_secret_env) {
            (Some(secret), None) => secret.clone(),
            (None, Some(variable)) => env(variable).map(SecretString::from).ok_or_else(|| {
                ConfigError::new(
                    "auth.oauth2.client_secret_env",
                    format!("the environment variable {variable} is not set"),
                )
            })?,
            _ => {
                return Err(ConfigError::new(
                    "auth.oauth2.client_secret",
                    "give exactly one of client_secret and client_secret_env",
                ));
            }
        };
        if secret.expose_secret().is_empty() {
            return Err(ConfigError::new(
                "auth.oauth2.client_secret",
                "must not be empty",
            ));
        }
        Ok(secret)
    }

    /// The token request (RFC 6749 4.4.2): a form-encoded `POST` of
    /// `grant_type=client_credentials` with the scopes, audience and resources, the client
    /// authenticated as [`auth_method`](Self::auth_method) says. Marked idempotent: a new token
    /// request after a lost answer is harmless, so transient failures are retried.
    pub fn token_request(&self, secret: &SecretString) -> Result<Request, Error> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if !self.scopes.is_empty() {
            form.append_pair("scope", &self.scopes.join(" "));
        }
        if let Some(audience) = &self.audience {
            form.append_pair("audience", audience);
        }
        for resource in &self.resource {
            form.append_pair("resource", resource);
        }
        let mut request = Request::new(Method::POST, &self.token_url)?
            .with_idempotent(true)
            .with_operation("oauth2", "token");
        let headers = &mut request.headers;
        match self.auth_method {
            ClientAuthMethod::ClientSecretBasic => {
                // RFC 6749 2.3.1: the ID and the secret are form-encoded, then joined by ':'.
                use base64::Engine as _;
                let pair = format!(
                    "{}:{}",
                    form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect::<String>(),
                    form_urlencoded::byte_serialize(secret.expose_secret().as_bytes())
                        .collect::<String>()
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                let mut value =
                    HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
                        Error::invalid_request("the client credentials are not a valid header")
                    })?;
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
            ClientAuthMethod::ClientSecretPost => {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_secret", secret.expose_secret());
            }
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        request.body = Bytes::from(form.finish());
        Ok(request)
    }
}

impl PartialEq for OAuth2Config {
    fn eq(&self, other: &Self) -> bool {
        let secret = |c: &Self| {
            c.client_secret
                .as_ref()
                .map(|s| s.expose_secret().to_owned())
        };
        self.token_url == other.token_url
            && self.client_id == other.client_id
            && secret(self) == secret(other)
            && self.client_secret_env == other.client_secret_env
            && self.auth_method == other.auth_method
            && self.scopes == other.scopes
            && self.audience == other.audience
            && self.resource == other.resource
            && self.refresh == other.refresh
            && self.deadline == other.deadline
    }
}

impl fmt::Debug for OAuth2Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Config")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("client_secret_env", &self.client_secret_env)
            .field("auth_method", &self.auth_method)
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .field("resource", &self.resource)
            .field("refresh", &self.refresh)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// Reads a successful token response (RFC 6749 5.1): a JSON object with `access_token`,
/// `token_type` `Bearer` (case-insensitive, RFC 6749 7.1) and, when the server gives it,
/// `expires_in` in seconds (a number, or a numeric string as some servers send). Messages never
/// quote the body, so they cannot carry the token.
pub fn parse_token_response(body: &[u8]) -> Result<Token, TokenError> {
    let invalid = |what: &str| TokenError::InvalidResponse(what.to_owned());
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|_| invalid("the body is not a JSON object (RFC 6749 5.1)"))?;
    let value = match object.get("access_token") {
        Some(serde_json::Value::String(token)) if !token.is_empty() => token,
        _ => return Err(invalid("no access_token string (RFC 6749 5.1)")),
    };
    match object.get("token_type") {
        Some(serde_json::Value::String(kind)) if kind.eq_ignore_ascii_case("bearer") => {}
        Some(serde_json::Value::String(_)) => {
            return Err(invalid("the token_type is not Bearer (RFC 6750)"));
        }
        _ => return Err(invalid("no token_type string (RFC 6749 5.1)")),
    }
    let expires_in = match object.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    if object.get("expires_in").is_some_and(|v| !v.is_null()) && expires_in.is_none() {
        return Err(invalid(
            "the expires_in is not a number of seconds (RFC 6749 5.1)",
        ));
    }
    Ok(Token::bearer(
        SecretString::from(value.as_str()),
        expires_in.map(Duration::from_secs),
    ))
}

/// The token request's failure as a [`TokenError`]: an OAuth 2.0 error response (RFC 6749 5.2:
/// status 400 or 401 with a JSON `error` code) is [`TokenError::Refused`], anything else
/// [`TokenError::Request`].
pub fn token_request_failed(error: Error) -> TokenError {
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
    }
    // RFC 6749 5.2: error = 1*( %x20-21 / %x23-5B / %x5D-7E ).
    let code_char = |b: u8| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E);
    let refusal = error
        .status_error()
        .filter(|s| matches!(s.status().as_u16(), 400 | 401))
        .and_then(|s| s.json::<Refusal>().ok().map(|r| (s.status().as_u16(), r)))
        .filter(|(_, r)| {
            !r.error.is_empty() && r.error.len() <= 64 && r.error.bytes().all(code_char)
        });
    match refusal {
        Some((status, r)) => TokenError::Refused {
            code: r.error,
            description: r.error_description.map(|d| d.chars().take(256).collect()),
            status,
        },
        None => TokenError::Request(Box::new(error)),
    }
}

/// A vendor's rule for "the API rejected the access token", for APIs that do not answer RFC
/// 6750's `WWW-Authenticate: Bearer error="invalid_token"`.
pub type RejectionRule = Arc<dyn Fn(&StatusError) -> bool + Send + Sync>;

/// The OAuth 2.0 client credentials token source: one token request per refresh, sent through
/// an egress [`Client`] of its own (its timeouts, retries and redaction).
///
/// A backend's builder makes one from an `[auth.oauth2]` section or
/// `Builder::with_oauth2(config)`. Build one by hand to share it between clients, or to give it
/// a vendor's rule for a rejected token:
///
/// ```
/// use std::sync::Arc;
/// use egress_core::test_util::{ScriptedTransport, block_on, step};
/// use egress_core::{ClientCredentials, is_invalid_token};
/// use egress_core::{Client, Config, OAuth2Config};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = ScriptedTransport::new();
/// let token = |t: &str| format!(r#"{{"access_token":"{t}","token_type":"Bearer","expires_in":600}}"#);
/// upstream
///     .push(step(200).json(&token("t-1")))
///     // This API says so in its body, without WWW-Authenticate.
///     .push(step(401).json(r#"[{"errorCode":"INVALID_SESSION_ID"}]"#))
///     .push(step(200).json(&token("t-2")))
///     .push(step(200));
/// let token_client = Client::new(Config::default(), upstream.runtime())?;
/// let oauth2 = OAuth2Config::new("https://login.example.com/token", "svc", "s3cret".into());
/// let source = ClientCredentials::new(oauth2, token_client)?.with_rejection(Arc::new(|r| {
///     is_invalid_token(r) || (r.status() == 401 && r.body_excerpt().contains("INVALID_SESSION_ID"))
/// }));
/// let client = Client::builder(Config::default().with_base_url("https://api.example.com"), upstream.runtime())
///     .with_token_source(Arc::new(source))
///     .build()?;
/// let response = block_on(client.get("/accounts").send())?;
/// assert_eq!(response.attempts(), 2); // rejected once, re-sent with t-2
/// assert_eq!(upstream.requests()[3].header("authorization"), Some("Bearer t-2"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientCredentials {
    config: OAuth2Config,
    secret: SecretString,
    client: Client,
    rejection: Option<RejectionRule>,
}

impl ClientCredentials {
    /// A token source for `config` whose token requests go through `client` (which should have
    /// no authentication of its own). The secret is read from the environment now when the
    /// configuration names a variable.
    pub fn new(config: OAuth2Config, client: Client) -> Result<Self, ConfigError> {
        let secret = config.resolve_secret(|name| std::env::var(name).ok())?;
        Ok(Self {
            config,
            secret,
            client,
            rejection: None,
        })
    }

    /// Replaces the rule that says the API rejected the token (default:
    /// [`is_invalid_token`](super::is_invalid_token), RFC 6750 3.1).
    pub fn with_rejection(mut self, rule: RejectionRule) -> Self {
        self.rejection = Some(rule);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &OAuth2Config {
        &self.config
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("config", &self.config)
            .field("custom_rejection", &self.rejection.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenSource for ClientCredentials {
    fn fetch(&self, ctx: FetchContext) -> BoxFuture<'_, Result<Token, TokenError>> {
        Box::pin(async move {
            let left = ctx.deadline.saturating_duration_since(ctx.now);
            let deadline = self.config.deadline.map_or(left, |d| d.min(left));
            if deadline.is_zero() {
                return Err(TokenError::Deadline);
            }
            let request = self
                .config
                .token_request(&self.secret)
                .map_err(|e| TokenError::Request(Box::new(e)))?
                .with_deadline(deadline);
            match self.client.send(request).await {
                Ok(response) => parse_token_response(response.body()),
                Err(error) => Err(token_request_failed(error)),
            }
        })
    }

    fn is_rejection(&self, response: &StatusError) -> bool {
        match &self.rejection {
            Some(rule) => rule(response),
            None => super::is_invalid_token(response),
        }
    }

    fn refresh_policy(&self) -> RefreshPolicy {
        self.config.refresh.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn config() -> OAuth2Config {
        OAuth2Config::new(
            "https://login.example.com/token",
            "my client",
            SecretString::from("s3cr:t&x"),
        )
    }

    #[test]
    fn client_secret_basic_form_encodes_id_and_secret_before_base64_as_rfc_6749_2_3_1_says() {
        let secret = config().resolve_secret(|_| None).unwrap();
        let request = config()
            .with_scopes(["a:read", "b"])
            .token_request(&secret)
            .unwrap();
        let auth = request.headers()[AUTHORIZATION].to_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"my+client:s3cr%3At%26x");
        assert!(request.headers()[AUTHORIZATION].is_sensitive());
        // RFC 6749 4.4.2 and 3.3: the grant type and the space-separated scopes.
        assert_eq!(
            request.body().as_ref(),
            b"grant_type=client_credentials&scope=a%3Aread+b"
        );
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.overrides().idempotent, Some(true));
    }

    #[test]
    fn client_secret_post_sends_the_credentials_in_the_body_and_no_authorization() {
        let secret = config().resolve_secret(|_| None).unwrap();
        let request = config()
            .with_auth_method(ClientAuthMethod::ClientSecretPost)
            .with_audience("https://api.example.com")
            .with_resource("https://r1.example")
            .with_resource("https://r2.example")
            .token_request(&secret)
            .unwrap();
        assert!(!request.headers().contains_key(AUTHORIZATION));
        let pairs: Vec<(String, String)> = form_urlencoded::parse(request.body())
            .into_owned()
            .collect();
        let get = |k: &str| -> Vec<&str> {
            pairs
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(get("grant_type"), ["client_credentials"]);
        assert_eq!(get("client_id"), ["my client"]);
        assert_eq!(get("client_secret"), ["s3cr:t&x"]);
        assert_eq!(get("audience"), ["https://api.example.com"]);
        // RFC 8707 2: one resource parameter per resource.
        assert_eq!(
            get("resource"),
            ["https://r1.example", "https://r2.example"]
        );
    }

    #[test]
    fn the_secret_comes_from_the_configuration_or_the_environment_never_both() {
        let from_env = OAuth2Config::from_env("https://l.example/t", "id", "SECRET_VAR");
        let secret = from_env
            .resolve_secret(|n| (n == "SECRET_VAR").then(|| "from-env".to_owned()))
            .unwrap();
        assert_eq!(secret.expose_secret(), "from-env");
        let missing = from_env.resolve_secret(|_| None).unwrap_err();
        assert_eq!(missing.field(), "auth.oauth2.client_secret_env");
        let mut both = config();
        both.client_secret_env = Some("X".into());
        assert_eq!(
            both.resolve_secret(|_| None).unwrap_err().field(),
            "auth.oauth2.client_secret"
        );
    }

    #[test]
    fn a_plain_http_token_url_is_refused_unless_it_is_loopback_and_scopes_are_checked() {
        let plain = OAuth2Config::new("http://login.example.com/t", "id", "s".into());
        assert_eq!(
            plain.resolve_secret(|_| None).unwrap_err().field(),
            "auth.oauth2.token_url"
        );
        let local = OAuth2Config::new("http://127.0.0.1:8080/t", "id", "s".into());
        assert!(local.resolve_secret(|_| None).is_ok());
        let bad = config().with_scopes(["a b"]);
        assert_eq!(
            bad.resolve_secret(|_| None).unwrap_err().field(),
            "auth.oauth2.scopes"
        );
    }

    #[test]
    fn a_token_response_gives_the_token_and_its_lifetime_as_rfc_6749_5_1_says() {
        let t = parse_token_response(
            br#"{"access_token":"2YotnFZFEjr1zCsicMWpAA","token_type":"bearer","expires_in":3600}"#,
        )
        .unwrap();
        assert_eq!(t.value.expose_secret(), "2YotnFZFEjr1zCsicMWpAA");
        assert_eq!(t.expires_in, Some(Duration::from_secs(3600)));
        let t = parse_token_response(
            br#"{"access_token":"x","token_type":"Bearer","expires_in":"60"}"#,
        )
        .unwrap();
        assert_eq!(t.expires_in, Some(Duration::from_secs(60)));
        let t = parse_token_response(br#"{"access_token":"x","token_type":"Bearer"}"#).unwrap();
        assert_eq!(t.expires_in, None);
    }

    #[test]
    fn a_response_that_is_not_a_bearer_token_is_a_final_error_that_never_quotes_the_body() {
        for body in [
            &br#"{"token_type":"Bearer"}"#[..],
            br#"{"access_token":"tok-sekrit","token_type":"mac"}"#,
            br#"{"access_token":"tok-sekrit"}"#,
            br#"{"access_token":"tok-sekrit","token_type":"Bearer","expires_in":"soon"}"#,
            br#"{"access_token":12345678,"token_type":"Bearer"}"#,
            b"tok-sekrit",
        ] {
            let error = parse_token_response(body).unwrap_err();
            assert!(error.is_final(), "{error}");
            assert!(!error.to_string().contains("sekrit"), "{error}");
            assert!(!error.to_string().contains("12345678"), "{error}");
        }
    }
}
