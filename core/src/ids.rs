//! Correlation IDs and idempotency keys: validated header values, minted once per exchange.
//!
//! The core draws no randomness, so a minted ID is a UUID v4 built from 16 bytes the caller
//! supplies ([`CorrelationId::from_random_bytes`]). The base [`Client`](crate::Client) takes
//! those bytes from the backend's [`Entropy`](crate::rt::Entropy) (the operating system's
//! generator); an [`Exchange`](crate::Exchange) driven by hand with no IDs derives them from its
//! seed, which is deterministic and therefore only as unique as the seeds you pick.

use bytes::Bytes;
use http::HeaderValue;
use std::fmt;

/// The longest ID accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

fn check(value: &str, what: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(format!("{what} is longer than {MAX_ID_LEN} bytes"));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{what} contains {c:?}; only visible ASCII is allowed"
        ));
    }
    Ok(())
}

/// The text of a UUID v4 made from `bytes`, written on the stack and moved into the one shared
/// allocation the ID lives in (this runs on every call).
fn uuid_v4(bytes: [u8; 16]) -> Bytes {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text);
    Bytes::from_owner(text)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// It is kept as the header value it is sent as, in one shared allocation: cloning it,
        /// or sending it on every attempt, copies nothing.
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(HeaderValue);

        impl $name {
            /// Validates a caller-supplied value: 1 to 128 bytes of visible ASCII.
            pub fn new(value: impl Into<String>) -> Result<Self, crate::Error> {
                let value = value.into();
                check(&value, $what).map_err(crate::Error::invalid_request)?;
                Ok(Self::from_checked(Bytes::from_owner(value.into_bytes())))
            }

            /// A UUID v4 made from 16 random bytes.
            pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
                Self::from_checked(uuid_v4(bytes))
            }

            fn from_checked(bytes: Bytes) -> Self {
                Self(
                    HeaderValue::from_maybe_shared(bytes)
                        .expect("invariant: IDs are checked to be visible ASCII"),
                )
            }

            /// The value as a string.
            pub fn as_str(&self) -> &str {
                self.0
                    .to_str()
                    .expect("invariant: IDs are checked to be visible ASCII")
            }

            pub(crate) fn header_value(&self) -> HeaderValue {
                self.0.clone()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }
    };
}

id_type!(
    /// The ID that ties every attempt, log line and error of one call together. Sent in the
    /// configured header (default `X-Correlation-ID`).
    CorrelationId,
    "correlation id"
);

id_type!(
    /// The key that lets a server deduplicate a non-idempotent request. Sent in the configured
    /// header (default `Idempotency-Key`), identical on every attempt.
    IdempotencyKey,
    "idempotency key"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_id_is_a_version_4_uuid() {
        let id = CorrelationId::from_random_bytes([7; 16]);
        // 8-4-4-4-12 hex digits; the version nibble is 4.
        assert_eq!(id.as_str().len(), 36);
        assert_eq!(&id.as_str()[14..15], "4");
    }

    #[test]
    fn ids_with_spaces_control_characters_or_no_content_are_rejected() {
        assert!(CorrelationId::new("").is_err());
        assert!(CorrelationId::new("a b").is_err());
        assert!(IdempotencyKey::new("a\r\nb").is_err());
        assert!(IdempotencyKey::new("x".repeat(129)).is_err());
        assert!(IdempotencyKey::new("order-42").is_ok());
    }
}
