//! Every `http` <-> `http-types` conversion of this crate, and nothing else: the core speaks
//! `http` 1.x, surf and async-h1 speak `http-types` 2.x.
//!
//! Requests: the URL goes through `url::Url` (which normalises it as surf would; the parsed
//! scheme and authority of the last origin are kept in a [`Urls`] so that the host is not parsed
//! again on every attempt, only the path and the query are), the method by
//! name, headers value by value (`http-types` only holds ASCII values; others are refused rather
//! than altered), the body without copying. `http-types` would add a `Content-Type` the caller
//! did not ask for; it is removed again. Responses: status, version and headers; the `Date`
//! header async-h1 makes up when the server sent none is dropped, so that the core never
//! mistakes it for the server's clock.
//!
//! [`encode`] is the shortcut of the pooled client: for the common request (one of the eight
//! usual methods, a path and query `url` leaves as they are, ASCII header values) it writes
//! the HTTP/1.1 bytes that async-h1's encoder would write after [`request`], byte for byte (a
//! test compares both), without building the `http_types::Request`; anything else goes the
//! long way.

use std::error::Error as StdError;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST};
use surf::http::headers::{CONTENT_TYPE, DATE, HeaderName, HeaderValue};
use surf::http::{self as http_types, Body, Method, Url};

use crate::connector::Origin;

/// A value one side can hold and the other cannot.
#[derive(Debug)]
pub(crate) struct ConvertError(String);

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for ConvertError {}

fn refuse(what: impl Into<String>) -> ConvertError {
    ConvertError(what.into())
}

/// `http::Uri` to `url::Url`, remembering the last origin parsed.
///
/// A full `Url::parse` of the serialised URI cost ~7.5k instructions per attempt, most of it
/// the host (IDNA and IP checks). For an `http` or `https` URI whose scheme and authority are
/// those of the last one, the remembered URL is cloned and only its path and query are set,
/// through the same parser `Url::parse` uses for them (same percent-encoding and dot-segment
/// rules: see the tests, which compare both ways).
#[derive(Debug, Default)]
pub(crate) struct Urls {
    /// `scheme://authority`, its parsed URL, and what [`encode`] needs of it.
    last: Mutex<Option<(String, Url, Option<Target>)>>,
}

/// Where requests to one origin go, and the `Host` header async-h1's encoder gives them.
#[derive(Clone, Debug)]
struct Target {
    origin: Origin,
    host: String,
}

impl Target {
    fn of(url: &Url) -> Option<Self> {
        let origin = Origin::of(url).ok()?;
        let host = url.host_str()?;
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Some(Self { origin, host })
    }
}

/// `scheme` and `authority` of an `http` or `https` URI.
fn origin_of(uri: &http::Uri) -> Option<(&str, &http::uri::Authority)> {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme @ ("http" | "https")), Some(authority)) => Some((scheme, authority)),
        _ => None,
    }
}

/// Whether `key` is `scheme://authority`.
fn is_key(key: &str, scheme: &str, authority: &http::uri::Authority) -> bool {
    key.len() == scheme.len() + 3 + authority.as_str().len()
        && key.starts_with(scheme)
        && key[scheme.len()..].starts_with("://")
        && key.ends_with(authority.as_str())
}

impl Urls {
    /// The target of `uri`'s origin, parsing it only when it is not the remembered one.
    fn target(&self, uri: &http::Uri) -> Option<Target> {
        let (scheme, authority) = origin_of(uri)?;
        {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((key, _, target)) = last.as_ref() {
                if is_key(key, scheme, authority) {
                    return target.clone();
                }
            }
        }
        // Remembers the origin as `url` would.
        self.url(uri).ok()?;
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(key, _, _)| is_key(key, scheme, authority))
            .and_then(|(_, _, target)| target.clone())
    }

    pub(crate) fn url(&self, uri: &http::Uri) -> Result<Url, ConvertError> {
        let Some((scheme, authority)) = origin_of(uri) else {
            return parse(uri);
        };
        let cached = {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            last.as_ref()
                .filter(|(key, _, _)| is_key(key, scheme, authority))
                .map(|(_, url, _)| url.clone())
        };
        if let Some(mut url) = cached {
            url.set_path(uri.path());
            url.set_query(uri.query());
            return Ok(url);
        }
        let url = parse(uri)?;
        let key = format!("{scheme}://{authority}");
        let target = Target::of(&url);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, url.clone(), target));
        Ok(url)
    }
}

