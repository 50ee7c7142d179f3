//! The model versions' family: which versions are loaded and ready, which serve from memory after their files were
//! removed, what their model cards say, and how long loads take and how often they fail.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};

use super::labels::LoadCause;

use super::Registrar;

pub struct ModelMetrics {
    loaded: IntGauge,
    ready: IntGaugeVec,
    files_removed: IntGaugeVec,
    info: IntGaugeVec,
    load_failures: IntCounterVec,
    load_duration: HistogramVec,
    loads: IntCounterVec,
    evictions: IntCounterVec,
    resident: IntGauge,
    resident_bytes: IntGauge,
    first_request_wait: Histogram,
}

/// One version's state for [`ModelMetrics::set_states`].
pub struct VersionGauges<'a> {
    pub model: &'a str,
    pub version: u64,
    pub ready: bool,
    pub files_removed: bool,
    /// What the loaded version is estimated to hold (0 when not loaded).
    pub bytes: u64,
}

impl ModelMetrics {
    pub(super) fn new(add: &Registrar) -> prometheus::Result<Self> {
        let version = &["model", "version"];
        Ok(ModelMetrics {
            loaded: add.int_gauge(
                "sluice_models_loaded",
                "Model versions loaded and ready to serve.",
            )?,
            ready: add.int_gauges(
                "sluice_model_ready",
                "1 when a model version is loaded and ready, 0 when it is known but not loaded.",
                version,
            )?,
            files_removed: add.int_gauges(
                "sluice_model_files_removed",
                "1 per version that serves from memory although its files were removed, because no other version of its model is ready to replace it.",
                version,
            )?,
            info: add.int_gauges(
                "sluice_model_info",
                "1 per loaded version, labelled from its model card.",
                &["model", "version", "owner", "source", "sha256"],
            )?,
            load_failures: add.counters(
                "sluice_model_load_failures_total",
                "Model version loads that failed.",
                &["model"],
            )?,
            load_duration: add.histograms(
                "sluice_model_load_duration_seconds",
                "Time to load one model version.",
                &["model"],
                &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 120.0],
            )?,
            loads: add.counters(
                "sluice_model_loads_total",
                "Model version loads that succeeded, by cause (startup, change, lazy, load_call).",
                &["cause"],
            )?,
            evictions: add.counters(
                "sluice_model_evictions_total",
                "Lazy model versions unloaded to stay within models.max_loaded_models or models.max_loaded_bytes (least recently used first).",
                &["model"],
            )?,
            resident: add.int_gauge(
                "sluice_models_resident",
                "Models with a loaded version (what models.max_loaded_models caps).",
            )?,
            resident_bytes: add.int_gauge(
                "sluice_models_resident_bytes",
                "What the loaded versions are estimated to hold: per version, its sessions × (2 × model file + 4 MiB) (what models.max_loaded_bytes caps).",
            )?,
            first_request_wait: add.add(Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_model_first_request_wait_seconds",
                    "How long requests that found their lazy model not loaded waited for its load.",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?)?,
        })
    }

    pub fn loaded(&self, cause: LoadCause) {
        self.loads.with_label_values(&[cause.label()]).inc();
    }

    pub fn evicted(&self, model: &str) {
        self.evictions.with_label_values(&[model]).inc();
    }

    pub fn first_request_waited(&self, waited: std::time::Duration) {
        self.first_request_wait.observe(waited.as_secs_f64());
    }

    pub fn observe_load(&self, model: &str, seconds: f64) {
        self.load_duration
            .with_label_values(&[model])
            .observe(seconds);
    }

    pub fn load_failed(&self, model: &str) {
        self.load_failures.with_label_values(&[model]).inc();
    }

    /// Sets `sluice_model_info` (1) for a loaded version, labelled from its card.
    pub fn set_info(&self, model: &str, version: u64, owner: &str, source: &str, sha256: &str) {
        self.info
            .with_label_values(&[model, &version.to_string(), owner, source, sha256])
            .set(1);
    }

    /// Replaces the per-version gauges and the loaded count with `states` (the model cards are set again after).
    pub(super) fn set_states<'a>(&self, states: impl Iterator<Item = VersionGauges<'a>>) {
        self.ready.reset();
        self.files_removed.reset();
        self.info.reset();
        let mut loaded = 0;
        let mut resident = std::collections::BTreeSet::new();
        let mut bytes = 0u64;
        for state in states {
            bytes += state.bytes;
            if state.ready {
                resident.insert(state.model);
            }
            let version = state.version.to_string();
            let labels = [state.model, version.as_str()];
            self.ready
                .with_label_values(&labels)
                .set(i64::from(state.ready));
            if state.files_removed {
                self.files_removed.with_label_values(&labels).set(1);
            }
            loaded += i64::from(state.ready);
        }
        self.loaded.set(loaded);
        self.resident.set(resident.len() as i64);
        self.resident_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}
