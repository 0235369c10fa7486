//! TLS by native-tls (the system's OpenSSL) over an async stream, in safe code.
//!
//! native-tls speaks blocking `Read`/`Write`. [`Bridge`] gives it the async stream, polled
//! with the waker of the task that last polled the TLS stream, and turns "not ready" into
//! `WouldBlock`, which native-tls hands back so that the TLS stream can return `Pending`.
//! async-native-tls does the same with a raw pointer to the task context; it is not used here
//! because it builds a new OpenSSL context (re-reading the system's CA bundle) on every
//! connect and does not tell which protocol ALPN chose. The connector here is built once per
//! client and [`TlsStream::alpn`] reports the choice.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use async_std::io::{Read as AsyncRead, Write as AsyncWrite};

/// The async stream as native-tls sees it: blocking-style calls that fail with `WouldBlock`
/// instead of waiting. Reads are buffered: OpenSSL reads each TLS record's 5-byte header and
/// then its body, which unbuffered would be two system calls per record.
#[derive(Debug)]
struct Bridge<S> {
    io: S,
    /// The waker of the task that polls the TLS stream now.
    waker: Waker,
    /// Bytes read from `io` that OpenSSL has not taken yet: `buf[start..end]`.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// How much the bridge reads from the socket at once: a TLS record is at most 16 KiB plus
/// its header and overhead.
const READ_BUFFER: usize = 17 * 1024;

impl<S> Bridge<S> {
    fn new(io: S, waker: Waker) -> Self {
        Self {
            io,
            waker,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

fn would_block<T>(poll: Poll<io::Result<T>>) -> io::Result<T> {
    match poll {
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

fn pending<T>(result: io::Result<T>) -> Poll<io::Result<T>> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

impl<S: AsyncRead + Unpin> Read for Bridge<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            let mut cx = Context::from_waker(&self.waker);
            let n = would_block(Pin::new(&mut self.io).poll_read(&mut cx, &mut self.buf))?;
            self.start = 0;
            self.end = n;
            if n == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

impl<S: AsyncWrite + Unpin> Write for Bridge<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(&self.waker);
        would_block(Pin::new(&mut self.io).poll_write(&mut cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut cx = Context::from_waker(&self.waker);
        would_block(Pin::new(&mut self.io).poll_flush(&mut cx))
    }
}

/// A TLS connection over `S`.
#[derive(Debug)]
pub(crate) struct TlsStream<S> {
    inner: native_tls::TlsStream<Bridge<S>>,
}

/// Completes a TLS handshake with `domain` over `io`.
pub(crate) async fn connect<S>(
    connector: &native_tls::TlsConnector,
    domain: &str,
    io: S,
) -> Result<TlsStream<S>, native_tls::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    enum State<S> {
        Start(Bridge<S>),
        Mid(native_tls::MidHandshakeTlsStream<Bridge<S>>),
        Done,
    }
    let mut state = State::Start(Bridge::new(io, Waker::noop().clone()));
    std::future::poll_fn(|cx| {
        let step = match std::mem::replace(&mut state, State::Done) {
            State::Start(mut bridge) => {
                bridge.waker = cx.waker().clone();
                connector.connect(domain, bridge)
            }
            State::Mid(mut mid) => {
                mid.get_mut().waker.clone_from(cx.waker());
                mid.handshake()
            }
            State::Done => {
                unreachable!("invariant: the handshake future is not polled after it completed")
            }
        };
        match step {
            Ok(inner) => Poll::Ready(Ok(TlsStream { inner })),
            Err(native_tls::HandshakeError::WouldBlock(mid)) => {
                state = State::Mid(mid);
                Poll::Pending
            }
            Err(native_tls::HandshakeError::Failure(e)) => Poll::Ready(Err(e)),
        }
    })
    .await
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// The protocol ALPN chose, if any.
    pub(crate) fn alpn(&self) -> Option<Vec<u8>> {
        self.inner.negotiated_alpn().ok().flatten()
    }

    /// Gives native-tls the waker of the task polling now.
    fn with(&mut self, cx: &Context<'_>) -> &mut native_tls::TlsStream<Bridge<S>> {
        self.inner.get_mut().waker.clone_from(cx.waker());
        &mut self.inner
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        pending(self.get_mut().with(cx).read(buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        pending(self.get_mut().with(cx).write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        pending(self.get_mut().with(cx).flush())
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if pending(this.with(cx).shutdown()).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner.get_mut().io).poll_close(cx)
    }
}
