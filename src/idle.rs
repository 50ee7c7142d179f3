//! Closing plain-HTTP connections that stall or idle: one watchdog per connection instead of a timer per request.
//!
//! A connection is closed when, for a whole `limit`, no request started on it, none was in flight and nothing was
//! written to it. That covers a client that stalls or drips a request head (its request never starts), a keep-alive
//! connection left idle, and a client that stops reading its response; a long inference or a response still being
//! delivered keeps its connection. The cost on the request path is two atomic counts per request and one per write;
//! hyper's own header read timeout (used for TLS) arms a new timer for every request instead.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::Service;

/// What a connection has done, counted by its service and its socket.
#[derive(Debug, Default)]
pub struct Activity {
    started: AtomicU64,
    in_flight: AtomicUsize,
    written: AtomicU64,
}

impl Activity {
    fn snapshot(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }

    /// Completes once the connection has been idle (as the module describes) for `limit`, checked every `limit`.
    pub async fn idle_for(self: Arc<Self>, limit: Duration) {
        let mut seen = self.snapshot();
        loop {
            tokio::time::sleep(limit).await;
            let now = self.snapshot();
            if now == seen && self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            seen = now;
        }
    }
}

/// A socket whose writes are counted.
pub struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(io: T, activity: Arc<Activity>) -> Watched<T> {
        Watched { io, activity }
    }

    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = result {
            self.activity
                .written
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The application, with each request counted as started and held in flight until its response is ready.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Counted<S> {
        Counted { inner, activity }
    }
}

impl<S, R> Service<R> for Counted<S>
where
    S: Service<R, Error = Infallible>,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = InFlight<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.activity.started.fetch_add(1, Ordering::Relaxed);
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            inner: self.inner.call(request),
            guard: Guard(Arc::clone(&self.activity)),
        }
    }
}

/// Ends a request's time in flight when its future is done or dropped.
struct Guard(Arc<Activity>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// A request's future, counted in flight while it exists.
    pub struct InFlight<F> {
        #[pin]
        inner: F,
        guard: Guard,
    }
}

impl<F: Future> Future for InFlight<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{Activity, Counted};
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::time::Duration;
    use tower::{service_fn, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_without_requests_in_flight_or_new_ones() {
        let activity = Arc::new(Activity::default());
        let limit = Duration::from_millis(100);
        let gate = Arc::new(tokio::sync::Notify::new());
        let opened = Arc::clone(&gate);
        let slow = service_fn(move |_: ()| {
            let opened = Arc::clone(&opened);
            async move {
                opened.notified().await;
                Ok::<_, Infallible>(())
            }
        });
        let running = tokio::spawn(Counted::new(slow, Arc::clone(&activity)).oneshot(()));
        tokio::task::yield_now().await;
        // A request in flight for far longer than the limit keeps the connection.
        let idle = tokio::spawn(Arc::clone(&activity).idle_for(limit));
        tokio::time::sleep(limit * 6).await;
        assert!(!idle.is_finished());
        gate.notify_one();
        running.await.unwrap().unwrap();
        // Once it is done, a whole quiet period (at most two checks) closes it.
        tokio::time::timeout(Duration::from_secs(10), idle)
            .await
            .expect("an idle connection is closed")
            .unwrap();
    }
}
