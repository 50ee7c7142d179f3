//! The OpenAPI 3 document (`GET /openapi.json`), generated with `utoipa` from the `#[utoipa::path]` annotations on
//! the handlers and the body types in [`super::schema`].

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::feedback::FeedbackBody;
use super::schema::*;
use crate::model::stats::{BatchSnapshot, BatchTotals, InferenceTotals, Snapshot, Total};
use crate::monitoring::feedback::quality::{ClassQuality, Quality};
use crate::monitoring::feedback::{
    ModelQuality, PostReply, RecordError, SeriesQuality, Set, TruthRecord,
};
use crate::registry::IndexEntry;

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
        super::feedback::post,
        super::feedback::quality,
        document,
    ),
    components(schemas(
        ErrorBody, Live, Ready, ModelReady, ServerMetadata, TensorMetadata, ModelMetadata, TritonConfig,
        TritonTensorConfig, TritonInstanceGroup, ModelStatistics, VersionStatistics, Snapshot, InferenceTotals,
        BatchSnapshot, BatchTotals, Total, RoutingState, ShadowPair, OutputComparison, RoutingChanged, Done,
        DefaultVersion, ModelDrift, VersionDrift, CardReply, IndexEntry, V1Status, V1Request, V1Response, V2Tensor,
        V2RequestedOutput, V2InferRequest, V2InferResponse, FeedbackBody, TruthRecord, PostReply, RecordError,
        ModelQuality, SeriesQuality, Set, Quality, ClassQuality
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
