//! [`Pages`]: a bounded walk through a paginated list, following `Link: <...>; rel="next"`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::{GitHubApiError, GitHubClient, RateLimit};

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Page<T> {
    /// The items, in GitHub's order.
    pub items: Vec<T>,
    /// Which page of this walk it is, from 1.
    pub number: u32,
    /// The rate limit after this request, from the `x-ratelimit-*` headers.
    pub rate_limit: Option<RateLimit>,
}

/// The pages of a list, fetched one at a time with [`next_page`](Self::next_page).
///
/// The walk ends when a page has no `rel="next"` link, or after the client's maximum number of
/// pages ([`GitHubClient::with_max_pages`]); [`is_truncated`](Self::is_truncated) tells the two
/// apart. Nothing is fetched ahead: each page is one call (with its own retries, deadline and
/// rate-limit handling). After an error the walk stays where it was, so calling
/// [`next_page`](Self::next_page) again retries the same page.
///
/// ```
/// # use egress_core::{Config, test_util::{ScriptedTransport, block_on, step}};
/// # use egress_vendors::github::{GitHubClient, IssuesQuery, RepoRef};
/// # let upstream = ScriptedTransport::new();
/// # upstream.push(step(200).json("[]"));
/// # let github = GitHubClient::new(upstream.client(egress_vendors::github::config()).unwrap());
/// let repo: RepoRef = "octocat/Hello-World".parse()?;
/// let mut pages = github.list_issues(&repo, &IssuesQuery::default());
/// let mut titles = Vec::new();
/// while let Some(page) = block_on(pages.next_page())? {
///     titles.extend(page.items.into_iter().map(|issue| issue.title));
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pages<T> {
    client: GitHubClient,
    operation: &'static str,
    next: Option<String>,
    fetched: u32,
    max_pages: u32,
    truncated: bool,
    /// An error to report on the next call (a bad link found after a good page).
    pending: Option<GitHubApiError>,
    items: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Pages<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pages")
            .field("operation", &self.operation)
            .field("next", &self.next)
            .field("fetched", &self.fetched)
            .field("max_pages", &self.max_pages)
            .field("truncated", &self.truncated)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Pages<T> {
    /// A walk starting at `first` (a target as [`GitHubClient`] sends it).
    pub(crate) fn new(client: GitHubClient, operation: &'static str, first: String) -> Self {
        let max_pages = client.max_pages;
        Self {
            client,
            operation,
            next: Some(first),
            fetched: 0,
            max_pages,
            truncated: false,
            pending: None,
            items: PhantomData,
        }
    }

    /// Fetches the next page, or `Ok(None)` when the walk is over.
    ///
    /// A next link outside the API ([`GitHubApiError::ForeignLink`]) is reported by the call
    /// after the page that carried it, so that page's items are not lost; the walk then ends.
    pub async fn next_page(&mut self) -> Result<Option<Page<T>>, GitHubApiError> {
        if let Some(error) = self.pending.take() {
            return Err(error);
        }
        let Some(target) = self.next.clone() else {
            return Ok(None);
        };
        let response = self.client.send_get(&target, self.operation).await?;
        let items: Vec<T> = self.client.decode(&response)?;
        let next = super::link::find_rel(
            response
                .headers()
                .get_all("link")
                .iter()
                .filter_map(|v| v.to_str().ok()),
            "next",
        );
        self.fetched += 1;
        self.next = match next.map(|url| self.client.link_target(&url)) {
            Some(Ok(_)) if self.fetched >= self.max_pages => {
                self.truncated = true;
                None
            }
            Some(Ok(target)) => Some(target),
            Some(Err(error)) => {
                self.pending = Some(error);
                None
            }
            None => None,
        };
        Ok(Some(Page {
            items,
            number: self.fetched,
            rate_limit: super::rate_limit::rate_limit_headers(response.headers()),
        }))
    }

    /// Fetches every remaining page (up to the bound) and concatenates their items.
    pub async fn collect_all(mut self) -> Result<Vec<T>, GitHubApiError> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page.items);
        }
        Ok(all)
    }

    /// How many pages were fetched so far.
    pub fn pages_fetched(&self) -> u32 {
        self.fetched
    }

    /// Whether the walk stopped at the page bound while GitHub still had a next page.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}
