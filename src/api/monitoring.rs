//! Monitoring endpoints: input drift per version (`GET /v2/models/{m}/drift`) and model cards
//! (`GET /v2/models/{m}[/versions/{v}]/card`).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::openapi;
use super::{ApiError, AppState, V2Path};
use crate::model::ModelVersion;
use crate::registry::RegistryError;

#[utoipa::path(
    get,
    path = "/v2/models/{model}/drift",
    tag = "monitoring",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "PSI per feature and overall, per loaded version with a reference profile", body = Object),
        (status = 400, description = "Invalid path", body = openapi::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody),
        (status = 404, description = "Unknown model", body = openapi::ErrorBody),
        (status = 503, description = "Not ready", body = openapi::ErrorBody)
    )
)]
pub async fn drift(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Json<Value>, ApiError> {
    let map = state.registry.snapshot();
    let entry = map
        .get(&model)
        .ok_or_else(|| RegistryError::ModelNotFound {
            model: model.clone(),
        })?;
    let versions: Vec<Value> = entry
        .versions
        .values()
        .filter_map(|slot| slot.model.as_ref())
        .filter_map(|m| m.drift.as_ref().map(|d| (m.version, d.report())))
        .map(|(version, report)| json!({ "version": version.to_string(), "report": report }))
        .collect();
    Ok(Json(json!({ "model": model, "versions": versions })))
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/card",
    tag = "monitoring",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The default version's model card (null when it has none)", body = Object),
        (status = 400, description = "Invalid path", body = openapi::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody),
        (status = 404, description = "Unknown model", body = openapi::ErrorBody),
        (status = 503, description = "Not ready", body = openapi::ErrorBody)
    )
)]
pub async fn card(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Json<Value>, ApiError> {
    let target = state.registry.resolve(&model, None)?;
    Ok(card_of(&target))
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/versions/{version}/card",
    tag = "monitoring",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The version's model card (null when it has none)", body = Object),
        (status = 400, description = "Invalid path", body = openapi::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = openapi::ErrorBody),
        (status = 404, description = "Unknown model or version", body = openapi::ErrorBody),
        (status = 503, description = "Not ready", body = openapi::ErrorBody)
    )
)]
pub async fn card_version(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let target = state.registry.resolve(&model, Some(&version))?;
    Ok(card_of(&target))
}

fn card_of(target: &ModelVersion) -> Json<Value> {
    Json(json!({ "name": target.name, "version": target.version.to_string(), "card": target.card }))
}
