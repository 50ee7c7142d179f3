//! Admission of API requests: load shedding and the request timeout, in one layer (each layer costs every request
//! a little, and these two always go together). At most `max_concurrent` requests run, at most `max_queued` wait
//! for a slot, and the rest are refused at once with 503 and `Retry-After`, so memory and latency stay bounded under
//! any load. An admitted request either finishes or gets a 504 within `timeout`, time spent queued included.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::Semaphore;

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

/// The middleware function (`axum::middleware::from_fn_with_state`).
pub async fn admit(State(overload): State<Overload>, request: Request, next: Next) -> Response {
    let running = Arc::clone(&overload.running);
    // A free slot is taken at once; otherwise the request queues, if the queue has room.
    let (permit, queued) = match Arc::clone(&running).try_acquire_owned() {
        Ok(permit) => (Some(permit), None),
        Err(_) => {
            if overload.queued.fetch_add(1, Ordering::AcqRel) >= overload.max_queued {
                overload.queued.fetch_sub(1, Ordering::AcqRel);
                overload.metrics.request_shed();
                drain_body(request, overload.max_body_bytes).await;
                return refuse();
            }
            (None, Some(Queued(Arc::clone(&overload.queued))))
        }
    };
    let admitted = async move {
        let _permit = match permit {
            Some(permit) => permit,
            None => {
                let permit = running.acquire_owned().await;
                drop(queued);
                match permit {
                    Ok(permit) => permit,
                    Err(_) => return refuse(),
                }
            }
        };
        next.run(request).await
    };
    match tokio::time::timeout(overload.timeout, admitted).await {
        Ok(response) => response,
        // A bare 504: the V2 error mapper (`errors::v2_error_body`) gives it the body that names the setting.
        Err(_) => StatusCode::GATEWAY_TIMEOUT.into_response(),
    }
}

/// Reads and discards (without buffering) up to `limit` bytes of a request body we answer without using. Answering
/// while the client is still sending would close the connection under it, and the client would see a reset
/// instead of our answer.
pub async fn drain_body(request: Request, limit: usize) {
    use http_body_util::BodyExt;
    let mut body = request.into_body();
    let mut read = 0usize;
    while read <= limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
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
