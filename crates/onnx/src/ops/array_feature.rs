//! `ArrayFeatureExtractor` with onnxruntime's output shape: the input's
//! shape with its last dimension replaced by the number of indices, however
//! the indices are shaped (`[N, k]` picks `[N, n]` for `n` indices, a scalar
//! index included; a one-dimensional input gives `[1, n]`). tract appends
//! the indices' own shape instead, so a scalar index drops a dimension and
//! skl2onnx's one-vs-rest SVC decision (a `Concat` over such picks on axis
//! 1) does not build.

use super::Built;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::array::Gather;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_hir::internal::*;

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
struct ArrayFeatureExtractor;

pub(super) fn array_feature_extractor(_: &ParsingContext, _: &NodeProto) -> Built {
    Ok((expand(ArrayFeatureExtractor), vec![]))
}

impl Expansion for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[1].datum_type, i64::datum_type())?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, input, indices| {
            let count: TDim = indices.iter().product();
            let mut shape: TVec<TDim> =
                if input.len() <= 1 { tvec![1.to_dim()] } else { input[..input.len() - 1].into() };
            shape.push(count);
            s.equals(&outputs[0].shape, shape)
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let mut data = inputs[0];
        if model.outlet_fact(data)?.rank() == 0 {
            bail!("ArrayFeatureExtractor needs an input of one dimension or more");
        }
        if model.outlet_fact(data)?.rank() == 1 {
            data = model.wire_node(format!("{prefix}.row"), AxisOp::Add(0), &[data])?[0];
        }
        let mut indices = inputs[1];
        let shape = model.outlet_fact(indices)?.shape.to_tvec();
        if shape.len() != 1 {
            let count: TDim = shape.iter().product();
            indices =
                model.wire_node(format!("{prefix}.flat"), AxisOp::Reshape(0, shape, tvec![count]), &[indices])?[0];
        }
        let axis = model.outlet_fact(data)?.rank() - 1;
        model.wire_node(prefix, Gather { axis, output_type: None }, &[data, indices])
    }
}
