//! Content decoding (RFC 9110 8.4): every coding, stacked codings, identity, unknown and
//! disabled codings, corrupt and truncated streams, and the limits against decompression
//! bombs, fed in arbitrary chunks.

use std::io::Write;

use egress_core::rt::{DecodeError, DecodeLimits, Decoding};
use egress_core::{BodyLimit, Coding};
use http::HeaderMap;
use proptest::prelude::*;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        e.write_all(data).unwrap();
    }
    out
}

/// With the frame's content checksum (RFC 8878 3.1.1): without it, damaged data may decode
/// to other bytes undetected, as in any format without a checksum.
fn zstd(data: &[u8]) -> Vec<u8> {
    let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    e.include_checksum(true).unwrap();
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => gzip(data),
        Coding::Deflate => zlib(data),
        Coding::Brotli => brotli(data),
        Coding::Zstd => zstd(data),
        other => panic!("no encoder for {other}"),
    }
}

const ALL: [Coding; 4] = [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd];

fn headers(content_encoding: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-encoding", content_encoding.parse().unwrap());
    h
}

fn decoding(limit: u64) -> Decoding {
    Decoding::new(true, DecodeLimits::new(limit))
}

/// Decodes `wire` fed in `chunk`-byte pieces.
fn decode(d: Decoding, coding: &str, wire: &[u8], chunk: usize) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = d.decoder(&headers(coding))?.expect("an encoded body");
    for piece in wire.chunks(chunk.max(1)) {
        decoder.push(piece)?;
    }
    decoder.finish().map(|b| b.to_vec())
}

fn payload() -> Vec<u8> {
    (0..20_000u32)
        .flat_map(|i| format!("{{\"id\":\"{i}\",\"tags\":[\"a\",\"b\"]}},").into_bytes())
        .collect()
}

#[test]
fn every_coding_decodes_whatever_the_chunking() {
    let data = payload();
    for coding in ALL {
        let wire = encode(coding, &data);
        for chunk in [1, 7, 4096, wire.len()] {
            let decoded = decode(decoding(10 << 20), coding.as_str(), &wire, chunk).unwrap();
            assert!(decoded == data, "{coding} in {chunk}-byte chunks");
        }
    }
}

#[test]
fn x_gzip_and_upper_case_tokens_name_gzip() {
    let wire = gzip(b"{}");
    for token in ["x-gzip", "GZIP", " gzip "] {
        assert_eq!(decode(decoding(1 << 20), token, &wire, 3).unwrap(), b"{}");
    }
}

/// RFC 9110 8.4.1.2: "deflate" is the zlib format; raw deflate, which some servers send, is
/// accepted too.
#[test]
fn deflate_accepts_zlib_and_raw_deflate() {
    let data = payload();
    for wire in [zlib(&data), raw_deflate(&data)] {
        assert!(decode(decoding(10 << 20), "deflate", &wire, 100).unwrap() == data);
    }
}

/// RFC 9110 8.4: codings are listed in the order they were applied; undone in reverse.
#[test]
fn stacked_codings_are_undone_in_reverse_order() {
    let data = payload();
    let wire = brotli(&gzip(&data));
    assert!(decode(decoding(10 << 20), "gzip, br", &wire, 1000).unwrap() == data);
    let mut h = HeaderMap::new();
    h.append("content-encoding", "gzip".parse().unwrap());
    h.append("content-encoding", "br".parse().unwrap());
    let mut decoder = decoding(10 << 20).decoder(&h).unwrap().unwrap();
    decoder.push(&wire).unwrap();
    assert!(decoder.finish().unwrap() == data, "as two header lines");
}

#[test]
fn identity_alone_is_no_coding_and_is_skipped_in_a_list() {
    assert!(
        decoding(1 << 20)
            .decoder(&headers("identity"))
            .unwrap()
            .is_none()
    );
    assert!(
        decoding(1 << 20)
            .decoder(&HeaderMap::new())
            .unwrap()
            .is_none()
    );
    let wire = gzip(b"[1]");
    assert_eq!(
        decode(decoding(1 << 20), "identity, gzip", &wire, 2).unwrap(),
        b"[1]"
    );
}

#[test]
fn an_unknown_coding_is_an_error_that_names_it() {
    let error = decoding(1 << 20).decoder(&headers("compress")).unwrap_err();
    assert!(
        matches!(&error, DecodeError::Unknown(name) if name == "compress"),
        "{error:?}"
    );
    assert!(error.to_string().contains("compress"));
}

#[test]
fn a_client_that_does_not_decode_refuses_an_encoded_body_and_asks_for_none() {
    let off = Decoding::new(false, DecodeLimits::new(1 << 20));
    assert!(off.accept_encoding().is_none());
    let error = off.decoder(&headers("gzip")).unwrap_err();
    assert!(matches!(error, DecodeError::NotDecoding(_)), "{error:?}");
}

#[test]
fn the_accept_encoding_lists_every_coding_of_the_build() {
    assert_eq!(
        decoding(1).accept_encoding().unwrap(),
        "gzip, deflate, br, zstd"
    );
}

