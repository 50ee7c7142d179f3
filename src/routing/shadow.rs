//! Shadow traffic: a sampled share of requests is also run on a shadow version, off the request path, and the two
//! versions' outputs are compared.
//!
//! [`ShadowLayer`] samples requests and hands the validated inputs plus the primary's outputs to [`ShadowMirror`]'s
//! bounded queue after the primary answered; a full queue, or a budget without room for the job's memory, drops it (counted) rather than wait. A worker runs
//! the shadow version and records agreement: the exact-match rate for integer, boolean and string outputs, mean and
//! max absolute difference for floating outputs, per (model, primary version, shadow version). Shadow failures are
//! counted, never returned to a client.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use rand::Rng;
use serde::Serialize;
use tokio::sync::mpsc;
use tower::{Layer, Service};

use super::RoutingTable;
use crate::inference::{InferCall, InferFuture, InferenceError, Inferred};
use crate::memory::Reservation;
use crate::metrics::{Comparison, Metrics, ShadowOutcome};
use crate::monitoring::feedback::Feedback;
use crate::otel::{PhaseEnd, RequestTrace};
use crate::registry::Registry;
use crate::tensor::json::InferRequest;
use crate::tensor::{Tensor, TensorData};
use crate::validate::validate;

/// One request to replay on a shadow version.
struct ShadowJob {
    model: String,
    primary_version: u64,
    shadow_version: u64,
    inputs: Vec<Tensor>,
    primary_outputs: Vec<Tensor>,
    /// The inputs, the copy of the primary's outputs and the shadow run's own, held until the job is done.
    _memory: Reservation,
    /// The primary request's trace, when sampled: the shadow run is a span in it, after its answer.
    trace: Option<RequestTrace>,
    /// The request's feedback key (its V2 id or request id): the shadow's prediction joins the primary's under it.
    feedback_key: Option<String>,
}

/// Comparison totals of one output.
#[derive(Debug, Default, Clone, Serialize)]
pub struct OutputComparison {
    /// Elements compared exactly (integers, booleans, strings).
    pub exact_elements: u64,
    pub exact_agreements: u64,
    /// Elements compared numerically (floating point).
    pub float_elements: u64,
    pub abs_diff_sum: f64,
    pub abs_diff_max: f64,
    /// Responses whose output shapes differed (not compared element-wise).
    pub shape_mismatches: u64,
}

impl OutputComparison {
    pub fn agreement_rate(&self) -> Option<f64> {
        (self.exact_elements > 0).then(|| self.exact_agreements as f64 / self.exact_elements as f64)
    }

    pub fn abs_diff_mean(&self) -> Option<f64> {
        (self.float_elements > 0).then(|| self.abs_diff_sum / self.float_elements as f64)
    }
}

/// Shadow statistics of one (model, primary version, shadow version) pair.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PairStats {
    pub compared: u64,
    pub errors: u64,
    pub dropped: u64,
    /// Why the last shadow run failed.
    pub last_error: Option<String>,
    pub outputs: BTreeMap<String, OutputComparison>,
    /// When a failure was last logged at WARN level, with how many failures since then went unlogged.
    #[serde(skip)]
    warned: Option<(Instant, u64)>,
}

/// At most one WARN line per shadow pair in this time; the failures in between are counted in the next line.
const WARN_EVERY: Duration = Duration::from_secs(60);

type PairKey = (String, u64, u64);

/// The shadow queue and the statistics its worker keeps.
#[derive(Clone)]
pub struct ShadowMirror {
    queue: mpsc::Sender<ShadowJob>,
    /// A std mutex: updated once per finished comparison and read by the JSON endpoint; never held across an await.
    stats: Arc<Mutex<BTreeMap<PairKey, PairStats>>>,
    metrics: Arc<Metrics>,
    feedback: Feedback,
}

