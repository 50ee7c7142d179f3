//! Request decompression for the requests that need it.
//!
//! tower-http's `RequestDecompression` wraps every request body in its decompressing body and boxes every response
//! body again (`UnsyncBoxBody`), encoded request or not; turned into axum's `Body` at the edge, that made three boxes
//! around each response body, each polled through its own vtable. A request without `Content-Encoding` has nothing
//! to inflate, so it skips the layer: its body becomes axum's `Body` (the box the handlers needed anyway) and its
//! response passes through untouched. Requests with `Content-Encoding` go through `RequestDecompression` unchanged:
//! gzip and deflate are inflated, any other encoding is answered 415 with the accepted ones.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::header::CONTENT_ENCODING;
use axum::http::Request;
use axum::response::Response;
use axum::BoxError;
use futures_util::future::{Either, Map};
use futures_util::FutureExt;
use tower::{Layer, Service};
use tower_http::decompression::{
    RequestDecompression, RequestDecompressionFuture, RequestDecompressionLayer,
};

use super::into_axum_body;

/// Inflates request bodies that carry `Content-Encoding`; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecompressWhenEncodedLayer;

impl<S> Layer<S> for DecompressWhenEncodedLayer {
    type Service = DecompressWhenEncoded<S>;

    fn layer(&self, inner: S) -> DecompressWhenEncoded<S> {
        DecompressWhenEncoded {
            decompressing: RequestDecompressionLayer::new().layer(AxumBody { inner }),
        }
    }
}

/// The inner service behind `RequestDecompression`, which is called directly for requests that are not encoded.
#[derive(Clone)]
pub struct DecompressWhenEncoded<S> {
    decompressing: RequestDecompression<AxumBody<S>>,
}

/// The response body `RequestDecompression` returns.
type Inflated = tower_http::body::UnsyncBoxBody<Bytes, BoxError>;

type Decompressed<F> = Map<
    RequestDecompressionFuture<F, Body, Infallible>,
    fn(Result<Response<Inflated>, Infallible>) -> Result<Response, Infallible>,
>;

impl<S, B> Service<Request<B>> for DecompressWhenEncoded<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + Sync,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Decompressed<S::Future>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // `RequestDecompression` is ready when the inner service is.
        self.decompressing.get_mut().inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.headers().contains_key(CONTENT_ENCODING) {
            Either::Left(
                self.decompressing
                    .call(request)
                    .map(into_axum_body::<Inflated>),
            )
        } else {
            Either::Right(
                self.decompressing
                    .get_mut()
                    .inner
                    .call(request.map(Body::new)),
            )
        }
    }
}

/// Hands the inflating body to the inner service as axum's `Body`, so both kinds of request reach it alike.
#[derive(Clone)]
pub struct AxumBody<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for AxumBody<S>
where
    S: Service<Request<Body>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        self.inner.call(request.map(Body::new))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::header::ACCEPT_ENCODING;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;

    use super::*;

    /// Echoes the request body and whether it still declared an encoding.
    fn app() -> DecompressWhenEncoded<Router> {
        let router = Router::new().route(
            "/",
            post(|headers: axum::http::HeaderMap, body: Bytes| async move {
                let encoded = headers.contains_key(CONTENT_ENCODING);
                ([("x-encoded", encoded.to_string())], body)
            }),
        );
        DecompressWhenEncodedLayer.layer(router)
    }

    async fn post_with(encoding: Option<&str>, body: Vec<u8>) -> (Response, Bytes) {
        let mut request = Request::builder().method("POST").uri("/");
        if let Some(encoding) = encoding {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        super::super::respond(app(), request.body(Body::from(body)).unwrap()).await
    }

    #[tokio::test]
    async fn plain_bodies_pass_through_gzip_is_inflated_and_unknown_encodings_get_415() {
        let text = "sluice ".repeat(200);
        let (plain, bytes) = post_with(None, text.clone().into_bytes()).await;
        assert_eq!(plain.status(), StatusCode::OK);
        assert_eq!(plain.headers()["x-encoded"], "false");
        assert_eq!(bytes, text);

        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(text.as_bytes()).unwrap();
        let (inflated, bytes) = post_with(Some("gzip"), gzip.finish().unwrap()).await;
        assert_eq!(inflated.status(), StatusCode::OK);
        // The layer removes the header once it has inflated the body.
        assert_eq!(inflated.headers()["x-encoded"], "false");
        assert_eq!(bytes, text);

        let (refused, _) = post_with(Some("compress"), text.into_bytes()).await;
        assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(refused.headers().contains_key(ACCEPT_ENCODING));
    }
}
