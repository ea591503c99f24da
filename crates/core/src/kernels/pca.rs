//! Static PCA's T² and SPE for many rows at once (batch scoring).
//!
//! Four kernels compute the same statistics: a [`Scalar`](KernelChoice::Scalar)
//! reference in plain Rust (one row at a time, the definition), blocks of rows
//! through one matrix product each (portable), and three that keep the
//! component scores in SIMD registers where the CPU has the instructions.
//! [`BatchKernel::run`] takes the fastest that fits the CPU and the model;
//! the tests run every kernel this CPU has against the reference.

use super::simd_allowed;
use nalgebra::DMatrix;

/// What the kernels need of a fitted PCA model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Projection<'a> {
    /// Values per row.
    pub width: usize,
    /// The columns of a row the model uses, in order.
    pub used: &'a [usize],
    /// Mean of each used column.
    pub mean: &'a [f64],
    /// Standard deviation of each used column.
    pub scale: &'a [f64],
    /// Loadings, `used.len()` rows by `components` columns, row-major.
    pub loadings: &'a [f64],
    /// Retained components.
    pub components: usize,
    /// Eigenvalues, largest first; at least `components` of them.
    pub eigenvalues: &'a [f64],
}

/// Static PCA's statistics for many rows. On a CPU with AVX-512, rows of at
/// most [`LANES_WIDTH`] values go eight at a time, one per lane, and models
/// of at most [`WIDE_SIGNALS`] signals four rows at a time; with AVX2 and
/// FMA (at most 16 signals and padded components) one row at a time. These
/// keep the component scores in registers, never stored. Otherwise each
/// block of rows is standardised into the columns of `z` (nalgebra stores
/// columns, so each row's values sit together) and `t = Pᵀ z` is one matrix
/// product. The components are padded with zero loadings to a multiple of 8
/// (one AVX-512 register, two AVX2 ones, two of matrixmultiply's kernel
/// widths); padded scores are exactly 0.
pub(crate) struct BatchKernel<'a> {
    model: Projection<'a>,
    /// Components, padded.
    padded: usize,
    /// Pᵀ, padded rows of zeros.
    loadings_t: DMatrix<f64>,
    inverse_scale: Vec<f64>,
    /// 1 / eigenvalue per component, 0 for the padding.
    inverse_eigen: Vec<f64>,
    /// Signals kept in their order (the usual case): rows are read as they are.
    all_kept: bool,
    /// Per kept signal: its column in a row, its mean and 1 / scale.
    scaling: Vec<(usize, f64, f64)>,
    /// Per component, its loadings on [`LANES_WIDTH`] signals, zeros past
    /// the model's (for the rows in lanes; empty for wider models).
    lane_loadings: Vec<[f64; LANES_WIDTH]>,
    /// Which kernel [`Self::run`] takes.
    kernel: KernelChoice,
}

/// Most signals of a model the AVX-512 kernel takes (its rows' standardised values sit on the stack).
pub(crate) const WIDE_SIGNALS: usize = 128;

/// Widest row the AVX-512 rows-in-lanes kernel takes (a row fits two registers).
pub(crate) const LANES_WIDTH: usize = 16;

/// The kernels of [`BatchKernel::run`], chosen once per batch from the model's size and the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KernelChoice {
    /// The reference: one row at a time in plain Rust, as the statistics are defined.
    Scalar,
    /// One row at a time in AVX2 registers (≤ 16 signals and padded components).
    NarrowAvx2,
    /// Eight rows at a time, one per AVX-512 lane (rows of ≤ [`LANES_WIDTH`] values).
    LanesAvx512,
    /// Four rows at a time in AVX-512 registers (≤ [`WIDE_SIGNALS`] signals).
    WideAvx512,
    /// Blocks of rows through matrixmultiply.
    Blocks,
}

impl KernelChoice {
    /// Every kernel, the reference first.
    #[cfg(test)]
    pub(crate) const ALL: [KernelChoice; 5] = [
        KernelChoice::Scalar,
        KernelChoice::Blocks,
        KernelChoice::NarrowAvx2,
        KernelChoice::LanesAvx512,
        KernelChoice::WideAvx512,
    ];

    /// Whether this CPU has the kernel's instructions and a model of this size fits it.
    pub(crate) fn fits(self, width: usize, signals: usize, padded: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                KernelChoice::Scalar => true,
                KernelChoice::NarrowAvx2 => signals <= 16 && padded <= 16 && has!("avx2") && has!("fma"),
                KernelChoice::LanesAvx512 => width <= LANES_WIDTH && has!("avx512f"),
                KernelChoice::WideAvx512 => signals <= WIDE_SIGNALS && has!("avx512f"),
                KernelChoice::Blocks => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (width, signals, padded);
            matches!(self, KernelChoice::Scalar | KernelChoice::Blocks)
        }
    }
}

