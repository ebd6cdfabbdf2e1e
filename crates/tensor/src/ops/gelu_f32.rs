//! Exact-erf GELU evaluated in f32 and vectorised: [`gelu_erf_f32_inplace`].
//!
//! The same formula as [`gelu_erf`](super::gelu::gelu_erf), `0.5·x·erfc(-x/√2)` (not the tanh
//! approximation), evaluated with f32 arithmetic so that it runs 8 (AVX2) or 16 (AVX-512) lanes at
//! a time. Every kernel performs the same f32 operations in the same order with fused
//! multiply-adds, so all kernels give the same bits as the scalar twin [`gelu_erf_f32`].
//!
//! # Method
//! No division and no exp: with a = |x| clamped to 6, c(a) ≈ Φ(-a) = 0.5·erfc(a/√2) is a
//! piecewise polynomial, and `gelu(x) = x·Φ(x)` is `x - a·c` for x > 0 and `-a·c` (= x·c) for
//! x ≤ 0, one fused `fnmadd(a, c, max(-0, x))`. Neither side cancels: for x > 0 the correction
//! a·c is small against x and rounded once with it; for x ≤ 0 the result is the product, so it
//! keeps the relative accuracy of c.
//!
//! Intervals: k = round(a·(a·S + QS)), two FMAs, the second adding 2^23 so that k lands in the
//! low mantissa bits, where `vpermps` reads its index. The quadratic narrows the intervals as a
//! grows (0.63 wide at 0, 0.24 at 6) because Φ(-a) falls faster there (its log-derivative is about
//! -a), which evens out the fit error: 15 intervals cover [0, 6), and a = 6, where every |x| ≥ 6
//! is clamped, lands in interval 15, whose polynomial is 0. Each coefficient's 16 values sit in
//! one register: one `vpermps` per coefficient on AVX-512, two and a select on AVX2.
//!
//! Polynomials: in interval k, c = p_k(a - e_k) of degree 6 (Horner), fitted in f64 against
//! `libm::erfc` for the least max *relative* error (so that the tiny outputs of negative x stay
//! accurate), with the constant term fixed to Φ(-e_k) rounded to f32 (`refit_gelu_coefficients`
//! in `tests/gelu_f32.rs` re-derives the tables; max fit error 1.8e-7).
//! e_k is the interval's right end, where Φ(-a) is smallest: the f32 roundings are then relative
//! to the smallest value and the terms of p_k mostly add up. It is at most twice the interval's
//! start, so `a - e_k` is exact (Sterbenz). e_0 = 0 and p_0(0) = 0.5 exactly, so that tiny x
//! give exactly x/2. Degree 6 is the least that keeps every result within a few ulps; each degree
//! costs a permute and an FMA of the 21 instructions per AVX-512 vector. (The method before,
//! `erfc(z) = t·exp(g(t) - z²)` with t = 2/(2 + z), took about 45 and a division, and was 20 ulp
//! off at x = -3.25.)
//!
//! # Error (measured over every f32, `tests/gelu_f32.rs`)
//! Against the f64 reference `0.5·x·libm::erfc(-x/√2)`:
//! - **max abs error 2.3842e-7** on [-10, 10] (at x = 4.42122): half an ulp of outputs in
//!   [4, 8), as for the correctly rounded [`gelu_erf`](super::gelu::gelu_erf), plus 2e-12;
//! - **max relative error 3.1e-7** for x in (-6, -1e-30] (at x = -0.6719); closer to 0 the
//!   result is x/2 rounded once, and the exact value is x/2 to within 1e-30 relative;
//! - at most **4 ulp** from the correctly rounded `gelu_erf` on (-6, 10].
//!
//! x ≥ 6 returns x, which is the exact value rounded (x·Φ(-x) is below half an ulp of x from
//! x ≈ 5.35 on). x ≤ -6 returns -0, against exact values of magnitude below 6·Φ(-6) = 5.9e-9:
//! within the abs bound, not relatively accurate. Tiny |x|, denormals included, give exactly x/2.
//!
//! Special values: NaN stays NaN, ±0 stays ±0, +inf gives +inf, -inf gives -0 (so f32::MAX gives
//! itself, -f32::MAX gives -0).
//!
//! # Speed
//! One thread of a Xeon (Sapphire Rapids), [`gelu_erf_f32_inplace_with`] in place, best of 15:
//! on 1.5M elements AVX-512 4.7 Gelem/s, AVX2 1.6 (the method before: 2.0 and 1.1); on 16K
//! elements (in cache) 5.5 and 1.7 (before: 2.1 and 1.2).

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

