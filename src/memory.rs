//! Giving memory back to the operating system. sluice's own allocations go through mimalloc; ONNX Runtime's (model
//! weights, session arenas) go through the C library's `malloc`, which keeps freed memory in per-thread arenas.
//! After a model version is released, [`trim`] returns what its sessions freed, so replacing models over and over
//! does not ratchet the resident size up.

/// Returns free memory held by the C allocator to the operating system (glibc's `malloc_trim`); a no-op elsewhere.
/// The one `unsafe` call in sluice (the crate denies it everywhere else).
#[allow(unsafe_code)]
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
