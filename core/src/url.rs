//! Joining a request path onto a client's base URL without ever leaving the base's origin.
//!
//! The base URL's path is treated as a directory: `https://api.example.com/v1` and
//! `https://api.example.com/v1/` both give `https://api.example.com/v1/entities/7` for the path
//! `entities/7` or `/entities/7`. A path that names another scheme or host
//! (`https://evil.example`, `//evil.example/x`), or that climbs above the base path with `..`, is
//! rejected with [`InvalidUrl`] instead of being followed.

use std::borrow::Cow;

pub use ::url::Url;

/// Why a URL or path was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid url: {reason}")]
pub struct InvalidUrl {
    reason: String,
}

impl InvalidUrl {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// Parses and checks a base URL: `http` or `https`, a host, no query, no fragment.
pub(crate) fn parse_base(base: &str) -> Result<Url, InvalidUrl> {
    let url = Url::parse(base).map_err(|e| InvalidUrl::new(format!("{e}")))?;
    check_absolute(&url)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(InvalidUrl::new(
            "a base url cannot have a query or a fragment",
        ));
    }
    Ok(url)
}

/// Checks an absolute request URL: `http` or `https` and a host.
pub(crate) fn check_absolute(url: &Url) -> Result<(), InvalidUrl> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(InvalidUrl::new(format!(
            "unsupported scheme {:?}",
            url.scheme()
        )));
    }
    if url.host().is_none() {
        return Err(InvalidUrl::new("the url has no host"));
    }
    Ok(())
}

/// `a.origin() == b.origin()`, without building the two origins (each a copy of the host) for
/// the http and https URLs it is always asked about.
fn same_origin(a: &Url, b: &Url) -> bool {
    match a.scheme() {
        "http" | "https" => {
            a.scheme() == b.scheme()
                && a.host() == b.host()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => a.origin() == b.origin(),
    }
}

/// Joins `path` (with an optional query) onto `base`, staying on the base's origin and under its
/// path: `/entities/7?expand=owner` on `https://api.example.com/v1` is
/// `https://api.example.com/v1/entities/7?expand=owner`; `//evil.example/steal` and
/// `../admin` are refused.
pub(crate) fn join(base: &Url, path: &str) -> Result<Url, InvalidUrl> {
    let relative = path.trim_start_matches('/');
    if base.path().ends_with('/') && !path.starts_with("//") && is_plain(relative) {
        // Nothing in a plain path can name a scheme or a host or climb, so the checks below
        // would pass: join it directly (this runs on every call).
        return base
            .join(relative)
            .map_err(|e| InvalidUrl::new(format!("{e}")));
    }
    join_checked(base, path)
}

/// Whether `relative` is a path of plain segments with an optional plain query: unreserved
/// characters, sub-delimiters, `@` and `/` (no `:`, `%`, `\\`, `#` or control character, no `.`
/// or `..` segment), then after `?` the same plus `:`, `%` and `?`.
fn is_plain(relative: &str) -> bool {
    fn plain(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=@/".contains(&b)
    }
    let (path, query) = match relative.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (relative, None),
    };
    path.bytes().all(plain)
        && path
            .split('/')
            .all(|segment| segment != "." && segment != "..")
        && query.is_none_or(|q| q.bytes().all(|b| plain(b) || b":%?".contains(&b)))
}

/// [`join`] with every check made.
fn join_checked(base: &Url, path: &str) -> Result<Url, InvalidUrl> {
    if path.contains(['\\', '\r', '\n', '\t']) || path.chars().any(char::is_control) {
        return Err(InvalidUrl::new(
            "the path contains a backslash or a control character",
        ));
    }
    let relative = path.trim_start_matches('/');
    if path.starts_with("//") || Url::parse(relative).is_ok() {
        return Err(InvalidUrl::new(
            "the path names a scheme or a host; pass a path relative to the base url",
        ));
    }
    // The base as a directory; borrowed when it already is one (no copy on every call).
    let dir = if base.path().ends_with('/') {
        Cow::Borrowed(base)
    } else {
        let mut dir = base.clone();
        let with_slash = format!("{}/", dir.path());
        dir.set_path(&with_slash);
        Cow::Owned(dir)
    };
    let joined = dir
        .join(relative)
        .map_err(|e| InvalidUrl::new(format!("{e}")))?;
    if !same_origin(&joined, base) {
        return Err(InvalidUrl::new("the path leaves the base url's origin"));
    }
    if !joined.path().starts_with(dir.path()) {
        return Err(InvalidUrl::new("the path climbs above the base url's path"));
    }
    Ok(joined)
}

