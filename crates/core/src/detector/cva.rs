//! Canonical variate analysis (CVA): a monitor for processes whose control
//! loops hide a fault from every single frame.
//!
//! A controlled process pushes a disturbance back to its set point: after a
//! few minutes no frame looks unusual (PCA's T² and SPE stay quiet) while
//! the way the recent past leads to the next frames has changed. CVA
//! (Larimore 1990; for monitoring Russell, Chiang and Braatz 2000) models
//! exactly that link. On the baseline it pairs each *past* vector (the
//! frame and its `past − 1` predecessors, standardised) with the *future*
//! one (the next `future` frames) and finds the canonical variates: the
//! directions of the past, whitened, ordered by how strongly they predict
//! the future. The first `states` are the process's memory (its state);
//! the rest are what the past holds that does not carry forward.
//!
//! Each frame (with its predecessors) is projected on all variates, which
//! have unit variance on the baseline:
//! - **T² of the states** (`t2`): an unusual state, a disturbance the
//!   dynamics carry;
//! - **T² of the residual variates** (`tr2`): the past no longer relates as
//!   it did (a controller now compensates something, a loop is sluggish, a
//!   sensor lost its dynamics). It catches what PCA misses on the Tennessee
//!   Eastman process (BENCHMARKS.md).
//!
//! The score is the larger ratio of a statistic to its limit (1.0 on the
//! limit); each signal's contribution is its share of that statistic, its
//! lagged copies included. Limits are the `alpha` quantiles of baseline
//! statistics each scored by a model fitted without its (contiguous) fifth
//! of the baseline, averaged over `smoothing` frames as scoring does, so a
//! limit is not flattered by in-sample fit.
//!
//! Whitening divides by the spread of every direction of the past: a
//! direction with almost no variance on the baseline would turn noise into
//! alarms, so `ridge` (a share of the mean eigenvalue) is added to every
//! eigenvalue first. Signals constant in the baseline are left out (watch
//! them with a univariate detector); missing values, and predecessors
//! before the first frames, are taken at the baseline mean.

use super::{Detector, DetectorError, DetectorKind, Score, Statistic, check_row, check_rows, refuse_invalid};
use crate::stats::{mean_std, moving_mean, quantile};
use crate::threshold::ThresholdConfig;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Settings of [`Cva`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CvaConfig {
    /// Frames in the past vector: the frame and `past − 1` predecessors.
    #[serde(default = "default_horizon")]
    pub past: usize,
    /// Frames in the future vector the past is asked to predict (fitting only).
    #[serde(default = "default_horizon")]
    pub future: usize,
    /// Canonical variates kept as states; when absent, one per modelled signal.
    #[serde(default)]
    pub states: Option<usize>,
    /// Added to every eigenvalue of the past's covariance before whitening,
    /// as a share of their mean.
    #[serde(default = "default_ridge")]
    pub ridge: f64,
    /// Confidence of the limits, e.g. 0.99.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Statistics averaged over this many frames before comparing; 1 = none.
    #[serde(default = "default_smoothing")]
    pub smoothing: usize,
}

fn default_horizon() -> usize {
    2
}
fn default_ridge() -> f64 {
    0.01
}
fn default_alpha() -> f64 {
    0.99
}
fn default_smoothing() -> usize {
    3
}

impl Default for CvaConfig {
    fn default() -> Self {
        CvaConfig {
            past: default_horizon(),
            future: default_horizon(),
            states: None,
            ridge: default_ridge(),
            alpha: default_alpha(),
            smoothing: default_smoothing(),
        }
    }
}

impl CvaConfig {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, value) in [("past", self.past), ("future", self.future)] {
            if value == 0 || value > 50 {
                problems.push(format!("cva.{name} must be between 1 and 50, got {value}"));
            }
        }
        if self.states == Some(0) {
            problems.push("cva.states must be at least 1".to_string());
        }
        if !(self.ridge >= 0.0 && self.ridge <= 1.0) {
            problems.push(format!("cva.ridge must be in [0, 1], got {}", self.ridge));
        }
        if !(self.alpha > 0.5 && self.alpha < 1.0) {
            problems.push(format!("cva.alpha must be in (0.5, 1), got {}", self.alpha));
        }
        if self.smoothing == 0 || self.smoothing > 10_000 {
            problems.push(format!("cva.smoothing must be between 1 and 10000, got {}", self.smoothing));
        }
        problems
    }
}

