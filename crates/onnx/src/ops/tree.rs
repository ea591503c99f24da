//! Tree ensembles (`TreeEnsembleRegressor`, `TreeEnsembleClassifier`) as
//! onnxruntime evaluates them: the six comparisons, each node's
//! missing-value direction, the four aggregations, base values, the post
//! transforms, and the binary classifier's rules for one score column
//! (LightGBM, XGBoost and scikit-learn's boosting all export that way).
//! tract's own classifier turns `BRANCH_GTE` nodes into leaves and labels
//! every one-column binary row as the first class, hence this module.
//!
//! Arithmetic is in `f32` when the model gives its thresholds and weights
//! as floats (onnxruntime's `ThresholdType` then is float) and in `f64` when
//! it gives them as `*_as_tensor` doubles.

use super::{Attrs, Built, Kernel, Labels, OutShape, OutSpec, make, native, rows_f64};
use std::collections::HashMap;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    /// `BRANCH_MEMBER` (opset 5): the value is in the node's set.
    Member(usize),
}

impl Mode {
    fn parse(s: &str) -> TractResult<Option<Self>> {
        Ok(Some(match s {
            "BRANCH_LEQ" => Self::Leq,
            "BRANCH_LT" => Self::Lt,
            "BRANCH_GTE" => Self::Gte,
            "BRANCH_GT" => Self::Gt,
            "BRANCH_EQ" => Self::Eq,
            "BRANCH_NEQ" => Self::Neq,
            "LEAF" => return Ok(None),
            other => bail!("unknown tree node mode {other}"),
        }))
    }

