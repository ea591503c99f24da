//! Graph rewrites made before tract builds a model.
//!
//! Exporters repeat work that onnxruntime's own graph optimiser removes:
//! skl2onnx's isolation forest gathers the whole input once per tree (50
//! copies of every batch for 50 trees) and casts each tree's leaf indices
//! twice. tract does not merge identical nodes, so usan does it here, on
//! the protobuf: a node with the same operator, inputs and attributes as an
//! earlier one is dropped and its outputs read from the earlier one's.
//!
//! onnxruntime also fuses a matrix product with the bias and activation
//! after it; [`fuse_dense_layers`] does that for the layers of networks
//! (see `ops::dense` for why tract's own matrix product is not used there).

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

/// Replace every dense layer with constant float weights by one
/// `UsanDense` node: `Gemm` (not transposing its input, with a bias that
/// is absent, a scalar or one per output), or `MatMul` by a matrix
/// followed by the `Add` of a `[M]` or `[1, M]` bias; and every 1-D
/// convolution (`Conv` with rank-3 constant weights) by one `UsanConv1d`
/// node; each with the `Relu`, `Sigmoid` or `Tanh` that alone reads it;
/// the layers replaced.
///
/// Left alone: graphs with subgraphs, weights that are not float or are
/// stored outside the file, products or sums whose result is also read
/// elsewhere or is a graph output (it must stay a value of its own).
pub(crate) fn fuse_dense_layers(graph: &mut GraphProto) -> usize {
    let has_subgraphs = graph.node.iter().flat_map(|n| &n.attribute).any(|a| a.g.is_some() || !a.graphs.is_empty());
    if has_subgraphs {
        return 0;
    }
    let constants: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for input in &node.input {
            readers.entry(input.as_str()).or_default().push(i);
        }
    }
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    // The one node reading `value`, when nothing else (not the graph) does.
    let sole_reader = |value: &str| -> Option<usize> {
        match readers.get(value).map(Vec::as_slice) {
            Some(&[only]) if !graph_outputs.contains(value) => Some(only),
            _ => None,
        }
    };
    let mut fused: Vec<(usize, NodeProto)> = Vec::new();
    let mut absorbed: HashSet<usize> = HashSet::new();
    for (i, node) in graph.node.iter().enumerate() {
        if !node.domain.is_empty() || absorbed.contains(&i) || node.input.first().is_none_or(|x| x.is_empty()) {
            continue;
        }
        let layer = match node.op_type.as_str() {
            "Gemm" => gemm_layer(node, &constants),
            "Conv" => conv_layer(node, &constants),
            "MatMul" => matmul_layer(node, &constants).map(|mut layer| {
                let bias = sole_reader(&layer.output).and_then(|a| {
                    let add = &graph.node[a];
                    let other = match add.input.as_slice() {
                        [x, b] if *x == layer.output => b,
                        [b, x] if *x == layer.output => b,
                        _ => return None,
                    };
                    let (add_ok, free) = (add.op_type == "Add" && add.domain.is_empty(), !absorbed.contains(&a));
                    let bias = constants.get(other.as_str()).and_then(|t| floats(t))?;
                    let shape_ok = matches!(bias.0.as_slice(), [m] | [1, m] if *m == layer.outputs as i64);
                    (add_ok && free && shape_ok && add.output.len() == 1).then_some((a, bias.0.len(), bias.1, add))
                });
                if let Some((a, rank, values, add)) = bias {
                    layer.bias = Some(values);
                    layer.min_rank = rank;
                    layer.output.clone_from(&add.output[0]);
                    layer.absorbed.push(a);
                }
                layer
            }),
            _ => None,
        };
        let Some(mut layer) = layer else { continue };
        // A normalisation of a `Gemm`'s `[N, M]` output: batch (inference)
        // folds into the weights, layer normalisation runs in the same pass.
        if node.op_type == "Gemm"
            && let Some(a) = sole_reader(&layer.output).filter(|a| !absorbed.contains(a))
        {
            let next = &graph.node[a];
            let single =
                next.output.first().is_some_and(|o| !o.is_empty()) && next.output[1..].iter().all(String::is_empty);
            if next.domain.is_empty() && single && next.input.first() == Some(&layer.output) {
                let normalised = match next.op_type.as_str() {
                    "BatchNormalization" => fold_batch_norm(&mut layer, next, &constants),
                    "LayerNormalization" => {
                        layer.norm = layer_norm(next, &constants, layer.outputs);
                        layer.norm.is_some()
                    }
                    _ => false,
                };
                if normalised {
                    layer.output.clone_from(&next.output[0]);
                    layer.absorbed.push(a);
                }
            }
        }
        if let Some(a) = sole_reader(&layer.output) {
            let act = &graph.node[a];
            if act.domain.is_empty()
                && matches!(act.op_type.as_str(), "Relu" | "Sigmoid" | "Tanh")
                && act.input.len() == 1
                && act.output.len() == 1
                && !absorbed.contains(&a)
            {
                layer.activation = Some(act.op_type.clone());
                layer.output.clone_from(&act.output[0]);
                layer.absorbed.push(a);
            }
        }
        absorbed.extend(layer.absorbed.iter().copied());
        fused.push((i, layer.node(node)));
    }
    let count = fused.len();
    if count == 0 {
        return 0;
    }
    let mut gone: HashSet<String> = HashSet::new();
    for &a in &absorbed {
        gone.extend(graph.node[a].input.iter().cloned());
    }
    for (i, replacement) in fused {
        gone.extend(graph.node[i].input.iter().cloned());
        gone.extend(graph.node[i].output.iter().cloned());
        graph.node[i] = replacement;
    }
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        !absorbed.contains(&(index - 1))
    });
    let mut live: HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().chain(&n.output)).cloned().collect();
    live.extend(graph.input.iter().chain(&graph.output).map(|v| v.name.clone()));
    gone.retain(|name| !live.contains(name));
    // The weights now live in the layers' attributes; the intermediate
    // values and their declared shapes are no more.
    graph.initializer.retain(|t| !gone.contains(&t.name));
    graph.value_info.retain(|v| !gone.contains(&v.name));
    count
}

