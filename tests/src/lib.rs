//! Cross-crate tests of egress.
