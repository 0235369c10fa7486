//! The GitHub client over a scripted upstream in virtual time, with response bodies written
//! from GitHub's REST documentation (tests/fixtures/github): request shapes, payload decoding,
//! `Link` pagination, the primary and secondary rate-limit rules, typed errors and secrets.

use std::time::{Duration, SystemTime};

use egress_core::http::Method;
use egress_core::test_util::{ScriptedTransport, Step, WALL_EPOCH_SECS, block_on, step};
use egress_core::{Backoff, JitterMode, RetryPolicy};
use egress_core::{Config, StopReason};
use egress_vendors::github::{
    self, GitHubApiError, GitHubClassifier, GitHubClient, IssueState, IssuesQuery, RateLimitKind,
    RepoRef, SecretString, StateFilter,
};

const TOKEN: &str = "ghp_s3cr3tT0kenThatMustNeverLeak";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/github/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// GitHub's configuration with un-jittered backoff.
fn config() -> Config {
    let backoff = Backoff::default().with_jitter(JitterMode::None);
    github::config().with_retry(RetryPolicy::standard().with_backoff(backoff))
}

fn upstream_with(
    config: Config,
    steps: impl IntoIterator<Item = Step>,
) -> (ScriptedTransport, GitHubClient) {
    let transport = ScriptedTransport::new();
    for s in steps {
        transport.push(s);
    }
    let client = transport.client(config).expect("test config is valid");
    let github = GitHubClient::new(client).with_token(SecretString::from(TOKEN));
    (transport, github)
}

fn upstream(steps: impl IntoIterator<Item = Step>) -> (ScriptedTransport, GitHubClient) {
    upstream_with(config(), steps)
}

fn repo() -> RepoRef {
    "octocat/Hello-World".parse().unwrap()
}

/// The wall-clock time `secs` after the scripted clock's start, in epoch seconds.
fn epoch(secs: u64) -> u64 {
    WALL_EPOCH_SECS + secs
}

fn wall(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(epoch(secs))
}

fn repository() -> Step {
    step(200).json(&fixture("repository.json"))
}

fn get_repo_err(steps: impl IntoIterator<Item = Step>) -> (ScriptedTransport, GitHubApiError) {
    let (transport, github) = upstream(steps);
    let error = block_on(github.get_repository(&repo())).expect_err("expected an error");
    (transport, error)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------------------------
// Requests and payloads

#[test]
fn get_repository_sends_githubs_headers_and_decodes_the_documented_payload() {
    let (transport, github) = upstream([repository()]);
    let repository = block_on(github.get_repository(&repo())).unwrap();
    assert_eq!(repository.id, 1_296_269);
    assert_eq!(repository.full_name, "octocat/Hello-World");
    assert_eq!(repository.owner.login, "octocat");
    assert_eq!(repository.owner.kind, "User");
    assert_eq!(repository.language, None, "a documented null");
    assert_eq!(repository.topics, ["octocat", "atom", "electron", "api"]);
    assert_eq!(
        repository.license.as_ref().unwrap().spdx_id.as_deref(),
        Some("MIT")
    );
    assert!(repository.permissions.unwrap().pull);
    assert_eq!(repository.visibility.as_deref(), Some("public"));

    let requests = transport.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, Method::GET);
    assert_eq!(
        request.uri.to_string(),
        "https://api.github.com/repos/octocat/Hello-World"
    );
    assert_eq!(
        request.header("accept"),
        Some("application/vnd.github+json")
    );
    assert_eq!(request.header("x-github-api-version"), Some("2022-11-28"));
    assert_eq!(
        request.header("user-agent"),
        Some(github::DEFAULT_USER_AGENT)
    );
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(request.headers["authorization"].is_sensitive());
}

#[test]
fn a_custom_user_agent_replaces_the_configured_one() {
    let (transport, github) = upstream([repository()]);
    let github = github.with_user_agent("my-service/1.2 (ops@example.com)");
    block_on(github.get_repository(&repo())).unwrap();
    let request = &transport.requests()[0];
    assert_eq!(
        request.headers.get_all("user-agent").iter().count(),
        1,
        "exactly one user agent"
    );
    assert_eq!(
        request.header("user-agent"),
        Some("my-service/1.2 (ops@example.com)")
    );
}

