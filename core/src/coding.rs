//! Content codings of response bodies; the whole story is on [`Coding`].

// The decoders of codings whose features are off are compiled out, leaving parts unused.
#![cfg_attr(
    not(all(
        feature = "gzip",
        feature = "deflate",
        feature = "brotli",
        feature = "zstd"
    )),
    allow(dead_code, unused_variables, unused_imports)
)]

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, HeaderMap, HeaderValue};

/// The `Accept-Encoding` this build sends: every coding it decodes, in a fixed order (empty
/// when it decodes none).
fn accepted() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd]
            .into_iter()
            .filter(|c| c.is_supported())
            .map(Coding::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// A content coding egress knows by name.
///
/// Content codings (RFC 9110 8.4): what a client asks for in `Accept-Encoding`, and the
/// streaming decoder a transport feeds the body through, chunk by chunk as it arrives.
///
/// Decoding is sans-IO like the rest of the core: [`BodyDecoder::push`] takes wire bytes and
/// [`BodyDecoder::finish`] gives the decoded body. Stacked codings (`Content-Encoding: gzip,
/// br`) are undone in reverse order (RFC 9110 8.4). Every stage's output is bounded while it is
/// written, so memory stays within the body limit whatever a stream expands to; a ratio
/// limit (decoded bytes per wire byte, past a first allowance) stops decompression bombs
/// early. A coding this build does not decode, or a corrupt or truncated stream, is a
/// [`DecodeError`], never a panic.
///
/// Which codings a build decodes follows egress-core's cargo features `gzip` (also `x-gzip`),
/// `deflate`, `brotli` (`br`) and `zstd`; the backends turn all four on by default.
///
/// ```
/// use egress_core::rt::{DecodeLimits, Decoding};
/// # #[cfg(feature = "gzip")] {
/// use std::io::Write;
/// let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
/// gz.write_all(br#"{"id":"7"}"#).unwrap();
/// let wire = gz.finish().unwrap();
///
/// let decoding = Decoding::new(true, DecodeLimits::new(1 << 20));
/// let mut headers = http::HeaderMap::new();
/// headers.insert("content-encoding", "gzip".parse().unwrap());
/// let mut decoder = decoding.decoder(&headers).unwrap().expect("the body is encoded");
/// for chunk in wire.chunks(3) {
///     decoder.push(chunk).unwrap();
/// }
/// assert_eq!(&decoder.finish().unwrap()[..], br#"{"id":"7"}"#);
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Coding {
    /// `gzip` (and its alias `x-gzip`), RFC 9110 8.4.1.3.
    Gzip,
    /// `deflate`: the zlib format (RFC 9110 8.4.1.2); a raw deflate stream, which some
    /// servers send instead, is accepted too.
    Deflate,
    /// `br`: Brotli (RFC 7932).
    Brotli,
    /// `zstd`: Zstandard (RFC 8878).
    Zstd,
}

impl Coding {
    /// The coding a `Content-Encoding` token names (case-insensitive), if egress knows it.
    pub fn from_token(token: &str) -> Option<Self> {
        let t = token.trim();
        if t.eq_ignore_ascii_case("gzip") || t.eq_ignore_ascii_case("x-gzip") {
            Some(Self::Gzip)
        } else if t.eq_ignore_ascii_case("deflate") {
            Some(Self::Deflate)
        } else if t.eq_ignore_ascii_case("br") {
            Some(Self::Brotli)
        } else if t.eq_ignore_ascii_case("zstd") {
            Some(Self::Zstd)
        } else {
            None
        }
    }

    /// The token of this coding in `Content-Encoding` and `Accept-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Brotli => "br",
            Self::Zstd => "zstd",
        }
    }

    /// Whether this build decodes the coding (its cargo feature is on).
    pub fn is_supported(self) -> bool {
        match self {
            Self::Gzip => cfg!(feature = "gzip"),
            Self::Deflate => cfg!(feature = "deflate"),
            Self::Brotli => cfg!(feature = "brotli"),
            Self::Zstd => cfg!(feature = "zstd"),
        }
    }
}

