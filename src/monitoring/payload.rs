//! Prediction (payload) logging: a sampled share of each model's requests becomes one JSON line (time, request id,
//! model, version, variant, inputs, outputs, latency), redacted as the model's `model.toml` says, written by a
//! background task to stdout, size-rotated local files, or an HTTP endpoint (CloudEvents binary mode, as KServe's
//! logger does). The buffer is bounded: when it is full, or the memory budget has no room for the record, the
//! record is dropped and counted; logging never slows or fails a request.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tower::{Layer, Service};

use crate::config::PayloadLogSettings;
use crate::inference::{InferCall, InferFuture, InferenceError, Inferred};
use crate::memory::Reservation;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::repository::PayloadPolicy;
use crate::tensor::Tensor;

/// What a record holds per logged element: a JSON value (32 bytes), its place in an array, and its text when written.
const RECORD_BYTES_PER_ELEMENT: usize = 64;

/// Where records go.
#[derive(Clone)]
pub struct PayloadLog {
    queue: Option<mpsc::Sender<(Value, Reservation)>>,
    metrics: Arc<Metrics>,
}

impl PayloadLog {
    /// Starts the writer task for the configured sink (`none` starts nothing).
    pub fn start(
        settings: &PayloadLogSettings,
        metrics: Arc<Metrics>,
    ) -> Result<PayloadLog, String> {
        let sink = match settings.sink.as_str() {
            "none" => return Ok(PayloadLog { queue: None, metrics }),
            "stdout" => Sink::Stdout,
            "file" => Sink::File(RotatingFile::open(&settings.path, settings.max_file_bytes, settings.max_files)?),
            "http" if settings.url.starts_with("http://") => Sink::Http(reqwest::Client::new(), settings.url.clone()),
            other => return Err(format!("payload_log.sink '{other}' (with url '{}') is not none, stdout, file or http with an http:// url", settings.url)),
        };
        let (queue, records) = mpsc::channel(settings.buffer.max(1));
        tokio::spawn(write_all(sink, records));
        Ok(PayloadLog {
            queue: Some(queue),
            metrics,
        })
    }

    fn offer(&self, model: &str, record: Value, memory: Reservation) {
        if let Some(queue) = &self.queue {
            if queue.try_send((record, memory)).is_err() {
                self.metrics.monitoring.payload_dropped(model);
            }
        }
    }
}

enum Sink {
    Stdout,
    File(RotatingFile),
    Http(reqwest::Client, String),
}

async fn write_all(mut sink: Sink, mut records: mpsc::Receiver<(Value, Reservation)>) {
    // The record's memory is released when it has been written.
    while let Some((record, _memory)) = records.recv().await {
        let result = match &mut sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{record}").map_err(|e| e.to_string())
            }
            Sink::File(file) => file
                .write_line(&record.to_string())
                .map_err(|e| e.to_string()),
            Sink::Http(client, url) => {
                let id = record["request_id"].as_str().unwrap_or("").to_owned();
                client
                    .post(url.as_str())
                    .header("ce-specversion", "1.0")
                    .header("ce-type", "io.sluice.inference.log")
                    .header("ce-source", "sluice")
                    .header(
                        "ce-id",
                        if id.is_empty() {
                            "unknown".to_owned()
                        } else {
                            id
                        },
                    )
                    .json(&record)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "payload log write failed");
        }
    }
}