/// A base URL prepared once per client, so that joining a common path onto it builds the
/// request's `http::Uri` directly: no URL parse per call, no second parse into a `Uri`.
///
/// Only paths whose every byte the URL parser would keep as it is take this way
/// ([`is_verbatim`]); any other path goes through [`join`]. For the paths it takes, the URI's
/// text is exactly `join(base, path)`'s (a property test holds it to that).
#[derive(Clone, Debug)]
pub(crate) struct BaseTarget {
    scheme: http::uri::Scheme,
    /// The base's host and port as the URL parser wrote them (no userinfo).
    authority: http::uri::Authority,
    /// The base's path as a directory: ends with `/`.
    dir: String,
    /// The `Host` header of the base ([`host_header`]), made once.
    host: Option<http::HeaderValue>,
}

/// The `Host` header of a request to `uri` (RFC 9110 7.2, RFC 9112 3.2): the host, and the
/// port unless it is the scheme's default (80 for `http`, 443 for `https`); userinfo is never
/// sent. `None` for a URI that is not absolute `http` or `https`.
///
/// This is the one place egress decides `Host`: an exchange sets it once per call (unless the
/// caller gave one), so that each attempt's copy of the headers has it and a transport inserts
/// nothing into it (an insert into a copy reallocates its entries). A transport that sends the
/// request over HTTP/2 carries the authority in `:authority` instead (RFC 9113 8.3.1).
pub(crate) fn host_header(uri: &http::Uri) -> Option<http::HeaderValue> {
    let (default_port, default) = match uri.scheme_str() {
        Some("http") => ("80", 80),
        Some("https") => ("443", 443),
        _ => return None,
    };
    let authority = uri.authority()?;
    let text = authority.as_str();
    if !text.contains('@') && !spells_port(text, default_port) {
        // The common case: the authority's own text, with no allocation of a string.
        return http::HeaderValue::from_str(text).ok();
    }
    // `Authority::host` keeps an IPv6 literal's brackets.
    let host = authority.host();
    let value = match authority.port_u16() {
        Some(port) if port != default => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    http::HeaderValue::from_str(&value).ok()
}

/// Whether an authority (without userinfo) names `port` (`:80`, `:080`...) as
/// `Authority::port_u16` would read it, without parsing the port as a number.
fn spells_port(authority: &str, port: &str) -> bool {
    authority.rsplit_once(':').is_some_and(|(_, spelled)| {
        // After an IPv6 literal's last `:` comes `...]`, never digits alone.
        !spelled.is_empty()
            && spelled.bytes().all(|b| b.is_ascii_digit())
            && spelled.trim_start_matches('0') == port
    })
}

impl BaseTarget {
    /// The prepared form of `base`, or `None` for a base with userinfo (whose credentials
    /// [`Request::from_url`](crate::Request::from_url) must move into a header).
    pub(crate) fn new(base: &Url) -> Option<Self> {
        if !base.username().is_empty() || base.password().is_some() {
            return None;
        }
        let scheme = http::uri::Scheme::try_from(base.scheme()).ok()?;
        let authority = http::uri::Authority::try_from(
            &base[::url::Position::BeforeHost..::url::Position::AfterPort],
        )
        .ok()?;
        let mut dir = base.path().to_owned();
        if !dir.ends_with('/') {
            dir.push('/');
        }
        let host = http::Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .ok()
            .as_ref()
            .and_then(host_header);
        Some(Self {
            scheme,
            authority,
            dir,
            host,
        })
    }

    /// [`host_header`] of `uri`, made without an allocation when `uri` is on this base.
    pub(crate) fn host_header(&self, uri: &http::Uri) -> Option<http::HeaderValue> {
        // The authority compared as exact text (a URI joined onto the base has the base's), not
        // with `Authority`'s own `==`, which folds ASCII case byte by byte on every call. One
        // that differs only in case takes the general rule (its own text as `Host`).
        if uri.scheme() == Some(&self.scheme)
            && uri
                .authority()
                .is_some_and(|a| a.as_str() == self.authority.as_str())
        {
            return self.host.clone();
        }
        host_header(uri)
    }

    /// `path` joined onto the base as an absolute URI, or `None` when the path is not verbatim
    /// (then [`join`] decides, with every check).
    pub(crate) fn join(&self, path: &str) -> Option<http::Uri> {
        if path.starts_with("//") {
            return None;
        }
        let relative = path.trim_start_matches('/');
        if !is_verbatim(relative) {
            return None;
        }
        let mut text = String::with_capacity(self.dir.len() + relative.len());
        text.push_str(&self.dir);
        text.push_str(relative);
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query =
            Some(http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(text)).ok()?);
        http::Uri::from_parts(parts).ok()
    }
}

