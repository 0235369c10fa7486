//! hyper's IO traits over futures-io streams (async-io's TCP socket, the TLS stream), in safe
//! code.
//!
//! hyper reads into memory it has not initialised; writing there from a futures-io stream
//! without `unsafe` (which this workspace forbids) means either zero-filling hyper's buffer
//! before every read (what smol-hyper's `FuturesIo` does, a cost paid on every read of every
//! request) or reading into a buffer of the connection's own, zeroed once, and copying what
//! arrived, which is what [`HyperIo`] does.

use std::io::{self, Read};
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_io::Async;
use async_std::io::{Read as AsyncRead, Write as AsyncWrite};
use hyper::rt::ReadBufCursor;

/// The largest read at once: hyper's first reads ask for 8 KiB, later ones adapt upwards.
const READ_BUFFER: usize = 16 * 1024;

/// Reads in a row, each giving data, after which [`HyperIo`] yields its task once.
///
/// async-std's executor has no cooperative budget (tokio's `coop` makes a task that keeps
/// finding data yield after 128 operations), and it runs the tasks a connection wakes only after
/// that connection's task returns `Pending`. An HTTP/2 connection under load would then read
/// every response that has arrived before any caller runs, and send their next requests only
/// after all of them ran: client and server take turns instead of working at once (measured on
/// the benchmark's HTTPS workload at 32 callers: the client's core idle a third of the time,
/// 0.55x egress-tokio's req/s). Yielding after a few reads hands the woken callers their
/// responses while the rest arrive, so their next requests go out sooner. Over HTTP/1.1 a
/// connection carries one response at a time: only a large body reads long enough to yield,
/// which also keeps such a body from holding the executor's thread. 8 measured best among
/// 2, 4, 6, 8, 16 and 32 (BENCHMARKS.md).
const READS_PER_TURN: u32 = 8;

/// A futures-io stream as hyper's `Read` and `Write`, yielding its task after
/// [`READS_PER_TURN`] reads in a row.
pub(crate) struct HyperIo<T> {
    inner: T,
    /// Where reads land before they are copied into hyper's buffer (zeroed once).
    buf: Box<[u8]>,
    /// Whether `inner` writes several buffers in one call (a TCP socket's `writev`).
    vectored: bool,
    /// Reads that gave data since the last one that found nothing (or the last yield).
    streak: u32,
}

