//! `inference.GRPCInferenceService`: thin handlers over the same registry, inference stack and repository manager
//! as the REST API. Inference and metadata calls need an API key when keys are configured (health calls stay
//! open); repository calls need the admin token.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tower::ServiceExt;
use tracing::Instrument;

use super::error::GrpcError;
use super::{deadline, is_over_size, MODEL_VERSION, REQUEST_ID, VARIANT};
use crate::api::management::{admin_access, AdminCheck};
use crate::api::metadata::EXTENSIONS;
use crate::api::AppState;
use crate::config::AdminAccess;
use crate::inference::{InferCall, Payload};
use crate::middleware::{ApiKeys, Overload};
use crate::model::{IoSpec, ModelVersion};
use crate::otel::{PhaseEnd, RequestTrace};
use crate::proto::grpc_inference_service_server::GrpcInferenceService;
use crate::proto::model_metadata_response::TensorMetadata;
use crate::proto::repository_index_response::ModelIndex;
use crate::proto::*;
use crate::registry::{LoadOverride, RegistryError};
use crate::tensor::proto::{encode_response, wants_typed_outputs};
use crate::tensor::Tensor;

/// The service's handlers and what they share.
#[derive(Clone)]
pub struct Inference {
    state: AppState,
    api_keys: ApiKeys,
    /// Shared with the HTTP stack: both transports draw on the same slots and queue.
    admission: Overload,
    /// Log every call, not only failures (`log.access`).
    log_every_request: bool,
}

impl Inference {
    pub fn new(
        state: AppState,
        api_keys: ApiKeys,
        admission: Overload,
        log_every_request: bool,
    ) -> Inference {
        Inference {
            state,
            api_keys,
            admission,
            log_every_request,
        }
    }

    /// The API key check of inference and metadata calls.
    fn authorize(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), GrpcError> {
        if self.api_keys.is_empty() || self.api_keys.accepts(metadata.as_ref()) {
            Ok(())
        } else {
            Err(GrpcError::MissingApiKey)
        }
    }

    /// The admin token check of repository calls. A management API open without a token is open on `admin.port`
    /// only, so not here.
    fn admin(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), GrpcError> {
        if self.state.admin == AdminAccess::Open {
            return Err(GrpcError::AdminPortOnly);
        }
        match admin_access(&self.state.admin, metadata.as_ref()) {
            AdminCheck::Allowed => Ok(()),
            AdminCheck::Disabled => Err(GrpcError::ManagementDisabled),
            AdminCheck::Refused => Err(GrpcError::Unauthorized),
        }
    }

