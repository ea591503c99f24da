//! Gradient-boosted regression trees on binned features (the LightGBM
//! recipe): each feature is cut into at most 255 quantile bins once, trees
//! grow leaf by leaf (the leaf whose best split gains most goes first) from
//! per-bin gradient sums, and a child's histogram is its parent's minus its
//! sibling's. Squared loss, shrinkage, L2 on leaf values, row and feature
//! subsampling from a seed: the same data, settings and seed give the same
//! model, bit for bit, on one thread.
//!
//! Why not a crate: `perpetual` (the pure-Rust candidate) needs a nightly
//! compiler in its released versions, and its 3.0 release candidate took
//! 45–160 s to fit C-MAPSS FD001 (20,631 rows × 61 features) on one core
//! with an RMSE no better than LightGBM's; this fits it in seconds.

use crate::stats::SeededNormal;
use serde::{Deserialize, Serialize};

/// Settings of [`Gbdt`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GbdtConfig {
    /// Boosting rounds (trees).
    #[serde(default = "default_trees")]
    pub trees: usize,
    /// Shrinkage applied to every tree.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Most leaves per tree.
    #[serde(default = "default_leaves")]
    pub leaves: usize,
    /// Fewest training rows in a leaf.
    #[serde(default = "default_min_leaf_rows")]
    pub min_leaf_rows: usize,
    /// L2 penalty on leaf values.
    #[serde(default = "default_l2")]
    pub l2: f64,
    /// Share of rows drawn (without replacement) for each tree.
    #[serde(default = "default_fraction")]
    pub row_fraction: f64,
    /// Share of features each tree may split on.
    #[serde(default = "default_fraction")]
    pub feature_fraction: f64,
    /// Seed of the row and feature draws.
    #[serde(default)]
    pub seed: u64,
}

fn default_trees() -> usize {
    600
}
fn default_learning_rate() -> f64 {
    0.03
}
fn default_leaves() -> usize {
    31
}
fn default_min_leaf_rows() -> usize {
    50
}
fn default_l2() -> f64 {
    1.0
}
fn default_fraction() -> f64 {
    0.8
}

impl Default for GbdtConfig {
    fn default() -> Self {
        GbdtConfig {
            trees: default_trees(),
            learning_rate: default_learning_rate(),
            leaves: default_leaves(),
            min_leaf_rows: default_min_leaf_rows(),
            l2: default_l2(),
            row_fraction: default_fraction(),
            feature_fraction: default_fraction(),
            seed: 0,
        }
    }
}

impl GbdtConfig {
    /// Every problem with the settings, as messages.
    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.trees == 0 || self.trees > 100_000 {
            problems.push(format!("gbdt.trees must be between 1 and 100000, got {}", self.trees));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            problems.push(format!("gbdt.learning_rate must be in (0, 1], got {}", self.learning_rate));
        }
        if self.leaves < 2 || self.leaves > 4096 {
            problems.push(format!("gbdt.leaves must be between 2 and 4096, got {}", self.leaves));
        }
        if self.min_leaf_rows == 0 {
            problems.push("gbdt.min_leaf_rows must be at least 1".into());
        }
        if !(self.l2 >= 0.0 && self.l2.is_finite()) {
            problems.push(format!("gbdt.l2 must be finite and at least 0, got {}", self.l2));
        }
        for (name, value) in [("row_fraction", self.row_fraction), ("feature_fraction", self.feature_fraction)] {
            if !(value > 0.0 && value <= 1.0) {
                problems.push(format!("gbdt.{name} must be in (0, 1], got {value}"));
            }
        }
        problems
    }
}

/// Why fitting failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GbdtError {
    /// No rows, or rows and targets of different lengths or widths.
    #[error("cannot fit: {0}")]
    BadData(String),
    /// The settings are invalid.
    #[error("invalid settings: {0}")]
    BadSettings(String),
}

/// One node of a fitted regression tree (here and in
/// [`crate::extra_trees`]). Leaves have `left == right == 0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct TreeNode {
    pub(crate) feature: u32,
    /// Values at most this go left; missing values (NaN) go left too.
    pub(crate) threshold: f64,
    pub(crate) left: u32,
    pub(crate) right: u32,
    pub(crate) value: f64,
}

impl TreeNode {
    /// A leaf holding `value` (a node still to be split starts as one).
    pub(crate) fn leaf(value: f64) -> TreeNode {
        TreeNode { feature: 0, threshold: 0.0, left: 0, right: 0, value }
    }
}

