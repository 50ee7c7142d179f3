//! Server and model metadata (`GET /v2`, `GET /v2/models/{m}[/versions/{v}]`) and the subset of Triton's model
//! configuration that standard tools read (`GET /v2/models/{m}/config`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::schema::{
    self, ModelMetadata, ServerMetadata, TritonConfig, TritonInstanceGroup, TritonTensorConfig,
};
use super::{ApiError, AppState, V2Path};
use crate::model::{IoSpec, ModelVersion, Signature};
use crate::registry::RegistryError;

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
    responses((status = 200, description = "Server metadata", body = schema::ServerMetadata), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody))
)]
pub async fn server() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "sluice",
        version: env!("CARGO_PKG_VERSION"),
        extensions: EXTENSIONS,
    })
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Model metadata", body = schema::ModelMetadata), (status = 400, description = "Invalid path", body = schema::ErrorBody), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 503, description = "Not ready", body = schema::ErrorBody))
)]
pub async fn model(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Response, ApiError> {
    match state.registry.resolve(&model, None) {
        Ok(target) => {
            let versions = state.registry.loaded_versions(&model);
            Ok(Json(metadata(&target.name, &target.signature, versions)).into_response())
        }
        Err(e @ RegistryError::Unloaded { .. }) => declared(&state, &model, None, e),
        Err(e) => Err(e.into()),
    }
}

/// A lazy model not loaded yet is described from the signature its file declares.
fn declared(
    state: &AppState,
    model: &str,
    version: Option<&str>,
    unloaded: RegistryError,
) -> Result<Response, ApiError> {
    let (version, signature) = state
        .registry
        .declared(model, version)
        .ok_or(ApiError::from(unloaded))?;
    Ok(Json(metadata(model, &signature, vec![version.to_string()])).into_response())
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/versions/{version}",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Version metadata", body = schema::ModelMetadata), (status = 400, description = "Invalid path", body = schema::ErrorBody), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 503, description = "Not ready", body = schema::ErrorBody))
)]
pub async fn model_version(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
) -> Result<Response, ApiError> {
    match state.registry.resolve(&model, Some(&version)) {
        Ok(target) => {
            let versions = vec![target.version.to_string()];
            Ok(Json(metadata(&target.name, &target.signature, versions)).into_response())
        }
        Err(e @ RegistryError::Unloaded { .. }) => declared(&state, &model, Some(&version), e),
        Err(e) => Err(e.into()),
    }
}

fn metadata<'a>(
    name: &'a str,
    signature: &'a Signature,
    versions: Vec<String>,
) -> ModelMetadata<'a> {
    ModelMetadata {
        name,
        versions,
        platform: "onnxruntime_onnx",
        inputs: signature.inputs.iter().map(IoSpec::metadata).collect(),
        outputs: signature.outputs.iter().map(IoSpec::metadata).collect(),
    }
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/config",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Triton model configuration", body = schema::TritonConfig), (status = 400, description = "Invalid path", body = schema::ErrorBody), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 503, description = "Not ready", body = schema::ErrorBody))
)]
pub async fn config(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Response, ApiError> {
    let target = state.registry.resolve(&model, None)?;
    Ok(Json(triton_config(&target)).into_response())
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/versions/{version}/config",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Triton model configuration", body = schema::TritonConfig), (status = 400, description = "Invalid path", body = schema::ErrorBody), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 503, description = "Not ready", body = schema::ErrorBody))
)]
pub async fn config_version(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
) -> Result<Response, ApiError> {
    let target = state.registry.resolve(&model, Some(&version))?;
    Ok(Json(triton_config(&target)).into_response())
}

/// Triton's configuration for a model without server-side batching (`max_batch_size: 0`, so `dims` include the
/// batch dimension), with its sessions as one CPU instance group. Non-tensor outputs have no Triton type and are left
/// out.
fn triton_config(target: &ModelVersion) -> TritonConfig<'_> {
    TritonConfig {
        name: &target.name,
        platform: "onnxruntime_onnx",
        backend: "onnxruntime",
        max_batch_size: 0,
        input: triton_tensors(&target.signature.inputs),
        output: triton_tensors(&target.signature.outputs),
        instance_group: vec![TritonInstanceGroup {
            count: target.pool_size(),
            kind: "KIND_CPU",
        }],
    }
}

/// The tensors among `specs`, as Triton configures them.
fn triton_tensors(specs: &[IoSpec]) -> Vec<TritonTensorConfig<'_>> {
    specs
        .iter()
        .filter_map(|s| {
            let (datatype, shape) = s.tensor()?;
            Some(TritonTensorConfig {
                name: &s.name,
                data_type: datatype.triton_config_name(),
                dims: shape,
            })
        })
        .collect()
}
