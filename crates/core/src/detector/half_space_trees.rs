//! Half-Space Trees (Tan, Ting & Liu 2011), the streaming tree detector.
//!
//! Each tree halves the signals' working ranges at random: a node splits one
//! signal at the middle of its current range, to a fixed height. Each node
//! counts the frames that reach it in the latest window (`latest`) and keeps
//! the counts of the previous full window (`reference`). A frame that lands
//! in sparsely visited regions of the reference profile is anomalous. Scoring
//! is River's: walk each tree, summing `reference · 2^depth` until a leaf or
//! a node visited fewer than `0.1 · window` times, normalise by the largest
//! possible sum, and report `1 − sum` in [0, 1]. Each frame is scored, then
//! counted (score, then learn), so the model follows slow changes.
//!
//! The working ranges come from the baseline (`learn`: its min and max,
//! widened by `padding`); the baseline also fills the first reference window.
//! A signal's contribution is the share of the path splits it made below
//! the first sparsely visited node, times the score. Missing values go left.

use super::{Detector, DetectorError, DetectorKind, Score, check_row, check_rows, refuse_invalid};
use crate::stats::SeededNormal;
use crate::threshold::ThresholdConfig;
use serde::{Deserialize, Serialize};

/// Settings of [`HalfSpaceTrees`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HalfSpaceTreesConfig {
    /// Number of trees.
    #[serde(default = "default_trees")]
    pub trees: usize,
    /// Height of each tree.
    #[serde(default = "default_height")]
    pub height: usize,
    /// Frames per mass window.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Share of each signal's baseline range added on both sides.
    #[serde(default = "default_padding")]
    pub padding: f64,
    /// Seed of the random splits.
    #[serde(default)]
    pub seed: u64,
}

fn default_trees() -> usize {
    10
}
fn default_height() -> usize {
    8
}
fn default_window() -> usize {
    250
}
fn default_padding() -> f64 {
    0.15
}

impl Default for HalfSpaceTreesConfig {
    fn default() -> Self {
        HalfSpaceTreesConfig {
            trees: default_trees(),
            height: default_height(),
            window: default_window(),
            padding: default_padding(),
            seed: 0,
        }
    }
}

impl HalfSpaceTreesConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.trees == 0 || self.trees > 1000 {
            problems.push(format!("half_space_trees.trees must be between 1 and 1000, got {}", self.trees));
        }
        if self.height == 0 || self.height > 20 {
            problems.push(format!("half_space_trees.height must be between 1 and 20, got {}", self.height));
        }
        if self.window < 10 {
            problems.push(format!("half_space_trees.window must be at least 10, got {}", self.window));
        }
        if !(self.padding >= 0.0 && self.padding <= 10.0) {
            problems.push(format!("half_space_trees.padding must be between 0 and 10, got {}", self.padding));
        }
        problems
    }
}

/// One full binary tree, nodes in heap order (children of `i`: `2i+1`, `2i+2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tree {
    /// Split signal of each internal node.
    feature: Vec<u32>,
    /// Split value of each internal node.
    split: Vec<f64>,
    /// Mass of the previous window, every node.
    reference: Vec<u32>,
    /// Mass of the current window, every node.
    latest: Vec<u32>,
}

/// Half-Space Trees detector. Stored trees are checked when read (full
/// trees of the configured height, split signals inside the width).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredHalfSpaceTrees")]
pub struct HalfSpaceTrees {
    config: HalfSpaceTreesConfig,
    width: usize,
    trees: Vec<Tree>,
    /// Frames counted in the current window.
    seen: usize,
    /// Whether a full reference window exists.
    primed: bool,
}

/// Half-Space Trees as stored, before `HalfSpaceTrees` accepts them.
#[derive(Deserialize)]
struct StoredHalfSpaceTrees {
    config: HalfSpaceTreesConfig,
    width: usize,
    trees: Vec<Tree>,
    seen: usize,
    primed: bool,
}

impl TryFrom<StoredHalfSpaceTrees> for HalfSpaceTrees {
    type Error = String;