/// What CVA learned from its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvaModel {
    /// Width of the frames it scores.
    pub signals: usize,
    /// Indices of the modelled signals (not constant in the baseline).
    pub used: Vec<usize>,
    /// Baseline mean of each used signal.
    pub mean: Vec<f64>,
    /// Baseline standard deviation of each used signal.
    pub scale: Vec<f64>,
    /// Canonical variates as rows over the past vector (`used.len() × past`
    /// elements: the frame's used signals, then its predecessor's, …),
    /// strongest first; square, row-major.
    pub transform: Vec<f64>,
    /// Canonical correlation of each variate with the future, strongest first.
    pub correlations: Vec<f64>,
    /// Variates kept as states.
    pub states: usize,
    /// Baseline windows (past and future complete) it was fitted on.
    pub rows: usize,
    /// Limit of the states' T².
    pub states_limit: f64,
    /// Limit of the residual variates' T².
    pub residual_limit: f64,
}

/// The widest past vector a stored model may hold.
const MAX_STORED_WIDTH: usize = 1 << 14;

/// Windows whose past and future vectors are held at once while the
/// covariances are summed (4,096 × 52 signals × 6 frames: 10 MB).
const COVARIANCE_BLOCK: usize = 4096;

impl CvaModel {
    /// Elements of the past vector.
    fn width(&self) -> usize {
        self.correlations.len()
    }

