//! Every `http` <-> `http-types` conversion of this crate, and nothing else: the core speaks
//! `http` 1.x, surf and async-h1 speak `http-types` 2.x.
//!
//! Requests: the URL goes through `url::Url` (which normalises it as surf would), the method
//! by name, headers value by value (`http-types` only holds ASCII values; others are refused rather
//! than altered), the body without copying. `http-types` would add a `Content-Type` the caller
//! did not ask for; it is removed again. Responses: status, version and headers; the `Date`
//! header async-h1 makes up when the server sent none is dropped, so that the core never
//! mistakes it for the server's clock.
//!

use std::error::Error as StdError;
use std::fmt;
use std::str::FromStr;

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

/// `http::Uri` to `url::Url`.
fn parse(uri: &http::Uri) -> Result<Url, ConvertError> {
    Url::parse(&uri.to_string())
        .map_err(|e| refuse(format!("the request URI is not an absolute URL: {e}")))
}

/// `http::Request` to `http_types::Request`.
pub(crate) fn request(request: http::Request<Bytes>) -> Result<http_types::Request, ConvertError> {
    let (parts, body) = request.into_parts();
    let url = parse(&parts.uri)?;
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
        assert!(super::request(request).is_err());
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

    fn request_to_parts(request: http::Request<Bytes>) -> http_types::Request {
        super::request(request).unwrap()
    }
}
