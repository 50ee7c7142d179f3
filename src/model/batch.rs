//! Dynamic batching for one model version (opt-in, `[batching]` in `model.toml`, as in Triton): concurrent requests
//! whose inputs agree except in dimension 0 are merged into one ONNX Runtime run and the outputs split back.
//!
//! A collector task takes the first queued request, then waits up to `max_queue_delay_us` for more, until
//! `max_batch_size` rows (or a preferred size) are reached; a request that does not fit or does not match starts
//! the next batch. Batches run on the version's session pool, so several can run at once. The queue is bounded:
//! when it is full a request is refused at once (overloaded).

use opentelemetry::trace::SpanContext;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::{InferError, IoKind, Signature, Statistics};
use crate::metrics::Metrics;
use crate::tensor::{Tensor, TensorData};

/// `[batching]` in `model.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// Most rows (dimension 0) in one run.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for company, in microseconds.
    #[serde(default = "default_delay")]
    pub max_queue_delay_us: u64,
    /// Run as soon as a batch reaches one of these row counts.
    #[serde(default)]
    pub preferred_sizes: Vec<usize>,
    /// Requests waiting to be batched; beyond it they are refused (503).
    #[serde(default = "default_queue")]
    pub max_queue: usize,
}

fn default_delay() -> u64 {
    500
}

fn default_queue() -> usize {
    1024
}

/// Checks that every input and output has a dynamic leading dimension (the precondition of batching).
pub fn check_batchable(signature: &Signature) -> Result<(), String> {
    for (what, specs) in [("input", &signature.inputs), ("output", &signature.outputs)] {
        for spec in specs {
            match &spec.kind {
                IoKind::Tensor { shape, .. } if shape.first() == Some(&-1) => {}
                IoKind::Tensor { shape, .. } => {
                    return Err(format!(
                        "batching needs a dynamic leading dimension on every input and output; {what} '{}' has shape {shape:?}",
                        spec.name
                    ))
                }
                IoKind::Other { onnx_type } => {
                    return Err(format!("batching needs tensor outputs; {what} '{}' is a {onnx_type}", spec.name))
                }
            }
        }
    }
    Ok(())
}

/// A request's share of a batch's outputs, how long it queued, and the batch's run when a traced request was in it.
type Answer = Result<(Vec<Tensor>, Duration, Option<Arc<BatchRun>>), InferError>;

/// One batched run, for the traces of the requests it served: its size, when it ran, and the (sampled) server spans
/// of its requests, in queue order, which the run's span links to.
#[derive(Debug)]
pub struct BatchRun {
    pub requests: usize,
    pub rows: usize,
    pub started: Instant,
    pub ran: Instant,
    pub members: Vec<SpanContext>,
}

/// One request waiting in the queue.
pub struct Job {
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<String>,
    rows: usize,
    enqueued: Instant,
    /// The request's server span, when its trace is sampled.
    link: Option<SpanContext>,
    reply: oneshot::Sender<Answer>,
}

/// Runs a merged batch: the version's session pool behind a function, so this module needs no pool type.
pub type RunBatch = Arc<
    dyn Fn(
            Vec<Tensor>,
            Vec<String>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Vec<Tensor>, InferError>> + Send>,
        > + Send
        + Sync,
>;

/// The queue of one version. Dropping it ends the collector task once the queue is empty.
pub struct Batcher {
    queue: mpsc::Sender<Job>,
    capacity: usize,
}

impl Batcher {
    pub fn start(
        settings: BatchSettings,
        run: RunBatch,
        metrics: Option<Arc<Metrics>>,
        stats: Arc<Statistics>,
        label: (String, String),
    ) -> Batcher {
        let (queue, jobs) = mpsc::channel(settings.max_queue.max(1));
        let capacity = settings.max_queue.max(1);
        tokio::spawn(collect(settings, jobs, run, metrics, stats, label));
        Batcher { queue, capacity }
    }

    /// Queues a request and waits for its share of a batch's outputs (and how long it queued, and the batch's run
    /// when `link`, the request's sampled server span, is given).
    pub async fn submit(
        &self,
        inputs: Vec<Tensor>,
        outputs: Vec<String>,
        link: Option<SpanContext>,
    ) -> Result<(Vec<Tensor>, Duration, Option<Arc<BatchRun>>), InferError> {
        let rows = inputs
            .first()
            .and_then(|t| t.shape.first().copied())
            .unwrap_or(0);
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            outputs,
            rows,
            enqueued: Instant::now(),
            link,
            reply,
        };
        self.queue
            .try_send(job)
            .map_err(|_| InferError::Overloaded {
                waiting: self.capacity,
            })?;
        answer
            .await
            .map_err(|_| InferError::Internal("the batcher stopped".into()))?
    }
}

