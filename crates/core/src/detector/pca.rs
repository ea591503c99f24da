//! PCA monitor with Hotelling's T² and the squared prediction error (SPE, Q).
//!
//! The workhorse of multivariate process monitoring: the baseline's
//! correlation structure is summarised by a few principal components. T²
//! measures how far a frame is *inside* that model (an unusual combination
//! of normal movements); SPE measures how far it is *off* the model (a
//! correlation has broken). Limits come from theory at confidence `alpha`:
//! T² from the F distribution, SPE from Jackson–Mudholkar. The score is
//! `max(T²/T²_limit, SPE/SPE_limit)`, so 1.0 sits on the limit, and each
//! signal's contribution to the larger ratio explains it.
//!
//! Signals constant in the baseline cannot be standardised and are left out
//! of the model (contribution 0); watch them with a univariate detector.
//! Missing values are replaced by the baseline mean (no evidence either way).

use super::{DetectorError, Score, check_row, check_rows};
use crate::stats::{f_quantile, mean_std, normal_quantile};
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

/// Settings of [`Pca`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcaConfig {
    /// Fixed number of components; when absent, chosen by `variance`.
    #[serde(default)]
    pub components: Option<usize>,
    /// Keep the fewest components explaining at least this share of variance.
    #[serde(default = "default_variance")]
    pub variance: f64,
    /// Confidence of the T² and SPE limits, e.g. 0.99.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
}

fn default_variance() -> f64 {
    0.9
}
fn default_alpha() -> f64 {
    0.99
}

impl Default for PcaConfig {
    fn default() -> Self {
        PcaConfig { components: None, variance: default_variance(), alpha: default_alpha() }
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
        problems
    }
}

/// What the PCA monitor learned from its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaModel {
    /// Width of the rows it scores.
    pub width: usize,
    /// Indices of the signals in the model (not constant in the baseline).
    pub used: Vec<usize>,
    /// Baseline mean of each used signal.
    pub mean: Vec<f64>,
    /// Baseline standard deviation of each used signal.
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
}

/// PCA T²/SPE detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pca {
    config: PcaConfig,
    model: Option<PcaModel>,
    #[serde(skip)]
    scratch: Scratch,
}

/// Reused buffers, so scoring a frame allocates only its contributions.
#[derive(Debug, Clone, Default)]
struct Scratch {
    /// Loadings transposed (components × signals), built on first use.
    loadings_t: Vec<f64>,
    z: Vec<f64>,
    t: Vec<f64>,
    /// Per used signal: P·t (reconstruction) or P·Λ⁻¹·t (toward T²).
    back: Vec<f64>,
}

impl PartialEq for Scratch {
    fn eq(&self, _: &Self) -> bool {
        true // scratch space is not state
    }
}

impl Pca {
    /// Fewest complete baseline rows accepted.
    pub const MIN_ROWS: usize = 10;

    /// An unfitted monitor.
    #[must_use]
    pub fn new(config: PcaConfig) -> Self {
        Pca { config, model: None, scratch: Scratch::default() }
    }

    /// The fitted model, once `learn` succeeded.
    #[must_use]
    pub fn model(&self) -> Option<&PcaModel> {
        self.model.as_ref()
    }

