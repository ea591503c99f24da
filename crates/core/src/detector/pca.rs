//! PCA monitor with Hotelling's T² and the squared prediction error (SPE, Q).
//!
//! The workhorse of multivariate process monitoring: the baseline's
//! correlation structure is summarised by a few principal components. T²
//! measures how far a frame is *inside* that model (an unusual combination
//! of normal movements); SPE measures how far it is *off* the model (a
//! correlation has broken). The score is `max(T²/T²_limit, SPE/SPE_limit)`,
//! so 1.0 sits on the limit, and each signal's contribution to the larger
//! ratio explains it.
//!
//! - **Limits** at confidence `alpha` come from theory (`limits = "theory"`:
//!   T² from the F distribution, SPE from Jackson–Mudholkar) or from data
//!   (`"empirical"`: the `alpha` quantile of each statistic on the baseline,
//!   scored out of fold by 5-fold cross-fitting over contiguous blocks, so
//!   the limit is not flattered by in-sample fit).
//! - **Dynamic PCA** (`lags = L`) models each frame together with its `L`
//!   predecessors, so broken dynamics (not only broken correlations) show;
//!   contributions of the lagged copies are added to their signal.
//! - **Smoothing** (`smoothing = w`) compares the mean of the last `w`
//!   statistics with limits set on equally smoothed baseline statistics:
//!   small persistent shifts accumulate, single noisy frames do not. It
//!   needs empirical limits.
//!
//! - **Differencing** (`difference = "trending"`) watches signals that
//!   trend through the baseline (thermal drift, fouling) by their change
//!   over `difference_lag` frames instead of their level, so a slow drift
//!   beyond the baseline's range is not a fault while a sudden step still
//!   is. A signal trends when the means of the baseline's first and last
//!   quarters differ by more than one baseline standard deviation (judged
//!   on the longest stretch of consecutive values, for a baseline stitched
//!   from several periods);
//!   `"all"` differences every signal. The choice is stored in the model.
//!
//! Signals constant in the baseline cannot be standardised and are left out
//! of the model (contribution 0); watch them with a univariate detector.
//! Missing values (and lags before the first frames) are replaced by the
//! baseline mean (no evidence either way) and have no residual of their own.

use super::{Detector, DetectorError, DetectorKind, Score, Statistic, check_row, check_rows, refuse_invalid};
use crate::kernels::pca::{BatchKernel, Projection, Statistics};
use crate::stats::{f_quantile, mean_std, moving_mean, normal_quantile, quantile};
use crate::threshold::ThresholdConfig;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Where the T² and SPE limits come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMethod {
    /// F distribution (T²) and Jackson–Mudholkar (SPE).
    #[default]
    Theory,
    /// Quantiles of out-of-fold baseline statistics.
    Empirical,
}

/// How [`Pca`] chooses its number of components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentRule {
    /// The fewest components explaining `variance` of the total.
    #[default]
    Variance,
    /// The count that best predicts each held-out value from the others
    /// (element-wise 5-fold cross-validation, Wold's PRESS).
    CrossValidation,
}

/// Which signals [`Pca`] watches by their change rather than their level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceRule {
    /// Every signal by its level.
    #[default]
    None,
    /// Signals that trend through the baseline.
    Trending,
    /// Every signal.
    All,
}

/// Settings of [`Pca`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcaConfig {
    /// Fixed number of components; when absent, chosen by `select`.
    #[serde(default)]
    pub components: Option<usize>,
    /// How the number of components is chosen when not fixed.
    #[serde(default)]
    pub select: ComponentRule,
    /// Keep the fewest components explaining at least this share of variance.
    #[serde(default = "default_variance")]
    pub variance: f64,
    /// Confidence of the T² and SPE limits, e.g. 0.99.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Where the limits come from.
    #[serde(default)]
    pub limits: LimitMethod,
    /// Previous frames modelled with each frame (dynamic PCA); 0 = static PCA.
    #[serde(default)]
    pub lags: usize,
    /// Statistics averaged over this many frames before comparing; 1 = none.
    #[serde(default = "default_smoothing")]
    pub smoothing: usize,
    /// Which signals are watched by their change over `difference_lag` frames.
    #[serde(default)]
    pub difference: DifferenceRule,
    /// Frames between the values a differenced signal is compared across.
    #[serde(default = "default_difference_lag")]
    pub difference_lag: usize,
}

fn default_variance() -> f64 {
    0.9
}
fn default_alpha() -> f64 {
    0.99
}
fn default_smoothing() -> usize {
    1
}
fn default_difference_lag() -> usize {
    10
}

impl Default for PcaConfig {
    fn default() -> Self {
        PcaConfig {
            components: None,
            select: ComponentRule::Variance,
            variance: default_variance(),
            alpha: default_alpha(),
            limits: LimitMethod::Theory,
            lags: 0,
            smoothing: 1,
            difference: DifferenceRule::None,
            difference_lag: default_difference_lag(),
        }
    }
}

impl PcaConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.variance > 0.0 && self.variance <= 1.0) {
            problems.push(format!("pca.variance must be in (0, 1], got {}", self.variance));
        }
        if !(self.alpha > 0.5 && self.alpha < 1.0) {
            problems.push(format!("pca.alpha must be in (0.5, 1), got {}", self.alpha));
        }
        if self.components == Some(0) {
            problems.push("pca.components must be at least 1".to_string());
        }
        if self.lags > 50 {
            problems.push(format!("pca.lags must be at most 50, got {}", self.lags));
        }
        if self.smoothing == 0 || self.smoothing > 10_000 {
            problems.push(format!("pca.smoothing must be between 1 and 10000, got {}", self.smoothing));
        }
        if self.difference_lag == 0 || self.difference_lag > 10_000 {
            problems.push(format!("pca.difference_lag must be between 1 and 10000, got {}", self.difference_lag));
        }
        if self.smoothing > 1 && self.limits == LimitMethod::Theory {
            problems
                .push("pca.smoothing > 1 needs limits = \"empirical\" (theory limits hold for single frames)".into());
        }
        problems
    }
}

