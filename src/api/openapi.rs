//! The OpenAPI 3 document (`GET /openapi.json`), generated with `utoipa` from the `#[utoipa::path]` annotations on
//! the handlers and the wire-format schemas below.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The V2 error body every failing endpoint returns.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// What went wrong: the input, what was expected and what was sent.
    error: String,
}

/// One tensor of a V2 request or response.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct V2Tensor {
    name: String,
    /// BOOL, UINT8…UINT64, INT8…INT64, FP16, FP32, FP64 or BYTES.
    datatype: String,
    shape: Vec<i64>,
    /// Row-major values, flat or nested.
    #[schema(value_type = Vec<Object>)]
    data: Vec<serde_json::Value>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct V2RequestedOutput {
    name: String,
}

/// A V2 inference request.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct V2InferRequest {
    id: Option<String>,
    inputs: Vec<V2Tensor>,
    outputs: Option<Vec<V2RequestedOutput>>,
}

/// A V2 inference response.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct V2InferResponse {
    model_name: String,
    model_version: String,
    id: Option<String>,
    outputs: Vec<V2Tensor>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TensorMetadata {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[schema(value_type = Option<Object>)]
    parameters: Option<serde_json::Value>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ModelMetadata {
    name: String,
    versions: Vec<String>,
    platform: String,
    inputs: Vec<TensorMetadata>,
    outputs: Vec<TensorMetadata>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ServerMetadata {
    name: String,
    version: String,
    extensions: Vec<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Live {
    live: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Ready {
    ready: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ModelReady {
    name: String,
    version: String,
    ready: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TritonTensorConfig {
    name: String,
    data_type: String,
    dims: Vec<i64>,
}

/// The subset of Triton's model configuration that standard tools read.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TritonConfig {
    name: String,
    platform: String,
    backend: String,
    max_batch_size: i64,
    input: Vec<TritonTensorConfig>,
    output: Vec<TritonTensorConfig>,
    instance_group: Vec<TritonInstanceGroup>,
}

/// The version's sessions, as one CPU instance group.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TritonInstanceGroup {
    count: u64,
    kind: String,
}

/// A count and its cumulative nanoseconds (Triton's `StatisticDuration`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StatisticDuration {
    count: u64,
    ns: u64,
}

/// Triton's `InferStatistics`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InferStatistics {
    success: StatisticDuration,
    fail: StatisticDuration,
    queue: StatisticDuration,
    compute_input: StatisticDuration,
    compute_infer: StatisticDuration,
    compute_output: StatisticDuration,
    cache_hit: StatisticDuration,
    cache_miss: StatisticDuration,
}

/// Triton's `InferBatchStatistics`: the phases of the batched runs of one size.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InferBatchStatistics {
    batch_size: u64,
    compute_input: StatisticDuration,
    compute_infer: StatisticDuration,
    compute_output: StatisticDuration,
}

/// One loaded version's statistics.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VersionStatistics {
    name: String,
    version: String,
    /// Milliseconds since the Unix epoch; 0 before the first.
    last_inference: u64,
    inference_count: u64,
    execution_count: u64,
    inference_stats: InferStatistics,
    batch_stats: Vec<InferBatchStatistics>,
}

/// Triton's statistics extension reply.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ModelStatistics {
    model_stats: Vec<VersionStatistics>,
}

/// The active routing policy and shadow comparison of a model.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RoutingState {
    model: String,
    #[schema(value_type = Option<Object>)]
    policy: Option<serde_json::Value>,
    source: Option<String>,
    /// The versions the policy sends traffic to that cannot serve now (role, version and why); their traffic goes to
    /// stable.
    not_ready: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    shadow: Vec<serde_json::Value>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct IndexRow {
    name: String,
    version: String,
    /// READY or UNAVAILABLE.
    state: String,
    reason: String,
    default: bool,
}

/// A KServe V1 request: `instances` (or `inputs`), one per row.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct V1Request {
    #[schema(value_type = Vec<Object>)]
    instances: Option<Vec<serde_json::Value>>,
    #[schema(value_type = Option<Vec<Object>>)]
    inputs: Option<Vec<serde_json::Value>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct V1Response {
    #[schema(value_type = Vec<Object>)]
    predictions: Vec<serde_json::Value>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct V1Status {
    name: String,
    ready: bool,
}

/// Adds the two bearer schemes: API keys (inference, metadata) and the admin token (management).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer =
            || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("api_key", bearer());
        components.add_security_scheme("admin_token", bearer());
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "sluice", description = "ONNX model server: Open Inference Protocol (V2 REST), KServe V1, management."),
    paths(
        super::health::live,
        super::health::ready,
        super::health::model_ready,
        super::health::model_version_ready,
        super::health::metrics,
        super::metadata::server,
        super::metadata::model,
        super::metadata::model_version,
        super::metadata::config,
        super::metadata::config_version,
        super::stats::all,
        super::stats::model,
        super::stats::version,
        super::infer::infer,
        super::infer::infer_version,
        super::routing::show,
        super::routing::change,
        super::management::index,
        super::management::load,
        super::management::unload,
        super::management::set_default,
        super::v1::status,
        super::v1::predict,
        super::monitoring::drift,
        super::monitoring::card,
        super::monitoring::card_version,
        document,
    ),
    components(schemas(
        ErrorBody, V2Tensor, V2RequestedOutput, V2InferRequest, V2InferResponse, TensorMetadata, ModelMetadata,
        ServerMetadata, Live, Ready, ModelReady, TritonTensorConfig, TritonConfig, TritonInstanceGroup, RoutingState, IndexRow, V1Request,
        V1Response, V1Status, StatisticDuration, InferStatistics, InferBatchStatistics, VersionStatistics,
        ModelStatistics
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
