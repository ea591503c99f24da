//! Reading a model file, checking that usan can run every operator in it,
//! building it on tract, and running it on rows.

use crate::OnnxError;
use crate::ops;
use crate::proto;
use crate::signature::{Dim, ElemType, Signature, ValueType};
use prost::Message;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use tract_onnx::prelude::*;

/// An operator usan cannot run, and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// Operator domain (`ai.onnx` for the default one).
    pub domain: String,
    /// Operator name.
    pub op_type: String,
    /// The node's name (or its first output's, when it has none).
    pub node: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} (node {})", self.domain, self.op_type, self.node)
    }
}

/// What a file says about itself, read without building it.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// Inputs and outputs.
    pub signature: Signature,
    /// Operators usan cannot run (empty when it can run them all).
    pub unsupported: Vec<Unsupported>,
    /// The exporter, as the file names it (`skl2onnx 1.20.0`).
    pub producer: String,
    /// For each output made by a ZipMap, its class labels in order.
    pub zipmap_classes: HashMap<String, Vec<String>>,
    /// The graph holds a recurrent layer (LSTM, GRU, RNN).
    pub recurrent: bool,
}

/// Reads an ONNX file's interface and checks its operators.
///
/// # Errors
/// [`OnnxError::NotOnnx`] when the bytes are not an ONNX model.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, OnnxError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| OnnxError::NotOnnx(e.to_string()))?;
    let graph = model.graph.as_ref().ok_or_else(|| OnnxError::NotOnnx("the file holds no graph".into()))?;
    if model.ir_version <= 0 && model.opset_import.is_empty() {
        return Err(OnnxError::NotOnnx("no IR version and no operator sets".into()));
    }
    let signature = Signature::of(graph);
    if signature.outputs.is_empty() {
        return Err(OnnxError::NotOnnx("the graph has no outputs".into()));
    }
    let standard = tract_ops();
    let mut unsupported = Vec::new();
    let mut stack = vec![graph];
    while let Some(g) = stack.pop() {
        for node in &g.node {
            let domain = if node.domain.is_empty() { "ai.onnx" } else { node.domain.as_str() };
            let known = match domain {
                "ai.onnx" => standard.contains_key(&node.op_type),
                "ai.onnx.ml" => ops::ML_OPERATORS.contains(&node.op_type.as_str()),
                _ => false,
            };
            if !known {
                let name = if node.name.is_empty() {
                    node.output.first().cloned().unwrap_or_default()
                } else {
                    node.name.clone()
                };
                unsupported.push(Unsupported { domain: domain.to_string(), op_type: node.op_type.clone(), node: name });
            }
            for attribute in &node.attribute {
                stack.extend(attribute.g.iter());
                stack.extend(attribute.graphs.iter());
            }
        }
    }
    let mut zipmap_classes = HashMap::new();
    for node in graph.node.iter().filter(|n| n.op_type == "ZipMap") {
        let classes: Vec<String> = node
            .attribute
            .iter()
            .find(|a| a.name == "classlabels_int64s" || a.name == "classlabels_strings")
            .map(|a| {
                if a.name == "classlabels_int64s" {
                    a.ints.iter().map(ToString::to_string).collect()
                } else {
                    a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()
                }
            })
            .unwrap_or_default();
        for out in &node.output {
            zipmap_classes.insert(out.clone(), classes.clone());
        }
    }
    let recurrent =
        graph.node.iter().any(|n| n.domain.is_empty() && matches!(n.op_type.as_str(), "LSTM" | "GRU" | "RNN"));
    let producer = [model.producer_name.as_str(), model.producer_version.as_str()].join(" ").trim().to_string();
    Ok(Inspection { signature, unsupported, producer, zipmap_classes, recurrent })
}

/// tract's ONNX parser with usan's operators registered.
fn parser() -> tract_onnx::Onnx {
    let mut onnx = onnx();
    ops::register(&mut onnx.op_register);
    onnx
}

/// The default-domain operators tract's parser knows (computed once).
fn tract_ops() -> &'static HashMap<String, ()> {
    static OPS: std::sync::OnceLock<HashMap<String, ()>> = std::sync::OnceLock::new();
    OPS.get_or_init(|| parser().op_register.0.keys().map(|k| (k.clone(), ())).collect())
}

