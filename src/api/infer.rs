//! `POST /v2/models/{m}[/versions/{v}]/infer`: V2 JSON in, V2 JSON out, through the inference tower stack.
//!
//! Both routes are registered in the router like every other, and [`InferRoutes`] also serves them ahead of the
//! router, because axum's routing (route matching, path extraction into extensions, boxing the route and its
//! handler's future) costs a small model's request a noticeable share of its throughput.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::BoxError;
use futures_util::future::{BoxFuture, Either};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tower::{Service, ServiceExt};

use super::schema;
use super::{ApiError, AppState, V2Path};
use crate::inference::{InferCall, Payload, OFF_WORKER_BYTES};
use crate::memory::{Footprint, MemoryError, Reservation, SMALL_BODY};
use crate::model::InferError;
use crate::otel::RequestTrace;
use crate::tensor::json::{encode_binary_response, encode_response, encoded_size, InferResponse};
use crate::tensor::Tensor;

/// The version that served the request, also in the body's `model_version`.
pub const MODEL_VERSION: HeaderName = HeaderName::from_static("x-model-version");
/// The routing variant that served the request: `stable`, a variant name, or `pinned` (version in the URL).
pub const VARIANT: HeaderName = HeaderName::from_static("x-sluice-variant");

#[utoipa::path(
    post,
    path = "/v2/models/{model}/infer",
    tag = "inference",
    params(("model" = String, Path, description = "Model name")),
    request_body(content = schema::V2InferRequest, content_type = "application/json"),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Outputs (headers x-model-version, x-sluice-variant)", body = schema::V2InferResponse), (status = 400, description = "Malformed or invalid request", body = schema::ErrorBody), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 413, description = "Body too large", body = schema::ErrorBody), (status = 500, description = "ONNX Runtime failed", body = schema::ErrorBody), (status = 503, description = "Not ready or overloaded", body = schema::ErrorBody), (status = 504, description = "Timed out", body = schema::ErrorBody))
)]
pub async fn infer(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    serve(&state, model, None, request).await
}

#[utoipa::path(
    post,
    path = "/v2/models/{model}/versions/{version}/infer",
    tag = "inference",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    request_body(content = schema::V2InferRequest, content_type = "application/json"),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Outputs", body = schema::V2InferResponse), (status = 400, description = "Malformed or invalid request", body = schema::ErrorBody), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 413, description = "Body too large", body = schema::ErrorBody), (status = 500, description = "ONNX Runtime failed", body = schema::ErrorBody), (status = 503, description = "Not ready or overloaded", body = schema::ErrorBody), (status = 504, description = "Timed out", body = schema::ErrorBody))
)]
pub async fn infer_version(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    serve(&state, model, Some(version), request).await
}

/// Both routes' handler.
async fn serve(
    state: &AppState,
    model: String,
    version: Option<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, body, memory, trace) =
        read_reserved(state, &model, version.as_deref(), request, None).await?;
    let mut call = call(model, version, headers, body)?;
    call.memory = memory;
    call.trace = trace;
    run(state, call).await
}