/// The leaf value a row reaches from `root`; `value_of(feature)` reads the row.
pub(crate) fn walk_to_leaf(nodes: &[TreeNode], root: usize, value_of: impl Fn(usize) -> f64) -> f64 {
    let mut at = root;
    loop {
        let node = &nodes[at];
        if node.left == 0 {
            return node.value;
        }
        let v = value_of(node.feature as usize);
        at = if v.is_nan() || v <= node.threshold { node.left as usize } else { node.right as usize };
    }
}

/// A fitted gradient-boosted regression model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gbdt {
    config: GbdtConfig,
    width: usize,
    base: f64,
    /// Nodes of every tree; `roots[t]` is tree `t`'s root.
    nodes: Vec<TreeNode>,
    roots: Vec<u32>,
    /// Total split gain per feature (how much each feature reduced the loss).
    gains: Vec<f64>,
}

/// Binned training data, feature-major.
struct Binned {
    rows: usize,
    /// `bins[f * rows + i]`: the bin of row `i`'s feature `f`; 0 is missing.
    bins: Vec<u8>,
    /// Per feature, the upper edge of each bin (`edges[f][b - 1]` for bin b ≥ 1).
    edges: Vec<Vec<f64>>,
}

const MAX_BINS: usize = 255;

impl Binned {
    fn new(rows: &[Vec<f64>], width: usize) -> Self {
        let n = rows.len();
        let mut bins = vec![0u8; n * width];
        let mut edges = Vec::with_capacity(width);
        for f in 0..width {
            let mut values: Vec<f64> = rows.iter().map(|r| r[f]).filter(|v| !v.is_nan()).collect();
            values.sort_by(f64::total_cmp);
            values.dedup();
            // Upper edges: every distinct value when few, else quantiles.
            let feature_edges: Vec<f64> = if values.len() <= MAX_BINS {
                values
            } else {
                let mut e: Vec<f64> =
                    (1..=MAX_BINS).map(|b| values[(b * values.len() / MAX_BINS).min(values.len()) - 1]).collect();
                e.dedup();
                e
            };
            for (i, row) in rows.iter().enumerate() {
                let v = row[f];
                if !v.is_nan() {
                    let b = feature_edges.partition_point(|e| *e < v).min(feature_edges.len().saturating_sub(1));
                    bins[f * n + i] = (b + 1) as u8;
                }
            }
            edges.push(feature_edges);
        }
        Binned { rows: n, bins, edges }
    }
}

/// Gradient sum and row count per bin.
#[derive(Clone, Copy, Default)]
struct Bin {
    sum: f64,
    count: u32,
}

/// A leaf that may still be split.
struct Open {
    node: usize,
    rows: Vec<u32>,
    histograms: Vec<[Bin; MAX_BINS + 1]>,
    best: Option<Split>,
}

#[derive(Clone, Copy)]
struct Split {
    gain: f64,
    feature: usize,
    /// Bins up to this one (inclusive; bin 0 is missing) go left.
    bin: usize,
}