/// What the PCA monitor learned from its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaModel {
    /// Width of the (lag-augmented) rows it models.
    pub width: usize,
    /// Indices of the modelled columns (not constant in the baseline).
    pub used: Vec<usize>,
    /// Baseline mean of each used column.
    pub mean: Vec<f64>,
    /// Baseline standard deviation of each used column.
    pub scale: Vec<f64>,
    /// Loadings, `used.len()` rows by `components` columns, row-major.
    pub loadings: Vec<f64>,
    /// Number of retained components.
    pub components: usize,
    /// All eigenvalues of the correlation matrix, largest first.
    pub eigenvalues: Vec<f64>,
    /// Baseline rows used.
    pub rows: usize,
    /// Hotelling T² limit at `alpha`.
    pub t2_limit: f64,
    /// SPE (Q) limit at `alpha`.
    pub spe_limit: f64,
    /// Signals (indices into a frame) modelled by their change over
    /// `difference_lag` frames rather than their level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differenced: Vec<usize>,
}

impl PcaModel {
    /// Fit mean, scale and loadings on complete rows; `components` picks the
    /// component count from the eigenvalues (largest first) and row count.
    fn fit(rows: &[&[f64]], components: impl Fn(&[f64], usize) -> usize) -> Result<PcaModel, DetectorError> {
        let n = rows.len();
        let width = rows.first().map_or(0, |r| r.len());
        let (mut used, mut mean, mut scale) = (Vec::new(), Vec::new(), Vec::new());
        for j in 0..width {
            let Some((m, s)) = mean_std(rows.iter().map(|r| r[j])) else { continue };
            if s > 1e-12 * m.abs().max(1.0) {
                used.push(j);
                mean.push(m);
                scale.push(s);
            }
        }
        let p = used.len();
        if p == 0 || n < Pca::MIN_ROWS {
            return Err(DetectorError::NotEnoughData { needed: Pca::MIN_ROWS, got: if p == 0 { 0 } else { n } });
        }
        let z = DMatrix::from_fn(n, p, |i, k| (rows[i][used[k]] - mean[k]) / scale[k]);
        let correlation = (z.transpose() * &z) / (n as f64 - 1.0);
        let eigen = correlation.symmetric_eigen();
        let mut order: Vec<usize> = (0..p).collect();
        order.sort_by(|a, b| eigen.eigenvalues[*b].total_cmp(&eigen.eigenvalues[*a]));
        let eigenvalues: Vec<f64> = order.iter().map(|&i| eigen.eigenvalues[i].max(0.0)).collect();
        let k = components(&eigenvalues, n).clamp(1, p.min(n - 2).max(1));
        let mut loadings = vec![0.0; p * k];
        for (c, &col) in order.iter().take(k).enumerate() {
            let vector = eigen.eigenvectors.column(col);
            // Deterministic sign: the largest loading is positive.
            let pivot = vector.iter().copied().fold(0.0_f64, |a, v| if v.abs() > a.abs() { v } else { a });
            let sign = if pivot < 0.0 { -1.0 } else { 1.0 };
            for j in 0..p {
                loadings[j * k + c] = sign * vector[j];
            }
        }
        Ok(PcaModel {
            width,
            used,
            mean,
            scale,
            loadings,
            components: k,
            eigenvalues,
            rows: n,
            t2_limit: f64::INFINITY,
            spe_limit: f64::INFINITY,
            differenced: Vec::new(),
        })
    }

    /// What the batch kernels read of the model.
    fn projection(&self) -> Projection<'_> {
        Projection {
            width: self.width,
            used: &self.used,
            mean: &self.mean,
            scale: &self.scale,
            loadings: &self.loadings,
            components: self.components,
            eigenvalues: &self.eigenvalues,
        }
    }

    /// T² and SPE of one row (`missing` values are imputed and have no residual).
    fn statistics(&self, row: &[f64], scratch: &mut Scratch) -> (f64, f64, bool) {
        let p = self.used.len();
        let k = self.components;
        let Scratch { loadings_t, z, t, back } = scratch;
        if loadings_t.len() != p * k {
            *loadings_t = (0..k).flat_map(|c| (0..p).map(move |j| self.loadings[j * k + c])).collect();
        }
        let mut missing = false;
        z.clear();
        z.extend(self.used.iter().zip(self.mean.iter().zip(&self.scale)).map(|(&j, (m, s))| {
            if row[j].is_finite() {
                (row[j] - m) / s
            } else {
                missing = true;
                0.0
            }
        }));
        // t = Pᵀz, as a sum of loading rows (vectorises).
        t.clear();
        t.resize(k, 0.0);
        for (loading_row, zj) in self.loadings.chunks_exact(k).zip(z.iter()) {
            for (ti, pji) in t.iter_mut().zip(loading_row) {
                *ti += pji * zj;
            }
        }
        let t2: f64 = t.iter().zip(&self.eigenvalues).map(|(ti, l)| ti * ti / l.max(1e-12)).sum();
        // P has orthonormal columns, so SPE = |z|² − |t|² unless a value is missing.
        let spe = if missing {
            back_project(loadings_t, p, back, &mut t.iter().copied());
            self.used
                .iter()
                .zip(z.iter().zip(back.iter()))
                .filter(|(j, _)| row[**j].is_finite())
                .map(|(_, (zj, b))| (zj - b) * (zj - b))
                .sum()
        } else {
            let z2: f64 = z.iter().map(|v| v * v).sum();
            let t2_norm: f64 = t.iter().map(|v| v * v).sum();
            (z2 - t2_norm).max(0.0)
        };
        (t2, spe, missing)
    }

    /// Per-column contributions to T² (`spe == false`) or SPE, for the row
    /// whose `statistics` were just computed into `scratch`.
    fn contributions(&self, row: &[f64], scratch: &mut Scratch, spe: bool, out: &mut [f64]) {
        let p = self.used.len();
        let Scratch { loadings_t, z, t, back } = scratch;
        if spe {
            back_project(loadings_t, p, back, &mut t.iter().copied());
            for ((&j, zj), b) in self.used.iter().zip(z.iter()).zip(back.iter()) {
                if row[j].is_finite() {
                    out[j] = (zj - b) * (zj - b);
                }
            }
        } else {
            // T² = Σⱼ zⱼ (P Λ⁻¹ t)ⱼ
            back_project(loadings_t, p, back, &mut t.iter().zip(&self.eigenvalues).map(|(ti, l)| ti / l.max(1e-12)));
            for ((&j, zj), b) in self.used.iter().zip(z.iter()).zip(back.iter()) {
                out[j] = (zj * b).max(0.0);
            }
        }
    }
}

