//! The logistic sigmoid and tanh over slices of `f32`, as the gates of
//! recurrent networks apply them: millions of values per batch.
//!
//! Both are tract-linalg's rational minimax fits (of the form onnxruntime's
//! MLAS kernels use): a clamp, two Horner chains in `x²`, one division; a
//! few ulps from libm, and NaN stays NaN (the clamp is written so that a
//! NaN passes it). Their values are the bits of
//! `tract_linalg::generic::{ssigmoid, stanh}`, which the ONNX crate's
//! scalar activations call. The plain loop vectorises only to the
//! baseline's four lanes; on a CPU with AVX2 and FMA (or AVX-512) the same
//! loop is compiled again for its wider registers and chosen at run time.
//! The compiler contracts nothing into fused multiply-adds on its own, so
//! every version gives the same bits (the tests check that).

/// The logistic function `1 / (1 + e^-x)` of every value, in place.
pub fn sigmoid(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::simd_allowed() {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, the only extension the function is compiled for.
                unsafe { x86::sigmoid_avx512(values) };
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA, the extensions the function is compiled for.
                unsafe { x86::sigmoid_avx2(values) };
                return;
            }
        }
    }
    values.iter_mut().for_each(|v| *v = sigmoid_one(*v));
}

/// The hyperbolic tangent of every value, in place.
pub fn tanh(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::simd_allowed() {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, the only extension the function is compiled for.
                unsafe { x86::tanh_avx512(values) };
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA, the extensions the function is compiled for.
                unsafe { x86::tanh_avx2(values) };
                return;
            }
        }
    }
    values.iter_mut().for_each(|v| *v = tanh_one(*v));
}

/// The logistic function of one value: a fit of `sigmoid(x) − 0.5` over
/// `[-14.5, 14.5]` (tract-linalg's `ssigmoid`, whose clamp keeps the sum
/// inside `[0, 1]`).
#[inline(always)]
#[allow(clippy::excessive_precision, clippy::unreadable_literal)]
pub fn sigmoid_one(x: f32) -> f32 {
    const A13: f32 = -4.433153405e-18;
    const A11: f32 = 1.169974371e-14;
    const A9: f32 = -1.875289645e-11;
    const A7: f32 = 4.257889523e-8;
    const A5: f32 = 0.00004811817576;
    const A3: f32 = 0.008163842030;
    const A1: f32 = 0.2499999971;
    const B6: f32 = 3.922935744e-6;
    const B4: f32 = 0.001524872358;
    const B2: f32 = 0.1159886749;
    const B0: f32 = 1.0;
    let x = clamp(x, 14.5);
    let x2 = x * x;
    let p = ((((((A13 * x2 + A11) * x2 + A9) * x2 + A7) * x2 + A5) * x2 + A3) * x2 + A1) * x;
    let q = ((B6 * x2 + B4) * x2 + B2) * x2 + B0;
    p / q + 0.5
}

/// The hyperbolic tangent of one value: a fit over `[-7.5, 7.5]`
/// (tract-linalg's `stanh`).
#[inline(always)]
#[allow(clippy::excessive_precision, clippy::unreadable_literal)]
pub fn tanh_one(x: f32) -> f32 {
    const A13: f32 = -8.488492677e-14;
    const A11: f32 = 5.277853000e-11;
    const A9: f32 = -2.022500419e-8;
    const A7: f32 = 0.00001115424833;
    const A5: f32 = 0.003103950131;
    const A3: f32 = 0.1308400453;
    const A1: f32 = 0.9999999934;
    const B6: f32 = 0.0002546136580;
    const B4: f32 = 0.02449515379;
    const B2: f32 = 0.4641733162;
    const B0: f32 = 1.0;
    let x = clamp(x, 7.5);
    let x2 = x * x;
    let p = ((((((A13 * x2 + A11) * x2 + A9) * x2 + A7) * x2 + A5) * x2 + A3) * x2 + A1) * x;
    let q = ((B6 * x2 + B4) * x2 + B2) * x2 + B0;
    p / q
}

/// `x` clamped to `[-bound, bound]`; NaN stays NaN (both comparisons are false).
#[inline(always)]
fn clamp(x: f32, bound: f32) -> f32 {
    let x = if x < -bound { -bound } else { x };
    if x > bound { bound } else { x }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{sigmoid_one, tanh_one};

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sigmoid_avx2(values: &mut [f32]) {
        values.iter_mut().for_each(|v| *v = sigmoid_one(*v));
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tanh_avx2(values: &mut [f32]) {
        values.iter_mut().for_each(|v| *v = tanh_one(*v));
    }

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sigmoid_avx512(values: &mut [f32]) {
        values.iter_mut().for_each(|v| *v = sigmoid_one(*v));
    }

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tanh_avx512(values: &mut [f32]) {
        values.iter_mut().for_each(|v| *v = tanh_one(*v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values across both fits' ranges, their clamps, the tails and NaN.
    fn samples() -> Vec<f32> {
        let mut v: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.007).collect();
        v.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            7.4,
            7.6,
            14.4,
            14.6,
            1e6,
            -1e6,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        v
    }

    #[test]
    fn each_function_is_within_a_few_millionths_of_libm_and_keeps_nan() {
        type Case = (&'static str, fn(&mut [f32]), fn(f64) -> f64);
        let cases: [Case; 2] = [("sigmoid", sigmoid, |x| 1.0 / (1.0 + (-x).exp())), ("tanh", tanh, f64::tanh)];
        for (name, batch, exact) in cases {
            let x = samples();
            let mut y = x.clone();
            batch(&mut y);
            for (&x, &y) in x.iter().zip(&y) {
                if x.is_nan() {
                    assert!(y.is_nan(), "{name}(NaN) = {y}");
                    continue;
                }
                let want = exact(f64::from(x));
                assert!((f64::from(y) - want).abs() <= 2e-6 + 2e-6 * want.abs(), "{name}({x}) = {y}, libm {want}");
            }
        }
    }

    #[test]
    fn the_wide_loops_give_the_plain_loops_bits() {
        // Odd lengths leave a remainder after the vector part.
        for len in [0, 1, 7, 15, 16, 17, 33, 1001] {
            let x: Vec<f32> = samples().into_iter().cycle().skip(3 * len).take(len).collect();
            let (mut fast_s, mut fast_t) = (x.clone(), x.clone());
            sigmoid(&mut fast_s);
            tanh(&mut fast_t);
            for (i, &v) in x.iter().enumerate() {
                assert_eq!(fast_s[i].to_bits(), sigmoid_one(v).to_bits(), "sigmoid({v}), length {len}");
                assert_eq!(fast_t[i].to_bits(), tanh_one(v).to_bits(), "tanh({v}), length {len}");
            }
        }
    }
}
