//! The monitoring family: input drift per feature and per version, drift alerts, and prediction-log records dropped.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec};

use super::Registrar;
use crate::monitoring::drift::DriftReport;

pub struct MonitoringMetrics {
    drift_psi: GaugeVec,
    drift_overall: GaugeVec,
    drift_rows: IntGaugeVec,
    drift_alerts: IntCounterVec,
    payload_dropped: IntCounterVec,
}

impl MonitoringMetrics {
    pub(super) fn new(add: &Registrar) -> prometheus::Result<Self> {
        let version = &["model", "version"];
        Ok(MonitoringMetrics {
            drift_psi: add.gauges(
                "sluice_drift_psi",
                "Population stability index of a feature's live inputs against the training profile.",
                &["model", "version", "input", "feature"],
            )?,
            drift_overall: add.gauges(
                "sluice_drift_psi_overall",
                "Mean PSI over a version's features.",
                version,
            )?,
            drift_rows: add.int_gauges(
                "sluice_drift_rows",
                "Rows in a version's drift window; PSI is exported once it holds monitoring.drift_min_rows.",
                version,
            )?,
            drift_alerts: add.counters(
                "sluice_drift_alerts_total",
                "Drift alerts raised (webhook calls).",
                version,
            )?,
            payload_dropped: add.counters(
                "sluice_payload_log_dropped_total",
                "Prediction-log records dropped because the buffer was full.",
                &["model"],
            )?,
        })
    }

    /// How many rows a version's drift window holds.
    pub fn set_drift_rows(&self, model: &str, version: u64, rows: usize) {
        self.drift_rows
            .with_label_values(&[model, &version.to_string()])
            .set(i64::try_from(rows).unwrap_or(i64::MAX));
    }

    /// Exports a version's drift report.
    pub fn set_drift(&self, model: &str, version: u64, report: &DriftReport) {
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

    /// A payload-log record dropped because the buffer was full.
    pub fn payload_dropped(&self, model: &str) {
        self.payload_dropped.with_label_values(&[model]).inc();
    }

    /// Forgets every version's drift series (versions come and go; the next report sets them again).
    pub(super) fn reset_drift(&self) {
        self.drift_psi.reset();
        self.drift_overall.reset();
        self.drift_rows.reset();
    }
}
