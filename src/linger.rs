//! Closing a served connection without losing what the client has not read yet. A socket closed while bytes the
//! peer sent are still unread makes the kernel answer with RST, and a peer that receives RST drops what it had
//! received but not read: after an HTTP/2 GOAWAY the client is still sending (window updates, ping acks) when the
//! last response frames go out, so a plain close could cost an in-flight call its answer. A [`Lingering`] socket,
//! when dropped, is half-closed (FIN) and read until the client closes its side or [`LINGER`] passes, in a task the
//! server waits for before it exits.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::task::TaskTracker;

/// The longest a closed connection waits for the client to close its side.
pub const LINGER: Duration = Duration::from_secs(1);

/// A connection's socket that lingers when dropped (see the module).
pub struct Lingering<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    io: Option<T>,
    tracker: TaskTracker,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Lingering<T> {
    /// `io`, whose closing `tracker` tracks.
    pub fn new(io: T, tracker: TaskTracker) -> Lingering<T> {
        Lingering {
            io: Some(io),
            tracker,
        }
    }

    fn io(&mut self) -> &mut T {
        self.io.as_mut().expect("present until dropped")
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Lingering<T> {
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else {
            return;
        };
        self.tracker.spawn(async move {
            let _ = io.shutdown().await;
            let mut sink = [0u8; 4096];
            let drained = async { while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(LINGER, drained).await;
        });
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Lingering<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Lingering<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_shutdown(cx)
    }
}
