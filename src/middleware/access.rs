//! The edge of every request: its credentials hidden, its identity, its log line, panics and the V2 shape of errors.
//!
//! - Credentials (`Authorization`, `x-api-key`) are marked sensitive first, so nothing inside (the span, any debug
//!   formatting of the headers) ever prints them; the flag is set in place, without an entry lookup that could grow
//!   the request's header map.
//! - The `x-request-id` every request carries (the caller's, or a new UUID v4) is set on the request's headers, where
//!   everything inside reads it (the span, the log line, payload logging), and echoed on the response.
//! - A panic anywhere inside, in a service's `call` or while its future is polled, becomes a 500 with a V2 body
//!   ([`errors::panic_response`]); the connection and the process keep serving.
//! - A bare error status from a layer inside (the admission timeout's 504, decompression's 415, the oversized-body
//!   413) gets a V2 body ([`errors::v2_error_body`]).
//! - One log line per failed request (always) and per request (with `log.access`), and the `request` span that
//!   carries a request's context into every log line written while it runs.
//!
//! One layer and one future do all of it, because every extra layer wraps the future again, which a small model's
//! request pays for in throughput. The span is at DEBUG level, so it costs nothing unless debug logging is on for
//! this module. The lines written here need no span: this layer sits outside the router and every layer that can
//! fail, so it knows the method and path from the request and the request id, status, model version and variant from
//! the response; a failure's message comes with the response ([`Failure`], set by [`crate::api::ApiError`], the panic
//! handler and the oversized-body check).
//!
//! Levels: a 500 (ONNX Runtime failed, a handler panicked) is an ERROR line; other 4xx/5xx answers (bad input,
//! shedding, timeouts, which Prometheus counts) are DEBUG lines, so an overload does not also flood the log; with
//! `log.access` every request gets an INFO line.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::header::{Entry, AUTHORIZATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use axum::BoxError;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::Instrument;

use super::errors;
use crate::api::Failure;
use crate::otel::{RequestTrace, Tracing};

/// Gives every request an id, catches panics, shapes errors and logs requests (see the module documentation).
#[derive(Debug, Clone)]
pub struct AccessLayer {
    /// An INFO line for every request, not only for failures.
    pub every_request: bool,
    /// Distributed tracing: a server span per request, its context in the request's extensions.
    pub tracing: Option<Tracing>,
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            every_request: self.every_request,
            tracing: self.tracing.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Access<S> {
    inner: S,
    every_request: bool,
    tracing: Option<Tracing>,
}

impl<S, B, ResBody> Service<Request<B>> for Access<S>
where
    S: Service<Request<B>, Response = Response<ResBody>, Error = Infallible>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = AccessFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        mark_sensitive(request.headers_mut());
        let id = match request.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = new_request_id();
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        // Field values are evaluated only when the span is enabled.
        let span = tracing::debug_span!(
            "request",
            request_id = request_id(request.headers()),
            method = %request.method(),
            path = request.uri().path(),
            model = tracing::field::Empty,
            version = tracing::field::Empty,
            variant = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        // The server span, inside the caller's trace (its `traceparent`) or a new one; handlers find it in the
        // request's extensions.
        let trace = self
            .tracing
            .as_ref()
            .map(|t| t.request(request.headers(), request.method()));
        if let Some(trace) = &trace {
            if !span.is_disabled() {
                span.record("trace_id", trace.trace_id());
            }
            request.extensions_mut().insert(trace.clone());
        }
        let method = request.method().clone();
        let uri = request.uri().clone();
        let (inner, panicked) = match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(inner) => (Some(inner.instrument(span)), None),
            Err(panic) => (None, Some(panic)),
        };
        AccessFuture {
            inner,
            panicked,
            started: Instant::now(),
            every_request: self.every_request,
            id: Some(id),
            method,
            uri,
            trace,
        }
    }
}