/// Runs `f`, turning a panic inside it into an error (tract may panic on a
/// hostile file) without the panic message reaching stderr.
fn guarded<T>(what: &str, f: impl FnOnce() -> TractResult<T>) -> Result<T, String> {
    match usan_core::guard::catch_quietly(f) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}").replace('\n', "; ")),
        Err(message) => Err(format!("{what} failed inside the ONNX runtime: {message}")),
    }
}

/// One output of a run, as columns per row.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The output's name in the graph.
    pub name: String,
    /// Column suffixes: `[""]` for one value per row, `j` for `[N, k]`, the
    /// class for a ZipMap.
    pub columns: Vec<String>,
    /// The values, row-major (`rows × columns.len()`).
    pub values: OutputValues,
}

impl Output {
    /// CSV headers: `<name>` or `<name>.<column>`.
    pub fn header(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|c| if c.is_empty() { self.name.clone() } else { format!("{}.{c}", self.name) })
            .collect()
    }
}

/// An output's values by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputValues {
    /// Floats (f32 outputs widened exactly).
    Float(Vec<f64>),
    /// Integers and booleans.
    Int(Vec<i64>),
    /// Labels as text.
    Text(Vec<String>),
}

/// Rows of the plans built for a known batch size (see `Model::fixed`),
/// largest first: 1,024 for files (`usan model run` scores a file in
/// chunks of it) and 64 for the pipeline (a worker scores up to 64 waiting
/// batches in one call: one frame each from 64 assets fills it).
const FIXED_ROWS: [usize; 2] = [1024, 64];

/// A built model, ready to run on rows.
#[derive(Clone)]
pub struct Model {
    inspection: Inspection,
    plan: Arc<TypedRunnableModel>,
    /// The same model built for exactly each of [`FIXED_ROWS`] rows, where
    /// tract could: with the batch size known it picks its vectorised
    /// kernels for elementwise arithmetic and better matrix tiles. A batch
    /// runs in whole chunks of the largest that fit, the rest through `plan`.
    fixed: Vec<(usize, Arc<TypedRunnableModel>)>,
    input_elem: ElemType,
    /// The input's dimensions after the batch (rows) one.
    row_dims: Vec<usize>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model").field("signature", &self.inspection.signature).finish_non_exhaustive()
    }
}

