//! Robust z-score on a rolling window: |x − median| / (1.4826 · MAD).
//!
//! The median and MAD of each signal's last `window` values barely move when
//! a few outliers enter the window, unlike a mean and standard deviation, so
//! a spike does not hide the next one. Causal: a value is scored against the
//! window of values before it, then enters the window.

use super::{Detector, DetectorError, DetectorKind, Score, check_row, check_rows, max_of, refuse_invalid};
use crate::stats::MAD_TO_SIGMA;
use crate::threshold::ThresholdConfig;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Settings of [`RobustZ`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobustZConfig {
    /// Values per signal in the rolling window.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Values needed in the window before a signal is scored (score 0 before).
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
}

fn default_window() -> usize {
    120
}
fn default_min_samples() -> usize {
    20
}

impl Default for RobustZConfig {
    fn default() -> Self {
        RobustZConfig { window: default_window(), min_samples: default_min_samples() }
    }
}

impl RobustZConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.window < 3 {
            problems.push(format!("robust_z.window must be at least 3, got {}", self.window));
        }
        if self.min_samples < 3 || self.min_samples > self.window {
            problems.push(format!(
                "robust_z.min_samples must be between 3 and window ({}), got {}",
                self.window, self.min_samples
            ));
        }
        problems
    }
}

/// One signal's rolling window, kept both in arrival order and sorted. A
/// stored one is checked when read: the two orders must hold the same
/// finite values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredWindow")]
struct RollingWindow {
    arrival: VecDeque<f64>,
    sorted: Vec<f64>,
}

/// A window as stored, before [`RollingWindow`] accepts it.
#[derive(Deserialize)]
struct StoredWindow {
    arrival: VecDeque<f64>,
    sorted: Vec<f64>,
}

impl TryFrom<StoredWindow> for RollingWindow {
    type Error = String;

    fn try_from(stored: StoredWindow) -> Result<Self, String> {
        let mut expected: Vec<f64> = stored.arrival.iter().copied().collect();
        expected.sort_by(f64::total_cmp);
        let same = expected.len() == stored.sorted.len()
            && expected.iter().zip(&stored.sorted).all(|(a, b)| a.to_bits() == b.to_bits())
            && expected.iter().all(|v| v.is_finite());
        if !same {
            return Err("a stored robust_z window's sorted values are not its values sorted".into());
        }
        Ok(RollingWindow { arrival: stored.arrival, sorted: stored.sorted })
    }
}

impl RollingWindow {
    fn push(&mut self, value: f64, capacity: usize) {
        if self.arrival.len() == capacity
            && let Some(oldest) = self.arrival.pop_front()
        {
            let at = self.sorted.partition_point(|v| *v < oldest);
            self.sorted.remove(at);
        }
        self.arrival.push_back(value);
        let at = self.sorted.partition_point(|v| *v < value);
        self.sorted.insert(at, value);
    }

    fn median(&self) -> f64 {
        let n = self.sorted.len();
        if n % 2 == 1 { self.sorted[n / 2] } else { 0.5 * (self.sorted[n / 2 - 1] + self.sorted[n / 2]) }
    }

    /// Median absolute deviation from `median`, by walking outward from the
    /// median in the sorted window (the deviations on each side are sorted).
    fn mad(&self, median: f64) -> f64 {
        let n = self.sorted.len();
        let split = self.sorted.partition_point(|v| *v < median);
        let (mut left, mut right) = (split, split);
        let mut kth = |k: usize| {
            let mut last = 0.0;
            for _ in 0..k {
                let from_left = (left > 0).then(|| median - self.sorted[left - 1]);
                let from_right = (right < n).then(|| self.sorted[right] - median);
                last = match (from_left, from_right) {
                    (Some(l), Some(r)) if l <= r => {
                        left -= 1;
                        l
                    }
                    (_, Some(r)) => {
                        right += 1;
                        r
                    }
                    (Some(l), None) => {
                        left -= 1;
                        l
                    }
                    (None, None) => break,
                };
            }
            last
        };
        if n % 2 == 1 {
            kth(n / 2 + 1)
        } else {
            let lower = kth(n / 2);
            let upper = kth(1);
            0.5 * (lower + upper)
        }
    }

    /// Robust scale: MAD, falling back to the mean absolute deviation for
    /// quantised signals whose MAD is 0, and to a tiny floor for constants.
    fn scale(&self, median: f64) -> f64 {
        let mad = self.mad(median) * MAD_TO_SIGMA;
        if mad > 0.0 {
            return mad;
        }
        let mean_abs = self.sorted.iter().map(|v| (v - median).abs()).sum::<f64>() / self.sorted.len() as f64;
        if mean_abs > 0.0 {
            // 1.2533 = sqrt(pi/2): mean absolute deviation to sigma for a normal.
            return mean_abs * 1.253_314_137_315_500_3;
        }
        1e-9 * median.abs().max(1.0)
    }
}

/// Rolling robust z-score detector, one window per signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredRobustZ")]
pub struct RobustZ {
    config: RobustZConfig,
    windows: Vec<RollingWindow>,
}

/// A detector as stored, before [`RobustZ`] accepts it.
#[derive(Deserialize)]
struct StoredRobustZ {
    config: RobustZConfig,
    windows: Vec<RollingWindow>,
}

impl TryFrom<StoredRobustZ> for RobustZ {
    type Error = String;

