//! Graph rewrites made before tract builds a model.
//!
//! Exporters repeat work that onnxruntime's own graph optimiser removes:
//! skl2onnx's isolation forest gathers the whole input once per tree (50
//! copies of every batch for 50 trees) and casts each tree's leaf indices
//! twice. tract does not merge identical nodes, so usan does it here, on
//! the protobuf: a node with the same operator, inputs and attributes as an
//! earlier one is dropped and its outputs read from the earlier one's.

use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, TensorProto};

use std::collections::{HashMap, HashSet};

/// Drop every node that computes what an earlier node already computes
/// (common-subexpression elimination); the nodes dropped.
///
/// Left alone: graphs with subgraphs (`If`, `Loop`, `Scan` read outer
/// values by name), nodes whose result differs between two runs (random
/// generators), nodes producing a graph output, and nodes whose attributes
/// do not compare bit for bit.
pub(crate) fn merge_identical_nodes(graph: &mut GraphProto) -> usize {
    let has_subgraphs = graph.node.iter().flat_map(|n| &n.attribute).any(|a| a.g.is_some() || !a.graphs.is_empty());
    if has_subgraphs {
        return 0;
    }
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut renamed: HashMap<String, String> = HashMap::new();
    // Kept nodes by operator and (renamed) inputs.
    let mut kept: HashMap<(String, String, Vec<String>), Vec<usize>> = HashMap::new();
    let mut dropped: HashSet<usize> = HashSet::new();
    for i in 0..graph.node.len() {
        let node = &mut graph.node[i];
        for input in &mut node.input {
            if let Some(to) = renamed.get(input.as_str()) {
                input.clone_from(to);
            }
        }
        let node = &graph.node[i];
        if !deterministic(node) || node.output.iter().any(|o| graph_outputs.contains(o.as_str())) {
            continue;
        }
        let key = (node.domain.clone(), node.op_type.clone(), node.input.clone());
        let same = kept.get(&key).and_then(|candidates| {
            candidates.iter().copied().find(|&k| {
                let earlier = &graph.node[k];
                earlier.output.len() == node.output.len()
                    // An output the earlier node leaves unnamed cannot stand in for a named one.
                    && earlier.output.iter().zip(&node.output).all(|(e, n)| n.is_empty() || !e.is_empty())
                    && attributes_equal(&earlier.attribute, &node.attribute)
            })
        });
        match same {
            Some(k) => {
                for (from, to) in node.output.iter().zip(&graph.node[k].output) {
                    if !from.is_empty() {
                        renamed.insert(from.clone(), to.clone());
                    }
                }
                dropped.insert(i);
            }
            None => kept.entry(key).or_default().push(i),
        }
    }
    if dropped.is_empty() {
        return 0;
    }
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        !dropped.contains(&(index - 1))
    });
    // A graph not sorted topologically may read a dropped output before
    // the node that made it: every input is renamed once more.
    for node in &mut graph.node {
        for input in &mut node.input {
            if let Some(to) = renamed.get(input.as_str()) {
                input.clone_from(to);
            }
        }
    }
    graph.value_info.retain(|v| !renamed.contains_key(&v.name));
    dropped.len()
}

/// Whether two runs of the node on the same inputs give the same outputs.
fn deterministic(node: &NodeProto) -> bool {
    !(node.op_type.starts_with("Random") || matches!(node.op_type.as_str(), "Multinomial" | "Dropout"))
}

