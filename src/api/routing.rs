//! Routing endpoints: `GET /v2/models/{m}/routing` (active policy and shadow comparison, open like metadata) and
//! `POST /v2/repository/models/{m}/routing` (admin: change weights, promote, roll back, on this replica).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::management::Admin;
use super::schema::{self, OutputComparison, RoutingChanged, RoutingState, ShadowPair};
use super::{ApiError, AppState, V2Path};
use crate::routing::table::Source;
use crate::routing::{RoutingChange, RoutingPolicy};

#[utoipa::path(
    get,
    path = "/v2/models/{model}/routing",
    tag = "routing",
    params(("model" = String, Path, description = "Model name")),
    security((), ("api_key" = [])),
    responses((status = 200, description = "Active routing policy and shadow comparison", body = schema::RoutingState), (status = 400, description = "Invalid path", body = schema::ErrorBody), (status = 401, description = "Missing or wrong API key", body = schema::ErrorBody), (status = 404, description = "Unknown model or version", body = schema::ErrorBody), (status = 503, description = "Not ready", body = schema::ErrorBody))
)]
pub async fn show(
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Response, ApiError> {
    state
        .registry
        .resolve(&model, None)
        .map(|_| ())
        .or_else(|e| match e {
            crate::registry::RegistryError::NotReady { .. } => Ok(()),
            other => Err(other),
        })?;
    let active = state.routing.get(&model);
    let shadow = state
        .mirror
        .stats_for(&model)
        .into_iter()
        .map(|(primary, shadow, stats)| ShadowPair {
            primary_version: primary.to_string(),
            shadow_version: shadow.to_string(),
            compared: stats.compared,
            errors: stats.errors,
            dropped: stats.dropped,
            outputs: stats
                .outputs
                .iter()
                .map(|(name, c)| {
                    let summary = OutputComparison {
                        agreement_rate: c.agreement_rate(),
                        abs_diff_mean: c.abs_diff_mean(),
                        abs_diff_max: (c.float_elements > 0).then_some(c.abs_diff_max),
                        exact_elements: c.exact_elements,
                        float_elements: c.float_elements,
                        shape_mismatches: c.shape_mismatches,
                    };
                    (name.clone(), summary)
                })
                .collect(),
            last_error: stats.last_error,
        })
        .collect();
    let not_ready = active.as_ref().map_or_else(Vec::new, |a| {
        crate::routing::unready_versions(&a.policy, &state.registry, &model)
    });
    Ok(Json(RoutingState {
        model: &model,
        policy: active.as_ref().map(|a| &a.policy),
        source: active.as_ref().map(|a| a.source),
        not_ready,
        shadow,
    })
    .into_response())
}

/// One of: `{"policy": {...}}`, `{"set_weight": {"variant": "canary", "weight": 20}}`, `{"promote": "canary"}`,
/// `{"rollback": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum ChangeRequest {
    Policy(RoutingPolicy),
    SetWeight { variant: String, weight: f64 },
    Promote(String),
    Rollback(bool),
}

#[utoipa::path(
    post,
    path = "/v2/repository/models/{model}/routing",
    tag = "management",
    params(("model" = String, Path, description = "Model name")),
    request_body(content = Object, content_type = "application/json"),
    security(("admin_token" = [])),
    responses((status = 200, description = "The new policy", body = schema::RoutingChanged), (status = 400, description = "Invalid request", body = schema::ErrorBody), (status = 401, description = "Missing or wrong admin token", body = schema::ErrorBody), (status = 403, description = "Management API disabled", body = schema::ErrorBody), (status = 404, description = "Unknown model", body = schema::ErrorBody), (status = 500, description = "Repository error", body = schema::ErrorBody))
)]
pub async fn change(
    _: Admin,
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: ChangeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected one of {{\"policy\": {{…}}}}, {{\"set_weight\": {{\"variant\": …, \"weight\": …}}}}, {{\"promote\": \"<variant>\"}}, {{\"rollback\": true}}: {e}"
        ))
    })?;
    if !state.registry.snapshot().contains_key(&model) {
        return Err(crate::registry::RegistryError::ModelNotFound { model }.into());
    }
    let change = match request {
        ChangeRequest::Policy(p) => RoutingChange::Replace(p),
        ChangeRequest::SetWeight { variant, weight } => {
            RoutingChange::SetWeight { variant, weight }
        }
        ChangeRequest::Promote(variant) => RoutingChange::Promote { variant },
        ChangeRequest::Rollback(true) => RoutingChange::Rollback,
        ChangeRequest::Rollback(false) => {
            return Err(ApiError::BadRequest("\"rollback\" must be true".into()))
        }
    };
    let staged = state.routing.stage_change(&model, change)?;
    let policy = crate::routing::apply_staged(&state.routing, &state.manager, staged).await?;
    Ok(Json(RoutingChanged {
        model: &model,
        policy: &policy,
        source: Source::Management,
    })
    .into_response())
}
