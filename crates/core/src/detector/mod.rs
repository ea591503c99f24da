//! Detectors: learn an asset's normal behaviour, score how far a frame is
//! from it.
//!
//! A detector never decides: it returns a [`Score`] (higher is more
//! anomalous, with per-signal contributions) and a
//! [`Threshold`](crate::threshold::Threshold) turns scores into decisions.
//!
//! **The registry** is one list, `registry!` at the bottom of this file:
//! from it come [`DetectorConfig`] (inert configuration, `type = "pca"` in
//! TOML), [`AnyDetector`] (the built, possibly fitted, detector), their
//! dispatch, [`kinds`] (the manual's table and `usan check`) and the
//! conformance suite's list. A new detector is one file (its settings, a
//! type implementing [`Detector`] and [`DetectorKind`]) plus one line there;
//! every `match` over kinds is generated, so nothing else can forget it.
//! [`FittedModel`] wraps a detector with the format version and signal names
//! so a model fitted on history scores the same at the edge.

use crate::threshold::ThresholdConfig;
use serde::{Deserialize, Serialize};

/// What can go wrong when learning or scoring.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectorError {
    /// Too few usable rows to learn from.
    #[error("not enough data to learn: {needed} usable rows needed, {got} given")]
    NotEnoughData {
        /// Rows the detector needs at least.
        needed: usize,
        /// Usable rows it got.
        got: usize,
    },
    /// A row's width differs from what the detector learned.
    #[error("row has {got} values, the detector expects {expected}")]
    DimensionMismatch {
        /// Width learned.
        expected: usize,
        /// Width given.
        got: usize,
    },
    /// `score` before `learn` on a detector that needs a baseline.
    #[error("the detector has not learned a baseline yet")]
    NotFitted,
    /// Every value of the row was missing.
    #[error("every value of the row is missing")]
    NoData,
    /// A setting is out of its range.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// A model artifact of another format version.
    #[error("model format {found} is not supported (this build reads format {supported})")]
    UnsupportedFormat {
        /// Version in the artifact.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
}

/// A detector's verdict on one frame before any threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Anomaly score: higher is more anomalous; 0 is perfectly normal.
    pub value: f64,
    /// Per-signal contributions in score units, in the asset's signal order.
    pub contributions: Vec<f64>,
    /// Hotelling's T² when the detector computes it.
    pub t2: Option<f64>,
    /// Squared prediction error (Q) when the detector computes it.
    pub spe: Option<f64>,
    /// Each monitored statistic with its own per-signal contributions, for
    /// detectors that watch more than one (PCA: T² and SPE; CVA: two T²); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<Statistic>,
}

/// One statistic of a multi-statistic detector, explained per signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statistic {
    /// Short name: `t2` or `spe` (PCA), `t2` or `tr2` (CVA: states, residual variates).
    pub name: String,
    /// The statistic's value (after any smoothing).
    pub value: f64,
    /// Its control limit; `value / limit` above 1 is out of control.
    pub limit: f64,
    /// Per-signal shares of `value / limit`, in the asset's signal order.
    pub contributions: Vec<f64>,
}

/// The contract every detector keeps (checked by the conformance suite).
pub trait Detector {
    /// Learn normal behaviour from baseline rows (one value per signal, NaN
    /// when missing). Learning again replaces what was learned.
    ///
    /// # Errors
    /// [`DetectorError::NotEnoughData`] when the rows cannot support a model,
    /// [`DetectorError::DimensionMismatch`] when rows differ in width.
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError>;

    /// Score one row. Streaming detectors also update their state with it,
    /// using only the past to score (causal).
    ///
    /// # Errors
    /// [`DetectorError::NotFitted`], [`DetectorError::DimensionMismatch`] or
    /// [`DetectorError::NoData`] when every value is missing.
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError>;

    /// The scores of many rows in order, without contributions: the same
    /// values as calling [`score`](Detector::score) row by row (state
    /// updated likewise), faster where a detector has a batch path (history,
    /// evaluation). Rows whose every value is missing score 0.
    ///
    /// # Errors
    /// As [`score`](Detector::score), for the first row that fails.
    fn score_values(&mut self, rows: &[Vec<f64>]) -> Result<Vec<f64>, DetectorError> {
        values_row_by_row(rows, |row| self.score(row))
    }
}

