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

use std::error::Error as StdError;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use bytes::Bytes;
use surf::http::headers::{CONTENT_TYPE, DATE, HeaderName, HeaderValue};
use surf::http::{self as http_types, Body, Method, Url};

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
    /// `scheme://authority` and its parsed URL.
    last: Mutex<Option<(String, Url)>>,
}

impl Urls {
    pub(crate) fn url(&self, uri: &http::Uri) -> Result<Url, ConvertError> {
        let origin = match (uri.scheme_str(), uri.authority()) {
            (Some(scheme @ ("http" | "https")), Some(authority)) => Some((scheme, authority)),
            _ => None,
        };
        let Some((scheme, authority)) = origin else {
            return parse(uri);
        };
        let same = |key: &str| {
            key.len() == scheme.len() + 3 + authority.as_str().len()
                && key.starts_with(scheme)
                && key[scheme.len()..].starts_with("://")
                && key.ends_with(authority.as_str())
        };
        let cached = {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            last.as_ref()
                .filter(|(key, _)| same(key))
                .map(|(_, url)| url.clone())
        };
        if let Some(mut url) = cached {
            url.set_path(uri.path());
            url.set_query(uri.query());
            return Ok(url);
        }
        let url = parse(uri)?;
        let key = format!("{scheme}://{authority}");
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, url.clone()));
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

    fn request_to_parts(request: http::Request<Bytes>) -> http_types::Request {
        super::request(request, &Urls::default()).unwrap()
    }
}
