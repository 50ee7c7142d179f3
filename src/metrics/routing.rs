//! The routing family: shadow jobs and the running comparison of shadow outputs with the primary's, and variants
//! switched off by automatic rollback.

use prometheus::{GaugeVec, IntCounterVec};

use super::labels::ShadowOutcome;
use super::Registrar;

pub struct RoutingMetrics {
    shadow_requests: IntCounterVec,
    agreement: GaugeVec,
    diff_mean: GaugeVec,
    diff_max: GaugeVec,
    auto_rollbacks: IntCounterVec,
}

/// One output's running comparison between a primary and a shadow version.
pub struct Comparison<'a> {
    pub model: &'a str,
    pub primary: u64,
    pub shadow: u64,
    pub output: &'a str,
    /// Share of equal elements, for integer, boolean and string outputs.
    pub agreement: Option<f64>,
    /// Mean and largest absolute difference, for floating outputs.
    pub abs_diff: Option<(f64, f64)>,
}

impl RoutingMetrics {
    pub(super) fn new(add: &Registrar) -> prometheus::Result<Self> {
        let output = &["model", "primary_version", "shadow_version", "output"];
        Ok(RoutingMetrics {
            shadow_requests: add.counters(
                "sluice_shadow_requests_total",
                "Shadow jobs by outcome: compared, error, dropped (queue full).",
                &["model", "primary_version", "shadow_version", "outcome"],
            )?,
            agreement: add.gauges(
                "sluice_shadow_agreement_ratio",
                "Share of integer/boolean/string output elements equal in primary and shadow.",
                output,
            )?,
            diff_mean: add.gauges(
                "sluice_shadow_abs_diff_mean",
                "Mean absolute difference of floating output elements, primary vs shadow.",
                output,
            )?,
            diff_max: add.gauges(
                "sluice_shadow_abs_diff_max",
                "Largest absolute difference of floating output elements, primary vs shadow.",
                output,
            )?,
            auto_rollbacks: add.counters(
                "sluice_routing_auto_rollbacks_total",
                "Variants switched off by automatic rollback.",
                &["model", "variant"],
            )?,
        })
    }

    /// A shadow job's fate.
    pub fn shadow_outcome(&self, model: &str, primary: u64, shadow: u64, outcome: ShadowOutcome) {
        let (p, s) = (primary.to_string(), shadow.to_string());
        self.shadow_requests
            .with_label_values(&[model, &p, &s, outcome.label()])
            .inc();
    }

    pub fn shadow_comparison(&self, c: &Comparison) {
        let (p, s) = (c.primary.to_string(), c.shadow.to_string());
        let labels = [c.model, p.as_str(), s.as_str(), c.output];
        if let Some(a) = c.agreement {
            self.agreement.with_label_values(&labels).set(a);
        }
        if let Some((mean, max)) = c.abs_diff {
            self.diff_mean.with_label_values(&labels).set(mean);
            self.diff_max.with_label_values(&labels).set(max);
        }
    }

    pub fn auto_rollback(&self, model: &str, variant: &str) {
        self.auto_rollbacks
            .with_label_values(&[model, variant])
            .inc();
    }
}