pin_project! {
    pub struct AccessFuture<F> {
        // `None` when calling the inner service panicked.
        #[pin]
        inner: Option<Instrumented<F>>,
        panicked: Option<Box<dyn Any + Send>>,
        // The line of a failed request, and of every request with `log.access`, carries the latency.
        started: Instant,
        every_request: bool,
        // The request's id, for the response (taken when it is ready).
        id: Option<HeaderValue>,
        method: Method,
        uri: Uri,
        // The request's server span, ended with the response.
        trace: Option<RequestTrace>,
    }
}

impl<F, ResBody> Future for AccessFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, Infallible>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.as_pin_mut() {
            Some(inner) => match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(response))) => errors::v2_error_body(response),
                Ok(Poll::Ready(Err(never))) => match never {},
                Err(panic) => errors::panic_response(panic),
            },
            None => errors::panic_response(
                this.panicked
                    .take()
                    .unwrap_or_else(|| Box::new("polled after completion")),
            ),
        };
        if let Some(id) = this.id.take() {
            response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
        }
        log(
            &response,
            this.method,
            this.uri,
            *this.started,
            *this.every_request,
            this.trace.as_ref(),
        );
        if let Some(trace) = this.trace.take() {
            let status = response.status();
            let failed = status.is_client_error() || status.is_server_error();
            trace.finish(
                this.method.as_str(),
                this.uri.path(),
                status.as_u16(),
                failed.then(|| failure(&response)),
            );
            trace.inject(response.headers_mut());
        }
        Poll::Ready(Ok(response))
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request headers that carry credentials.
const CREDENTIALS: [HeaderName; 2] = [AUTHORIZATION, super::API_KEY];