    /// Fit on the windows that lie inside one of `segments` (consecutive
    /// frames) with every value present; at least `needed` of them.
    fn fit(segments: &[&[Vec<f64>]], config: &CvaConfig, needed: usize) -> Result<CvaModel, DetectorError> {
        let (past, future) = (config.past, config.future);
        let signals = segments.iter().find_map(|s| s.first()).map_or(0, Vec::len);
        // Window starts (segment, index of the newest past frame) with every value present.
        let mut windows: Vec<(usize, usize)> = Vec::new();
        for (s, frames) in segments.iter().enumerate() {
            let complete: Vec<bool> = frames.iter().map(|r| r.iter().all(|v| v.is_finite())).collect();
            let mut run = 0usize; // complete frames ending here
            let mut run_at = Vec::with_capacity(frames.len());
            for c in &complete {
                run = if *c { run + 1 } else { 0 };
                run_at.push(run);
            }
            for t in (past - 1)..frames.len().saturating_sub(future) {
                if run_at[t + future] >= past + future {
                    windows.push((s, t));
                }
            }
        }
        if windows.len() < needed {
            return Err(DetectorError::NotEnoughData { needed: needed + past + future - 1, got: windows.len() });
        }
        // Mean and spread over the frames the windows cover (each once).
        let mut covered: Vec<&[f64]> = Vec::new();
        for (s, frames) in segments.iter().enumerate() {
            let mut mark = vec![false; frames.len()];
            for &(_, t) in windows.iter().filter(|w| w.0 == s) {
                mark[t + 1 - past..=t + future].iter_mut().for_each(|m| *m = true);
            }
            covered.extend(frames.iter().zip(mark).filter(|(_, m)| *m).map(|(r, _)| r.as_slice()));
        }
        let (mut used, mut mean, mut scale) = (Vec::new(), Vec::new(), Vec::new());
        for j in 0..signals {
            let Some((m, s)) = mean_std(covered.iter().map(|r| r[j])) else { continue };
            if s > 1e-12 * m.abs().max(1.0) {
                used.push(j);
                mean.push(m);
                scale.push(s);
            }
        }
        let m = used.len();
        if m == 0 {
            return Err(DetectorError::NotEnoughData { needed: needed + past + future - 1, got: 0 });
        }
        let (q, r, n) = (m * past, m * future, windows.len());
        let z = |s: usize, t: usize, k: usize| (segments[s][t][used[k]] - mean[k]) / scale[k];
        // Covariances summed over blocks of windows: memory stays at one
        // block's past and future vectors however long the baseline.
        let (mut spp, mut sff, mut spf) = (DMatrix::zeros(q, q), DMatrix::zeros(r, r), DMatrix::zeros(q, r));
        for block in windows.chunks(COVARIANCE_BLOCK) {
            let p_block = DMatrix::from_fn(block.len(), q, |i, e| {
                let (s, t) = block[i];
                z(s, t - e / m, e % m)
            });
            let f_block = DMatrix::from_fn(block.len(), r, |i, e| {
                let (s, t) = block[i];
                z(s, t + 1 + e / m, e % m)
            });
            spp += p_block.tr_mul(&p_block);
            sff += f_block.tr_mul(&f_block);
            spf += p_block.tr_mul(&f_block);
        }
        let denominator = (n as f64 - 1.0).max(1.0);
        let (spp, sff, spf) = (spp / denominator, sff / denominator, spf / denominator);
        let whiten_past = inverse_square_root(spp, config.ridge);
        let whiten_future = inverse_square_root(sff, config.ridge);
        let h = &whiten_past * spf * whiten_future;
        // Left singular vectors of H: eigenvectors of H Hᵀ, strongest first.
        let eigen = (&h * h.transpose()).symmetric_eigen();
        let mut order: Vec<usize> = (0..q).collect();
        order.sort_by(|a, b| eigen.eigenvalues[*b].total_cmp(&eigen.eigenvalues[*a]));
        let correlations: Vec<f64> = order.iter().map(|&i| eigen.eigenvalues[i].max(0.0).sqrt().min(1.0)).collect();
        let mut transform = vec![0.0; q * q];
        for (row, &i) in order.iter().enumerate() {
            let variate = eigen.eigenvectors.column(i).transpose() * &whiten_past;
            transform[row * q..(row + 1) * q].iter_mut().zip(variate.iter()).for_each(|(t, v)| *t = *v);
        }
        let states = config.states.unwrap_or(m).min(q);
        Ok(CvaModel {
            signals,
            used,
            mean,
            scale,
            transform,
            correlations,
            states,
            rows: n,
            states_limit: f64::INFINITY,
            residual_limit: f64::INFINITY,
        })
    }

    /// The standardised past vector of `row` after `history` (newest
    /// first) into `z`: missing values and absent predecessors at 0.
    fn past_vector(&self, row: &[f64], history: &VecDeque<Vec<f64>>, z: &mut Vec<f64>) {
        let past = self.width() / self.used.len();
        z.clear();
        for l in 0..past {
            let frame = if l == 0 { Some(row) } else { history.get(l - 1).map(Vec::as_slice) };
            z.extend(self.used.iter().zip(self.mean.iter().zip(&self.scale)).map(|(&j, (m, s))| match frame {
                Some(f) if f[j].is_finite() => (f[j] - m) / s,
                _ => 0.0,
            }));
        }
    }

    /// Canonical variates of a past vector into `c`; the states' and the
    /// residual variates' T². `transposed` holds the transform by columns
    /// (built on first use), so `c` is a sum of columns (vectorises).
    fn statistics(&self, z: &[f64], c: &mut Vec<f64>, transposed: &mut Vec<f64>) -> (f64, f64) {
        let q = z.len();
        if transposed.len() != q * q {
            transposed.clear();
            transposed.extend((0..q).flat_map(|e| (0..q).map(move |i| self.transform[i * q + e])));
        }
        c.clear();
        c.resize(q, 0.0);
        for (column, ze) in transposed.chunks_exact(q).zip(z) {
            for (ci, j) in c.iter_mut().zip(column) {
                *ci += j * ze;
            }
        }
        let states: f64 = c[..self.states].iter().map(|v| v * v).sum();
        let residual: f64 = c[self.states..].iter().map(|v| v * v).sum();
        (states, residual)
    }

