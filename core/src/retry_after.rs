//! `Retry-After`; the whole story is on [`RetryAfter`].

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{DATE, RETRY_AFTER};

/// A parsed `Retry-After` hint (or any vendor's equivalent, such as GitHub's reset time).
///
/// `Retry-After` (RFC 9110 section 10.2.3): parsed, resolved against the response's own `Date`,
/// then clamped by the exchange.
///
/// Both forms are accepted: delay-seconds (`120`) and an HTTP-date in any of the three forms of
/// RFC 9110 section 5.6.7 (IMF-fixdate, the obsolete RFC 850 form, and ANSI C's `asctime()`
/// form). A date is turned into a delay relative to the response's `Date` header when it has a
/// valid one, so a skewed local clock does not stretch or shrink the wait; otherwise relative to
/// the wall-clock time at which the response arrived. Malformed values are an error, and the
/// exchange then falls back to its backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// Wait this long.
    Delay(Duration),
    /// Wait until this wall-clock time.
    At(SystemTime),
}

/// Why a `Retry-After` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed retry-after value")]
#[non_exhaustive]
pub struct RetryAfterError;

/// The longest delay-seconds value taken at face value (about 136 years); larger ones saturate.
const MAX_SECONDS: u64 = u32::MAX as u64;

/// Parses one `Retry-After` value.
///
/// ```
/// use std::time::Duration;
/// use egress_core::{RetryAfter, parse_retry_after};
/// assert_eq!(parse_retry_after(b"120"), Ok(RetryAfter::Delay(Duration::from_secs(120))));
/// assert!(matches!(parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT"), Ok(RetryAfter::At(_))));
/// assert!(parse_retry_after(b"soon").is_err());
/// ```
pub fn parse_retry_after(value: &[u8]) -> Result<RetryAfter, RetryAfterError> {
    let text = std::str::from_utf8(value)
        .map_err(|_| RetryAfterError)?
        .trim();
    if text.is_empty() {
        return Err(RetryAfterError);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // delay-seconds = 1*DIGIT; an overlong run of digits saturates rather than failing.
        let secs = text.parse::<u64>().unwrap_or(u64::MAX).min(MAX_SECONDS);
        return Ok(RetryAfter::Delay(Duration::from_secs(secs)));
    }
    httpdate::parse_http_date(text)
        .map(RetryAfter::At)
        .map_err(|_| RetryAfterError)
}

/// Reads `Retry-After` from response headers: `None` when absent, `Some(Err)` when malformed
/// (including when the header appears more than once with different values).
pub fn retry_after_from_headers(
    headers: &HeaderMap,
) -> Option<Result<RetryAfter, RetryAfterError>> {
    let mut values = headers.get_all(RETRY_AFTER).iter();
    let first = values.next()?;
    if values.any(|other| other != first) {
        return Some(Err(RetryAfterError));
    }
    Some(parse_retry_after(first.as_bytes()))
}

/// The response's `Date`, when present and valid.
pub fn response_date(headers: &HeaderMap) -> Option<SystemTime> {
    let value = headers.get(DATE)?.to_str().ok()?;
    httpdate::parse_http_date(value).ok()
}

/// Turns a hint into a delay. A date is measured from `date` (the response's `Date` header) when
/// given, else from `wall` (when the response arrived). A date in the past means no wait.
pub fn resolve_retry_after(
    hint: RetryAfter,
    date: Option<SystemTime>,
    wall: SystemTime,
) -> Duration {
    match hint {
        RetryAfter::Delay(d) => d,
        RetryAfter::At(at) => at
            .duration_since(date.unwrap_or(wall))
            .unwrap_or(Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
    const OCT_21: u64 = 1_445_412_480;

    #[test]
    fn delay_seconds_parse_to_a_delay() {
        assert_eq!(
            parse_retry_after(b"0"),
            Ok(RetryAfter::Delay(Duration::ZERO))
        );
        assert_eq!(
            parse_retry_after(b"2"),
            Ok(RetryAfter::Delay(Duration::from_secs(2)))
        );
        assert_eq!(
            parse_retry_after(b" 120 "),
            Ok(RetryAfter::Delay(Duration::from_secs(120)))
        );
    }

    #[test]
    fn enormous_delay_seconds_saturate_instead_of_failing() {
        let huge = b"99999999999999999999999999999";
        assert_eq!(
            parse_retry_after(huge),
            Ok(RetryAfter::Delay(Duration::from_secs(u32::MAX as u64)))
        );
    }

    #[test]
    fn all_three_http_date_forms_parse_to_the_same_instant() {
        let forms: [&[u8]; 3] = [
            b"Wed, 21 Oct 2015 07:28:00 GMT",     // IMF-fixdate
            b"Wednesday, 21-Oct-15 07:28:00 GMT", // obsolete RFC 850
            b"Wed Oct 21 07:28:00 2015",          // asctime()
        ];
        for form in forms {
            assert_eq!(
                parse_retry_after(form),
                Ok(RetryAfter::At(at(OCT_21))),
                "{}",
                String::from_utf8_lossy(form)
            );
        }
    }

    #[test]
    fn malformed_values_are_errors() {
        for bad in [
            &b""[..],
            b"   ",
            b"-1",
            b"1.5",
            b"soon",
            b"120s",
            b"\xff\xfe",
            b"Wed, 32 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(
                parse_retry_after(bad),
                Err(RetryAfterError),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_date_is_measured_from_the_response_date_not_the_local_clock() {
        // Retry at OCT_21 + 30 s; the server's Date is OCT_21; our clock runs 100 s fast.
        // From the server's Date the wait is 30 s; from our clock it would be 0.
        let hint = RetryAfter::At(at(OCT_21 + 30));
        assert_eq!(
            resolve_retry_after(hint, Some(at(OCT_21)), at(OCT_21 + 100)),
            Duration::from_secs(30)
        );
        // Without a Date, the local wall time is used: 30 - 10 = 20 s.
        assert_eq!(
            resolve_retry_after(hint, None, at(OCT_21 + 10)),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn a_date_in_the_past_means_no_wait() {
        assert_eq!(
            resolve_retry_after(RetryAfter::At(at(10)), None, at(20)),
            Duration::ZERO
        );
    }

    #[test]
    fn the_header_is_read_once_and_conflicting_repeats_are_malformed() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after_from_headers(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(
            retry_after_from_headers(&h),
            Some(Ok(RetryAfter::Delay(Duration::from_secs(3))))
        );
        h.append(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(
            retry_after_from_headers(&h),
            Some(Ok(RetryAfter::Delay(Duration::from_secs(3))))
        );
        h.append(RETRY_AFTER, HeaderValue::from_static("9"));
        assert_eq!(retry_after_from_headers(&h), Some(Err(RetryAfterError)));
    }

    #[test]
    fn an_invalid_date_header_is_ignored() {
        let mut h = HeaderMap::new();
        h.insert(DATE, HeaderValue::from_static("yesterday"));
        assert_eq!(response_date(&h), None);
        h.insert(
            DATE,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(response_date(&h), Some(at(OCT_21)));
    }
}