/// `back = P · weights`, column by column (vectorises).
fn back_project(loadings_t: &[f64], p: usize, back: &mut Vec<f64>, weights: &mut dyn Iterator<Item = f64>) {
    back.clear();
    back.resize(p, 0.0);
    for (column, w) in loadings_t.chunks_exact(p).zip(weights) {
        for (b, pj) in back.iter_mut().zip(column) {
            *b += pj * w;
        }
    }
}

/// Reused buffers, so scoring a frame allocates only its contributions.
#[derive(Debug, Clone, Default)]
struct Scratch {
    /// Loadings transposed (components × columns), built on first use.
    loadings_t: Vec<f64>,
    z: Vec<f64>,
    t: Vec<f64>,
    back: Vec<f64>,
}

impl PartialEq for Scratch {
    fn eq(&self, _: &Self) -> bool {
        true // scratch space is not state
    }
}

/// PCA T²/SPE detector. A stored one is checked when it is read
/// (sizes that agree): a model file is outside input, and the kernels trust
/// every size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredPca")]
pub struct Pca {
    config: PcaConfig,
    model: Option<PcaModel>,
    /// The last `lags` raw rows, newest first.
    #[serde(default)]
    history: VecDeque<Vec<f64>>,
    /// The last `smoothing` (T², SPE) pairs.
    #[serde(default)]
    recent: VecDeque<(f64, f64)>,
    /// The last `difference_lag` frames as they came, newest first (only
    /// when some signal is differenced).
    #[serde(default)]
    raw_history: VecDeque<Vec<f64>>,
    #[serde(skip)]
    scratch: Scratch,
    #[serde(skip)]
    augmented: Vec<f64>,
}

/// A PCA detector as stored, before `Pca` accepts it.
#[derive(Deserialize)]
struct StoredPca {
    config: PcaConfig,
    model: Option<PcaModel>,
    #[serde(default)]
    history: VecDeque<Vec<f64>>,
    #[serde(default)]
    recent: VecDeque<(f64, f64)>,
    #[serde(default)]
    raw_history: VecDeque<Vec<f64>>,
}

/// The widest model a stored PCA may hold.
const MAX_STORED_WIDTH: usize = 1 << 20;

impl PcaModel {
    /// Why the model's sizes do not fit together (they always do when fitted).
    fn inconsistency(&self, lags: usize) -> Option<String> {
        let p = self.used.len();
        let k = self.components;
        if self.width == 0 || self.width > MAX_STORED_WIDTH || !self.width.is_multiple_of(lags + 1) {
            return Some(format!("width {} is not a whole number of frames of {} lags", self.width, lags));
        }
        if p == 0 || self.used.windows(2).any(|w| w[0] >= w[1]) || self.used.last().is_some_and(|&j| j >= self.width) {
            return Some("used columns are not increasing within the width".into());
        }
        if self.mean.len() != p || self.scale.len() != p || self.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Some("mean and scale do not match the used columns".into());
        }
        if k == 0 || k > p || self.loadings.len() != p * k || self.eigenvalues.len() < k || self.eigenvalues.len() > p {
            return Some(format!("{k} components do not match {p} columns, loadings and eigenvalues"));
        }
        let signals = self.width / (lags + 1);
        if self.differenced.iter().any(|&d| d >= signals) {
            return Some("a differenced signal is outside the frame".into());
        }
        None
    }
}

impl TryFrom<StoredPca> for Pca {
    type Error = String;

    fn try_from(stored: StoredPca) -> Result<Self, String> {
        refuse_invalid(stored.config.validate()).map_err(|e| e.to_string())?;
        let config = stored.config;
        if let Some(model) = &stored.model {
            if let Some(problem) = model.inconsistency(config.lags) {
                return Err(format!("stored PCA model: {problem}"));
            }
            let signals = model.width / (config.lags + 1);
            let frames_fit = |rows: &VecDeque<Vec<f64>>, most: usize| rows.len() <= most && rows.iter().all(|r| r.len() == signals);
            if !frames_fit(&stored.history, config.lags) || !frames_fit(&stored.raw_history, config.difference_lag) {
                return Err("stored PCA history does not match the model's frames".into());
            }
        } else if !stored.history.is_empty() || !stored.raw_history.is_empty() {
            return Err("stored PCA history without a model".into());
        }
        if stored.recent.len() > config.smoothing {
            return Err("stored PCA smoothing window is longer than its setting".into());
        }
        Ok(Pca {
            config,
            model: stored.model,
            history: stored.history,
            recent: stored.recent,
            raw_history: stored.raw_history,
            scratch: Scratch::default(),
            augmented: Vec::new(),
        })
    }
}

impl Pca {
    /// Fewest complete baseline rows accepted.
    pub const MIN_ROWS: usize = 10;
    /// Folds of the cross-fitting behind empirical limits.
    const FOLDS: usize = 5;

