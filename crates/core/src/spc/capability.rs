//! Process capability: how the process spread compares with the
//! specification, as Cp, Cpk (short-term σ, within subgroups) and Pp, Ppk
//! (long-term σ, all values), Cpm (distance from target), each with a
//! confidence interval, the expected parts per million out of
//! specification, and an Anderson–Darling normality test, because every
//! index assumes normal data.
//!
//! Intervals: Cp, Pp from the χ² distribution of the variance (n − 1
//! degrees of freedom); Cpk, Ppk by Bissell's normal approximation
//! `Ĉ ± z·√(1/(9n) + Ĉ²/(2(n−1)))`; Cpm by Boyles' χ² with
//! `ν = n(1 + ξ²)² / (1 + 2ξ²)`, `ξ = (μ − T)/σ`.

use super::chart::{SpcError, sample_sd};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// Specification limits (either may be absent) and the target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Lower specification limit.
    pub lower: Option<f64>,
    /// Upper specification limit.
    pub upper: Option<f64>,
    /// Target (default: the middle of two-sided limits).
    pub target: Option<f64>,
}

impl Spec {
    /// Two-sided limits.
    #[must_use]
    pub fn two_sided(lower: f64, upper: f64) -> Self {
        Spec { lower: Some(lower), upper: Some(upper), target: None }
    }

    fn validate(&self) -> Result<(), SpcError> {
        if self.lower.is_none() && self.upper.is_none() {
            return Err(SpcError::Invalid("capability needs a lower or an upper specification limit".into()));
        }
        if self.lower.iter().chain(&self.upper).chain(&self.target).any(|v| !v.is_finite()) {
            return Err(SpcError::Invalid("specification limits must be finite numbers".into()));
        }
        if let (Some(lower), Some(upper)) = (self.lower, self.upper)
            && lower >= upper
        {
            return Err(SpcError::Invalid(format!(
                "the lower specification limit ({lower}) must be below the upper ({upper}); are they reversed?"
            )));
        }
        Ok(())
    }

    fn target(&self) -> Option<f64> {
        self.target.or(match (self.lower, self.upper) {
            (Some(l), Some(u)) => Some((l + u) / 2.0),
            _ => None,
        })
    }
}

/// An index with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// The estimate.
    pub value: f64,
    /// Lower confidence bound.
    pub lower: f64,
    /// Upper confidence bound.
    pub upper: f64,
}

/// The Anderson–Darling test of normality.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normality {
    /// A² (mean and σ estimated from the data).
    pub statistic: f64,
    /// A² with Stephens' small-sample correction `(1 + 0.75/n + 2.25/n²)`.
    pub adjusted: f64,
    /// p-value (D'Agostino and Stephens, 1986): small means "not normal".
    pub p_value: f64,
}

/// Capability of a process against its specification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    /// Values.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Short-term σ (within subgroups, from the chart).
    pub sigma_within: f64,
    /// Long-term σ (sample standard deviation of all values).
    pub sigma_overall: f64,
    /// Confidence level of the intervals.
    pub confidence: f64,
    /// Cp (two-sided specifications only).
    pub cp: Option<Index>,
    /// Cpk.
    pub cpk: Index,
    /// Pp (two-sided specifications only).
    pub pp: Option<Index>,
    /// Ppk.
    pub ppk: Index,
    /// Cpm (needs a target: given, or the middle of two-sided limits).
    pub cpm: Option<Index>,
    /// Expected parts per million out of specification, from the short-term σ.
    pub ppm_within: f64,
    /// Expected parts per million out of specification, from the long-term σ.
    pub ppm_overall: f64,
    /// Observed parts per million out of specification.
    pub ppm_observed: f64,
    /// Normality test.
    pub normality: Normality,
    /// Why the indices may mislead, for the reader.
    pub warnings: Vec<String>,
}

