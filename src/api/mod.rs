//! The HTTP API: Open Inference Protocol (V2) REST routes, health, Triton's model configuration and `/metrics`.
//!
//! Handlers are thin: extract, call the transport-agnostic service, map the result. Every error, including
//! unknown routes, wrong methods and rejected bodies or paths, is an [`ApiError`] with a V2 `{"error": …}` body.

mod error;
mod feedback;
mod health;
mod infer;
pub mod management;
pub mod metadata;
mod monitoring;
pub mod openapi;
mod routing;
pub mod schema;
mod stats;
mod v1;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::Router;

pub use self::error::{ApiError, Failure};
pub use self::infer::{drain_body, InferRoutes, MODEL_VERSION, VARIANT};
use crate::config::AdminAccess;
use crate::inference::Pipeline;
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::monitoring::feedback::Feedback;
use crate::registry::{Registry, RepositoryManager};
use crate::routing::shadow::ShadowMirror;
use crate::routing::RoutingTable;

/// Shared state of every handler. One `Arc`: axum clones the state for every request (into each layer and
/// extractor that takes it), so a clone must be a single reference-count increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// The inference tower stack (routing → shadow → core).
    pub pipeline: Pipeline,
    pub routing: Arc<RoutingTable>,
    pub mirror: ShadowMirror,
    /// Outcome feedback: kept predictions, posted truths, quality.
    pub feedback: Feedback,
    pub manager: Arc<RepositoryManager>,
    /// Who may call the management API.
    pub admin: AdminAccess,
    /// The largest request body the inference handlers read, counted after decompression (`server.max_body_bytes`).
    pub max_body_bytes: usize,
    /// The byte budget requests reserve their memory from.
    pub memory: MemoryBudget,
    /// How long a request waits for memory (`limits.memory_wait_ms`).
    pub memory_wait: std::time::Duration,
    /// Distributed tracing, when `[tracing]` is on.
    pub tracing: Option<crate::otel::Tracing>,
}

/// `axum::extract::Path` whose rejection is an [`ApiError`] (so a bad path gets a V2 error body too).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct V2Path<T>(pub T);

const LIVE: &str = "/v2/health/live";
const READY: &str = "/v2/health/ready";
const METRICS: &str = "/metrics";
const OPENAPI: &str = "/openapi.json";

/// The paths admission never sheds or times out (`middleware::overload`): probes and scrapers must get an answer
/// from a saturated server, and the API description serves no model data.
pub const UNLIMITED_PATHS: [&str; 4] = [LIVE, READY, METRICS, OPENAPI];

/// Health endpoints: always open, as probes call them without credentials (server and model readiness alike, as in
/// Triton's and KServe's health protocol); server liveness and readiness are never shed.
pub fn health_routes() -> Router<AppState> {
    Router::new()
        .route(LIVE, get(health::live))
        .route(READY, get(health::ready))
        .route("/v2/models/{model}/ready", get(health::model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(health::model_version_ready),
        )
}

/// The bearer token of an `Authorization` header: the scheme is matched without regard to case (RFC 9110, 11.1) and
/// the token is taken without the whitespace around it.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// `/metrics`: open for scrapers; on the main port or its own (`server.metrics_port`).
pub fn metrics_routes() -> Router<AppState> {
    Router::new().route(METRICS, get(health::metrics))
}

/// `/openapi.json`: open, like health (it describes the API, it serves no model data).
pub fn openapi_routes() -> Router<AppState> {
    Router::new().route(OPENAPI, get(openapi::document))
}

/// Inference and metadata: behind the API keys when configured.
pub fn model_routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(metadata::server))
        .route("/v2/models/{model}", get(metadata::model))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(metadata::model_version),
        )
        .route("/v2/models/{model}/config", get(metadata::config))
        .route("/v2/models/stats", get(stats::all))
        .route("/v2/models/{model}/stats", get(stats::model))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(stats::version),
        )
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(metadata::config_version),
        )
        .route("/v2/models/{model}/infer", post(infer::infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer::infer_version),
        )
        .route("/v2/models/{model}/routing", get(routing::show))
        .route("/v1/models/{model}", get(v1::status).post(v1::predict))
        .route("/v2/models/{model}/drift", get(monitoring::drift))
        .route("/v2/models/{model}/feedback", post(feedback::post))
        .route("/v2/models/{model}/quality", get(feedback::quality))
        .route("/v2/models/{model}/card", get(monitoring::card))
        .route(
            "/v2/models/{model}/versions/{version}/card",
            get(monitoring::card_version),
        )
}

/// Management: behind the admin token (checked by the `Admin` extractor), disabled without one.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/v2/repository/index", post(management::index))
        .route("/v2/repository/models/{model}/load", post(management::load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(management::unload),
        )
        .route(
            "/v2/repository/models/{model}/default",
            post(management::set_default),
        )
        .route(
            "/v2/repository/models/{model}/routing",
            post(routing::change),
        )
}

/// Unknown routes and wrong methods get V2 errors too.
pub fn with_fallbacks(router: Router<AppState>) -> Router<AppState> {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}