    /// One inference, admitted, within the request's deadline (`grpc-timeout`, at most `server.request_timeout_ms`).
    async fn infer(
        &self,
        mut headers: HeaderMap,
        request: ModelInferRequest,
        trace: Option<RequestTrace>,
    ) -> Result<Response<ModelInferResponse>, GrpcError> {
        let started = Instant::now();
        let request_id = match headers.get(REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                    .expect("a UUID is a header value");
                headers.insert(REQUEST_ID, id.clone());
                id
            }
        };
        let id = request_id.to_str().unwrap_or("").to_owned();
        let model = request.model_name.clone();
        // The core records model, version and variant in it, as for REST.
        let span = tracing::debug_span!(
            "request",
            request_id = %id,
            method = "grpc ModelInfer",
            model = tracing::field::Empty,
            version = tracing::field::Empty,
            variant = tracing::field::Empty,
        );
        let limit = deadline(&headers).map_or(self.admission.timeout(), |d| {
            d.min(self.admission.timeout())
        });
        let admitted = async {
            let _slot = self.admission.admit().await.ok_or(GrpcError::Shed)?;
            self.run(headers, request, request_id, trace.clone()).await
        };
        let result = tokio::time::timeout(limit, admitted.instrument(span))
            .await
            .unwrap_or(Err(GrpcError::Deadline {
                ms: limit.as_millis(),
            }));
        self.log(&result, &id, &model, started, trace.as_ref());
        if let Some(trace) = &trace {
            match &result {
                Ok(_) => trace.finish_call(tonic::Code::Ok as i32, None),
                Err(e) => trace.finish_call(e.code() as i32, Some(&e.to_string())),
            }
        }
        result
    }

    /// The call's server span, inside the trace its metadata carries, when tracing is on.
    fn trace(&self, metadata: &HeaderMap) -> Option<RequestTrace> {
        let tracing = self.state.tracing.as_ref()?;
        Some(tracing.call(metadata, "inference.GRPCInferenceService", "ModelInfer"))
    }

    /// The request log line, as the HTTP access log writes it: failures always (an internal error at ERROR, others at
    /// DEBUG), every call with `log.access`.
    fn log(
        &self,
        result: &Result<Response<ModelInferResponse>, GrpcError>,
        id: &str,
        model: &str,
        started: Instant,
        trace: Option<&RequestTrace>,
    ) {
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        // Formatted only for a line that is written.
        let ids = || {
            (
                trace.map(RequestTrace::trace_id),
                trace.map(RequestTrace::span_id),
            )
        };
        match result {
            Ok(reply) if self.log_every_request => {
                let (trace_id, span_id) = ids();
                tracing::info!(
                    request_id = id,
                    method = "grpc ModelInfer",
                    model,
                    model_version = reply.get_ref().model_version.as_str(),
                    code = "OK",
                    latency_ms,
                    trace_id = trace_id.as_deref(),
                    span_id = span_id.as_deref(),
                    "request"
                )
            }
            Ok(_) => {}
            Err(e) => {
                let code = e.code();
                let (trace_id, span_id) = ids();
                macro_rules! line {
                    ($level:ident, $message:literal) => {
                        tracing::$level!(
                            request_id = id,
                            method = "grpc ModelInfer",
                            model,
                            model_version = e.served_by_version(),
                            code = ?code,
                            latency_ms,
                            error = %e,
                            trace_id = trace_id.as_deref(),
                            span_id = span_id.as_deref(),
                            $message
                        )
                    };
                }
                if code == tonic::Code::Internal {
                    line!(error, "request failed");
                } else if self.log_every_request {
                    line!(info, "request");
                } else {
                    line!(debug, "request rejected");
                }
            }
        }
    }

    /// The request through the inference stack, and its outputs as the response.
    async fn run(
        &self,
        headers: HeaderMap,
        request: ModelInferRequest,
        request_id: http::HeaderValue,
        trace: Option<RequestTrace>,
    ) -> Result<Response<ModelInferResponse>, GrpcError> {
        let typed = wants_typed_outputs(&request);
        let wire_len = request.encoded_len();
        let mut request = request;
        let model = std::mem::take(&mut request.model_name);
        let version = Some(std::mem::take(&mut request.model_version)).filter(|v| !v.is_empty());
        let payload = Payload::Proto {
            request: Box::new(request),
            wire_len,
        };
        let mut call = InferCall::new(model, version, headers.into(), payload);
        call.trace = trace.clone();
        let mut done = self.state.pipeline.clone().oneshot(call).await?;
        // The encoding is about to be allocated beside the outputs: counted, and the version learns what requests of
        // this size hold.
        let mut memory = std::mem::take(&mut done.memory);
        let peak = done.held.max(2 * Tensor::bytes_of(&done.outputs));
        memory.charge(peak);
        done.model.footprint.observe(done.wire_len, peak);
        let encoding = Instant::now();
        let response = encode_response(
            &done.model.name,
            done.model.version,
            done.id,
            done.outputs,
            typed,
        );
        // Triton's statistics count the output phase of every successful request (perf_analyzer checks it).
        done.model.stats.output(encoding.elapsed());
        if let Some(trace) = trace.as_ref().filter(|t| t.sampled()) {
            let span = (encoding, Instant::now());
            trace.phase("encode", span, Vec::new, PhaseEnd::Ok);
        }
        let mut reply = Response::new(response);
        let metadata = reply.metadata_mut();
        metadata.insert(MODEL_VERSION, MetadataValue::from(done.model.version));
        if let Ok(variant) = done.variant.parse() {
            metadata.insert(VARIANT, variant);
        }
        if let Ok(id) = request_id.to_str() {
            if let Ok(id) = id.parse() {
                metadata.insert(REQUEST_ID, id);
            }
        }
        Ok(reply)
    }

    fn resolve(&self, name: &str, version: &str) -> Result<Arc<ModelVersion>, GrpcError> {
        Ok(self.state.registry.resolve(name, version_of(version))?)
    }
}