impl Capability {
    /// The indices that apply (Cp, Pp and Cpm need two-sided limits), by name, in report order.
    #[must_use]
    pub fn indices(&self) -> Vec<(&'static str, Index)> {
        [("Cp", self.cp), ("Cpk", Some(self.cpk)), ("Pp", self.pp), ("Ppk", Some(self.ppk)), ("Cpm", self.cpm)]
            .into_iter()
            .filter_map(|(name, index)| index.map(|i| (name, i)))
            .collect()
    }
}

/// Capability of `values` against `spec`, with the short-term σ of its
/// control chart (`sigma_within`) and intervals at `confidence`.
///
/// # Errors
/// [`SpcError`] with fewer than 8 values, non-finite values, no or
/// reversed specification limits, a σ that is not above zero (a constant
/// process) or a confidence outside (0, 1).
pub fn capability(values: &[f64], sigma_within: f64, spec: &Spec, confidence: f64) -> Result<Capability, SpcError> {
    spec.validate()?;
    if values.len() < 8 {
        return Err(SpcError::TooFew { chart: "capability", what: "values", needed: 8, got: values.len() });
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(SpcError::Invalid("capability: every value must be a finite number".into()));
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(SpcError::Invalid(format!("capability: confidence must be in (0, 1), got {confidence}")));
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let sigma_overall = sample_sd(values);
    if !(sigma_within > 0.0 && sigma_overall > 0.0) {
        return Err(SpcError::Invalid(
            "capability: the process shows no variation (σ = 0), so the indices are undefined".into(),
        ));
    }
    let normal = Normal::standard();
    let z = normal.inverse_cdf(0.5 + confidence / 2.0);
    let dof = (n - 1) as f64;
    let chi_interval = |value: f64, dof: f64| -> Index {
        let (low, high) = ChiSquared::new(dof)
            .map(|chi| (chi.inverse_cdf((1.0 - confidence) / 2.0), chi.inverse_cdf((1.0 + confidence) / 2.0)))
            .unwrap_or((f64::NAN, f64::NAN));
        Index { value, lower: value * (low / dof).sqrt(), upper: value * (high / dof).sqrt() }
    };
    let bissell = |value: f64| -> Index {
        let half = z * (1.0 / (9.0 * n as f64) + value * value / (2.0 * dof)).sqrt();
        Index { value, lower: value - half, upper: value + half }
    };
    let spread = |sigma: f64| match (spec.lower, spec.upper) {
        (Some(l), Some(u)) => Some((u - l) / (6.0 * sigma)),
        _ => None,
    };
    let k_index = |sigma: f64| {
        let upper = spec.upper.map(|u| (u - mean) / (3.0 * sigma));
        let lower = spec.lower.map(|l| (mean - l) / (3.0 * sigma));
        upper.into_iter().chain(lower).fold(f64::INFINITY, f64::min)
    };
    let out_of_spec = |sigma: f64| {
        let below = spec.lower.map_or(0.0, |l| normal.cdf((l - mean) / sigma));
        let above = spec.upper.map_or(0.0, |u| 1.0 - normal.cdf((u - mean) / sigma));
        1e6 * (below + above)
    };
    let observed =
        values.iter().filter(|v| spec.lower.is_some_and(|l| **v < l) || spec.upper.is_some_and(|u| **v > u)).count();
    let cpm = match (spec.target(), spec.lower, spec.upper) {
        (Some(target), Some(l), Some(u)) => {
            let tau = (sigma_overall * sigma_overall + (mean - target) * (mean - target)).sqrt();
            let xi = (mean - target) / sigma_overall;
            let boyles_dof = n as f64 * (1.0 + xi * xi).powi(2) / (1.0 + 2.0 * xi * xi);
            Some(chi_interval((u - l) / (6.0 * tau), boyles_dof))
        }
        _ => None,
    };
    let normality = anderson_darling(values, mean, sigma_overall);
    let mut warnings = Vec::new();
    if normality.p_value < 0.05 {
        warnings.push(format!(
            "the values are not normal (Anderson–Darling p = {:.4}): the indices and expected ppm assume \
             normality and may mislead; look at the histogram",
            normality.p_value
        ));
    }
    if sigma_overall > 1.5 * sigma_within {
        warnings.push(format!(
            "long-term σ ({sigma_overall:.4}) is {:.1}× the short-term σ ({sigma_within:.4}): the process \
             drifts between subgroups, so Cp/Cpk overstate what it delivers (see Pp/Ppk)",
            sigma_overall / sigma_within
        ));
    }
    if n < 30 {
        warnings.push(format!("only {n} values: the intervals are wide"));
    }
    Ok(Capability {
        n,
        mean,
        sigma_within,
        sigma_overall,
        confidence,
        cp: spread(sigma_within).map(|v| chi_interval(v, dof)),
        cpk: bissell(k_index(sigma_within)),
        pp: spread(sigma_overall).map(|v| chi_interval(v, dof)),
        ppk: bissell(k_index(sigma_overall)),
        cpm,
        ppm_within: out_of_spec(sigma_within),
        ppm_overall: out_of_spec(sigma_overall),
        ppm_observed: 1e6 * observed as f64 / n as f64,
        normality,
        warnings,
    })
}

/// The Anderson–Darling normality test with estimated mean and σ.
#[must_use]
pub fn anderson_darling(values: &[f64], mean: f64, sigma: f64) -> Normality {
    let normal = Normal::standard();
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let nf = n as f64;
    // Clamp so that ln never sees 0 (a value beyond ±38σ).
    let cdf = |x: f64| normal.cdf((x - mean) / sigma).clamp(1e-300, 1.0 - 1e-16);
    let sum: f64 =
        (0..n).map(|i| (2 * i + 1) as f64 * (cdf(sorted[i]).ln() + (1.0 - cdf(sorted[n - 1 - i])).ln())).sum();
    let statistic = -nf - sum / nf;
    let adjusted = statistic * (1.0 + 0.75 / nf + 2.25 / (nf * nf));
    let p_value = if adjusted >= 0.6 {
        (1.2937 - 5.709 * adjusted + 0.0186 * adjusted * adjusted).exp()
    } else if adjusted >= 0.34 {
        (0.9177 - 4.279 * adjusted - 1.38 * adjusted * adjusted).exp()
    } else if adjusted >= 0.2 {
        1.0 - (-8.318 + 42.796 * adjusted - 59.938 * adjusted * adjusted).exp()
    } else {
        1.0 - (-13.436 + 101.14 * adjusted - 223.73 * adjusted * adjusted).exp()
    };
    Normality { statistic, adjusted, p_value: p_value.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 15 values; mean 10.02, sample SD 0.2177810 and A² = 0.1891022 by
    /// numpy / scipy.stats.anderson (scipy 1.17).
    const VALUES: [f64; 15] = [9.8, 10.2, 10.1, 9.9, 10.0, 10.3, 9.7, 10.1, 10.0, 9.9, 10.2, 10.4, 9.6, 10.0, 10.1];

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn indices_match_their_definitions() {
        let sd = 0.217_781_017_144_680_1;
        let c = capability(&VALUES, 0.2, &Spec::two_sided(9.4, 10.6), 0.95).unwrap();
        assert!(close(c.mean, 10.02, 1e-12) && close(c.sigma_overall, sd, 1e-12));
        let cp = c.cp.unwrap();
        assert!(close(cp.value, 1.2 / 1.2, 1e-12), "Cp = 1.2 / (6·0.2)");
        assert!(close(c.cpk.value, 0.58 / 0.6, 1e-12), "Cpk = (10.6 − 10.02) / (3·0.2)");
        assert!(close(c.pp.unwrap().value, 1.2 / (6.0 * sd), 1e-12));
        assert!(close(c.ppk.value, 0.58 / (3.0 * sd), 1e-12));
        // Cpm: τ = √(sd² + 0.02²), target 10.0.
        let tau = (sd * sd + 0.0004f64).sqrt();
        assert!(close(c.cpm.unwrap().value, 1.2 / (6.0 * tau), 1e-12));
        // Cp interval: χ²(14) quantiles 5.628726, 26.118948 (scipy.stats.chi2.ppf).
        assert!(close(cp.lower, (5.628_726_103 / 14.0f64).sqrt(), 1e-6), "{cp:?}");
        assert!(close(cp.upper, (26.118_948_045 / 14.0f64).sqrt(), 1e-6), "{cp:?}");
        // Cpk interval (Bissell): ± 1.959964·√(1/135 + Cpk²/28).
        let cpk = 0.58 / 0.6;
        let half = 1.959_964 * (1.0 / 135.0 + cpk * cpk / 28.0f64).sqrt();
        assert!(close(c.cpk.lower, cpk - half, 1e-5) && close(c.cpk.upper, cpk + half, 1e-5));
        // Expected ppm (within): Φ((9.4 − 10.02)/0.2 = −3.1) + 1 − Φ(2.9) = 967.603 + 1865.813 ppm (normal tables).
        assert!(close(c.ppm_within, 967.603 + 1865.813, 0.01), "{}", c.ppm_within);
        assert_eq!(c.ppm_observed, 0.0);
    }

    #[test]
    fn anderson_darling_matches_scipy_and_the_published_p_value_formula() {
        let ad = anderson_darling(&VALUES, 10.02, 0.217_781_017_144_680_1);
        assert!(close(ad.statistic, 0.189_102_193_19, 1e-9), "{ad:?}");
        // A*² = 0.2004483 falls in 0.2 ≤ A* < 0.34: p = 1 − exp(−8.318 + 42.796 A* − 59.938 A*²) = 0.88325.
        assert!(close(ad.adjusted, 0.200_448_324_78, 1e-9));
        assert!(close(ad.p_value, 0.88325, 1e-4), "{ad:?}");
        let skewed: Vec<f64> = (0..40).map(|i| (3.0 * f64::from(i) / 39.0).exp()).collect();
        let mean = skewed.iter().sum::<f64>() / 40.0;
        let sd = sample_sd(&skewed);
        let ad = anderson_darling(&skewed, mean, sd);
        assert!(close(ad.statistic, 1.881_659_373, 1e-6), "scipy gives 1.8816594: {ad:?}");
        assert!(ad.p_value < 0.001);
    }

    #[test]
    fn non_normal_and_drifting_processes_are_flagged() {
        let skewed: Vec<f64> = (0..40).map(|i| (3.0 * f64::from(i) / 39.0).exp()).collect();
        let c = capability(&skewed, 1.0, &Spec::two_sided(0.0, 40.0), 0.95).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("not normal")), "{:?}", c.warnings);
        assert!(c.warnings.iter().any(|w| w.contains("drifts")), "{:?}", c.warnings);
    }

    #[test]
    fn one_sided_specifications() {
        let c = capability(&VALUES, 0.2, &Spec { lower: None, upper: Some(10.6), target: None }, 0.95).unwrap();
        assert!(c.cp.is_none() && c.pp.is_none() && c.cpm.is_none());
        assert!(close(c.cpk.value, 0.58 / 0.6, 1e-12), "CPU only");
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let reversed = capability(&VALUES, 0.2, &Spec::two_sided(10.6, 9.4), 0.95);
        assert!(matches!(reversed, Err(SpcError::Invalid(m)) if m.contains("reversed")));
        let none = capability(&VALUES, 0.2, &Spec { lower: None, upper: None, target: None }, 0.95);
        assert!(none.is_err());
        assert!(matches!(
            capability(&VALUES[..5], 0.2, &Spec::two_sided(9.0, 11.0), 0.95),
            Err(SpcError::TooFew { .. })
        ));
        let flat = [5.0; 20];
        assert!(
            matches!(capability(&flat, 0.0, &Spec::two_sided(4.0, 6.0), 0.95), Err(SpcError::Invalid(m)) if m.contains("no variation"))
        );
    }
}
