//! GitHub's payloads, as its REST API documents them (API version 2022-11-28).
//!
//! The rules, so that a new field or a `null` never breaks a call:
//! - a field GitHub documents as nullable is an `Option` (and may be present as `null`);
//! - a field GitHub documents as optional has `#[serde(default)]`;
//! - unknown fields are ignored (GitHub adds fields without a new API version);
//! - only the fields a service typically needs are modelled; the structs are
//!   `#[non_exhaustive]`, so more can be added without breaking callers.
//!
//! Timestamps are kept as GitHub sends them (ISO 8601 strings such as `2011-01-26T19:06:43Z`),
//! so this crate needs no date library.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer};

/// Treats `null` like an absent field: the type's default (an empty list, `false`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A user or organization as GitHub embeds it in other objects ("simple user").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct SimpleUser {
    /// The login, such as `octocat`.
    pub login: String,
    /// The numeric ID.
    pub id: u64,
    /// The GraphQL node ID.
    #[serde(default)]
    pub node_id: String,
    /// The profile page.
    #[serde(default)]
    pub html_url: String,
    /// `User`, `Organization` or `Bot`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Whether the account is a GitHub staff administrator.
    #[serde(default)]
    pub site_admin: bool,
}

/// A repository's license, as embedded in a repository.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct License {
    /// The license key, such as `mit`.
    pub key: String,
    /// The license name, such as `MIT License`.
    pub name: String,
    /// The SPDX identifier (`null` for licenses GitHub cannot identify).
    pub spdx_id: Option<String>,
    /// The API URL of the license (`null` for `other`).
    pub url: Option<String>,
}

/// The caller's permissions on a repository (present only for authenticated calls).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Permissions {
    /// May administer.
    pub admin: bool,
    /// May push.
    pub push: bool,
    /// May pull.
    pub pull: bool,
    /// May maintain.
    #[serde(default)]
    pub maintain: bool,
    /// May triage.
    #[serde(default)]
    pub triage: bool,
}

/// A repository (`GET /repos/{owner}/{repo}`, "full repository").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Repository {
    /// The numeric ID.
    pub id: u64,
    /// The GraphQL node ID.
    pub node_id: String,
    /// The name, such as `Hello-World`.
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// The owner.
    pub owner: SimpleUser,
    /// Whether the repository is private.
    pub private: bool,
    /// The web page.
    pub html_url: String,
    /// The description (`null` when none).
    pub description: Option<String>,
    /// Whether it is a fork.
    pub fork: bool,
    /// The API URL.
    pub url: String,
    /// The homepage (`null` when none).
    #[serde(default)]
    pub homepage: Option<String>,
    /// The main language (`null` when GitHub cannot tell).
    #[serde(default)]
    pub language: Option<String>,
    /// Forks.
    pub forks_count: u64,
    /// Stars.
    pub stargazers_count: u64,
    /// Watchers (GitHub reports stars here too).
    pub watchers_count: u64,
    /// The repository size in kilobytes.
    pub size: u64,
    /// The default branch.
    pub default_branch: String,
    /// Open issues and pull requests.
    pub open_issues_count: u64,
    /// Topics (optional in the schema).
    #[serde(default, deserialize_with = "null_as_default")]
    pub topics: Vec<String>,
    /// Whether issues are enabled.
    pub has_issues: bool,
    /// Whether it is archived.
    pub archived: bool,
    /// Whether it is disabled.
    pub disabled: bool,
    /// `public`, `private` or `internal` (optional in the schema).
    #[serde(default)]
    pub visibility: Option<String>,
    /// When it was last pushed to (`null` for an empty repository).
    pub pushed_at: Option<String>,
    /// When it was created.
    pub created_at: String,
    /// When it was last updated.
    pub updated_at: String,
    /// The caller's permissions (optional: only for authenticated calls).
    #[serde(default)]
    pub permissions: Option<Permissions>,
    /// The license (`null` when none is detected).
    #[serde(default)]
    pub license: Option<License>,
}

/// Whether an issue is open or closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum IssueState {
    /// Open.
    Open,
    /// Closed.
    Closed,
    /// A state this crate does not know yet.
    #[serde(other)]
    Unknown,
}

/// A label on an issue. GitHub documents labels either as objects or as bare names; both
/// decode into this (a bare name gets no ID and no color).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Label {
    /// The numeric ID, when GitHub sent an object.
    pub id: Option<u64>,
    /// The name.
    pub name: String,
    /// The description (`null` when none).
    pub description: Option<String>,
    /// The color as six hex digits (`null` is possible).
    pub color: Option<String>,
    /// Whether it is one of GitHub's default labels.
    pub default: bool,
}

