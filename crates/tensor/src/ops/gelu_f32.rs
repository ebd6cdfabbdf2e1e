//! Exact-erf GELU evaluated in f32 and vectorised: [`gelu_erf_f32_inplace`].
//!
//! The same formula as [`gelu_erf`](super::gelu::gelu_erf), `0.5·x·erfc(-x/√2)` (not the tanh
//! approximation), evaluated with f32 arithmetic so that it runs 8 (AVX2) or 16 (AVX-512) lanes at
//! a time. Every kernel performs the same f32 operations in the same order with fused
//! multiply-adds, so all kernels give the same bits as the scalar twin [`gelu_erf_f32`].
//!
//! # Method
//! With z = |x|/√2 (clamped to 9) and t = 2/(2 + z):
//! `erfc(z) = t · exp(g(t) - z²)`, where g is a degree-9 polynomial fitted (Chebyshev
//! interpolation in f64 against `libm::erfc`, coefficients rounded to f32) to
//! `ln(erfc(z)/t) + z²` on z ∈ [0, 9] (max fit error 4.4e-8; `tests/gelu_f32.rs`
//! `refit_gelu_coefficients` re-derives them). Then with h = 0.5·x·erfc(z):
//! `gelu(x) = x - h` for x > 0 and `h` otherwise, which avoids every cancellation (for x > 0 the
//! correction h is small against x; for x ≤ 0 the result is h itself). exp is a range reduction
//! by ln 2 (Cody-Waite split) and a degree-7 Taylor polynomial (truncation error < 5.3e-9).
//! x > 10 returns x (the exact value rounds to x from x ≈ 5.9 on); x < -12 returns -0
//! (|gelu(-12)| < 1e-32).
//!
//! # Error (measured, `tests/gelu_f32.rs`)
//! Against the f64 reference `0.5·x·libm::erfc(-x/√2)` on a dense grid of 4,000,001 points of
//! [-10, 10]: **max abs error 2.385e-7** (at x = 4.0466: half an ulp of outputs in [4, 8), as
//! for the correctly rounded [`gelu_erf`](super::gelu::gelu_erf), so the two differ by at most
//! 4.8e-7 anywhere: 1 ulp of an output in [4, 8), far less below |x| = 4).
//! Relative accuracy is lower where the output is small: for x < 0 (output 0.5·x·erfc),
//! rounding z = |x|/√2 and z² in f32 gives up to 20 ulp (2.4e-6 relative) at x = -3.25
//! (|gelu| = 1.9e-3, so 4.7e-9 absolute), and ~1e-5 relative near x = -10 (|gelu| < 1e-21).
//!
//! Special values: NaN stays NaN, ±0 stays ±0, +inf gives +inf, -inf gives -0.

// The fitted coefficients are written with all the digits the fit printed.
#![allow(clippy::excessive_precision)]

use rayon::prelude::*;

/// Which implementation [`gelu_erf_f32_inplace_with`] runs. All give the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GeluKernel {
    /// 16 lanes, AVX-512F (+ FMA).
    Avx512,
    /// 8 lanes, AVX2 + FMA.
    Avx2,
    /// One value at a time, [`gelu_erf_f32`] (`f32::mul_add`; slow on CPUs without FMA).
    Scalar,
}

impl GeluKernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> GeluKernel {
        [GeluKernel::Avx512, GeluKernel::Avx2]
            .into_iter()
            .find(|k| k.is_supported())
            .unwrap_or(GeluKernel::Scalar)
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            GeluKernel::Avx512 => Avx512Gelu::new().is_some(),
            GeluKernel::Avx2 => Avx2Gelu::new().is_some(),
            GeluKernel::Scalar => true,
        }
    }

    /// Every kernel this CPU supports, fastest first.
    pub fn supported() -> Vec<GeluKernel> {
        [GeluKernel::Avx512, GeluKernel::Avx2, GeluKernel::Scalar]
            .into_iter()
            .filter(|k| k.is_supported())
            .collect()
    }
}

