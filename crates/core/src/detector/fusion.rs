//! Score fusion: several detectors as one.
//!
//! Each member's score is divided by its own `quantile` on the baseline
//! (so 1.0 means "as unusual as the baseline's `quantile`" for every member),
//! measured out of sample: members fitted on the first 80 % of the baseline
//! score the last 20 % (in-sample scores would flatter detectors that
//! memorise, like MSET), then learn the whole baseline;
//! and the fused score is the largest of those ratios: an alarm from any
//! member is an alarm, and its contributions explain it. Members learn the
//! same baseline; streaming members keep their own state.
//!
//! Streaming members that warm up on the stream itself (no baseline, as in
//! NAB) can be given fixed `scales` instead: each member's score is divided
//! by its scale and nothing is measured.

use super::{
    AnyDetector, Detector, DetectorConfig, DetectorError, DetectorKind, FlatlineConfig, KnnCadConfig, PcaConfig,
    RobustZConfig, Score, check_rows, refuse_invalid,
};
use crate::stats::quantile;
use crate::threshold::ThresholdConfig;
use serde::{Deserialize, Serialize};

/// Settings of [`Fusion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    /// The member detectors.
    pub members: Vec<DetectorConfig>,
    /// Each member's score is scaled by this quantile of its baseline scores.
    #[serde(default = "default_quantile")]
    pub quantile: f64,
    /// Fixed scales, one per member (empty: measured on the baseline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scales: Vec<f64>,
}

fn default_quantile() -> f64 {
    0.99
}

/// No members (not valid on its own: a configuration names them).
impl Default for FusionConfig {
    fn default() -> Self {
        FusionConfig { members: Vec::new(), quantile: default_quantile(), scales: Vec::new() }
    }
}

impl FusionConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.members.is_empty() {
            problems.push("fusion.members must name at least one detector".into());
        }
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            problems.push(format!("fusion.quantile must be in (0, 1), got {}", self.quantile));
        }
        if !self.scales.is_empty() && self.scales.len() != self.members.len() {
            problems.push(format!(
                "fusion.scales must give one scale per member ({}), got {}",
                self.members.len(),
                self.scales.len()
            ));
        }
        if self.scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            problems.push("fusion.scales must be finite and above 0".into());
        }
        for (i, member) in self.members.iter().enumerate() {
            problems.extend(member.validate().into_iter().map(|p| format!("fusion.members[{i}]: {p}")));
        }
        problems
    }
}

/// Score fusion detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fusion {
    quantile: f64,
    /// Whether the scales are fixed by the settings.
    #[serde(default)]
    fixed: bool,
    members: Vec<AnyDetector>,
    /// Baseline quantile of each member's scores.
    scales: Vec<f64>,
}

impl Fusion {
    /// Unfitted members.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings
    /// and the members' settings.
    pub fn new(config: &FusionConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        let members = config.members.iter().map(DetectorConfig::build).collect::<Result<Vec<_>, _>>()?;
        let fixed = !config.scales.is_empty();
        let scales = if fixed { config.scales.clone() } else { vec![1.0; members.len()] };
        Ok(Fusion { quantile: config.quantile, fixed, scales, members })
    }
}

impl Detector for Fusion {
    /// Measure each member's scale out of sample (unless fixed), then let
    /// it learn the whole baseline.
    ///
    /// # Errors
    /// The first member's learning error.
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        check_rows(rows, 1)?;
        if self.fixed {
            return self.members.iter_mut().try_for_each(|member| member.learn(rows));
        }
        let cut = rows.len() * 4 / 5;
        for (member, scale) in self.members.iter_mut().zip(self.scales.iter_mut()) {
            let mut probe = member.clone();
            // Too few rows to hold any out: fall back to in-sample scores.
            let (fit, held) = if probe.learn(&rows[..cut]).is_ok() && cut < rows.len() {
                (true, &rows[cut..])
            } else {
                (false, rows)
            };
            member.learn(rows)?;
            if !fit {
                probe = member.clone();
            }
            let scores: Vec<f64> = held.iter().filter_map(|r| probe.score(r).ok()).map(|s| s.value).collect();
            *scale = quantile(&scores, self.quantile).filter(|q| *q > 1e-12).unwrap_or(1.0);
        }
        Ok(())
    }

    /// The largest scaled member score, explained by that member.
    ///
    /// # Errors
    /// The first member's scoring error.
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        let mut best: Option<Score> = None;
        for (member, scale) in self.members.iter_mut().zip(&self.scales) {
            let mut score = member.score(row)?;
            score.value /= scale;
            score.contributions.iter_mut().for_each(|c| *c /= scale);
            if best.as_ref().is_none_or(|b| score.value > b.value) {
                best = Some(score);
            }
        }
        best.ok_or(DetectorError::NotFitted)
    }
}

impl DetectorKind for Fusion {
    type Config = FusionConfig;
    const NAME: &'static str = "fusion";
    const SUMMARY: &'static str = "Several detectors as one: the largest of their baseline-scaled scores.";

    fn validate(config: &FusionConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &FusionConfig) -> Result<Self, DetectorError> {
        Self::new(config)
    }

    fn min_baseline_rows(config: &FusionConfig) -> usize {
        config.members.iter().map(DetectorConfig::min_baseline_rows).max().unwrap_or(0)
    }

    fn baseline_words() -> String {
        "its members' largest".to_string()
    }

    fn default_threshold(_config: &FusionConfig) -> ThresholdConfig {
        // Fused scores are ratios to each member's baseline quantile.
        ThresholdConfig::fixed(1.5)
    }

    fn saturates_outside_range(config: &FusionConfig) -> bool {
        config.members.iter().any(DetectorConfig::saturates_outside_range)
    }

    fn examples() -> Vec<FusionConfig> {
        vec![
            FusionConfig {
                members: vec![DetectorConfig::Pca(PcaConfig::default()), DetectorConfig::RobustZ(RobustZConfig::default())],
                quantile: 0.99,
                scales: Vec::new(),
            },
            FusionConfig {
                members: vec![
                    DetectorConfig::KnnCad(KnnCadConfig { window: 1, reference: 300, k: 5, calibration: 100 }),
                    DetectorConfig::Flatline(FlatlineConfig::default()),
                ],
                quantile: 0.99,
                scales: vec![0.99, 1.0],
            },
        ]
    }
}
