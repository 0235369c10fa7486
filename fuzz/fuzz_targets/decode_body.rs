//! libFuzzer entry point for `egress_fuzz::decode_body`; the body and its assertions live in
//! `src/bodies.rs`, which the root workspace's corpus replay test also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egress_fuzz::decode_body(data));
