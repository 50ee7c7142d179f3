//! `POST /v2/models/{m}[/versions/{v}]/infer`: V2 JSON in, V2 JSON out.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, V2Path};
use crate::tensor::json::InferResponse;

pub async fn infer(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run(&state, &model, None, body?).await
}

pub async fn infer_version(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run(&state, &model, Some(&version), body?).await
}

/// The version that served the request, also in the body's `model_version`.
pub const MODEL_VERSION: HeaderName = HeaderName::from_static("x-model-version");

/// The body is parsed as JSON whatever its `Content-Type` (some standard clients send none).
async fn run(
    state: &AppState,
    model: &str,
    version: Option<&str>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let done = state.inference.infer(model, version, &body).await?;
    let response = InferResponse {
        model_name: &done.model.name,
        model_version: done.model.version.to_string(),
        id: done.id,
        outputs: done.outputs,
    };
    let json = serde_json::to_vec(&response).map_err(|e| {
        ApiError::Inference(
            crate::model::InferError::Internal(format!("encoding the response: {e}")).into(),
        )
    })?;
    let version = HeaderValue::from(done.model.version);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (MODEL_VERSION, version),
        ],
        json,
    )
        .into_response())
}
