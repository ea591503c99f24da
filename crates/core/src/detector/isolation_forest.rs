//! Isolation forest (Liu, Ting & Zhou 2008): anomalies are few and
//! different, so random axis-parallel splits isolate them in fewer steps.
//!
//! Fitted in batch on the baseline (each tree on a random subsample of
//! `sample_size` rows, grown to depth ⌈log₂ sample_size⌉), then scores one
//! frame at a time: `s = 2^(−E[h(x)] / c(ψ))` in (0, 1), about 0.5 for
//! ordinary frames and towards 1 for anomalies. A signal's contribution is
//! how much its splits isolated the frame along its paths: each split adds
//! ln(parent size / size of the side the frame took) to the split signal. A
//! missing value follows both branches, weighted by their baseline sizes.
//! Splits fall inside the baseline's range, so every value beyond it scores
//! like the most extreme baseline value: the forest ranks, it does not
//! measure distance.

use super::{Detector, DetectorError, DetectorKind, Score, check_row, check_rows, complete_rows, refuse_invalid};
use crate::kernels::forest::{CompleteForest, TreeNode};
use crate::stats::SeededNormal;
use crate::threshold::ThresholdConfig;
use crate::trees::isolation::{FastNode, Node, average_path, fast_layout, grow, mean_path, path_with_missing};
use serde::{Deserialize, Serialize};

/// Settings of [`IsolationForest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationForestConfig {
    /// Number of trees.
    #[serde(default = "default_trees")]
    pub trees: usize,
    /// Rows drawn (without replacement) to grow each tree.
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    /// Seed of the random splits: the same seed and data give the same forest.
    #[serde(default)]
    pub seed: u64,
}

fn default_trees() -> usize {
    100
}
fn default_sample_size() -> usize {
    256
}

impl Default for IsolationForestConfig {
    fn default() -> Self {
        IsolationForestConfig { trees: default_trees(), sample_size: default_sample_size(), seed: 0 }
    }
}

impl IsolationForestConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.trees == 0 || self.trees > 10_000 {
            problems.push(format!("isolation_forest.trees must be between 1 and 10000, got {}", self.trees));
        }
        if self.sample_size < 2 || self.sample_size > 1 << 20 {
            problems
                .push(format!("isolation_forest.sample_size must be between 2 and 1048576, got {}", self.sample_size));
        }
        problems
    }
}

/// Isolation forest detector. A stored forest is checked when it is read
/// (indices inside the forest): a model file is outside input, and the batch walk
/// trusts every index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredForest")]
pub struct IsolationForest {
    config: IsolationForestConfig,
    width: usize,
    /// Nodes of every tree; `roots[t]` indexes tree `t`'s root.
    nodes: Vec<Node>,
    roots: Vec<u32>,
    /// c(ψ) of the subsample size actually used.
    normaliser: f64,
    /// The nodes laid out for scoring (one load per step), derived on first use.
    #[serde(skip)]
    fast: Vec<FastNode>,
    /// The trees as complete binary trees for batch scoring, derived on first use.
    #[serde(skip)]
    complete: Option<CompleteForest>,
    /// Scratch: the node each tree's walk is at.
    #[serde(skip)]
    current: Vec<u32>,
    /// Deepest level of any tree.
    depth_limit: usize,
}

/// A forest as stored, before `IsolationForest` accepts it.
#[derive(Deserialize)]
struct StoredForest {
    config: IsolationForestConfig,
    width: usize,
    nodes: Vec<Node>,
    roots: Vec<u32>,
    normaliser: f64,
    depth_limit: usize,
}

/// The deepest tree a stored forest may hold (a subsample of 2^20 rows
/// grows trees 20 deep).
const MAX_STORED_DEPTH: usize = 64;

impl TryFrom<StoredForest> for IsolationForest {
    type Error = String;

