//! `SVMRegressor` as onnxruntime computes it (scikit-learn's SVR, NuSVR
//! and OneClassSVM through skl2onnx, LinearSVR): in float,
//! `y = Σⱼ coefⱼ · K(x, svⱼ) + rho₀` over the support vectors, or
//! `y = x · coef + rho₀` without them; with `one_class`, `y` becomes 1 when
//! positive and −1 otherwise. The kernels: `LINEAR` `x·sv`, `POLY`
//! `(γ x·sv + c₀)^d`, `RBF` `exp(−γ |x − sv|²)`, `SIGMOID` `tanh(γ x·sv + c₀)`
//! (`kernel_params` = `[γ, c₀, d]`). onnxruntime reads `post_transform` and
//! does not apply it; neither does usan. A missing value makes `y` NaN (a
//! one-class output then −1, as NaN is not positive).
//!
//! `SVMClassifier` as onnxruntime computes it (scikit-learn's SVC and NuSVC
//! through skl2onnx): with support vectors, libsvm's one-vs-one pairs, each
//! pair's score `Σ coef · K + rho` (products in float, summed in double)
//! voting for a class, the label the first class with the most votes; with
//! `prob_a`/`prob_b`, libsvm's pairwise coupling of each pair's sigmoid
//! into class probabilities (a row with a gap gets uniform ones, as the
//! coupling's stopping test fails on NaN); without them the pair scores,
//! two columns `[-s, s]` for a binary model. Without support vectors
//! (liblinear), `x · coefᶜ + rho₀` per class.

use super::tree::{Post, logistic, probit, transform};
use super::{Attrs, Built, Kernel, Labels, OutShape, OutSpec, make, native, rows_f64};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum SvmKernel {
    Linear,
    Poly { gamma: f32, coef0: f32, degree: f32 },
    Rbf { gamma: f32 },
    Sigmoid { gamma: f32, coef0: f32 },
}

#[derive(Debug)]
struct SvmRegressor {
    kernel: SvmKernel,
    /// `n × features`, row-major; empty: the linear form.
    support_vectors: Vec<f32>,
    coefficients: Vec<f32>,
    rho: f32,
    features: usize,
    one_class: bool,
}