impl Gbdt {
    /// Fit on `rows` (one value per feature, NaN when missing) and `targets`.
    ///
    /// # Errors
    /// [`GbdtError::BadData`] for empty or ragged input or non-finite
    /// targets; [`GbdtError::BadSettings`] for invalid settings.
    pub fn fit(config: &GbdtConfig, rows: &[Vec<f64>], targets: &[f64]) -> Result<Gbdt, GbdtError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(GbdtError::BadSettings(problems.join("; ")));
        }
        let width = training_width(rows, targets).map_err(GbdtError::BadData)?;
        let binned = Binned::new(rows, width);
        let n = rows.len();
        let base = targets.iter().sum::<f64>() / n as f64;
        let mut model =
            Gbdt { config: config.clone(), width, base, nodes: Vec::new(), roots: Vec::new(), gains: vec![0.0; width] };
        let mut predictions = vec![base; n];
        let mut rng = SeededNormal::new(config.seed);
        let mut all_rows: Vec<u32> = (0..n as u32).collect();
        let mut features: Vec<usize> = (0..width).collect();
        let sampled_rows = ((n as f64 * config.row_fraction).ceil() as usize).clamp(1, n);
        let sampled_features = ((width as f64 * config.feature_fraction).ceil() as usize).clamp(1, width);
        for _ in 0..config.trees {
            let residuals: Vec<f64> = targets.iter().zip(&predictions).map(|(t, p)| t - p).collect();
            for i in 0..sampled_rows {
                let j = i + rng.below(n - i);
                all_rows.swap(i, j);
            }
            for i in 0..sampled_features {
                let j = i + rng.below(width - i);
                features.swap(i, j);
            }
            let mut tree_rows = all_rows[..sampled_rows].to_vec();
            tree_rows.sort_unstable();
            let mut allowed = features[..sampled_features].to_vec();
            allowed.sort_unstable();
            let root = model.grow(&binned, &residuals, tree_rows, &allowed);
            model.roots.push(root as u32);
            for (i, row) in rows.iter().enumerate() {
                predictions[i] += model.tree_value(root, row);
            }
        }
        Ok(model)
    }

    /// Grow one tree on the residuals of `rows`; the index of its root.
    fn grow(&mut self, binned: &Binned, residuals: &[f64], rows: Vec<u32>, allowed: &[usize]) -> usize {
        let config = &self.config;
        let root = self.nodes.len();
        let leaf_value = |sum: f64, count: u32| config.learning_rate * sum / (f64::from(count) + config.l2);
        let (sum, count) = (rows.iter().map(|&i| residuals[i as usize]).sum::<f64>(), rows.len() as u32);
        self.nodes.push(TreeNode::leaf(leaf_value(sum, count)));
        let root_histograms = histograms(binned, residuals, &rows, allowed);
        let best = best_split(&root_histograms, allowed, config);
        let mut open = vec![Open { node: root, rows, histograms: root_histograms, best }];
        let mut leaves = 1;
        while leaves < config.leaves {
            let Some(pick) = (0..open.len()).filter(|&i| open[i].best.is_some()).max_by(|&a, &b| {
                open[a].best.map(|s| s.gain).unwrap_or(0.0).total_cmp(&open[b].best.map(|s| s.gain).unwrap_or(0.0))
            }) else {
                break;
            };
            let leaf = open.swap_remove(pick);
            let Some(split) = leaf.best else { break };
            let column = &binned.bins[split.feature * binned.rows..(split.feature + 1) * binned.rows];
            let (left_rows, right_rows): (Vec<u32>, Vec<u32>) =
                leaf.rows.iter().partition(|&&i| usize::from(column[i as usize]) <= split.bin);
            // Histogram of the smaller child by scan, the larger by subtraction.
            let small = if left_rows.len() <= right_rows.len() { &left_rows } else { &right_rows };
            let small_histograms = histograms(binned, residuals, small, allowed);
            let large_histograms: Vec<[Bin; MAX_BINS + 1]> = leaf
                .histograms
                .iter()
                .zip(&small_histograms)
                .map(|(parent, child)| {
                    let mut out = [Bin::default(); MAX_BINS + 1];
                    for ((o, p), c) in out.iter_mut().zip(parent).zip(child) {
                        *o = Bin { sum: p.sum - c.sum, count: p.count - c.count };
                    }
                    out
                })
                .collect();
            let (left_histograms, right_histograms) = if left_rows.len() <= right_rows.len() {
                (small_histograms, large_histograms)
            } else {
                (large_histograms, small_histograms)
            };
            self.gains[split.feature] += split.gain;
            let threshold = if split.bin == 0 { f64::NEG_INFINITY } else { binned.edges[split.feature][split.bin - 1] };
            let mut children = [0usize; 2];
            for (slot, (child_rows, child_histograms)) in
                [(left_rows, left_histograms), (right_rows, right_histograms)].into_iter().enumerate()
            {
                let (sum, count) = sum_count(&child_histograms[0]);
                let node = self.nodes.len();
                self.nodes.push(TreeNode {
                    feature: 0,
                    threshold: 0.0,
                    left: 0,
                    right: 0,
                    value: leaf_value(sum, count),
                });
                children[slot] = node;
                let best = best_split(&child_histograms, allowed, config);
                open.push(Open { node, rows: child_rows, histograms: child_histograms, best });
            }
            let parent = &mut self.nodes[leaf.node];
            parent.feature = split.feature as u32;
            parent.threshold = threshold;
            parent.left = children[0] as u32;
            parent.right = children[1] as u32;
            leaves += 1;
        }
        root
    }

    fn tree_value(&self, root: usize, row: &[f64]) -> f64 {
        walk_to_leaf(&self.nodes, root, |feature| row[feature])
    }

    /// The prediction for one row (NaN for a row of the wrong width).
    #[must_use]
    pub fn predict(&self, row: &[f64]) -> f64 {
        if row.len() != self.width {
            return f64::NAN;
        }
        // Summed in the same order as `predict_many`, so both give the same bits.
        self.roots.iter().fold(self.base, |sum, &r| sum + self.tree_value(r as usize, row))
    }

    /// Predictions for many rows: each tree walks a block of rows in
    /// lockstep, choosing children by index rather than by branch (the
    /// splits are unpredictable, so branches would mispredict half the time).
    /// Rows of the wrong width get NaN.
    #[must_use]
    pub fn predict_many(&self, rows: &[Vec<f64>]) -> Vec<f64> {
        const BLOCK: usize = 64;
        let mut out = Vec::with_capacity(rows.len());
        let mut at = [0usize; BLOCK];
        for block in rows.chunks(BLOCK) {
            let mut sums = [self.base; BLOCK];
            for &root in &self.roots {
                at[..block.len()].fill(root as usize);
                loop {
                    let mut moved = false;
                    for (slot, row) in at.iter_mut().zip(block) {
                        let node = &self.nodes[*slot];
                        if node.left != 0 {
                            let v = row.get(node.feature as usize).copied().unwrap_or(f64::NAN);
                            let right = usize::from(v > node.threshold);
                            *slot = [node.left, node.right][right] as usize;
                            moved = true;
                        }
                    }
                    if !moved {
                        break;
                    }
                }
                for (sum, slot) in sums.iter_mut().zip(&at[..block.len()]) {
                    *sum += self.nodes[*slot].value;
                }
            }
            out.extend(block.iter().zip(&sums).map(|(row, s)| if row.len() == self.width { *s } else { f64::NAN }));
        }
        out
    }

    /// Number of features the model expects.
    #[must_use]
    pub fn width(&self) -> usize {
        self.width
    }

    /// Each feature's share of the total split gain (sums to 1 when any split was made).
    #[must_use]
    pub fn importances(&self) -> Vec<f64> {
        gain_shares(&self.gains)
    }
}

