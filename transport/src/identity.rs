//! The client identity of mutual TLS, shared by both backends: a PEM certificate chain and
//! key, or a PKCS#12 archive, from configuration (paths) or code (bytes). The key and the
//! archive's password are held as secrets (zeroed on drop, never shown).

use std::fmt;
use std::path::Path;

use egress_core::ConfigError;
use egress_core::TlsConfig;
use egress_core::secrecy::{ExposeSecret, SecretSlice, SecretString};

/// A client certificate chain and its private key, presented to servers that ask for one.
///
/// ```
/// use egress_transport::ClientIdentity;
///
/// let identity = ClientIdentity::from_pem(
///     b"-----BEGIN CERTIFICATE-----\n...".to_vec(),
///     b"-----BEGIN PRIVATE KEY-----\nsecret...".to_vec(),
/// );
/// assert!(!format!("{identity:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct ClientIdentity {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Pem {
        chain: Vec<u8>,
        key: SecretSlice<u8>,
    },
    Pkcs12 {
        archive: SecretSlice<u8>,
        password: SecretString,
    },
}

impl ClientIdentity {
    /// A PEM certificate chain (the client certificate first, then intermediates) and its PEM
    /// private key (PKCS#8; rustls also reads PKCS#1 and SEC1). The key is held as a secret.
    pub fn from_pem(chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        Self {
            kind: Kind::Pem {
                chain: chain.into(),
                key: SecretSlice::from(key.into()),
            },
        }
    }

    /// A PKCS#12 archive (DER) and its password. Only native-tls (egress-async-std) reads
    /// PKCS#12; egress-tokio (rustls) refuses it at build time.
    pub fn from_pkcs12(archive: impl Into<Vec<u8>>, password: SecretString) -> Self {
        Self {
            kind: Kind::Pkcs12 {
                archive: SecretSlice::from(archive.into()),
                password,
            },
        }
    }

    /// The identity `[tls]` names, read from its files; `None` when it names none. A
    /// certificate without a key (or the reverse), both PEM and PKCS#12, or a file that
    /// cannot be read, is refused naming the field.
    pub fn from_config(tls: &TlsConfig) -> Result<Option<Self>, ConfigError> {
        let read = |field: &'static str, path: &Path| {
            std::fs::read(path).map_err(|e| {
                ConfigError::new(field, format!("cannot read {}: {e}", path.display()))
            })
        };
        match (&tls.client_cert, &tls.client_key, &tls.client_pkcs12) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), None) => Ok(Some(Self::from_pem(
                read("tls.client_cert", cert)?,
                read("tls.client_key", key)?,
            ))),
            (None, None, Some(archive)) => Ok(Some(Self::from_pkcs12(
                read("tls.client_pkcs12", archive)?,
                tls.client_pkcs12_password
                    .clone()
                    .unwrap_or_else(|| SecretString::from("")),
            ))),
            (Some(_), None, None) => Err(ConfigError::new(
                "tls.client_key",
                "a client certificate needs its key",
            )),
            (None, Some(_), None) => Err(ConfigError::new(
                "tls.client_cert",
                "a client key needs its certificate",
            )),
            _ => Err(ConfigError::new(
                "tls.client_pkcs12",
                "give either a PEM certificate and key or a PKCS#12 archive, not both",
            )),
        }
    }

    /// The PEM chain and key, if this is a PEM identity (the key exposed: for the TLS
    /// library only).
    pub fn pem(&self) -> Option<(&[u8], &[u8])> {
        match &self.kind {
            Kind::Pem { chain, key } => Some((chain, key.expose_secret())),
            Kind::Pkcs12 { .. } => None,
        }
    }

    /// The PKCS#12 archive and its password, if this is one (exposed: for the TLS library
    /// only).
    pub fn pkcs12(&self) -> Option<(&[u8], &str)> {
        match &self.kind {
            Kind::Pkcs12 { archive, password } => {
                Some((archive.expose_secret(), password.expose_secret()))
            }
            Kind::Pem { .. } => None,
        }
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Pem { .. } => "pem",
            Kind::Pkcs12 { .. } => "pkcs12",
        };
        f.debug_struct("ClientIdentity")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_without_its_key_is_refused_naming_the_field() {
        let mut tls = TlsConfig::default();
        tls.client_cert = Some("cert.pem".into());
        assert_eq!(
            ClientIdentity::from_config(&tls).unwrap_err().field(),
            "tls.client_key"
        );
        assert!(
            ClientIdentity::from_config(&TlsConfig::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_unreadable_file_is_a_config_error() {
        let tls = TlsConfig::default().with_client_pem("/nonexistent/c.pem", "/nonexistent/k.pem");
        let error = ClientIdentity::from_config(&tls).unwrap_err();
        assert_eq!(error.field(), "tls.client_cert");
    }
}