/// A dense layer found in the graph, before it becomes a node.
struct Layer {
    input: String,
    output: String,
    /// `inputs × outputs`, row-major.
    weights: Vec<f32>,
    inputs: usize,
    outputs: usize,
    bias: Option<Vec<f32>>,
    min_rank: usize,
    activation: Option<String>,
    /// Nodes folded into this one (a bias `Add`, an activation).
    absorbed: Vec<usize>,
    /// A 1-D convolution's geometry (`weights` are then `[M, C/group, K]`).
    conv: Option<Convolution>,
    /// A layer normalisation after the bias: scale, bias, epsilon.
    norm: Option<(Vec<f32>, Vec<f32>, f32)>,
}

/// What a `Conv` over `[N, C, L]` needs besides its weights.
struct Convolution {
    shape: [usize; 3],
    group: usize,
    stride: usize,
    dilation: usize,
    /// `[begin, end]`, or `SAME_UPPER` / `SAME_LOWER`.
    pads: Result<[usize; 2], String>,
}

impl Layer {
    fn node(&self, from: &NodeProto) -> NodeProto {
        let ints =
            |name: &str, ints: Vec<i64>| AttributeProto { name: name.into(), ints, r#type: 7, ..Default::default() };
        let floats = |name: &str, floats: Vec<f32>| AttributeProto {
            name: name.into(),
            floats,
            r#type: 6,
            ..Default::default()
        };
        let int =
            |name: &str, i: usize| AttributeProto { name: name.into(), i: i as i64, r#type: 2, ..Default::default() };
        let text = |name: &str, s: &str| AttributeProto {
            name: name.into(),
            s: s.as_bytes().to_vec(),
            r#type: 3,
            ..Default::default()
        };
        let (op_type, mut attribute) = match &self.conv {
            None => (
                crate::ops::dense::OP_TYPE,
                vec![ints("shape", vec![self.inputs as i64, self.outputs as i64]), int("min_rank", self.min_rank)],
            ),
            Some(conv) => {
                let mut attribute = vec![
                    ints("shape", conv.shape.iter().map(|&d| d as i64).collect()),
                    int("group", conv.group),
                    int("stride", conv.stride),
                    int("dilation", conv.dilation),
                ];
                attribute.push(match &conv.pads {
                    Ok(pads) => ints("pads", pads.iter().map(|&p| p as i64).collect()),
                    Err(auto_pad) => text("auto_pad", auto_pad),
                });
                (crate::ops::conv::OP_TYPE, attribute)
            }
        };
        attribute.push(floats("weights", self.weights.clone()));
        if let Some(bias) = &self.bias {
            attribute.push(floats("bias", bias.clone()));
        }
        if let Some((scale, bias, epsilon)) = &self.norm {
            attribute.push(floats("norm_scale", scale.clone()));
            attribute.push(floats("norm_bias", bias.clone()));
            attribute.push(AttributeProto {
                name: "norm_epsilon".into(),
                f: *epsilon,
                r#type: 1,
                ..Default::default()
            });
        }
        if let Some(activation) = &self.activation {
            attribute.push(text("activation", activation));
        }
        NodeProto {
            name: from.name.clone(),
            op_type: op_type.into(),
            domain: crate::ops::dense::DOMAIN.into(),
            input: vec![self.input.clone()],
            output: vec![self.output.clone()],
            attribute,
            ..Default::default()
        }
    }
}

/// `Gemm(A, B, C)` with `B` (and `C`, if given) constant floats, `A` not
/// transposed and `C` a scalar or one value per output.
fn gemm_layer(node: &NodeProto, constants: &HashMap<&str, &TensorProto>) -> Option<Layer> {
    let attr = crate::ops::Attrs::of(node);
    let constant_input = constants.contains_key(node.input[0].as_str());
    if attr.int("transA", 0) != 0 || node.output.len() != 1 || constant_input {
        return None;
    }
    let alpha = attr.float("alpha", 1.0);
    let beta = attr.float("beta", 1.0);
    let (dims, b) = constants.get(node.input.get(1)?.as_str()).and_then(|t| floats(t))?;
    let &[rows, columns] = dims.as_slice() else { return None };
    let (rows, columns) = (usize::try_from(rows).ok()?, usize::try_from(columns).ok()?);
    let transposed = attr.int("transB", 0) != 0;
    let (inputs, outputs) = if transposed { (columns, rows) } else { (rows, columns) };
    if inputs == 0 || outputs == 0 {
        return None;
    }
    let mut weights =
        if transposed { (0..inputs * outputs).map(|i| b[(i % outputs) * inputs + i / outputs]).collect() } else { b };
    if alpha != 1.0 {
        weights.iter_mut().for_each(|w| *w *= alpha);
    }
    let bias = match node.input.get(2).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let (dims, values) = constants.get(c.as_str()).and_then(|t| floats(t))?;
            let per_output = matches!(dims.as_slice(), [m] | [1, m] if *m == outputs as i64);
            let scalar = values.len() == 1 && dims.len() <= 2;
            let values: Vec<f32> = match (per_output, scalar) {
                (true, _) => values,
                (false, true) => vec![values[0]; outputs],
                (false, false) => return None,
            };
            Some(values.into_iter().map(|v| v * beta).collect())
        }
    };
    Some(Layer {
        input: node.input[0].clone(),
        output: node.output[0].clone(),
        weights,
        inputs,
        outputs,
        bias,
        min_rank: 2,
        activation: None,
        absorbed: vec![],
        conv: None,
        norm: None,
    })
}

