//! Response compression where it pays: gzip or deflate at the fastest level, for clients that ask, on inference
//! results (and `/metrics`) of at least `server.compress_min_bytes` that are not dense already.
//!
//! As in Triton, only inference results are compressed, recognised by the `x-model-version` header every one carries
//! (and the metrics exposition, by its `text/plain` type): metadata, health, index and error bodies go as they are,
//! because Triton's async client turns automatic decompression off and inflates only inference responses. The
//! decision is made on the response: what it is, its size (every response sluice builds has an exact length), its
//! `Content-Type` (binary tensors, images and gRPC are left alone) and whether it is encoded already. A response that
//! is not compressed keeps its own body, with no wrapper and no compressor state, so a one-row answer to a client
//! that sends `Accept-Encoding: gzip` (Python `requests`, `httpx`, Go) costs what it costs one that does not. A
//! compressed body is encoded as it is sent, a chunk at a time. Every response gets `Vary: accept-encoding`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_compression::tokio::bufread::{GzipEncoder, ZlibEncoder};
use async_compression::Level;
use axum::body::{Body, Bytes};
use axum::http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Request};
use axum::response::Response;
use axum::BoxError;
use futures_util::TryStreamExt;
use http_body::Body as HttpBody;
use tokio_util::io::{ReaderStream, StreamReader};
use tower::{Layer, Service};

use crate::api::MODEL_VERSION;

/// Compresses responses for clients that ask; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct CompressLayer {
    /// Responses shorter than this are sent as they are.
    pub min_bytes: usize,
}

impl<S> Layer<S> for CompressLayer {
    type Service = Compress<S>;

    fn layer(&self, inner: S) -> Compress<S> {
        Compress {
            inner,
            min_bytes: self.min_bytes,
        }
    }
}

#[derive(Clone)]
pub struct Compress<S> {
    inner: S,
    min_bytes: usize,
}

/// The content codings sluice can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
}

impl Coding {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        })
    }
}

impl<S, B, ResBody> Service<Request<B>> for Compress<S>
where
    S: Service<Request<B>, Response = Response<ResBody>, Error = Infallible>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CompressFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let coding = preferred_coding(request.headers());
        CompressFuture {
            inner: self.inner.call(request),
            coding,
            min_bytes: self.min_bytes,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner response, compressed if it should be.
    pub struct CompressFuture<F> {
        #[pin]
        inner: F,
        coding: Option<Coding>,
        min_bytes: usize,
    }
}

impl<F, ResBody> Future for CompressFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, Infallible>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        Poll::Ready(Ok(finish(response, *this.coding, *this.min_bytes)))
    }
}

/// The response, compressed with `coding` when it is an inference result or the metrics and worth it, with `Vary: accept-encoding`.
fn finish<B>(response: Response<B>, coding: Option<Coding>, min_bytes: usize) -> Response
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    if !parts.headers.contains_key(VARY) {
        parts
            .headers
            .insert(VARY, HeaderValue::from_static("accept-encoding"));
    }
    let coding = coding.filter(|_| worth_compressing(&parts.headers, &body, min_bytes));
    let Some(coding) = coding else {
        return Response::from_parts(parts, Body::new(body));
    };
    parts.headers.insert(CONTENT_ENCODING, coding.header());
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(ACCEPT_RANGES);
    let reader = StreamReader::new(
        http_body_util::BodyDataStream::new(body).map_err(|e| std::io::Error::other(e.into())),
    );
    let body = match coding {
        Coding::Gzip => Body::from_stream(ReaderStream::new(GzipEncoder::with_quality(
            reader,
            Level::Fastest,
        ))),
        Coding::Deflate => Body::from_stream(ReaderStream::new(ZlibEncoder::with_quality(
            reader,
            Level::Fastest,
        ))),
    };
    Response::from_parts(parts, body)
}