/// Writes the call's trace context (`traceparent`, `tracestate`) into response metadata.
fn inject(trace: &RequestTrace, metadata: &mut tonic::metadata::MetadataMap) {
    let mut headers = HeaderMap::new();
    trace.inject(&mut headers);
    for (name, value) in &headers {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes()),
            MetadataValue::try_from(value.as_bytes()),
        ) {
            metadata.insert(key, value);
        }
    }
}

/// An empty version field means "the version the server's policy picks".
fn version_of(version: &str) -> Option<&str> {
    Some(version).filter(|v| !v.is_empty())
}

type Reply<T> = Result<Response<T>, Status>;

/// The stream of answers of `ModelStreamInfer`.
pub type InferStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Reply<ServerLiveResponse> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Reply<ServerReadyResponse> {
        let ready = self.state.registry.readiness().is_ok();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    /// Ready or not for a known model (a version still loading, or failed, is not ready); `NOT_FOUND` for a model
    /// or version the server does not have.
    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Reply<ModelReadyResponse> {
        let request = request.into_inner();
        let ready = match self
            .state
            .registry
            .resolve(&request.name, version_of(&request.version))
        {
            Ok(_) => true,
            Err(
                e @ (RegistryError::ModelNotFound { .. } | RegistryError::VersionNotFound { .. }),
            ) => return Err(GrpcError::from(e).into()),
            Err(
                RegistryError::NotReady { .. }
                | RegistryError::ServerNotReady { .. }
                | RegistryError::ModelsNotReady { .. }
                | RegistryError::ShuttingDown
                | RegistryError::Unloaded { .. }
                | RegistryError::LoadTimedOut { .. },
            ) => false,
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Reply<ServerMetadataResponse> {
        self.authorize(request.metadata())?;
        Ok(Response::new(ServerMetadataResponse {
            name: "sluice".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Reply<ModelMetadataResponse> {
        self.authorize(request.metadata())?;
        let request = request.into_inner();
        let target = self.resolve(&request.name, &request.version)?;
        let versions = if request.version.is_empty() {
            self.state.registry.loaded_versions(&request.name)
        } else {
            vec![target.version.to_string()]
        };
        let tensors = |specs: &[IoSpec]| {
            specs
                .iter()
                .map(|s| {
                    let m = s.metadata();
                    TensorMetadata {
                        name: m.name.to_owned(),
                        datatype: m.datatype,
                        shape: m.shape.to_vec(),
                    }
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: target.name.clone(),
            versions,
            platform: "onnxruntime_onnx".into(),
            inputs: tensors(&target.signature.inputs),
            outputs: tensors(&target.signature.outputs),
        }))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Reply<ModelInferResponse> {
        self.authorize(request.metadata())?;
        let (metadata, _, message) = request.into_parts();
        let headers = metadata.into_headers();
        let trace = self.trace(&headers);
        // The answer names the trace (`traceparent`), success or not.
        match self.infer(headers, message, trace.clone()).await {
            Ok(mut reply) => {
                if let Some(trace) = &trace {
                    inject(trace, reply.metadata_mut());
                }
                Ok(reply)
            }
            Err(e) => {
                let mut status = Status::from(e);
                if let Some(trace) = &trace {
                    inject(trace, status.metadata_mut());
                }
                Err(status)
            }
        }
    }

    type ModelStreamInferStream = InferStream;

    /// Each request of the stream is served in turn; a failed one is answered with its `error_message` and the
    /// stream goes on, as Triton's clients expect.
    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Reply<InferStream> {
        self.authorize(request.metadata())?;
        let (metadata, _, incoming) = request.into_parts();
        let headers = metadata.into_headers();
        let service = self.clone();
        let answers = incoming.then(move |message| {
            let (service, headers) = (service.clone(), headers.clone());
            async move {
                let message = message.map_err(|status| {
                    if status.code() == tonic::Code::OutOfRange && is_over_size(status.message()) {
                        Status::resource_exhausted(status.message())
                    } else {
                        status
                    }
                })?;
                let trace = service.trace(&headers);
                Ok(match service.infer(headers, message, trace).await {
                    Ok(reply) => ModelStreamInferResponse {
                        error_message: String::new(),
                        infer_response: Some(reply.into_inner()),
                    },
                    Err(e) => ModelStreamInferResponse {
                        error_message: e.to_string(),
                        infer_response: None,
                    },
                })
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Reply<ModelConfigResponse> {
        self.authorize(request.metadata())?;
        let request = request.into_inner();
        let target = self.resolve(&request.name, &request.version)?;
        Ok(Response::new(ModelConfigResponse {
            config: Some(super::config::of(&target)),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Reply<ModelStatisticsResponse> {
        self.authorize(request.metadata())?;
        let request = request.into_inner();
        let name = Some(request.name.as_str()).filter(|n| !n.is_empty());
        let versions = self
            .state
            .registry
            .loaded(name, version_of(&request.version))
            .map_err(GrpcError::from)?;
        Ok(Response::new(ModelStatisticsResponse {
            model_stats: versions
                .iter()
                .map(|v| super::config::statistics(v))
                .collect(),
        }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Reply<RepositoryIndexResponse> {
        self.admin(request.metadata())?;
        let ready_only = request.into_inner().ready;
        let models = self
            .state
            .registry
            .index()
            .into_iter()
            .filter(|row| !ready_only || row.state == "READY")
            .map(|row| ModelIndex {
                name: row.name,
                version: row.version,
                state: row.state.to_owned(),
                reason: row.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Reply<RepositoryModelLoadResponse> {
        self.admin(request.metadata())?;
        let request = request.into_inner();
        let (force, config) = load_parameters(&request.model_name, request.parameters)?;
        self.state
            .manager
            .load(&request.model_name, force, config)
            .await
            .map_err(GrpcError::from)?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Reply<RepositoryModelUnloadResponse> {
        self.admin(request.metadata())?;
        let request = request.into_inner();
        self.state
            .manager
            .unload(&request.model_name)
            .await
            .map_err(GrpcError::from)?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

/// A load call's parameters: `force` (let an incompatible new version become the default) and Triton's `config`
/// (a JSON model configuration). Model files delivered in the call (`file:<version>/<name>`) are refused: sluice
/// loads models only from its repository.
fn load_parameters(
    model: &str,
    parameters: std::collections::HashMap<String, ModelRepositoryParameter>,
) -> Result<(bool, Option<LoadOverride>), GrpcError> {
    use model_repository_parameter::ParameterChoice;
    let mut force = false;
    let mut config = None;
    for (name, value) in parameters {
        match (name.as_str(), value.parameter_choice) {
            ("force", Some(ParameterChoice::BoolParam(b))) => force = b,
            ("config", Some(ParameterChoice::StringParam(text))) => {
                config = Some(
                    LoadOverride::from_triton_config(model, &text)
                        .map_err(GrpcError::InvalidArgument)?,
                );
            }
            ("force" | "config", _) => {
                return Err(GrpcError::InvalidArgument(format!(
                    "parameters.{name}: force is a bool_param, config a string_param"
                )))
            }
            (other, _) if other.starts_with("file:") => {
                return Err(GrpcError::InvalidArgument(format!(
                    "parameters.{other}: sluice loads models only from its repository; place the file at \
                     <repository>/{model}/<version>/model.onnx and load again"
                )))
            }
            (other, _) => {
                return Err(GrpcError::InvalidArgument(format!(
                    "parameters.{other} is not a load parameter: sluice takes force and config"
                )))
            }
        }
    }
    Ok((force, config))
}
