//! Validation of response bodies; the whole story is on [`Validate`].

use std::collections::HashSet;
use std::fmt;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use smallvec::SmallVec;

use crate::redact::Redactor;

mod keys;

/// What kind of problem a [`ValidationError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValidationKind {
    /// The status is not the expected one.
    UnexpectedStatus,
    /// The `Content-Type` is missing or not JSON.
    ContentType,
    /// The body is larger than the limit.
    TooLarge,
    /// The body is empty.
    Empty,
    /// The body starts with a byte-order mark (JSON text must not, RFC 8259 section 8.1).
    Bom,
    /// The body is not valid UTF-8.
    InvalidUtf8,
    /// The body is not JSON.
    Syntax,
    /// The body ends in the middle of a JSON value.
    Truncated,
    /// A complete JSON value is followed by more bytes.
    TrailingCharacters,
    /// The body nests deeper than the recursion limit (128).
    RecursionLimit,
    /// A number does not fit its field.
    OutOfRange,
    /// An object repeats a key.
    DuplicateKey,
    /// The JSON does not have the expected shape (wrong type, missing field, unknown variant).
    Schema,
    /// The decoded value failed a [`Validate`] check.
    Semantic,
}

impl ValidationKind {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnexpectedStatus => "unexpected_status",
            Self::ContentType => "content_type",
            Self::TooLarge => "too_large",
            Self::Empty => "empty",
            Self::Bom => "bom",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::Syntax => "syntax",
            Self::Truncated => "truncated",
            Self::TrailingCharacters => "trailing_characters",
            Self::RecursionLimit => "recursion_limit",
            Self::OutOfRange => "out_of_range",
            Self::DuplicateKey => "duplicate_key",
            Self::Schema => "schema",
            Self::Semantic => "semantic",
        }
    }
}

/// Why a response failed validation.
#[derive(Clone, PartialEq, Eq)]
pub struct ValidationError {
    kind: ValidationKind,
    path: Option<String>,
    message: String,
    excerpt: String,
}

impl ValidationError {
    fn new(kind: ValidationKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            path: None,
            message: message.into(),
            excerpt: String::new(),
        }
    }

    /// A semantic failure found by the caller after decoding, for checks that need context the
    /// payload alone does not have (such as "the returned id is the one asked for"). Wrap it
    /// with the call's metadata through [`Response::validation_error`](crate::Response::validation_error).
    pub fn semantic(path: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(ValidationKind::Semantic, message);
        e.path = Some(cap_path(&path.into()));
        e
    }

    /// Attaches an excerpt (redact it first, for example with
    /// [`Redactor::excerpt`](crate::redact::Redactor::excerpt)).
    pub fn with_excerpt(mut self, excerpt: impl Into<String>) -> Self {
        self.excerpt = excerpt.into();
        self
    }

    /// The kind of problem.
    pub fn kind(&self) -> ValidationKind {
        self.kind
    }

    /// The JSON path of the problem (`items[3].id`), when there is one.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// What is wrong, without the path.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A short, redacted excerpt of the body around the problem (at most about 256 bytes).
    pub fn excerpt(&self) -> &str {
        &self.excerpt
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl fmt::Debug for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidationError")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("message", &self.message)
            .field("excerpt", &self.excerpt)
            .finish()
    }
}

impl std::error::Error for ValidationError {}

/// A semantic check failure from [`Validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    path: String,
    message: String,
}

