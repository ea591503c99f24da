//! usan's own models as ONNX, so they can go into other ecosystems: a
//! fitted PCA detector becomes a graph that onnxruntime (or any ONNX
//! runtime) runs with the scores usan gives.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Model, OutputValues};

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
