//! usan-core: the engine's algorithms without any IO.
//!
//! Everything here is synchronous and deterministic so that each piece can be
//! tested alone and a model fitted on history scores the same at the edge:
//!
//! - [`model`]: the plant data model (assets, signals, samples, findings);
//! - [`frame`]: turning per-signal samples into aligned per-asset frames;
//! - [`detector`]: the [`Detector`] trait, its registry and
//!   the detectors themselves;
//! - [`threshold`]: turning scores into decisions, with persistence,
//!   hysteresis and adaptive levels;
//! - [`alarm`]: the alarm lifecycle people work with;
//! - [`metrics`]: the public benchmarks' detection metrics (SKAB, NAB);
//! - [`rul`]: remaining useful life from run-to-failure histories;
//! - [`spc`]: control chart constants and run rules (statistical process control);
//! - [`gbdt`]: gradient-boosted regression trees (remaining useful life, yield);
//! - [`extra_trees`]: extremely randomised trees (yield);
//! - [`stats`]: small numeric helpers shared by the above;
//! - [`parallel`]: batch work cut over the machine's cores.

pub mod alarm;
pub mod detector;
pub mod extra_trees;
pub mod frame;
pub mod gbdt;
pub mod metrics;
pub mod model;
pub mod parallel;
pub mod rul;
pub mod spc;
pub mod stats;
pub mod threshold;

pub use detector::{Detector, DetectorConfig, DetectorError, FittedModel, Score};
pub use model::{Contribution, Finding, Quality, Sample, SignalSpec, Timestamp};