impl Invalid {
    /// A failure at JSON path `path` (such as `items[0].id`).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The JSON path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Semantic checks run after a successful decode (a non-empty id, a date in range...).
///
/// Typed validation of a response, as a pure function over its parts. Never retried, never
/// panics on any input.
///
/// In order: the status must be the expected one (any 2xx by default); the `Content-Type` must be
/// JSON (`application/json` or any `+json` suffix, parameters such as `charset` allowed); the body
/// must be within the size limit, non-empty, without a byte-order mark, and valid UTF-8; then
/// `serde_json` (recursion limit on) must decode it into `T`, and failures name the JSON path of
/// the problem (`items[3].id: invalid type: null, expected a string`); no object may repeat a
/// key; finally, [`Validate`] adds semantic checks. Every error carries a short redacted excerpt
/// of the body around the problem.
///
/// ```
/// use egress_core::{Expect, ValidationKind, validate};
/// use egress_core::http::{HeaderMap, HeaderValue, StatusCode};
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Page { items: Vec<Item> }
/// #[derive(Debug, serde::Deserialize)]
/// struct Item { id: String }
///
/// let mut headers = HeaderMap::new();
/// headers.insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
/// let body = br#"{"items":[{"id":"a"},{"id":null}]}"#;
/// let err = validate::<Page>(StatusCode::OK, &headers, body, &Expect::default()).unwrap_err();
/// assert_eq!(err.kind(), ValidationKind::Schema);
/// assert_eq!(err.path(), Some("items[1].id"));
/// assert_eq!(err.to_string(), "items[1].id: invalid type: null, expected a string");
/// ```
///
/// ```
/// use egress_core::{Invalid, Validate};
/// #[derive(serde::Deserialize)]
/// struct Entity { id: String }
/// impl Validate for Entity {
///     fn validate(&self) -> Result<(), Invalid> {
///         if self.id.is_empty() { return Err(Invalid::new("id", "must not be empty")); }
///         Ok(())
///     }
/// }
/// ```
pub trait Validate {
    /// Checks the decoded value.
    fn validate(&self) -> Result<(), Invalid>;
}

/// What a response is expected to be.
#[derive(Clone, Debug)]
pub struct Expect {
    status: Option<StatusCode>,
    max_body: u64,
    redactor: Redactor,
    content_types: ContentTypes,
}

/// Which `Content-Type`s a response may carry before its body is read as JSON. Media types
/// are compared by their essence (`type/subtype`, RFC 9110 8.3.1), without parameters and
/// without regard to case.
///
/// ```
/// use egress_core::ContentTypes;
/// let jsonish = ContentTypes::json();
/// assert!(jsonish.accepts(Some("application/problem+json; charset=utf-8")));
/// assert!(!jsonish.accepts(Some("text/plain")));
/// let legacy = ContentTypes::json().or(["text/plain", "application/octet-stream"]);
/// assert!(legacy.accepts(Some("Text/Plain; charset=latin1")));
/// let only = ContentTypes::exactly(["application/vnd.api+json"]);
/// assert!(!only.accepts(Some("application/json")));
/// assert!(ContentTypes::any().accepts(None));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentTypes {
    /// `application/json` and every `+json` type.
    json: bool,
    /// Further essences, lowercase.
    exact: Vec<String>,
    /// Anything, a missing `Content-Type` included.
    any: bool,
}

impl Default for ContentTypes {
    fn default() -> Self {
        Self::json()
    }
}

impl ContentTypes {
    /// `application/json` and any `<type>/<subtype>+json` (the default).
    pub fn json() -> Self {
        Self {
            json: true,
            exact: Vec::new(),
            any: false,
        }
    }

    /// Only these media types (no `+json` rule).
    pub fn exactly<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            json: false,
            exact: Vec::new(),
            any: false,
        }
        .or(types)
    }

    /// Any content type, and none.
    pub fn any() -> Self {
        Self {
            json: false,
            exact: Vec::new(),
            any: true,
        }
    }

    /// These media types too.
    pub fn or<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.exact.extend(
            types
                .into_iter()
                .map(|t| t.as_ref().trim().to_ascii_lowercase()),
        );
        self
    }

    /// Whether a response with this `Content-Type` (or none) is accepted.
    pub fn accepts(&self, content_type: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let Some(value) = content_type else {
            return false;
        };
        if self.json && is_json_content_type(value) {
            return true;
        }
        let essence = value.split(';').next().unwrap_or_default().trim();
        self.exact.iter().any(|t| t.eq_ignore_ascii_case(essence))
    }
}

impl std::fmt::Display for ContentTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.any {
            return f.write_str("any content type");
        }
        let mut parts: Vec<&str> = Vec::new();
        if self.json {
            parts.push("application/json or any +json type");
        }
        parts.extend(self.exact.iter().map(String::as_str));
        if parts.is_empty() {
            return f.write_str("no content type");
        }
        f.write_str(&parts.join(", "))
    }
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            status: None,
            max_body: 10 * 1024 * 1024,
            redactor: Redactor::default(),
            content_types: ContentTypes::json(),
        }
    }
}