/// The request's headers (moved out: axum's `HeaderMap` extractor would copy them), its whole body (at most
/// `server.max_body_bytes` after decompression, else 413), the memory reserved for it, and its place in a trace
/// (when tracing is on).
///
/// A large body's memory is reserved before it is read, waiting for it if need be: what the version's requests of
/// that size held (`memory::Footprint`), or `per_body_byte` times its length when the front end holds more (V1's
/// JSON tree). A small one is read first (it is bounded) and the core reserves for it. A body of unknown length
/// (chunked, or compressed) reserves as it grows past the small size, without waiting: it holds memory already.
pub(super) async fn read_reserved(
    state: &AppState,
    model: &str,
    version: Option<&str>,
    request: Request,
    per_body_byte: Option<usize>,
) -> Result<(HeaderMap, Bytes, Reservation, Option<RequestTrace>), ApiError> {
    let (mut parts, body) = request.into_parts();
    let trace = parts.extensions.remove::<RequestTrace>();
    let declared = declared_length(&parts.headers);
    let estimate = |bytes: usize| {
        let footprint = match state.registry.resolve(model, version) {
            Ok(target) => target.footprint.estimate(bytes),
            Err(_) => Footprint::default().estimate(bytes),
        };
        footprint.max(per_body_byte.map_or(0, |n| n.saturating_mul(bytes)))
    };
    let mut memory = match declared {
        Some(length) if length > SMALL_BODY && length <= state.max_body_bytes => {
            match state
                .memory
                .reserve(estimate(length), state.memory_wait)
                .await
            {
                Ok(memory) => memory,
                Err(e) => {
                    // Read (not kept), so the client gets the answer rather than a reset connection.
                    drain_body(body, length).await;
                    return Err(e.into());
                }
            }
        }
        _ => state.memory.empty(),
    };
    let body = read_body(Limited::new(body, state.max_body_bytes), declared, |read| {
        if read > SMALL_BODY && memory.bytes() < read {
            memory.try_grow_to(estimate(read))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| match e {
        ReadError::Memory(e) => ApiError::Memory(e),
        ReadError::Body(e) => body_error(e, state.max_body_bytes),
    })?;
    Ok((parts.headers, body, memory, trace))
}

/// The body's length when the client declared it and it is not compressed (a compressed body inflates to an
/// unknown size).
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    if headers.contains_key(header::CONTENT_ENCODING) {
        return None;
    }
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn body_error(e: BoxError, limit: usize) -> ApiError {
    match e.downcast_ref::<LengthLimitError>() {
        Some(_) => ApiError::BodyTooLarge { limit },
        None => ApiError::BodyUnreadable(e.to_string()),
    }
}

/// Serves the two inference routes itself and hands every other request to the router.
///
/// Only paths whose model and version segments need no percent-decoding are served here; those, and everything
/// when API keys are configured (the router checks them per route), go through the router, to the same handler.
#[derive(Clone)]
pub struct InferRoutes<R> {
    state: AppState,
    router: R,
    enabled: bool,
}

impl<R> InferRoutes<R> {
    /// `enabled: false` sends every request to the router.
    pub fn new(state: AppState, router: R, enabled: bool) -> InferRoutes<R> {
        InferRoutes {
            state,
            router,
            enabled,
        }
    }
}

impl<R, B> Service<axum::http::Request<B>> for InferRoutes<R>
where
    R: Service<axum::http::Request<B>, Response = Response, Error = Infallible>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<BoxFuture<'static, Result<Response, Infallible>>, R::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.router.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        if self.enabled && request.method() == Method::POST {
            if let Some((model, version)) = infer_path(request.uri().path()) {
                let (model, version) = (model.to_owned(), version.map(str::to_owned));
                let state = self.state.clone();
                return Either::Left(Box::pin(async move {
                    let request = request.map(Body::new);
                    Ok(serve(&state, model, version, request).await.into_response())
                }));
            }
        }
        Either::Right(self.router.call(request))
    }
}

/// The model and version of an inference path, as the router would extract them, when no segment needs decoding:
/// `/v2/models/{model}/infer` or `/v2/models/{model}/versions/{version}/infer`.
fn infer_path(path: &str) -> Option<(&str, Option<&str>)> {
    let segments = path.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    let literal = |s: &str| !s.is_empty() && !s.contains('%');
    let mut parts = segments.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(model), None, _, _) if literal(model) => Some((model, None)),
        (Some(model), Some("versions"), Some(version), None)
            if literal(model) && literal(version) =>
        {
            Some((model, Some(version)))
        }
        _ => None,
    }
}