    /// Every child after its parent and inside the forest, every feature
    /// inside the width, every tree within `depth_limit`.
    fn try_from(stored: StoredForest) -> Result<Self, String> {
        refuse_invalid(stored.config.validate()).map_err(|e| e.to_string())?;
        let n = stored.nodes.len();
        if n > u32::MAX as usize || stored.depth_limit > MAX_STORED_DEPTH {
            return Err(format!("a forest of {n} nodes, {} deep, is not one usan grows", stored.depth_limit));
        }
        if !(stored.normaliser.is_finite() && stored.normaliser > 0.0) {
            return Err(format!("normaliser {} is not a positive number", stored.normaliser));
        }
        if !stored.roots.is_empty() && stored.width == 0 {
            return Err("a fitted forest of width 0".into());
        }
        for (i, node) in stored.nodes.iter().enumerate() {
            if node.left == 0 {
                continue;
            }
            let (left, right) = (node.left as usize, node.right as usize);
            if left <= i || right <= i || left >= n || right >= n {
                return Err(format!("node {i}: children {left} and {right} are not after it within {n} nodes"));
            }
            if node.feature as usize >= stored.width {
                return Err(format!("node {i}: feature {} outside the width {}", node.feature, stored.width));
            }
        }
        // Children come after their parents, so one pass in order gives every depth.
        let mut depth = vec![usize::MAX; n];
        for &root in &stored.roots {
            let root = root as usize;
            if root >= n {
                return Err(format!("root {root} outside {n} nodes"));
            }
            depth[root] = 0;
        }
        for i in 0..n {
            let (d, node) = (depth[i], stored.nodes[i]);
            if d == usize::MAX || node.left == 0 {
                continue;
            }
            if d + 1 > stored.depth_limit {
                return Err(format!("a tree is deeper than its depth limit {}", stored.depth_limit));
            }
            // A node reached from two parents (never grown so) takes the deeper path.
            for child in [node.left as usize, node.right as usize] {
                depth[child] = if depth[child] == usize::MAX { d + 1 } else { depth[child].max(d + 1) };
            }
        }
        Ok(IsolationForest {
            config: stored.config,
            width: stored.width,
            nodes: stored.nodes,
            roots: stored.roots,
            normaliser: stored.normaliser,
            fast: Vec::new(),
            complete: None,
            current: Vec::new(),
            depth_limit: stored.depth_limit,
        })
    }
}

impl IsolationForest {
    /// Fewest complete baseline rows accepted.
    pub const MIN_ROWS: usize = 8;

    /// Rows per piece of a batch cut over the cores (rounded up to whole
    /// blocks): about 0.3 ms of one core's work, small enough for the cores to
    /// share a batch evenly, large enough that taking a piece costs nothing.
    const ROWS_PER_PIECE: usize = 1024;

    /// An unfitted forest.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: IsolationForestConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(IsolationForest {
            config,
            width: 0,
            nodes: Vec::new(),
            roots: Vec::new(),
            normaliser: 1.0,
            fast: Vec::new(),
            complete: None,
            current: Vec::new(),
            depth_limit: 0,
        })
    }

    /// Batch scores through the complete layout, one stretch of blocks per
    /// core; blocks with a missing or wrong-width row go row by row.
    fn score_blocks(&mut self, forest: &CompleteForest, rows: &[Vec<f64>]) -> Result<Vec<f64>, DetectorError> {
        let width = self.width;
        let block_rows = ((4096 / width.max(1)).clamp(16, 512) / CompleteForest::GROUP).max(1) * CompleteForest::GROUP;
        let (trees, normaliser) = (self.roots.len() as f64, self.normaliser);
        // NaN marks the blocks left for row by row.
        let mut values = vec![0.0; rows.len()];
        let piece = Self::ROWS_PER_PIECE.next_multiple_of(block_rows);
        crate::parallel::fill_over_cores(&mut values, piece, |range, out| {
            let mut block_values = vec![0.0; block_rows * width];
            for (block, paths) in rows[range].chunks(block_rows).zip(out.chunks_mut(block_rows)) {
                if block.iter().any(|r| r.len() != width || !r.iter().all(|v| v.is_finite())) {
                    paths.fill(f64::NAN);
                    continue;
                }
                for (chunk, row) in block_values.chunks_exact_mut(width).zip(block) {
                    chunk.copy_from_slice(row);
                }
                forest.path_sums(&block_values[..block.len() * width], paths);
                for path in paths.iter_mut() {
                    *path = 2f64.powf(-(*path / trees) / normaliser);
                }
            }
        });
        for (value, row) in values.iter_mut().zip(rows) {
            if value.is_nan() {
                *value = super::value_or_no_data(self.score(row))?;
            }
        }
        Ok(values)
    }

    fn score_values_by_row(&mut self, rows: &[Vec<f64>]) -> Result<Vec<f64>, DetectorError> {
        super::values_row_by_row(rows, |row| self.score(row))
    }

    /// The fitted trees, for writing them out in another form (`usan model
    /// export`); `None` before fitting. A row's score is
    /// `2^(−mean over trees of its leaf's path / normaliser)`.
    #[must_use]
    pub fn view(&self) -> Option<ForestView> {
        if self.roots.is_empty() {
            return None;
        }
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| ViewNode {
                split: (n.left != 0).then_some((n.feature as usize, n.split, n.left as usize, n.right as usize)),
                path: if n.left == 0 { average_path(f64::from(n.size)) } else { 0.0 },
                index: i,
            })
            .collect();
        Some(ForestView {
            width: self.width,
            nodes,
            roots: self.roots.iter().map(|&r| r as usize).collect(),
            normaliser: self.normaliser,
        })
    }
}

