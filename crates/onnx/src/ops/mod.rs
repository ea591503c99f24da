//! The `ai.onnx.ml` operators that tract lacks or runs differently from
//! onnxruntime, implemented here and registered into tract's ONNX parser.
//!
//! Each operator is a [`Kernel`]: one input, outputs whose type and shape
//! follow from it, and an `eval` over plain slices. The recurrent layers
//! (`LSTM`, `GRU`), which take weights and states as further inputs, are an
//! operator of tract's kind of their own (`recurrent`). [`Native`] plugs a
//! kernel into tract (its inference rules, then a typed op that evaluates
//! it), so an operator is one file here plus one line in [`register`].
//! Semantics follow onnxruntime's CPU kernels, the reference the exporters'
//! goldens come from, including their treatment of missing values (NaN).

mod array_feature;
pub(crate) mod conv;
pub(crate) mod dense;
mod elementwise;
mod feature_vectorizer;
mod label_encoder;
mod linear;
mod one_hot;
mod recurrent;
mod svm;
mod tree;

use std::fmt;
use std::sync::Arc;
use tract_onnx::model::OnnxOpRegister;
use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};
use tract_onnx::tract_hir::internal::*;

/// The `ai.onnx.ml` operators usan runs, tract's own and those of this module.
pub(crate) const ML_OPERATORS: &[&str] = &[
    "ArrayFeatureExtractor",
    "Binarizer",
    "CategoryMapper",
    "FeatureVectorizer",
    "Imputer",
    "LabelEncoder",
    "LinearClassifier",
    "LinearRegressor",
    "Normalizer",
    "OneHotEncoder",
    "SVMClassifier",
    "SVMRegressor",
    "Scaler",
    "TreeEnsemble",
    "TreeEnsembleClassifier",
    "TreeEnsembleRegressor",
    "ZipMap",
];

/// Adds this module's operators to tract's, replacing tract's tree and
/// linear classifiers (onnxruntime's binary-case rules, all six
/// comparisons, text labels), its ArrayFeatureExtractor (onnxruntime's
/// output shape) and its LSTM and GRU (a `Scan` per step, and only part of
/// the specification).
pub(crate) fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Binarizer", elementwise::binarizer);
    reg.insert("Imputer", elementwise::imputer);
    reg.insert("Scaler", elementwise::scaler);
    reg.insert("ZipMap", elementwise::zipmap);
    reg.insert("Relu", elementwise::relu);
    reg.insert("Sigmoid", elementwise::sigmoid);
    reg.insert("Tanh", elementwise::tanh);
    reg.insert("LabelEncoder", label_encoder::label_encoder);
    reg.insert("LinearClassifier", linear::linear_classifier);
    reg.insert("TreeEnsembleClassifier", tree::classifier);
    reg.insert("TreeEnsembleRegressor", tree::regressor);
    reg.insert("TreeEnsemble", tree::tree_ensemble);
    reg.insert("ArrayFeatureExtractor", array_feature::array_feature_extractor);
    reg.insert("OneHotEncoder", one_hot::one_hot_encoder);
    reg.insert("FeatureVectorizer", feature_vectorizer::feature_vectorizer);
    reg.insert("SVMClassifier", svm::classifier);
    reg.insert("SVMRegressor", svm::regressor);
    reg.insert(dense::OP_TYPE, dense::dense);
    reg.insert(conv::OP_TYPE, conv::conv1d);
    reg.insert("LSTM", recurrent::lstm);
    reg.insert("GRU", recurrent::gru);
}

/// The result type of an operator builder, as tract's parser wants it.
pub(crate) type Built = TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// The shape of a kernel's output, given its input's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OutShape {
    /// The input's shape.
    LikeInput,
    /// One row per input row, then these fixed dimensions (none: `[N]`).
    Rows(Vec<usize>),
    /// The input's shape and one more dimension of this size.
    InputThen(usize),
    /// The input's shape with the last dimension of this size, padded with
    /// leading 1s to at least `min_rank` dimensions.
    LastAxis { size: usize, min_rank: usize },
    /// A 1-D convolution's `[N, channels, L']` from `[N, C, L]`.
    Windows { channels: usize, windows: conv::Windows },
}

/// One output of a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OutSpec {
    /// The element type; `None`: the input's.
    pub datum: Option<DatumType>,
    pub shape: OutShape,
}

/// An operator implemented in usan: one input, declared outputs.
pub(crate) trait Kernel: fmt::Debug + Send + Sync + 'static {
    /// The ONNX operator name.
    fn name(&self) -> &'static str;
    /// What it gives.
    fn outputs(&self) -> Vec<OutSpec>;
    /// Computes the outputs from the input.
    ///
    /// # Errors
    /// An input of a type or width the operator does not take.
    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>>;
}

/// A kernel as tract's parser sees it (inference rules, then wiring).
#[derive(Clone, Debug)]
pub(crate) struct Native(pub Arc<dyn Kernel>);

