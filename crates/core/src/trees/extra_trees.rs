//! Extremely randomised trees (Geurts, Ernst & Wehenkel, 2006): a forest
//! of regression trees, each grown on all rows, whose splits are drawn at
//! random (a random threshold between a feature's smallest and largest
//! value in the node, for a random subset of features) and kept only when
//! they reduce the squared error most among those drawn.
//!
//! Why beside [`crate::trees::gbdt`]: on wide, noisy process data with few
//! failures (SECOM: 590 measurements, 104 fails) boosting fits the noise of
//! the handful of failed lots, while averaging hundreds of randomised trees
//! does not; the two rank lots differently enough that their average beats
//! either. Fitting is deterministic given the seed. Missing values are
//! filled with the feature's training median, stored in the model so that
//! prediction fills them the same way.

use crate::stats::SeededNormal;
use crate::trees::gbdt::{TreeNode, walk_to_leaf};
use serde::{Deserialize, Serialize};

/// Settings of [`ExtraTrees`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraTreesConfig {
    /// Trees averaged.
    #[serde(default = "default_trees")]
    pub trees: usize,
    /// Share of the features drawn at each split (at least one).
    #[serde(default = "default_feature_fraction")]
    pub feature_fraction: f64,
    /// Fewest training rows in a leaf.
    #[serde(default = "default_min_leaf_rows")]
    pub min_leaf_rows: usize,
    /// Seed of the feature and threshold draws.
    #[serde(default)]
    pub seed: u64,
}

fn default_trees() -> usize {
    300
}
fn default_feature_fraction() -> f64 {
    0.1
}
fn default_min_leaf_rows() -> usize {
    3
}

impl Default for ExtraTreesConfig {
    fn default() -> Self {
        ExtraTreesConfig {
            trees: default_trees(),
            feature_fraction: default_feature_fraction(),
            min_leaf_rows: default_min_leaf_rows(),
            seed: 0,
        }
    }
}

impl ExtraTreesConfig {
    /// Every problem with the settings, as messages.
    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.trees == 0 || self.trees > 100_000 {
            problems.push(format!("extra_trees.trees must be between 1 and 100000, got {}", self.trees));
        }
        if !(self.feature_fraction > 0.0 && self.feature_fraction <= 1.0) {
            problems.push(format!("extra_trees.feature_fraction must be in (0, 1], got {}", self.feature_fraction));
        }
        if self.min_leaf_rows == 0 {
            problems.push("extra_trees.min_leaf_rows must be at least 1".into());
        }
        problems
    }
}

/// Why fitting failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExtraTreesError {
    /// No rows, or rows and targets of different lengths or widths.
    #[error("cannot fit: {0}")]
    BadData(String),
    /// The settings are invalid.
    #[error("invalid settings: {0}")]
    BadSettings(String),
}

/// A fitted forest of extremely randomised regression trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtraTrees {
    config: ExtraTreesConfig,
    /// Per feature, the training median that replaces a missing value (0 when all were missing).
    fill: Vec<f64>,
    /// Nodes of every tree; `roots[t]` is tree `t`'s root.
    nodes: Vec<TreeNode>,
    roots: Vec<u32>,
    /// Squared error removed by each feature's splits, over all trees.
    gains: Vec<f64>,
}

/// A node still to be grown: its rows are `order[start..end]`.
struct Pending {
    node: usize,
    start: usize,
    end: usize,
}

/// The best split drawn so far at a node.
#[derive(Clone, Copy)]
struct Split {
    /// Σ²/n of the two sides (larger is better).
    score: f64,
    feature: usize,
    threshold: f64,
}