#[test]
fn a_base_client_without_a_base_url_talks_to_api_github_com() {
    let (transport, github) = upstream_with(Config::default(), [repository()]);
    block_on(github.get_repository(&repo())).unwrap();
    assert_eq!(
        transport.requests()[0].uri.to_string(),
        "https://api.github.com/repos/octocat/Hello-World"
    );
}

#[test]
fn an_enterprise_server_base_url_keeps_its_api_path() {
    let config = config().with_base_url("https://ghe.example.com/api/v3");
    let (transport, github) = upstream_with(config, [repository()]);
    block_on(github.get_repository(&repo())).unwrap();
    assert_eq!(
        transport.requests()[0].uri.to_string(),
        "https://ghe.example.com/api/v3/repos/octocat/Hello-World"
    );
}

#[test]
fn an_issues_page_decodes_nulls_bare_label_names_and_pull_requests() {
    let (_, github) = upstream([step(200).json(&fixture("issues_page.json"))]);
    let mut pages = github.list_issues(&repo(), &IssuesQuery::default());
    let page = block_on(pages.next_page()).unwrap().unwrap();
    assert_eq!(page.items.len(), 2);

    let issue = &page.items[0];
    assert_eq!(issue.number, 1347);
    assert_eq!(issue.state, IssueState::Open);
    assert!(!issue.is_pull_request());
    assert_eq!(issue.labels.len(), 2);
    assert_eq!(issue.labels[0].name, "bug");
    assert_eq!(issue.labels[0].color.as_deref(), Some("f29513"));
    assert_eq!(issue.labels[1].name, "triage");
    assert_eq!(issue.labels[1].id, None);
    assert_eq!(issue.milestone.as_ref().unwrap().due_on, None);
    assert_eq!(issue.closed_at, None);
    assert_eq!(issue.state_reason, None);

    let pull = &page.items[1];
    assert!(pull.is_pull_request());
    assert_eq!(pull.state, IssueState::Closed);
    assert_eq!(pull.body, None);
    assert_eq!(pull.user, None, "a deleted author is null");
    assert!(pull.assignees.is_empty(), "null assignees read as none");
    assert_eq!(
        pull.pull_request.as_ref().unwrap().merged_at.as_deref(),
        Some("2011-04-23T09:12:00Z")
    );
    assert_eq!(pull.draft, Some(false));
    assert!(block_on(pages.next_page()).unwrap().is_none());
}

#[test]
fn the_issues_query_is_encoded_into_the_first_request() {
    let (transport, github) = upstream([step(200).json("[]")]);
    let query = IssuesQuery::default()
        .with_state(StateFilter::All)
        .with_labels(["bug", "good first issue"])
        .with_since("2024-01-01T00:00:00Z")
        .with_per_page(100);
    let all = block_on(github.list_issues(&repo(), &query).collect_all()).unwrap();
    assert!(all.is_empty());
    assert_eq!(
        transport.requests()[0].uri.to_string(),
        "https://api.github.com/repos/octocat/Hello-World/issues?state=all&labels=bug%2Cgood+first+issue&since=2024-01-01T00%3A00%3A00Z&per_page=100"
    );
}

#[test]
fn nothing_is_sent_before_the_first_page_is_asked_for() {
    let (transport, github) = upstream([]);
    let pages = github.list_issues(&repo(), &IssuesQuery::default());
    assert_eq!(pages.pages_fetched(), 0);
    assert!(transport.requests().is_empty());
}

#[test]
fn the_rate_limit_endpoint_decodes_every_category() {
    let (transport, github) = upstream([step(200).json(&fixture("rate_limit.json"))]);
    let overview = block_on(github.get_rate_limit()).unwrap();
    let core = &overview.resources.core;
    assert_eq!((core.limit, core.remaining, core.used), (5000, 4999, 1));
    assert_eq!(
        core.reset_at(),
        SystemTime::UNIX_EPOCH + secs(1_691_591_363)
    );
    assert_eq!(overview.resources.search.remaining, 18);
    assert_eq!(overview.resources.graphql.as_ref().unwrap().used, 7);
    assert_eq!(overview.resources.code_search.as_ref().unwrap().limit, 10);
    assert_eq!(overview.resources.other["scim"].limit, 15_000);
    assert!(!overview.resources.other.contains_key("core"));
    assert_eq!(overview.rate.unwrap().reset, 1_372_700_873);
    assert_eq!(
        transport.requests()[0].uri.to_string(),
        "https://api.github.com/rate_limit"
    );
}