/// A label sent as an object.
#[derive(Deserialize)]
struct LabelObject {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    color: Option<String>,
    #[serde(default)]
    default: bool,
}

/// A string or an object, told apart by what the JSON holds. Not `#[serde(untagged)]`: an
/// untagged enum buffers the value and, when no variant fits, reports only "data did not match
/// any variant" at the label; here a bad field is reported at its own path
/// (`labels[1].id: invalid type: string "x", expected u64`).
impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LabelVisitor;

        impl<'de> serde::de::Visitor<'de> for LabelVisitor {
            type Value = Label;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a label name or a label object")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Label, E> {
                Ok(Label {
                    id: None,
                    name: name.to_owned(),
                    description: None,
                    color: None,
                    default: false,
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Label, A::Error> {
                let o =
                    LabelObject::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Label {
                    id: o.id,
                    name: o.name.unwrap_or_default(),
                    description: o.description,
                    color: o.color,
                    default: o.default,
                })
            }
        }

        deserializer.deserialize_any(LabelVisitor)
    }
}

/// A milestone, as embedded in an issue.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Milestone {
    /// The numeric ID.
    pub id: u64,
    /// The number within the repository.
    pub number: u64,
    /// The title.
    pub title: String,
    /// `open` or `closed`.
    pub state: IssueState,
    /// The description (`null` when none).
    pub description: Option<String>,
    /// The due date (`null` when none).
    pub due_on: Option<String>,
}

/// Present on an issue that is a pull request ("every pull request is an issue").
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PullRequestRef {
    /// The pull request's API URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Its web page.
    #[serde(default)]
    pub html_url: Option<String>,
    /// Its diff.
    #[serde(default)]
    pub diff_url: Option<String>,
    /// Its patch.
    #[serde(default)]
    pub patch_url: Option<String>,
    /// When it was merged (`null` when it is not).
    #[serde(default)]
    pub merged_at: Option<String>,
}

/// An issue or a pull request, as `GET /repos/{owner}/{repo}/issues` lists them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Issue {
    /// The numeric ID (an issue ID even for a pull request).
    pub id: u64,
    /// The GraphQL node ID.
    pub node_id: String,
    /// The API URL.
    pub url: String,
    /// The web page.
    pub html_url: String,
    /// The number within the repository.
    pub number: u64,
    /// Open or closed.
    pub state: IssueState,
    /// Why it was closed: `completed`, `not_planned`, `reopened` (`null` or absent when open).
    #[serde(default)]
    pub state_reason: Option<String>,
    /// The title.
    pub title: String,
    /// The body in Markdown (`null` when empty).
    #[serde(default)]
    pub body: Option<String>,
    /// The author (`null` for a deleted account).
    pub user: Option<SimpleUser>,
    /// The labels.
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Vec<Label>,
    /// The assignee (`null` when none).
    #[serde(default)]
    pub assignee: Option<SimpleUser>,
    /// Every assignee (`null` or absent when none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub assignees: Vec<SimpleUser>,
    /// The milestone (`null` when none).
    pub milestone: Option<Milestone>,
    /// Whether the conversation is locked.
    pub locked: bool,
    /// The number of comments.
    pub comments: u64,
    /// Present when this issue is a pull request.
    #[serde(default)]
    pub pull_request: Option<PullRequestRef>,
    /// When it was closed (`null` when open).
    pub closed_at: Option<String>,
    /// When it was created.
    pub created_at: String,
    /// When it was last updated.
    pub updated_at: String,
    /// The author's association with the repository, such as `OWNER` or `CONTRIBUTOR`.
    #[serde(default)]
    pub author_association: String,
    /// Whether a pull request is a draft (optional).
    #[serde(default)]
    pub draft: Option<bool>,
}

impl Issue {
    /// Whether this "issue" is a pull request.
    pub fn is_pull_request(&self) -> bool {
        self.pull_request.is_some()
    }
}

