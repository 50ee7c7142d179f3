//! Prometheus metrics, held in a [`Metrics`] value with its own registry (no process-global state).
//!
//! Names follow Prometheus conventions: `sluice_` prefix, base units, counters ending in `_total`, and bounded
//! labels only (model, version, outcome).

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::memory::MemoryBudget;
use crate::routing::STABLE;

/// Latency buckets in seconds, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How an inference request ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ClientError,
    ServerError,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
        }
    }
}

/// Decrements the in-flight gauge when dropped (request finished, failed or abandoned).
pub struct InFlight(prometheus::IntGauge);

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
    in_flight: prometheus::IntGauge,
    inference: prometheus::Histogram,
    queue: prometheus::Histogram,
    stable_success: prometheus::IntCounter,
    stable_duration: prometheus::Histogram,
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

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    inference_duration: HistogramVec,
    in_flight: IntGaugeVec,
    models_loaded: IntGauge,
    model_ready: IntGaugeVec,
    files_removed: IntGaugeVec,
    load_failures: IntCounterVec,
    load_duration: HistogramVec,
    shadow_requests: IntCounterVec,
    shadow_agreement: GaugeVec,
    shadow_diff_mean: GaugeVec,
    shadow_diff_max: GaugeVec,
    auto_rollbacks: IntCounterVec,
    shed: prometheus::IntCounter,
    drift_psi: GaugeVec,
    drift_overall: GaugeVec,
    drift_rows: IntGaugeVec,
    drift_alerts: IntCounterVec,
    model_info: IntGaugeVec,
    queue_duration: HistogramVec,
    payload_dropped: IntCounterVec,
    batch_size: HistogramVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "sluice_requests_total",
                "Inference requests by model, version, variant and outcome.",
            ),
            &["model", "version", "variant", "outcome"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_request_duration_seconds",
                "Inference request time in the core: resolving the version, decoding, validation, queueing and the run; not the response's encoding.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model", "version", "variant"],
        )?;
        let inference_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_inference_duration_seconds",
                "Time in ONNX Runtime, including the wait for a free session.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model", "version"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "sluice_inflight_requests",
                "Inference requests holding a model version right now.",
            ),
            &["model", "version"],
        )?;
        let models_loaded = IntGauge::new(
            "sluice_models_loaded",
            "Model versions loaded and ready to serve.",
        )?;
        let model_ready = IntGaugeVec::new(
            Opts::new(
                "sluice_model_ready",
                "1 when a model version is loaded and ready, 0 when it is known but not loaded.",
            ),
            &["model", "version"],
        )?;
        let files_removed = IntGaugeVec::new(
            Opts::new(
                "sluice_model_files_removed",
                "1 per version that serves from memory although its files were removed, because no other version of its model is ready to replace it.",
            ),
            &["model", "version"],
        )?;
        let load_failures = IntCounterVec::new(
            Opts::new(
                "sluice_model_load_failures_total",
                "Model version loads that failed.",
            ),
            &["model"],
        )?;
        let load_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_model_load_duration_seconds",
                "Time to load one model version.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 120.0]),
            &["model"],
        )?;
        let pair = ["model", "primary_version", "shadow_version"];
        let shadow_requests = IntCounterVec::new(
            Opts::new(
                "sluice_shadow_requests_total",
                "Shadow jobs by outcome: compared, error, dropped (queue full).",
            ),
            &[pair[0], pair[1], pair[2], "outcome"],
        )?;
        let output = [pair[0], pair[1], pair[2], "output"];
        let shadow_agreement = GaugeVec::new(
            Opts::new(
                "sluice_shadow_agreement_ratio",
                "Share of integer/boolean/string output elements equal in primary and shadow.",
            ),
            &output,
        )?;
        let shadow_diff_mean = GaugeVec::new(
            Opts::new(
                "sluice_shadow_abs_diff_mean",
                "Mean absolute difference of floating output elements, primary vs shadow.",
            ),
            &output,
        )?;
        let shadow_diff_max = GaugeVec::new(
            Opts::new(
                "sluice_shadow_abs_diff_max",
                "Largest absolute difference of floating output elements, primary vs shadow.",
            ),
            &output,
        )?;
        let auto_rollbacks = IntCounterVec::new(
            Opts::new(
                "sluice_routing_auto_rollbacks_total",
                "Variants switched off by automatic rollback.",
            ),
            &["model", "variant"],
        )?;
        let shed = prometheus::IntCounter::new(
            "sluice_requests_shed_total",
            "Requests refused with 503 because the server was at its concurrency and queue limits.",
        )?;
        registry.register(Box::new(shed.clone()))?;
        let drift_psi = GaugeVec::new(
            Opts::new("sluice_drift_psi", "Population stability index of a feature's live inputs against the training profile."),
            &["model", "version", "input", "feature"],
        )?;
        let drift_overall = GaugeVec::new(
            Opts::new(
                "sluice_drift_psi_overall",
                "Mean PSI over a version's features.",
            ),
            &["model", "version"],
        )?;
        let drift_alerts = IntCounterVec::new(
            Opts::new(
                "sluice_drift_alerts_total",
                "Drift alerts raised (webhook calls).",
            ),
            &["model", "version"],
        )?;
        let model_info = IntGaugeVec::new(
            Opts::new(
                "sluice_model_info",
                "1 per loaded version, labelled from its model card.",
            ),
            &["model", "version", "owner", "source", "sha256"],
        )?;
        let queue_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_queue_duration_seconds",
                "Time a request waited for a session of its version.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model", "version"],
        )?;
        let drift_rows = IntGaugeVec::new(
            Opts::new(
                "sluice_drift_rows",
                "Rows in a version's drift window; PSI is exported once it holds monitoring.drift_min_rows.",
            ),
            &["model", "version"],
        )?;
        registry.register(Box::new(drift_rows.clone()))?;
        registry.register(Box::new(drift_psi.clone()))?;
        registry.register(Box::new(drift_overall.clone()))?;
        registry.register(Box::new(drift_alerts.clone()))?;
        registry.register(Box::new(model_info.clone()))?;
        registry.register(Box::new(queue_duration.clone()))?;
        let payload_dropped = IntCounterVec::new(
            Opts::new(
                "sluice_payload_log_dropped_total",
                "Prediction-log records dropped because the buffer was full.",
            ),
            &["model"],
        )?;
        registry.register(Box::new(payload_dropped.clone()))?;
        let batch_size = HistogramVec::new(
            HistogramOpts::new(
                "sluice_batch_size",
                "Rows per ONNX Runtime run of a dynamically batched version.",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            &["model", "version"],
        )?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(shadow_requests.clone()))?;
        registry.register(Box::new(shadow_agreement.clone()))?;
        registry.register(Box::new(shadow_diff_mean.clone()))?;
        registry.register(Box::new(shadow_diff_max.clone()))?;
        registry.register(Box::new(auto_rollbacks.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(inference_duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(models_loaded.clone()))?;
        registry.register(Box::new(model_ready.clone()))?;
        registry.register(Box::new(files_removed.clone()))?;
        registry.register(Box::new(load_failures.clone()))?;
        registry.register(Box::new(load_duration.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            inference_duration,
            in_flight,
            models_loaded,
            model_ready,
            files_removed,
            load_failures,
            load_duration,
            shadow_requests,
            shadow_agreement,
            shadow_diff_mean,
            shadow_diff_max,
            auto_rollbacks,
            shed,
            drift_psi,
            drift_overall,
            drift_rows,
            drift_alerts,
            model_info,
            queue_duration,
            payload_dropped,
            batch_size,
        })
    }

    /// One finished inference request to `series`' version, routed to `variant`.
    pub fn observe_request(
        &self,
        model: &str,
        series: &VersionSeries,
        variant: &str,
        outcome: Outcome,
        seconds: f64,
    ) {
        if variant == STABLE && outcome == Outcome::Success {
            series.stable_success.inc();
            series.stable_duration.observe(seconds);
            return;
        }
        let version = series.version.as_str();
        self.requests
            .with_label_values(&[model, version, variant, outcome.label()])
            .inc();
        self.request_duration
            .with_label_values(&[model, version, variant])
            .observe(seconds);
    }

    /// A shadow job's fate: `compared`, `error` or `dropped` (queue full).
    pub fn shadow_outcome(&self, model: &str, primary: u64, shadow: u64, outcome: &str) {
        let (p, s) = (primary.to_string(), shadow.to_string());
        self.shadow_requests
            .with_label_values(&[model, &p, &s, outcome])
            .inc();
    }

    /// The running comparison of one output between a primary and a shadow version.
    #[allow(clippy::too_many_arguments)]
    pub fn shadow_comparison(
        &self,
        model: &str,
        primary: u64,
        shadow: u64,
        output: &str,
        agreement: Option<f64>,
        abs_diff_mean: Option<f64>,
        abs_diff_max: f64,
    ) {
        let (p, s) = (primary.to_string(), shadow.to_string());
        let labels = [model, p.as_str(), s.as_str(), output];
        if let Some(a) = agreement {
            self.shadow_agreement.with_label_values(&labels).set(a);
        }
        if let Some(mean) = abs_diff_mean {
            self.shadow_diff_mean.with_label_values(&labels).set(mean);
            self.shadow_diff_max
                .with_label_values(&labels)
                .set(abs_diff_max);
        }
    }

    /// How many rows a version's drift window holds.
    pub fn set_drift_rows(&self, model: &str, version: u64, rows: usize) {
        self.drift_rows
            .with_label_values(&[model, &version.to_string()])
            .set(i64::try_from(rows).unwrap_or(i64::MAX));
    }

    /// Exports a version's drift report.
    pub fn set_drift(
        &self,
        model: &str,
        version: u64,
        report: &crate::monitoring::drift::DriftReport,
    ) {
        let v = version.to_string();
        for f in &report.features {
            self.drift_psi
                .with_label_values(&[model, &v, &f.input, &f.feature])
                .set(f.psi);
        }
        if let Some(psi) = report.overall_psi {
            self.drift_overall.with_label_values(&[model, &v]).set(psi);
        }
    }

    pub fn drift_alert(&self, model: &str, version: u64) {
        self.drift_alerts
            .with_label_values(&[model, &version.to_string()])
            .inc();
    }

    /// Sets `sluice_model_info` (1) for a loaded version, labelled from its card.
    pub fn set_model_info(
        &self,
        model: &str,
        version: u64,
        owner: &str,
        source: &str,
        sha256: &str,
    ) {
        self.model_info
            .with_label_values(&[model, &version.to_string(), owner, source, sha256])
            .set(1);
    }

    /// A payload-log record dropped because the buffer was full.
    pub fn payload_dropped(&self, model: &str) {
        self.payload_dropped.with_label_values(&[model]).inc();
    }

    /// A request refused by load shedding.
    pub fn request_shed(&self) {
        self.shed.inc();
    }

    pub fn auto_rollback(&self, model: &str, variant: &str) {
        self.auto_rollbacks
            .with_label_values(&[model, variant])
            .inc();
    }

    /// One model version's per-request series (see [`VersionSeries`]).
    pub fn version_series(&self, model: &str, version: u64) -> VersionSeries {
        let version = version.to_string();
        let v = version.as_str();
        VersionSeries {
            in_flight: self.in_flight.with_label_values(&[model, v]),
            inference: self.inference_duration.with_label_values(&[model, v]),
            queue: self.queue_duration.with_label_values(&[model, v]),
            stable_success: self.requests.with_label_values(&[
                model,
                v,
                STABLE,
                Outcome::Success.label(),
            ]),
            stable_duration: self.request_duration.with_label_values(&[model, v, STABLE]),
            version,
        }
    }

    pub fn observe_load(&self, model: &str, seconds: f64) {
        self.load_duration
            .with_label_values(&[model])
            .observe(seconds);
    }

    pub fn model_load_failed(&self, model: &str) {
        self.load_failures.with_label_values(&[model]).inc();
    }

    /// Rows in one batched run.
    pub fn observe_batch(&self, model: &str, version: &str, rows: usize) {
        self.batch_size
            .with_label_values(&[model, version])
            .observe(rows as f64);
    }

    /// Replaces the per-version readiness gauges and the loaded count with `(model, version, loaded, files
    /// removed)` rows.
    pub fn set_model_states<'a>(&self, states: impl Iterator<Item = (&'a str, u64, bool, bool)>) {
        self.model_ready.reset();
        self.files_removed.reset();
        self.model_info.reset();
        self.drift_psi.reset();
        self.drift_overall.reset();
        self.drift_rows.reset();
        let mut loaded = 0;
        for (model, version, ready, files_removed) in states {
            let version = version.to_string();
            self.model_ready
                .with_label_values(&[model, &version])
                .set(i64::from(ready));
            if files_removed {
                self.files_removed
                    .with_label_values(&[model, &version])
                    .set(1);
            }
            loaded += i64::from(ready);
        }
        self.models_loaded.set(loaded);
    }

    /// Exports the memory budget (read when scraped): `sluice_memory_budget_bytes`, `sluice_memory_reserved_bytes`,
    /// `sluice_memory_limit_bytes` (0: no limit) and `sluice_memory_refused_total`.
    pub fn watch_memory(&self, budget: MemoryBudget, limit: Option<u64>) -> prometheus::Result<()> {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let collector = MemoryCollector {
            capacity: gauge(
                "sluice_memory_budget_bytes",
                "Bytes requests in flight (and, under a memory limit, loaded versions) may reserve.",
            )?,
            reserved: gauge(
                "sluice_memory_reserved_bytes",
                "Bytes reserved now by requests in flight and loaded versions.",
            )?,
            limit: gauge(
                "sluice_memory_limit_bytes",
                "The cgroup memory limit the budget was sized from (0: none).",
            )?,
            refused: prometheus::IntCounter::new(
                "sluice_memory_refused_total",
                "Requests (and loads) refused because the memory budget could not hold them.",
            )?,
            budget,
        };
        collector
            .limit
            .set(limit.map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX)));
        self.registry.register(Box::new(collector))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail for the text format except on invalid metric data, which we never create.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The memory budget's gauges, set from the budget when scraped.
struct MemoryCollector {
    budget: MemoryBudget,
    capacity: IntGauge,
    reserved: IntGauge,
    limit: IntGauge,
    refused: prometheus::IntCounter,
}

impl prometheus::core::Collector for MemoryCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        [
            self.capacity.desc(),
            self.reserved.desc(),
            self.limit.desc(),
            self.refused.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let bytes = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.capacity.set(bytes(self.budget.capacity()));
        self.reserved.set(bytes(self.budget.used()));
        self.refused
            .inc_by(self.budget.refused().saturating_sub(self.refused.get()));
        [
            self.capacity.collect(),
            self.reserved.collect(),
            self.limit.collect(),
            self.refused.collect(),
        ]
        .concat()
    }
}
