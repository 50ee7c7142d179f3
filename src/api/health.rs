//! Health endpoints (server and model liveness/readiness) and the Prometheus `/metrics` endpoint.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use super::{ApiError, AppState, V2Path};
use crate::registry::RegistryError;

/// Live as long as the process answers.
pub async fn live() -> StatusCode {
    StatusCode::OK
}

/// Ready once start-up loading has finished.
pub async fn ready(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    if state.registry.is_ready() {
        Ok(StatusCode::OK)
    } else {
        Err(RegistryError::ServerNotReady.into())
    }
}

pub async fn model_ready(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<StatusCode, ApiError> {
    state.registry.resolve(&model, None)?;
    Ok(StatusCode::OK)
}

pub async fn model_version_ready(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.registry.resolve(&model, Some(&version))?;
    Ok(StatusCode::OK)
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}
