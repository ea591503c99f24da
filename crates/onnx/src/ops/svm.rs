//! `SVMRegressor` as onnxruntime computes it (scikit-learn's SVR, NuSVR
//! and OneClassSVM through skl2onnx, LinearSVR): in float,
//! `y = Σⱼ coefⱼ · K(x, svⱼ) + rho₀` over the support vectors, or
//! `y = x · coef + rho₀` without them; with `one_class`, `y` becomes 1 when
//! positive and −1 otherwise. The kernels: `LINEAR` `x·sv`, `POLY`
//! `(γ x·sv + c₀)^d`, `RBF` `exp(−γ |x − sv|²)`, `SIGMOID` `tanh(γ x·sv + c₀)`
//! (`kernel_params` = `[γ, c₀, d]`). onnxruntime reads `post_transform` and
//! does not apply it; neither does usan. A missing value makes `y` NaN (a
//! one-class output then −1, as NaN is not positive).

use super::{Attrs, Built, Kernel, OutShape, OutSpec, make, native, rows_f64};
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
    let params = a.floats("kernel_params");
    let param = |i: usize| params.get(i).copied().unwrap_or(0.0);
    let (kernel, features) = if n > 0 {
        ensure!(
            support_vectors.len().is_multiple_of(n) && !support_vectors.is_empty(),
            "SVMRegressor has {} support vector values for {n} vectors",
            support_vectors.len()
        );
        ensure!(coefficients.len() == n, "SVMRegressor has {} coefficients for {n} vectors", coefficients.len());
        let kernel = match a.string("kernel_type", "LINEAR")?.as_str() {
            "LINEAR" => SvmKernel::Linear,
            "POLY" => SvmKernel::Poly { gamma: param(0), coef0: param(1), degree: param(2) },
            "RBF" => SvmKernel::Rbf { gamma: param(0) },
            "SIGMOID" => SvmKernel::Sigmoid { gamma: param(0), coef0: param(1) },
            other => bail!("unknown SVM kernel_type {other}"),
        };
        (kernel, support_vectors.len() / n)
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

impl SvmRegressor {
    fn row(&self, x: &[f32]) -> f32 {
        let y = if self.support_vectors.is_empty() {
            dot(x, &self.coefficients) + self.rho
        } else {
            let mut y = 0.0f32;
            for (sv, coef) in self.support_vectors.chunks_exact(self.features).zip(&self.coefficients) {
                let k = match self.kernel {
                    SvmKernel::Linear => dot(x, sv),
                    SvmKernel::Poly { gamma, coef0, degree } => {
                        let base = gamma * dot(x, sv) + coef0;
                        if degree == 2.0 {
                            base * base
                        } else if degree == 3.0 {
                            base * base * base
                        } else {
                            base.powf(degree)
                        }
                    }
                    SvmKernel::Rbf { gamma } => {
                        let d: f32 = x.iter().zip(sv).map(|(a, b)| (a - b) * (a - b)).sum();
                        (-gamma * d).exp()
                    }
                    SvmKernel::Sigmoid { gamma, coef0 } => (gamma * dot(x, sv) + coef0).tanh(),
                };
                y += coef * k;
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
}
