//! The inference pipeline, independent of HTTP, as a tower stack:
//!
//! ```text
//! RoutingLayer  (picks the version and variant when the URL names none)
//!   ShadowLayer (samples requests to mirror to a shadow version, after the primary answered)
//!     PayloadLogLayer (samples requests to log, redacted, through a bounded buffer)
//!       InferenceService: resolve the version → decode → validate → run → outputs
//! ```
//!
//! Owns [`InferCall`] / [`Inferred`] (what flows through the stack), [`InferenceError`] (which joins the errors of
//! each stage) and the per-request metrics. A future gRPC front end would call the same [`Pipeline`].

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use tower::{Service, ServiceBuilder};

use crate::config::Limits;
use crate::memory::{MemoryError, Reservation};
use crate::metrics::{Metrics, Outcome, VersionSeries};
use crate::model::stats::RequestPhases;
use crate::model::{InferError, ModelVersion};
use crate::monitoring::payload::{PayloadLog, PayloadLogLayer, PayloadLogging};
use crate::registry::{Registry, RegistryError};
use crate::routing::shadow::{Shadow, ShadowLayer, ShadowMirror};
use crate::routing::{Routing, RoutingLayer, RoutingTable, PINNED};
use crate::tensor::json::{
    decode_with_binary, BinaryOutputs, DecodeError, DecodeLimits, InferRequest,
};
use crate::tensor::Tensor;
use crate::validate::{validate, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    Infer(#[from] InferError),
    /// The memory budget could not hold the request.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// An error of a request that reached a version: which version and variant it was, so the response and the
    /// log line can say who answered.
    #[error("{source}")]
    Served {
        version: u64,
        variant: Cow<'static, str>,
        source: Box<InferenceError>,
    },
}

impl InferenceError {
    pub fn outcome(&self) -> Outcome {
        match self {
            InferenceError::Registry(_)
            | InferenceError::Decode(_)
            | InferenceError::Validation(_) => Outcome::ClientError,
            InferenceError::Infer(_) | InferenceError::Memory(_) => Outcome::ServerError,
            InferenceError::Served { source, .. } => source.outcome(),
        }
    }

    /// The error itself, without the version and variant it was attributed to.
    pub fn cause(&self) -> &InferenceError {
        match self {
            InferenceError::Served { source, .. } => source.cause(),
            other => other,
        }
    }

    /// The version and variant that answered, when the request reached a version.
    pub fn served_by(&self) -> Option<(u64, &str)> {
        match self {
            InferenceError::Served {
                version, variant, ..
            } => Some((*version, variant)),
            _ => None,
        }
    }
}

/// One inference request on its way down the stack.
#[derive(Debug)]
pub struct InferCall {
    pub model: String,
    /// The version the client named, or (after routing) the one routing chose.
    pub version: Option<String>,
    /// Request headers (the routing key header is read from them).
    pub headers: HeaderMap,
    /// The V2 JSON body.
    pub body: Bytes,
    /// The variant label: `pinned` when the client named a version, else set by routing (borrowed for `pinned` and
    /// `stable`, so most requests carry no copy of it).
    pub variant: Cow<'static, str>,
    /// Set by the shadow layer: keep a copy of the validated inputs for the shadow run.
    pub capture_inputs: bool,
    /// Triton's binary extension: the JSON header is the first this-many bytes of `body`, raw tensor bytes follow.
    pub binary_header_len: Option<usize>,
    /// The memory reserved for the request (empty when the front end reserved none: the core reserves the version's
    /// estimate then, waiting for it if need be).
    pub memory: Reservation,
}

impl InferCall {
    pub fn new(
        model: String,
        version: Option<String>,
        headers: HeaderMap,
        body: Bytes,
    ) -> InferCall {
        InferCall {
            model,
            variant: Cow::Borrowed(if version.is_some() { PINNED } else { "" }),
            version,
            headers,
            body,
            capture_inputs: false,
            binary_header_len: None,
            memory: Reservation::none(),
        }
    }
}

/// A finished inference: the version that served it, its outputs and the variant it was routed to.
#[derive(Debug)]
pub struct Inferred {
    pub model: Arc<ModelVersion>,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
    pub variant: Cow<'static, str>,
    /// The validated inputs, when the shadow layer asked for them.
    pub captured_inputs: Option<Vec<Tensor>>,
    /// Outputs the client asked to receive as binary data.
    pub binary_outputs: BinaryOutputs,
    /// The request's memory, to hold until its response is sent; it holds at least [`Inferred::held`].
    pub memory: Reservation,
    /// The most the request held at once so far (body and tensors; the front end adds its encoding).
    pub held: usize,
    /// The length of the request body, which the version's footprint is learned per byte of.
    pub body_len: usize,
}

/// The future every service of the inference stack returns.
pub type InferFuture = Pin<Box<dyn Future<Output = Result<Inferred, InferenceError>> + Send>>;

/// The whole inference stack, as its concrete type: a clone is a few reference counts. (Boxed as a
/// `BoxCloneSyncService`, every request's clone allocated a copy of the stack, and every future was boxed again.)
pub type Pipeline = Routing<Shadow<PayloadLogging<InferenceService>>>;

/// Builds the stack. Order matters and reads top to bottom (outermost first).
pub fn pipeline(
    core: InferenceService,
    routing: Arc<RoutingTable>,
    mirror: ShadowMirror,
    payload_log: PayloadLog,
) -> Pipeline {
    let registry = Arc::clone(&core.registry);
    ServiceBuilder::new()
        // Routing first: it turns "no version" into an explicit version and variant, so everything below (shadow
        // sampling, metrics) sees which variant a request belongs to, and its outcome feeds automatic rollback.
        .layer(RoutingLayer::new(
            Arc::clone(&routing),
            Arc::clone(&registry),
        ))
        // Shadow inside routing: it mirrors what the primary actually served, after the primary answered, so the
        // client's response never waits for the shadow.
        .layer(ShadowLayer::new(routing, mirror))
        // Innermost: it asks the core for the validated inputs of sampled requests and logs them with the outputs
        // once the response is ready (after routing decided the variant; before the shadow takes the inputs).
        .layer(PayloadLogLayer::new(Arc::clone(&registry), payload_log))
        .service(core)
}

/// The innermost service: resolve → decode → validate → run.
#[derive(Clone)]
pub struct InferenceService {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    limits: Limits,
    memory_wait: Duration,
}

impl InferenceService {
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>, limits: Limits) -> InferenceService {
        InferenceService {
            registry,
            metrics,
            limits,
            memory_wait: Duration::from_millis(limits.memory_wait_ms),
        }
    }

    async fn infer(self, mut call: InferCall) -> Result<Inferred, InferenceError> {
        let started = Instant::now();
        let target = self
            .registry
            .resolve(&call.model, call.version.as_deref())?;
        let series = target
            .series
            .get_or_init(|| self.metrics.version_series(&target.name, target.version));
        let span = tracing::Span::current();
        span.record("model", call.model.as_str());
        span.record("version", series.version());
        span.record("variant", &*call.variant);
        let _in_flight = series.in_flight();

        let body = std::mem::take(&mut call.body);
        let mut memory = std::mem::take(&mut call.memory);
        let result = self.run(&target, series, &call, body, &mut memory).await;
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(e) => e.outcome(),
        };
        // A successful request is timed to the end of its run (read there already); the rest is a few stores.
        let finished = match &result {
            Ok(ran) => ran.finished,
            Err(_) => Instant::now(),
        };
        let took = finished.duration_since(started);
        self.metrics.observe_request(
            &call.model,
            series,
            &call.variant,
            outcome,
            took.as_secs_f64(),
        );
        match &result {
            Ok(ran) => {
                let running = finished.duration_since(ran.run_started);
                target.stats.success(RequestPhases {
                    input: ran.run_started.duration_since(started),
                    queue: ran.queued,
                    infer: running.saturating_sub(ran.queued),
                    total: took,
                    finished,
                });
            }
            Err(_) => target.stats.failure(took),
        }
        let ran = result.map_err(|e| InferenceError::Served {
            version: target.version,
            variant: call.variant.clone(),
            source: Box::new(e),
        })?;
        Ok(Inferred {
            model: target,
            id: ran.id,
            outputs: ran.outputs,
            variant: call.variant,
            captured_inputs: ran.captured_inputs,
            binary_outputs: ran.binary_outputs,
            memory,
            held: ran.held,
            body_len: ran.body_len,
        })
    }

    async fn run(
        &self,
        target: &ModelVersion,
        series: &VersionSeries,
        call: &InferCall,
        body: Bytes,
        memory: &mut Reservation,
    ) -> Result<Ran, InferenceError> {
        // What the version's requests of this size held: waited for when the front end reserved nothing (its body
        // is small and read already), else taken if free (routing may have chosen a hungrier version).
        let body_len = body.len();
        memory
            .grow_to(target.footprint.estimate(body_len), self.memory_wait)
            .await?;
        let limits = DecodeLimits {
            max_elements: self.limits.max_tensor_elements,
            max_depth: self.limits.max_json_depth,
        };
        let header_len = call.binary_header_len;
        let request = if body_len > OFF_WORKER_BYTES {
            // Milliseconds of parsing: on a blocking thread, so the async workers keep serving small requests. The
            // memory goes along, so a request that times out meanwhile releases it only when the body is gone.
            let held = memory.split(usize::MAX);
            let (request, held) =
                tokio::task::spawn_blocking(move || (decode_body(&body, header_len, limits), held))
                    .await
                    .map_err(|e| InferError::Internal(format!("decoding task failed: {e}")))?;
            memory.merge(held);
            request?
        } else {
            let request = decode_body(&body, header_len, limits)?;
            drop(body);
            request
        };
        let inputs_len = Tensor::bytes_of(&request.inputs);
        let mut held = body_len + inputs_len;
        memory.charge(held);
        let outputs = validate(&target.signature, &request)?;
        let captured = call.capture_inputs.then(|| request.inputs.clone());
        if captured.is_some() {
            held = body_len + 2 * inputs_len;
            memory.charge(held);
        }
        let kept = if captured.is_some() { inputs_len } else { 0 };
        if let Some(drift) = &target.drift {
            drift.observe(&request.inputs);
        }
        let run_started = Instant::now();
        let result = target.infer_timed(request.inputs, outputs, memory).await;
        let finished = match &result {
            Ok((_, timing)) => timing.finished,
            Err(_) => Instant::now(),
        };
        series.observe_inference(finished.duration_since(run_started).as_secs_f64());
        let (outputs, timing) = result?;
        series.observe_queue(timing.queued.as_secs_f64());
        // While the outputs were copied out of ONNX Runtime, its buffers and the inputs it was given were held too.
        let outputs_len = Tensor::bytes_of(&outputs);
        held = held.max(kept + inputs_len + 2 * outputs_len);
        memory.charge(held);
        Ok(Ran {
            id: request.id,
            outputs,
            captured_inputs: captured,
            binary_outputs: request.binary_outputs,
            run_started,
            queued: timing.queued,
            finished,
            held,
            body_len,
        })
    }
}

