//! Redaction of secrets; the whole story is on [`RedactConfig`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::url::Url;

/// How many bytes of a body an error message shows at most: excerpts are cut to it.
pub const EXCERPT_LEN: usize = 256;

/// The placeholder that replaces every secret.
pub const REDACTED: &str = "REDACTED";

const HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];
const HEADER_PARTS: &[&str] = &[
    "token", "secret", "password", "api-key", "apikey", "session",
];
const PARAMS: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "key",
    "api_key",
    "apikey",
    "api-key",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "signature",
    "sig",
];
const PARAM_PARTS: &[&str] = &["token", "secret", "password"];
/// Standard headers that never carry a secret (see `Redactor::is_known_public`).
const KNOWN_PUBLIC: [http::HeaderName; 20] = [
    http::header::CONTENT_TYPE,
    http::header::CONTENT_LENGTH,
    http::header::DATE,
    http::header::SERVER,
    http::header::CONNECTION,
    http::header::CACHE_CONTROL,
    http::header::ETAG,
    http::header::VARY,
    http::header::USER_AGENT,
    http::header::ACCEPT,
    http::header::HOST,
    http::header::TRANSFER_ENCODING,
    http::header::LAST_MODIFIED,
    http::header::EXPIRES,
    http::header::LOCATION,
    http::header::RETRY_AFTER,
    http::header::ACCEPT_ENCODING,
    http::header::CONTENT_ENCODING,
    http::header::AGE,
    http::header::ACCEPT_RANGES,
];
/// Secret values shorter than this are not searched for in bodies (they would match noise).
const MIN_VALUE_LEN: usize = 4;

/// Extra names to redact, from configuration.
///
/// Redaction, one module used everywhere: spans and events, `Debug` of requests, responses,
/// configuration and errors, error `Display`, and body excerpts.
///
/// What is secret:
/// - header names `Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`, `X-Api-Key`,
///   any name containing `token`, `secret`, `password`, `api-key`, `apikey` or `session`, and the
///   configured names;
/// - URL userinfo;
/// - query parameters and JSON or form fields named `token`, `access_token`, `refresh_token`,
///   `id_token`, `key`, `api_key`, `apikey`, `secret`, `client_secret`, `password`, `passwd`,
///   `signature`, `sig`, any name containing `token`, `secret` or `password`, and the configured
///   names;
/// - the exact values of every secret the request carried (its sensitive headers, userinfo and
///   secret query parameters), wherever they appear in a body excerpt.
///
/// ```
/// use egress_core::Redactor;
/// use egress_core::Url;
/// let r = Redactor::default();
/// let url = Url::parse("https://user:pw@api.example.com/x?token=abc&page=2").unwrap();
/// assert_eq!(r.url(&url), "https://api.example.com/x?token=REDACTED&page=2");
/// assert_eq!(r.text(br#"{"id":1,"password":"hunter2"}"#), r#"{"id":1,"password":"REDACTED"}"#);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedactConfig {
    /// Extra header names (case-insensitive).
    pub headers: Vec<String>,
    /// Extra query parameter and body field names (case-insensitive).
    pub fields: Vec<String>,
}

impl RedactConfig {
    /// Adds a header name.
    pub fn with_header(mut self, name: impl Into<String>) -> Self {
        self.headers.push(name.into());
        self
    }

    /// Adds a query parameter / body field name.
    pub fn with_field(mut self, name: impl Into<String>) -> Self {
        self.fields.push(name.into());
        self
    }
}

