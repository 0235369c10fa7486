//! GitHub's rate-limit rules as a [`Classifier`], after GitHub's "Rate limits for the REST API":
//!
//! - **Primary limit**: a 403 or 429 with `x-ratelimit-remaining: 0` must not be retried before
//!   `x-ratelimit-reset` (UTC epoch seconds).
//! - **Secondary limit**: a 403 or 429 with `Retry-After` must not be retried before it; a
//!   secondary limit without `Retry-After` waits at least one minute. GitHub signals some
//!   secondary limits only in the body of a 403, its `message` mentioning "secondary rate
//!   limit", which the classifier reads.
//!
//! The wait is handed to the core as a hint, so the core's rules apply: a wait longer than the
//! call's `Retry-After` cap ([`GitHubClient`](super::GitHubClient) sets it from its
//! [`max_rate_limit_wait`](super::GitHubClient::with_max_rate_limit_wait)), or one that would end
//! past the call's deadline, ends the call at once with [`egress_core::Error::RateLimited`] and
//! its `retry_at`, instead of sleeping for nothing. Every other outcome is classified by the
//! core's default rules.

use std::time::{Duration, SystemTime};

use egress_core::RetryAfter;
use egress_core::http::{HeaderMap, StatusCode};
use egress_core::{Classifier, ClassifyContext, Outcome, RetryAction, RetryReason, classify};
use egress_core::{rate_limit_quota, resolve_retry_after, response_date, retry_after_from_headers};

use super::types::{GitHubError, RateLimit};

/// How long a secondary rate limit without `Retry-After` waits, at least.
pub const SECONDARY_MINIMUM_WAIT: Duration = Duration::from_secs(60);

/// Which of GitHub's rate limits a response hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RateLimitKind {
    /// The hourly quota (`x-ratelimit-remaining: 0`); it resets at `x-ratelimit-reset`.
    Primary,
    /// An abuse-prevention limit (too many concurrent requests, too much CPU time, too many
    /// content-creating requests...): `Retry-After`, or at least a minute.
    Secondary,
}

/// The classifier for GitHub: its rate-limit rules, then the core's default rules.
///
/// - **Primary limit**: a 403 or 429 with `x-ratelimit-remaining: 0` is retried at
///   `x-ratelimit-reset` (UTC epoch seconds; with a later `Retry-After` too, at the later one).
/// - **Secondary limit**: a 403 or 429 with `Retry-After` is retried after it; a 429 without it,
///   or a 403 whose body says "secondary rate limit", after
///   [`with_secondary_wait`](Self::with_secondary_wait) (at least a minute).
/// - A 403 without these headers whose GitHub message still names a rate limit ("API rate limit
///   exceeded") is taken for the primary limit and retried after the same wait.
///
/// [`signal`](Self::signal) says exactly what each response is taken for.
///
/// The wait goes to the core as a hint: when it exceeds the call's `Retry-After` cap (the
/// client's `retry.retry_after_cap`, or the per-request cap that
/// [`GitHubClient`](super::GitHubClient) sets) or would end past the call's deadline, the call
/// ends at once with `RateLimited` and its `retry_at` instead of sleeping.
///
/// [`GitHubClient`](super::GitHubClient) installs it on every request; use it directly only for
/// your own GitHub calls through a base client.
#[derive(Clone, Copy, Debug)]
pub struct GitHubClassifier {
    secondary_wait: Duration,
}

impl Default for GitHubClassifier {
    fn default() -> Self {
        Self {
            secondary_wait: SECONDARY_MINIMUM_WAIT,
        }
    }
}

impl GitHubClassifier {
    /// The classifier with GitHub's documented waits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how long a secondary limit without `Retry-After` waits; never less than
    /// [`SECONDARY_MINIMUM_WAIT`].
    pub fn with_secondary_wait(mut self, wait: Duration) -> Self {
        self.secondary_wait = wait.max(SECONDARY_MINIMUM_WAIT);
        self
    }

