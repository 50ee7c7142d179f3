//! The inference requests' family: counts and durations per model, version and variant, time in ONNX Runtime and in
//! the queue before it, requests in flight, batch sizes, and requests shed at the edge.

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::labels::{Outcome, Protocol, STABLE};
use super::{Registrar, LATENCY_BUCKETS};

pub struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    inference: HistogramVec,
    queue: HistogramVec,
    in_flight: IntGaugeVec,
    batch_size: HistogramVec,
    shed: IntCounter,
}

impl RequestMetrics {
    pub(super) fn new(add: &Registrar) -> prometheus::Result<Self> {
        let version = &["model", "version"];
        Ok(RequestMetrics {
            requests: add.counters(
                "sluice_requests_total",
                "Inference requests by model, version, variant, outcome and protocol (http, grpc).",
                &["model", "version", "variant", "outcome", "protocol"],
            )?,
            duration: add.histograms(
                "sluice_request_duration_seconds",
                "Inference request time in the core: resolving the version, decoding, validation, queueing and the run; not the response's encoding.",
                &["model", "version", "variant", "protocol"],
                LATENCY_BUCKETS,
            )?,
            inference: add.histograms(
                "sluice_inference_duration_seconds",
                "Time in ONNX Runtime, including the wait for a free session.",
                version,
                LATENCY_BUCKETS,
            )?,
            queue: add.histograms(
                "sluice_queue_duration_seconds",
                "Time a request waited for a session of its version.",
                version,
                LATENCY_BUCKETS,
            )?,
            in_flight: add.int_gauges(
                "sluice_inflight_requests",
                "Inference requests holding a model version right now.",
                version,
            )?,
            batch_size: add.histograms(
                "sluice_batch_size",
                "Rows per ONNX Runtime run of a dynamically batched version.",
                version,
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            )?,
            shed: add.counter(
                "sluice_requests_shed_total",
                "Requests refused with 503 because the server was at its concurrency and queue limits.",
            )?,
        })
    }

    /// One finished inference request to `series`' version, routed to `variant`, that came by `protocol`.
    pub fn observe(
        &self,
        model: &str,
        series: &VersionSeries,
        variant: &str,
        outcome: Outcome,
        protocol: Protocol,
        seconds: f64,
    ) {
        if variant == STABLE && outcome == Outcome::Success {
            let stable = &series.stable[protocol as usize];
            stable.success.inc();
            stable.duration.observe(seconds);
            return;
        }
        let version = series.version.as_str();
        let protocol = protocol.label();
        self.requests
            .with_label_values(&[model, version, variant, outcome.label(), protocol])
            .inc();
        self.duration
            .with_label_values(&[model, version, variant, protocol])
            .observe(seconds);
    }

    /// One model version's per-request series (see [`VersionSeries`]).
    pub fn version_series(&self, model: &str, version: u64) -> VersionSeries {
        let version = version.to_string();
        let v = version.as_str();
        VersionSeries {
            in_flight: self.in_flight.with_label_values(&[model, v]),
            inference: self.inference.with_label_values(&[model, v]),
            queue: self.queue.with_label_values(&[model, v]),
            stable: Protocol::ALL.map(|protocol| StableSeries {
                success: self.requests.with_label_values(&[
                    model,
                    v,
                    STABLE,
                    Outcome::Success.label(),
                    protocol.label(),
                ]),
                duration: self
                    .duration
                    .with_label_values(&[model, v, STABLE, protocol.label()]),
            }),
            version,
        }
    }

    /// Rows in one batched run.
    pub fn observe_batch(&self, model: &str, version: &str, rows: usize) {
        self.batch_size
            .with_label_values(&[model, version])
            .observe(rows as f64);
    }

    /// A request refused by load shedding.
    pub fn shed(&self) {
        self.shed.inc();
    }
}

/// Decrements the in-flight gauge when dropped (request finished, failed or abandoned).
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The series every request to one model version updates (in flight, inference time, queue time, and the request
/// count and duration of its commonest case, a successful request to the stable variant), looked up by label once and
/// kept with the version (`ModelVersion::series`) rather than looked up on every request.
#[derive(Clone)]
pub struct VersionSeries {
    /// The version as a label value.
    version: String,
    in_flight: IntGauge,
    inference: Histogram,
    queue: Histogram,
    /// Per protocol, in the order of [`Protocol::ALL`].
    stable: [StableSeries; 2],
}

/// The request count and duration of successful requests to the stable variant by one protocol.
#[derive(Clone)]
struct StableSeries {
    success: IntCounter,
    duration: Histogram,
}

impl VersionSeries {
    /// The version as a label value.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn observe_inference(&self, seconds: f64) {
        self.inference.observe(seconds);
    }

    /// Time a request waited for a session or a batch.
    pub fn observe_queue(&self, seconds: f64) {
        self.queue.observe(seconds);
    }
}
