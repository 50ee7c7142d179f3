//! Refuses a body whose declared `Content-Length` is over `server.max_body_bytes` with 413 before any handler
//! runs. The body is read and discarded (bounded), so the client receives the 413 instead of a reset connection.
//! Bodies without a length (chunked, or compressed and inflating past the limit) are stopped while they are read:
//! by the inference handlers' own limit, and by `DefaultBodyLimit` for the router's body extractors.
//!
//! A tower layer with its own future: it sees every request, and only a refusal allocates.

use std::task::{Context, Poll};

use axum::body::{Bytes, HttpBody};
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use axum::http::{Request, Response, StatusCode};
use futures_util::future::{BoxFuture, Either};
use tower::{Layer, Service};

use crate::api::Failure;

/// Declared bodies up to this many times the limit are drained before answering; larger ones are cut off.
const DRAIN_FACTOR: usize = 8;

#[derive(Debug, Clone, Copy)]
pub struct RefuseOversizedLayer {
    pub max_body_bytes: usize,
}

impl<S> Layer<S> for RefuseOversizedLayer {
    type Service = RefuseOversized<S>;

    fn layer(&self, inner: S) -> RefuseOversized<S> {
        RefuseOversized {
            inner,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RefuseOversized<S> {
    inner: S,
    max_body_bytes: usize,
}

impl<S, B, ResBody> Service<Request<B>> for RefuseOversized<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<ResBody>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let max = self.max_body_bytes;
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        // A compressed body's length says nothing about its inflated size; the extractor limit handles it.
        let encoded = request.headers().contains_key(CONTENT_ENCODING);
        match declared {
            Some(length) if length > max && !encoded => Either::Right(Box::pin(async move {
                crate::api::drain_body(request.into_body(), max.saturating_mul(DRAIN_FACTOR)).await;
                // An empty 413 with the reason attached: the V2 error mapper outside writes the body from it.
                let message = format!(
                    "request body of {length} bytes is over the limit of {max} (server.max_body_bytes)"
                );
                let mut response = Response::new(ResBody::default());
                *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                response.extensions_mut().insert(Failure(message.into()));
                Ok(response)
            })),
            _ => Either::Left(self.inner.call(request)),
        }
    }
}
