//! The successful result of a call.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};

use serde::de::DeserializeOwned;

use crate::error::{CallMeta, Error};
use crate::ids::CorrelationId;
use crate::redact::Redactor;
use crate::validate::{Expect, Validate, validate, validate_checked};

/// A complete response (head and body within the size limit) with the call's metadata.
#[derive(Clone)]
pub struct Response {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) attempts: u32,
    pub(crate) elapsed: Duration,
    pub(crate) correlation_id: CorrelationId,
    pub(crate) body_limit: u64,
    pub(crate) redactor: Redactor,
}

impl Response {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// How many attempts the call took.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time from the start of the call to the arrival of this response.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The correlation ID sent on every attempt.
    pub fn correlation_id(&self) -> &CorrelationId {
        &self.correlation_id
    }

    /// What [`json`](Self::json) expects: any 2xx, JSON, within the body limit; excerpts
    /// redacted with the call's secrets.
    pub fn expect(&self) -> Expect {
        Expect::any_success(self.body_limit, self.redactor.clone())
    }

    /// Validates the response and decodes its JSON body; see [`Validate`](crate::Validate).
    ///
    /// ```
    /// use egress_core::Config;
    /// use egress_core::test_util::{ScriptedTransport, block_on, step};
    ///
    /// #[derive(Debug, serde::Deserialize)]
    /// struct Entity { id: String, tags: Vec<String> }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let upstream = ScriptedTransport::new();
    /// upstream.push(step(200).json(r#"{"id":"7","tags":["a",7]}"#));
    /// let client = upstream.client(Config::default().with_base_url("https://api.example.com"))?;
    /// let response = block_on(client.get("/entities/7").send())?;
    ///
    /// let error = response.json::<Entity>().unwrap_err();
    /// let invalid = error.validation().expect("a validation error");
    /// assert_eq!(invalid.path(), Some("tags[1]"));
    /// # Ok(()) }
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.json_with(&self.expect())
    }

    /// [`json`](Self::json) with explicit expectations (such as an exact status).
    pub fn json_with<T: DeserializeOwned>(&self, expect: &Expect) -> Result<T, Error> {
        validate(self.status, &self.headers, &self.body, expect).map_err(|e| self.invalid(e))
    }

    /// [`json`](Self::json), then the [`Validate`] checks of `T`.
    pub fn json_checked<T: DeserializeOwned + Validate>(&self) -> Result<T, Error> {
        validate_checked(self.status, &self.headers, &self.body, &self.expect())
            .map_err(|e| self.invalid(e))
    }

    /// Wraps a validation failure found by the caller (see
    /// [`ValidationError::semantic`](crate::validate::ValidationError::semantic)) with this
    /// call's metadata, its excerpt taken from this body and redacted.
    pub fn validation_error(&self, source: crate::validate::ValidationError) -> Error {
        let source = if source.excerpt().is_empty() {
            let excerpt = self.redactor.excerpt(&self.body);
            source.with_excerpt(excerpt)
        } else {
            source
        };
        self.invalid(source)
    }

    /// A validation failure, reported as telemetry of the call (a WARN event with the call's
    /// correlation ID, the kind and the JSON path; the `metrics` feature counts it) and
    /// returned with the call's metadata.
    fn invalid(&self, source: crate::validate::ValidationError) -> Error {
        let kind = source.kind().as_str();
        tracing::warn!(
            correlation_id = %self.correlation_id,
            attempts = self.attempts,
            http.response.status_code = self.status.as_u16(),
            error.type = "validation",
            validation.kind = kind,
            json.path = source.path().unwrap_or(""),
            "response failed validation: {source}"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!(crate::metric_names::VALIDATION_FAILURES, "kind" => kind).increment(1);
        let meta = CallMeta {
            attempts: self.attempts,
            elapsed: self.elapsed,
            correlation_id: Some(self.correlation_id.clone()),
            stop: None,
            may_have_been_sent: Some(true),
        };
        Error::Validation {
            source: Box::new(source),
            meta,
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("version", &self.version)
            .field("headers", &self.redactor.headers(&self.headers))
            .field("body_len", &self.body.len())
            .field("attempts", &self.attempts)
            .field("elapsed", &self.elapsed)
            .field("correlation_id", &self.correlation_id)
            .finish()
    }
}
