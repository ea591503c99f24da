//! Hotelling T² charts: several correlated quality characteristics on one
//! chart, so that a point can be out of control in a direction no single
//! characteristic's chart would flag.
//!
//! Individuals (m baseline vectors of p characteristics):
//! `T² = (x − x̄)ᵀ S⁻¹ (x − x̄)` with the baseline mean and covariance;
//! baseline points are judged against the Phase I limit
//! `((m−1)²/m)·Beta(1−α; p/2, (m−p−1)/2)` and later points against the
//! Phase II limit `p(m+1)(m−1)/(m(m−p))·F(1−α; p, m−p)`
//! (Tracy, Young and Mason, 1992).
//!
//! Subgroups (m baseline subgroups of n vectors): `T² = n (x̄ⱼ − x̄̄)ᵀ Sₚ⁻¹ (x̄ⱼ − x̄̄)`
//! with the pooled within-subgroup covariance; limits
//! `p(m∓1)(n−1)/(mn−m−p+1)·F(1−α; p, mn−m−p+1)` (− for Phase I, + for Phase II;
//! Montgomery, *Introduction to Statistical Quality Control*, §11.3).
//!
//! Each point's contributions `(x − x̄)ₖ·[S⁻¹(x − x̄)]ₖ` sum to its T² and
//! say which characteristics pushed it out.

use super::chart::{Chart, ChartPoint, ChartSeries, SpcError};
use super::rules::{Rule, Violation};
use nalgebra::{DMatrix, DVector};
use statrs::distribution::{Beta, ContinuousCDF, FisherSnedecor};

/// Settings of a T² chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HotellingSettings {
    /// False-alarm probability per point (0.0027 matches 3σ limits).
    pub alpha: f64,
    /// Points (subgroups or vectors) the limits come from; None: all.
    pub baseline: Option<usize>,
    /// Rule reported for points beyond the limit.
    pub limits_rule: Rule,
}

