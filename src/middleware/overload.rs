//! Admission of API requests: load shedding and the request timeout, in one layer (each layer costs every request
//! a little, and these two always go together). At most `max_concurrent` requests run, at most `max_queued` wait
//! for a slot, and the rest are refused at once with 503 and `Retry-After`, so memory and latency stay bounded under
//! any load. An admitted request either finishes or gets a 504 within `timeout`, time spent queued included.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::future::{BoxFuture, Either};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Overload {
    /// One permit per request allowed to run.
    running: Arc<Semaphore>,
    /// Requests waiting for a permit now; atomic because it is checked and bumped on every request without a lock.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    /// Read (and discarded) from a refused request, so the client gets the 503 instead of a reset connection.
    max_body_bytes: usize,
    /// From arrival to response, queueing included.
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// Decrements the queue count when a waiter leaves (got a permit, or the request was dropped by a timeout).
struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Overload {
    pub fn new(
        max_concurrent: usize,
        max_queued: usize,
        max_body_bytes: usize,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Overload {
        Overload {
            max_body_bytes,
            timeout,
            running: Arc::new(Semaphore::new(max_concurrent)),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued,
            metrics,
        }
    }
}

impl Overload {
    /// Admission as configured: `limits.max_concurrent_requests` slots, `limits.max_queued_requests` waiting,
    /// `server.request_timeout_ms`.
    pub fn from_settings(settings: &crate::config::Settings, metrics: Arc<Metrics>) -> Overload {
        Overload::new(
            settings.limits.max_concurrent_requests,
            settings.limits.max_queued_requests,
            settings.server.max_body_bytes,
            Duration::from_millis(settings.server.request_timeout_ms),
            metrics,
        )
    }

    /// Admission for a front end other than the HTTP stack (gRPC), sharing its slots and queue: a slot at once, or
    /// one after waiting in the queue, or `None` when the queue is full (the request is shed, and counted).
    pub async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.running).try_acquire_owned() {
            return Some(permit);
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics.requests.shed();
            return None;
        }
        let _queued = Queued(Arc::clone(&self.queued));
        Arc::clone(&self.running).acquire_owned().await.ok()
    }

    /// How long an admitted request may take, queueing included (`server.request_timeout_ms`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S> Layer<S> for Overload {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            overload: Arc::new(self.clone()),
        }
    }
}

/// The admission service: a tower layer with its own future, because it runs on every API request and a boxed
/// middleware function allocates twice per request and calls through two more trait objects.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    /// Shared: the whole middleware stack is cloned for every request (hyper's service adapter does), so a clone
    /// here is one reference count, not one per field.
    overload: Arc<Overload>,
}

impl<S, B> Service<Request<B>> for Admission<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Admitted<S::Future>, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let overload = &self.overload;
        if unlimited(request.uri().path()) {
            return Either::Right(Box::pin(self.inner.call(request)));
        }
        // A free slot is taken at once: the common case, without allocating.
        if let Ok(permit) = Arc::clone(&overload.running).try_acquire_owned() {
            return Either::Left(Admitted {
                inner: tokio::time::timeout(overload.timeout, self.inner.call(request)),
                _permit: permit,
            });
        }
        // Otherwise the request queues, if the queue has room.
        if overload.queued.fetch_add(1, Ordering::AcqRel) >= overload.max_queued {
            overload.queued.fetch_sub(1, Ordering::AcqRel);
            overload.metrics.requests.shed();
            let max_body_bytes = overload.max_body_bytes;
            return Either::Right(Box::pin(async move {
                crate::api::drain_body(request.into_body(), max_body_bytes).await;
                Ok(refuse())
            }));
        }
        // The service that was polled ready serves this request when it gets a slot; a clone is left for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let queued = Queued(Arc::clone(&overload.queued));
        let running = Arc::clone(&overload.running);
        let waited = async move {
            let permit = running.acquire_owned().await;
            drop(queued);
            match permit {
                Ok(_permit) => inner.call(request).await,
                Err(_) => Ok(refuse()),
            }
        };
        let timeout = overload.timeout;
        Either::Right(Box::pin(async move {
            tokio::time::timeout(timeout, waited)
                .await
                .unwrap_or_else(|_| Ok(timed_out()))
        }))
    }
}

/// Health probes, metrics and the API description answer even when the server is saturated.
fn unlimited(path: &str) -> bool {
    crate::api::UNLIMITED_PATHS.contains(&path)
}

pin_project! {
    /// An admitted request: its slot is held until the response (or the timeout) completes.
    pub struct Admitted<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        _permit: OwnedSemaphorePermit,
    }
}

impl<F> Future for Admitted<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::task::ready!(self.project().inner.poll(cx)) {
            Ok(result) => Poll::Ready(result),
            Err(_) => Poll::Ready(Ok(timed_out())),
        }
    }
}

/// A bare 504: the V2 error mapper (`errors::v2_error_body`) gives it the body that names the setting.
fn timed_out() -> Response {
    StatusCode::GATEWAY_TIMEOUT.into_response()
}

fn refuse() -> Response {
    let body = Json(
        serde_json::json!({"error": "server overloaded: too many requests in flight and queued; retry later"}),
    );
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    /// Holds the only slot with a request that waits for `release`; a second API request is shed at once, a probe is
    /// let through, and once the slot is free API requests run again.
    #[tokio::test]
    async fn saturated_admission_sheds_api_requests_and_lets_probes_through() {
        let release = Arc::new(tokio::sync::Notify::new());
        let inner = {
            let release = Arc::clone(&release);
            tower::service_fn(move |request: Request<Body>| {
                let release = Arc::clone(&release);
                async move {
                    if request.uri().path() == "/v2/models/slow/infer" {
                        release.notified().await;
                    }
                    Ok::<_, Infallible>(StatusCode::OK.into_response())
                }
            })
        };
        let metrics = Arc::new(Metrics::new().unwrap());
        let overload = Overload::new(1, 0, 1024, Duration::from_secs(60), metrics);
        let service = overload.layer(inner);
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();

        let held = tokio::spawn(service.clone().oneshot(get("/v2/models/slow/infer")));
        while overload.running.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let shed = service
            .clone()
            .oneshot(get("/v2/models/m/infer"))
            .await
            .unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()[RETRY_AFTER], "1");
        for probe in crate::api::UNLIMITED_PATHS {
            let answered = service.clone().oneshot(get(probe)).await.unwrap();
            assert_eq!(answered.status(), StatusCode::OK, "{probe}");
        }

        release.notify_one();
        assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::OK);
        let after = service.oneshot(get("/v2/models/m/infer")).await.unwrap();
        assert_eq!(after.status(), StatusCode::OK);
    }

    /// A request that outlives the timeout (queueing included) gets a 504, and its slot is freed.
    #[tokio::test(start_paused = true)]
    async fn admitted_requests_time_out_and_free_their_slot() {
        let inner = tower::service_fn(|_: Request<Body>| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(StatusCode::OK.into_response())
        });
        let metrics = Arc::new(Metrics::new().unwrap());
        let overload = Overload::new(1, 1, 1024, Duration::from_millis(50), metrics);
        let service = overload.layer(inner);
        let get = || {
            Request::get("/v2/models/m/infer")
                .body(Body::empty())
                .unwrap()
        };
        let (first, queued) = tokio::join!(
            service.clone().oneshot(get()),
            service.clone().oneshot(get())
        );
        assert_eq!(first.unwrap().status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(queued.unwrap().status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(overload.running.available_permits(), 1);
        assert_eq!(overload.queued.load(Ordering::Acquire), 0);
    }
}
