//! A dense layer, `act(x·W + b)` over the last axis, with `W` and `b`
//! constants: what `Gemm`, `MatMul` + `Add` and an activation after them
//! become once [`crate::rewrite::fuse_dense_layers`] has found them.
//!
//! tract picks its matrix tiles for large operands; for the narrow layers
//! of plant models (52 → 24 → 8 …) its choice pads most of each tile and
//! leaves the bias and the activation as passes of their own over the
//! batch. Here the product is one call to `matrixmultiply`'s sgemm (the
//! crate ndarray multiplies with; runtime-detected AVX2/FMA kernels of
//! 8 × 8) into an output that already holds the bias, and the activation
//! is applied while the row is in cache. Sums run in another order than
//! onnxruntime's, a few ulps apart, as any two BLAS are.

use super::elementwise::Activation;
use super::{Attrs, Built, Kernel, OutShape, OutSpec, last_axis, native};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_ndarray::{ArrayView2, ArrayViewMut2, linalg::general_mat_mul};

/// The operator the rewrite emits (in its own domain, so that no model's
/// own operator is mistaken for it).
pub(crate) const OP_TYPE: &str = "UsanDense";
pub(crate) const DOMAIN: &str = "ai.usan";

#[derive(Debug)]
struct Dense {
    /// `inputs × outputs`, row-major.
    weights: Vec<f32>,
    inputs: usize,
    outputs: usize,
    /// One per output; none: zeros.
    bias: Option<Vec<f32>>,
    /// The output has at least this many dimensions (a `[1, M]` bias on a
    /// one-dimensional input makes `[1, M]`, as broadcasting does).
    min_rank: usize,
    /// A layer normalisation of each row after the bias (scale, bias, epsilon).
    norm: Option<(Vec<f32>, Vec<f32>, f32)>,
    activation: Option<Activation>,
}

/// Builds the rewrite's node (attributes `weights`, `shape` = `[K, M]`,
/// optional `bias`, `min_rank` and `activation`).
pub(super) fn dense(_: &ParsingContext, node: &NodeProto) -> Built {
    let a = Attrs::of(node);
    let &[inputs, outputs] = a.ints("shape") else { bail!("{OP_TYPE} needs a shape [inputs, outputs]") };
    let (inputs, outputs) = (usize::try_from(inputs)?, usize::try_from(outputs)?);
    let weights = a.floats("weights").to_vec();
    ensure!(
        inputs > 0 && outputs > 0 && weights.len() == inputs * outputs,
        "{OP_TYPE} has {} weights for shape [{inputs}, {outputs}]",
        weights.len()
    );
    let bias = a.has("bias").then(|| a.floats("bias").to_vec());
    if let Some(bias) = &bias {
        ensure!(bias.len() == outputs, "{OP_TYPE} has {} biases for {outputs} outputs", bias.len());
    }
    let activation = Activation::attribute(&a, OP_TYPE)?;
    let min_rank = usize::try_from(a.int("min_rank", 1))?;
    let norm = match (a.has("norm_scale"), a.has("norm_bias")) {
        (false, false) => None,
        (true, true) => {
            let (scale, shift) = (a.floats("norm_scale").to_vec(), a.floats("norm_bias").to_vec());
            ensure!(
                scale.len() == outputs && shift.len() == outputs,
                "{OP_TYPE}'s normalisation needs {outputs} values"
            );
            Some((scale, shift, a.float("norm_epsilon", 1e-5)))
        }
        _ => bail!("{OP_TYPE}'s normalisation needs both norm_scale and norm_bias"),
    };
    native(Dense { weights, inputs, outputs, bias, min_rank, norm, activation })
}