// Polynomial g(t) ≈ ln(erfc(z)/t) + z², t = 2/(2+z), lowest degree first.
const G: [f32; 10] = [
    -1.2654217e0,
    9.9811643e-1,
    3.9095455e-1,
    1.4477707e-2,
    5.9204828e-2,
    -1.873603e-1,
    -5.6880635e-1,
    1.0622663e0,
    -6.411484e-1,
    1.3771698e-1,
];
const Z_MAX: f32 = 9.0;
const X_HI: f32 = 10.0;
const X_LO: f32 = -12.0;
pub(crate) const LOG2_E: f32 = std::f32::consts::LOG2_E;
// ln 2 = LN2_HI + LN2_LO; LN2_HI has 9 significant bits, so n·LN2_HI is exact for |n| < 2^15.
pub(crate) const LN2_HI: f32 = 0.693_359_375;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
// exp(r) for |r| <= ln2/2: Taylor coefficients 1/i!, i = 0..=7, highest first for Horner.
pub(crate) const EXP_P: [f32; 8] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// GELU (exact erf form) evaluated in f32: the scalar twin of the vector kernels, bit for bit.
///
/// Max abs error 2.4e-7 over [-10, 10] against the f64 reference (see the module docs).
pub fn gelu_erf_f32(x: f32) -> f32 {
    let ax = x.abs();
    let zm = ax * std::f32::consts::FRAC_1_SQRT_2;
    // `a < b ? a : b`, like `minps` (a NaN gives Z_MAX; x itself carries the NaN on).
    let z = if zm < Z_MAX { zm } else { Z_MAX };
    let t = 2.0 / (2.0 + z);
    let mut g = G[9];
    for &c in G[..9].iter().rev() {
        g = g.mul_add(t, c);
    }
    let arg = (-z).mul_add(z, g);
    let erfc = t * exp_f32(arg);
    let h = (0.5 * x) * erfc;
    let mut r = if x > 0.0 { x - h } else { h };
    if x > X_HI {
        r = x;
    }
    if x < X_LO {
        r = -0.0;
    }
    r
}

/// exp(a) for a in about [-87, 0.3] (the range GELU needs); the scalar twin of `exp_*` below.
fn exp_f32(a: f32) -> f32 {
    let n = (a * LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_HI, a);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = EXP_P[0];
    for &c in &EXP_P[1..] {
        p = p.mul_add(r, c);
    }
    // 2^n by building the exponent field (n is in [-126, 1] here; NaN gives n = 0 and p = NaN).
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    p * scale
}

/// x = GELU(x) elementwise with the fastest kernel ([`GeluKernel::detect`]).
///
/// Same chunking across rayon threads as [`gelu_erf_inplace`](super::gelu::gelu_erf_inplace):
/// elements are independent, so the thread count never changes the result.
pub fn gelu_erf_f32_inplace(x: &mut [f32]) {
    gelu_erf_f32_inplace_with(GeluKernel::detect(), x);
}

/// [`gelu_erf_f32_inplace`] with a chosen kernel (tests, benchmarks).
///
/// # Panics
/// If the CPU does not support `kernel` ([`GeluKernel::is_supported`]).
pub fn gelu_erf_f32_inplace_with(kernel: GeluKernel, x: &mut [f32]) {
    const CHUNK: usize = 16 * 1024;
    let apply = |chunk: &mut [f32]| gelu_slice(kernel, chunk);
    if x.len() <= CHUNK {
        apply(x);
    } else {
        x.par_chunks_mut(CHUNK).for_each(apply);
    }
}

/// GELU over one slice on the calling thread.
fn gelu_slice(kernel: GeluKernel, x: &mut [f32]) {
    fn unsupported<T>(kernel: GeluKernel) -> T {
        panic!("GELU kernel {kernel:?} is not supported by this CPU")
    }
    match kernel {
        GeluKernel::Avx512 => Avx512Gelu::new()
            .unwrap_or_else(|| unsupported(kernel))
            .run(x),
        GeluKernel::Avx2 => Avx2Gelu::new()
            .unwrap_or_else(|| unsupported(kernel))
            .run(x),
        GeluKernel::Scalar => x.iter_mut().for_each(|v| *v = gelu_erf_f32(*v)),
    }
}

/// Proof that the CPU has AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Gelu(());

