//! Softmax over each row, with max subtraction.
//!
//! # Numerics
//! The scalar twin [`softmax_row`]: `e_j = exp(x_j - max)` in f32 (std's `expf`), the sum of
//! the `e_j` in f64, and `e_j · (1/sum)` in f64 rounded to f32 once. The AVX2 and AVX-512
//! kernels sum in f32 lanes, as PyTorch does (see [`SoftmaxKernel`]).
//!
//! # Masked entries and special rows
//! - `-inf` entries (masked keys) become exactly 0 and do not disturb the others.
//! - A row whose entries are all `-inf` (every key masked) becomes **all zeros**, not NaN: such a
//!   query attends to nothing. (PyTorch gives NaN for `-inf` masks and a uniform row for its
//!   `finfo.min` masks; koembed's packed batches never produce this row.)
//! - A row with a NaN (even one of NaN and `-inf` only), or with `+inf` (inf - inf), becomes all
//!   NaN, as in PyTorch.

use crate::error::{expect_2d, Result};
use crate::ops::for_each_row;
use crate::tensor::TensorViewMut;

/// `x[M,N] = softmax(x)` over each row (see the module docs for `-inf` and all-masked rows).
pub fn softmax_rows_inplace(mut x: TensorViewMut<'_>) -> Result<()> {
    let (_, n) = expect_2d("softmax_rows_inplace", "x", x.shape(), ["M", "N"])?;
    for_each_row(x.as_mut_slice(), n, softmax_row);
    Ok(())
}

/// One row, in place.
pub(crate) fn softmax_row(row: &mut [f32]) {
    // f32::max skips NaN; a NaN entry still makes the row NaN through exp(NaN) in the sum.
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if max == f32::NEG_INFINITY {
        // Every entry -inf (all masked) or NaN: NaN wins, as anywhere else in the row.
        let fill = if row.iter().any(|v| v.is_nan()) {
            f32::NAN
        } else {
            0.0
        };
        row.fill(fill);
        return;
    }
    let mut sum = 0.0f64;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v = (*v as f64 * inv) as f32;
    }
}

/// How [`softmax_row_scaled`] runs: the vector kernel or the scalar twin ([`softmax_row`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SoftmaxKernel {
    /// AVX2 + FMA: the AVX-512 kernel's passes and exponentials in 8 lanes (2^t by the same
    /// polynomial, the same bits lane for lane), the sum in 8 f32 lanes.
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2Proof),
    /// AVX-512F: 16 lanes, rows in groups of 16, a read-only max pass, 2^t from one `vfmsub`
    /// (scale and log₂e together), a degree-6 polynomial and `vscalefps` (within 1 ulp, 0.875
    /// measured), the sum in f32 lanes, the row's tail in masked vectors.
    #[cfg(target_arch = "x86_64")]
    Avx512(Avx512Proof),
    Scalar,
}

/// Proof that the CPU has AVX-512F and FMA and the AVX-512 kernels are on
/// ([`crate::avx512_enabled`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Avx512Proof(());

/// Proof that the CPU has AVX2 and FMA: only [`SoftmaxKernel::detect`] makes one, so holding an
/// `Avx2` kernel is what makes calling it sound (no per-row check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Avx2Proof(());

impl SoftmaxKernel {
    /// The fastest kernel this CPU supports.
    pub(crate) fn detect() -> SoftmaxKernel {
        #[cfg(target_arch = "x86_64")]
        if crate::avx512_enabled() {
            return SoftmaxKernel::Avx512(Avx512Proof(()));
        }
        SoftmaxKernel::detect_avx2()
    }

    /// The AVX2 kernel where the CPU has it (attention pinned to the AVX2 GEMM), else scalar.
    pub(crate) fn detect_avx2() -> SoftmaxKernel {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return SoftmaxKernel::Avx2(Avx2Proof(()));
        }
        SoftmaxKernel::Scalar
    }

    /// Every kernel this CPU supports (for tests).
    #[cfg(test)]
    pub(crate) fn supported() -> Vec<SoftmaxKernel> {
        let mut k = vec![SoftmaxKernel::Scalar];
        for kernel in [SoftmaxKernel::detect_avx2(), SoftmaxKernel::detect()] {
            if !k.contains(&kernel) {
                k.push(kernel);
            }
        }
        k
    }
}

/// `row = softmax(row · scale)`: attention's scaling fused into the softmax passes.
///
/// Scaling happens first, in f32, exactly as `scores · scale` then softmax would. Special rows
/// (an infinite or NaN maximum) take the scalar path, so `-inf`, all-masked and NaN rows behave
/// as [`softmax_row`] documents with either kernel.
pub(crate) fn softmax_row_scaled(row: &mut [f32], scale: f32, kernel: SoftmaxKernel) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        SoftmaxKernel::Avx2(_proof) => {
            // SAFETY: the proof exists only when `detect` found AVX2 + FMA.
            unsafe { x86::softmax_row_scaled_avx2(row, scale) }
        }
        #[cfg(target_arch = "x86_64")]
        SoftmaxKernel::Avx512(_proof) => {
            // SAFETY: the proof exists only when `detect` found AVX-512F + FMA.
            unsafe { x86::softmax_row_scaled_avx512(row, scale) }
        }
        SoftmaxKernel::Scalar => {
            for v in row.iter_mut() {
                *v *= scale;
            }
            softmax_row(row);
        }
    }
}