impl Expect {
    /// What a [`Response`](crate::Response) expects by default: any 2xx within `max_body`,
    /// excerpts redacted by `redactor`.
    pub(crate) fn any_success(max_body: u64, redactor: Redactor) -> Self {
        Self {
            status: None,
            max_body,
            redactor,
            content_types: ContentTypes::json(),
        }
    }

    /// Expects exactly this status (default: any 2xx).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the body size limit in bytes (default 10 MiB).
    pub fn max_body(mut self, max: u64) -> Self {
        self.max_body = max;
        self
    }

    /// Sets the redactor used for excerpts.
    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Sets the accepted content types (default: [`ContentTypes::json`]).
    ///
    /// ```
    /// use egress_core::{ContentTypes, Expect};
    /// // A vendor that answers JSON as text/plain.
    /// let expect = Expect::default().content_types(ContentTypes::json().or(["text/plain"]));
    /// # let _ = expect;
    /// ```
    pub fn content_types(mut self, content_types: ContentTypes) -> Self {
        self.content_types = content_types;
        self
    }
}

/// Whether a `Content-Type` value names JSON: `application/json` or `<type>/<subtype>+json`,
/// case-insensitive, with any parameters.
pub fn is_json_content_type(value: &str) -> bool {
    // Compared without regard to ASCII case, and without allocating: this runs on every response.
    if value.eq_ignore_ascii_case("application/json") {
        // Most responses, without splitting and trimming first.
        return true;
    }
    let essence = value.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        // With parameters (`; charset=utf-8`); both halves are tokens.
        return true;
    }
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    // Both halves are ASCII once they pass `token`, so slicing the suffix is safe.
    token(kind)
        && token(subtype)
        && subtype.len() >= 5
        && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json")
}

/// Validates a response's parts and decodes the body into `T`.
pub fn validate<T: DeserializeOwned>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    expect: &Expect,
) -> Result<T, ValidationError> {
    let ok = match expect.status {
        Some(expected) => status == expected,
        None => status.is_success(),
    };
    if !ok {
        let mut e = ValidationError::new(
            ValidationKind::UnexpectedStatus,
            format!("unexpected status {status}"),
        );
        e.excerpt = expect.redactor.excerpt(body);
        return Err(e);
    }
    let accepted = &expect.content_types;
    match headers.get(CONTENT_TYPE) {
        Some(ct)
            if ct.to_str().map_or_else(
                |_| accepted.accepts(Some(&String::from_utf8_lossy(ct.as_bytes()))),
                |ct| accepted.accepts(Some(ct)),
            ) => {}
        None if accepted.accepts(None) => {}
        Some(ct) => {
            let shown: String = String::from_utf8_lossy(ct.as_bytes())
                .chars()
                .take(64)
                .collect();
            return Err(ValidationError::new(
                ValidationKind::ContentType,
                format!("content type {shown:?} is not accepted (accepted: {accepted})"),
            ));
        }
        None => {
            return Err(ValidationError::new(
                ValidationKind::ContentType,
                format!("the response has no content type (accepted: {accepted})"),
            ));
        }
    }
    if body.len() as u64 > expect.max_body {
        return Err(ValidationError::new(
            ValidationKind::TooLarge,
            format!(
                "the body has {} bytes; the limit is {}",
                body.len(),
                expect.max_body
            ),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ValidationError::new(
            ValidationKind::Empty,
            "the body is empty",
        ));
    }
    if body.starts_with(b"\xEF\xBB\xBF") {
        let mut e = ValidationError::new(
            ValidationKind::Bom,
            "the body starts with a byte-order mark",
        );
        e.excerpt = expect.redactor.excerpt(body);
        return Err(e);
    }
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(utf8) => {
            let at = utf8.valid_up_to();
            let mut e = ValidationError::new(
                ValidationKind::InvalidUtf8,
                format!("the body is not valid UTF-8 at byte {at}"),
            );
            e.excerpt = expect.redactor.excerpt_around(body, at);
            return Err(e);
        }
    };
    // From the checked text: serde_json then need not check the UTF-8 of every string again.
    let mut de = serde_json::Deserializer::from_str(text);
    let (value, may_repeat) = match keys::deserialize::<T, _>(&mut de) {
        Ok(decoded) => decoded,
        Err(first) => {
            // Only a failure pays for tracking the path: decode again with serde_path_to_error,
            // which fails at the same place (decoding is deterministic) and names it.
            let mut again = serde_json::Deserializer::from_str(text);
            let (path, error) = match serde_path_to_error::deserialize::<_, T>(&mut again) {
                Err(e) => (e.path().to_string(), e.into_inner()),
                Ok(_) => (String::new(), first),
            };
            return Err(decode_error(path, error, body, &expect.redactor));
        }
    };
    if let Err(e) = de.end() {
        return Err(decode_error(String::new(), e, body, &expect.redactor));
    }
    // The decode saw every key (keys.rs) unless it says otherwise: the scan runs only then.
    debug_assert!(
        may_repeat || find_duplicate_key(text).is_none(),
        // No body in the message: it may hold secrets.
        "invariant: the decode vouched for a body that repeats a key"
    );
    if let Some((path, key)) = may_repeat.then(|| find_duplicate_key(text)).flatten() {
        let mut e = ValidationError::new(
            ValidationKind::DuplicateKey,
            format!("duplicate key {key:?}"),
        );
        e.path = Some(path);
        e.excerpt = expect.redactor.excerpt(body);
        return Err(e);
    }
    Ok(value)
}

