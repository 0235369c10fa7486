//! The one mapping of hyper, connector and IO error chains into the core's
//! [`TransportErrorKind`], for both backends. The native error stays the source.

use std::error::Error as StdError;
use std::io;

use egress_core::{TransportError, TransportErrorKind as Kind};

use crate::rt::{ConnectError, ConnectStep};

/// Where in the attempt an error happened, for [`error_kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Opening the connection (TCP, TLS, hyper's handshake): nothing was sent.
    Connect,
    /// Writing the request or waiting for the response head.
    Head,
    /// Reading the body.
    Body,
}

/// Every error in the source chain, descending into the error an `io::Error` wraps (whose own
/// `source()` skips it).
fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(error);
    std::iter::from_fn(move || {
        let e = next?;
        next = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
        Some(e)
    })
    // A cyclic or absurdly deep chain stops here.
    .take(32)
}

fn closed(stage: Stage) -> Kind {
    match stage {
        Stage::Connect => Kind::Connect,
        Stage::Head => Kind::ClosedBeforeResponse,
        Stage::Body => Kind::ClosedDuringBody,
    }
}

/// The kind of a failure at `stage`, read from its whole source chain (descending into the
/// errors `io::Error`s wrap): a [`ConnectError`]'s step, an `io::ErrorKind`, or what a
/// `hyper::Error` says. This transport maps every error with it; a transport of another
/// HTTP stack (egress-async-std's surf path) uses it too, so that one table decides.
pub fn error_kind(error: &(dyn StdError + 'static), stage: Stage) -> Kind {
    // What a hyper "closed" error says, unless an error below it says more.
    let mut closed_by_hyper = None;
    for e in chain(error) {
        if let Some(connect) = e.downcast_ref::<ConnectError>() {
            match connect.step() {
                ConnectStep::Resolve => return Kind::Dns,
                ConnectStep::Tls => return Kind::Tls,
                ConnectStep::Tunnel if connect.proxy_status().is_some() => {
                    return Kind::ProxyRefused;
                }
                ConnectStep::Tcp | ConnectStep::Tunnel => {}
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return Kind::ConnectRefused,
                io::ErrorKind::TimedOut if stage == Stage::Connect => return Kind::ConnectTimeout,
                io::ErrorKind::TimedOut => return Kind::ReadTimeout,
                // hyper reports malformed framing (a bad chunk size, a chunk longer than its
                // size) as InvalidInput or InvalidData: the peer broke the protocol, which no
                // retry mends (RFC 9112 7.1).
                io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
                    if stage != Stage::Connect =>
                {
                    return Kind::Protocol;
                }
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => return closed(stage),
                _ => {}
            }
        }
        // An HTTP/2 server that refused the stream before processing it, by resetting it with
        // REFUSED_STREAM or by a GOAWAY whose last stream identifier is below it: h2 gives a
        // stream a remote GOAWAY error only then (a stream at or below that identifier that
        // the connection's end cuts short gets a broken pipe). RFC 9113 8.7: safe to retry.
        // Only before the response head: a server that answered has processed the request.
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if stage == Stage::Head && h2.is_remote() && refused_unprocessed(h2) {
                return Kind::NotProcessed;
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || h.is_user() {
                return Kind::Protocol;
            }
            if h.is_timeout() {
                return Kind::ReadTimeout;
            }
            // Keep walking: an IO error below says more (a reset, bad framing).
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                closed_by_hyper = Some(closed(stage));
            }
        }
    }
    if let Some(kind) = closed_by_hyper {
        return kind;
    }
    match stage {
        Stage::Connect => Kind::Connect,
        Stage::Head => Kind::Other,
        Stage::Body => Kind::ClosedDuringBody,
    }
}

