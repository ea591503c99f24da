//! The operators that map each value on its own: Scaler, Imputer,
//! Binarizer, ZipMap (which, in usan, passes the class probabilities
//! through; the class names come from the model's signature), and the
//! activations Relu, Sigmoid and Tanh, which keep a missing value missing
//! as onnxruntime does (tract's clamp NaN to a bound, so a row with a gap
//! would get a score).

use super::{Attrs, Built, Kernel, OutShape, OutSpec, make, native, rows_f64};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

/// One value per column, or one for all.
fn per_column(values: &[f32], column: usize) -> f32 {
    if values.len() == 1 { values[0] } else { values[column] }
}

fn check_width(name: &str, values: usize, width: usize) -> TractResult<()> {
    ensure!(values == 1 || values == width, "{name} has {values} values for {width} input columns");
    Ok(())
}

/// `Scaler`: `(x - offset) * scale`, in float as onnxruntime computes it.
#[derive(Debug)]
struct Scaler {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

pub(super) fn scaler(_: &ParsingContext, node: &NodeProto) -> Built {
    let a = Attrs::of(node);
    let offset = if a.has("offset") { a.floats("offset").to_vec() } else { vec![0.0] };
    let scale = if a.has("scale") { a.floats("scale").to_vec() } else { vec![1.0] };
    ensure!(!offset.is_empty() && !scale.is_empty(), "Scaler needs offset and scale values");
    native(Scaler { offset, scale })
}

impl Kernel for Scaler {
    fn name(&self) -> &'static str {
        "Scaler"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![OutSpec { datum: Some(f32::datum_type()), shape: OutShape::LikeInput }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (_, width, x) = rows_f64(input)?;
        check_width("Scaler offset", self.offset.len(), width)?;
        check_width("Scaler scale", self.scale.len(), width)?;
        let y: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let j = i % width.max(1);
                (v as f32 - per_column(&self.offset, j)) * per_column(&self.scale, j)
            })
            .collect();
        Ok(tvec![make(input.shape(), y)?])
    }
}

/// `Imputer`: replaces a marker value (NaN by default in practice) with a
/// per-column value; the output keeps the input's type.
#[derive(Debug)]
struct Imputer {
    floats: Vec<f32>,
    ints: Vec<i64>,
    replaced_float: f32,
    replaced_int: i64,
}

pub(super) fn imputer(_: &ParsingContext, node: &NodeProto) -> Built {
    let a = Attrs::of(node);
    let floats = a.floats("imputed_value_floats").to_vec();
    let ints = a.ints("imputed_value_int64s").to_vec();
    ensure!(
        floats.is_empty() != ints.is_empty(),
        "Imputer needs imputed_value_floats or imputed_value_int64s (one of them)"
    );
    native(Imputer {
        floats,
        ints,
        replaced_float: a.float("replaced_value_float", 0.0),
        replaced_int: a.int("replaced_value_int64", 0),
    })
}

impl Kernel for Imputer {
    fn name(&self) -> &'static str {
        "Imputer"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        let datum = if self.floats.is_empty() { i64::datum_type() } else { f32::datum_type() };
        vec![OutSpec { datum: Some(datum), shape: OutShape::LikeInput }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (_, width, x) = rows_f64(input)?;
        let width = width.max(1);
        if self.floats.is_empty() {
            check_width("Imputer imputed_value_int64s", self.ints.len(), width)?;
            let y: Vec<i64> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let v = v as i64;
                    if v == self.replaced_int {
                        if self.ints.len() == 1 { self.ints[0] } else { self.ints[i % width] }
                    } else {
                        v
                    }
                })
                .collect();
            return Ok(tvec![make(input.shape(), y)?]);
        }
        check_width("Imputer imputed_value_floats", self.floats.len(), width)?;
        let nan_marker = self.replaced_float.is_nan();
        let y: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let v = v as f32;
                let replace = if nan_marker { v.is_nan() } else { v == self.replaced_float };
                if replace { per_column(&self.floats, i % width) } else { v }
            })
            .collect();
        Ok(tvec![make(input.shape(), y)?])
    }
}

