//! A fixed pool of ONNX Runtime sessions for one model version.
//!
//! `Session::run` needs `&mut Session`, so concurrent requests each need a session of their own. Requests wait for
//! a free session asynchronously (a semaphore), then run on Tokio's blocking pool, never on the async workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ort::session::Session;
use tokio::sync::Semaphore;

use super::InferError;

pub struct SessionPool {
    /// One slot per session. A `std::sync::Mutex` because it is locked only on a blocking thread, for the length of
    /// one run, and never across an `.await`. A run that panics poisons only its slot's mutex; the session is still
    /// usable (ONNX Runtime reported no corruption), so poison is ignored.
    slots: Arc<[Mutex<Session>]>,
    /// Indexes of idle slots. Held only to push or pop an index.
    idle: Arc<Mutex<Vec<usize>>>,
    /// One permit per idle slot: waiting for a session is async and fair, so queued requests cost no thread.
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit right now, and the most allowed: beyond it requests are refused at once
    /// (overload), never queued without bound.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
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
    pub fn new(sessions: Vec<Session>, max_waiting: usize) -> SessionPool {
        let size = sessions.len();
        SessionPool {
            slots: sessions.into_iter().map(Mutex::new).collect(),
            idle: Arc::new(Mutex::new((0..size).collect())),
            permits: Arc::new(Semaphore::new(size)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
        }
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Waits for an idle session, then runs `work` with it on a blocking thread.
    ///
    /// The permit and slot are released when `work` finishes, even if the caller stopped waiting for the result.
    /// Returns the result and how long the request waited for a session.
    pub async fn with_session<T, F>(&self, work: F) -> Result<(T, std::time::Duration), InferError>
    where
        F: FnOnce(&mut Session) -> Result<T, InferError> + Send + 'static,
        T: Send + 'static,
    {
        let waited_from = std::time::Instant::now();
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(InferError::Overloaded {
                        waiting: self.max_waiting,
                    });
                }
                let _waiting = Waiting(Arc::clone(&self.waiting));
                Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .map_err(|_| InferError::Internal("session pool closed".into()))?
            }
        };
        let index = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or_else(|| InferError::Internal("no idle session despite a permit".into()))?;
        let waited = waited_from.elapsed();
        let guard = SlotGuard {
            index,
            idle: Arc::clone(&self.idle),
        };
        let slots = Arc::clone(&self.slots);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _guard = guard;
            let mut session = slots[index].lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut session)
        });
        let result = task
            .await
            .map_err(|e| InferError::Internal(format!("inference task failed: {e}")))??;
        Ok((result, waited))
    }
}
