//! Mapping the errors of a caller's surf client (surf, async-h1, native-tls, IO) into the
//! core's [`TransportErrorKind`], keeping the native error as the source. The table is the
//! transport's ([`egress_transport::error_kind`]); only what is surf's own is decided here.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use egress_core::{TransportError, TransportErrorKind as Kind};
use egress_transport::{Stage, error_kind};

use crate::convert::ConvertError;

/// The messages async-h1 gives when the connection ends before a response head: the request
/// may have been read by the server.
const CLOSED_BEFORE_HEAD: [&str; 2] = ["connection closed", "empty response"];

fn classify(error: &(dyn StdError + 'static), stage: Stage) -> Kind {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<native_tls::Error>() {
            return Kind::Tls;
        }
        if e.is::<ConvertError>() {
            return Kind::Protocol;
        }
        if stage == Stage::Head && CLOSED_BEFORE_HEAD.contains(&e.to_string().as_str()) {
            return Kind::ClosedBeforeResponse;
        }
        next = e.source();
    }
    match error_kind(error, stage) {
        // Past connecting, what is left is the response head being refused (malformed, over
        // 8 KiB, not HTTP/1.1, conflicting framing, a status http-types does not know).
        Kind::Other if stage == Stage::Head => Kind::Protocol,
        kind => kind,
    }
}

/// A `surf::Error` as a standard error whose source is the error surf carries, so that the
/// chain reaches the native error itself (`io::Error`, `native_tls::Error`, ...): converting
/// surf's error into a box would hide it behind anyhow's wrapper type.
struct SendError(surf::Error);

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Logs often show only the outermost message: make it the real one.
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for SendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let inner: &(dyn StdError + Send + Sync + 'static) = self.0.as_ref();
        Some(inner)
    }
}

/// Maps an error of `surf::Client::send` (connect, write, or waiting for the head).
pub(crate) fn from_send(error: surf::Error) -> TransportError {
    let error = SendError(error);
    let kind = classify(&error, Stage::Head);
    TransportError::new(kind, error)
}

/// Maps an error while reading the body.
pub(crate) fn from_body(error: io::Error) -> TransportError {
    let kind = classify(&error, Stage::Body);
    TransportError::new(kind, error)
}

/// A response head the `http` / `http-types` conversion cannot hold: the peer's fault.
pub(crate) fn from_convert(error: ConvertError) -> TransportError {
    TransportError::new(Kind::Protocol, error)
}

/// A request the `http` / `http-types` conversion cannot hold: never sent.
pub(crate) fn from_request_convert(error: ConvertError) -> TransportError {
    TransportError::new(Kind::Unsupported, error)
}

/// The connection closed before the body reached its declared `Content-Length`.
#[derive(Debug)]
pub(crate) struct Truncated {
    pub(crate) declared: u64,
    pub(crate) received: u64,
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the body ended after {} of its {} declared bytes",
            self.received, self.declared
        )
    }
}

impl StdError for Truncated {}

/// A response framed by neither `Content-Length` nor chunked encoding (a body delimited by
/// closing the connection): not supported (async-h1 would silently report it as empty).
#[derive(Debug)]
pub(crate) struct CloseDelimited;

impl fmt::Display for CloseDelimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a body delimited by closing the connection is not supported")
    }
}

impl StdError for CloseDelimited {}

/// A panic inside surf, async-h1 or http-types while handling the response (they `unwrap` on
/// some server input, such as non-ASCII header values).
#[derive(Debug)]
pub(crate) struct Panicked(pub(crate) String);

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the HTTP stack panicked on the response: {}", self.0)
    }
}

impl StdError for Panicked {}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    fn send_error(error: impl Into<surf::Error>) -> Kind {
        from_send(error.into()).kind()
    }

    #[test]
    fn a_refused_connect_through_surf_is_never_sent() {
        let kind = send_error(io(io::ErrorKind::ConnectionRefused));
        assert_eq!(kind, Kind::ConnectRefused);
        assert!(!kind.may_have_been_sent());
    }

    #[test]
    fn resets_after_connecting_depend_on_the_stage() {
        assert_eq!(
            send_error(io(io::ErrorKind::ConnectionReset)),
            Kind::ClosedBeforeResponse
        );
        assert_eq!(
            from_body(io(io::ErrorKind::ConnectionReset)).kind(),
            Kind::ClosedDuringBody
        );
        assert_eq!(
            from_body(io(io::ErrorKind::UnexpectedEof)).kind(),
            Kind::ClosedDuringBody
        );
    }

    #[test]
    fn async_h1s_closed_before_the_head_messages_are_resets_and_the_rest_protocol_errors() {
        assert_eq!(
            send_error(surf::Error::from_str(500, "connection closed")),
            Kind::ClosedBeforeResponse
        );
        assert_eq!(
            send_error(surf::Error::from_str(500, "Malformed HTTP head")),
            Kind::Protocol
        );
    }

    #[test]
    fn a_bad_chunk_is_a_protocol_error() {
        let bad = io::Error::new(io::ErrorKind::InvalidData, "Unexpected byte 122");
        assert_eq!(from_body(bad).kind(), Kind::Protocol);
    }

    #[test]
    fn the_native_error_stays_the_source() {
        let error = from_send(io(io::ErrorKind::ConnectionReset).into());
        let source = std::error::Error::source(&error).expect("a source");
        let mut next = Some(source);
        let mut found = false;
        while let Some(e) = next {
            found |= e.downcast_ref::<io::Error>().map(io::Error::kind)
                == Some(io::ErrorKind::ConnectionReset);
            next = e.source();
        }
        assert!(found, "{source:?}");
    }
}
