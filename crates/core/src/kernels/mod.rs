//! Hand-tuned inner loops: the only place in usan-core with `unsafe`.
//!
//! Batch scoring of history (`usan fit`, `usan eval`, a backlog after an
//! outage) spends nearly all its time in two loops: PCA's projection of each
//! row onto its components, and the isolation forest's walk down its trees.
//! Each has SIMD or assembly versions chosen at run time from what the CPU
//! has, and beside them a plain-Rust version that every build has. Every
//! fast version is tested against the plain one on every CPU that runs the
//! tests, and `USAN_SIMD=off` in the environment makes a process use only the
//! plain versions (the CI runs the core's tests a second time that way).
//!
//! Models from Python (the ONNX crate) run two more here: [`activation`]'s
//! sigmoid and tanh over the gates of recurrent networks, and [`dense`]'s
//! narrow dense layers with weights laid out once at load.
//!
//! [`allocator`] sets how the C allocator hands freed memory back (one
//! foreign call, made once by the binary).
//!
//! Every `unsafe` block says why it is sound in a `// SAFETY:` comment
//! (enforced by `clippy::undocumented_unsafe_blocks`).
#![allow(unsafe_code)]

pub mod activation;
pub mod allocator;
pub mod dense;
pub(crate) mod forest;
pub(crate) mod pca;

/// Whether the fast versions may run: false when the environment variable
/// `USAN_SIMD` is `off` (or `0`, `false`, `no`), read once per process.
pub fn simd_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| {
        std::env::var("USAN_SIMD")
            .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "off" | "0" | "false" | "no"))
            .unwrap_or(true)
    })
}