    /// The rate limit a response signals by its status, headers and body, with the wait it asks
    /// for.
    ///
    /// The headers decide first (`x-ratelimit-remaining: 0` is the primary limit, `Retry-After`
    /// a secondary one). Without them, a 403 or 429 whose body is a GitHub error whose `message`
    /// mentions a rate limit is one: secondary when it says "secondary rate limit", else primary,
    /// and either waits the [`secondary_wait`](Self::secondary_wait); any other 429 is a
    /// secondary limit with the same wait. Any other 403 is not a rate limit: GitHub also
    /// answers 403 for missing permissions.
    pub fn signal(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        wall: SystemTime,
    ) -> Option<(RateLimitKind, RetryAfter)> {
        if !matches!(status.as_u16(), 403 | 429) {
            return None;
        }
        let retry_after = retry_after_from_headers(headers).and_then(Result::ok);
        // The core's reading of the rate-limit fields (the same one that holds the host when
        // no quota is left): `x-ratelimit-remaining` and the Unix time `x-ratelimit-reset`.
        let quota = rate_limit_quota(headers, response_date(headers), wall);
        if quota.is_some_and(|q| q.is_exhausted()) {
            let reset = quota.and_then(|q| q.reset_at).map(RetryAfter::At);
            // Without a valid reset time, fall back to Retry-After, then to the secondary wait;
            // with both, honour the later one.
            let hint = match (reset, retry_after) {
                (Some(reset), Some(ra)) => later(reset, ra, response_date(headers), wall),
                (Some(reset), None) => reset,
                (None, Some(ra)) => ra,
                (None, None) => RetryAfter::Delay(self.secondary_wait),
            };
            return Some((RateLimitKind::Primary, hint));
        }
        if let Some(ra) = retry_after {
            return Some((RateLimitKind::Secondary, ra));
        }
        let kind = body_signal(body).or_else(|| {
            (status == StatusCode::TOO_MANY_REQUESTS).then_some(RateLimitKind::Secondary)
        })?;
        Some((kind, RetryAfter::Delay(self.secondary_wait)))
    }

    /// How long a secondary limit without `Retry-After` waits.
    pub fn secondary_wait(&self) -> Duration {
        self.secondary_wait
    }
}

/// The rate limit a GitHub error body names in its `message`, if any.
fn body_signal(body: &[u8]) -> Option<RateLimitKind> {
    let error: GitHubError = serde_json::from_slice(body).ok()?;
    if error.is_secondary_rate_limit() {
        Some(RateLimitKind::Secondary)
    } else if error.is_rate_limit() {
        Some(RateLimitKind::Primary)
    } else {
        None
    }
}

fn later(a: RetryAfter, b: RetryAfter, date: Option<SystemTime>, wall: SystemTime) -> RetryAfter {
    if resolve_retry_after(a, date, wall) >= resolve_retry_after(b, date, wall) {
        a
    } else {
        b
    }
}