/// A T² chart of `subgroups` (each a list of vectors of the same
/// characteristics; subgroups of one vector make an individuals chart).
///
/// # Errors
/// [`SpcError`] when subgroups differ in size or vectors in length, values
/// are not finite, the baseline is too short for the number of
/// characteristics, or the covariance is singular (a constant or
/// duplicated characteristic).
pub fn hotelling(subgroups: &[Vec<Vec<f64>>], settings: &HotellingSettings) -> Result<Chart, SpcError> {
    let n = subgroups.first().map_or(0, Vec::len);
    let p = subgroups.first().and_then(|g| g.first()).map_or(0, Vec::len);
    if n == 0 || p < 2 {
        return Err(SpcError::Invalid("t2: needs at least 2 characteristics per point".into()));
    }
    if subgroups.iter().any(|g| g.len() != n) {
        return Err(SpcError::Invalid("t2: subgroup sizes vary; T² subgroups need one size".into()));
    }
    if subgroups.iter().flatten().any(|v| v.len() != p || v.iter().any(|x| !x.is_finite())) {
        return Err(SpcError::Invalid(format!("t2: every point needs {p} finite values")));
    }
    if !(settings.alpha > 0.0 && settings.alpha < 0.5) {
        return Err(SpcError::Invalid(format!("t2: alpha must be in (0, 0.5), got {}", settings.alpha)));
    }
    let m = settings.baseline.unwrap_or(subgroups.len()).min(subgroups.len());
    let needed = if n == 1 { p + 2 } else { 2 };
    if m < needed || (n > 1 && m * n < m + p) {
        return Err(SpcError::TooFew { chart: "t2", what: "baseline points", needed: needed.max(p + 2), got: m });
    }
    let baseline = &subgroups[..m];
    let means: Vec<DVector<f64>> = subgroups.iter().map(|g| mean_vector(g, p)).collect();
    let centre = mean_vector(&means[..m], p);
    let covariance = if n == 1 {
        covariance(baseline.iter().map(|g| &g[0]), &centre, p)
    } else {
        let mut pooled = DMatrix::zeros(p, p);
        for (group, mean) in baseline.iter().zip(&means) {
            pooled += covariance(group.iter(), mean, p);
        }
        pooled / m as f64
    };
    let inverse = covariance.clone().cholesky().map(|c| c.inverse()).ok_or_else(|| {
        SpcError::Invalid(
            "t2: the characteristics' covariance is singular (one is constant or a combination of others)".into(),
        )
    })?;
    let (mf, nf, pf) = (m as f64, n as f64, p as f64);
    let (phase1, phase2, centre_line) = if n == 1 {
        let beta = Beta::new(pf / 2.0, (mf - pf - 1.0) / 2.0).map_err(|e| SpcError::Invalid(format!("t2: {e}")))?;
        let f = FisherSnedecor::new(pf, mf - pf).map_err(|e| SpcError::Invalid(format!("t2: {e}")))?;
        (
            (mf - 1.0).powi(2) / mf * beta.inverse_cdf(1.0 - settings.alpha),
            pf * (mf + 1.0) * (mf - 1.0) / (mf * (mf - pf)) * f.inverse_cdf(1.0 - settings.alpha),
            pf * (mf - 1.0) / mf,
        )
    } else {
        let dof = mf * nf - mf - pf + 1.0;
        let f = FisherSnedecor::new(pf, dof).map_err(|e| SpcError::Invalid(format!("t2: {e}")))?;
        let q = f.inverse_cdf(1.0 - settings.alpha);
        let mean_f = if dof > 2.0 { dof / (dof - 2.0) } else { 1.0 };
        (
            pf * (mf - 1.0) * (nf - 1.0) / dof * q,
            pf * (mf + 1.0) * (nf - 1.0) / dof * q,
            pf * (mf - 1.0) * (nf - 1.0) / dof * mean_f,
        )
    };
    let mut points = Vec::with_capacity(subgroups.len());
    let mut contributions = Vec::with_capacity(subgroups.len());
    let mut violations = Vec::new();
    for (i, mean) in means.iter().enumerate() {
        let gap = mean - &centre;
        let pulled = &inverse * &gap;
        let parts: Vec<f64> = gap.iter().zip(pulled.iter()).map(|(g, q)| nf * g * q).collect();
        let t2: f64 = parts.iter().sum();
        let upper = if i < m { phase1 } else { phase2 };
        if t2 > upper {
            violations.push(Violation { rule: settings.limits_rule, index: i, points: vec![i] });
        }
        points.push(ChartPoint { value: t2, centre: centre_line, lower: 0.0, upper });
        contributions.push(parts);
    }
    Ok(Chart {
        kind: "t2".to_string(),
        centre: centre_line,
        sigma: None,
        baseline: m,
        excluded: Vec::new(),
        series: vec![ChartSeries { name: "t2".into(), points, violations, contributions }],
    })
}

fn mean_vector(vectors: &[impl AsRef<[f64]>], p: usize) -> DVector<f64> {
    let mut sum = DVector::zeros(p);
    for v in vectors {
        sum += DVector::from_column_slice(v.as_ref());
    }
    sum / vectors.len().max(1) as f64
}

