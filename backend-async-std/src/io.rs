//! hyper's IO traits over futures-io streams (async-io's TCP socket, the TLS stream), in safe
//! code.
//!
//! hyper reads into memory it has not initialised; writing there from a futures-io stream
//! without `unsafe` (which this workspace forbids) means either zero-filling hyper's buffer
//! before every read (what smol-hyper's `FuturesIo` does, a cost paid on every read of every
//! request) or reading into a buffer of the connection's own, zeroed once, and copying what
//! arrived, which is what [`HyperIo`] does.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_std::io::{Read as AsyncRead, Write as AsyncWrite};
use hyper::rt::ReadBufCursor;

/// The largest read at once: hyper's first reads ask for 8 KiB, later ones adapt upwards.
const READ_BUFFER: usize = 16 * 1024;

/// A futures-io stream as hyper's `Read` and `Write`.
pub(crate) struct HyperIo<T> {
    inner: T,
    /// Where reads land before they are copied into hyper's buffer (zeroed once).
    buf: Box<[u8]>,
    /// Whether `inner` writes several buffers in one call (a TCP socket's `writev`).
    vectored: bool,
}

impl<T> HyperIo<T> {
    /// `inner`; `vectored` when its `poll_write_vectored` writes more than the first buffer.
    pub(crate) fn new(inner: T, vectored: bool) -> Self {
        Self {
            inner,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            vectored,
        }
    }
}

impl<T: AsyncRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let room = buf.remaining().min(this.buf.len());
        match Pin::new(&mut this.inner).poll_read(cx, &mut this.buf[..room]) {
            Poll::Ready(Ok(n)) => {
                buf.put_slice(&this.buf[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}

/// A stream hyper can drive (a `CONNECT` tunnel, TLS to a proxy) as a futures-io stream, for
/// native-tls to run a handshake over it.
pub(crate) struct FuturesIo(pub(crate) Box<dyn egress_transport::Io>);

impl AsyncRead for FuturesIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut read = hyper::rt::ReadBuf::new(buf);
        match hyper::rt::Read::poll_read(Pin::new(&mut self.get_mut().0), cx, read.unfilled()) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for FuturesIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write(Pin::new(&mut self.get_mut().0), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_flush(Pin::new(&mut self.get_mut().0), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_shutdown(Pin::new(&mut self.get_mut().0), cx)
    }
}