impl<'a> BatchKernel<'a> {
    /// Rows per block: small enough to stay in cache.
    pub(crate) const BLOCK: usize = 1024;

    /// The kernel for `model`, chosen for it and this CPU.
    pub(crate) fn new(model: Projection<'a>) -> Self {
        let (p, k) = (model.used.len(), model.components);
        let padded = k.next_multiple_of(8);
        let mut loadings_t = DMatrix::<f64>::zeros(padded, p);
        for (j, row) in model.loadings.chunks_exact(k).enumerate() {
            for (c, loading) in row.iter().enumerate() {
                loadings_t[(c, j)] = *loading;
            }
        }
        let mut inverse_eigen: Vec<f64> = model.eigenvalues[..k].iter().map(|l| 1.0 / l.max(1e-12)).collect();
        inverse_eigen.resize(padded, 0.0);
        let lane_loadings = match model.width <= LANES_WIDTH {
            true => (0..k).map(|c| std::array::from_fn(|j| if j < p { loadings_t[(c, j)] } else { 0.0 })).collect(),
            false => Vec::new(),
        };
        BatchKernel {
            model,
            padded,
            loadings_t,
            lane_loadings,
            inverse_scale: model.scale.iter().map(|s| 1.0 / s).collect(),
            inverse_eigen,
            all_kept: p == model.width && model.used.iter().enumerate().all(|(i, &j)| i == j),
            scaling: model
                .used
                .iter()
                .zip(model.mean)
                .zip(model.scale)
                .map(|((&signal, &mean), &scale)| (signal, mean, 1.0 / scale))
                .collect(),
            kernel: Self::choose(model.width, p, padded),
        }
    }

    /// The fastest kernel this CPU has for a model of this size: rows in
    /// AVX-512 lanes measured 2.2× faster than four rows at a time at 8
    /// signals (Zen 4, one core), which were faster than AVX2 rows. With
    /// SIMD turned off (`USAN_SIMD=off`), the reference.
    fn choose(width: usize, signals: usize, padded: usize) -> KernelChoice {
        if !simd_allowed() {
            return KernelChoice::Scalar;
        }
        [KernelChoice::LanesAvx512, KernelChoice::WideAvx512, KernelChoice::NarrowAvx2]
            .into_iter()
            .find(|kernel| kernel.fits(width, signals, padded))
            .unwrap_or(KernelChoice::Blocks)
    }

    /// The kernel [`Self::run`] takes.
    #[cfg(test)]
    pub(crate) fn kernel(&self) -> KernelChoice {
        self.kernel
    }

