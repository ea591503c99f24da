//! usan's own models as ONNX, so they can go into other ecosystems: a
//! fitted PCA detector or isolation forest becomes a graph that
//! onnxruntime (or any ONNX runtime) runs with the scores usan gives.
//!
//! The graph takes a frame's signals in `double` and gives its score (the
//! larger of T² and SPE over their limits, as usan's PCA), T² and SPE:
//!
//! ```text
//! x ─Gather(used)─Sub(mean)─Div(scale)─ z ─MatMul(P)─ t
//! t2  = Σ t² / λ                    spe = relu(Σ z² − Σ t²)
//! score = spe / spe_limit + relu(t2 / t2_limit − spe / spe_limit)   (the larger ratio)
//! ```
//!
//! A frame with a missing value scores NaN (usan's own PCA leaves the value
//! out of SPE instead), so the package's manifest skips such frames.
//!
//! An isolation forest is one `TreeEnsembleRegressor` (ai.onnx.ml opset 3,
//! double thresholds) whose leaves hold their path length (depth plus
//! c(rows that reached them)), summed over the trees:
//!
//! ```text
//! score = 2 ^ (−Σ paths / (trees · c(ψ))) + Σ (x − x)   (NaN for a frame with a gap)
//! ```
//!
//! (usan's own forest sends a missing value down both branches; a tree
//! ensemble in ONNX cannot, so the graph gives no score instead).

use prost::Message;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};

/// What a fitted static PCA holds, as its graph needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct PcaGraph<'a> {
    /// Signals per frame (the input's width).
    pub signals: usize,
    /// Indices of the modelled signals.
    pub used: &'a [usize],
    /// Baseline mean of each used signal.
    pub mean: &'a [f64],
    /// Baseline standard deviation of each used signal.
    pub scale: &'a [f64],
    /// Loadings, `used.len()` rows by `components` columns, row-major.
    pub loadings: &'a [f64],
    /// Retained components.
    pub components: usize,
    /// Eigenvalues, largest first (at least `components`).
    pub eigenvalues: &'a [f64],
    /// T² limit.
    pub t2_limit: f64,
    /// SPE limit.
    pub spe_limit: f64,
}

const DOUBLE: i32 = 11;
const INT64: i32 = 7;

fn doubles(name: &str, dims: &[i64], values: &[f64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DOUBLE,
        double_data: values.to_vec(),
        ..Default::default()
    }
}

fn int64s(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: INT64,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: v, r#type: 2, ..Default::default() }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: v.to_vec(), r#type: 7, ..Default::default() }
}

