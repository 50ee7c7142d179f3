//! `POST /v2/models/{m}[/versions/{v}]/infer`: V2 JSON in, V2 JSON out, through the inference tower stack.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use super::openapi;
use super::{ApiError, AppState, V2Path};
use crate::inference::InferCall;
use crate::model::InferError;
use crate::tensor::json::InferResponse;

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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run(&state, InferCall::new(&model, None, headers, body?)).await
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run(
        &state,
        InferCall::new(&model, Some(&version), headers, body?),
    )
    .await
}

/// The body is parsed as JSON whatever its `Content-Type` (some standard clients send none).
async fn run(state: &AppState, call: InferCall) -> Result<Response, ApiError> {
    let done = state.pipeline.clone().oneshot(call).await?;
    let response = InferResponse {
        model_name: &done.model.name,
        model_version: done.model.version.to_string(),
        id: done.id,
        outputs: done.outputs,
    };
    let json = serde_json::to_vec(&response).map_err(|e| {
        ApiError::Inference(InferError::Internal(format!("encoding the response: {e}")).into())
    })?;
    let variant = HeaderValue::from_str(&done.variant)
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (MODEL_VERSION, HeaderValue::from(done.model.version)),
        (VARIANT, variant),
    ];
    Ok((headers, json).into_response())
}