impl fmt::Display for Coding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which limit a decoded body passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyLimit {
    /// The body limit, on the bytes received (before decoding).
    Wire,
    /// The body limit, on the decoded bytes.
    Decoded,
    /// The ratio of decoded to received bytes, past the first allowance: a decompression bomb.
    Ratio,
}

impl BodyLimit {
    /// A short stable name (`wire`, `decoded`, `ratio`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wire => "wire",
            Self::Decoded => "decoded",
            Self::Ratio => "ratio",
        }
    }
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The response names a coding egress does not know.
    #[error("unknown content coding {0:?}")]
    Unknown(String),
    /// The response names a coding this build does not decode (its cargo feature is off).
    #[error("content coding {0} is not enabled in this build (cargo feature)")]
    Disabled(Coding),
    /// The response is encoded but this client does not decode (`decompress = false`).
    #[error("the body is encoded ({0}) and this client does not decode")]
    NotDecoding(String),
    /// A stream is corrupt (a bad header, a bad checksum, invalid data).
    #[error("the {coding} stream is corrupt: {message}")]
    Corrupt {
        /// The coding whose stream is corrupt.
        coding: Coding,
        /// What the decoder said.
        message: String,
    },
    /// A stream ended before its end marker.
    #[error("the {0} stream is truncated")]
    Truncated(Coding),
    /// The decoded body passed a limit.
    #[error("the decoded body passed the {} limit", .0.as_str())]
    TooLarge(BodyLimit),
}

/// Decoded bytes allowed before the ratio of decoded to received bytes is checked.
pub const RATIO_AFTER: u64 = 1 << 20;

/// The limits on a decoded body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The most decoded bytes (and, for each stage of stacked codings, the most bytes it may
    /// produce).
    pub max_decoded: u64,
    /// The most decoded bytes per received byte, once past [`RATIO_AFTER`] decoded bytes.
    pub max_ratio: u32,
}

impl DecodeLimits {
    /// `max_decoded` bytes at most, and 100 decoded bytes per received byte past the first MiB.
    pub fn new(max_decoded: u64) -> Self {
        Self {
            max_decoded,
            max_ratio: 100,
        }
    }
}

/// Whether and within what limits a client decodes response bodies; carried by every
/// [`AttemptRequest`](crate::rt::AttemptRequest) for the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoding {
    // Kept flat (16 bytes): it travels in every attempt.
    max_decoded: u64,
    max_ratio: u32,
    enabled: bool,
}

impl Decoding {
    /// Decoding on or off, within `limits`.
    pub fn new(enabled: bool, limits: DecodeLimits) -> Self {
        Self {
            max_decoded: limits.max_decoded,
            max_ratio: limits.max_ratio,
            enabled,
        }
    }

    /// Whether bodies are decoded.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The limits.
    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_decoded: self.max_decoded,
            max_ratio: self.max_ratio,
        }
    }

    /// The `Accept-Encoding` a request carries when decoding is on: every coding this build
    /// decodes (`None` when it decodes none, or decoding is off).
    pub fn accept_encoding(&self) -> Option<HeaderValue> {
        let accepted = accepted();
        (self.enabled && !accepted.is_empty()).then(|| HeaderValue::from_static(accepted))
    }

    /// A decoder for a body sent with `headers`, or `None` when it is not encoded (no
    /// `Content-Encoding`, or `identity` only). A transport calls this only for a response
    /// that has a body (not for `HEAD`, 1xx, 204 or 304: RFC 9112 6.3).
    pub fn decoder(&self, headers: &HeaderMap) -> Result<Option<BodyDecoder>, DecodeError> {
        let mut codings = Vec::new();
        for value in headers.get_all(CONTENT_ENCODING) {
            let text = value.to_str().map_err(|_| {
                DecodeError::Unknown(String::from_utf8_lossy(value.as_bytes()).into())
            })?;
            for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if token.eq_ignore_ascii_case("identity") {
                    continue;
                }
                let coding =
                    Coding::from_token(token).ok_or_else(|| DecodeError::Unknown(token.into()))?;
                if !self.enabled {
                    return Err(DecodeError::NotDecoding(text.into()));
                }
                if !coding.is_supported() {
                    return Err(DecodeError::Disabled(coding));
                }
                codings.push(coding);
            }
        }
        if codings.is_empty() {
            return Ok(None);
        }
        // The last coding applied is undone first.
        let stages = codings.into_iter().rev().map(Stage::new).collect();
        Ok(Some(BodyDecoder {
            stages,
            limits: self.limits(),
            wire: 0,
            out: BytesMut::new(),
        }))
    }
}

