//! The feedback family: model quality per model × version × variant × set from delayed ground truth, and the
//! predictions, labels and retraining triggers behind it.

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec};

use super::labels::LabelOutcome;
use super::Registrar;
use crate::monitoring::feedback::quality::Quality;
use crate::repository::QualityMetric;

/// The labels of one quality series.
pub struct QualitySeries {
    pub model: String,
    pub version: String,
    pub variant: String,
    pub set: &'static str,
}

impl QualitySeries {
    fn labels(&self) -> [&str; 4] {
        [&self.model, &self.version, &self.variant, self.set]
    }
}

/// One model's `sluice_feedback_predictions_total{outcome="recorded"}` and
/// `sluice_feedback_predictions_dropped_total` series.
pub struct PredictionCounters {
    pub recorded: IntCounter,
    pub capacity: IntCounter,
    pub expired: IntCounter,
    pub replaced: IntCounter,
}

pub struct FeedbackMetrics {
    quality: GaugeVec,
    class_quality: GaugeVec,
    window_labels: IntGaugeVec,
    predictions: IntCounterVec,
    dropped: IntCounterVec,
    labels: IntCounterVec,
    retrain: IntCounterVec,
}

const CLASS_METRICS: [&str; 2] = ["precision", "recall"];

impl FeedbackMetrics {
    pub(super) fn new(add: &Registrar) -> prometheus::Result<Self> {
        let series = &["model", "version", "variant", "set"];
        Ok(FeedbackMetrics {
            quality: add.gauges(
                "sluice_model_quality",
                "Model quality over the series' last feedback.window labels (accuracy, log_loss, brier, ece, mae, rmse).",
                &["model", "version", "variant", "set", "metric"],
            )?,
            class_quality: add.gauges(
                "sluice_model_class_quality",
                "Per-class precision and recall over the series' window (at most feedback.max_classes classes).",
                &["model", "version", "variant", "set", "class", "metric"],
            )?,
            window_labels: add.int_gauges(
                "sluice_model_quality_labels",
                "Labelled rows in the series' quality window.",
                series,
            )?,
            predictions: add.counters(
                "sluice_feedback_predictions_total",
                "Answered requests of feedback models: kept for their truth (recorded) or not (not_recorded: no id, or the policy's outputs were not computed).",
                &["model", "outcome"],
            )?,
            dropped: add.counters(
                "sluice_feedback_predictions_dropped_total",
                "Kept predictions that left the store unlabelled (capacity, expired, replaced).",
                &["model", "reason"],
            )?,
            labels: add.counters(
                "sluice_feedback_labels_total",
                "Posted truths by outcome (accepted, unknown, late, duplicate, invalid).",
                &["model", "outcome"],
            )?,
            retrain: add.counters(
                "sluice_feedback_retrain_triggers_total",
                "Retraining triggers fired (reason: metric, new_data).",
                &["model", "reason"],
            )?,
        })
    }

    /// A model's prediction counters, resolved once: the per-request path then only adds.
    pub fn prediction_counters(&self, model: &str) -> PredictionCounters {
        let dropped = |reason| self.dropped.with_label_values(&[model, reason]);
        PredictionCounters {
            recorded: self.predictions.with_label_values(&[model, "recorded"]),
            capacity: dropped("capacity"),
            expired: dropped("expired"),
            replaced: dropped("replaced"),
        }
    }

    pub fn not_recorded(&self, model: &str) {
        self.predictions
            .with_label_values(&[model, "not_recorded"])
            .inc();
    }

    pub fn label(&self, model: &str, outcome: LabelOutcome) {
        self.labels(model, outcome, 1);
    }

    pub fn labels(&self, model: &str, outcome: LabelOutcome, n: usize) {
        if n > 0 {
            self.labels
                .with_label_values(&[model, outcome.label()])
                .inc_by(n as u64);
        }
    }

    pub fn retrain_trigger(&self, model: &str, reason: &str) {
        self.retrain.with_label_values(&[model, reason]).inc();
    }

    /// Exports a series' quality: every metric its window gives, and per-class precision and recall.
    pub fn set(&self, series: &QualitySeries, q: &Quality) {
        let [m, v, var, set] = series.labels();
        self.window_labels
            .with_label_values(&[m, v, var, set])
            .set(i64::try_from(q.labels).unwrap_or(i64::MAX));
        for metric in QualityMetric::ALL {
            let labels = [m, v, var, set, metric.as_str()];
            match q.get(metric) {
                Some(value) => self.quality.with_label_values(&labels).set(value),
                None => {
                    let _ = self.quality.remove_label_values(&labels);
                }
            }
        }
        for c in &q.classes {
            for (name, value) in CLASS_METRICS.iter().zip([c.precision, c.recall]) {
                let labels = [m, v, var, set, c.class.as_str(), name];
                match value {
                    Some(value) => self.class_quality.with_label_values(&labels).set(value),
                    None => {
                        let _ = self.class_quality.remove_label_values(&labels);
                    }
                }
            }
        }
    }

    /// Removes the per-class series of `classes`.
    pub fn forget_classes(&self, series: &QualitySeries, classes: &[String]) {
        let [m, v, var, set] = series.labels();
        for class in classes {
            for name in CLASS_METRICS {
                let _ = self
                    .class_quality
                    .remove_label_values(&[m, v, var, set, class, name]);
            }
        }
    }

    /// Removes a series entirely (its version left the registry).
    pub fn forget(&self, series: &QualitySeries, classes: &[String]) {
        let [m, v, var, set] = series.labels();
        let _ = self.window_labels.remove_label_values(&[m, v, var, set]);
        for metric in QualityMetric::ALL {
            let _ = self
                .quality
                .remove_label_values(&[m, v, var, set, metric.as_str()]);
        }
        self.forget_classes(series, classes);
    }
}
