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

use super::{Attrs, Built, Kernel, OutShape, OutSpec, make, native, rows_f64};
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

    fn holds(self, x: f64, threshold: f64) -> bool {
        match self {
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

/// The trees, flattened: every node once, each tree's root, and the leaves'
/// `(target, weight)` votes.
#[derive(Debug)]
struct Forest {
    nodes: Vec<Node>,
    roots: Vec<usize>,
    votes: Vec<(usize, f64)>,
    max_feature: Option<usize>,
    /// Thresholds and weights were given as floats: compute in `f32`.
    single: bool,
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
        let forest = Self { nodes, roots, votes, max_feature: None, single: single_nodes && single_weights };
        forest.checked()
    }

    /// Walks every tree once: a node reached twice (a cycle, or two parents)
    /// is a damaged model, which would otherwise loop forever.
    fn checked(mut self) -> TractResult<Self> {
        let mut seen = vec![false; self.nodes.len()];
        let mut max_feature = None;
        for &root in &self.roots {
            let mut stack = vec![root];
            while let Some(i) = stack.pop() {
                ensure!(!seen[i], "node at position {i} is reached twice: the trees are not trees");
                seen[i] = true;
                if let Node::Branch { feature, yes, no, .. } = self.nodes[i] {
                    max_feature = max_feature.max(Some(feature));
                    stack.push(yes);
                    stack.push(no);
                }
            }
        }
        self.max_feature = max_feature;
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
                    i = if mode.holds(x, threshold) || (missing_true && x.is_nan()) { yes } else { no };
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

    /// One row's aggregated votes per target, and which targets had any.
    fn votes(&self, row: &[f64], aggregate: Aggregate, n_targets: usize) -> (Vec<f64>, Vec<bool>) {
        let mut score = vec![0.0; n_targets];
        let mut has = vec![false; n_targets];
        for &root in &self.roots {
            let (first, end) = self.leaf(root, row);
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
        (score, has)
    }
}

fn logistic(v: f32) -> f32 {
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

fn probit(v: f32) -> f32 {
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
    n_targets: usize,
    aggregate: Aggregate,
    base: Vec<f64>,
    post: Post,
}

pub(super) fn regressor(_: &ParsingContext, node: &NodeProto) -> Built {
    let a = Attrs::of(node);
    let n_targets = index(a.int("n_targets", 0), "n_targets")?;
    ensure!(n_targets > 0, "TreeEnsembleRegressor needs n_targets > 0");
    let forest = Forest::read(&a, "target", n_targets)?;
    native(Regressor {
        forest,
        n_targets,
        aggregate: read_aggregate(&a)?,
        base: read_base(&a)?,
        post: Post::parse(&a.string("post_transform", "NONE")?)?,
    })
}

impl Regressor {
    fn row(&self, row: &[f64], out: &mut Vec<f32>) {
        let f = &self.forest;
        let (score, has) = f.votes(row, self.aggregate, self.n_targets);
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
            out.push(if self.post == Post::Probit { probit(s as f32) } else { s as f32 });
            return;
        }
        let use_base = self.base.len() == self.n_targets;
        let base = |j: usize| if use_base { self.base[j] } else { 0.0 };
        let mut s: Vec<f32> = (0..self.n_targets)
            .map(|j| {
                let v = match self.aggregate {
                    Aggregate::Sum => f.add(score[j], base(j)),
                    Aggregate::Average => f.add(f.div(score[j], trees), base(j)),
                    Aggregate::Min | Aggregate::Max => f.add(base(j), if has[j] { score[j] } else { 0.0 }),
                };
                v as f32
            })
            .collect();
        transform(&mut s, self.post);
        out.extend(s);
    }
}

impl Kernel for Regressor {
    fn name(&self) -> &'static str {
        "TreeEnsembleRegressor"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![OutSpec { datum: f32::datum_type(), shape: OutShape::Rows(vec![self.n_targets]) }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (rows, width, x) = rows_f64(input)?;
        self.forest.check_width(width)?;
        let mut out = Vec::with_capacity(rows * self.n_targets);
        for r in 0..rows {
            self.row(&x[r * width..(r + 1) * width], &mut out);
        }
        Ok(tvec![make(&[rows, self.n_targets], out)?])
    }
}

#[derive(Debug)]
enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl Labels {
    fn len(&self) -> usize {
        match self {
            Self::Ints(v) => v.len(),
            Self::Strings(v) => v.len(),
        }
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
    let a = Attrs::of(node);
    let strings = a.strings("classlabels_strings")?;
    let labels =
        if strings.is_empty() { Labels::Ints(a.ints("classlabels_int64s").to_vec()) } else { Labels::Strings(strings) };
    let n = labels.len();
    ensure!(n >= 2, "TreeEnsembleClassifier needs at least two class labels, has {n}");
    let forest = Forest::read(&a, "class", n)?;
    let mut voted = vec![false; n];
    forest.votes.iter().for_each(|&(t, _)| voted[t] = true);
    let all_positive = forest.votes.iter().all(|&(_, w)| w >= 0.0);
    let binary_case = n == 2 && voted.iter().filter(|&&v| v).count() == 1;
    native(Classifier {
        forest,
        labels,
        base: read_base(&a)?,
        post: Post::parse(&a.string("post_transform", "NONE")?)?,
        binary_case,
        all_positive,
    })
}

impl Classifier {
    /// One row: its label and `n_classes` scores (onnxruntime's
    /// `TreeAggregatorClassifier::FinalizeScores` and `write_scores`).
    fn row(&self, row: &[f64], scores_out: &mut Vec<f32>) -> Pick {
        let f = &self.forest;
        let n = self.labels.len();
        let (mut score, mut has) = f.votes(row, Aggregate::Sum, n);
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
        let label = match self.labels {
            Labels::Ints(_) => i64::datum_type(),
            Labels::Strings(_) => String::datum_type(),
        };
        vec![
            OutSpec { datum: label, shape: OutShape::Rows(vec![]) },
            OutSpec { datum: f32::datum_type(), shape: OutShape::Rows(vec![self.labels.len()]) },
        ]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (rows, width, x) = rows_f64(input)?;
        self.forest.check_width(width)?;
        let n = self.labels.len();
        let mut scores = Vec::with_capacity(rows * n);
        let mut picks = Vec::with_capacity(rows);
        for r in 0..rows {
            picks.push(self.row(&x[r * width..(r + 1) * width], &mut scores));
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
