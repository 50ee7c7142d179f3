//! The tracing family: spans sent to the OTLP collector, and spans dropped because the export queue was full or an
//! export failed (a request never waits for export, so a slow or absent collector shows here and nowhere else).

use prometheus::{IntCounter, IntCounterVec};

use super::labels::SpanDrop;
use super::Registrar;

#[derive(Clone, Debug)]
pub struct TraceMetrics {
    exported: IntCounter,
    dropped: IntCounterVec,
}

impl TraceMetrics {
    pub(super) fn new(add: &Registrar) -> prometheus::Result<Self> {
        let metrics = TraceMetrics {
            exported: add.counter(
                "sluice_trace_spans_exported_total",
                "Spans the OTLP collector accepted.",
            )?,
            dropped: add.counters(
                "sluice_trace_spans_dropped_total",
                "Spans not exported, by reason (queue_full: the export queue was full; export_failed: the collector refused the batch, could not be reached or did not answer in time).",
                &["reason"],
            )?,
        };
        for reason in SpanDrop::ALL {
            metrics.dropped.with_label_values(&[reason.label()]);
        }
        Ok(metrics)
    }

    pub fn exported(&self, spans: usize) {
        self.exported.inc_by(spans as u64);
    }

    pub fn dropped(&self, reason: SpanDrop, spans: usize) {
        self.dropped
            .with_label_values(&[reason.label()])
            .inc_by(spans as u64);
    }
}
