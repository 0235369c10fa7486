//! Cross-crate tests of egress.
//!
//! Today this package holds the checks that keep the core pure (its `tests/`). The loopback fault
//! server and the cross-backend parity suite land here with the backends; the library part of
//! this package is where that server will live, so that backends can use it as a
//! dev-dependency.
