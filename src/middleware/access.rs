//! The request log: one line per failed request (always) and per request (with `log.access`), and the `request`
//! span that carries a request's context into every log line written while it runs.
//!
//! The span is at DEBUG level, so it costs nothing unless debug logging is on for this module: an enabled span is
//! created, formatted and torn down on every request, and with the line per request that used to go with it, cost
//! 15–20 % of the small model's throughput at the default level (benches/RESULTS.md). The lines written here need
//! no span: this layer sits outside the router, between the layer that sets the request id and the one that echoes
//! it, so it knows the method and path from the request and the request id, status, model version and variant from
//! the response; a failure's message comes with the response ([`Failure`], set by [`crate::api::ApiError`], the
//! panic handler and the oversized-body check).
//!
//! Levels: a 500 (ONNX Runtime failed, a handler panicked) is an ERROR line; other 4xx/5xx answers (bad input,
//! shedding, timeouts, which Prometheus counts) are DEBUG lines, so an overload does not also flood the log; with
//! `log.access` every request gets an INFO line.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Uri};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::Instrument;

use crate::api::Failure;

/// Logs requests as described in the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct AccessLayer {
    /// An INFO line for every request, not only for failures.
    pub every_request: bool,
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            every_request: self.every_request,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Access<S> {
    inner: S,
    every_request: bool,
}

impl<S, B, ResBody> Service<Request<B>> for Access<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = AccessFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Field values are evaluated only when the span is enabled.
        let span = tracing::debug_span!(
            "request",
            request_id = request_id(request.headers()),
            method = %request.method(),
            path = request.uri().path(),
            model = tracing::field::Empty,
            version = tracing::field::Empty,
            variant = tracing::field::Empty,
        );
        let method = request.method().clone();
        let uri = request.uri().clone();
        AccessFuture {
            inner: self.inner.call(request).instrument(span),
            started: self.every_request.then(Instant::now),
            method,
            uri,
        }
    }
}

pin_project! {
    pub struct AccessFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        // Set when every request is logged (the line carries the latency).
        started: Option<Instant>,
        method: Method,
        uri: Uri,
    }
}

impl<F, ResBody, E> Future for AccessFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            log(response, this.method, this.uri, *this.started);
        }
        Poll::Ready(result)
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn log<B>(response: &Response<B>, method: &Method, uri: &Uri, started: Option<Instant>) {
    let status = response.status();
    let failed = status.is_client_error() || status.is_server_error();
    if !failed && started.is_none() {
        return;
    }
    let headers = response.headers();
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let error = response
        .extensions()
        .get::<Failure>()
        .map(|f| &*f.0)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or(""));
    macro_rules! line {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                request_id = header(&X_REQUEST_ID).unwrap_or(""),
                method = %method,
                path = uri.path(),
                status = status.as_u16(),
                model_version = header(&crate::api::MODEL_VERSION),
                variant = header(&crate::api::VARIANT),
                latency_ms = started.map(|s| s.elapsed().as_secs_f64() * 1000.0),
                error = failed.then_some(error),
                $message
            )
        };
    }
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        line!(error, "request failed");
    } else if started.is_some() {
        line!(info, "request");
    } else {
        line!(debug, "request rejected");
    }
}
