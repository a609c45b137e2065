//! glibc malloc settings for the batch evaluation commands (the one `unsafe` call of the crate).
//!
//! Evaluation allocates and frees many buffers of a few MB per pass over `X` (a group's rows, its gene columns,
//! a batch of DE rows). With glibc's defaults a freed buffer goes back to the kernel (it was mmapped, or it sat at
//! the trimmed top of the heap) and the next pass faults the same amount in again: ~600 k page faults and ~0.5 s
//! of kernel time on the big vcc pair (BENCHMARKS.md §1). Keeping freed memory in the heap lets passes reuse it
//! (~330 k faults); peak RSS moved by less than the run-to-run spread (vcc 1.20–1.32 GB before, 1.18–1.24 GB after).
//!
//! One arena: a pass's rows are allocated on a reading thread and freed on the analysing one, and with an arena
//! per thread that memory was evidently not reused by the next pass's reader (a new thread), which faulted in fresh
//! pages (recycling the row buffers by hand did not remove the faults; one arena did). vcc2026 on the big counts
//! pair (Intel, A/B 4 runs each): 540–630 k → 260–290 k page faults, kernel time 1.9–2.1 → 1.4–1.6 s, peak RSS
//! 1.09–1.19 → 0.98–0.99 GB. The evaluation's allocations are few and large, so the shared arena's lock is not
//! contended.

/// Serve allocations up to 32 MB from the heap, trim its top only beyond 64 MB of free memory (a larger
/// threshold was no faster and kept ~100 MB more resident), and share one arena between threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    // glibc caps M_MMAP_THRESHOLD at 32 MB on 64-bit (HEAP_MAX_SIZE / 2)
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    const TRIM_THRESHOLD: libc::c_int = 64 << 20;
    // SAFETY: mallopt only sets allocator parameters (it takes the arena locks itself); no pointer is involved.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Other allocators keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