/// The width of training rows, or what is wrong with them: no rows or
/// features, ragged rows, a target per row missing or not finite. Shared by
/// the tree learners ([`Gbdt`], [`crate::extra_trees::ExtraTrees`]).
pub(crate) fn training_width(rows: &[Vec<f64>], targets: &[f64]) -> Result<usize, String> {
    let width = rows.first().map_or(0, Vec::len);
    if rows.is_empty() || width == 0 {
        return Err("no rows or no features".into());
    }
    if rows.len() != targets.len() {
        return Err(format!("{} rows but {} targets", rows.len(), targets.len()));
    }
    if rows.iter().any(|r| r.len() != width) {
        return Err("rows differ in width".into());
    }
    if targets.iter().any(|t| !t.is_finite()) {
        return Err("a target is not a finite number".into());
    }
    Ok(width)
}

/// Each feature's share of the total gain (all 0 when there is none).
pub(crate) fn gain_shares(gains: &[f64]) -> Vec<f64> {
    let total: f64 = gains.iter().sum();
    gains.iter().map(|g| if total > 0.0 { g / total } else { 0.0 }).collect()
}

fn sum_count(histogram: &[Bin; MAX_BINS + 1]) -> (f64, u32) {
    histogram.iter().fold((0.0, 0), |(s, c), b| (s + b.sum, c + b.count))
}

/// Per allowed feature, the residual sum and count of `rows` in each bin.
fn histograms(binned: &Binned, residuals: &[f64], rows: &[u32], allowed: &[usize]) -> Vec<[Bin; MAX_BINS + 1]> {
    allowed
        .iter()
        .map(|&f| {
            let column = &binned.bins[f * binned.rows..(f + 1) * binned.rows];
            let mut histogram = [Bin::default(); MAX_BINS + 1];
            for &i in rows {
                let bin = &mut histogram[usize::from(column[i as usize])];
                bin.sum += residuals[i as usize];
                bin.count += 1;
            }
            histogram
        })
        .collect()
}