#[test]
fn a_corrupt_stream_is_a_typed_error_for_every_coding() {
    let data = payload();
    for coding in ALL {
        let mut wire = encode(coding, &data);
        // Damage the middle of the compressed data.
        let middle = wire.len() / 2;
        for b in &mut wire[middle..middle + 8] {
            *b ^= 0x5a;
        }
        let result = decode(decoding(10 << 20), coding.as_str(), &wire, 512);
        assert!(
            matches!(
                result,
                Err(DecodeError::Corrupt { .. } | DecodeError::Truncated(_))
            ),
            "{coding}: {:?}",
            result.map(|d| d.len())
        );
    }
}

#[test]
fn a_gzip_trailer_with_the_wrong_checksum_is_corrupt() {
    let mut wire = gzip(b"{\"a\":1}");
    let n = wire.len();
    wire[n - 8] ^= 0xff; // the CRC32 of RFC 1952 2.3.1
    let error = decode(decoding(1 << 20), "gzip", &wire, 3).unwrap_err();
    assert!(
        matches!(
            error,
            DecodeError::Corrupt {
                coding: Coding::Gzip,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_truncated_stream_is_a_typed_error_for_every_coding() {
    let data = payload();
    for coding in ALL {
        let wire = encode(coding, &data);
        let cut = &wire[..wire.len() * 2 / 3];
        let result = decode(decoding(10 << 20), coding.as_str(), cut, 512);
        assert!(
            matches!(
                result,
                Err(DecodeError::Truncated(c)) if c == coding
            ),
            "{coding}: {:?}",
            result.map(|d| d.len())
        );
    }
}

/// A decompression bomb: 64 MiB of zeros are a few tens of KiB on the wire.
#[test]
fn a_bomb_stops_at_the_decoded_limit_or_the_ratio() {
    let zeros = vec![0u8; 64 << 20];
    for coding in ALL {
        let wire = encode(coding, &zeros);
        // The ratio (100:1 past 1 MiB) stops it long before 64 MiB.
        let error = decode(decoding(1 << 30), coding.as_str(), &wire, 16 * 1024).unwrap_err();
        assert!(
            matches!(error, DecodeError::TooLarge(BodyLimit::Ratio)),
            "{coding}: {error:?}"
        );
        // With no ratio limit to speak of, the decoded limit stops it.
        let mut limits = DecodeLimits::new(4 << 20);
        limits.max_ratio = u32::MAX;
        let error = decode(
            Decoding::new(true, limits),
            coding.as_str(),
            &wire,
            16 * 1024,
        )
        .unwrap_err();
        assert!(
            matches!(error, DecodeError::TooLarge(BodyLimit::Decoded)),
            "{coding}: {error:?}"
        );
    }
}

#[test]
fn a_body_within_the_first_mib_is_never_held_to_the_ratio() {
    let zeros = vec![0u8; 900 * 1024];
    for coding in ALL {
        let wire = encode(coding, &zeros);
        assert!(
            wire.len() * 100 < zeros.len(),
            "{coding} compresses zeros well"
        );
        assert_eq!(
            decode(decoding(10 << 20), coding.as_str(), &wire, 4096)
                .unwrap()
                .len(),
            zeros.len()
        );
    }
}

#[test]
fn decode_all_leaves_an_empty_body_alone_and_drops_the_encoded_length() {
    let d = decoding(1 << 20);
    // A 204, 304 or a response to HEAD has no body whatever its Content-Encoding.
    let mut h = headers("gzip");
    assert!(
        d.decode_all(&mut h, bytes::Bytes::new())
            .unwrap()
            .is_empty()
    );
    let wire = gzip(b"{\"ok\":true}");
    let mut h = headers("gzip");
    h.insert("content-length", wire.len().into());
    let body = d.decode_all(&mut h, wire.into()).unwrap();
    assert_eq!(&body[..], b"{\"ok\":true}");
    assert!(h.get("content-length").is_none());
    assert_eq!(
        h["content-encoding"], "gzip",
        "how it travelled stays visible"
    );
}

proptest! {
    #[test]
    fn any_chunking_of_any_body_decodes_to_the_same_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(1usize..300, 1..20),
        coding in 0usize..4,
    ) {
        let coding = ALL[coding];
        let wire = encode(coding, &data);
        let mut decoder = decoding(1 << 20).decoder(&headers(coding.as_str())).unwrap().unwrap();
        let mut rest = &wire[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            decoder.push(&rest[..n]).unwrap();
            rest = &rest[n..];
            i += 1;
        }
        prop_assert_eq!(decoder.finish().unwrap().to_vec(), data);
    }

    #[test]
    fn arbitrary_bytes_under_any_coding_list_never_panic(
        wire in proptest::collection::vec(any::<u8>(), 0..2048),
        list in proptest::collection::vec(0usize..6, 0..3),
    ) {
        let names = ["gzip", "deflate", "br", "zstd", "identity", "x-unknown"];
        let value: Vec<&str> = list.iter().map(|&i| names[i]).collect();
        let mut h = HeaderMap::new();
        if !value.is_empty() {
            h.insert("content-encoding", value.join(", ").parse().unwrap());
        }
        let _ = decoding(1 << 20).decode_all(&mut h, wire.into());
    }
}
