//! A fixed pool of ONNX Runtime sessions for one model version, and where each run happens.
//!
//! `Session::run` needs `&mut Session`, so concurrent requests each need a session of their own. Requests wait for
//! a free session asynchronously (a semaphore). A run then goes to Tokio's blocking pool, unless [`RunCost`] predicts
//! it is short (microseconds, like the JSON decoding already done on the async worker): such a run happens on the
//! async worker that holds the request, which saves the two thread wake-ups of the hand-off, more than a small
//! model's whole run costs.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ort::session::Session;
use tokio::sync::Semaphore;

use super::InferError;

pub struct SessionPool {
    /// One slot per session. A `std::sync::Mutex` because it is locked only for the length of one run (on a blocking
    /// thread, or inline for a short run), never across an `.await`. A run that panics poisons only its slot's
    /// mutex; the session is still usable (ONNX Runtime reported no corruption), so poison is ignored.
    slots: Arc<[Mutex<Session>]>,
    /// Indexes of idle slots. Held only to push or pop an index.
    idle: Arc<Mutex<Vec<usize>>>,
    /// One permit per idle slot: waiting for a session is async and fair, so queued requests cost no thread.
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit right now, and the most allowed: beyond it requests are refused at once
    /// (overload), never queued without bound.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// Recent run times, to decide where the next run happens.
    cost: Arc<RunCost>,
}

/// Predicts how long a run takes, from the runs before it, to decide whether it may run on the async worker.
///
/// The estimate is the run time per input element, averaged over recent runs (exponentially weighted, updated after
/// every run wherever it ran). A run of `n` elements is predicted to take `n ×` that; it runs inline when the
/// prediction is at most `max`. Charging a run's fixed cost to every element overestimates large inputs, never
/// underestimates them, so a batch far bigger than the runs measured so far goes to the blocking pool. Until a run
/// has been timed, and always when `max` is zero, runs go to the blocking pool.
struct RunCost {
    max: Duration,
    /// `f64` bits of nanoseconds per element; 0 until the first run is timed. Concurrent updates may overwrite each
    /// other: the average then skips a sample, which is harmless.
    per_element: AtomicU64,
}

impl RunCost {
    /// Weight of the newest run in the average.
    const NEWEST: f64 = 0.125;

    fn new(max: Duration) -> RunCost {
        RunCost {
            max,
            per_element: AtomicU64::new(0),
        }
    }

    /// Whether a run of `elements` input elements should happen on the async worker.
    fn inline(&self, elements: usize) -> bool {
        let per_element = f64::from_bits(self.per_element.load(Ordering::Relaxed));
        per_element > 0.0 && per_element * elements.max(1) as f64 <= self.max.as_nanos() as f64
    }

    /// Records that a run of `elements` input elements took `took`.
    fn record(&self, elements: usize, took: Duration) {
        let sample = (took.as_nanos() as f64 / elements.max(1) as f64).max(f64::MIN_POSITIVE);
        let old = f64::from_bits(self.per_element.load(Ordering::Relaxed));
        let new = if old > 0.0 {
            old + Self::NEWEST * (sample - old)
        } else {
            sample
        };
        self.per_element.store(new.to_bits(), Ordering::Relaxed);
    }
}

/// How long a run waited for a session, and when it ended.
#[derive(Debug, Clone)]
pub struct RunTiming {
    pub queued: Duration,
    /// The batched run that served the request, when it was batched and traced.
    pub batch: Option<Arc<super::batch::BatchRun>>,
    /// The clock read that timed the run (inline), or read when the blocking thread handed the result back: callers
    /// measure up to here without a clock read of their own.
    pub finished: Instant,
}

/// Counts a waiter until dropped.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Returns a slot to the idle list when a run ends, even by panic or when the request was abandoned.
struct SlotGuard {
    index: usize,
    idle: Arc<Mutex<Vec<usize>>>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.index);
    }
}