/// [`validate`], then the [`Validate`] checks of `T`.
pub fn validate_checked<T: DeserializeOwned + Validate>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    expect: &Expect,
) -> Result<T, ValidationError> {
    let value: T = validate(status, headers, body, expect)?;
    value.validate().map_err(|invalid| {
        let mut e = ValidationError::new(ValidationKind::Semantic, invalid.message);
        e.path = Some(invalid.path);
        e.excerpt = expect.redactor.excerpt(body);
        e
    })?;
    Ok(value)
}

fn decode_error(
    path: String,
    inner: serde_json::Error,
    body: &[u8],
    redactor: &Redactor,
) -> ValidationError {
    let text = inner.to_string();
    // serde_json appends " at line L column C"; keep the message without it.
    let message = match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text.clone(),
    };
    use serde_json::error::Category;
    let kind = match inner.classify() {
        Category::Eof => ValidationKind::Truncated,
        _ if message.starts_with("recursion limit exceeded") => ValidationKind::RecursionLimit,
        _ if message.starts_with("trailing characters") => ValidationKind::TrailingCharacters,
        _ if message.starts_with("number out of range")
            || message.starts_with("invalid value: integer") =>
        {
            ValidationKind::OutOfRange
        }
        _ if message.starts_with("duplicate field") => ValidationKind::DuplicateKey,
        Category::Data => ValidationKind::Schema,
        Category::Syntax | Category::Io => ValidationKind::Syntax,
    };
    let offset = offset_of(body, inner.line(), inner.column());
    // serde_path_to_error writes `?` for a segment it could not name (a malformed key).
    let mut path = path.as_str();
    while let Some(rest) = path.strip_suffix(".?").or_else(|| path.strip_suffix('?')) {
        path = rest;
    }
    ValidationError {
        kind,
        path: (path != "." && !path.is_empty()).then(|| cap_path(path)),
        message,
        excerpt: redactor.excerpt_around(body, offset),
    }
}

/// The longest path shown whole; longer ones (hostile nesting or keys) keep both ends.
const MAX_PATH: usize = 160;

fn cap_path(path: &str) -> String {
    if path.len() <= MAX_PATH {
        return path.to_owned();
    }
    let mut head = MAX_PATH / 2;
    while !path.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = path.len() - MAX_PATH / 2;
    while !path.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}…{}", &path[..head], &path[tail..])
}

/// The byte offset of 1-based `line` and `column` (as serde_json reports them).
fn offset_of(body: &[u8], line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (n, l) in body.split(|b| *b == b'\n').enumerate() {
        if n + 1 == line {
            return (offset + column.saturating_sub(1)).min(body.len());
        }
        offset += l.len() + 1;
    }
    body.len()
}

