//! Servers' rate-limit fields, read into a [`Quota`].

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// What a response says about the quota left.
///
/// Server rate-limit hints: how much quota a response says is left, and when it resets.
///
/// Three families of fields are read, the first one present winning:
///
/// 1. The IETF `RateLimit` field of draft-ietf-httpapi-ratelimit-headers-10 (section 4), a
///    structured-field list of quota policies, each with its remaining quota `r` and the seconds
///    until it resets `t`: `RateLimit: "default";r=0;t=30`. The draft-07 dictionary form
///    `RateLimit: limit=100, remaining=0, reset=30` is read too. With several policies the most
///    constraining one counts: the least remaining, and for an exhausted one the latest reset.
/// 2. The older separate fields of drafts 00 to 06: `RateLimit-Limit`, `RateLimit-Remaining`,
///    `RateLimit-Reset` (delta-seconds).
/// 3. The common `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`, whose reset
///    is delta-seconds for some APIs and a Unix time for others (GitHub, Twitter).
///
/// A reset value is told apart safely: at least 10^12 is a Unix time in milliseconds, at least
/// 10^9 (September 2001) a Unix time in seconds, and anything smaller a number of seconds; no API
/// resets a quota 31 years from now. A Unix time is measured from the response's own `Date` when
/// it has one (so a skewed local clock does not stretch the wait), else from the wall-clock time
/// the response arrived. The exchange caps the resulting hold like a `Retry-After`, so a value
/// read wrongly can never hold a host for longer than the cap. Malformed values are ignored;
/// nothing here panics on any input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// Requests left in the current window.
    pub remaining: u64,
    /// The quota of the window, when the response says.
    pub limit: Option<u64>,
    /// Time until the window resets, measured from the response, when it says.
    pub reset: Option<Duration>,
    /// When the window resets, as a wall-clock time: the Unix time the response gave, or the
    /// response's `Date` (else its arrival) plus the delta it gave.
    pub reset_at: Option<SystemTime>,
}

impl Quota {
    /// Whether no request is left.
    pub fn is_exhausted(&self) -> bool {
        self.remaining == 0
    }
}

/// Whether `headers` may carry a rate-limit field: one pass over the names, so that the usual
/// response (a handful of headers, none of them these) costs no lookups.
pub(crate) fn has_rate_limit_fields(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        let name = name.as_str().as_bytes();
        // The first byte rules out nearly every name before any prefix is compared.
        match name.first() {
            Some(b'r') => name.starts_with(b"ratelimit"),
            Some(b'x') => name.starts_with(b"x-ratelimit"),
            _ => false,
        }
    })
}

