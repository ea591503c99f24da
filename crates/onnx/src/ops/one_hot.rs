//! `OneHotEncoder` (ai.onnx.ml) as onnxruntime computes it: each value of
//! the input becomes `k` floats, 1 at its category's position in
//! `cats_int64s` (or `cats_strings`) and 0 elsewhere; a value in no
//! category gives zeros when `zeros = 1` (scikit-learn's
//! `handle_unknown = "ignore"`) and is an error otherwise. Numbers are
//! truncated to integers first, as C++'s cast does; a missing value, or one
//! beyond the integers, becomes the smallest integer (what x86 gives
//! onnxruntime), which no category holds in practice. skl2onnx writes one
//! per categorical column of a `ColumnTransformer`.

use super::{Attrs, Built, Kernel, OutShape, OutSpec, make, native};
use std::collections::HashMap;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

#[derive(Debug)]
struct OneHotEncoder {
    ints: HashMap<i64, usize>,
    strings: HashMap<String, usize>,
    categories: usize,
    zeros: bool,
}

pub(super) fn one_hot_encoder(_: &ParsingContext, node: &NodeProto) -> Built {
    let a = Attrs::of(node);
    let ints = a.ints("cats_int64s");
    let strings = a.strings("cats_strings")?;
    ensure!(ints.is_empty() != strings.is_empty(), "OneHotEncoder needs cats_int64s or cats_strings (one of them)");
    native(OneHotEncoder {
        categories: ints.len().max(strings.len()),
        // The first position of a repeated category, as a search finds it.
        ints: ints.iter().enumerate().rev().map(|(i, &c)| (c, i)).collect(),
        strings: strings.into_iter().enumerate().rev().map(|(i, c)| (c, i)).collect(),
        zeros: a.int("zeros", 1) != 0,
    })
}

/// C++'s `static_cast<int64_t>` of a double on x86: truncation, and the
/// smallest integer for NaN and for values out of range.
fn as_int(v: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2⁶³
    if v.is_nan() || !(-LIMIT..LIMIT).contains(&v) { i64::MIN } else { v as i64 }
}

impl Kernel for OneHotEncoder {
    fn name(&self) -> &'static str {
        "OneHotEncoder"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![OutSpec { datum: Some(f32::datum_type()), shape: OutShape::InputThen(self.categories) }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let positions: Vec<Option<usize>> = if input.datum_type() == String::datum_type() {
            ensure!(!self.strings.is_empty(), "OneHotEncoder has integer categories but a text input");
            let values = input.try_as_plain_ram()?.as_slice::<String>()?;
            values.iter().map(|v| self.strings.get(v).copied()).collect()
        } else {
            ensure!(!self.ints.is_empty(), "OneHotEncoder has text categories but a numeric input");
            let values = input.cast_to::<f64>()?;
            let values = values.try_as_plain_ram()?.as_slice::<f64>()?;
            values.iter().map(|&v| self.ints.get(&as_int(v)).copied()).collect()
        };
        let k = self.categories;
        let mut y = vec![0.0f32; positions.len() * k];
        for (i, position) in positions.iter().enumerate() {
            match position {
                Some(j) => y[i * k + j] = 1.0,
                None => ensure!(self.zeros, "a value in no category of OneHotEncoder, whose zeros = 0"),
            }
        }
        let mut shape = input.shape().to_vec();
        shape.push(k);
        Ok(tvec![make(&shape, y)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoder(ints: &[i64], zeros: bool) -> OneHotEncoder {
        OneHotEncoder {
            ints: ints.iter().enumerate().rev().map(|(i, &c)| (c, i)).collect(),
            strings: HashMap::new(),
            categories: ints.len(),
            zeros,
        }
    }

    fn run(e: &OneHotEncoder, x: &[f64]) -> TractResult<Vec<f32>> {
        let y = e.eval(&make(&[x.len(), 1], x.to_vec())?)?;
        assert_eq!(y[0].shape(), &[x.len(), 1, e.categories]);
        Ok(y[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    }

    #[test]
    fn each_value_lights_its_category_and_an_unknown_one_none() {
        let e = encoder(&[40, 50, 70], true);
        let cases: [(f64, [f32; 3]); 6] = [
            (40.0, [1.0, 0.0, 0.0]),
            (70.9, [0.0, 0.0, 1.0]),
            (50.0, [0.0, 1.0, 0.0]),
            (60.0, [0.0, 0.0, 0.0]),
            (f64::NAN, [0.0, 0.0, 0.0]),
            (1e300, [0.0, 0.0, 0.0]),
        ];
        for (x, expected) in cases {
            assert_eq!(run(&e, &[x]).unwrap(), expected, "{x}");
        }
    }

    #[test]
    fn an_unknown_value_is_an_error_without_zeros() {
        let e = encoder(&[0, 1], false);
        assert_eq!(run(&e, &[1.0]).unwrap(), vec![0.0, 1.0]);
        assert!(run(&e, &[2.0]).is_err());
    }

    #[test]
    fn nan_and_out_of_range_become_the_smallest_integer() {
        assert_eq!(as_int(f64::NAN), i64::MIN);
        assert_eq!(as_int(1e19), i64::MIN);
        assert_eq!(as_int(-1e19), i64::MIN);
        assert_eq!(as_int(-2.7), -2);
    }
}
