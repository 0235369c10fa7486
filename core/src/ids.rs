//! Correlation IDs and idempotency keys: validated header values, minted once per exchange.
//!
//! The core draws no randomness, so a minted ID is a UUID v4 built from 16 bytes the caller
//! supplies ([`CorrelationId::from_random_bytes`]). The base [`Client`](crate::Client) takes
//! those bytes from the backend's [`Entropy`](crate::rt::Entropy) (the operating system's
//! generator); an [`Exchange`](crate::Exchange) driven by hand with no IDs derives them from its
//! seed, which is deterministic and therefore only as unique as the seeds you pick.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;

/// The longest ID accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A caller-supplied ID that cannot be sent: empty, longer than 128 bytes, or not visible ASCII.
/// Converts into [`Error::InvalidRequest`](crate::Error::InvalidRequest), so `?` works in code
/// that returns egress errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(String);

impl InvalidId {
    /// What is wrong with the value.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

fn check(value: &str, what: &str) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(InvalidId(format!("{what} is empty")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(InvalidId(format!(
            "{what} is longer than {MAX_ID_LEN} bytes"
        )));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(InvalidId(format!(
            "{what} contains {c:?}; only visible ASCII is allowed"
        )));
    }
    Ok(())
}

/// The text of a UUID v4 made from `bytes`, written on the stack and copied once into its
/// `Arc` (this runs on every call).
fn uuid_v4(bytes: [u8; 16]) -> Arc<str> {
    let mut text = uuid::Uuid::encode_buffer();
    Arc::from(
        &*uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .encode_lower(&mut text),
    )
}

/// An ID's text as the bytes of a header value, sharing the ID's allocation.
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates a caller-supplied value: 1 to 128 bytes of visible ASCII.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                check(&value, $what)?;
                Ok(Self(value.into()))
            }

            /// A UUID v4 made from 16 random bytes.
            pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
                Self(uuid_v4(bytes))
            }

            /// The value as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The header value to send: it shares this ID's text (one small allocation for
            /// its reference count, none for the text), and every attempt's clone of it is
            /// free. It is marked sensitive: over HTTP/2 (and HTTP/3) a value that
            /// never repeats must not enter the connection's HPACK table (RFC 7541 7.1.3: it
            /// would evict the values that do repeat and cost every later request a search).
            pub(crate) fn header_value(&self) -> HeaderValue {
                let mut value =
                    HeaderValue::from_maybe_shared(Bytes::from_owner(SharedText(self.0.clone())))
                        .expect("invariant: IDs are checked to be visible ASCII");
                value.set_sensitive(true);
                value
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
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