    /// Each signal's share of one statistic (`residual` or the states'),
    /// divided by `limit`: element `e` of the past vector holds
    /// `z_e Σ_i c_i J_ie` over the statistic's variates (these sum to the
    /// statistic); negative shares count 0, lagged copies add to their signal.
    fn contributions(&self, z: &[f64], c: &[f64], residual: bool, limit: f64) -> Vec<f64> {
        let q = z.len();
        let variates = if residual { self.states..q } else { 0..self.states };
        let mut back = vec![0.0; q];
        for i in variates {
            for (b, j) in back.iter_mut().zip(&self.transform[i * q..(i + 1) * q]) {
                *b += c[i] * j;
            }
        }
        let m = self.used.len();
        let mut out = vec![0.0; self.signals];
        for (e, (zv, b)) in z.iter().zip(&back).enumerate() {
            out[self.used[e % m]] += (zv * b).max(0.0) / limit;
        }
        out
    }

    /// Why the model's sizes do not fit together (they always do when fitted).
    fn inconsistency(&self, past: usize) -> Option<String> {
        let m = self.used.len();
        if self.signals == 0 || self.signals > MAX_STORED_WIDTH {
            return Some(format!("{} signals is out of range", self.signals));
        }
        if m == 0 || self.used.windows(2).any(|w| w[0] >= w[1]) || self.used.last().is_some_and(|&j| j >= self.signals) {
            return Some("used signals are not increasing within the frame".into());
        }
        if self.mean.len() != m || self.scale.len() != m || self.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Some("mean and scale do not match the used signals".into());
        }
        let q = m * past;
        if q > MAX_STORED_WIDTH || self.correlations.len() != q || self.transform.len() != q * q {
            return Some(format!("variates do not match {m} signals over {past} frames"));
        }
        if self.states == 0 || self.states > q {
            return Some(format!("{} states out of {q} variates", self.states));
        }
        if self.states_limit.is_nan() || self.residual_limit.is_nan() || self.states_limit <= 0.0 || self.residual_limit <= 0.0
        {
            return Some("limits are not positive".into());
        }
        None
    }
}

/// `(S + ridge·mean eigenvalue·I)^(-1/2)` of a symmetric positive
/// semi-definite matrix.
fn inverse_square_root(s: DMatrix<f64>, ridge: f64) -> DMatrix<f64> {
    let size = s.nrows();
    let eigen = s.symmetric_eigen();
    let mean = eigen.eigenvalues.iter().map(|l| l.max(0.0)).sum::<f64>() / size.max(1) as f64;
    // A floor keeps a ridge of 0 finite on a singular covariance.
    let lift = ridge * mean + 1e-9 * mean.max(1e-300);
    let scaled = DMatrix::from_fn(size, size, |i, k| {
        eigen.eigenvectors[(i, k)] / (eigen.eigenvalues[k].max(0.0) + lift).sqrt()
    });
    &scaled * eigen.eigenvectors.transpose()
}

/// CVA detector. A stored one is checked when it is read (sizes that
/// agree): a model file is outside input, and scoring trusts every size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredCva")]
pub struct Cva {
    config: CvaConfig,
    model: Option<CvaModel>,
    /// The last `past − 1` frames, newest first.
    #[serde(default)]
    history: VecDeque<Vec<f64>>,
    /// The last `smoothing` (states, residual) T² pairs.
    #[serde(default)]
    recent: VecDeque<(f64, f64)>,
    #[serde(skip)]
    scratch: Scratch,
}

/// Reused buffers: the past vector, its variates, the transform by columns.
#[derive(Debug, Clone, Default)]
struct Scratch {
    z: Vec<f64>,
    c: Vec<f64>,
    transposed: Vec<f64>,
}

impl PartialEq for Scratch {
    fn eq(&self, _: &Self) -> bool {
        true // scratch space is not state
    }
}

/// A CVA detector as stored, before `Cva` accepts it.
#[derive(Deserialize)]
struct StoredCva {
    config: CvaConfig,
    model: Option<CvaModel>,
    #[serde(default)]
    history: VecDeque<Vec<f64>>,
    #[serde(default)]
    recent: VecDeque<(f64, f64)>,
}