// Printed by `refit_gelu_coefficients` (tests/gelu_f32.rs): the interval of a is
// round(a·(a·S + QS)); a = A_CUT is the first f32 of interval 15; E[k] is interval k's expansion
// point and C[j][k] its coefficient of (a - E[k])^j.
const S: f32 = 3.0208334e-1;
const QS: f32 = 6.041667e-1;
const A_CUT: f32 = 6e0;
const E: [f32; 16] = [
    0e0,
    1.25894e0,
    2.0456297e0,
    2.5477042e0,
    2.987048e0,
    3.3825672e0,
    3.7452333e0,
    4.0820847e0,
    4.397956e0,
    4.696338e0,
    4.979851e0,
    5.250517e0,
    5.5099387e0,
    5.7594123e0,
    5.9999995e0,
    0e0,
];
const C: [[f32; 16]; 7] = [
    [
        5e-1,
        1.04026005e-1,
        2.0396406e-2,
        5.421718e-3,
        1.4084278e-3,
        3.5905858e-4,
        9.0113106e-5,
        2.2316766e-5,
        5.463759e-6,
        1.3243344e-6,
        3.181666e-7,
        7.5836496e-8,
        1.7947933e-8,
        4.2203654e-9,
        9.865906e-10,
        0e0,
    ],
    [
        -3.989428e-1,
        -1.8061185e-1,
        -4.9230646e-2,
        -1.5540047e-2,
        -4.607065e-3,
        -1.3072636e-3,
        -3.5895102e-4,
        -9.6049334e-5,
        -2.5167674e-5,
        -6.4803307e-6,
        -1.6439639e-6,
        -4.1172572e-7,
        -1.0196269e-7,
        -2.500069e-8,
        -6.0758376e-9,
        0e0,
    ],
    [
        1.5577156e-5,
        1.1368888e-1,
        5.0354455e-2,
        1.9794533e-2,
        6.8803965e-3,
        2.2109484e-3,
        6.721864e-4,
        1.9605557e-4,
        5.5349385e-5,
        1.521909e-5,
        4.094034e-6,
        1.0811054e-6,
        2.8097298e-7,
        7.201427e-8,
        1.8233054e-8,
        0e0,
    ],
    [
        6.633238e-2,
        -1.7631324e-2,
        -2.61207e-2,
        -1.42364735e-2,
        -6.0884445e-3,
        -2.2752606e-3,
        -7.790651e-4,
        -2.5045135e-4,
        -7.68044e-5,
        -2.2690832e-5,
        -6.503672e-6,
        -1.8174908e-6,
        -4.971371e-7,
        -1.33519e-7,
        -3.5288856e-8,
        0e0,
    ],
    [
        7.490206e-4,
        -1.3406868e-2,
        5.0178333e-3,
        5.6636548e-3,
        3.3598815e-3,
        1.5531268e-3,
        6.2047073e-4,
        2.2595175e-4,
        7.6705e-5,
        2.4702742e-5,
        7.629952e-6,
        2.27933e-6,
        6.621722e-7,
        1.8768934e-7,
        5.2121568e-8,
        0e0,
    ],
    [
        -1.1806443e-2,
        6.4647733e-3,
        1.9755894e-3,
        -1.097937e-3,
        -1.238822e-3,
        -7.1933743e-4,
        -3.318332e-4,
        -1.3188098e-4,
        -4.8142847e-5,
        -1.6463086e-5,
        -5.3548188e-6,
        -1.668385e-6,
        -5.0194564e-7,
        -1.4723992e-7,
        -4.2132857e-8,
        0e0,
    ],
    [
        2.280415e-3,
        1.6706309e-3,
        -1.29925e-3,
        -8.785694e-4,
        -9.027912e-5,
        1.8337762e-4,
        1.6631233e-4,
        9.710874e-5,
        4.5559187e-5,
        1.8814844e-5,
        7.111962e-6,
        2.5227407e-6,
        8.509147e-7,
        2.747176e-7,
        8.573259e-8,
        0e0,
    ],
];

/// Degree of the polynomials.
const DEG: usize = C.len() - 1;
/// 2^23: adding it rounds a value in [0, 2^23) to an integer, left in the low mantissa bits.
const MAGIC: f32 = 8_388_608.0;