fn doubles_attr(name: &str, v: &[f64]) -> AttributeProto {
    AttributeProto { name: name.into(), t: Some(doubles("", &[v.len() as i64], v)), r#type: 4, ..Default::default() }
}

fn value(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    crate::examples::value(name, DOUBLE, dims)
}

impl PcaGraph<'_> {
    /// Every reason the arrays cannot make a graph (empty when they can).
    pub fn problems(&self) -> Vec<String> {
        let (p, k) = (self.used.len(), self.components);
        let mut problems = Vec::new();
        if p == 0 || k == 0 {
            problems.push(format!("{p} modelled signals and {k} components: nothing to export"));
        }
        if self.used.iter().any(|&j| j >= self.signals) {
            problems.push(format!("a modelled signal's index is outside the {} signals", self.signals));
        }
        for (what, len, expected) in
            [("mean", self.mean.len(), p), ("scale", self.scale.len(), p), ("loadings", self.loadings.len(), p * k)]
        {
            if len != expected {
                problems.push(format!("{what} holds {len} values, not {expected}"));
            }
        }
        if self.eigenvalues.len() < k {
            problems.push(format!("{} eigenvalues for {k} components", self.eigenvalues.len()));
        }
        if !(self.t2_limit > 0.0 && self.spe_limit > 0.0) {
            problems.push("the T² and SPE limits must be positive".into());
        }
        problems
    }

    /// The ONNX model (opset 17): input `frames` `[N, signals]` double;
    /// outputs `score`, `t2` and `spe`, each `[N, 1]`.
    ///
    /// # Errors
    /// What [`problems`](Self::problems) finds, joined.
    pub fn to_onnx(&self, producer_version: &str) -> Result<Vec<u8>, String> {
        let problems = self.problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let (p, k) = (self.used.len() as i64, self.components as i64);
        let lambda: Vec<f64> = self.eigenvalues[..self.components].iter().map(|l| l.max(1e-12)).collect();
        let initializer = vec![
            int64s("used", &self.used.iter().map(|&j| j as i64).collect::<Vec<_>>()),
            doubles("mean", &[p], self.mean),
            doubles("scale", &[p], self.scale),
            doubles("loadings", &[p, k], self.loadings),
            doubles("lambda", &[k], &lambda),
            doubles("t2_limit", &[], &[self.t2_limit]),
            doubles("spe_limit", &[], &[self.spe_limit]),
            int64s("axis1", &[1]),
        ];
        let nodes = vec![
            node("Gather", &["frames", "used"], "x_used", vec![int_attr("axis", 1)]),
            node("Sub", &["x_used", "mean"], "centred", vec![]),
            node("Div", &["centred", "scale"], "z", vec![]),
            node("MatMul", &["z", "loadings"], "t", vec![]),
            node("Mul", &["t", "t"], "t_sq", vec![]),
            node("Div", &["t_sq", "lambda"], "t_sq_scaled", vec![]),
            node("ReduceSum", &["t_sq_scaled", "axis1"], "t2", vec![int_attr("keepdims", 1)]),
            node("ReduceSumSquare", &["z"], "z_norm", vec![ints_attr("axes", &[1]), int_attr("keepdims", 1)]),
            node("ReduceSumSquare", &["t"], "t_norm", vec![ints_attr("axes", &[1]), int_attr("keepdims", 1)]),
            // Relu, not Max: runtimes agree that Relu keeps NaN (a gap),
            // not that Max does.
            node("Sub", &["z_norm", "t_norm"], "residual", vec![]),
            node("Relu", &["residual"], "spe", vec![]),
            node("Div", &["t2", "t2_limit"], "t2_ratio", vec![]),
            node("Div", &["spe", "spe_limit"], "spe_ratio", vec![]),
            node("Sub", &["t2_ratio", "spe_ratio"], "t2_excess", vec![]),
            node("Relu", &["t2_excess"], "t2_above", vec![]),
            node("Add", &["spe_ratio", "t2_above"], "score", vec![]),
        ];
        let model = ModelProto {
            ir_version: 8,
            producer_name: "usan".into(),
            producer_version: producer_version.into(),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(GraphProto {
                node: nodes,
                initializer,
                name: "usan_pca".into(),
                input: vec![value("frames", &[None, Some(self.signals as i64)])],
                output: ["score", "t2", "spe"].iter().map(|o| value(o, &[None, Some(1)])).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(model.encode_to_vec())
    }
}

/// A fitted isolation forest, as its graph needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ForestGraph<'a> {
    /// Signals per frame (the input's width).
    pub signals: usize,
    /// Every tree's nodes, indexed as the splits' children are.
    pub nodes: &'a [ForestNode],
    /// Each tree's root.
    pub roots: &'a [usize],
    /// c(ψ), the mean path's divisor.
    pub normaliser: f64,
}

/// One node of a [`ForestGraph`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ForestNode {
    /// Rows with `row[signal] < value` go to `left`, the others to `right`.
    Split {
        /// The signal compared.
        signal: usize,
        /// The split value.
        value: f64,
        /// Index of the node taken below the value.
        left: usize,
        /// Index of the node taken at or above it.
        right: usize,
    },
    /// A leaf.
    Leaf {
        /// The path a row adds below it (c of the rows that reached it).
        path: f64,
    },
}

/// The deepest tree exported (usan grows them ⌈log₂ ψ⌉ ≤ 20 deep).
const MAX_EXPORTED_DEPTH: usize = 64;

impl ForestGraph<'_> {
    /// The ONNX model (opset 17, ai.onnx.ml 3): input `frames` `[N, signals]`
    /// double; output `score` `[N, 1]` double.
    ///
    /// # Errors
    /// No trees, a child outside the nodes or not after its parent, a
    /// signal outside the width, a tree deeper than 64, or a normaliser that
    /// is not positive.
    pub fn to_onnx(&self, producer_version: &str) -> Result<Vec<u8>, String> {
        if self.roots.is_empty() || self.signals == 0 {
            return Err("a forest without trees or signals: nothing to export".into());
        }
        if !(self.normaliser.is_finite() && self.normaliser > 0.0) {
            return Err(format!("normaliser {} is not a positive number", self.normaliser));
        }
        let mut attrs = TreeAttributes::default();
        for (tree, &root) in self.roots.iter().enumerate() {
            // Node ids within a tree in walk order; (node, depth, id).
            let mut stack = vec![(root, 0usize, 0i64)];
            let mut next_id = 1i64;
            while let Some((at, depth, id)) = stack.pop() {
                let node = self.nodes.get(at).ok_or_else(|| format!("node {at} outside {} nodes", self.nodes.len()))?;
                if depth > MAX_EXPORTED_DEPTH {
                    return Err(format!("tree {tree} is deeper than {MAX_EXPORTED_DEPTH}"));
                }
                attrs.tree_ids.push(tree as i64);
                attrs.node_ids.push(id);
                match *node {
                    ForestNode::Split { signal, value, left, right } => {
                        if signal >= self.signals {
                            return Err(format!("node {at} splits signal {signal} of {}", self.signals));
                        }
                        if left <= at || right <= at {
                            return Err(format!("node {at}: its children {left} and {right} are not after it"));
                        }
                        let (left_id, right_id) = (next_id, next_id + 1);
                        next_id += 2;
                        attrs.features.push(signal as i64);
                        attrs.modes.push("BRANCH_LT");
                        attrs.values.push(value);
                        attrs.true_ids.push(left_id);
                        attrs.false_ids.push(right_id);
                        stack.push((right, depth + 1, right_id));
                        stack.push((left, depth + 1, left_id));
                    }
                    ForestNode::Leaf { path } => {
                        attrs.features.push(0);
                        attrs.modes.push("LEAF");
                        attrs.values.push(0.0);
                        attrs.true_ids.push(0);
                        attrs.false_ids.push(0);
                        attrs.leaf_trees.push(tree as i64);
                        attrs.leaf_ids.push(id);
                        attrs.leaf_weights.push(depth as f64 + path);
                    }
                }
            }
        }
        let n = attrs.tree_ids.len();
        let ensemble = NodeProto {
            op_type: "TreeEnsembleRegressor".into(),
            domain: "ai.onnx.ml".into(),
            name: "paths".into(),
            input: vec!["frames".into()],
            output: vec!["path_sum".into()],
            attribute: vec![
                int_attr("n_targets", 1),
                crate::examples::text("aggregate_function", "SUM"),
                crate::examples::text("post_transform", "NONE"),
                ints_attr("nodes_treeids", &attrs.tree_ids),
                ints_attr("nodes_nodeids", &attrs.node_ids),
                ints_attr("nodes_featureids", &attrs.features),
                crate::examples::strings("nodes_modes", &attrs.modes),
                doubles_attr("nodes_values_as_tensor", &attrs.values),
                ints_attr("nodes_truenodeids", &attrs.true_ids),
                ints_attr("nodes_falsenodeids", &attrs.false_ids),
                ints_attr("nodes_missing_value_tracks_true", &vec![0; n]),
                ints_attr("target_treeids", &attrs.leaf_trees),
                ints_attr("target_nodeids", &attrs.leaf_ids),
                ints_attr("target_ids", &vec![0; attrs.leaf_ids.len()]),
                doubles_attr("target_weights_as_tensor", &attrs.leaf_weights),
            ],
            ..Default::default()
        };
        let initializer = vec![
            doubles("exponent_per_path", &[], &[-1.0 / (self.roots.len() as f64 * self.normaliser)]),
            doubles("two", &[], &[2.0]),
            int64s("axis1", &[1]),
        ];
        let nodes = vec![
            ensemble,
            // The ensemble's output is float by the operator's definition.
            node("Cast", &["path_sum"], "path_sum_double", vec![int_attr("to", i64::from(DOUBLE))]),
            node("Mul", &["path_sum_double", "exponent_per_path"], "exponent", vec![]),
            node("Pow", &["two", "exponent"], "isolation", vec![]),
            // x − x is 0, or NaN for a missing (or infinite) value, which
            // usan's forest does not take as a measurement either: their
            // sum over the row leaves a complete row's score as it is.
            node("Sub", &["frames", "frames"], "gaps", vec![]),
            node("ReduceSum", &["gaps", "axis1"], "gap", vec![int_attr("keepdims", 1)]),
            node("Add", &["isolation", "gap"], "score", vec![]),
        ];
        let model = ModelProto {
            ir_version: 8,
            producer_name: "usan".into(),
            producer_version: producer_version.into(),
            opset_import: vec![
                OperatorSetIdProto { domain: String::new(), version: 17 },
                OperatorSetIdProto { domain: "ai.onnx.ml".into(), version: 3 },
            ],
            graph: Some(GraphProto {
                node: nodes,
                initializer,
                name: "usan_isolation_forest".into(),
                input: vec![value("frames", &[None, Some(self.signals as i64)])],
                output: vec![value("score", &[None, Some(1)])],
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(model.encode_to_vec())
    }
}

/// A tree ensemble's attribute lists, node by node and leaf by leaf.
#[derive(Default)]
struct TreeAttributes {
    tree_ids: Vec<i64>,
    node_ids: Vec<i64>,
    features: Vec<i64>,
    modes: Vec<&'static str>,
    values: Vec<f64>,
    true_ids: Vec<i64>,
    false_ids: Vec<i64>,
    leaf_trees: Vec<i64>,
    leaf_ids: Vec<i64>,
    leaf_weights: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Model, OutputValues};

    #[test]
    fn a_forest_gives_two_to_the_minus_mean_path_and_nan_for_a_gap() {
        // Tree 0 splits signal 1 at 0.5: left leaf (c = 1), right leaf (c = 0).
        // Tree 1 is one leaf (c = 2).
        let nodes = [
            ForestNode::Split { signal: 1, value: 0.5, left: 1, right: 2 },
            ForestNode::Leaf { path: 1.0 },
            ForestNode::Leaf { path: 0.0 },
            ForestNode::Leaf { path: 2.0 },
        ];
        let graph = ForestGraph { signals: 2, nodes: &nodes, roots: &[0, 3], normaliser: 1.5 };
        let model = Model::load(&graph.to_onnx("test").expect("exports"), None).expect("builds");
        let outputs = model.run(3, &[9.0, 0.25, 9.0, 0.5, f64::NAN, 0.0]).expect("runs");
        let OutputValues::Float(scores) = &outputs[0].values else { panic!("floats") };
        // Paths: (1 + 1) + 2 = 4, (1 + 0) + 2 = 3; mean over 2 trees / 1.5.
        let expected = [2f64.powf(-(4.0 / 2.0) / 1.5), 2f64.powf(-(3.0 / 2.0) / 1.5)];
        for (got, want) in scores.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        assert!(scores[2].is_nan(), "a gap: no score");
        let backwards =
            [ForestNode::Split { signal: 0, value: 0.0, left: 0, right: 1 }, ForestNode::Leaf { path: 0.0 }];
        let bad = ForestGraph { signals: 1, nodes: &backwards, roots: &[0], normaliser: 1.0 };
        assert!(bad.to_onnx("test").expect_err("a loop").contains("not after it"));
        let wide = ForestGraph { signals: 1, ..graph };
        assert!(wide.to_onnx("test").expect_err("signal 1 of 1").contains("splits signal 1"));
    }

    #[test]
    fn the_graph_gives_t2_spe_and_their_larger_ratio() {
        // Two signals, one component along the first: t = z₀, SPE = z₁².
        let graph = PcaGraph {
            signals: 3,
            used: &[0, 2],
            mean: &[1.0, 10.0],
            scale: &[2.0, 5.0],
            loadings: &[1.0, 0.0],
            components: 1,
            eigenvalues: &[4.0, 1.0],
            t2_limit: 2.0,
            spe_limit: 0.5,
        };
        let model = Model::load(&graph.to_onnx("test").expect("exports"), None).expect("builds");
        let rows = [5.0, 99.0, 15.0, 1.0, f64::NAN, f64::NAN];
        let outputs = model.run(2, &rows).expect("runs");
        let column = |i: usize| match &outputs[i].values {
            OutputValues::Float(v) => v.clone(),
            other => panic!("{other:?}"),
        };
        // Row 1: z = (2, 1): T² = 4 / 4 = 1, SPE = 1; score max(0.5, 2) = 2.
        // Row 2: a gap: no score.
        for (i, expected) in [2.0, 1.0, 1.0].into_iter().enumerate() {
            let v = column(i);
            assert_eq!(v[0], expected, "output {i}");
            assert!(v[1].is_nan(), "output {i}: {v:?}");
        }
        let bad = PcaGraph { used: &[0, 5], ..graph.clone() };
        assert!(bad.to_onnx("test").expect_err("index 5 of 3").contains("outside"));
    }
}
