//! `LinearClassifier` as onnxruntime computes it: scores `x·wᵀ + b` in
//! float, the label of the highest score (or, with one score column, the
//! second label when the score is above 0), and one score column widened
//! to two as `[1 - s, s]`. tract's version cannot build with text labels.

use super::tree::{Post, transform};
use super::{Attrs, Built, Kernel, Labels, OutShape, OutSpec, make, native, rows_f64};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

#[derive(Debug)]
struct LinearClassifier {
    /// `classes × features`, row-major.
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    features: usize,
    labels: Labels,
    post: Post,
}

pub(super) fn linear_classifier(_: &ParsingContext, node: &NodeProto) -> Built {
    let a = Attrs::of(node);
    let coefficients = a.floats("coefficients").to_vec();
    let intercepts = a.floats("intercepts").to_vec();
    let classes = intercepts.len();
    ensure!(classes > 0, "LinearClassifier needs intercepts (one per score column)");
    ensure!(
        !coefficients.is_empty() && coefficients.len().is_multiple_of(classes),
        "LinearClassifier has {} coefficients for {classes} score columns",
        coefficients.len()
    );
    let labels = Labels::read(&a, "classlabels_ints")?;
    let n_labels = labels.len();
    ensure!(classes == 1 || n_labels >= classes, "LinearClassifier has {n_labels} labels for {classes} score columns");
    let features = coefficients.len() / classes;
    native(LinearClassifier {
        coefficients,
        intercepts,
        features,
        labels,
        post: Post::parse(&a.string("post_transform", "NONE")?)?,
    })
}

impl LinearClassifier {
    fn classes(&self) -> usize {
        self.intercepts.len()
    }

    /// One score column and two labels: onnxruntime writes `[1 - s, s]`.
    fn second_class(&self) -> bool {
        self.classes() == 1 && self.labels.len() == 2
    }
}

impl Kernel for LinearClassifier {
    fn name(&self) -> &'static str {
        "LinearClassifier"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        let columns = if self.second_class() { 2 } else { self.classes() };
        vec![
            OutSpec { datum: Some(self.labels.datum()), shape: OutShape::Rows(vec![]) },
            OutSpec { datum: Some(f32::datum_type()), shape: OutShape::Rows(vec![columns]) },
        ]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (rows, width, x) = rows_f64(input)?;
        ensure!(width == self.features, "the model takes {} features, the input has {width}", self.features);
        let classes = self.classes();
        let columns = if self.second_class() { 2 } else { classes };
        let mut scores = Vec::with_capacity(rows * columns);
        let mut picks = Vec::with_capacity(rows);
        for r in 0..rows {
            let row: Vec<f32> = x[r * width..(r + 1) * width].iter().map(|&v| v as f32).collect();
            let mut s: Vec<f32> = (0..classes)
                .map(|c| {
                    let w = &self.coefficients[c * width..(c + 1) * width];
                    row.iter().zip(w).fold(0.0f32, |acc, (a, b)| acc + a * b) + self.intercepts[c]
                })
                .collect();
            if classes == 1 {
                picks.push(if s[0] > 0.0 { 1 } else { 0 });
                if self.second_class() {
                    scores.extend(if self.post == Post::Probit {
                        [transform_one(s[0], self.post), 0.0]
                    } else {
                        [1.0 - s[0], s[0]]
                    });
                } else {
                    scores.push(if self.post == Post::Probit { transform_one(s[0], self.post) } else { s[0] });
                }
                continue;
            }
            let mut best = 0;
            for c in 1..classes {
                if s[c] > s[best] {
                    best = c;
                }
            }
            picks.push(best);
            transform(&mut s, self.post);
            scores.extend(s);
        }
        let labels =
            match &self.labels {
                Labels::Ints(v) => make(
                    &[rows],
                    picks
                        .iter()
                        .map(|&p| {
                            if classes == 1 && v.len() != 2 { p as i64 } else { v.get(p).copied().unwrap_or(p as i64) }
                        })
                        .collect(),
                )?,
                Labels::Strings(v) => make(
                    &[rows],
                    picks
                        .iter()
                        .map(|&p| {
                            if classes == 1 && v.len() != 2 {
                                p.to_string()
                            } else {
                                v.get(p).cloned().unwrap_or_else(|| p.to_string())
                            }
                        })
                        .collect(),
                )?,
            };
        Ok(tvec![labels, make(&[rows, columns], scores)?])
    }
}

fn transform_one(v: f32, post: Post) -> f32 {
    let mut one = [v];
    transform(&mut one, post);
    one[0]
}