/// An append-only JSON-lines file, rotated to `<path>.1` … `<path>.<max_files>` when it passes `max_bytes`.
struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max_bytes: u64,
    max_files: usize,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, max_files: usize) -> Result<RotatingFile, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            written,
            max_bytes: max_bytes.max(1),
            max_files,
        })
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        if self.written > 0 && self.written + line.len() as u64 + 1 > self.max_bytes {
            self.rotate()?;
        }
        writeln!(self.file, "{line}")?;
        self.written += line.len() as u64 + 1;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(numbered(self.max_files));
        for n in (1..self.max_files).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if self.max_files > 0 {
            std::fs::rename(&self.path, numbered(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// One input as the log shows it, after redaction.
fn logged_input(tensor: &Tensor, policy: &PayloadPolicy) -> Option<Value> {
    if policy.remove.contains(&tensor.name) {
        return None;
    }
    let mut data = serde_json::to_value(&tensor.data).unwrap_or(Value::Null);
    if let (Some(columns), Value::Array(values)) =
        (policy.remove_features.get(&tensor.name), &mut data)
    {
        let width = tensor.shape.last().copied().unwrap_or(1).max(1);
        for (i, v) in values.iter_mut().enumerate() {
            if columns.contains(&(i % width)) {
                *v = Value::Null;
            }
        }
    }
    if policy.hash.contains(&tensor.name) {
        if let Value::Array(values) = &mut data {
            for v in values.iter_mut() {
                let text = match &*v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                *v = Value::String(format!("sha256:{:x}", Sha256::digest(text.as_bytes())));
            }
        }
    }
    Some(
        json!({ "name": tensor.name, "datatype": tensor.datatype().as_str(), "shape": tensor.shape, "data": data }),
    )
}

/// Adds payload logging to an inference service (it sits just outside the core, so it sees the validated inputs).
#[derive(Clone)]
pub struct PayloadLogLayer {
    registry: Arc<Registry>,
    log: PayloadLog,
}

impl PayloadLogLayer {
    pub fn new(registry: Arc<Registry>, log: PayloadLog) -> PayloadLogLayer {
        PayloadLogLayer { registry, log }
    }
}

impl<S> Layer<S> for PayloadLogLayer {
    type Service = PayloadLogging<S>;
    fn layer(&self, inner: S) -> PayloadLogging<S> {
        PayloadLogging {
            inner,
            registry: Arc::clone(&self.registry),
            log: self.log.clone(),
        }
    }
}

#[derive(Clone)]
pub struct PayloadLogging<S> {
    inner: S,
    registry: Arc<Registry>,
    log: PayloadLog,
}

impl<S> Service<InferCall> for PayloadLogging<S>
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
        let policy = self
            .log
            .queue
            .as_ref()
            .and_then(|_| {
                self.registry
                    .snapshot()
                    .get(&call.model)
                    .map(|e| Arc::clone(&e.payload_log))
            })
            .filter(|p| {
                p.sample_rate > 0.0 && rand::rng().random_bool(p.sample_rate.clamp(0.0, 1.0))
            });
        let Some(policy) = policy else {
            // Not sampled: nothing to do after the run.
            return self.inner.call(call);
        };
        let shadow_wanted = call.capture_inputs;
        call.capture_inputs = true;
        let request_id = call.metadata.request_id().unwrap_or("").to_owned();
        // With tracing on, the record names the request's trace and server span.
        let trace = call.trace.as_ref().map(|t| (t.trace_id(), t.span_id()));
        let variant = call.variant.clone();
        let started = Instant::now();
        let future = self.inner.call(call);
        let log = self.log.clone();
        Box::pin(async move {
            let mut done = future.await?;
            // A record is a JSON tree of every element logged, kept until written: it needs room in the budget.
            let elements: usize = done
                .captured_inputs
                .iter()
                .flatten()
                .chain(&done.outputs)
                .map(|t| t.data.len())
                .sum();
            let bytes = Tensor::bytes_of(done.captured_inputs.as_deref().unwrap_or_default())
                + Tensor::bytes_of(&done.outputs);
            let mut memory = done.memory.split(0);
            if memory
                .try_grow_to(elements * RECORD_BYTES_PER_ELEMENT + bytes)
                .is_err()
            {
                log.metrics.monitoring.payload_dropped(&done.model.name);
                if !shadow_wanted {
                    done.captured_inputs = None;
                }
                return Ok(done);
            }
            let inputs: Vec<Value> = done
                .captured_inputs
                .iter()
                .flatten()
                .filter_map(|t| logged_input(t, &policy))
                .collect();
            let time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let mut record = json!({
                "time": time,
                "request_id": request_id,
                "model": done.model.name,
                "version": done.model.version.to_string(),
                "variant": if variant.is_empty() { done.variant.clone() } else { variant },
                "inputs": inputs,
                "outputs": done.outputs,
                "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
            });
            if let Some((trace_id, span_id)) = trace {
                record["trace_id"] = Value::String(trace_id);
                record["span_id"] = Value::String(span_id);
            }
            log.offer(&done.model.name, record, memory);
            if !shadow_wanted {
                done.captured_inputs = None;
            }
            Ok(done)
        })
    }
}
