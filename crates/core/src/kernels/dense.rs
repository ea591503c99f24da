//! A dense layer, `x·W + b` for a batch of rows, for the narrow layers of
//! plant models (52 → 24 → 8 → 24 → 52): the ONNX runtime's fused
//! `Gemm`/`MatMul` layers run here.
//!
//! A general matrix product (BLAS, `matrixmultiply`) copies both operands
//! into tiles on every call, sized for operands of hundreds of columns; on
//! a layer of 8 to 64 outputs that copying and the padding of its tiles
//! cost more than the arithmetic. Here the weights are laid out once, when
//! the model loads, in panels of 16 output columns (`k`-major; a last
//! panel of 8 when no more are left, padded with zeros), and the batch is
//! read where it lies: a block of rows keeps one panel's sums in
//! registers, starting from the bias, and adds `x[r][k] · W[k][panel]` for
//! every `k`. The caller gets each finished block of rows while it is in
//! cache (for the activation).
//!
//! On a CPU with AVX2 and FMA (AVX-512 CPUs have both) a block is four
//! rows and each row's sums of a panel are two registers of eight; the
//! version is chosen at run time (`USAN_SIMD=off` keeps the plain loop).
//! The wide version fuses each multiply-add, so its sums differ from the
//! plain loop's by rounding only (the tests bound both against f64).

/// Output columns per panel: two AVX2 registers.
const LANES: usize = 16;

/// Output columns of a narrow last panel: one AVX2 register.
const HALF: usize = 8;

/// Rows whose sums a block holds at once (eight of AVX2's sixteen registers).
const ROWS: usize = 4;

/// A dense layer's weights and bias, laid out for [`Self::apply`].
#[derive(Debug, Clone)]
pub struct PackedLayer {
    inputs: usize,
    outputs: usize,
    /// Panel `p` holds `W[k][p·LANES .. p·LANES + LANES]` for every `k`, in
    /// order; the last one may be [`HALF`] wide.
    panels: Vec<f32>,
    /// The bias padded with zeros to whole panels.
    bias: Vec<f32>,
}

/// Weights or bias whose length does not match the layer's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a dense layer of {inputs} inputs and {outputs} outputs needs {expected} {what}, not {found}")]
pub struct ShapeError {
    inputs: usize,
    outputs: usize,
    what: &'static str,
    expected: usize,
    found: usize,
}

impl PackedLayer {
    /// Lays out `weights` (`inputs × outputs`, row-major, as `x·W` reads
    /// them) and the optional `bias` (one per output; none is zeros).
    ///
    /// # Errors
    /// A zero dimension, or weights or bias of another length than the shape needs.
    pub fn new(weights: &[f32], inputs: usize, outputs: usize, bias: Option<&[f32]>) -> Result<Self, ShapeError> {
        let error = |what, expected, found| ShapeError { inputs, outputs, what, expected, found };
        let expected = inputs.checked_mul(outputs).filter(|&n| n > 0).ok_or(error("weights", 1, 0))?;
        if weights.len() != expected {
            return Err(error("weights", expected, weights.len()));
        }
        if let Some(bias) = bias.filter(|b| b.len() != outputs) {
            return Err(error("biases", outputs, bias.len()));
        }
        let padded_outputs = panel_widths(outputs).sum::<usize>();
        let mut panels = Vec::with_capacity(padded_outputs * inputs);
        for (from, width) in panel_widths(outputs).scan(0, |at, w| Some((std::mem::replace(at, *at + w), w))) {
            let to = outputs.min(from + width);
            for row in weights.chunks_exact(outputs) {
                panels.extend_from_slice(&row[from..to]);
                panels.resize(panels.len() + width - (to - from), 0.0);
            }
        }
        let mut padded = bias.map_or_else(Vec::new, <[f32]>::to_vec);
        padded.resize(padded_outputs, 0.0);
        Ok(Self { inputs, outputs, panels, bias: padded })
    }

