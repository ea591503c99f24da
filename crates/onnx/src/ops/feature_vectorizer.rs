//! `FeatureVectorizer` (ai.onnx.ml): several inputs side by side in one
//! float row, as onnxmltools writes for Spark's `VectorAssembler` and Core
//! ML pipelines. Semantics of onnxruntime's kernel: input `i` fills
//! `inputdimensions[i]` columns per row, truncated when it has more values
//! per row and zero-padded when it has fewer; integers and doubles are cast
//! to float; the row count is the first input's (a one-dimensional input is
//! one row), and every input must have as many rows.

use super::{Attrs, Built, make};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

/// More columns than any model's feature row has.
const MOST_COLUMNS: usize = 1 << 24;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct FeatureVectorizer {
    /// Columns each input fills.
    dims: Vec<usize>,
}

impl FeatureVectorizer {
    fn total(&self) -> usize {
        self.dims.iter().sum()
    }
}

pub(super) fn feature_vectorizer(_: &ParsingContext, node: &NodeProto) -> Built {
    let given = Attrs::of(node).ints("inputdimensions");
    ensure!(!given.is_empty(), "FeatureVectorizer without inputdimensions");
    ensure!(
        given.len() == node.input.len(),
        "FeatureVectorizer has {} inputs and {} inputdimensions",
        node.input.len(),
        given.len()
    );
    let dims: Vec<usize> = given
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d <= MOST_COLUMNS))
        .collect::<Option<_>>()
        .with_context(|| format!("FeatureVectorizer inputdimensions {given:?}"))?;
    ensure!(dims.iter().sum::<usize>() <= MOST_COLUMNS, "FeatureVectorizer of more than {MOST_COLUMNS} columns");
    Ok((expand(FeatureVectorizer { dims }), vec![]))
}

impl Expansion for FeatureVectorizer {
    fn name(&self) -> StaticName {
        "FeatureVectorizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, self.dims.len())?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[1], self.total().to_dim())?;
        s.given(&inputs[0].rank, move |s, rank| {
            if rank <= 1 {
                s.equals(&outputs[0].shape[0], 1.to_dim())
            } else {
                s.equals(&outputs[0].shape[0], &inputs[0].shape[0])
            }
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for FeatureVectorizer {
    fn name(&self) -> StaticName {
        "FeatureVectorizer".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FeatureVectorizer {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let inputs: Vec<&Tensor> = inputs.iter().map(|v| &**v).collect();
        Ok(tvec![self.vectorize(&inputs)?.into_tvalue()])
    }
}

impl FeatureVectorizer {
    fn vectorize(&self, inputs: &[&Tensor]) -> TractResult<Tensor> {
        ensure!(
            inputs.len() == self.dims.len(),
            "FeatureVectorizer: {} inputs for {} dimensions",
            inputs.len(),
            self.dims.len()
        );
        let (rows, _) = rows_and_width(inputs[0]);
        let total = self.total();
        let mut out = vec![0f32; rows * total];
        let mut offset = 0;
        for (i, (input, &dim)) in inputs.iter().zip(&self.dims).enumerate() {
            let (n, width) = rows_and_width(input);
            ensure!(n == rows, "FeatureVectorizer input {i} has {n} rows where the first has {rows}");
            let values = as_f32(input)?;
            let take = width.min(dim);
            for r in 0..rows {
                out[r * total + offset..r * total + offset + take]
                    .copy_from_slice(&values[r * width..r * width + take]);
            }
            offset += dim;
        }
        make(&[rows, total], out)
    }
}

impl TypedOp for FeatureVectorizer {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let first = inputs.first().context("FeatureVectorizer without inputs")?;
        let rows = if first.rank() <= 1 { 1.to_dim() } else { first.shape[0].clone() };
        Ok(tvec![f32::datum_type().fact([rows, self.total().to_dim()])])
    }

    as_op!();
}

/// Rows and values per row, as onnxruntime counts them: a one-dimensional
/// (or scalar) input is one row.
fn rows_and_width(input: &Tensor) -> (usize, usize) {
    match input.shape() {
        [] => (1, 1),
        [n] => (1, *n),
        [n, rest @ ..] => (*n, rest.iter().product()),
    }
}

/// The values cast to float as C++'s `static_cast<float>`.
fn as_f32(input: &Tensor) -> TractResult<Vec<f32>> {
    let ram = input.try_as_plain_ram()?;
    Ok(match input.datum_type() {
        DatumType::F32 => ram.as_slice::<f32>()?.to_vec(),
        DatumType::F64 => ram.as_slice::<f64>()?.iter().map(|&v| v as f32).collect(),
        DatumType::I64 => ram.as_slice::<i64>()?.iter().map(|&v| v as f32).collect(),
        DatumType::I32 => ram.as_slice::<i32>()?.iter().map(|&v| v as f32).collect(),
        // tract's own form of some integers (a `Cast` to int64 may give it).
        DatumType::TDim => {
            let ints = input.cast_to::<i64>()?;
            ints.try_as_plain_ram()?.as_slice::<i64>()?.iter().map(|&v| v as f32).collect()
        }
        other => bail!("FeatureVectorizer takes int32, int64, float or double, not {other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dims: &[usize], inputs: Vec<Tensor>) -> TractResult<(Vec<usize>, Vec<f32>)> {
        let op = FeatureVectorizer { dims: dims.to_vec() };
        let y = op.vectorize(&inputs.iter().collect::<Vec<_>>())?;
        Ok((y.shape().to_vec(), y.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
    }

    #[test]
    fn inputs_are_truncated_padded_and_cast_into_one_row() {
        let nan = f32::NAN;
        let a = make(&[2, 3], vec![1.0f32, 2.0, 3.0, 4.0, nan, 6.0]).expect("a");
        let b = make(&[2, 1], vec![7i64, -8]).expect("b");
        let c = make(&[2, 2], vec![0.1f64, 0.2, 0.3, 0.4]).expect("c");
        let (shape, y) = run(&[2, 3, 1], vec![a, b, c]).expect("runs");
        assert_eq!(shape, [2, 6]);
        let expected = [1.0, 2.0, 7.0, 0.0, 0.0, 0.1f64 as f32, 4.0, nan, -8.0, 0.0, 0.0, 0.3f64 as f32];
        assert_eq!(format!("{y:?}"), format!("{expected:?}"), "NaN is copied as any value");
    }

    #[test]
    fn a_one_dimensional_input_is_one_row_and_rows_must_agree() {
        let (shape, y) = run(&[4], vec![make(&[3], vec![1.0f32, 2.0, 3.0]).expect("x")]).expect("runs");
        assert_eq!((shape, y), (vec![1, 4], vec![1.0, 2.0, 3.0, 0.0]));
        let a = make(&[2, 1], vec![1.0f32, 2.0]).expect("a");
        let b = make(&[3, 1], vec![1.0f32, 2.0, 3.0]).expect("b");
        let err = run(&[1, 1], vec![a, b]).expect_err("3 rows against 2");
        assert!(err.to_string().contains("input 1 has 3 rows"), "{err}");
        let text = make(&[1, 1], vec!["a".to_string()]).expect("text");
        assert!(run(&[1], vec![text]).is_err(), "text is refused, not read");
    }
}
