//! Flatline (stuck signal) detection, streaming.
//!
//! A sensor that freezes, a key held down, a PLC tag that stops updating:
//! the value repeats exactly while the process goes on. Spread-based
//! detectors see nothing wrong (a frozen value is a normal value), so this
//! one watches run lengths instead. Per signal it tracks the current run of
//! values within `tolerance` of the value that began it and the longest run it has seen
//! end; the score is `run / max(longest, min_run)`, so above 1 means "frozen
//! longer than ever before, and at least `min_run` values". A run that began
//! with the first value the detector saw does not set the record (its start
//! is unknown), so a signal flat from the beginning is its own normal.
//! Causal: each value is scored against runs that ended before it. Missing
//! values neither extend nor break a run.

use super::{Detector, DetectorError, DetectorKind, Score, check_row, check_rows, refuse_invalid};
use crate::threshold::ThresholdConfig;
use serde::{Deserialize, Serialize};

/// Settings of [`Flatline`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlatlineConfig {
    /// Shortest run that can score above 1 (values, not time).
    #[serde(default = "default_min_run")]
    pub min_run: usize,
    /// Largest change that still counts as "unchanged" (0: exactly equal).
    #[serde(default)]
    pub tolerance: f64,
}

fn default_min_run() -> usize {
    10
}

impl Default for FlatlineConfig {
    fn default() -> Self {
        FlatlineConfig { min_run: default_min_run(), tolerance: 0.0 }
    }
}

impl FlatlineConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.min_run < 2 {
            problems.push(format!("flatline.min_run must be at least 2, got {}", self.min_run));
        }
        if !(self.tolerance >= 0.0 && self.tolerance.is_finite()) {
            problems.push(format!("flatline.tolerance must be a finite value of at least 0, got {}", self.tolerance));
        }
        problems
    }
}

/// One signal's runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Runs {
    /// Value the current run holds (None before the first value).
    value: Option<f64>,
    /// Length of the current run.
    run: usize,
    /// Whether the current run began with the first value seen.
    from_start: bool,
    /// Longest run seen to its end (None until one has).
    longest: Option<usize>,
}

impl Runs {
    /// Take a value; its run's ratio to the record (0 without a record).
    fn step(&mut self, x: f64, config: &FlatlineConfig) -> f64 {
        match self.value {
            Some(held) if (x - held).abs() <= config.tolerance => self.run += 1,
            Some(_) => {
                if !self.from_start {
                    self.longest = Some(self.longest.map_or(self.run, |l| l.max(self.run)));
                }
                *self = Runs { value: Some(x), run: 1, from_start: false, longest: self.longest };
            }
            None => *self = Runs { value: Some(x), run: 1, from_start: true, longest: None },
        }
        self.ratio(config)
    }

    fn ratio(&self, config: &FlatlineConfig) -> f64 {
        match self.longest {
            Some(longest) if !self.from_start => self.run as f64 / longest.max(config.min_run) as f64,
            _ => 0.0,
        }
    }
}

/// Flatline detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flatline {
    config: FlatlineConfig,
    signals: Vec<Runs>,
}

impl Flatline {
    /// A detector that has seen nothing; it learns while scoring or from `learn`.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: FlatlineConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(Flatline { config, signals: Vec::new() })
    }

    fn step(&mut self, row: &[f64]) -> Vec<f64> {
        let config = &self.config;
        self.signals
            .iter_mut()
            .zip(row)
            .map(|(runs, x)| if x.is_finite() { runs.step(*x, config) } else { 0.0 })
            .collect()
    }
}