    fn holds(self, x: f64, threshold: f64, sets: &[Vec<f64>]) -> bool {
        match self {
            Self::Member(set) => sets.get(set).is_some_and(|values| values.contains(&x)),
            Self::Leq => x <= threshold,
            Self::Lt => x < threshold,
            Self::Gte => x >= threshold,
            Self::Gt => x > threshold,
            Self::Eq => x == threshold,
            Self::Neq => x != threshold,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Node {
    Branch { feature: usize, threshold: f64, mode: Mode, missing_true: bool, yes: usize, no: usize },
    Leaf { first: usize, end: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Post {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

impl Post {
    pub(super) fn parse(s: &str) -> TractResult<Self> {
        Ok(match s {
            "NONE" => Self::None,
            "LOGISTIC" => Self::Logistic,
            "SOFTMAX" => Self::Softmax,
            "SOFTMAX_ZERO" => Self::SoftmaxZero,
            "PROBIT" => Self::Probit,
            other => bail!("unknown post_transform {other}"),
        })
    }
}

/// A block of rows' votes per target and which targets had any, row-major:
/// scratch reused across the blocks of a batch (nothing allocated per row).
#[derive(Debug, Default)]
struct Votes {
    score: Vec<f64>,
    has: Vec<bool>,
}

/// A value the walk compares: the input's own `f32` when the thresholds
/// are floats, `f64` otherwise.
trait Value: Copy + PartialOrd {
    fn is_nan(self) -> bool;
}

impl Value for f32 {
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Value for f64 {
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// A node as the walk reads it: 16 bytes in `f32`, so a small tree sits in
/// a few cache lines. A leaf leads to itself whatever the row holds (its
/// threshold passes no value), so rows walked side by side need no test
/// for the end.
#[derive(Clone, Copy, Debug)]
struct Step<T> {
    threshold: T,
    /// The feature read, with [`MISSING_TRUE`] set when a missing value
    /// takes the true side.
    feature: u32,
    /// Where a failed and a passed comparison lead.
    next: [u32; 2],
}

/// The bit of [`Step::feature`] that sends a missing value the true way.
const MISSING_TRUE: u32 = 1 << 31;

/// The input as the walk reads it: the tensor's own floats when the forest
/// compares in `f32`, otherwise its values widened to `f64`.
enum Input<'a> {
    Single(&'a [f32]),
    Double(Vec<f64>),
}

/// A block of [`Input`] rows.
#[derive(Clone, Copy)]
enum Rows<'a> {
    Single(&'a [f32]),
    Double(&'a [f64]),
}

impl Input<'_> {
    fn block(&self, start: usize, count: usize, width: usize) -> Rows<'_> {
        let span = start * width..(start + count) * width;
        match self {
            Self::Single(x) => Rows::Single(&x[span]),
            Self::Double(x) => Rows::Double(&x[span]),
        }
    }
}

/// Rows scored together: each tree is walked for every row of a block
/// before the next tree, so its nodes stay in cache.
const BLOCK: usize = 128;

/// Rows walked side by side through one tree.
const LANES: usize = 8;

/// The trees, flattened: every node once, each tree's root, and the leaves'
/// `(target, weight)` votes.
#[derive(Debug)]
struct Forest {
    nodes: Vec<Node>,
    /// `nodes` as a uniform forest's walk reads them.
    steps: Vec<Step<f64>>,
    /// `steps` in `f32`, when the thresholds are floats.
    steps32: Vec<Step<f32>>,
    /// Each node's range of `votes` (empty for a branch).
    spans: Vec<(u32, u32)>,
    /// Each tree's depth (branches on its longest path), in `roots` order.
    depths: Vec<u32>,
    /// The one comparison every branch makes, when they all make the same
    /// one (exporters write one): the walk then never dispatches on a mode.
    uniform: Option<Mode>,
    /// The sets of `BRANCH_MEMBER` nodes.
    sets: Vec<Vec<f64>>,
    roots: Vec<usize>,
    votes: Vec<(usize, f64)>,
    max_feature: Option<usize>,
    /// Thresholds and weights were given as floats: compute in `f32`.
    single: bool,
    /// Thresholds were given as floats: compare an `f32` input in `f32`.
    single_thresholds: bool,
}

fn index(v: i64, what: &str) -> TractResult<usize> {
    usize::try_from(v).map_err(|_| format_err!("{what} {v} is negative"))
}

impl Forest {
    /// Reads the `nodes_*` attributes and the leaves' `{prefix}_*` votes.
    fn read(a: &Attrs, prefix: &str, n_targets: usize) -> TractResult<Self> {
        let tree_ids = a.ints("nodes_treeids");
        let node_ids = a.ints("nodes_nodeids");
        let features = a.ints("nodes_featureids");
        let yes_ids = a.ints("nodes_truenodeids");
        let no_ids = a.ints("nodes_falsenodeids");
        let modes = a.strings("nodes_modes")?;
        let missing = a.ints("nodes_missing_value_tracks_true");
        let (thresholds, single_nodes) = match a.doubles("nodes_values_as_tensor")? {
            Some(v) => (v, false),
            None => (a.floats("nodes_values").iter().map(|&v| f64::from(v)).collect(), true),
        };
        let n = tree_ids.len();
        ensure!(n > 0, "the ensemble has no nodes");
        for (name, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", features.len()),
            ("nodes_truenodeids", yes_ids.len()),
            ("nodes_falsenodeids", no_ids.len()),
            ("nodes_modes", modes.len()),
            ("nodes_values", thresholds.len()),
        ] {
            ensure!(len == n, "{name} has {len} entries for {n} nodes");
        }
        ensure!(
            missing.is_empty() || missing.len() == n,
            "nodes_missing_value_tracks_true has {} entries for {n} nodes",
            missing.len()
        );
        let mut position: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
        let mut roots = Vec::new();
        let mut seen_trees: HashMap<i64, ()> = HashMap::new();
        for i in 0..n {
            if position.insert((tree_ids[i], node_ids[i]), i).is_some() {
                bail!("node {} of tree {} is listed twice", node_ids[i], tree_ids[i]);
            }
            if seen_trees.insert(tree_ids[i], ()).is_none() {
                roots.push(i);
            }
        }
        let find = |tree: i64, node: i64, what: &str| -> TractResult<usize> {
            position.get(&(tree, node)).copied().ok_or_else(|| format_err!("tree {tree} has no node {node} ({what})"))
        };
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            nodes.push(match Mode::parse(&modes[i])? {
                Some(mode) => Node::Branch {
                    feature: index(features[i], "feature id")?,
                    threshold: thresholds[i],
                    mode,
                    missing_true: missing.get(i).is_some_and(|&m| m != 0),
                    yes: find(tree_ids[i], yes_ids[i], "true branch")?,
                    no: find(tree_ids[i], no_ids[i], "false branch")?,
                },
                None => Node::Leaf { first: 0, end: 0 },
            });
        }
        let leaf_trees = a.ints(&format!("{prefix}_treeids"));
        let leaf_nodes = a.ints(&format!("{prefix}_nodeids"));
        let leaf_targets = a.ints(&format!("{prefix}_ids"));
        let (leaf_weights, single_weights) = match a.doubles(&format!("{prefix}_weights_as_tensor"))? {
            Some(v) => (v, false),
            None => (a.floats(&format!("{prefix}_weights")).iter().map(|&v| f64::from(v)).collect(), true),
        };
        let m = leaf_targets.len();
        for (name, len) in
            [("treeids", leaf_trees.len()), ("nodeids", leaf_nodes.len()), ("weights", leaf_weights.len())]
        {
            ensure!(len == m, "{prefix}_{name} has {len} entries for {m} votes");
        }
        let mut by_leaf: Vec<(usize, usize)> = Vec::with_capacity(m);
        for k in 0..m {
            let at = find(leaf_trees[k], leaf_nodes[k], "leaf vote")?;
            ensure!(
                matches!(nodes[at], Node::Leaf { .. }),
                "tree {} node {} has votes but is not a leaf",
                leaf_trees[k],
                leaf_nodes[k]
            );
            let target = index(leaf_targets[k], "target id")?;
            ensure!(target < n_targets, "a leaf votes for target {target} of {n_targets}");
            by_leaf.push((at, k));
        }
        by_leaf.sort_by_key(|&(at, k)| (at, k));
        let mut votes = Vec::with_capacity(m);
        let mut k = 0;
        while k < by_leaf.len() {
            let at = by_leaf[k].0;
            let first = votes.len();
            while k < by_leaf.len() && by_leaf[k].0 == at {
                let v = by_leaf[k].1;
                votes.push((index(leaf_targets[v], "target id")?, leaf_weights[v]));
                k += 1;
            }
            nodes[at] = Node::Leaf { first, end: votes.len() };
        }
        let forest = Self {
            nodes,
            steps: Vec::new(),
            steps32: Vec::new(),
            spans: Vec::new(),
            depths: Vec::new(),
            uniform: None,
            roots,
            votes,
            max_feature: None,
            single: single_nodes && single_weights,
            single_thresholds: single_nodes,
            sets: vec![],
        };
        forest.checked()
    }

    /// Walks every tree once: a branch reached twice (a cycle, or two
    /// parents) is a damaged model, which would otherwise loop forever.
    /// Leaves may be shared (a one-leaf tree has a branch whose two sides
    /// are that leaf).
    fn checked(mut self) -> TractResult<Self> {
        let mut seen = vec![false; self.nodes.len()];
        let mut max_feature = None;
        let mut depths = Vec::with_capacity(self.roots.len());
        for &root in &self.roots {
            let mut stack = vec![(root, 0u32)];
            let mut depth = 0;
            while let Some((i, d)) = stack.pop() {
                if let Node::Branch { feature, yes, no, .. } = self.nodes[i] {
                    ensure!(!seen[i], "node at position {i} is reached twice: the trees are not trees");
                    seen[i] = true;
                    max_feature = max_feature.max(Some(feature));
                    depth = depth.max(d + 1);
                    stack.push((yes, d + 1));
                    stack.push((no, d + 1));
                }
            }
            depths.push(depth);
        }
        self.max_feature = max_feature;
        self.depths = depths;
        ensure!(
            self.nodes.len() < u32::MAX as usize && self.votes.len() < u32::MAX as usize,
            "{} nodes and {} votes: more than this walk indexes",
            self.nodes.len(),
            self.votes.len()
        );
        ensure!(
            self.max_feature.is_none_or(|f| f < MISSING_TRUE as usize),
            "the trees read feature {:?}: more than this walk indexes",
            self.max_feature
        );
        self.steps = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| match *node {
                Node::Branch { feature, threshold, missing_true, yes, no, .. } => Step {
                    threshold,
                    feature: feature as u32 | if missing_true { MISSING_TRUE } else { 0 },
                    next: [no as u32, yes as u32],
                },
                Node::Leaf { .. } => Step { threshold: f64::NAN, feature: 0, next: [i as u32; 2] },
            })
            .collect();
        self.spans = self
            .nodes
            .iter()
            .map(|node| match *node {
                Node::Branch { .. } => (0, 0),
                Node::Leaf { first, end } => (first as u32, end as u32),
            })
            .collect();
        let mut modes = self.nodes.iter().filter_map(|n| match n {
            Node::Branch { mode, .. } => Some(*mode),
            Node::Leaf { .. } => None,
        });
        let first = modes.next();
        self.uniform = first.filter(|m| !matches!(m, Mode::Member(_)) && modes.all(|other| other == *m));
        if self.single_thresholds && self.comparison().is_some() {
            // Exact: the thresholds were floats before they were widened.
            self.steps32 = self
                .steps
                .iter()
                .map(|s| Step { threshold: s.threshold as f32, feature: s.feature, next: s.next })
                .collect();
        }
        Ok(self)
    }

    fn check_width(&self, width: usize) -> TractResult<()> {
        if let Some(f) = self.max_feature {
            ensure!(f < width, "the trees read feature {f} but the input has {width} columns");
        }
        Ok(())
    }

    fn leaf(&self, root: usize, row: &[f64]) -> (usize, usize) {
        let mut i = root;
        loop {
            match self.nodes[i] {
                Node::Branch { feature, threshold, mode, missing_true, yes, no } => {
                    let x = row[feature];
                    i = if mode.holds(x, threshold, &self.sets) || (missing_true && x.is_nan()) { yes } else { no };
                }
                Node::Leaf { first, end } => return (first, end),
            }
        }
    }

    fn add(&self, a: f64, b: f64) -> f64 {
        if self.single { f64::from(a as f32 + b as f32) } else { a + b }
    }

    fn div(&self, a: f64, b: f64) -> f64 {
        if self.single { f64::from(a as f32 / b as f32) } else { a / b }
    }

    /// The input as [`Self::votes`] reads it, with its row count and width.
    fn input<'a>(&self, input: &'a Tensor) -> TractResult<(usize, usize, Input<'a>)> {
        if !self.steps32.is_empty() && input.datum_type() == f32::datum_type() {
            let (rows, width) = super::rows_and_width(input);
            return Ok((rows, width, Input::Single(input.try_as_plain_ram()?.as_slice::<f32>()?)));
        }
        let (rows, width, x) = rows_f64(input)?;
        Ok((rows, width, Input::Double(x)))
    }

    /// The votes of `count` rows (row-major in `rows`, `width` each), per
    /// target, and which targets had any: every row's trees in the same
    /// order as one row at a time, so sums round the same.
    fn votes(&self, rows: Rows<'_>, count: usize, aggregate: Aggregate, n_targets: usize, into: &mut Votes) {
        into.score.clear();
        into.score.resize(count * n_targets, 0.0);
        into.has.clear();
        into.has.resize(count * n_targets, false);
        let (s32, s64) = (&self.steps32, &self.steps);
        match (rows, self.comparison()) {
            (Rows::Single(x), Some(LEQ)) => self.votes_uniform::<_, LEQ>(s32, x, count, aggregate, n_targets, into),
            (Rows::Single(x), Some(LT)) => self.votes_uniform::<_, LT>(s32, x, count, aggregate, n_targets, into),
            (Rows::Single(x), Some(GTE)) => self.votes_uniform::<_, GTE>(s32, x, count, aggregate, n_targets, into),
            (Rows::Single(x), Some(_)) => self.votes_uniform::<_, GT>(s32, x, count, aggregate, n_targets, into),
            (Rows::Double(x), Some(LEQ)) => self.votes_uniform::<_, LEQ>(s64, x, count, aggregate, n_targets, into),
            (Rows::Double(x), Some(LT)) => self.votes_uniform::<_, LT>(s64, x, count, aggregate, n_targets, into),
            (Rows::Double(x), Some(GTE)) => self.votes_uniform::<_, GTE>(s64, x, count, aggregate, n_targets, into),
            (Rows::Double(x), Some(_)) => self.votes_uniform::<_, GT>(s64, x, count, aggregate, n_targets, into),
            (rows, None) => {
                let widened;
                let rows = match rows {
                    Rows::Double(x) => x,
                    // `input` gives floats only to a forest with one comparison.
                    Rows::Single(x) => {
                        widened = x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
                        &widened
                    }
                };
                let width = rows.len().checked_div(count).unwrap_or(0);
                for &root in &self.roots {
                    for r in 0..count {
                        let (first, end) = self.leaf(root, &rows[r * width..(r + 1) * width]);
                        self.vote(first, end, aggregate, n_targets, r, into);
                    }
                }
            }
        }
    }

    /// The comparison every branch makes, when it is one the side-by-side
    /// walk makes ([`LEQ`], [`LT`], [`GTE`], [`GT`]).
    fn comparison(&self) -> Option<u8> {
        match self.uniform {
            Some(Mode::Leq) => Some(LEQ),
            Some(Mode::Lt) => Some(LT),
            Some(Mode::Gte) => Some(GTE),
            Some(Mode::Gt) => Some(GT),
            _ => None,
        }
    }

    /// The votes of a forest whose branches all make the comparison `MODE`.
    /// Each row's walk down a tree is a chain of dependent loads; `LANES`
    /// rows walk side by side (a row at its leaf stays there) until a step
    /// moves none of them, so that the core serves several chains at once,
    /// and each step picks its side without a branch to mispredict.
    #[inline(always)]
    fn votes_uniform<T: Value, const MODE: u8>(
        &self,
        steps: &[Step<T>],
        rows: &[T],
        count: usize,
        aggregate: Aggregate,
        n_targets: usize,
        into: &mut Votes,
    ) {
        let width = rows.len().checked_div(count).unwrap_or(0);
        // Which groups of `LANES` rows hold a missing value: the others walk
        // without testing for one.
        let mut missing = [false; BLOCK.div_ceil(LANES)];
        for (group, rows) in missing.iter_mut().zip(rows.chunks(LANES * width.max(1))) {
            *group = rows.iter().any(|x| x.is_nan());
        }
        for (&root, &depth) in self.roots.iter().zip(&self.depths) {
            let mut r = 0;
            while r + LANES <= count {
                let lanes = &rows[r * width..(r + LANES) * width];
                let leaves = if missing.get(r / LANES).copied().unwrap_or(true) {
                    walk::<T, MODE, LANES, true>(steps, root, depth, lanes, width)
                } else {
                    walk::<T, MODE, LANES, false>(steps, root, depth, lanes, width)
                };
                for (k, &leaf) in leaves.iter().enumerate() {
                    let (first, end) = self.spans[leaf];
                    self.vote(first as usize, end as usize, aggregate, n_targets, r + k, into);
                }
                r += LANES;
            }
            for r in r..count {
                let [leaf] = walk::<T, MODE, 1, true>(steps, root, depth, &rows[r * width..(r + 1) * width], width);
                let (first, end) = self.spans[leaf];
                self.vote(first as usize, end as usize, aggregate, n_targets, r, into);
            }
        }
    }

    /// Adds the votes `first..end` to row `r`'s scores.
    #[inline(always)]
    fn vote(&self, first: usize, end: usize, aggregate: Aggregate, n_targets: usize, r: usize, into: &mut Votes) {
        let span = r * n_targets..(r + 1) * n_targets;
        let (score, has) = (&mut into.score[span.clone()], &mut into.has[span]);
        for &(t, w) in &self.votes[first..end] {
            score[t] = match aggregate {
                Aggregate::Sum | Aggregate::Average => self.add(score[t], w),
                Aggregate::Min => {
                    if !has[t] || w < score[t] {
                        w
                    } else {
                        score[t]
                    }
                }
                Aggregate::Max => {
                    if !has[t] || w > score[t] {
                        w
                    } else {
                        score[t]
                    }
                }
            };
            has[t] = true;
        }
    }
}

const LEQ: u8 = 0;
const LT: u8 = 1;
const GTE: u8 = 2;
const GT: u8 = 3;

/// The comparison `MODE` (one of [`LEQ`], [`LT`], [`GTE`], [`GT`]).
#[inline(always)]
fn holds<T: Value, const MODE: u8>(x: T, threshold: T) -> bool {
    match MODE {
        LEQ => x <= threshold,
        LT => x < threshold,
        GTE => x >= threshold,
        _ => x > threshold,
    }
}

/// The leaves that `L` rows (row-major, `width` each) reach after `depth`
/// steps down the tree at `root`.
#[inline(always)]
fn walk<T: Value, const MODE: u8, const L: usize, const MISSING: bool>(
    steps: &[Step<T>],
    root: usize,
    depth: u32,
    rows: &[T],
    width: usize,
) -> [usize; L] {
    let mut at = [root; L];
    for _ in 0..depth {
        // A step that moves no row finds every row at its leaf: the trees
        // of leaf-wise boosting (LightGBM) are far deeper on one side.
        let mut moved = false;
        for (k, at) in at.iter_mut().enumerate() {
            let step = &steps[*at];
            let x = rows[k * width + (step.feature & !MISSING_TRUE) as usize];
            let mut passed = holds::<T, MODE>(x, step.threshold);
            if MISSING {
                passed |= x.is_nan() & (step.feature & MISSING_TRUE != 0);
            }
            let next = step.next[usize::from(passed)] as usize;
            moved |= next != *at;
            *at = next;
        }
        if !moved {
            break;
        }
    }
    at
}

pub(super) fn logistic(v: f32) -> f32 {
    let e = 1.0 / (1.0 + (-v.abs()).exp());
    if v < 0.0 { 1.0 - e } else { e }
}

fn erf_inv(x: f32) -> f32 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147 * log;
    let v3 = -v + (v * v - v2).sqrt();
    sign * v3.sqrt()
}

pub(super) fn probit(v: f32) -> f32 {
    std::f32::consts::SQRT_2 * erf_inv(2.0 * v - 1.0)
}

fn softmax(values: &mut [f32], zero: bool) {
    let max = values.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
    let exp_neg_max = (-max).exp();
    let mut sum = 0.0f32;
    for v in values.iter_mut() {
        if !zero || *v > 0.000_000_1 || *v < -0.000_000_1 {
            *v = (*v - max).exp();
            sum += *v;
        } else {
            *v *= exp_neg_max;
        }
    }
    for v in values.iter_mut() {
        *v /= sum;
    }
}

/// onnxruntime's `write_scores` for two or more scores.
pub(super) fn transform(scores: &mut [f32], post: Post) {
    match post {
        Post::None => {}
        Post::Logistic => scores.iter_mut().for_each(|v| *v = logistic(*v)),
        Post::Probit => scores.iter_mut().for_each(|v| *v = probit(*v)),
        Post::Softmax => softmax(scores, false),
        Post::SoftmaxZero => softmax(scores, true),
    }
}

fn read_aggregate(a: &Attrs) -> TractResult<Aggregate> {
    Ok(match a.string("aggregate_function", "SUM")?.as_str() {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => bail!("unknown aggregate_function {other}"),
    })
}

fn read_base(a: &Attrs) -> TractResult<Vec<f64>> {
    Ok(match a.doubles("base_values_as_tensor")? {
        Some(v) => v,
        None => a.floats("base_values").iter().map(|&v| f64::from(v)).collect(),
    })
}

/// `TreeEnsembleRegressor`: `[N, F]` → `[N, n_targets]` floats.
#[derive(Debug)]
struct Regressor {
    forest: Forest,
    /// The output is `f64` (an opset-5 `TreeEnsemble` on a double input).
    double: bool,
    n_targets: usize,
    aggregate: Aggregate,
    base: Vec<f64>,
    post: Post,
}

pub(super) fn regressor(_: &ParsingContext, node: &NodeProto) -> Built {
    native(Regressor::read(&Attrs::of(node))?)
}

impl Regressor {
    fn read(a: &Attrs) -> TractResult<Self> {
        let n_targets = index(a.int("n_targets", 0), "n_targets")?;
        ensure!(n_targets > 0, "TreeEnsembleRegressor needs n_targets > 0");
        Ok(Self {
            forest: Forest::read(a, "target", n_targets)?,
            double: false,
            n_targets,
            aggregate: read_aggregate(a)?,
            base: read_base(a)?,
            post: Post::parse(&a.string("post_transform", "NONE")?)?,
        })
    }
}

impl Regressor {
    /// One row from its votes per target (`score`) and which had any (`has`).
    fn row(&self, score: &[f64], has: &[bool], out: &mut Vec<f64>) {
        let f = &self.forest;
        let trees = f.roots.len() as f64;
        if self.n_targets == 1 {
            let origin = if self.base.len() == 1 { self.base[0] } else { 0.0 };
            let s = match self.aggregate {
                Aggregate::Sum => f.add(score[0], origin),
                Aggregate::Average => f.add(f.div(score[0], trees), origin),
                Aggregate::Min | Aggregate::Max => {
                    if has[0] {
                        f.add(score[0], origin)
                    } else {
                        origin
                    }
                }
            };
            // onnxruntime applies only PROBIT to a single target.
            out.push(if self.post == Post::Probit { f64::from(probit(s as f32)) } else { self.narrow(s) });
            return;
        }
        let use_base = self.base.len() == self.n_targets;
        let base = |j: usize| if use_base { self.base[j] } else { 0.0 };
        let s: Vec<f64> = (0..self.n_targets)
            .map(|j| match self.aggregate {
                Aggregate::Sum => f.add(score[j], base(j)),
                Aggregate::Average => f.add(f.div(score[j], trees), base(j)),
                Aggregate::Min | Aggregate::Max => f.add(base(j), if has[j] { score[j] } else { 0.0 }),
            })
            .collect();
        if self.post == Post::None {
            out.extend(s.into_iter().map(|v| self.narrow(v)));
        } else {
            // onnxruntime's transforms compute in float.
            let mut s: Vec<f32> = s.into_iter().map(|v| v as f32).collect();
            transform(&mut s, self.post);
            out.extend(s.into_iter().map(f64::from));
        }
    }

    /// A score as the output type holds it.
    fn narrow(&self, v: f64) -> f64 {
        if self.double { v } else { f64::from(v as f32) }
    }
}

impl Kernel for Regressor {
    fn name(&self) -> &'static str {
        "TreeEnsembleRegressor"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        let datum = if self.double { f64::datum_type() } else { f32::datum_type() };
        vec![OutSpec { datum: Some(datum), shape: OutShape::Rows(vec![self.n_targets]) }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (rows, width, x) = self.forest.input(input)?;
        self.forest.check_width(width)?;
        let mut out = Vec::with_capacity(rows * self.n_targets);
        let mut votes = Votes::default();
        let n = self.n_targets;
        for start in (0..rows).step_by(BLOCK) {
            let count = BLOCK.min(rows - start);
            self.forest.votes(x.block(start, count, width), count, self.aggregate, n, &mut votes);
            for (score, has) in votes.score.chunks_exact(n.max(1)).zip(votes.has.chunks_exact(n.max(1))) {
                self.row(score, has, &mut out);
            }
        }
        let shape = [rows, self.n_targets];
        Ok(tvec![if self.double {
            make(&shape, out)?
        } else {
            make(&shape, out.into_iter().map(|v| v as f32).collect())?
        }])
    }
}

/// What a row's label is, before it is looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pick {
    /// The class at this index.
    Class(usize),
    /// onnxruntime's two-class rule outside the binary case: the label
    /// value 1 or 0 itself for integer labels (the class index for text).
    Literal(i64),
}

/// `TreeEnsemble` (`ai.onnx.ml` opset 5): branches and leaves in separate
/// lists, trees by their roots, set membership, output of the input's type.
/// onnxruntime runs it as the regressor without base values.
pub(super) fn tree_ensemble(_: &ParsingContext, node: &NodeProto) -> Built {
    native(read_tree_ensemble(&Attrs::of(node))?)
}

fn read_tree_ensemble(a: &Attrs) -> TractResult<Regressor> {
    let n_targets = index(a.int("n_targets", 0), "n_targets")?;
    ensure!(n_targets > 0, "TreeEnsemble needs n_targets > 0");
    let required = |name: &str| a.tensor(name).ok_or_else(|| format_err!("TreeEnsemble has no {name}"));
    let splits = super::tensor_doubles(required("nodes_splits")?)?;
    let modes = super::tensor_doubles(required("nodes_modes")?)?;
    let weights_tensor = required("leaf_weights")?;
    let weights = super::tensor_doubles(weights_tensor)?;
    let double = weights_tensor.data_type == 11;
    let features = a.ints("nodes_featureids");
    let (yes, yes_leaf, no, no_leaf) = (
        a.ints("nodes_truenodeids"),
        a.ints("nodes_trueleafs"),
        a.ints("nodes_falsenodeids"),
        a.ints("nodes_falseleafs"),
    );
    let missing = a.ints("nodes_missing_value_tracks_true");
    let targets = a.ints("leaf_targetids");
    let n = features.len();
    for (name, len) in [
        ("nodes_splits", splits.len()),
        ("nodes_modes", modes.len()),
        ("nodes_truenodeids", yes.len()),
        ("nodes_trueleafs", yes_leaf.len()),
        ("nodes_falsenodeids", no.len()),
        ("nodes_falseleafs", no_leaf.len()),
    ] {
        ensure!(len == n, "{name} has {len} entries for {n} nodes");
    }
    ensure!(
        missing.is_empty() || missing.len() == n,
        "nodes_missing_value_tracks_true has {} entries for {n} nodes",
        missing.len()
    );
    let m = targets.len();
    ensure!(m > 0 && weights.len() == m, "leaf_weights has {} entries for {m} leaves", weights.len());
    let mut sets: Vec<Vec<f64>> = Vec::new();
    if let Some(t) = a.tensor("membership_values") {
        let mut current = Vec::new();
        for v in super::tensor_doubles(t)? {
            if v.is_nan() {
                sets.push(std::mem::take(&mut current));
            } else {
                current.push(v);
            }
        }
        if !current.is_empty() {
            sets.push(current);
        }
    }
    let child = |id: i64, leaf: i64| -> TractResult<usize> {
        let i = index(id, "child id")?;
        if leaf != 0 {
            ensure!(i < m, "a branch points to leaf {i} of {m}");
            Ok(n + i)
        } else {
            ensure!(i < n, "a branch points to node {i} of {n}");
            Ok(i)
        }
    };
    let mut nodes = Vec::with_capacity(n + m);
    let mut member = 0;
    for i in 0..n {
        let mode = match modes[i] as u8 {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            5 => Mode::Neq,
            6 => {
                member += 1;
                Mode::Member(member - 1)
            }
            other => bail!("unknown TreeEnsemble node mode {other}"),
        };
        nodes.push(Node::Branch {
            feature: index(features[i], "feature id")?,
            threshold: splits[i],
            mode,
            missing_true: missing.get(i).is_some_and(|&v| v != 0),
            yes: child(yes[i], yes_leaf[i])?,
            no: child(no[i], no_leaf[i])?,
        });
    }
    ensure!(member <= sets.len(), "{member} membership nodes but {} sets in membership_values", sets.len());
    let mut votes = Vec::with_capacity(m);
    for k in 0..m {
        let target = index(targets[k], "target id")?;
        ensure!(target < n_targets, "a leaf votes for target {target} of {n_targets}");
        votes.push((target, weights[k]));
        nodes.push(Node::Leaf { first: k, end: k + 1 });
    }
    let roots = a
        .ints("tree_roots")
        .iter()
        .map(|&r| {
            let r = index(r, "tree root")?;
            ensure!(r < n, "tree root {r} is not one of the {n} nodes");
            Ok(r)
        })
        .collect::<TractResult<Vec<_>>>()?;
    ensure!(!roots.is_empty(), "TreeEnsemble has no tree_roots");
    let single = !double && splits_are_single(a)?;
    let forest = Forest {
        nodes,
        steps: Vec::new(),
        steps32: Vec::new(),
        spans: Vec::new(),
        depths: Vec::new(),
        uniform: None,
        sets,
        roots,
        votes,
        max_feature: None,
        single,
        single_thresholds: splits_are_single(a)?,
    }
    .checked()?;
    let aggregate = match a.int("aggregate_function", 1) {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        other => bail!("unknown TreeEnsemble aggregate_function {other}"),
    };
    // onnxruntime numbers the transforms in its own order (NONE, LOGISTIC,
    // SOFTMAX, ...), not the specification's (NONE, SOFTMAX, LOGISTIC, ...);
    // models are scored as onnxruntime scores them.
    let post = match a.int("post_transform", 0) {
        0 => Post::None,
        1 => Post::Logistic,
        2 => Post::Softmax,
        3 => Post::SoftmaxZero,
        4 => Post::Probit,
        other => bail!("unknown TreeEnsemble post_transform {other}"),
    };
    Ok(Regressor { forest, double, n_targets, aggregate, base: vec![], post })
}

/// Whether the splits are floats (the arithmetic is then `f32`).
fn splits_are_single(a: &Attrs) -> TractResult<bool> {
    Ok(a.tensor("nodes_splits").is_some_and(|t| t.data_type == 1))
}

/// `TreeEnsembleClassifier`: `[N, F]` → labels `[N]` and scores `[N, C]`.
#[derive(Debug)]
struct Classifier {
    forest: Forest,
    labels: Labels,
    base: Vec<f64>,
    post: Post,
    /// Two classes and every vote for one of them (one score column).
    binary_case: bool,
    all_positive: bool,
}

pub(super) fn classifier(_: &ParsingContext, node: &NodeProto) -> Built {
    native(Classifier::read(&Attrs::of(node))?)
}

impl Classifier {
    fn read(a: &Attrs) -> TractResult<Self> {
        let labels = Labels::read(a, "classlabels_int64s")?;
        let n = labels.len();
        ensure!(n >= 2, "TreeEnsembleClassifier needs at least two class labels, has {n}");
        let forest = Forest::read(a, "class", n)?;
        let mut voted = vec![false; n];
        forest.votes.iter().for_each(|&(t, _)| voted[t] = true);
        let all_positive = forest.votes.iter().all(|&(_, w)| w >= 0.0);
        let binary_case = n == 2 && voted.iter().filter(|&&v| v).count() == 1;
        Ok(Self {
            forest,
            labels,
            base: read_base(a)?,
            post: Post::parse(&a.string("post_transform", "NONE")?)?,
            binary_case,
            all_positive,
        })
    }
}

impl Classifier {
    /// One row: its label and `n_classes` scores (onnxruntime's
    /// `TreeAggregatorClassifier::FinalizeScores` and `write_scores`).
    fn row(&self, score: &mut [f64], has: &mut [bool], scores_out: &mut Vec<f32>) -> Pick {
        let f = &self.forest;
        let n = self.labels.len();
        if n > 2 {
            for (k, &b) in self.base.iter().enumerate().take(n) {
                score[k] = if has[k] { f.add(score[k], b) } else { b };
                has[k] = true;
            }
            let mut best: Option<usize> = None;
            for k in 0..n {
                if has[k] && best.is_none_or(|b| score[k] > score[b]) {
                    best = Some(k);
                }
            }
            let mut s: Vec<f32> = (0..n).map(|k| if has[k] { score[k] as f32 } else { 0.0 }).collect();
            transform(&mut s, self.post);
            scores_out.extend(s);
            return Pick::Class(best.unwrap_or(0));
        }
        let mut second = true;
        let mut additional: i32 = -1;
        match self.base.len() {
            2 => {
                if has[1] {
                    // onnxruntime: base_values[0] is not used here.
                    score[1] = f.add(self.base[1], score[0]);
                    score[0] = -score[1];
                    has[1] = true;
                } else {
                    score[1] = f.add(score[1], self.base[1]);
                    score[0] = f.add(score[0], self.base[0]);
                }
            }
            1 => {
                score[0] = f.add(score[0], self.base[0]);
                second = has[1];
            }
            0 => {
                additional = 3;
                second = has[1];
            }
            _ => {}
        }
        let (s0, h0) = (score[0], has[0]);
        let (s1, h1) = if second && has[1] { (score[1], true) } else { (0.0, false) };
        let positive = if h1 {
            s1
        } else if h0 {
            s0
        } else {
            0.0
        };
        let pick = if self.binary_case {
            if self.all_positive {
                if positive > 0.5 {
                    additional = 0;
                    Pick::Class(1)
                } else {
                    additional = 1;
                    Pick::Class(0)
                }
            } else if positive > 0.0 {
                additional = 2;
                Pick::Class(1)
            } else {
                additional = 3;
                Pick::Class(0)
            }
        } else {
            Pick::Literal(if positive > 0.0 { 1 } else { 0 })
        };
        // onnxruntime writes a class that had no vote as 0, whatever its base value.
        let written = |k: usize| if has[k] { score[k] as f32 } else { 0.0 };
        if second {
            let mut s = [written(0), written(1)];
            transform(&mut s, self.post);
            scores_out.extend(s);
        } else {
            let s0 = written(0);
            let pair = if self.post == Post::Probit {
                [probit(s0), 0.0]
            } else {
                match additional {
                    0 | 1 => [1.0 - s0, s0],
                    2 | 3 if self.post == Post::Logistic => [logistic(-s0), logistic(s0)],
                    2 | 3 => [-s0, s0],
                    _ => [s0, 0.0],
                }
            };
            scores_out.extend(pair);
        }
        pick
    }
}

impl Kernel for Classifier {
    fn name(&self) -> &'static str {
        "TreeEnsembleClassifier"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![
            OutSpec { datum: Some(self.labels.datum()), shape: OutShape::Rows(vec![]) },
            OutSpec { datum: Some(f32::datum_type()), shape: OutShape::Rows(vec![self.labels.len()]) },
        ]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (rows, width, x) = self.forest.input(input)?;
        self.forest.check_width(width)?;
        let n = self.labels.len();
        let mut scores = Vec::with_capacity(rows * n);
        let mut picks = Vec::with_capacity(rows);
        let mut votes = Votes::default();
        for start in (0..rows).step_by(BLOCK) {
            let count = BLOCK.min(rows - start);
            self.forest.votes(x.block(start, count, width), count, Aggregate::Sum, n, &mut votes);
            let Votes { score, has } = &mut votes;
            for (score, has) in score.chunks_exact_mut(n.max(1)).zip(has.chunks_exact_mut(n.max(1))) {
                picks.push(self.row(score, has, &mut scores));
            }
        }
        let labels = match &self.labels {
            Labels::Ints(v) => make(
                &[rows],
                picks
                    .iter()
                    .map(|p| match *p {
                        Pick::Class(k) => v[k],
                        Pick::Literal(l) => l,
                    })
                    .collect(),
            )?,
            Labels::Strings(v) => make(
                &[rows],
                picks
                    .iter()
                    .map(|p| match *p {
                        Pick::Class(k) => v[k].clone(),
                        Pick::Literal(l) => v[usize::from(l == 1)].clone(),
                    })
                    .collect(),
            )?,
        };
        Ok(tvec![labels, make(&[rows, n], scores)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::AttributeProto;

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto { name: name.into(), ints: v.to_vec(), ..Default::default() }
    }

    fn floats(name: &str, v: &[f32]) -> AttributeProto {
        AttributeProto { name: name.into(), floats: v.to_vec(), ..Default::default() }
    }

    fn strings(name: &str, v: &[&str]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
            ..Default::default()
        }
    }

    fn text(name: &str, v: &str) -> AttributeProto {
        AttributeProto { name: name.into(), s: v.as_bytes().to_vec(), ..Default::default() }
    }

    /// One split on feature 0 at 1.0: the true leaf votes `yes`, the false one `no`.
    fn stump(prefix: &str, mode: &str, missing_true: bool, yes: f32, no: f32) -> Vec<AttributeProto> {
        vec![
            ints("nodes_treeids", &[0, 0, 0]),
            ints("nodes_nodeids", &[0, 1, 2]),
            ints("nodes_featureids", &[0, 0, 0]),
            strings("nodes_modes", &[mode, "LEAF", "LEAF"]),
            floats("nodes_values", &[1.0, 0.0, 0.0]),
            ints("nodes_truenodeids", &[1, 0, 0]),
            ints("nodes_falsenodeids", &[2, 0, 0]),
            ints("nodes_missing_value_tracks_true", &[i64::from(missing_true), 0, 0]),
            ints(&format!("{prefix}_treeids"), &[0, 0]),
            ints(&format!("{prefix}_nodeids"), &[1, 2]),
            ints(&format!("{prefix}_ids"), &[0, 0]),
            floats(&format!("{prefix}_weights"), &[yes, no]),
        ]
    }

    fn column(kernel: &dyn Kernel, x: &[f32], output: usize) -> Vec<f32> {
        let input = make(&[x.len(), 1], x.to_vec()).expect("input");
        let out = kernel.eval(&input).expect("eval");
        out[output].try_as_plain_ram().expect("ram").as_slice::<f32>().expect("f32").to_vec()
    }

    #[test]
    fn every_comparison_and_missing_value_rule_is_onnxruntimes() {
        let x = [0.5, 1.0, 1.5, f32::NAN];
        // Leaves: 10 when the comparison holds, 20 when not. NaN goes to the
        // true leaf when its node says so, else wherever `NaN <cmp> 1` sends it.
        let cases = [
            ("BRANCH_LEQ", false, [10.0, 10.0, 20.0, 20.0]),
            ("BRANCH_LT", false, [10.0, 20.0, 20.0, 20.0]),
            ("BRANCH_GTE", false, [20.0, 10.0, 10.0, 20.0]),
            ("BRANCH_GT", false, [20.0, 20.0, 10.0, 20.0]),
            ("BRANCH_EQ", false, [20.0, 10.0, 20.0, 20.0]),
            ("BRANCH_NEQ", false, [10.0, 20.0, 10.0, 10.0]),
            ("BRANCH_LEQ", true, [10.0, 10.0, 20.0, 10.0]),
            ("BRANCH_GT", true, [20.0, 20.0, 10.0, 10.0]),
        ];
        for (mode, missing_true, expected) in cases {
            let mut attributes = stump("target", mode, missing_true, 10.0, 20.0);
            attributes.push(AttributeProto { name: "n_targets".into(), i: 1, ..Default::default() });
            let node = NodeProto { attribute: attributes, ..Default::default() };
            let regressor = Regressor::read(&Attrs::of(&node)).expect("regressor");
            assert_eq!(column(&regressor, &x, 0), expected, "{mode}, missing tracks true: {missing_true}");
        }
    }

    #[test]
    fn a_binary_classifier_with_one_score_column_labels_and_scores_both_classes() {
        // LightGBM/XGBoost style: votes for class 0 only, LOGISTIC, mixed signs.
        let mut attributes = stump("class", "BRANCH_LEQ", false, -2.0, 3.0);
        attributes.push(ints("classlabels_int64s", &[4, 7]));
        attributes.push(text("post_transform", "LOGISTIC"));
        let node = NodeProto { attribute: attributes, ..Default::default() };
        let classifier = Classifier::read(&Attrs::of(&node)).expect("classifier");
        let input = make(&[2, 1], vec![0.5f32, 1.5]).expect("input");
        let out = classifier.eval(&input).expect("eval");
        let labels = out[0].try_as_plain_ram().expect("ram").as_slice::<i64>().expect("i64").to_vec();
        assert_eq!(labels, vec![4, 7], "score -2 is the first class, 3 the second");
        let p = out[1].try_as_plain_ram().expect("ram").as_slice::<f32>().expect("f32").to_vec();
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(close(p[0], logistic(2.0)) && close(p[1], logistic(-2.0)), "{p:?}");
        assert!(close(p[2], logistic(-3.0)) && close(p[3], logistic(3.0)), "{p:?}");
    }

    /// Two trees on two features: a chain five branches deep on one side
    /// (as leaf-wise boosting grows them) and a stump; every branch makes
    /// `mode`, or the modes alternate when `mode` is `None`.
    fn lopsided(mode: Option<&'static str>) -> NodeProto {
        let alternating = ["BRANCH_LEQ", "BRANCH_GT", "BRANCH_LT", "BRANCH_GTE", "BRANCH_LEQ", "BRANCH_LT"];
        let mode_of = |i: usize| mode.unwrap_or(alternating[i]);
        // (tree, node, feature, mode, threshold, true node, false node, missing tracks true)
        type Row = (i64, i64, i64, &'static str, f32, i64, i64, i64);
        let mut nodes: Vec<Row> = Vec::new();
        for i in 0..5 {
            let next = if i == 4 { 10 } else { 2 * i + 2 };
            nodes.push((0, 2 * i, i % 2, mode_of(i as usize), 0.25 * i as f32 - 0.5, 2 * i + 1, next, i % 2));
            nodes.push((0, 2 * i + 1, 0, "LEAF", 0.0, 0, 0, 0));
        }
        nodes.push((0, 10, 0, "LEAF", 0.0, 0, 0, 0));
        nodes.push((1, 0, 1, mode_of(5), 0.1, 1, 2, 1));
        nodes.push((1, 1, 0, "LEAF", 0.0, 0, 0, 0));
        nodes.push((1, 2, 0, "LEAF", 0.0, 0, 0, 0));
        let field = |pick: fn(&Row) -> i64| nodes.iter().map(pick).collect::<Vec<_>>();
        let (tree, id, feature, yes, no, missing) =
            (field(|n| n.0), field(|n| n.1), field(|n| n.2), field(|n| n.5), field(|n| n.6), field(|n| n.7));
        let mode_s: Vec<&str> = nodes.iter().map(|n| n.3).collect();
        let value: Vec<f32> = nodes.iter().map(|n| n.4).collect();
        let leaves: Vec<(i64, i64)> = vec![(0, 1), (0, 3), (0, 5), (0, 7), (0, 9), (0, 10), (1, 1), (1, 2)];
        let weights: Vec<f32> = (0..leaves.len()).map(|k| 0.5 + k as f32 * 1.25).collect();
        let attribute = vec![
            ints("nodes_treeids", &tree),
            ints("nodes_nodeids", &id),
            ints("nodes_featureids", &feature),
            strings("nodes_modes", &mode_s),
            floats("nodes_values", &value),
            ints("nodes_truenodeids", &yes),
            ints("nodes_falsenodeids", &no),
            ints("nodes_missing_value_tracks_true", &missing),
            ints("target_treeids", &leaves.iter().map(|l| l.0).collect::<Vec<_>>()),
            ints("target_nodeids", &leaves.iter().map(|l| l.1).collect::<Vec<_>>()),
            ints("target_ids", &vec![0; leaves.len()]),
            floats("target_weights", &weights),
            AttributeProto { name: "n_targets".into(), i: 1, ..Default::default() },
        ];
        NodeProto { attribute, ..Default::default() }
    }

    #[test]
    fn rows_walked_side_by_side_reach_the_leaves_one_row_at_a_time_reaches() {
        // 45 rows: whole groups of lanes with and without missing values, and a remainder.
        let x: Vec<f32> =
            (0..90).map(|i| if i % 31 == 7 { f32::NAN } else { ((i * 37 % 23) as f32 - 11.0) / 8.0 }).collect();
        for mode in [Some("BRANCH_LEQ"), Some("BRANCH_LT"), Some("BRANCH_GTE"), Some("BRANCH_GT"), None] {
            let regressor = Regressor::read(&Attrs::of(&lopsided(mode))).expect("regressor");
            let f = &regressor.forest;
            assert_eq!(f.steps32.is_empty(), mode.is_none(), "{mode:?}: f32 steps only for one comparison");
            let expected: Vec<f32> = x
                .chunks(2)
                .map(|row| {
                    let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
                    let sum = f.roots.iter().fold(0.0, |s, &root| {
                        let (first, end) = f.leaf(root, &row);
                        f.votes[first..end].iter().fold(s, |s, &(_, w)| f.add(s, w))
                    });
                    sum as f32
                })
                .collect();
            let single = make(&[45, 2], x.clone()).expect("input");
            let double = make(&[45, 2], x.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>()).expect("input");
            for input in [single, double] {
                let out = regressor.eval(&input).expect("eval");
                let got = out[0].try_as_plain_ram().expect("ram").as_slice::<f32>().expect("f32").to_vec();
                assert_eq!(got, expected, "{mode:?}, {:?} input", input.datum_type());
            }
        }
    }

    #[test]
    fn damaged_trees_are_errors() {
        // (attribute, its damaged values, what the error says)
        let cases: [(&str, &[i64], &str); 5] = [
            ("nodes_truenodeids", &[0, 0, 0], "reached twice"),
            ("nodes_falsenodeids", &[9, 0, 0], "has no node 9"),
            ("nodes_featureids", &[-1, 0, 0], "feature id -1 is negative"),
            ("target_ids", &[0, 3], "votes for target 3 of 1"),
            ("nodes_nodeids", &[0, 1], "nodes_nodeids has 2 entries for 3 nodes"),
        ];
        for (name, values, says) in cases {
            let mut attributes = stump("target", "BRANCH_LEQ", false, 1.0, 2.0);
            attributes.push(AttributeProto { name: "n_targets".into(), i: 1, ..Default::default() });
            if let Some(a) = attributes.iter_mut().find(|a| a.name == name) {
                a.ints = values.to_vec();
            }
            let node = NodeProto { attribute: attributes, ..Default::default() };
            let err = Regressor::read(&Attrs::of(&node)).expect_err(says).to_string();
            assert!(err.contains(says), "{says}: {err}");
        }
    }
}
