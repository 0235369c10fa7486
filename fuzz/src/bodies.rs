//! The bodies of the egress fuzz targets, as plain functions over raw bytes.
//!
//! Each function decodes its bytes into structured input by hand (see [`Reader`]), runs the code
//! under test and panics when a contract is broken. The fuzz crate builds this file as its
//! library, so libFuzzer calls these functions; the root workspace's
//! `tests/tests/fuzz_corpus.rs` includes the same file with `#[path]` and replays every committed
//! corpus file through them on stable Rust. So a byte file means the same thing to both.
//!
//! This file depends on egress-core, egress-vendors (for the GitHub `Link` parser), serde,
//! serde_json and std only.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use egress_core::http::{self, HeaderMap, HeaderValue, Method, StatusCode, header};
use egress_core::{Backoff, BudgetConfig, JitterMode, RetryPolicy};
use egress_core::{
    Config, Error, Exchange, Input, KeyChoice, Output, Policy, Request, TransportError,
    TransportErrorKind, WaitReason,
};
use egress_core::{
    Expect, Invalid, Validate, ValidationKind, is_json_content_type, validate, validate_checked,
};
use egress_core::{
    RetryAfter, parse_retry_after, resolve_retry_after, response_date, retry_after_from_headers,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

// ---------------------------------------------------------------------------------------------
// Reading fuzz bytes.
// ---------------------------------------------------------------------------------------------

/// A cursor over fuzz bytes. Every read succeeds: past the end it yields zeros and empty
/// slices, so any byte string is a valid input.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        for b in &mut bytes {
            *b = self.u8();
        }
        u64::from_le_bytes(bytes)
    }

    /// One of `items`, chosen by the next byte.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.u8()) % items.len()]
    }

    /// At most `n` bytes.
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A length byte, then that many bytes.
    fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// The bytes up to the next `\n` (which is consumed) or the end.
    fn line(&mut self) -> &'a [u8] {
        match self.data.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = &self.data[..i];
                self.data = &self.data[i + 1..];
                line
            }
            None => self.rest(),
        }
    }

    /// Everything left.
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

// ---------------------------------------------------------------------------------------------
// Time.
// ---------------------------------------------------------------------------------------------

/// The one real `Instant`: every virtual timeline starts here.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Wed, 21 Oct 2015 07:28:00 GMT, the wall clock at [`epoch`].
const OCT_21: u64 = 1_445_412_480;

fn wall_epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(OCT_21)
}

/// The wall clock at virtual time `at`.
fn wall_at(at: Instant) -> SystemTime {
    wall_epoch() + (at - epoch())
}

