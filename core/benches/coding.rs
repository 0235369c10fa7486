//! Decoding a compressed JSON body with egress-core's streaming decoder, per coding: a
//! 318-byte entity and a 1 MiB list, fed in 16 KiB chunks as a transport would.
//! `cargo bench -p egress-core --bench coding`.

// `criterion_group!` generates a public function without docs.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use egress_core::http::HeaderMap;
use egress_core::rt::{DecodeLimits, Decoding};

fn entity(i: usize) -> String {
    format!(
        r#"{{"id":"e-{i:06}","name":"entity {i}","kind":"widgets","owner":"team-platform","active":true,"tags":["alpha","beta","gamma"],"score":{i}.125,"created":"2026-11-28T10:15:00Z","links":{{"self":"/v1/entities/e-{i:06}"}},"description":"a widget of the platform team, a typical vendor payload of three hundred and eighteen bytes"}}"#
    )
}

fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).expect("in memory");
            e.finish().expect("in memory")
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).expect("in memory");
            e.finish().expect("in memory")
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                e.write_all(data).expect("in memory");
            }
            out
        }
        "zstd" => zstd::encode_all(data, 3).expect("in memory"),
        other => unreachable!("no encoder for {other}"),
    }
}

fn bench(c: &mut Criterion) {
    let small = entity(7);
    let mut large = String::from("[");
    let mut i = 0;
    while large.len() < 1 << 20 {
        if i > 0 {
            large.push(',');
        }
        large.push_str(&entity(i));
        i += 1;
    }
    large.push(']');
    let decoding = Decoding::new(true, DecodeLimits::new(16 << 20));
    for (label, body) in [("318B", small.as_bytes()), ("1MiB", large.as_bytes())] {
        let mut group = c.benchmark_group(format!("decode/{label}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        for coding in ["gzip", "deflate", "br", "zstd"] {
            let wire = encode(coding, body);
            let mut headers = HeaderMap::new();
            headers.insert("content-encoding", coding.parse().expect("a token"));
            group.bench_function(coding, |b| {
                b.iter(|| {
                    let mut decoder = decoding
                        .decoder(&headers)
                        .expect("a known coding")
                        .expect("an encoded body");
                    for chunk in wire.chunks(16 * 1024) {
                        decoder.push(black_box(chunk)).expect("a valid stream");
                    }
                    black_box(decoder.finish().expect("a complete stream"))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
