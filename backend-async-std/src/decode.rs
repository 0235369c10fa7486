//! Reading a response off a pooled connection: the head parsed with httparse straight into an
//! `http::Response`, then a body reader for its framing (`Content-Length` or chunked).
//!
//! This replaces async-h1's `decode`, which zero-filled an 8 KiB read buffer per response, read
//! the head a line at a time, built an `http_types::Response` (header by header) that the
//! transport then converted back into `http` types, and refused what `http` accepts (status
//! codes http-types does not name, header values that are not UTF-8). What it refused for the
//! peer's sake is still refused, as an `InvalidData` error (a protocol error): a head over
//! 8 KiB or with more than 128 headers, a version other than HTTP/1.1, both `Content-Length`
//! and `Transfer-Encoding`, and also `Content-Length` values that disagree. A connection that
//! closes before the head is complete is an `UnexpectedEof` error.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_std::io::{Read as AsyncRead, ReadExt};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};

use crate::pool::Lease;

/// The longest response head read (async-h1's limit).
const MAX_HEAD: usize = 8 * 1024;
/// The most header lines in a head (async-h1's limit).
const MAX_HEADERS: usize = 128;
/// The first read's buffer: a typical head (and a small body after it) fits.
const FIRST_READ: usize = 2 * 1024;
/// The longest chunk-size line (with extensions) and the most trailer bytes accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn closed(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, message)
}

/// How the body after the head ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, at this point of the chunk grammar.
    Chunked(Chunk),
    /// Neither a length nor chunked: the body would end when the peer closes (the transport
    /// refuses such a response unless it has no body).
    Unframed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one; this many trailer bytes so far.
    Trailers(usize),
    /// The body ended.
    Done,
}

/// A response body on its connection (a pooled [`Lease`]): what the head's read buffered past
/// the head first, then the connection.
pub(crate) struct Body<C = Lease> {
    conn: C,
    buf: Vec<u8>,
    /// `buf[pos..end]` holds bytes read and not yet consumed.
    pos: usize,
    end: usize,
    framing: Framing,
}

impl<C> std::fmt::Debug for Body<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("buffered", &(self.end - self.pos))
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

/// The most interim (1xx) responses skipped before the final one.
const MAX_INTERIM: usize = 16;

/// Reads a response head from `conn`; returns it with the body that follows. Interim responses
/// (`100 Continue`, `103 Early Hints`, any 1xx but `101 Switching Protocols`) are skipped, as
/// hyper skips them: the final response follows them on the connection.
pub(crate) async fn read_head<C: AsyncRead + Unpin>(
    mut conn: C,
) -> io::Result<(http::Response<()>, Body<C>)> {
    let mut buf = vec![0u8; FIRST_READ];
    let mut end = 0;
    let mut interim = 0;
    loop {
        if end > 0 {
            if let Some((len, response, framing)) = parse_head(&buf[..end])? {
                let status = response.status();
                if status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(invalid("more than 16 interim (1xx) responses"));
                    }
                    buf.copy_within(len..end, 0);
                    end -= len;
                    continue;
                }
                let body = Body {
                    conn,
                    buf,
                    pos: len,
                    end,
                    framing,
                };
                return Ok((response, body));
            }
        }
        if end == buf.len() {
            if buf.len() >= MAX_HEAD {
                return Err(invalid("the response head is longer than 8 KiB"));
            }
            buf.resize((buf.len() * 2).min(MAX_HEAD), 0);
        }
        let n = conn.read(&mut buf[end..]).await?;
        if n == 0 {
            return Err(closed(if end == 0 {
                "the connection closed before a response"
            } else {
                "the connection closed during the response head"
            }));
        }
        end += n;
    }
}

