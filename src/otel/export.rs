//! Span export off the request path: an ended span goes into a bounded queue (never waiting: a full queue drops
//! it and counts it), and one task sends the queue to the collector in batches, each export bounded in time. A
//! slow or absent collector therefore costs requests nothing; it shows in `sluice_trace_spans_dropped_total`.
//!
//! The SDK's own batch processor bounds its queue too, but only logs its drops at shutdown; this one counts them.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{SpanDrop, TraceMetrics};

/// How the queue is drained.
#[derive(Debug, Clone, Copy)]
pub struct ExportPlan {
    pub queue_capacity: usize,
    pub batch_size: usize,
    /// The longest an ended span waits before its batch is sent.
    pub interval: Duration,
    /// An export that takes longer is abandoned; its spans count as dropped.
    pub timeout: Duration,
}

enum Message {
    Span(Box<SpanData>),
    /// Send what is queued, then answer.
    Flush(oneshot::Sender<()>),
}

/// The span processor: queues sampled spans for the export task.
#[derive(Debug)]
pub struct QueuedExport {
    queue: mpsc::Sender<Message>,
    metrics: TraceMetrics,
}

impl QueuedExport {
    /// Starts the export task (on the current Tokio runtime) and returns its processor.
    pub fn start<E>(exporter: E, plan: ExportPlan, metrics: TraceMetrics) -> QueuedExport
    where
        E: SpanExporter + 'static,
    {
        let (queue, receiver) = mpsc::channel(plan.queue_capacity.max(1));
        tokio::spawn(drain(exporter, receiver, plan, metrics.clone()));
        QueuedExport { queue, metrics }
    }

    /// Sends everything queued so far, waiting at most `wait`.
    pub async fn flush(&self, wait: Duration) {
        let (done, answered) = oneshot::channel();
        let flushed = async {
            if self.queue.send(Message::Flush(done)).await.is_ok() {
                let _ = answered.await;
            }
        };
        let _ = tokio::time::timeout(wait, flushed).await;
    }
}

impl SpanProcessor for QueuedExport {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(Message::Span(Box::new(span))).is_err() {
            self.metrics.dropped(SpanDrop::QueueFull, 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Flushing is asynchronous here ([`QueuedExport::flush`]); the task sends on its own schedule.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task: batches of at most `batch_size`, sent when full, every `interval`, and on a flush.
async fn drain<E: SpanExporter>(
    exporter: E,
    mut queue: mpsc::Receiver<Message>,
    plan: ExportPlan,
    metrics: TraceMetrics,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(plan.batch_size);
    let mut tick = tokio::time::interval(plan.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = queue.recv() => match message {
                Some(Message::Span(span)) => {
                    batch.push(*span);
                    if batch.len() >= plan.batch_size {
                        send(&exporter, &mut batch, plan.timeout, &metrics).await;
                    }
                }
                Some(Message::Flush(done)) => {
                    send(&exporter, &mut batch, plan.timeout, &metrics).await;
                    let _ = done.send(());
                }
                None => {
                    send(&exporter, &mut batch, plan.timeout, &metrics).await;
                    return;
                }
            },
            _ = tick.tick() => send(&exporter, &mut batch, plan.timeout, &metrics).await,
        }
    }
}

async fn send<E: SpanExporter>(
    exporter: &E,
    batch: &mut Vec<SpanData>,
    timeout: Duration,
    metrics: &TraceMetrics,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let n = spans.len();
    match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => metrics.exported(n),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, spans = n, "span export failed");
            metrics.dropped(SpanDrop::ExportFailed, n);
        }
        Err(_) => {
            tracing::debug!(spans = n, "span export timed out");
            metrics.dropped(SpanDrop::ExportFailed, n);
        }
    }
}