/// [`softmax_row_scaled`] on every row of `rows` (rows of `n` values, `ld` >= n apart; the
/// values between a row's end and the next row are not touched),
/// except that where the kernel can (AVX-512, AVX2) the rows are left as exp(x·scale - max),
/// unnormalised, with `inverses[i]` = 1/sum of row i: attention multiplies its T x d context
/// rows by it, d products a row instead of T (5% of attention at T = 512, d = 32). Then
/// `row[j] · inverses[i]` is bit for bit what the normalised row holds. The scalar kernel
/// normalises and sets `inverses` to 1. The vector kernels run the rows in groups (see
/// `softmax_rows_scaled_avx512`).
///
/// # Panics
/// If `inverses` does not hold one value per row.
pub(crate) fn softmax_rows_scaled_unnormalised(
    rows: &mut [f32],
    n: usize,
    ld: usize,
    scale: f32,
    kernel: SoftmaxKernel,
    inverses: &mut [f32],
) {
    if n == 0 {
        return;
    }
    assert!(ld >= n, "row stride {ld} below the row length {n}");
    assert_eq!(inverses.len() * ld, rows.len(), "one inverse per row");
    match kernel {
        #[cfg(target_arch = "x86_64")]
        SoftmaxKernel::Avx512(_proof) => {
            // SAFETY: the proof exists only when `detect` found AVX-512F + FMA.
            unsafe { x86::softmax_rows_scaled_avx512(rows, n, ld, scale, Some(inverses)) }
        }
        #[cfg(target_arch = "x86_64")]
        SoftmaxKernel::Avx2(_proof) => {
            // SAFETY: the proof exists only when `detect_avx2` found AVX2 + FMA.
            unsafe { x86::softmax_rows_scaled_avx2(rows, n, ld, scale, Some(inverses)) }
        }
        SoftmaxKernel::Scalar => {
            rows.chunks_exact_mut(ld)
                .for_each(|row| softmax_row_scaled(&mut row[..n], scale, kernel));
            inverses.fill(1.0);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    const LOG2_E: f32 = std::f32::consts::LOG2_E;

    /// 2^t of 8 lanes: the lanes of [`exp2_avx512`], bit for bit (the same clamp, rounding,
    /// reduction and polynomial), with `vscalefps`' one rounding of p·2^n done by one product:
    /// the polynomial runs on coefficients scaled by 2^-64 ([`EXP2_P_DOWN`]), which is exact
    /// step for step (every value stays normal, and scaling by a power of two commutes with
    /// rounding there), and p·2^-64 times 2^(n+64) (n >= -151, so a normal exponent) rounds
    /// once, denormals included. Clamped at -151, so -inf gives exactly 0; NaN stays NaN;
    /// valid for t <= 63 (softmax's t are <= 0).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp2_avx2(t: __m256) -> __m256 {
        // maxps returns its second operand when either is NaN: NaN goes on.
        let t = _mm256_max_ps(_mm256_set1_ps(-151.0), t);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let r = _mm256_sub_ps(t, n);
        let mut p = _mm256_set1_ps(EXP2_P_DOWN[0]);
        for &c in &EXP2_P_DOWN[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        // 2^(n + 64) as bits: biased exponent n + 64 + 127 in [40, 191]. A NaN lane's n
        // converts to i32::MIN, whose bits do not matter: p is NaN.
        let up = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(64 + 127),
        )));
        _mm256_mul_ps(p, up)
    }

    /// [`EXP2_P`] times 2^-64, exactly (a power of two; the smallest, about 8e-24, is normal).
    const EXP2_P_DOWN: [f32; 7] = {
        let mut c = EXP2_P;
        let mut i = 0;
        while i < c.len() {
            c[i] *= 1.0 / 18_446_744_073_709_551_616.0;
            i += 1;
        }
        c
    };

    /// One row by [`softmax_rows_scaled_avx2`].
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_row_scaled_avx2(row: &mut [f32], scale: f32) {
        let n = row.len();
        // SAFETY: the contract.
        unsafe { softmax_rows_scaled_avx2(row, n, n, scale, None) }
    }

    /// The lanes of the last, partial 8-value chunk of a row of `n` values (n mod 8 > 0),
    /// as a `vmaskmovps` mask (a lane is live when its top bit is set).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn tail_mask(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32((n % 8) as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// [`softmax_rows_scaled_avx512`]'s passes in 8 lanes: over groups of rows, a read-only
    /// max (scale > 0 keeps the order), then 2^(x·c - max·c) with c = fl(scale·log₂e) in one
    /// `vfmsub` ([`exp2_avx2`]: the AVX-512 kernel's exponentials, lane for lane), summed in
    /// f32 lanes, then the products with 1/sum, or (`inverses_out`) 1/sum handed to the
    /// caller. The sum runs in 8 lanes instead of 16, so a row's sum (and so its
    /// probabilities) can differ from the AVX-512 kernel's in the last bit. The tail
    /// (n mod 8) is one masked chunk whose dead lanes hold -inf. NaN, +inf and all -inf rows
    /// follow [`super::softmax_row`] (inverse 1).
    ///
    /// It replaced a kernel that ran one row at a time (exp by ln 2 and a degree-7 polynomial,
    /// the sum in f64, always normalised): on Zen 3, 2 threads, attention over 64 x 128 tokens
    /// (12 heads of 32) took 0.92x its time, over 8 x 512 0.91x (in-process A/B, 20
    /// alternating pairs, B faster in all 20).
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `inverses_out`, if any, holds a value per row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_rows_scaled_avx2(
        rows: &mut [f32],
        n: usize,
        ld: usize,
        scale: f32,
        mut inverses_out: Option<&mut [f32]>,
    ) {
        const GROUP: usize = 8;
        if n == 0 {
            return;
        }
        if scale.is_nan() || scale <= 0.0 {
            // The read-only max needs scale > 0: scale first, and x · 1 is exact.
            for row in rows.chunks_exact_mut(ld) {
                row[..n].iter_mut().for_each(|v| *v *= scale);
            }
            // SAFETY: the contract.
            return unsafe { softmax_rows_scaled_avx2(rows, n, ld, 1.0, inverses_out) };
        }
        let whole = n / 8;
        let tail = (!n.is_multiple_of(8)).then(|| tail_mask(n));
        let to_log2 = scale * LOG2_E;
        let vc = _mm256_set1_ps(to_log2);
        let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
        // The tail chunk at `p`, dead lanes -inf.
        let load_tail = |p: *const f32, m: __m256i| {
            // SAFETY: the masked load reads only the live lanes, inside the row.
            let x = unsafe { _mm256_maskload_ps(p, m) };
            _mm256_blendv_ps(ninf, x, _mm256_castsi256_ps(m))
        };
        for (g, group) in rows.chunks_mut(GROUP * ld).enumerate() {
            let mut maxes = [0.0f32; GROUP];
            // 1 for the rows the scalar twin normalised already.
            let mut sums = [1.0f32; GROUP];
            // SAFETY (the passes): full chunks cover row + 8c .. + 8 for c < whole (8c + 8
            // <= n), the masked tail chunk the live lanes 8·whole .. n only.
            unsafe {
                for (row, max) in group.chunks_exact(ld).zip(&mut maxes) {
                    let ptr = row.as_ptr();
                    // Two chains: the max's latency, not its throughput, bounds a short row.
                    let (mut m0, mut m1) = (ninf, ninf);
                    let mut c = 0;
                    while c + 2 <= whole {
                        // Second operand on NaN: NaN entries are skipped, as f32::max does.
                        m0 = _mm256_max_ps(_mm256_loadu_ps(ptr.add(8 * c)), m0);
                        m1 = _mm256_max_ps(_mm256_loadu_ps(ptr.add(8 * c + 8)), m1);
                        c += 2;
                    }
                    if c < whole {
                        m0 = _mm256_max_ps(_mm256_loadu_ps(ptr.add(8 * c)), m0);
                    }
                    if let Some(m) = tail {
                        m1 = _mm256_max_ps(load_tail(ptr.add(8 * whole), m), m1);
                    }
                    let v = _mm256_max_ps(m0, m1);
                    let v = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                    let v = _mm_max_ps(v, _mm_movehl_ps(v, v));
                    let v = _mm_max_ss(v, _mm_movehdup_ps(v));
                    *max = _mm_cvtss_f32(v) * to_log2;
                }
                for ((row, &max), sum) in group.chunks_exact_mut(ld).zip(&maxes).zip(&mut sums) {
                    if !max.is_finite() {
                        let row = &mut row[..n];
                        row.iter_mut().for_each(|v| *v *= scale);
                        super::softmax_row(row);
                        continue;
                    }
                    let ptr = row.as_mut_ptr();
                    let vm = _mm256_set1_ps(max);
                    let mut acc = _mm256_setzero_ps();
                    for c in 0..whole {
                        let x = _mm256_loadu_ps(ptr.add(8 * c));
                        let e = exp2_avx2(_mm256_fmsub_ps(x, vc, vm));
                        _mm256_storeu_ps(ptr.add(8 * c), e);
                        acc = _mm256_add_ps(acc, e);
                    }
                    if let Some(m) = tail {
                        let p = ptr.add(8 * whole);
                        let e = exp2_avx2(_mm256_fmsub_ps(load_tail(p, m), vc, vm));
                        _mm256_maskstore_ps(p, m, e);
                        acc = _mm256_add_ps(acc, e);
                    }
                    let v =
                        _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
                    let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
                    let v = _mm_add_ss(v, _mm_movehdup_ps(v));
                    *sum = _mm_cvtss_f32(v);
                }
                let mut inverses = [0.0f32; GROUP];
                _mm256_storeu_ps(
                    inverses.as_mut_ptr(),
                    _mm256_div_ps(_mm256_set1_ps(1.0), _mm256_loadu_ps(sums.as_ptr())),
                );
                if let Some(out) = inverses_out.as_deref_mut() {
                    let rows_here = group.len() / ld;
                    out[g * GROUP..g * GROUP + rows_here].copy_from_slice(&inverses[..rows_here]);
                    continue;
                }
                for ((row, &max), &inverse) in group.chunks_exact_mut(ld).zip(&maxes).zip(&inverses)
                {
                    if !max.is_finite() {
                        continue;
                    }
                    let vi = _mm256_set1_ps(inverse);
                    let ptr = row.as_mut_ptr();
                    for c in 0..whole {
                        let x = _mm256_loadu_ps(ptr.add(8 * c));
                        _mm256_storeu_ps(ptr.add(8 * c), _mm256_mul_ps(x, vi));
                    }
                    if let Some(m) = tail {
                        let p = ptr.add(8 * whole);
                        _mm256_maskstore_ps(p, m, _mm256_mul_ps(_mm256_maskload_ps(p, m), vi));
                    }
                }
            }
        }
    }

    /// 2^r for |r| <= 1/2: a degree-6 fit (relative weights, f32 coefficients), within
    /// 0.94 ulp in f32 Horner with FMA; highest first.
    const EXP2_P: [f32; 7] = [
        0.000_153_458_11,
        0.001_339_993_1,
        0.009_618_489,
        0.055_503_286,
        0.240_226_46,
        // The fit's own value, which is ln 2 rounded to f32.
        std::f32::consts::LN_2,
        1.0,
    ];

    /// 2^t of 16 lanes, for softmax's t <= 0: t = n + r with n = round(t) and r = t - n
    /// exact, 2^r by [`EXP2_P`], 2^n applied by `vscalefps` (one rounding, denormals
    /// included). Softmax computes t = x·(scale·log₂e) - max in one `vfmsub`, which saves
    /// the multiply by log₂e and a two-part ln 2 reduction. Clamped at
    /// -151, where 2^t rounds to 0, so -inf gives exactly 0; NaN stays NaN; valid for
    /// t <= 127.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    fn exp2_avx512(t: __m512) -> __m512 {
        // maxps returns its second operand when either is NaN: NaN goes on.
        let t = _mm512_max_ps(_mm512_set1_ps(-151.0), t);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let r = _mm512_sub_ps(t, n);
        let mut p = _mm512_set1_ps(EXP2_P[0]);
        for &c in &EXP2_P[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// One row by [`softmax_rows_scaled_avx512`]; the tail (n mod 16) in one masked vector
    /// whose dead lanes hold -inf (max ignores them, exp makes them 0, never stored).
    ///
    /// # Safety
    /// The CPU supports AVX-512F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn softmax_row_scaled_avx512(row: &mut [f32], scale: f32) {
        let n = row.len();
        // SAFETY: the contract.
        unsafe { softmax_rows_scaled_avx512(row, n, n, scale, None) }
    }

    /// The lanes of 16-value chunk `c` that lie inside a row of `n` values.
    #[inline]
    fn chunk_mask(n: usize, c: usize) -> __mmask16 {
        let live = (n - 16 * c).min(16);
        ((1u32 << live) - 1) as __mmask16
    }

    /// [`softmax_row_scaled_avx512`] on each row of `rows` (rows of `n` values, `ld` >= n apart:
    /// attention pads its score rows so that they do not share L1 sets), the same bits row by
    /// row; each pass runs over a group of 16 rows before the next, so that one row's
    /// reductions (a 16-lane max, a 16-lane sum, a division: about 100 cycles of latency)
    /// overlap the others' work instead of waiting for each other (attention's rows are
    /// short: 8 vectors at T = 128).
    ///
    /// Three passes: a max that only reads (taken before scaling: with `scale > 0` rounding
    /// keeps the order), then 2^(x·c - max·c) with c = fl(scale·log₂e) (`to_log2`), the
    /// exponent in one rounding (`vfmsub`; [`exp2_avx512`]), summed in f32 lanes as PyTorch's
    /// softmax sums, then the products with 1/sum. The rounding of c scales every exponent by
    /// the same (1 ± 2⁻²⁴), an error of the size of the one rounding of x·scale - max it
    /// replaces.
    /// NaN, +inf and all -inf rows follow [`super::softmax_row`]. With `inverses_out`, the
    /// third pass is left to the caller: row i's 1/sum goes to `inverses_out[i]` (1 for the
    /// rows the scalar twin normalised).
    ///
    /// # Safety
    /// The CPU supports AVX-512F and FMA; `inverses_out`, if any, holds a value per row.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn softmax_rows_scaled_avx512(
        rows: &mut [f32],
        n: usize,
        ld: usize,
        scale: f32,
        mut inverses_out: Option<&mut [f32]>,
    ) {
        const GROUP: usize = 16;
        if n == 0 {
            return;
        }
        if scale.is_nan() || scale <= 0.0 {
            // The read-only max needs scale > 0: scale first, and x · 1 is exact.
            for row in rows.chunks_exact_mut(ld) {
                row[..n].iter_mut().for_each(|v| *v *= scale);
            }
            // SAFETY: the contract.
            return unsafe { softmax_rows_scaled_avx512(rows, n, ld, 1.0, inverses_out) };
        }
        let chunks = n.div_ceil(16);
        let mask = |c: usize| chunk_mask(n, c);
        // Exponents base 2: x·log₂e·scale.
        let to_log2 = scale * LOG2_E;
        let vc = _mm512_set1_ps(to_log2);
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        for (g, group) in rows.chunks_mut(GROUP * ld).enumerate() {
            let mut maxes = [0.0f32; GROUP];
            // 1 for the rows the scalar twin normalised already.
            let mut sums = [1.0f32; GROUP];
            // SAFETY (the passes): every access is of chunk c's lanes of a row of `group`
            // under mask(c), which covers row + 16c .. row + min(16c + 16, n) only.
            unsafe {
                for (row, max) in group.chunks_exact(ld).zip(&mut maxes) {
                    let ptr = row.as_ptr();
                    let mut vmax = ninf;
                    for c in 0..chunks {
                        let x = _mm512_mask_loadu_ps(ninf, mask(c), ptr.add(16 * c));
                        // Second operand on NaN: NaN entries are skipped, as f32::max does.
                        vmax = _mm512_max_ps(x, vmax);
                    }
                    *max = _mm512_reduce_max_ps(vmax) * to_log2;
                }
                for ((row, &max), sum) in group.chunks_exact_mut(ld).zip(&maxes).zip(&mut sums) {
                    if !max.is_finite() {
                        let row = &mut row[..n];
                        row.iter_mut().for_each(|v| *v *= scale);
                        super::softmax_row(row);
                        continue;
                    }
                    let ptr = row.as_mut_ptr();
                    let vm = _mm512_set1_ps(max);
                    // One accumulator: its 3-cycle add hides under the exp's dozen
                    // instructions (an array of two, indexed by c % 2, lived on the stack).
                    let mut acc = _mm512_setzero_ps();
                    for c in 0..chunks {
                        let m = mask(c);
                        // Dead lanes: -inf, whose exp is 0.
                        let x = _mm512_mask_loadu_ps(ninf, m, ptr.add(16 * c));
                        let e = exp2_avx512(_mm512_fmsub_ps(x, vc, vm));
                        _mm512_mask_storeu_ps(ptr.add(16 * c), m, e);
                        acc = _mm512_add_ps(acc, e);
                    }
                    *sum = _mm512_reduce_add_ps(acc);
                }
                let mut inverses = [0.0f32; GROUP];
                _mm512_storeu_ps(
                    inverses.as_mut_ptr(),
                    _mm512_div_ps(_mm512_set1_ps(1.0), _mm512_loadu_ps(sums.as_ptr())),
                );
                if let Some(out) = inverses_out.as_deref_mut() {
                    let rows_here = group.len() / ld;
                    out[g * GROUP..g * GROUP + rows_here].copy_from_slice(&inverses[..rows_here]);
                    continue;
                }
                for ((row, &max), &inverse) in group.chunks_exact_mut(ld).zip(&maxes).zip(&inverses)
                {
                    if !max.is_finite() {
                        continue;
                    }
                    let vi = _mm512_set1_ps(inverse);
                    let ptr = row.as_mut_ptr();
                    for c in 0..chunks {
                        let m = mask(c);
                        let x = _mm512_maskz_loadu_ps(m, ptr.add(16 * c));
                        _mm512_mask_storeu_ps(ptr.add(16 * c), m, _mm512_mul_ps(x, vi));
                    }
                }
            }
        }
    }

    /// Row i < `rows` of `scores` (`n` f32 at `scores + i·ld`): softmax(row · `scale`) by the
    /// passes of [`softmax_rows_scaled_avx512`] (the same exp and f32 sum, so the same
    /// probabilities before rounding), written as bf16 to `dst + i·ld_dst` by
    /// `vcvtne2ps2bf16` (nearest, ties to even; a probability below 2⁻¹²⁶ becomes 0, as
    /// `tdpbf16ps` reads it anyway). The row keeps exp(v - max) in place.
    ///
    /// Made for attention's blocks of 16 query rows, whose rows are short (T values): each
    /// pass runs over all the rows before the next, so the rows' reductions and the one
    /// division of all their sums overlap rather than wait on each other (per row they were
    /// a third of the time at T = 128).
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16, and FMA; `scale` > 0; the rows of `scores` readable and
    /// writable, those of `dst` writable, for i < rows.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,fma")]
    pub(crate) unsafe fn softmax_rows_scaled_to_bf16_avx512(
        scores: *mut f32,
        ld: usize,
        rows: usize,
        n: usize,
        scale: f32,
        dst: *mut u16,
        ld_dst: usize,
    ) {
        debug_assert!(scale > 0.0);
        const GROUP: usize = 16;
        let chunks = n.div_ceil(16);
        let mask = |c: usize| chunk_mask(n, c);
        // Exponents base 2: x·log₂e·scale.
        let to_log2 = scale * LOG2_E;
        let vc = _mm512_set1_ps(to_log2);
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut i0 = 0;
        while i0 < rows {
            let group = GROUP.min(rows - i0);
            let mut maxes = [0.0f32; GROUP];
            // 1 for the rows the scalar twin normalised already.
            let mut sums = [1.0f32; GROUP];
            // SAFETY (the passes): every access is of chunk c's lanes of a row i0 + i < rows
            // under mask(c), or of whole chunks below n, inside the rows (the contract).
            unsafe {
                for (i, max) in maxes.iter_mut().enumerate().take(group) {
                    let ptr = scores.add((i0 + i) * ld);
                    let mut vmax = ninf;
                    for c in 0..chunks {
                        let x = _mm512_mask_loadu_ps(ninf, mask(c), ptr.add(16 * c));
                        // Second operand on NaN: NaN entries are skipped, as f32::max does.
                        vmax = _mm512_max_ps(x, vmax);
                    }
                    *max = _mm512_reduce_max_ps(vmax) * to_log2;
                }
                for (i, (&max, sum)) in maxes.iter().zip(&mut sums).enumerate().take(group) {
                    let ptr = scores.add((i0 + i) * ld);
                    if !max.is_finite() {
                        let row = std::slice::from_raw_parts_mut(ptr, n);
                        row.iter_mut().for_each(|v| *v *= scale);
                        super::softmax_row(row);
                        continue;
                    }
                    let vm = _mm512_set1_ps(max);
                    // One accumulator: its 3-cycle add hides under the exp's dozen
                    // instructions (an array of two, indexed by c % 2, lived on the stack).
                    let mut acc = _mm512_setzero_ps();
                    for c in 0..chunks {
                        let m = mask(c);
                        let x = _mm512_mask_loadu_ps(ninf, m, ptr.add(16 * c));
                        let e = exp2_avx512(_mm512_fmsub_ps(x, vc, vm));
                        _mm512_mask_storeu_ps(ptr.add(16 * c), m, e);
                        acc = _mm512_add_ps(acc, e);
                    }
                    *sum = _mm512_reduce_add_ps(acc);
                }
                let mut inverses = [0.0f32; GROUP];
                let sums = _mm512_loadu_ps(sums.as_ptr());
                _mm512_storeu_ps(
                    inverses.as_mut_ptr(),
                    _mm512_div_ps(_mm512_set1_ps(1.0), sums),
                );
                for (i, &inverse) in inverses.iter().enumerate().take(group) {
                    let ptr = scores.add((i0 + i) * ld);
                    let out = dst.add((i0 + i) * ld_dst);
                    let vi = _mm512_set1_ps(inverse);
                    let mut c = 0;
                    while 16 * (c + 2) <= n {
                        let a = _mm512_mul_ps(_mm512_loadu_ps(ptr.add(16 * c)), vi);
                        let b = _mm512_mul_ps(_mm512_loadu_ps(ptr.add(16 * c + 16)), vi);
                        let pairs: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(b, a));
                        _mm512_storeu_si512(out.add(16 * c).cast(), pairs);
                        c += 2;
                    }
                    while c < chunks {
                        let m = mask(c);
                        let a = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, ptr.add(16 * c)), vi);
                        let half: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(a));
                        _mm256_mask_storeu_epi16(out.add(16 * c).cast(), m, half);
                        c += 1;
                    }
                }
            }
            i0 += group;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A seeded generator of scores, uniform in [-20, 20).
        fn scores_in_pm20(seed: u64) -> impl FnMut() -> f32 {
            let mut state = seed;
            move || {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 40.0 - 20.0
            }
        }

        /// Rows run in groups give each row the bits it gets alone: group sizes around 8 and 16,
        /// odd lengths, NaN, +inf and all -inf rows in the middle of a group.
        #[test]
        fn grouped_rows_equal_rows_alone_bit_for_bit() {
            type Rows = unsafe fn(&mut [f32], usize, usize, f32, Option<&mut [f32]>);
            let mut kernels: Vec<(&str, Rows)> = Vec::new();
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                kernels.push(("avx2", softmax_rows_scaled_avx2));
            }
            if crate::avx512_enabled() && is_x86_feature_detected!("fma") {
                kernels.push(("avx512", softmax_rows_scaled_avx512));
            }
            let mut next = scores_in_pm20(5);
            for (name, rows_fn) in kernels {
                for n in [1, 7, 8, 9, 16, 17, 128, 130] {
                    for rows in [1, 7, 8, 9, 15, 16, 17, 33] {
                        let mut x: Vec<f32> = (0..rows * n).map(|_| next()).collect();
                        if rows > 3 {
                            x[n + n / 2] = f32::NAN;
                            x[2 * n..3 * n].fill(f32::NEG_INFINITY);
                            x[3 * n] = f32::INFINITY;
                        }
                        let mut alone = x.clone();
                        for row in alone.chunks_exact_mut(n) {
                            // SAFETY: the kernel's features were checked above.
                            unsafe { rows_fn(row, n, n, 0.3, None) };
                        }
                        // SAFETY: as above.
                        unsafe { rows_fn(&mut x, n, n, 0.3, None) };
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&x), bits(&alone), "{name} n {n} rows {rows}");
                    }
                }
            }
        }

        #[test]
        fn bf16_rows_equal_the_f32_kernel_rounded_within_a_step() {
            if !(crate::avx512_enabled()
                && is_x86_feature_detected!("avx512bf16")
                && is_x86_feature_detected!("avx512bw"))
            {
                return;
            }
            let mut next = scores_in_pm20(11);
            let scale = 0.125f32;
            for n in [1, 7, 16, 17, 31, 32, 33, 65, 130, 200] {
                let rows = 21;
                let ld = n + 3;
                let mut scores: Vec<f32> = (0..rows * ld).map(|_| next()).collect();
                scores[2 * ld + n / 2] = f32::NAN;
                scores[5 * ld..5 * ld + n].fill(f32::NEG_INFINITY);
                scores[19 * ld + n - 1] = f32::INFINITY;
                let want: Vec<Vec<f32>> = (0..rows)
                    .map(|i| {
                        let mut row = scores[i * ld..i * ld + n].to_vec();
                        // SAFETY: AVX-512F and FMA checked above.
                        unsafe { softmax_row_scaled_avx512(&mut row, scale) };
                        row
                    })
                    .collect();
                let ld_dst = n + 1;
                let mut dst = vec![0xffffu16; rows * ld_dst];
                // SAFETY: AVX-512 F, BW, BF16 and FMA checked above; rows of n values at
                // strides ld and ld_dst inside both buffers.
                unsafe {
                    softmax_rows_scaled_to_bf16_avx512(
                        scores.as_mut_ptr(),
                        ld,
                        rows,
                        n,
                        scale,
                        dst.as_mut_ptr(),
                        ld_dst,
                    )
                };
                for (i, want) in want.iter().enumerate() {
                    let got = &dst[i * ld_dst..i * ld_dst + n];
                    assert_eq!(dst[i * ld_dst + n], 0xffff, "n {n} row {i}: wrote past n");
                    for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
                        let g = f32::from_bits((g as u32) << 16);
                        let w = crate::gemm::packed::round_to_bf16(w);
                        let what = format!("n {n} row {i} entry {j}: {g} vs {w}");
                        if w.is_nan() {
                            assert!(g.is_nan(), "{what}");
                        } else {
                            let steps = (g.to_bits() as i64 - w.to_bits() as i64).abs() >> 16;
                            assert!(steps <= 1, "{what}");
                        }
                    }
                }
            }
        }

        /// ulp distance between an f32 and the f64 truth, in units of the f32 ulp at the truth.
        fn ulps(got: f32, want: f64) -> f64 {
            let w = want as f32;
            let ulp = (f32::from_bits(w.to_bits() + 1) - w) as f64;
            (got as f64 - want).abs() / ulp
        }

        /// 2^t of the vector softmaxes over the range they feed it (t = x·c - max·c <= 0),
        /// on a dense grid: within 1 ulp of the truth where it is a normal number
        /// (t >= -126), within one denormal step (2^-149) below, and exactly 0 from -151 down
        /// to -inf; NaN stays NaN. The 8 lanes equal the 16 lanes of the AVX-512 kernel bit
        /// for bit where the CPU has both.
        #[test]
        fn exp2_is_within_1_ulp_on_the_softmax_range() {
            if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
                return;
            }
            let avx512 = crate::avx512_enabled();
            let n = 1_000_000;
            let mut worst = (0.0f64, 0.0f32);
            let mut ts = [0.0f32; 16];
            for i in (0..n).step_by(16) {
                for (j, t) in ts.iter_mut().enumerate() {
                    *t = -160.0 * ((i + j) as f32 / n as f32);
                }
                let mut lanes = [0.0f32; 16];
                // SAFETY: AVX2 + FMA checked above; `ts` and `lanes` hold 16 f32 each.
                unsafe {
                    for half in 0..2 {
                        let v = exp2_avx2(_mm256_loadu_ps(ts.as_ptr().add(8 * half)));
                        _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * half), v);
                    }
                }
                if avx512 {
                    let mut wide = [0.0f32; 16];
                    // SAFETY: AVX-512F + FMA (avx512_enabled); 16 f32 each.
                    unsafe {
                        let v = exp2_avx512(_mm512_loadu_ps(ts.as_ptr()));
                        _mm512_storeu_ps(wide.as_mut_ptr(), v);
                    }
                    for ((&t, &g), &w) in ts.iter().zip(&lanes).zip(&wide) {
                        assert_eq!(g.to_bits(), w.to_bits(), "8 vs 16 lanes at t = {t}");
                    }
                }
                for (&t, &got) in ts.iter().zip(&lanes) {
                    // `vscalefps`' semantics in scalar (the 16-lane kernel's bits on any CPU):
                    // the polynomial in f32 FMAs, then p·2^n exact in f64 and rounded once.
                    let tc = t.max(-151.0);
                    let n = tc.round_ties_even();
                    let r = tc - n;
                    let p = EXP2_P[1..].iter().fold(EXP2_P[0], |p, &c| p.mul_add(r, c));
                    let model = (p as f64 * (n as f64).exp2()) as f32;
                    assert_eq!(
                        got.to_bits(),
                        model.to_bits(),
                        "8 lanes vs scalar model at t = {t}"
                    );
                    let want = (t as f64).exp2();
                    if want >= f32::MIN_POSITIVE as f64 {
                        let e = ulps(got, want);
                        if e > worst.0 {
                            worst = (e, t);
                        }
                    } else {
                        let step = f32::from_bits(1) as f64;
                        assert!(
                            (got as f64 - want).abs() <= step,
                            "2^t at {t}: {got:e} vs {want:e}"
                        );
                        if t <= -151.0 {
                            assert_eq!(got, 0.0, "2^t at {t}");
                        }
                    }
                }
            }
            println!(
                "max 2^t error on [-126, 0]: {:.3} ulp at t = {}",
                worst.0, worst.1
            );
            assert!(
                worst.0 <= 1.0,
                "2^t error {:.3} ulp at t = {}",
                worst.0,
                worst.1
            );
            let special = [
                f32::NEG_INFINITY,
                -1e30,
                0.0,
                f32::NAN,
                -0.5,
                0.5,
                -150.5,
                -149.0,
            ];
            let mut lanes = [0.0f32; 8];
            // SAFETY: AVX2 + FMA; 8 f32 each.
            unsafe {
                let v = exp2_avx2(_mm256_loadu_ps(special.as_ptr()));
                _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            }
            assert_eq!(&lanes[..3], &[0.0, 0.0, 1.0]);
            assert!(lanes[3].is_nan());
            assert_eq!(lanes[7], f32::from_bits(1), "2^-149: the smallest denormal");
            if avx512 {
                let mut wide = [0.0f32; 16];
                let mut ts = [0.0f32; 16];
                ts[..8].copy_from_slice(&special);
                // SAFETY: as above.
                unsafe {
                    let v = exp2_avx512(_mm512_loadu_ps(ts.as_ptr()));
                    _mm512_storeu_ps(wide.as_mut_ptr(), v);
                }
                for ((t, g), w) in special.iter().zip(lanes).zip(&wide[..8]) {
                    assert!(
                        g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                        "at {t}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// softmax(x · scale) in f64.
    fn reference(x: &[f32], scale: f32) -> Vec<f64> {
        let s: Vec<f64> = x.iter().map(|&v| (v * scale) as f64).collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    }

    fn kernels() -> Vec<SoftmaxKernel> {
        SoftmaxKernel::supported()
    }

    /// A seeded generator of scores, uniform in [-30, 30).
    fn scores_in_pm30(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 60.0 - 30.0
        }
    }

    #[test]
    fn every_kernel_matches_f64_on_odd_lengths() {
        let mut next = scores_in_pm30(7);
        for kernel in kernels() {
            for len in [1, 3, 7, 8, 9, 16, 17, 64, 65, 127, 384, 1025] {
                let x: Vec<f32> = (0..len).map(|_| next()).collect();
                let want = reference(&x, 0.17677669);
                let mut got = x.clone();
                softmax_row_scaled(&mut got, 0.17677669, kernel);
                for (j, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    // x - max rounds in f32 (up to |x - max|·2^-24 <= 1.8e-6 relative after
                    // exp, scores here span 30·scale), exp within 2 ulp, one f32 rounding of
                    // the normalisation.
                    let err = (g as f64 - w).abs();
                    assert!(
                        err <= 2e-6 * w + 1e-30,
                        "{kernel:?} len {len} entry {j}: {g} vs {w} (error {err:e})"
                    );
                }
            }
        }
    }

    /// The unnormalised rows times their inverse are the normalised rows, bit for bit, with
    /// every kernel: odd lengths, groups of rows around 16, NaN, +inf and all -inf rows, rows
    /// side by side and rows apart (the values between them untouched).
    #[test]
    fn unnormalised_rows_times_their_inverse_are_the_softmax_rows() {
        const BETWEEN: f32 = 12345.0;
        let mut next = scores_in_pm30(3);
        for kernel in kernels() {
            for n in [1, 7, 16, 17, 130] {
                for (rows, gap) in [(1, 0), (5, 0), (16, 0), (17, 0), (33, 0), (17, 5), (33, 16)] {
                    let ld = n + gap;
                    let mut x = vec![BETWEEN; rows * ld];
                    for row in x.chunks_exact_mut(ld) {
                        row[..n].iter_mut().for_each(|v| *v = next());
                    }
                    if rows > 3 {
                        x[ld + n / 2] = f32::NAN;
                        x[2 * ld..2 * ld + n].fill(f32::NEG_INFINITY);
                        x[3 * ld] = f32::INFINITY;
                    }
                    let mut want = x.clone();
                    for row in want.chunks_exact_mut(ld) {
                        softmax_row_scaled(&mut row[..n], 0.125, kernel);
                    }
                    let mut inverses = vec![f32::NAN; rows];
                    softmax_rows_scaled_unnormalised(&mut x, n, ld, 0.125, kernel, &mut inverses);
                    for (i, (row, want)) in
                        x.chunks_exact(ld).zip(want.chunks_exact(ld)).enumerate()
                    {
                        for (j, (&e, &w)) in row.iter().zip(want).enumerate() {
                            let got = if j < n { e * inverses[i] } else { e };
                            assert!(
                                got.to_bits() == w.to_bits() || (got.is_nan() && w.is_nan()),
                                "{kernel:?} n {n} ld {ld} rows {rows}: row {i} entry {j}: {got} \
                                 vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn special_rows_behave_alike_with_every_kernel() {
        let inf = f32::INFINITY;
        for kernel in kernels() {
            let mut masked = vec![1.0, -inf, 2.0, -inf, 0.5, 0.0, -inf, 3.0, 1.0, -inf];
            softmax_row_scaled(&mut masked, 0.5, kernel);
            assert_eq!(masked[1], 0.0, "{kernel:?}");
            assert_eq!(masked[9], 0.0, "{kernel:?}");
            assert!(
                (masked.iter().sum::<f32>() - 1.0).abs() < 1e-6,
                "{kernel:?}"
            );

            let mut all_masked = vec![-inf; 11];
            softmax_row_scaled(&mut all_masked, 0.5, kernel);
            assert!(all_masked.iter().all(|&v| v == 0.0), "{kernel:?}");

            let mut nan = vec![0.0; 12];
            nan[10] = f32::NAN;
            softmax_row_scaled(&mut nan, 0.5, kernel);
            assert!(nan.iter().all(|v| v.is_nan()), "{kernel:?}: {nan:?}");

            let mut big = vec![0.0; 12];
            big[3] = inf;
            softmax_row_scaled(&mut big, 0.5, kernel);
            assert!(big.iter().all(|v| v.is_nan()), "{kernel:?}");
        }
    }
}