    /// An unfitted monitor.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: PcaConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(Pca {
            config,
            model: None,
            history: VecDeque::new(),
            recent: VecDeque::new(),
            raw_history: VecDeque::new(),
            scratch: Scratch::default(),
            augmented: Vec::new(),
        })
    }

    /// The fitted model, once `learn` succeeded.
    #[must_use]
    pub fn model(&self) -> Option<&PcaModel> {
        self.model.as_ref()
    }

    /// Its settings.
    #[must_use]
    pub fn config(&self) -> &PcaConfig {
        &self.config
    }

    /// `row` followed by its `lags` predecessors (NaN where there are none yet).
    fn augment_into(out: &mut Vec<f64>, row: &[f64], history: &VecDeque<Vec<f64>>, lags: usize) {
        out.clear();
        out.extend_from_slice(row);
        for l in 0..lags {
            match history.get(l) {
                Some(previous) => out.extend_from_slice(previous),
                None => out.extend(std::iter::repeat_n(f64::NAN, row.len())),
            }
        }
    }

    /// The component count with the least element-wise PRESS: each held-out
    /// value predicted from the row's other values through the loadings
    /// fitted without its fold. With `h = |p_j|²` and `t = Pᵀz`, the
    /// prediction of `z_j` is `(p_j·t − h z_j) / (1 − h)`, so every count up
    /// to the largest is scored in one pass.
    fn cross_validated_components(rows: &[&[f64]]) -> Result<usize, DetectorError> {
        let n = rows.len();
        let folds = Self::FOLDS.min(n / Self::MIN_ROWS).max(2);
        let width = rows[0].len();
        let largest = width.saturating_sub(1).clamp(1, 60);
        let mut press = vec![0.0; largest + 1];
        for f in 0..folds {
            let (start, end) = (f * n / folds, (f + 1) * n / folds);
            let train: Vec<&[f64]> = rows[..start].iter().chain(&rows[end..]).copied().collect();
            let model = PcaModel::fit(&train, |_, _| largest)?;
            let k_max = model.components;
            for row in &rows[start..end] {
                let z: Vec<f64> = model
                    .used
                    .iter()
                    .zip(model.mean.iter().zip(&model.scale))
                    .map(|(&j, (m, s))| (row[j] - m) / s)
                    .collect();
                let mut t = vec![0.0; k_max];
                for (loading_row, zj) in model.loadings.chunks_exact(k_max).zip(&z) {
                    for (ti, p) in t.iter_mut().zip(loading_row) {
                        *ti += p * zj;
                    }
                }
                for (loading_row, zj) in model.loadings.chunks_exact(k_max).zip(&z) {
                    let (mut dot, mut h) = (0.0, 0.0);
                    for (c, (p, tc)) in loading_row.iter().zip(&t).enumerate() {
                        dot += p * tc;
                        h += p * p;
                        let predicted = (dot - h * zj) / (1.0 - h).max(1e-6);
                        press[c + 1] += (zj - predicted) * (zj - predicted);
                    }
                    for slot in press.iter_mut().skip(k_max + 1) {
                        *slot = f64::INFINITY;
                    }
                }
            }
        }
        Ok((1..press.len()).min_by(|a, b| press[*a].total_cmp(&press[*b])).unwrap_or(1))
    }

    /// Smoothed T² and SPE of every baseline row, each scored by a model
    /// fitted without its (contiguous) fold.
    fn out_of_fold(rows: &[&[f64]], k: usize, smoothing: usize) -> Result<(Vec<f64>, Vec<f64>), DetectorError> {
        let n = rows.len();
        let folds = Self::FOLDS.min(n / Self::MIN_ROWS).max(2);
        let mut scratch = Scratch::default();
        let (mut t2s, mut spes) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for f in 0..folds {
            let (start, end) = (f * n / folds, (f + 1) * n / folds);
            let train: Vec<&[f64]> = rows[..start].iter().chain(&rows[end..]).copied().collect();
            let model = PcaModel::fit(&train, |_, _| k)?;
            scratch.loadings_t.clear();
            let (fold_t2, fold_spe): (Vec<f64>, Vec<f64>) = rows[start..end]
                .iter()
                .map(|r| {
                    let (t2, spe, _) = model.statistics(r, &mut scratch);
                    (t2, spe)
                })
                .unzip();
            t2s.extend(moving_mean(&fold_t2, smoothing));
            spes.extend(moving_mean(&fold_spe, smoothing));
        }
        Ok((t2s, spes))
    }

    /// One row's score for [`Pca::score_values`] (all missing: 0).
    fn value_of(&mut self, row: &[f64]) -> Result<f64, DetectorError> {
        match self.score(row) {
            Ok(s) => Ok(s.value),
            Err(DetectorError::NoData) => Ok(0.0),
            Err(e) => Err(e),
        }
    }

    /// Add a frame's statistics to the recent ones and return their means
    /// (the statistics themselves without smoothing).
    fn smooth(recent: &mut VecDeque<(f64, f64)>, smoothing: usize, t2: f64, spe: f64) -> (f64, f64) {
        if smoothing <= 1 {
            return (t2, spe);
        }
        if recent.len() == smoothing {
            recent.pop_front();
        }
        recent.push_back((t2, spe));
        let count = recent.len() as f64;
        let (a, b) = recent.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        (a / count, b / count)
    }
}