    /// The signals the model uses and its components, padded: what
    /// [`KernelChoice::fits`] asks besides the width.
    #[cfg(test)]
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.scaling.len(), self.padded)
    }

    /// Whether the model uses every value of a row, in order.
    #[cfg(test)]
    pub(crate) fn all_kept(&self) -> bool {
        self.all_kept
    }

    /// `out.put(i, T², SPE)` for every row `i` of `rows`, in order; NaN for a
    /// row with a gap or of the wrong width.
    pub(crate) fn run(&self, rows: &[Vec<f64>], out: &mut Statistics) {
        self.run_with(self.kernel, rows, out);
    }

    /// [`Self::run`] through `kernel`.
    ///
    /// # Panics
    /// When `kernel` does not [fit](KernelChoice::fits) this CPU and model.
    pub(crate) fn run_with(&self, kernel: KernelChoice, rows: &[Vec<f64>], out: &mut Statistics) {
        let (width, signals) = (self.model.width, self.scaling.len());
        assert!(kernel.fits(width, signals, self.padded), "{kernel:?} does not fit this CPU and model");
        #[cfg(target_arch = "x86_64")]
        match kernel {
            // SAFETY: the kernel fits (checked above): the CPU has its features.
            KernelChoice::NarrowAvx2 => unsafe {
                return match self.padded / 4 {
                    2 => self.run_fused_avx2::<2>(rows, out),
                    _ => self.run_fused_avx2::<4>(rows, out),
                };
            },
            // SAFETY: as above.
            KernelChoice::WideAvx512 => unsafe { return self.run_wide_avx512(rows, out) },
            // SAFETY: as above.
            KernelChoice::LanesAvx512 => unsafe {
                return match width.div_ceil(8) {
                    2 => self.run_lanes_avx512::<2>(rows, out),
                    _ => self.run_lanes_avx512::<1>(rows, out),
                };
            },
            KernelChoice::Blocks | KernelChoice::Scalar => {}
        }
        match kernel {
            KernelChoice::Scalar => self.run_scalar(rows, out),
            _ => self.run_blocks(rows, out),
        }
    }

    /// [`Self::run`] as the statistics are defined, one row at a time: the
    /// standardised row `z`, its component scores `t = Pᵀz`, T² = Σ t² / λ
    /// and SPE = ‖z‖² − ‖t‖² (the loadings are orthonormal).
    fn run_scalar(&self, rows: &[Vec<f64>], out: &mut Statistics) {
        let (k, padded) = (self.model.components, self.padded);
        let loadings_t = self.loadings_t.as_slice();
        let mut z = vec![0.0; self.scaling.len()];
        for (i, row) in rows.iter().enumerate() {
            if row.len() != self.model.width {
                out.put(i, f64::NAN, f64::NAN);
                continue;
            }
            let mut norm = 0.0;
            for (slot, &(signal, mean, inverse)) in z.iter_mut().zip(&self.scaling) {
                *slot = (row[signal] - mean) * inverse;
                norm += *slot * *slot;
            }
            // A gap (NaN, ±∞) makes the norm NaN or ∞; so can a huge but
            // finite row, which then goes row by row too (the same score).
            if !norm.is_finite() {
                out.put(i, f64::NAN, f64::NAN);
                continue;
            }
            let (mut t2, mut t_norm) = (0.0, 0.0);
            for c in 0..k {
                // Pᵀ is stored column-major: component c of signal j at j · padded + c.
                let score: f64 = z.iter().enumerate().map(|(j, zj)| loadings_t[j * padded + c] * zj).sum();
                t2 += score * score * self.inverse_eigen[c];
                t_norm += score * score;
            }
            out.put(i, t2, (norm - t_norm).max(0.0));
        }
    }

    /// [`Self::run`] for a narrow model, one row at a time with its
    /// `4 · GROUPS` (padded) component scores in AVX registers, four per
    /// register: no scratch, no packing, nothing allocated.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, and `self.padded` is `4 · GROUPS`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_fused_avx2<const GROUPS: usize>(&self, rows: &[Vec<f64>], out: &mut Statistics) {
        use std::arch::x86_64::{__m256d, _mm256_add_pd, _mm256_fmadd_pd, _mm256_mul_pd, _mm256_set1_pd};
        use std::arch::x86_64::{_mm256_loadu_pd, _mm256_setzero_pd, _mm256_storeu_pd};
        let width = self.model.width;
        let sum = |v: __m256d| {
            let mut lanes = [0.0f64; 4];
            // SAFETY: `lanes` holds the four values stored.
            unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), v) };
            (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
        };
        let load = |four: &[f64]| {
            assert_eq!(four.len(), 4);
            // SAFETY: four values, checked above.
            unsafe { _mm256_loadu_pd(four.as_ptr()) }
        };
        let inverse_eigen: [__m256d; GROUPS] = std::array::from_fn(|g| load(&self.inverse_eigen[4 * g..4 * g + 4]));
        for (i, row) in rows.iter().enumerate() {
            if row.len() != width {
                out.put(i, f64::NAN, f64::NAN);
                continue;
            }
            let (mut scores, mut norm) = ([_mm256_setzero_pd(); GROUPS], 0.0f64);
            for (&(signal, mean, inverse), column) in
                self.scaling.iter().zip(self.loadings_t.as_slice().chunks_exact(4 * GROUPS))
            {
                let z = (row[signal] - mean) * inverse;
                norm = z.mul_add(z, norm);
                let z = _mm256_set1_pd(z);
                for (score, loading) in scores.iter_mut().zip(column.chunks_exact(4)) {
                    *score = _mm256_fmadd_pd(z, load(loading), *score);
                }
            }
            // A gap (NaN, ±∞) makes the norm NaN or ∞; so can a huge but
            // finite row, which then goes row by row too (the same score).
            if !norm.is_finite() {
                out.put(i, f64::NAN, f64::NAN);
                continue;
            }
            let (mut t2, mut t_norm) = (_mm256_setzero_pd(), _mm256_setzero_pd());
            for (score, inverse) in scores.iter().zip(&inverse_eigen) {
                let square = _mm256_mul_pd(*score, *score);
                t2 = _mm256_fmadd_pd(square, *inverse, t2);
                t_norm = _mm256_add_pd(square, t_norm);
            }
            out.put(i, sum(t2), (norm - sum(t_norm)).max(0.0));
        }
    }

    /// [`Self::run`] for rows of at most [`LANES_WIDTH`] values, eight rows
    /// at a time, each in one lane: the rows (`BLOCKS` registers each) are
    /// transposed so that a register holds one signal of the eight rows,
    /// then every component score is a chain of FMAs with the loadings as
    /// broadcast constants, and T², ‖t‖² and ‖z‖² come out for eight rows
    /// at once. Rows of another width are loaded as zeros and emitted as
    /// NaN; signals left out of the model are skipped by a permutation.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and the model's rows are at most `8 · BLOCKS` wide.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_lanes_avx512<const BLOCKS: usize>(&self, rows: &[Vec<f64>], out: &mut Statistics) {
        use std::arch::x86_64::{__m512i, _CMP_LT_OQ, _mm512_abs_pd, _mm512_add_pd, _mm512_cmp_pd_mask};
        use std::arch::x86_64::{_mm512_fmadd_pd, _mm512_loadu_pd, _mm512_loadu_si512, _mm512_maskz_loadu_pd};
        use std::arch::x86_64::{_mm512_maskz_permutex2var_pd, _mm512_max_pd, _mm512_mul_pd, _mm512_set1_pd};
        use std::arch::x86_64::{_mm512_setzero_pd, _mm512_sub_pd};
        let (width, signals) = (self.model.width, self.scaling.len());
        assert!(width <= 8 * BLOCKS && BLOCKS <= 2 && signals <= width);
        // Per register of a row: which of the row's values go in (the model's
        // signals, in order), and the lanes that hold one.
        let mut picks = [[0i64; 8]; 2];
        let mut pick_lanes = [0u8; 2];
        for (s, &(signal, _, _)) in self.scaling.iter().enumerate() {
            picks[s / 8][s % 8] = signal as i64;
            pick_lanes[s / 8] |= 1 << (s % 8);
        }
        // SAFETY: each array holds eight i64 (64 bytes).
        let picks: [__m512i; 2] = std::array::from_fn(|b| unsafe { _mm512_loadu_si512(picks[b].as_ptr().cast()) });
        // Per signal (padded to 16 with zeros): mean, 1 / scale.
        let (mut mean, mut inverse) = ([0.0f64; 16], [0.0f64; 16]);
        for (s, &(_, m, i)) in self.scaling.iter().enumerate() {
            (mean[s], inverse[s]) = (m, i);
        }
        let load_masks: [u8; 2] = std::array::from_fn(|b| {
            let n = width.saturating_sub(8 * b).min(8);
            ((1u16 << n) - 1) as u8
        });
        for (chunk_index, chunk) in rows.chunks(8).enumerate() {
            // Row r's values in its BLOCKS registers (zeros for a missing or misfit row).
            let mut raw = [[_mm512_setzero_pd(); 8]; BLOCKS];
            let mut fits = 0u8;
            for (r, row) in chunk.iter().enumerate() {
                if row.len() != width {
                    continue;
                }
                fits |= 1 << r;
                // SAFETY: the row holds `width` values (checked above); the masks
                // load only those, and the second register only when `width` > 8.
                let (a, b) = unsafe {
                    let ptr = row.as_ptr();
                    let a = match load_masks[0] {
                        0xff => _mm512_loadu_pd(ptr),
                        mask => _mm512_maskz_loadu_pd(mask, ptr),
                    };
                    (
                        a,
                        if BLOCKS == 2 {
                            _mm512_maskz_loadu_pd(load_masks[1], ptr.add(8))
                        } else {
                            _mm512_setzero_pd()
                        },
                    )
                };
                for (block, raw) in raw.iter_mut().enumerate() {
                    raw[r] = match (self.all_kept, block) {
                        (true, 0) => a,
                        (true, _) => b,
                        // The model's signals from the row's (up to) 16 values, zeros past them.
                        (false, _) => _mm512_maskz_permutex2var_pd(pick_lanes[block], a, picks[block], b),
                    };
                }
            }
            // z[j]: signal j of the eight rows, standardised; norm: ‖z‖² per row.
            let mut z = [_mm512_setzero_pd(); 16];
            let mut norm = _mm512_setzero_pd();
            for (block, raw) in raw.iter().enumerate() {
                // SAFETY: the CPU has AVX-512F.
                let columns = unsafe { transpose8(raw) };
                for (l, column) in columns.into_iter().enumerate() {
                    let j = 8 * block + l;
                    let v = _mm512_mul_pd(_mm512_sub_pd(column, _mm512_set1_pd(mean[j])), _mm512_set1_pd(inverse[j]));
                    norm = _mm512_fmadd_pd(v, v, norm);
                    z[j] = v;
                }
            }
            let (mut t2, mut t_norm) = (_mm512_setzero_pd(), _mm512_setzero_pd());
            for (c, loadings) in self.lane_loadings.iter().enumerate() {
                let mut score = _mm512_setzero_pd();
                for (zj, loading) in z[..8 * BLOCKS].iter().zip(loadings) {
                    score = _mm512_fmadd_pd(*zj, _mm512_set1_pd(*loading), score);
                }
                let square = _mm512_mul_pd(score, score);
                t2 = _mm512_fmadd_pd(square, _mm512_set1_pd(self.inverse_eigen[c]), t2);
                t_norm = _mm512_add_pd(square, t_norm);
            }
            let spe = _mm512_max_pd(_mm512_sub_pd(norm, t_norm), _mm512_setzero_pd());
            // A gap makes the norm NaN or ∞ (see `run_fused_avx2`).
            let finite = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(_mm512_abs_pd(norm), _mm512_set1_pd(f64::INFINITY));
            // SAFETY: the CPU has AVX-512F.
            unsafe { out.put_lanes(chunk_index * 8, chunk.len(), t2, spe, fits & finite) };
        }
    }

    /// [`Self::run`] for a wider model, four rows at a time: their
    /// standardised values on the stack, and per tile of 32 components the
    /// four rows' scores in sixteen AVX-512 registers, so each loading
    /// loaded serves four rows. Nothing is allocated.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and the model has at most [`WIDE_SIGNALS`] signals.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_wide_avx512(&self, rows: &[Vec<f64>], out: &mut Statistics) {
        use std::arch::x86_64::{_mm512_fmadd_pd, _mm512_loadu_pd, _mm512_mul_pd, _mm512_reduce_add_pd};
        use std::arch::x86_64::{_mm512_setzero_pd, _mm512_storeu_pd, _mm512_sub_pd};
        const ROWS: usize = 4;
        let (width, signals) = (self.model.width, self.scaling.len());
        let padded = self.padded;
        assert!(signals <= WIDE_SIGNALS && self.loadings_t.len() == signals * padded);
        let load = |eight: &[f64]| {
            assert!(eight.len() >= 8);
            // SAFETY: eight values, checked above.
            unsafe { _mm512_loadu_pd(eight.as_ptr()) }
        };
        let mut z = [[0.0f64; WIDE_SIGNALS]; ROWS];
        for (chunk_index, chunk) in rows.chunks(ROWS).enumerate() {
            let mut norms = [f64::NAN; ROWS];
            for (r, (z, norm)) in z.iter_mut().zip(&mut norms).enumerate() {
                let z = &mut z[..signals];
                match chunk.get(r).filter(|row| row.len() == width) {
                    Some(row) => {
                        let mut sum = 0.0f64;
                        let mut done = 0;
                        if self.all_kept {
                            // Eight signals at a time: the row is read as it is.
                            let mut sums = _mm512_setzero_pd();
                            let means = self.model.mean.chunks_exact(8).zip(self.inverse_scale.chunks_exact(8));
                            for ((slots, values), (mean, inverse)) in
                                z.chunks_exact_mut(8).zip(row.chunks_exact(8)).zip(means)
                            {
                                let v = _mm512_mul_pd(_mm512_sub_pd(load(values), load(mean)), load(inverse));
                                sums = _mm512_fmadd_pd(v, v, sums);
                                // SAFETY: `slots` holds eight values.
                                unsafe { _mm512_storeu_pd(slots.as_mut_ptr(), v) };
                                done += 8;
                            }
                            sum = _mm512_reduce_add_pd(sums);
                        }
                        for (slot, &(signal, mean, inverse)) in z[done..].iter_mut().zip(&self.scaling[done..]) {
                            let v = (row[signal] - mean) * inverse;
                            sum = v.mul_add(v, sum);
                            *slot = v;
                        }
                        // A gap makes the norm NaN or ∞ (see `run_fused_avx2`).
                        if sum.is_finite() {
                            *norm = sum;
                        } else {
                            z.fill(0.0);
                        }
                    }
                    None => z.fill(0.0),
                }
            }
            let (mut t2, mut t_norm) = ([_mm512_setzero_pd(); ROWS], [_mm512_setzero_pd(); ROWS]);
            // Tiles of 4 registers of 8 components, then of 2, then of 1.
            let mut start = 0;
            for tile_groups in [4, 2, 1] {
                while padded - start >= 8 * tile_groups {
                    // SAFETY: this function runs only where the CPU has AVX-512F.
                    unsafe {
                        match tile_groups {
                            4 => self.wide_tile::<4>(&z, start, &mut t2, &mut t_norm),
                            2 => self.wide_tile::<2>(&z, start, &mut t2, &mut t_norm),
                            _ => self.wide_tile::<1>(&z, start, &mut t2, &mut t_norm),
                        }
                    }
                    start += 8 * tile_groups;
                }
            }
            for r in 0..chunk.len() {
                let i = chunk_index * ROWS + r;
                if norms[r].is_nan() {
                    out.put(i, f64::NAN, f64::NAN);
                } else {
                    let (row_t2, row_t_norm) = (_mm512_reduce_add_pd(t2[r]), _mm512_reduce_add_pd(t_norm[r]));
                    out.put(i, row_t2, (norms[r] - row_t_norm).max(0.0));
                }
            }
        }
    }

    /// One tile of `8 · GROUPS` components of [`Self::run_wide_avx512`]:
    /// the four rows' scores on them, added into their T² and ‖t‖² lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn wide_tile<const GROUPS: usize>(
        &self,
        z: &[[f64; WIDE_SIGNALS]; 4],
        start: usize,
        t2: &mut [std::arch::x86_64::__m512d; 4],
        t_norm: &mut [std::arch::x86_64::__m512d; 4],
    ) {
        use std::arch::x86_64::{__m512d, _mm512_add_pd, _mm512_fmadd_pd, _mm512_mul_pd};
        use std::arch::x86_64::{_mm512_loadu_pd, _mm512_set1_pd, _mm512_setzero_pd};
        let load = |eight: &[f64]| {
            assert!(eight.len() >= 8);
            // SAFETY: eight values, checked above.
            unsafe { _mm512_loadu_pd(eight.as_ptr()) }
        };
        let mut scores = [[_mm512_setzero_pd(); GROUPS]; 4];
        for (j, loadings) in self.loadings_t.as_slice().chunks_exact(self.padded).enumerate() {
            let tile = &loadings[start..start + 8 * GROUPS];
            let l: [__m512d; GROUPS] = std::array::from_fn(|g| load(&tile[8 * g..]));
            for (row_scores, row_z) in scores.iter_mut().zip(z) {
                let zr = _mm512_set1_pd(row_z[j]);
                for (score, lg) in row_scores.iter_mut().zip(&l) {
                    *score = _mm512_fmadd_pd(zr, *lg, *score);
                }
            }
        }
        for g in 0..GROUPS {
            let inverse = load(&self.inverse_eigen[start + 8 * g..]);
            for ((row_scores, row_t2), row_t_norm) in scores.iter().zip(t2.iter_mut()).zip(t_norm.iter_mut()) {
                let square = _mm512_mul_pd(row_scores[g], row_scores[g]);
                *row_t2 = _mm512_fmadd_pd(square, inverse, *row_t2);
                *row_t_norm = _mm512_add_pd(square, *row_t_norm);
            }
        }
    }

    /// [`Self::run`] in blocks of rows through one matrix product each.
    fn run_blocks(&self, rows: &[Vec<f64>], out: &mut Statistics) {
        let (model, p, padded) = (self.model, self.model.used.len(), self.padded);
        let mut z = DMatrix::<f64>::zeros(p, Self::BLOCK);
        let mut t = DMatrix::<f64>::zeros(padded, Self::BLOCK);
        let mut z_norms = [0.0f64; Self::BLOCK];
        for (b, block) in rows.chunks(Self::BLOCK).enumerate() {
            for ((row, z_row), z_norm) in block.iter().zip(z.as_mut_slice().chunks_exact_mut(p)).zip(&mut z_norms) {
                if row.len() != model.width {
                    z_row.fill(0.0);
                    *z_norm = f64::NAN;
                    continue;
                }
                let mut norm = 0.0;
                let mut standardise = |slot: &mut f64, value: f64, mean: f64, inverse: f64| {
                    let v = (value - mean) * inverse;
                    norm += v * v;
                    *slot = v;
                };
                let scaling = model.mean.iter().zip(&self.inverse_scale);
                if self.all_kept {
                    for ((slot, value), (mean, inverse)) in z_row.iter_mut().zip(row).zip(scaling) {
                        standardise(slot, *value, *mean, *inverse);
                    }
                } else {
                    for ((slot, &j), (mean, inverse)) in z_row.iter_mut().zip(model.used).zip(scaling) {
                        standardise(slot, row[j], *mean, *inverse);
                    }
                }
                // A gap (NaN, ±∞) makes the norm NaN or ∞; so can a huge but
                // finite row, which then goes row by row too (the same score).
                if norm.is_finite() {
                    *z_norm = norm;
                } else {
                    z_row.fill(0.0);
                    *z_norm = f64::NAN;
                }
            }
            let used = block.len();
            let mut t_block = t.columns_mut(0, used);
            t_block.gemm(1.0, &self.loadings_t, &z.columns(0, used), 0.0);
            for (k, (t_row, z_norm)) in t.as_slice().chunks_exact(padded).zip(&z_norms[..used]).enumerate() {
                // Four lanes (the padding's width), summed at the end: vectorised.
                let (mut t2_lanes, mut t_norm_lanes) = ([0.0; 4], [0.0; 4]);
                for (tc, inv) in t_row.chunks_exact(4).zip(self.inverse_eigen.chunks_exact(4)) {
                    for lane in 0..4 {
                        let square = tc[lane] * tc[lane];
                        t2_lanes[lane] += square * inv[lane];
                        t_norm_lanes[lane] += square;
                    }
                }
                let t2 = (t2_lanes[0] + t2_lanes[1]) + (t2_lanes[2] + t2_lanes[3]);
                let t_norm = (t_norm_lanes[0] + t_norm_lanes[1]) + (t_norm_lanes[2] + t_norm_lanes[3]);
                let i = b * Self::BLOCK + k;
                if z_norm.is_nan() {
                    out.put(i, f64::NAN, f64::NAN);
                } else {
                    out.put(i, t2, (z_norm - t_norm).max(0.0));
                }
            }
        }
    }
}