/// The first bytes of `needles`, as a table.
const fn first_bytes(needles: &[&str]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < needles.len() {
        table[needles[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    table
}

const HEADER_PART_STARTS: [bool; 256] = first_bytes(HEADER_PARTS);
const PARAM_PART_STARTS: [bool; 256] = first_bytes(PARAM_PARTS);

/// Whether any of `needles` (never empty; their first bytes in `starts`) occurs in `haystack`.
/// One pass that stops only where a needle could begin: this runs for every header of every
/// request and response, and most header names contain none.
fn contains_any(haystack: &str, needles: &[&str], starts: &[bool; 256]) -> bool {
    let haystack = haystack.as_bytes();
    haystack.iter().enumerate().any(|(i, b)| {
        starts[*b as usize]
            && needles
                .iter()
                .any(|needle| haystack[i..].starts_with(needle.as_bytes()))
    })
}

/// `name` in ASCII lowercase, borrowed when it already is.
fn lowercase(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Knows what is secret and hides it. Cheap to clone.
///
/// Every exchange, response and error keeps one, so its lists are shared (`Arc`): a clone counts
/// references instead of copying them.
#[derive(Clone, Default)]
pub struct Redactor {
    headers: Arc<[String]>,
    fields: Arc<[String]>,
    values: Arc<[Vec<u8>]>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("headers", &self.headers)
            .field("fields", &self.fields)
            .field("secret_values", &self.values.len())
            .finish()
    }
}

impl Redactor {
    /// The default names plus the configured ones.
    pub fn new(config: &RedactConfig) -> Self {
        Self {
            headers: config
                .headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            fields: config
                .fields
                .iter()
                .map(|f| f.to_ascii_lowercase())
                .collect(),
            values: Arc::default(),
        }
    }

    /// Whether a header's value is secret.
    pub fn is_secret_header(&self, name: &str) -> bool {
        // `HeaderName`s are already lowercase: only lowercase a copy when there is a need.
        let name = lowercase(name);
        let name = name.as_ref();
        HEADERS.contains(&name)
            || contains_any(name, HEADER_PARTS, &HEADER_PART_STARTS)
            || self.headers.iter().any(|h| h == name)
    }

    /// Whether `name` is a standard header that never carries a secret and that the
    /// configuration does not name: compared as `http`'s known names (no text compared), this
    /// skips the name search for most headers of a response.
    fn is_known_public(&self, name: &http::HeaderName) -> bool {
        self.headers.is_empty() && KNOWN_PUBLIC.contains(name)
    }

    /// Whether a query parameter's or body field's value is secret.
    pub fn is_secret_field(&self, name: &str) -> bool {
        let name = lowercase(name);
        let name = name.as_ref();
        PARAMS.contains(&name)
            || contains_any(name, PARAM_PARTS, &PARAM_PART_STARTS)
            || self.fields.iter().any(|f| f == name)
    }

    /// Marks every secret header value sensitive, so that `http`'s own `Debug` hides it and
    /// HTTP/2 never indexes it.
    pub fn mark_sensitive(&self, headers: &mut HeaderMap) {
        // Every value of every secret header, in place: no list of names to build first.
        for (name, value) in headers.iter_mut() {
            if self.is_known_public(name) {
                continue;
            }
            if self.is_secret_header(name.as_str()) {
                value.set_sensitive(true);
            }
        }
    }

    /// A copy that also hides the exact secret values the request carries: its secret headers
    /// (and the credential after an auth scheme such as `Bearer`), its userinfo, and its secret
    /// query parameters.
    pub fn with_request_secrets(&self, url: &Url, headers: &HeaderMap) -> Self {
        self.with_secrets_of(url.username(), url.password(), url.query(), headers)
    }

    /// [`with_request_secrets`](Self::with_request_secrets) from the URL's parts: its userinfo
    /// and its query.
    pub(crate) fn with_secrets_of(
        &self,
        username: &str,
        password: Option<&str>,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Self {
        // Most requests carry no secret: then the copy shares this one's lists.
        let mut found: Vec<Vec<u8>> = Vec::new();
        let mut add = |v: &[u8]| {
            let known = |list: &[Vec<u8>]| list.iter().any(|known| known == v);
            if v.len() >= MIN_VALUE_LEN && !known(&self.values) && !known(&found) {
                found.push(v.to_vec());
            }
        };
        for (name, value) in headers {
            if value.is_sensitive() || self.is_secret_header(name.as_str()) {
                let bytes = value.as_bytes();
                add(bytes);
                // "Bearer abc", "Basic abc": the credential alone.
                if let Some(pos) = bytes.iter().position(|b| *b == b' ') {
                    add(&bytes[pos + 1..]);
                }
                // "a=1; b=2" cookies: each value.
                for pair in bytes.split(|b| *b == b';') {
                    if let Some(eq) = pair.iter().position(|b| *b == b'=') {
                        add(&pair[eq + 1..]);
                    }
                }
            }
        }
        if let Some(password) = password {
            add(password.as_bytes());
            add(percent_decode(password).as_bytes());
        }
        if !username.is_empty() {
            add(username.as_bytes());
        }
        // What `Url::query_pairs` reads.
        for (name, value) in ::url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if self.is_secret_field(&name) {
                add(value.as_bytes());
            }
        }
        let mut r = self.clone();
        if !found.is_empty() {
            let mut values = self.values.to_vec();
            values.append(&mut found);
            // Longest first, so that a value containing another is replaced whole.
            values.sort_by_key(|v| std::cmp::Reverse(v.len()));
            r.values = values.into();
        }
        r
    }

    /// The URL without userinfo and with secret query values replaced.
    pub fn url(&self, url: &Url) -> String {
        let mut clean = url.clone();
        let _ = clean.set_username("");
        let _ = clean.set_password(None);
        if clean.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if self.is_secret_field(&k) {
                        Cow::Borrowed(REDACTED)
                    } else {
                        v
                    };
                    (k.into_owned(), v.into_owned())
                })
                .collect();
            clean.query_pairs_mut().clear().extend_pairs(pairs);
        }
        clean.into()
    }

    /// A URI string (as sent) redacted like [`url`](Self::url).
    pub fn uri(&self, uri: &http::Uri) -> String {
        match Url::parse(&uri.to_string()) {
            Ok(url) => self.url(&url),
            Err(_) => uri.path().to_owned(),
        }
    }

    /// A `Debug` view of headers with secret values replaced.
    pub fn headers<'a>(&'a self, headers: &'a HeaderMap) -> impl fmt::Debug + 'a {
        RedactedHeaders {
            redactor: self,
            headers,
        }
    }

    /// Text for a message: lossy UTF-8 with secret JSON and form fields masked and every known
    /// secret value replaced.
    pub fn text(&self, body: &[u8]) -> String {
        let mut text = String::from_utf8_lossy(body).into_owned();
        for value in self.values.iter() {
            let value = String::from_utf8_lossy(value);
            if text.contains(value.as_ref()) {
                text = text.replace(value.as_ref(), REDACTED);
            }
        }
        self.mask_fields(&text)
    }

    /// A short excerpt of `body` for messages: redacted as [`text`](Self::text), then cut to at
    /// most [`EXCERPT_LEN`] bytes on a character boundary.
    pub fn excerpt(&self, body: &[u8]) -> String {
        // Redact the whole body first, so that a secret straddling the cut is never half shown.
        // Bodies are within the size limit, and excerpts are made only on failures.
        let text = self.text(body);
        cut(&text, 0, EXCERPT_LEN)
    }

    /// An excerpt of about [`EXCERPT_LEN`] bytes centred on byte
    /// `offset` of `body`.
    pub fn excerpt_around(&self, body: &[u8], offset: usize) -> String {
        let len = EXCERPT_LEN;
        let start = offset.saturating_sub(len / 2);
        // Redact before cutting; the offset shifts when masks are longer or shorter than what
        // they replace, so the window is located on the raw prefix length ratio (good enough for
        // a message).
        let raw_prefix = String::from_utf8_lossy(&body[..start.min(body.len())]);
        let prefix_len = self.text(raw_prefix.as_bytes()).len();
        let text = self.text(body);
        cut(&text, prefix_len.min(text.len()), len)
    }

    fn mask_fields(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        let mut copied = 0;
        while i < bytes.len() {
            // A candidate name: a JSON string key or a form key, followed by `:` or `=`.
            let (name, after) = if bytes[i] == b'"' {
                match bytes[i + 1..].iter().position(|b| *b == b'"') {
                    Some(end) => (&text[i + 1..i + 1 + end], i + end + 2),
                    None => break,
                }
            } else if bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-' {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
                    .map_or(bytes.len(), |p| i + p);
                (&text[i..end], end)
            } else {
                i += 1;
                continue;
            };
            let mut j = after;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            let separator = j < bytes.len() && (bytes[j] == b':' || bytes[j] == b'=');
            if !separator || !self.is_secret_field(name) {
                i = after.max(i + 1);
                continue;
            }
            j += 1;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            // The value: a JSON string (with escapes), or a run up to a delimiter.
            let end = if j < bytes.len() && bytes[j] == b'"' {
                let mut k = j + 1;
                while k < bytes.len() && bytes[k] != b'"' {
                    k += if bytes[k] == b'\\' { 2 } else { 1 };
                }
                (k + 1).min(bytes.len())
            } else {
                bytes[j..]
                    .iter()
                    .position(|b| {
                        matches!(b, b',' | b'}' | b']' | b'&' | b';' | b'\n' | b'\r' | b' ')
                    })
                    .map_or(bytes.len(), |p| j + p)
            };
            if end > j {
                out.push_str(&text[copied..j]);
                out.push_str(if bytes[j] == b'"' {
                    "\"REDACTED\""
                } else {
                    REDACTED
                });
                copied = end;
            }
            i = end.max(i + 1);
        }
        out.push_str(&text[copied..]);
        out
    }
}

