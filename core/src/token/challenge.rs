//! The `error` of a `Bearer` challenge in `WWW-Authenticate` (RFC 6750 3; challenge syntax of
//! RFC 9110 11.6.1).

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, StatusCode};

use crate::error::StatusError;

/// Whether a response says the access token is invalid (expired, revoked, malformed): a 401
/// whose `WWW-Authenticate` carries the `Bearer` error `invalid_token` (RFC 6750 3.1). The
/// default rule of [`TokenSource::is_rejection`](super::TokenSource::is_rejection).
pub fn is_invalid_token(response: &StatusError) -> bool {
    response.status() == StatusCode::UNAUTHORIZED
        && bearer_error(response.headers()).as_deref() == Some("invalid_token")
}

/// The `error` parameter of the `Bearer` challenge among the response's `WWW-Authenticate`
/// headers (RFC 6750 3), such as `invalid_token`; `None` when there is no `Bearer` challenge or
/// it carries no error. Never panics, whatever the header holds.
///
/// ```
/// use egress_core::http::{HeaderMap, HeaderValue};
/// use egress_core::bearer_error;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(
///     "www-authenticate",
///     HeaderValue::from_static(r#"Basic realm="x", Bearer realm="api", error="invalid_token""#),
/// );
/// assert_eq!(bearer_error(&headers).as_deref(), Some("invalid_token"));
/// ```
pub fn bearer_error(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(error_of_bearer)
}

fn error_of_bearer(text: &str) -> Option<String> {
    let mut in_bearer = false;
    for item in split_outside_quotes(text) {
        let item = item.trim();
        let token_end = item
            .find(|c: char| c == '=' || c.is_ascii_whitespace())
            .unwrap_or(item.len());
        let (token, rest) = item.split_at(token_end);
        let rest = rest.trim_start();
        if token.is_empty() {
            continue;
        }
        let param = if let Some(value) = rest.strip_prefix('=') {
            // `name=value` (or `name = value`): a parameter of the current challenge.
            Some((token, value))
        } else {
            // A new challenge: `scheme`, or `scheme name=value` (or a token68).
            in_bearer = token.eq_ignore_ascii_case("bearer");
            rest.split_once('=')
                .map(|(name, value)| (name.trim_end(), value))
        };
        match param {
            Some((name, value)) if in_bearer && name.eq_ignore_ascii_case("error") => {
                return Some(unquote(value.trim()));
            }
            _ => {}
        }
    }
    None
}

/// The items of a comma-separated list, commas inside quoted strings kept.
fn split_outside_quotes(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// A token, or a quoted string with its backslash escapes undone.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"') else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => break,
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn error(values: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        }
        bearer_error(&headers)
    }

    #[test]
    fn the_error_of_the_rfc_6750_3_example_is_invalid_token() {
        // RFC 6750 3: the example of an expired token.
        let v = r#"Bearer realm="example", error="invalid_token", error_description="The access token expired""#;
        assert_eq!(error(&[v]).as_deref(), Some("invalid_token"));
    }

    #[test]
    fn a_bearer_challenge_without_an_error_has_none() {
        // RFC 6750 3.1: a request without authentication gets no error code.
        assert_eq!(error(&[r#"Bearer realm="example""#]), None);
        assert_eq!(error(&["Bearer"]), None);
        assert_eq!(error(&[]), None);
    }

    #[test]
    fn the_error_of_another_scheme_is_not_a_bearer_error() {
        let v = r#"Basic realm="x", error="invalid_client""#;
        assert_eq!(error(&[v]), None);
        let v = r#"Basic realm="a, error=invalid_token", Bearer error=insufficient_scope"#;
        assert_eq!(error(&[v]).as_deref(), Some("insufficient_scope"));
        assert_eq!(
            error(&["Basic realm=x", "bearer error = \"invalid_token\""]).as_deref(),
            Some("invalid_token")
        );
    }

    #[test]
    fn quoted_values_lose_their_escapes_and_garbage_is_no_panic() {
        assert_eq!(
            error(&[r#"Bearer error="in\"valid""#]).as_deref(),
            Some("in\"valid")
        );
        for junk in [
            "=",
            ",,,",
            "Bearer =",
            "Bearer error=\"",
            "\"Bearer",
            "Bearer error",
        ] {
            let _ = error(&[junk]);
        }
    }
}