/// GELU (exact erf form) evaluated in f32: the scalar twin of the vector kernels, bit for bit.
///
/// Max abs error 2.4e-7 over [-10, 10] against the f64 reference, and within 4 ulp of the
/// correctly rounded value on (-6, 10] (see the module docs).
pub fn gelu_erf_f32(x: f32) -> f32 {
    let ax = x.abs();
    // `minps(A_CUT, ax)`: a NaN goes on as a (whatever interval its bits pick, p is NaN).
    let a = if A_CUT < ax { A_CUT } else { ax };
    let k = (a.mul_add(S, QS).mul_add(a, MAGIC).to_bits() & 15) as usize;
    let u = a - E[k];
    let mut p = C[DEG][k];
    for c in C[..DEG].iter().rev() {
        p = p.mul_add(u, c[k]);
    }
    // `maxps(-0, x)`: x for x > 0 and for NaN; -0 for x < 0 and for -0, so that -a·p + base
    // keeps the sign of a zero product (x = -0, x ≤ -6).
    let base = if -0.0 > x { -0.0 } else { x };
    (-a).mul_add(p, base)
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

    use super::{A_CUT, C, DEG, E, MAGIC, QS, S};
    use std::arch::x86_64::*;

    /// A 16-entry table as its low half and the XOR of its halves (see [`lookup16_avx2`]).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn halves(t: &[f32; 16]) -> (__m256, __m256) {
        let lo = _mm256_setr_ps(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
        let hi = _mm256_setr_ps(t[8], t[9], t[10], t[11], t[12], t[13], t[14], t[15]);
        (lo, _mm256_xor_ps(lo, hi))
    }

    /// `t[k]` per lane from [`halves`]' (low half, low ^ high): `vpermps` reads 8 entries (k's
    /// low 3 bits), and `upper` (all ones where k's bit 3 is set) flips the low entry's bits into
    /// the high one's. An AND and an XOR rather than `vblendvps`, which is 3 uops on Golden Cove:
    /// 13% faster here.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn lookup16_avx2(t: (__m256, __m256), k: __m256i, upper: __m256) -> __m256 {
        _mm256_xor_ps(
            _mm256_permutevar8x32_ps(t.0, k),
            _mm256_and_ps(_mm256_permutevar8x32_ps(t.1, k), upper),
        )
    }

    /// GELU of N independent vectors of 8 lanes, every step applied to all N before the next so
    /// that the N dependency chains overlap in the pipeline.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)]
    pub(crate) fn gelu_avx2<const N: usize>(x: [__m256; N]) -> [__m256; N] {
        let z0 = _mm256_setzero_ps();
        let (mut a, mut u, mut p, mut upper) = ([z0; N], [z0; N], [z0; N], [z0; N]);
        let mut k = [_mm256_setzero_si256(); N];
        let e = halves(&E);
        let top = halves(&C[DEG]);
        for i in 0..N {
            let ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x[i]);
            a[i] = _mm256_min_ps(_mm256_set1_ps(A_CUT), ax);
            let v = _mm256_fmadd_ps(
                _mm256_fmadd_ps(a[i], _mm256_set1_ps(S), _mm256_set1_ps(QS)),
                a[i],
                _mm256_set1_ps(MAGIC),
            );
            k[i] = _mm256_castps_si256(v);
            upper[i] = _mm256_castsi256_ps(_mm256_srai_epi32::<31>(_mm256_slli_epi32::<28>(k[i])));
            u[i] = _mm256_sub_ps(a[i], lookup16_avx2(e, k[i], upper[i]));
            p[i] = lookup16_avx2(top, k[i], upper[i]);
        }
        for c in C[..DEG].iter().rev() {
            let c = halves(c);
            for i in 0..N {
                p[i] = _mm256_fmadd_ps(p[i], u[i], lookup16_avx2(c, k[i], upper[i]));
            }
        }
        let mut out = [z0; N];
        for i in 0..N {
            let base = _mm256_max_ps(_mm256_set1_ps(-0.0), x[i]);
            out[i] = _mm256_fnmadd_ps(a[i], p[i], base);
        }
        out
    }

    /// A 16-entry table in one register.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    fn table512(t: &[f32; 16]) -> __m512 {
        _mm512_setr_ps(
            t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
            t[14], t[15],
        )
    }

    /// GELU of N independent vectors of 16 lanes, every step applied to all N before the next so
    /// that the N dependency chains overlap in the pipeline.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::needless_range_loop)]
    pub(crate) fn gelu_avx512<const N: usize>(x: [__m512; N]) -> [__m512; N] {
        let z0 = _mm512_setzero_ps();
        let (mut a, mut u, mut p) = ([z0; N], [z0; N], [z0; N]);
        let mut k = [_mm512_setzero_si512(); N];
        for i in 0..N {
            a[i] = _mm512_min_ps(_mm512_set1_ps(A_CUT), _mm512_abs_ps(x[i]));
            let v = _mm512_fmadd_ps(
                _mm512_fmadd_ps(a[i], _mm512_set1_ps(S), _mm512_set1_ps(QS)),
                a[i],
                _mm512_set1_ps(MAGIC),
            );
            // The interval is in the low 4 bits, the only ones `vpermps` reads.
            k[i] = _mm512_castps_si512(v);
            u[i] = _mm512_sub_ps(a[i], _mm512_permutexvar_ps(k[i], table512(&E)));
            p[i] = _mm512_permutexvar_ps(k[i], table512(&C[DEG]));
        }
        for c in C[..DEG].iter().rev() {
            let c = table512(c);
            for i in 0..N {
                p[i] = _mm512_fmadd_ps(p[i], u[i], _mm512_permutexvar_ps(k[i], c));
            }
        }
        let mut out = [z0; N];
        for i in 0..N {
            let base = _mm512_max_ps(_mm512_set1_ps(-0.0), x[i]);
            out[i] = _mm512_fnmadd_ps(a[i], p[i], base);
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
