//! MSET, the multivariate state estimation technique (similarity-based
//! modelling), the classic of power-plant and fab monitoring.
//!
//! A memory of `memory` exemplar states is taken from the baseline (each
//! signal's extreme rows first, then rows evenly spread over the baseline).
//! A new frame is estimated as a weighted blend of the exemplars most like
//! it: `x̂ = Dᵀ w`, `w ∝ (G + λI)⁻¹ k`, where `G` holds the exemplars'
//! similarities to each other, `k` their similarities to the frame, and the
//! similarity is a Gaussian kernel of the standardised distance. The
//! residual `x − x̂` of each signal, in units of its spread on baseline rows
//! held out of the memory, is that signal's contribution; the score is the
//! root mean square of those units, so ≈ 1 on normal frames. Missing values
//! are left out of the similarity and have no residual.

use super::{Detector, DetectorError, DetectorKind, Score, check_row, check_rows, column_mean_scale, complete_rows, refuse_invalid};
use crate::threshold::ThresholdConfig;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

/// Settings of [`Mset`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsetConfig {
    /// Exemplar states kept in memory.
    #[serde(default = "default_memory")]
    pub memory: usize,
    /// Kernel bandwidth, in standardised units (distance over √signals).
    #[serde(default = "default_bandwidth")]
    pub bandwidth: f64,
    /// Ridge added to the similarity matrix before inverting.
    #[serde(default = "default_ridge")]
    pub ridge: f64,
}

fn default_memory() -> usize {
    100
}
fn default_bandwidth() -> f64 {
    1.0
}
fn default_ridge() -> f64 {
    1e-3
}

impl Default for MsetConfig {
    fn default() -> Self {
        MsetConfig { memory: default_memory(), bandwidth: default_bandwidth(), ridge: default_ridge() }
    }
}

impl MsetConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.memory < 2 || self.memory > 5000 {
            problems.push(format!("mset.memory must be between 2 and 5000, got {}", self.memory));
        }
        if !(self.bandwidth > 0.0 && self.bandwidth.is_finite()) {
            problems.push(format!("mset.bandwidth must be positive, got {}", self.bandwidth));
        }
        if !(self.ridge >= 0.0 && self.ridge.is_finite()) {
            problems.push(format!("mset.ridge must be zero or positive, got {}", self.ridge));
        }
        problems
    }
}

/// What MSET learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MsetModel {
    /// Width of the rows.
    pub width: usize,
    /// Baseline mean of each signal.
    pub mean: Vec<f64>,
    /// Baseline spread of each signal (1 for constant signals).
    pub scale: Vec<f64>,
    /// Exemplars, standardised, `memory × width` row-major.
    pub exemplars: Vec<f64>,
    /// `(G + λI)⁻¹`, `memory × memory` row-major.
    pub inverse: Vec<f64>,
    /// Residual spread of each signal on held-out baseline rows.
    pub residual_scale: Vec<f64>,
}

/// MSET detector. A stored model is checked when it is read (every array
/// of the lengths its width and memory give).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredMset")]
pub struct Mset {
    config: MsetConfig,
    model: Option<MsetModel>,
}

/// An MSET detector as stored, before `Mset` accepts it.
#[derive(Deserialize)]
struct StoredMset {
    config: MsetConfig,
    model: Option<MsetModel>,
}

impl TryFrom<StoredMset> for Mset {
    type Error = String;

    fn try_from(stored: StoredMset) -> Result<Self, String> {
        refuse_invalid(stored.config.validate()).map_err(|e| e.to_string())?;
        if let Some(model) = &stored.model {
            let width = model.width;
            let memory = model.exemplars.len().checked_div(width).unwrap_or(0);
            if width == 0 || memory == 0 {
                return Err(format!("a fitted MSET of width {width} and memory {memory}"));
            }
            super::stored_lengths(&[
                ("mean", model.mean.len(), width),
                ("scale", model.scale.len(), width),
                ("residual_scale", model.residual_scale.len(), width),
                ("exemplars", model.exemplars.len(), memory * width),
                ("inverse", model.inverse.len(), memory.saturating_mul(memory)),
            ])?;
        }
        Ok(Mset { config: stored.config, model: stored.model })
    }
}