/// Marks every credential header sensitive. `contains_key` first: `entry` would reserve room for an insert.
fn mark_sensitive(headers: &mut HeaderMap) {
    for name in &CREDENTIALS {
        if !headers.contains_key(name) {
            continue;
        }
        if let Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

/// A random UUID (v4), formatted on the stack: one allocation, for the header value.
fn new_request_id() -> HeaderValue {
    let mut buffer = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(id).expect("a UUID is a valid header value")
}

fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// What a failed response says went wrong: the message it came with, else its status's reason.
fn failure<B>(response: &Response<B>) -> &str {
    response
        .extensions()
        .get::<Failure>()
        .map(|f| &*f.0)
        .unwrap_or_else(|| response.status().canonical_reason().unwrap_or(""))
}

fn log<B>(
    response: &Response<B>,
    method: &Method,
    uri: &Uri,
    started: Instant,
    every_request: bool,
    trace: Option<&RequestTrace>,
) {
    let status = response.status();
    let failed = status.is_client_error() || status.is_server_error();
    if !failed && !every_request {
        return;
    }
    let headers = response.headers();
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let error = failure(response);
    let trace_id = trace.map(RequestTrace::trace_id);
    let span_id = trace.map(RequestTrace::span_id);
    macro_rules! line {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                request_id = header(&X_REQUEST_ID).unwrap_or(""),
                method = %method,
                path = uri.path(),
                status = status.as_u16(),
                model_version = header(&crate::api::MODEL_VERSION),
                variant = header(&crate::api::VARIANT),
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                error = failed.then_some(error),
                trace_id = trace_id.as_deref(),
                span_id = span_id.as_deref(),
                $message
            )
        };
    }
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        line!(error, "request failed");
    } else if every_request {
        line!(info, "request");
    } else {
        line!(debug, "request rejected");
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::{Layer, ServiceExt};

    use super::*;

    /// An inner service that answers with the request id it was given, in the body.
    fn echo_inner() -> Access<
        impl Service<
                Request<Body>,
                Response = Response<Body>,
                Error = std::convert::Infallible,
                Future: Send,
            > + Clone,
    > {
        AccessLayer {
            every_request: false,
            tracing: None,
        }
        .layer(tower::service_fn(|request: Request<Body>| async move {
            let seen = request_id(request.headers()).to_owned();
            Ok(Response::new(Body::from(seen)))
        }))
    }

    async fn send(request: Request<Body>) -> (Option<HeaderValue>, String) {
        let response = echo_inner().oneshot(request).await.unwrap();
        let id = response.headers().get(&X_REQUEST_ID).cloned();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        (id, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_request_without_an_id_gets_a_new_one_inside_and_on_the_response() {
        let (first, seen) = send(Request::new(Body::empty())).await;
        let first = first.expect("the response carries an id");
        assert_eq!(
            first.to_str().unwrap(),
            seen,
            "the same id inside as outside"
        );
        assert_eq!(uuid::Uuid::parse_str(&seen).unwrap().get_version_num(), 4);
        let (second, _) = send(Request::new(Body::empty())).await;
        assert_ne!(second.unwrap(), first, "each request gets its own id");
    }

    #[tokio::test]
    async fn the_callers_id_is_kept_inside_and_echoed() {
        let request = Request::builder()
            .header("x-request-id", "caller-7")
            .body(Body::empty())
            .unwrap();
        let (id, seen) = send(request).await;
        assert_eq!(id.unwrap(), "caller-7");
        assert_eq!(seen, "caller-7");
    }

    #[tokio::test]
    async fn an_id_the_handler_set_on_the_response_is_not_replaced() {
        let service = AccessLayer {
            every_request: false,
            tracing: None,
        }
        .layer(tower::service_fn(|_: Request<Body>| async {
            let mut response = Response::new(Body::empty());
            response
                .headers_mut()
                .insert(X_REQUEST_ID, HeaderValue::from_static("from-handler"));
            Ok::<_, std::convert::Infallible>(response)
        }));
        let request = Request::builder()
            .header("x-request-id", "caller-8")
            .body(Body::empty())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.headers()[&X_REQUEST_ID], "from-handler");
    }

    /// A service that panics in `call` itself (not in its future).
    #[derive(Clone)]
    struct PanicsInCall;

    impl Service<Request<Body>> for PanicsInCall {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Response<Body>, std::convert::Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            panic!("in call")
        }
    }

    #[tokio::test]
    async fn panics_in_call_or_while_polled_become_500s_with_v2_bodies_and_ids() {
        let in_call = AccessLayer {
            every_request: false,
            tracing: None,
        }
        .layer(PanicsInCall);
        let while_polled = AccessLayer {
            every_request: false,
            tracing: None,
        }
        .layer(tower::service_fn(|_: Request<Body>| async {
            if true {
                panic!("while polled");
            }
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        }));
        let request = || {
            Request::builder()
                .header("x-request-id", "panicky")
                .body(Body::empty())
                .unwrap()
        };
        let responses = [
            (in_call.oneshot(request()).await.unwrap(), "in call"),
            (
                while_polled.oneshot(request()).await.unwrap(),
                "while polled",
            ),
        ];
        for (response, what) in responses {
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(response.headers()[&X_REQUEST_ID], "panicky");
            let failure = response.extensions().get::<Failure>().unwrap();
            assert!(failure.0.ends_with(what), "{}", failure.0);
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(
                body["error"].as_str().unwrap().contains("internal error"),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn credentials_reach_the_inside_marked_sensitive_and_other_headers_do_not() {
        let service = AccessLayer {
            every_request: false,
            tracing: None,
        }
        .layer(tower::service_fn(|request: Request<Body>| async move {
            let sensitive = |name: &str| {
                let values: Vec<bool> = request
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(HeaderValue::is_sensitive)
                    .collect();
                format!("{name}={values:?}")
            };
            let seen = [
                sensitive("authorization"),
                sensitive("x-api-key"),
                sensitive("content-type"),
            ];
            Ok(Response::new(Body::from(seen.join(" "))))
        }));
        let request = Request::builder()
            .header("authorization", "Bearer secret")
            .header("x-api-key", "one")
            .header("x-api-key", "two")
            .header("content-type", "application/json")
            .body(Body::empty())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(
            body,
            "authorization=[true] x-api-key=[true, true] content-type=[false]"
        );
    }
}