async fn collect(
    settings: BatchSettings,
    mut jobs: mpsc::Receiver<Job>,
    run: RunBatch,
    metrics: Option<Arc<Metrics>>,
    stats: Arc<Statistics>,
    label: (String, String),
) {
    let delay = Duration::from_micros(settings.max_queue_delay_us);
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let deadline = tokio::time::Instant::from_std(first.enqueued + delay);
        let mut rows = first.rows;
        let mut batch = vec![first];
        while rows < settings.max_batch_size && !settings.preferred_sizes.contains(&rows) {
            match tokio::time::timeout_at(deadline, jobs.recv()).await {
                Ok(Some(job))
                    if rows + job.rows <= settings.max_batch_size
                        && compatible(&batch[0], &job) =>
                {
                    rows += job.rows;
                    batch.push(job);
                }
                Ok(Some(job)) => {
                    carried = Some(job);
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        if let Some(m) = &metrics {
            m.requests.observe_batch(&label.0, &label.1, rows);
        }
        let run = Arc::clone(&run);
        tokio::spawn(run_batch(batch, rows, run, Arc::clone(&stats)));
    }
}

/// Whether two requests can share a run: same inputs (names, datatypes, shapes but dimension 0) and outputs.
fn compatible(a: &Job, b: &Job) -> bool {
    a.outputs == b.outputs
        && a.inputs.len() == b.inputs.len()
        && a.inputs.iter().zip(&b.inputs).all(|(x, y)| {
            x.name == y.name
                && x.datatype() == y.datatype()
                && x.shape.get(1..) == y.shape.get(1..)
                && !x.shape.is_empty()
        })
}

/// Runs one batch and answers its requests; the run is counted in the version's statistics by its size.
async fn run_batch(batch: Vec<Job>, rows: usize, run: RunBatch, stats: Arc<Statistics>) {
    let started = Instant::now();
    let waited: Vec<Duration> = batch.iter().map(|j| started - j.enqueued).collect();
    if batch.len() == 1 {
        let job = batch.into_iter().next().expect("one job");
        let result = run(job.inputs, job.outputs).await;
        if result.is_ok() {
            stats.execution();
            stats.batch(rows, Duration::ZERO, started.elapsed(), Duration::ZERO);
        }
        let traced = traced(started, rows, std::slice::from_ref(&job.link));
        let _ = job.reply.send(result.map(|out| (out, waited[0], traced)));
        return;
    }
    let outputs = batch[0].outputs.clone();
    let parts: Vec<&[Tensor]> = batch.iter().map(|j| j.inputs.as_slice()).collect();
    let merged = merge(&parts, rows);
    let merged_at = Instant::now();
    let result = run(merged, outputs).await;
    let ran_at = Instant::now();
    let counts: Vec<usize> = batch.iter().map(|j| j.rows).collect();
    let result = result.and_then(|out| split(out, &counts, rows));
    if result.is_ok() {
        stats.execution();
        stats.batch(
            rows,
            merged_at - started,
            ran_at - merged_at,
            ran_at.elapsed(),
        );
    }
    match result {
        Ok(parts) => {
            let links: Vec<Option<SpanContext>> = batch.iter().map(|j| j.link.clone()).collect();
            let traced = traced(started, rows, &links);
            for ((job, part), waited) in batch.into_iter().zip(parts).zip(waited) {
                let _ = job.reply.send(Ok((part, waited, traced.clone())));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for job in batch {
                let _ = job.reply.send(Err(InferError::Runtime(format!(
                    "batched run failed: {message}"
                ))));
            }
        }
    }
}

/// The batch's run as its traced requests see it; `None` when none of them is traced.
fn traced(started: Instant, rows: usize, links: &[Option<SpanContext>]) -> Option<Arc<BatchRun>> {
    let members: Vec<SpanContext> = links.iter().flatten().cloned().collect();
    (!members.is_empty()).then(|| {
        Arc::new(BatchRun {
            requests: links.len(),
            rows,
            started,
            ran: Instant::now(),
            members,
        })
    })
}

/// Concatenates requests' inputs (same names, datatypes and inner shapes) along dimension 0 into `rows` rows.
pub fn merge(parts: &[&[Tensor]], rows: usize) -> Vec<Tensor> {
    let mut merged: Vec<Tensor> = parts[0]
        .iter()
        .map(|t| {
            let mut shape = t.shape.clone();
            shape[0] = rows;
            Tensor {
                name: t.name.clone(),
                shape,
                data: t.data.clone(),
            }
        })
        .collect();
    for inputs in &parts[1..] {
        for (target, part) in merged.iter_mut().zip(inputs.iter()) {
            target.data.extend(&part.data);
        }
    }
    merged
}

/// Splits each output along dimension 0 into the requests' row counts.
pub fn split(
    outputs: Vec<Tensor>,
    counts: &[usize],
    rows: usize,
) -> Result<Vec<Vec<Tensor>>, InferError> {
    let mut parts: Vec<Vec<Tensor>> = counts.iter().map(|_| Vec::new()).collect();
    for output in outputs {
        if output.shape.first() != Some(&rows) {
            return Err(InferError::Output {
                output: output.name.clone(),
                message: format!(
                    "has shape {:?}, which does not have the batch's {rows} rows first",
                    output.shape
                ),
            });
        }
        let per_row: usize = output.shape[1..].iter().product();
        let mut start = 0;
        for (part, &count) in parts.iter_mut().zip(counts) {
            let mut shape = output.shape.clone();
            shape[0] = count;
            let data = output
                .data
                .slice(start * per_row, (start + count) * per_row);
            part.push(Tensor {
                name: output.name.clone(),
                shape,
                data,
            });
            start += count;
        }
    }
    Ok(parts)
}

impl TensorData {
    /// Appends `other` (same variant; a mismatch is ignored, `compatible` rules it out).
    fn extend(&mut self, other: &TensorData) {
        macro_rules! ext {
            ($($v:ident),*) => {
                match (self, other) {
                    $((TensorData::$v(a), TensorData::$v(b)) => a.extend_from_slice(b),)*
                    _ => {}
                }
            };
        }
        ext!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes
        );
    }

    /// Elements `start..end` as a new buffer.
    fn slice(&self, start: usize, end: usize) -> TensorData {
        macro_rules! cut {
            ($($v:ident),*) => {
                match self {
                    $(TensorData::$v(a) => TensorData::$v(a[start..end].to_vec()),)*
                }
            };
        }
        cut!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(rows: usize, value: f32) -> (Job, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        let inputs = vec![Tensor {
            name: "x".into(),
            shape: vec![rows, 2],
            data: TensorData::Fp32(vec![value; rows * 2]),
        }];
        (
            Job {
                inputs,
                outputs: vec!["y".into()],
                rows,
                enqueued: Instant::now(),
                link: None,
                reply,
            },
            answer,
        )
    }

    #[test]
    fn merge_and_split_round_trip() {
        let (a, _) = job(1, 1.0);
        let (b, _) = job(2, 2.0);
        let merged = merge(&[&a.inputs, &b.inputs], 3);
        assert_eq!(merged[0].shape, vec![3, 2]);
        assert_eq!(
            merged[0].data,
            TensorData::Fp32(vec![1.0, 1.0, 2.0, 2.0, 2.0, 2.0])
        );
        let out = Tensor {
            name: "y".into(),
            shape: vec![3],
            data: TensorData::Int64(vec![7, 8, 9]),
        };
        let parts = split(vec![out], &[1, 2], 3).unwrap();
        assert_eq!(parts[0][0].data, TensorData::Int64(vec![7]));
        assert_eq!(
            (parts[1][0].shape.clone(), parts[1][0].data.clone()),
            (vec![2], TensorData::Int64(vec![8, 9]))
        );
        let bad = Tensor {
            name: "y".into(),
            shape: vec![1],
            data: TensorData::Int64(vec![7]),
        };
        assert!(split(vec![bad], &[1, 2], 3).is_err());
    }

    #[test]
    fn only_matching_requests_share_a_batch() {
        let (a, _) = job(1, 1.0);
        let (b, _) = job(4, 2.0);
        assert!(compatible(&a, &b));
        let (mut c, _) = job(1, 1.0);
        c.inputs[0].shape = vec![1, 3];
        assert!(!compatible(&a, &c));
        let (mut d, _) = job(1, 1.0);
        d.outputs = vec!["z".into()];
        assert!(!compatible(&a, &d));
    }
}