impl ExtraTrees {
    /// Fit on `rows` (one value per feature, NaN when missing) and `targets`.
    ///
    /// # Errors
    /// [`ExtraTreesError::BadData`] for empty or ragged input or non-finite
    /// targets; [`ExtraTreesError::BadSettings`] for invalid settings.
    pub fn fit(config: &ExtraTreesConfig, rows: &[Vec<f64>], targets: &[f64]) -> Result<ExtraTrees, ExtraTreesError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(ExtraTreesError::BadSettings(problems.join("; ")));
        }
        let width = crate::trees::gbdt::training_width(rows, targets).map_err(ExtraTreesError::BadData)?;
        let n = rows.len();
        let fill: Vec<f64> = (0..width)
            .map(|f| {
                let values: Vec<f64> = rows.iter().map(|r| r[f]).filter(|v| v.is_finite()).collect();
                crate::stats::quantile(&values, 0.5).unwrap_or(0.0)
            })
            .collect();
        // Feature-major, missing values filled: a split scans one contiguous column.
        let mut columns = vec![0.0; n * width];
        for (i, row) in rows.iter().enumerate() {
            for (f, v) in row.iter().enumerate() {
                columns[f * n + i] = if v.is_finite() { *v } else { fill[f] };
            }
        }
        let draws = ((config.feature_fraction * width as f64).round() as usize).clamp(1, width);
        let mut forest =
            ExtraTrees { config: config.clone(), fill, nodes: Vec::new(), roots: Vec::new(), gains: vec![0.0; width] };
        let mut rng = SeededNormal::new(config.seed);
        let mut features: Vec<usize> = (0..width).collect();
        let mut order: Vec<u32> = Vec::with_capacity(n);
        for _ in 0..config.trees {
            order.clear();
            order.extend(0..n as u32);
            let root = forest.nodes.len();
            forest.roots.push(root as u32);
            forest.nodes.push(TreeNode::leaf(0.0));
            let mut pending = vec![Pending { node: root, start: 0, end: n }];
            while let Some(Pending { node, start, end }) = pending.pop() {
                let members = &mut order[start..end];
                let count = members.len() as f64;
                let sum: f64 = members.iter().map(|&i| targets[i as usize]).sum();
                forest.nodes[node].value = sum / count;
                let pure = members.iter().all(|&i| targets[i as usize] == targets[members[0] as usize]);
                if pure || members.len() < 2 * config.min_leaf_rows {
                    continue;
                }
                let Some(best) = draw_split(&columns, n, targets, members, &mut features, draws, config, &mut rng)
                else {
                    continue;
                };
                forest.gains[best.feature] += best.score - sum * sum / count;
                let column = &columns[best.feature * n..(best.feature + 1) * n];
                let mut left_end = 0;
                for k in 0..members.len() {
                    if column[members[k] as usize] <= best.threshold {
                        members.swap(left_end, k);
                        left_end += 1;
                    }
                }
                let left = forest.nodes.len();
                for _ in 0..2 {
                    forest.nodes.push(TreeNode::leaf(0.0));
                }
                forest.nodes[node] = TreeNode {
                    feature: best.feature as u32,
                    threshold: best.threshold,
                    left: left as u32,
                    right: left as u32 + 1,
                    value: sum / count,
                };
                pending.push(Pending { node: left + 1, start: start + left_end, end });
                pending.push(Pending { node: left, start, end: start + left_end });
            }
        }
        Ok(forest)
    }

    /// The prediction for one row: the trees' mean (NaN for a row of the
    /// wrong width). Missing values take the training median.
    #[must_use]
    pub fn predict(&self, row: &[f64]) -> f64 {
        if row.len() != self.fill.len() {
            return f64::NAN;
        }
        let total: f64 = self
            .roots
            .iter()
            .map(|&root| {
                // Filled values are never NaN, so the walk's NaN-goes-left rule does not apply.
                walk_to_leaf(&self.nodes, root as usize, |f| if row[f].is_finite() { row[f] } else { self.fill[f] })
            })
            .sum();
        total / self.roots.len() as f64
    }

    /// Number of features the model expects.
    #[must_use]
    pub fn width(&self) -> usize {
        self.fill.len()
    }

    /// Each feature's share of the squared error its splits removed (sums
    /// to 1 when any split was made).
    #[must_use]
    pub fn importances(&self) -> Vec<f64> {
        crate::trees::gbdt::gain_shares(&self.gains)
    }
}

