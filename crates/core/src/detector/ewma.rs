//! EWMA residual: how far a value is from its exponentially weighted
//! forecast, in units of the exponentially weighted residual spread.
//!
//! Cheap (two numbers per signal), causal, and it follows slow normal drift
//! while flagging steps and spikes. The score of a value uses the level and
//! spread before the value; then both are updated with it.

use super::{Detector, DetectorError, DetectorKind, Score, check_row, check_rows, max_of, refuse_invalid};
use crate::threshold::ThresholdConfig;
use serde::{Deserialize, Serialize};

/// Settings of [`Ewma`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EwmaConfig {
    /// Smoothing of the level, in (0, 1]: larger follows faster.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Smoothing of the residual variance, in (0, 1].
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Values per signal before it is scored (score 0 before).
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
}

fn default_alpha() -> f64 {
    0.1
}
fn default_beta() -> f64 {
    0.02
}
fn default_min_samples() -> usize {
    20
}

impl Default for EwmaConfig {
    fn default() -> Self {
        EwmaConfig { alpha: default_alpha(), beta: default_beta(), min_samples: default_min_samples() }
    }
}

impl EwmaConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, value) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(value > 0.0 && value <= 1.0) {
                problems.push(format!("ewma.{name} must be in (0, 1], got {value}"));
            }
        }
        if self.min_samples < 2 {
            problems.push(format!("ewma.min_samples must be at least 2, got {}", self.min_samples));
        }
        problems
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Level {
    level: f64,
    variance: f64,
    seen: usize,
}

/// EWMA residual detector, one level and spread per signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    config: EwmaConfig,
    levels: Vec<Level>,
}

impl Ewma {
    /// An empty detector; it warms up while scoring or from `learn`.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: EwmaConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(Ewma { config, levels: Vec::new() })
    }

    fn update(level: &mut Level, value: f64, config: &EwmaConfig) {
        if !value.is_finite() {
            return;
        }
        if level.seen == 0 {
            level.level = value;
            level.variance = 0.0;
        } else {
            let residual = value - level.level;
            // Until min_samples, use running averages so early values do not dominate.
            let n = (level.seen + 1) as f64;
            let (alpha, beta) = if level.seen < config.min_samples {
                (config.alpha.max(1.0 / n), config.beta.max(1.0 / n))
            } else {
                (config.alpha, config.beta)
            };
            level.variance = (1.0 - beta) * level.variance + beta * residual * residual;
            level.level += alpha * residual;
        }
        level.seen += 1;
    }
}

impl Detector for Ewma {
    /// Run the baseline through the smoother.
    ///
    /// # Errors
    /// See [`super::Detector::learn`].
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, 1)?;
        self.levels = vec![Level::default(); width];
        for row in rows {
            for (value, level) in row.iter().zip(self.levels.iter_mut()) {
                Self::update(level, *value, &self.config);
            }
        }
        Ok(())
    }

    /// Score a row against the forecasts, then update them.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        if self.levels.is_empty() {
            self.levels = vec![Level::default(); row.len()];
        }
        check_row(row, self.levels.len())?;
        let config = &self.config;
        let contributions = row
            .iter()
            .zip(self.levels.iter_mut())
            .map(|(value, level)| {
                let z = if value.is_finite() && level.seen >= config.min_samples {
                    let spread = level.variance.sqrt().max(1e-9 * level.level.abs().max(1.0));
                    (value - level.level).abs() / spread
                } else {
                    0.0
                };
                Self::update(level, *value, config);
                z
            })
            .collect();
        Ok(max_of(contributions))
    }
}

impl DetectorKind for Ewma {
    type Config = EwmaConfig;
    const NAME: &'static str = "ewma";
    const SUMMARY: &'static str = "Exponentially weighted moving average residual per signal (streaming).";

    fn validate(config: &EwmaConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &EwmaConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(_config: &EwmaConfig) -> usize {
        0
    }

    fn default_threshold(_config: &EwmaConfig) -> ThresholdConfig {
        // Scores are sigmas.
        ThresholdConfig::fixed(6.0)
    }

    fn examples() -> Vec<EwmaConfig> {
        vec![EwmaConfig::default()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_is_flagged_then_absorbed() {
        let mut det = Ewma::new(EwmaConfig::default()).unwrap();
        let baseline: Vec<Vec<f64>> = (0..200).map(|i| vec![10.0 + ((i * 7) % 11) as f64 * 0.1]).collect();
        det.learn(&baseline).unwrap();
        assert!(det.score(&[10.5]).unwrap().value < 3.0);
        assert!(det.score(&[20.0]).unwrap().value > 10.0);
        for _ in 0..300 {
            det.score(&[20.0]).unwrap();
        }
        assert!(det.score(&[20.0]).unwrap().value < 1.0, "a new level becomes normal");
    }
}
