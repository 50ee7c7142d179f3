//! Health endpoints (server and model liveness/readiness) and the Prometheus `/metrics` endpoint.
//!
//! Success is 200 with a small JSON body (`{"live": true}`, `{"ready": true}`, as KServe answers, which its client
//! reads); not ready is 503 with a V2 error body saying why, as KServe does.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::schema::{self, Live, ModelReady, Ready};
use super::{ApiError, AppState, V2Path};

#[utoipa::path(
    get,
    path = "/v2/health/live",
    tag = "health",
    responses((status = 200, description = "Live", body = schema::Live))
)]
/// Live as long as the process answers.
pub async fn live() -> Json<Live> {
    Json(Live { live: true })
}

#[utoipa::path(
    get,
    path = "/v2/health/ready",
    tag = "health",
    responses((status = 200, description = "Ready", body = schema::Ready), (status = 503, description = "Loading, a model without a ready version (strict readiness), or shutting down", body = schema::ErrorBody))
)]
/// Ready once start-up loading has finished and (with `models.strict_readiness`) every model has a ready version.
/// A bucket that cannot be read does not make it unready: what is loaded serves, and the body says why.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    state.registry.readiness()?;
    Ok(Json(Ready {
        ready: true,
        repository: state.registry.source_status().problem.clone(),
    }))
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/ready",
    tag = "health",
    params(("model" = String, Path, description = "Model name")),
    responses((status = 200, description = "Ready", body = schema::ModelReady), (status = 400, description = "Invalid path", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 503, description = "Not ready", body = schema::ErrorBody))
)]
pub async fn model_ready(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Response, ApiError> {
    let target = state.registry.resolve(&model, None)?;
    Ok(Json(ModelReady::of(&target)).into_response())
}

#[utoipa::path(
    get,
    path = "/v2/models/{model}/versions/{version}/ready",
    tag = "health",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    responses((status = 200, description = "Ready", body = schema::ModelReady), (status = 400, description = "Invalid path", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 503, description = "Not ready", body = schema::ErrorBody))
)]
pub async fn model_version_ready(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
) -> Result<Response, ApiError> {
    let target = state.registry.resolve(&model, Some(&version))?;
    Ok(Json(ModelReady::of(&target)).into_response())
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
