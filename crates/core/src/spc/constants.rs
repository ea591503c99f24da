//! Control chart constants (d2, d3, c4 and the factors built from them),
//! computed from the normal distribution rather than copied from a table,
//! for subgroup sizes 2 to 25.
//!
//! - d2(n) = E\[range of n standard normals\] = ∫ 1 − Φ(x)ⁿ − (1 − Φ(x))ⁿ dx;
//! - d3(n) = SD\[range\], from E\[W²\] = 2 ∬_{x<y} 1 − Φ(y)ⁿ − (1 − Φ(x))ⁿ + (Φ(y) − Φ(x))ⁿ dy dx;
//! - c4(n) = E\[s\] / σ = √(2/(n−1)) Γ(n/2) / Γ((n−1)/2).
//!
//! Both integrals use Simpson's rule (step 1/50 over ±9), accurate to
//! about 1e-7, well past the tables' three or four decimals; the tests check
//! every value of the published table.

use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::gamma::ln_gamma;

/// Smallest subgroup size with constants.
pub const MIN_SUBGROUP: usize = 2;
/// Largest subgroup size with constants.
pub const MAX_SUBGROUP: usize = 25;

/// The constants of one subgroup size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChartConstants {
    /// Subgroup size.
    pub n: usize,
    /// Mean range of `n` standard normal values.
    pub d2: f64,
    /// Standard deviation of that range.
    pub d3: f64,
    /// Mean sample standard deviation of `n` standard normal values.
    pub c4: f64,
    /// X̄ limits from the mean range: X̄̄ ± A2·R̄.
    pub a2: f64,
    /// X̄ limits from the mean standard deviation: X̄̄ ± A3·s̄.
    pub a3: f64,
    /// S chart lower limit factor: B3·s̄.
    pub b3: f64,
    /// S chart upper limit factor: B4·s̄.
    pub b4: f64,
    /// R chart lower limit factor: D3·R̄.
    pub d3_factor: f64,
    /// R chart upper limit factor: D4·R̄.
    pub d4_factor: f64,
}

/// The constants for subgroups of `n` (2 to 25), or None outside that range.
#[must_use]
pub fn chart_constants(n: usize) -> Option<ChartConstants> {
    if !(MIN_SUBGROUP..=MAX_SUBGROUP).contains(&n) {
        return None;
    }
    let (d2, d3) = range_moments(n);
    let c4 = c4(n);
    let root_n = (n as f64).sqrt();
    let s_spread = 3.0 * (1.0 - c4 * c4).sqrt() / c4;
    Some(ChartConstants {
        n,
        d2,
        d3,
        c4,
        a2: 3.0 / (d2 * root_n),
        a3: 3.0 / (c4 * root_n),
        b3: (1.0 - s_spread).max(0.0),
        b4: 1.0 + s_spread,
        d3_factor: (1.0 - 3.0 * d3 / d2).max(0.0),
        d4_factor: 1.0 + 3.0 * d3 / d2,
    })
}

/// c4(n) for any n ≥ 2 (exact, through the log-gamma function).
#[must_use]
pub fn c4(n: usize) -> f64 {
    let n = n as f64;
    (2.0 / (n - 1.0)).sqrt() * (ln_gamma(n / 2.0) - ln_gamma((n - 1.0) / 2.0)).exp()
}

const STEP: f64 = 0.02;
const REACH: f64 = 9.0;

/// Simpson's rule over `from..to` with about `STEP` spacing (an even number of intervals).
fn simpson(from: f64, to: f64, f: impl Fn(f64) -> f64) -> f64 {
    if to <= from {
        return 0.0;
    }
    let intervals = (((to - from) / STEP).ceil() as usize).max(2).next_multiple_of(2);
    let h = (to - from) / intervals as f64;
    let inner: f64 = (1..intervals).map(|i| f(from + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 }).sum();
    (f(from) + inner + f(to)) * h / 3.0
}