/// `MatMul(X, W)` with `W` a constant float matrix.
fn matmul_layer(node: &NodeProto, constants: &HashMap<&str, &TensorProto>) -> Option<Layer> {
    let [x, w] = node.input.as_slice() else { return None };
    if constants.contains_key(x.as_str()) || node.output.len() != 1 {
        return None;
    }
    let (dims, weights) = constants.get(w.as_str()).and_then(|t| floats(t))?;
    let &[inputs, outputs] = dims.as_slice() else { return None };
    let (inputs, outputs) = (usize::try_from(inputs).ok()?, usize::try_from(outputs).ok()?);
    (inputs > 0 && outputs > 0).then(|| Layer {
        input: x.clone(),
        output: node.output[0].clone(),
        weights,
        inputs,
        outputs,
        bias: None,
        min_rank: 1,
        activation: None,
        absorbed: vec![],
        conv: None,
        norm: None,
    })
}

/// Folds `BatchNormalization` (inference, constant statistics, one value
/// per output) into the layer's weights and bias; false when it cannot.
fn fold_batch_norm(layer: &mut Layer, node: &NodeProto, constants: &HashMap<&str, &TensorProto>) -> bool {
    let attr = crate::ops::Attrs::of(node);
    if attr.int("training_mode", 0) != 0 || node.input.len() != 5 || layer.conv.is_some() {
        return false;
    }
    let m = layer.outputs;
    let per_output = |name: &String| {
        constants
            .get(name.as_str())
            .and_then(|t| floats(t))
            .filter(|(dims, _)| dims.as_slice() == [m as i64])
            .map(|(_, v)| v)
    };
    let Some([scale, shift, mean, variance]) = node.input[1..]
        .iter()
        .map(per_output)
        .collect::<Option<Vec<_>>>()
        .and_then(|v| <[Vec<f32>; 4]>::try_from(v).ok())
    else {
        return false;
    };
    let epsilon = f64::from(attr.float("epsilon", 1e-5));
    let factor: Vec<f64> =
        scale.iter().zip(&variance).map(|(&s, &v)| f64::from(s) / (f64::from(v) + epsilon).sqrt()).collect();
    for row in layer.weights.chunks_exact_mut(m) {
        row.iter_mut().zip(&factor).for_each(|(w, f)| *w = (f64::from(*w) * f) as f32);
    }
    let bias = layer.bias.take().unwrap_or_else(|| vec![0.0; m]);
    layer.bias = Some(
        (0..m).map(|j| ((f64::from(bias[j]) - f64::from(mean[j])) * factor[j] + f64::from(shift[j])) as f32).collect(),
    );
    true
}