impl Detector for Pca {
    /// Fit on the complete baseline rows, then set the limits.
    ///
    /// # Errors
    /// See [`super::Detector::learn`]; also when fewer than
    /// [`Pca::MIN_ROWS`] rows have no missing value, or no signal varies.
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, Self::MIN_ROWS)?;
        let differenced = differenced_signals(rows, width, self.config.difference);
        let difference_lag = self.config.difference_lag;
        let changed: Vec<Vec<f64>>;
        let rows = if differenced.is_empty() {
            rows
        } else {
            changed = (0..rows.len())
                .map(|i| difference(&rows[i], i.checked_sub(difference_lag).map(|p| rows[p].as_slice()), &differenced))
                .collect();
            &changed
        };
        let lags = self.config.lags;
        let augmented: Vec<Vec<f64>> = (lags..rows.len())
            .map(|i| (0..=lags).flat_map(|l| rows[i - l].iter().copied()).collect::<Vec<f64>>())
            .filter(|r: &Vec<f64>| r.iter().all(|v| v.is_finite()))
            .collect();
        let complete: Vec<&[f64]> = augmented.iter().map(Vec::as_slice).collect();
        if complete.len() < Self::MIN_ROWS {
            let differencing = if self.config.difference == DifferenceRule::None { 0 } else { difference_lag };
            return Err(DetectorError::NotEnoughData {
                needed: Self::MIN_ROWS + lags + differencing,
                got: complete.len(),
            });
        }
        let config = &self.config;
        let cross_validated = match (config.components, config.select) {
            (None, ComponentRule::CrossValidation) => Some(Self::cross_validated_components(&complete)?),
            _ => None,
        };
        let by_variance = |eigenvalues: &[f64], _: usize| match config.components.or(cross_validated) {
            Some(k) => k,
            None => {
                let total: f64 = eigenvalues.iter().sum();
                let mut cumulative = 0.0;
                eigenvalues
                    .iter()
                    .position(|l| {
                        cumulative += l;
                        cumulative >= config.variance * total
                    })
                    .map_or(eigenvalues.len(), |i| i + 1)
            }
        };
        let mut model = PcaModel::fit(&complete, by_variance)?;
        let k = model.components;
        let alpha = config.alpha;
        match config.limits {
            LimitMethod::Theory => {
                model.t2_limit = t2_limit(alpha, k, model.rows);
                model.spe_limit = spe_limit(alpha, &model.eigenvalues[k..]);
            }
            LimitMethod::Empirical => {
                let (t2s, spes) = Self::out_of_fold(&complete, k, config.smoothing)?;
                model.t2_limit = quantile(&t2s, alpha).unwrap_or(f64::INFINITY).max(1e-12);
                model.spe_limit = quantile(&spes, alpha).unwrap_or(f64::INFINITY).max(1e-12);
            }
        }
        debug_assert_eq!(model.width, width * (lags + 1));
        model.differenced = differenced;
        self.model = Some(model);
        self.history.clear();
        self.recent.clear();
        self.raw_history.clear();
        Ok(())
    }

    /// Scores of many rows (see [`super::Detector::score_values`]). Static
    /// PCA takes one matrix product per block of complete rows, blocks cut
    /// over the cores; rows with gaps, lagged and differenced PCA go row by
    /// row.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score_values(&mut self, rows: &[Vec<f64>]) -> Result<Vec<f64>, DetectorError> {
        if self.config.lags > 0 || self.model.as_ref().is_some_and(|m| !m.differenced.is_empty()) {
            return rows.iter().map(|row| self.value_of(row)).collect();
        }
        let model = self.model.as_ref().ok_or(DetectorError::NotFitted)?;
        let kernel = BatchKernel::new(model.projection());
        let (t2_limit, spe_limit) = (model.t2_limit, model.spe_limit);
        let piece = 4 * BatchKernel::BLOCK;
        // Rows with a gap (NaN statistics) are scored row by row afterwards.
        let mut values = vec![0.0; rows.len()];
        if self.config.smoothing <= 1 {
            crate::parallel::fill_over_cores(&mut values, piece, |range, out| {
                kernel.run(&rows[range], &mut Statistics::Values { out, t2_limit, spe_limit });
            });
            for (value, row) in values.iter_mut().zip(rows) {
                if value.is_nan() {
                    *value = self.value_of(row)?;
                }
            }
            return Ok(values);
        }
        // Smoothing carries from row to row: statistics first, then in order.
        let mut statistics = vec![(0.0, 0.0); rows.len()];
        crate::parallel::fill_over_cores(&mut statistics, piece, |range, out| {
            kernel.run(&rows[range], &mut Statistics::Pairs(out));
        });
        for ((value, row), (t2, spe)) in values.iter_mut().zip(rows).zip(statistics) {
            *value = if t2.is_nan() {
                self.value_of(row)?
            } else {
                let (t2, spe) = Self::smooth(&mut self.recent, self.config.smoothing, t2, spe);
                (t2 / t2_limit).max(spe / spe_limit)
            };
        }
        Ok(values)
    }

    /// Score one row: (smoothed) T², SPE and the contributions of each signal.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        let model = self.model.as_ref().ok_or(DetectorError::NotFitted)?;
        let lags = self.config.lags;
        let width = model.width / (lags + 1);
        check_row(row, width)?;
        let changed;
        let row = if model.differenced.is_empty() {
            row
        } else {
            let difference_lag = self.config.difference_lag;
            changed = difference(row, self.raw_history.get(difference_lag - 1).map(Vec::as_slice), &model.differenced);
            if self.raw_history.len() == difference_lag {
                self.raw_history.pop_back();
            }
            self.raw_history.push_front(row.to_vec());
            changed.as_slice()
        };
        let mut augmented = std::mem::take(&mut self.augmented);
        Self::augment_into(&mut augmented, row, &self.history, lags);
        let (t2, spe, _) = model.statistics(&augmented, &mut self.scratch);
        if lags > 0 {
            if self.history.len() == lags {
                self.history.pop_back();
            }
            self.history.push_front(row.to_vec());
        }
        let (t2_mean, spe_mean) = Self::smooth(&mut self.recent, self.config.smoothing, t2, spe);
        let t2_ratio = t2_mean / model.t2_limit;
        let spe_ratio = spe_mean / model.spe_limit;
        let value = t2_ratio.max(spe_ratio);
        // Each statistic explained per signal (lagged copies add to their
        // signal), in units of its own limit; the score's contributions are
        // those of the statistic that sets it.
        let mut parts = vec![0.0; model.width];
        let mut explain = |spe: bool, limit: f64| {
            parts.fill(0.0);
            model.contributions(&augmented, &mut self.scratch, spe, &mut parts);
            (0..width).map(|j| (0..=lags).map(|l| parts[j + l * width]).sum::<f64>() / limit).collect::<Vec<f64>>()
        };
        let t2_parts = explain(false, model.t2_limit);
        let spe_parts = explain(true, model.spe_limit);
        let contributions = if spe_ratio > t2_ratio { spe_parts.clone() } else { t2_parts.clone() };
        let statistics = vec![
            Statistic { name: "t2".into(), value: t2_mean, limit: model.t2_limit, contributions: t2_parts },
            Statistic { name: "spe".into(), value: spe_mean, limit: model.spe_limit, contributions: spe_parts },
        ];
        self.augmented = augmented;
        Ok(Score { value, contributions, t2: Some(t2_mean), spe: Some(spe_mean), statistics })
    }
}