impl Avx2Gelu {
    pub(crate) fn new() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some(Avx2Gelu(()));
        }
        None
    }

    pub(crate) fn run(self, x: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self` exists only if the CPU has AVX2 and FMA (`new`).
        unsafe {
            x86::gelu_slice_avx2(x)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("{x:?}")
    }
}

/// Proof that the CPU has AVX-512F (and FMA).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Gelu(());

impl Avx512Gelu {
    pub(crate) fn new() -> Option<Self> {
        crate::avx512_enabled().then_some(Avx512Gelu(()))
    }

    pub(crate) fn run(self, x: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self` exists only if the CPU has AVX-512F and FMA (`new`).
        unsafe {
            x86::gelu_slice_avx512(x)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("{x:?}")
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    //! The vector kernels: the same operations as [`gelu_erf_f32`](super::gelu_erf_f32), lane-wise.

    use super::{EXP_P, G, LN2_HI, LN2_LO, LOG2_E, X_HI, X_LO, Z_MAX};
    use std::arch::x86_64::*;
    use std::f32::consts::FRAC_1_SQRT_2;

    /// GELU of N independent vectors of 8 lanes, every step applied to all N before the next so
    /// that the N dependency chains (about 40 operations each) overlap in the pipeline.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)]
    pub(crate) fn gelu_avx2<const N: usize>(x: [__m256; N]) -> [__m256; N] {
        let z0 = _mm256_setzero_ps();
        let (mut z, mut t, mut g) = ([z0; N], [z0; N], [z0; N]);
        let (mut n, mut r, mut p) = ([z0; N], [z0; N], [z0; N]);
        for i in 0..N {
            let ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x[i]);
            z[i] = _mm256_min_ps(
                _mm256_mul_ps(ax, _mm256_set1_ps(FRAC_1_SQRT_2)),
                _mm256_set1_ps(Z_MAX),
            );
        }
        for i in 0..N {
            t[i] = _mm256_div_ps(
                _mm256_set1_ps(2.0),
                _mm256_add_ps(_mm256_set1_ps(2.0), z[i]),
            );
            g[i] = _mm256_set1_ps(G[9]);
        }
        for &c in G[..9].iter().rev() {
            for i in 0..N {
                g[i] = _mm256_fmadd_ps(g[i], t[i], _mm256_set1_ps(c));
            }
        }
        for i in 0..N {
            // arg = g - z² (fused), then exp(arg) = 2^n · exp(r).
            g[i] = _mm256_fnmadd_ps(z[i], z[i], g[i]);
            n[i] = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(g[i], _mm256_set1_ps(LOG2_E)),
            );
            r[i] = _mm256_fnmadd_ps(n[i], _mm256_set1_ps(LN2_HI), g[i]);
            r[i] = _mm256_fnmadd_ps(n[i], _mm256_set1_ps(LN2_LO), r[i]);
            p[i] = _mm256_set1_ps(EXP_P[0]);
        }
        for &c in &EXP_P[1..] {
            for i in 0..N {
                p[i] = _mm256_fmadd_ps(p[i], r[i], _mm256_set1_ps(c));
            }
        }
        let mut out = [z0; N];
        for i in 0..N {
            let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n[i]),
                _mm256_set1_epi32(127),
            ));
            let e = _mm256_mul_ps(p[i], _mm256_castsi256_ps(bits));
            let erfc = _mm256_mul_ps(t[i], e);
            let x = x[i];
            let h = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5), x), erfc);
            let res = _mm256_blendv_ps(h, _mm256_sub_ps(x, h), _mm256_cmp_ps::<_CMP_GT_OQ>(x, z0));
            let res =
                _mm256_blendv_ps(res, x, _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(X_HI)));
            out[i] = _mm256_blendv_ps(
                res,
                _mm256_set1_ps(-0.0),
                _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(X_LO)),
            );
        }
        out
    }

    /// GELU of N independent vectors of 16 lanes, every step applied to all N before the next so
    /// that the N dependency chains (about 40 operations each) overlap in the pipeline.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::needless_range_loop)]
    pub(crate) fn gelu_avx512<const N: usize>(x: [__m512; N]) -> [__m512; N] {
        let z0 = _mm512_setzero_ps();
        let (mut z, mut t, mut g) = ([z0; N], [z0; N], [z0; N]);
        let (mut n, mut r, mut p) = ([z0; N], [z0; N], [z0; N]);
        for i in 0..N {
            let ax = _mm512_abs_ps(x[i]);
            z[i] = _mm512_min_ps(
                _mm512_mul_ps(ax, _mm512_set1_ps(FRAC_1_SQRT_2)),
                _mm512_set1_ps(Z_MAX),
            );
        }
        for i in 0..N {
            t[i] = _mm512_div_ps(
                _mm512_set1_ps(2.0),
                _mm512_add_ps(_mm512_set1_ps(2.0), z[i]),
            );
            g[i] = _mm512_set1_ps(G[9]);
        }
        for &c in G[..9].iter().rev() {
            for i in 0..N {
                g[i] = _mm512_fmadd_ps(g[i], t[i], _mm512_set1_ps(c));
            }
        }
        for i in 0..N {
            // arg = g - z² (fused), then exp(arg) = 2^n · exp(r).
            g[i] = _mm512_fnmadd_ps(z[i], z[i], g[i]);
            n[i] = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(g[i], _mm512_set1_ps(LOG2_E)),
            );
            r[i] = _mm512_fnmadd_ps(n[i], _mm512_set1_ps(LN2_HI), g[i]);
            r[i] = _mm512_fnmadd_ps(n[i], _mm512_set1_ps(LN2_LO), r[i]);
            p[i] = _mm512_set1_ps(EXP_P[0]);
        }
        for &c in &EXP_P[1..] {
            for i in 0..N {
                p[i] = _mm512_fmadd_ps(p[i], r[i], _mm512_set1_ps(c));
            }
        }
        let mut out = [z0; N];
        for i in 0..N {
            let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
                _mm512_cvtps_epi32(n[i]),
                _mm512_set1_epi32(127),
            ));
            let e = _mm512_mul_ps(p[i], _mm512_castsi512_ps(bits));
            let erfc = _mm512_mul_ps(t[i], e);
            let x = x[i];
            let h = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), x), erfc);
            let res = _mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, z0),
                h,
                _mm512_sub_ps(x, h),
            );
            let res = _mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(X_HI)),
                res,
                x,
            );
            out[i] = _mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(X_LO)),
                res,
                _mm512_set1_ps(-0.0),
            );
        }
        out
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn gelu_slice_avx2(x: &mut [f32]) {
        let mut quads = x.chunks_exact_mut(4 * 8);
        for c in &mut quads {
            // SAFETY: `c` holds exactly 4·8 f32; unaligned loads and stores inside it.
            unsafe {
                let p = c.as_mut_ptr();
                let v = [
                    _mm256_loadu_ps(p),
                    _mm256_loadu_ps(p.add(8)),
                    _mm256_loadu_ps(p.add(2 * 8)),
                    _mm256_loadu_ps(p.add(3 * 8)),
                ];
                for (i, r) in gelu_avx2(v).into_iter().enumerate() {
                    _mm256_storeu_ps(p.add(i * 8), r);
                }
            }
        }
        let mut chunks = quads.into_remainder().chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 8 f32; unaligned load and store.
            unsafe {
                let [r] = gelu_avx2([_mm256_loadu_ps(c.as_ptr())]);
                _mm256_storeu_ps(c.as_mut_ptr(), r);
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut buf = [0.0f32; 8];
            buf[..rest.len()].copy_from_slice(rest);
            // SAFETY: `buf` holds 8 f32.
            unsafe {
                let [r] = gelu_avx2([_mm256_loadu_ps(buf.as_ptr())]);
                _mm256_storeu_ps(buf.as_mut_ptr(), r);
            }
            rest.copy_from_slice(&buf[..rest.len()]);
        }
    }

    /// # Safety
    /// The CPU must support AVX-512F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub(crate) unsafe fn gelu_slice_avx512(x: &mut [f32]) {
        let mut quads = x.chunks_exact_mut(4 * 16);
        for c in &mut quads {
            // SAFETY: `c` holds exactly 4·16 f32; unaligned loads and stores inside it.
            unsafe {
                let p = c.as_mut_ptr();
                let v = [
                    _mm512_loadu_ps(p),
                    _mm512_loadu_ps(p.add(16)),
                    _mm512_loadu_ps(p.add(2 * 16)),
                    _mm512_loadu_ps(p.add(3 * 16)),
                ];
                for (i, r) in gelu_avx512(v).into_iter().enumerate() {
                    _mm512_storeu_ps(p.add(i * 16), r);
                }
            }
        }
        let mut chunks = quads.into_remainder().chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 16 f32; unaligned load and store.
            unsafe {
                let [r] = gelu_avx512([_mm512_loadu_ps(c.as_ptr())]);
                _mm512_storeu_ps(c.as_mut_ptr(), r);
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut buf = [0.0f32; 16];
            buf[..rest.len()].copy_from_slice(rest);
            // SAFETY: `buf` holds 16 f32.
            unsafe {
                let [r] = gelu_avx512([_mm512_loadu_ps(buf.as_ptr())]);
                _mm512_storeu_ps(buf.as_mut_ptr(), r);
            }
            rest.copy_from_slice(&buf[..rest.len()]);
        }
    }
}