    fn try_from(stored: StoredHalfSpaceTrees) -> Result<Self, String> {
        refuse_invalid(stored.config.validate()).map_err(|e| e.to_string())?;
        let internal = (1usize << stored.config.height) - 1;
        if !stored.trees.is_empty() && stored.width == 0 {
            return Err("fitted trees of width 0".into());
        }
        for (t, tree) in stored.trees.iter().enumerate() {
            super::stored_lengths(&[
                ("feature", tree.feature.len(), internal),
                ("split", tree.split.len(), internal),
                ("reference", tree.reference.len(), 2 * internal + 1),
                ("latest", tree.latest.len(), 2 * internal + 1),
            ])
            .map_err(|e| format!("tree {t}: {e}"))?;
            if let Some(f) = tree.feature.iter().find(|&&f| f as usize >= stored.width) {
                return Err(format!("tree {t}: split signal {f} outside the width {}", stored.width));
            }
        }
        let StoredHalfSpaceTrees { config, width, trees, seen, primed } = stored;
        Ok(HalfSpaceTrees { config, width, trees, seen, primed })
    }
}

impl HalfSpaceTrees {
    /// An unfitted detector.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: HalfSpaceTreesConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(HalfSpaceTrees { config, width: 0, trees: Vec::new(), seen: 0, primed: false })
    }

    fn build_trees(&mut self, lo: &[f64], hi: &[f64]) {
        let mut rng = SeededNormal::new(self.config.seed);
        let internal = (1usize << self.config.height) - 1;
        let nodes = (1usize << (self.config.height + 1)) - 1;
        self.trees = (0..self.config.trees)
            .map(|_| {
                let mut feature = vec![0u32; internal];
                let mut split = vec![0.0; internal];
                // Ranges per node on the way down: fill breadth-first from the root's.
                let mut ranges: Vec<(Vec<f64>, Vec<f64>)> = vec![(lo.to_vec(), hi.to_vec())];
                for node in 0..internal {
                    let (l, h) = ranges[node].clone();
                    let f = rng.below(self.width);
                    let middle = 0.5 * (l[f] + h[f]);
                    feature[node] = f as u32;
                    split[node] = middle;
                    let (mut left_hi, mut right_lo) = (h.clone(), l.clone());
                    left_hi[f] = middle;
                    right_lo[f] = middle;
                    ranges.push((l, left_hi));
                    ranges.push((right_lo, h));
                }
                Tree { feature, split, reference: vec![0; nodes], latest: vec![0; nodes] }
            })
            .collect();
        self.seen = 0;
        self.primed = false;
    }

    fn count(&mut self, row: &[f64]) {
        let internal = (1usize << self.config.height) - 1;
        for tree in &mut self.trees {
            let mut node = 0;
            loop {
                tree.latest[node] += 1;
                if node >= internal {
                    break;
                }
                let value = row[tree.feature[node] as usize];
                node = if value.is_nan() || value < tree.split[node] { 2 * node + 1 } else { 2 * node + 2 };
            }
        }
        self.seen += 1;
        if self.seen == self.config.window {
            for tree in &mut self.trees {
                std::mem::swap(&mut tree.reference, &mut tree.latest);
                tree.latest.iter_mut().for_each(|m| *m = 0);
            }
            self.seen = 0;
            self.primed = true;
        }
    }
}