fn parse(uri: &http::Uri) -> Result<Url, ConvertError> {
    Url::parse(&uri.to_string())
        .map_err(|e| refuse(format!("the request URI is not an absolute URL: {e}")))
}

/// `http::Request` to `http_types::Request`.
pub(crate) fn request(
    request: http::Request<Bytes>,
    urls: &Urls,
) -> Result<http_types::Request, ConvertError> {
    let (parts, body) = request.into_parts();
    let url = urls.url(&parts.uri)?;
    let method = Method::from_str(parts.method.as_str())
        .map_err(|_| refuse(format!("surf cannot send the method {}", parts.method)))?;
    let mut out = http_types::Request::new(method, url);
    for name in parts.headers.keys() {
        let converted = HeaderName::from_bytes(name.as_str().as_bytes().to_vec())
            .map_err(|_| refuse(format!("the header name {name} is not ASCII")))?;
        for value in parts.headers.get_all(name) {
            let value = HeaderValue::from_bytes(value.as_bytes().to_vec())
                .map_err(|_| refuse(format!("a value of the {name} header is not ASCII")))?;
            out.append_header(&converted, value);
        }
    }
    if !body.is_empty() {
        let length = body.len();
        let had_content_type = parts.headers.contains_key(http::header::CONTENT_TYPE);
        out.set_body(Body::from_reader(
            async_std::io::Cursor::new(body),
            Some(length),
        ));
        if !had_content_type {
            out.remove_header(CONTENT_TYPE);
        }
    }
    Ok(out)
}

/// A request in the bytes async-h1's encoder would write for it, made without building an
/// `http_types::Request` (its header map, URL, trailer channel) and running the encoder.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// Where it goes.
    pub(crate) origin: Origin,
    /// The head, followed by the body when that is at most [`Encoded::INLINE`] bytes.
    pub(crate) head: Vec<u8>,
    /// The body when it is larger (to write after the head), else empty.
    pub(crate) body: Bytes,
}

impl Encoded {
    /// The largest body copied after the head, to go out in the same write.
    pub(crate) const INLINE: usize = 64 * 1024;
}

/// Whether async-h1's encoder writes `path` as `url` leaves it: only characters `url` never
/// escapes in an `http(s)` path, and no dot segment (`url` removes them; `%2e` counts).
fn plain_path(path: &str) -> bool {
    path.starts_with('/') && egress_core::url::is_verbatim_path(path)
}

/// Whether `url` leaves `query` as it is in an `http(s)` URL.
fn plain_query(query: &str) -> bool {
    egress_core::url::is_verbatim_query(query)
}

/// What async-h1's encoder writes for `request` once [`request`] converted it (and, with
/// `keep_alive` off, the pooled client set `connection: close`): byte for byte the same head
/// (request line, the caller's headers, `host` unless given, `content-length`, sorted by name
/// with `host` first), then the body. `None` for what this does not reproduce exactly (a
/// method other than the eight common ones, a URL `url` would rewrite, a non-ASCII header
/// value, an origin that is not `http(s)`): convert those with [`request`].
pub(crate) fn encode(
    request: &http::Request<Bytes>,
    urls: &Urls,
    keep_alive: bool,
) -> Option<Encoded> {
    use std::fmt::Write as _;

    let method = request.method();
    if !matches!(
        *method,
        http::Method::GET
            | http::Method::POST
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::PATCH
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
    ) {
        return None;
    }
    let uri = request.uri();
    let path = uri.path();
    let query = uri.query();
    if !plain_path(path) || !query.is_none_or(plain_query) {
        return None;
    }
    let target = urls.target(uri)?;
    let headers = request.headers();
    let body = request.body();

    let mut length = String::new();
    let _ = write!(length, "{}", body.len());
    // (name, a value replacing the caller's, or none: the caller's values)
    let mut fields: Vec<(&str, Option<&str>)> = Vec::with_capacity(headers.keys_len() + 3);
    for name in headers.keys() {
        if *name == CONTENT_LENGTH || (!keep_alive && *name == CONNECTION) {
            continue; // replaced below
        }
        fields.push((name.as_str(), None));
    }
    if !headers.contains_key(HOST) {
        fields.push((HOST.as_str(), Some(target.host.as_str())));
    }
    fields.push((CONTENT_LENGTH.as_str(), Some(length.as_str())));
    if !keep_alive {
        fields.push((CONNECTION.as_str(), Some("close")));
    }
    fields.sort_unstable_by_key(|&(name, _)| if name == HOST.as_str() { "0" } else { name });

    let inline = body.len() <= Encoded::INLINE;
    let mut head = Vec::with_capacity(256 + if inline { body.len() } else { 0 });
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    if let Some(query) = query {
        head.push(b'?');
        head.extend_from_slice(query.as_bytes());
    }
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let mut field = |name: &str, value: &str| {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    };
    for (name, value) in fields {
        match value {
            Some(value) => field(name, value),
            None => {
                for value in headers.get_all(name) {
                    // `to_str` takes visible ASCII and tabs: what http-types holds.
                    field(name, value.to_str().ok()?);
                }
            }
        }
    }
    head.extend_from_slice(b"\r\n");
    let body = if inline {
        head.extend_from_slice(body);
        Bytes::new()
    } else {
        body.clone()
    };
    Some(Encoded {
        origin: target.origin,
        head,
        body,
    })
}