impl ShadowMirror {
    /// Starts the worker. `capacity` bounds the queue; `delay` is added before each shadow run (fault injection for
    /// tests and drills; zero in production).
    pub fn start(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        feedback: Feedback,
        capacity: usize,
        delay: Duration,
    ) -> ShadowMirror {
        let (queue, mut jobs) = mpsc::channel::<ShadowJob>(capacity.max(1));
        let stats: Arc<Mutex<BTreeMap<PairKey, PairStats>>> = Arc::default();
        let mirror = ShadowMirror {
            queue,
            stats: Arc::clone(&stats),
            metrics: Arc::clone(&metrics),
            feedback,
        };
        let worker = mirror.clone();
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                worker.run(&registry, job).await;
            }
        });
        mirror
    }

    /// Queues a job without waiting; a full queue drops it.
    fn offer(&self, job: ShadowJob) {
        if let Err(e) = self.queue.try_send(job) {
            let job = match e {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    job
                }
            };
            if let Some(key) = &job.feedback_key {
                self.feedback
                    .shadow_done(&job.model, key, job.shadow_version, None);
            }
            self.dropped(job.model, job.primary_version, job.shadow_version);
        }
    }

    /// Counts a job not run: the queue was full, or memory for it was not free.
    fn dropped(&self, model: String, primary_version: u64, shadow_version: u64) {
        self.metrics.routing.shadow_outcome(
            &model,
            primary_version,
            shadow_version,
            ShadowOutcome::Dropped,
        );
        self.update(&(model, primary_version, shadow_version), |s| {
            s.dropped += 1
        });
    }

    async fn run(&self, registry: &Registry, mut job: ShadowJob) {
        let key = (job.model.clone(), job.primary_version, job.shadow_version);
        let (started, trace) = (Instant::now(), job.trace.take());
        let outcome = async {
            let target = registry
                .resolve(&job.model, Some(&job.shadow_version.to_string()))
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = job.primary_outputs.iter().map(|t| t.name.clone()).collect();
            let request = InferRequest {
                id: None,
                inputs: job.inputs,
                outputs: Some(names),
                binary_outputs: Default::default(),
            };
            let outputs = validate(&target.signature, &request).map_err(|e| e.to_string())?;
            target
                .infer(request.inputs, outputs)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Some(trace) = &trace {
            let attributes = vec![
                KeyValue::new("sluice.model", key.0.clone()),
                KeyValue::new("sluice.model.version", key.2.to_string()),
                KeyValue::new("sluice.primary.version", key.1.to_string()),
            ];
            let end = match &outcome {
                Ok(_) => PhaseEnd::Ok,
                Err(reason) => PhaseEnd::Failed(reason),
            };
            trace.follow_up("shadow", (started, Instant::now()), attributes, end);
        }
        if let Some(feedback_key) = &job.feedback_key {
            self.feedback.shadow_done(
                &key.0,
                feedback_key,
                key.2,
                outcome.as_ref().ok().map(Vec::as_slice),
            );
        }
        match outcome {
            Ok(shadow_outputs) => {
                self.update(&key, |s| {
                    s.compared += 1;
                    for (p, sh) in job.primary_outputs.iter().zip(&shadow_outputs) {
                        compare(s.outputs.entry(p.name.clone()).or_default(), p, sh);
                    }
                });
                self.metrics
                    .routing
                    .shadow_outcome(&key.0, key.1, key.2, ShadowOutcome::Compared);
                self.export(&key);
            }
            Err(reason) => {
                let mut warn = None;
                self.update(&key, |s| {
                    s.errors += 1;
                    s.last_error = Some(reason.clone());
                    match &mut s.warned {
                        Some((at, skipped)) if at.elapsed() < WARN_EVERY => *skipped += 1,
                        warned => {
                            warn = Some(warned.map_or(0, |(_, skipped)| skipped));
                            *warned = Some((Instant::now(), 0));
                        }
                    }
                });
                match warn {
                    Some(unlogged) => {
                        tracing::warn!(model = %key.0, primary_version = key.1, shadow_version = key.2, %reason, unlogged_failures = unlogged, "shadow run failed")
                    }
                    None => {
                        tracing::debug!(model = %key.0, shadow_version = key.2, %reason, "shadow run failed")
                    }
                }
                self.metrics
                    .routing
                    .shadow_outcome(&key.0, key.1, key.2, ShadowOutcome::Error);
            }
        }
    }

    fn update(&self, key: &PairKey, f: impl FnOnce(&mut PairStats)) {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        f(stats.entry(key.clone()).or_default());
    }

    fn export(&self, key: &PairKey) {
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pair) = stats.get(key) {
            for (output, c) in &pair.outputs {
                self.metrics.routing.shadow_comparison(&Comparison {
                    model: &key.0,
                    primary: key.1,
                    shadow: key.2,
                    output,
                    agreement: c.agreement_rate(),
                    abs_diff: c.abs_diff_mean().map(|mean| (mean, c.abs_diff_max)),
                });
            }
        }
    }

    /// Statistics of every pair for `model`, for the routing endpoint.
    pub fn stats_for(&self, model: &str) -> Vec<(u64, u64, PairStats)> {
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats
            .iter()
            .filter(|((m, _, _), _)| m == model)
            .map(|((_, p, s), v)| (*p, *s, v.clone()))
            .collect()
    }
}

