//! Server and model metadata (`GET /v2`, `GET /v2/models/{m}[/versions/{v}]`) and the subset of Triton's model
//! configuration that standard tools read (`GET /v2/models/{m}/config`).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::openapi;
use super::{ApiError, AppState, V2Path};
use crate::model::signature::TensorMetadata;
use crate::model::{IoSpec, ModelVersion};

/// V2 extensions this server implements.
pub const EXTENSIONS: &[&str] = &[
    "model_configuration",
    "model_repository",
    "binary_tensor_data",
    "statistics",
];

#[utoipa::path(
    get,
    path = "/v2",
    tag = "metadata",
    security((), ("api_key" = [])),
    responses((status = 200, description = "Server metadata", body = openapi::ServerMetadata), (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody))
)]
pub async fn server() -> Json<Value> {
    Json(json!({
        "name": "sluice",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

#[derive(Serialize)]
struct ModelMetadata<'a> {
    name: &'a str,
    versions: Vec<String>,
    platform: &'static str,
    inputs: Vec<TensorMetadata<'a>>,
    outputs: Vec<TensorMetadata<'a>>,
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Model metadata", body = openapi::ModelMetadata), (status = 400, description = "Invalid path", body = openapi::ErrorBody), (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody), (status = 404, description = "Unknown model or version", body = openapi::ErrorBody), (status = 503, description = "Not ready", body = openapi::ErrorBody))
)]
pub async fn model(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Json<Value>, ApiError> {
    let target = state.registry.resolve(&model, None)?;
    let map = state.registry.snapshot();
    let versions = map
        .get(&model)
        .map(|entry| {
            entry
                .versions
                .iter()
                .filter(|(_, s)| s.model.is_some())
                .map(|(v, _)| v.to_string())
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(metadata(&target, versions)))
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/versions/{version}",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Version metadata", body = openapi::ModelMetadata), (status = 400, description = "Invalid path", body = openapi::ErrorBody), (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody), (status = 404, description = "Unknown model or version", body = openapi::ErrorBody), (status = 503, description = "Not ready", body = openapi::ErrorBody))
)]
pub async fn model_version(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let target = state.registry.resolve(&model, Some(&version))?;
    Ok(Json(metadata(&target, vec![target.version.to_string()])))
}

fn metadata(target: &ModelVersion, versions: Vec<String>) -> Value {
    let meta = ModelMetadata {
        name: &target.name,
        versions,
        platform: "onnxruntime_onnx",
        inputs: target
            .signature
            .inputs
            .iter()
            .map(IoSpec::metadata)
            .collect(),
        outputs: target
            .signature
            .outputs
            .iter()
            .map(IoSpec::metadata)
            .collect(),
    };
    serde_json::to_value(meta).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/config",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Triton model configuration", body = openapi::TritonConfig), (status = 400, description = "Invalid path", body = openapi::ErrorBody), (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody), (status = 404, description = "Unknown model or version", body = openapi::ErrorBody), (status = 503, description = "Not ready", body = openapi::ErrorBody))
)]
pub async fn config(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Json<Value>, ApiError> {
    let target = state.registry.resolve(&model, None)?;
    Ok(Json(triton_config(&target)))
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/versions/{version}/config",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Triton model configuration", body = openapi::TritonConfig), (status = 400, description = "Invalid path", body = openapi::ErrorBody), (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody), (status = 404, description = "Unknown model or version", body = openapi::ErrorBody), (status = 503, description = "Not ready", body = openapi::ErrorBody))
)]
pub async fn config_version(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let target = state.registry.resolve(&model, Some(&version))?;
    Ok(Json(triton_config(&target)))
}

/// Triton's configuration for a model without server-side batching (`max_batch_size: 0`, so `dims` include the
/// batch dimension), with its sessions as one CPU instance group. Non-tensor outputs have no Triton type and are left
/// out.
fn triton_config(target: &ModelVersion) -> Value {
    let io = |specs: &[IoSpec]| -> Vec<Value> {
        specs
            .iter()
            .filter_map(|s| {
                let (datatype, shape) = s.tensor()?;
                Some(json!({ "name": s.name, "data_type": datatype.triton_config_name(), "dims": shape }))
            })
            .collect()
    };
    json!({
        "name": target.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": 0,
        "input": io(&target.signature.inputs),
        "output": io(&target.signature.outputs),
        "instance_group": [{ "count": target.pool_size(), "kind": "KIND_CPU" }],
    })
}