/// Bytes the duplicate-key scan stops at outside strings.
const STRUCTURAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    let special = *b"{}[],\"";
    while i < special.len() {
        table[special[i] as usize] = true;
        i += 1;
    }
    table
};

/// The index of the first `"` or `\\` in `body` at or after `i` (or `body.len()`), eight bytes
/// at a time: strings are most of a JSON payload, and most are too short for a vector search to
/// pay for setting itself up.
fn quote_or_backslash(body: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    while let Some(chunk) = body.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("the chunk has eight bytes"));
        let (q, b) = (word ^ QUOTES, word ^ BACKSLASHES);
        // A byte of `q` or `b` is zero where `word` has a quote or a backslash; the lowest
        // flagged byte is exact (borrows only flag bytes above a true zero).
        let found = (q.wrapping_sub(ONES) & !q | b.wrapping_sub(ONES) & !b) & HIGH;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < body.len() && body[i] != b'"' && body[i] != b'\\' {
        i += 1;
    }
    i
}

/// A key seen by the duplicate-key scan: where its text is, and a cheap tag (length and end
/// bytes) that most distinct keys already differ in.
#[derive(Clone, Copy)]
struct KeyRef {
    tag: u64,
    /// The key's text: `text[start..end]` of the body, or `unescaped[start]` when `end` is
    /// `usize::MAX` (a key spelled with escapes).
    start: usize,
    end: usize,
}

impl KeyRef {
    fn resolve<'a>(self, text: &'a str, unescaped: &'a [String]) -> &'a str {
        if self.end == usize::MAX {
            &unescaped[self.start]
        } else {
            &text[self.start..self.end]
        }
    }
}

fn key_tag(key: &str) -> u64 {
    let b = key.as_bytes();
    let first = b.first().copied().unwrap_or(0) as u64;
    let last = b.last().copied().unwrap_or(0) as u64;
    (b.len() as u64) << 16 | first << 8 | last
}

/// Objects with more keys than this are checked with a hash set instead of a linear scan, so
/// that a huge object cannot make the duplicate-key check quadratic (the scan's and the decode
/// wrapper's alike).
const LINEAR: usize = 16;

