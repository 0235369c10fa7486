//! Cross-crate tests of egress, and the loopback fault server both backends test against.
//!
//! The library holds [`server`]: a scriptable HTTP/1.x and HTTP/2 (TLS) server on 127.0.0.1 that
//! misbehaves on request. Backends use this package as a dev-dependency; its own `tests/` hold
//! the checks that keep the core pure, the cross-backend parity suite and the load tests.
//! [`tools`] finds or installs the real programs some tests run beside egress; [`proxy`] runs
//! one of them, tinyproxy, as the outbound proxy of the network-path tests, and [`oauth`] a real
//! OAuth 2.0 authorization server for the token tests.

pub mod oauth;
pub mod proxy;
pub mod server;
pub mod tools;

/// The README's Rust blocks, compiled (and the runnable ones run) as doctests of this crate, so
/// that the examples a new user pastes first cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