impl TryFrom<StoredCva> for Cva {
    type Error = String;

    fn try_from(stored: StoredCva) -> Result<Self, String> {
        refuse_invalid(stored.config.validate()).map_err(|e| e.to_string())?;
        let config = stored.config;
        match &stored.model {
            Some(model) => {
                if let Some(problem) = model.inconsistency(config.past) {
                    return Err(format!("stored CVA model: {problem}"));
                }
                if stored.history.len() >= config.past || stored.history.iter().any(|r| r.len() != model.signals) {
                    return Err("stored CVA history does not match the model's frames".into());
                }
            }
            None if !stored.history.is_empty() => return Err("stored CVA history without a model".into()),
            None => {}
        }
        if stored.recent.len() > config.smoothing {
            return Err("stored CVA smoothing window is longer than its setting".into());
        }
        Ok(Cva { config, model: stored.model, history: stored.history, recent: stored.recent, scratch: Default::default() })
    }
}

impl Cva {
    /// Fewest baseline windows (a frame with its predecessors and
    /// successors, every value present) accepted.
    pub const MIN_WINDOWS: usize = 20;
    /// Folds of the cross-fitting behind the limits.
    const FOLDS: usize = 5;

    /// An unfitted monitor.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: CvaConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(Cva { config, model: None, history: VecDeque::new(), recent: VecDeque::new(), scratch: Default::default() })
    }

    /// The fitted model, once `learn` succeeded.
    #[must_use]
    pub fn model(&self) -> Option<&CvaModel> {
        self.model.as_ref()
    }

    /// Smoothed statistics of every baseline frame, each scored from the
    /// start of its fold (no predecessors) by a model fitted without it.
    fn out_of_fold(rows: &[Vec<f64>], config: &CvaConfig) -> Result<(Vec<f64>, Vec<f64>), DetectorError> {
        let n = rows.len();
        let (mut states, mut residual) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for f in 0..Self::FOLDS {
            let (start, end) = (f * n / Self::FOLDS, (f + 1) * n / Self::FOLDS);
            let model = CvaModel::fit(&[&rows[..start], &rows[end..]], config, 2)?;
            let mut history = VecDeque::new();
            let mut scratch = Scratch::default();
            let (mut fold_states, mut fold_residual) = (Vec::new(), Vec::new());
            for row in &rows[start..end] {
                if row.iter().any(|v| v.is_finite()) {
                    model.past_vector(row, &history, &mut scratch.z);
                    let (s, r) = model.statistics(&scratch.z, &mut scratch.c, &mut scratch.transposed);
                    fold_states.push(s);
                    fold_residual.push(r);
                }
                remember(&mut history, row, config.past);
            }
            states.extend(moving_mean(&fold_states, config.smoothing));
            residual.extend(moving_mean(&fold_residual, config.smoothing));
        }
        Ok((states, residual))
    }
}

/// Keep `row` as the newest of the last `past − 1` frames.
fn remember(history: &mut VecDeque<Vec<f64>>, row: &[f64], past: usize) {
    if past <= 1 {
        return;
    }
    if history.len() == past - 1 {
        history.pop_back();
    }
    history.push_front(row.to_vec());
}

