//! Inference statistics of one loaded version, in the shape of Triton's statistics extension (and of gRPC
//! `ModelStatistics`): counts and cumulative nanoseconds of successful and failed requests, of their time queued and
//! of the three compute phases, the number of inferences and executions, the last inference's time, and per batch
//! size the phases of the batched runs. They live as long as the version is loaded, as in Triton.
//!
//! The phases as sluice measures them: `queue` is the wait for a session or in the batch queue; `compute_input` the
//! request's decoding and validation; `compute_infer` the run in ONNX Runtime (inputs handed over, outputs copied out);
//! `compute_output` the response's encoding by the front end. `success` covers a request from the inference core's
//! start to its encoded response.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// A count and its cumulative time.
#[derive(Debug, Default)]
struct Phase {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Phase {
    fn add(&self, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(nanos(took), Ordering::Relaxed);
    }

    fn read(&self) -> Total {
        Total {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A phase's count and cumulative nanoseconds, as Triton reports them (`StatisticDuration`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Total {
    pub count: u64,
    pub ns: u64,
}

impl Total {
    fn add(&mut self, took: Duration) {
        self.count += 1;
        self.ns += nanos(took);
    }
}

/// The phases of one request that succeeded, as the inference core measured them.
#[derive(Debug, Clone, Copy)]
pub struct RequestPhases {
    pub input: Duration,
    pub queue: Duration,
    pub infer: Duration,
    /// From the core's start to the end of the run.
    pub total: Duration,
    /// When the run ended.
    pub finished: Instant,
}

/// The phases of the batched runs of one batch size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BatchTotals {
    pub compute_input: Total,
    pub compute_infer: Total,
    pub compute_output: Total,
}

/// See the module documentation. A successful request adds to one count (its success, inference, queue and input
/// and infer phases all count it) and four sums, with no clock read of its own: the last inference is kept as an
/// offset from `base`, read from the run's end.
#[derive(Debug)]
pub struct Statistics {
    success: Phase,
    queue_ns: AtomicU64,
    input_ns: AtomicU64,
    infer_ns: AtomicU64,
    fail: Phase,
    compute_output: Phase,
    executions: AtomicU64,
    /// Nanoseconds from `base` to the end of the last successful run, plus one (zero: none yet).
    last: AtomicU64,
    base: Instant,
    base_wall: SystemTime,
    batches: Mutex<BTreeMap<usize, BatchTotals>>,
}

impl Default for Statistics {
    fn default() -> Self {
        Statistics {
            success: Phase::default(),
            queue_ns: AtomicU64::new(0),
            input_ns: AtomicU64::new(0),
            infer_ns: AtomicU64::new(0),
            fail: Phase::default(),
            compute_output: Phase::default(),
            executions: AtomicU64::new(0),
            last: AtomicU64::new(0),
            base: Instant::now(),
            base_wall: SystemTime::now(),
            batches: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Statistics {
    /// A request that succeeded, up to the end of its run (its encoding follows in [`Statistics::output`]).
    pub fn success(&self, phases: RequestPhases) {
        self.success.add(phases.total);
        self.input_ns
            .fetch_add(nanos(phases.input), Ordering::Relaxed);
        self.queue_ns
            .fetch_add(nanos(phases.queue), Ordering::Relaxed);
        self.infer_ns
            .fetch_add(nanos(phases.infer), Ordering::Relaxed);
        let at = nanos(phases.finished.saturating_duration_since(self.base)) + 1;
        self.last.fetch_max(at, Ordering::Relaxed);
    }

    /// A request that failed after it reached this version, and how long it took.
    pub fn failure(&self, took: Duration) {
        self.fail.add(took);
    }

    /// A successful request's response was encoded in `took`: its output phase, and part of its success time.
    pub fn output(&self, took: Duration) {
        self.compute_output.add(took);
        self.success.ns.fetch_add(nanos(took), Ordering::Relaxed);
    }

    /// One run of the model (a batch of several requests counts once).
    pub fn execution(&self) {
        self.executions.fetch_add(1, Ordering::Relaxed);
    }

    /// A batched run of `size` rows: merging its inputs, running, splitting its outputs.
    pub fn batch(&self, size: usize, merge: Duration, run: Duration, split: Duration) {
        let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let totals = batches.entry(size).or_default();
        totals.compute_input.add(merge);
        totals.compute_infer.add(run);
        totals.compute_output.add(split);
    }

    /// The statistics as they are now.
    pub fn read(&self) -> Snapshot {
        let success = self.success.read();
        let counted = |sum: &AtomicU64| Total {
            count: success.count,
            ns: sum.load(Ordering::Relaxed),
        };
        let last_inference = match self.last.load(Ordering::Relaxed) {
            0 => 0,
            at => (self.base_wall + Duration::from_nanos(at - 1))
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        Snapshot {
            last_inference,
            inference_count: success.count,
            execution_count: self.executions.load(Ordering::Relaxed),
            inference_stats: InferenceTotals {
                success,
                fail: self.fail.read(),
                queue: counted(&self.queue_ns),
                compute_input: counted(&self.input_ns),
                compute_infer: counted(&self.infer_ns),
                compute_output: self.compute_output.read(),
                cache_hit: Total::default(),
                cache_miss: Total::default(),
            },
            batch_stats: self
                .batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(&batch_size, totals)| BatchSnapshot {
                    batch_size,
                    totals: *totals,
                })
                .collect(),
        }
    }
}

/// Triton's `InferStatistics` (sluice has no response cache: its hits and misses stay zero).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InferenceTotals {
    pub success: Total,
    pub fail: Total,
    pub queue: Total,
    pub compute_input: Total,
    pub compute_infer: Total,
    pub compute_output: Total,
    pub cache_hit: Total,
    pub cache_miss: Total,
}

/// Triton's `InferBatchStatistics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BatchSnapshot {
    pub batch_size: usize,
    #[serde(flatten)]
    pub totals: BatchTotals,
}

/// A version's statistics at one moment, without its name and version (the front end adds them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    pub last_inference: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub inference_stats: InferenceTotals,
    pub batch_stats: Vec<BatchSnapshot>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_and_the_encoding_counts_as_success_time() {
        let stats = Statistics::default();
        let ms = Duration::from_millis;
        stats.success(RequestPhases {
            input: ms(1),
            queue: ms(2),
            infer: ms(3),
            total: ms(6),
            finished: Instant::now(),
        });
        stats.output(ms(4));
        stats.execution();
        stats.failure(ms(5));
        stats.batch(4, ms(1), ms(2), ms(3));
        stats.batch(4, ms(1), ms(2), ms(3));
        let read = stats.read();
        let total = |count, ms: u64| Total {
            count,
            ns: ms * 1_000_000,
        };
        assert_eq!(read.inference_stats.success, total(1, 10));
        assert_eq!(read.inference_stats.fail, total(1, 5));
        assert_eq!(read.inference_stats.queue, total(1, 2));
        assert_eq!(read.inference_stats.compute_input, total(1, 1));
        assert_eq!(read.inference_stats.compute_infer, total(1, 3));
        assert_eq!(read.inference_stats.compute_output, total(1, 4));
        assert_eq!((read.inference_count, read.execution_count), (1, 1));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            read.last_inference.abs_diff(now) < 60_000,
            "{}",
            read.last_inference
        );
        assert_eq!(Statistics::default().read().last_inference, 0);
        assert_eq!(read.batch_stats.len(), 1);
        assert_eq!(read.batch_stats[0].batch_size, 4);
        assert_eq!(read.batch_stats[0].totals.compute_infer, total(2, 4));
        let json = serde_json::to_value(&read.batch_stats[0]).unwrap();
        assert_eq!(json["compute_output"]["ns"], 6_000_000);
    }
}