/// Adds one response's comparison of an output to its totals.
fn compare(totals: &mut OutputComparison, primary: &Tensor, shadow: &Tensor) {
    if primary.shape != shadow.shape || primary.datatype() != shadow.datatype() {
        totals.shape_mismatches += 1;
        return;
    }
    fn floats(totals: &mut OutputComparison, diffs: impl Iterator<Item = f64>) {
        for d in diffs {
            totals.float_elements += 1;
            totals.abs_diff_sum += d;
            totals.abs_diff_max = totals.abs_diff_max.max(d);
        }
    }
    fn exact<T: PartialEq>(totals: &mut OutputComparison, a: &[T], b: &[T]) {
        totals.exact_elements += a.len() as u64;
        totals.exact_agreements += a.iter().zip(b).filter(|(x, y)| x == y).count() as u64;
    }
    match (&primary.data, &shadow.data) {
        (TensorData::Fp16(a), TensorData::Fp16(b)) => floats(
            totals,
            a.iter()
                .zip(b)
                .map(|(x, y)| (x.to_f64() - y.to_f64()).abs()),
        ),
        (TensorData::Fp32(a), TensorData::Fp32(b)) => floats(
            totals,
            a.iter()
                .zip(b)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs()),
        ),
        (TensorData::Fp64(a), TensorData::Fp64(b)) => {
            floats(totals, a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        }
        (TensorData::Bool(a), TensorData::Bool(b)) => exact(totals, a, b),
        (TensorData::Uint8(a), TensorData::Uint8(b)) => exact(totals, a, b),
        (TensorData::Uint16(a), TensorData::Uint16(b)) => exact(totals, a, b),
        (TensorData::Uint32(a), TensorData::Uint32(b)) => exact(totals, a, b),
        (TensorData::Uint64(a), TensorData::Uint64(b)) => exact(totals, a, b),
        (TensorData::Int8(a), TensorData::Int8(b)) => exact(totals, a, b),
        (TensorData::Int16(a), TensorData::Int16(b)) => exact(totals, a, b),
        (TensorData::Int32(a), TensorData::Int32(b)) => exact(totals, a, b),
        (TensorData::Int64(a), TensorData::Int64(b)) => exact(totals, a, b),
        (TensorData::Bytes(a), TensorData::Bytes(b)) => exact(totals, a, b),
        _ => totals.shape_mismatches += 1,
    }
}

/// Adds shadow sampling to an inference service.
#[derive(Clone)]
pub struct ShadowLayer {
    table: Arc<RoutingTable>,
    mirror: ShadowMirror,
}

impl ShadowLayer {
    pub fn new(table: Arc<RoutingTable>, mirror: ShadowMirror) -> ShadowLayer {
        ShadowLayer { table, mirror }
    }
}

impl<S> Layer<S> for ShadowLayer {
    type Service = Shadow<S>;
    fn layer(&self, inner: S) -> Shadow<S> {
        Shadow {
            inner,
            table: Arc::clone(&self.table),
            mirror: self.mirror.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Shadow<S> {
    inner: S,
    table: Arc<RoutingTable>,
    mirror: ShadowMirror,
}

impl<S> Service<InferCall> for Shadow<S>
where
    S: Service<InferCall, Response = Inferred, Error = InferenceError, Future = InferFuture>
        + Send
        + 'static,
{
    type Response = Inferred;
    type Error = InferenceError;
    type Future = InferFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), InferenceError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: InferCall) -> Self::Future {
        // A version named in the URL is the client's explicit choice: it is neither routed nor mirrored.
        let routed = call.variant != crate::metrics::PINNED;
        let shadow_version = routed
            .then(|| self.table.get(&call.model))
            .flatten()
            .and_then(|a| a.policy.shadow.clone())
            .filter(|s| rand::rng().random_bool(s.sample_rate.clamp(0.0, 1.0)))
            .map(|s| s.version);
        let Some(shadow_version) = shadow_version else {
            // Not mirrored: nothing to do after the run.
            return self.inner.call(call);
        };
        call.capture_inputs = true;
        let trace = call.trace.as_ref().filter(|t| t.sampled()).cloned();
        let request_id = call.metadata.request_id().map(str::to_owned);
        let feedback = self.mirror.feedback.clone();
        let future = self.inner.call(call);
        let mirror = self.mirror.clone();
        Box::pin(async move {
            let mut done = future.await?;
            if let Some(inputs) = done.captured_inputs.take() {
                if shadow_version != done.model.version {
                    // The captured inputs are counted in the request's memory already: the job takes them along,
                    // and needs room for a copy of the outputs, the inputs handed to the run and its outputs.
                    let (inputs_len, outputs_len) =
                        (Tensor::bytes_of(&inputs), Tensor::bytes_of(&done.outputs));
                    let mut memory = done.memory.split(inputs_len);
                    let (model, primary_version) = (done.model.name.clone(), done.model.version);
                    let feedback_key =
                        Feedback::request_key(done.id.as_deref(), request_id.as_deref())
                            .filter(|_| feedback.policy(&model).is_some())
                            .map(str::to_owned);
                    match memory.try_grow_to(2 * inputs_len + 3 * outputs_len) {
                        Ok(()) => mirror.offer(ShadowJob {
                            model,
                            primary_version,
                            shadow_version,
                            inputs,
                            primary_outputs: done.outputs.clone(),
                            _memory: memory,
                            trace,
                            feedback_key,
                        }),
                        Err(_) => {
                            if let Some(key) = &feedback_key {
                                feedback.shadow_done(&model, key, shadow_version, None);
                            }
                            mirror.dropped(model, primary_version, shadow_version)
                        }
                    }
                    return Ok(done);
                }
            }
            // Not mirrored after all (routing chose the shadow's own version): feedback stops waiting for it.
            if let Some(key) = Feedback::request_key(done.id.as_deref(), request_id.as_deref()) {
                feedback.shadow_done(&done.model.name, key, shadow_version, None);
            }
            Ok(done)
        })
    }
}
