//! Triton's statistics extension: `GET /v2/models/stats`, `/v2/models/{m}/stats` and
//! `/v2/models/{m}/versions/{v}/stats`, each loaded version's inference statistics (`model::stats`) in Triton's JSON
//! shape, which `tritonclient`'s `get_inference_statistics` and perf_analyzer read.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::schema::{self, ModelStatistics, VersionStatistics};
use super::{ApiError, AppState, V2Path};
use crate::model::ModelVersion;

/// One version's entry of `model_stats`.
fn reply(versions: &[Arc<ModelVersion>]) -> Response {
    let reply = ModelStatistics {
        model_stats: versions
            .iter()
            .map(|v| VersionStatistics {
                name: &v.name,
                version: v.version.to_string(),
                stats: v.stats.read(),
            })
            .collect(),
    };
    Json(reply).into_response()
}

#[utoipa::path(
    get,
    path = "/v2/models/stats",
    tag = "metadata",
    security((), ("api_key" = [])),
    responses((status = 200, description = "Statistics of every loaded version", body = schema::ModelStatistics), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody))
)]
pub async fn all(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(reply(&state.registry.loaded(None, None)?))
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/stats",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Statistics of the model's loaded versions", body = schema::ModelStatistics), (status = 400, description = "Invalid path", body = schema::ErrorBody), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody), (status = 404, description = "Unknown model", body = schema::ErrorBody))
)]
pub async fn model(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Response, ApiError> {
    Ok(reply(&state.registry.loaded(Some(&model), None)?))
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/versions/{version}/stats",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Statistics of the version", body = schema::ModelStatistics), (status = 400, description = "Invalid path", body = schema::ErrorBody), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 503, description = "Version not loaded", body = schema::ErrorBody))
)]
pub async fn version(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(reply(&state.registry.loaded(Some(&model), Some(&version))?))
}