/// A response is compressed when it is an inference result or the metrics, at least `min_bytes` long (or of unknown
/// length), not encoded already and not of a dense type.
fn worth_compressing(headers: &HeaderMap, body: &impl HttpBody, min_bytes: usize) -> bool {
    if headers.contains_key(CONTENT_ENCODING) {
        return false;
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !headers.contains_key(MODEL_VERSION) && !content_type.starts_with("text/plain") {
        return false;
    }
    let hint = body.size_hint();
    if hint.upper().is_some_and(|n| n < min_bytes as u64) {
        return false;
    }
    !(content_type.starts_with("application/octet-stream")
        || content_type.starts_with("application/grpc")
        || content_type.starts_with("image/")
        || content_type.starts_with("text/event-stream"))
}

/// The coding to answer with: gzip when the client accepts it, else deflate, else none (identity). `q=0` refuses a
/// coding; `*` accepts any not named.
fn preferred_coding(headers: &HeaderMap) -> Option<Coding> {
    let (mut gzip, mut deflate, mut any) = (None, None, None);
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut fields = item.split(';');
            let name = fields.next().unwrap_or("").trim();
            let accepted = fields
                .filter_map(|f| f.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next_back()
                .is_none_or(|q| q > 0.0);
            // Codings are case-insensitive; compared in place, without a lowered copy.
            if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(accepted);
            } else if name.eq_ignore_ascii_case("deflate") {
                deflate = Some(accepted);
            } else if name == "*" {
                any = Some(accepted);
            }
        }
    }
    if gzip.or(any) == Some(true) {
        Some(Coding::Gzip)
    } else if deflate.or(any) == Some(true) {
        Some(Coding::Deflate)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use axum::Router;

    use super::*;

    fn app() -> Compress<Router> {
        let text = "sluice ".repeat(200);
        let metadata = text.clone();
        let json = [
            ("content-type", "application/json"),
            ("x-model-version", "1"),
        ];
        let plain_json = [("content-type", "application/json")];
        let router = Router::new()
            .route("/", get(move || async move { (json, text) }))
            .route(
                "/metadata",
                get(move || async move { (plain_json, metadata) }),
            )
            .route("/small", get(move || async move { (json, "{\"a\": 1}") }))
            .route(
                "/binary",
                get(|| async {
                    (
                        [
                            ("content-type", "application/octet-stream"),
                            ("x-model-version", "1"),
                        ],
                        vec![7u8; 4096],
                    )
                }),
            );
        CompressLayer { min_bytes: 1024 }.layer(router)
    }

    async fn get_with(path: &str, accept: Option<&str>) -> (Response, Bytes) {
        let mut request = Request::builder().uri(path);
        if let Some(accept) = accept {
            request = request.header(ACCEPT_ENCODING, accept);
        }
        super::super::respond(app(), request.body(Body::empty()).unwrap()).await
    }

    fn inflate(coding: &str, bytes: &[u8]) -> String {
        let mut inflated = String::new();
        let mut reader: Box<dyn std::io::Read> = match coding {
            "gzip" => Box::new(flate2::read::GzDecoder::new(bytes)),
            _ => Box::new(flate2::read::ZlibDecoder::new(bytes)),
        };
        reader.read_to_string(&mut inflated).unwrap();
        inflated
    }

    #[tokio::test]
    async fn clients_that_ask_get_large_results_compressed_and_everything_gets_vary() {
        let (plain, bytes) = get_with("/", None).await;
        assert_eq!(plain.headers().get(CONTENT_ENCODING), None);
        assert_eq!(plain.headers()[VARY], "accept-encoding");
        assert_eq!(bytes, "sluice ".repeat(200));

        for (accept, coding) in [
            ("gzip, deflate", "gzip"),
            ("deflate", "deflate"),
            ("br, *", "gzip"),
            ("gzip;q=0, deflate;q=0.5", "deflate"),
        ] {
            let (response, compressed) = get_with("/", Some(accept)).await;
            assert_eq!(response.headers()[CONTENT_ENCODING], coding, "{accept}");
            assert_eq!(response.headers()[VARY], "accept-encoding");
            assert_eq!(response.headers().get(CONTENT_LENGTH), None);
            assert!(compressed.len() < bytes.len() / 4, "{}", compressed.len());
            assert_eq!(inflate(coding, &compressed), "sluice ".repeat(200));
        }

        // Asking for nothing it can do, a large body that is no inference result, a small answer, a dense one:
        // plain bytes.
        for (path, accept) in [
            ("/", "br;q=1, gzip;q=0, *;q=0"),
            ("/metadata", "gzip, deflate, br"),
            ("/small", "gzip"),
            ("/binary", "gzip"),
        ] {
            let (response, _) = get_with(path, Some(accept)).await;
            assert_eq!(
                response.headers().get(CONTENT_ENCODING),
                None,
                "{path} {accept}"
            );
            assert_eq!(response.headers()[VARY], "accept-encoding");
        }
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        let coding = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
            preferred_coding(&headers)
        };
        assert_eq!(coding("gzip, deflate"), Some(Coding::Gzip));
        assert_eq!(coding("GZIP"), Some(Coding::Gzip));
        assert_eq!(coding("br, X-Gzip;q=1"), Some(Coding::Gzip));
        assert_eq!(coding("DEFLATE"), Some(Coding::Deflate));
        assert_eq!(coding("deflate, br"), Some(Coding::Deflate));
        assert_eq!(coding("identity"), None);
        assert_eq!(coding("gzip;q=0"), None);
        assert_eq!(coding("*"), Some(Coding::Gzip));
        assert_eq!(coding("*;q=0, deflate"), Some(Coding::Deflate));
        assert_eq!(coding("br"), None);
        assert_eq!(preferred_coding(&HeaderMap::new()), None);
    }
}