impl Detector for Cva {
    /// Fit on the baseline's complete windows, then set the limits.
    ///
    /// # Errors
    /// See [`super::Detector::learn`]; also when fewer than
    /// [`Cva::MIN_WINDOWS`] windows of `past + future` consecutive frames
    /// have every value, or no signal varies.
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        check_rows(rows, Self::MIN_WINDOWS + self.config.past + self.config.future - 1)?;
        let mut model = CvaModel::fit(&[rows], &self.config, Self::MIN_WINDOWS)?;
        let (states, residual) = Self::out_of_fold(rows, &self.config)?;
        let alpha = self.config.alpha;
        model.states_limit = quantile(&states, alpha).unwrap_or(f64::INFINITY).max(1e-12);
        model.residual_limit = quantile(&residual, alpha).unwrap_or(f64::INFINITY).max(1e-12);
        self.model = Some(model);
        self.history.clear();
        self.recent.clear();
        Ok(())
    }

    /// Score one frame: the states' and the residual variates' (smoothed)
    /// T², and each signal's share of them.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        let (states, residual) = self.advance(row)?;
        let model = self.model.as_ref().ok_or(DetectorError::NotFitted)?;
        let (states_ratio, residual_ratio) = (states / model.states_limit, residual / model.residual_limit);
        let Scratch { z, c, .. } = &self.scratch;
        let states_parts = model.contributions(z, c, false, model.states_limit);
        let residual_parts = model.contributions(z, c, true, model.residual_limit);
        let contributions = if residual_ratio > states_ratio { residual_parts.clone() } else { states_parts.clone() };
        let statistics = vec![
            Statistic { name: "t2".into(), value: states, limit: model.states_limit, contributions: states_parts },
            Statistic { name: "tr2".into(), value: residual, limit: model.residual_limit, contributions: residual_parts },
        ];
        Ok(Score {
            value: states_ratio.max(residual_ratio),
            contributions,
            t2: Some(states),
            spe: None,
            statistics,
        })
    }

    /// Scores of many rows without contributions (the same values as
    /// [`score`](Detector::score) row by row).
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score_values(&mut self, rows: &[Vec<f64>]) -> Result<Vec<f64>, DetectorError> {
        rows.iter()
            .map(|row| match self.advance(row) {
                Ok((states, residual)) => {
                    let model = self.model.as_ref().ok_or(DetectorError::NotFitted)?;
                    Ok((states / model.states_limit).max(residual / model.residual_limit))
                }
                Err(DetectorError::NoData) => Ok(0.0),
                Err(e) => Err(e),
            })
            .collect()
    }
}

impl Cva {
    /// Take one frame: its past vector and variates into the scratch
    /// space, the frame into the history, its statistics into the
    /// smoothing window; the smoothed (states, residual) T².
    fn advance(&mut self, row: &[f64]) -> Result<(f64, f64), DetectorError> {
        let model = self.model.as_ref().ok_or(DetectorError::NotFitted)?;
        check_row(row, model.signals)?;
        let Scratch { z, c, transposed } = &mut self.scratch;
        model.past_vector(row, &self.history, z);
        let (states, residual) = model.statistics(z, c, transposed);
        remember(&mut self.history, row, self.config.past);
        if self.recent.len() == self.config.smoothing {
            self.recent.pop_front();
        }
        self.recent.push_back((states, residual));
        let count = self.recent.len() as f64;
        Ok(self.recent.iter().fold((0.0, 0.0), |(a, b), (s, r)| (a + s / count, b + r / count)))
    }
}

impl DetectorKind for Cva {
    type Config = CvaConfig;
    const NAME: &'static str = "cva";
    const SUMMARY: &'static str =
        "Canonical variate analysis: T² of the states and of the residual variates of past frames; scores are ratios to the limits.";