impl Mset {
    /// Fewest complete baseline rows accepted.
    pub const MIN_ROWS: usize = 10;

    /// An unfitted detector.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: MsetConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(Mset { config, model: None })
    }
}

impl Detector for Mset {
    /// Choose exemplars, invert their similarities, measure residual spreads.
    ///
    /// # Errors
    /// See [`super::Detector::learn`].
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, Self::MIN_ROWS)?;
        let complete = complete_rows(rows, Self::MIN_ROWS)?;
        let n = complete.len();
        let (mean, scale) = column_mean_scale(&complete, width);
        let standard: Vec<Vec<f64>> =
            complete.iter().map(|r| r.iter().enumerate().map(|(j, v)| (v - mean[j]) / scale[j]).collect()).collect();

        // Memory: each signal's min and max rows, then evenly spread rows.
        let memory = self.config.memory.min(n / 2).max(2);
        let mut chosen: Vec<usize> = Vec::with_capacity(memory);
        let columns: Vec<Vec<f64>> = (0..width).map(|j| standard.iter().map(|r| r[j]).collect()).collect();
        for column in &columns {
            let by = |a: &usize, b: &usize| column[*a].total_cmp(&column[*b]);
            for pick in [(0..n).min_by(by), (0..n).max_by(by)].into_iter().flatten() {
                if chosen.len() < memory && !chosen.contains(&pick) {
                    chosen.push(pick);
                }
            }
        }
        let mut step = 0;
        while chosen.len() < memory && step < n {
            let pick = step * n / memory.max(1) % n;
            if !chosen.contains(&pick) {
                chosen.push(pick);
            }
            step += 1;
        }
        chosen.sort_unstable();
        let m = chosen.len();
        let exemplars: Vec<f64> = chosen.iter().flat_map(|&i| standard[i].iter().copied()).collect();
        let bandwidth = self.config.bandwidth;
        let gram = DMatrix::from_fn(m, m, |a, b| {
            kernel(&exemplars[a * width..(a + 1) * width], &exemplars[b * width..(b + 1) * width], bandwidth)
        }) + DMatrix::identity(m, m) * self.config.ridge;
        let inverse = gram.try_inverse().ok_or_else(|| {
            DetectorError::InvalidSetting("the memory's similarity matrix is singular; raise mset.ridge".into())
        })?;
        let mut model = MsetModel {
            width,
            mean,
            scale,
            exemplars,
            // nalgebra stores columns; the transpose's columns are our rows.
            inverse: inverse.transpose().as_slice().to_vec(),
            residual_scale: vec![1.0; width],
        };
        // Residual spread on the rows not in memory (in-memory rows are reproduced too well).
        let held_out: Vec<&Vec<f64>> =
            complete.iter().enumerate().filter(|(i, _)| chosen.binary_search(i).is_err()).map(|(_, r)| *r).collect();
        let mut residuals: Vec<Vec<f64>> = vec![Vec::new(); width];
        for row in &held_out {
            let estimate = model.estimate(row, bandwidth);
            for j in 0..width {
                residuals[j].push((row[j] - model.mean[j]) / model.scale[j] - estimate[j]);
            }
        }
        for (j, r) in residuals.iter().enumerate() {
            let rms = (r.iter().map(|v| v * v).sum::<f64>() / r.len().max(1) as f64).sqrt();
            model.residual_scale[j] = if rms > 1e-9 { rms } else { 1e-3 };
        }
        self.model = Some(model);
        Ok(())
    }

    /// Score one row.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        let model = self.model.as_ref().ok_or(DetectorError::NotFitted)?;
        check_row(row, model.width)?;
        let estimate = model.estimate(row, self.config.bandwidth);
        let mut contributions = vec![0.0; model.width];
        let mut present = 0usize;
        let mut sum = 0.0;
        for j in 0..model.width {
            if !row[j].is_finite() {
                continue;
            }
            let units = ((row[j] - model.mean[j]) / model.scale[j] - estimate[j]) / model.residual_scale[j];
            contributions[j] = units * units;
            sum += units * units;
            present += 1;
        }
        let value = (sum / present.max(1) as f64).sqrt();
        // Contributions in score units: shares of the mean square, scaled to the score.
        if sum > 0.0 {
            for c in &mut contributions {
                *c *= value / sum;
            }
        }
        Ok(Score { value, contributions, t2: None, spe: None, statistics: Vec::new() })
    }
}