impl Kernel for Dense {
    fn name(&self) -> &'static str {
        OP_TYPE
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![OutSpec {
            datum: Some(f32::datum_type()),
            shape: OutShape::LastAxis { size: self.outputs, min_rank: self.min_rank },
        }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        ensure!(input.datum_type() == f32::datum_type(), "{OP_TYPE} takes float, not {:?}", input.datum_type());
        let shape = input.shape();
        let width = shape.last().copied().unwrap_or(1);
        ensure!(width == self.inputs, "the layer takes {} values per row, the input has {width}", self.inputs);
        let rows = input.len() / self.inputs;
        let x = input.try_as_plain_ram()?;
        let x = ArrayView2::from_shape((rows, self.inputs), x.as_slice::<f32>()?)?;
        let w = ArrayView2::from_shape((self.inputs, self.outputs), &self.weights)?;
        let dims = last_axis(shape, self.outputs, self.min_rank);
        // Written in place: tract's tensors are aligned buffers of their own,
        // and one made from a `Vec` would be a copy.
        let mut tensor = Tensor::zero::<f32>(&dims)?;
        let mut ram = tensor.try_as_plain_ram_mut()?;
        let out = ram.as_slice_mut::<f32>()?;
        if let Some(bias) = &self.bias {
            out.chunks_exact_mut(self.outputs).for_each(|row| row.copy_from_slice(bias));
        }
        general_mat_mul(1.0, &x, &w, 1.0, &mut ArrayViewMut2::from_shape((rows, self.outputs), &mut *out)?);
        if let Some((scale, shift, epsilon)) = &self.norm {
            // In f32, as onnxruntime computes it (`stash_type` 1).
            let m = self.outputs as f32;
            for row in out.chunks_exact_mut(self.outputs) {
                let mean = row.iter().sum::<f32>() / m;
                let variance = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / m;
                let inverse = 1.0 / (variance + epsilon).sqrt();
                for ((v, s), b) in row.iter_mut().zip(scale).zip(shift) {
                    *v = (*v - mean) * inverse * s + b;
                }
            }
        }
        if let Some(activation) = self.activation {
            out.iter_mut().for_each(|v| *v = activation.f32(*v));
        }
        Ok(tvec![tensor])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::make;

    fn layer(weights: &[f32], shape: [usize; 2], bias: Option<&[f32]>, activation: Option<Activation>) -> Dense {
        Dense {
            weights: weights.to_vec(),
            inputs: shape[0],
            outputs: shape[1],
            bias: bias.map(<[f32]>::to_vec),
            min_rank: 1,
            norm: None,
            activation,
        }
    }

    fn run(dense: &Dense, shape: &[usize], x: &[f32]) -> (Vec<usize>, Vec<f32>) {
        let out = dense.eval(&make(shape, x.to_vec()).unwrap()).unwrap().remove(0);
        (out.shape().to_vec(), out.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec())
    }

    #[test]
    fn each_row_is_multiplied_by_the_weights_then_biased_then_activated() {
        // W = [[1, 2], [3, 4], [5, 6]] (3 inputs, 2 outputs), b = [0.5, -100].
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let x = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, f32::NAN, 0.0, 0.0];
        type Case<'a> = (Option<&'a [f32]>, Option<Activation>, [f32; 4]);
        let cases: [Case; 3] = [
            (None, None, [1.0, 2.0, 9.0, 12.0]),
            (Some(&[0.5, -100.0]), None, [1.5, -98.0, 9.5, -88.0]),
            (Some(&[0.5, -100.0]), Some(Activation::Relu), [1.5, 0.0, 9.5, 0.0]),
        ];
        for (bias, activation, want) in cases {
            let (shape, got) = run(&layer(&w, [3, 2], bias, activation), &[3, 3], &x);
            assert_eq!(shape, [3, 2]);
            assert_eq!(&got[..4], want, "bias {bias:?}, activation {activation:?}");
            assert!(got[4].is_nan() && got[5].is_nan(), "a missing value makes its row's outputs missing: {got:?}");
        }
    }

    #[test]
    fn leading_axes_are_kept_and_the_minimum_rank_is_padded() {
        let mut dense = layer(&[2.0], [1, 1], Some(&[1.0]), Some(Activation::Tanh));
        let (shape, got) = run(&dense, &[2, 3, 1], &[0.0; 6]);
        assert_eq!((shape, got), (vec![2, 3, 1], vec![Activation::Tanh.f32(1.0); 6]));
        dense.min_rank = 2;
        assert_eq!(run(&dense, &[1], &[0.5]).0, [1, 1]);
    }

    #[test]
    fn a_layer_normalisation_centres_and_scales_each_row_before_the_activation() {
        let mut dense = layer(&[1.0, 0.0, 0.0, 1.0], [2, 2], Some(&[0.0, 2.0]), Some(Activation::Relu));
        dense.norm = Some((vec![2.0, 1.0], vec![0.5, -0.25], 1e-5));
        // Rows [1, 3] and [5, 5] after the bias: means 2 and 5, deviations 1 and 0.
        let (_, got) = run(&dense, &[2, 2], &[1.0, 1.0, 5.0, 3.0]);
        let scaled = 1.0 / (1.0f32 + 1e-5).sqrt();
        let want = [0.0, scaled - 0.25, 0.5, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() < 1e-6,
                "[-1, 1]·[2, 1] + [0.5, -0.25] and a flat row's [0.5, -0.25], then Relu: {got:?}"
            );
        }
    }

    #[test]
    fn a_row_of_the_wrong_width_is_an_error() {
        let dense = layer(&[1.0, 2.0], [2, 1], None, None);
        let err = dense.eval(&make(&[1, 3], vec![0f32; 3]).unwrap()).unwrap_err();
        assert!(format!("{err}").contains("takes 2 values per row, the input has 3"), "{err}");
    }
}
