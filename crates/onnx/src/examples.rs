//! Small ONNX models built in code, one per operator family usan adds to
//! tract: the fuzzers' seeds (`usan::fuzzing::onnx_model`) and this crate's
//! tests of loading and running whole graphs.

use prost::Message;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::type_proto::{Tensor as TensorType, Value};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// A tensor's declared type: `None` dimensions are the dynamic `N`.
pub(crate) fn value(name: &str, elem: i32, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(n) => dimension::Value::DimValue(*n),
                None => dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(Value::TensorType(TensorType { elem_type: elem, shape: Some(TensorShapeProto { dim }) })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

const FLOAT: i32 = 1;
const INT64: i32 = 7;
const STRING: i32 = 8;

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: v.to_vec(), r#type: 7, ..Default::default() }
}

fn floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto { name: name.into(), floats: v.to_vec(), r#type: 6, ..Default::default() }
}

pub(crate) fn strings(name: &str, v: &[&str]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        r#type: 8,
        ..Default::default()
    }
}

pub(crate) fn text(name: &str, v: &str) -> AttributeProto {
    AttributeProto { name: name.into(), s: v.as_bytes().to_vec(), r#type: 3, ..Default::default() }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f: v, r#type: 1, ..Default::default() }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: v, r#type: 2, ..Default::default() }
}

fn tensor(name: &str, data_type: i32, raw: Vec<u8>) -> AttributeProto {
    let t = TensorProto { dims: vec![], data_type, raw_data: raw, ..Default::default() };
    let n = match data_type {
        2 => t.raw_data.len(),
        _ => t.raw_data.len() / 4,
    };
    AttributeProto {
        name: name.into(),
        t: Some(TensorProto { dims: vec![n as i64], ..t }),
        r#type: 4,
        ..Default::default()
    }
}

fn node(op: &str, domain: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        domain: domain.into(),
        name: format!("{op}_0"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>, ml: i64) -> Vec<u8> {
    with_weights(nodes, vec![], inputs, outputs, ml)
}

fn with_weights(
    nodes: Vec<NodeProto>,
    initializer: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    ml: i64,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        producer_name: "usan examples".into(),
        opset_import: vec![
            OperatorSetIdProto { domain: String::new(), version: 17 },
            OperatorSetIdProto { domain: "ai.onnx.ml".into(), version: ml },
        ],
        graph: Some(GraphProto {
            node: nodes,
            initializer,
            name: "example".into(),
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Two stumps on 3 features: GTE and LEQ, missing values tracked true.
fn stumps(prefix: &str) -> Vec<AttributeProto> {
    vec![
        ints("nodes_treeids", &[0, 0, 0, 1, 1, 1]),
        ints("nodes_nodeids", &[0, 1, 2, 0, 1, 2]),
        ints("nodes_featureids", &[0, 0, 0, 2, 0, 0]),
        strings("nodes_modes", &["BRANCH_GTE", "LEAF", "LEAF", "BRANCH_LEQ", "LEAF", "LEAF"]),
        floats("nodes_values", &[0.5, 0.0, 0.0, -1.0, 0.0, 0.0]),
        ints("nodes_truenodeids", &[1, 0, 0, 1, 0, 0]),
        ints("nodes_falsenodeids", &[2, 0, 0, 2, 0, 0]),
        ints("nodes_missing_value_tracks_true", &[1, 0, 0, 0, 0, 0]),
        ints(&format!("{prefix}_treeids"), &[0, 0, 1, 1]),
        ints(&format!("{prefix}_nodeids"), &[1, 2, 1, 2]),
        ints(&format!("{prefix}_ids"), &[0, 0, 0, 0]),
        floats(&format!("{prefix}_weights"), &[1.5, -0.5, 0.25, 2.0]),
    ]
}

/// A reconstruction model of `width` signals that halves each value
/// (output `y`, `[N, width]`) and gives the sum of squares of its input as
/// a score (output `s`, `[N, 1]`): the pipeline's and the scorer's tests
/// know every score it gives.
pub fn half_reconstruction(width: usize) -> Vec<u8> {
    let half = TensorProto {
        name: "half".into(),
        dims: vec![1],
        data_type: FLOAT,
        float_data: vec![0.5],
        ..Default::default()
    };
    with_weights(
        vec![
            node("Mul", "", &["X", "half"], &["y"], vec![]),
            node("ReduceSumSquare", "", &["X"], &["s"], vec![ints("axes", &[1]), int("keepdims", 1)]),
        ],
        vec![half],
        vec![value("X", FLOAT, &[None, Some(width as i64)])],
        vec![value("y", FLOAT, &[None, Some(width as i64)]), value("s", FLOAT, &[None, Some(1)])],
        3,
    )
}

/// The examples by name; each takes 3 floats per row.
pub fn examples() -> Vec<(&'static str, Vec<u8>)> {
    let x = || value("X", FLOAT, &[None, Some(3)]);
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    vec![
        (
            "scaler_tree_regressor",
            model(
                vec![
                    node(
                        "Scaler",
                        "ai.onnx.ml",
                        &["X"],
                        &["S"],
                        vec![floats("offset", &[1.0, 0.0, 2.0]), floats("scale", &[0.5])],
                    ),
                    node(
                        "TreeEnsembleRegressor",
                        "ai.onnx.ml",
                        &["S"],
                        &["Y"],
                        [stumps("target"), vec![int("n_targets", 1), floats("base_values", &[0.1])]].concat(),
                    ),
                ],
                vec![x()],
                vec![value("Y", FLOAT, &[None, Some(1)])],
                3,
            ),
        ),
        (
            "tree_classifier_zipmap",
            model(
                vec![
                    node(
                        "TreeEnsembleClassifier",
                        "ai.onnx.ml",
                        &["X"],
                        &["label", "p"],
                        [
                            stumps("class"),
                            vec![ints("classlabels_int64s", &[3, 9]), text("post_transform", "LOGISTIC")],
                        ]
                        .concat(),
                    ),
                    node("ZipMap", "ai.onnx.ml", &["p"], &["probabilities"], vec![ints("classlabels_int64s", &[3, 9])]),
                ],
                vec![x()],
                vec![
                    value("label", INT64, &[None]),
                    ValueInfoProto { name: "probabilities".into(), ..Default::default() },
                ],
                3,
            ),
        ),
        (
            "imputer_linear_classifier",
            model(
                vec![
                    node(
                        "Imputer",
                        "ai.onnx.ml",
                        &["X"],
                        &["I"],
                        vec![floats("imputed_value_floats", &[0.0, 1.0, 2.0]), float("replaced_value_float", f32::NAN)],
                    ),
                    node(
                        "LinearClassifier",
                        "ai.onnx.ml",
                        &["I"],
                        &["label", "scores"],
                        vec![
                            floats("coefficients", &[1.0, 0.0, -1.0, 0.5, 0.5, 0.5, -1.0, 2.0, 0.0]),
                            floats("intercepts", &[0.0, 0.1, -0.1]),
                            strings("classlabels_strings", &["ok", "worn", "broken"]),
                            text("post_transform", "SOFTMAX"),
                        ],
                    ),
                ],
                vec![x()],
                vec![value("label", STRING, &[None]), value("scores", FLOAT, &[None, Some(3)])],
                3,
            ),
        ),
        (
            "binarizer_label_encoder",
            model(
                vec![
                    node("Binarizer", "ai.onnx.ml", &["X"], &["B"], vec![float("threshold", 0.5)]),
                    node("Cast", "", &["B"], &["C"], vec![int("to", 7)]),
                    node(
                        "LabelEncoder",
                        "ai.onnx.ml",
                        &["C"],
                        &["Y"],
                        vec![ints("keys_int64s", &[0, 1]), floats("values_floats", &[-1.0, 1.0])],
                    ),
                ],
                vec![x()],
                vec![value("Y", FLOAT, &[None, Some(3)])],
                3,
            ),
        ),
        (
            "tree_ensemble_v5",
            model(
                vec![node(
                    "TreeEnsemble",
                    "ai.onnx.ml",
                    &["X"],
                    &["Y"],
                    vec![
                        int("n_targets", 2),
                        int("aggregate_function", 1),
                        int("post_transform", 0),
                        ints("tree_roots", &[0]),
                        ints("nodes_featureids", &[0, 1]),
                        tensor("nodes_splits", FLOAT, f32_bytes(&[0.5, 0.0])),
                        tensor("nodes_modes", 2, vec![0, 6]),
                        ints("nodes_truenodeids", &[1, 0]),
                        ints("nodes_trueleafs", &[0, 1]),
                        ints("nodes_falsenodeids", &[1, 1]),
                        ints("nodes_falseleafs", &[1, 1]),
                        tensor("membership_values", FLOAT, f32_bytes(&[1.0, 2.0])),
                        ints("leaf_targetids", &[0, 1]),
                        tensor("leaf_weights", FLOAT, f32_bytes(&[1.0, -1.0])),
                    ],
                )],
                vec![x()],
                vec![value("Y", FLOAT, &[None, Some(2)])],
                5,
            ),
        ),
        ("mlp", {
            let weights = TensorProto {
                name: "W".into(),
                dims: vec![3, 2],
                data_type: FLOAT,
                float_data: vec![0.5, -1.0, 1.0, 0.25, -0.5, 2.0],
                ..Default::default()
            };
            let bias = TensorProto {
                name: "b".into(),
                dims: vec![2],
                data_type: FLOAT,
                float_data: vec![0.1, -0.1],
                ..Default::default()
            };
            with_weights(
                vec![
                    node("MatMul", "", &["X", "W"], &["H"], vec![]),
                    node("Add", "", &["H", "b"], &["A"], vec![]),
                    node("Relu", "", &["A"], &["R"], vec![]),
                    node("Tanh", "", &["R"], &["T"], vec![]),
                    node("Sigmoid", "", &["T"], &["Y"], vec![]),
                ],
                vec![weights, bias],
                vec![x()],
                vec![value("Y", FLOAT, &[None, Some(2)])],
                3,
            )
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Model, OutputValues};

    #[test]
    fn every_example_loads_and_runs_on_rows_with_and_without_gaps() {
        let rows = [0.0, 1.0, 2.0, 1.0, f64::NAN, -3.0];
        for (name, bytes) in examples() {
            let model = Model::load(&bytes, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(model.input_width(), 3, "{name}");
            let outputs = model.run(2, &rows).unwrap_or_else(|e| panic!("{name}: {e}"));
            for output in &outputs {
                let n = match &output.values {
                    OutputValues::Float(v) => v.len(),
                    OutputValues::Int(v) => v.len(),
                    OutputValues::Text(v) => v.len(),
                };
                assert_eq!(n, 2 * output.columns.len(), "{name}: {} holds two rows", output.name);
            }
        }
    }

    #[test]
    fn examples_compute_what_their_operators_say() {
        let run = |name: &str, rows: &[f64]| {
            let (_, bytes) = examples().into_iter().find(|(n, _)| *n == name).expect("example");
            Model::load(&bytes, None).expect("load").run(rows.len() / 3, rows).expect("run")
        };
        // (x - [1, 0, 2]) * 0.5 = [-0.5, 0, -2]: GTE 0.5 false → -0.5; x2 ≤ -1 → 0.25; + 0.1.
        let y = run("scaler_tree_regressor", &[0.0, 0.0, -2.0]);
        assert_eq!(y[0].values, OutputValues::Float(vec![f64::from(-0.5f32 + 0.25 + 0.1)]));
        let y = run("tree_classifier_zipmap", &[1.0, 0.0, 0.0]);
        assert_eq!(y[0].values, OutputValues::Int(vec![9]), "1.5 + 2.0 > 0: the second class");
        assert_eq!(y[1].columns, vec!["3", "9"], "ZipMap columns are the classes");
        let y = run("imputer_linear_classifier", &[f64::NAN, f64::NAN, f64::NAN]);
        assert_eq!(y[0].values, OutputValues::Text(vec!["broken".into()]), "imputed [0, 1, 2] scores 2 for broken");
        let y = run("binarizer_label_encoder", &[0.2, 0.7, 0.5]);
        assert_eq!(y[0].values, OutputValues::Float(vec![-1.0, 1.0, -1.0]));
        let y = run("tree_ensemble_v5", &[0.0, 2.0, 0.0, 0.0, 3.0, 0.0]);
        assert_eq!(y[0].values, OutputValues::Float(vec![1.0, 0.0, 0.0, -1.0]), "2 is in the set, 3 is not");
    }

    #[test]
    fn a_network_keeps_missing_rows_missing_among_complete_ones() {
        let (_, bytes) = examples().into_iter().find(|(n, _)| *n == "mlp").expect("example");
        let model = Model::load(&bytes, None).expect("load");
        let nan = f64::NAN;
        let rows: [[f64; 3]; 5] =
            [[1.0, 2.0, 3.0], [nan, 1.0, 0.0], [-1.0, 0.5, 2.0], [0.0, 0.0, nan], [2.0, -1.0, 0.25]];
        let alone: Vec<Vec<f64>> = rows
            .iter()
            .map(|row| match &model.run(1, row).expect("run")[0].values {
                OutputValues::Float(v) => v.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        // Rows with a gap come out missing (as in onnxruntime), the others scored.
        for (row, out) in rows.iter().zip(&alone) {
            let gap = row.iter().any(|v| v.is_nan());
            assert!(out.iter().all(|v| v.is_nan() == gap), "{row:?} → {out:?}");
        }
        let OutputValues::Float(together) = &model.run(5, &rows.concat()).expect("run")[0].values else {
            panic!("floats")
        };
        let together: Vec<String> = together.iter().map(|v| format!("{v:?}")).collect();
        let alone: Vec<String> = alone.concat().iter().map(|v| format!("{v:?}")).collect();
        assert_eq!(together, alone, "in one batch, each row as alone, in order");
    }
}