/// The split of a leaf with the largest loss reduction, if any respects `min_leaf_rows`.
fn best_split(histograms: &[[Bin; MAX_BINS + 1]], allowed: &[usize], config: &GbdtConfig) -> Option<Split> {
    let (total_sum, total_count) = sum_count(histograms.first()?);
    let min_rows = config.min_leaf_rows as u32;
    if total_count < 2 * min_rows {
        return None;
    }
    let score = |sum: f64, count: u32| sum * sum / (f64::from(count) + config.l2);
    let parent = score(total_sum, total_count);
    let mut best: Option<Split> = None;
    for (histogram, &feature) in histograms.iter().zip(allowed) {
        let (mut sum, mut count) = (0.0, 0u32);
        for (bin, b) in histogram.iter().enumerate().take(MAX_BINS) {
            sum += b.sum;
            count += b.count;
            if count < min_rows {
                continue;
            }
            if total_count - count < min_rows {
                break;
            }
            let gain = score(sum, count) + score(total_sum - sum, total_count - count) - parent;
            if gain > 1e-12 && best.is_none_or(|s| gain > s.gain) {
                best = Some(Split { gain, feature, bin });
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn friedman(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
        // Friedman #1: y = 10 sin(π x0 x1) + 20 (x2 − 0.5)² + 10 x3 + 5 x4, x5..x9 noise features.
        let mut g = SeededNormal::new(seed);
        let rows: Vec<Vec<f64>> = (0..n).map(|_| (0..10).map(|_| g.uniform()).collect()).collect();
        let y = rows
            .iter()
            .map(|x| {
                10.0 * (std::f64::consts::PI * x[0] * x[1]).sin()
                    + 20.0 * (x[2] - 0.5).powi(2)
                    + 10.0 * x[3]
                    + 5.0 * x[4]
                    + 0.5 * g.normal()
            })
            .collect();
        (rows, y)
    }

    fn rmse(model: &Gbdt, rows: &[Vec<f64>], y: &[f64]) -> f64 {
        (rows.iter().zip(y).map(|(r, t)| (model.predict(r) - t).powi(2)).sum::<f64>() / y.len() as f64).sqrt()
    }

    #[test]
    fn learns_friedman_1_and_ranks_the_informative_features() {
        let (rows, y) = friedman(3000, 1);
        let (test_rows, test_y) = friedman(1000, 2);
        let config = GbdtConfig { trees: 300, learning_rate: 0.05, min_leaf_rows: 20, ..GbdtConfig::default() };
        let model = Gbdt::fit(&config, &rows, &y).unwrap();
        let spread =
            (test_y.iter().map(|t| t * t).sum::<f64>() / 1000.0 - (test_y.iter().sum::<f64>() / 1000.0).powi(2)).sqrt();
        let error = rmse(&model, &test_rows, &test_y);
        // Published GBM results on Friedman #1 with this noise are about 1.0–1.3.
        assert!(error < 1.6, "test RMSE {error} (target spread {spread})");
        let importances = model.importances();
        let informative: f64 = importances[..5].iter().sum();
        assert!(informative > 0.95, "{importances:?}");
    }

    #[test]
    fn same_seed_same_model_and_serde_round_trip() {
        let (rows, y) = friedman(500, 3);
        let config = GbdtConfig { trees: 20, ..GbdtConfig::default() };
        let a = Gbdt::fit(&config, &rows, &y).unwrap();
        let b = Gbdt::fit(&config, &rows, &y).unwrap();
        assert_eq!(a, b);
        let c = Gbdt::fit(&GbdtConfig { seed: 9, ..config.clone() }, &rows, &y).unwrap();
        assert_ne!(a, c);
        let back: Gbdt = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        let many = back.predict_many(&rows);
        for (r, m) in rows.iter().zip(&many) {
            assert_eq!(back.predict(r).to_bits(), a.predict(r).to_bits());
            assert_eq!(m.to_bits(), a.predict(r).to_bits(), "batch and single predictions agree");
        }
    }

    #[test]
    fn missing_values_and_bad_input() {
        let (mut rows, y) = friedman(400, 4);
        for r in rows.iter_mut().step_by(7) {
            r[3] = f64::NAN;
        }
        let model = Gbdt::fit(&GbdtConfig { trees: 30, ..GbdtConfig::default() }, &rows, &y).unwrap();
        assert!(model.predict(&rows[0]).is_finite());
        assert!(model.predict(&[1.0]).is_nan(), "wrong width");
        let config = GbdtConfig::default();
        assert!(matches!(Gbdt::fit(&config, &[], &[]), Err(GbdtError::BadData(_))));
        assert!(matches!(Gbdt::fit(&config, &rows, &y[..10]), Err(GbdtError::BadData(_))));
        let mut bad_y = y.clone();
        bad_y[0] = f64::NAN;
        assert!(matches!(Gbdt::fit(&config, &rows, &bad_y), Err(GbdtError::BadData(_))));
        let bad = GbdtConfig { leaves: 1, learning_rate: 0.0, ..GbdtConfig::default() };
        assert!(
            matches!(Gbdt::fit(&bad, &rows, &y), Err(GbdtError::BadSettings(m)) if m.contains("leaves") && m.contains("learning_rate"))
        );
    }
}