impl Decoding {
    /// Decodes a whole `body` received with `headers`, as a transport does chunk by chunk: an
    /// empty body stays empty (a response to `HEAD`, a 204 or 304 has none, whatever its
    /// `Content-Encoding` says); a decoded body loses the `Content-Length` of its encoded form
    /// (its `Content-Encoding` stays, saying how it travelled).
    pub fn decode_all(&self, headers: &mut HeaderMap, body: Bytes) -> Result<Bytes, DecodeError> {
        if body.is_empty() {
            return Ok(body);
        }
        let Some(mut decoder) = self.decoder(headers)? else {
            return Ok(body);
        };
        decoder.push(&body)?;
        let decoded = decoder.finish()?;
        headers.remove(http::header::CONTENT_LENGTH);
        Ok(decoded)
    }
}

/// Undoes a response's content codings, fed chunk by chunk;.
pub struct BodyDecoder {
    stages: Vec<Stage>,
    limits: DecodeLimits,
    wire: u64,
    out: BytesMut,
}

impl fmt::Debug for BodyDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codings: Vec<Coding> = self.stages.iter().map(|s| s.coding).collect();
        f.debug_struct("BodyDecoder")
            .field("codings", &codings)
            .field("wire", &self.wire)
            .field("decoded", &self.out.len())
            .finish()
    }
}

impl BodyDecoder {
    /// Feeds the next wire bytes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        self.wire += chunk.len() as u64;
        let (cap, limit) = self.room();
        let mut data: Option<Vec<u8>> = None;
        for stage in &mut self.stages {
            let input = data.as_deref().unwrap_or(chunk);
            data = Some(stage.push(input, cap).map_err(|e| relabel(e, limit))?);
        }
        self.emit(data.as_deref().unwrap_or_default())
    }

    /// Ends the body: checks that every stream ended where it should and gives the decoded
    /// body.
    pub fn finish(mut self) -> Result<Bytes, DecodeError> {
        let (cap, limit) = self.room();
        let mut pending: Vec<u8> = Vec::new();
        for stage in &mut self.stages {
            let mut output = if pending.is_empty() {
                Vec::new()
            } else {
                stage.push(&pending, cap).map_err(|e| relabel(e, limit))?
            };
            output.extend_from_slice(&stage.finish(cap).map_err(|e| relabel(e, limit))?);
            pending = output;
        }
        self.emit(&pending)?;
        Ok(self.out.freeze())
    }

    /// How many more bytes a stage may produce now, and which limit that is: the body limit,
    /// or the ratio to the bytes received so far when that is the nearer one.
    fn room(&self) -> (u64, BodyLimit) {
        let done = self.out.len() as u64;
        let by_size = self.limits.max_decoded.saturating_sub(done);
        let allowed = RATIO_AFTER.max(self.wire.saturating_mul(u64::from(self.limits.max_ratio)));
        let by_ratio = allowed.saturating_sub(done);
        if by_ratio < by_size {
            (by_ratio, BodyLimit::Ratio)
        } else {
            (by_size, BodyLimit::Decoded)
        }
    }

    /// How many wire bytes were fed.
    pub fn wire_len(&self) -> u64 {
        self.wire
    }

    /// How many decoded bytes there are so far.
    pub fn decoded_len(&self) -> u64 {
        self.out.len() as u64
    }

    fn emit(&mut self, decoded: &[u8]) -> Result<(), DecodeError> {
        let total = self.out.len() as u64 + decoded.len() as u64;
        if total > self.limits.max_decoded {
            return Err(DecodeError::TooLarge(BodyLimit::Decoded));
        }
        let ratio = u64::from(self.limits.max_ratio);
        if total > RATIO_AFTER && total > self.wire.saturating_mul(ratio) {
            return Err(DecodeError::TooLarge(BodyLimit::Ratio));
        }
        self.out.extend_from_slice(decoded);
        Ok(())
    }
}