/// `LayerNormalization` over the last axis of `[N, M]` with a constant scale
/// (and bias), as the dense layer's (scale, bias, epsilon).
fn layer_norm(
    node: &NodeProto,
    constants: &HashMap<&str, &TensorProto>,
    m: usize,
) -> Option<(Vec<f32>, Vec<f32>, f32)> {
    let attr = crate::ops::Attrs::of(node);
    if !matches!(attr.int("axis", -1), -1 | 1) {
        return None;
    }
    let per_output = |name: &String| {
        constants
            .get(name.as_str())
            .and_then(|t| floats(t))
            .filter(|(dims, _)| dims.as_slice() == [m as i64])
            .map(|(_, v)| v)
    };
    let scale = per_output(node.input.get(1)?)?;
    let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => per_output(b)?,
        None => vec![0.0; m],
    };
    Some((scale, bias, attr.float("epsilon", 1e-5)))
}

/// `Conv(X, W[, B])` with `W` constant floats of rank 3 (a 1-D convolution
/// over `[N, C, L]`) and `B`, if given, one constant per output channel.
fn conv_layer(node: &NodeProto, constants: &HashMap<&str, &TensorProto>) -> Option<Layer> {
    let attr = crate::ops::Attrs::of(node);
    let x = node.input.first()?;
    if constants.contains_key(x.as_str()) || node.output.len() != 1 || node.input.len() > 3 {
        return None;
    }
    let (dims, weights) = constants.get(node.input.get(1)?.as_str()).and_then(|t| floats(t))?;
    let &[outputs, group_inputs, kernel] = dims.as_slice() else { return None };
    let shape = [outputs, group_inputs, kernel].map(|d| usize::try_from(d).ok().filter(|&d| d > 0));
    let shape = [shape[0]?, shape[1]?, shape[2]?];
    let one = |name: &str| -> Option<usize> {
        match attr.ints(name) {
            [] => Some(1),
            &[v] => usize::try_from(v).ok().filter(|&v| v > 0),
            _ => None,
        }
    };
    let (stride, dilation) = (one("strides")?, one("dilations")?);
    let group = usize::try_from(attr.int("group", 1)).ok().filter(|&g| g > 0 && shape[0] % g == 0)?;
    if !matches!(attr.ints("kernel_shape"), [] | [_]) || attr.ints("kernel_shape").first().is_some_and(|&k| k != kernel)
    {
        return None;
    }
    let pads = match attr.string("auto_pad", "NOTSET").ok()?.as_str() {
        "NOTSET" => match attr.ints("pads") {
            [] => Ok([0, 0]),
            &[begin, end] => Ok([usize::try_from(begin).ok()?, usize::try_from(end).ok()?]),
            _ => return None,
        },
        "VALID" => Ok([0, 0]),
        same @ ("SAME_UPPER" | "SAME_LOWER") => Err(same.to_string()),
        _ => return None,
    };
    let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => {
            let (dims, values) = constants.get(b.as_str()).and_then(|t| floats(t))?;
            (dims.as_slice() == [outputs]).then_some(values)?.into()
        }
    };
    Some(Layer {
        input: x.clone(),
        output: node.output[0].clone(),
        weights,
        inputs: shape[1] * shape[2],
        outputs: shape[0],
        bias,
        min_rank: 3,
        activation: None,
        absorbed: vec![],
        conv: Some(Convolution { shape, group, stride, dilation, pads }),
        norm: None,
    })
}