impl Detector for Flatline {
    /// Replay the baseline: its runs set the records.
    ///
    /// # Errors
    /// See [`super::Detector::learn`].
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, 1)?;
        self.signals = vec![Runs::default(); width];
        for row in rows {
            self.step(row);
        }
        Ok(())
    }

    /// Score a row (the largest ratio of its signals; each signal's ratio is
    /// its contribution), then count it into the runs.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        if self.signals.is_empty() {
            self.signals = vec![Runs::default(); row.len()];
        }
        check_row(row, self.signals.len())?;
        let contributions = self.step(row);
        let value = contributions.iter().copied().fold(0.0, f64::max);
        Ok(Score { value, contributions, t2: None, spe: None, statistics: Vec::new() })
    }
}

impl DetectorKind for Flatline {
    type Config = FlatlineConfig;
    const NAME: &'static str = "flatline";
    const SUMMARY: &'static str = "Stuck signals: runs of unchanged values longer than any before (streaming).";

    fn validate(config: &FlatlineConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &FlatlineConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(_config: &FlatlineConfig) -> usize {
        0
    }

    fn default_threshold(_config: &FlatlineConfig) -> ThresholdConfig {
        // Scores are ratios to the longest run before: 1 is the record.
        ThresholdConfig::fixed(1.0)
    }

    fn examples() -> Vec<FlatlineConfig> {
        vec![FlatlineConfig::default(), FlatlineConfig { min_run: 3, tolerance: 0.01 }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(config: FlatlineConfig, values: &[f64]) -> Vec<f64> {
        let mut detector = Flatline::new(config).unwrap();
        values.iter().map(|v| detector.score(&[*v]).unwrap().value).collect()
    }

    #[test]
    fn a_run_longer_than_every_earlier_one_scores_above_one() {
        // Runs of 3 (from the start: no record), 4, 2, then a freeze of 12.
        let mut values = vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0];
        values.extend([4.0; 12]);
        values.push(5.0);
        let s = scores(FlatlineConfig { min_run: 5, tolerance: 0.0 }, &values);
        assert_eq!(s[..7], [0.0; 7], "no run has ended before the second run ends");
        assert_eq!(s[7], 1.0 / 5.0, "record 4, but at least min_run");
        let freeze = &s[9..21];
        assert!(freeze.windows(2).all(|w| w[1] > w[0]), "a freeze scores higher as it lasts: {freeze:?}");
        assert_eq!(freeze[4], 1.0, "5 equal values: as long as min_run");
        assert_eq!(freeze[11], 12.0 / 5.0);
        assert_eq!(s[21], 1.0 / 12.0, "the freeze is the new record");
    }

    #[test]
    fn flat_from_the_start_is_normal_and_noise_never_freezes() {
        let flat = scores(FlatlineConfig::default(), &[7.0; 500]);
        assert!(flat.iter().all(|s| *s == 0.0));
        let mut random = crate::stats::SeededNormal::new(5);
        let noise: Vec<f64> = (0..2000).map(|_| random.normal()).collect();
        let s = scores(FlatlineConfig::default(), &noise);
        assert!(s.iter().all(|v| *v <= 0.1 + 1e-12), "{:?}", s.iter().copied().fold(0.0, f64::max));
    }

    #[test]
    fn tolerance_and_missing_values() {
        let config = FlatlineConfig { min_run: 2, tolerance: 0.05 };
        // 1.0 then 0.0 ±0.04: one run despite the jitter and the gap.
        let mut detector = Flatline::new(config).unwrap();
        let s: Vec<f64> = [1.0, 2.0, 0.0, 0.04, f64::NAN, -0.01, 0.02]
            .iter()
            .map(|v| match detector.score(&[*v]) {
                Err(DetectorError::NoData) => -1.0,
                other => other.unwrap().value,
            })
            .collect();
        assert_eq!(s[4], -1.0, "a row with no value is an error");
        assert_eq!(s[6], 2.0, "a run of 4 against the record of 1, at least min_run 2: {s:?}");
    }

    #[test]
    fn invalid_settings_are_reported() {
        assert_eq!(FlatlineConfig { min_run: 1, tolerance: -1.0 }.validate().len(), 2);
        assert!(FlatlineConfig::default().validate().is_empty());
    }
}