/// Whether an HTTP/2 error says the peer did not process the stream (RFC 9113 8.7).
fn refused_unprocessed(error: &h2::Error) -> bool {
    error.is_go_away() || (error.is_reset() && error.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// Maps a connector's failure to open a connection.
pub(crate) fn from_connect(error: ConnectError) -> TransportError {
    let kind = error_kind(&error, Stage::Connect);
    let proxy = error.is_proxy().then(|| error.proxy_status());
    let error = TransportError::new(kind, error);
    match proxy {
        Some(status) => error.at_proxy(status),
        None => error,
    }
}

/// Maps a failure of hyper's handshake on a new connection.
pub(crate) fn from_handshake(error: hyper::Error) -> TransportError {
    let kind = error_kind(&error, Stage::Connect);
    TransportError::new(kind, error)
}

/// Maps an error of sending on an open connection (writing, or waiting for the head).
pub(crate) fn from_send(error: hyper::Error) -> TransportError {
    let kind = error_kind(&error, Stage::Head);
    TransportError::new(kind, error)
}

/// Maps an error while reading the body.
pub(crate) fn from_body(error: hyper::Error) -> TransportError {
    let kind = error_kind(&error, Stage::Body);
    TransportError::new(kind, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    #[test]
    fn refused_and_failed_connects_are_never_sent_kinds() {
        let refused = ConnectError::new(ConnectStep::Tcp, io(io::ErrorKind::ConnectionRefused));
        assert_eq!(error_kind(&refused, Stage::Connect), Kind::ConnectRefused);
        let reset = ConnectError::new(ConnectStep::Tcp, io(io::ErrorKind::ConnectionReset));
        assert_eq!(error_kind(&reset, Stage::Connect), Kind::Connect);
        let dns = ConnectError::new(ConnectStep::Resolve, io(io::ErrorKind::Other));
        assert_eq!(error_kind(&dns, Stage::Connect), Kind::Dns);
        let tls = ConnectError::new(ConnectStep::Tls, io(io::ErrorKind::InvalidData));
        assert_eq!(error_kind(&tls, Stage::Connect), Kind::Tls);
        for kind in [Kind::ConnectRefused, Kind::Connect, Kind::Dns, Kind::Tls] {
            assert!(!kind.may_have_been_sent());
        }
    }

    #[test]
    fn resets_after_connecting_depend_on_the_stage() {
        let reset = io(io::ErrorKind::ConnectionReset);
        assert_eq!(error_kind(&reset, Stage::Head), Kind::ClosedBeforeResponse);
        assert_eq!(error_kind(&reset, Stage::Body), Kind::ClosedDuringBody);
        let eof = io(io::ErrorKind::UnexpectedEof);
        assert_eq!(error_kind(&eof, Stage::Body), Kind::ClosedDuringBody);
    }

    /// RFC 9112 7.1: a chunk size that is not hex, or a chunk longer than its size, is a
    /// framing violation; hyper reports it as InvalidInput (bad size line) or InvalidData.
    #[test]
    fn malformed_framing_is_a_protocol_error_not_a_close() {
        for kind in [io::ErrorKind::InvalidInput, io::ErrorKind::InvalidData] {
            let wrapped = io::Error::new(kind, "invalid chunk size line");
            assert_eq!(error_kind(&wrapped, Stage::Body), Kind::Protocol);
            assert_eq!(error_kind(&wrapped, Stage::Head), Kind::Protocol);
        }
    }

    /// RFC 9110 9.3.6: any 2xx to CONNECT opens the tunnel; anything else refuses it, such as
    /// 407 (15.5.8): final, never sent to the origin, and said to be the proxy's.
    #[test]
    fn a_proxy_refusing_the_tunnel_is_a_final_proxy_error() {
        let refused =
            ConnectError::refused_by_proxy(http::StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        let error = from_connect(refused);
        assert_eq!(error.kind(), Kind::ProxyRefused);
        assert!(!error.may_have_been_sent());
        assert!(error.is_proxy());
        assert_eq!(
            error.proxy_status(),
            Some(http::StatusCode::PROXY_AUTHENTICATION_REQUIRED)
        );
        let down =
            ConnectError::new(ConnectStep::Tcp, io(io::ErrorKind::ConnectionRefused)).at_proxy();
        let error = from_connect(down);
        assert_eq!(error.kind(), Kind::ConnectRefused);
        assert!(error.is_proxy() && error.proxy_status().is_none());
        assert!(error.to_string().starts_with("proxy: "), "{error}");
    }

    #[test]
    fn an_error_wrapped_in_an_io_error_is_found() {
        let inner = ConnectError::new(ConnectStep::Tls, "bad certificate");
        let outer = io::Error::other(inner);
        assert_eq!(error_kind(&outer, Stage::Connect), Kind::Tls);
    }
}