    fn try_from(stored: StoredRobustZ) -> Result<Self, String> {
        refuse_invalid(stored.config.validate()).map_err(|e| e.to_string())?;
        if stored.windows.iter().any(|w| w.arrival.len() > stored.config.window) {
            return Err("a stored robust_z window holds more values than its setting".into());
        }
        Ok(RobustZ { config: stored.config, windows: stored.windows })
    }
}

impl RobustZ {
    /// An empty detector; it warms up while scoring or from `learn`.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: RobustZConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(RobustZ { config, windows: Vec::new() })
    }

    fn push_row(&mut self, row: &[f64]) {
        for (value, window) in row.iter().zip(self.windows.iter_mut()) {
            if value.is_finite() {
                window.push(*value, self.config.window);
            }
        }
    }
}

impl Detector for RobustZ {
    /// Fill the windows with the last `window` baseline values per signal.
    ///
    /// # Errors
    /// See [`super::Detector::learn`].
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, 1)?;
        self.windows = vec![RollingWindow::default(); width];
        let start = rows.len().saturating_sub(self.config.window);
        for row in &rows[start..] {
            self.push_row(row);
        }
        Ok(())
    }

    /// Score a row against the windows, then add it to them.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        if self.windows.is_empty() {
            self.windows = vec![RollingWindow::default(); row.len()];
        }
        check_row(row, self.windows.len())?;
        let contributions = row
            .iter()
            .zip(&self.windows)
            .map(|(value, window)| {
                if !value.is_finite() || window.sorted.len() < self.config.min_samples {
                    return 0.0;
                }
                let median = window.median();
                (value - median).abs() / window.scale(median)
            })
            .collect();
        self.push_row(row);
        Ok(max_of(contributions))
    }
}

impl DetectorKind for RobustZ {
    type Config = RobustZConfig;
    const NAME: &'static str = "robust_z";
    const SUMMARY: &'static str = "Rolling median/MAD z-score per signal (streaming).";

    fn validate(config: &RobustZConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &RobustZConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(_config: &RobustZConfig) -> usize {
        0
    }

    fn default_threshold(_config: &RobustZConfig) -> ThresholdConfig {
        // Scores are sigmas.
        ThresholdConfig::fixed(6.0)
    }

    fn examples() -> Vec<RobustZConfig> {
        vec![RobustZConfig::default(), RobustZConfig { window: 30, min_samples: 10 }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_median_mad(values: &[f64]) -> (f64, f64) {
        let med = crate::stats::quantile(values, 0.5).unwrap();
        let dev: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
        (med, crate::stats::quantile(&dev, 0.5).unwrap())
    }

    #[test]
    fn a_stored_window_that_is_not_its_values_sorted_is_refused() {
        let cases = [
            (r#"{"arrival":[1.0,2.0],"sorted":[1.0,2.0]}"#, true),
            (r#"{"arrival":[2.0,1.0],"sorted":[1.0,2.0]}"#, true),
            (r#"{"arrival":[1.0,2.0,3.0],"sorted":[1.0,2.0]}"#, false),
            (r#"{"arrival":[1.0],"sorted":[5.0]}"#, false),
            (r#"{"arrival":[],"sorted":[0.0]}"#, false),
        ];
        for (json, ok) in cases {
            assert_eq!(serde_json::from_str::<RollingWindow>(json).is_ok(), ok, "{json}");
        }
        let too_long = r#"{"config":{"window":2},"windows":[{"arrival":[1.0,2.0,3.0],"sorted":[1.0,2.0,3.0]}]}"#;
        assert!(serde_json::from_str::<RobustZ>(too_long).is_err());
    }

    #[test]
    fn rolling_median_and_mad_match_brute_force() {
        let mut window = RollingWindow::default();
        let mut history = Vec::new();
        let mut x = 0.3_f64;
        for i in 0..500 {
            x = (x * 3.7 * (1.0 - x)).clamp(0.01, 0.99); // chaotic but deterministic
            let value = if i % 17 == 0 { (x * 10.0).round() } else { x };
            window.push(value, 31);
            history.push(value);
            let tail = &history[history.len().saturating_sub(31)..];
            let (med, mad) = brute_median_mad(tail);
            assert!((window.median() - med).abs() < 1e-12, "median at {i}");
            assert!((window.mad(med) - mad).abs() < 1e-12, "mad at {i}");
        }
    }

    #[test]
    fn spike_scores_high_and_is_causal() {
        let mut det = RobustZ::new(RobustZConfig { window: 50, min_samples: 10 }).unwrap();
        for i in 0..50 {
            let s = det.score(&[(i % 5) as f64]).unwrap();
            if i < 10 {
                assert_eq!(s.value, 0.0, "warm-up scores 0");
            }
        }
        assert!(det.score(&[100.0]).unwrap().value > 20.0);
        assert!(det.score(&[2.0]).unwrap().value < 2.0, "one spike does not move the median");
    }

    #[test]
    fn quantised_signal_with_zero_mad_still_scores() {
        let mut det = RobustZ::new(RobustZConfig { window: 20, min_samples: 5 }).unwrap();
        let mut rows: Vec<Vec<f64>> = vec![vec![1.0]; 19];
        rows.push(vec![2.0]);
        det.learn(&rows).unwrap();
        let s = det.score(&[1.0]).unwrap();
        assert!(s.value.is_finite() && s.value < 1.0);
        assert!(det.score(&[5.0]).unwrap().value > 10.0);
    }
}
