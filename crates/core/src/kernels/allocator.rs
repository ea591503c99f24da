//! How the C allocator returns freed memory to the kernel.
//!
//! glibc's malloc gives the top of its heap back to the kernel as soon as
//! ~128 KiB–32 MiB lie free there (a threshold it moves by itself), and
//! serves blocks over a similar size with fresh mappings. Scoring a batch
//! allocates a few such blocks (a 1,024-row batch of 52 signals is 213 KiB
//! in `f32`, 426 KiB in `f64`) and frees them before the next batch: each
//! batch then faulted its pages in anew, zeroed by the kernel. perf on a
//! PyTorch autoencoder: a third of the time in page faults. Fixed
//! thresholds keep up to [`TRIM_THRESHOLD`] free at the heap's top for the
//! next batch and map only blocks over [`MMAP_THRESHOLD`] on their own; a
//! process holds at most that much more than it uses (per malloc arena).
//!
//! Only commands that score files in large batches set them (`usan model
//! run`, `usan bench onnx`): a network there ran 1.6–2× faster. The engine
//! (`usan serve`) scores small batches, whose blocks stay under glibc's
//! thresholds, and keeps glibc's own behaviour: with fixed thresholds the
//! 1,000-asset soak (`usan bench soak --assets 1000 --signals 20 --rate
//! 20000 --detector pca`) held 63 MiB where BENCHMARKS.md gives 43.7.

/// Bytes free at the top of a heap before glibc returns them.
pub const TRIM_THRESHOLD: usize = 32 << 20;
/// Blocks of this size or more get a mapping of their own.
pub const MMAP_THRESHOLD: usize = 16 << 20;

/// Sets the thresholds above (glibc on Linux; elsewhere nothing to do).
/// Call once, early in `main`; `MALLOC_TRIM_THRESHOLD_` and
/// `MALLOC_MMAP_THRESHOLD_` in the environment still win, as glibc
/// documents for its own tuning.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set_by_user = |name: &str| std::env::var_os(name).is_some();
        if !set_by_user("MALLOC_TRIM_THRESHOLD_") && !set_by_user("MALLOC_MMAP_THRESHOLD_") {
            // SAFETY: mallopt only changes two of malloc's parameters; any
            // value is valid (glibc rejects out-of-range ones by returning 0)
            // and it takes malloc's own lock, so it is safe at any time.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            }
        }
    }
}
