//! The innermost service of the stack: resolve the version → decode → validate → run, with the per-request
//! metrics and statistics.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use tower::Service;

use super::call::{AnswerObserver, InferCall, InferFuture, InferenceError, Inferred, Payload};
use crate::config::Limits;
use crate::memory::Reservation;
use crate::metrics::{Metrics, Outcome, VersionSeries};
use crate::model::batch::BatchRun;
use crate::model::stats::RequestPhases;
use crate::model::{InferError, ModelVersion};
use crate::otel::{PhaseEnd, RequestTrace};
use crate::registry::{Registry, RegistryError};
use crate::tensor::json::{
    decode_with_binary, BinaryOutputs, DecodeError, DecodeLimits, InferRequest,
};
use crate::tensor::Tensor;
use crate::validate::validate;

/// The innermost service: resolve → decode → validate → run. A clone is one reference count.
#[derive(Clone)]
pub struct InferenceService(Arc<Core>);

struct Core {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    limits: Limits,
    memory_wait: Duration,
    answers: Option<Arc<dyn AnswerObserver>>,
}

impl InferenceService {
    /// `answers` is told of every answered request (outcome feedback keeps predictions so).
    pub fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        limits: Limits,
        answers: Option<Arc<dyn AnswerObserver>>,
    ) -> InferenceService {
        InferenceService(Arc::new(Core {
            registry,
            metrics,
            limits,
            memory_wait: Duration::from_millis(limits.memory_wait_ms),
            answers,
        }))
    }

    /// The registry the service resolves versions in.
    pub(super) fn registry(&self) -> &Arc<Registry> {
        &self.0.registry
    }

    async fn infer(self, call: InferCall) -> Result<Inferred, InferenceError> {
        let started = Instant::now();
        let mut resolved = self
            .0
            .registry
            .resolve(&call.model, call.version.as_deref());
        // A lazy version's first request (or the first after an eviction): load it, then resolve again; once more if
        // other models' loads evicted it in between.
        for _ in 0..3 {
            let Err(RegistryError::Unloaded { version, .. }) = resolved else {
                break;
            };
            self.0.registry.demand(&call.model, version).await?;
            resolved = self
                .0
                .registry
                .resolve(&call.model, call.version.as_deref());
            if resolved.is_ok() {
                self.0
                    .metrics
                    .models
                    .first_request_waited(started.elapsed());
            }
        }
        let target = resolved?;
        let series = target.series.get_or_init(|| {
            self.0
                .metrics
                .requests
                .version_series(&target.name, target.version)
        });
        let span = tracing::Span::current();
        span.record("model", call.model.as_str());
        span.record("version", series.version());
        span.record("variant", &*call.variant);
        let _in_flight = series.in_flight();

        let protocol = call.payload.protocol();
        let InferCall {
            model,
            variant,
            payload,
            capture_inputs,
            mut memory,
            trace,
            metadata,
            ..
        } = call;
        let mut marks = Marks {
            link: trace
                .as_ref()
                .filter(|t| t.sampled())
                .map(RequestTrace::span_context),
            ..Marks::default()
        };
        let result = self
            .run(
                &target,
                series,
                payload,
                capture_inputs,
                &mut memory,
                &mut marks,
            )
            .await;
        if let Some(trace) = trace.as_ref().filter(|t| t.sampled()) {
            marks.record(trace, &target, &variant, &result);
        }
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
        self.0.metrics.requests.observe(
            &model,
            series,
            &variant,
            outcome,
            protocol,
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
            variant: variant.clone(),
            source: Box::new(e),
        })?;
        let done = Inferred {
            model: target,
            id: ran.id,
            outputs: ran.outputs,
            variant,
            captured_inputs: ran.captured_inputs,
            binary_outputs: ran.binary_outputs,
            memory,
            held: ran.held,
            wire_len: ran.wire_len,
        };
        if let Some(answers) = &self.0.answers {
            answers.answered(&done, metadata.request_id(), capture_inputs);
        }
        Ok(done)
    }

    async fn run(
        &self,
        target: &ModelVersion,
        series: &VersionSeries,
        payload: Payload,
        capture_inputs: bool,
        memory: &mut Reservation,
        marks: &mut Marks,
    ) -> Result<Ran, InferenceError> {
        // What the version's requests of this size held: waited for when the front end reserved nothing (its body
        // is small and read already), else taken if free (routing may have chosen a hungrier version).
        let wire_len = payload.wire_len();
        memory
            .grow_to(target.footprint.estimate(wire_len), self.0.memory_wait)
            .await?;
        marks.decode = Some(Instant::now());
        let request = self.decode(payload, memory).await?;
        marks.decoded = Some(Instant::now());
        let inputs_len = Tensor::bytes_of(&request.inputs);
        let mut held = wire_len + inputs_len;
        memory.charge(held);
        let outputs = validate(&target.signature, &request)?;
        marks.validated = Some(Instant::now());
        let captured = capture_inputs.then(|| request.inputs.clone());
        if captured.is_some() {
            held = wire_len + 2 * inputs_len;
            memory.charge(held);
        }
        let kept = if captured.is_some() { inputs_len } else { 0 };
        if let Some(drift) = &target.drift {
            drift.observe(&request.inputs);
        }
        let run_started = Instant::now();
        marks.run = Some(run_started);
        let link = marks.link.take();
        let result = target
            .infer_timed(request.inputs, outputs, memory, link)
            .await;
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
            batch: timing.batch,
            finished,
            held,
            wire_len,
        })
    }

    /// The payload's tensors: a large body is parsed on a blocking thread, so the async workers keep serving small
    /// requests meanwhile.
    async fn decode(
        &self,
        payload: Payload,
        memory: &mut Reservation,
    ) -> Result<InferRequest, InferenceError> {
        let limits = DecodeLimits {
            max_elements: self.0.limits.max_tensor_elements,
            max_depth: self.0.limits.max_json_depth,
        };
        if payload.wire_len() <= OFF_WORKER_BYTES {
            return decode_payload(payload, limits);
        }
        // The memory goes along, so a request that times out meanwhile releases it only when the payload is gone.
        let held = memory.split(usize::MAX);
        let (request, held) =
            tokio::task::spawn_blocking(move || (decode_payload(payload, limits), held))
                .await
                .map_err(|e| InferError::Internal(format!("decoding task failed: {e}")))?;
        memory.merge(held);
        request
    }
}