/// The bit of a key tag in an object's `tags` word (a one-word Bloom filter).
fn tag_bit(tag: u64) -> u64 {
    1 << (tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
}

/// Finds the first object key that appears twice in the same object, with its path.
///
/// A token scan rather than a second parse: the body already decoded into `T`, but fields that
/// `T` skips were read laxly (a lone surrogate, a number out of range, nesting past the limit),
/// and a strict re-parse would stop there and miss a repeat after them. Keys compare after
/// unescaping, so `"a"` and `"\u0061"` are the same key.
///
/// It runs only when the decode could not vouch for every key (`keys.rs`: a repeat, a key
/// spelled with escapes, a skipped object or array, a raw value), which payloads that skip
/// nested objects meet on every response, so it is written for speed: one pass, a table lookup per
/// byte outside strings and a word-at-a-time search inside them, keys kept as positions in the
/// body unless escaped, a key compared with no earlier key when its object has seen no key of
/// its tag (length and end bytes; a one-word Bloom filter per object), and in full only with
/// earlier keys of the same tag.
fn find_duplicate_key(text: &str) -> Option<(String, String)> {
    let body = text.as_bytes();
    let n = body.len();
    enum Frame {
        Object {
            /// Where this object's keys start in `keys` (while it has at most `LINEAR` keys).
            first: usize,
            /// This object's keys once it has more than `LINEAR`.
            set: Option<HashSet<String>>,
            key: Option<KeyRef>,
            /// One bit per tag seen in this object ([`tag_bit`]): a key whose bit is clear
            /// has no earlier key with its tag, so it is new without comparing.
            tags: u64,
        },
        Array {
            index: usize,
        },
    }
    let render = |stack: &[Frame], unescaped: &[String], last: &str| {
        let mut path = String::new();
        for frame in stack {
            match frame {
                Frame::Object { key: Some(k), .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k.resolve(text, unescaped));
                }
                Frame::Object { key: None, .. } => {}
                Frame::Array { index } => path.push_str(&format!("[{index}]")),
            }
        }
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(last);
        path
    };
    // Inline for up to a few objects' worth of keys and eight levels of nesting (a typical
    // payload: no heap allocation); deeper or wider documents spill to the heap.
    let mut keys: SmallVec<[KeyRef; 2 * LINEAR]> = SmallVec::new();
    let mut stack: SmallVec<[Frame; 8]> = SmallVec::new();
    // Keys spelled with escapes, unescaped; a typical payload has none.
    let mut unescaped: Vec<String> = Vec::new();
    let mut i = 0;
    loop {
        while i < n && !STRUCTURAL[body[i] as usize] {
            i += 1;
        }
        if i >= n {
            return None;
        }
        match body[i] {
            b'{' => stack.push(Frame::Object {
                first: keys.len(),
                set: None,
                key: None,
                tags: 0,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                if let Some(Frame::Object { first, .. }) = stack.pop() {
                    keys.truncate(first);
                }
            }
            b',' => {
                if let Some(Frame::Array { index }) = stack.last_mut() {
                    *index += 1;
                }
            }
            _ => {
                // A string: to its closing quote, stepping over escapes.
                let start = i;
                let mut escaped = false;
                i += 1;
                loop {
                    i = quote_or_backslash(body, i);
                    if i < n && body[i] == b'\\' {
                        escaped = true;
                        i += 2;
                    } else {
                        break;
                    }
                }
                if i >= n {
                    // Unterminated: nothing after it can be a key.
                    return None;
                }
                let mut j = i + 1;
                while j < n && body[j].is_ascii_whitespace() {
                    j += 1;
                }
                if j < n && body[j] == b':' {
                    if let Some(Frame::Object {
                        first,
                        set,
                        key,
                        tags,
                    }) = stack.last_mut()
                    {
                        // A key is followed by `:`, so its token is closed: `"..."`, and its
                        // quotes are ASCII, so the text between them is a `str` slice.
                        let this = if escaped {
                            let inner = &text[start + 1..i];
                            let owned = serde_json::from_str::<String>(&text[start..=i])
                                .unwrap_or_else(|_| inner.to_owned());
                            unescaped.push(owned);
                            let at = unescaped.len() - 1;
                            KeyRef {
                                tag: key_tag(&unescaped[at]),
                                start: at,
                                end: usize::MAX,
                            }
                        } else {
                            // Without escapes the JSON string is its text (also when
                            // serde_json refuses a raw control character, like the fallback
                            // above).
                            KeyRef {
                                tag: key_tag(&text[start + 1..i]),
                                start: start + 1,
                                end: i,
                            }
                        };
                        let this_text = this.resolve(text, &unescaped);
                        let repeated = match set {
                            Some(set) => !set.insert(this_text.to_owned()),
                            None => {
                                let bit = tag_bit(this.tag);
                                let repeated = *tags & bit != 0
                                    && keys.iter().skip(*first).any(|seen| {
                                        seen.tag == this.tag
                                            && seen.resolve(text, &unescaped) == this_text
                                    });
                                *tags |= bit;
                                if !repeated {
                                    keys.push(this);
                                    if keys.len() - *first > LINEAR {
                                        *set = Some(
                                            keys.drain(*first..)
                                                .map(|k| k.resolve(text, &unescaped).to_owned())
                                                .collect(),
                                        );
                                    }
                                }
                                repeated
                            }
                        };
                        if repeated {
                            // The path ends at the repeated key, not at the enclosing
                            // object's key.
                            *key = None;
                            let key = this_text.to_owned();
                            return Some((render(&stack, &unescaped, &key), key));
                        }
                        *key = Some(this);
                    }
                }
            }
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_word_at_a_time_search_finds_the_first_quote_or_backslash(
            body in prop::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(0x80u8), Just(0x22 ^ 0x80), any::<u8>()],
                0..40,
            ),
            from in 0usize..45,
        ) {
            let naive = (from.min(body.len())..body.len())
                .find(|&i| body[i] == b'"' || body[i] == b'\\')
                .unwrap_or(body.len());
            let found = super::quote_or_backslash(&body, from);
            prop_assert_eq!(found.min(body.len()), naive);
            prop_assert!(found >= body.len() || found == naive);
        }
    }
}