/// One rate limit: how many calls remain in the current window, and when it resets.
///
/// Sent as the body of `GET /rate_limit` and as the `x-ratelimit-*` headers of every response.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RateLimit {
    /// Calls allowed per window.
    pub limit: u64,
    /// Calls left in this window.
    pub remaining: u64,
    /// When the window resets, in UTC epoch seconds.
    pub reset: u64,
    /// Calls made in this window.
    #[serde(default)]
    pub used: u64,
    /// Which limit this is (`core`, `search`, `graphql`...), when GitHub says.
    #[serde(default)]
    pub resource: Option<String>,
}

impl RateLimit {
    /// When the window resets, as a wall-clock time.
    pub fn reset_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(self.reset))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Whether no call is left in this window.
    pub fn is_exhausted(&self) -> bool {
        self.remaining == 0
    }
}

/// Every rate limit of the caller (`GET /rate_limit`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RateLimitOverview {
    /// The limits by category.
    pub resources: RateLimitResources,
    /// The core limit again (GitHub deprecates this field in favour of `resources.core`).
    #[serde(default)]
    pub rate: Option<RateLimit>,
}

/// The rate limits by category. `core` and `search` are always present; the others depend on
/// the account and the API's age, and any new category lands in [`other`](Self::other).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RateLimitResources {
    /// Every REST endpoint but search.
    pub core: RateLimit,
    /// Search (except code search).
    pub search: RateLimit,
    /// The GraphQL API.
    #[serde(default)]
    pub graphql: Option<RateLimit>,
    /// Code search.
    #[serde(default)]
    pub code_search: Option<RateLimit>,
    /// Every other category, by name (`integration_manifest`, `scim`, ...).
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, RateLimit>,
}

/// An owner and a repository name, checked to be path-safe.
///
/// Owners are 1 to 39 letters, digits or `-`; repository names 1 to 100 letters, digits, `-`,
/// `_` or `.`, and never `.` or `..`. That is GitHub's own rule, and it keeps both a literal
/// path segment.
///
/// ```
/// use egress_vendors::github::RepoRef;
/// let repo: RepoRef = "octocat/Hello-World".parse().unwrap();
/// assert_eq!(repo.owner(), "octocat");
/// assert!("octocat/..".parse::<RepoRef>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RepoRef {
    owner: String,
    name: String,
}

/// Why an owner or repository name was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository reference: {reason}")]
pub struct InvalidRepoRef {
    reason: &'static str,
}

impl RepoRef {
    /// Checks and wraps `owner` and `name`.
    pub fn new(owner: &str, name: &str) -> Result<Self, InvalidRepoRef> {
        let bad = |reason| Err(InvalidRepoRef { reason });
        if owner.is_empty() || owner.len() > 39 {
            return bad("the owner must be 1 to 39 characters");
        }
        if !owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("the owner may only hold ASCII letters, digits and '-'");
        }
        if name.is_empty() || name.len() > 100 {
            return bad("the repository name must be 1 to 100 characters");
        }
        if name == "." || name == ".." {
            return bad("the repository name cannot be '.' or '..'");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return bad(
                "the repository name may only hold ASCII letters, digits, '-', '_' and '.'",
            );
        }
        Ok(Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The owner.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The repository name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::str::FromStr for RepoRef {
    type Err = InvalidRepoRef;

    /// Parses `owner/name`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (owner, name) = s.split_once('/').ok_or(InvalidRepoRef {
            reason: "expected owner/name",
        })?;
        Self::new(owner, name)
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl fmt::Debug for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoRef({self})")
    }
}

/// Which issues to list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateFilter {
    /// Open issues (GitHub's default).
    #[default]
    Open,
    /// Closed issues.
    Closed,
    /// Both.
    All,
}

impl StateFilter {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
            Self::All => "all",
        }
    }
}

/// The query of [`list_issues`](super::GitHubClient::list_issues).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuesQuery {
    /// Which states.
    pub state: StateFilter,
    /// Only issues with all of these labels.
    pub labels: Vec<String>,
    /// Only issues updated at or after this ISO 8601 time.
    pub since: Option<String>,
    /// Items per page, 1 to 100 (GitHub's default is 30).
    pub per_page: u8,
}

impl Default for IssuesQuery {
    fn default() -> Self {
        Self {
            state: StateFilter::Open,
            labels: Vec::new(),
            since: None,
            per_page: 30,
        }
    }
}

impl IssuesQuery {
    /// Sets the states.
    pub fn with_state(mut self, state: StateFilter) -> Self {
        self.state = state;
        self
    }