/// When the request's phases began and ended, for its trace (set as the request passes them).
#[derive(Default)]
struct Marks {
    /// The request's server span, when sampled, for a batched run to link to.
    link: Option<opentelemetry::trace::SpanContext>,
    decode: Option<Instant>,
    decoded: Option<Instant>,
    validated: Option<Instant>,
    run: Option<Instant>,
}

impl Marks {
    /// Writes the phases the request went through as spans of its trace: decode, validate, queue (waiting for a
    /// session or a batch) and run; a failure marks the phase it happened in.
    fn record(
        &self,
        trace: &RequestTrace,
        target: &ModelVersion,
        variant: &str,
        result: &Result<Ran, InferenceError>,
    ) {
        let now = Instant::now();
        let message = result.as_ref().err().map(ToString::to_string);
        let mut phases: Vec<(&'static str, Instant, Instant)> = Vec::with_capacity(4);
        if let Some(start) = self.decode {
            phases.push(("decode", start, self.decoded.unwrap_or(now)));
        }
        if let Some(start) = self.decoded {
            phases.push(("validate", start, self.validated.unwrap_or(now)));
        }
        match (self.run, result) {
            (Some(start), Ok(ran)) => {
                phases.push(("queue", start, start + ran.queued));
                phases.push(("run", start + ran.queued, ran.finished));
                if let Some(batch) = &ran.batch {
                    batch_span(trace, batch);
                }
            }
            (Some(start), Err(_)) => phases.push(("run", start, now)),
            (None, _) => {}
        }
        let last = phases.len().saturating_sub(1);
        for (i, (name, start, end)) in phases.into_iter().enumerate() {
            let outcome = match &message {
                Some(message) if i == last => PhaseEnd::Failed(message),
                _ => PhaseEnd::Ok,
            };
            let batched = result.as_ref().ok().and_then(|r| r.batch.as_ref());
            let attributes = || match name {
                "run" => {
                    let mut kv = vec![
                        KeyValue::new("sluice.model", target.name.clone()),
                        KeyValue::new("sluice.model.version", target.version.to_string()),
                        KeyValue::new("sluice.variant", variant.to_owned()),
                    ];
                    kv.extend(
                        batched.map(|b| KeyValue::new("sluice.batch.requests", b.requests as i64)),
                    );
                    kv
                }
                _ => Vec::new(),
            };
            trace.phase(name, (start, end), attributes, outcome);
        }
    }
}

/// The span of a batched run, written once, by the first traced request it served: its size, linked to the server
/// span of every traced request in it.
fn batch_span(trace: &RequestTrace, batch: &BatchRun) {
    if batch.members.first() != Some(&trace.span_context()) {
        return;
    }
    let attributes = vec![
        KeyValue::new("sluice.batch.requests", batch.requests as i64),
        KeyValue::new("sluice.batch.rows", batch.rows as i64),
    ];
    trace.linked_phase(
        "batch",
        (batch.started, batch.ran),
        attributes,
        &batch.members,
    );
}

/// A payload's tensors, checked against `limits`.
fn decode_payload(payload: Payload, limits: DecodeLimits) -> Result<InferRequest, InferenceError> {
    match payload {
        Payload::Json {
            body,
            binary_header_len,
        } => decode_body(&body, binary_header_len, limits),
        Payload::Proto { request, .. } => Ok(crate::tensor::proto::decode_request(
            *request,
            limits.max_elements,
        )?),
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
    wire_len: usize,
    /// The batched run that served it, when it was batched and traced.
    batch: Option<Arc<BatchRun>>,
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
