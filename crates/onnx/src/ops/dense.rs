//! A dense layer, `act(x·W + b)` over the last axis, with `W` and `b`
//! constants: what `Gemm`, `MatMul` + `Add` and an activation after them
//! become once [`crate::rewrite::fuse_dense_layers`] has found them.
//!
//! tract picks its matrix tiles for large operands; for the narrow layers
//! of plant models (52 → 24 → 8 …) its choice pads most of each tile and
//! leaves the bias and the activation as passes of their own over the
//! batch. Here the weights are laid out once, at load, for
//! [`usan_core::dense::PackedLayer`], whose product starts from the bias,
//! and the normalisation and the activation run on each block of rows
//! while it is in cache. Sums run in another order than onnxruntime's, a
//! few ulps apart, as any two BLAS are.

use super::elementwise::Activation;
use super::{Attrs, Built, Kernel, OutShape, OutSpec, last_axis, native};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use usan_core::dense::PackedLayer;

/// The operator the rewrite emits (in its own domain, so that no model's
/// own operator is mistaken for it).
pub(crate) const OP_TYPE: &str = "UsanDense";
pub(crate) const DOMAIN: &str = "ai.usan";

#[derive(Debug)]
struct Dense {
    /// The weights (`inputs × outputs`) and the bias (none: zeros).
    layer: PackedLayer,
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
    let bias = a.has("bias").then(|| a.floats("bias"));
    let layer =
        PackedLayer::new(a.floats("weights"), inputs, outputs, bias).map_err(|e| format_err!("{OP_TYPE}: {e}"))?;
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
    native(Dense { layer, min_rank, norm, activation })
}

impl Kernel for Dense {
    fn name(&self) -> &'static str {
        OP_TYPE
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![OutSpec {
            datum: Some(f32::datum_type()),
            shape: OutShape::LastAxis { size: self.layer.outputs(), min_rank: self.min_rank },
        }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        ensure!(input.datum_type() == f32::datum_type(), "{OP_TYPE} takes float, not {:?}", input.datum_type());
        let (inputs, outputs) = (self.layer.inputs(), self.layer.outputs());
        let shape = input.shape();
        let width = shape.last().copied().unwrap_or(1);
        ensure!(width == inputs, "the layer takes {inputs} values per row, the input has {width}");
        let x = input.try_as_plain_ram()?;
        let dims = last_axis(shape, outputs, self.min_rank);
        // Written in place: tract's tensors are aligned buffers of their own,
        // and one made from a `Vec` would be a copy.
        let mut tensor = Tensor::zero::<f32>(&dims)?;
        let mut ram = tensor.try_as_plain_ram_mut()?;
        self.layer.apply(x.as_slice::<f32>()?, ram.as_slice_mut::<f32>()?, |block| {
            if let Some((scale, shift, epsilon)) = &self.norm {
                for row in block.chunks_exact_mut(outputs) {
                    normalise(row, scale, shift, *epsilon);
                }
            }
            if let Some(activation) = self.activation {
                activation.slice(block);
            }
        });
        Ok(tvec![tensor])
    }
}

/// A layer normalisation of one row, in f32 as onnxruntime computes it
/// (`stash_type` 1).
fn normalise(row: &mut [f32], scale: &[f32], shift: &[f32], epsilon: f32) {
    let m = row.len() as f32;
    let mean = lane_sum(row, |v| v) / m;
    let variance = lane_sum(row, |v| (v - mean) * (v - mean)) / m;
    let inverse = 1.0 / (variance + epsilon).sqrt();
    for ((v, s), b) in row.iter_mut().zip(scale).zip(shift) {
        *v = (*v - mean) * inverse * s + b;
    }
}

/// The sum of `f` of every value, in eight running sums (a chain of
/// dependent additions, one per value, would be most of the layer's time).
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(lanes.len());
    let rest: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (sum, &v) in lanes.iter_mut().zip(chunk) {
            *sum += f(v);
        }
    }
    lanes.iter().sum::<f32>() + rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::make;

    fn layer(weights: &[f32], shape: [usize; 2], bias: Option<&[f32]>, activation: Option<Activation>) -> Dense {
        Dense {
            layer: PackedLayer::new(weights, shape[0], shape[1], bias).unwrap(),
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