/// The head of an `http_types::Response` as an `http::Response` with an empty body.
pub(crate) fn response_head(
    response: &http_types::Response,
) -> Result<http::Response<()>, ConvertError> {
    let status = http::StatusCode::from_u16(u16::from(response.status()))
        .map_err(|_| refuse(format!("invalid status {}", response.status())))?;
    let version = match response.version() {
        Some(http_types::Version::Http0_9) => http::Version::HTTP_09,
        Some(http_types::Version::Http1_0) => http::Version::HTTP_10,
        Some(http_types::Version::Http2_0) => http::Version::HTTP_2,
        Some(http_types::Version::Http3_0) => http::Version::HTTP_3,
        // async-h1 only accepts HTTP/1.1 and does not record it.
        _ => http::Version::HTTP_11,
    };
    let mut out = http::Response::new(());
    *out.status_mut() = status;
    *out.version_mut() = version;
    let headers = out.headers_mut();
    for (name, values) in response.iter() {
        let converted = http::HeaderName::from_bytes(name.as_str().as_bytes())
            .map_err(|_| refuse(format!("invalid header name {name}")))?;
        for value in values.iter() {
            if *name == DATE && value.as_str().starts_with("date: ") {
                continue; // made up by async-h1, not sent by the server
            }
            let value = http::HeaderValue::from_str(value.as_str())
                .map_err(|_| refuse(format!("invalid value of the {name} header")))?;
            headers.append(converted.clone(), value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_its_method_url_headers_and_body_and_gains_no_content_type() {
        let request = http::Request::post("https://api.example.com/v1/entities?x=1")
            .header("x-correlation-id", "abc")
            .header("accept", "application/json")
            .header("accept", "text/plain")
            .body(Bytes::from_static(b"payload"))
            .unwrap();
        let out = request_to_parts(request);
        assert_eq!(out.method(), Method::Post);
        assert_eq!(
            out.url().as_str(),
            "https://api.example.com/v1/entities?x=1"
        );
        assert_eq!(out["x-correlation-id"].as_str(), "abc");
        let accept: Vec<_> = out["accept"]
            .iter()
            .map(|v| v.as_str().to_owned())
            .collect();
        assert_eq!(accept, ["application/json", "text/plain"]);
        assert!(out.header(CONTENT_TYPE).is_none());
        assert_eq!(out.len(), Some(7));
    }

    #[test]
    fn a_request_keeps_the_content_type_it_was_given() {
        let request = http::Request::post("http://127.0.0.1:1/x")
            .header("content-type", "application/json")
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        let out = request_to_parts(request);
        assert_eq!(out[CONTENT_TYPE].as_str(), "application/json");
    }

    #[test]
    fn a_non_ascii_header_value_is_refused_rather_than_altered() {
        let request = http::Request::get("http://127.0.0.1:1/x")
            .header(
                "x-name",
                http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            )
            .body(Bytes::new())
            .unwrap();
        assert!(super::request(request, &Urls::default()).is_err());
    }

    #[test]
    fn the_date_async_h1_makes_up_is_dropped_and_a_real_one_kept() {
        let mut made_up = http_types::Response::new(200);
        made_up.insert_header(DATE, "date: Thu, 01 Jan 2026 00:00:00 GMT\r\n");
        made_up.insert_header("retry-after", "3");
        let head = response_head(&made_up).unwrap();
        assert!(head.headers().get("date").is_none());
        assert_eq!(head.headers()["retry-after"], "3");

        let mut real = http_types::Response::new(503);
        real.insert_header(DATE, "Wed, 21 Oct 2015 07:28:00 GMT");
        let head = response_head(&real).unwrap();
        assert_eq!(head.status(), 503);
        assert_eq!(head.version(), http::Version::HTTP_11);
        assert_eq!(head.headers()["date"], "Wed, 21 Oct 2015 07:28:00 GMT");
    }

    #[test]
    fn a_remembered_origin_gives_the_same_url_as_a_full_parse() {
        let urls = Urls::default();
        let uris = [
            "https://api.example.com/v1/entities?x=1",
            "https://api.example.com/v1/entities/7",
            "https://api.example.com/",
            "https://api.example.com",
            "https://api.example.com/a/./b/../c?",
            "https://api.example.com/a%20b/%7e/sp%2Fx?q=a%20b&r=%zz&s='x'",
            "https://api.example.com/caf%C3%A9/{id}/|x|?a=[1]&b={q}|",
            "https://api.example.com:443/v1?x",
            "https://API.Example.com/v1",
            "https://api.example.com:8443/v1",
            "http://api.example.com/v1",
            "http://user:pw@api.example.com/v1",
            "http://127.0.0.1:8080/entity/1",
            "http://127.0.0.1:8080/entity/2?y=%41",
            "http://[::1]:8080/x",
            "http://[::1]:8080/x/../../y",
            "http://127.0.0.1:8080/entity/1",
        ];
        for uri in uris {
            let parsed: http::Uri = uri.parse().unwrap();
            let full = Url::parse(&parsed.to_string()).unwrap();
            // Twice: the first may parse and remember, the second uses what was remembered.
            assert_eq!(urls.url(&parsed).unwrap(), full, "{uri}");
            assert_eq!(urls.url(&parsed).unwrap().as_str(), full.as_str(), "{uri}");
        }
    }

    /// What async-h1's encoder writes for `request` after [`request`] (and, without
    /// keep-alive, the pooled client's `connection: close`).
    fn encoded_by_async_h1(request: http::Request<Bytes>, keep_alive: bool) -> Vec<u8> {
        use async_std::io::ReadExt;
        let mut converted = super::request(request, &Urls::default()).unwrap();
        if !keep_alive {
            converted.insert_header("connection", "close");
        }
        let mut encoder = async_h1::client::Encoder::new(converted);
        let mut out = Vec::new();
        async_std::task::block_on(encoder.read_to_end(&mut out)).unwrap();
        out
    }

    fn sample_requests() -> Vec<http::Request<Bytes>> {
        let get = |uri: &str| http::Request::get(uri).body(Bytes::new()).unwrap();
        let mut out = vec![
            get("http://127.0.0.1:8080/entity/1"),
            get("http://127.0.0.1:8080/entity/2?y=%41"),
            get("https://api.example.com/v1/entities?x=1"),
            get("https://api.example.com"),
            get("https://api.example.com/?"),
            get("https://api.example.com:443/v1?x"),
            get("https://API.Example.com/v1"),
            get("https://api.example.com:8443/v1"),
            get("http://user:pw@api.example.com/v1"),
            get("http://[::1]:8080/x"),
            get("http://[::1]/x"),
            get("https://api.example.com/~user/!$&'()*+,;=:@/x%zz"),
            get("https://api.example.com/a?q=/b?c=d&e=%20&f=!$()*+,;=:@~"),
            get("https://api.example.com/a?q='x'"),
            get("https://api.example.com/a/./b/../c"),
            get("https://api.example.com/a/%2e/b/%2E%2e/c"),
            get("https://api.example.com/a/.hidden/b.c/..d"),
            get("https://api.example.com//double//slash"),
            get("https://api.example.com/caf%C3%A9/{id}/|x|?a=[1]&b={q}|"),
            get("https://api.example.com/a%20b/%7e/sp%2Fx?q=a%20b&r=%zz"),
        ];
        out.push(
            http::Request::post("https://api.example.com/v1/entities?dry_run=false")
                .header("content-type", "application/json")
                .header("x-correlation-id", "abc")
                .header("accept", "application/json")
                .header("accept", "text/plain")
                .header("x-empty", "")
                .header("x-tab", "a\tb")
                .header("authorization", "Bearer x.y.z")
                .body(Bytes::from_static(br#"{"name":"a"}"#))
                .unwrap(),
        );
        out.push(
            http::Request::put("http://127.0.0.1:1/x")
                .header("content-length", "999")
                .header("host", "elsewhere.example:81")
                .header("connection", "keep-alive")
                .header("!first", "1")
                .header("0zero", "2")
                .body(Bytes::from_static(b"no content type"))
                .unwrap(),
        );
        out.push(
            http::Request::post("http://127.0.0.1:1/big")
                .body(Bytes::from(vec![b'x'; Encoded::INLINE + 1]))
                .unwrap(),
        );
        for method in [
            "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "get", "PROPFIND",
        ] {
            out.push(
                http::Request::builder()
                    .method(method)
                    .uri("https://api.example.com:8443/v1/x?y=1")
                    .header("user-agent", "egress")
                    .body(Bytes::new())
                    .unwrap(),
            );
        }
        out
    }

    #[test]
    fn encode_writes_exactly_what_async_h1_writes_or_declines() {
        let mut compared = 0;
        for keep_alive in [true, false] {
            for request in sample_requests() {
                let label = format!(
                    "{} {} keep-alive {keep_alive}",
                    request.method(),
                    request.uri()
                );
                let urls = Urls::default();
                // Twice: the first parses and remembers the origin, the second reuses it.
                for _ in 0..2 {
                    let Some(encoded) = encode(&request, &urls, keep_alive) else {
                        continue;
                    };
                    compared += 1;
                    let mut ours = encoded.head.clone();
                    ours.extend_from_slice(&encoded.body);
                    let theirs = encoded_by_async_h1(request.clone(), keep_alive);
                    assert_eq!(
                        String::from_utf8_lossy(&ours),
                        String::from_utf8_lossy(&theirs),
                        "{label}"
                    );
                    let url = Url::parse(&request.uri().to_string()).unwrap();
                    assert_eq!(encoded.origin, Origin::of(&url).unwrap(), "{label}");
                    assert_eq!(
                        encoded.body.is_empty(),
                        request.body().len() <= Encoded::INLINE,
                        "{label}"
                    );
                }
            }
        }
        eprintln!("compared {compared} encodings");
        assert!(
            compared >= 80,
            "only {compared} requests took the fast path"
        );
    }

    #[test]
    fn encode_takes_the_common_requests_and_leaves_the_rest_to_http_types() {
        let urls = Urls::default();
        let sent = |uri: &str, method: &str| {
            let request = http::Request::builder()
                .method(method)
                .uri(uri)
                .body(Bytes::new())
                .unwrap();
            encode(&request, &urls, true).is_some()
        };
        assert!(sent("http://127.0.0.1:8080/entity/1", "GET"));
        assert!(sent(
            "https://api.example.com/v1/entities?page=2&per_page=50",
            "POST"
        ));
        assert!(sent("https://api.example.com/a%20b", "DELETE"));
        assert!(!sent("https://api.example.com/a/../b", "GET"));
        assert!(!sent("https://api.example.com/a?q='x'", "GET"));
        assert!(!sent("https://api.example.com/a", "CONNECT"));
        assert!(!sent("https://api.example.com/a", "PROPFIND"));
        let non_ascii = http::Request::get("http://127.0.0.1:1/x")
            .header(
                "x-name",
                http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            )
            .body(Bytes::new())
            .unwrap();
        assert!(encode(&non_ascii, &urls, true).is_none());
    }

    fn request_to_parts(request: http::Request<Bytes>) -> http_types::Request {
        super::request(request, &Urls::default()).unwrap()
    }
}
