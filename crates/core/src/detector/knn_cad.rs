//! kNN conformal anomaly detection (after Burnaev & Ishimtsev's KNN-CAD),
//! a streaming detector for series with repeating patterns.
//!
//! Each frame is embedded with its `window − 1` predecessors. Its
//! non-conformity is the mean distance to the `k` nearest embeddings among
//! the `reference` before it (the most recent `window` skipped, so a frame
//! is not compared with itself shifted by one). The score is conformal: the
//! share of the last `calibration` non-conformities that this one exceeds,
//! in [0, 1), so it needs no scale: 0.99 means "stranger than 99 % of the
//! recent past". Causal: only past frames are used; a frame enters the
//! history after it is scored. Signals' contributions are their shares of
//! the squared distance to the nearest neighbour. Missing values count as
//! the previous value of their signal.

use super::{Detector, DetectorError, DetectorKind, Score, check_row, check_rows, refuse_invalid};
use crate::threshold::ThresholdConfig;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Settings of [`KnnCad`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnnCadConfig {
    /// Frames per embedding.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Past embeddings searched for neighbours.
    #[serde(default = "default_reference")]
    pub reference: usize,
    /// Neighbours averaged.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Past non-conformities the score is ranked against.
    #[serde(default = "default_calibration")]
    pub calibration: usize,
}

fn default_window() -> usize {
    16
}
fn default_reference() -> usize {
    1000
}
fn default_k() -> usize {
    5
}
fn default_calibration() -> usize {
    500
}

impl Default for KnnCadConfig {
    fn default() -> Self {
        KnnCadConfig {
            window: default_window(),
            reference: default_reference(),
            k: default_k(),
            calibration: default_calibration(),
        }
    }
}

impl KnnCadConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.window == 0 || self.window > 1000 {
            problems.push(format!("knn_cad.window must be between 1 and 1000, got {}", self.window));
        }
        if self.k == 0 || self.k >= self.reference {
            problems
                .push(format!("knn_cad.k must be at least 1 and below reference ({}), got {}", self.reference, self.k));
        }
        if self.reference > 100_000 {
            problems.push(format!("knn_cad.reference must be at most 100000, got {}", self.reference));
        }
        if self.calibration < 10 {
            problems.push(format!("knn_cad.calibration must be at least 10, got {}", self.calibration));
        }
        problems
    }
}

/// kNN conformal detector. A stored one is checked when read (frames of its
/// width, no more of them than its settings keep).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredKnnCad")]
pub struct KnnCad {
    config: KnnCadConfig,
    width: usize,
    /// Recent frames, oldest first (at most window + reference + window).
    history: VecDeque<Vec<f64>>,
    /// Recent non-conformities, oldest first.
    scores: VecDeque<f64>,
}

/// A kNN conformal detector as stored, before `KnnCad` accepts it.
#[derive(Deserialize)]
struct StoredKnnCad {
    config: KnnCadConfig,
    width: usize,
    history: VecDeque<Vec<f64>>,
    scores: VecDeque<f64>,
}

impl TryFrom<StoredKnnCad> for KnnCad {
    type Error = String;

    fn try_from(stored: StoredKnnCad) -> Result<Self, String> {
        refuse_invalid(stored.config.validate()).map_err(|e| e.to_string())?;
        let detector =
            KnnCad { config: stored.config, width: stored.width, history: stored.history, scores: stored.scores };
        if detector.history.len() > detector.capacity() || detector.scores.len() > detector.config.calibration {
            return Err(format!(
                "{} frames and {} scores kept, more than the settings keep",
                detector.history.len(),
                detector.scores.len()
            ));
        }
        if let Some(frame) = detector.history.iter().find(|f| f.len() != detector.width) {
            return Err(format!("a stored frame of {} values, not {}", frame.len(), detector.width));
        }
        Ok(detector)
    }
}

