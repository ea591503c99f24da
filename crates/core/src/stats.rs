//! Small numeric helpers shared by detectors and thresholds.

use statrs::distribution::{ContinuousCDF, FisherSnedecor, Normal};

/// Scale factor that makes the MAD a consistent estimator of a normal sigma.
pub const MAD_TO_SIGMA: f64 = 1.482_602_218_505_602;

/// The `q` quantile (0..=1) of finite values, linear interpolation between
/// order statistics (numpy's default). `None` when there is no finite value.
#[must_use]
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let q = q.clamp(0.0, 1.0);
    let pos = q * (sorted.len() - 1) as f64;
    let lower = pos.floor() as usize;
    let upper = pos.ceil() as usize;
    let frac = pos - lower as f64;
    Some(sorted[lower] + (sorted[upper] - sorted[lower]) * frac)
}

/// Mean and sample standard deviation of the finite values; `None` when
/// fewer than two.
#[must_use]
pub fn mean_std(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (mut n, mut mean, mut m2) = (0usize, 0.0, 0.0);
    for v in values.filter(|v| v.is_finite()) {
        n += 1;
        let delta = v - mean;
        mean += delta / n as f64;
        m2 += delta * (v - mean);
    }
    (n >= 2).then(|| (mean, (m2 / (n - 1) as f64).sqrt()))
}

/// Upper `alpha` quantile of the F(d1, d2) distribution.
#[must_use]
pub fn f_quantile(alpha: f64, d1: f64, d2: f64) -> Option<f64> {
    FisherSnedecor::new(d1, d2).ok().map(|f| f.inverse_cdf(alpha))
}

/// Moving mean over a window of `w`, with partial windows at the start
/// (smoothed monitoring statistics and the baseline they are limited on).
pub(crate) fn moving_mean(values: &[f64], w: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(values.len());
    let mut sum = 0.0;
    for (i, v) in values.iter().enumerate() {
        sum += v;
        if i >= w {
            sum -= values[i - w];
        }
        out.push(sum / (i + 1).min(w) as f64);
    }
    out
}

/// `alpha` quantile of the standard normal distribution.
#[must_use]
pub fn normal_quantile(alpha: f64) -> f64 {
    Normal::standard().inverse_cdf(alpha)
}

/// Deterministic standard-normal numbers (xorshift64* and Box–Muller), for
/// tests, benchmarks and seeded algorithms: the same seed gives the same
/// numbers on every platform.
#[derive(Debug, Clone)]
pub struct SeededNormal(u64);

impl SeededNormal {
    /// A generator from a seed (0 is replaced by 1).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        SeededNormal(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).max(1))
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_table() {
        let cases: &[(&[f64], f64, Option<f64>)] = &[
            (&[], 0.5, None),
            (&[f64::NAN], 0.5, None),
            (&[1.0], 0.9, Some(1.0)),
            (&[3.0, 1.0, 2.0], 0.5, Some(2.0)),
            (&[1.0, 2.0, 3.0, 4.0], 0.5, Some(2.5)),
            (&[1.0, 2.0, 3.0, 4.0], 1.0, Some(4.0)),
            (&[1.0, 2.0, f64::INFINITY, 4.0], 0.0, Some(1.0)),
        ];
        for (values, q, want) in cases {
            assert_eq!(quantile(values, *q), *want, "{values:?} q={q}");
        }
    }

    #[test]
    fn mean_std_matches_textbook() {
        let (m, s) = mean_std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0].into_iter()).unwrap();
        assert!((m - 5.0).abs() < 1e-12);
        assert!((s - 2.138_089_935_299_395).abs() < 1e-12);
        assert!(mean_std([1.0].into_iter()).is_none());
    }

    #[test]
    fn seeded_normal_is_repeatable_and_standard() {
        let mut a = SeededNormal::new(7);
        let mut b = SeededNormal::new(7);
        let xs: Vec<f64> = (0..20_000).map(|_| a.normal()).collect();
        assert!(xs.iter().all(|x| *x == b.normal()));
        let (m, s) = mean_std(xs.into_iter()).unwrap();
        assert!(m.abs() < 0.03 && (s - 1.0).abs() < 0.03, "{m} {s}");
    }

    #[test]
    fn distribution_quantiles() {
        assert!((normal_quantile(0.99) - 2.326_347_874).abs() < 1e-6);
        // F(0.99; 5, 100) = 3.2059 (tables)
        assert!((f_quantile(0.99, 5.0, 100.0).unwrap() - 3.2059).abs() < 1e-3);
    }
}