/// A fitted isolation forest's trees ([`IsolationForest::view`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ForestView {
    /// Signals per row.
    pub width: usize,
    /// Every tree's nodes; children come after their parent.
    pub nodes: Vec<ViewNode>,
    /// Index of each tree's root in `nodes`.
    pub roots: Vec<usize>,
    /// c(ψ): the mean path is divided by it.
    pub normaliser: f64,
}

/// One node of a [`ForestView`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewNode {
    /// Its index in [`ForestView::nodes`].
    pub index: usize,
    /// A split: `(signal, value, left, right)`, rows with `row[signal] <
    /// value` going left; `None` for a leaf.
    pub split: Option<(usize, f64, usize, usize)>,
    /// A leaf's expected remaining path, c(baseline rows that reached it)
    /// (0 for a split); a row's path in a tree is its leaf's depth plus this.
    pub path: f64,
}

impl Detector for IsolationForest {
    /// Grow the forest on the complete baseline rows.
    ///
    /// # Errors
    /// See [`super::Detector::learn`].
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, Self::MIN_ROWS)?;
        let complete = complete_rows(rows, Self::MIN_ROWS)?;
        let psi = self.config.sample_size.min(complete.len());
        let depth_limit = (psi as f64).log2().ceil() as usize;
        self.depth_limit = depth_limit;
        let mut rng = SeededNormal::new(self.config.seed);
        self.width = width;
        self.nodes.clear();
        self.roots.clear();
        let mut indices: Vec<usize> = (0..complete.len()).collect();
        for _ in 0..self.config.trees {
            // Partial Fisher–Yates: the first psi indices are a uniform subsample.
            for i in 0..psi {
                let j = i + rng.below(indices.len() - i);
                indices.swap(i, j);
            }
            let mut sample: Vec<usize> = indices[..psi].to_vec();
            let root = grow(&mut self.nodes, &complete, width, &mut sample, 0, depth_limit, &mut rng);
            self.roots.push(root);
        }
        self.normaliser = average_path(psi as f64).max(1e-12);
        self.fast.clear();
        self.complete = None;
        Ok(())
    }

    /// Scores of many rows (see [`super::Detector::score_values`]): blocks
    /// of complete rows walk each tree, laid out as a complete binary tree,
    /// while it is hot in the cache; rows with missing values go one by one.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score_values(&mut self, rows: &[Vec<f64>]) -> Result<Vec<f64>, DetectorError> {
        if self.roots.is_empty() {
            return Err(DetectorError::NotFitted);
        }
        if self.complete.is_none() && self.depth_limit <= CompleteForest::MAX_DEPTH {
            let nodes = &self.nodes;
            self.complete = Some(CompleteForest::new(&self.roots, self.depth_limit, self.width, |i| {
                let n = nodes[i as usize];
                TreeNode {
                    split: (n.left != 0).then_some((n.feature, n.split, n.left, n.right)),
                    path_below: average_path(f64::from(n.size)),
                }
            }));
        }
        let Some(forest) = self.complete.take() else {
            return self.score_values_by_row(rows);
        };
        let result = self.score_blocks(&forest, rows);
        self.complete = Some(forest);
        result
    }

    /// Score one row.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        if self.roots.is_empty() {
            return Err(DetectorError::NotFitted);
        }
        check_row(row, self.width)?;
        if self.fast.len() != self.nodes.len() {
            self.fast = fast_layout(&self.nodes);
        }
        let mut credit = vec![0.0; self.width];
        let mean_path = if row.iter().all(|v| v.is_finite()) {
            let mut current = std::mem::take(&mut self.current);
            let mean = mean_path(&self.fast, &self.roots, self.depth_limit, row, &mut credit, &mut current);
            self.current = current;
            mean
        } else {
            let row: Vec<f64> = row.iter().map(|v| if v.is_finite() { *v } else { f64::NAN }).collect();
            let total: f64 =
                self.roots.iter().map(|&root| path_with_missing(&self.nodes, root, &row, 0.0, 1.0, &mut credit)).sum();
            total / self.roots.len() as f64
        };
        let value = 2f64.powf(-mean_path / self.normaliser);
        let credit_sum: f64 = credit.iter().sum();
        for c in &mut credit {
            *c = if credit_sum > 0.0 { value * *c / credit_sum } else { 0.0 };
        }
        Ok(Score { value, contributions: credit, t2: None, spe: None, statistics: Vec::new() })
    }
}