impl KnnCad {
    /// An empty detector; it warms up while scoring or from `learn`.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: KnnCadConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(KnnCad { config, width: 0, history: VecDeque::new(), scores: VecDeque::new() })
    }

    fn capacity(&self) -> usize {
        2 * self.config.window + self.config.reference
    }

    /// Non-conformity of the newest embedding and its nearest neighbour's
    /// per-signal squared differences; `None` while warming up.
    fn non_conformity(&self) -> Option<(f64, Vec<f64>)> {
        let (w, k) = (self.config.window, self.config.k);
        let n = self.history.len();
        if n < 2 * w + k {
            return None;
        }
        let newest = n - w; // first frame of the current embedding
        let last_start = newest.checked_sub(w)?; // skip the overlapping embeddings
        let first_start = last_start.saturating_sub(self.config.reference);
        let mut nearest: Vec<(f64, usize)> = Vec::with_capacity(k + 1);
        for start in first_start..=last_start {
            let mut distance = 0.0;
            for offset in 0..w {
                let (a, b) = (&self.history[newest + offset], &self.history[start + offset]);
                distance += a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>();
                if nearest.len() == k && distance >= nearest[k - 1].0 {
                    break;
                }
            }
            if nearest.len() < k || distance < nearest[k - 1].0 {
                let at = nearest.partition_point(|(d, _)| *d <= distance);
                nearest.insert(at, (distance, start));
                nearest.truncate(k);
            }
        }
        if nearest.is_empty() {
            return None;
        }
        let value = nearest.iter().map(|(d, _)| d.sqrt()).sum::<f64>() / nearest.len() as f64;
        let best = nearest[0].1;
        let mut parts = vec![0.0; self.width];
        for offset in 0..w {
            for (j, (x, y)) in self.history[newest + offset].iter().zip(&self.history[best + offset]).enumerate() {
                parts[j] += (x - y) * (x - y);
            }
        }
        Some((value, parts))
    }

    /// Add a frame and score it: the conformal rank and the contributions.
    fn step(&mut self, row: &[f64]) -> (f64, Vec<f64>) {
        let filled: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(j, v)| if v.is_finite() { *v } else { self.history.back().map_or(0.0, |last| last[j]) })
            .collect();
        self.history.push_back(filled);
        if self.history.len() > self.capacity() {
            self.history.pop_front();
        }
        let Some((non_conformity, parts)) = self.non_conformity() else {
            return (0.0, vec![0.0; self.width]);
        };
        let exceeded = self.scores.iter().filter(|s| **s < non_conformity).count();
        let value = if self.scores.is_empty() { 0.0 } else { exceeded as f64 / (self.scores.len() + 1) as f64 };
        self.scores.push_back(non_conformity);
        if self.scores.len() > self.config.calibration {
            self.scores.pop_front();
        }
        let total: f64 = parts.iter().sum();
        let contributions = parts
            .iter()
            .zip(row)
            .map(|(p, v)| if total > 0.0 && v.is_finite() { value * p / total } else { 0.0 })
            .collect();
        (value, contributions)
    }
}

impl Detector for KnnCad {
    /// Fill the history (and calibration) with the baseline.
    ///
    /// # Errors
    /// See [`super::Detector::learn`].
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, 1)?;
        self.width = width;
        self.history.clear();
        self.scores.clear();
        for row in rows {
            self.step(row);
        }
        Ok(())
    }

    /// Score a row against the past, then add it to the history.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        if self.width == 0 {
            self.width = row.len();
        }
        check_row(row, self.width)?;
        let (value, contributions) = self.step(row);
        Ok(Score { value, contributions, t2: None, spe: None, statistics: Vec::new() })
    }
}

impl DetectorKind for KnnCad {
    type Config = KnnCadConfig;
    const NAME: &'static str = "knn_cad";
    const SUMMARY: &'static str = "kNN conformal anomaly detection on embedded windows (streaming).";

    fn validate(config: &KnnCadConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &KnnCadConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(_config: &KnnCadConfig) -> usize {
        0
    }

    fn default_threshold(_config: &KnnCadConfig) -> ThresholdConfig {
        // The scores have no natural unit: take the baseline's own quantile.
        ThresholdConfig { value: None, quantile: Some(0.995), ..ThresholdConfig::fixed(0.0) }
    }

    fn saturates_outside_range(_config: &KnnCadConfig) -> bool {
        true
    }

    fn examples() -> Vec<KnnCadConfig> {
        vec![KnnCadConfig::default(), KnnCadConfig { window: 1, reference: 300, k: 5, calibration: 100 }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_pattern_is_normal_and_a_break_is_not() {
        let mut det = KnnCad::new(KnnCadConfig { window: 8, reference: 400, k: 3, calibration: 200 }).unwrap();
        let wave = |i: usize| ((i % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
        let mut last = 0.0;
        for i in 0..1000 {
            last = det.score(&[wave(i)]).unwrap().value;
        }
        assert!(last < 0.9, "a repeat of the pattern: {last}");
        let broken = det.score(&[3.0]).unwrap().value;
        assert!(broken > 0.95, "a break in the pattern: {broken}");
    }
}