/// The size of a decoder's output buffer: one step of inflating or of libzstd writes at most
/// this much before it is appended to the stage's output.
const SCRATCH: usize = 8 * 1024;

/// A stage's "too large" names the limit that set its room.
fn relabel(error: DecodeError, limit: BodyLimit) -> DecodeError {
    match error {
        DecodeError::TooLarge(_) => DecodeError::TooLarge(limit),
        other => other,
    }
}

/// A writer that refuses to hold more than `cap` bytes: a stage's output while it is written.
struct Capped {
    buf: Vec<u8>,
    cap: u64,
}

/// The error [`Capped`] writes fail with, told apart from a corrupt stream's.
#[derive(Debug)]
struct CapReached;

impl fmt::Display for CapReached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the decoded body passed its limit")
    }
}

impl std::error::Error for CapReached {}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.buf.len() as u64 + buf.len() as u64 > self.cap {
            return Err(io::Error::other(CapReached));
        }
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capped {
    fn new(cap: u64) -> Self {
        Self {
            buf: Vec::new(),
            cap,
        }
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// One coding's decoder.
struct Stage {
    coding: Coding,
    state: Engine,
}

enum Engine {
    #[cfg(feature = "gzip")]
    Gzip(Box<flate2::write::MultiGzDecoder<Capped>>),
    #[cfg(feature = "deflate")]
    Deflate(Box<deflate::Inflate>),
    #[cfg(feature = "brotli")]
    Brotli(Box<brotli_decompressor::DecompressorWriter<Capped>>),
    #[cfg(feature = "zstd")]
    Zstd(Box<zstd_stage::Zstd>),
    /// A coding this build does not decode; [`Decoding::decoder`] never makes one.
    #[allow(dead_code)]
    Unsupported,
}

/// Maps a decoder's IO error: the cap's own, or a corrupt stream.
fn corrupt(coding: Coding, error: io::Error) -> DecodeError {
    if error.get_ref().is_some_and(|e| e.is::<CapReached>()) {
        DecodeError::TooLarge(BodyLimit::Decoded)
    } else {
        DecodeError::Corrupt {
            coding,
            message: error.to_string(),
        }
    }
}

impl Stage {
    fn new(coding: Coding) -> Self {
        // The cap is set per push (the limit does not change within a body).
        let state = match coding {
            #[cfg(feature = "gzip")]
            Coding::Gzip => {
                Engine::Gzip(Box::new(flate2::write::MultiGzDecoder::new(Capped::new(0))))
            }
            #[cfg(feature = "deflate")]
            Coding::Deflate => Engine::Deflate(Box::default()),
            #[cfg(feature = "brotli")]
            Coding::Brotli => Engine::Brotli(Box::new(
                brotli_decompressor::DecompressorWriter::new(Capped::new(0), 8 * 1024),
            )),
            #[cfg(feature = "zstd")]
            Coding::Zstd => Engine::Zstd(Box::default()),
            #[allow(unreachable_patterns)]
            _ => Engine::Unsupported,
        };
        Self { coding, state }
    }

    /// Decodes `input`, giving what it decoded (at most `cap` bytes).
    fn push(&mut self, input: &[u8], cap: u64) -> Result<Vec<u8>, DecodeError> {
        let coding = self.coding;
        match &mut self.state {
            #[cfg(feature = "gzip")]
            Engine::Gzip(d) => {
                d.get_mut().cap = cap;
                d.write_all(input).map_err(|e| corrupt(coding, e))?;
                Ok(d.get_mut().take())
            }
            #[cfg(feature = "deflate")]
            Engine::Deflate(d) => d.push(input, cap),
            #[cfg(feature = "brotli")]
            Engine::Brotli(d) => {
                d.get_mut().cap = cap;
                d.write_all(input).map_err(|e| corrupt(coding, e))?;
                Ok(d.get_mut().take())
            }
            #[cfg(feature = "zstd")]
            Engine::Zstd(d) => d.push(input, cap),
            Engine::Unsupported => Err(DecodeError::Disabled(coding)),
        }
    }

    /// Ends the stream: what is left, or the error of a stream that did not end properly.
    fn finish(&mut self, cap: u64) -> Result<Vec<u8>, DecodeError> {
        let coding = self.coding;
        match &mut self.state {
            #[cfg(feature = "gzip")]
            Engine::Gzip(d) => {
                d.get_mut().cap = cap;
                d.try_finish().map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => DecodeError::Truncated(coding),
                    _ => corrupt(coding, e),
                })?;
                Ok(d.get_mut().take())
            }
            #[cfg(feature = "deflate")]
            Engine::Deflate(d) => d.finish(),
            #[cfg(feature = "brotli")]
            Engine::Brotli(d) => {
                d.get_mut().cap = cap;
                d.flush().map_err(|e| corrupt(coding, e))?;
                let out = d.get_mut().take();
                // `close` fails unless the stream reached its end marker.
                d.close().map_err(|_| DecodeError::Truncated(coding))?;
                Ok(out)
            }
            #[cfg(feature = "zstd")]
            Engine::Zstd(d) => d.finish(),
            Engine::Unsupported => Err(DecodeError::Disabled(coding)),
        }
    }
}

