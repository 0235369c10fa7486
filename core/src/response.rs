//! The successful result of a call.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};

use crate::ids::CorrelationId;

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
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("version", &self.version)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("attempts", &self.attempts)
            .field("elapsed", &self.elapsed)
            .field("correlation_id", &self.correlation_id)
            .finish()
    }
}