/// `wall` moved by `secs` seconds either way, saturating at the epoch.
fn skewed(wall: SystemTime, secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        wall.checked_add(d).unwrap_or(wall)
    } else {
        wall.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// validate_json
// ---------------------------------------------------------------------------------------------

/// A page of a realistic vendor listing: strings, numbers, options, vectors, maps, nested
/// structs, and enums in the three serde representations.
#[derive(Debug, PartialEq, Deserialize)]
struct Page {
    items: Vec<Entity>,
    next: Option<String>,
    total: u64,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Entity {
    id: String,
    version: u32,
    score: f64,
    delta: i64,
    active: bool,
    #[serde(default)]
    tags: Vec<String>,
    owner: Option<Owner>,
    status: Status,
    kind: Kind,
    #[serde(default)]
    quota: Option<Quota>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Owner {
    login: String,
    id: u64,
    #[serde(rename = "siteAdmin", default)]
    site_admin: bool,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Meta {
    request_id: String,
    took_ms: u16,
    region: Option<String>,
}

/// A unit-variant enum, as a string.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Active,
    Suspended,
    Deleted,
}

/// An internally tagged enum (serde buffers the object to find the tag).
#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Kind {
    Person { name: String, email: Option<String> },
    Machine { fingerprint: String, cores: u16 },
}

/// An externally tagged enum with unit, newtype and struct variants.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Quota {
    Unlimited,
    Limited(u32),
    Window { per: u32, secs: u16 },
}

impl Validate for Page {
    fn validate(&self) -> Result<(), Invalid> {
        if self.total < self.items.len() as u64 {
            return Err(Invalid::new("total", "smaller than the number of items"));
        }
        if self.next.as_deref() == Some("") {
            return Err(Invalid::new("next", "an empty cursor"));
        }
        if let Some(meta) = &self.meta {
            if meta.request_id.is_empty() || meta.region.as_deref() == Some("") {
                return Err(Invalid::new("meta", "an empty request id or region"));
            }
            let _ = meta.took_ms;
        }
        for (i, e) in self.items.iter().enumerate() {
            let at = |field: &str| format!("items[{i}].{field}");
            if e.id.is_empty() {
                return Err(Invalid::new(at("id"), "must not be empty"));
            }
            if e.tags.iter().any(String::is_empty) {
                return Err(Invalid::new(at("tags"), "an empty tag"));
            }
            if !e.score.is_finite() || (e.status == Status::Deleted && e.active) {
                return Err(Invalid::new(at("status"), "deleted yet active"));
            }
            let _ = (e.version, e.delta, &e.attributes);
            if let Some(owner) = &e.owner {
                if owner.login.is_empty() || (owner.id == 0 && owner.site_admin) {
                    return Err(Invalid::new(at("owner"), "an anonymous admin"));
                }
            }
            match &e.kind {
                Kind::Person { name, email } => {
                    if name.is_empty() || email.as_deref().is_some_and(|m| !m.contains('@')) {
                        return Err(Invalid::new(at("kind"), "a person without a name or email"));
                    }
                }
                Kind::Machine { fingerprint, cores } => {
                    if fingerprint.is_empty() || *cores == 0 {
                        return Err(Invalid::new(at("kind"), "a machine without cores"));
                    }
                }
            }
            match e.quota {
                Some(Quota::Window { per: 0, .. } | Quota::Window { secs: 0, .. }) => {
                    return Err(Invalid::new(at("quota"), "an empty window"));
                }
                Some(Quota::Limited(_) | Quota::Unlimited | Quota::Window { .. }) | None => {}
            }
        }
        Ok(())
    }
}

/// Content types with the verdict DESIGN 2.6 gives them: `application/json` or any `+json`
/// subtype, case-insensitive, parameters allowed.
const CONTENT_TYPES: &[(&str, bool)] = &[
    ("application/json", true),
    ("application/json; charset=utf-8", true),
    ("Application/JSON;charset=UTF-8", true),
    ("application/problem+json", true),
    ("application/vnd.github+json", true),
    ("application/json ; q=0.9", true),
    ("text/plain", false),
    ("text/html; charset=utf-8", false),
    ("application/jsonp", false),
    ("text/json", false),
    ("application/x-ndjson", false),
    ("application/json+xml", false),
    ("json", false),
    ("application/", false),
    ("/+json", false),
    ("", false),
];

/// The statuses a response may have; the target expects any 2xx, or exactly 201.
const STATUSES: [u16; 8] = [200, 201, 204, 299, 203, 404, 500, 302];

/// Response validation against plain `serde_json` decoding.
///
/// Bytes: one shape byte (bits 0-2 the status from [`STATUSES`]; bit 3 expect exactly 201
/// instead of any 2xx; bits 4-5 the size limit: 10 MiB, 16 bytes, the body's length, one byte
/// less; bits 6-7 the target type: [`Page`], `Vec<Entity>`, `BTreeMap<String, Entity>`,
/// `serde_json::Value`), one content-type byte (an index into [`CONTENT_TYPES`], 255 for no
/// header, anything else for a length-prefixed raw value), then the body.
///
/// Asserts: validation never panics; a failed status, content type or size check is reported
/// as such; past those checks, egress and `serde_json::from_slice` agree (see [`agree`]).
pub fn validate_json(data: &[u8]) {
    let mut r = Reader::new(data);
    let shape = r.u8();
    let ct = r.u8();
    let mut headers = HeaderMap::new();
    let ct_ok = match usize::from(ct) {
        255 => false,
        i if i < CONTENT_TYPES.len() => {
            let (value, json) = CONTENT_TYPES[i];
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            json
        }
        _ => match HeaderValue::from_bytes(r.chunk()) {
            Ok(value) => {
                let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
                let json = is_json_content_type(&text);
                // The predicate is the core's own; check only that it cannot call a value
                // that does not even mention JSON, JSON.
                assert!(
                    !json || text.to_ascii_lowercase().contains("json"),
                    "{text:?} taken for JSON"
                );
                headers.insert(header::CONTENT_TYPE, value);
                json
            }
            Err(_) => false,
        },
    };
    let body = r.rest();
    let status = StatusCode::from_u16(STATUSES[usize::from(shape & 7)])
        .expect("invariant: STATUSES holds valid codes");
    let mut expect = Expect::default();
    let status_ok = if shape & 8 != 0 {
        expect = expect.status(StatusCode::CREATED);
        status == StatusCode::CREATED
    } else {
        status.is_success()
    };
    let len = body.len() as u64;
    let limit = match (shape >> 4) & 3 {
        0 => 10 * 1024 * 1024,
        1 => 16,
        2 => len,
        _ => len.saturating_sub(1),
    };
    expect = expect.max_body(limit);
    let case = Case {
        status,
        headers: &headers,
        body,
        expect: &expect,
        status_ok,
        ct_ok,
        size_ok: len <= limit,
    };
    match shape >> 6 {
        0 => {
            let page = agree::<Page>(&case);
            // The semantic checks run exactly when decoding succeeded, and fail as they say.
            let checked = validate_checked::<Page>(status, &headers, body, &expect);
            match (page, checked) {
                (Some(page), Ok(again)) => {
                    assert_eq!(page.validate(), Ok(()));
                    assert_eq!(page, again);
                }
                (Some(page), Err(e)) => {
                    assert_eq!(e.kind(), ValidationKind::Semantic, "{e:?}");
                    assert!(page.validate().is_err(), "{e:?}");
                }
                (None, Ok(page)) => {
                    panic!("validate_checked accepted what validate rejects: {page:?}")
                }
                (None, Err(e)) => assert_ne!(e.kind(), ValidationKind::Semantic, "{e:?}"),
            }
        }
        1 => drop(agree::<Vec<Entity>>(&case)),
        2 => drop(agree::<BTreeMap<String, Entity>>(&case)),
        _ => drop(agree::<serde_json::Value>(&case)),
    }
}

/// One response to validate, and which of the checks before decoding it passes.
struct Case<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
    body: &'a [u8],
    expect: &'a Expect,
    status_ok: bool,
    ct_ok: bool,
    size_ok: bool,
}

