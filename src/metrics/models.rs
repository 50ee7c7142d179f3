//! The model versions' family: which versions are loaded and ready, which serve from memory after their files were
//! removed, what their model cards say, and how long loads take and how often they fail.

use std::collections::HashMap;
use std::sync::Mutex;

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
    /// What the per-version series show now, so a change touches only those that differ.
    shown: Mutex<HashMap<(String, u64), Shown>>,
}

/// One version's state for [`ModelMetrics::set_states`].
pub struct VersionGauges<'a> {
    pub model: &'a str,
    pub version: u64,
    pub ready: bool,
    pub files_removed: bool,
    /// What the loaded version is estimated to hold (0 when not loaded).
    pub bytes: u64,
    /// A loaded version's model card: owner, source, sha256 (empty when the card does not say).
    pub card: Option<[String; 3]>,
}

/// What the gauges show for one version.
#[derive(PartialEq)]
struct Shown {
    ready: bool,
    files_removed: bool,
    card: Option<[String; 3]>,
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
            shown: Mutex::new(HashMap::new()),
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

    /// Brings the per-version gauges, the model cards' info and the resident totals in line with `states`, every
    /// version known: only the series that changed are touched, so a registry of thousands of versions costs little
    /// per change. Returns whether a version that was loaded no longer is.
    pub(super) fn set_states<'a>(&self, states: impl Iterator<Item = VersionGauges<'a>>) -> bool {
        let mut shown = self
            .shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next: HashMap<(String, u64), Shown> = HashMap::with_capacity(shown.len());
        let (mut loaded, mut bytes) = (0i64, 0u64);
        let mut resident = std::collections::BTreeSet::new();
        let mut left = false;
        for state in states {
            if state.ready {
                resident.insert(state.model);
            }
            loaded += i64::from(state.ready);
            bytes += state.bytes;
            let now = Shown {
                ready: state.ready,
                files_removed: state.files_removed,
                card: state.card,
            };
            let key = (state.model.to_owned(), state.version);
            let before = shown.remove(&key);
            left |= before.as_ref().is_some_and(|b| b.ready && !now.ready);
            if before.as_ref() != Some(&now) {
                self.show(&key, before.as_ref(), Some(&now));
            }
            next.insert(key, now);
        }
        for (key, before) in shown.drain() {
            left |= before.ready;
            self.show(&key, Some(&before), None);
        }
        *shown = next;
        self.loaded.set(loaded);
        self.resident.set(resident.len() as i64);
        self.resident_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        left
    }

    /// Replaces one version's series: `before` as they were (removed), `now` as they are (`None`: gone).
    fn show(&self, (model, version): &(String, u64), before: Option<&Shown>, now: Option<&Shown>) {
        let version = version.to_string();
        let labels = [model.as_str(), version.as_str()];
        if let Some(before) = before {
            let _ = self.ready.remove_label_values(&labels);
            if before.files_removed {
                let _ = self.files_removed.remove_label_values(&labels);
            }
            if let Some([owner, source, sha256]) = &before.card {
                let _ = self
                    .info
                    .remove_label_values(&[model, &version, owner, source, sha256]);
            }
        }
        let Some(now) = now else { return };
        self.ready
            .with_label_values(&labels)
            .set(i64::from(now.ready));
        if now.files_removed {
            self.files_removed.with_label_values(&labels).set(1);
        }
        if let Some([owner, source, sha256]) = &now.card {
            self.info
                .with_label_values(&[model, &version, owner, source, sha256])
                .set(1);
        }
    }
}
