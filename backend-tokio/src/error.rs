//! Mapping hyper, hyper-util, rustls and IO errors into the core's [`TransportErrorKind`],
//! keeping the native error as the source.

use std::error::Error as StdError;
use std::io;

use egress_core::{TransportError, TransportErrorKind as Kind};

use crate::connector::BoxError;

/// The connector's own timeout, so that it can be told apart from every other failure.
#[derive(Debug)]
pub(crate) struct ConnectTimedOut;

impl std::fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect timed out")
    }
}

impl StdError for ConnectTimedOut {}

/// Where in the attempt the error happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Before the response head.
    Head,
    /// While reading the body.
    Body,
}

/// Every error in the source chain, descending into the error an `io::Error` wraps (whose own
/// `source()` skips it).
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        if out.len() > 32 {
            break; // a cyclic or absurdly deep chain
        }
        out.push(e);
        next = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    out
}

fn classify(error: &(dyn StdError + 'static), connect: bool, stage: Stage) -> Kind {
    for e in chain(error) {
        if e.is::<ConnectTimedOut>() {
            return Kind::ConnectTimeout;
        }
        if e.is::<rustls::Error>() {
            return Kind::Tls;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return Kind::ConnectRefused,
                io::ErrorKind::TimedOut if connect => return Kind::ConnectTimeout,
                io::ErrorKind::TimedOut => return Kind::ReadTimeout,
                // rustls reports handshake failures as InvalidData wrapping its own error: keep
                // walking the chain to find it.
                io::ErrorKind::InvalidData
                    if io
                        .get_ref()
                        .is_some_and(|inner| inner.is::<rustls::Error>()) =>
                {
                    return Kind::Tls;
                }
                io::ErrorKind::InvalidData if stage == Stage::Body => return Kind::Protocol,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => {
                    return match (connect, stage) {
                        (true, _) => Kind::Connect,
                        (false, Stage::Head) => Kind::ClosedBeforeResponse,
                        (false, Stage::Body) => Kind::ClosedDuringBody,
                    };
                }
                _ => {}
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || h.is_user() {
                return Kind::Protocol;
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return match stage {
                    Stage::Head => Kind::ClosedBeforeResponse,
                    Stage::Body => Kind::ClosedDuringBody,
                };
            }
            if h.is_timeout() {
                return Kind::ReadTimeout;
            }
        }
    }
    if connect {
        // hyper-util names resolver failures "dns error" and keeps the resolver's error private.
        if chain(error)
            .iter()
            .any(|e| e.to_string().starts_with("dns error"))
        {
            return Kind::Dns;
        }
        return Kind::Connect;
    }
    match stage {
        Stage::Head => Kind::Other,
        Stage::Body => Kind::ClosedDuringBody,
    }
}

/// Maps an error of `Client::request` (connect, write, or waiting for the head).
pub(crate) fn from_client(error: hyper_util::client::legacy::Error) -> TransportError {
    let kind = classify(&error, error.is_connect(), Stage::Head);
    TransportError::new(kind, error)
}

/// Maps a failure to open a connection (the connector's, or hyper's handshake).
pub(crate) fn from_connect(error: BoxError) -> TransportError {
    let kind = classify(&*error, true, Stage::Head);
    TransportError::new(kind, error)
}

/// Maps an error of sending on an open connection (writing, or waiting for the head).
pub(crate) fn from_send(error: hyper::Error) -> TransportError {
    let kind = classify(&error, false, Stage::Head);
    TransportError::new(kind, error)
}

/// Maps an error while reading the body.
pub(crate) fn from_body(error: hyper::Error) -> TransportError {
    let kind = classify(&error, false, Stage::Body);
    TransportError::new(kind, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: io::ErrorKind) -> Box<dyn StdError + Send + Sync> {
        Box::new(io::Error::from(kind))
    }

    #[test]
    fn refused_connections_and_connect_timeouts_are_never_sent_kinds() {
        assert_eq!(
            classify(&*io(io::ErrorKind::ConnectionRefused), true, Stage::Head),
            Kind::ConnectRefused
        );
        assert_eq!(
            classify(&ConnectTimedOut, true, Stage::Head),
            Kind::ConnectTimeout
        );
        assert_eq!(
            classify(&*io(io::ErrorKind::ConnectionReset), true, Stage::Head),
            Kind::Connect
        );
    }

    #[test]
    fn resets_after_connecting_depend_on_the_stage() {
        assert_eq!(
            classify(&*io(io::ErrorKind::ConnectionReset), false, Stage::Head),
            Kind::ClosedBeforeResponse
        );
        assert_eq!(
            classify(&*io(io::ErrorKind::ConnectionReset), false, Stage::Body),
            Kind::ClosedDuringBody
        );
    }

    #[test]
    fn a_rustls_error_inside_an_io_error_is_a_tls_failure() {
        let inner = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::General("bad cert".into()),
        );
        assert_eq!(classify(&inner, true, Stage::Head), Kind::Tls);
    }
}