impl Classifier for GitHubClassifier {
    fn classify(&self, outcome: &Outcome<'_>, ctx: &ClassifyContext<'_>) -> RetryAction {
        if let Outcome::Response {
            status,
            headers,
            body,
        } = outcome
        {
            if let Some((_, hint)) = self.signal(*status, headers, body, ctx.wall) {
                // The server did not process a rate-limited request, so any method may retry.
                return RetryAction::Retry {
                    reason: RetryReason::Throttled,
                    hint: Some(hint),
                };
            }
        }
        classify(outcome, ctx)
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The `x-ratelimit-*` headers of a response, when all of `limit`, `remaining` and `reset` are
/// there and valid.
pub fn rate_limit_headers(headers: &HeaderMap) -> Option<RateLimit> {
    Some(RateLimit {
        limit: header_u64(headers, "x-ratelimit-limit")?,
        remaining: header_u64(headers, "x-ratelimit-remaining")?,
        reset: header_u64(headers, "x-ratelimit-reset")?,
        used: header_u64(headers, "x-ratelimit-used").unwrap_or(0),
        resource: headers
            .get("x-ratelimit-resource")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_core::http::HeaderValue;

    const NOW: u64 = 1_767_225_600;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn signal(status: u16, pairs: &[(&'static str, &str)]) -> Option<(RateLimitKind, RetryAfter)> {
        signal_with_body(status, pairs, "")
    }

    fn signal_with_body(
        status: u16,
        pairs: &[(&'static str, &str)],
        body: &str,
    ) -> Option<(RateLimitKind, RetryAfter)> {
        GitHubClassifier::new().signal(
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            body.as_bytes(),
            at(NOW),
        )
    }

    const SECONDARY_BODY: &str = r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}"#;

    #[test]
    fn an_exhausted_primary_limit_waits_until_the_reset_time() {
        let reset = (NOW + 600).to_string();
        for status in [403, 429] {
            assert_eq!(
                signal(
                    status,
                    &[
                        ("x-ratelimit-remaining", "0"),
                        ("x-ratelimit-reset", &reset)
                    ]
                ),
                Some((RateLimitKind::Primary, RetryAfter::At(at(NOW + 600))))
            );
        }
    }

    #[test]
    fn a_primary_limit_with_a_later_retry_after_honours_the_later_one() {
        let reset = (NOW + 10).to_string();
        let pairs = [
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", reset.as_str()),
            ("retry-after", "30"),
        ];
        assert_eq!(
            signal(403, &pairs),
            Some((
                RateLimitKind::Primary,
                RetryAfter::Delay(Duration::from_secs(30))
            ))
        );
    }

    #[test]
    fn a_primary_limit_without_a_valid_reset_waits_the_secondary_minimum() {
        assert_eq!(
            signal(
                403,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "soon")
                ]
            ),
            Some((
                RateLimitKind::Primary,
                RetryAfter::Delay(SECONDARY_MINIMUM_WAIT)
            ))
        );
    }

    #[test]
    fn a_secondary_limit_uses_retry_after_when_present() {
        for status in [403, 429] {
            assert_eq!(
                signal(
                    status,
                    &[("retry-after", "7"), ("x-ratelimit-remaining", "4000")]
                ),
                Some((
                    RateLimitKind::Secondary,
                    RetryAfter::Delay(Duration::from_secs(7))
                ))
            );
        }
    }

    #[test]
    fn a_429_without_retry_after_waits_at_least_a_minute() {
        assert_eq!(
            signal(429, &[]),
            Some((
                RateLimitKind::Secondary,
                RetryAfter::Delay(Duration::from_secs(60))
            ))
        );
        let longer = GitHubClassifier::new().with_secondary_wait(Duration::from_secs(90));
        assert_eq!(longer.secondary_wait(), Duration::from_secs(90));
        let shorter = GitHubClassifier::new().with_secondary_wait(Duration::from_secs(5));
        assert_eq!(shorter.secondary_wait(), SECONDARY_MINIMUM_WAIT);
    }

    #[test]
    fn a_bare_403_and_other_statuses_are_not_rate_limits() {
        assert_eq!(signal(403, &[]), None);
        assert_eq!(signal(403, &[("x-ratelimit-remaining", "12")]), None);
        assert_eq!(signal(404, &[("x-ratelimit-remaining", "0")]), None);
        assert_eq!(signal(503, &[("retry-after", "5")]), None);
    }

    #[test]
    fn a_403_or_429_whose_body_says_secondary_rate_limit_waits_at_least_a_minute() {
        for status in [403, 429] {
            assert_eq!(
                signal_with_body(status, &[], SECONDARY_BODY),
                Some((
                    RateLimitKind::Secondary,
                    RetryAfter::Delay(SECONDARY_MINIMUM_WAIT)
                )),
                "{status}"
            );
        }
        let upper = r#"{"message":"You have exceeded a SECONDARY RATE LIMIT."}"#;
        assert_eq!(
            signal_with_body(403, &[], upper).map(|(kind, _)| kind),
            Some(RateLimitKind::Secondary)
        );
    }

    #[test]
    fn a_secondary_limit_in_the_body_with_retry_after_waits_for_retry_after() {
        assert_eq!(
            signal_with_body(403, &[("retry-after", "42")], SECONDARY_BODY),
            Some((
                RateLimitKind::Secondary,
                RetryAfter::Delay(Duration::from_secs(42))
            ))
        );
    }

    #[test]
    fn a_403_whose_body_says_the_primary_limit_was_exceeded_without_headers_waits_a_minute() {
        let body = r#"{"message":"API rate limit exceeded for user ID 1."}"#;
        assert_eq!(
            signal_with_body(403, &[], body),
            Some((
                RateLimitKind::Primary,
                RetryAfter::Delay(SECONDARY_MINIMUM_WAIT)
            ))
        );
    }

    #[test]
    fn a_403_whose_body_is_not_about_a_rate_limit_is_not_one() {
        for body in [
            r#"{"message":"Resource not accessible by personal access token"}"#,
            "<html>Forbidden</html>",
            "",
            "[]",
        ] {
            assert_eq!(signal_with_body(403, &[], body), None, "{body}");
        }
        // Only 403 and 429 are rate limits, whatever the body says.
        assert_eq!(signal_with_body(404, &[], SECONDARY_BODY), None);
        assert_eq!(signal_with_body(503, &[], SECONDARY_BODY), None);
    }

    #[test]
    fn rate_limit_headers_need_limit_remaining_and_reset() {
        let full = headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", "1372700873"),
            ("x-ratelimit-used", "1"),
            ("x-ratelimit-resource", "core"),
        ]);
        let limit = rate_limit_headers(&full).unwrap();
        assert_eq!((limit.limit, limit.remaining, limit.used), (5000, 4999, 1));
        assert_eq!(limit.reset_at(), at(1_372_700_873));
        assert_eq!(limit.resource.as_deref(), Some("core"));
        assert_eq!(
            rate_limit_headers(&headers(&[("x-ratelimit-limit", "5000")])),
            None
        );
    }
}