/// Bytes the URL parser keeps as they are in an `http(s)` URL: in a path (`ABSOLUTE`), in a
/// path joined onto a base (`RELATIVE`: no `:`, which in a first segment reads as a scheme, and
/// no `%`, which can spell a dot segment), in a query (`QUERY`: no `'`, which it escapes there).
const ABSOLUTE: u8 = 1;
const QUERY: u8 = 2;
const RELATIVE: u8 = 4;
const KEPT: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        if (b as u8).is_ascii_alphanumeric() {
            table[b] = ABSOLUTE | QUERY | RELATIVE;
        }
        b += 1;
    }
    let everywhere = b"-._~!$&()*+,;=@/";
    let mut i = 0;
    while i < everywhere.len() {
        table[everywhere[i] as usize] = ABSOLUTE | QUERY | RELATIVE;
        i += 1;
    }
    table[b'\'' as usize] = ABSOLUTE | RELATIVE;
    table[b':' as usize] = ABSOLUTE | QUERY;
    table[b'%' as usize] = ABSOLUTE | QUERY;
    table[b'?' as usize] = QUERY;
    table
};

/// Whether the URL parser keeps the query of an `http(s)` URL (after its `?`) byte for byte:
/// `page=2&q=a%20b` is kept, `q='quoted'` is not (the parser escapes `'` in a query).
pub(crate) fn is_verbatim_query(query: &str) -> bool {
    query.bytes().all(|b| KEPT[b as usize] & QUERY != 0)
}