    /// Fit mean, scale, loadings and limits on the complete baseline rows.
    ///
    /// # Errors
    /// See [`super::Detector::learn`]; also when fewer than
    /// [`Pca::MIN_ROWS`] rows have no missing value, or no signal varies.
    pub fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, Self::MIN_ROWS)?;
        let complete: Vec<&Vec<f64>> = rows.iter().filter(|r| r.iter().all(|v| v.is_finite())).collect();
        let n = complete.len();
        if n < Self::MIN_ROWS {
            return Err(DetectorError::NotEnoughData { needed: Self::MIN_ROWS, got: n });
        }
        let (mut used, mut mean, mut scale) = (Vec::new(), Vec::new(), Vec::new());
        for j in 0..width {
            let Some((m, s)) = mean_std(complete.iter().map(|r| r[j])) else {
                continue;
            };
            if s > 1e-12 * m.abs().max(1.0) {
                used.push(j);
                mean.push(m);
                scale.push(s);
            }
        }
        let p = used.len();
        if p == 0 {
            return Err(DetectorError::NotEnoughData { needed: Self::MIN_ROWS, got: 0 });
        }
        let z = DMatrix::from_fn(n, p, |i, k| (complete[i][used[k]] - mean[k]) / scale[k]);
        let correlation = (z.transpose() * &z) / (n as f64 - 1.0);
        let eigen = correlation.symmetric_eigen();
        let mut order: Vec<usize> = (0..p).collect();
        order.sort_by(|a, b| eigen.eigenvalues[*b].total_cmp(&eigen.eigenvalues[*a]));
        let eigenvalues: Vec<f64> = order.iter().map(|&i| eigen.eigenvalues[i].max(0.0)).collect();

        let total: f64 = eigenvalues.iter().sum();
        let max_components = p.min(n - 2).max(1);
        let components = match self.config.components {
            Some(k) => k.min(max_components),
            None => {
                let mut cumulative = 0.0;
                let mut k = 0;
                while k < max_components {
                    cumulative += eigenvalues[k];
                    k += 1;
                    if cumulative >= self.config.variance * total {
                        break;
                    }
                }
                k.max(1)
            }
        };
        let mut loadings = vec![0.0; p * components];
        for (c, &col) in order.iter().take(components).enumerate() {
            let vector = eigen.eigenvectors.column(col);
            // Deterministic sign: the largest loading is positive.
            let pivot = vector.iter().copied().fold(0.0_f64, |a, v| if v.abs() > a.abs() { v } else { a });
            let sign = if pivot < 0.0 { -1.0 } else { 1.0 };
            for j in 0..p {
                loadings[j * components + c] = sign * vector[j];
            }
        }
        let alpha = self.config.alpha;
        let t2_limit = t2_limit(alpha, components, n);
        let spe_limit = spe_limit(alpha, &eigenvalues[components..]);
        self.model = Some(PcaModel {
            width,
            used,
            mean,
            scale,
            loadings,
            components,
            eigenvalues,
            rows: n,
            t2_limit,
            spe_limit,
        });
        Ok(())
    }

    /// Score one row: T², SPE and the contributions of each signal.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    pub fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        let model = self.model.as_ref().ok_or(DetectorError::NotFitted)?;
        check_row(row, model.width)?;
        let p = model.used.len();
        let k = model.components;
        let Scratch { loadings_t, z, t, back } = &mut self.scratch;
        if loadings_t.len() != p * k {
            *loadings_t = (0..k).flat_map(|c| (0..p).map(move |j| model.loadings[j * k + c])).collect();
        }
        let mut missing = false;
        z.clear();
        z.extend(model.used.iter().zip(model.mean.iter().zip(&model.scale)).map(|(&j, (m, s))| {
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
        for (loading_row, zj) in model.loadings.chunks_exact(k).zip(z.iter()) {
            for (ti, pji) in t.iter_mut().zip(loading_row) {
                *ti += pji * zj;
            }
        }
        let t2: f64 = t.iter().zip(&model.eigenvalues).map(|(ti, l)| ti * ti / l.max(1e-12)).sum();
        // P has orthonormal columns, so SPE = |z|² − |t|² unless a value is missing
        // (a missing value has no residual of its own and is left out).
        let reconstruct = |back: &mut Vec<f64>, weights: &mut dyn Iterator<Item = f64>| {
            back.clear();
            back.resize(p, 0.0);
            for (column, w) in loadings_t.chunks_exact(p).zip(weights) {
                for (b, pj) in back.iter_mut().zip(column) {
                    *b += pj * w;
                }
            }
        };
        let spe = if missing {
            reconstruct(back, &mut t.iter().copied());
            model
                .used
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
        let t2_ratio = t2 / model.t2_limit;
        let spe_ratio = spe / model.spe_limit;
        let mut contributions = vec![0.0; model.width];
        let value = if t2_ratio >= spe_ratio {
            // T² = Σⱼ zⱼ (P Λ⁻¹ t)ⱼ
            reconstruct(back, &mut t.iter().zip(&model.eigenvalues).map(|(ti, l)| ti / l.max(1e-12)));
            for ((&j, zj), b) in model.used.iter().zip(z.iter()).zip(back.iter()) {
                contributions[j] = (zj * b).max(0.0) / model.t2_limit;
            }
            t2_ratio
        } else {
            reconstruct(back, &mut t.iter().copied());
            for ((&j, zj), b) in model.used.iter().zip(z.iter()).zip(back.iter()) {
                if row[j].is_finite() {
                    contributions[j] = (zj - b) * (zj - b) / model.spe_limit;
                }
            }
            spe_ratio
        };
        Ok(Score { value, contributions, t2: Some(t2), spe: Some(spe) })
    }
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
    fn broken_correlation_shows_in_spe_and_contributions() {
        let mut pca = Pca::new(PcaConfig { components: Some(2), ..PcaConfig::default() });
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
        let mut pca = Pca::new(PcaConfig { variance: 0.6, ..PcaConfig::default() });
        pca.learn(&correlated(400)).unwrap();
        assert_eq!(pca.model().unwrap().components, 1);
        let mut pca = Pca::new(PcaConfig { variance: 0.99, ..PcaConfig::default() });
        pca.learn(&correlated(400)).unwrap();
        assert_eq!(pca.model().unwrap().components, 2);
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
        let mut pca = Pca::new(PcaConfig::default());
        pca.learn(&rows).unwrap();
        assert_eq!(pca.model().unwrap().used, vec![0, 1, 2]);
        let s = pca.score(&[0.1, 0.1, 0.2, 9.0]).unwrap();
        assert_eq!(s.contributions[3], 0.0);
    }
}