/// Sample covariance (n − 1) of `vectors` around `mean`.
fn covariance<'a>(vectors: impl Iterator<Item = &'a Vec<f64>>, mean: &DVector<f64>, p: usize) -> DMatrix<f64> {
    let mut sum = DMatrix::zeros(p, p);
    let mut count = 0usize;
    for v in vectors {
        let gap = DVector::from_column_slice(v) - mean;
        sum += &gap * gap.transpose();
        count += 1;
    }
    sum / (count.max(2) - 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(baseline: Option<usize>) -> HotellingSettings {
        HotellingSettings { alpha: 0.0027, baseline, limits_rule: Rule::Nelson1 }
    }

    /// Two strongly correlated characteristics.
    fn correlated(n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut g = crate::stats::SeededNormal::new(seed);
        (0..n)
            .map(|_| {
                let common = g.normal();
                vec![10.0 + common + 0.1 * g.normal(), 20.0 + 2.0 * common + 0.2 * g.normal()]
            })
            .collect()
    }

    #[test]
    fn individuals_t2_matches_its_definition_and_limits() {
        let rows = correlated(50, 1);
        let groups: Vec<Vec<Vec<f64>>> = rows.iter().map(|r| vec![r.clone()]).collect();
        let c = hotelling(&groups, &settings(None)).unwrap();
        // The T² of the baseline points sum to (m − 1)·p for any data (trace identity).
        let total: f64 = c.series[0].points.iter().map(|p| p.value).sum();
        assert!((total - 49.0 * 2.0).abs() < 1e-9, "{total}");
        // Phase I limit: 49²/50 · Beta(0.9973; 1, 23.5) = 10.685 (scipy.stats.beta.ppf(0.9973, 1, 23.5) = 0.2225073).
        let limit = c.series[0].points[0].upper;
        assert!((limit - 49.0f64.powi(2) / 50.0 * 0.222_507_3).abs() < 1e-5, "{limit}");
        let parts: f64 = c.series[0].contributions[3].iter().sum();
        assert!((parts - c.series[0].points[3].value).abs() < 1e-9, "contributions add up to T²");
    }

    #[test]
    fn a_broken_correlation_is_caught_that_neither_single_chart_sees() {
        let mut rows = correlated(80, 2);
        // Each value is within 1.5σ of its own mean, but against the correlation.
        rows.push(vec![11.3, 17.4]);
        let groups: Vec<Vec<Vec<f64>>> = rows.iter().map(|r| vec![r.clone()]).collect();
        let c = hotelling(&groups, &settings(Some(80))).unwrap();
        let flagged: Vec<usize> = c.series[0].violations.iter().map(|v| v.index).collect();
        assert!(flagged.contains(&80), "{flagged:?}");
        let parts = &c.series[0].contributions[80];
        assert!(parts.iter().all(|p| *p > 0.0), "both characteristics share the blame: {parts:?}");
        // Phase II limit is wider than Phase I's for the same m.
        assert!(c.series[0].points[80].upper > c.series[0].points[0].upper);
    }

    #[test]
    fn subgroups_use_the_pooled_covariance() {
        let rows = correlated(100, 3);
        let groups: Vec<Vec<Vec<f64>>> = rows.chunks(4).map(<[Vec<f64>]>::to_vec).collect();
        let c = hotelling(&groups, &settings(None)).unwrap();
        assert_eq!(c.series[0].points.len(), 25);
        // m = 25, n = 4, p = 2: dof = 100 − 25 − 2 + 1 = 74; UCL = 2·24·3/74 · F(0.9973; 2, 74).
        // scipy.stats.f.ppf(0.9973, 2, 74) = 6.4134525.
        let limit = c.series[0].points[0].upper;
        assert!((limit - 144.0 / 74.0 * 6.413_452_5).abs() < 1e-5, "{limit}");
    }

    #[test]
    fn bad_data_is_a_clear_error() {
        let one = vec![vec![vec![1.0]]; 10];
        assert!(hotelling(&one, &settings(None)).is_err(), "one characteristic");
        let constant: Vec<Vec<Vec<f64>>> = (0..10).map(|i| vec![vec![f64::from(i), 5.0]]).collect();
        let error = hotelling(&constant, &settings(None)).unwrap_err();
        assert!(matches!(error, SpcError::Invalid(m) if m.contains("singular")));
        let few: Vec<Vec<Vec<f64>>> = correlated(3, 4).into_iter().map(|r| vec![r]).collect();
        assert!(matches!(hotelling(&few, &settings(None)), Err(SpcError::TooFew { .. })));
    }
}