impl Detector for HalfSpaceTrees {
    /// Set the working ranges from the baseline and count it.
    ///
    /// # Errors
    /// See [`super::Detector::learn`].
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, 1)?;
        let mut lo = vec![f64::INFINITY; width];
        let mut hi = vec![f64::NEG_INFINITY; width];
        for row in rows {
            for (j, v) in row.iter().enumerate() {
                if v.is_finite() {
                    lo[j] = lo[j].min(*v);
                    hi[j] = hi[j].max(*v);
                }
            }
        }
        if lo.iter().zip(&hi).all(|(l, h)| l > h) {
            return Err(DetectorError::NotEnoughData { needed: 1, got: 0 });
        }
        for (l, h) in lo.iter_mut().zip(hi.iter_mut()) {
            if l > h {
                (*l, *h) = (0.0, 1.0);
            }
            let pad = ((*h - *l) * self.config.padding).max(1e-9 * l.abs().max(1.0));
            *l -= pad;
            *h += pad;
        }
        self.width = width;
        self.build_trees(&lo, &hi);
        for row in rows {
            self.count(row);
        }
        Ok(())
    }

    /// Score a row against the reference masses, then count it.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        if self.trees.is_empty() {
            return Err(DetectorError::NotFitted);
        }
        check_row(row, self.width)?;
        let row: Vec<f64> = row.iter().map(|v| if v.is_finite() { *v } else { f64::NAN }).collect();
        let internal = (1usize << self.config.height) - 1;
        let size_limit = 0.1 * self.config.window as f64;
        let mut sum = 0.0;
        let mut credit = vec![0.0; self.width];
        for tree in &self.trees {
            let mut node = 0;
            let mut depth = 0;
            loop {
                let mass = f64::from(tree.reference[node]);
                sum += mass * f64::from(1u32 << depth);
                if node >= internal {
                    break;
                }
                let feature = tree.feature[node] as usize;
                if mass < size_limit {
                    if !row[feature].is_nan() {
                        credit[feature] += 1.0;
                    }
                    break;
                }
                let value = row[feature];
                node = if value.is_nan() || value < tree.split[node] { 2 * node + 1 } else { 2 * node + 2 };
                depth += 1;
            }
        }
        let max_sum =
            self.trees.len() as f64 * self.config.window as f64 * ((1u64 << (self.config.height + 1)) - 1) as f64;
        let value = if self.primed { (1.0 - sum / max_sum).clamp(0.0, 1.0) } else { 0.0 };
        let credit_sum: f64 = credit.iter().sum();
        let contributions =
            credit.iter().map(|c| if credit_sum > 0.0 { value * c / credit_sum } else { 0.0 }).collect();
        self.count(&row);
        Ok(Score { value, contributions, t2: None, spe: None, statistics: Vec::new() })
    }
}

impl DetectorKind for HalfSpaceTrees {
    type Config = HalfSpaceTreesConfig;
    const NAME: &'static str = "half_space_trees";
    const SUMMARY: &'static str = "Half-Space Trees: mass in random half-spaces, streaming.";

    fn validate(config: &HalfSpaceTreesConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &HalfSpaceTreesConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(_config: &HalfSpaceTreesConfig) -> usize {
        1
    }

    fn default_threshold(_config: &HalfSpaceTreesConfig) -> ThresholdConfig {
        // The scores have no natural unit: take the baseline's own quantile.
        ThresholdConfig { value: None, quantile: Some(0.995), ..ThresholdConfig::fixed(0.0) }
    }

    fn saturates_outside_range(_config: &HalfSpaceTreesConfig) -> bool {
        true
    }

    fn examples() -> Vec<HalfSpaceTreesConfig> {
        vec![HalfSpaceTreesConfig::default(), HalfSpaceTreesConfig { window: 100, ..HalfSpaceTreesConfig::default() }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_regions_score_higher() {
        let mut g = SeededNormal::new(6);
        let rows: Vec<Vec<f64>> = (0..500).map(|_| vec![g.normal(), g.normal()]).collect();
        let mut hst = HalfSpaceTrees::new(HalfSpaceTreesConfig::default()).unwrap();
        hst.learn(&rows).unwrap();
        let dense = hst.score(&[0.0, 0.0]).unwrap().value;
        let sparse = hst.score(&[3.2, -3.2]).unwrap().value;
        assert!(sparse > dense, "{sparse} vs {dense}");
    }

    #[test]
    fn windows_roll_over() {
        let config = HalfSpaceTreesConfig { window: 10, ..HalfSpaceTreesConfig::default() };
        let mut hst = HalfSpaceTrees::new(config).unwrap();
        hst.learn(&[vec![0.0], vec![1.0]]).unwrap();
        assert!(!hst.primed);
        for _ in 0..8 {
            hst.score(&[0.5]).unwrap();
        }
        assert!(hst.primed, "the 10th frame completes the first window");
        assert_eq!(hst.trees[0].reference[0], 10);
    }
}