/// The head at the start of `bytes`: `None` while it is incomplete, else its length, the
/// response and the framing of the body after it.
fn parse_head(bytes: &[u8]) -> io::Result<Option<(usize, http::Response<()>, Framing)>> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut parsed, bytes, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("malformed response head: {e}"))),
    };
    if parsed.version != Some(1) {
        return Err(invalid("the response is not HTTP/1.1"));
    }
    let code = parsed
        .code
        .ok_or_else(|| invalid("the response head has no status code"))?;
    let status =
        http::StatusCode::from_u16(code).map_err(|_| invalid(format!("invalid status {code}")))?;
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    let map = response.headers_mut();
    map.reserve(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = http::HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| invalid(format!("invalid header name {:?}", header.name)))?;
        let value = http::HeaderValue::from_bytes(header.value)
            .map_err(|_| invalid(format!("invalid value of the {name} header")))?;
        map.append(name, value);
    }
    let framing = framing(map)?;
    Ok(Some((len, response, framing)))
}

/// The body's framing from the head's headers.
fn framing(headers: &http::HeaderMap) -> io::Result<Framing> {
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter().peekable();
    if headers.contains_key(TRANSFER_ENCODING) {
        if lengths.peek().is_some() {
            return Err(invalid(
                "the response has both content-length and transfer-encoding",
            ));
        }
        // Chunked when it is the last coding applied (RFC 9112 §6.3).
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => Framing::Chunked(Chunk::Size),
            _ => Framing::Unframed,
        });
    }
    let mut length: Option<u64> = None;
    for value in lengths {
        let n = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| invalid("invalid content-length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(invalid(
                "the response has conflicting content-length values",
            ));
        }
        length = Some(n);
    }
    Ok(length.map_or(Framing::Unframed, Framing::Length))
}

impl<C: AsyncRead + Unpin> Body<C> {
    /// Whether bytes past the body were read (the peer sent more than the body): then the
    /// connection cannot carry another exchange.
    pub(crate) fn has_leftover(&self) -> bool {
        self.pos < self.end
    }

    /// Reads more of the connection into the buffer, after what is buffered; 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).max(FIRST_READ);
            self.buf.resize(grown, 0);
        }
        let n = ready!(Pin::new(&mut self.conn).poll_read(cx, &mut self.buf[self.end..]))?;
        self.end += n;
        Poll::Ready(Ok(n))
    }

    /// Up to `max` bytes of data into `out`: the buffered ones first, else straight from the
    /// connection. `Ok(0)` at the connection's end.
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut [u8],
        max: u64,
    ) -> Poll<io::Result<usize>> {
        let want = out.len().min(usize::try_from(max).unwrap_or(usize::MAX));
        if self.pos < self.end {
            let n = want.min(self.end - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.conn).poll_read(cx, &mut out[..want])
    }

    /// The next line (without its CRLF or LF) once it is buffered, consuming it; at most
    /// `max` bytes long.
    fn poll_line(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<std::ops::Range<usize>>> {
        loop {
            if let Some(at) = self.buf[self.pos..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let start = self.pos;
                let mut stop = start + at;
                self.pos = stop + 1;
                if stop > start && self.buf[stop - 1] == b'\r' {
                    stop -= 1;
                }
                return Poll::Ready(Ok(start..stop));
            }
            if self.end - self.pos > max {
                return Poll::Ready(Err(invalid("a chunk line is too long")));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(closed("the connection closed inside a chunked body")));
            }
        }
    }
}

