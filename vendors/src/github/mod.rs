//! GitHub's REST API (version `2022-11-28`): a repository, a repository's issues with `Link`
//! pagination, and the caller's rate limits, with GitHub's rate-limit rules and typed errors.
//!
//! | call | request | success |
//! |---|---|---|
//! | [`get_repository`](GitHubClient::get_repository) | `GET /repos/{owner}/{repo}` | [`Repository`] |
//! | [`list_issues`](GitHubClient::list_issues) | `GET /repos/{owner}/{repo}/issues`, then each `rel="next"` | [`Pages`] of [`Issue`] (pull requests included, as GitHub lists them) |
//! | [`get_rate_limit`](GitHubClient::get_rate_limit) | `GET /rate_limit` (does not count against the limit, so it is never held) | [`RateLimitOverview`] |
//!
//! Every request carries `Accept: application/vnd.github+json`, `X-GitHub-Api-Version:
//! 2022-11-28`, a `User-Agent` (GitHub rejects requests without one), the token as
//! `Authorization: Bearer` when one is set (held as a [`SecretString`], marked sensitive, never
//! shown by `Debug`, logs or errors), and [`GitHubClassifier`] for GitHub's primary and secondary
//! rate limits. Failures map to [`GitHubApiError`], with GitHub's error body decoded into
//! [`GitHubError`].
//!
//! # Rate limits and waiting
//!
//! GitHub asks clients to wait until `x-ratelimit-reset` (primary limit), for `Retry-After`, or
//! at least a minute (secondary limit, sometimes signalled only by the message of a 403). The
//! classifier hands that wait to the core, which sleeps only when the wait fits both the
//! client's [`max_rate_limit_wait`](GitHubClient::with_max_rate_limit_wait) (default
//! [`DEFAULT_MAX_RATE_LIMIT_WAIT`], 90 s) and the call's deadline (the base client's, 30 s by
//! default); otherwise the call ends at once with [`GitHubApiError::RateLimited`] and its
//! `retry_at`, so a request handler is never held for minutes. Under the default 30 s deadline
//! no minute-long wait fits, so a request handler gets `RateLimited` at once; a background job
//! that would rather wait builds its base client with a longer deadline (a few minutes), and
//! then rides out a secondary limit or a reset due within the next minute and a half.
//!
//! ```
//! use egress_core::test_util::{ScriptedTransport, block_on, step};
//! use egress_vendors::github::{self, GitHubClient, RepoRef, SecretString};
//!
//! let upstream = ScriptedTransport::new();
//! upstream.push(step(200).json(include_str!("../../tests/fixtures/github/repository.json")));
//!
//! // Once, at start-up (the base client comes from your backend crate in a service).
//! let base = upstream.client(github::config())?;
//! let github = GitHubClient::new(base).with_token(SecretString::from("ghp_example"));
//!
//! // Per call.
//! let repo: RepoRef = "octocat/Hello-World".parse()?;
//! let repository = block_on(github.get_repository(&repo))?;
//! assert_eq!(repository.full_name, "octocat/Hello-World");
//! assert_eq!(upstream.requests()[0].header("x-github-api-version"), Some("2022-11-28"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod link;
mod pages;
mod rate_limit;
mod types;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use egress_core::Url;
use egress_core::{Client, Config, Response};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

pub use error::GitHubApiError;
pub use link::{Link, find_rel, parse_link_header};
pub use pages::{Page, Pages};
pub use rate_limit::{GitHubClassifier, RateLimitKind, SECONDARY_MINIMUM_WAIT, rate_limit_headers};
pub use secrecy::SecretString;
pub use types::{
    GitHubError, GitHubErrorDetail, InvalidRepoRef, Issue, IssueState, IssuesQuery, Label, License,
    Milestone, Permissions, PullRequestRef, RateLimit, RateLimitOverview, RateLimitResources,
    RepoRef, Repository, SimpleUser, StateFilter,
};

/// GitHub's API root, used when the base client has no base URL.
pub const API_URL: &str = "https://api.github.com";

/// The REST API version this client speaks, sent as `X-GitHub-Api-Version`.
pub const API_VERSION: &str = "2022-11-28";

/// The media type GitHub recommends, sent as `Accept`.
pub const MEDIA_TYPE: &str = "application/vnd.github+json";

/// The `User-Agent` of [`config`].
pub const DEFAULT_USER_AGENT: &str = concat!("egress-vendors/", env!("CARGO_PKG_VERSION"));

/// How many pages a list walks by default before it stops ([`Pages::is_truncated`]).
pub const DEFAULT_MAX_PAGES: u32 = 10;