impl Model {
    /// Reads and builds a model. `width` gives the input's feature count
    /// when the file leaves it dynamic (`[N, ?]`).
    ///
    /// # Errors
    /// Not ONNX, an unsupported operator, more than one input or an input
    /// that is not float or double, or a graph tract cannot build.
    pub fn load(bytes: &[u8], width: Option<usize>) -> Result<Self, OnnxError> {
        let inspection = inspect(bytes)?;
        if !inspection.unsupported.is_empty() {
            return Err(OnnxError::Unsupported(inspection.unsupported));
        }
        let inputs = &inspection.signature.inputs;
        let [input] = inputs.as_slice() else {
            return Err(OnnxError::Input(format!(
                "usan feeds one input but the model has {}: {}",
                inputs.len(),
                inputs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        };
        let input_elem = input.value.elem().unwrap_or(ElemType::Float);
        if !matches!(input_elem, ElemType::Float | ElemType::Double) {
            return Err(OnnxError::Input(format!(
                "input {} is {}: usan feeds float or double",
                input.name, input.value
            )));
        }
        let row_dims = row_dims(&input.value, width)?;
        let datum = if input_elem == ElemType::Double { f64::datum_type() } else { f32::datum_type() };
        let dims = row_dims.clone();
        // The rows dimension keeps the model's own name for it, so that the
        // shapes the file declares inside the graph agree with the input's.
        let rows_name = match input.value.dims().and_then(|d| d.first()) {
            Some(Dim::Dynamic(Some(name))) => name.clone(),
            _ => "N".to_string(),
        };
        let build = |ignore_value_info: bool| {
            let (dims, rows_name) = (dims.clone(), rows_name.clone());
            guarded("building the model", move || {
                let onnx = parser().with_ignore_value_info(ignore_value_info);
                let mut proto = onnx.proto_model_for_read(&mut &*bytes)?;
                if let Some(graph) = proto.graph.as_mut() {
                    crate::rewrite::merge_identical_nodes(graph);
                    crate::rewrite::fuse_dense_layers(graph);
                }
                let mut model = onnx.model_for_proto_model(&proto)?;
                let rows = model.symbols.sym(&rows_name);
                let mut shape: TVec<TDim> = tvec![rows.clone().into()];
                shape.extend(dims.iter().map(|&d| d.to_dim()));
                model.set_input_fact(0, InferenceFact::dt_shape(datum, shape))?;
                let typed = model.into_typed()?.into_decluttered()?;
                // Only a speed-up: a model tract cannot specialise runs on the general plan.
                let fixed = FIXED_ROWS
                    .iter()
                    .filter_map(|&size| {
                        typed
                            .set_symbols(&HashMap::from([(rows.clone(), TDim::Val(size as i64))]))
                            .and_then(|fixed| fixed.into_optimized())
                            .and_then(|fixed| fixed.into_runnable())
                            .ok()
                            .map(|plan| (size, plan))
                    })
                    .collect::<Vec<_>>();
                let optimized = typed.clone().into_optimized().unwrap_or(typed);
                Ok((optimized.into_runnable()?, fixed))
            })
        };
        // Shapes declared for intermediate values help tract, unless an
        // exporter named the same dimension differently in places.
        let (plan, fixed) = build(false).or_else(|first| build(true).map_err(|_| first)).map_err(OnnxError::Build)?;
        Ok(Self { inspection, plan, fixed, input_elem, row_dims })
    }

    /// Inputs, outputs, exporter.
    pub fn inspection(&self) -> &Inspection {
        &self.inspection
    }

    /// Whether the input is `float` (values are parsed as `f32`).
    pub fn takes_f32(&self) -> bool {
        self.input_elem == ElemType::Float
    }

    /// Values per row the input takes (`F`, or `T × F` for sequences).
    pub fn input_width(&self) -> usize {
        self.row_dims.iter().product()
    }

    /// Runs the model on `rows` rows given row-major in `values`.
    ///
    /// # Errors
    /// A value count that is not `rows × input_width`, or a failure inside
    /// the model (reported, never a panic).
    pub fn run(&self, rows: usize, values: &[f64]) -> Result<Vec<Output>, OnnxError> {
        let width = self.input_width();
        if values.len() != rows * width {
            return Err(OnnxError::Input(format!("{} values for {rows} rows of {width}", values.len())));
        }
        // Whole chunks of each fixed size that fits, largest first, then the
        // rest (or all, without one) through the general plan.
        let mut chunks: Vec<TVec<TValue>> = Vec::new();
        let mut at = 0;
        for (size, plan) in &self.fixed {
            while rows - at >= *size {
                let chunk = &values[at * width..(at + size) * width];
                // A chunk a specialised plan fails on gets the general plan's answer (or error).
                let outputs = self.run_plan(plan, *size, chunk).or_else(|_| self.run_plan(&self.plan, *size, chunk))?;
                chunks.push(outputs);
                at += size;
            }
        }
        if at < rows || rows == 0 {
            chunks.push(self.run_plan(&self.plan, rows - at, &values[at * width..])?);
        }
        let results: Vec<Tensor> = if chunks.len() == 1 {
            chunks.remove(0).into_iter().map(TValue::into_tensor).collect()
        } else {
            // Each output's parts, moved out of the chunks (not copied), then joined.
            let mut parts: Vec<Vec<Tensor>> = Vec::new();
            for chunk in chunks {
                for (o, value) in chunk.into_iter().enumerate() {
                    match parts.get_mut(o) {
                        Some(part) => part.push(value.into_tensor()),
                        None => parts.push(vec![value.into_tensor()]),
                    }
                }
            }
            parts
                .iter()
                .map(|part| {
                    Tensor::stack_tensors(0, part)
                        .map_err(|e| OnnxError::Run(format!("joining the outputs of the batch's chunks: {e}")))
                })
                .collect::<Result<_, _>>()?
        };
        let ports = &self.inspection.signature.outputs;
        let mut outputs: Vec<Output> = results
            .into_iter()
            .zip(ports)
            .map(|(value, port)| self.output(&port.name, &value, rows))
            .collect::<Result<_, _>>()?;
        if self.inspection.recurrent {
            missing_in_missing_out(&mut outputs, values, width);
        }
        Ok(outputs)
    }

    /// One run of `plan` on `rows` rows.
    fn run_plan(&self, plan: &Arc<TypedRunnableModel>, rows: usize, values: &[f64]) -> Result<TVec<TValue>, OnnxError> {
        let mut shape = vec![rows];
        shape.extend(&self.row_dims);
        // Written straight into tract's own (aligned) buffer: a tensor made
        // from a `Vec` is a copy, and a batch's copies are much of a small
        // network's time.
        let err = |e: TractError| OnnxError::Input(e.to_string());
        if values.len() != shape.iter().product::<usize>() {
            return Err(OnnxError::Input(format!("{} values for a batch of shape {shape:?}", values.len())));
        }
        let tensor = if self.input_elem == ElemType::Double {
            Tensor::from_shape(&shape, values).map_err(err)?
        } else {
            let mut tensor = Tensor::zero::<f32>(&shape).map_err(err)?;
            let mut ram = tensor.try_as_plain_ram_mut().map_err(err)?;
            for (to, &from) in ram.as_slice_mut::<f32>().map_err(err)?.iter_mut().zip(values) {
                *to = from as f32;
            }
            tensor
        };
        let plan = plan.clone();
        guarded("running the model", move || plan.run(tvec![tensor.into()])).map_err(OnnxError::Run)
    }

    fn output(&self, name: &str, value: &Tensor, rows: usize) -> Result<Output, OnnxError> {
        let shape = value.shape();
        let per_row: usize = shape.iter().skip(1).product();
        if shape.first() != Some(&rows) {
            return Err(OnnxError::Run(format!(
                "output {name} has shape {shape:?}, not one row per input row ({rows})"
            )));
        }
        let columns = match self.inspection.zipmap_classes.get(name) {
            Some(classes) if classes.len() == per_row => classes.clone(),
            _ if per_row == 1 => vec![String::new()],
            _ => (0..per_row).map(|j| j.to_string()).collect(),
        };
        let err = |e: TractError| OnnxError::Run(format!("output {name}: {e}"));
        let values = match value.datum_type() {
            DatumType::String => {
                OutputValues::Text(value.try_as_plain_ram().map_err(err)?.as_slice::<String>().map_err(err)?.to_vec())
            }
            DatumType::F32 => OutputValues::Float(
                value
                    .try_as_plain_ram()
                    .map_err(err)?
                    .as_slice::<f32>()
                    .map_err(err)?
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect(),
            ),
            dt if dt.is_float() => {
                let cast = value.cast_to::<f64>().map_err(err)?;
                OutputValues::Float(cast.try_as_plain_ram().map_err(err)?.as_slice::<f64>().map_err(err)?.to_vec())
            }
            _ => {
                let cast = value.cast_to::<i64>().map_err(err)?;
                OutputValues::Int(cast.try_as_plain_ram().map_err(err)?.as_slice::<i64>().map_err(err)?.to_vec())
            }
        };
        Ok(Output { name: name.to_string(), columns, values })
    }
}

/// A recurrent network's rows with a missing input value get missing
/// outputs. Its gates would otherwise absorb the NaN into a finite number
/// that depends on the runtime's activation kernels (onnxruntime's and
/// tract's give different ones), a score no one should alarm on.
fn missing_in_missing_out(outputs: &mut [Output], values: &[f64], width: usize) {
    for (r, row) in values.chunks(width.max(1)).enumerate() {
        if !row.iter().any(|v| v.is_nan()) {
            continue;
        }
        for output in outputs.iter_mut() {
            let k = output.columns.len();
            if let OutputValues::Float(v) = &mut output.values {
                v[r * k..(r + 1) * k].iter_mut().for_each(|x| *x = f64::NAN);
            }
        }
    }
}

/// The input's dimensions after the batch one, all fixed.
fn row_dims(value: &ValueType, width: Option<usize>) -> Result<Vec<usize>, OnnxError> {
    let Some(dims) = value.dims() else {
        return width
            .map(|w| vec![w])
            .ok_or_else(|| OnnxError::Input("the input declares no shape; give its width".into()));
    };
    match dims {
        [] => Err(OnnxError::Input("the input is a scalar; usan feeds rows".into())),
        [_] => Ok(vec![]),
        [_, rest @ ..] => {
            /// More values per row than any plant model takes (and than memory holds).
            const MOST: u64 = 1 << 32;
            let dynamic = rest.iter().filter(|d| matches!(d, Dim::Dynamic(_))).count();
            let fixed = rest
                .iter()
                .try_fold(1u64, |acc, d| {
                    acc.checked_mul(if let Dim::Fixed(n) = d { *n } else { 1 }).filter(|&p| p <= MOST)
                })
                .ok_or_else(|| OnnxError::Input(format!("the input's shape {} is too large", value.shape_text())))?
                as usize;
            match (dynamic, width) {
                (0, _) => Ok(rest.iter().map(|d| if let Dim::Fixed(n) = d { *n as usize } else { 1 }).collect()),
                (1, Some(w)) if fixed > 0 && w % fixed == 0 => {
                    Ok(rest.iter().map(|d| if let Dim::Fixed(n) = d { *n as usize } else { w / fixed }).collect())
                }
                _ => Err(OnnxError::Input(format!(
                    "the input's shape {} leaves more than the rows open",
                    value.shape_text()
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-made examples and the committed PyTorch networks.
    fn corpus() -> Vec<(String, Vec<u8>)> {
        let torch = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/onnx/torch");
        let mut corpus: Vec<(String, Vec<u8>)> =
            crate::examples::examples().into_iter().map(|(name, bytes)| (name.to_string(), bytes)).collect();
        for entry in std::fs::read_dir(&torch).expect("tests/data/onnx/torch") {
            let path = entry.expect("entry").path().join("model.onnx");
            if path.is_file() {
                corpus.push((path.display().to_string(), std::fs::read(&path).expect("readable")));
            }
        }
        corpus
    }

    fn joined(parts: Vec<Vec<Output>>) -> Vec<OutputValues> {
        let mut joined: Vec<OutputValues> = Vec::new();
        for part in parts {
            for (o, output) in part.into_iter().enumerate() {
                match (joined.get_mut(o), output.values) {
                    (None, values) => joined.push(values),
                    (Some(OutputValues::Float(all)), OutputValues::Float(v)) => all.extend(v),
                    (Some(OutputValues::Int(all)), OutputValues::Int(v)) => all.extend(v),
                    (Some(OutputValues::Text(all)), OutputValues::Text(v)) => all.extend(v),
                    (Some(_), _) => panic!("output {o} changed its type between pieces"),
                }
            }
        }
        joined
    }

    #[test]
    fn a_batch_past_the_fixed_plan_scores_each_row_as_small_batches_do() {
        let corpus = corpus();
        assert!(corpus.len() >= 8 + 5, "{} models", corpus.len());
        for (name, bytes) in corpus {
            let model = Model::load(&bytes, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            let sizes: Vec<usize> = model.fixed.iter().map(|(size, _)| *size).collect();
            assert_eq!(sizes, FIXED_ROWS, "{name}: tract specialises it for each fixed batch size");
            let width = model.input_width();
            // Two chunks of 1,024, one of 64, 13 rows on the general plan.
            let rows = 2 * 1024 + 77;
            let values: Vec<f64> = (0..rows * width).map(|i| ((i * 7919) % 1000) as f64 / 250.0 - 2.0).collect();
            let whole: Vec<OutputValues> = model
                .run(rows, &values)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .into_iter()
                .map(|o| o.values)
                .collect();
            // Pieces of 300: four chunks of 64 and 44 rows on the general plan each.
            let pieces: Vec<Vec<Output>> = (0..rows)
                .step_by(300)
                .map(|start| {
                    let n = 300.min(rows - start);
                    model.run(n, &values[start * width..(start + n) * width]).unwrap_or_else(|e| panic!("{name}: {e}"))
                })
                .collect();
            for (o, (a, b)) in whole.iter().zip(joined(pieces)).enumerate() {
                match (a, &b) {
                    (OutputValues::Float(a), OutputValues::Float(b)) => {
                        assert_eq!(a.len(), b.len(), "{name} output {o}");
                        for (r, (x, y)) in a.iter().zip(b).enumerate() {
                            let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-5 + 1e-5 * y.abs();
                            assert!(same, "{name} output {o} value {r}: {x} in one batch, {y} in pieces");
                        }
                    }
                    _ => assert_eq!(*a, b, "{name} output {o}"),
                }
            }
        }
    }
}
