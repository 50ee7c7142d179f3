//! Response compression for the clients that ask for it.
//!
//! tower-http's `Compression` wraps every response body in its compressing body, asked or not, and that body is large
//! enough that turning it into axum's `Body` at the edge costs a boxed copy per request. A request without
//! `Accept-Encoding` cannot get a compressed answer, so it skips the layer: its response keeps its body and gets the
//! `Vary: accept-encoding` the layer would have added (caches must still tell the two kinds apart). Requests that
//! ask go through `Compression` unchanged (encodings, predicates and all).

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::header::{ACCEPT_ENCODING, VARY};
use axum::http::{HeaderValue, Request};
use axum::response::Response;
use axum::BoxError;
use futures_util::future::{Either, Map};
use futures_util::FutureExt;
use tower::{Layer, Service};
use tower_http::compression::{Compression, CompressionBody, CompressionLayer};

use super::into_axum_body;

/// Compresses responses to requests that carry `Accept-Encoding`; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompressWhenAskedLayer;

impl<S> Layer<S> for CompressWhenAskedLayer {
    type Service = CompressWhenAsked<S>;

    fn layer(&self, inner: S) -> CompressWhenAsked<S> {
        CompressWhenAsked {
            compressing: CompressionLayer::new().layer(inner),
        }
    }
}

/// The inner service behind `Compression`, which is called directly when the client does not ask.
#[derive(Clone)]
pub struct CompressWhenAsked<S> {
    compressing: Compression<S>,
}

type Compressed<F, B> = Map<
    tower_http::compression::ResponseFuture<F, tower_http::compression::DefaultPredicate>,
    fn(Result<Response<CompressionBody<B>>, Infallible>) -> Result<Response, Infallible>,
>;
type Plain<F, B> = Map<F, fn(Result<Response<B>, Infallible>) -> Result<Response, Infallible>>;

impl<S, B, ResBody> Service<Request<B>> for CompressWhenAsked<S>
where
    S: Service<Request<B>, Response = Response<ResBody>, Error = Infallible>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Compressed<S::Future, ResBody>, Plain<S::Future, ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // `Compression` is ready when the inner service is.
        self.compressing.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.headers().contains_key(ACCEPT_ENCODING) {
            Either::Left(
                self.compressing
                    .call(request)
                    .map(into_axum_body::<CompressionBody<ResBody>>),
            )
        } else {
            Either::Right(
                self.compressing
                    .get_mut()
                    .call(request)
                    .map(add_vary::<ResBody>),
            )
        }
    }
}

fn add_vary<B>(result: Result<Response<B>, Infallible>) -> Result<Response, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    into_axum_body(result).map(|mut response| {
        if !response.headers().contains_key(VARY) {
            response
                .headers_mut()
                .insert(VARY, HeaderValue::from_static("accept-encoding"));
        }
        response
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::header::CONTENT_ENCODING;
    use axum::routing::get;
    use axum::Router;

    use super::*;

    fn app() -> CompressWhenAsked<Router> {
        let text = "sluice ".repeat(200);
        let router = Router::new().route(
            "/",
            get(move || async move { ([("content-type", "application/json")], text) }),
        );
        CompressWhenAskedLayer.layer(router)
    }

    async fn get_with(accept: Option<&str>) -> (Response, Bytes) {
        let mut request = Request::builder().uri("/");
        if let Some(accept) = accept {
            request = request.header(ACCEPT_ENCODING, accept);
        }
        super::super::respond(app(), request.body(Body::empty()).unwrap()).await
    }

    #[tokio::test]
    async fn clients_that_ask_get_gzip_and_the_others_plain_bytes_both_with_vary() {
        let (plain, bytes) = get_with(None).await;
        assert_eq!(plain.headers().get(CONTENT_ENCODING), None);
        assert_eq!(plain.headers()[VARY], "accept-encoding");
        assert_eq!(bytes, "sluice ".repeat(200));

        let (gzip, compressed) = get_with(Some("gzip")).await;
        assert_eq!(gzip.headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(gzip.headers()[VARY], "accept-encoding");
        assert!(compressed.len() < bytes.len() / 4, "{}", compressed.len());
        let mut inflated = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&compressed[..]),
            &mut inflated,
        )
        .unwrap();
        assert_eq!(inflated, "sluice ".repeat(200));

        // Asking for nothing it can do: plain bytes, through the compression layer.
        let (identity, bytes) = get_with(Some("br;q=0")).await;
        assert_eq!(identity.headers().get(CONTENT_ENCODING), None);
        assert_eq!(bytes, "sluice ".repeat(200));
    }
}
