//! The bodies the HTTP API sends, as serde types that also describe themselves to the OpenAPI document, so the
//! document is generated from what is sent. The V2 and V1 inference bodies are the exception: the codecs in
//! `tensor::json` and `api::v1` read and write them without an intermediate value (for speed), so their shape is
//! described here by [`V2InferRequest`], [`V2InferResponse`] and [`V1Request`]. The conformance suite's Schemathesis
//! run checks every response of every operation against the document.

use serde::Serialize;
use utoipa::ToSchema;

use crate::model::card::ModelCard;
pub use crate::model::signature::TensorMetadata;
use crate::model::stats::Snapshot;
use crate::monitoring::drift::DriftReport;
use crate::routing::table::Source;
use crate::routing::RoutingPolicy;

/// The V2 error body every failing endpoint returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong: the input, what was expected and what was sent.
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Live {
    pub live: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
    /// For a repository in a bucket that cannot be read now: why (what is loaded keeps serving).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

/// A model version's readiness (`ready` is always true: a version that is not ready answers 503).
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelReady<'a> {
    pub name: &'a str,
    pub version: String,
    pub ready: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    pub name: &'static str,
    pub version: &'static str,
    /// The V2 extensions implemented.
    pub extensions: &'static [&'static str],
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelMetadata<'a> {
    pub name: &'a str,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata<'a>>,
    pub outputs: Vec<TensorMetadata<'a>>,
}

/// The subset of Triton's model configuration that standard tools read.
#[derive(Debug, Serialize, ToSchema)]
pub struct TritonConfig<'a> {
    pub name: &'a str,
    pub platform: &'static str,
    pub backend: &'static str,
    pub max_batch_size: u64,
    pub input: Vec<TritonTensorConfig<'a>>,
    pub output: Vec<TritonTensorConfig<'a>>,
    pub instance_group: Vec<TritonInstanceGroup>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TritonTensorConfig<'a> {
    pub name: &'a str,
    /// `TYPE_FP32` and the like.
    pub data_type: &'static str,
    pub dims: &'a [i64],
}

/// The version's sessions, as one CPU instance group.
#[derive(Debug, Serialize, ToSchema)]
pub struct TritonInstanceGroup {
    pub count: usize,
    pub kind: &'static str,
}

/// Triton's statistics extension reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelStatistics<'a> {
    pub model_stats: Vec<VersionStatistics<'a>>,
}

/// One loaded version's statistics.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionStatistics<'a> {
    pub name: &'a str,
    pub version: String,
    #[serde(flatten)]
    pub stats: Snapshot,
}

/// The active routing policy and the shadow comparison of a model.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoutingState<'a> {
    pub model: &'a str,
    pub policy: Option<&'a RoutingPolicy>,
    /// Where the policy came from: the routing file or the management API.
    pub source: Option<Source>,
    /// The versions the policy sends traffic to that cannot serve now (role, version and why); their traffic goes
    /// to stable.
    pub not_ready: Vec<String>,
    pub shadow: Vec<ShadowPair>,
}

/// The comparison of one primary version with its shadow.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShadowPair {
    pub primary_version: String,
    pub shadow_version: String,
    pub compared: u64,
    pub errors: u64,
    pub dropped: u64,
    pub last_error: Option<String>,
    pub outputs: std::collections::BTreeMap<String, OutputComparison>,
}

/// How one output of the shadow compares with the primary's.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutputComparison {
    /// Share of equal elements (integer, boolean and string outputs).
    pub agreement_rate: Option<f64>,
    /// Mean and largest absolute difference (floating outputs).
    pub abs_diff_mean: Option<f64>,
    pub abs_diff_max: Option<f64>,
    pub exact_elements: u64,
    pub float_elements: u64,
    pub shape_mismatches: u64,
}

/// A routing policy as the management API left it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoutingChanged<'a> {
    pub model: &'a str,
    pub policy: &'a RoutingPolicy,
    pub source: Source,
}

/// A management call's empty success body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {}

#[derive(Debug, Serialize, ToSchema)]
pub struct DefaultVersion<'a> {
    pub name: &'a str,
    pub default_version: String,
}

/// Input drift of every loaded version with a reference profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelDrift<'a> {
    pub model: &'a str,
    pub versions: Vec<VersionDrift>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionDrift {
    pub version: String,
    pub report: DriftReport,
}

/// A version's model card (`null` when it has none).
#[derive(Debug, Serialize, ToSchema)]
pub struct CardReply<'a> {
    pub name: &'a str,
    pub version: String,
    pub card: Option<&'a ModelCard>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct V1Status<'a> {
    pub name: &'a str,
    pub ready: bool,
}

/// A KServe V1 response: one prediction per instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct V1Response {
    #[schema(value_type = Vec<Object>)]
    pub predictions: Vec<serde_json::Value>,
}

/// One tensor of a V2 request or response.
#[derive(ToSchema)]
#[allow(dead_code)] // described, not built: the codec writes this shape directly
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
#[allow(dead_code)] // described, not built: the codec reads this shape directly
pub struct V2RequestedOutput {
    name: String,
}

/// A V2 inference request.
#[derive(ToSchema)]
#[allow(dead_code)] // described, not built: the codec reads this shape directly
pub struct V2InferRequest {
    id: Option<String>,
    inputs: Vec<V2Tensor>,
    outputs: Option<Vec<V2RequestedOutput>>,
}

/// A V2 inference response.
#[derive(ToSchema)]
#[allow(dead_code)] // described, not built: the codec writes this shape directly
pub struct V2InferResponse {
    model_name: String,
    model_version: String,
    id: Option<String>,
    outputs: Vec<V2Tensor>,
}

/// A KServe V1 request: `instances` (or `inputs`), one per row.
#[derive(ToSchema)]
#[allow(dead_code)] // described, not built: `api::v1` reads this shape directly
pub struct V1Request {
    #[schema(value_type = Option<Vec<Object>>)]
    instances: Option<Vec<serde_json::Value>>,
    #[schema(value_type = Option<Vec<Object>>)]
    inputs: Option<Vec<serde_json::Value>>,
}

impl ModelReady<'_> {
    pub fn of(target: &crate::model::ModelVersion) -> ModelReady<'_> {
        ModelReady {
            name: &target.name,
            version: target.version.to_string(),
            ready: true,
        }
    }
}
