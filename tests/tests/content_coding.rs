//! Compressed responses on both backends (RFC 9110 8.4 and 12.5.3): every coding the build
//! decodes, stacked codings, a coding the server sends unasked, an unknown coding, corrupt and
//! truncated streams, a decompression bomb, and `Content-Encoding` on responses without a body.

#[macro_use]
mod common;

use std::io::Write;

use common::{Backend, config, encoded, gzip};
use egress_core::BodyLimit;
use egress_core::{Error, StopReason, TransportErrorKind};
use egress_tests::server::{Fault, FaultServer, Reply};

const ENTITY: &str = r#"{"id":"7","items":[{"id":"a"}]}"#;

#[derive(Debug, serde::Deserialize)]
struct Entity {
    id: String,
}

fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => gzip(data),
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                e.write_all(data).unwrap();
            }
            out
        }
        "zstd" => {
            let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
            e.include_checksum(true).unwrap();
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        other => panic!("no encoder for {other}"),
    }
}

fn kind(error: &Error) -> Option<TransportErrorKind> {
    match error {
        Error::Transport { source, .. } => Some(source.kind()),
        _ => None,
    }
}

mod scenarios {
    use super::*;

    /// RFC 9110 12.5.3: the request lists what the client decodes; each coding decodes.
    pub(super) async fn every_coding_is_asked_for_and_decoded(b: Backend) {
        for coding in ["gzip", "deflate", "br", "zstd"] {
            let server = FaultServer::start(FaultServer::always(encoded(
                coding,
                encode(coding, ENTITY.as_bytes()),
            )));
            let response = b
                .client(config(&server.url("")))
                .get("/x")
                .send()
                .await
                .unwrap();
            assert_eq!(response.json::<Entity>().unwrap().id, "7", "{coding}");
            assert_eq!(response.headers()["content-encoding"], coding);
            assert!(response.headers().get("content-length").is_none());
            let seen = server.requests();
            assert_eq!(
                seen[0].header("accept-encoding"),
                Some("gzip, deflate, br, zstd")
            );
        }
    }

