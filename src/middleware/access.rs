//! A request's identity and its log line: the `x-request-id` every request carries (the caller's, or a new UUID v4),
//! echoed on the response; one log line per failed request (always) and per request (with `log.access`); and the
//! `request` span that carries a request's context into every log line written while it runs.
//!
//! The id is set on the request's headers, where everything inside reads it (the span, the log line, payload
//! logging). One layer does what tower-http's `SetRequestId` and `PropagateRequestId` did with this one between
//! them: they also stored the id in the request's and the response's extensions (two maps and two entries allocated
//! per request, which nothing here read), and the three layers together cost a small-model request about 5 % of its
//! throughput (benches/RESULTS.md).
//!
//! The span is at DEBUG level, so it costs nothing unless debug logging is on for this module: an enabled span is
//! created, formatted and torn down on every request, and with the line per request that used to go with it, cost
//! 15–20 % of the small model's throughput at the default level (benches/RESULTS.md). The lines written here need
//! no span: this layer sits outside the router and outside every layer that can fail, so it knows the method and
//! path from the request and the request id, status, model version and variant from the response; a failure's
//! message comes with the response ([`Failure`], set by [`crate::api::ApiError`], the panic handler and the
//! oversized-body check).
//!
//! Levels: a 500 (ONNX Runtime failed, a handler panicked) is an ERROR line; other 4xx/5xx answers (bad input,
//! shedding, timeouts, which Prometheus counts) are DEBUG lines, so an overload does not also flood the log; with
//! `log.access` every request gets an INFO line.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::Instrument;

use crate::api::Failure;

/// Gives every request an id and logs requests, as described in the module documentation.
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
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
        );
        let method = request.method().clone();
        let uri = request.uri().clone();
        AccessFuture {
            inner: self.inner.call(request).instrument(span),
            started: self.every_request.then(Instant::now),
            id: Some(id),
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
        // The request's id, for the response (taken when it is ready).
        id: Option<HeaderValue>,
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
        let mut result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &mut result {
            if let Some(id) = this.id.take() {
                response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
            }
            log(response, this.method, this.uri, *this.started);
        }
        Poll::Ready(result)
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
}
