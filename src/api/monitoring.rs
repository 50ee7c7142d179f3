//! Monitoring endpoints: input drift per version (`GET /v2/models/{m}/drift`) and model cards
//! (`GET /v2/models/{m}[/versions/{v}]/card`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::schema::{self, CardReply, ModelDrift, VersionDrift};
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
        (status = 200, description = "PSI per feature and overall, per loaded version with a reference profile", body = schema::ModelDrift),
        (status = 400, description = "Invalid path", body = schema::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody),
        (status = 404, description = "Unknown model", body = schema::ErrorBody),
        (status = 503, description = "Not ready", body = schema::ErrorBody)
    )
)]
pub async fn drift(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Response, ApiError> {
    let map = state.registry.snapshot();
    let entry = map
        .get(&model)
        .ok_or_else(|| RegistryError::ModelNotFound {
            model: model.clone(),
        })?;
    let versions = entry
        .versions
        .values()
        .filter_map(|slot| slot.model.as_ref())
        .filter_map(|m| m.drift.as_ref().map(|d| (m.version, d.report())))
        .map(|(version, report)| VersionDrift {
            version: version.to_string(),
            report,
        })
        .collect();
    Ok(Json(ModelDrift {
        model: &model,
        versions,
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/card",
    tag = "monitoring",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The default version's model card (null when it has none)", body = schema::CardReply),
        (status = 400, description = "Invalid path", body = schema::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody),
        (status = 404, description = "Unknown model", body = schema::ErrorBody),
        (status = 503, description = "Not ready", body = schema::ErrorBody)
    )
)]
pub async fn card(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Response, ApiError> {
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
        (status = 200, description = "The version's model card (null when it has none)", body = schema::CardReply),
        (status = 400, description = "Invalid path", body = schema::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody),
        (status = 404, description = "Unknown model or version", body = schema::ErrorBody),
        (status = 503, description = "Not ready", body = schema::ErrorBody)
    )
)]
pub async fn card_version(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
) -> Result<Response, ApiError> {
    let target = state.registry.resolve(&model, Some(&version))?;
    Ok(card_of(&target))
}

fn card_of(target: &ModelVersion) -> Response {
    Json(CardReply {
        name: &target.name,
        version: target.version.to_string(),
        card: target.card.as_ref(),
    })
    .into_response()
}
