//! The management API (Triton/MLServer compatible): repository index, load, unload, and our default-version call.
//! Every route needs the admin bearer token; with no token configured the API is disabled (403). It is open only on
//! its own port, when the operator says so (`admin.require_token = false`).

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::schema::{self, DefaultVersion, Done};
use super::{AdminAccess, ApiError, AppState, V2Path};
use crate::registry::{IndexEntry, LoadOverride};

/// Proof that the caller may use the management API: it carried the admin token, or the API is open on its own port.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        match admin_access(&state.admin, &parts.headers) {
            AdminCheck::Allowed => Ok(Admin),
            AdminCheck::Disabled => Err(ApiError::ManagementDisabled),
            AdminCheck::Refused => Err(ApiError::Unauthorized),
        }
    }
}

/// Whether a management call may proceed, whatever its transport.
pub enum AdminCheck {
    Allowed,
    /// No admin token is configured.
    Disabled,
    /// The token is missing or wrong.
    Refused,
}

/// Checks the bearer token in `headers` (HTTP headers or gRPC metadata) against `access`.
pub fn admin_access(access: &AdminAccess, headers: &axum::http::HeaderMap) -> AdminCheck {
    let expected = match access {
        AdminAccess::Disabled => return AdminCheck::Disabled,
        AdminAccess::Open => return AdminCheck::Allowed,
        AdminAccess::Token(token) => token,
    };
    let given = super::bearer_token(headers).unwrap_or("");
    // Constant-time: how much of a guess matches must not show in the response time.
    if given.as_bytes().ct_eq(expected.as_bytes()).into() {
        AdminCheck::Allowed
    } else {
        AdminCheck::Refused
    }
}

#[derive(Debug, Default, Deserialize)]
struct IndexRequest {
    /// Only versions that are ready.
    #[serde(default)]
    ready: bool,
}

#[derive(Debug, Default, Deserialize)]
struct LoadRequest {
    #[serde(default)]
    parameters: LoadParameters,
}

/// A load call's parameters: sluice's `force`, and Triton's `config` (a JSON model configuration, as a string, of which
/// the subset in `registry::overrides` is honoured). Triton's `file:<version>/<name>` parameters (a model delivered
/// in the call) are refused: sluice loads models only from its repository.
#[derive(Debug, Default, Deserialize)]
struct LoadParameters {
    /// Let an incompatible new version become the default.
    #[serde(default)]
    force: bool,
    config: Option<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

impl LoadParameters {
    /// The configuration override, or a 400 that names what cannot be honoured.
    fn config(&self, model: &str) -> Result<Option<LoadOverride>, ApiError> {
        if let Some(name) = self.other.keys().next() {
            return Err(ApiError::BadRequest(if name.starts_with("file:") {
                format!(
                    "parameters.{name}: sluice loads models only from its repository; place the file at \
                     <repository>/{model}/<version>/model.onnx and load again"
                )
            } else {
                format!("parameters.{name} is not a load parameter: sluice takes force and config")
            }));
        }
        self.config
            .as_deref()
            .map(|text| LoadOverride::from_triton_config(model, text))
            .transpose()
            .map_err(ApiError::BadRequest)
    }
}

#[derive(Debug, Deserialize)]
struct DefaultRequest {
    version: serde_json::Value,
}

/// An optional JSON body: empty means the default value.
fn optional_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed request body: {e}")))
}

#[utoipa::path(
    post,
    path = "/v2/repository/index",
    tag = "management",
    request_body(content = Object, content_type = "application/json"),
    security(("admin_token" = [])),
    responses((status = 200, description = "Every model version with its state", body = Vec<IndexEntry>), (status = 400, description = "Invalid request", body = schema::ErrorBody), (status = 401, description = "Missing or wrong admin token", body = schema::ErrorBody), (status = 403, description = "Management API disabled", body = schema::ErrorBody), (status = 404, description = "Unknown model", body = schema::ErrorBody))
)]
pub async fn index(
    _: Admin,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Vec<IndexEntry>>, ApiError> {
    let request: IndexRequest = optional_body(&body)?;
    let mut rows = state.registry.index();
    if request.ready {
        rows.retain(|r| r.state == "READY");
    }
    Ok(Json(rows))
}

#[utoipa::path(
    post,
    path = "/v2/repository/models/{model}/load",
    tag = "management",
    params(("model" = String, Path, description = "Model name")),
    request_body(content = Object, content_type = "application/json"),
    security(("admin_token" = [])),
    responses((status = 200, description = "Loaded", body = schema::Done), (status = 400, description = "Invalid request", body = schema::ErrorBody), (status = 401, description = "Missing or wrong admin token", body = schema::ErrorBody), (status = 403, description = "Management API disabled", body = schema::ErrorBody), (status = 404, description = "Unknown model", body = schema::ErrorBody), (status = 500, description = "Repository error", body = schema::ErrorBody))
)]
pub async fn load(
    _: Admin,
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
    body: Bytes,
) -> Result<Json<Done>, ApiError> {
    let request: LoadRequest = optional_body(&body)?;
    let config = request.parameters.config(&model)?;
    state
        .manager
        .load(&model, request.parameters.force, config)
        .await?;
    Ok(Json(Done {}))
}

#[utoipa::path(
    post,
    path = "/v2/repository/models/{model}/unload",
    tag = "management",
    params(("model" = String, Path, description = "Model name")),
    security(("admin_token" = [])),
    responses((status = 200, description = "Unloaded", body = schema::Done), (status = 400, description = "Invalid request", body = schema::ErrorBody), (status = 401, description = "Missing or wrong admin token", body = schema::ErrorBody), (status = 403, description = "Management API disabled", body = schema::ErrorBody), (status = 404, description = "Unknown model", body = schema::ErrorBody), (status = 500, description = "Repository error", body = schema::ErrorBody))
)]
pub async fn unload(
    _: Admin,
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
) -> Result<Json<Done>, ApiError> {
    state.manager.unload(&model).await?;
    Ok(Json(Done {}))
}

#[utoipa::path(
    post,
    path = "/v2/repository/models/{model}/default",
    tag = "management",
    params(("model" = String, Path, description = "Model name")),
    request_body(content = Object, content_type = "application/json"),
    security(("admin_token" = [])),
    responses((status = 200, description = "Default version set", body = schema::DefaultVersion), (status = 400, description = "Invalid request", body = schema::ErrorBody), (status = 401, description = "Missing or wrong admin token", body = schema::ErrorBody), (status = 403, description = "Management API disabled", body = schema::ErrorBody), (status = 404, description = "Unknown model", body = schema::ErrorBody))
)]
/// `POST /v2/repository/models/{m}/default` with `{"version": 1}`: roll the default back (or forward) at once.
pub async fn set_default(
    _: Admin,
    State(state): State<AppState>,
    V2Path(model): V2Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: DefaultRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("expected {{\"version\": <integer>}}: {e}")))?;
    let version = match &request.version {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::BadRequest(format!(
            "'version' must be a version number, got {}",
            request.version
        ))
    })?;
    state.manager.set_default(&model, version).await?;
    Ok(Json(DefaultVersion {
        name: &model,
        default_version: version.to_string(),
    })
    .into_response())
}