impl DetectorKind for IsolationForest {
    type Config = IsolationForestConfig;
    const NAME: &'static str = "isolation_forest";
    const SUMMARY: &'static str = "Isolation forest, fitted on the baseline, scored per frame.";

    fn validate(config: &IsolationForestConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &IsolationForestConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(_config: &IsolationForestConfig) -> usize {
        Self::MIN_ROWS
    }

    fn default_threshold(_config: &IsolationForestConfig) -> ThresholdConfig {
        // The scores have no natural unit: take the baseline's own quantile.
        ThresholdConfig { value: None, quantile: Some(0.995), ..ThresholdConfig::fixed(0.0) }
    }

    fn saturates_outside_range(_config: &IsolationForestConfig) -> bool {
        true
    }

    fn examples() -> Vec<IsolationForestConfig> {
        vec![IsolationForestConfig::default(), IsolationForestConfig { trees: 50, sample_size: 64, seed: 7 }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_walked_by_hand_gives_the_score() {
        let mut g = SeededNormal::new(5);
        let rows: Vec<Vec<f64>> = (0..300).map(|_| vec![g.normal(), 3.0 * g.normal(), g.normal()]).collect();
        let mut forest = IsolationForest::new(IsolationForestConfig { trees: 20, sample_size: 64, seed: 1 }).unwrap();
        assert!(forest.view().is_none(), "nothing before fitting");
        forest.learn(&rows).unwrap();
        let view = forest.view().unwrap();
        assert_eq!((view.width, view.roots.len()), (3, 20));
        for row in rows.iter().take(50).chain([&vec![9.0, -9.0, 0.0]]) {
            let total: f64 = view
                .roots
                .iter()
                .map(|&root| {
                    let (mut at, mut depth) = (root, 0.0);
                    while let Some((signal, value, left, right)) = view.nodes[at].split {
                        at = if row[signal] < value { left } else { right };
                        depth += 1.0;
                    }
                    depth + view.nodes[at].path
                })
                .sum();
            let by_hand = 2f64.powf(-(total / 20.0) / view.normaliser);
            let score = forest.score(row).unwrap().value;
            assert!((by_hand - score).abs() < 1e-12, "{row:?}: {by_hand} vs {score}");
        }
    }

    #[test]
    fn outliers_score_near_one_inliers_near_half() {
        let mut g = SeededNormal::new(3);
        let rows: Vec<Vec<f64>> = (0..1000).map(|_| vec![g.normal(), g.normal()]).collect();
        let mut forest = IsolationForest::new(IsolationForestConfig::default()).unwrap();
        forest.learn(&rows).unwrap();
        let inlier = forest.score(&[0.0, 0.0]).unwrap().value;
        let outlier = forest.score(&[8.0, 0.0]).unwrap();
        // scikit-learn's IsolationForest gives 0.40 and 0.66 on the same kind of data.
        assert!(inlier < 0.5, "{inlier}");
        assert!(outlier.value > 0.6, "{outlier:?}");
        assert!(outlier.contributions[0] > outlier.contributions[1], "{outlier:?}");
    }

    #[test]
    fn a_stored_forest_with_bad_indices_is_refused_when_read() {
        let mut g = SeededNormal::new(4);
        let rows: Vec<Vec<f64>> = (0..200).map(|_| vec![g.normal(), g.normal()]).collect();
        let mut forest = IsolationForest::new(IsolationForestConfig { trees: 3, ..Default::default() }).unwrap();
        forest.learn(&rows).unwrap();
        let good = serde_json::to_value(&forest).unwrap();
        let mut back: IsolationForest = serde_json::from_value(good.clone()).unwrap();
        assert_eq!(back.score(&[0.1, 0.2]).unwrap().value, forest.clone().score(&[0.1, 0.2]).unwrap().value);
        let internal = forest.nodes.iter().position(|n| n.left != 0).unwrap();
        let cases: [(&str, serde_json::Value, &str); 6] = [
            ("/nodes/INTERNAL/left", 100_000.into(), "not after it"),
            ("/nodes/INTERNAL/right", 0.into(), "not after it"),
            ("/nodes/INTERNAL/feature", 2.into(), "outside the width"),
            ("/roots/0", 100_000.into(), "root"),
            ("/depth_limit", 0.into(), "deeper than its depth limit"),
            ("/normaliser", (-1.0).into(), "normaliser"),
        ];
        for (pointer, value, expected) in cases {
            let mut bad = good.clone();
            *bad.pointer_mut(&pointer.replace("INTERNAL", &internal.to_string())).unwrap() = value;
            let error = serde_json::from_value::<IsolationForest>(bad).unwrap_err().to_string();
            assert!(error.contains(expected), "{pointer}: {error}");
        }
    }

    #[test]
    fn batch_scores_equal_row_scores_for_every_tree_layout() {
        let mut g = SeededNormal::new(5);
        let rows: Vec<Vec<f64>> = (0..3000).map(|_| (0..3).map(|_| g.normal()).collect()).collect();
        // Depths 1 (two rows), 4 (ten rows, uneven leaves), 8 and 13 (too deep
        // for the complete layout: scored row by row).
        for sample_size in [2, 10, 256, 3000] {
            let config = IsolationForestConfig { trees: 7, sample_size, seed: 9 };
            let mut forest = IsolationForest::new(config).unwrap();
            forest.learn(&rows).unwrap();
            let test: Vec<Vec<f64>> = (0..37).map(|i| vec![f64::from(i) / 6.0 - 3.0, 0.5, -0.25]).collect();
            let batch = forest.score_values(&test).unwrap();
            for (row, value) in test.iter().zip(batch) {
                let single = forest.score(row).unwrap().value;
                assert!((single - value).abs() < 1e-12, "ψ {sample_size}: {single} vs {value}");
            }
        }
    }

    #[test]
    fn values_on_a_split_or_a_signed_zero_go_the_same_way_in_batch_and_by_row() {
        let mut g = SeededNormal::new(11);
        let rows: Vec<Vec<f64>> = (0..1000).map(|_| (0..3).map(|_| g.normal()).collect()).collect();
        let mut forest = IsolationForest::new(IsolationForestConfig { trees: 20, sample_size: 64, seed: 2 }).unwrap();
        forest.learn(&rows).unwrap();
        // Two roots split at exactly −0 and +0, so signed zeros meet both.
        for (root, zero) in forest.roots.clone().into_iter().zip([-0.0, 0.0]) {
            forest.nodes[root as usize].split = zero;
        }
        forest.fast = fast_layout(&forest.nodes);
        forest.complete = None;
        let mut test = Vec::new();
        for node in forest.nodes.iter().filter(|n| n.left != 0).take(200) {
            for value in [node.split, node.split.next_down(), node.split.next_up()] {
                let mut row = vec![0.25, -0.5, 1.0];
                row[node.feature as usize] = value;
                test.push(row);
            }
        }
        for zero in [-0.0, 0.0] {
            test.push(vec![zero; 3]);
        }
        let batch = forest.score_values(&test).unwrap();
        for (row, value) in test.iter().zip(batch) {
            let single = forest.score(row).unwrap().value;
            // The sums run in another order; one row sent the other way moves it by ~1e-3.
            assert!((single - value).abs() < 1e-12, "{row:?}: {single} vs {value}");
        }
    }

    #[test]
    fn a_batch_cut_over_cores_scores_as_row_by_row_with_gaps_kept_in_place() {
        let mut g = SeededNormal::new(8);
        let mut rows: Vec<Vec<f64>> = (0..3 * IsolationForest::ROWS_PER_PIECE + 77)
            .map(|i| (0..5).map(|_| g.normal() + if i % 97 == 0 { 4.0 } else { 0.0 }).collect())
            .collect();
        let mut forest = IsolationForest::new(IsolationForestConfig::default()).unwrap();
        forest.learn(&rows[..1000]).unwrap();
        // Gaps in the first block, mid-batch and in the last (short) block.
        for (i, signal) in [(3, 0), (2500, 4), (rows.len() - 2, 1)] {
            rows[i][signal] = f64::NAN;
        }
        let batch = forest.score_values(&rows).unwrap();
        assert_eq!(batch.len(), rows.len());
        for (i, (row, value)) in rows.iter().zip(&batch).enumerate() {
            let single = forest.score(row).unwrap().value;
            assert!((single - value).abs() < 1e-12, "row {i}: {single} vs {value}");
        }
    }

    #[test]
    fn another_seed_grows_another_forest() {
        let mut g = SeededNormal::new(4);
        let rows: Vec<Vec<f64>> = (0..300).map(|_| vec![g.normal(), g.normal()]).collect();
        let fit = |seed| {
            let mut f = IsolationForest::new(IsolationForestConfig { seed, ..IsolationForestConfig::default() }).unwrap();
            f.learn(&rows).unwrap();
            f.score(&[1.0, 1.0]).unwrap().value
        };
        assert_eq!(fit(1), fit(1));
        assert_ne!(fit(1), fit(2));
    }
}
