//! The byte budget: how much memory work in flight (and, under a memory limit, loaded model versions) may hold.
//!
//! A [`Reservation`] takes bytes from the [`MemoryBudget`] and gives them back when dropped. Taking is one
//! compare-and-swap when the bytes are free; otherwise the caller waits (bounded) until enough is released. Who
//! fits goes first, so a small request is never queued behind a large one; and a slice of the budget
//! ([`MemoryBudget::large_limit`]) is kept for small reservations, so large ones cannot take all of it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Reservations up to this size may use the whole budget; larger ones leave [`small_headroom`] free.
pub const SMALL_BYTES: usize = 1 << 20;

/// Releasing a reservation at least this large (a large request answered) returns freed memory to the OS.
const TRIM_AFTER_BYTES: usize = 16 << 20;

/// Why memory was not granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// More than the budget could ever grant at once.
    #[error("this request needs about {needed} bytes of memory, more than the budget of {capacity} allows for one request (limits.max_inflight_bytes); send smaller batches")]
    TooLarge { needed: usize, capacity: usize },
    /// Not enough was released in time.
    #[error("server out of memory for requests: {needed} more bytes needed, {free} of {capacity} free after waiting {waited_ms} ms (limits.max_inflight_bytes); retry later")]
    Exhausted {
        needed: usize,
        free: usize,
        capacity: usize,
        waited_ms: u64,
    },
}

/// A shared byte budget; clones share it.
#[derive(Clone)]
pub struct MemoryBudget {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    /// Bytes reserved now; may pass `capacity` when memory already allocated is charged ([`Reservation::charge`]).
    used: AtomicUsize,
    /// Tasks waiting in [`MemoryBudget::reserve`]; releases notify only when there are some.
    waiting: AtomicUsize,
    released: Notify,
    /// Requests refused for memory, for the metrics.
    refused: AtomicU64,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("capacity", &self.capacity())
            .field("used", &self.used())
            .finish()
    }
}

/// What large reservations leave for small ones: a sixteenth of the budget, at least [`SMALL_BYTES`] and at most
/// 64 MiB.
fn small_headroom(capacity: usize) -> usize {
    (capacity / 16)
        .clamp(SMALL_BYTES, 64 << 20)
        .min(capacity / 2)
}

impl MemoryBudget {
    pub fn new(capacity: usize) -> MemoryBudget {
        MemoryBudget {
            shared: Arc::new(Shared {
                capacity,
                used: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                released: Notify::new(),
                refused: AtomicU64::new(0),
            }),
        }
    }

    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    pub fn used(&self) -> usize {
        self.shared.used.load(Ordering::Acquire)
    }

    /// Requests refused for memory so far.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// The most one large reservation may take.
    pub fn large_limit(&self) -> usize {
        self.shared.capacity - small_headroom(self.shared.capacity)
    }

    /// A reservation of nothing from this budget, to grow later.
    pub fn empty(&self) -> Reservation {
        Reservation {
            shared: Some(Arc::clone(&self.shared)),
            bytes: 0,
        }
    }

    /// `bytes` now, if they are free.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        self.shared.take(bytes, bytes).then(|| Reservation {
            shared: Some(Arc::clone(&self.shared)),
            bytes,
        })
    }

    /// `bytes`, waiting at most `wait` for them to be released.
    pub async fn reserve(&self, bytes: usize, wait: Duration) -> Result<Reservation, MemoryError> {
        let mut reservation = self.empty();
        reservation.grow_to(bytes, wait).await?;
        Ok(reservation)
    }
}

struct DecrementOnDrop<'a>(&'a AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn limit_for(&self, bytes: usize) -> usize {
        if bytes <= SMALL_BYTES {
            self.capacity
        } else {
            self.capacity - small_headroom(self.capacity)
        }
    }

    /// Takes `bytes` for a reservation that then holds `total`, if the budget stays within the limit for a
    /// reservation of that size.
    fn take(&self, bytes: usize, total: usize) -> bool {
        let limit = self.limit_for(total);
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.released.notify_waiters();
        }
        if bytes >= TRIM_AFTER_BYTES {
            super::trim();
        }
    }
}

/// Bytes held from a [`MemoryBudget`] until dropped. [`Reservation::none`] holds nothing from no budget.
#[derive(Default)]
pub struct Reservation {
    shared: Option<Arc<Shared>>,
    bytes: usize,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Reservation").field(&self.bytes).finish()
    }
}