/// The longest rate-limit wait a [`GitHubClient`] sits out by default
/// ([`GitHubClient::with_max_rate_limit_wait`]): 90 s.
///
/// GitHub's secondary limits ask for their `Retry-After`, or at least a minute
/// ([`SECONDARY_MINIMUM_WAIT`]) without one, so the core's client-wide default cap of 30 s would
/// end every such call at once. 90 s covers that minute with room to spare (a `Retry-After` of
/// a little over a minute, a primary reset due within the next minute and a half), while a
/// primary reset still tens of minutes away (the hourly quota) ends the call at once with
/// [`GitHubApiError::RateLimited`] and its `retry_at`, for the caller to reschedule rather than
/// hold a worker.
pub const DEFAULT_MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(90);

/// A configuration for a GitHub base client: the default policy with [`API_URL`] as its base
/// URL and [`DEFAULT_USER_AGENT`]. Adjust it like any [`Config`] (for GitHub Enterprise Server,
/// set the base URL to `https://HOST/api/v3`).
pub fn config() -> Config {
    Config::default()
        .with_base_url(API_URL)
        .with_user_agent(DEFAULT_USER_AGENT.to_owned())
}

/// A GitHub client. Cheap to clone; build it once at start-up.
#[derive(Clone)]
pub struct GitHubClient {
    client: Client,
    /// The API root, its path ending with `/`.
    api: Url,
    /// Whether the base client joins relative targets onto `api` (it has a base URL).
    joins: bool,
    token: Option<SecretString>,
    user_agent: Option<String>,
    classifier: Arc<GitHubClassifier>,
    max_pages: u32,
    /// The `Retry-After` cap of every request.
    max_rate_limit_wait: Duration,
}

impl fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClient")
            .field("api", &self.api.as_str())
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("user_agent", &self.user_agent)
            .field("classifier", &self.classifier)
            .field("max_pages", &self.max_pages)
            .field("max_rate_limit_wait", &self.max_rate_limit_wait)
            .field("client", &self.client)
            .finish()
    }
}

impl GitHubClient {
    /// Wraps a base client. Its base URL is taken as the API root (see [`config`]); without one,
    /// requests go to [`API_URL`].
    ///
    /// The [`max_rate_limit_wait`](Self::with_max_rate_limit_wait) starts as the longer of
    /// [`DEFAULT_MAX_RATE_LIMIT_WAIT`] and the base client's `retry.retry_after_cap`, so a base
    /// client built to wait longer keeps doing so.
    pub fn new(client: Client) -> Self {
        let max_rate_limit_wait = client
            .policy()
            .config()
            .retry
            .retry_after_cap
            .max(DEFAULT_MAX_RATE_LIMIT_WAIT);
        let (api, joins) = match client.policy().base_url() {
            Some(base) => (as_directory(base.clone()), true),
            None => (
                Url::parse(API_URL).expect("invariant: API_URL is a valid absolute URL"),
                false,
            ),
        };
        Self {
            client,
            api,
            joins,
            token: None,
            user_agent: None,
            classifier: Arc::new(GitHubClassifier::new()),
            max_pages: DEFAULT_MAX_PAGES,
            max_rate_limit_wait,
        }
    }

    /// Sends `Authorization: Bearer <token>` (a personal access token, or an app installation
    /// token) with every request. If the base client has credentials of its own, those win.
    pub fn with_token(mut self, token: SecretString) -> Self {
        self.token = Some(token);
        self
    }

    /// Sends this `User-Agent` instead of the base client's. GitHub asks for your application's
    /// or your GitHub user's name.
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Sets how many pages a list walks at most (at least 1; default [`DEFAULT_MAX_PAGES`]).
    pub fn with_max_pages(mut self, max_pages: u32) -> Self {
        self.max_pages = max_pages.max(1);
        self
    }

    /// Sets the longest rate-limit wait (primary reset, `Retry-After`, the secondary minimum) a
    /// call sits out before retrying, in place of the base client's `retry.retry_after_cap` for
    /// this client's requests only (other vendors sharing the base client keep theirs).
    ///
    /// A wait within it, and ending before the call's deadline, is waited and the request sent
    /// again; a longer one ends the call at once with [`GitHubApiError::RateLimited`] and its
    /// `retry_at`. Default: [`DEFAULT_MAX_RATE_LIMIT_WAIT`] (see there for why), or the base
    /// client's cap when that is longer. The deadline still bounds every wait: raise the base
    /// client's deadline as well for waits past it (30 s by default).
    pub fn with_max_rate_limit_wait(mut self, wait: Duration) -> Self {
        self.max_rate_limit_wait = wait;
        self
    }