/// Where [`BatchKernel::run`] puts each row's statistics (indices relative
/// to the rows it was given).
pub(crate) enum Statistics<'o> {
    /// The detector's value, max(T² / T² limit, SPE / SPE limit); NaN for a
    /// row with a gap.
    Values { out: &'o mut [f64], t2_limit: f64, spe_limit: f64 },
    /// T² and SPE as they are.
    Pairs(&'o mut [(f64, f64)]),
}

impl Statistics<'_> {
    /// Row `i`'s T² and SPE.
    #[inline]
    fn put(&mut self, i: usize, t2: f64, spe: f64) {
        match self {
            Statistics::Values { out, t2_limit, spe_limit } => out[i] = (t2 / *t2_limit).max(spe / *spe_limit),
            Statistics::Pairs(out) => out[i] = (t2, spe),
        }
    }

    /// Rows `first..first + count`'s T² and SPE, one per lane; NaN for the
    /// lanes not in `valid`. The same values as [`Self::put`], eight divisions
    /// at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn put_lanes(
        &mut self,
        first: usize,
        count: usize,
        t2: std::arch::x86_64::__m512d,
        spe: std::arch::x86_64::__m512d,
        valid: u8,
    ) {
        use std::arch::x86_64::{_mm512_div_pd, _mm512_mask_blend_pd, _mm512_mask_storeu_pd, _mm512_max_pd};
        use std::arch::x86_64::{_mm512_set1_pd, _mm512_storeu_pd};
        let nan = _mm512_set1_pd(f64::NAN);
        let (t2, spe) = (_mm512_mask_blend_pd(valid, nan, t2), _mm512_mask_blend_pd(valid, nan, spe));
        match self {
            Statistics::Values { out, t2_limit, spe_limit } => {
                let out = &mut out[first..first + count];
                let t2 = _mm512_div_pd(t2, _mm512_set1_pd(*t2_limit));
                let spe = _mm512_div_pd(spe, _mm512_set1_pd(*spe_limit));
                // Valid lanes hold no NaN, where this max is `f64::max`; the others are NaN, as from `put`.
                let value = _mm512_mask_blend_pd(valid, nan, _mm512_max_pd(t2, spe));
                assert!(count <= 8);
                // SAFETY: `out` holds `count` ≤ 8 values, the mask writes only those.
                unsafe {
                    if count == 8 {
                        _mm512_storeu_pd(out.as_mut_ptr(), value);
                    } else {
                        _mm512_mask_storeu_pd(out.as_mut_ptr(), ((1u16 << count) - 1) as u8, value);
                    }
                }
            }
            Statistics::Pairs(_) => {
                let (mut t2s, mut spes) = ([0.0f64; 8], [0.0f64; 8]);
                // SAFETY: each array holds eight values.
                unsafe {
                    _mm512_storeu_pd(t2s.as_mut_ptr(), t2);
                    _mm512_storeu_pd(spes.as_mut_ptr(), spe);
                }
                for lane in 0..count {
                    self.put(first + lane, t2s[lane], spes[lane]);
                }
            }
        }
    }
}