impl SessionPool {
    /// `inline_max`: the longest predicted run done on the async worker (zero: every run goes to the blocking pool).
    pub fn new(sessions: Vec<Session>, max_waiting: usize, inline_max: Duration) -> SessionPool {
        let size = sessions.len();
        SessionPool {
            slots: sessions.into_iter().map(Mutex::new).collect(),
            idle: Arc::new(Mutex::new((0..size).collect())),
            permits: Arc::new(Semaphore::new(size)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            cost: Arc::new(RunCost::new(inline_max)),
        }
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Waits for an idle session, then runs `work` with it: on the async worker when [`RunCost`] predicts a run of
    /// `elements` input elements is short, else on a blocking thread.
    ///
    /// The permit and slot are released when `work` finishes, even if the caller stopped waiting for the result or
    /// `work` panicked (a panic is reported as an internal error either way). Returns the result, how long the
    /// request waited for a session and when the run ended.
    pub async fn with_session<T, F>(
        &self,
        elements: usize,
        work: F,
    ) -> Result<(T, RunTiming), InferError>
    where
        F: FnOnce(&mut Session) -> Result<T, InferError> + Send + 'static,
        T: Send + 'static,
    {
        // A free session is taken at once (the common case): the wait is zero and needs no clock.
        let (permit, waited) = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => (permit, Duration::ZERO),
            Err(_) => {
                let waited_from = Instant::now();
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(InferError::Overloaded {
                        waiting: self.max_waiting,
                    });
                }
                let _waiting = Waiting(Arc::clone(&self.waiting));
                let permit = Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .map_err(|_| InferError::Internal("session pool closed".into()))?;
                (permit, waited_from.elapsed())
            }
        };
        let index = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or_else(|| InferError::Internal("no idle session despite a permit".into()))?;
        let guard = SlotGuard {
            index,
            idle: Arc::clone(&self.idle),
        };
        let slots = Arc::clone(&self.slots);
        let cost = Arc::clone(&self.cost);
        let run = move || {
            let _permit = permit;
            let _guard = guard;
            let mut session = slots[index].lock().unwrap_or_else(PoisonError::into_inner);
            let started = Instant::now();
            let result = work(&mut session);
            let finished = Instant::now();
            cost.record(elements, finished - started);
            (result, finished)
        };
        let (result, finished) = if self.cost.inline(elements) {
            std::panic::catch_unwind(AssertUnwindSafe(run)).map_err(|_| {
                InferError::Internal("inference task failed: the run panicked".into())
            })?
        } else {
            let (result, _) = tokio::task::spawn_blocking(run)
                .await
                .map_err(|e| InferError::Internal(format!("inference task failed: {e}")))?;
            // The hand-back from the blocking thread is part of the run as the request sees it.
            (result, Instant::now())
        };
        let timing = RunTiming {
            batch: None,
            queued: waited,
            finished,
        };
        Ok((result?, timing))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::thread::ThreadId;

    use super::*;
    use crate::model::{build_session, run, SessionSettings};
    use crate::tensor::{Tensor, TensorData};

    fn iris_pool(inline_max: Duration) -> SessionPool {
        let env = crate::runtime::test_environment();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/iris/2/model.onnx");
        let session = build_session(&env, &path, &SessionSettings::default()).unwrap();
        SessionPool::new(vec![session], 4, inline_max)
    }

    /// Runs `rows` iris rows; returns the thread that ran them and the labels.
    async fn classify(
        pool: &SessionPool,
        rows: usize,
    ) -> Result<(ThreadId, Vec<Tensor>), InferError> {
        let input = Tensor {
            name: "float_input".into(),
            shape: vec![rows, 4],
            data: TensorData::Fp32([6.7, 3.0, 5.2, 2.3].repeat(rows)),
        };
        let (result, _) = pool
            .with_session(rows * 4, |session| {
                let labels = run(session, vec![input], vec!["label".to_owned()])?;
                Ok((std::thread::current().id(), labels))
            })
            .await?;
        Ok(result)
    }

    #[test]
    fn the_prediction_scales_with_elements_and_needs_a_measurement() {
        let cost = RunCost::new(Duration::from_micros(50));
        assert!(!cost.inline(4), "nothing measured yet");
        cost.record(4, Duration::from_micros(4));
        assert!(cost.inline(4));
        assert!(cost.inline(40));
        assert!(!cost.inline(400), "predicted 400 µs");
        // Slow runs move the average up until small runs no longer qualify.
        for _ in 0..64 {
            cost.record(4, Duration::from_millis(1));
        }
        assert!(!cost.inline(4));
        let never = RunCost::new(Duration::ZERO);
        never.record(4, Duration::from_nanos(1));
        assert!(!never.inline(1));
    }

    #[tokio::test]
    async fn short_runs_happen_on_the_calling_worker_and_agree_with_blocking_runs() {
        let pool = iris_pool(Duration::from_millis(50));
        let here = std::thread::current().id();
        let (first, blocking_labels) = classify(&pool, 1).await.unwrap();
        assert_ne!(
            first, here,
            "the first run is not yet measured: blocking pool"
        );
        let (second, inline_labels) = classify(&pool, 1).await.unwrap();
        assert_eq!(second, here, "a measured short run stays on the worker");
        assert_eq!(inline_labels[0].data, blocking_labels[0].data);
        assert_eq!(inline_labels[0].data, TensorData::Int64(vec![2]));
        // Far more elements than any measured run: predicted long, back to the blocking pool.
        let (big, labels) = classify(&pool, 200_000).await.unwrap();
        assert_ne!(big, here);
        assert_eq!(labels[0].shape, vec![200_000]);
    }

    #[tokio::test]
    async fn with_a_zero_limit_every_run_goes_to_the_blocking_pool() {
        let pool = iris_pool(Duration::ZERO);
        let here = std::thread::current().id();
        for _ in 0..3 {
            assert_ne!(classify(&pool, 1).await.unwrap().0, here);
        }
    }

    #[tokio::test]
    async fn a_panicking_inline_run_is_an_error_and_frees_its_session() {
        let pool = iris_pool(Duration::from_millis(50));
        classify(&pool, 1).await.unwrap();
        let here = std::thread::current().id();
        let ran_on = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&ran_on);
        let err = pool
            .with_session(4, move |_| -> Result<(), InferError> {
                *seen.lock().unwrap() = Some(std::thread::current().id());
                panic!("boom")
            })
            .await
            .unwrap_err();
        assert_eq!(*ran_on.lock().unwrap(), Some(here), "ran inline");
        assert!(matches!(err, InferError::Internal(m) if m.contains("panicked")));
        // The only session is idle again.
        assert_eq!(classify(&pool, 1).await.unwrap().0, here);
    }
}
