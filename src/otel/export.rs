//! Span export off the request path: an ended span goes into a bounded queue (never waiting: a full queue drops
//! it and counts it), and one task sends the queue to the collector in batches, each export bounded in time. A
//! slow or absent collector therefore costs requests nothing; it shows in `sluice_trace_spans_dropped_total`.
//!
//! The queue is a plain vector under a lock, and the task is woken only when a batch is full (or by its interval,
//! or a flush): a span costs its request a push, not a wake-up of the task on another thread.
//!
//! The SDK's own batch processor bounds its queue too, but only logs its drops at shutdown; this one counts them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot, Notify};

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

/// What the span processor and the export task share.
#[derive(Debug)]
struct Queue {
    spans: Mutex<Vec<SpanData>>,
    capacity: usize,
    batch_size: usize,
    /// Told when the queue holds a full batch.
    batch_ready: Notify,
}

impl Queue {
    /// Everything queued, leaving room for the next batch.
    fn take(&self) -> Vec<SpanData> {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *spans, Vec::with_capacity(self.batch_size))
    }
}

/// The span processor: queues sampled spans for the export task.
#[derive(Debug)]
pub struct QueuedExport {
    queue: Arc<Queue>,
    /// Asks the task to send what is queued, then answer.
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    metrics: TraceMetrics,
}

impl QueuedExport {
    /// Starts the export task (on the current Tokio runtime) and returns its processor.
    pub fn start<E>(exporter: E, plan: ExportPlan, metrics: TraceMetrics) -> QueuedExport
    where
        E: SpanExporter + 'static,
    {
        let batch_size = plan.batch_size.max(1);
        let queue = Arc::new(Queue {
            spans: Mutex::new(Vec::with_capacity(batch_size)),
            capacity: plan.queue_capacity.max(1),
            batch_size,
            batch_ready: Notify::new(),
        });
        let (flushes, requests) = mpsc::channel(4);
        tokio::spawn(drain(
            exporter,
            Arc::clone(&queue),
            requests,
            plan,
            metrics.clone(),
        ));
        QueuedExport {
            queue,
            flushes,
            metrics,
        }
    }

    /// Sends everything queued so far, waiting at most `wait`.
    pub async fn flush(&self, wait: Duration) {
        let (done, answered) = oneshot::channel();
        let flushed = async {
            if self.flushes.send(done).await.is_ok() {
                let _ = answered.await;
            }
        };
        let _ = tokio::time::timeout(wait, flushed).await;
    }
}

impl QueuedExport {
    /// Queues an ended span for export; a full queue drops it (counted).
    pub fn queue(&self, span: SpanData) {
        let queue = &*self.queue;
        let queued = {
            let mut spans = queue.spans.lock().unwrap_or_else(PoisonError::into_inner);
            if spans.len() >= queue.capacity {
                None
            } else {
                spans.push(span);
                Some(spans.len())
            }
        };
        match queued {
            Some(len) if len == queue.batch_size => queue.batch_ready.notify_one(),
            Some(_) => {}
            None => self.metrics.dropped(SpanDrop::QueueFull, 1),
        }
    }
}

impl SpanProcessor for QueuedExport {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.queue(span);
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

/// The export task: sends the queue in batches of at most `batch_size` when a batch is full, every `interval`, on
/// a flush, and when the processor is gone.
async fn drain<E: SpanExporter>(
    exporter: E,
    queue: Arc<Queue>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    plan: ExportPlan,
    metrics: TraceMetrics,
) {
    let mut tick = tokio::time::interval(plan.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wake = tokio::select! {
            () = queue.batch_ready.notified() => Wake::Due,
            _ = tick.tick() => Wake::Due,
            flush = flushes.recv() => flush.map_or(Wake::Closed, Wake::Flush),
        };
        let mut spans = queue.take().into_iter();
        loop {
            let batch: Vec<SpanData> = spans.by_ref().take(queue.batch_size).collect();
            if batch.is_empty() {
                break;
            }
            send(&exporter, batch, plan.timeout, &metrics).await;
        }
        match wake {
            Wake::Due => {}
            Wake::Flush(done) => {
                let _ = done.send(());
            }
            Wake::Closed => return,
        }
    }
}

/// Why the export task sends the queue.
enum Wake {
    /// A batch is full, or the interval passed.
    Due,
    /// A flush asked, and waits for the answer.
    Flush(oneshot::Sender<()>),
    /// The processor is gone: the last send.
    Closed,
}

async fn send<E: SpanExporter>(
    exporter: &E,
    batch: Vec<SpanData>,
    timeout: Duration,
    metrics: &TraceMetrics,
) {
    let n = batch.len();
    match tokio::time::timeout(timeout, exporter.export(batch)).await {
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