/// Bodies, and responses, larger than this are decoded, and encoded, on a blocking thread rather than an async
/// worker (about a millisecond of work at this size).
pub const OFF_WORKER_BYTES: usize = 256 << 10;

/// A V2 request from a JSON body, or from a JSON header of `header_len` bytes followed by raw tensor data.
fn decode_body(
    body: &[u8],
    header_len: Option<usize>,
    limits: DecodeLimits,
) -> Result<InferRequest, InferenceError> {
    let (header, binary) = match header_len {
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(DecodeError::Json(format!(
                "Inference-Header-Content-Length {n} is longer than the {}-byte body",
                body.len()
            ))
            .into())
        }
        None => (body, &[][..]),
    };
    Ok(decode_with_binary(header, binary, limits)?)
}

/// What one run produced, before it becomes an [`Inferred`].
struct Ran {
    id: Option<String>,
    outputs: Vec<Tensor>,
    captured_inputs: Option<Vec<Tensor>>,
    binary_outputs: BinaryOutputs,
    /// When the run was asked for (decoding and validation ended), how long it waited, and when it ended.
    run_started: Instant,
    queued: Duration,
    finished: Instant,
    held: usize,
    body_len: usize,
}

impl Service<InferCall> for InferenceService {
    type Response = Inferred;
    type Error = InferenceError;
    type Future = InferFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), InferenceError>> {
        // Back-pressure happens per version, in the session pool; the service itself is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: InferCall) -> Self::Future {
        Box::pin(self.clone().infer(call))
    }
}