/// Draw features in random order until `draws` of them vary in the node;
/// for each, a threshold uniform between its smallest and largest value
/// there. The best of those whose sides both keep `min_leaf_rows` rows, if any.
#[allow(clippy::too_many_arguments)]
fn draw_split(
    columns: &[f64],
    n: usize,
    targets: &[f64],
    members: &[u32],
    features: &mut [usize],
    draws: usize,
    config: &ExtraTreesConfig,
    rng: &mut SeededNormal,
) -> Option<Split> {
    let mut best: Option<Split> = None;
    let mut varying = 0;
    let width = features.len();
    for drawn in 0..width {
        if varying == draws {
            break;
        }
        let pick = drawn + rng.below(width - drawn);
        features.swap(drawn, pick);
        let feature = features[drawn];
        let column = &columns[feature * n..(feature + 1) * n];
        let (low, high) = members
            .iter()
            .map(|&i| column[i as usize])
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if high <= low {
            continue;
        }
        varying += 1;
        // Below `high`, so the right side is never empty.
        let threshold = (low + rng.uniform() * (high - low)).min(high.next_down());
        let (mut left_sum, mut left_count) = (0.0, 0usize);
        let mut total = 0.0;
        for &i in members {
            let t = targets[i as usize];
            total += t;
            if column[i as usize] <= threshold {
                left_sum += t;
                left_count += 1;
            }
        }
        let right_count = members.len() - left_count;
        if left_count < config.min_leaf_rows || right_count < config.min_leaf_rows {
            continue;
        }
        let right_sum = total - left_sum;
        let score = left_sum * left_sum / left_count as f64 + right_sum * right_sum / right_count as f64;
        if best.is_none_or(|b| score > b.score) {
            best = Some(Split { score, feature, threshold });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of 6 features; the target is 1 when feature 2 exceeds 0.5 (one
    /// row in five has feature 4 missing).
    fn step_data(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut g = SeededNormal::new(seed);
        let rows: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..6).map(|f| if f == 4 && i % 5 == 0 { f64::NAN } else { g.uniform() }).collect())
            .collect();
        let targets = rows.iter().map(|r| f64::from(u8::from(r[2] > 0.5))).collect();
        (rows, targets)
    }

    #[test]
    fn learns_a_step_and_credits_its_feature() {
        let (rows, targets) = step_data(400, 1);
        let forest = ExtraTrees::fit(&ExtraTreesConfig { trees: 50, ..ExtraTreesConfig::default() }, &rows, &targets)
            .expect("fit");
        let (test, truth) = step_data(200, 2);
        let wrong = test.iter().zip(&truth).filter(|(r, t)| (forest.predict(r) > 0.5) != (**t > 0.5)).count();
        assert!(wrong <= 10, "{wrong} of 200 on the wrong side");
        let shares = forest.importances();
        assert!(shares[2] > 0.5, "feature 2's share {:.2}", shares[2]);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn same_seed_same_forest_and_serde_round_trip() {
        let (rows, targets) = step_data(200, 3);
        let config = ExtraTreesConfig { trees: 20, ..ExtraTreesConfig::default() };
        let a = ExtraTrees::fit(&config, &rows, &targets).expect("fit");
        let b = ExtraTrees::fit(&config, &rows, &targets).expect("fit");
        assert_eq!(a, b);
        let c = ExtraTrees::fit(&ExtraTreesConfig { seed: 9, ..config }, &rows, &targets).expect("fit");
        assert_ne!(a, c);
        let back: ExtraTrees = serde_json::from_str(&serde_json::to_string(&a).expect("json")).expect("parse");
        assert_eq!(back, a);
        assert_eq!(back.predict(&rows[0]).to_bits(), a.predict(&rows[0]).to_bits());
    }

    #[test]
    fn leaves_keep_min_leaf_rows_and_missing_values_take_the_median() {
        let (rows, targets) = step_data(100, 4);
        let config = ExtraTreesConfig { trees: 5, min_leaf_rows: 10, ..ExtraTreesConfig::default() };
        let forest = ExtraTrees::fit(&config, &rows, &targets).expect("fit");
        // 100 rows, at least 10 per leaf: at most 10 leaves per tree.
        let leaves = forest.nodes.iter().filter(|n| n.left == 0).count();
        assert!((5..=5 * 10).contains(&leaves), "{leaves} leaves");
        let mut with_gap = rows[1].clone();
        with_gap[4] = f64::NAN;
        let mut filled = rows[1].clone();
        filled[4] = forest.fill[4];
        assert_eq!(forest.predict(&with_gap).to_bits(), forest.predict(&filled).to_bits());
        assert!(forest.predict(&rows[0][..3]).is_nan());
    }

    #[test]
    fn bad_input_is_refused() {
        let config = ExtraTreesConfig::default();
        let cases: &[(&[Vec<f64>], &[f64])] = &[
            (&[], &[]),
            (&[vec![1.0, 2.0]], &[1.0, 2.0]),
            (&[vec![1.0, 2.0], vec![1.0]], &[1.0, 2.0]),
            (&[vec![1.0]], &[f64::NAN]),
        ];
        for (rows, targets) in cases {
            assert!(matches!(ExtraTrees::fit(&config, rows, targets), Err(ExtraTreesError::BadData(_))));
        }
        let bad = ExtraTreesConfig { trees: 0, feature_fraction: 0.0, min_leaf_rows: 0, seed: 0 };
        let Err(ExtraTreesError::BadSettings(message)) = ExtraTrees::fit(&bad, &[vec![1.0]], &[1.0]) else {
            panic!("bad settings accepted");
        };
        assert_eq!(message.matches("must").count(), 3, "{message}");
    }
}
