//! Prometheus metrics, held in a [`Metrics`] value with its own registry (no process-global state), in seven
//! families: [`RequestMetrics`] (inference requests), [`ModelMetrics`] (the versions and their loads),
//! [`RoutingMetrics`] (shadow comparison, automatic rollback), [`MonitoringMetrics`] (drift, the payload log),
//! [`StoreMetrics`] (a repository in a bucket), [`TraceMetrics`] (span export) and [`FeedbackMetrics`] (model
//! quality from ground truth);
//! plus the memory budget and the process, read when scraped.
//!
//! Names follow Prometheus conventions: `sluice_` prefix, base units, counters ending in `_total`, and bounded
//! labels only: every label value sluice chooses is in [`labels`].

mod feedback;
pub mod labels;
mod memory;
mod models;
mod monitoring;
mod requests;
mod routing;
mod store;
mod traces;

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use self::feedback::{FeedbackMetrics, PredictionCounters, QualitySeries};
pub use self::labels::{
    LabelOutcome, LoadCause, Outcome, Protocol, ShadowOutcome, SpanDrop, StoreOperation, PINNED,
    STABLE,
};
pub use self::models::{ModelMetrics, VersionGauges};
pub use self::monitoring::MonitoringMetrics;
pub use self::requests::{InFlight, RequestMetrics, VersionSeries};
pub use self::routing::{Comparison, RoutingMetrics};
pub use self::store::StoreMetrics;
pub use self::traces::TraceMetrics;
use crate::memory::MemoryBudget;

/// Latency buckets in seconds, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: RequestMetrics,
    pub models: ModelMetrics,
    pub routing: RoutingMetrics,
    pub monitoring: MonitoringMetrics,
    pub store: StoreMetrics,
    pub traces: TraceMetrics,
    pub feedback: FeedbackMetrics,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let add = Registrar(&registry);
        Ok(Metrics {
            requests: RequestMetrics::new(&add)?,
            models: ModelMetrics::new(&add)?,
            routing: RoutingMetrics::new(&add)?,
            monitoring: MonitoringMetrics::new(&add)?,
            store: StoreMetrics::new(&add)?,
            traces: TraceMetrics::new(&add)?,
            feedback: FeedbackMetrics::new(&add)?,
            registry,
        })
    }

    /// Brings the per-version series in line with the versions now known (a version that went away leaves no series
    /// behind): readiness, files removed, model cards and the resident totals from `states`; drift is set again by
    /// its owner.
    pub fn set_model_states<'a>(&self, states: impl Iterator<Item = VersionGauges<'a>>) {
        if self.models.set_states(states) {
            // Drift series of versions that left go; the next report sets those of the others again.
            self.monitoring.reset_drift();
        }
    }

    /// Exports the memory budget, read when scraped: `sluice_memory_budget_bytes`, `sluice_memory_reserved_bytes`,
    /// `sluice_memory_limit_bytes` (0: no limit) and `sluice_memory_refused_total`.
    pub fn watch_memory(&self, budget: MemoryBudget, limit: Option<u64>) -> prometheus::Result<()> {
        let collector = memory::MemoryCollector::new(budget, limit)?;
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

/// Creates a metric family and registers it in one step.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn add<C: Collector + Clone + 'static>(&self, metric: C) -> prometheus::Result<C> {
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        self.add(IntCounter::new(name, help)?)
    }

    fn counters(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    fn int_gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.add(IntGauge::new(name, help)?)
    }

    fn int_gauges(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
        self.add(GaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn histograms(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> prometheus::Result<HistogramVec> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels)?)
    }
}