/// Reads and discards (without buffering) up to `limit` bytes of a request body we answer without using. Answering
/// while the client is still sending would close the connection under it, and the client would see a reset
/// instead of our answer.
pub async fn drain_body<B: HttpBody<Data = Bytes>>(body: B, limit: usize) {
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let mut read = 0usize;
    while read <= limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// Why a body was not read whole.
#[derive(Debug, PartialEq)]
enum ReadError<E> {
    Body(E),
    Memory(MemoryError),
}

/// A body's data frames as one buffer (trailers are ignored), calling `on_read` with the bytes read so far after
/// each frame. A body that arrives in one frame, as a small request does, is returned as it is, without the frame
/// list `BodyExt::collect` allocates for every body; a longer one is joined into a buffer of the declared length,
/// when there is one. Read here rather than by axum's `Bytes` extractor, which takes its limit from a request
/// extension that `DefaultBodyLimit` would have to insert into every request (an allocation and a map each).
async fn read_body<B>(
    mut body: B,
    declared: Option<usize>,
    mut on_read: impl FnMut(usize) -> Result<(), MemoryError>,
) -> Result<Bytes, ReadError<B::Error>>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    let mut first = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(ReadError::Body)?.into_data() else {
            continue;
        };
        read += data.len();
        on_read(read).map_err(ReadError::Memory)?;
        match &mut joined {
            Some(buffer) => buffer.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut buffer = Vec::with_capacity(declared.unwrap_or(0).max(read));
                buffer.extend_from_slice(&first);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
    Ok(joined.map_or(first, Bytes::from))
}

/// Triton's binary extension: the length of the JSON header at the start of the body.
pub const HEADER_LENGTH: HeaderName = HeaderName::from_static("inference-header-content-length");

fn call(
    model: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<InferCall, ApiError> {
    let header_len = match headers.get(&HEADER_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Inference-Header-Content-Length must be a byte count".into(),
                    )
                })?,
        ),
        None => None,
    };
    let payload = Payload::Json {
        body,
        binary_header_len: header_len,
    };
    Ok(InferCall::new(model, version, headers.into(), payload))
}

/// The body is parsed as JSON whatever its `Content-Type` (some standard clients send none); with
/// `Inference-Header-Content-Length` it is a JSON header followed by raw tensor bytes.
async fn run(state: &AppState, call: InferCall) -> Result<Response, ApiError> {
    let trace = call.trace.as_ref().filter(|t| t.sampled()).cloned();
    let mut done = state.pipeline.clone().oneshot(call).await?;
    let mut memory = std::mem::take(&mut done.memory);
    let response = InferResponse {
        model_name: &done.model.name,
        model_version: done.model.version,
        id: done.id,
        outputs: done.outputs,
    };
    let binary = response
        .outputs
        .iter()
        .any(|t| done.binary_outputs.wants(&t.name));
    // The encoding is about to be allocated beside the outputs: counted, and the version learns what requests of this
    // size hold.
    let outputs_len = Tensor::bytes_of(&response.outputs);
    let encoded_estimate = encoded_size(&response);
    let peak = done.held.max(outputs_len + encoded_estimate);
    memory.charge(peak);
    done.model.footprint.observe(done.wire_len, peak);
    let InferResponse { id, outputs, .. } = response;
    let (model, binary_outputs) = (Arc::clone(&done.model), done.binary_outputs);
    let encode = move || {
        let response = InferResponse {
            model_name: &model.name,
            model_version: model.version,
            id,
            outputs,
        };
        if binary {
            encode_binary_response(&response, &binary_outputs)
                .map(|(body, n)| (body, "application/octet-stream", Some(n)))
        } else {
            encode_response(&response).map(|body| (body, "application/json", None))
        }
    };
    let encoding = std::time::Instant::now();
    let encoded = if encoded_estimate > OFF_WORKER_BYTES {
        // A large answer is encoded on a blocking thread, as its body was decoded; its memory goes along.
        let held = memory.split(usize::MAX);
        let (encoded, held) = tokio::task::spawn_blocking(move || (encode(), held))
            .await
            .map_err(|e| InferError::Internal(format!("encoding task failed: {e}")))
            .map_err(|e| ApiError::Inference(e.into()))?;
        memory.merge(held);
        encoded
    } else {
        encode()
    };
    let (body, content_type, header_len) = encoded.map_err(|e| {
        ApiError::Inference(InferError::Internal(format!("encoding the response: {e}")).into())
    })?;
    done.model.stats.output(encoding.elapsed());
    if let Some(trace) = &trace {
        let attributes = || {
            vec![opentelemetry::KeyValue::new(
                "sluice.response.bytes",
                body.len() as i64,
            )]
        };
        let span = (encoding, std::time::Instant::now());
        trace.phase("encode", span, attributes, crate::otel::PhaseEnd::Ok);
    }
    // The variant's own buffer becomes the header value (no copy).
    let variant = match done.variant {
        Cow::Borrowed(name) => HeaderValue::from_static(name),
        Cow::Owned(name) => HeaderValue::from_maybe_shared(Bytes::from(name))
            .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
    };
    // Sized for these and the two the edge adds (x-request-id, vary), so no insert grows it.
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Formatted on the stack and copied once (`HeaderValue::from(u64)` allocates twice).
    let mut digits = itoa::Buffer::new();
    let version = HeaderValue::from_str(digits.format(done.model.version))
        .expect("digits are a valid header value");
    headers.insert(MODEL_VERSION, version);
    headers.insert(VARIANT, variant);
    if let Some(n) = header_len {
        headers.insert(HEADER_LENGTH, HeaderValue::from(n));
    }
    // The response holds the request's memory until it is sent (or dropped).
    let mut reply = Response::new(Body::new(Holding {
        inner: Full::new(Bytes::from(body)),
        _memory: memory,
    }));
    *reply.headers_mut() = headers;
    Ok(reply)
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's memory until it is sent.
    struct Holding<B> {
        #[pin]
        inner: B,
        _memory: Reservation,
    }
}