    /// The longest rate-limit wait a call sits out ([`with_max_rate_limit_wait`](Self::with_max_rate_limit_wait)).
    pub fn max_rate_limit_wait(&self) -> Duration {
        self.max_rate_limit_wait
    }

    /// Replaces the rate-limit classifier (to wait longer on secondary limits).
    pub fn with_classifier(mut self, classifier: GitHubClassifier) -> Self {
        self.classifier = Arc::new(classifier);
        self
    }

    /// The base client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `GET /repos/{owner}/{repo}`.
    pub async fn get_repository(&self, repo: &RepoRef) -> Result<Repository, GitHubApiError> {
        let url = self.url(&format!("repos/{}/{}", repo.owner(), repo.name()));
        let response = self.send_get(&self.target(&url), "get_repository").await?;
        self.decode(&response)
    }

    /// `GET /repos/{owner}/{repo}/issues`: the issues and pull requests of a repository, as a
    /// bounded walk through its pages. Nothing is sent until the first
    /// [`Pages::next_page`].
    pub fn list_issues(&self, repo: &RepoRef, query: &IssuesQuery) -> Pages<Issue> {
        let mut url = self.url(&format!("repos/{}/{}/issues", repo.owner(), repo.name()));
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("state", query.state.as_str());
            if !query.labels.is_empty() {
                pairs.append_pair("labels", &query.labels.join(","));
            }
            if let Some(since) = &query.since {
                pairs.append_pair("since", since);
            }
            pairs.append_pair("per_page", &query.per_page.clamp(1, 100).to_string());
        }
        Pages::new(self.clone(), "list_issues", self.target(&url))
    }

    /// `GET /rate_limit`: every rate limit of the caller. This call does not count against
    /// the primary rate limit.
    pub async fn get_rate_limit(&self) -> Result<RateLimitOverview, GitHubApiError> {
        let url = self.url("rate_limit");
        let response = self.send_get(&self.target(&url), "get_rate_limit").await?;
        self.decode(&response)
    }

    /// The absolute URL of `path` (relative to the API root).
    fn url(&self, path: &str) -> Url {
        let mut url = self.api.clone();
        url.set_path(&format!("{}{path}", self.api.path()));
        url
    }

    /// What to hand the base client for `url`: the part after the API root when the base client
    /// joins paths itself, else the absolute URL.
    fn target(&self, url: &Url) -> String {
        if !self.joins {
            return url.as_str().to_owned();
        }
        let path = url
            .path()
            .strip_prefix(self.api.path())
            .unwrap_or(url.path());
        match url.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        }
    }

    /// The target of a pagination link, if it stays on the API's origin and under its path.
    fn link_target(&self, link: &str) -> Result<String, GitHubApiError> {
        let foreign = || GitHubApiError::ForeignLink {
            url: link.to_owned(),
        };
        let url = self.api.join(link).map_err(|_| foreign())?;
        if url.origin() != self.api.origin() || !url.path().starts_with(self.api.path()) {
            return Err(foreign());
        }
        Ok(self.target(&url))
    }

    async fn send_get(
        &self,
        target: &str,
        operation: &'static str,
    ) -> Result<Response, GitHubApiError> {
        let mut request = self
            .client
            .get(target)
            .operation(operation)
            .header("accept", MEDIA_TYPE)
            .header("x-github-api-version", API_VERSION)
            .classifier(self.classifier.clone())
            .retry_after_cap(self.max_rate_limit_wait);
        if operation == "get_rate_limit" {
            // GitHub does not count `GET /rate_limit` against the quota: it may go while the
            // host is held for an exhausted quota, and the client-side limit does not apply.
            request = request.hold(false).rate_limit(false);
        }
        if let Some(user_agent) = &self.user_agent {
            request = request.header("user-agent", user_agent);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request.send().await.map_err(|e| self.error(e))
    }

    /// Maps a core error, masking the token in GitHub's decoded error body.
    fn error(&self, error: egress_core::Error) -> GitHubApiError {
        let secret = self.token.as_ref().map(ExposeSecret::expose_secret);
        GitHubApiError::from_core(error, &self.classifier, secret)
    }

    fn decode<T: DeserializeOwned>(&self, response: &Response) -> Result<T, GitHubApiError> {
        response.json().map_err(|e| self.error(e))
    }
}

/// `url` with its path ending in `/`, so that relative paths land under it.
fn as_directory(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}
