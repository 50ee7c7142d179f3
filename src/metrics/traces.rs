//! The tracing family: spans sent to the OTLP collector, and spans dropped because the export queue was full or an
//! export failed (a request never waits for export, so a slow or absent collector shows here and nowhere else).

use prometheus::{IntCounter, IntCounterVec};

use super::labels::SpanDrop;
use super::Registrar;

#[derive(Clone, Debug)]
pub struct TraceMetrics {
    exported: IntCounter,
    /// By [`SpanDrop`], in [`SpanDrop::ALL`]'s order: resolved once, as a full queue drops spans by the thousand.
    dropped: [IntCounter; 2],
}

impl TraceMetrics {
    pub(super) fn new(add: &Registrar) -> prometheus::Result<Self> {
        let dropped: IntCounterVec = add.counters(
            "sluice_trace_spans_dropped_total",
            "Spans not exported, by reason (queue_full: the export queue was full; export_failed: the collector refused the batch, could not be reached or did not answer in time).",
            &["reason"],
        )?;
        Ok(TraceMetrics {
            exported: add.counter(
                "sluice_trace_spans_exported_total",
                "Spans the OTLP collector accepted.",
            )?,
            dropped: SpanDrop::ALL.map(|reason| dropped.with_label_values(&[reason.label()])),
        })
    }

    pub fn exported(&self, spans: usize) {
        self.exported.inc_by(spans as u64);
    }

    pub fn dropped(&self, reason: SpanDrop, spans: usize) {
        self.dropped[reason as usize].inc_by(spans as u64);
    }
}