impl<B: HttpBody> HttpBody for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::{infer_path, read_body, ReadError};
    use crate::memory::MemoryError;
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use http_body::Body as HttpBody;
    use http_body::Frame;
    use http_body_util::StreamBody;

    fn body(
        frames: Vec<Frame<Bytes>>,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, String>>> {
        StreamBody::new(futures_util::stream::iter(frames.into_iter().map(Ok)))
    }

    async fn read(
        body: impl HttpBody<Data = Bytes, Error = String> + Unpin,
    ) -> Result<Bytes, ReadError<String>> {
        read_body(body, None, |_| Ok(())).await
    }

    #[tokio::test]
    async fn bodies_are_read_whole_in_one_frame_or_many() {
        let one = Bytes::from_static(b"{\"inputs\": []}");
        let read_one = read(body(vec![Frame::data(one.clone())])).await.unwrap();
        assert_eq!(read_one, one);
        // The frame itself, not a copy.
        assert_eq!(read_one.as_ptr(), one.as_ptr());
        let parts =
            ["{\"in", "puts\"", ": []}"].map(|p| Frame::data(Bytes::from_static(p.as_bytes())));
        let mut frames = vec![Frame::trailers(HeaderMap::new())];
        frames.extend(parts);
        frames.push(Frame::trailers(HeaderMap::new()));
        assert_eq!(read(body(frames)).await.unwrap(), one);
        assert_eq!(read(body(Vec::new())).await.unwrap(), Bytes::new());
        let failing = StreamBody::new(futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"{"))),
            Err("connection reset".to_owned()),
        ]));
        assert_eq!(
            read(failing).await.unwrap_err(),
            ReadError::Body("connection reset".to_owned())
        );
    }

    #[tokio::test]
    async fn reading_stops_when_the_memory_for_what_was_read_is_refused() {
        let parts =
            ["{\"in", "puts\"", ": []}"].map(|p| Frame::data(Bytes::from_static(p.as_bytes())));
        let refusal = MemoryError::TooLarge {
            needed: 9,
            capacity: 6,
        };
        let mut seen = Vec::new();
        let refused = read_body(body(parts.into()), Some(14), |read| {
            seen.push(read);
            if read > 6 {
                Err(refusal.clone())
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(refused.unwrap_err(), ReadError::Memory(refusal));
        assert_eq!(seen, [4, 9]);
    }

    #[test]
    fn inference_paths_are_recognised_as_the_router_would_match_them() {
        assert_eq!(infer_path("/v2/models/iris/infer"), Some(("iris", None)));
        assert_eq!(
            infer_path("/v2/models/iris/versions/2/infer"),
            Some(("iris", Some("2")))
        );
        // A model may be called "versions".
        assert_eq!(
            infer_path("/v2/models/versions/infer"),
            Some(("versions", None))
        );
        for other in [
            "/v2/models/iris/infer/",
            "/v2/models//infer",
            "/v2/models/iris/versions//infer",
            "/v2/models/iris/x/2/infer",
            "/v2/models/iris/versions/2/3/infer",
            "/v2/models/iris/ready",
            "/v2/models/infer",
            "/v1/models/iris/infer",
            // Percent-encoded segments are decoded by the router.
            "/v2/models/ir%69s/infer",
            "/v2/models/iris/versions/%32/infer",
        ] {
            assert_eq!(infer_path(other), None, "{other}");
        }
    }
}
