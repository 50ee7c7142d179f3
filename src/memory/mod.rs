//! Memory: the byte budget that admits work only while it fits, what the process may use (its cgroup's memory
//! limit) and holds, and giving freed memory back to the operating system.
//!
//! [`MemoryBudget`] is one budget of bytes, shared by requests in flight (bodies, decoded tensors, outputs and
//! encoded responses, reserved before they are read and given back when the response is sent) and, when the
//! budget comes from a memory limit, by loaded model versions. [`plan`] sizes it from the settings and the limit.
//!
//! sluice's own allocations go through mimalloc; ONNX Runtime's (model weights, session arenas) go through the C
//! library's `malloc`, which keeps freed memory in per-thread arenas. After a model version is released, [`trim`]
//! returns what its sessions freed, so replacing models over and over does not ratchet the resident size up.

mod budget;
mod footprint;
pub mod limit;

pub use self::budget::{MemoryBudget, MemoryError, Reservation, SMALL_BYTES};
pub use self::footprint::{Footprint, SMALL_BODY};

/// The budget when there is neither a configured size nor a memory limit.
pub const DEFAULT_BUDGET: usize = 2 << 30;

/// What a memory limit keeps free besides the budget (ONNX Runtime's working memory during runs, connection
/// buffers, the allocators' slack): a fifth of the limit, at least 64 MiB.
pub fn margin(limit: u64) -> u64 {
    (limit / 5).max(64 << 20)
}

/// How the budget was sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The cgroup's memory limit, if any.
    pub limit: Option<u64>,
    /// Bytes the budget grants.
    pub capacity: usize,
    /// Loaded model versions reserve from the budget (it was derived from the limit, so it must hold them too).
    pub counts_loads: bool,
}

/// Sizes the budget: `configured` bytes if set (requests only); else, under a memory limit, the limit less the
/// [`margin`] and what is resident now (requests and loaded versions share it); else [`DEFAULT_BUDGET`].
pub fn plan(configured: usize, limit: Option<u64>, resident: u64) -> MemoryPlan {
    match (configured, limit) {
        (0, Some(limit)) => {
            let usable = limit.saturating_sub(margin(limit)).saturating_sub(resident);
            MemoryPlan {
                limit: Some(limit),
                // Something must fit even when the limit is tiny; the smallest budget is 16 MiB.
                capacity: usize::try_from(usable).unwrap_or(usize::MAX).max(16 << 20),
                counts_loads: true,
            }
        }
        (0, None) => MemoryPlan {
            limit: None,
            capacity: DEFAULT_BUDGET,
            counts_loads: false,
        },
        (configured, limit) => MemoryPlan {
            limit,
            capacity: configured,
            counts_loads: false,
        },
    }
}

/// Returns free memory to the operating system: what mimalloc (sluice's allocator) has freed and not yet purged,
/// and what the C allocator (ONNX Runtime's) keeps in its arenas (glibc's `malloc_trim`). Called after a model
/// version is released and after a large request is answered, so memory goes back after a burst even when the
/// process then idles (mimalloc purges lazily, on later allocations). The one `unsafe` function in sluice (the
/// crate denies it everywhere else).
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: mi_collect only walks mimalloc's own heaps and arenas; it has no preconditions.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Coalesced [`trim`]s: releases that come in a burst (lazy versions evicted one after another) share one trim
/// [`Trimmer::DELAY`] after the first of them, instead of walking the allocators' arenas for each; memory still goes
/// back shortly after the last release.
#[derive(Debug, Default)]
pub struct Trimmer {
    pending: std::sync::atomic::AtomicBool,
}

impl Trimmer {
    pub const DELAY: std::time::Duration = std::time::Duration::from_millis(200);

    /// Asks for a trim on a blocking thread within [`Trimmer::DELAY`]; an ask while one is pending joins it. Needs a
    /// Tokio runtime.
    pub fn soon(self: &std::sync::Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(Self::DELAY).await;
            this.pending.store(false, Ordering::Release);
            let _ = tokio::task::spawn_blocking(trim).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_budget_comes_from_the_setting_the_limit_or_the_default() {
        // 512 MiB limit, 40 MiB resident: 512 - 102 (a fifth) - 40.
        let p = plan(0, Some(512 * MIB), 40 * MIB);
        assert_eq!(p.capacity as u64, 512 * MIB - 512 * MIB / 5 - 40 * MIB);
        assert!(p.counts_loads);
        // A small limit keeps 64 MiB.
        assert_eq!(plan(0, Some(200 * MIB), 0).capacity as u64, 136 * MIB);
        assert_eq!(plan(0, Some(70 * MIB), 10 * MIB).capacity as u64, 16 * MIB);
        let p = plan(0, None, 40 * MIB);
        assert_eq!((p.capacity, p.counts_loads), (DEFAULT_BUDGET, false));
        let p = plan(300 << 20, Some(512 * MIB), 40 * MIB);
        assert_eq!((p.capacity, p.counts_loads), (300 << 20, false));
    }
}