    /// Each panel's first output column, weights (`inputs × width`) and
    /// bias (`width`, whose length tells the width).
    fn panels(&self) -> impl Iterator<Item = (usize, &[f32], &[f32])> {
        let (mut column, mut weights, mut bias) = (0, &self.panels[..], &self.bias[..]);
        panel_widths(self.outputs).map(move |width| {
            let (w, rest) = weights.split_at(self.inputs * width);
            let (b, rest_bias) = bias.split_at(width);
            weights = rest;
            bias = rest_bias;
            column += width;
            (column - width, w, b)
        })
    }

    /// Values each row takes.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Values each row gives.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Writes `x·W + b` of every whole row of `x` into `out` (the rows both
    /// have room for), calling `finish` on each block of finished output
    /// rows while they are in cache. A NaN in a row makes that row's
    /// outputs NaN; other rows are untouched.
    pub fn apply(&self, x: &[f32], out: &mut [f32], mut finish: impl FnMut(&mut [f32])) {
        let rows = (x.len() / self.inputs).min(out.len() / self.outputs);
        let (x, out) = (&x[..rows * self.inputs], &mut out[..rows * self.outputs]);
        #[cfg(target_arch = "x86_64")]
        {
            if super::simd_allowed()
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA, the extensions the function is compiled for.
                unsafe { x86::apply_avx2(self, x, out, &mut finish) };
                return;
            }
        }
        blocks(self, x, out, &mut finish, block::<ROWS>, block::<1>);
    }
}

/// The widths of a layer's panels: [`LANES`] until at most [`HALF`]
/// columns are left, which get a panel of [`HALF`].
fn panel_widths(outputs: usize) -> impl Iterator<Item = usize> + Clone {
    let narrow = (1..=HALF).contains(&(outputs % LANES));
    std::iter::repeat_n(LANES, outputs / LANES + usize::from(!narrow && !outputs.is_multiple_of(LANES)))
        .chain(narrow.then_some(HALF))
}

/// One block's product: `R` rows of `x` (`R × inputs` values) into `out`
/// (`R × outputs`).
type Block = fn(&PackedLayer, &[f32], &mut [f32]);

/// `x` and `out` (whole rows, as many of each) cut into blocks of [`ROWS`]
/// rows, then single rows.
#[inline(always)]
fn blocks(
    layer: &PackedLayer,
    x: &[f32],
    out: &mut [f32],
    finish: &mut dyn FnMut(&mut [f32]),
    many: impl Fn(&PackedLayer, &[f32], &mut [f32]),
    one: impl Fn(&PackedLayer, &[f32], &mut [f32]),
) {
    let (k, m) = (layer.inputs, layer.outputs);
    let whole = x.len() / k / ROWS * ROWS;
    let (x_blocks, x_rest) = x.split_at(whole * k);
    let (out_blocks, out_rest) = out.split_at_mut(whole * m);
    for (x, out) in x_blocks.chunks_exact(ROWS * k).zip(out_blocks.chunks_exact_mut(ROWS * m)) {
        many(layer, x, out);
        finish(out);
    }
    for (x, out) in x_rest.chunks_exact(k).zip(out_rest.chunks_exact_mut(m)) {
        one(layer, x, out);
        finish(out);
    }
}

/// The plain loop: `R` rows, one panel at a time.
fn block<const R: usize>(layer: &PackedLayer, x: &[f32], out: &mut [f32]) {
    let (k, m) = (layer.inputs, layer.outputs);
    for (from, panel, bias) in layer.panels() {
        let width = bias.len();
        for r in 0..R {
            let mut sums = [0f32; LANES];
            let sums = &mut sums[..width];
            sums.copy_from_slice(bias);
            for (&a, w) in x[r * k..(r + 1) * k].iter().zip(panel.chunks_exact(width)) {
                for (s, &w) in sums.iter_mut().zip(w) {
                    *s += a * w;
                }
            }
            store(sums, r * m + from, m * (r + 1), out);
        }
    }
}