/// Validates `case` as a `T` and checks the result against plain `serde_json`, returning the
/// value when validation succeeded.
///
/// Where egress and `serde_json::from_slice::<T>` agree, by contract: when egress accepts, so
/// does serde_json, with an equal value; when serde_json rejects, so does egress, and the kind
/// follows serde_json's error category (end of input: `Truncated`; syntax: `Syntax`,
/// `TrailingCharacters`, `RecursionLimit` or `OutOfRange`; data: `Schema`, `OutOfRange` or
/// `DuplicateKey`).
///
/// Where they legitimately differ, egress being stricter (DESIGN 2.6 and the `validate` docs),
/// serde_json accepts what egress rejects only as:
/// - `DuplicateKey`: an object repeats a key. serde_json keeps the last value of a repeated
///   key in a map (`BTreeMap`, `Value`), and skips repeated unknown fields of a struct; egress
///   rejects any repeat anywhere. Checked by an independent scan ([`repeated_key`]).
/// - `InvalidUtf8`: serde_json does not check the UTF-8 of strings it skips (unknown fields);
///   egress checks the whole body first.
///
/// Both reject (so no exception is needed) a body that is empty or only whitespace, and one
/// that starts with a byte-order mark; egress names those `Empty` and `Bom`, checked before
/// UTF-8 and before decoding, in that order.
fn agree<T: DeserializeOwned + PartialEq + Debug>(case: &Case<'_>) -> Option<T> {
    let got = validate::<T>(case.status, case.headers, case.body, case.expect);
    if let Err(e) = &got {
        // The error renders, and its excerpt stays short (EXCERPT_LEN plus an ellipsis at each
        // end), whatever the body.
        let _ = (e.to_string(), format!("{e:?}"));
        let bound = egress_core::EXCERPT_LEN + 2 * '…'.len_utf8();
        assert!(
            e.excerpt().len() <= bound,
            "excerpt of {} bytes",
            e.excerpt().len()
        );
    }
    let kind = got.as_ref().err().map(|e| e.kind());
    if !case.status_ok {
        assert_eq!(kind, Some(ValidationKind::UnexpectedStatus), "{got:?}");
        return None;
    }
    if !case.ct_ok {
        assert_eq!(kind, Some(ValidationKind::ContentType), "{got:?}");
        return None;
    }
    if !case.size_ok {
        assert_eq!(kind, Some(ValidationKind::TooLarge), "{got:?}");
        return None;
    }
    let body = case.body;
    let utf8 = std::str::from_utf8(body).is_ok();
    let plain = serde_json::from_slice::<T>(body);
    match (got, plain) {
        (Ok(value), Ok(plain)) => {
            assert_eq!(
                value, plain,
                "egress and serde_json decoded different values"
            );
            assert!(utf8, "accepted a body that is not UTF-8");
            if let Some(key) = repeated_key(body) {
                panic!("accepted a body that repeats the key {key:?}");
            }
            Some(value)
        }
        (Ok(value), Err(e)) => panic!("accepted {value:?}, which serde_json rejects: {e}"),
        (Err(e), Ok(_)) => {
            match e.kind() {
                ValidationKind::InvalidUtf8 => assert!(!utf8, "{e:?}: the body is UTF-8"),
                ValidationKind::DuplicateKey => {
                    assert!(utf8, "{e:?}");
                    assert!(repeated_key(body).is_some(), "{e:?}: no key repeats");
                }
                _ => panic!("rejected what serde_json accepts: {e:?}"),
            }
            None
        }
        (Err(e), Err(plain)) => {
            use serde_json::error::Category;
            let expected: &[ValidationKind] = if body.iter().all(u8::is_ascii_whitespace) {
                &[ValidationKind::Empty]
            } else if body.starts_with(b"\xEF\xBB\xBF") {
                &[ValidationKind::Bom]
            } else if !utf8 {
                &[ValidationKind::InvalidUtf8]
            } else {
                match plain.classify() {
                    Category::Eof => &[ValidationKind::Truncated],
                    Category::Syntax => &[
                        ValidationKind::Syntax,
                        ValidationKind::TrailingCharacters,
                        ValidationKind::RecursionLimit,
                        ValidationKind::OutOfRange,
                    ],
                    Category::Data => &[
                        ValidationKind::Schema,
                        ValidationKind::OutOfRange,
                        ValidationKind::DuplicateKey,
                    ],
                    Category::Io => panic!("serde_json reported IO on a slice: {plain}"),
                }
            };
            assert!(
                expected.contains(&e.kind()),
                "{e:?} for serde_json's {:?} error {plain}",
                plain.classify()
            );
            None
        }
    }
}

