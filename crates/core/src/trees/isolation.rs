//! Isolation trees (Liu, Ting & Zhou 2008): random axis-parallel splits
//! grown on a subsample until every row stands alone or a depth limit is
//! reached. Anomalies are few and different, so they are isolated in fewer
//! steps: the detector ([`IsolationForest`](crate::detector::IsolationForest))
//! turns the mean path length into a score.
//!
//! Here: growing a tree, and the two row-by-row walks (with a missing value,
//! which follows both branches, and the lockstep walk of complete rows over
//! [`FastNode`]s). The batch walk is [`crate::kernels::forest`].

use crate::stats::SeededNormal;
use serde::{Deserialize, Serialize};

/// One node of a tree, stored flat with every tree's nodes. Leaves have `left == 0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Node {
    /// The feature split on.
    pub feature: u32,
    /// Rows with `value < split` go left.
    pub split: f64,
    /// Index of the left child; 0 for a leaf.
    pub left: u32,
    /// Index of the right child.
    pub right: u32,
    /// Baseline rows that reached the node.
    pub size: u32,
}

/// Average path length of an unsuccessful search in a binary search tree of `n` points.
pub(crate) fn average_path(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n <= 2.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
    }
}

/// Grow one tree on the rows `sample` indexes (reordered in place), from
/// `depth` down to `limit`, appending its nodes to `nodes`; returns its root.
pub(crate) fn grow(
    nodes: &mut Vec<Node>,
    rows: &[&Vec<f64>],
    width: usize,
    sample: &mut [usize],
    depth: usize,
    limit: usize,
    rng: &mut SeededNormal,
) -> u32 {
    let at = nodes.len() as u32;
    nodes.push(Node { feature: 0, split: 0.0, left: 0, right: 0, size: sample.len() as u32 });
    if depth >= limit || sample.len() <= 1 {
        return at;
    }
    // Features that still vary in this node.
    let ranges: Vec<(usize, f64, f64)> = (0..width)
        .filter_map(|f| {
            let (lo, hi) = sample
                .iter()
                .map(|&i| rows[i][f])
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
            (hi > lo).then_some((f, lo, hi))
        })
        .collect();
    if ranges.is_empty() {
        return at;
    }
    let (feature, lo, hi) = ranges[rng.below(ranges.len())];
    let split = (lo + rng.uniform() * (hi - lo)).clamp(lo, hi);
    let mut cut = 0;
    for i in 0..sample.len() {
        if rows[sample[i]][feature] < split {
            sample.swap(i, cut);
            cut += 1;
        }
    }
    if cut == 0 || cut == sample.len() {
        return at;
    }
    let (left_rows, right_rows) = sample.split_at_mut(cut);
    let left = grow(nodes, rows, width, left_rows, depth + 1, limit, rng);
    let right = grow(nodes, rows, width, right_rows, depth + 1, limit, rng);
    let node = &mut nodes[at as usize];
    node.feature = feature as u32;
    node.split = split;
    node.left = left;
    node.right = right;
    at
}

/// Expected path length of `row` below `node`, adding split credit to
/// `credit`; missing values (NaN) follow both branches, weighted by their
/// baseline sizes. Each split adds ln(parent size / size of the side the row
/// took) to the split feature's credit.
pub(crate) fn path_with_missing(
    nodes: &[Node],
    node: u32,
    row: &[f64],
    depth: f64,
    weight: f64,
    credit: &mut [f64],
) -> f64 {
    let n = nodes[node as usize];
    if n.left == 0 {
        return depth + average_path(f64::from(n.size));
    }
    let feature = n.feature as usize;
    let value = row[feature];
    if value.is_nan() {
        let (l, r) = (f64::from(nodes[n.left as usize].size), f64::from(nodes[n.right as usize].size));
        let total = (l + r).max(1.0);
        return (l / total) * path_with_missing(nodes, n.left, row, depth + 1.0, weight * l / total, credit)
            + (r / total) * path_with_missing(nodes, n.right, row, depth + 1.0, weight * r / total, credit);
    }
    let next = if value < n.split { n.left } else { n.right };
    let gain = f64::from(n.size.max(1)).ln() - f64::from(nodes[next as usize].size.max(1)).ln();
    credit[feature] += weight * gain;
    path_with_missing(nodes, next, row, depth + 1.0, weight, credit)
}