#[cfg(feature = "deflate")]
mod deflate {
    //! HTTP's `deflate`: the zlib format, or a raw deflate stream (which some servers send),
    //! told apart by the zlib header (RFC 1950 2.2).

    use flate2::{Decompress, FlushDecompress, Status};

    use super::{Coding, DecodeError};

    /// An inflater that has seen the stream's first bytes (or not yet).
    #[derive(Default)]
    pub(super) struct Inflate {
        inner: Option<Decompress>,
        /// Bytes held back until the first two decide the format.
        head: Vec<u8>,
        ended: bool,
        /// Where each step's output lands before it is appended (made at the first step).
        scratch: Vec<u8>,
    }

    fn is_zlib_header(b: [u8; 2]) -> bool {
        // CM = 8 (deflate), CINFO <= 7, and the header's check bits.
        b[0] & 0x0f == 8 && b[0] >> 4 <= 7 && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
    }

    impl Inflate {
        pub(super) fn push(&mut self, input: &[u8], cap: u64) -> Result<Vec<u8>, DecodeError> {
            let input = if self.inner.is_none() {
                self.head.extend_from_slice(input);
                if self.head.len() < 2 {
                    return Ok(Vec::new());
                }
                let zlib = is_zlib_header([self.head[0], self.head[1]]);
                self.inner = Some(Decompress::new(zlib));
                std::mem::take(&mut self.head)
            } else {
                input.to_vec()
            };
            self.run(&input, cap)
        }

        fn run(&mut self, mut input: &[u8], cap: u64) -> Result<Vec<u8>, DecodeError> {
            let inflater = self
                .inner
                .as_mut()
                .expect("invariant: run is called once the format is known");
            let mut out = Vec::new();
            if self.scratch.is_empty() {
                self.scratch = vec![0u8; super::SCRATCH];
            }
            let chunk = &mut self.scratch;
            while !input.is_empty() && !self.ended {
                let before_in = inflater.total_in();
                let before_out = inflater.total_out();
                let status = inflater
                    .decompress(input, chunk, FlushDecompress::None)
                    .map_err(|e| DecodeError::Corrupt {
                        coding: Coding::Deflate,
                        message: e.to_string(),
                    })?;
                let read = (inflater.total_in() - before_in) as usize;
                let written = (inflater.total_out() - before_out) as usize;
                if out.len() as u64 + written as u64 > cap {
                    return Err(DecodeError::TooLarge(super::BodyLimit::Decoded));
                }
                out.extend_from_slice(&chunk[..written]);
                input = &input[read..];
                match status {
                    Status::StreamEnd => self.ended = true,
                    Status::Ok | Status::BufError if read == 0 && written == 0 => break,
                    Status::Ok | Status::BufError => {}
                }
            }
            // Output still held by the inflater when the input ran out.
            loop {
                if self.ended {
                    break;
                }
                let before_out = inflater.total_out();
                let status = inflater
                    .decompress(&[], chunk, FlushDecompress::None)
                    .map_err(|e| DecodeError::Corrupt {
                        coding: Coding::Deflate,
                        message: e.to_string(),
                    })?;
                let written = (inflater.total_out() - before_out) as usize;
                if out.len() as u64 + written as u64 > cap {
                    return Err(DecodeError::TooLarge(super::BodyLimit::Decoded));
                }
                out.extend_from_slice(&chunk[..written]);
                if status == Status::StreamEnd {
                    self.ended = true;
                }
                if written == 0 {
                    break;
                }
            }
            Ok(out)
        }