impl Reservation {
    /// Grows an empty reservation to `total` bytes, waiting at most `wait` for them to be released; one that holds
    /// memory already only grows if the bytes are free now (see [`Reservation::try_grow_to`]).
    pub async fn grow_to(&mut self, total: usize, wait: Duration) -> Result<(), MemoryError> {
        let Some(shared) = self.shared.clone() else {
            return Ok(());
        };
        if self.bytes > 0 {
            return self.try_grow_to(total);
        }
        if total == 0 || shared.take(total, total) {
            self.bytes = total;
            return Ok(());
        }
        let limit = shared.limit_for(total);
        if total > limit {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            return Err(MemoryError::TooLarge {
                needed: total,
                capacity: limit,
            });
        }
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = DecrementOnDrop(&shared.waiting);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the retry, so a release between the retry and the wait is not missed.
            let released = shared.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if shared.take(total, total) {
                self.bytes = total;
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                return Err(MemoryError::Exhausted {
                    needed: total,
                    free: limit.saturating_sub(shared.used.load(Ordering::Acquire)),
                    capacity: shared.capacity,
                    waited_ms: wait.as_millis() as u64,
                });
            }
        }
    }

    /// Nothing, from no budget: every operation on it succeeds and counts nothing.
    pub fn none() -> Reservation {
        Reservation::default()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the reservation to at least `total` bytes if the budget has them free now (no waiting: a task that
    /// holds memory must not wait for more, or two such tasks could wait for each other).
    pub fn try_grow_to(&mut self, total: usize) -> Result<(), MemoryError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let extra = total.saturating_sub(self.bytes);
        if extra == 0 {
            return Ok(());
        }
        if shared.take(extra, total) {
            self.bytes = total;
            return Ok(());
        }
        shared.refused.fetch_add(1, Ordering::Relaxed);
        let limit = shared.limit_for(total);
        let used = shared.used.load(Ordering::Acquire);
        Err(if total > limit {
            MemoryError::TooLarge {
                needed: total,
                capacity: limit,
            }
        } else {
            MemoryError::Exhausted {
                needed: extra,
                free: limit.saturating_sub(used),
                capacity: shared.capacity,
                waited_ms: 0,
            }
        })
    }

    /// Counts memory already allocated: grows the reservation to at least `total` bytes even past the budget, so
    /// that what is really held is known and new reservations wait for it.
    pub fn charge(&mut self, total: usize) {
        if let Some(shared) = &self.shared {
            if total > self.bytes {
                shared.used.fetch_add(total - self.bytes, Ordering::SeqCst);
                self.bytes = total;
            }
        }
    }

    /// Moves up to `bytes` of this reservation into a new one from the same budget, for work that outlives the
    /// request (a shadow job, a payload record) and takes some of its memory along.
    pub fn split(&mut self, bytes: usize) -> Reservation {
        let moved = bytes.min(self.bytes);
        self.bytes -= moved;
        Reservation {
            shared: self.shared.clone(),
            bytes: moved,
        }
    }

    /// Takes back what `other` holds (a part split off before).
    pub fn merge(&mut self, mut other: Reservation) {
        if self.shared.is_none() {
            self.shared = other.shared.take();
        }
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Gives back what is held beyond `total` bytes.
    pub fn shrink_to(&mut self, total: usize) {
        if let Some(shared) = &self.shared {
            if total < self.bytes {
                shared.release(self.bytes - total);
                self.bytes = total;
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.release(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[tokio::test]
    async fn reservations_take_and_give_back() {
        let budget = MemoryBudget::new(64 * MIB);
        let a = budget.try_reserve(30 * MIB).unwrap();
        let mut b = budget.try_reserve(20 * MIB).unwrap();
        assert_eq!(budget.used(), 50 * MIB);
        // 60 MiB is the most large reservations may hold together (4 MiB kept for small ones).
        assert!(budget.try_reserve(11 * MIB).is_none());
        let mut small = budget.try_reserve(MIB).unwrap();
        assert!(b.try_grow_to(30 * MIB).is_err());
        b.try_grow_to(29 * MIB).unwrap();
        assert_eq!(budget.used(), 60 * MIB);
        b.shrink_to(10 * MIB);
        assert_eq!(budget.used(), 41 * MIB);
        b.charge(100 * MIB);
        assert_eq!(budget.used(), 131 * MIB);
        // A split moves bytes without counting them twice, and never more than was held.
        let mut part = b.split(40 * MIB);
        assert_eq!(
            (b.bytes(), part.bytes(), budget.used()),
            (60 * MIB, 40 * MIB, 131 * MIB)
        );
        assert_eq!(small.split(0).bytes(), 0);
        drop(b);
        assert_eq!(budget.used(), 71 * MIB);
        assert_eq!(Reservation::none().split(MIB).bytes(), 0);
        let taken = part.split(10 * MIB);
        part.merge(taken);
        assert_eq!((part.bytes(), budget.used()), (40 * MIB, 71 * MIB));
        part.shrink_to(0);
        drop((a, part, small));
        assert_eq!(budget.used(), 0);
        let mut none = Reservation::none();
        none.try_grow_to(usize::MAX).unwrap();
        none.charge(10);
        assert_eq!(none.bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_get_memory_when_it_is_released_or_a_refusal_in_time() {
        let budget = MemoryBudget::new(64 * MIB);
        let held = budget.try_reserve(50 * MIB).unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(40 * MIB, Duration::from_secs(30)).await })
        };
        while budget.shared.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // A small reservation does not queue behind the waiting large one.
        let small = budget.reserve(MIB, Duration::from_millis(1)).await.unwrap();
        drop(held);
        let granted = waiter.await.unwrap().unwrap();
        assert_eq!(granted.bytes(), 40 * MIB);
        let refused = budget.reserve(30 * MIB, Duration::from_millis(20)).await;
        assert!(
            matches!(refused, Err(MemoryError::Exhausted { needed, .. }) if needed == 30 * MIB),
            "{refused:?}"
        );
        let too_large = budget.reserve(61 * MIB, Duration::from_secs(30)).await;
        assert!(matches!(too_large, Err(MemoryError::TooLarge { .. })));
        assert_eq!(budget.refused(), 2);
        drop((granted, small));
        assert_eq!(budget.used(), 0);
    }

    /// Many tasks competing for a budget that fits two at a time all finish, and it is never overdrawn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contended_reservations_never_overdraw() {
        let budget = MemoryBudget::new(64 * MIB);
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks = (0..32).map(|_| {
            let (budget, peak) = (budget.clone(), Arc::clone(&peak));
            tokio::spawn(async move {
                let r = budget
                    .reserve(25 * MIB, Duration::from_secs(30))
                    .await
                    .unwrap();
                peak.fetch_max(budget.used(), Ordering::SeqCst);
                tokio::task::yield_now().await;
                drop(r);
            })
        });
        for task in tasks.collect::<Vec<_>>() {
            task.await.unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 60 * MIB);
        assert_eq!(budget.used(), 0);
    }
}