    /// RFC 9110 8.4: codings are listed in the order applied, undone in reverse.
    pub(super) async fn stacked_codings_are_undone_in_reverse_order(b: Backend) {
        let wire = encode("br", &encode("gzip", ENTITY.as_bytes()));
        let server = FaultServer::start(FaultServer::always(encoded("gzip, br", wire)));
        let response = b
            .client(config(&server.url("")))
            .get("/x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
    }

    /// Servers and CDNs compress without being asked (the caller asked for `identity`): a
    /// coding the client can decode is decoded all the same.
    pub(super) async fn a_coding_the_server_sends_unasked_is_decoded(b: Backend) {
        let server = FaultServer::start(FaultServer::always(encoded(
            "gzip",
            gzip(ENTITY.as_bytes()),
        )));
        let response = b
            .client(config(&server.url("")))
            .get("/x")
            .header("accept-encoding", "identity")
            .send()
            .await
            .unwrap();
        assert_eq!(response.json::<Entity>().unwrap().id, "7");
        assert_eq!(
            server.requests()[0].header("accept-encoding"),
            Some("identity")
        );
    }

    /// With decoding off the client asks for nothing, and an encoded body is a typed error
    /// naming the coding, never `InvalidUtf8 at byte 1`.
    pub(super) async fn a_client_that_does_not_decode_refuses_an_encoded_body_typed(b: Backend) {
        let server = FaultServer::start(FaultServer::always(encoded(
            "gzip",
            gzip(ENTITY.as_bytes()),
        )));
        let config = config(&server.url("")).with_decompress(false);
        let error = b.client(config).get("/x").send().await.unwrap_err();
        assert_eq!(kind(&error), Some(TransportErrorKind::Decode), "{error:?}");
        assert!(format!("{:?}", error).contains("gzip"), "{error:?}");
        assert!(server.requests()[0].header("accept-encoding").is_none());
    }

    /// RFC 9110 8.4: a coding the client does not know is an error naming it; sent, never
    /// retried.
    pub(super) async fn an_unknown_coding_is_a_typed_error_naming_it(b: Backend) {
        let server = FaultServer::start(FaultServer::always(encoded(
            "compress",
            b"\x1f\x9d\x90garbage".to_vec(),
        )));
        let error = b
            .client(config(&server.url("")))
            .get("/x")
            .send()
            .await
            .unwrap_err();
        assert_eq!(kind(&error), Some(TransportErrorKind::Decode), "{error:?}");
        assert!(format!("{error:?}").contains("compress"), "{error:?}");
        assert_eq!(error.stop_reason(), Some(StopReason::NotRetryable));
        assert!(error.may_have_been_sent());
        assert_eq!(server.requests().len(), 1);
    }

    /// A corrupt stream (RFC 1952's CRC32 wrong) and a truncated one are decoding errors,
    /// never retried as a transport failure.
    pub(super) async fn corrupt_and_truncated_streams_are_typed_and_not_retried(b: Backend) {
        let good = gzip(ENTITY.as_bytes());
        let mut corrupt = good.clone();
        let n = corrupt.len();
        corrupt[n - 8] ^= 0xff;
        let truncated = good[..good.len() - 6].to_vec();
        for wire in [corrupt, truncated] {
            let server = FaultServer::start(FaultServer::always(encoded("gzip", wire)));
            let error = b
                .client(config(&server.url("")))
                .get("/x")
                .send()
                .await
                .unwrap_err();
            assert_eq!(kind(&error), Some(TransportErrorKind::Decode), "{error:?}");
            assert_eq!(error.stop_reason(), Some(StopReason::NotRetryable));
            assert_eq!(server.requests().len(), 1);
        }
    }

    /// A decompression bomb: 5 000 gzip members (RFC 1952 2.2) of 1 MiB of zeros each, about
    /// 5 GiB decoded from about 5 MB on the wire (within the 10 MiB body limit), is refused by
    /// the ratio limit early, and the connection is not reused.
    pub(super) async fn a_gzip_bomb_is_refused_by_the_ratio_limit(b: Backend) {
        let member = gzip(&vec![0u8; 1 << 20]);
        let wire: Vec<u8> = member
            .iter()
            .copied()
            .cycle()
            .take(member.len() * 5_000)
            .collect();
        let server = FaultServer::start(FaultServer::script([
            encoded("gzip", wire),
            Reply::json(200, ENTITY),
        ]));
        let client = b.client(config(&server.url("")));
        let error = client.get("/x").send().await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::BodyTooLarge {
                    exceeded: BodyLimit::Ratio,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.attempts(), 1);
        client.get("/x").send().await.unwrap();
        let seen = server.requests();
        assert_ne!(seen[0].connection, seen[1].connection, "not reused");
    }

    /// RFC 9112 6.3 item 1: responses to HEAD, and 204 and 304, have no body whatever their
    /// `Content-Encoding`: nothing to decode, no error.
    pub(super) async fn content_encoding_on_a_response_without_a_body_is_no_error(b: Backend) {
        let server = FaultServer::start(FaultServer::script([
            Reply::status(204)
                .header("content-encoding", "gzip")
                .with_fault(Fault::NoBody),
            Reply::status(200)
                .header("content-encoding", "br")
                .header("content-length", "4000")
                .with_fault(Fault::NoBody),
            Reply::status(304)
                .header("content-encoding", "zstd")
                .with_fault(Fault::NoBody),
        ]));
        let client = b.client(config(&server.url("")));
        let response = client.get("/x").send().await.unwrap();
        assert_eq!(response.status(), 204);
        assert!(response.body().is_empty());
        let response = client
            .request(http::Method::HEAD, "/x")
            .send()
            .await
            .unwrap();
        assert!(response.body().is_empty());
        let error = client.get("/x").send().await.unwrap_err();
        assert_eq!(error.status().map(|s| s.as_u16()), Some(304), "{error:?}");
    }
}

parity!(
    every_coding_is_asked_for_and_decoded,
    stacked_codings_are_undone_in_reverse_order,
    a_coding_the_server_sends_unasked_is_decoded,
    a_client_that_does_not_decode_refuses_an_encoded_body_typed,
    an_unknown_coding_is_a_typed_error_naming_it,
    corrupt_and_truncated_streams_are_typed_and_not_retried,
    a_gzip_bomb_is_refused_by_the_ratio_limit,
    content_encoding_on_a_response_without_a_body_is_no_error,
);