/// Scores of `rows` one by one (rows with every value missing score 0).
pub(crate) fn values_row_by_row(
    rows: &[Vec<f64>],
    mut score: impl FnMut(&[f64]) -> Result<Score, DetectorError>,
) -> Result<Vec<f64>, DetectorError> {
    rows.iter().map(|row| value_or_no_data(score(row))).collect()
}

/// A score's value for a batch: a row with no usable value scores 0.
pub(crate) fn value_or_no_data(score: Result<Score, DetectorError>) -> Result<f64, DetectorError> {
    match score {
        Ok(s) => Ok(s.value),
        Err(DetectorError::NoData) => Ok(0.0),
        Err(e) => Err(e),
    }
}

/// What the registry knows of a detector kind besides [`Detector`]: its
/// settings, a validating constructor, and the facts the engine, the
/// configuration check and the conformance suite ask of every kind.
pub trait DetectorKind: Detector + Sized {
    /// Its settings: the body of `algorithm = { type = "...", ... }`.
    type Config: Default;
    /// The `type` that selects it in configuration (`"pca"`).
    const NAME: &'static str;
    /// What it does, in one line (the manual's table, `usan check`).
    const SUMMARY: &'static str;

    /// Every problem with the settings (empty when valid).
    fn validate(config: &Self::Config) -> Vec<String>;

    /// An unfitted detector.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem
    /// [`validate`](Self::validate) finds.
    fn build(config: &Self::Config) -> Result<Self, DetectorError>;

    /// Rows it needs to learn before it can score; 0 for detectors that
    /// warm up while scoring.
    fn min_baseline_rows(config: &Self::Config) -> usize;

    /// What it needs to learn, in words, for the manual: by default the
    /// rows its default settings need.
    fn baseline_words() -> String {
        match Self::min_baseline_rows(&Self::Config::default()) {
            0 => "none needed".to_string(),
            1 => "1 frame".to_string(),
            rows => format!("{rows} frames"),
        }
    }

    /// The threshold that decides on its scores when the configuration
    /// gives none: its scores' natural unit (sigmas, a ratio to a limit) or,
    /// when they have none, a quantile of the baseline's own scores.
    fn default_threshold(config: &Self::Config) -> ThresholdConfig;

    /// Whether its scores stop growing once values leave the baseline's
    /// range (tree ensembles split only inside it): a fault far outside
    /// scores like the most extreme baseline frames.
    fn saturates_outside_range(_config: &Self::Config) -> bool {
        false
    }

    /// Settings that exercise it, the default first: the conformance suite
    /// holds each of them to the [`Detector`] contract.
    fn examples() -> Vec<Self::Config>;
}

/// `Err(InvalidSetting)` with every problem, or `Ok` when there is none:
/// the first line of every validating constructor.
pub(crate) fn refuse_invalid(problems: Vec<String>) -> Result<(), DetectorError> {
    if problems.is_empty() { Ok(()) } else { Err(DetectorError::InvalidSetting(problems.join("; "))) }
}

/// A stored model's arrays have the lengths its scoring indexes them by:
/// each `(name, length, expected)`; the first mismatch, named. A model file
/// is outside input: a wrong length must be refused when read, not found by
/// an index out of bounds when scored.
pub(crate) fn stored_lengths(checks: &[(&str, usize, usize)]) -> Result<(), String> {
    match checks.iter().find(|(_, length, expected)| length != expected) {
        Some((name, length, expected)) => Err(format!("stored {name} holds {length} values, not {expected}")),
        None => Ok(()),
    }
}

/// One detector kind as the manual and `usan check` describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct KindInfo {
    /// The `type` in configuration.
    pub name: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Baseline rows its default settings need (0: warms up while scoring).
    pub min_baseline_rows: usize,
    /// What it needs to learn, in words.
    pub baseline: String,
    /// Its default threshold.
    pub default_threshold: ThresholdConfig,
}