    fn validate(config: &CvaConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &CvaConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(config: &CvaConfig) -> usize {
        Self::MIN_WINDOWS + config.past + config.future - 1
    }

    fn default_threshold(_config: &CvaConfig) -> ThresholdConfig {
        // Scores are ratios to the limit: 1.0 is the limit itself.
        ThresholdConfig::fixed(1.0)
    }

    fn examples() -> Vec<CvaConfig> {
        vec![
            CvaConfig::default(),
            CvaConfig { past: 1, future: 1, states: Some(2), smoothing: 1, ..CvaConfig::default() },
            CvaConfig { past: 4, future: 3, ridge: 0.0, alpha: 0.999, ..CvaConfig::default() },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SeededNormal;

    /// A first-order process: x_t = A x_{t-1} + noise, observed through
    /// three signals (the third mixes the first two).
    fn process(n: usize, seed: u64, gain: f64) -> Vec<Vec<f64>> {
        let mut g = SeededNormal::new(seed);
        let (mut a, mut b) = (0.0, 0.0);
        (0..n)
            .map(|_| {
                a = gain * a + g.normal();
                b = 0.5 * b + 0.3 * a + g.normal();
                vec![a + 0.1 * g.normal(), 10.0 + b + 0.1 * g.normal(), a - b + 0.1 * g.normal()]
            })
            .collect()
    }

    fn fitted(config: CvaConfig, rows: &[Vec<f64>]) -> Cva {
        let mut cva = Cva::new(config).unwrap();
        cva.learn(rows).unwrap();
        cva
    }

    fn alarm_rate(cva: &mut Cva, rows: &[Vec<f64>]) -> f64 {
        rows.iter().filter(|r| cva.score(r).unwrap().value > 1.0).count() as f64 / rows.len() as f64
    }

    #[test]
    fn variates_are_whitened_and_ordered() {
        // More windows than one covariance block: the blocks' sums make the whole.
        let rows = process(2 * COVARIANCE_BLOCK + 1_000, 1, 0.9);
        let cva = fitted(CvaConfig { ridge: 0.0, ..CvaConfig::default() }, &rows);
        let model = cva.model().unwrap();
        assert!(model.correlations.windows(2).all(|w| w[0] >= w[1] - 1e-12), "{:?}", model.correlations);
        assert!(model.correlations[0] > 0.8, "a persistent state predicts the future: {:?}", model.correlations);
        // Each variate has unit variance on the baseline.
        let mut history = VecDeque::new();
        let mut scratch = Scratch::default();
        let mut sums = vec![0.0; model.width()];
        for row in &rows {
            model.past_vector(row, &history, &mut scratch.z);
            model.statistics(&scratch.z, &mut scratch.c, &mut scratch.transposed);
            sums.iter_mut().zip(&scratch.c).for_each(|(s, v)| *s += v * v);
            remember(&mut history, row, 2);
        }
        for s in sums {
            assert!((s / rows.len() as f64 - 1.0).abs() < 0.05, "{s}");
        }
    }

    #[test]
    fn normal_data_stays_near_the_confidence_and_broken_dynamics_alarm() {
        let train = process(3_000, 2, 0.9);
        let mut cva = fitted(CvaConfig::default(), &train);
        let normal = alarm_rate(&mut cva, &process(3_000, 3, 0.9));
        assert!(normal < 0.03, "false alarms {normal}");
        // Same signals, same ranges roughly, but the state forgets quickly:
        // no single value is unusual, the dynamics are.
        let mut changed = process(3_000, 4, 0.0);
        for row in &mut changed {
            row[0] *= 2.2;
        }
        cva.history.clear();
        cva.recent.clear();
        let detected = alarm_rate(&mut cva, &changed);
        assert!(detected > 0.5, "broken dynamics detected {detected}");
    }

    #[test]
    fn a_stored_model_whose_sizes_disagree_is_refused_when_read() {
        let cva = fitted(CvaConfig::default(), &process(200, 5, 0.9));
        let json = serde_json::to_value(&cva).unwrap();
        let cases: [(&str, serde_json::Value); 5] = [
            ("/model/transform", serde_json::json!([1.0, 2.0])),
            ("/model/states", serde_json::json!(0)),
            ("/model/used", serde_json::json!([2, 1, 0])),
            ("/model/scale", serde_json::json!([1.0, 0.0, 1.0])),
            ("/history", serde_json::json!([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])),
        ];
        for (pointer, value) in cases {
            let mut broken = json.clone();
            *broken.pointer_mut(pointer).unwrap() = value;
            assert!(serde_json::from_value::<Cva>(broken).is_err(), "{pointer}");
        }
        assert_eq!(serde_json::from_value::<Cva>(json).unwrap(), cva);
    }

    #[test]
    fn a_constant_signal_is_left_out_and_gaps_break_windows() {
        let mut rows = process(300, 6, 0.9);
        for (i, row) in rows.iter_mut().enumerate() {
            row.push(7.0);
            if i % 10 == 0 {
                row[1] = f64::NAN;
            }
        }
        let mut cva = fitted(CvaConfig::default(), &rows);
        let model = cva.model().unwrap();
        assert_eq!(model.used, vec![0, 1, 2]);
        // Windows of 2 past + 2 future frames avoid every gap: 6 of 10 starts.
        assert_eq!(model.rows, 30 * 6);
        let score = cva.score(&[0.0, 10.0, 0.0, 99.0]).unwrap();
        assert_eq!(score.contributions[3], 0.0);
    }

    /// The canonical correlations and statistics of an independent reading
    /// (`scripts/cva-peer.py golden`, NumPy) on the shipped TEP sample:
    /// fitted on its 500 training rows, past 2, future 2, ridge 0.
    #[test]
    fn matches_the_numpy_reading_on_tennessee_eastman() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/tep/tep_normal_then_idv1.csv");
        let text = std::fs::read_to_string(path).unwrap();
        let rows: Vec<Vec<f64>> =
            text.lines().skip(1).map(|l| l.split(',').skip(2).map(|v| v.parse().unwrap()).collect()).collect();
        let config = CvaConfig { ridge: 0.0, smoothing: 1, ..CvaConfig::default() };
        let cva = fitted(config, &rows[..500]);
        let model = cva.model().unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
        let correlations = [0.999924712178, 0.999867423553, 0.999773569986, 0.999753263756, 0.999529708579];
        for (got, want) in model.correlations.iter().zip(correlations) {
            assert!(close(*got, want), "correlation {got} vs {want}");
        }
        let peer = [
            (77.5955287098, 85.3810037748),
            (36.6317360091, 53.0202715322),
            (49.7369166712, 58.8500491688),
            (58.6096530509, 51.1225553485),
            (67.6599948713, 89.0949226915),
        ];
        let mut scratch = Scratch::default();
        for (t, (states, residual)) in (510..515).zip(peer) {
            let history = VecDeque::from([rows[t - 1].clone()]);
            model.past_vector(&rows[t], &history, &mut scratch.z);
            let (s, r) = model.statistics(&scratch.z, &mut scratch.c, &mut scratch.transposed);
            assert!(close(s, states) && close(r, residual), "row {}: {s} {r} vs {states} {residual}", t + 1);
        }
    }

    #[test]
    fn extreme_values_are_refused_or_fitted_never_a_hang() {
        for extreme in [1e308, 1e200, f64::MAX] {
            let mut rows = process(200, 8, 0.9);
            for (i, row) in rows.iter_mut().enumerate() {
                row[0] = if i % 2 == 0 { extreme } else { -extreme };
            }
            let mut cva = Cva::new(CvaConfig::default()).unwrap();
            if cva.learn(&rows).is_ok() {
                let score = cva.score(&rows[0]).unwrap();
                assert!(!score.value.is_nan(), "{extreme}: {score:?}");
            }
            let mut normal = fitted(CvaConfig::default(), &process(200, 9, 0.9));
            for row in [[extreme, -extreme, extreme], [extreme, extreme, -extreme], [-extreme; 3]] {
                let score = normal.score(&row).unwrap();
                assert!(!score.value.is_nan() && score.value > 1.0, "{extreme}: {score:?}");
            }
        }
    }

    #[test]
    fn too_little_data_is_refused() {
        let mut cva = Cva::new(CvaConfig::default()).unwrap();
        assert!(matches!(cva.learn(&process(22, 7, 0.9)), Err(DetectorError::NotEnoughData { .. })));
        assert!(cva.learn(&process(23, 7, 0.9)).is_ok());
        let constant = vec![vec![1.0, 2.0]; 100];
        assert!(matches!(cva.learn(&constant), Err(DetectorError::NotEnoughData { .. })));
    }

    #[test]
    fn invalid_settings_are_all_reported() {
        let config = CvaConfig { past: 0, future: 51, states: Some(0), ridge: -1.0, alpha: 1.0, smoothing: 0 };
        assert_eq!(config.validate().len(), 6, "{:?}", config.validate());
        assert!(Cva::new(config).is_err());
    }
}