/// Eight rows of eight values as eight columns: `columns[j]` lane `r` is `rows[r]` lane `j`.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose8(rows: &[std::arch::x86_64::__m512d; 8]) -> [std::arch::x86_64::__m512d; 8] {
    use std::arch::x86_64::{_mm512_permutex2var_pd, _mm512_set_epi64, _mm512_unpackhi_pd, _mm512_unpacklo_pd};
    // Pairs of rows interleaved: lanes (r, r+1) of columns 0, 2, 4, 6 (lo) or 1, 3, 5, 7 (hi).
    let pair = |a: usize| (_mm512_unpacklo_pd(rows[a], rows[a + 1]), _mm512_unpackhi_pd(rows[a], rows[a + 1]));
    let (p01, p23, p45, p67) = (pair(0), pair(2), pair(4), pair(6));
    // Four rows: columns j and j + 4, two lanes of each pair.
    let low = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
    let high = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
    let quad = |x, y| (_mm512_permutex2var_pd(x, low, y), _mm512_permutex2var_pd(x, high, y));
    let (q0_4, q2_6) = quad(p01.0, p23.0);
    let (q1_5, q3_7) = quad(p01.1, p23.1);
    let (r0_4, r2_6) = quad(p45.0, p67.0);
    let (r1_5, r3_7) = quad(p45.1, p67.1);
    // Eight rows: first halves (column j) or second halves (column j + 4) of both quads.
    let first = _mm512_set_epi64(11, 10, 9, 8, 3, 2, 1, 0);
    let second = _mm512_set_epi64(15, 14, 13, 12, 7, 6, 5, 4);
    let join = |x, y| (_mm512_permutex2var_pd(x, first, y), _mm512_permutex2var_pd(x, second, y));
    let (c0, c4) = join(q0_4, r0_4);
    let (c1, c5) = join(q1_5, r1_5);
    let (c2, c6) = join(q2_6, r2_6);
    let (c3, c7) = join(q3_7, r3_7);
    [c0, c1, c2, c3, c4, c5, c6, c7]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SeededNormal;

    /// A model of `width` signals, `components` of them kept, some signals
    /// left out (`skip`), random loadings and eigenvalues; and its rows.
    struct Case {
        width: usize,
        used: Vec<usize>,
        mean: Vec<f64>,
        scale: Vec<f64>,
        loadings: Vec<f64>,
        components: usize,
        eigenvalues: Vec<f64>,
    }

    impl Case {
        fn new(width: usize, components: usize, skip: &[usize], seed: u64) -> Case {
            let mut g = SeededNormal::new(seed);
            let used: Vec<usize> = (0..width).filter(|j| !skip.contains(j)).collect();
            let p = used.len();
            Case {
                width,
                mean: (0..p).map(|_| g.normal()).collect(),
                scale: (0..p).map(|_| 0.5 + g.uniform()).collect(),
                loadings: (0..p * components).map(|_| g.normal() / (p as f64).sqrt()).collect(),
                eigenvalues: (0..p).map(|c| 3.0 / (c as f64 + 1.0)).collect(),
                used,
                components,
            }
        }

        fn projection(&self) -> Projection<'_> {
            Projection {
                width: self.width,
                used: &self.used,
                mean: &self.mean,
                scale: &self.scale,
                loadings: &self.loadings,
                components: self.components,
                eigenvalues: &self.eigenvalues,
            }
        }
    }

    /// Rows around the model, with a gap, a huge value, an infinity, a row
    /// of another width and a gap in a left-out column (which is no gap).
    fn rows(width: usize, n: usize, seed: u64, skip: &[usize]) -> Vec<Vec<f64>> {
        let mut g = SeededNormal::new(seed);
        let mut rows: Vec<Vec<f64>> = (0..n).map(|_| (0..width).map(|_| g.normal()).collect()).collect();
        rows[3][1] = f64::NAN;
        rows[17][width - 1] = 1e200;
        rows[40][width / 2] = f64::NEG_INFINITY;
        rows[41] = vec![1.0; width + 1];
        for &j in skip {
            rows[50][j] = f64::NAN;
        }
        rows
    }

    #[test]
    fn every_kernel_this_cpu_has_gives_the_reference_statistics() {
        // (width, components, left-out columns): narrow, one register, two,
        // too wide for the rows in lanes, too wide for AVX-512 rows.
        let cases = [
            (3, 1, vec![]),
            (8, 3, vec![]),
            (8, 4, vec![2]),
            (13, 5, vec![0, 9]),
            (16, 9, vec![]),
            (20, 6, vec![]),
            (52, 17, vec![5]),
            (WIDE_SIGNALS + 3, 12, vec![]),
        ];
        for (width, components, skip) in cases {
            let case = Case::new(width, components, &skip, width as u64);
            let kernel = BatchKernel::new(case.projection());
            let rows = rows(width, 203, 7, &skip);
            let mut reference = vec![(0.0, 0.0); rows.len()];
            kernel.run_with(KernelChoice::Scalar, &rows, &mut Statistics::Pairs(&mut reference));
            assert!(reference[50].0.is_finite() && reference[3].0.is_nan() && reference[41].1.is_nan());
            let (signals, padded) = kernel.size();
            let mut ran = 0;
            for choice in KernelChoice::ALL.into_iter().filter(|c| c.fits(width, signals, padded)) {
                let mut pairs = vec![(0.0, 0.0); rows.len()];
                kernel.run_with(choice, &rows, &mut Statistics::Pairs(&mut pairs));
                let mut values = vec![0.0; rows.len()];
                kernel.run_with(
                    choice,
                    &rows,
                    &mut Statistics::Values { out: &mut values, t2_limit: 2.0, spe_limit: 3.0 },
                );
                for (i, ((t2, spe), (kt2, kspe))) in reference.iter().copied().zip(pairs).enumerate() {
                    let close = |a: f64, b: f64| (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(1.0);
                    assert!(
                        close(t2, kt2) && close(spe, kspe),
                        "{width} wide, row {i}, {choice:?}: ({t2}, {spe}) vs ({kt2}, {kspe})"
                    );
                    let value = (t2 / 2.0).max(spe / 3.0);
                    assert!(
                        close(value, values[i]),
                        "{width} wide, row {i}, {choice:?}: value {value} vs {}",
                        values[i]
                    );
                }
                ran += 1;
            }
            assert!(ran >= 2, "the reference and the blocks run everywhere");
        }
    }

    #[test]
    fn the_fast_kernels_are_chosen_unless_simd_is_off() {
        let case = Case::new(8, 3, &[], 1);
        let kernel = BatchKernel::new(case.projection());
        assert_eq!(kernel.kernel() == KernelChoice::Scalar, !simd_allowed(), "{:?}", kernel.kernel());
    }
}