/// `Binarizer`: 1 where the value is above the threshold, else 0 (NaN: 0).
#[derive(Debug)]
struct Binarizer {
    threshold: f32,
}

pub(super) fn binarizer(_: &ParsingContext, node: &NodeProto) -> Built {
    native(Binarizer { threshold: Attrs::of(node).float("threshold", 0.0) })
}

impl Kernel for Binarizer {
    fn name(&self) -> &'static str {
        "Binarizer"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![OutSpec { datum: Some(f32::datum_type()), shape: OutShape::LikeInput }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (_, _, x) = rows_f64(input)?;
        let y: Vec<f32> = x.iter().map(|&v| if v as f32 > self.threshold { 1.0 } else { 0.0 }).collect();
        Ok(tvec![make(input.shape(), y)?])
    }
}

/// `ZipMap`: the class probabilities `[N, C]`, passed through. onnxruntime
/// returns one `{class: probability}` map per row; usan keeps the tensor and
/// names its columns after the classes (the `classlabels_*` attribute, read
/// with the signature).
#[derive(Debug)]
struct ZipMap {
    classes: usize,
}

pub(super) fn zipmap(_: &ParsingContext, node: &NodeProto) -> Built {
    let a = Attrs::of(node);
    let classes = a.ints("classlabels_int64s").len().max(a.strings("classlabels_strings")?.len());
    ensure!(classes > 0, "ZipMap needs classlabels_int64s or classlabels_strings");
    native(ZipMap { classes })
}

impl Kernel for ZipMap {
    fn name(&self) -> &'static str {
        "ZipMap"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![OutSpec { datum: Some(f32::datum_type()), shape: OutShape::Rows(vec![self.classes]) }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (rows, width, x) = rows_f64(input)?;
        ensure!(width == self.classes, "ZipMap has {} classes but its input {width} columns", self.classes);
        Ok(tvec![make(&[rows, width], x.into_iter().map(|v| v as f32).collect())?])
    }
}

/// The activations whose tract kernels clamp their input with `min`/`max`
/// (which turn NaN into a bound): here NaN stays NaN, as in onnxruntime.
#[derive(Clone, Copy, Debug)]
pub(super) enum Activation {
    Relu,
    Sigmoid,
    Tanh,
}

pub(super) fn relu(_: &ParsingContext, _: &NodeProto) -> Built {
    native(Activation::Relu)
}

pub(super) fn sigmoid(_: &ParsingContext, _: &NodeProto) -> Built {
    native(Activation::Sigmoid)
}

pub(super) fn tanh(_: &ParsingContext, _: &NodeProto) -> Built {
    native(Activation::Tanh)
}

impl Activation {
    /// The `activation` attribute the rewrite gives a fused layer (`op`):
    /// none, or the activation it names.
    ///
    /// # Errors
    /// A name other than `Relu`, `Sigmoid` or `Tanh`.
    pub(super) fn attribute(a: &Attrs<'_>, op: &str) -> TractResult<Option<Self>> {
        Ok(match a.string("activation", "")?.as_str() {
            "" => None,
            "Relu" => Some(Self::Relu),
            "Sigmoid" => Some(Self::Sigmoid),
            "Tanh" => Some(Self::Tanh),
            other => bail!("{op} has an unknown activation {other}"),
        })
    }

    /// In `f32`, the rational minimax fits of the kind onnxruntime's MLAS
    /// kernels use (tract-linalg's, in [`usan_core::activation`]: a few ulps
    /// from libm, several times faster, and NaN stays NaN).
    #[inline]
    pub(super) fn f32(self, v: f32) -> f32 {
        match self {
            Self::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Self::Sigmoid => usan_core::activation::sigmoid_one(v),
            Self::Tanh => usan_core::activation::tanh_one(v),
        }
    }