/// The first key that some object in `body` repeats, found by a plain scan of the JSON tokens
/// (a string followed by `:` is a key of the innermost open object), independently of egress.
/// Keys compare decoded (`"a"` and `"\u0061"` are the same key); a key that does not decode
/// compares as its raw bytes.
fn repeated_key(body: &[u8]) -> Option<String> {
    // One entry per open container: the keys seen so far for an object, `None` for an array.
    let mut open: Vec<Option<HashSet<String>>> = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'{' => open.push(Some(HashSet::new())),
            b'[' => open.push(None),
            b'}' | b']' => {
                open.pop();
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
                let token = &body[start..(i + 1).min(body.len())];
                let mut j = i + 1;
                while j < body.len() && matches!(body[j], b' ' | b'\t' | b'\n' | b'\r') {
                    j += 1;
                }
                if body.get(j) == Some(&b':') {
                    if let Some(Some(keys)) = open.last_mut() {
                        let key = serde_json::from_slice::<String>(token)
                            .unwrap_or_else(|_| String::from_utf8_lossy(token).into_owned());
                        if !keys.insert(key.clone()) {
                            return Some(key);
                        }
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// retry_after
// ---------------------------------------------------------------------------------------------

/// `Retry-After` and `Date` values through the parser, the resolution and the exchange's clamp.
///
/// Bytes: a flags byte (bits 0-1 the status: 429, 503, 429, 500; bit 2 repeat the
/// `Retry-After` header with the same value; bit 3 add a second, different `Retry-After`; bits
/// 4-5 the wall clock: the epoch, the response's `Date`, the hint's own date, or far away;
/// bit 6 send the `Date` header; bit 7 POST instead of GET), the cap in seconds, the deadline
/// in seconds (plus one), a signed clock skew in seconds, the maximum attempts (1 to 4), the
/// backoff cap in 100 ms; then the `Retry-After` value up to a newline, then the `Date` value.
///
/// Asserts: nothing panics; delay-seconds parse to themselves (saturating at `u32::MAX`
/// seconds); a date resolves against the response's `Date`, else the wall clock, and a past
/// date means no wait; the exchange waits for exactly the resolved hint, and only when it is
/// within the cap and before the deadline, else ends with `RateLimited` saying when to come
/// back; without a valid hint, it backs off within the backoff cap.
pub fn retry_after(data: &[u8]) {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let cap = Duration::from_secs(u64::from(r.u8()));
    let deadline = Duration::from_secs(1 + u64::from(r.u8()));
    let skew = i64::from(r.u8() as i8);
    let max_attempts = 1 + u32::from(r.u8() % 4);
    let backoff_max = ms(100 * u64::from(r.u8()));
    let value = r.line();
    let date_value = r.rest();

    // The parser alone.
    let parsed = parse_retry_after(value);
    let text = std::str::from_utf8(value).map(str::trim);
    if let Ok(digits) = text {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let secs = digits
                .parse::<u64>()
                .unwrap_or(u64::MAX)
                .min(u64::from(u32::MAX));
            assert_eq!(
                parsed,
                Ok(RetryAfter::Delay(Duration::from_secs(secs))),
                "{digits:?}"
            );
        }
    }
    match parsed {
        Ok(RetryAfter::Delay(d)) => assert!(d <= Duration::from_secs(u64::from(u32::MAX))),
        Ok(RetryAfter::At(_)) => assert!(text.is_ok(), "a date from bytes that are not UTF-8"),
        Err(_) => {}
    }

    // The response's headers.
    let status = [429, 503, 429, 500][usize::from(flags & 3)];
    let status = StatusCode::from_u16(status).expect("invariant: a valid status");
    let mut headers = HeaderMap::new();
    let retry_value = HeaderValue::from_bytes(value).ok();
    if let Some(v) = &retry_value {
        headers.append(header::RETRY_AFTER, v.clone());
        if flags & 4 != 0 {
            headers.append(header::RETRY_AFTER, v.clone());
        }
        if flags & 8 != 0 {
            let other = if v.as_bytes() == b"1" { "2" } else { "1" };
            headers.append(header::RETRY_AFTER, HeaderValue::from_static(other));
        }
    }
    if flags & 64 != 0 {
        if let Ok(v) = HeaderValue::from_bytes(date_value) {
            headers.insert(header::DATE, v);
        }
    }
    let from_headers = retry_after_from_headers(&headers);
    match (&retry_value, flags & 8 != 0) {
        (None, _) => assert_eq!(from_headers, None),
        (Some(_), true) => assert!(matches!(from_headers, Some(Err(_))), "{from_headers:?}"),
        (Some(_), false) => assert_eq!(from_headers, Some(parsed.clone())),
    }
    let hint = from_headers.and_then(Result::ok);
    let date = response_date(&headers);

    // The wall clock when the first response arrives.
    let wall = match (flags >> 4) & 3 {
        0 => skewed(wall_epoch(), skew),
        1 => skewed(date.unwrap_or_else(wall_epoch), skew),
        2 => match hint {
            Some(RetryAfter::At(at)) => skewed(at, skew),
            _ => skewed(wall_epoch(), skew),
        },
        _ => SystemTime::UNIX_EPOCH + Duration::from_secs((skew.unsigned_abs()) << 26),
    };
    // Resolution.
    if let Some(hint) = hint {
        let resolved = resolve_retry_after(hint, date, wall);
        let expected = match hint {
            RetryAfter::Delay(d) => d,
            RetryAfter::At(at) => at.duration_since(date.unwrap_or(wall)).unwrap_or_default(),
        };
        assert_eq!(
            resolved, expected,
            "{hint:?} with Date {date:?} at {wall:?}"
        );
    }

    // The exchange's clamp.
    let policy = Config::default()
        .with_retry(
            RetryPolicy::standard()
                .with_max_attempts(max_attempts)
                .with_retry_after_cap(cap)
                .with_backoff(
                    Backoff::default()
                        .with_initial(Duration::ZERO)
                        .with_max(backoff_max),
                ),
        )
        .with_attempt_timeout(deadline.min(Duration::from_secs(10)))
        .with_deadline(deadline)
        .build()
        .expect("invariant: a valid policy");
    let method = if flags & 128 != 0 {
        Method::POST
    } else {
        Method::GET
    };
    let request = Request::new(method.clone(), "https://api.example.com/limited")
        .expect("invariant: a valid URL");
    let start = epoch();
    let call_deadline = start + deadline;
    let mut exchange = Exchange::new(request, &policy, start, u64::from(flags));
    let mut now = start;
    let mut sent = 0;
    // The last response fed, and the wait its hint asks for, until the exchange reacts to it.
    let mut answered: Option<(Instant, SystemTime, Option<Duration>)> = None;
    for _ in 0..4 * max_attempts + 4 {
        match exchange.poll_output(now) {
            Output::Send(attempt) => {
                if let Some((_, _, Some(delay))) = answered.take() {
                    assert_eq!(delay, Duration::ZERO, "re-sent at once despite a hint");
                }
                sent += 1;
                assert_eq!(attempt.attempt, sent);
                assert!(sent <= max_attempts, "attempt {sent} of {max_attempts}");
                // The server answers 10 ms later, every time the same way.
                let at = now + ms(10);
                let wall_now = wall.checked_add(at - start).unwrap_or(wall);
                let mut response = http::Response::new(Vec::new().into());
                *response.status_mut() = status;
                *response.headers_mut() = headers.clone();
                exchange.handle_input(Input::Response {
                    attempt: sent,
                    at,
                    wall: wall_now,
                    response,
                });
                now = at;
                let delay = hint.map(|h| resolve_retry_after(h, date, wall_now));
                answered = Some((at, wall_now, delay));
            }
            Output::Wait { until, reason } => {
                let (at, _, delay) = answered.take().expect("a wait follows a response");
                assert!(until <= call_deadline, "a wait past the deadline");
                match reason {
                    WaitReason::RetryAfter { retry } => {
                        assert_eq!(retry, sent);
                        let waited = until - at;
                        assert!(
                            waited <= cap,
                            "waits {waited:?} after a {status}, cap {cap:?}"
                        );
                        assert_eq!(Some(waited), delay, "the wait is not the hint");
                    }
                    WaitReason::Backoff { retry } => {
                        assert_eq!(retry, sent);
                        assert_eq!(delay, None, "backed off despite a valid hint");
                        assert!(until - at <= backoff_max, "backoff past its cap");
                    }
                    other => panic!("waits for {other:?} after a response"),
                }
                now = until;
                exchange.handle_input(Input::Timer { at: now });
            }
            Output::Done(result) => {
                let (at, wall_now, delay) = answered.expect("the call ends on a response");
                let error = result.expect_err("a throttled or failing response ended in success");
                let throttled = status == StatusCode::TOO_MANY_REQUESTS
                    || (status == StatusCode::SERVICE_UNAVAILABLE && delay.is_some());
                let retried = throttled || method == Method::GET;
                if let Some(delay) = delay {
                    if retried && sent < max_attempts {
                        let fits = delay <= cap && at + delay < call_deadline;
                        assert!(!fits, "a hint of {delay:?} fitted, yet {error:?}");
                        assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
                    }
                    if matches!(error, Error::RateLimited { .. }) {
                        let retry_at = wall_now.checked_add(delay).unwrap_or(wall_now);
                        assert_eq!(error.retry_at(), Some(retry_at), "{error:?}");
                    }
                }
                if matches!(error, Error::RateLimited { .. }) {
                    assert_eq!(error.status(), Some(status), "{error:?}");
                    assert!(
                        delay.is_some(),
                        "rate limited without a valid hint: {error:?}"
                    );
                }
                assert_eq!(error.attempts(), sent);
                return;
            }
            other => panic!("an output this target does not know: {other:?}"),
        }
    }
    panic!("the exchange did not finish within {max_attempts} attempts");
}

// ---------------------------------------------------------------------------------------------
// exchange
// ---------------------------------------------------------------------------------------------

const METHODS: [Method; 8] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
    Method::POST,
];

const KINDS: [TransportErrorKind; 13] = [
    TransportErrorKind::Dns,
    TransportErrorKind::ConnectRefused,
    TransportErrorKind::Connect,
    TransportErrorKind::ConnectTimeout,
    TransportErrorKind::PoolTimeout,
    TransportErrorKind::Tls,
    TransportErrorKind::WriteTimeout,
    TransportErrorKind::ReadTimeout,
    TransportErrorKind::ClosedBeforeResponse,
    TransportErrorKind::ClosedDuringBody,
    TransportErrorKind::Protocol,
    TransportErrorKind::BodyTooLarge,
    TransportErrorKind::Other,
];

const RESPONSE_STATUSES: [u16; 16] = [
    200, 201, 204, 301, 400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, 504,
];

const RETRY_AFTERS: [&str; 14] = [
    "0",
    "1",
    "2",
    "5",
    "30",
    "31",
    "120",
    "99999999999999999999",
    "Wed, 21 Oct 2015 07:28:03 GMT",
    "Wednesday, 21-Oct-15 07:28:10 GMT",
    "Wed Oct 21 07:28:45 2015",
    "soon",
    "-1",
    "1.5",
];

const DATES: [&str; 4] = [
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "Wed, 21 Oct 2015 07:27:00 GMT",
    "Wed, 21 Oct 2015 07:30:00 GMT",
    "yesterday",
];

const CORRELATION_HEADER: &str = "x-correlation-id";
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The knobs of one fuzzed call that the invariants need.
struct Limits {
    max_attempts: u32,
    deadline: Instant,
    attempt_timeout: Duration,
    cap: Duration,
    backoff_max: Duration,
    idempotent: bool,
}

/// Decodes the call (policy, request, overrides, seed) from the head of the bytes.
fn call(r: &mut Reader<'_>) -> (Exchange, Limits) {
    let flags = r.u8();
    let method = METHODS[usize::from(flags & 7)].clone();
    let key = match (flags >> 3) & 3 {
        1 => KeyChoice::Mint,
        3 => KeyChoice::Given(
            egress_core::IdempotencyKey::new("fuzz-key").expect("invariant: a valid key"),
        ),
        _ => KeyChoice::None,
    };
    let idempotent = match (flags >> 5) & 3 {
        2 => Some(true),
        3 => Some(false),
        _ => None,
    };
    let tight_budget = flags & 128 != 0;
    let max_attempts = 1 + u32::from(r.u8() % 6);
    let max_override = r.u8().checked_sub(200).map(|b| u32::from(b % 7));
    let jitter = r.pick(&[
        JitterMode::None,
        JitterMode::Full,
        JitterMode::Equal,
        JitterMode::Decorrelated,
    ]);
    let initial = ms(4 * u64::from(r.u8()));
    let backoff_max = initial + ms(20 * u64::from(r.u8()));
    let cap = Duration::from_secs(u64::from(r.u8() % 40));
    let attempt = ms(50 + 40 * u64::from(r.u8()));
    let deadline = attempt + ms(100 * u64::from(r.u8()));
    let read = ms(10 + 40 * u64::from(r.u8()));
    let connect = ms(10 + 40 * u64::from(r.u8()));
    let pool = ms(10 + 40 * u64::from(r.u8()));
    let max_body = r.pick(&[10 * 1024 * 1024, 16, 64, 1]);
    let deadline_override = r.u8().checked_sub(220).map(|b| ms(1 + 300 * u64::from(b)));
    let attempt_override = r.u8().checked_sub(220).map(|b| ms(1 + 100 * u64::from(b)));
    let seed = r.u64();

    let mut budget = BudgetConfig::default();
    if tight_budget {
        budget = budget.with_retry_ratio(0.0).with_min_retries_per_sec(0);
    }
    let policy: Policy = Config::default()
        .with_retry(
            RetryPolicy::standard()
                .with_max_attempts(max_attempts)
                .with_backoff(
                    Backoff::default()
                        .with_jitter(jitter)
                        .with_initial(initial)
                        .with_max(backoff_max),
                )
                .with_retry_after_cap(cap),
        )
        .with_budget(budget)
        .with_attempt_timeout(attempt)
        .with_deadline(deadline)
        .with_read_timeout(read)
        .with_connect_timeout(connect)
        .with_pool_timeout(pool)
        .with_max_response_body(max_body)
        .build()
        .expect("invariant: the decoded policy is valid");
    let has_key = !matches!(key, KeyChoice::None);
    let mut request = Request::new(method.clone(), "https://api.example.com/things/7")
        .expect("invariant: a valid URL")
        .with_body(r#"{"n":7}"#)
        .with_idempotency_key(key);
    if let Some(n) = max_override {
        request = request.with_max_attempts(n);
    }
    if let Some(d) = deadline_override {
        request = request.with_deadline(d);
    }
    if let Some(t) = attempt_override {
        request = request.with_attempt_timeout(t);
    }
    if let Some(i) = idempotent {
        request = request.with_idempotent(i);
    }
    let safe_method = matches!(
        method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let limits = Limits {
        max_attempts: max_override.unwrap_or(max_attempts),
        deadline: epoch() + deadline_override.unwrap_or(deadline),
        attempt_timeout: attempt_override.unwrap_or(attempt),
        cap,
        backoff_max,
        idempotent: idempotent.unwrap_or(safe_method || has_key),
    };
    (Exchange::new(request, &policy, epoch(), seed), limits)
}

/// Everything the exchange has said so far, checked as it goes.
struct Watch {
    limits: Limits,
    sends: u32,
    /// The correlation ID and idempotency key of the first attempt.
    first: Option<(Option<HeaderValue>, Option<HeaderValue>)>,
    /// The first result, rendered.
    done: Option<String>,
    /// A non-idempotent attempt ended in a way that may have reached the server.
    risky: bool,
}

impl Watch {
    /// Polls until the exchange waits (returning until when) or is done (`None`), checking
    /// every output.
    fn poll(&mut self, exchange: &mut Exchange, now: Instant) -> Option<Instant> {
        for _ in 0..8 {
            let before = exchange.in_flight();
            let output = exchange.poll_output(now);
            if let Some(n) = before {
                let still = matches!(
                    output,
                    Output::Wait { reason: WaitReason::AttemptDeadline { attempt }, .. } if attempt == n
                );
                if !still {
                    // The attempt's deadline passed while it was in flight: a timeout, which may
                    // have reached the server.
                    self.ended(true);
                }
            }
            match output {
                Output::Send(attempt) => self.sent(exchange, now, &attempt),
                Output::Wait { until, reason } => {
                    assert!(self.done.is_none(), "a wait after the result");
                    assert!(until > now, "a wait for a time already reached: {reason:?}");
                    assert!(
                        until <= self.limits.deadline,
                        "{reason:?} until past the deadline"
                    );
                    let left = until - now;
                    match reason {
                        WaitReason::AttemptDeadline { attempt } => {
                            assert_eq!(Some(attempt), exchange.in_flight());
                            assert!(left <= self.limits.attempt_timeout);
                        }
                        WaitReason::Backoff { retry } => {
                            assert_eq!(retry, self.sends);
                            assert!(
                                left <= self.limits.backoff_max,
                                "backoff {left:?} past its cap"
                            );
                        }
                        WaitReason::RetryAfter { retry } => {
                            assert_eq!(retry, self.sends);
                            assert!(
                                left <= self.limits.cap,
                                "Retry-After wait {left:?} past the cap"
                            );
                        }
                        other => panic!("an unknown wait reason: {other:?}"),
                    }
                    self.check(exchange);
                    return Some(until);
                }
                Output::Done(result) => {
                    let rendered = format!("{result:?}");
                    match &self.done {
                        Some(first) => assert_eq!(first, &rendered, "a second, different result"),
                        None => self.done = Some(rendered),
                    }
                    assert!(exchange.is_done());
                    assert_eq!(exchange.in_flight(), None);
                    match &result {
                        Ok(response) => {
                            assert!(response.status().is_success(), "{response:?}");
                            assert_eq!(response.attempts(), self.sends);
                            assert!(!self.risky, "a success after a may-have-been-sent failure");
                        }
                        Err(error) => {
                            assert_eq!(error.attempts(), self.sends, "{error:?}");
                            assert_eq!(error.correlation_id(), Some(exchange.correlation_id()));
                            if self.risky {
                                assert!(error.may_have_been_sent(), "{error:?}");
                            }
                            let _ = (error.to_string(), error.is_retryable(), error.is_timeout());
                        }
                    }
                    self.check(exchange);
                    return None;
                }
                other => panic!("an output this target does not know: {other:?}"),
            }
        }
        panic!("eight polls at one instant without a wait or a result");
    }

    fn sent(
        &mut self,
        exchange: &Exchange,
        now: Instant,
        attempt: &egress_core::rt::AttemptRequest,
    ) {
        assert!(self.done.is_none(), "a send after the result");
        assert!(
            !self.risky,
            "a non-idempotent request re-sent after it may have been sent"
        );
        self.sends += 1;
        assert_eq!(
            attempt.attempt, self.sends,
            "attempts are numbered 1, 2, ..."
        );
        assert!(
            self.sends <= self.limits.max_attempts,
            "attempt {} of {}",
            self.sends,
            self.limits.max_attempts
        );
        let d = attempt.deadlines;
        assert!(now < d.attempt, "sent at or after its own deadline");
        assert!(
            d.attempt <= self.limits.deadline,
            "attempt deadline past the call's"
        );
        assert!(d.attempt - now <= self.limits.attempt_timeout);
        assert!(d.connect <= d.attempt && d.pool <= d.attempt);
        assert!(
            now + attempt.read_timeout <= d.attempt && now + attempt.write_timeout <= d.attempt
        );
        let headers = attempt.request.headers();
        let ids = (
            headers.get(CORRELATION_HEADER).cloned(),
            headers.get(IDEMPOTENCY_HEADER).cloned(),
        );
        assert!(ids.0.is_some(), "an attempt without a correlation ID");
        match &self.first {
            Some(first) => assert_eq!(first, &ids, "the IDs changed between attempts"),
            None => self.first = Some(ids),
        }
        assert_eq!(exchange.is_idempotent(), self.limits.idempotent);
    }

    /// The attempt in flight ended; `risky` when it may have reached the server by a failure.
    fn ended(&mut self, risky: bool) {
        if risky && !self.limits.idempotent {
            self.risky = true;
        }
    }

    fn check(&self, exchange: &Exchange) {
        assert_eq!(exchange.attempts(), self.sends);
        assert!(exchange.attempts() <= self.limits.max_attempts);
        assert_eq!(exchange.deadline(), self.limits.deadline);
    }
}

/// A whole exchange under an arbitrary sequence of inputs in monotonic virtual time.
///
/// Bytes: the call (see `call`: flags for method, idempotency key, idempotent override and a
/// tight budget; attempts; override; jitter; backoff; Retry-After cap; timeouts; body limit;
/// per-request overrides; an 8-byte seed), then events of at least two bytes each: the time
/// step (0-127 ms, then 100 ms steps, then seconds), and the event (bits 0-1: a response, a
/// failure, a timer, or only a poll; bits 2-3 which attempt it is for: the current one, the
/// previous one or the next one), followed for a response by a status byte, a header byte and
/// a body length byte, and for a failure by its kind.
///
/// Asserts after every event and poll: nothing panics; attempts never exceed the maximum and
/// are numbered 1, 2, ...; no wait and no attempt deadline lies past the call's deadline, and
/// waits stay within their caps (attempt timeout, backoff cap, Retry-After cap); a
/// non-idempotent request is never re-sent after an attempt that may have reached the server
/// failed or timed out, and then the error says it may have been sent; there is at most one
/// distinct result, with no send or wait after it; the correlation ID and idempotency key are
/// the same on every attempt. At the end, driven by its own timers, the exchange finishes.
pub fn exchange(data: &[u8]) {
    let mut r = Reader::new(data);
    let (mut exchange, limits) = call(&mut r);
    let mut watch = Watch {
        limits,
        sends: 0,
        first: None,
        done: None,
        risky: false,
    };
    let mut now = epoch();
    watch.poll(&mut exchange, now);
    let mut events = 0;
    while !r.is_empty() && events < 256 {
        events += 1;
        let step = r.u8();
        now += match step {
            0..=127 => ms(u64::from(step)),
            128..=191 => ms(100 * u64::from(step - 128)),
            _ => Duration::from_secs(u64::from(step - 192)),
        };
        let event = r.u8();
        let current = exchange.attempts();
        let attempt = match (event >> 2) & 3 {
            2 => current.wrapping_sub(1),
            3 => current + 1,
            _ => current,
        };
        let live = exchange.in_flight();
        let accepted = live == Some(attempt);
        match event & 3 {
            0 => {
                let status = match usize::from(r.u8()) {
                    i if i < RESPONSE_STATUSES.len() => RESPONSE_STATUSES[i],
                    i => 100 + ((i * 7) % 900) as u16,
                };
                let extras = r.u8();
                let body_len = usize::from(r.u8() % 80);
                let mut response = http::Response::new(vec![b'x'; body_len].into());
                *response.status_mut() =
                    StatusCode::from_u16(status).expect("invariant: 100 to 999 is a status");
                let h = response.headers_mut();
                match extras & 3 {
                    1 | 2 => {
                        let v = RETRY_AFTERS[usize::from(extras >> 4) % RETRY_AFTERS.len()];
                        h.insert(header::RETRY_AFTER, HeaderValue::from_static(v));
                    }
                    3 => {
                        if let Ok(v) = HeaderValue::from_bytes(r.chunk()) {
                            h.insert(header::RETRY_AFTER, v);
                        }
                    }
                    _ => {}
                }
                if extras & 4 != 0 {
                    let v = DATES[usize::from(extras >> 3) % DATES.len()];
                    h.insert(header::DATE, HeaderValue::from_static(v));
                }
                let wall = wall_at(now);
                exchange.handle_input(Input::Response {
                    attempt,
                    at: now,
                    wall,
                    response,
                });
                if accepted {
                    // A response: the server answered, so a retry is a matter of the status.
                    watch.ended(false);
                }
            }
            1 => {
                let kind = r.pick(&KINDS);
                let error = TransportError::from_kind(kind);
                exchange.handle_input(Input::Failed {
                    attempt,
                    at: now,
                    error,
                });
                if accepted {
                    watch.ended(kind.may_have_been_sent());
                }
            }
            2 => {
                exchange.handle_input(Input::Timer { at: now });
                if live.is_some() && exchange.in_flight() != live {
                    // The timer ended the attempt: it timed out in flight.
                    watch.ended(true);
                }
            }
            _ => {}
        }
        if live.is_some() && !accepted && exchange.in_flight() != live && event & 3 != 2 {
            panic!("an input for attempt {attempt} ended attempt {live:?}");
        }
        watch.poll(&mut exchange, now);
    }
    // Let the exchange finish on its own timers.
    for _ in 0..64 {
        let Some(until) = watch.poll(&mut exchange, now) else {
            return;
        };
        now = until;
        let live = exchange.in_flight();
        exchange.handle_input(Input::Timer { at: now });
        if live.is_some() && exchange.in_flight() != live {
            watch.ended(true);
        }
    }
    panic!("the exchange did not finish on its own timers");
}

// ---------------------------------------------------------------------------------------------
// link_header
// ---------------------------------------------------------------------------------------------

/// The GitHub vendor's `Link` header parser, on any header value (the bytes, as lossy UTF-8).
///
/// Asserts: nothing panics; every link's URL is a trimmed piece of the input without `>`;
/// relation types are non-empty, lowercased and hold no space; `find_rel` agrees with the
/// parse.
pub fn link_header(data: &[u8]) {
    use egress_vendors::github::{find_rel, parse_link_header};
    let text = String::from_utf8_lossy(data);
    let links = parse_link_header(&text);
    for link in &links {
        assert!(text.contains(&link.url), "{link:?} is not in {text:?}");
        assert!(!link.url.contains('>'), "{link:?}");
        assert_eq!(link.url, link.url.trim(), "{link:?}");
        for rel in &link.rels {
            assert!(!rel.is_empty(), "{link:?}");
            assert_eq!(*rel, rel.to_ascii_lowercase(), "{link:?}");
            // RFC 8288: relation types are separated by spaces, so none holds one.
            assert!(!rel.contains(' '), "{link:?}");
        }
    }
    let next = links
        .iter()
        .find(|l| l.has_rel("next"))
        .map(|l| l.url.clone());
    assert_eq!(find_rel([text.as_ref()], "next"), next);
}

// ---------------------------------------------------------------------------------------------
// decode_body: the content decoder, then the JSON validation of what it gives.
// ---------------------------------------------------------------------------------------------

/// Decodes `data` as a response body under a fuzzed `Content-Encoding` list, fed in fuzzed
/// chunks, then validates the result as JSON.
///
/// Layout: a flags byte (bit 0: decoding on; bits 1-2: how many coding tokens, up to 3), a
/// byte per token, the body limit (1 + a little-endian u16), the ratio (1 + u8), a chunk size
/// (1 + u8), then the body.
///
/// Asserts: nothing panics; a decoded body never exceeds the body limit, nor, past the first
/// MiB, the ratio times the bytes received; decoding is independent of the chunking (the
/// whole body at once gives the same bytes, or fails too); the validation of the decoded
/// bytes never panics either.
pub fn decode_body(data: &[u8]) {
    use egress_core::rt::{DecodeError, DecodeLimits, Decoding, RATIO_AFTER};

    const TOKENS: [&str; 8] = [
        "gzip", "deflate", "br", "zstd", "identity", "x-gzip", "compress", "GZIP",
    ];
    let mut r = Reader::new(data);
    let flags = r.u8();
    let count = usize::from((flags >> 1) & 3);
    let tokens: Vec<&str> = (0..count)
        .map(|_| TOKENS[usize::from(r.u8() & 7)])
        .collect();
    let max_decoded = 1 + u64::from(u16::from_le_bytes([r.u8(), r.u8()]));
    let max_ratio = 1 + u32::from(r.u8());
    let chunk = 1 + usize::from(r.u8());
    let body = r.rest();

    let mut limits = DecodeLimits::new(max_decoded);
    limits.max_ratio = max_ratio;
    let decoding = Decoding::new(flags & 1 == 1, limits);
    let mut headers = HeaderMap::new();
    if !tokens.is_empty() {
        let value = HeaderValue::from_str(&tokens.join(", ")).expect("invariant: ASCII tokens");
        headers.insert(header::CONTENT_ENCODING, value);
    }

    let in_chunks = || -> Result<Option<Vec<u8>>, DecodeError> {
        let Some(mut decoder) = decoding.decoder(&headers)? else {
            return Ok(None);
        };
        for piece in body.chunks(chunk) {
            decoder.push(piece)?;
        }
        decoder.finish().map(|b| Some(b.to_vec()))
    };
    let chunked = in_chunks();
    let whole = {
        let mut h = headers.clone();
        decoding.decode_all(&mut h, body.to_vec().into())
    };
    match (&chunked, &whole) {
        (Ok(Some(a)), Ok(b)) => {
            assert_eq!(a.as_slice(), &b[..], "chunking changed the decoded bytes");
            let n = a.len() as u64;
            assert!(
                n <= max_decoded,
                "{n} decoded bytes past the limit {max_decoded}"
            );
            let allowed = RATIO_AFTER.max(body.len() as u64 * u64::from(max_ratio));
            assert!(
                n <= allowed,
                "{n} decoded bytes past the ratio allowance {allowed}"
            );
        }
        (Ok(None), Ok(b)) => assert_eq!(&b[..], body, "an unencoded body is left alone"),
        // An empty body is never decoded, whatever its coding says.
        (Err(_), Ok(b)) => assert!(body.is_empty() && b.is_empty()),
        (Ok(_), Err(e)) => panic!("decoded in chunks but not whole: {e}"),
        // Both fail, not always alike: with stacked codings, which stage notices a broken
        // stream first depends on how the bytes were cut.
        (Err(_), Err(_)) => {}
    }

    if let Ok(decoded) = whole {
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let expect = Expect::default();
        let _ = validate::<serde_json::Value>(StatusCode::OK, &json, &decoded, &expect);
    }
}