/// Generates everything that lists detector kinds from one list of
/// `module::Type` lines: the modules, [`DetectorConfig`], [`AnyDetector`],
/// their dispatch and [`kinds`]. Each `match` it writes names every kind,
/// so a kind cannot be half registered.
macro_rules! registry {
    ($($module:ident :: $kind:ident,)+) => {
        $(mod $module;)+
        $(pub use $module::*;)+

        /// Configuration of one detector: the kind (`type`) and its settings.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        pub enum DetectorConfig {
            $(
                #[doc = concat!("The settings of [`", stringify!($kind), "`].")]
                $kind(<$kind as DetectorKind>::Config),
            )+
        }

        impl DetectorConfig {
            /// The kind's name, its `type` in configuration.
            #[must_use]
            pub fn kind(&self) -> &'static str {
                match self {
                    $(DetectorConfig::$kind(_) => <$kind as DetectorKind>::NAME,)+
                }
            }

            /// Every problem with the settings (empty when valid).
            #[must_use]
            pub fn validate(&self) -> Vec<String> {
                match self {
                    $(DetectorConfig::$kind(c) => <$kind as DetectorKind>::validate(c),)+
                }
            }

            /// Build an unfitted detector.
            ///
            /// # Errors
            /// [`DetectorError::InvalidSetting`] when [`validate`](Self::validate)
            /// reports a problem.
            pub fn build(&self) -> Result<AnyDetector, DetectorError> {
                Ok(match self {
                    $(DetectorConfig::$kind(c) => AnyDetector::$kind(<$kind as DetectorKind>::build(c)?),)+
                })
            }

            /// Rows the detector wants before it can score (0 for detectors that
            /// warm up while scoring).
            #[must_use]
            pub fn min_baseline_rows(&self) -> usize {
                match self {
                    $(DetectorConfig::$kind(c) => <$kind as DetectorKind>::min_baseline_rows(c),)+
                }
            }

            /// The threshold used when the configuration gives none.
            #[must_use]
            pub fn default_threshold(&self) -> ThresholdConfig {
                match self {
                    $(DetectorConfig::$kind(c) => <$kind as DetectorKind>::default_threshold(c),)+
                }
            }

            /// See [`DetectorKind::saturates_outside_range`].
            #[must_use]
            pub fn saturates_outside_range(&self) -> bool {
                match self {
                    $(DetectorConfig::$kind(c) => <$kind as DetectorKind>::saturates_outside_range(c),)+
                }
            }

            /// Every kind's [`examples`](DetectorKind::examples), in registry order.
            #[must_use]
            pub fn examples() -> Vec<DetectorConfig> {
                let mut all = Vec::new();
                $(all.extend(<$kind as DetectorKind>::examples().into_iter().map(DetectorConfig::$kind));)+
                all
            }
        }

        /// A built detector of any kind, with its learned state.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        #[allow(clippy::large_enum_variant)] // a few per asset; boxing would add a hop on the hot path
        pub enum AnyDetector {
            $(
                #[doc = concat!("See [`", stringify!($kind), "`].")]
                $kind($kind),
            )+
        }

        impl AnyDetector {
            /// The kind's name, its `type` in configuration.
            #[must_use]
            pub fn kind(&self) -> &'static str {
                match self {
                    $(AnyDetector::$kind(_) => <$kind as DetectorKind>::NAME,)+
                }
            }
        }

        impl Detector for AnyDetector {
            fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
                match self {
                    $(AnyDetector::$kind(d) => d.learn(rows),)+
                }
            }

            fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
                match self {
                    $(AnyDetector::$kind(d) => d.score(row),)+
                }
            }

            fn score_values(&mut self, rows: &[Vec<f64>]) -> Result<Vec<f64>, DetectorError> {
                match self {
                    $(AnyDetector::$kind(d) => d.score_values(rows),)+
                }
            }
        }

        /// Every detector kind's settings fields: `(type, fields)`, in
        /// registry order (the manual's reference is checked against them).
        #[must_use]
        pub fn settings_fields() -> Vec<(&'static str, &'static [&'static str])> {
            vec![$(
                (<$kind as DetectorKind>::NAME, crate::fields::fields_of::<<$kind as DetectorKind>::Config>()),
            )+]
        }

        /// Every detector kind, in registry order, described with its
        /// default settings.
        #[must_use]
        pub fn kinds() -> Vec<KindInfo> {
            vec![$(
                KindInfo {
                    name: <$kind as DetectorKind>::NAME,
                    summary: <$kind as DetectorKind>::SUMMARY,
                    min_baseline_rows: <$kind as DetectorKind>::min_baseline_rows(&Default::default()),
                    baseline: <$kind as DetectorKind>::baseline_words(),
                    default_threshold: <$kind as DetectorKind>::default_threshold(&Default::default()),
                },
            )+]
        }
    };
}