/// A path of bytes `KEPT` under `class`, with no dot segment and no `%2e`, in one pass.
fn kept_path(bytes: &[u8], class: u8) -> bool {
    let dots = |segment: &[u8]| matches!(segment, b"." | b"..");
    let mut segment_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if KEPT[b as usize] & class == 0 {
            return false;
        }
        match b {
            b'/' => {
                if dots(&bytes[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            b'%' if bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.eq_ignore_ascii_case(b"2e")) =>
            {
                return false;
            }
            _ => {}
        }
    }
    !dots(&bytes[segment_start..])
}

/// Whether the URL parser keeps every byte of `relative` as it is when joining it onto a
/// directory: a path of plain segments (unreserved characters, sub-delimiters, `@` and `/`; no
/// `.` or `..` segment, no `:` or `%`), then optionally `?` and a [verbatim
/// query](is_verbatim_query).
fn is_verbatim(relative: &str) -> bool {
    let (path, query) = match relative.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (relative, None),
    };
    kept_path(path.as_bytes(), RELATIVE) && query.is_none_or(is_verbatim_query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_joins_under_the_base_and_never_leaves_it() {
        let base = parse_base("https://api.example.com/v1").unwrap();
        assert_eq!(
            join(&base, "/entities/7?expand=owner").unwrap().as_str(),
            "https://api.example.com/v1/entities/7?expand=owner"
        );
        assert!(join(&base, "//evil.example/steal").is_err());
        assert!(join(&base, "../admin").is_err());
    }

    #[test]
    fn a_query_is_verbatim_unless_the_parser_would_escape_a_byte_of_it() {
        assert!(is_verbatim_query("page=2&q=a%20b"));
        assert!(!is_verbatim_query("q='quoted'"));
    }

    fn host_of(uri: &str) -> Option<String> {
        let uri: http::Uri = uri.parse().expect("a valid uri");
        let value = host_header(&uri)?;
        Some(value.to_str().expect("ascii").to_owned())
    }

    #[test]
    fn the_host_names_the_port_only_when_it_is_not_the_scheme_default() {
        // RFC 9110 7.2: `Host = uri-host [ ":" port ]`; RFC 3986 3.2.3: a scheme's default
        // port may be left out, and userinfo is not part of the host (RFC 9110 4.2.4).
        for (uri, expected) in [
            ("http://127.0.0.1:8080/x", "127.0.0.1:8080"),
            ("http://api.example.com/x", "api.example.com"),
            ("http://[::1]:8080/x", "[::1]:8080"),
            ("http://a.example:80/x", "a.example"),
            ("http://a.example:080/x", "a.example"),
            ("http://a.example:443/x", "a.example:443"),
            ("https://a.example/x", "a.example"),
            ("https://a.example:443/x", "a.example"),
            ("https://a.example:0443/x", "a.example"),
            ("https://a.example:80/x", "a.example:80"),
            ("https://a.example:8443/x", "a.example:8443"),
            ("http://user:pw@a.example:81/x", "a.example:81"),
            ("http://user@a.example/x", "a.example"),
            ("https://user:pw@a.example:443/x", "a.example"),
            ("http://[::1]:80/x", "[::1]"),
            ("http://[::80]:80/x", "[::80]"),
            ("http://[::80]/x", "[::80]"),
            ("http://[::1]:9000/x", "[::1]:9000"),
        ] {
            assert_eq!(host_of(uri).as_deref(), Some(expected), "{uri}");
        }
    }

    #[test]
    fn a_uri_that_is_not_absolute_http_or_https_has_no_host() {
        assert_eq!(host_of("/x"), None);
        assert_eq!(host_of("ftp://a.example/x"), None);
    }

    #[test]
    fn a_prepared_base_gives_the_same_host_as_the_uri_alone() {
        for (base, path) in [
            ("http://127.0.0.1:8080/v1", "entity/7"),
            ("http://api.example.com", "x"),
            ("http://api.example.com:80/v1", "x"),
            ("https://api.example.com/v1", "x"),
            ("https://api.example.com:443/v1", "x"),
            ("https://127.0.0.1:8443", "x"),
        ] {
            let target =
                BaseTarget::new(&parse_base(base).unwrap()).expect("a base without userinfo");
            let uri = target.join(path).expect("a verbatim path");
            assert_eq!(target.host_header(&uri), host_header(&uri), "{base}");
            let elsewhere: http::Uri = "http://other.example:81/x".parse().unwrap();
            assert_eq!(
                target.host_header(&elsewhere),
                host_header(&elsewhere),
                "{base}"
            );
        }
    }

    #[test]
    fn a_uri_whose_authority_differs_from_the_base_only_in_case_sends_its_own_text() {
        let target = BaseTarget::new(&parse_base("http://api.example.com:8080/v1").unwrap())
            .expect("a base without userinfo");
        let shouting: http::Uri = "http://API.Example.COM:8080/v1/x".parse().unwrap();
        let host = target.host_header(&shouting).expect("http has a Host");
        assert_eq!(host, "API.Example.COM:8080");
        assert_eq!(Some(host), host_header(&shouting));
    }

    #[test]
    fn port_80_is_recognised_exactly_as_the_uri_reads_its_port() {
        for authority in [
            "a.example",
            "a.example:80",
            "a.example:080",
            "a.example:8080",
            "a.example:800",
            "a.example:8",
            "a.example:0",
            "a.example:",
            "[::80]",
            "[::1]:80",
            "[::1]:81",
            "[::1]",
            "127.0.0.1:80",
            "127.0.0.1:65535",
        ] {
            let parsed: http::uri::Authority = authority.parse().expect("a valid authority");
            assert_eq!(
                spells_port(authority, "80"),
                parsed.port_u16() == Some(80),
                "{authority}"
            );
        }
    }

    fn base() -> Url {
        parse_base("https://api.example.com/v1").unwrap()
    }

    #[test]
    fn a_path_with_or_without_a_leading_slash_lands_under_the_base_path() {
        assert_eq!(
            join(&base(), "entities/7").unwrap().as_str(),
            "https://api.example.com/v1/entities/7"
        );
        assert_eq!(
            join(&base(), "/entities/7").unwrap().as_str(),
            "https://api.example.com/v1/entities/7"
        );
        let root = parse_base("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            join(&root, "/x?y=1").unwrap().as_str(),
            "http://127.0.0.1:8080/x?y=1"
        );
    }

    #[test]
    fn paths_that_name_another_origin_are_rejected() {
        for path in [
            "https://evil.example/x",
            "//evil.example/x",
            "///evil.example/x",
            "http:evil",
            "\\\\evil.example\\x",
            "/%0d%0a/x\r\n",
        ] {
            assert!(join(&base(), path).is_err(), "{path} was accepted");
        }
    }

    #[test]
    fn dot_segments_cannot_climb_above_the_base_path() {
        assert!(join(&base(), "../admin").is_err());
        assert!(join(&base(), "a/../../admin").is_err());
        assert_eq!(join(&base(), "a/../b").unwrap().path(), "/v1/b");
        // Percent-encoded dots are decoded by the URL parser as dot segments too.
        assert!(join(&base(), "%2e%2e/admin").is_err());
    }

    proptest::proptest! {
        #[test]
        fn a_plain_path_joins_as_the_fully_checked_join_does(
            path in "[a-zA-Z0-9./?:@%#&=~!$'()*+,;_ \\\\-]{0,14}",
            base in proptest::sample::select(vec![
                "https://api.example.com/v1/",
                "https://api.example.com/v1",
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/a/b/",
            ]),
        ) {
            let base = parse_base(base).unwrap();
            proptest::prop_assert_eq!(join(&base, &path), join_checked(&base, &path), "{}", path);
        }
    }

    proptest::proptest! {
        #[test]
        fn a_verbatim_path_builds_the_uri_the_url_join_gives(
            path in "[a-zA-Z0-9./?:@%#&=~!$'()*+,;_ \\\\-]{0,14}",
            base in proptest::sample::select(vec![
                "https://api.example.com/v1/",
                "https://api.example.com/v1",
                "http://127.0.0.1:8080",
                "http://127.0.0.1:80/a/b/",
                "https://[::1]:8443/x",
                "HTTP://API.Example.COM",
            ]),
        ) {
            let base = parse_base(base).unwrap();
            let target = BaseTarget::new(&base).unwrap();
            if let Some(uri) = target.join(&path) {
                let joined = join(&base, &path);
                proptest::prop_assert!(joined.is_ok(), "{} was built but join refuses it", path);
                let joined = joined.unwrap();
                proptest::prop_assert_eq!(uri.to_string(), joined.as_str(), "{}", path);
            }
        }
    }

    #[test]
    fn common_paths_take_the_prepared_base_and_odd_ones_do_not() {
        let target = BaseTarget::new(&base()).unwrap();
        let uri = target.join("/entities/7?expand=owner&page=2").unwrap();
        assert_eq!(
            uri.to_string(),
            "https://api.example.com/v1/entities/7?expand=owner&page=2"
        );
        assert_eq!(
            target.join("").unwrap().to_string(),
            "https://api.example.com/v1/"
        );
        for odd in [
            "//evil.example/x",
            "../admin",
            "a/./b",
            "%2e%2e/admin",
            "a b",
            "x?q='quoted'",
            "x#frag",
            "caf\u{e9}",
            "a\\b",
        ] {
            assert!(target.join(odd).is_none(), "{odd} took the prepared base");
        }
        let with_user = parse_base("https://user:pw@api.example.com/").unwrap();
        assert!(BaseTarget::new(&with_user).is_none());
    }

    #[test]
    fn base_urls_without_http_a_host_or_with_a_query_are_rejected() {
        assert!(parse_base("ftp://x.example").is_err());
        assert!(parse_base("not a url").is_err());
        assert!(parse_base("https://x.example/?a=1").is_err());
        assert!(parse_base("https://x.example/#top").is_err());
        assert!(parse_base("unix:/run/sock").is_err());
    }
}
