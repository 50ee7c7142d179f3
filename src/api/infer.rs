//! `POST /v2/models/{m}[/versions/{v}]/infer`: V2 JSON in, V2 JSON out, through the inference tower stack.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;
use tower::ServiceExt;

use super::openapi;
use super::{ApiError, AppState, V2Path};
use crate::inference::InferCall;
use crate::model::InferError;
use crate::tensor::json::{encode_binary_response, encode_response, InferResponse};

/// The version that served the request, also in the body's `model_version`.
pub const MODEL_VERSION: HeaderName = HeaderName::from_static("x-model-version");
/// The routing variant that served the request: `stable`, a variant name, or `pinned` (version in the URL).
pub const VARIANT: HeaderName = HeaderName::from_static("x-sluice-variant");

#[utoipa::path(
    post,
    path = "/v2/models/{model}/infer",
    tag = "inference",
    params(("model" = String, Path, description = "Model name")),
    request_body(content = openapi::V2InferRequest, content_type = "application/json"),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Outputs (headers x-model-version, x-sluice-variant)", body = openapi::V2InferResponse), (status = 400, description = "Malformed or invalid request", body = openapi::ErrorBody), (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody), (status = 404, description = "Unknown model or version", body = openapi::ErrorBody), (status = 413, description = "Body too large", body = openapi::ErrorBody), (status = 500, description = "ONNX Runtime failed", body = openapi::ErrorBody), (status = 503, description = "Not ready or overloaded", body = openapi::ErrorBody), (status = 504, description = "Timed out", body = openapi::ErrorBody))
)]
pub async fn infer(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, body) = headers_and_body(request).await?;
    run(&state, call(model, None, headers, body)?).await
}

#[utoipa::path(
    post,
    path = "/v2/models/{model}/versions/{version}/infer",
    tag = "inference",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    request_body(content = openapi::V2InferRequest, content_type = "application/json"),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Outputs", body = openapi::V2InferResponse), (status = 400, description = "Malformed or invalid request", body = openapi::ErrorBody), (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody), (status = 404, description = "Unknown model or version", body = openapi::ErrorBody), (status = 413, description = "Body too large", body = openapi::ErrorBody), (status = 500, description = "ONNX Runtime failed", body = openapi::ErrorBody), (status = 503, description = "Not ready or overloaded", body = openapi::ErrorBody), (status = 504, description = "Timed out", body = openapi::ErrorBody))
)]
pub async fn infer_version(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, body) = headers_and_body(request).await?;
    run(&state, call(model, Some(version), headers, body)?).await
}

/// The request's headers (moved out: axum's `HeaderMap` extractor would copy them) and its body, read by axum's
/// `Bytes` extractor (so `DefaultBodyLimit` applies and an over-long body is a 413).
async fn headers_and_body(request: Request) -> Result<(HeaderMap, Bytes), ApiError> {
    let (mut parts, body) = request.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let body = Bytes::from_request(Request::from_parts(parts, body), &()).await?;
    Ok((headers, body))
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
    let mut call = InferCall::new(model, version, headers, body);
    call.binary_header_len = header_len;
    Ok(call)
}

/// The body is parsed as JSON whatever its `Content-Type` (some standard clients send none); with
/// `Inference-Header-Content-Length` it is a JSON header followed by raw tensor bytes.
async fn run(state: &AppState, call: InferCall) -> Result<Response, ApiError> {
    let done = state.pipeline.clone().oneshot(call).await?;
    let response = InferResponse {
        model_name: &done.model.name,
        model_version: done.model.version,
        id: done.id,
        outputs: done.outputs,
    };
    let encoding_error = |e: serde_json::Error| {
        ApiError::Inference(InferError::Internal(format!("encoding the response: {e}")).into())
    };
    let binary = response
        .outputs
        .iter()
        .any(|t| done.binary_outputs.wants(&t.name));
    let (body, content_type, header_len) = if binary {
        let (body, header_len) =
            encode_binary_response(&response, &done.binary_outputs).map_err(encoding_error)?;
        (body, "application/octet-stream", Some(header_len))
    } else {
        (
            encode_response(&response).map_err(encoding_error)?,
            "application/json",
            None,
        )
    };
    // The variant's own buffer becomes the header value (no copy).
    let variant = match done.variant {
        Cow::Borrowed(name) => HeaderValue::from_static(name),
        Cow::Owned(name) => HeaderValue::from_maybe_shared(Bytes::from(name))
            .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
    };
    let mut reply = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (MODEL_VERSION, HeaderValue::from(done.model.version)),
            (VARIANT, variant),
        ],
        body,
    )
        .into_response();
    if let Some(n) = header_len {
        reply
            .headers_mut()
            .insert(HEADER_LENGTH, HeaderValue::from(n));
    }
    Ok(reply)
}