impl<T> HyperIo<T> {
    /// `inner`; `vectored` when its `poll_write_vectored` writes more than the first buffer.
    pub(crate) fn new(inner: T, vectored: bool) -> Self {
        Self {
            inner,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            vectored,
            streak: 0,
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
        if this.streak >= READS_PER_TURN {
            // Let the tasks this connection's reads woke run before it reads more.
            this.streak = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let room = buf.remaining().min(this.buf.len());
        match Pin::new(&mut this.inner).poll_read(cx, &mut this.buf[..room]) {
            Poll::Pending => {
                this.streak = 0;
                Poll::Pending
            }
            Poll::Ready(Ok(n)) => {
                this.streak += 1;
                buf.put_slice(&this.buf[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
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

/// async-io's TCP socket, reading only after the reactor said it became readable since the last
/// read found nothing (or less than it asked for).
///
/// async-io's own `poll_read` tries the system call on every poll and asks the reactor only
/// when it finds nothing. hyper polls a connection's read side several times around each
/// response (for the next bytes, an early close, the end of the message), so on plain HTTP/1.1
/// each call cost about five `recvfrom`s, four of them finding nothing (tokio, which keeps the
/// socket's readiness, makes one). This keeps that readiness: after a read finds nothing, or
/// reads less than it asked for (the socket's buffer is then empty: tokio's rule too), the
/// next poll asks the reactor first.
#[derive(Debug)]
pub(crate) struct TcpSocket {
    io: Async<TcpStream>,
    /// Whether a read may find data: false after one found nothing or read short, until the
    /// reactor says the socket became readable.
    readable: bool,
}

impl TcpSocket {
    /// `io`, tried at its first read (nothing is known of its readiness yet).
    pub(crate) fn new(io: Async<TcpStream>) -> Self {
        Self { io, readable: true }
    }
}

impl AsyncRead for TcpSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.readable {
                let mut socket: &TcpStream = this.io.get_ref();
                match socket.read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.readable = false,
                    // A read that did not fill the buffer emptied the socket's: the next read
                    // would find nothing, so ask the reactor first (as tokio does). Nothing is
                    // missed: registering for readiness reports data that arrived meanwhile.
                    Ok(n) if n > 0 && n < buf.len() => {
                        this.readable = false;
                        return Poll::Ready(Ok(n));
                    }
                    result => return Poll::Ready(result),
                }
            }
            // Registers the task with the reactor, or reports that it saw the socket readable.
            std::task::ready!(this.io.poll_readable(cx))?;
            this.readable = true;
        }
    }
}

impl AsyncWrite for TcpSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    /// A stream that always has 100 bytes to read.
    struct Endless;

    impl AsyncRead for Endless {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(100);
            buf[..n].fill(b'x');
            Poll::Ready(Ok(n))
        }
    }

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn read(io: &mut HyperIo<Endless>, cx: &mut Context<'_>) -> Poll<usize> {
        let mut bytes = [0u8; 256];
        let mut buf = hyper::rt::ReadBuf::new(&mut bytes);
        match hyper::rt::Read::poll_read(Pin::new(io), cx, buf.unfilled()) {
            Poll::Ready(result) => {
                result.unwrap();
                Poll::Ready(buf.filled().len())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// A socket connected over loopback, and its peer.
    async fn connected() -> (TcpSocket, Async<TcpStream>) {
        let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let address = listener.get_ref().local_addr().unwrap();
        let client = Async::<TcpStream>::connect(address).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (TcpSocket::new(client), server)
    }

    #[test]
    fn a_socket_read_that_found_nothing_reads_what_arrives_later_and_then_the_close() {
        use async_std::io::{ReadExt, WriteExt};
        use std::time::Duration;
        async_std::task::block_on(async {
            let (mut socket, mut server) = connected().await;
            let mut buf = [0u8; 64];
            let first = std::future::poll_fn(|cx| {
                Poll::Ready(Pin::new(&mut socket).poll_read(cx, &mut buf).is_pending())
            })
            .await;
            assert!(
                first && !socket.readable,
                "nothing was sent: the read waits"
            );
            // A lost wake-up would hang here: the timeout turns it into a failure.
            let within = Duration::from_secs(10);
            server.write_all(b"hello").await.unwrap();
            let n = async_std::future::timeout(within, socket.read(&mut buf))
                .await
                .expect("the read woke when the bytes arrived")
                .unwrap();
            assert_eq!(&buf[..n], b"hello");
            drop(server);
            let n = async_std::future::timeout(within, socket.read(&mut buf))
                .await
                .expect("the read woke when the peer closed")
                .unwrap();
            assert_eq!(n, 0, "the close reads as the end of the stream");
        });
    }

    #[test]
    fn a_read_that_fills_the_buffer_reads_again_at_once_and_a_short_one_waits_for_the_reactor() {
        use async_std::io::{ReadExt, WriteExt};
        use std::time::Duration;
        async_std::task::block_on(async {
            let (mut socket, mut server) = connected().await;
            let within = Duration::from_secs(10);
            server.write_all(&[7u8; 12]).await.unwrap();
            // Wait until all 12 bytes are in the socket's buffer, then read 8: a full read.
            let mut all = [0u8; 12];
            for _ in 0..10_000 {
                if socket.io.get_ref().peek(&mut all).unwrap_or(0) == 12 {
                    break;
                }
                async_io::Timer::after(Duration::from_millis(1)).await;
            }
            let mut small = [0u8; 8];
            assert_eq!(socket.read(&mut small).await.unwrap(), 8);
            assert!(
                socket.readable,
                "a full read may have left more: the next one tries"
            );
            // The 4 left, into a buffer of 64: a short read, after which the socket is empty.
            let mut buf = [0u8; 64];
            assert_eq!(socket.read(&mut buf).await.unwrap(), 4);
            assert!(
                !socket.readable,
                "a short read emptied the socket: the next one waits"
            );
            // What arrives after a short read still wakes the read (a lost wake-up would hang).
            server.write_all(b"later").await.unwrap();
            let n = async_std::future::timeout(within, socket.read(&mut buf))
                .await
                .expect("the read woke when the bytes arrived")
                .unwrap();
            assert_eq!(&buf[..n], b"later");
        });
    }

    #[test]
    fn a_stream_that_keeps_giving_data_yields_its_task_once_every_eight_reads_and_wakes_it() {
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut io = HyperIo::new(Endless, false);
        for round in 0..3 {
            for _ in 0..READS_PER_TURN {
                assert_eq!(read(&mut io, &mut cx), Poll::Ready(100), "round {round}");
            }
            assert_eq!(woken.0.load(Ordering::SeqCst), round);
            assert_eq!(read(&mut io, &mut cx), Poll::Pending, "round {round}");
            // Pending with its own waker woken: the executor polls it again, later.
            assert_eq!(woken.0.load(Ordering::SeqCst), round + 1);
        }
    }
}