/// Attributes equal as values, floats bit for bit (0.0 and -0.0 differ).
fn attributes_equal(a: &[AttributeProto], b: &[AttributeProto]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x == y
                && x.f.to_bits() == y.f.to_bits()
                && bits_equal(&x.floats, &y.floats)
                && match (&x.t, &y.t) {
                    (Some(s), Some(t)) => tensor_bits_equal(s, t),
                    _ => true,
                }
                && x.tensors.iter().zip(&y.tensors).all(|(s, t)| tensor_bits_equal(s, t))
        })
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn tensor_bits_equal(a: &TensorProto, b: &TensorProto) -> bool {
    bits_equal(&a.float_data, &b.float_data)
        && a.double_data.iter().zip(&b.double_data).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::ValueInfoProto;

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attributes,
            ..NodeProto::default()
        }
    }

    fn float(name: &str, value: f32) -> AttributeProto {
        AttributeProto { name: name.into(), f: value, r#type: 1, ..AttributeProto::default() }
    }

    fn graph(nodes: Vec<NodeProto>, outputs: &[&str]) -> GraphProto {
        GraphProto {
            node: nodes,
            output: outputs.iter().map(|o| ValueInfoProto { name: o.to_string(), ..Default::default() }).collect(),
            ..GraphProto::default()
        }
    }

    fn wiring(graph: &GraphProto) -> Vec<String> {
        graph.node.iter().map(|n| format!("{} {} -> {}", n.op_type, n.input.join(","), n.output.join(","))).collect()
    }

    #[test]
    fn identical_nodes_merge_and_what_differs_stays() {
        // What, the nodes, the graph's outputs, the wiring after.
        type Case<'a> = (&'a str, Vec<NodeProto>, &'a [&'a str], Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "a repeated gather, and what reads its copies",
                vec![
                    node("Gather", &["X", "idx"], &["g1"], vec![]),
                    node("Gather", &["X", "idx"], &["g2"], vec![]),
                    node("Neg", &["g1"], &["n1"], vec![]),
                    node("Neg", &["g2"], &["n2"], vec![]),
                    node("Add", &["n1", "n2"], &["Y"], vec![]),
                ],
                &["Y"],
                vec!["Gather X,idx -> g1", "Neg g1 -> n1", "Add n1,n1 -> Y"],
            ),
            (
                "other attributes, other inputs, other operators",
                vec![
                    node("LeakyRelu", &["X"], &["a"], vec![float("alpha", 0.1)]),
                    node("LeakyRelu", &["X"], &["b"], vec![float("alpha", 0.2)]),
                    node("Elu", &["X"], &["c"], vec![float("alpha", 0.1)]),
                    node("Sum", &["a", "b", "c"], &["Y"], vec![]),
                ],
                &["Y"],
                vec!["LeakyRelu X -> a", "LeakyRelu X -> b", "Elu X -> c", "Sum a,b,c -> Y"],
            ),
            (
                "0.0 and -0.0 are not the same constant",
                vec![
                    node("Constant", &[], &["z"], vec![float("value_float", 0.0)]),
                    node("Constant", &[], &["m"], vec![float("value_float", -0.0)]),
                    node("Div", &["z", "m"], &["Y"], vec![]),
                ],
                &["Y"],
                vec!["Constant  -> z", "Constant  -> m", "Div z,m -> Y"],
            ),
            (
                "graph outputs and random generators stay",
                vec![
                    node("Relu", &["X"], &["Y"], vec![]),
                    node("Relu", &["X"], &["Z"], vec![]),
                    node("RandomUniformLike", &["X"], &["r1"], vec![]),
                    node("RandomUniformLike", &["X"], &["r2"], vec![]),
                    node("Sub", &["r1", "r2"], &["W"], vec![]),
                ],
                &["Y", "Z", "W"],
                vec![
                    "Relu X -> Y",
                    "Relu X -> Z",
                    "RandomUniformLike X -> r1",
                    "RandomUniformLike X -> r2",
                    "Sub r1,r2 -> W",
                ],
            ),
            (
                "a chain merges link by link",
                vec![
                    node("Cast", &["X"], &["c1"], vec![]),
                    node("Cast", &["X"], &["c2"], vec![]),
                    node("Log", &["c1"], &["l1"], vec![]),
                    node("Log", &["c2"], &["l2"], vec![]),
                    node("Mul", &["l1", "l2"], &["Y"], vec![]),
                ],
                &["Y"],
                vec!["Cast X -> c1", "Log c1 -> l1", "Mul l1,l1 -> Y"],
            ),
        ];
        for (what, nodes, outputs, expected) in cases {
            let mut g = graph(nodes, outputs);
            let before = g.node.len();
            let dropped = merge_identical_nodes(&mut g);
            assert_eq!(wiring(&g), expected, "{what}");
            assert_eq!(dropped, before - expected.len(), "{what}");
        }
    }

    #[test]
    fn a_graph_read_out_of_order_is_renamed_everywhere() {
        let mut g = graph(
            vec![
                node("Add", &["n2", "X"], &["Y"], vec![]),
                node("Neg", &["X"], &["n1"], vec![]),
                node("Neg", &["X"], &["n2"], vec![]),
            ],
            &["Y"],
        );
        assert_eq!(merge_identical_nodes(&mut g), 1);
        assert_eq!(wiring(&g), vec!["Add n1,X -> Y", "Neg X -> n1"]);
    }

    #[test]
    fn a_graph_with_subgraphs_is_left_alone() {
        let branch =
            AttributeProto { name: "then_branch".into(), g: Some(GraphProto::default()), ..Default::default() };
        let mut g = graph(
            vec![
                node("Neg", &["X"], &["a"], vec![]),
                node("Neg", &["X"], &["b"], vec![]),
                node("If", &["c"], &["Y"], vec![branch]),
            ],
            &["Y"],
        );
        assert_eq!(merge_identical_nodes(&mut g), 0);
        assert_eq!(g.node.len(), 3);
    }
}