    /// [`Self::f32`] of every value, in place (sigmoid and tanh in the
    /// wide registers the CPU has).
    pub(super) fn slice(self, values: &mut [f32]) {
        match self {
            Self::Relu => values.iter_mut().for_each(|v| *v = self.f32(*v)),
            Self::Sigmoid => usan_core::activation::sigmoid(values),
            Self::Tanh => usan_core::activation::tanh(values),
        }
    }

    fn f64(self, v: f64) -> f64 {
        match self {
            Self::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Self::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Self::Tanh => v.tanh(),
        }
    }
}

impl Kernel for Activation {
    fn name(&self) -> &'static str {
        match self {
            Self::Relu => "Relu",
            Self::Sigmoid => "Sigmoid",
            Self::Tanh => "Tanh",
        }
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![OutSpec { datum: None, shape: OutShape::LikeInput }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let mut out = input.clone();
        let mut view = out.try_as_plain_ram_mut()?;
        match (input.datum_type(), self) {
            (DatumType::F32, _) => self.slice(view.as_slice_mut::<f32>()?),
            (DatumType::F64, _) => view.as_slice_mut::<f64>()?.iter_mut().for_each(|v| *v = self.f64(*v)),
            (DatumType::I32, Self::Relu) => view.as_slice_mut::<i32>()?.iter_mut().for_each(|v| *v = (*v).max(0)),
            (DatumType::I64, Self::Relu) => view.as_slice_mut::<i64>()?.iter_mut().for_each(|v| *v = (*v).max(0)),
            (other, _) => bail!("{} on {other:?} values", self.name()),
        }
        Ok(tvec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kernel: &dyn Kernel, rows: &[[f32; 2]]) -> Vec<f32> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let input = make(&[rows.len(), 2], flat).expect("input");
        let out = kernel.eval(&input).expect("eval");
        out[0]
            .cast_to::<f32>()
            .expect("f32")
            .try_as_plain_ram()
            .expect("ram")
            .as_slice::<f32>()
            .expect("slice")
            .to_vec()
    }

    #[test]
    fn elementwise_operators_follow_onnxruntime() {
        let nan = f32::NAN;
        let scaler = Scaler { offset: vec![1.0, 2.0], scale: vec![2.0] };
        assert_eq!(run(&scaler, &[[1.0, 4.0], [3.0, 2.0]]), vec![0.0, 4.0, 4.0, 0.0]);
        let imputer = Imputer { floats: vec![7.0, 8.0], ints: vec![], replaced_float: nan, replaced_int: 0 };
        assert_eq!(run(&imputer, &[[nan, 1.0], [2.0, nan]]), vec![7.0, 1.0, 2.0, 8.0]);
        let zero_marker = Imputer { floats: vec![5.0], ints: vec![], replaced_float: 0.0, replaced_int: 0 };
        let out = run(&zero_marker, &[[0.0, nan]]);
        assert_eq!(out[0], 5.0);
        assert!(out[1].is_nan(), "NaN is not the marker here, so it stays");
        let relu = run(&Activation::Relu, &[[-1.0, 2.0], [nan, 0.0]]);
        assert_eq!((relu[0], relu[1], relu[3]), (0.0, 2.0, 0.0));
        assert!(relu[2].is_nan(), "a missing value stays missing");
        for activation in [Activation::Sigmoid, Activation::Tanh] {
            assert!(run(&activation, &[[nan, 0.0]])[0].is_nan(), "{activation:?} keeps NaN");
        }
        let binarizer = Binarizer { threshold: 0.5 };
        assert_eq!(run(&binarizer, &[[0.5, 0.6], [nan, -1.0]]), vec![0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn widths_that_do_not_match_are_errors() {
        let scaler = Scaler { offset: vec![1.0, 2.0, 3.0], scale: vec![1.0] };
        let input = make(&[1, 2], vec![1.0f32, 2.0]).expect("input");
        let err = scaler.eval(&input).expect_err("3 offsets for 2 columns");
        assert!(err.to_string().contains("3 values for 2 input columns"), "{err}");
    }
}
