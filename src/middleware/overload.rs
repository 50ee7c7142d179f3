//! Load shedding: at most `max_concurrent` requests run, at most `max_queued` wait for a slot, and the rest are
//! refused at once with 503 and `Retry-After`, so memory and latency stay bounded under any load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
        metrics: Arc<Metrics>,
    ) -> Overload {
        Overload {
            max_body_bytes,
            running: Arc::new(Semaphore::new(max_concurrent)),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued,
            metrics,
        }
    }
}

/// The middleware function (`axum::middleware::from_fn_with_state`).
pub async fn shed(State(overload): State<Overload>, request: Request, next: Next) -> Response {
    let permit = match Arc::clone(&overload.running).try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            if overload.queued.fetch_add(1, Ordering::AcqRel) >= overload.max_queued {
                overload.queued.fetch_sub(1, Ordering::AcqRel);
                overload.metrics.request_shed();
                drain_body(request, overload.max_body_bytes).await;
                return refuse();
            }
            let _queued = Queued(Arc::clone(&overload.queued));
            match Arc::clone(&overload.running).acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => return refuse(),
            }
        }
    };
    let response = next.run(request).await;
    drop(permit);
    response
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