/// (d2, d3) of subgroups of `n`.
fn range_moments(n: usize) -> (f64, f64) {
    let normal = Normal::standard();
    let cdf = |x: f64| normal.cdf(x);
    let n = n as i32;
    let d2 = simpson(-REACH, REACH, |x| {
        let p = cdf(x);
        1.0 - p.powi(n) - (1.0 - p).powi(n)
    });
    let second_moment = 2.0
        * simpson(-REACH, REACH, |x| {
            let px = cdf(x);
            let below = (1.0 - px).powi(n);
            simpson(x, REACH, |y| {
                let py = cdf(y);
                1.0 - py.powi(n) - below + (py - px).powi(n)
            })
        });
    (d2, (second_moment - d2 * d2).max(0.0).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published table (Montgomery, *Introduction to Statistical Quality
    /// Control*, Appendix VI; ASTM STP 15D): n, A2, A3, c4, B3, B4, d2, d3, D3, D4.
    const TABLE: [[f64; 10]; 24] = [
        [2.0, 1.880, 2.659, 0.7979, 0.0, 3.267, 1.128, 0.853, 0.0, 3.267],
        [3.0, 1.023, 1.954, 0.8862, 0.0, 2.568, 1.693, 0.888, 0.0, 2.574],
        [4.0, 0.729, 1.628, 0.9213, 0.0, 2.266, 2.059, 0.880, 0.0, 2.282],
        [5.0, 0.577, 1.427, 0.9400, 0.0, 2.089, 2.326, 0.864, 0.0, 2.114],
        [6.0, 0.483, 1.287, 0.9515, 0.030, 1.970, 2.534, 0.848, 0.0, 2.004],
        [7.0, 0.419, 1.182, 0.9594, 0.118, 1.882, 2.704, 0.833, 0.076, 1.924],
        [8.0, 0.373, 1.099, 0.9650, 0.185, 1.815, 2.847, 0.820, 0.136, 1.864],
        [9.0, 0.337, 1.032, 0.9693, 0.239, 1.761, 2.970, 0.808, 0.184, 1.816],
        [10.0, 0.308, 0.975, 0.9727, 0.284, 1.716, 3.078, 0.797, 0.223, 1.777],
        [11.0, 0.285, 0.927, 0.9754, 0.321, 1.679, 3.173, 0.787, 0.256, 1.744],
        [12.0, 0.266, 0.886, 0.9776, 0.354, 1.646, 3.258, 0.778, 0.283, 1.717],
        [13.0, 0.249, 0.850, 0.9794, 0.382, 1.618, 3.336, 0.770, 0.307, 1.693],
        [14.0, 0.235, 0.817, 0.9810, 0.406, 1.594, 3.407, 0.763, 0.328, 1.672],
        [15.0, 0.223, 0.789, 0.9823, 0.428, 1.572, 3.472, 0.756, 0.347, 1.653],
        [16.0, 0.212, 0.763, 0.9835, 0.448, 1.552, 3.532, 0.750, 0.363, 1.637],
        [17.0, 0.203, 0.739, 0.9845, 0.466, 1.534, 3.588, 0.744, 0.378, 1.622],
        [18.0, 0.194, 0.718, 0.9854, 0.482, 1.518, 3.640, 0.739, 0.391, 1.608],
        [19.0, 0.187, 0.698, 0.9862, 0.497, 1.503, 3.689, 0.734, 0.403, 1.597],
        [20.0, 0.180, 0.680, 0.9869, 0.510, 1.490, 3.735, 0.729, 0.415, 1.585],
        [21.0, 0.173, 0.663, 0.9876, 0.523, 1.477, 3.778, 0.724, 0.425, 1.575],
        [22.0, 0.167, 0.647, 0.9882, 0.534, 1.466, 3.819, 0.720, 0.434, 1.566],
        [23.0, 0.162, 0.633, 0.9887, 0.545, 1.455, 3.858, 0.716, 0.443, 1.557],
        [24.0, 0.157, 0.619, 0.9892, 0.555, 1.445, 3.895, 0.712, 0.451, 1.548],
        [25.0, 0.153, 0.606, 0.9896, 0.565, 1.435, 3.931, 0.708, 0.459, 1.541],
    ];

    #[test]
    fn every_constant_matches_the_published_table() {
        let mut wrong = Vec::new();
        for row in TABLE {
            let n = row[0] as usize;
            let c = chart_constants(n).unwrap();
            let computed = [c.a2, c.a3, c.c4, c.b3, c.b4, c.d2, c.d3, c.d3_factor, c.d4_factor];
            let names = ["A2", "A3", "c4", "B3", "B4", "d2", "d3", "D3", "D4"];
            for ((name, value), published) in names.iter().zip(computed).zip(&row[1..]) {
                // The table rounds to 3 decimals (c4 to 4); allow one unit of rounding.
                let unit = if *name == "c4" { 1e-4 } else { 1e-3 };
                if (value - published).abs() > unit {
                    wrong.push(format!("n={n} {name}: computed {value:.5}, published {published}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn closed_forms_for_pairs() {
        // For n = 2 the range is |X1 − X2| ~ √2·|Z|: d2 = 2/√π, d3 = √(2 − 4/π).
        let c = chart_constants(2).unwrap();
        assert!((c.d2 - 2.0 / std::f64::consts::PI.sqrt()).abs() < 1e-7, "{}", c.d2);
        assert!((c.d3 - (2.0 - 4.0 / std::f64::consts::PI).sqrt()).abs() < 1e-6, "{}", c.d3);
        assert!((c.c4 - (2.0 / std::f64::consts::PI).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn sizes_outside_the_table_have_none() {
        assert!(chart_constants(1).is_none());
        assert!(chart_constants(26).is_none());
    }
}
