//! Health endpoints (server and model liveness/readiness) and the Prometheus `/metrics` endpoint.
//!
//! Success is 200 with a small JSON body (`{"live": true}`, `{"ready": true}`, as KServe answers, which its client
//! reads); not ready is 503 with a V2 error body saying why, as KServe does.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState, V2Path};

/// Live as long as the process answers.
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// Ready once start-up loading has finished.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.registry.is_ready() {
        Ok(Json(json!({ "ready": true })))
    } else {
        Err(state.registry.not_ready_error().into())
    }
}

pub async fn model_ready(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Json<Value>, ApiError> {
    let target = state.registry.resolve(&model, None)?;
    Ok(Json(
        json!({ "name": target.name, "version": target.version.to_string(), "ready": true }),
    ))
}

pub async fn model_version_ready(
    State(state): State<AppState>,
    V2Path((model, version)): V2Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let target = state.registry.resolve(&model, Some(&version))?;
    Ok(Json(
        json!({ "name": target.name, "version": target.version.to_string(), "ready": true }),
    ))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