/// Decodes `%XX` escapes (userinfo and query values); `+` stays `+`.
pub(crate) fn percent_decode(s: &str) -> String {
    ::url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// At most `len` bytes of `text` from `start`, both moved to character boundaries, with an
/// ellipsis where something was cut.
fn cut(text: &str, start: usize, len: usize) -> String {
    let mut s = start.min(text.len());
    while !text.is_char_boundary(s) {
        s -= 1;
    }
    let mut e = (s + len).min(text.len());
    while !text.is_char_boundary(e) {
        e -= 1;
    }
    let mut out = String::new();
    if s > 0 {
        out.push('…');
    }
    out.push_str(&text[s..e]);
    if e < text.len() {
        out.push('…');
    }
    out
}

struct RedactedHeaders<'a> {
    redactor: &'a Redactor,
    headers: &'a HeaderMap,
}

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.headers {
            if value.is_sensitive() || self.redactor.is_secret_header(name.as_str()) {
                map.entry(&name.as_str(), &REDACTED);
            } else {
                map.entry(&name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    #[test]
    fn headers_skipped_as_known_public_are_never_secret_and_configured_ones_are_marked() {
        let redactor = Redactor::default();
        for name in KNOWN_PUBLIC {
            assert!(redactor.is_known_public(&name));
            assert!(!redactor.is_secret_header(name.as_str()), "{name}");
        }
        let mut headers = HeaderMap::new();
        for name in [
            "content-type",
            "content-length",
            "date",
            "server",
            "etag",
            "retry-after",
            "x-api-token",
        ] {
            let name = http::HeaderName::from_static(name);
            headers.insert(name, HeaderValue::from_static("v"));
        }
        redactor.mark_sensitive(&mut headers);
        assert!(headers["x-api-token"].is_sensitive());
        assert!(!headers["date"].is_sensitive());
        let configured = Redactor::new(&RedactConfig::default().with_header("Date"));
        configured.mark_sensitive(&mut headers);
        assert!(headers["date"].is_sensitive());
        assert!(!headers["etag"].is_sensitive());
    }

    proptest! {
        #[test]
        fn the_one_pass_search_finds_a_secret_part_wherever_str_contains_does(
            name in "[a-z-]{0,6}(token|secret|passwor|password|api-ke|api-key|apikey|session|sess)?[a-z-]{0,6}",
        ) {
            for (needles, starts) in [
                (HEADER_PARTS, &HEADER_PART_STARTS),
                (PARAM_PARTS, &PARAM_PART_STARTS),
            ] {
                let naive = needles.iter().any(|needle| name.contains(needle));
                prop_assert_eq!(contains_any(&name, needles, starts), naive, "{}", name);
            }
        }
    }

    #[test]
    fn default_and_configured_header_names_are_secret_case_insensitively() {
        let r = Redactor::new(&RedactConfig::default().with_header("X-Vendor-Sig"));
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "set-cookie",
            "X-API-KEY",
            "x-auth-token",
            "x-vendor-sig",
        ] {
            assert!(r.is_secret_header(name), "{name}");
        }
        assert!(!r.is_secret_header("content-type"));
        assert!(!r.is_secret_header("x-correlation-id"));
    }

    #[test]
    fn urls_lose_their_userinfo_and_secret_query_values() {
        let r = Redactor::new(&RedactConfig::default().with_field("tenant_secret_id"));
        let url = Url::parse(
            "https://u:p%40ss@h.example/a?access_token=t1&sig=s&q=ok&Tenant_Secret_Id=z",
        )
        .unwrap();
        assert_eq!(
            r.url(&url),
            "https://h.example/a?access_token=REDACTED&sig=REDACTED&q=ok&Tenant_Secret_Id=REDACTED"
        );
    }

    #[test]
    fn json_and_form_fields_with_secret_names_are_masked() {
        let r = Redactor::default();
        assert_eq!(
            r.text(br#"{"token": "a\"b", "n": 1}"#),
            r#"{"token": "REDACTED", "n": 1}"#
        );
        assert_eq!(
            r.text(br#"{"api_key":12345,"ok":true}"#),
            r#"{"api_key":REDACTED,"ok":true}"#
        );
        assert_eq!(
            r.text(b"user=bob&password=hunter2&x=1"),
            "user=bob&password=REDACTED&x=1"
        );
        assert_eq!(
            r.text(br#"{"keyword":"visible"}"#),
            r#"{"keyword":"visible"}"#
        );
    }

    #[test]
    fn the_exact_secret_values_of_the_request_are_replaced_anywhere_in_a_body() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk_live_123"),
        );
        headers.insert("cookie", HeaderValue::from_static("sid=c00kie; theme=dark"));
        let url = Url::parse("https://bob:pw12@h.example/?token=qtok").unwrap();
        let r = Redactor::default().with_request_secrets(&url, &headers);
        let echoed = r.text(b"denied sk_live_123 for sid c00kie and qtok by pw12");
        assert_eq!(
            echoed,
            "denied REDACTED for sid REDACTED and REDACTED by REDACTED"
        );
    }

    #[test]
    fn debug_of_headers_hides_secret_values() {
        let mut headers = HeaderMap::new();
        headers.insert("set-cookie", HeaderValue::from_static("sid=abc"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let shown = format!("{:?}", Redactor::default().headers(&headers));
        assert!(!shown.contains("abc"), "{shown}");
        assert!(shown.contains("text/plain"), "{shown}");
    }

    #[test]
    fn excerpts_are_capped_on_character_boundaries() {
        let body = "é".repeat(400);
        let e = Redactor::default().excerpt(body.as_bytes());
        assert!(e.len() <= EXCERPT_LEN + '…'.len_utf8());
        assert!(e.ends_with('…'));
        let around = Redactor::default().excerpt_around(body.as_bytes(), 401);
        assert!(around.starts_with('…') && around.ends_with('…'));
    }

    #[test]
    fn truncated_json_with_a_secret_field_is_still_masked() {
        assert_eq!(
            Redactor::default().text(br#"{"password":"abc"#),
            r#"{"password":"REDACTED""#
        );
    }
}
