//! usan-core: the engine's algorithms without any IO.
//!
//! Everything here is synchronous and deterministic so that each piece can be
//! tested alone and a model fitted on history scores the same at the edge:
//!
//! - [`model`]: the plant data model (assets, signals, samples, findings);
//! - [`frame`]: turning per-signal samples into aligned per-asset frames;
//! - [`fields`]: the field names of a settings type (for the manual's check);
//! - [`detector`]: the [`Detector`] trait, its registry and
//!   the detectors themselves;
//! - [`threshold`]: turning scores into decisions, with persistence,
//!   hysteresis and adaptive levels;
//! - [`alarm`]: the alarm lifecycle people work with;
//! - [`metrics`]: the public benchmarks' detection metrics (SKAB, NAB);
//! - [`rul`]: remaining useful life from run-to-failure histories;
//! - [`spc`]: control chart constants and run rules (statistical process control);
//! - [`trees`]: tree ensembles: isolation trees, gradient-boosted trees
//!   (remaining useful life, yield), extremely randomised trees (yield);
//! - [`stats`]: small numeric helpers shared by the above;
//! - [`parallel`]: batch work cut over the machine's cores;
//! - `kernels`: the hand-vectorised inner loops of batch scoring, the only
//!   `unsafe` code (each with a plain-Rust reference it is tested against),
//!   and [`allocator`]: how freed memory goes back to the kernel.

pub mod alarm;
pub mod detector;
pub mod fields;
pub mod frame;
pub mod guard;
mod kernels;
pub mod metrics;
pub mod model;
pub mod parallel;
pub mod rul;
pub mod spc;
pub mod stats;
pub mod threshold;
pub mod trees;

pub use detector::{Detector, DetectorConfig, DetectorError, FittedModel, Score};
pub use kernels::{activation, allocator, dense};
pub use model::{Contribution, Finding, Quality, Sample, SignalSpec, Timestamp};