/// A node as the row-by-row walk of complete rows reads it. A leaf points
/// to itself on both sides with no credit and no depth, so every tree can be
/// walked the same number of steps in lockstep (independent walks overlap in
/// the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct FastNode {
    split: f64,
    children: [u32; 2],
    feature: u32,
    /// 1 for an internal node, 0 for a leaf.
    step: f32,
    /// Isolation credit of going left and right.
    gains: [f32; 2],
    /// c(size) of a leaf.
    leaf_path: f64,
}

/// `nodes` laid out for [`mean_path`], index for index.
pub(crate) fn fast_layout(nodes: &[Node]) -> Vec<FastNode> {
    let log = |i: u32| f64::from(nodes[i as usize].size.max(1)).ln();
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if n.left == 0 {
                FastNode {
                    split: f64::INFINITY,
                    children: [i as u32, i as u32],
                    leaf_path: average_path(f64::from(n.size)),
                    ..FastNode::default()
                }
            } else {
                let own = f64::from(n.size.max(1)).ln();
                FastNode {
                    split: n.split,
                    children: [n.left, n.right],
                    feature: n.feature,
                    step: 1.0,
                    gains: [(own - log(n.left)) as f32, (own - log(n.right)) as f32],
                    leaf_path: 0.0,
                }
            }
        })
        .collect()
}

/// Mean path length of a complete row over the trees at `roots`, walking
/// them in lockstep for `steps` steps (the deepest tree's depth), adding
/// split credit to `credit`; `current` is scratch.
pub(crate) fn mean_path(
    fast: &[FastNode],
    roots: &[u32],
    steps: usize,
    row: &[f64],
    credit: &mut [f64],
    current: &mut Vec<u32>,
) -> f64 {
    current.clear();
    current.extend_from_slice(roots);
    let mut depth = 0.0f32;
    for _ in 0..steps {
        for node in current.iter_mut() {
            let n = &fast[*node as usize];
            let feature = n.feature as usize;
            // An index, not a branch: random data would mispredict half the splits.
            let side = usize::from(row[feature] >= n.split);
            credit[feature] += f64::from(n.gains[side]);
            depth += n.step;
            *node = n.children[side];
        }
    }
    let leaves: f64 = current.iter().map(|&node| fast[node as usize].leaf_path).sum();
    (f64::from(depth) + leaves) / roots.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_path_matches_the_paper() {
        // c(256) = 2 H(255) − 2·255/256 ≈ 10.2448
        assert!((average_path(256.0) - 10.2448).abs() < 1e-3);
        assert_eq!(average_path(1.0), 0.0);
        assert_eq!(average_path(2.0), 1.0);
    }

    #[test]
    fn the_lockstep_walk_equals_the_walk_with_missing_values_on_complete_rows() {
        let mut g = SeededNormal::new(12);
        let rows: Vec<Vec<f64>> = (0..300).map(|_| (0..4).map(|_| g.normal()).collect()).collect();
        let refs: Vec<&Vec<f64>> = rows.iter().collect();
        let mut nodes = Vec::new();
        let roots: Vec<u32> = (0..5)
            .map(|_| {
                let mut sample: Vec<usize> = (0..64).map(|_| g.below(rows.len())).collect();
                grow(&mut nodes, &refs, 4, &mut sample, 0, 6, &mut g)
            })
            .collect();
        let fast = fast_layout(&nodes);
        let mut current = Vec::new();
        for row in rows.iter().take(50) {
            let (mut a, mut b) = (vec![0.0; 4], vec![0.0; 4]);
            let lockstep = mean_path(&fast, &roots, 6, row, &mut a, &mut current);
            let recursive: f64 =
                roots.iter().map(|&root| path_with_missing(&nodes, root, row, 0.0, 1.0, &mut b)).sum::<f64>() / 5.0;
            assert!((lockstep - recursive).abs() < 1e-9, "{lockstep} vs {recursive}");
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-5, "credit {a:?} vs {b:?}");
            }
        }
    }
}