impl DetectorKind for Pca {
    type Config = PcaConfig;
    const NAME: &'static str = "pca";
    const SUMMARY: &'static str = "PCA with Hotelling T² and SPE (Q) limits; scores are ratios to the limits.";

    fn validate(config: &PcaConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &PcaConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(_config: &PcaConfig) -> usize {
        Self::MIN_ROWS
    }

    fn default_threshold(_config: &PcaConfig) -> ThresholdConfig {
        // Scores are ratios to the limit: 1.0 is the limit itself.
        ThresholdConfig::fixed(1.0)
    }

    fn examples() -> Vec<PcaConfig> {
        vec![
            PcaConfig::default(),
            PcaConfig { components: Some(1), alpha: 0.999, ..PcaConfig::default() },
            PcaConfig { select: ComponentRule::CrossValidation, ..PcaConfig::default() },
            PcaConfig { lags: 2, smoothing: 3, limits: LimitMethod::Empirical, ..PcaConfig::default() },
            PcaConfig { difference: DifferenceRule::All, difference_lag: 3, ..PcaConfig::default() },
            PcaConfig { smoothing: 4, limits: LimitMethod::Empirical, ..PcaConfig::default() },
        ]
    }
}

/// The signals [`DifferenceRule`] picks on the baseline `rows`.
fn differenced_signals(rows: &[Vec<f64>], width: usize, rule: DifferenceRule) -> Vec<usize> {
    match rule {
        DifferenceRule::None => Vec::new(),
        DifferenceRule::All => (0..width).collect(),
        DifferenceRule::Trending => (0..width).filter(|&j| trend_strength(rows, j) > 1.0).collect(),
    }
}

/// How far signal `j` trends through the baseline: the difference of the
/// means of the first and last quarters of its longest stretch of
/// consecutive values, in standard deviations of that stretch (a baseline
/// stitched from several periods is judged on its longest, not by the jumps
/// between periods). 0 when no stretch has 8 values or the signal is constant.
fn trend_strength(rows: &[Vec<f64>], j: usize) -> f64 {
    let Some(stretch) = rows.split(|r| !r[j].is_finite()).rev().max_by_key(|s| s.len()).filter(|s| s.len() >= 8) else {
        return 0.0;
    };
    let quarter = stretch.len() / 4;
    let values = |part: &[Vec<f64>]| part.iter().map(|r| r[j]).collect::<Vec<f64>>();
    match (
        mean_std(values(stretch).into_iter()),
        mean_std(values(&stretch[..quarter]).into_iter()),
        mean_std(values(&stretch[stretch.len() - quarter..]).into_iter()),
    ) {
        (Some((mean, spread)), Some((first, _)), Some((last, _))) if spread > 1e-12 * mean.abs().max(1.0) => {
            (last - first).abs() / spread
        }
        _ => 0.0,
    }
}

/// `row` with each `differenced` signal replaced by its change since `past`
/// (missing when there is no past frame yet).
fn difference(row: &[f64], past: Option<&[f64]>, differenced: &[usize]) -> Vec<f64> {
    let mut out = row.to_vec();
    for &j in differenced {
        out[j] = past.map_or(f64::NAN, |p| row[j] - p[j]);
    }
    out
}

/// Hotelling T² limit for `k` components fitted on `n` rows:
/// k(n−1)(n+1) / (n(n−k)) · F_alpha(k, n−k).
fn t2_limit(alpha: f64, k: usize, n: usize) -> f64 {
    let (kf, nf) = (k as f64, n as f64);
    let f = f_quantile(alpha, kf, (nf - kf).max(1.0)).unwrap_or(f64::INFINITY);
    (kf * (nf - 1.0) * (nf + 1.0) / (nf * (nf - kf).max(1.0)) * f).max(1e-12)
}

/// Jackson–Mudholkar SPE limit from the discarded eigenvalues.
fn spe_limit(alpha: f64, residual_eigenvalues: &[f64]) -> f64 {
    let theta = |power: i32| residual_eigenvalues.iter().map(|l| l.powi(power)).sum::<f64>();
    let (theta1, theta2, theta3) = (theta(1), theta(2), theta(3));
    if theta1 <= 1e-12 || theta2 <= 1e-24 {
        // The components explain everything: any residual is news.
        return 1e-9;
    }
    let h0 = 1.0 - 2.0 * theta1 * theta3 / (3.0 * theta2 * theta2);
    let c = normal_quantile(alpha);
    let inner = c * (2.0 * theta2 * h0 * h0).sqrt() / theta1 + 1.0 + theta2 * h0 * (h0 - 1.0) / (theta1 * theta1);
    if h0.abs() < 1e-6 || inner <= 0.0 {
        // Degenerate spectrum: fall back to the chi-square approximation.
        let g = theta2 / theta1;
        let h = theta1 * theta1 / theta2;
        return g * (h + c * (2.0 * h).sqrt()).max(1e-12);
    }
    theta1 * inner.powf(1.0 / h0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Correlated 3-signal data: s2 ≈ 2·s0, s1 independent, deterministic.
    pub(crate) fn correlated(n: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|i| {
                let a = ((i * 37 % 101) as f64 / 101.0 - 0.5) * 2.0;
                let b = ((i * 53 % 97) as f64 / 97.0 - 0.5) * 2.0;
                let noise = ((i * 29 % 89) as f64 / 89.0 - 0.5) * 0.05;
                vec![a, b, 2.0 * a + noise]
            })
            .collect()
    }

    #[test]
    fn a_stored_model_whose_sizes_disagree_is_refused_when_read() {
        let mut pca = Pca::new(PcaConfig { lags: 1, ..PcaConfig::default() }).unwrap();
        pca.learn(&correlated(300)).unwrap();
        pca.score(&[0.1, 0.2, 0.3]).unwrap();
        let good = serde_json::to_value(&pca).unwrap();
        let mut back: Pca = serde_json::from_value(good.clone()).unwrap();
        assert_eq!(back.score(&[0.2, 0.1, 0.3]).unwrap().value, pca.score(&[0.2, 0.1, 0.3]).unwrap().value);
        let cases: [(&str, serde_json::Value, &str); 7] = [
            ("/model/width", 7.into(), "whole number of frames"),
            ("/model/used/0", 99.into(), "used columns"),
            ("/model/components", 0.into(), "components"),
            ("/model/loadings", serde_json::json!([1.0]), "components"),
            ("/model/scale/0", 0.0.into(), "mean and scale"),
            ("/model/differenced", serde_json::json!([3]), "differenced"),
            ("/history/0", serde_json::json!([1.0]), "history"),
        ];
        for (pointer, value, expected) in cases {
            let mut bad = good.clone();
            match bad.pointer_mut(pointer) {
                Some(slot) => *slot = value,
                None => {
                    // A field left out when empty: add it.
                    let (parent, key) = pointer.rsplit_once('/').unwrap();
                    bad.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(key.into(), value);
                }
            }
            let error = serde_json::from_value::<Pca>(bad).unwrap_err().to_string();
            assert!(error.contains(expected), "{pointer}: {error}");
        }
    }

    #[test]
    fn broken_correlation_shows_in_spe_and_contributions() {
        let mut pca = Pca::new(PcaConfig { components: Some(2), ..PcaConfig::default() }).unwrap();
        pca.learn(&correlated(400)).unwrap();
        let normal = pca.score(&[0.5, 0.1, 1.0]).unwrap();
        assert!(normal.value < 1.0, "normal row under the limit: {normal:?}");
        let broken = pca.score(&[0.5, 0.1, -1.0]).unwrap();
        assert!(broken.value > 10.0, "broken correlation far over the limit: {broken:?}");
        assert!(
            broken.spe.unwrap() / pca.model().unwrap().spe_limit > broken.t2.unwrap() / pca.model().unwrap().t2_limit
        );
        let top = broken.contributions.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_ne!(top, 1, "the independent signal is not blamed");
    }

    #[test]
    fn both_statistics_explain_themselves() {
        let mut pca = Pca::new(PcaConfig { components: Some(2), ..PcaConfig::default() }).unwrap();
        pca.learn(&correlated(400)).unwrap();
        let top = |contributions: &[f64]| contributions.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        let named = |score: &Score, name: &str| score.statistics.iter().find(|s| s.name == name).unwrap().clone();
        // Far along the model (s0 and s2 together, correlation kept): T² out, SPE in.
        let along = pca.score(&[6.0, 0.0, 12.0]).unwrap();
        let (t2, spe) = (named(&along, "t2"), named(&along, "spe"));
        assert!(t2.value > t2.limit && spe.value < spe.limit, "{along:?}");
        assert_ne!(top(&t2.contributions), 1, "T² blames the moved signals: {t2:?}");
        let share: f64 = t2.contributions.iter().sum();
        assert!((share - t2.value / t2.limit).abs() < 0.05 * share, "T² shares add up to T²/limit: {t2:?}");
        assert_eq!(along.contributions, t2.contributions, "the score is explained by the statistic that sets it");
        // Across the model (s2 no longer 2·s0): SPE out, and it blames s0 and s2, not s1.
        let across = pca.score(&[0.2, 0.0, -0.4]).unwrap();
        let spe = named(&across, "spe");
        assert!(spe.value > spe.limit, "{across:?}");
        assert_ne!(top(&spe.contributions), 1, "{spe:?}");
        let share: f64 = spe.contributions.iter().sum();
        assert!((share - spe.value / spe.limit).abs() < 1e-9 * share.max(1.0), "SPE shares add up exactly: {spe:?}");
    }

    #[test]
    fn a_drifting_signal_is_watched_by_its_change() {
        // s0 and s1 move together; s2 (a temperature) drifts up through the
        // baseline and keeps drifting afterwards, as thermal drift does.
        let frame = |i: usize| {
            let a = ((i * 37 % 101) as f64 / 101.0 - 0.5) * 2.0;
            let noise = ((i * 29 % 89) as f64 / 89.0 - 0.5) * 0.2;
            vec![a, 2.0 * a + noise * 0.1, 20.0 + 0.01 * i as f64 + noise]
        };
        let baseline: Vec<Vec<f64>> = (0..400).map(frame).collect();
        let config = |difference| PcaConfig { components: Some(1), difference, ..PcaConfig::default() };
        let (mut level, mut change) =
            (Pca::new(config(DifferenceRule::None)).unwrap(), Pca::new(config(DifferenceRule::Trending)).unwrap());
        level.learn(&baseline).unwrap();
        change.learn(&baseline).unwrap();
        assert_eq!(change.model().unwrap().differenced, [2], "only the drifting signal is differenced");
        let later: Vec<Vec<f64>> = (400..1400).map(frame).collect();
        let peak =
            |pca: &mut Pca, rows: &[Vec<f64>]| rows.iter().map(|r| pca.score(r).unwrap().value).fold(0.0, f64::max);
        assert!(peak(&mut level, &later[500..]) > 10.0, "by level, drift past the baseline looks like a fault");
        assert!(peak(&mut change, &later) < 1.5, "by change, the same drift is normal");
        // A step of 3 °C is still caught, and blamed on the temperature.
        let mut stepped = frame(1400);
        stepped[2] += 3.0;
        let score = change.score(&stepped).unwrap();
        assert!(score.value > 3.0, "{score:?}");
        assert!(score.contributions[2] > score.contributions[0] + score.contributions[1], "{score:?}");
        // The choice travels with the model.
        let json = serde_json::to_string(&change).unwrap();
        let mut restored: Pca = serde_json::from_str(&json).unwrap();
        assert_eq!(restored.score(&frame(1401)).unwrap(), change.score(&frame(1401)).unwrap());
    }

    #[test]
    fn limits_match_reference_values() {
        // T² limit with k=2, n=400 at 99%: 2·399·401/(400·398)·F(0.99; 2, 398) = 9.32
        let limit = t2_limit(0.99, 2, 400);
        assert!((limit - 9.32).abs() < 0.05, "{limit}");
        // SPE with equal residual eigenvalues 1,1: chi²(2) 99% = 9.21, JM ≈ 9.2
        let q = spe_limit(0.99, &[1.0, 1.0]);
        assert!((q - 9.21).abs() < 0.5, "{q}");
    }

    #[test]
    fn components_by_variance() {
        let mut pca = Pca::new(PcaConfig { variance: 0.6, ..PcaConfig::default() }).unwrap();
        pca.learn(&correlated(400)).unwrap();
        assert_eq!(pca.model().unwrap().components, 1);
        let mut pca = Pca::new(PcaConfig { variance: 0.99, ..PcaConfig::default() }).unwrap();
        pca.learn(&correlated(400)).unwrap();
        assert_eq!(pca.model().unwrap().components, 2);
    }

    #[test]
    fn cross_validation_finds_the_true_rank() {
        // Six signals driven by two factors plus small noise: two components.
        let mut g = crate::stats::SeededNormal::new(21);
        let rows: Vec<Vec<f64>> = (0..400)
            .map(|_| {
                let (a, b) = (g.normal(), g.normal());
                vec![a, b, a + b, a - b, 2.0 * a, -b].into_iter().map(|v| v + 0.05 * g.normal()).collect()
            })
            .collect();
        let mut pca = Pca::new(PcaConfig { select: ComponentRule::CrossValidation, ..PcaConfig::default() }).unwrap();
        pca.learn(&rows).unwrap();
        assert_eq!(pca.model().unwrap().components, 2);
    }

    #[test]
    fn every_batch_kernel_gives_the_statistics_of_one_row() {
        use crate::kernels::pca::KernelChoice;
        // Every kernel this CPU has; 20 signals are too wide for the AVX2 rows and the
        // rows in lanes, 9 leave a short last tile, 16 fill two registers; a constant
        // column is left out of the model (the rows in lanes pick the others).
        for (width, constant) in [(3, None), (8, None), (9, None), (16, None), (20, None), (8, Some(2)), (13, Some(9))]
        {
            let mut g = crate::stats::SeededNormal::new(width as u64);
            let rows: Vec<Vec<f64>> = (0..1500)
                .map(|_| {
                    let common = g.normal();
                    let row = (0..width).map(|j| common * (j as f64 + 1.0) * 0.3 + g.normal());
                    row.enumerate().map(|(j, v)| if Some(j) == constant { 4.5 } else { v }).collect()
                })
                .collect();
            let mut pca = Pca::new(PcaConfig::default()).unwrap();
            pca.learn(&rows[..500]).unwrap();
            let mut rows = rows;
            if let Some(constant) = constant {
                // A gap in a column the model left out is no gap.
                rows.iter_mut().step_by(7).for_each(|row| row[constant] = f64::NAN);
            }
            let by_row: Vec<(f64, f64)> =
                rows.iter().map(|row| pca.score(row).map(|s| (s.t2.unwrap(), s.spe.unwrap())).unwrap()).collect();
            let kernel = BatchKernel::new(pca.model.as_ref().unwrap().projection());
            assert_eq!(kernel.all_kept(), constant.is_none());
            let (signals, padded) = kernel.size();
            for choice in KernelChoice::ALL.into_iter().filter(|c| c.fits(width, signals, padded)) {
                let mut batch = vec![(f64::NAN, f64::NAN); rows.len()];
                kernel.run_with(choice, &rows, &mut Statistics::Pairs(&mut batch));
                for (i, ((t2, spe), (batch_t2, batch_spe))) in by_row.iter().copied().zip(batch).enumerate() {
                    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
                    assert!(
                        close(t2, batch_t2) && close(spe, batch_spe),
                        "{width} signals, row {i}, {choice:?}: ({t2}, {spe}) vs ({batch_t2}, {batch_spe})"
                    );
                }
            }
        }
    }

    #[test]
    fn huge_infinite_and_missing_values_score_in_a_batch_as_by_row() {
        let mut pca = Pca::new(PcaConfig::default()).unwrap();
        pca.learn(&correlated(300)).unwrap();
        let mut rows = correlated(5000);
        // Finite but squaring to ∞, infinite, missing, all missing: each goes row by row.
        for (i, value) in [(10, 1e200), (2000, f64::INFINITY), (2001, f64::NEG_INFINITY), (4999, f64::NAN)] {
            rows[i][1] = value;
        }
        rows[3000] = vec![f64::NAN; 3];
        let batch = pca.score_values(&rows).unwrap();
        for (i, (row, value)) in rows.iter().zip(batch).enumerate() {
            let single = pca.value_of(row).unwrap();
            let same = single == value
                || (single.is_nan() && value.is_nan())
                || (single - value).abs() < 1e-9 * single.abs().max(1.0);
            assert!(same, "row {i}: {single} by row, {value} in the batch");
        }
    }

    #[test]
    fn constant_signal_is_left_out() {
        let rows: Vec<Vec<f64>> = correlated(100)
            .into_iter()
            .map(|mut r| {
                r.push(7.0);
                r
            })
            .collect();
        let mut pca = Pca::new(PcaConfig::default()).unwrap();
        pca.learn(&rows).unwrap();
        assert_eq!(pca.model().unwrap().used, vec![0, 1, 2]);
        let s = pca.score(&[0.1, 0.1, 0.2, 9.0]).unwrap();
        assert_eq!(s.contributions[3], 0.0);
    }
}