    /// Sets the labels every issue must have.
    pub fn with_labels<S: Into<String>>(mut self, labels: impl IntoIterator<Item = S>) -> Self {
        self.labels = labels.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the earliest update time (ISO 8601).
    pub fn with_since(mut self, since: impl Into<String>) -> Self {
        self.since = Some(since.into());
        self
    }

    /// Sets the items per page, clamped to 1..=100.
    pub fn with_per_page(mut self, per_page: u8) -> Self {
        self.per_page = per_page.clamp(1, 100);
        self
    }
}

/// The body of a GitHub error response, as documented ("basic error" and "validation error"):
///
/// ```json
/// {
///   "message": "Validation Failed",
///   "errors": [{"resource": "Issue", "field": "title", "code": "missing_field"}],
///   "documentation_url": "https://docs.github.com/rest/issues/issues#create-an-issue",
///   "status": "422"
/// }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct GitHubError {
    /// What went wrong, in GitHub's words.
    #[serde(default)]
    pub message: String,
    /// The page of GitHub's documentation about this endpoint or error.
    #[serde(default)]
    pub documentation_url: Option<String>,
    /// The status as a string (sent by newer API versions).
    #[serde(default)]
    pub status: Option<String>,
    /// The details of a validation failure (422).
    #[serde(default, deserialize_with = "details")]
    pub errors: Vec<GitHubErrorDetail>,
}

impl fmt::Display for GitHubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for (i, detail) in self.errors.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{detail}")?;
        }
        Ok(())
    }
}

impl GitHubError {
    /// Whether GitHub's message says a secondary rate limit was hit.
    pub fn is_secondary_rate_limit(&self) -> bool {
        self.message
            .to_ascii_lowercase()
            .contains("secondary rate limit")
    }

    /// Whether GitHub's message says any rate limit was hit (primary or secondary).
    pub fn is_rate_limit(&self) -> bool {
        self.message.to_ascii_lowercase().contains("rate limit")
    }

    /// Masks every occurrence of `secret` (the request's token, echoed back by a server or a
    /// proxy) so that it cannot reach a log through this value.
    pub(super) fn redact(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let mask = |text: &mut String| {
            if text.contains(secret) {
                *text = text.replace(secret, "[REDACTED]");
            }
        };
        mask(&mut self.message);
        for detail in &mut self.errors {
            for text in [
                &mut detail.resource,
                &mut detail.field,
                &mut detail.code,
                &mut detail.message,
            ]
            .into_iter()
            .flatten()
            {
                mask(text);
            }
            if detail
                .value
                .as_ref()
                .is_some_and(|v| v.to_string().contains(secret))
            {
                detail.value = Some(serde_json::Value::String("[REDACTED]".to_owned()));
            }
        }
        for text in [&mut self.documentation_url, &mut self.status]
            .into_iter()
            .flatten()
        {
            mask(text);
        }
    }
}

/// One entry of `errors[]` in a GitHub error: which field of which resource is wrong and how
/// (`missing`, `missing_field`, `invalid`, `already_exists`, `unprocessable`, or `custom` with
/// a message). GitHub sometimes sends a bare string instead; it becomes the
/// [`message`](Self::message).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "DetailWire")]
#[non_exhaustive]
pub struct GitHubErrorDetail {
    /// The kind of resource, such as `Issue`.
    pub resource: Option<String>,
    /// The field.
    pub field: Option<String>,
    /// The error code.
    pub code: Option<String>,
    /// A human-readable message (for `custom` codes and bare strings).
    pub message: Option<String>,
    /// The offending value, of any JSON type.
    pub value: Option<serde_json::Value>,
}

impl fmt::Display for GitHubErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [&self.resource, &self.field, &self.code, &self.message];
        let mut first = true;
        for part in parts.into_iter().flatten() {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(part)?;
            first = false;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DetailWire {
    Text(String),
    Object {
        #[serde(default)]
        resource: Option<String>,
        #[serde(default)]
        field: Option<String>,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        value: Option<serde_json::Value>,
    },
}

impl From<DetailWire> for GitHubErrorDetail {
    fn from(wire: DetailWire) -> Self {
        match wire {
            DetailWire::Text(message) => Self {
                message: Some(message),
                ..Self::default()
            },
            DetailWire::Object {
                resource,
                field,
                code,
                message,
                value,
            } => Self {
                resource,
                field,
                code,
                message,
                value,
            },
        }
    }
}

fn details<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<GitHubErrorDetail>, D::Error> {
    Ok(Option::<Vec<GitHubErrorDetail>>::deserialize(d)?.unwrap_or_default())
}
