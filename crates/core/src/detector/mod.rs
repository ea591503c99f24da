//! Detectors: learn an asset's normal behaviour, score how far a frame is
//! from it.
//!
//! A detector never decides: it returns a [`Score`] (higher is more
//! anomalous, with per-signal contributions) and a
//! [`Threshold`](crate::threshold::Threshold) turns scores into decisions.
//!
//! The registry is two enums: [`DetectorConfig`] is inert configuration
//! (`type = "pca"` in TOML) and [`AnyDetector`] is the built, possibly
//! fitted, detector. A new detector is one file plus one variant in each.
//! [`FittedModel`] wraps a detector with the format version and signal names
//! so a model fitted on history scores the same at the edge.

mod autoencoder;
mod control_chart;
mod ewma;
mod flatline;
mod fusion;
mod hst;
mod iforest;
mod knn_cad;
mod mset;
mod pca;
mod robust_z;

pub use autoencoder::{Autoencoder, AutoencoderConfig};
pub use control_chart::{ControlChart, ControlChartConfig};
pub use ewma::{Ewma, EwmaConfig};
pub use flatline::{Flatline, FlatlineConfig};
pub use fusion::{Fusion, FusionConfig};
pub use hst::{HalfSpaceTrees, HalfSpaceTreesConfig};
pub use iforest::{IsolationForest, IsolationForestConfig};
pub use knn_cad::{KnnCad, KnnCadConfig};
pub use mset::{Mset, MsetConfig};
pub use pca::{ComponentRule, DifferenceRule, LimitMethod, Pca, PcaConfig};
pub use robust_z::{RobustZ, RobustZConfig};

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
    /// detectors that watch more than one (PCA: T² and SPE); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<Statistic>,
}

/// One statistic of a multi-statistic detector, explained per signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statistic {
    /// Short name: `t2` or `spe`.
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

/// Configuration of one detector: the registry of detector kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DetectorConfig {
    /// Rolling median/MAD z-score per signal.
    RobustZ(RobustZConfig),
    /// Exponentially weighted moving average residual per signal.
    Ewma(EwmaConfig),
    /// PCA with Hotelling T² and SPE (Q) limits.
    Pca(PcaConfig),
    /// Isolation forest, fitted in batch, scored per frame.
    IsolationForest(IsolationForestConfig),
    /// Half-Space Trees, streaming.
    HalfSpaceTrees(HalfSpaceTreesConfig),
    /// MSET similarity-based state estimation with per-signal residuals.
    Mset(MsetConfig),
    /// Several detectors fused: the largest of their baseline-scaled scores.
    Fusion(FusionConfig),
    /// A dense autoencoder trained on the baseline; scores its reconstruction error.
    Autoencoder(AutoencoderConfig),
    /// kNN conformal anomaly detection on embedded windows, streaming.
    KnnCad(KnnCadConfig),
    /// Stuck signals: runs of unchanged values longer than any before, streaming.
    Flatline(FlatlineConfig),
    /// An I–MR control chart per signal with Western Electric or Nelson rules.
    ControlChart(ControlChartConfig),
}

