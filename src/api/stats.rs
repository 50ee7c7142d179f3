//! Triton's statistics extension: `GET /v2/models/stats`, `/v2/models/{m}/stats` and
//! `/v2/models/{m}/versions/{v}/stats`, each loaded version's inference statistics (`model::stats`) in Triton's JSON
//! shape, which `tritonclient`'s `get_inference_statistics` and perf_analyzer read.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::openapi;
use super::{ApiError, AppState, V2Path};
use crate::model::stats::Snapshot;
use crate::model::ModelVersion;

/// One version's entry of `model_stats`.
#[derive(Serialize)]
struct VersionStats<'a> {
    name: &'a str,
    version: String,
    #[serde(flatten)]
    stats: Snapshot,
}

#[derive(Serialize)]
struct StatsReply<'a> {
    model_stats: Vec<VersionStats<'a>>,
}

fn reply(versions: &[std::sync::Arc<ModelVersion>]) -> Json<serde_json::Value> {
    let reply = StatsReply {
        model_stats: versions
            .iter()
            .map(|v| VersionStats {
                name: &v.name,
                version: v.version.to_string(),
                stats: v.stats.read(),
            })
            .collect(),
    };
    Json(serde_json::to_value(reply).unwrap_or_default())
}

#[utoipa::path(
    get,
    path = "/v2/models/stats",
    tag = "metadata",
    security((), ("api_key" = [])),
    responses((status = 200, description = "Statistics of every loaded version", body = openapi::ModelStatistics), (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody))
)]
pub async fn all(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(reply(&state.registry.loaded(None, None)?))
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/stats",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Statistics of the model's loaded versions", body = openapi::ModelStatistics), (status = 400, description = "Invalid path", body = openapi::ErrorBody), (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody), (status = 404, description = "Unknown model", body = openapi::ErrorBody))
)]
pub async fn model(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(reply(&state.registry.loaded(Some(&model), None)?))
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/versions/{version}/stats",
    tag = "metadata",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Statistics of the version", body = openapi::ModelStatistics), (status = 400, description = "Invalid path", body = openapi::ErrorBody), (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody), (status = 404, description = "Unknown model or version", body = openapi::ErrorBody), (status = 503, description = "Version not loaded", body = openapi::ErrorBody))
)]
pub async fn version(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(reply(&state.registry.loaded(Some(&model), Some(&version))?))
}