/// A chunk-size line's size: hex digits, then optional whitespace and extensions.
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    let rest_ok = rest.is_empty()
        || rest
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t'))
            .is_none_or(|b| *b == b';');
    if digits == 0 || digits > 16 || !rest_ok {
        return Err(invalid("invalid chunk size"));
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| invalid("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| invalid("invalid chunk size"))
}

impl<C: AsyncRead + Unpin> AsyncRead for Body<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match this.framing {
                Framing::Unframed | Framing::Length(0) | Framing::Chunked(Chunk::Done) => {
                    return Poll::Ready(Ok(0));
                }
                Framing::Length(left) => {
                    let n = ready!(this.poll_data(cx, out, left))?;
                    // At the connection's end with bytes left: the reader sees the end, and
                    // the transport compares what it got with the declared length.
                    this.framing = Framing::Length(left - n as u64);
                    return Poll::Ready(Ok(n));
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let n = ready!(this.poll_data(cx, out, left))?;
                    if n == 0 {
                        return Poll::Ready(Err(closed(
                            "the connection closed inside a chunked body",
                        )));
                    }
                    let left = left - n as u64;
                    this.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Poll::Ready(Ok(n));
                }
                Framing::Chunked(Chunk::Size) => {
                    let line = ready!(this.poll_line(cx, MAX_CHUNK_LINE))?;
                    let size = chunk_size(&this.buf[line])?;
                    this.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    let line = ready!(this.poll_line(cx, 2))?;
                    if !line.is_empty() {
                        return Poll::Ready(Err(invalid("a chunk does not end where it said")));
                    }
                    this.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers(seen)) => {
                    let left = MAX_CHUNK_LINE.saturating_sub(seen);
                    let line = ready!(this.poll_line(cx, left))?;
                    let seen = seen + line.len() + 2;
                    this.framing = Framing::Chunked(if line.is_empty() {
                        Chunk::Done
                    } else if seen > MAX_CHUNK_LINE {
                        return Poll::Ready(Err(invalid("the chunked trailers are too long")));
                    } else {
                        Chunk::Trailers(seen)
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_std::io::ReadExt;

    fn head(text: &str) -> io::Result<Option<(usize, http::Response<()>, Framing)>> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn a_complete_head_gives_its_status_headers_and_length_framing() {
        let text = "HTTP/1.1 599 Odd\r\ncontent-length: 12\r\nx-name: caf\u{e9}\r\n\r\nbody";
        let (len, response, framing) = head(text).unwrap().unwrap();
        assert_eq!(len, text.len() - 4);
        assert_eq!(response.status().as_u16(), 599);
        assert_eq!(response.headers()["x-name"].as_bytes(), "café".as_bytes());
        assert_eq!(framing, Framing::Length(12));
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
    }

    #[test]
    fn heads_a_client_must_not_trust_are_invalid_data() {
        for text in [
            "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "garbage\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        ] {
            let error = head(text)
                .err()
                .unwrap_or_else(|| panic!("{text:?} was accepted"));
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{text:?}");
        }
    }

    #[test]
    fn the_last_transfer_coding_decides_whether_the_body_is_chunked() {
        let framing = |te: &str| {
            head(&format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: {te}\r\n\r\n"
            ))
            .unwrap()
            .unwrap()
            .2
        };
        assert_eq!(framing("chunked"), Framing::Chunked(Chunk::Size));
        assert_eq!(framing("gzip, Chunked"), Framing::Chunked(Chunk::Size));
        assert_eq!(framing("chunked, gzip"), Framing::Unframed);
        let none = head("HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap().2;
        assert_eq!(none, Framing::Unframed);
    }

    /// Bytes handed out in pieces: each read returns at most the next piece.
    struct Pieces {
        data: Vec<u8>,
        cuts: std::collections::VecDeque<usize>,
        at: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let piece = this.cuts.pop_front().unwrap_or(usize::MAX).max(1);
            let n = piece.min(out.len()).min(this.data.len() - this.at);
            out[..n].copy_from_slice(&this.data[this.at..this.at + n]);
            this.at += n;
            Poll::Ready(Ok(n))
        }
    }

    /// The head and the whole body (read in 7-byte reads), or the first error.
    fn read_all(data: Vec<u8>, cuts: Vec<usize>) -> io::Result<(http::Response<()>, Vec<u8>)> {
        read_all_and_leftover(data, cuts).map(|(head, body, _)| (head, body))
    }

    /// [`read_all`], and whether bytes past the body were buffered.
    fn read_all_and_leftover(
        data: Vec<u8>,
        cuts: Vec<usize>,
    ) -> io::Result<(http::Response<()>, Vec<u8>, bool)> {
        async_std::task::block_on(async {
            let conn = Pieces {
                data,
                cuts: cuts.into(),
                at: 0,
            };
            let (head, mut body) = read_head(conn).await?;
            let mut out = Vec::new();
            let mut piece = [0u8; 7];
            loop {
                let n = body.read(&mut piece).await?;
                if n == 0 {
                    return Ok((head, out, body.has_leftover()));
                }
                out.extend_from_slice(&piece[..n]);
            }
        })
    }

    fn chunked(body: &[u8], sizes: &[usize], trailer: bool) -> Vec<u8> {
        let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        let mut rest = body;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
            out.extend_from_slice(format!("{n:X};ext=1\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n");
        if trailer {
            out.extend_from_slice(b"x-checksum: abc\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn a_length_framed_body_is_read_to_its_length_and_the_rest_is_left_over() {
        let data = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloEXTRA".to_vec();
        // Arriving with the head: buffered, so the connection must not be reused.
        let (head, body, leftover) = read_all_and_leftover(data.clone(), vec![]).unwrap();
        assert_eq!(head.status(), http::StatusCode::OK);
        assert_eq!(body, b"hello");
        assert!(leftover);
        // The body in pieces: read to its length and no further.
        let (_, body, _) = read_all_and_leftover(data, vec![3, 40, 2, 1]).unwrap();
        assert_eq!(body, b"hello");
        let exact = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec();
        assert!(!read_all_and_leftover(exact, vec![]).unwrap().2);
    }

    #[test]
    fn interim_responses_are_skipped_and_the_final_one_is_read() {
        let data =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
                     HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                .to_vec();
        for cuts in [vec![], vec![5, 30, 4, 40]] {
            let (head, body) = read_all(data.clone(), cuts).unwrap();
            assert_eq!(head.status(), http::StatusCode::OK);
            assert!(head.headers().get("link").is_none());
            assert_eq!(body, b"ok");
        }
        let endless = b"HTTP/1.1 103 Early Hints\r\n\r\n".repeat(MAX_INTERIM + 1);
        let error = read_all(endless, vec![]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_connection_closed_before_or_inside_the_head_is_an_unexpected_end() {
        for data in [&b""[..], b"HTTP/1.1 200 OK\r\ncontent-le"] {
            let error = read_all(data.to_vec(), vec![]).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{data:?}");
        }
    }

    #[test]
    fn a_head_longer_than_8_kib_is_refused() {
        let mut data = b"HTTP/1.1 200 OK\r\n".to_vec();
        while data.len() < MAX_HEAD + 100 {
            data.extend_from_slice(b"x-filler: 0123456789012345678901234567890123456789\r\n");
        }
        let error = read_all(data, vec![]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    proptest::proptest! {
        #[test]
        fn a_chunked_body_reads_back_whole_however_the_bytes_arrive(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            sizes in proptest::collection::vec(1usize..90, 1..6),
            cuts in proptest::collection::vec(1usize..50, 0..40),
            trailer in proptest::bool::ANY,
        ) {
            let (_, read) = read_all(chunked(&body, &sizes, trailer), cuts).unwrap();
            proptest::prop_assert_eq!(read, body);
        }

        #[test]
        fn any_bytes_give_a_response_or_an_error_and_never_a_panic(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            cuts in proptest::collection::vec(1usize..50, 0..20),
            prefix in proptest::sample::select(vec![
                "",
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n",
            ]),
        ) {
            let mut all = prefix.as_bytes().to_vec();
            all.extend_from_slice(&data);
            let _ = read_all(all, cuts);
        }
    }

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"10;name=value").unwrap(), 16);
        assert_eq!(chunk_size(b"10 ;x").unwrap(), 16);
        for bad in [
            &b""[..],
            b"zz",
            b"-1",
            b"1 2",
            b"11111111111111111",
            b"0x10",
        ] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
    }
}