impl DetectorConfig {
    /// Short name of the detector kind.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            DetectorConfig::RobustZ(_) => "robust_z",
            DetectorConfig::Ewma(_) => "ewma",
            DetectorConfig::Pca(_) => "pca",
            DetectorConfig::IsolationForest(_) => "isolation_forest",
            DetectorConfig::HalfSpaceTrees(_) => "half_space_trees",
            DetectorConfig::Mset(_) => "mset",
            DetectorConfig::Fusion(_) => "fusion",
            DetectorConfig::Autoencoder(_) => "autoencoder",
            DetectorConfig::KnnCad(_) => "knn_cad",
            DetectorConfig::Flatline(_) => "flatline",
            DetectorConfig::ControlChart(_) => "control_chart",
        }
    }

    /// Every problem with the settings (empty when valid).
    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        match self {
            DetectorConfig::RobustZ(c) => c.validate(),
            DetectorConfig::Ewma(c) => c.validate(),
            DetectorConfig::Pca(c) => c.validate(),
            DetectorConfig::IsolationForest(c) => c.validate(),
            DetectorConfig::HalfSpaceTrees(c) => c.validate(),
            DetectorConfig::Mset(c) => c.validate(),
            DetectorConfig::Fusion(c) => c.validate(),
            DetectorConfig::Autoencoder(c) => c.validate(),
            DetectorConfig::KnnCad(c) => c.validate(),
            DetectorConfig::Flatline(c) => c.validate(),
            DetectorConfig::ControlChart(c) => c.validate(),
        }
    }

    /// Build an unfitted detector.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] when [`validate`](Self::validate)
    /// reports a problem.
    pub fn build(&self) -> Result<AnyDetector, DetectorError> {
        let problems = self.validate();
        if !problems.is_empty() {
            return Err(DetectorError::InvalidSetting(problems.join("; ")));
        }
        Ok(match self {
            DetectorConfig::RobustZ(c) => AnyDetector::RobustZ(RobustZ::new(c.clone())),
            DetectorConfig::Ewma(c) => AnyDetector::Ewma(Ewma::new(c.clone())),
            DetectorConfig::Pca(c) => AnyDetector::Pca(Pca::new(c.clone())),
            DetectorConfig::IsolationForest(c) => AnyDetector::IsolationForest(IsolationForest::new(c.clone())),
            DetectorConfig::HalfSpaceTrees(c) => AnyDetector::HalfSpaceTrees(HalfSpaceTrees::new(c.clone())),
            DetectorConfig::Mset(c) => AnyDetector::Mset(Mset::new(c.clone())),
            DetectorConfig::Fusion(c) => AnyDetector::Fusion(Fusion::new(c)?),
            DetectorConfig::Autoencoder(c) => AnyDetector::Autoencoder(Autoencoder::new(c.clone())),
            DetectorConfig::KnnCad(c) => AnyDetector::KnnCad(KnnCad::new(c.clone())),
            DetectorConfig::Flatline(c) => AnyDetector::Flatline(Flatline::new(c.clone())),
            DetectorConfig::ControlChart(c) => AnyDetector::ControlChart(ControlChart::new(c.clone())),
        })
    }

    /// Rows the detector wants before it can score (0 for detectors that
    /// warm up while scoring).
    #[must_use]
    pub fn min_baseline_rows(&self) -> usize {
        match self {
            DetectorConfig::Pca(_) => Pca::MIN_ROWS,
            DetectorConfig::IsolationForest(_) => IsolationForest::MIN_ROWS,
            DetectorConfig::HalfSpaceTrees(_) => 1,
            DetectorConfig::Mset(_) => Mset::MIN_ROWS,
            DetectorConfig::Fusion(c) => c.members.iter().map(DetectorConfig::min_baseline_rows).max().unwrap_or(0),
            DetectorConfig::Autoencoder(_) => Autoencoder::MIN_ROWS,
            DetectorConfig::ControlChart(_) => ControlChart::MIN_ROWS,
            DetectorConfig::RobustZ(_)
            | DetectorConfig::Ewma(_)
            | DetectorConfig::KnnCad(_)
            | DetectorConfig::Flatline(_) => 0,
        }
    }
}

/// A built detector of any kind, with its learned state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // a few per asset; boxing would add a hop on the hot path
pub enum AnyDetector {
    /// See [`RobustZ`].
    RobustZ(RobustZ),
    /// See [`Ewma`].
    Ewma(Ewma),
    /// See [`Pca`].
    Pca(Pca),
    /// See [`IsolationForest`].
    IsolationForest(IsolationForest),
    /// See [`HalfSpaceTrees`].
    HalfSpaceTrees(HalfSpaceTrees),
    /// See [`Mset`].
    Mset(Mset),
    /// See [`Fusion`].
    Fusion(Fusion),
    /// See [`Autoencoder`].
    Autoencoder(Autoencoder),
    /// See [`KnnCad`].
    KnnCad(KnnCad),
    /// See [`Flatline`].
    Flatline(Flatline),
    /// See [`ControlChart`].
    ControlChart(ControlChart),
}

impl Detector for AnyDetector {
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        match self {
            AnyDetector::RobustZ(d) => d.learn(rows),
            AnyDetector::Ewma(d) => d.learn(rows),
            AnyDetector::Pca(d) => d.learn(rows),
            AnyDetector::IsolationForest(d) => d.learn(rows),
            AnyDetector::HalfSpaceTrees(d) => d.learn(rows),
            AnyDetector::Mset(d) => d.learn(rows),
            AnyDetector::Fusion(d) => d.learn(rows),
            AnyDetector::Autoencoder(d) => d.learn(rows),
            AnyDetector::KnnCad(d) => d.learn(rows),
            AnyDetector::Flatline(d) => d.learn(rows),
            AnyDetector::ControlChart(d) => d.learn(rows),
        }
    }

    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        match self {
            AnyDetector::RobustZ(d) => d.score(row),
            AnyDetector::Ewma(d) => d.score(row),
            AnyDetector::Pca(d) => d.score(row),
            AnyDetector::IsolationForest(d) => d.score(row),
            AnyDetector::HalfSpaceTrees(d) => d.score(row),
            AnyDetector::Mset(d) => d.score(row),
            AnyDetector::Fusion(d) => d.score(row),
            AnyDetector::Autoencoder(d) => d.score(row),
            AnyDetector::KnnCad(d) => d.score(row),
            AnyDetector::Flatline(d) => d.score(row),
            AnyDetector::ControlChart(d) => d.score(row),
        }
    }

    fn score_values(&mut self, rows: &[Vec<f64>]) -> Result<Vec<f64>, DetectorError> {
        match self {
            AnyDetector::Pca(d) => d.score_values(rows),
            AnyDetector::IsolationForest(d) => d.score_values(rows),
            other => values_row_by_row(rows, |row| other.score(row)),
        }
    }
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

#[cfg(test)]
mod conformance;