pub(crate) fn native(kernel: impl Kernel) -> Built {
    Ok((expand(Native(Arc::new(kernel))), vec![]))
}

impl Expansion for Native {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(self.0.outputs().len())
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        let specs = self.0.outputs();
        check_output_arity(outputs, specs.len())?;
        for (output, spec) in outputs.iter().zip(specs) {
            match spec.datum {
                Some(datum) => s.equals(&output.datum_type, datum)?,
                None => s.equals(&output.datum_type, &inputs[0].datum_type)?,
            }
            match spec.shape {
                OutShape::LikeInput => s.equals(&output.shape, &inputs[0].shape)?,
                OutShape::Rows(dims) => {
                    s.equals(&output.rank, 1 + dims.len() as i64)?;
                    s.equals(&output.shape[0], &inputs[0].shape[0])?;
                    for (j, d) in dims.iter().enumerate() {
                        s.equals(&output.shape[j + 1], d.to_dim())?;
                    }
                }
                OutShape::InputThen(k) => {
                    s.equals(&output.rank, inputs[0].rank.bex() + 1)?;
                    s.given(&inputs[0].shape, move |s, shape| {
                        let mut shape = shape;
                        shape.push(k.to_dim());
                        s.equals(&output.shape, shape)
                    })?;
                }
                OutShape::LastAxis { size, min_rank } => {
                    s.given(&inputs[0].shape, move |s, shape| {
                        s.equals(&output.shape, last_axis(&shape, size, min_rank))
                    })?;
                }
                OutShape::Windows { channels, windows } => {
                    s.equals(&output.rank, 3)?;
                    s.equals(&output.shape[0], &inputs[0].shape[0])?;
                    s.equals(&output.shape[1], channels.to_dim())?;
                    s.given(&inputs[0].shape[2], move |s, length| {
                        s.equals(&output.shape[2], windows.along_dim(&length))
                    })?;
                }
            }
        }
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, NativeOp(self.0.clone()), inputs)
    }
}

/// `shape` with its last dimension set to `size` (appended to a scalar's),
/// padded with leading 1s to `min_rank` dimensions: for the inference
/// rules (symbolic dimensions) and for an evaluation (concrete ones).
pub(crate) fn last_axis<D: Clone + From<usize>>(shape: &[D], size: usize, min_rank: usize) -> TVec<D> {
    let mut shape: TVec<D> = shape.iter().take(shape.len().saturating_sub(1)).cloned().collect();
    shape.push(size.into());
    while shape.len() < min_rank {
        shape.insert(0, 1.into());
    }
    shape
}

/// A kernel as tract's typed model and plan see it.
#[derive(Clone, Debug)]
struct NativeOp(Arc<dyn Kernel>);

impl PartialEq for NativeOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for NativeOp {}

impl Op for NativeOp {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    op_as_typed_op!();
}

impl EvalOp for NativeOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs.first().context("no input")?;
        Ok(self.0.eval(input)?.into_iter().map(IntoTValue::into_tvalue).collect())
    }
}

impl TypedOp for NativeOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let input = inputs.first().context("no input")?;
        self.0
            .outputs()
            .into_iter()
            .map(|spec| {
                let datum = spec.datum.unwrap_or(input.datum_type);
                Ok(match spec.shape {
                    OutShape::LikeInput => datum.fact(input.shape.clone()),
                    OutShape::Rows(dims) => {
                        let rows = input.shape.iter().next().cloned().unwrap_or_else(|| 1.to_dim());
                        let mut shape: TVec<TDim> = tvec![rows];
                        shape.extend(dims.iter().map(|d| d.to_dim()));
                        datum.fact(shape)
                    }
                    OutShape::InputThen(k) => {
                        let mut shape: TVec<TDim> = input.shape.iter().cloned().collect();
                        shape.push(k.to_dim());
                        datum.fact(shape)
                    }
                    OutShape::LastAxis { size, min_rank } => {
                        let shape: TVec<TDim> = input.shape.iter().cloned().collect();
                        datum.fact(last_axis(&shape, size, min_rank))
                    }
                    OutShape::Windows { channels, windows } => {
                        let dims: TVec<TDim> = input.shape.iter().cloned().collect();
                        let [rows, _, length] = dims.as_slice() else {
                            bail!("a 1-D convolution takes [N, C, L], not {dims:?}")
                        };
                        datum.fact(tvec![rows.clone(), channels.to_dim(), windows.along_dim(length)])
                    }
                })
            })
            .collect()
    }

    as_op!();
}