        pub(super) fn finish(&mut self) -> Result<Vec<u8>, DecodeError> {
            if self.ended {
                Ok(Vec::new())
            } else {
                Err(DecodeError::Truncated(Coding::Deflate))
            }
        }
    }
}

#[cfg(feature = "zstd")]
mod zstd_stage {
    //! Zstandard through libzstd's streaming decoder, its window bounded so that a frame
    //! cannot make it allocate more than 2^27 bytes (128 MiB, the largest window RFC 8878 3.1.1.1.2
    //! asks decoders to support is 8 MiB; libzstd's default limit is 128 MiB).

    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

    use super::{BodyLimit, Coding, DecodeError};

    pub(super) struct Zstd {
        inner: Option<Decoder<'static>>,
        /// Where each step's output lands before it is appended (made at the first step).
        scratch: Vec<u8>,
        /// The last hint libzstd gave: 0 once a frame is complete.
        hint: usize,
        started: bool,
    }

    impl Default for Zstd {
        fn default() -> Self {
            Self {
                inner: None,
                scratch: Vec::new(),
                hint: 1,
                started: false,
            }
        }
    }

    fn corrupt(e: std::io::Error) -> DecodeError {
        DecodeError::Corrupt {
            coding: Coding::Zstd,
            message: e.to_string(),
        }
    }

    std::thread_local! {
        /// A decoder a finished body left behind: making one (libzstd's context) costs more
        /// than decoding a small body, so each thread keeps one for the next.
        static SPARE: std::cell::RefCell<Option<Decoder<'static>>> =
            const { std::cell::RefCell::new(None) };
    }

    impl Drop for Zstd {
        fn drop(&mut self) {
            if let Some(mut decoder) = self.inner.take() {
                // A decoder that cannot be reset is dropped instead.
                if decoder.reinit().is_ok() {
                    let _ = SPARE.try_with(|spare| spare.replace(Some(decoder)));
                }
            }
        }
    }

    impl Zstd {
        pub(super) fn push(&mut self, mut input: &[u8], cap: u64) -> Result<Vec<u8>, DecodeError> {
            if self.inner.is_none() {
                let spare = SPARE.try_with(|spare| spare.take()).ok().flatten();
                let decoder = match spare {
                    Some(decoder) => decoder,
                    None => {
                        let mut decoder = Decoder::new().map_err(corrupt)?;
                        decoder
                            .set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(27))
                            .map_err(corrupt)?;
                        decoder
                    }
                };
                self.inner = Some(decoder);
            }
            let decoder = self
                .inner
                .as_mut()
                .expect("invariant: the decoder was made above");
            let mut out = Vec::new();
            if self.scratch.is_empty() {
                self.scratch = vec![0u8; super::SCRATCH];
            }
            let chunk = &mut self.scratch;
            if !input.is_empty() {
                self.started = true;
            }
            loop {
                let mut src = InBuffer::around(input);
                let mut dst = OutBuffer::around(&mut chunk[..]);
                let hint = decoder.run(&mut src, &mut dst).map_err(corrupt)?;
                let read = src.pos();
                let written = dst.pos();
                self.hint = hint;
                if out.len() as u64 + written as u64 > cap {
                    return Err(DecodeError::TooLarge(BodyLimit::Decoded));
                }
                out.extend_from_slice(&chunk[..written]);
                input = &input[read..];
                // Done when the input is used up and the output buffer was not filled (libzstd
                // holds nothing more for now).
                if input.is_empty() && written < chunk.len() {
                    break;
                }
            }
            Ok(out)
        }

        pub(super) fn finish(&mut self) -> Result<Vec<u8>, DecodeError> {
            if self.started && self.hint == 0 {
                Ok(Vec::new())
            } else {
                Err(DecodeError::Truncated(Coding::Zstd))
            }
        }
    }
}