#[test]
fn a_payload_missing_a_documented_field_maps_to_invalid_payload_with_its_path() {
    let (transport, error) = get_repo_err([step(200).json(
        r#"{"id":1,"node_id":"x","name":"n","full_name":"o/n","owner":{"login":"o","id":"one"}}"#,
    )]);
    let GitHubApiError::InvalidPayload { path, .. } = &error else {
        panic!("expected InvalidPayload, got {error:?}");
    };
    assert_eq!(path.as_deref(), Some("owner.id"));
    assert_eq!(transport.requests().len(), 1);
}

/// A label is a bare name or an object; a bad field inside an object is reported at its own
/// path, not as "data did not match any variant of untagged enum" at the label.
#[test]
fn a_bad_field_in_a_label_object_is_reported_at_its_own_path() {
    let issues = r#"[{"id":1,"node_id":"I_1","url":"u","html_url":"h","number":1,"state":"open","title":"t","user":null,"labels":["bug",{"id":"x","name":"triage"}],"milestone":null,"locked":false,"comments":0,"closed_at":null,"created_at":"2011-04-22T13:33:48Z","updated_at":"2011-04-22T13:33:48Z"}]"#;
    let (_, github) = upstream([step(200).json(issues)]);
    let mut pages = github.list_issues(&repo(), &IssuesQuery::default());
    let error = block_on(pages.next_page()).unwrap_err();
    let GitHubApiError::InvalidPayload { path, message, .. } = &error else {
        panic!("expected InvalidPayload, got {error:?}");
    };
    assert_eq!(path.as_deref(), Some("[0].labels[1].id"), "{message}");
    assert!(message.contains("expected u64"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Pagination

fn page(items: &str, next: Option<&str>) -> Step {
    let step = step(200).json(items);
    match next {
        Some(url) => step.header(
            "link",
            &format!(
                r#"<{url}>; rel="next", <https://api.github.com/repositories/1296269/issues?per_page=1&page=3>; rel="last""#
            ),
        ),
        None => step.header(
            "link",
            r#"<https://api.github.com/repositories/1296269/issues?per_page=1&page=2>; rel="prev""#,
        ),
    }
}

fn issue(number: u64) -> String {
    format!(
        r#"[{{"id":{number},"node_id":"I_{number}","url":"https://api.github.com/repos/octocat/Hello-World/issues/{number}","html_url":"https://github.com/octocat/Hello-World/issues/{number}","number":{number},"state":"open","title":"Issue {number}","user":null,"labels":[],"milestone":null,"locked":false,"comments":0,"closed_at":null,"created_at":"2011-04-22T13:33:48Z","updated_at":"2011-04-22T13:33:48Z"}}]"#
    )
}

fn three_pages() -> [Step; 3] {
    [
        page(
            &issue(1),
            Some("https://api.github.com/repositories/1296269/issues?per_page=1&page=2"),
        ),
        page(
            &issue(2),
            Some("https://api.github.com/repositories/1296269/issues?per_page=1&page=3"),
        ),
        page(&issue(3), None),
    ]
}

#[test]
fn pagination_follows_next_links_over_three_pages_and_stops_at_the_last() {
    let (transport, github) = upstream(three_pages());
    let mut pages = github.list_issues(&repo(), &IssuesQuery::default().with_per_page(1));
    let mut numbers = Vec::new();
    while let Some(page) = block_on(pages.next_page()).unwrap() {
        assert_eq!(page.number as usize, numbers.len() + 1);
        numbers.extend(page.items.iter().map(|i| i.number));
    }
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(pages.pages_fetched(), 3);
    assert!(!pages.is_truncated());
    assert!(
        block_on(pages.next_page()).unwrap().is_none(),
        "the walk stays over"
    );

    let uris: Vec<String> = transport
        .requests()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(
        uris,
        [
            "https://api.github.com/repos/octocat/Hello-World/issues?state=open&per_page=1",
            "https://api.github.com/repositories/1296269/issues?per_page=1&page=2",
            "https://api.github.com/repositories/1296269/issues?per_page=1&page=3",
        ]
    );
    // Every page request carries the same headers and the token.
    for request in transport.requests() {
        assert_eq!(request.header("x-github-api-version"), Some("2022-11-28"));
        assert!(request.header("authorization").is_some());
    }
}

#[test]
fn pagination_stops_at_the_max_pages_bound_and_says_it_was_truncated() {
    let (transport, github) = upstream(three_pages());
    let github = github.with_max_pages(2);
    let mut pages = github.list_issues(&repo(), &IssuesQuery::default());
    let all = {
        let mut all = Vec::new();
        while let Some(page) = block_on(pages.next_page()).unwrap() {
            all.extend(page.items);
        }
        all
    };
    assert_eq!(all.len(), 2);
    assert_eq!(pages.pages_fetched(), 2);
    assert!(pages.is_truncated());
    assert_eq!(
        transport.requests().len(),
        2,
        "the third page is never fetched"
    );
    assert_eq!(transport.remaining(), 1);
}

#[test]
fn collect_all_concatenates_every_page() {
    let (_, github) = upstream(three_pages());
    let all = block_on(
        github
            .list_issues(&repo(), &IssuesQuery::default())
            .collect_all(),
    )
    .unwrap();
    let numbers: Vec<u64> = all.iter().map(|i| i.number).collect();
    assert_eq!(numbers, [1, 2, 3]);
}

#[test]
fn a_page_carries_the_rate_limit_headers() {
    let (_, github) = upstream([step(200)
        .json("[]")
        .header("x-ratelimit-limit", "5000")
        .header("x-ratelimit-remaining", "4987")
        .header("x-ratelimit-used", "13")
        .header("x-ratelimit-reset", "1691591363")
        .header("x-ratelimit-resource", "core")]);
    let mut pages = github.list_issues(&repo(), &IssuesQuery::default());
    let page = block_on(pages.next_page()).unwrap().unwrap();
    let limit = page.rate_limit.unwrap();
    assert_eq!((limit.remaining, limit.used), (4987, 13));
}

#[test]
fn a_next_link_to_another_origin_is_never_followed() {
    let (transport, github) =
        upstream([page(&issue(1), Some("https://evil.example/steal?page=2"))]);
    let mut pages = github.list_issues(&repo(), &IssuesQuery::default());
    let first = block_on(pages.next_page()).unwrap().unwrap();
    assert_eq!(
        first.items.len(),
        1,
        "the page that carried the link is kept"
    );
    let error = block_on(pages.next_page()).unwrap_err();
    assert!(
        matches!(&error, GitHubApiError::ForeignLink { url } if url.starts_with("https://evil.example/")),
        "{error:?}"
    );
    assert!(block_on(pages.next_page()).unwrap().is_none());
    assert_eq!(transport.requests().len(), 1);
}

#[test]
fn an_error_mid_walk_can_be_retried_by_asking_for_the_page_again() {
    let [first, second, third] = three_pages();
    let (transport, github) = upstream([first, github_404(), second, third]);
    let mut pages = github.list_issues(&repo(), &IssuesQuery::default());
    block_on(pages.next_page()).unwrap().unwrap();
    assert!(matches!(
        block_on(pages.next_page()),
        Err(GitHubApiError::NotFound { .. })
    ));
    let again = block_on(pages.next_page()).unwrap().unwrap();
    assert_eq!(again.items[0].number, 2);
    assert_eq!(again.number, 2);
    let uris: Vec<String> = transport
        .requests()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(uris[1], uris[2], "the same page was asked for again");
}

// ---------------------------------------------------------------------------------------------
// Rate limits

fn primary_limited(status: u16, reset: u64) -> Step {
    step(status)
        .json(&fixture("error_primary_rate_limit.json"))
        .header("x-ratelimit-limit", "5000")
        .header("x-ratelimit-remaining", "0")
        .header("x-ratelimit-used", "5000")
        .header("x-ratelimit-reset", &reset.to_string())
        .header("x-ratelimit-resource", "core")
}

fn secondary_limited(status: u16) -> Step {
    step(status).json(&fixture("error_secondary_rate_limit.json"))
}

#[test]
fn a_primary_rate_limit_waits_until_the_reset_time_in_virtual_time() {
    for status in [403, 429] {
        let (transport, github) = upstream([primary_limited(status, epoch(20)), repository()]);
        let repository = block_on(github.get_repository(&repo())).unwrap();
        assert_eq!(repository.name, "Hello-World");
        let arrivals: Vec<Duration> = transport.requests().iter().map(|r| r.at).collect();
        assert_eq!(
            arrivals,
            [secs(0), secs(20)],
            "{status}: retried exactly at the reset"
        );
    }
}

#[test]
fn the_reset_time_is_measured_from_the_responses_date_header() {
    // The server's clock is 5 s ahead of ours, so the reset is 20 s after its Date; without the
    // Date it would be 25 s after our wall clock.
    let date = egress_date(5);
    let (transport, github) = upstream([
        primary_limited(403, epoch(25)).header("date", &date),
        repository(),
    ]);
    block_on(github.get_repository(&repo())).unwrap();
    assert_eq!(transport.requests()[1].at, secs(20));
}

/// An HTTP date `ahead` seconds after the scripted clock's start.
fn egress_date(ahead: u64) -> String {
    // 2026-01-01T00:00:00Z is a Thursday.
    assert!(ahead < 60);
    format!("Thu, 01 Jan 2026 00:00:{ahead:02} GMT")
}

#[test]
fn a_secondary_rate_limit_with_retry_after_waits_that_long() {
    for status in [403, 429] {
        let (transport, github) = upstream([
            secondary_limited(status).header("retry-after", "7"),
            repository(),
        ]);
        block_on(github.get_repository(&repo())).unwrap();
        let arrivals: Vec<Duration> = transport.requests().iter().map(|r| r.at).collect();
        assert_eq!(arrivals, [secs(0), secs(7)], "{status}");
    }
}

#[test]
fn a_secondary_rate_limit_without_retry_after_waits_a_minute_when_the_deadline_allows() {
    // A background job's client: a 2-minute cap and a 5-minute deadline.
    let patient = config()
        .with_retry(
            RetryPolicy::standard()
                .with_backoff(Backoff::default().with_jitter(JitterMode::None))
                .with_retry_after_cap(secs(120)),
        )
        .with_deadline(secs(300));
    let (transport, github) = upstream_with(patient, [step(429), repository()]);
    block_on(github.get_repository(&repo())).unwrap();
    let arrivals: Vec<Duration> = transport.requests().iter().map(|r| r.at).collect();
    assert_eq!(arrivals, [secs(0), secs(60)]);
}

#[test]
fn a_secondary_rate_limit_without_retry_after_is_rate_limited_at_once_under_the_default_deadline() {
    let (transport, error) = get_repo_err([step(429), repository()]);
    let GitHubApiError::RateLimited {
        kind,
        retry_at,
        source,
        ..
    } = &error
    else {
        panic!("expected RateLimited, got {error:?}");
    };
    assert_eq!(*kind, RateLimitKind::Secondary);
    assert_eq!(*retry_at, Some(wall(60)));
    assert_eq!(source.stop_reason(), Some(StopReason::RateLimited));
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(
        transport.clock().elapsed(),
        Duration::ZERO,
        "no time was slept"
    );
}

/// A background job's configuration: a five-minute deadline, the core's default 30 s
/// `Retry-After` cap (which the GitHub client's own `max_rate_limit_wait` replaces).
fn patient() -> Config {
    config().with_deadline(secs(300))
}

fn arrivals(transport: &ScriptedTransport) -> Vec<Duration> {
    transport.requests().iter().map(|r| r.at).collect()
}

#[test]
fn a_403_or_429_whose_body_says_secondary_rate_limit_is_retried_after_retry_after_then_succeeds() {
    for status in [403, 429] {
        // 45 s is past the core's client-wide 30 s cap, within the GitHub client's 90 s.
        let (transport, github) = upstream_with(
            patient(),
            [
                secondary_limited(status).header("retry-after", "45"),
                repository(),
            ],
        );
        let repository = block_on(github.get_repository(&repo())).unwrap();
        assert_eq!(repository.name, "Hello-World");
        assert_eq!(arrivals(&transport), [secs(0), secs(45)], "{status}");
    }
}

#[test]
fn a_403_whose_body_alone_says_secondary_rate_limit_is_retried_after_a_minute_then_succeeds() {
    for status in [403, 429] {
        let (transport, github) =
            upstream_with(patient(), [secondary_limited(status), repository()]);
        let repository = block_on(github.get_repository(&repo())).unwrap();
        assert_eq!(repository.name, "Hello-World");
        assert_eq!(arrivals(&transport), [secs(0), secs(60)], "{status}");
    }
}

#[test]
fn a_longer_secondary_wait_on_the_classifier_applies_to_a_limit_signalled_in_the_body() {
    let (transport, github) = upstream_with(patient(), [secondary_limited(403), repository()]);
    let github = github.with_classifier(GitHubClassifier::new().with_secondary_wait(secs(75)));
    block_on(github.get_repository(&repo())).unwrap();
    assert_eq!(arrivals(&transport), [secs(0), secs(75)]);
}

#[test]
fn a_403_whose_body_says_secondary_rate_limit_past_the_deadline_is_rate_limited_at_once() {
    // With the response's Date, and without it: the minute is measured from the response.
    for date in [Some(egress_date(0)), None] {
        let limited = match &date {
            Some(date) => secondary_limited(403).header("date", date),
            None => secondary_limited(403),
        };
        let (transport, error) = get_repo_err([limited, repository()]);
        let GitHubApiError::RateLimited {
            kind,
            retry_at,
            error: body,
            source,
        } = &error
        else {
            panic!("expected RateLimited, got {error:?}");
        };
        assert_eq!(*kind, RateLimitKind::Secondary);
        assert_eq!(*retry_at, Some(wall(60)), "a minute after the response");
        assert!(body.as_ref().unwrap().is_secondary_rate_limit());
        assert_eq!(
            source.stop_reason(),
            Some(StopReason::RateLimited),
            "the core gave up on the wait the classifier asked for"
        );
        assert_eq!(transport.requests().len(), 1);
        assert_eq!(
            transport.clock().elapsed(),
            Duration::ZERO,
            "no time was slept"
        );
    }
}

#[test]
fn a_secondary_limit_in_the_body_on_every_attempt_maps_to_rate_limited_with_the_last_wait() {
    let (transport, github) = upstream_with(
        patient(),
        [
            secondary_limited(403),
            secondary_limited(403),
            secondary_limited(403),
        ],
    );
    let error = block_on(github.get_repository(&repo())).unwrap_err();
    let GitHubApiError::RateLimited {
        kind,
        retry_at,
        source,
        ..
    } = &error
    else {
        panic!("expected RateLimited, got {error:?}");
    };
    assert_eq!(*kind, RateLimitKind::Secondary);
    assert_eq!(*retry_at, Some(wall(180)), "a minute after the last answer");
    assert_eq!(source.stop_reason(), Some(StopReason::AttemptsExhausted));
    assert_eq!(arrivals(&transport), [secs(0), secs(60), secs(120)]);
}

#[test]
fn the_max_rate_limit_wait_lets_a_60_s_primary_limit_wait_happen() {
    let (transport, github) =
        upstream_with(patient(), [primary_limited(403, epoch(60)), repository()]);
    assert_eq!(
        github.max_rate_limit_wait(),
        github::DEFAULT_MAX_RATE_LIMIT_WAIT
    );
    assert_eq!(github::DEFAULT_MAX_RATE_LIMIT_WAIT, secs(90));
    block_on(github.get_repository(&repo())).unwrap();
    assert_eq!(arrivals(&transport), [secs(0), secs(60)]);
}

#[test]
fn a_primary_limit_wait_longer_than_the_max_rate_limit_wait_is_rate_limited_at_once() {
    // Within the five-minute deadline, but past the 90 s maximum wait.
    let (transport, github) =
        upstream_with(patient(), [primary_limited(403, epoch(120)), repository()]);
    let error = block_on(github.get_repository(&repo())).unwrap_err();
    let GitHubApiError::RateLimited {
        kind,
        retry_at,
        source,
        ..
    } = &error
    else {
        panic!("expected RateLimited, got {error:?}");
    };
    assert_eq!(*kind, RateLimitKind::Primary);
    assert_eq!(*retry_at, Some(wall(120)));
    assert_eq!(source.stop_reason(), Some(StopReason::RateLimited));
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(
        transport.clock().elapsed(),
        Duration::ZERO,
        "no time was slept"
    );
}

#[test]
fn with_max_rate_limit_wait_raises_or_lowers_the_longest_wait() {
    let (transport, github) =
        upstream_with(patient(), [primary_limited(403, epoch(120)), repository()]);
    let github = github.with_max_rate_limit_wait(secs(150));
    block_on(github.get_repository(&repo())).unwrap();
    assert_eq!(arrivals(&transport), [secs(0), secs(120)]);

    // 20 s fits the core's client-wide 30 s cap, but not this client's 10 s.
    let (transport, github) = upstream_with(
        patient(),
        [
            secondary_limited(403).header("retry-after", "20"),
            repository(),
        ],
    );
    let github = github.with_max_rate_limit_wait(secs(10));
    let error = block_on(github.get_repository(&repo())).unwrap_err();
    assert!(
        matches!(
            error,
            GitHubApiError::RateLimited {
                kind: RateLimitKind::Secondary,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.retry_at(), Some(wall(20)));
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(transport.clock().elapsed(), Duration::ZERO);
}

#[test]
fn the_default_max_rate_limit_wait_keeps_a_longer_cap_of_the_base_client() {
    let long_cap = patient().with_retry(
        RetryPolicy::standard()
            .with_backoff(Backoff::default().with_jitter(JitterMode::None))
            .with_retry_after_cap(secs(240)),
    );
    let (transport, github) =
        upstream_with(long_cap, [primary_limited(429, epoch(200)), repository()]);
    assert_eq!(github.max_rate_limit_wait(), secs(240));
    block_on(github.get_repository(&repo())).unwrap();
    assert_eq!(arrivals(&transport), [secs(0), secs(200)]);
}

#[test]
fn a_reset_beyond_the_deadline_is_rate_limited_at_once_with_the_reset_time() {
    let (transport, error) = get_repo_err([primary_limited(403, epoch(3600)), repository()]);
    let GitHubApiError::RateLimited {
        kind,
        retry_at,
        error: body,
        source,
    } = &error
    else {
        panic!("expected RateLimited, got {error:?}");
    };
    assert_eq!(*kind, RateLimitKind::Primary);
    assert_eq!(*retry_at, Some(wall(3600)));
    assert_eq!(error.retry_at(), Some(wall(3600)));
    assert!(
        body.as_ref()
            .unwrap()
            .message
            .starts_with("API rate limit exceeded")
    );
    assert!(source.is_rate_limited());
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(
        transport.clock().elapsed(),
        Duration::ZERO,
        "no time was slept"
    );
}

#[test]
fn a_reset_within_the_cap_but_past_a_shorter_deadline_is_rate_limited_at_once() {
    let (transport, github) = upstream_with(
        config()
            .with_attempt_timeout(secs(5))
            .with_deadline(secs(20)),
        [primary_limited(403, epoch(25)), repository()],
    );
    let error = block_on(github.get_repository(&repo())).unwrap_err();
    assert_eq!(error.retry_at(), Some(wall(25)));
    assert_eq!(transport.requests().len(), 1);
    assert_eq!(transport.clock().elapsed(), Duration::ZERO);
}

// ---------------------------------------------------------------------------------------------
// Errors

fn github_404() -> Step {
    step(404).json(&fixture("error_not_found.json"))
}

#[test]
fn a_422_decodes_githubs_validation_errors() {
    let (transport, error) = get_repo_err([step(422).json(&fixture("error_validation.json"))]);
    let GitHubApiError::Validation { error: body, .. } = &error else {
        panic!("expected Validation, got {error:?}");
    };
    assert_eq!(body.message, "Validation Failed");
    assert_eq!(body.status.as_deref(), Some("422"));
    assert_eq!(body.errors.len(), 3);
    assert_eq!(body.errors[0].field.as_deref(), Some("title"));
    assert_eq!(body.errors[0].code.as_deref(), Some("missing_field"));
    assert_eq!(
        body.errors[1].value,
        Some(serde_json::json!(["no such label"]))
    );
    assert_eq!(
        body.errors[2].message.as_deref(),
        Some("Only 100 assignees are allowed")
    );
    assert!(
        body.documentation_url
            .as_deref()
            .unwrap()
            .starts_with("https://docs.github.com/")
    );
    assert_eq!(
        error.to_string(),
        "GitHub rejected the request: Validation Failed: Issue title missing_field; Issue labels invalid; Only 100 assignees are allowed"
    );
    assert_eq!(transport.requests().len(), 1, "a 422 is never retried");
}

#[test]
fn a_404_maps_to_not_found_with_githubs_message() {
    let (transport, error) = get_repo_err([github_404(), repository()]);
    assert!(
        matches!(error, GitHubApiError::NotFound { .. }),
        "{error:?}"
    );
    assert_eq!(error.github_error().unwrap().message, "Not Found");
    assert_eq!(transport.requests().len(), 1);
}

#[test]
fn a_401_maps_to_unauthorized() {
    let (_, error) = get_repo_err([step(401).json(&fixture("error_bad_credentials.json"))]);
    assert!(
        matches!(error, GitHubApiError::Unauthorized { .. }),
        "{error:?}"
    );
    assert_eq!(error.github_error().unwrap().message, "Bad credentials");
}

#[test]
fn a_403_that_is_not_a_rate_limit_maps_to_forbidden_and_is_not_retried() {
    let (transport, error) = get_repo_err([
        step(403)
            .json(&fixture("error_forbidden.json"))
            .header("x-ratelimit-remaining", "4999"),
        repository(),
    ]);
    assert!(
        matches!(error, GitHubApiError::Forbidden { .. }),
        "{error:?}"
    );
    assert_eq!(transport.requests().len(), 1);
}

#[test]
fn repeated_5xx_map_to_unavailable() {
    let (transport, error) = get_repo_err([step(502), step(502), step(502)]);
    assert!(
        matches!(error, GitHubApiError::Unavailable { .. }),
        "{error:?}"
    );
    assert_eq!(transport.requests().len(), 3);
    assert!(error.correlation_id().is_some());
}

#[test]
fn the_token_never_appears_in_debug_output_or_errors() {
    let (transport, github) = upstream([
        step(401).json(&fixture("error_bad_credentials.json")),
        step(404).json(&format!(r#"{{"message":"no such token {TOKEN}"}}"#)),
    ]);
    let client_debug = format!("{github:?}");
    assert!(client_debug.contains("[REDACTED]"), "{client_debug}");
    let pages = github.list_issues(&repo(), &IssuesQuery::default());
    let unauthorized = block_on(github.get_repository(&repo())).unwrap_err();
    let echoed = block_on(github.get_repository(&repo())).unwrap_err();
    let requests = transport.requests();
    for text in [
        client_debug,
        format!("{pages:?}"),
        format!("{unauthorized:?}"),
        unauthorized.to_string(),
        format!("{echoed:?}"),
        echoed.to_string(),
        format!("{:?}", requests[0].headers),
    ] {
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
        assert!(!text.contains("s3cr3t"), "part of the token leaked: {text}");
    }
}

#[test]
fn a_response_spending_the_last_of_the_quota_holds_the_next_call_until_the_reset() {
    // A 200 with `x-ratelimit-remaining: 0` and the reset (Unix seconds) 20 s away: the core's
    // rate-limit fields hold api.github.com, so the next call waits for the reset instead of
    // earning a 403. `GET /rate_limit` costs no quota and is not held.
    let spent = step(200)
        .json(&fixture("repository.json"))
        .header("x-ratelimit-remaining", "0")
        .header("x-ratelimit-reset", &epoch(20).to_string());
    let (transport, github) = upstream([
        spent,
        step(200).json(&fixture("rate_limit.json")),
        step(200).json(&fixture("repository.json")),
    ]);
    block_on(github.get_repository(&repo())).unwrap();
    block_on(github.get_rate_limit()).unwrap();
    block_on(github.get_repository(&repo())).unwrap();
    let at: Vec<Duration> = transport.requests().iter().map(|r| r.at).collect();
    assert_eq!(
        at,
        [Duration::ZERO, Duration::ZERO, Duration::from_secs(20)]
    );
}