/// A classifier's class labels: integers or text.
#[derive(Debug)]
pub(crate) enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl Labels {
    /// `classlabels_strings`, or the integer labels under `ints`.
    pub(crate) fn read(a: &Attrs, ints: &str) -> TractResult<Self> {
        let strings = a.strings("classlabels_strings")?;
        Ok(if strings.is_empty() { Self::Ints(a.ints(ints).to_vec()) } else { Self::Strings(strings) })
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Ints(v) => v.len(),
            Self::Strings(v) => v.len(),
        }
    }

    /// The label output's element type.
    pub(crate) fn datum(&self) -> DatumType {
        match self {
            Self::Ints(_) => i64::datum_type(),
            Self::Strings(_) => String::datum_type(),
        }
    }
}

/// A node's attributes by name, with the errors a damaged model deserves.
pub(crate) struct Attrs<'a> {
    node: &'a NodeProto,
}

impl<'a> Attrs<'a> {
    pub(crate) fn of(node: &'a NodeProto) -> Self {
        Self { node }
    }

    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub(crate) fn ints(&self, name: &str) -> &'a [i64] {
        self.get(name).map(|a| a.ints.as_slice()).unwrap_or(&[])
    }

    pub(crate) fn floats(&self, name: &str) -> &'a [f32] {
        self.get(name).map(|a| a.floats.as_slice()).unwrap_or(&[])
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub(crate) fn strings(&self, name: &str) -> TractResult<Vec<String>> {
        self.get(name)
            .map(|a| {
                a.strings.iter().map(|s| String::from_utf8(s.clone()).context("text attribute is not UTF-8")).collect()
            })
            .unwrap_or_else(|| Ok(vec![]))
    }

    pub(crate) fn string(&self, name: &str, default: &str) -> TractResult<String> {
        match self.get(name) {
            Some(a) => String::from_utf8(a.s.clone()).with_context(|| format!("attribute {name} is not UTF-8")),
            None => Ok(default.to_string()),
        }
    }

    pub(crate) fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }

    pub(crate) fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }

    /// A `*_as_tensor` attribute (doubles), when present.
    pub(crate) fn doubles(&self, name: &str) -> TractResult<Option<Vec<f64>>> {
        self.get(name).and_then(|a| a.t.as_ref()).map(tensor_doubles).transpose()
    }

    /// A tensor attribute's values as text (for LabelEncoder's tensors).
    pub(crate) fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }
}

/// A small tensor's values (an attribute, a layer's weights) as doubles, whatever numeric type it holds.
pub(crate) fn tensor_doubles(t: &TensorProto) -> TractResult<Vec<f64>> {
    const FLOAT: i32 = 1;
    const DOUBLE: i32 = 11;
    const INT64: i32 = 7;
    const INT32: i32 = 6;
    const UINT8: i32 = 2;
    if !t.double_data.is_empty() {
        return Ok(t.double_data.clone());
    }
    if !t.float_data.is_empty() {
        return Ok(t.float_data.iter().map(|&v| f64::from(v)).collect());
    }
    if !t.int64_data.is_empty() {
        return Ok(t.int64_data.iter().map(|&v| v as f64).collect());
    }
    if !t.int32_data.is_empty() {
        return Ok(t.int32_data.iter().map(|&v| f64::from(v)).collect());
    }
    let raw = &t.raw_data;
    let chunks = |n: usize| -> TractResult<std::slice::ChunksExact<'_, u8>> {
        ensure!(raw.len().is_multiple_of(n), "tensor attribute of {} bytes is not a whole number of values", raw.len());
        Ok(raw.chunks_exact(n))
    };
    Ok(match t.data_type {
        DOUBLE => chunks(8)?.map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
        FLOAT => chunks(4)?.map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        INT64 => {
            chunks(8)?.map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64).collect()
        }
        INT32 => chunks(4)?.map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        UINT8 => raw.iter().map(|&b| f64::from(b)).collect(),
        other => bail!("tensor attribute of type {other} where numbers were expected"),
    })
}

/// The input as rows of `f64` (any numeric type), with its row count and width.
pub(crate) fn rows_f64(input: &Tensor) -> TractResult<(usize, usize, Vec<f64>)> {
    let (rows, width) = rows_and_width(input);
    let values = if input.datum_type() == f32::datum_type() {
        input.try_as_plain_ram()?.as_slice::<f32>()?.iter().map(|&v| f64::from(v)).collect()
    } else {
        input.cast_to::<f64>()?.try_as_plain_ram()?.as_slice::<f64>()?.to_vec()
    };
    Ok((rows, width, values))
}

/// How many rows an input holds and how many values each: a scalar is one
/// value, a vector one row, `[N, ...]` N rows.
pub(crate) fn rows_and_width(input: &Tensor) -> (usize, usize) {
    match input.shape() {
        [] => (1, 1),
        [n] => (1, *n),
        [n, rest @ ..] => (*n, rest.iter().product()),
    }
}

/// A tensor of `shape` holding `data` (row-major).
pub(crate) fn make<T: Datum>(shape: &[usize], data: Vec<T>) -> TractResult<Tensor> {
    Ok(tract_ndarray::ArrayD::from_shape_vec(shape, data)?.into())
}