pub(super) fn regressor(_: &ParsingContext, node: &NodeProto) -> Built {
    let a = Attrs::of(node);
    let coefficients = a.floats("coefficients").to_vec();
    ensure!(!coefficients.is_empty(), "SVMRegressor has no coefficients");
    let rho = *a.floats("rho").first().context("SVMRegressor has no rho")?;
    let n = usize::try_from(a.int("n_supports", 0)).map_err(|_| format_err!("n_supports is negative"))?;
    let support_vectors = a.floats("support_vectors").to_vec();
    let (kernel, features) = if n > 0 {
        ensure!(
            support_vectors.len().is_multiple_of(n) && !support_vectors.is_empty(),
            "SVMRegressor has {} support vector values for {n} vectors",
            support_vectors.len()
        );
        ensure!(coefficients.len() == n, "SVMRegressor has {} coefficients for {n} vectors", coefficients.len());
        (SvmKernel::read(&a)?, support_vectors.len() / n)
    } else {
        (SvmKernel::Linear, coefficients.len())
    };
    native(SvmRegressor {
        kernel,
        support_vectors: if n > 0 { support_vectors } else { Vec::new() },
        coefficients,
        rho,
        features,
        one_class: a.int("one_class", 0) != 0,
    })
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl SvmKernel {
    /// The kernel's value of `x` and one support vector, in float.
    fn of(self, x: &[f32], sv: &[f32]) -> f32 {
        match self {
            Self::Linear => dot(x, sv),
            Self::Poly { gamma, coef0, degree } => {
                let base = gamma * dot(x, sv) + coef0;
                if degree == 2.0 {
                    base * base
                } else if degree == 3.0 {
                    base * base * base
                } else {
                    base.powf(degree)
                }
            }
            Self::Rbf { gamma } => {
                let d: f32 = x.iter().zip(sv).map(|(a, b)| (a - b) * (a - b)).sum();
                (-gamma * d).exp()
            }
            Self::Sigmoid { gamma, coef0 } => (gamma * dot(x, sv) + coef0).tanh(),
        }
    }

    /// `kernel_type` and `kernel_params` (`[γ, c₀, d]`).
    fn read(a: &Attrs) -> TractResult<Self> {
        let params = a.floats("kernel_params");
        let param = |i: usize| params.get(i).copied().unwrap_or(0.0);
        Ok(match a.string("kernel_type", "LINEAR")?.as_str() {
            "LINEAR" => Self::Linear,
            "POLY" => Self::Poly { gamma: param(0), coef0: param(1), degree: param(2) },
            "RBF" => Self::Rbf { gamma: param(0) },
            "SIGMOID" => Self::Sigmoid { gamma: param(0), coef0: param(1) },
            other => bail!("unknown SVM kernel_type {other}"),
        })
    }
}

impl SvmRegressor {
    fn row(&self, x: &[f32]) -> f32 {
        let y = if self.support_vectors.is_empty() {
            dot(x, &self.coefficients) + self.rho
        } else {
            let mut y = 0.0f32;
            for (sv, coef) in self.support_vectors.chunks_exact(self.features).zip(&self.coefficients) {
                y += coef * self.kernel.of(x, sv);
            }
            y + self.rho
        };
        if self.one_class { if y > 0.0 { 1.0 } else { -1.0 } } else { y }
    }
}

impl Kernel for SvmRegressor {
    fn name(&self) -> &'static str {
        "SVMRegressor"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![OutSpec { datum: Some(f32::datum_type()), shape: OutShape::Rows(vec![1]) }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (rows, width, x) = rows_f64(input)?;
        ensure!(width == self.features, "SVMRegressor takes {} features, the input has {width}", self.features);
        let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let y: Vec<f32> = (0..rows).map(|r| self.row(&x[r * width..(r + 1) * width])).collect();
        Ok(tvec![make(&[rows, 1], y)?])
    }
}

/// `SVMClassifier`: the one-vs-one support vector form or the linear one.
#[derive(Debug)]
struct SvmClassifier {
    kernel: SvmKernel,
    /// `vectors × features`, row-major; empty: the linear form.
    support_vectors: Vec<f32>,
    /// Support vector form: `(classes - 1) × vectors`; linear: `classes × features`.
    coefficients: Vec<f32>,
    rho: Vec<f32>,
    /// Each class's first support vector and count.
    per_class: Vec<(usize, usize)>,
    prob_a: Vec<f32>,
    prob_b: Vec<f32>,
    features: usize,
    labels: Labels,
    post: Post,
    weights_are_all_positive: bool,
}

pub(super) fn classifier(_: &ParsingContext, node: &NodeProto) -> Built {
    let a = Attrs::of(node);
    let labels = Labels::read(&a, "classlabels_ints")?;
    let classes = labels.len();
    ensure!(classes > 0, "SVMClassifier needs classlabels_ints or classlabels_strings");
    let coefficients = a.floats("coefficients").to_vec();
    ensure!(!coefficients.is_empty(), "SVMClassifier has no coefficients");
    let rho = a.floats("rho").to_vec();
    ensure!(!rho.is_empty(), "SVMClassifier has no rho");
    let (prob_a, prob_b) = (a.floats("prob_a").to_vec(), a.floats("prob_b").to_vec());
    ensure!(prob_a.len() == prob_b.len(), "SVMClassifier has {} prob_a and {} prob_b", prob_a.len(), prob_b.len());
    let mut per_class = Vec::new();
    let mut vectors = 0usize;
    for &count in a.ints("vectors_per_class") {
        let count = usize::try_from(count).map_err(|_| format_err!("vectors_per_class is negative"))?;
        per_class.push((vectors, count));
        vectors = vectors.checked_add(count).context("vectors_per_class overflows")?;
    }
    let support_vectors = a.floats("support_vectors").to_vec();
    let (kernel, features, support_vectors) = if vectors > 0 {
        ensure!(
            per_class.len() == classes,
            "SVMClassifier has {} vector counts for {classes} classes",
            per_class.len()
        );
        ensure!(
            support_vectors.len().is_multiple_of(vectors) && !support_vectors.is_empty(),
            "SVMClassifier has {} support vector values for {vectors} vectors",
            support_vectors.len()
        );
        ensure!(classes >= 2, "SVMClassifier with support vectors needs two classes or more");
        let pairs = classes * (classes - 1) / 2;
        ensure!(
            coefficients.len() >= (classes - 1) * vectors,
            "SVMClassifier has {} coefficients for {} classes and {vectors} vectors",
            coefficients.len(),
            classes
        );
        ensure!(rho.len() >= pairs, "SVMClassifier has {} rho for {pairs} class pairs", rho.len());
        ensure!(
            prob_a.is_empty() || prob_a.len() >= pairs,
            "SVMClassifier has {} prob_a for {pairs} class pairs",
            prob_a.len()
        );
        (SvmKernel::read(&a)?, support_vectors.len() / vectors, support_vectors)
    } else {
        ensure!(
            coefficients.len().is_multiple_of(classes),
            "SVMClassifier has {} coefficients for {classes} classes",
            coefficients.len()
        );
        (SvmKernel::Linear, coefficients.len() / classes, Vec::new())
    };
    let weights_are_all_positive = coefficients.iter().all(|&c| c >= 0.0);
    native(SvmClassifier {
        kernel,
        support_vectors,
        coefficients,
        rho,
        per_class,
        prob_a,
        prob_b,
        features,
        labels,
        post: Post::parse(&a.string("post_transform", "NONE")?)?,
        weights_are_all_positive,
    })
}

/// C++'s `std::max_element`: the first of the largest, NaN never larger.
fn first_max<T: PartialOrd + Copy>(values: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate().skip(1) {
        if values[best] < v {
            best = i;
        }
    }
    best
}

/// libsvm's pairwise coupling (Wu, Lin and Weng), in float as onnxruntime
/// runs it: `r[i·k + j]` is P(i | i or j); the class probabilities.
fn multiclass_probability(k: usize, r: &[f32]) -> Vec<f32> {
    let mut q = vec![0.0f32; k * k];
    let mut qp = vec![0.0f32; k];
    let mut p = vec![1.0 / k as f32; k];
    let eps = 0.005 / k as f32;
    for i in 0..k {
        for j in 0..i {
            q[i * k + i] += r[j * k + i] * r[j * k + i];
            q[i * k + j] = q[j * k + i];
        }
        for j in i + 1..k {
            q[i * k + i] += r[j * k + i] * r[j * k + i];
            q[i * k + j] = -r[j * k + i] * r[i * k + j];
        }
    }
    for _ in 0..100 {
        let mut pqp = 0.0f32;
        for i in 0..k {
            qp[i] = (0..k).fold(0.0f32, |acc, j| acc + q[i * k + j] * p[j]);
            pqp += p[i] * qp[i];
        }
        let max_error = qp.iter().fold(0.0f32, |m, &v| if (v - pqp).abs() > m { (v - pqp).abs() } else { m });
        if max_error < eps {
            break;
        }
        for i in 0..k {
            let diff = (-qp[i] + pqp) / q[i * k + i];
            p[i] += diff;
            pqp = (pqp + diff * (diff * q[i * k + i] + 2.0 * qp[i])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[i * k + j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
    p
}

/// C++'s `std::min(std::max(v, lo), hi)`: NaN stays NaN.
fn clamp_like_cpp(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if hi < v { hi } else { v }
}

impl SvmClassifier {
    fn classes(&self) -> usize {
        self.labels.len()
    }

    fn pairs(&self) -> usize {
        self.classes() * self.classes().saturating_sub(1) / 2
    }

    fn probabilities(&self) -> bool {
        !self.support_vectors.is_empty() && !self.prob_a.is_empty()
    }

    /// Score columns per row.
    fn columns(&self) -> usize {
        if self.support_vectors.is_empty() || self.probabilities() {
            self.classes()
        } else if self.classes() > 2 {
            self.pairs()
        } else {
            2
        }
    }

    /// One row: the picked class's index and the row's score columns.
    fn row(&self, x: &[f32], kernels: &mut Vec<f32>, out: &mut Vec<f32>) -> usize {
        let classes = self.classes();
        let start = out.len();
        if self.support_vectors.is_empty() {
            for c in 0..classes {
                out.push(dot(x, &self.coefficients[c * self.features..(c + 1) * self.features]) + self.rho[0]);
            }
            let scores = &mut out[start..];
            let best = first_max(scores);
            let max_weight = scores[best];
            let pick = self.binary_pick(best, max_weight);
            if classes > 1 || self.post == Post::Probit {
                transform(scores, self.post);
            }
            return pick;
        }
        kernels.clear();
        kernels.extend(self.support_vectors.chunks_exact(self.features).map(|sv| self.kernel.of(x, sv)));
        let vectors = kernels.len();
        let mut votes = vec![0u32; classes];
        let mut pair_scores = Vec::with_capacity(self.pairs());
        for i in 0..classes - 1 {
            let (start_i, count_i) = self.per_class[i];
            for j in i + 1..classes {
                let (start_j, count_j) = self.per_class[j];
                let mut sum = 0.0f64;
                let row_j = &self.coefficients[vectors * (j - 1)..];
                for m in start_i..start_i + count_i {
                    sum += f64::from(row_j[m] * kernels[m]);
                }
                let row_i = &self.coefficients[vectors * i..];
                for m in start_j..start_j + count_j {
                    sum += f64::from(row_i[m] * kernels[m]);
                }
                sum += f64::from(self.rho[pair_scores.len()]);
                pair_scores.push(sum as f32);
                votes[if sum > 0.0 { i } else { j }] += 1;
            }
        }
        let best = first_max(&votes);
        if self.probabilities() {
            let mut r = vec![0.0f32; classes * classes];
            let mut index = 0;
            for i in 0..classes {
                for j in i + 1..classes {
                    let v = 1.0 - logistic(pair_scores[index] * self.prob_a[index] + self.prob_b[index]);
                    let v = clamp_like_cpp(v, 1.0e-7, 1.0 - 1.0e-7);
                    r[i * classes + j] = v;
                    r[j * classes + i] = 1.0 - v;
                    index += 1;
                }
            }
            let mut p = multiclass_probability(classes, &r);
            transform(&mut p, self.post);
            out.extend(p);
        } else if classes > 2 {
            transform(&mut pair_scores, self.post);
            out.extend(pair_scores);
        } else {
            let s = pair_scores[0];
            out.extend(match self.post {
                Post::Probit => [probit(s), 0.0],
                Post::None => [-s, s],
                _ => [1.0 - s, s],
            });
        }
        // The votes decide; onnxruntime's binary rule sees a weight of 0 then.
        self.binary_pick(best, 0.0)
    }

    /// onnxruntime's `ChooseClass` for two classes; the best otherwise.
    fn binary_pick(&self, best: usize, max_weight: f32) -> usize {
        if self.classes() != 2 || !self.prob_a.is_empty() {
            return best;
        }
        if (self.weights_are_all_positive && max_weight >= 0.5) || (max_weight > 0.0 && !self.weights_are_all_positive)
        {
            1
        } else {
            best
        }
    }
}

impl Kernel for SvmClassifier {
    fn name(&self) -> &'static str {
        "SVMClassifier"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![
            OutSpec { datum: Some(self.labels.datum()), shape: OutShape::Rows(vec![]) },
            OutSpec { datum: Some(f32::datum_type()), shape: OutShape::Rows(vec![self.columns()]) },
        ]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (rows, width, x) = rows_f64(input)?;
        ensure!(width == self.features, "SVMClassifier takes {} features, the input has {width}", self.features);
        let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut scores = Vec::with_capacity(rows * self.columns());
        let mut kernels = Vec::new();
        let picks: Vec<usize> =
            (0..rows).map(|r| self.row(&x[r * width..(r + 1) * width], &mut kernels, &mut scores)).collect();
        let labels = match &self.labels {
            Labels::Ints(v) => make(&[rows], picks.iter().map(|&p| v[p]).collect())?,
            Labels::Strings(v) => make(&[rows], picks.iter().map(|&p| v[p].clone()).collect())?,
        };
        Ok(tvec![labels, make(&[rows, self.columns()], scores)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kernel_and_the_one_class_sign() {
        let sv = vec![1.0, 0.0, 0.0, 2.0];
        let svm = |kernel, one_class| SvmRegressor {
            kernel,
            support_vectors: sv.clone(),
            coefficients: vec![0.5, -1.0],
            rho: 0.25,
            features: 2,
            one_class,
        };
        let x = [1.0f32, 1.0];
        let cases = [
            (SvmKernel::Linear, 0.5 * 1.0 - 2.0 + 0.25),
            (SvmKernel::Poly { gamma: 2.0, coef0: 1.0, degree: 2.0 }, 0.5 * 9.0 - 25.0 + 0.25),
            (SvmKernel::Rbf { gamma: 0.5 }, 0.5 * (-0.5f32).exp() - (-1.0f32).exp() + 0.25),
            (SvmKernel::Sigmoid { gamma: 1.0, coef0: 0.0 }, 0.5 * 1.0f32.tanh() - 2.0f32.tanh() + 0.25),
        ];
        for (kernel, expected) in cases {
            assert!((svm(kernel, false).row(&x) - expected).abs() < 1e-6, "{kernel:?}");
            assert_eq!(svm(kernel, true).row(&x), if expected > 0.0 { 1.0 } else { -1.0 }, "{kernel:?}");
        }
        assert!(svm(SvmKernel::Linear, false).row(&[f32::NAN, 1.0]).is_nan());
        assert_eq!(svm(SvmKernel::Linear, true).row(&[f32::NAN, 1.0]), -1.0);
    }

    /// Three classes, one support vector each on the axes of a plane, a
    /// linear kernel: pair (i, j) scores `x·svᵢ · coef - x·svⱼ · coef + rho`.
    fn three_classes(prob: bool) -> SvmClassifier {
        SvmClassifier {
            kernel: SvmKernel::Linear,
            support_vectors: vec![1.0, 0.0, 0.0, 1.0, -1.0, -1.0],
            // (classes - 1) × vectors: row j-1 holds class i's coefficient
            // against j, row i class j's against i.
            coefficients: vec![1.0, -1.0, -1.0, 1.0, 1.0, -1.0],
            rho: vec![0.0, 0.0, 0.0],
            per_class: vec![(0, 1), (1, 1), (2, 1)],
            prob_a: if prob { vec![-2.0; 3] } else { Vec::new() },
            prob_b: if prob { vec![0.0; 3] } else { Vec::new() },
            features: 2,
            labels: Labels::Ints(vec![10, 20, 30]),
            post: Post::None,
            weights_are_all_positive: false,
        }
    }

    fn run(svm: &SvmClassifier, x: [f32; 2]) -> (usize, Vec<f32>) {
        let mut out = Vec::new();
        let pick = svm.row(&x, &mut Vec::new(), &mut out);
        (pick, out)
    }

    #[test]
    fn one_vs_one_votes_pick_the_class_and_pair_scores_are_the_columns() {
        let svm = three_classes(false);
        assert_eq!(svm.columns(), 3);
        let cases = [
            ([2.0, 0.0], 0, vec![2.0, 4.0, 2.0]),
            ([0.0, 2.0], 1, vec![-2.0, 2.0, 4.0]),
            ([-2.0, -2.0], 2, vec![0.0, -6.0, -6.0]),
        ];
        for (x, class, scores) in cases {
            let (pick, out) = run(&svm, x);
            assert_eq!((pick, out), (class, scores), "{x:?}");
        }
        // A gap: every pair score is NaN, no pair is positive, the last class
        // gets every vote but the first pair's.
        let (pick, out) = run(&svm, [f32::NAN, 1.0]);
        assert_eq!(pick, 2);
        assert!(out.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn pairwise_coupling_gives_probabilities_and_a_gap_uniform_ones() {
        let svm = three_classes(true);
        let (pick, p) = run(&svm, [2.0, 0.0]);
        assert_eq!(pick, 0);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{p:?}");
        assert!(p[0] > p[1] && p[0] > p[2], "{p:?}");
        let (_, p) = run(&svm, [f32::NAN, 0.0]);
        assert_eq!(p, vec![1.0 / 3.0; 3]);
    }

    #[test]
    fn a_binary_model_without_probabilities_writes_minus_s_and_s() {
        let svm = SvmClassifier {
            support_vectors: vec![1.0, 0.0, 0.0, 1.0],
            coefficients: vec![1.0, -1.0],
            rho: vec![0.5],
            per_class: vec![(0, 1), (1, 1)],
            prob_a: Vec::new(),
            prob_b: Vec::new(),
            labels: Labels::Ints(vec![0, 1]),
            ..three_classes(false)
        };
        assert_eq!(svm.columns(), 2);
        // s = 1·x₀ − 1·x₁ + 0.5: positive votes for the first class.
        assert_eq!(run(&svm, [1.0, 0.0]), (0, vec![-1.5, 1.5]));
        assert_eq!(run(&svm, [0.0, 1.0]), (1, vec![0.5, -0.5]));
    }

    #[test]
    fn the_linear_form_scores_each_class_with_the_first_rho() {
        let svm = SvmClassifier {
            support_vectors: Vec::new(),
            coefficients: vec![1.0, 0.0, 0.0, 1.0],
            rho: vec![0.25],
            per_class: Vec::new(),
            labels: Labels::Ints(vec![0, 1]),
            prob_a: Vec::new(),
            prob_b: Vec::new(),
            ..three_classes(false)
        };
        // Two classes, mixed-sign weights absent (all ≥ 0): the second class
        // when the best score reaches 0.5, as onnxruntime's ChooseClass.
        let positive = SvmClassifier { weights_are_all_positive: true, ..svm };
        assert_eq!(run(&positive, [0.1, 0.0]), (0, vec![0.35, 0.25]));
        assert_eq!(run(&positive, [0.0, 0.1]), (1, vec![0.25, 0.35]));
        assert_eq!(run(&positive, [1.0, 0.0]).0, 1);
    }
}
