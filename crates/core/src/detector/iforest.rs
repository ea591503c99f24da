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
use crate::threshold::ThresholdConfig;
use crate::stats::SeededNormal;
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

/// One node of a tree, stored flat. Leaves have `left == 0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Node {
    feature: u32,
    split: f64,
    left: u32,
    right: u32,
    /// Baseline rows that reached the node.
    size: u32,
}

/// Average path length of an unsuccessful search in a binary search tree of `n` points.
fn average_path(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n <= 2.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
    }
}

/// Isolation forest detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// A node as scoring reads it. A leaf points to itself on both sides with
/// no credit and no depth, so every tree can be walked the same number of
/// steps in lockstep (independent walks overlap in the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct FastNode {
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

    fn grow(
        &mut self,
        rows: &[&Vec<f64>],
        sample: &mut [usize],
        depth: usize,
        limit: usize,
        rng: &mut SeededNormal,
    ) -> u32 {
        let at = self.nodes.len() as u32;
        self.nodes.push(Node { feature: 0, split: 0.0, left: 0, right: 0, size: sample.len() as u32 });
        if depth >= limit || sample.len() <= 1 {
            return at;
        }
        // Features that still vary in this node.
        let ranges: Vec<(usize, f64, f64)> = (0..self.width)
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
        let left = self.grow(rows, left_rows, depth + 1, limit, rng);
        let right = self.grow(rows, right_rows, depth + 1, limit, rng);
        let node = &mut self.nodes[at as usize];
        node.feature = feature as u32;
        node.split = split;
        node.left = left;
        node.right = right;
        at
    }

    /// Expected path length of `row` below `node`, adding split credit to
    /// `credit`; missing values (NaN) follow both branches.
    fn path_with_missing(&self, node: u32, row: &[f64], depth: f64, weight: f64, credit: &mut [f64]) -> f64 {
        let n = self.nodes[node as usize];
        if n.left == 0 {
            return depth + average_path(f64::from(n.size));
        }
        let feature = n.feature as usize;
        let value = row[feature];
        if value.is_nan() {
            let (l, r) = (f64::from(self.nodes[n.left as usize].size), f64::from(self.nodes[n.right as usize].size));
            let total = (l + r).max(1.0);
            return (l / total) * self.path_with_missing(n.left, row, depth + 1.0, weight * l / total, credit)
                + (r / total) * self.path_with_missing(n.right, row, depth + 1.0, weight * r / total, credit);
        }
        let next = if value < n.split { n.left } else { n.right };
        let gain = f64::from(n.size.max(1)).ln() - f64::from(self.nodes[next as usize].size.max(1)).ln();
        credit[feature] += weight * gain;
        self.path_with_missing(next, row, depth + 1.0, weight, credit)
    }

    /// Mean path length of a complete row over all trees, walking the trees
    /// in lockstep for `depth_limit` steps.
    fn mean_path(&self, row: &[f64], credit: &mut [f64], current: &mut Vec<u32>) -> f64 {
        current.clear();
        current.extend_from_slice(&self.roots);
        let mut depth = 0.0f32;
        for _ in 0..self.depth_limit {
            for node in current.iter_mut() {
                let n = &self.fast[*node as usize];
                let feature = n.feature as usize;
                // An index, not a branch: random data would mispredict half the splits.
                let side = usize::from(row[feature] >= n.split);
                credit[feature] += f64::from(n.gains[side]);
                depth += n.step;
                *node = n.children[side];
            }
        }
        let leaves: f64 = current.iter().map(|&node| self.fast[node as usize].leaf_path).sum();
        (f64::from(depth) + leaves) / self.roots.len() as f64
    }

    fn prepare(&mut self) {
        let log = |i: u32| f64::from(self.nodes[i as usize].size.max(1)).ln();
        self.fast = self
            .nodes
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
            .collect();
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
            let root = self.grow(&complete, &mut sample, 0, depth_limit, &mut rng);
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
            self.complete = Some(CompleteForest::new(&self.nodes, &self.roots, self.depth_limit, self.width));
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
            self.prepare();
        }
        let mut credit = vec![0.0; self.width];
        let mean_path = if row.iter().all(|v| v.is_finite()) {
            let mut current = std::mem::take(&mut self.current);
            let mean = self.mean_path(row, &mut credit, &mut current);
            self.current = current;
            mean
        } else {
            let row: Vec<f64> = row.iter().map(|v| if v.is_finite() { *v } else { f64::NAN }).collect();
            let total: f64 =
                self.roots.iter().map(|&root| self.path_with_missing(root, &row, 0.0, 1.0, &mut credit)).sum();
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

/// The forest re-laid as complete binary trees of depth `depth` for batch
/// scoring, numbered from 1 as a heap: slot `u`'s children are `2u` (left)
/// and `2u + 1` (right), so a walk is `depth` steps of one comparison each
/// with no pointer to chase. A leaf above the bottom becomes a chain of
/// always-left slots ending at a bottom slot (`2^depth ..< 2^(depth+1)`)
/// whose path length (depth + c(size)) is kept.
#[derive(Debug, Clone, PartialEq)]
struct CompleteForest {
    depth: usize,
    /// Per tree `2 · 2^depth` words: at `u` (`1 ..< 2^depth`) the split's
    /// [`order_key`] minus one ([`ALWAYS_LEFT`] for the chains below early
    /// leaves), at `2^depth + u` the slot's feature offset
    /// (feature × [`Self::GROUP`]); word 0 and word `2^depth` are unused.
    /// A row goes right when `key − 1 < value key`, that is when
    /// `value ≥ split` as in [`IsolationForest::score`], and one base address
    /// per tree serves both loads of a step.
    words: Vec<u64>,
    /// Per tree `2^depth` path lengths (depth + c(size)) of the bottom slots.
    leaf_paths: Vec<f64>,
    /// Features of the rows the forest was grown on.
    width: usize,
}

/// `x`'s bits mapped so that unsigned integer order is `f64` order for
/// finite values (−0 taken as +0, as `<` does). Keys of finite values lie
/// between 2^52 and `order_key(+∞)`, so `key − 1` never wraps.
fn order_key(x: f64) -> u64 {
    let bits = (x + 0.0).to_bits();
    let sign = ((bits as i64) >> 63) as u64;
    bits ^ (sign | 1 << 63)
}

/// The always-left split word: no finite value's key is above it.
const ALWAYS_LEFT: u64 = 0xFFF0_0000_0000_0000 - 1;

/// Deepest trees laid out completely: `$walk!` names one monomorphised walk per depth.
macro_rules! by_depth {
    ($this:expr, $depth:expr, $walk:ident ( $($arg:expr),* )) => {
        match $depth {
            1 => $this.$walk::<1>($($arg),*),
            2 => $this.$walk::<2>($($arg),*),
            3 => $this.$walk::<3>($($arg),*),
            4 => $this.$walk::<4>($($arg),*),
            5 => $this.$walk::<5>($($arg),*),
            6 => $this.$walk::<6>($($arg),*),
            7 => $this.$walk::<7>($($arg),*),
            8 => $this.$walk::<8>($($arg),*),
            9 => $this.$walk::<9>($($arg),*),
            10 => $this.$walk::<10>($($arg),*),
            11 => $this.$walk::<11>($($arg),*),
            _ => $this.$walk::<12>($($arg),*),
        }
    };
}

impl CompleteForest {
    /// Deepest trees laid out completely (2^12 slots per tree); deeper forests score row by row.
    const MAX_DEPTH: usize = 12;
    /// Rows walked together through a tree: independent walks keep the core
    /// busy while each waits for its two dependent loads, and 10 is as many
    /// as x86-64 keeps in registers beside the three the step needs (8 and
    /// 12 measured slower).
    const GROUP: usize = 10;

    fn new(nodes: &[Node], roots: &[u32], depth: usize, width: usize) -> Self {
        let slots = 1usize << depth;
        let mut forest = CompleteForest {
            depth: depth.clamp(1, Self::MAX_DEPTH),
            words: Vec::with_capacity(2 * slots * roots.len()),
            leaf_paths: vec![0.0; slots * roots.len()],
            width,
        };
        for (t, &root) in roots.iter().enumerate() {
            forest.words.extend(std::iter::repeat_n(ALWAYS_LEFT, slots));
            forest.words.extend(std::iter::repeat_n(0, slots));
            forest.place(nodes, t, root, 1, 0);
        }
        forest
    }

    /// Put `node` (at `level`) in slot `slot` of tree `tree`, then its subtree.
    fn place(&mut self, nodes: &[Node], tree: usize, node: u32, slot: usize, level: usize) {
        let slots = 1usize << self.depth;
        let n = nodes[node as usize];
        if n.left != 0 && level < self.depth {
            let words = &mut self.words[2 * slots * tree..2 * slots * (tree + 1)];
            words[slot] = order_key(n.split) - 1;
            // A feature beyond the rows' width cannot be grown (`learn` checks widths).
            words[slots + slot] = u64::from(n.feature.min(self.width.saturating_sub(1) as u32)) * Self::GROUP as u64;
            self.place(nodes, tree, n.left, 2 * slot, level + 1);
            self.place(nodes, tree, n.right, 2 * slot + 1, level + 1);
            return;
        }
        // A leaf: its slots keep `ALWAYS_LEFT` down to the bottom.
        let mut bottom = slot;
        for _ in level..self.depth {
            bottom *= 2;
        }
        self.leaf_paths[tree * slots + bottom - slots] = level as f64 + average_path(f64::from(n.size));
    }

    /// Each row's path length summed over all trees, into `paths`; `rows`
    /// holds complete rows of `width` values back to back.
    fn path_sums(&self, rows: &[f64], paths: &mut [f64]) {
        const G: usize = CompleteForest::GROUP;
        let (slots, width) = (1usize << self.depth, self.width);
        assert_eq!(rows.len(), paths.len() * width, "path_sums takes whole rows");
        paths.fill(0.0);
        // Each group's value keys feature-major (value f of row k at f·G + k).
        let stretch = width * G;
        let mut values = vec![0u64; stretch * paths.len().div_ceil(G)];
        for (group, group_values) in rows.chunks(G * width).zip(values.chunks_exact_mut(stretch)) {
            for (k, row) in group.chunks_exact(width).enumerate() {
                for (f, v) in row.iter().enumerate() {
                    group_values[f * G + k] = order_key(*v);
                }
            }
        }
        for (tree, leaf_paths) in self.words.chunks_exact(2 * slots).zip(self.leaf_paths.chunks_exact(slots)) {
            for (group_values, group_paths) in values.chunks_exact(stretch).zip(paths.chunks_mut(G)) {
                let ends = by_depth!(self, self.depth, walk(tree, group_values));
                for (path, end) in group_paths.iter_mut().zip(ends) {
                    *path += leaf_paths[end & (slots - 1)];
                }
            }
        }
    }

    /// Walk a group of rows (feature-major, see [`Self::path_sums`]) down
    /// one tree of depth `DEPTH` (its words, see [`CompleteForest::words`]);
    /// the bottom slots they end in.
    #[inline(always)]
    fn walk<const DEPTH: usize>(&self, tree: &[u64], group_values: &[u64]) -> [usize; Self::GROUP] {
        let slots = 1usize << DEPTH;
        // The walk's loads are unchecked, so check here what makes them safe:
        // a tree is exactly 2^DEPTH splits and 2^DEPTH offsets, and a group
        // holds `width` features of GROUP rows (every offset is feature ×
        // GROUP with feature < width: `place` sets no other).
        assert_eq!(tree.len(), 2 * slots);
        assert_eq!(group_values.len(), self.width * Self::GROUP);
        // The root is the same node for every row: one split against GROUP
        // contiguous values, then the walks part.
        let root_split = tree[1];
        let root_offset = tree[slots + 1] as usize;
        let root_values = &group_values[root_offset..root_offset + Self::GROUP];
        let mut at = [0usize; Self::GROUP];
        for (slot, value) in at.iter_mut().zip(root_values) {
            *slot = 2 + usize::from(root_split < *value);
        }
        for _ in 1..DEPTH {
            // SAFETY: before the step from level l every slot is below
            // 2^(l+1) ≤ 2^DEPTH, and the lengths are checked above.
            unsafe { descend::<DEPTH>(tree, group_values, &mut at) };
        }
        at
    }
}

/// One level of a walk for every row of a group: slot `u` of row `k`
/// becomes `2u + (row k goes right)`.
///
/// # Safety
/// `tree` holds `2 · 2^DEPTH` words of [`CompleteForest::words`], every
/// slot in `at` is below `2^DEPTH`, and `group_values` holds a group's keys
/// for every feature offset stored in `tree`.
#[inline(always)]
unsafe fn descend<const DEPTH: usize>(tree: &[u64], group_values: &[u64], at: &mut [usize; CompleteForest::GROUP]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's conditions make every load in bounds.
    unsafe {
        descend_x86_64::<DEPTH>(tree, group_values, at)
    };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's conditions make every load in bounds.
    unsafe {
        descend_portable::<DEPTH>(tree, group_values, at)
    };
}

/// [`descend`] in Rust, for targets without [`descend_x86_64`].
///
/// # Safety
/// See [`descend`].
#[cfg(any(not(target_arch = "x86_64"), test))]
#[inline(always)]
unsafe fn descend_portable<const DEPTH: usize>(
    tree: &[u64],
    group_values: &[u64],
    at: &mut [usize; CompleteForest::GROUP],
) {
    for (k, slot) in at.iter_mut().enumerate() {
        // SAFETY: `*slot` < 2^DEPTH, so both words are inside `tree`; the
        // offset read plus `k` < GROUP is inside `group_values`.
        let (split, value) = unsafe {
            let offset = *tree.get_unchecked((1 << DEPTH) + *slot) as usize;
            (*tree.get_unchecked(*slot), *group_values.get_unchecked(offset + k))
        };
        // An index, not a branch: random data would mispredict half the splits.
        *slot = 2 * *slot + usize::from(split < value);
    }
}

/// The four instructions of one row's step: load the slot's feature
/// offset, load the row's value key there, compare the split word with it
/// (the carry is "goes right") and `adc` the slot onto itself (2u + carry).
/// LLVM spends eight on the same step (a `setb`, a zeroing, spills).
#[cfg(target_arch = "x86_64")]
macro_rules! descend_row {
    ($slot:ident, $row:literal) => {
        concat!(
            "mov {t}, [{tree} + {",
            stringify!($slot),
            "}*8 + {offsets}]\n",
            "mov {t}, [{values} + {t}*8 + 8*",
            stringify!($row),
            "]\n",
            "cmp [{tree} + {",
            stringify!($slot),
            "}*8], {t}\n",
            "adc {",
            stringify!($slot),
            "}, {",
            stringify!($slot),
            "}",
        )
    };
}

/// [`descend`] for x86-64: every row's slot stays in a register.
///
/// # Safety
/// See [`descend`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn descend_x86_64<const DEPTH: usize>(
    tree: &[u64],
    group_values: &[u64],
    at: &mut [usize; CompleteForest::GROUP],
) {
    // SAFETY: the loads are those of `descend_portable`, in bounds under the
    // same conditions; the assembly only reads memory and sets flags.
    unsafe {
        std::arch::asm!(
            descend_row!(u0, 0),
            descend_row!(u1, 1),
            descend_row!(u2, 2),
            descend_row!(u3, 3),
            descend_row!(u4, 4),
            descend_row!(u5, 5),
            descend_row!(u6, 6),
            descend_row!(u7, 7),
            descend_row!(u8, 8),
            descend_row!(u9, 9),
            tree = in(reg) tree.as_ptr(),
            values = in(reg) group_values.as_ptr(),
            offsets = const 8usize << DEPTH,
            t = out(reg) _,
            u0 = inout(reg) at[0],
            u1 = inout(reg) at[1],
            u2 = inout(reg) at[2],
            u3 = inout(reg) at[3],
            u4 = inout(reg) at[4],
            u5 = inout(reg) at[5],
            u6 = inout(reg) at[6],
            u7 = inout(reg) at[7],
            u8 = inout(reg) at[8],
            u9 = inout(reg) at[9],
            options(pure, readonly, nostack),
        );
    }
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
    fn order_keys_sort_as_the_values_do() {
        let values = [
            f64::MIN,
            -1e300,
            -1.0,
            -f64::MIN_POSITIVE,
            -5e-324,
            -0.0,
            0.0,
            5e-324,
            f64::MIN_POSITIVE,
            1.0,
            1e300,
            f64::MAX,
        ];
        for a in values {
            for b in values {
                assert_eq!(a < b, order_key(a) < order_key(b), "{a:e} < {b:e}");
                // The walk's rule: right when split key − 1 < value key.
                assert_eq!(b >= a, order_key(a) - 1 < order_key(b), "{b:e} ≥ {a:e}");
            }
            assert!(ALWAYS_LEFT >= order_key(a), "{a:e} would leave an always-left slot");
        }
        assert_eq!(ALWAYS_LEFT, order_key(f64::INFINITY) - 1);
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
        forest.prepare();
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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_assembly_step_equals_the_portable_step() {
        const DEPTH: usize = 8;
        let mut g = SeededNormal::new(4);
        let width = 6;
        let rows: Vec<Vec<f64>> = (0..2000).map(|_| (0..width).map(|_| g.normal()).collect()).collect();
        let mut forest = IsolationForest::new(IsolationForestConfig { trees: 5, sample_size: 1 << DEPTH, seed: 1 }).unwrap();
        forest.learn(&rows).unwrap();
        let complete = CompleteForest::new(&forest.nodes, &forest.roots, DEPTH, width);
        let group_values: Vec<u64> = (0..width * CompleteForest::GROUP).map(|_| order_key(g.normal())).collect();
        for tree in complete.words.chunks_exact(2 << DEPTH) {
            let (mut by_assembly, mut portable) = ([1; CompleteForest::GROUP], [1; CompleteForest::GROUP]);
            for level in 0..DEPTH {
                // SAFETY: slots of level l are below 2^(l+1) ≤ 2^DEPTH; `tree` and
                // `group_values` have the lengths `walk` checks.
                unsafe {
                    descend_x86_64::<DEPTH>(tree, &group_values, &mut by_assembly);
                    descend_portable::<DEPTH>(tree, &group_values, &mut portable);
                }
                assert_eq!(by_assembly, portable, "level {level}");
            }
            assert!(portable.iter().all(|&slot| (1 << DEPTH..2 << DEPTH).contains(&slot)), "{portable:?}");
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
