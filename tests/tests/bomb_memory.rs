//! A decompression bomb costs bounded memory on both backends: the peak resident set grows by
//! far less than the bomb's decoded size (5 GiB), whichever limit stops it. Its own test
//! binary, so that no other test allocates in this process meanwhile; Linux only (it reads
//! `VmHWM` from `/proc/self/status`).

mod common;

use common::{Backend, config, encoded, gzip_at};
use egress_core::BodyLimit;
use egress_core::Error;
use egress_tests::server::FaultServer;

/// The process's peak resident set, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs is mounted");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM is in /proc/self/status")
}

#[test]
fn a_gzip_bomb_costs_bounded_memory_on_both_backends() {
    let member = gzip_at(&vec![0u8; 1 << 20], flate2::Compression::best());
    // 5 000 members of 1 MiB of zeros: ~5 GiB decoded from ~5 MB.
    let wire: Vec<u8> = member
        .iter()
        .copied()
        .cycle()
        .take(member.len() * 5_000)
        .collect();
    let server = FaultServer::start(FaultServer::always(encoded("gzip", wire)));
    for b in Backend::ALL {
        // The ratio stops it; then, with the ratio out of the way, the decoded-size limit.
        for (ratio, expected) in [(100, BodyLimit::Ratio), (u32::MAX, BodyLimit::Decoded)] {
            let before = peak_rss_kib();
            let config = config(&server.url("")).with_max_decompression_ratio(ratio);
            let error = b.run(async { b.client(config).get("/x").send().await.unwrap_err() });
            assert!(
                matches!(&error, Error::BodyTooLarge { exceeded, .. } if *exceeded == expected),
                "{b:?}: {error:?}"
            );
            let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
            // The body limit is 10 MiB: decoded output, a stage's buffer and the wire chunks
            // stay within a few times that, never near the 5 GiB the bomb expands to.
            assert!(
                grown_mib < 64,
                "{b:?}, ratio {ratio}: peak RSS grew by {grown_mib} MiB"
            );
        }
    }
}