/// The on-disk model artifact: versioned, self-describing JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedModel {
    /// Artifact format version; see [`FittedModel::FORMAT`].
    pub format: u32,
    /// Signal names in the order the detector expects values.
    pub signals: Vec<String>,
    /// The detector with its learned state.
    pub detector: AnyDetector,
    /// The threshold level set when the model was fitted (a quantile of the
    /// baseline scores), so the edge decides exactly as the fit did.
    #[serde(default)]
    pub threshold: Option<f64>,
}

impl FittedModel {
    /// The artifact format this build writes and reads.
    pub const FORMAT: u32 = 1;

    /// Wrap a fitted detector.
    #[must_use]
    pub fn new(signals: Vec<String>, detector: AnyDetector) -> Self {
        FittedModel { format: Self::FORMAT, signals, detector, threshold: None }
    }

    /// Check the format version after loading.
    ///
    /// # Errors
    /// [`DetectorError::UnsupportedFormat`] for another version.
    pub fn check_format(&self) -> Result<(), DetectorError> {
        if self.format == Self::FORMAT {
            Ok(())
        } else {
            Err(DetectorError::UnsupportedFormat { found: self.format, supported: Self::FORMAT })
        }
    }
}

/// Checks shared by every detector's `learn`: non-empty, equal widths.
/// Returns the width.
pub(crate) fn check_rows(rows: &[Vec<f64>], needed: usize) -> Result<usize, DetectorError> {
    let Some(first) = rows.first() else {
        return Err(DetectorError::NotEnoughData { needed: needed.max(1), got: 0 });
    };
    let width = first.len();
    if width == 0 {
        return Err(DetectorError::NotEnoughData { needed: needed.max(1), got: 0 });
    }
    if let Some(bad) = rows.iter().find(|r| r.len() != width) {
        return Err(DetectorError::DimensionMismatch { expected: width, got: bad.len() });
    }
    Ok(width)
}

/// The rows without a missing value, at least `needed` of them.
pub(crate) fn complete_rows(rows: &[Vec<f64>], needed: usize) -> Result<Vec<&Vec<f64>>, DetectorError> {
    let complete: Vec<&Vec<f64>> = rows.iter().filter(|r| r.iter().all(|v| v.is_finite())).collect();
    if complete.len() < needed {
        return Err(DetectorError::NotEnoughData { needed, got: complete.len() });
    }
    Ok(complete)
}

/// Mean and spread of each column (spread 1 for constant columns), for
/// standardising.
pub(crate) fn column_mean_scale(rows: &[&Vec<f64>], width: usize) -> (Vec<f64>, Vec<f64>) {
    (0..width)
        .map(|j| {
            let (m, s) = crate::stats::mean_std(rows.iter().map(|r| r[j])).unwrap_or((0.0, 1.0));
            (m, if s > 1e-12 * m.abs().max(1.0) { s } else { 1.0 })
        })
        .unzip()
}

/// Checks shared by every detector's `score`: width and not all missing.
pub(crate) fn check_row(row: &[f64], expected: usize) -> Result<(), DetectorError> {
    if row.len() != expected {
        return Err(DetectorError::DimensionMismatch { expected, got: row.len() });
    }
    if row.iter().all(|v| !v.is_finite()) {
        return Err(DetectorError::NoData);
    }
    Ok(())
}

/// Score of per-signal detectors: the largest per-signal value, which is
/// also each signal's contribution.
pub(crate) fn max_of(contributions: Vec<f64>) -> Score {
    let value = contributions.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max);
    Score { value, contributions, t2: None, spe: None, statistics: Vec::new() }
}

// The registry: one line per detector kind, `module::Type`.
registry! {
    robust_z::RobustZ,
    ewma::Ewma,
    pca::Pca,
    isolation_forest::IsolationForest,
    half_space_trees::HalfSpaceTrees,
    mset::Mset,
    fusion::Fusion,
    autoencoder::Autoencoder,
    knn_cad::KnnCad,
    flatline::Flatline,
    control_chart::ControlChart,
    context_memory::ContextMemory,
    cva::Cva,
}

#[cfg(test)]
mod conformance;