/// Reads the quota a response states. `date` is the response's
/// `Date`, `wall` the wall-clock time it arrived.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use egress_core::http::HeaderMap;
/// use egress_core::rate_limit_quota;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("ratelimit", r#""default";r=0;t=30"#.parse().unwrap());
/// let q = rate_limit_quota(&headers, None, SystemTime::UNIX_EPOCH).unwrap();
/// assert!(q.is_exhausted());
/// assert_eq!(q.reset, Some(Duration::from_secs(30)));
/// ```
pub fn rate_limit_quota(
    headers: &HeaderMap,
    date: Option<SystemTime>,
    wall: SystemTime,
) -> Option<Quota> {
    if !has_rate_limit_fields(headers) {
        return None;
    }
    let now = date.unwrap_or(wall);
    let mut quota = ietf(headers)
        .or_else(|| separate(headers, "ratelimit-", now))
        .or_else(|| separate(headers, "x-ratelimit-", now))?;
    if quota.reset_at.is_none() {
        quota.reset_at = quota.reset.and_then(|d| now.checked_add(d));
    }
    Some(quota)
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// A non-negative integer (no sign, no fraction), as structured fields and the older fields
/// write them; overlong numbers are malformed.
fn integer(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A reset value: delta-seconds, or a Unix time in seconds or milliseconds (decimals allowed,
/// as some APIs send them), turned into the time left from `now`, with the Unix time itself
/// when the value was one.
fn reset_time(value: &str, now: SystemTime) -> Option<(Duration, Option<SystemTime>)> {
    let value = value.trim();
    if value.is_empty()
        || value.len() > 24
        || !value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return None;
    }
    let number: f64 = value.parse().ok()?;
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    let epoch = if number >= 1e12 {
        Some(Duration::try_from_secs_f64(number / 1000.0).ok()?)
    } else if number >= 1e9 {
        Some(Duration::try_from_secs_f64(number).ok()?)
    } else {
        None
    };
    match epoch {
        Some(since_epoch) => {
            let at = SystemTime::UNIX_EPOCH.checked_add(since_epoch)?;
            Some((at.duration_since(now).unwrap_or(Duration::ZERO), Some(at)))
        }
        None => Duration::try_from_secs_f64(number).ok().map(|d| (d, None)),
    }
}

/// Splits a structured-field list (or dictionary) on top-level commas, keeping quoted strings.
fn members(value: &str) -> impl Iterator<Item = &str> {
    split_outside_quotes(value, b',')
}

fn split_outside_quotes(value: &str, separator: u8) -> impl Iterator<Item = &str> {
    let bytes = value.as_bytes();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let mut cuts = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if quoted {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = false;
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == separator {
            cuts.push((start, i));
            start = i + 1;
        }
    }
    cuts.push((start, bytes.len()));
    // Cuts are at ASCII bytes, so every piece is valid UTF-8.
    cuts.into_iter()
        .filter_map(move |(a, b)| value.get(a..b))
        .map(str::trim)
}

/// The `RateLimit` field: the draft-10 list of policies with `r` and `t`, or the draft-07
/// dictionary with `remaining` and `reset`.
fn ietf(headers: &HeaderMap) -> Option<Quota> {
    let mut found: Option<Quota> = None;
    let mut dict = (None, None, None);
    for value in headers.get_all("ratelimit") {
        let Ok(value) = value.to_str() else { continue };
        for member in members(value) {
            let mut parts = split_outside_quotes(member, b';');
            let head = parts.next().unwrap_or_default();
            // Draft 07: `remaining=0` as a dictionary member.
            if let Some((key, v)) = head.split_once('=') {
                match key.trim() {
                    "limit" => dict.0 = integer(v),
                    "remaining" => dict.1 = integer(v),
                    "reset" => dict.2 = integer(v).map(Duration::from_secs),
                    _ => {}
                }
                continue;
            }
            let (mut r, mut t) = (None, None);
            for param in parts {
                if let Some((key, v)) = param.split_once('=') {
                    match key.trim() {
                        "r" => r = integer(v),
                        "t" => t = integer(v).map(Duration::from_secs),
                        _ => {}
                    }
                }
            }
            let Some(remaining) = r else { continue };
            let item = Quota {
                remaining,
                limit: None,
                reset: t,
                reset_at: None,
            };
            found = Some(match found {
                None => item,
                Some(best) => most_constraining(best, item),
            });
        }
    }
    if found.is_none() {
        if let (limit, Some(remaining), reset) = dict {
            found = Some(Quota {
                remaining,
                limit,
                reset,
                reset_at: None,
            });
        }
    }
    found
}

fn most_constraining(a: Quota, b: Quota) -> Quota {
    match (a.is_exhausted(), b.is_exhausted()) {
        (true, true) => Quota {
            reset: a.reset.max(b.reset),
            ..a
        },
        (true, false) => a,
        (false, true) => b,
        (false, false) if b.remaining < a.remaining => b,
        (false, false) => a,
    }
}

/// `{prefix}remaining`, `{prefix}limit` and `{prefix}reset`.
fn separate(headers: &HeaderMap, prefix: &str, now: SystemTime) -> Option<Quota> {
    let name = |suffix: &str| format!("{prefix}{suffix}");
    let remaining = integer(text(headers, &name("remaining"))?)?;
    let limit = text(headers, &name("limit")).and_then(integer);
    let reset = text(headers, &name("reset")).and_then(|v| reset_time(v, now));
    Some(Quota {
        remaining,
        limit,
        reset: reset.map(|(left, _)| left),
        reset_at: reset.and_then(|(_, at)| at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    // 2026-01-01T00:00:00Z.
    const NOW: u64 = 1_767_225_600;

    fn wall() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn read(pairs: &[(&'static str, &str)]) -> Option<Quota> {
        rate_limit_quota(&headers(pairs), None, wall())
    }

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn the_draft_10_ratelimit_list_gives_remaining_and_reset() {
        // draft-ietf-httpapi-ratelimit-headers-10, section 4: `r` remaining, `t` reset seconds.
        let q = read(&[("ratelimit", r#""default";r=50;t=30"#)]).unwrap();
        assert_eq!((q.remaining, q.reset), (50, secs(30)));
        assert!(!q.is_exhausted());
    }

    #[test]
    fn with_several_policies_the_exhausted_one_with_the_latest_reset_counts() {
        // Section 4: a field may list several policies; the client must respect all of them.
        let q = read(&[(
            "ratelimit",
            r#""burst";r=0;t=5, "daily";r=0;t=3600, "hourly";r=7;t=60"#,
        )])
        .unwrap();
        assert_eq!((q.remaining, q.reset), (0, secs(3600)));
        let q = read(&[("ratelimit", r#""a";r=9;t=5, "b";r=3;t=60"#)]).unwrap();
        assert_eq!((q.remaining, q.reset), (3, secs(60)));
    }

    #[test]
    fn a_quoted_policy_name_may_hold_commas_and_semicolons() {
        let q = read(&[("ratelimit", r#""a,b;c";r=0;t=9"#)]).unwrap();
        assert_eq!((q.remaining, q.reset), (0, secs(9)));
    }

    #[test]
    fn the_draft_07_dictionary_form_is_read() {
        // draft-ietf-httpapi-ratelimit-headers-07, section 5: limit, remaining, reset.
        let q = read(&[("ratelimit", "limit=100, remaining=0, reset=12")]).unwrap();
        assert_eq!((q.limit, q.remaining, q.reset), (Some(100), 0, secs(12)));
    }

    #[test]
    fn the_older_separate_fields_give_delta_seconds() {
        // draft-ietf-httpapi-ratelimit-headers-06, section 3: RateLimit-Reset is delta-seconds.
        let q = read(&[
            ("ratelimit-limit", "10"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "7"),
        ])
        .unwrap();
        assert_eq!((q.limit, q.remaining, q.reset), (Some(10), 0, secs(7)));
    }

    #[test]
    fn an_x_ratelimit_reset_is_a_delta_or_a_unix_time_told_apart_by_size() {
        let with = |reset: &str| {
            read(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset)])
                .unwrap()
                .reset
        };
        // Delta-seconds.
        assert_eq!(with("60"), secs(60));
        // Unix seconds, 90 s from now (GitHub's form), with the exact reset time.
        assert_eq!(with(&(NOW + 90).to_string()), secs(90));
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &(NOW + 90).to_string()),
        ]);
        let reset_at = rate_limit_quota(&h, None, wall() + Duration::from_secs(1))
            .unwrap()
            .reset_at;
        assert_eq!(reset_at, Some(wall() + Duration::from_secs(90)));
        // Unix milliseconds.
        assert_eq!(with(&((NOW + 5) * 1000).to_string()), secs(5));
        // Decimal Unix seconds.
        assert_eq!(
            with(&format!("{}.5", NOW + 1)),
            Some(Duration::from_millis(1500))
        );
        // A Unix time in the past means no wait.
        assert_eq!(with(&(NOW - 100).to_string()), secs(0));
    }

    #[test]
    fn a_unix_reset_is_measured_from_the_response_date() {
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &(NOW + 30).to_string()),
        ]);
        // The server's Date says NOW; our clock runs 100 s fast.
        let date = Some(wall());
        let q = rate_limit_quota(&h, date, wall() + Duration::from_secs(100)).unwrap();
        assert_eq!(q.reset, secs(30));
    }

    #[test]
    fn the_ietf_field_wins_over_the_x_fields() {
        let q = read(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "99"),
            ("ratelimit", r#""default";r=5;t=1"#),
        ])
        .unwrap();
        assert_eq!(q.remaining, 5);
    }

    #[test]
    fn malformed_or_absent_fields_give_nothing() {
        assert_eq!(read(&[]), None);
        assert_eq!(read(&[("content-type", "application/json")]), None);
        assert_eq!(read(&[("x-ratelimit-remaining", "-1")]), None);
        assert_eq!(read(&[("x-ratelimit-remaining", "many")]), None);
        assert_eq!(read(&[("ratelimit", r#""default";t=5"#)]), None);
        assert_eq!(read(&[("ratelimit", r#""unterminated;r=0"#)]), None);
        let q = read(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "soon"),
        ])
        .unwrap();
        assert_eq!(q.reset, None);
        for bad in [
            "1e400",
            "NaN",
            "inf",
            "-5",
            "1.2.3",
            "99999999999999999999999999",
        ] {
            assert_eq!(reset_time(bad, wall()), None, "{bad}");
        }
    }
}