impl DetectorKind for Mset {
    type Config = MsetConfig;
    const NAME: &'static str = "mset";
    const SUMMARY: &'static str = "MSET similarity-based state estimation with per-signal residuals.";

    fn validate(config: &MsetConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &MsetConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(_config: &MsetConfig) -> usize {
        Self::MIN_ROWS
    }

    fn default_threshold(_config: &MsetConfig) -> ThresholdConfig {
        // Scores are residual RMS in held-out spreads (≈ 1 when normal).
        ThresholdConfig::fixed(4.0)
    }

    fn examples() -> Vec<MsetConfig> {
        vec![MsetConfig::default(), MsetConfig { memory: 30, bandwidth: 2.0, ridge: 1e-2 }]
    }
}

impl MsetModel {
    /// The standardised estimate of `row` (missing values left out of the similarity).
    fn estimate(&self, row: &[f64], bandwidth: f64) -> Vec<f64> {
        let width = self.width;
        let m = self.exemplars.len() / width;
        let standard: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(j, v)| if v.is_finite() { (v - self.mean[j]) / self.scale[j] } else { f64::NAN })
            .collect();
        let k: Vec<f64> =
            (0..m).map(|a| kernel(&self.exemplars[a * width..(a + 1) * width], &standard, bandwidth)).collect();
        let mut weights: Vec<f64> = self
            .inverse
            .chunks_exact(m)
            .map(|inverse_row| inverse_row.iter().zip(&k).map(|(g, s)| g * s).sum())
            .collect();
        let total: f64 = weights.iter().sum();
        for w in &mut weights {
            *w = if total.abs() > 1e-12 { *w / total } else { 1.0 / m as f64 };
        }
        let mut estimate = vec![0.0; width];
        for (a, w) in weights.iter().enumerate() {
            for (e, x) in estimate.iter_mut().zip(&self.exemplars[a * width..(a + 1) * width]) {
                *e += w * x;
            }
        }
        estimate
    }
}

/// Gaussian similarity of two standardised states over the values both have.
fn kernel(a: &[f64], b: &[f64], bandwidth: f64) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for (x, y) in a.iter().zip(b) {
        if x.is_finite() && y.is_finite() {
            sum += (x - y) * (x - y);
            count += 1;
        }
    }
    if count == 0 {
        return 0.0;
    }
    (-(sum / count as f64) / (2.0 * bandwidth * bandwidth)).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SeededNormal;

    #[test]
    fn estimates_normal_states_and_flags_broken_relations() {
        let mut g = SeededNormal::new(8);
        let rows: Vec<Vec<f64>> = (0..600)
            .map(|_| {
                let c = g.normal();
                vec![10.0 + c + 0.05 * g.normal(), 5.0 - 2.0 * c + 0.1 * g.normal(), 0.3 * g.normal()]
            })
            .collect();
        let mut mset = Mset::new(MsetConfig::default()).unwrap();
        mset.learn(&rows).unwrap();
        let normal = mset.score(&[10.5, 4.0, 0.1]).unwrap();
        assert!(normal.value < 3.0, "{normal:?}");
        // Signal 1 should be about 4.0 when signal 0 is 10.5: a broken relation.
        let broken = mset.score(&[10.5, 11.0, 0.1]).unwrap();
        assert!(broken.value > 3.0 * normal.value.max(0.5), "{broken:?}");
        let blamed = broken.contributions.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert!(blamed == 0 || blamed == 1, "{broken:?}");
    }
}