/// A panel's sums of one row into `out[at..]`, as many as the row has left
/// (`end` is its end).
#[inline(always)]
fn store(sums: &[f32], at: usize, end: usize, out: &mut [f32]) {
    let width = sums.len().min(end - at);
    out[at..at + width].copy_from_slice(&sums[..width]);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Block, HALF, LANES, PackedLayer, ROWS, blocks, store};
    use std::arch::x86_64::{__m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps};

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn apply_avx2(
        layer: &PackedLayer,
        x: &[f32],
        out: &mut [f32],
        finish: &mut dyn FnMut(&mut [f32]),
    ) {
        let many: Block = |layer, x, out| {
            // SAFETY: `apply_avx2` runs only on a CPU with AVX2 and FMA.
            unsafe { block::<ROWS>(layer, x, out) }
        };
        let one: Block = |layer, x, out| {
            // SAFETY: as above.
            unsafe { block::<1>(layer, x, out) }
        };
        blocks(layer, x, out, finish, many, one);
    }

    /// `R` rows, one panel at a time: each row's sums in two registers of
    /// eight (one in a narrow panel), every weight loaded once per block.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const R: usize>(layer: &PackedLayer, x: &[f32], out: &mut [f32]) {
        let (k, m) = (layer.inputs, layer.outputs);
        let rows: [&[f32]; R] = std::array::from_fn(|r| &x[r * k..(r + 1) * k]);
        for (from, panel, bias) in layer.panels() {
            if bias.len() == LANES {
                // SAFETY: `bias` holds 16 values, eight at each pointer.
                let (b0, b1) = unsafe { (_mm256_loadu_ps(bias.as_ptr()), _mm256_loadu_ps(bias.as_ptr().add(8))) };
                let (mut low, mut high): ([__m256; R], [__m256; R]) = ([b0; R], [b1; R]);
                for (i, w) in panel.chunks_exact(LANES).enumerate() {
                    // SAFETY: `w` holds 16 values, eight at each pointer.
                    let (w0, w1) = unsafe { (_mm256_loadu_ps(w.as_ptr()), _mm256_loadu_ps(w.as_ptr().add(8))) };
                    for r in 0..R {
                        // SAFETY: the panel has one chunk per input (`k`), so `i < k`, each row's length.
                        let a = _mm256_set1_ps(unsafe { *rows[r].get_unchecked(i) });
                        low[r] = _mm256_fmadd_ps(a, w0, low[r]);
                        high[r] = _mm256_fmadd_ps(a, w1, high[r]);
                    }
                }
                for r in 0..R {
                    put(&[low[r], high[r]], r * m + from, m * (r + 1), out);
                }
            } else {
                // SAFETY: a narrow panel's `bias` holds eight values.
                let mut sums = [unsafe { _mm256_loadu_ps(bias.as_ptr()) }; R];
                for (i, w) in panel.chunks_exact(HALF).enumerate() {
                    // SAFETY: `w` holds eight values.
                    let w = unsafe { _mm256_loadu_ps(w.as_ptr()) };
                    for (sum, row) in sums.iter_mut().zip(rows) {
                        // SAFETY: as above, `i < k`.
                        let a = _mm256_set1_ps(unsafe { *row.get_unchecked(i) });
                        *sum = _mm256_fmadd_ps(a, w, *sum);
                    }
                }
                for (r, sum) in sums.iter().enumerate() {
                    put(&[*sum], r * m + from, m * (r + 1), out);
                }
            }
        }
    }

    /// Registers of eight sums into `out[at..]`, as many as the row has
    /// left before `end`: straight when all fit, through a copy otherwise.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn put<const N: usize>(sums: &[__m256; N], at: usize, end: usize, out: &mut [f32]) {
        if let Some(to) = out.get_mut(at..at + 8 * N).filter(|_| at + 8 * N <= end) {
            for (i, s) in sums.iter().enumerate() {
                // SAFETY: `to` holds 8·N values, eight at each of its N pointers.
                unsafe { _mm256_storeu_ps(to.as_mut_ptr().add(8 * i), *s) };
            }
        } else {
            let mut all = [0f32; LANES];
            for (i, s) in sums.iter().enumerate() {
                // SAFETY: `all` holds 16 ≥ 8·N values, eight at each of its N pointers.
                unsafe { _mm256_storeu_ps(all.as_mut_ptr().add(8 * i), *s) };
            }
            store(&all[..8 * N], at, end, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x·W + b` in f64, row by row.
    fn reference(w: &[f32], k: usize, m: usize, b: Option<&[f32]>, x: &[f32]) -> Vec<f64> {
        x.chunks_exact(k)
            .flat_map(|row| {
                (0..m).map(move |j| {
                    let bias = b.map_or(0.0, |b| f64::from(b[j]));
                    bias + (0..k).map(|i| f64::from(row[i]) * f64::from(w[i * m + j])).sum::<f64>()
                })
            })
            .collect()
    }

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut z = seed;
        (0..n)
            .map(|_| {
                z = z.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_shape_gives_the_product_plus_the_bias() {
        // Widths below, at and across a panel; row counts below, at and across a block.
        for (k, m) in
            [(1, 1), (3, 2), (52, 24), (24, 8), (8, 24), (24, 52), (5, 16), (7, 17), (2, 33), (3, 12), (4, 30)]
        {
            for rows in [0, 1, 3, 4, 5, 9] {
                let (w, b, x) = (values(k * m, 1), values(m, 2), values(rows * k, 3));
                for bias in [None, Some(&b[..])] {
                    let layer = PackedLayer::new(&w, k, m, bias).unwrap();
                    let mut out = vec![f32::NAN; rows * m];
                    let mut finished = 0;
                    layer.apply(&x, &mut out, |block| finished += block.len());
                    assert_eq!(finished, rows * m, "every row is handed to finish once");
                    // The plain loop too, whatever this CPU has.
                    let mut plain = vec![f32::NAN; rows * m];
                    blocks(&layer, &x, &mut plain, &mut |_| {}, block::<ROWS>, block::<1>);
                    let want = reference(&w, k, m, bias, &x);
                    for (j, ((got, plain), want)) in out.iter().zip(&plain).zip(want).enumerate() {
                        let tolerance = 1e-6 * (k as f64 + 1.0);
                        assert!((f64::from(*got) - want).abs() <= tolerance, "[{k}, {m}], {rows} rows, value {j}");
                        assert!((f64::from(*plain) - want).abs() <= tolerance, "plain: [{k}, {m}], {rows} rows, {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn panels_are_sixteen_wide_and_a_last_few_columns_get_eight() {
        let cases: [(usize, &[usize]); 8] = [
            (1, &[8]),
            (8, &[8]),
            (9, &[16]),
            (16, &[16]),
            (24, &[16, 8]),
            (30, &[16, 16]),
            (52, &[16, 16, 16, 8]),
            (64, &[16, 16, 16, 16]),
        ];
        for (outputs, want) in cases {
            assert_eq!(panel_widths(outputs).collect::<Vec<_>>(), want, "{outputs} outputs");
        }
    }

    #[test]
    fn a_missing_value_spoils_its_row_only() {
        let layer = PackedLayer::new(&[1.0, 2.0, 3.0, 4.0], 2, 2, Some(&[0.5, 0.5])).unwrap();
        let x = [1.0, 1.0, f32::NAN, 0.0, 0.0, 1.0, 2.0, 0.0, 1.0, 0.0];
        let mut out = [0.0; 10];
        layer.apply(&x, &mut out, |_| {});
        assert_eq!(out[..2], [4.5, 6.5]);
        assert!(out[2].is_nan() && out[3].is_nan());
        assert_eq!(out[4..], [3.5, 4.5, 2.5, 4.5, 1.5, 2.5]);
    }

    #[test]
    fn only_the_rows_both_sides_hold_are_written() {
        let layer = PackedLayer::new(&[1.0, 1.0], 1, 2, None).unwrap();
        let mut out = [7.0; 5];
        layer.apply(&[1.0, 2.0, 3.0], &mut out, |_| {});
        assert_eq!(out, [1.0, 1.0, 2.0, 2.0, 7.0]);
    }

    #[test]
    fn a_shape_the_weights_do_not_fill_is_refused() {
        type Case = (usize, usize, usize, Option<usize>, &'static str);
        let cases: [Case; 4] = [
            (2, 3, 5, None, "needs 6 weights, not 5"),
            (2, 3, 6, Some(2), "needs 3 biases, not 2"),
            (0, 3, 0, None, "needs 1 weights, not 0"),
            (usize::MAX, 2, 0, None, "needs 1 weights, not 0"),
        ];
        for (k, m, n, bias, want) in cases {
            let bias = bias.map(|n| vec![0.0; n]);
            let err = PackedLayer::new(&vec![0.0; n], k, m, bias.as_deref()).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }
}