/// A float tensor's dimensions and values, when stored in the file whole.
fn floats(t: &TensorProto) -> Option<(Vec<i64>, Vec<f32>)> {
    const FLOAT: i32 = 1;
    if t.data_type != FLOAT || !t.external_data.is_empty() {
        return None;
    }
    let count = t.dims.iter().try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))?;
    // Widened to f64 and back: exact for floats.
    let values: Vec<f32> = crate::ops::tensor_doubles(t).ok()?.into_iter().map(|v| v as f32).collect();
    (values.len() == count).then(|| (t.dims.clone(), values))
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

    /// What, the nodes, the constants, the graph's outputs, the wiring after.
    type FusionCase<'a> = (&'a str, Vec<NodeProto>, Vec<TensorProto>, &'a [&'a str], Vec<&'a str>);

    /// Each case's graph after `fuse_dense_layers`, and the count of the
    /// nodes it made (usan's own operators).
    fn assert_fusions(cases: Vec<FusionCase>) {
        for (what, nodes, constants, outputs, expected) in cases {
            let mut g = graph(nodes, outputs);
            g.initializer = constants;
            let fused = fuse_dense_layers(&mut g);
            assert_eq!(wiring(&g), expected, "{what}");
            assert_eq!(fused, expected.iter().filter(|w| w.starts_with("Usan")).count(), "{what}");
        }
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

    fn constant(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..TensorProto::default()
        }
    }

    fn int(name: &str, value: i64) -> AttributeProto {
        AttributeProto { name: name.into(), i: value, r#type: 2, ..AttributeProto::default() }
    }

    fn ints(name: &str, values: &[i64]) -> AttributeProto {
        AttributeProto { name: name.into(), ints: values.to_vec(), r#type: 7, ..AttributeProto::default() }
    }

    fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
        node.attribute.iter().find(|a| a.name == name)
    }

    #[test]
    fn dense_layers_fuse_with_their_bias_and_activation() {
        // W = [[1, 2, 3], [4, 5, 6]]: 2 inputs, 3 outputs; Wt its transpose.
        let w = constant("W", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let wt = constant("Wt", &[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let b = constant("b", &[1, 3], &[0.1, 0.2, 0.3]);
        let b1 = constant("b1", &[3], &[0.1, 0.2, 0.3]);
        let wide = constant("wide", &[2, 3], &[0.0; 6]);
        let scalar = constant("s", &[], &[7.0]);
        let doubles = TensorProto { data_type: 11, double_data: vec![1.0; 6], ..constant("D", &[2, 3], &[]) };
        let cases: Vec<FusionCase> = vec![
            (
                "scikit-learn's MatMul, Add [1, M], Tanh; then a layer read by Reshape",
                vec![
                    node("Cast", &["X"], &["c"], vec![]),
                    node("MatMul", &["c", "W"], &["m"], vec![]),
                    node("Add", &["m", "b"], &["a"], vec![]),
                    node("Tanh", &["a"], &["t"], vec![]),
                    node("MatMul", &["t", "Wt"], &["m2"], vec![]),
                    node("Add", &["b2", "m2"], &["a2"], vec![]),
                    node("Reshape", &["a2", "shape"], &["Y"], vec![]),
                ],
                vec![w.clone(), wt.clone(), b.clone(), constant("b2", &[2], &[0.1, 0.2])],
                &["Y"],
                vec!["Cast X -> c", "UsanDense c -> t", "UsanDense t -> a2", "Reshape a2,shape -> Y"],
            ),
            (
                "PyTorch's Gemm (transposed weights) and Relu; a Gemm that is the graph's output",
                vec![
                    node("Gemm", &["X", "Wt", "b1"], &["g"], vec![int("transB", 1)]),
                    node("Relu", &["g"], &["r"], vec![]),
                    node("Gemm", &["r", "Wt", "s"], &["Y"], vec![]),
                ],
                vec![wt.clone(), b1.clone(), scalar.clone()],
                &["Y"],
                vec!["UsanDense X -> r", "UsanDense r -> Y"],
            ),
            (
                "a product read twice keeps its Add, an activation of a graph output stays",
                vec![
                    node("MatMul", &["X", "W"], &["m"], vec![]),
                    node("Add", &["m", "b"], &["a"], vec![]),
                    node("Neg", &["m"], &["n"], vec![]),
                    node("Gemm", &["X", "W"], &["g"], vec![]),
                    node("Relu", &["g"], &["r"], vec![]),
                ],
                vec![w.clone(), b.clone()],
                &["a", "n", "g", "r"],
                vec!["UsanDense X -> m", "Add m,b -> a", "Neg m -> n", "UsanDense X -> g", "Relu g -> r"],
            ),
            (
                "what is not a dense layer of constant floats stays",
                vec![
                    node("Gemm", &["X", "W"], &["ta"], vec![int("transA", 1)]),
                    node("Gemm", &["X", "W", "wide"], &["c"], vec![]),
                    node("MatMul", &["X", "D"], &["d"], vec![]),
                    node("MatMul", &["X", "V"], &["v"], vec![]),
                    node("MatMul", &["W", "X"], &["k"], vec![]),
                ],
                vec![w.clone(), wide, doubles],
                &["ta", "c", "d", "v", "k"],
                vec!["Gemm X,W -> ta", "Gemm X,W,wide -> c", "MatMul X,D -> d", "MatMul X,V -> v", "MatMul W,X -> k"],
            ),
        ];
        assert_fusions(cases);
    }

    #[test]
    fn a_fused_layer_holds_its_weights_bias_and_activation() {
        let mut g = graph(
            vec![
                node(
                    "Gemm",
                    &["X", "Wt", "b1"],
                    &["g"],
                    vec![int("transB", 1), float("alpha", 2.0), float("beta", 0.5)],
                ),
                node("Sigmoid", &["g"], &["Y"], vec![]),
            ],
            &["Y"],
        );
        g.initializer =
            vec![constant("Wt", &[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]), constant("b1", &[3], &[0.1, 0.2, 0.3])];
        g.value_info = vec![ValueInfoProto { name: "g".into(), ..Default::default() }];
        assert_eq!(fuse_dense_layers(&mut g), 1);
        let dense = &g.node[0];
        assert_eq!(dense.domain, crate::ops::dense::DOMAIN);
        assert_eq!(attribute(dense, "shape").unwrap().ints, [2, 3]);
        assert_eq!(attribute(dense, "weights").unwrap().floats, [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
        assert_eq!(attribute(dense, "bias").unwrap().floats, [0.05, 0.1, 0.15]);
        assert_eq!(attribute(dense, "activation").unwrap().s, b"Sigmoid");
        assert!(g.initializer.is_empty() && g.value_info.is_empty(), "the weights and `g` are gone from the graph");
    }

    #[test]
    fn normalisations_and_convolutions_join_their_layers() {
        let wt = constant("Wt", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let per = |name: &str, v: [f32; 2]| constant(name, &[2], &v);
        let stats =
            vec![per("scale", [2.0, 1.0]), per("shift", [0.5, 0.0]), per("mean", [1.0, 0.0]), per("var", [3.0, 0.0])];
        let conv_w = constant("Cw", &[2, 1, 3], &[1.0; 6]);
        let cases: Vec<FusionCase> = vec![
            (
                "Gemm, BatchNormalization, Relu; Gemm, LayerNormalization, Relu",
                vec![
                    node("Gemm", &["X", "Wt"], &["g"], vec![int("transB", 1)]),
                    node(
                        "BatchNormalization",
                        &["g", "scale", "shift", "mean", "var"],
                        &["bn"],
                        vec![float("epsilon", 1.0)],
                    ),
                    node("Relu", &["bn"], &["r"], vec![]),
                    node("Gemm", &["r", "Wt"], &["g2"], vec![int("transB", 1)]),
                    node("LayerNormalization", &["g2", "scale", "shift"], &["ln"], vec![]),
                    node("Relu", &["ln"], &["Y"], vec![]),
                ],
                [vec![wt.clone()], stats.clone()].concat(),
                &["Y"],
                vec!["UsanDense X -> r", "UsanDense r -> Y"],
            ),
            (
                "a training BatchNormalization, a LayerNormalization over the rows and a MatMul's stay",
                vec![
                    node("Gemm", &["X", "Wt"], &["g"], vec![]),
                    node(
                        "BatchNormalization",
                        &["g", "scale", "shift", "mean", "var"],
                        &["bn"],
                        vec![int("training_mode", 1)],
                    ),
                    node("Gemm", &["X", "Wt"], &["g2"], vec![]),
                    node("LayerNormalization", &["g2", "scale", "shift"], &["ln"], vec![int("axis", 0)]),
                    node("MatMul", &["X", "Wt"], &["m"], vec![]),
                    node("LayerNormalization", &["m", "scale", "shift"], &["ln2"], vec![]),
                ],
                [vec![wt.clone()], stats.clone()].concat(),
                &["bn", "ln", "ln2"],
                vec![
                    "UsanDense X -> g",
                    "BatchNormalization g,scale,shift,mean,var -> bn",
                    "UsanDense X -> g2",
                    "LayerNormalization g2,scale,shift -> ln",
                    "UsanDense X -> m",
                    "LayerNormalization m,scale,shift -> ln2",
                ],
            ),
            (
                "a 1-D Conv and its Relu; a 2-D Conv and one of runtime weights stay",
                vec![
                    node("Conv", &["X", "Cw"], &["c"], vec![ints("pads", &[1, 1])]),
                    node("Relu", &["c"], &["r"], vec![]),
                    node("Conv", &["X", "W2d"], &["c2"], vec![]),
                    node("Conv", &["X", "r"], &["c3"], vec![]),
                ],
                vec![conv_w.clone(), constant("W2d", &[1, 1, 2, 2], &[1.0; 4])],
                &["r", "c2", "c3"],
                vec!["UsanConv1d X -> r", "Conv X,W2d -> c2", "Conv X,r -> c3"],
            ),
        ];
        assert_fusions(cases);
    }

    #[test]
    fn a_batch_normalisation_folds_into_the_weights_and_bias() {
        let mut g = graph(
            vec![
                node("Gemm", &["X", "W", "b"], &["g"], vec![]),
                node(
                    "BatchNormalization",
                    &["g", "scale", "shift", "mean", "var"],
                    &["Y"],
                    vec![float("epsilon", 1.0)],
                ),
            ],
            &["Y"],
        );
        let per = |name: &str, v: [f32; 2]| constant(name, &[2], &v);
        g.initializer = vec![
            constant("W", &[1, 2], &[1.0, 2.0]),
            per("b", [1.0, 1.0]),
            per("scale", [2.0, 1.0]),
            per("shift", [0.5, 0.0]),
            per("mean", [1.0, 0.0]),
            per("var", [3.0, 0.0]),
        ];
        assert_eq!(fuse_dense_layers(&mut g), 1);
        // Factors scale / sqrt(var + 1): 1 and 1.
        assert_eq!(attribute(&g.node[0], "weights").unwrap().floats, [1.0, 2.0]);
        assert_eq!(attribute(&g.node[0], "bias").unwrap().floats, [0.5, 1.0]);
        assert!(g.initializer.is_empty(), "the statistics live in the layer now");
    }

    #[test]
    fn dense_layers_in_a_graph_with_subgraphs_are_left_alone() {
        let branch =
            AttributeProto { name: "then_branch".into(), g: Some(GraphProto::default()), ..Default::default() };
        let mut g =
            graph(vec![node("MatMul", &["X", "W"], &["m"], vec![]), node("If", &["m"], &["Y"], vec![branch])], &["Y"]);
        g.initializer = vec![constant("W", &[1, 1], &[1.0])];
        assert_eq!(fuse_dense_layers(&mut g), 0);
        assert_eq!(g.node[0].op_type, "MatMul");
    }
}
