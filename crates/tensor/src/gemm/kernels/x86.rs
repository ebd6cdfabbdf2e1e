//! x86-64 kernels: AVX2 + FMA (6 x 16: 12 ymm accumulators) and AVX-512F (12 x 32: 24 zmm
//! accumulators).
//!
//! A Xeon with two 512-bit FMA pipes doubles the AVX2 peak; Zen 4 runs a zmm FMA as two halves,
//! so both kernels have the same peak there. The AVX-512 tile needs fewer loads and broadcasts
//! per FMA (14 per 24 zmm FMAs against 8 per 12 ymm FMAs). On the Xeon (2 threads, M = 8192,
//! `examples`-style probe, 2026-11-27) 12 rows instead of 8 took the e5-small and KoE5 FFN
//! GEMMs from 282-338 to 292-347 GFLOP/s, and a K block of 192 instead of 128 the KoE5 ones to
//! 303-324 (256: the same within noise, but K = 384 then splits 256 + 128). On Zen 4 the K
//! block is now 384 (see `Avx512Kernel::KC`).

use std::arch::x86_64::*;

use super::{
    pack_a_panel_scalar, prefetch_rows, BPrefetch, MicroKernel, PanelElem, PanelFormat, PrefetchTo,
};
use crate::ops::gelu_f32::x86::{gelu_avx2, gelu_avx512};

/// Evaluates `$body` with `$mr` a constant equal to `$rows` (1..=6, the AVX2 tile's rows):
/// the AVX2 tiles are compiled once per row count, and this turns a tile's row count into
/// that constant. Anything else panics.
macro_rules! with_avx2_rows {
    ($rows:expr, |$mr:ident| $body:expr) => {
        match $rows {
            6 => {
                const $mr: usize = 6;
                $body
            }
            5 => {
                const $mr: usize = 5;
                $body
            }
            4 => {
                const $mr: usize = 4;
                $body
            }
            3 => {
                const $mr: usize = 3;
                $body
            }
            2 => {
                const $mr: usize = 2;
                $body
            }
            1 => {
                const $mr: usize = 1;
                $body
            }
            rows => panic!("AVX2 tile: {rows} rows, expected 1..=6"),
        }
    };
}

/// Proof that the CPU has AVX2, FMA and F16C (every AVX2 CPU so far has F16C; the f16 panels
/// need it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Kernel(());

impl Avx2Kernel {
    pub(crate) fn new() -> Option<Self> {
        (is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        .then_some(Avx2Kernel(()))
    }
}

impl MicroKernel for Avx2Kernel {
    const MR: usize = 6;
    const NR: usize = 16;
    const KC: usize = 256; // B micro-panel 256·16·4 = 16 KB: half of L1d
                           // K = 384 (e5-small's Q/K/V, attention output and FFN-in) as one block: a 24 KB panel.
                           // In-process A/B over W2's GEMMs (M = 8192, 3 runs): Q/K/V 0.93-0.96x the time, attention
                           // output 0.95-0.98x, FFN-in 0.97-0.99x; M = 128: Q/K/V and FFN-in 0.95-0.97x. K = 1536 in
                           // blocks of 384 instead of 256 changed nothing (0.99-1.01x).
    const KC_WHOLE: usize = 384;
    const MC: usize = 144; // A block 144·256·4 = 144 KB of the 1 MB L2
    /// Zen 3, 2 threads, e5-small W2's GEMMs at M = 8,192 (in-process A/B, 16 alternating
    /// pairs, with the 8-lane `finish_rows` below): time 0.95-0.97x for Q/K/V, 0.86x for the
    /// attention output + residual, 0.91-0.95x for FFN in + GELU, 0.93-0.99x for FFN out +
    /// residual (the residual's lines were fetched one tile at a time before).
    const PREFETCH_OUTPUT: bool = true;

    unsafe fn tile<E: PanelElem>(
        self,
        k: usize,
        a: *const f32,
        b: *const E,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        bias: *const f32,
        gelu: bool,
        prefetch: *const u8,
    ) {
        let t = Avx2Tile {
            k,
            a,
            a_row: 1,
            a_col: MR_AVX2,
            b,
            c,
            ldc,
            accumulate,
            bias,
            gelu,
            prefetch,
        };
        // SAFETY: holding `self` proves AVX2 + FMA + F16C; the pointer contract is the
        // caller's (the same as this trait method's).
        unsafe { tile_avx2_with(MR_AVX2, t) }
    }

    unsafe fn tile_rows<E: PanelElem>(
        self,
        rows: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const E,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        bias: *const f32,
        gelu: bool,
        prefetch: *const u8,
    ) {
        let t = Avx2Tile {
            k,
            a,
            a_row: lda,
            a_col: 1,
            b,
            c,
            ldc,
            accumulate,
            bias,
            gelu,
            prefetch,
        };
        // SAFETY: as for `tile`; A element (i, p) is at a + i·lda + p for i < rows, readable by
        // contract, and only C's rows i < rows are touched.
        unsafe { tile_avx2_with(rows, t) }
    }

    unsafe fn finish_rows(
        self,
        rows: usize,
        cols: usize,
        src: *const f32,
        lds: usize,
        residual: *const f32,
        ldr: usize,
        dst: *mut f32,
        ldd: usize,
    ) {
        // SAFETY: holding `self` proves AVX2; the pointers are the caller's contract.
        unsafe { finish_rows_avx2(rows, cols, src, lds, residual, ldr, dst, ldd) }
    }

    unsafe fn tile_row_of_panels<E: PanelElem>(
        self,
        rows: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const E,
        panel_stride: usize,
        panels: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: holding `self` proves AVX2 + FMA + F16C; the rest is the caller's contract.
        unsafe { tile_row_of_panels_avx2(rows, k, a, lda, b, panel_stride, panels, c, ldc) }
    }

    /// Packed, the 6 broadcasts of a k step load at fixed offsets from one pointer instead of
    /// 6 row addresses rebuilt each step. Zen 3, 2 threads, M = 8,192 (as above): Q/K/V time
    /// 0.82x, the others unchanged within noise; K = 1,536 (FFN out, in place from
    /// `PACK_A_MAX_K`) packed was slower, 1.06-1.07x.
    const PACKS_A: bool = true;

    fn pack_a_panel(self, dst: &mut [f32], a: &[f32], lda: usize, k: usize, rows: usize) {
        assert!(dst.len() >= k * MR_AVX2 && rows <= MR_AVX2);
        assert!(rows == 0 || a.len() >= (rows - 1) * lda + k);
        if rows < MR_AVX2 {
            // The last panel of an M that is not a multiple of 6: once per task.
            return pack_a_panel_scalar(dst, a, lda, k, rows, MR_AVX2);
        }
        // SAFETY: holding `self` proves AVX2; the bounds are checked above.
        unsafe { pack_a_panel_avx2(dst.as_mut_ptr(), a.as_ptr(), lda, k) }
    }

    unsafe fn tile_packed_rows<E: PanelElem>(
        self,
        rows: usize,
        k: usize,
        a: *const f32,
        b: *const E,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        bias: *const f32,
        gelu: bool,
        prefetch: *const u8,
    ) {
        let t = Avx2Tile {
            k,
            a,
            a_row: 1,
            a_col: MR_AVX2,
            b,
            c,
            ldc,
            accumulate,
            bias,
            gelu,
            prefetch,
        };
        // SAFETY: holding `self` proves AVX2 + FMA + F16C; the pointer contract is the
        // caller's, and only A's and C's rows i < rows are touched.
        unsafe { tile_avx2_with(rows, t) }
    }
}

/// [`MicroKernel::pack_a_panel`] for all 6 rows: 8 k at a time, the six rows loaded together
/// (their cache misses overlap: row by row, the scalar loop waited on each row's lines in
/// turn, 2% of e5-small W2 on Zen 3 by `perf`), transposed in registers, each k's six values
/// stored as 4 + 2. Scalar for the last k mod 8.
///
/// # Safety
/// AVX2; `dst .. + k·6` writable, `a + i·lda .. + k` readable for i < 6.
#[target_feature(enable = "avx2")]
unsafe fn pack_a_panel_avx2(dst: *mut f32, a: *const f32, lda: usize, k: usize) {
    const MR: usize = MR_AVX2;
    let k8 = k / 8 * 8;
    // SAFETY (whole body): reads at a + i·lda + p for i < 6, p < k, writes at dst + p·6 + i
    // for the same: inside the contract's regions. Unaligned accesses.
    unsafe {
        for p0 in (0..k8).step_by(8) {
            let r: [__m256; MR] = std::array::from_fn(|i| _mm256_loadu_ps(a.add(i * lda + p0)));
            // Pairs of rows interleaved: (r0 r1) for k = 0, 1 | 4, 5 and 2, 3 | 6, 7.
            let t01 = [
                _mm256_unpacklo_ps(r[0], r[1]),
                _mm256_unpackhi_ps(r[0], r[1]),
            ];
            let t23 = [
                _mm256_unpacklo_ps(r[2], r[3]),
                _mm256_unpackhi_ps(r[2], r[3]),
            ];
            let t45 = [
                _mm256_unpacklo_ps(r[4], r[5]),
                _mm256_unpackhi_ps(r[4], r[5]),
            ];
            // Rows 0..4 of k = q, q + 4 (q < 4) in the two 128-bit lanes.
            let s = [
                _mm256_shuffle_ps::<0x44>(t01[0], t23[0]),
                _mm256_shuffle_ps::<0xEE>(t01[0], t23[0]),
                _mm256_shuffle_ps::<0x44>(t01[1], t23[1]),
                _mm256_shuffle_ps::<0xEE>(t01[1], t23[1]),
            ];
            for half in 0..2 {
                for (q, &sq) in s.iter().enumerate() {
                    let p = p0 + 4 * half + q;
                    let (rows0_3, rows45) = if half == 0 {
                        (
                            _mm256_castps256_ps128(sq),
                            _mm256_castps256_ps128(t45[q / 2]),
                        )
                    } else {
                        (
                            _mm256_extractf128_ps::<1>(sq),
                            _mm256_extractf128_ps::<1>(t45[q / 2]),
                        )
                    };
                    let out = dst.add(p * MR);
                    _mm_storeu_ps(out, rows0_3);
                    // Rows 4 and 5 of k = q: the low pair for even q, the high for odd.
                    let pairs = _mm_castps_pd(rows45);
                    if q % 2 == 0 {
                        _mm_storel_pd(out.add(4).cast(), pairs);
                    } else {
                        _mm_storeh_pd(out.add(4).cast(), pairs);
                    }
                }
            }
        }
        for p in k8..k {
            for i in 0..MR {
                *dst.add(p * MR + i) = *a.add(i * lda + p);
            }
        }
    }
}

/// [`MicroKernel::tile_row_of_panels`] as `tile_row_of_panels_avx512` does it: the row count
/// dispatched once, then one inlined tile per panel, each prefetching the next one's output.
///
/// # Safety
/// AVX2 + FMA + F16C, and [`MicroKernel::tile_row_of_panels`]' contract.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_row_of_panels_avx2<E: PanelElem>(
    rows: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const E,
    panel_stride: usize,
    panels: usize,
    c: *mut f32,
    ldc: usize,
) {
    /// # Safety
    /// As [`tile_row_of_panels_avx2`] with MR = rows.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn with_rows<const MR: usize, E: PanelElem>(
        t: Avx2Tile<E>,
        stride: usize,
        panels: usize,
    ) {
        for j in 0..panels {
            // The next tile's output (after the last panel, the next row tile's first).
            let next = if j + 1 < panels {
                t.c.wrapping_add((j + 1) * 16)
            } else {
                t.c.wrapping_add(MR_AVX2 * t.ldc)
            };
            prefetch_rows(PrefetchTo::L1, next as *const u8, MR, t.ldc * 4, 64);
            let tile = Avx2Tile {
                b: t.b.wrapping_add(j * stride),
                c: t.c.wrapping_add(j * 16),
                ..t
            };
            // SAFETY: panel j's tile, inside the contract's regions.
            unsafe { tile_avx2::<MR, false, E>(tile) }
        }
    }
    let t = Avx2Tile {
        k,
        a,
        a_row: lda,
        a_col: 1,
        b,
        c,
        ldc,
        accumulate: false,
        bias: std::ptr::null(),
        gelu: false,
        prefetch: std::ptr::null(),
    };
    let (s, p) = (panel_stride, panels);
    // SAFETY: forwarded from this function's contract, with MR = rows.
    unsafe { with_avx2_rows!(rows, |MR| with_rows::<MR, E>(t, s, p)) }
}

/// [`MicroKernel::finish_rows`] eight columns at a time: the default's loop, compiled for
/// the baseline x86-64 (SSE2), was half of the driver's own time in e5-small's residual
/// GEMMs on Zen 3 (`perf`, W2).
///
/// # Safety
/// AVX2; the pointer contract of `finish_rows`.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_rows_avx2(
    rows: usize,
    cols: usize,
    src: *const f32,
    lds: usize,
    residual: *const f32,
    ldr: usize,
    dst: *mut f32,
    ldd: usize,
) {
    let body = cols / 8 * 8;
    // SAFETY (whole body): vector accesses cover columns j .. j + 8 <= body <= cols of row
    // i < rows, scalar ones columns body..cols: the contract's regions. Unaligned accesses.
    unsafe {
        for i in 0..rows {
            let (s, d) = (src.add(i * lds), dst.add(i * ldd));
            let r = residual.wrapping_add(i * ldr);
            let mut j = 0;
            while j < body {
                let mut v = _mm256_loadu_ps(s.add(j));
                if !residual.is_null() {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(r.add(j)));
                }
                _mm256_storeu_ps(d.add(j), v);
                j += 8;
            }
            for j in body..cols {
                let v = *s.add(j);
                *d.add(j) = if residual.is_null() { v } else { v + *r.add(j) };
            }
        }
    }
}

const MR_AVX2: usize = 6;

/// Eight panel values from `p`, widened to f32.
///
/// # Safety
/// AVX2 + F16C, and 8 readable values at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8_avx2<E: PanelElem>(p: *const E) -> __m256 {
    // SAFETY: 8 values = 32 bytes (f32) or 16 bytes (f16, bf16) readable at p (contract);
    // the loads are unaligned.
    unsafe {
        match E::FORMAT {
            PanelFormat::F32 => _mm256_loadu_ps(p as *const f32),
            PanelFormat::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
            // bf16 is the top half of an f32: zero-extend to 32 bits, shift into place.
            PanelFormat::Bf16 => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
            )),
        }
    }
}

/// The operands of one AVX2 tile: A's element (i, p) at `a + i·a_row + p·a_col` (packed:
/// `1, MR`; row-major: `lda, 1`), B's panel at `b`, C's rows at `c + i·ldc`, then the epilogue.
#[derive(Clone, Copy)]
struct Avx2Tile<E> {
    k: usize,
    a: *const f32,
    a_row: usize,
    a_col: usize,
    b: *const E,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    bias: *const f32,
    gelu: bool,
    /// Null, or bytes to stream into cache at B's pace (see [`MicroKernel::tile`]).
    prefetch: *const u8,
}

/// [`tile_avx2`] with the row count (1..=6) and the prefetch choice made at run time, once per
/// tile, not per k step.
///
/// # Safety
/// As [`tile_avx2`] with MR = `rows`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2_with<E: PanelElem>(rows: usize, t: Avx2Tile<E>) {
    /// The tile for one row count, with the prefetch choice resolved.
    ///
    /// # Safety
    /// As [`tile_avx2`] with this MR.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn with_rows<const MR: usize, E: PanelElem>(t: Avx2Tile<E>) {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            if !t.prefetch.is_null() {
                tile_avx2::<MR, true, E>(t)
            } else {
                tile_avx2::<MR, false, E>(t)
            }
        }
    }
    // SAFETY: forwarded from this function's contract, with MR = rows.
    unsafe { with_avx2_rows!(rows, |MR| with_rows::<MR, E>(t)) }
}

/// One MR x 16 register tile (see [`Avx2Tile`] for where the operands are).
///
/// # Safety
/// AVX2 + FMA + F16C, and the [`MicroKernel::tile`] pointer contract with MR <= 6 rows (of A
/// and C), NR = 16, A's elements readable at the strided addresses.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const MR: usize, const PREFETCH: bool, E: PanelElem>(t: Avx2Tile<E>) {
    let Avx2Tile {
        k,
        a,
        a_row,
        a_col,
        b,
        c,
        ldc,
        accumulate,
        bias,
        gelu,
        prefetch,
    } = t;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    // SAFETY (whole body): every pointer offset stays inside the regions of the contract:
    // c + i·ldc + {0, 8} .. +8 for i < MR (an MR x 16 tile), a + i·a_row + p·a_col for p < k
    // and i < MR, b + p·16 + {0, 8} .. +8 for p < k, bias + {0, 8} .. +8. Loads and stores are
    // unaligned.
    unsafe {
        if accumulate {
            for (i, row) in acc.iter_mut().enumerate() {
                row[0] = _mm256_loadu_ps(c.add(i * ldc));
                row[1] = _mm256_loadu_ps(c.add(i * ldc + 8));
            }
        }
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.add(i * a_row));
        for p in 0..k {
            // One B row's worth of the driver's prefetch stream per k step. A prefetch never
            // faults; the address may run past the stream, hence wrapping arithmetic.
            if PREFETCH {
                _mm_prefetch::<_MM_HINT_T0>(
                    prefetch.wrapping_add(p * 16 * size_of::<E>()) as *const i8
                );
            }
            let b0 = load8_avx2(b.add(p * 16));
            let b1 = load8_avx2(b.add(p * 16 + 8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*rows[i].add(p * a_col));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
        }
        if !bias.is_null() {
            let bias0 = _mm256_loadu_ps(bias);
            let bias1 = _mm256_loadu_ps(bias.add(8));
            for row in &mut acc {
                row[0] = _mm256_add_ps(row[0], bias0);
                row[1] = _mm256_add_ps(row[1], bias1);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            _mm256_storeu_ps(c.add(i * ldc), row[0]);
            _mm256_storeu_ps(c.add(i * ldc + 8), row[1]);
        }
        if gelu && !bias.is_null() {
            gelu_tile_avx2(c, ldc, MR);
        }
    }
}

/// GELU of an MR x 16 tile just stored (so still in L1), in place, two rows (4 independent
/// chains) at a time. Out of line, once the 12 accumulators are dead: applied to them in
/// registers inside the tile function, the GELU cost 12.7-13.9 ms over the plain store per
/// e5-small W2 FFN-in GEMM (8192 x 1536 outputs, 2 threads); from here, 10.1 ms (a probe
/// running the model's four GEMMs in order, 3 runs each, alternating). Lane-wise, so the bits
/// are those of `gelu_erf_f32` either way.
///
/// # Safety
/// AVX2 + FMA; `c + i·ldc .. + 16` is writable for i < rows.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_tile_avx2(c: *mut f32, ldc: usize, rows: usize) {
    // SAFETY: the contract above; unaligned loads and stores.
    unsafe {
        let mut i = 0;
        while i + 2 <= rows {
            let (r0, r1) = (c.add(i * ldc), c.add((i + 1) * ldc));
            let v = [
                _mm256_loadu_ps(r0),
                _mm256_loadu_ps(r0.add(8)),
                _mm256_loadu_ps(r1),
                _mm256_loadu_ps(r1.add(8)),
            ];
            let [a, b, d, e] = gelu_avx2(v);
            _mm256_storeu_ps(r0, a);
            _mm256_storeu_ps(r0.add(8), b);
            _mm256_storeu_ps(r1, d);
            _mm256_storeu_ps(r1.add(8), e);
            i += 2;
        }
        if i < rows {
            let r0 = c.add(i * ldc);
            let [a, b] = gelu_avx2([_mm256_loadu_ps(r0), _mm256_loadu_ps(r0.add(8))]);
            _mm256_storeu_ps(r0, a);
            _mm256_storeu_ps(r0.add(8), b);
        }
    }
}

/// Proof that the CPU has AVX-512F (and FMA), and that the AVX-512 kernels are enabled
/// (see [`crate::avx512_enabled`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Kernel(());

impl Avx512Kernel {
    pub(crate) fn new() -> Option<Self> {
        crate::avx512_enabled().then_some(Avx512Kernel(()))
    }
}

impl MicroKernel for Avx512Kernel {
    const MR: usize = MR_AVX512;
    const NR: usize = 32;
    /// K blocks of 384, though a 48 KB panel overfills Zen 4's 32 KB L1d: each output tile
    /// is stored (and re-read) once per block, half as often as with 192, and the panel still
    /// comes from L2 for the M block's later tiles. A tile probe, B streamed past 4 packed A
    /// panels: 88% of peak at K = 192, 92% at 384. Zen 4, 2 threads, alternating rounds:
    /// K = 384 as one block (e5-small's Q/K/V, attention output, FFN in): `--stages` Q/K/V
    /// 206-209 -> 211-212 GFLOP/s, FFN in 198-202 -> 204-205, W2 4322-4357 -> 4378-4411
    /// tok/s, W3 3567-3688 -> 3715-3736; then blocks of 384 for every larger K: koe5-shape
    /// W2 325-329 -> 331-334 tok/s, e5-small W2 4384 -> 4436-4520, W3 3704-3754 -> 3711-3812.
    /// (128, 160, 224 and 256 had been equal to 192 or slower.)
    const KC: usize = 384;
    const KC_WHOLE: usize = 384;
    /// A block 96·384·4 = 144 KB of the 1 MB L2 (weights over `SMALL_B_BYTES` only; smaller
    /// ones take 48 rows). On the Xeon, KoE5's GEMMs (M = 4,096, 2 threads, best of 5, mean of
    /// 3 alternating rounds; QKV, FFN in, FFN out, 4,096 x 384 x 4,096): 192 rows 318, 315,
    /// 336, 307 GFLOP/s; 96 rows 330, 339, 346, 326; 72 and 120 in between. koe5-shape f32
    /// W2 16.08 -> 14.94 and 15.94 -> 15.58 s, W3 8.45 -> 8.00 and 8.47 -> 8.32 s.
    const MC: usize = 96;
    /// On the Xeon (weights in L3, as in a query), the second tile's prefetch of the next
    /// panel into L1 made the 16-row GEMMs slower: best of 4,000 calls, one thread, 16 x 384
    /// x 1,536 over 40 weight copies 204-249 -> 154-186 us without it, 130-146 us with the
    /// first tile 8 KB ahead as well; e5-small W1 4.7-5.2 -> 3.7-3.9 ms; M = 128 and 2,048
    /// unchanged.
    const B_PREFETCH: BPrefetch = BPrefetch {
        ahead: 8192,
        next_panel: false,
    };
    const PREFETCH_OUTPUT: bool = true;
    const PARTIALS_APART: bool = true;

    unsafe fn tile<E: PanelElem>(
        self,
        k: usize,
        a: *const f32,
        b: *const E,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        bias: *const f32,
        gelu: bool,
        prefetch: *const u8,
    ) {
        // SAFETY: `tile`'s contract is `tile_packed_rows`' with every row live.
        unsafe {
            self.tile_packed_rows(MR_AVX512, k, a, b, c, ldc, accumulate, bias, gelu, prefetch)
        }
    }

    unsafe fn tile_rows<E: PanelElem>(
        self,
        rows: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const E,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        bias: *const f32,
        gelu: bool,
        prefetch: *const u8,
    ) {
        let t = Avx512Tile {
            k,
            a,
            a_row: lda,
            a_col: 1,
            b,
            c,
            ldc,
            accumulate,
            bias,
            gelu,
            prefetch,
        };
        // SAFETY: as for `tile`; A element (i, p) is at a + i·lda + p for i < rows, readable by
        // contract, and only C's rows i < rows are touched.
        unsafe { tile_avx512_with(rows, t) }
    }

    unsafe fn finish_rows(
        self,
        rows: usize,
        cols: usize,
        src: *const f32,
        lds: usize,
        residual: *const f32,
        ldr: usize,
        dst: *mut f32,
        ldd: usize,
    ) {
        // SAFETY: holding `self` proves AVX-512F; the pointers are the caller's contract.
        unsafe { finish_rows_avx512(rows, cols, src, lds, residual, ldr, dst, ldd) }
    }

    // Packed, the 12 broadcasts of a k step load at fixed offsets from one pointer, and the
    // rows no longer sit at a stride of K floats (4 KB for K = 1024: the same L1 set for all
    // 12) while they are read. In place, the compiler rebuilt the 12 row addresses every k
    // step (13 integer additions per 24 FMAs). KoE5's GEMMs at M = 8192, one thread, three
    // alternating runs: 155-175 -> 165-178 GFLOP/s (K = 4096: 155-167 -> 171-178).
    const PACKS_A: bool = true;

    fn pack_a_panel(self, dst: &mut [f32], a: &[f32], lda: usize, k: usize, rows: usize) {
        assert!(dst.len() >= k * MR_AVX512 && rows <= MR_AVX512);
        assert!(rows == 0 || a.len() >= (rows - 1) * lda + k);
        // SAFETY: holding `self` proves AVX-512F; the bounds are checked above.
        unsafe { pack_a_panel_avx512(dst.as_mut_ptr(), a.as_ptr(), lda, k, rows) }
    }

    unsafe fn tile_packed_rows<E: PanelElem>(
        self,
        rows: usize,
        k: usize,
        a: *const f32,
        b: *const E,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        bias: *const f32,
        gelu: bool,
        prefetch: *const u8,
    ) {
        let t = Avx512Tile {
            k,
            a,
            a_row: 1,
            a_col: MR_AVX512,
            b,
            c,
            ldc,
            accumulate,
            bias,
            gelu,
            prefetch,
        };
        // SAFETY: holding `self` proves AVX-512F + FMA; the pointer contract is the caller's,
        // and only A's and C's rows i < rows are touched.
        unsafe { tile_avx512_with(rows, t) }
    }

    unsafe fn tile_row_of_panels<E: PanelElem>(
        self,
        rows: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const E,
        panel_stride: usize,
        panels: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: holding `self` proves AVX-512F + FMA; the rest is the caller's contract.
        unsafe { tile_row_of_panels_avx512(rows, k, a, lda, b, panel_stride, panels, c, ldc) }
    }
}

const MR_AVX512: usize = 12;

/// Evaluates `$body` with `$mr` a constant equal to `$rows` (1..=[`MR_AVX512`]): the AVX-512
/// tiles are compiled once per row count, and this turns a tile's row count into that
/// constant. Anything else panics naming `$what`.
macro_rules! with_avx512_rows {
    ($rows:expr, $what:literal, |$mr:ident| $body:expr) => {
        match $rows {
            12 => {
                const $mr: usize = 12;
                $body
            }
            11 => {
                const $mr: usize = 11;
                $body
            }
            10 => {
                const $mr: usize = 10;
                $body
            }
            9 => {
                const $mr: usize = 9;
                $body
            }
            8 => {
                const $mr: usize = 8;
                $body
            }
            7 => {
                const $mr: usize = 7;
                $body
            }
            6 => {
                const $mr: usize = 6;
                $body
            }
            5 => {
                const $mr: usize = 5;
                $body
            }
            4 => {
                const $mr: usize = 4;
                $body
            }
            3 => {
                const $mr: usize = 3;
                $body
            }
            2 => {
                const $mr: usize = 2;
                $body
            }
            1 => {
                const $mr: usize = 1;
                $body
            }
            rows => panic!("{}: {rows} rows, expected 1..={MR_AVX512}", $what),
        }
    };
}

/// [`MicroKernel::tile_row_of_panels`]: the row count dispatched once, then one inlined tile
/// per panel. Through the driver a tile of attention's scores (32 steps, 768 cycles of FMAs)
/// spent 15% of its time in the driver's per-tile work.
///
/// # Safety
/// AVX-512F + FMA, and [`MicroKernel::tile_row_of_panels`]' contract.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,fma")]
unsafe fn tile_row_of_panels_avx512<E: PanelElem>(
    rows: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const E,
    panel_stride: usize,
    panels: usize,
    c: *mut f32,
    ldc: usize,
) {
    /// # Safety
    /// As [`tile_row_of_panels_avx512`] with MR = rows.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn with_rows<const MR: usize, E: PanelElem>(
        t: Avx512Tile<E>,
        stride: usize,
        panels: usize,
    ) {
        for j in 0..panels {
            // The next tile's output (after the last panel, the next row tile's first), as
            // the driver does (`Call::prefetch_next_tile`): its stores would wait on their
            // lines.
            let next = if j + 1 < panels {
                t.c.wrapping_add((j + 1) * 32)
            } else {
                t.c.wrapping_add(MR_AVX512 * t.ldc)
            };
            prefetch_rows(PrefetchTo::L1, next as *const u8, MR, t.ldc * 4, 128);
            let tile = Avx512Tile {
                b: t.b.wrapping_add(j * stride),
                c: t.c.wrapping_add(j * 32),
                ..t
            };
            // SAFETY: panel j's tile, inside the contract's regions.
            unsafe { tile_avx512::<MR, false, false, E>(tile) }
        }
    }
    let t = Avx512Tile {
        k,
        a,
        a_row: lda,
        a_col: 1,
        b,
        c,
        ldc,
        accumulate: false,
        bias: std::ptr::null(),
        gelu: false,
        prefetch: std::ptr::null(),
    };
    let (s, p) = (panel_stride, panels);
    // SAFETY: forwarded from this function's contract, with MR = rows.
    unsafe { with_avx512_rows!(rows, "AVX-512 tile", |MR| with_rows::<MR, E>(t, s, p)) }
}

/// [`MicroKernel::finish_rows`] 16 lanes at a time, the row's tail under a mask: the scalar
/// loop the driver had in its place compiled to one `addss` and `movss` per value, which
/// kept a tile's output rows waiting on their misses one store at a time.
///
/// # Safety
/// AVX-512F; the pointer contract of `finish_rows`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_rows_avx512(
    rows: usize,
    cols: usize,
    src: *const f32,
    lds: usize,
    residual: *const f32,
    ldr: usize,
    dst: *mut f32,
    ldd: usize,
) {
    // SAFETY (whole body): each access covers columns j .. j + 16 of row i under a mask that
    // keeps it below `cols`; rows i < rows: the contract's regions.
    unsafe {
        for i in 0..rows {
            let (s, d) = (src.add(i * lds), dst.add(i * ldd));
            let mut j = 0;
            while j < cols {
                let live = (cols - j).min(16);
                let m = ((1u32 << live) - 1) as __mmask16;
                let mut v = _mm512_maskz_loadu_ps(m, s.add(j));
                if !residual.is_null() {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, residual.add(i * ldr + j)));
                }
                _mm512_mask_storeu_ps(d.add(j), m, v);
                j += 16;
            }
        }
    }
}

/// [`MicroKernel::pack_a_panel`] for MR = 12: four rows x 16 k at a time, transposed within
/// each 128-bit lane (four 4 x 4 blocks), each k's four values stored as one 16-byte store;
/// the rows of a group in flight together, so that their cache misses overlap. Scalar for a
/// last partial group of rows or k.
///
/// # Safety
/// AVX-512F; `dst .. + k·12` writable, `a + i·lda .. + k` readable for i < rows <= 12.
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_panel_avx512(dst: *mut f32, a: *const f32, lda: usize, k: usize, rows: usize) {
    const MR: usize = MR_AVX512;
    let full_groups = rows / 4;
    let k16 = k / 16 * 16;
    // SAFETY (whole body): reads at a + i·lda + p for i < rows, p < k, writes at
    // dst + p·12 + i for the same: inside the contract's regions. Unaligned accesses.
    unsafe {
        for p0 in (0..k16).step_by(16) {
            for g in 0..full_groups {
                // The same line of the next panel's rows (the driver packs the panels of a
                // block in order): a hint, which never faults, hence wrapping arithmetic.
                for i in 4 * g..4 * g + 4 {
                    let next = a.wrapping_add((MR + i) * lda + p0);
                    _mm_prefetch::<_MM_HINT_T0>(next as *const i8);
                }
                let row = |i: usize| _mm512_loadu_ps(a.add((4 * g + i) * lda + p0));
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let t0 = _mm512_unpacklo_ps(r0, r1);
                let t1 = _mm512_unpackhi_ps(r0, r1);
                let t2 = _mm512_unpacklo_ps(r2, r3);
                let t3 = _mm512_unpackhi_ps(r2, r3);
                let pd = _mm512_castps_pd;
                let ps = _mm512_castpd_ps;
                // c[j] lane l: rows 4g..4g+4 of k = p0 + 4l + j.
                let c = [
                    ps(_mm512_unpacklo_pd(pd(t0), pd(t2))),
                    ps(_mm512_unpackhi_pd(pd(t0), pd(t2))),
                    ps(_mm512_unpacklo_pd(pd(t1), pd(t3))),
                    ps(_mm512_unpackhi_pd(pd(t1), pd(t3))),
                ];
                for (j, &cj) in c.iter().enumerate() {
                    let at = |l: usize| dst.add((p0 + 4 * l + j) * MR + 4 * g);
                    _mm_storeu_ps(at(0), _mm512_extractf32x4_ps::<0>(cj));
                    _mm_storeu_ps(at(1), _mm512_extractf32x4_ps::<1>(cj));
                    _mm_storeu_ps(at(2), _mm512_extractf32x4_ps::<2>(cj));
                    _mm_storeu_ps(at(3), _mm512_extractf32x4_ps::<3>(cj));
                }
            }
        }
        for i in 0..rows {
            let first_p = if i < 4 * full_groups { k16 } else { 0 };
            for p in first_p..k {
                *dst.add(p * MR + i) = *a.add(i * lda + p);
            }
        }
    }
}

/// The operands of one AVX-512 tile, laid out as [`Avx2Tile`]'s.
#[derive(Clone, Copy)]
struct Avx512Tile<E> {
    k: usize,
    a: *const f32,
    a_row: usize,
    a_col: usize,
    b: *const E,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    bias: *const f32,
    gelu: bool,
    prefetch: *const u8,
}

/// [`tile_avx512`] with the row count (1..=12), the layout of A and the prefetch choice made
/// once per tile.
///
/// # Safety
/// As [`tile_avx512`] with MR = `rows`.
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn tile_avx512_with<E: PanelElem>(rows: usize, t: Avx512Tile<E>) {
    /// # Safety
    /// As [`tile_avx512`] with this MR.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn with_rows<const MR: usize, E: PanelElem>(t: Avx512Tile<E>) {
        let packed = (t.a_row, t.a_col) == (1, MR_AVX512);
        // SAFETY: forwarded from this function's contract (PACKED only for packed A's
        // strides).
        unsafe {
            match (packed, !t.prefetch.is_null()) {
                (true, true) => tile_avx512::<MR, true, true, E>(t),
                (true, false) => tile_avx512::<MR, true, false, E>(t),
                (false, true) => tile_avx512::<MR, false, true, E>(t),
                (false, false) => tile_avx512::<MR, false, false, E>(t),
            }
        }
    }
    // SAFETY: forwarded from this function's contract, with MR = rows.
    unsafe { with_avx512_rows!(rows, "AVX-512 tile", |MR| with_rows::<MR, E>(t)) }
}

/// One MR x 32 register tile (see [`Avx512Tile`] for where the operands are).
///
/// # Safety
/// AVX-512F + FMA, and the [`MicroKernel::tile`] pointer contract with MR <= 8 rows (of A and
/// C), NR = 32, A's elements readable at the strided addresses.
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn tile_avx512<const MR: usize, const PACKED: bool, const PREFETCH: bool, E: PanelElem>(
    t: Avx512Tile<E>,
) {
    let Avx512Tile {
        k,
        a,
        a_row,
        a_col,
        b,
        c,
        ldc,
        accumulate,
        bias,
        gelu,
        prefetch,
    } = t;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    // SAFETY (whole body): every pointer offset stays inside the regions of the contract:
    // c + i·ldc + {0, 16} .. +16 for i < MR (an MR x 32 tile), a + i·a_row + p·a_col for
    // p < k and i < MR, b + p·32 + {0, 16} .. +16 for p < k, bias + {0, 16} .. +16.
    // Loads and stores are unaligned.
    unsafe {
        if accumulate {
            for (i, row) in acc.iter_mut().enumerate() {
                row[0] = _mm512_loadu_ps(c.add(i * ldc));
                row[1] = _mm512_loadu_ps(c.add(i * ldc + 16));
            }
        }
        // Packed A (MR_AVX512 values per k, contiguous) gets its strides as constants: each
        // broadcast is then one load at a fixed offset from one pointer. With strides known
        // only at run time the compiler rebuilt the 12 row addresses every k step: 13 integer
        // additions per 24 FMAs, some on the FMA ports.
        let (a_row, a_col) = if PACKED {
            (1, MR_AVX512)
        } else {
            (a_row, a_col)
        };
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.add(i * a_row));
        for p in 0..k {
            // Two cache lines of f32 per k step (one of a half format): a prefetch per line
            // of the stream, which never faults, hence wrapping arithmetic. Into L2 (T1), not
            // L1: on Zen 4 a query's weights stream from memory (e5-small's 85 MB), and T0
            // prefetches 8 KB ahead held L1's few miss buffers; one thread, 16 x 384 x 1,536
            // over 40 weight copies, 3 rounds: 79-83 -> 90-94 GFLOP/s (2 threads 139-149 ->
            // 159-171), e5-small W1 4.34-4.40 -> 4.16-4.21 ms. M = 128 and 2,048 unchanged.
            if PREFETCH {
                let ahead = prefetch.wrapping_add(p * 32 * size_of::<E>());
                _mm_prefetch::<_MM_HINT_T1>(ahead as *const i8);
                if size_of::<E>() == 4 {
                    _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64) as *const i8);
                }
            }
            let b0 = load16_avx512(b.add(p * 32));
            let b1 = load16_avx512(b.add(p * 32 + 16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*rows[i].add(p * a_col));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
        }
        store_tile_avx512(acc, c, ldc, bias, gelu);
    }
}

/// The epilogue of an MR x 32 tile of sums: + bias, GELU (with a bias only, as the driver
/// asks), stored to C's rows. Inlined into the tile, with only the GELU out of line
/// ([`gelu_tile_avx512`]): an out-of-line epilogue made the compiler spill the 24
/// accumulators to the stack and read them back, per tile (3.8% of a 2,048 x 192 x 4,096
/// GEMM on Zen 4).
///
/// # Safety
/// AVX-512F + FMA (inlined into a caller that has them); `c + i·ldc .. + 32` writable for
/// i < MR; `bias` null or 32 readable f32.
#[inline(always)]
unsafe fn store_tile_avx512<const MR: usize>(
    mut acc: [[__m512; 2]; MR],
    c: *mut f32,
    ldc: usize,
    bias: *const f32,
    gelu: bool,
) {
    // SAFETY: the contract above.
    unsafe {
        if !bias.is_null() {
            add_bias_avx512(&mut acc, bias);
            if gelu {
                acc = gelu_tile_avx512(acc);
            }
        }
        store_acc_avx512(&acc, c, ldc);
    }
}

/// GELU on every value of an MR x 32 tile.
#[target_feature(enable = "avx512f,fma")]
fn gelu_tile_avx512<const MR: usize>(mut acc: [[__m512; 2]; MR]) -> [[__m512; 2]; MR] {
    // Two rows (4 vectors) at a time: independent chains overlap.
    let mut pairs = acc.chunks_exact_mut(2);
    for rows in &mut pairs {
        let [a, b, c, d] = gelu_avx512([rows[0][0], rows[0][1], rows[1][0], rows[1][1]]);
        rows[0] = [a, b];
        rows[1] = [c, d];
    }
    for row in pairs.into_remainder() {
        let [a, b] = gelu_avx512([row[0], row[1]]);
        *row = [a, b];
    }
    acc
}

/// `acc[i] += bias` for every row of an MR x 32 tile.
///
/// # Safety
/// AVX-512F (inlined into a caller that has it); `bias` 32 readable f32.
#[inline(always)]
unsafe fn add_bias_avx512<const MR: usize>(acc: &mut [[__m512; 2]; MR], bias: *const f32) {
    // SAFETY: the contract above; unaligned loads.
    unsafe {
        let bias0 = _mm512_loadu_ps(bias);
        let bias1 = _mm512_loadu_ps(bias.add(16));
        for row in acc {
            row[0] = _mm512_add_ps(row[0], bias0);
            row[1] = _mm512_add_ps(row[1], bias1);
        }
    }
}

/// Stores an MR x 32 tile to C's rows.
///
/// # Safety
/// AVX-512F (inlined into a caller that has it); `c + i·ldc .. + 32` writable for i < MR.
#[inline(always)]
unsafe fn store_acc_avx512<const MR: usize>(acc: &[[__m512; 2]; MR], c: *mut f32, ldc: usize) {
    // SAFETY: the contract above; unaligned stores.
    unsafe {
        for (i, row) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(i * ldc), row[0]);
            _mm512_storeu_ps(c.add(i * ldc + 16), row[1]);
        }
    }
}

/// [`store_tile_avx512`]'s epilogue on `rows` rows of 32 f32 already stored at `c` (row stride
/// `ldc`): + bias, GELU (with a bias only), in place. The same operations lane by lane, so the
/// same bits as applying them in registers.
///
/// # Safety
/// AVX-512F + FMA; `c + i·ldc .. + 32` readable and writable for i < rows; `bias` null or 32
/// readable f32.
#[target_feature(enable = "avx512f,fma")]
pub(crate) unsafe fn bias_gelu_rows_avx512(
    c: *mut f32,
    ldc: usize,
    rows: usize,
    bias: *const f32,
    gelu: bool,
) {
    if bias.is_null() {
        return;
    }
    // SAFETY: the contract above; unaligned loads and stores.
    unsafe {
        let bias0 = _mm512_loadu_ps(bias);
        let bias1 = _mm512_loadu_ps(bias.add(16));
        for i in 0..rows {
            let r = c.add(i * ldc);
            let v = [
                _mm512_add_ps(_mm512_loadu_ps(r), bias0),
                _mm512_add_ps(_mm512_loadu_ps(r.add(16)), bias1),
            ];
            let [v0, v1] = if gelu { gelu_avx512(v) } else { v };
            _mm512_storeu_ps(r, v0);
            _mm512_storeu_ps(r.add(16), v1);
        }
    }
}

/// Row i < `rows` of `dst` (u16 at stride `ld_dst`), values 0..`cols`: the bf16 bits of row i
/// of `src` (f32 at stride `ld_src`), rounded as [`crate::gemm::packed::round_to_bf16`] rounds
/// (nearest, ties to even; NaN stays NaN; denormals kept, unlike `vcvtneps2bf16`, which
/// flushes them). 32 values go out as one 64-byte store (two narrowing stores of 16 a
/// line made a bf16 FFN-in GEMM slower than storing its f32 output).
///
/// # Safety
/// AVX-512F + AVX-512BW; `src + i·ld_src .. + cols` readable and `dst + i·ld_dst .. + cols`
/// writable for i < rows.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn store_rows_bf16_avx512(
    src: *const f32,
    ld_src: usize,
    rows: usize,
    cols: usize,
    dst: *mut u16,
    ld_dst: usize,
) {
    // u16 lane t of the pair (a, b) taken from lane 2t + 1 of a:b: the high halves, in order.
    let high_halves = _mm512_set_epi16(
        63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27, 25, 23, 21, 19,
        17, 15, 13, 11, 9, 7, 5, 3, 1,
    );
    for i in 0..rows {
        // SAFETY (the loop): lanes j.. of row i, inside both rows (the contract); masked lanes
        // are neither read nor written.
        let (s, d) = unsafe { (src.add(i * ld_src), dst.add(i * ld_dst)) };
        let mut j = 0;
        while j + 32 <= cols {
            unsafe {
                let a = round_bf16_high_avx512(_mm512_castps_si512(_mm512_loadu_ps(s.add(j))));
                let b = round_bf16_high_avx512(_mm512_castps_si512(_mm512_loadu_ps(s.add(j + 16))));
                let halves = _mm512_permutex2var_epi16(a, high_halves, b);
                _mm512_storeu_si512(d.add(j).cast(), halves);
            }
            j += 32;
        }
        while j < cols {
            let lanes = (cols - j).min(16);
            let mask: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
            unsafe {
                let bits = _mm512_castps_si512(_mm512_maskz_loadu_ps(mask, s.add(j)));
                _mm512_mask_cvtepi32_storeu_epi16(
                    d.add(j).cast(),
                    mask,
                    _mm512_srli_epi32::<16>(round_bf16_high_avx512(bits)),
                );
            }
            j += 16;
        }
    }
}

/// [`store_rows_bf16_avx512`] by `vcvtne2ps2bf16`, 32 values an instruction instead of ten
/// integer operations per 16: the same bits, except that f32 denormals become ±0 (the
/// instruction reads them as zero). Only for bf16 that a pair kernel reads: `tdpbf16ps` and
/// `vdpbf16ps` read a denormal bf16 as zero too (`pair_kernels_read_denormals_as_zero` in
/// tests/packed_gemm.rs), so their products are the same either way.
///
/// # Safety
/// AVX-512 F, BW and BF16; `src + i·ld_src .. + cols` readable and `dst + i·ld_dst .. + cols`
/// writable for i < rows.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn store_rows_bf16_cvtne_avx512(
    src: *const f32,
    ld_src: usize,
    rows: usize,
    cols: usize,
    dst: *mut u16,
    ld_dst: usize,
) {
    for i in 0..rows {
        // SAFETY (the loop): lanes j.. of row i, inside both rows (the contract); masked lanes
        // are neither read nor written.
        unsafe {
            let (s, d) = (src.add(i * ld_src), dst.add(i * ld_dst));
            let mut j = 0;
            while j + 32 <= cols {
                let a = _mm512_loadu_ps(s.add(j));
                let b = _mm512_loadu_ps(s.add(j + 16));
                let halves: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(b, a));
                _mm512_storeu_si512(d.add(j).cast(), halves);
                j += 32;
            }
            while j < cols {
                let lanes = (cols - j).min(16);
                let mask: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
                let half: __m256i =
                    std::mem::transmute(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, s.add(j))));
                _mm256_mask_storeu_epi16(d.add(j).cast(), mask, half);
                j += 16;
            }
        }
    }
}

/// [`bias_gelu_rows_avx512`] then [`store_rows_bf16_cvtne_avx512`] on rows of 32 values in
/// one pass: each row's two vectors go from the epilogue to `vcvtne2ps2bf16` in registers,
/// instead of being stored and read back. The same operations per value, so the same bits.
///
/// # Safety
/// AVX-512 F, BW and BF16 and FMA; `src + i·ld_src .. + 32` readable and `dst + i·ld_dst ..
/// + 32` writable for i < rows; `bias` null or 32 readable f32.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,fma")]
pub(crate) unsafe fn bias_gelu_store_bf16_cvtne_avx512(
    src: *const f32,
    ld_src: usize,
    rows: usize,
    bias: *const f32,
    gelu: bool,
    dst: *mut u16,
    ld_dst: usize,
) {
    // SAFETY: the contract above; unaligned loads and stores.
    unsafe {
        let bias_ok = !bias.is_null();
        let (bias0, bias1) = if bias_ok {
            (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16)))
        } else {
            (_mm512_setzero_ps(), _mm512_setzero_ps())
        };
        for i in 0..rows {
            let (s, d) = (src.add(i * ld_src), dst.add(i * ld_dst));
            let mut v = [_mm512_loadu_ps(s), _mm512_loadu_ps(s.add(16))];
            if bias_ok {
                // As `bias_gelu_rows_avx512`: no add and no GELU without a bias.
                v = [_mm512_add_ps(v[0], bias0), _mm512_add_ps(v[1], bias1)];
                if gelu {
                    v = gelu_avx512(v);
                }
            }
            let halves: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(v[1], v[0]));
            _mm512_storeu_si512(d.cast(), halves);
        }
    }
}

/// How rows of f32 become bf16 for a pair kernel: checked once, used per tile or row block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bf16RowStore {
    /// `vcvtne2ps2bf16` ([`store_rows_bf16_cvtne_avx512`]): denormals to zero.
    Cvtne,
    /// The rounding in integer operations ([`store_rows_bf16_avx512`]): exact
    /// [`crate::gemm::packed::round_to_bf16`].
    RoundBw,
}

impl Bf16RowStore {
    /// The faster store this CPU has, if any (AVX-512 kernels enabled, BW, and BF16 for
    /// [`Bf16RowStore::Cvtne`]).
    pub(crate) fn detect() -> Option<Self> {
        if !crate::avx512_enabled() || !is_x86_feature_detected!("avx512bw") {
            return None;
        }
        Some(if is_x86_feature_detected!("avx512bf16") {
            Bf16RowStore::Cvtne
        } else {
            Bf16RowStore::RoundBw
        })
    }

    /// Rows i < `rows`: `dst + i·ld_dst` = bf16 of `cols` f32 at `src + i·ld_src`.
    ///
    /// # Safety
    /// `self` came from [`Self::detect`] on this CPU; `src + i·ld_src .. + cols` readable and
    /// `dst + i·ld_dst .. + cols` writable for i < rows.
    pub(crate) unsafe fn store(
        self,
        src: *const f32,
        ld_src: usize,
        rows: usize,
        cols: usize,
        dst: *mut u16,
        ld_dst: usize,
    ) {
        // SAFETY: the contract; `detect` checked the features of each.
        unsafe {
            match self {
                Bf16RowStore::Cvtne => {
                    store_rows_bf16_cvtne_avx512(src, ld_src, rows, cols, dst, ld_dst)
                }
                Bf16RowStore::RoundBw => {
                    store_rows_bf16_avx512(src, ld_src, rows, cols, dst, ld_dst)
                }
            }
        }
    }
}

/// The f32 `bits` rounded to bf16 as [`crate::gemm::packed::round_to_bf16`] rounds (nearest,
/// ties to even; NaN stays NaN), the bf16 in the high half of each lane, the low half zero.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn round_bf16_high_avx512(bits: __m512i) -> __m512i {
    let nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(bits, _mm512_set1_epi32(0x7fff_ffff)),
        _mm512_set1_epi32(0x7f80_0000),
    );
    let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
    let high_half = _mm512_set1_epi32(0xffff_0000u32 as i32);
    let rounded = _mm512_and_si512(
        _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd)),
        high_half,
    );
    let nan_bits = _mm512_and_si512(
        _mm512_or_si512(bits, _mm512_set1_epi32(0x0040_0000)),
        high_half,
    );
    _mm512_mask_blend_epi32(nan, rounded, nan_bits)
}

/// `dst[j]` for j < `cols` = the pair (bf16(`even[j]`) low, bf16(`odd[j]`) high), converted
/// by `vcvtne2ps2bf16` as [`store_rows_bf16_cvtne_avx512`] converts (denormals to zero);
/// `odd` null stands for a row of zeros. Two rows of V become one K step of the
/// `tdpbf16ps` operand this way (the step's two k are two keys).
///
/// # Safety
/// AVX-512 F, BW and BF16; `cols` a multiple of 16; `even`, and `odd` unless null, hold `cols`
/// readable f32; `dst` holds `cols` writable u32.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn interleave_rows_bf16_avx512(
    even: *const f32,
    odd: *const f32,
    cols: usize,
    dst: *mut u32,
) {
    debug_assert!(cols.is_multiple_of(16));
    // u16 lane 2t from lane t (even row), lane 2t + 1 from lane 16 + t (odd row).
    let interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    let mut j = 0;
    while j < cols {
        // SAFETY: lanes j .. j + 16 <= cols of each row (the contract).
        unsafe {
            let lo = _mm512_loadu_ps(even.add(j));
            let hi = if odd.is_null() {
                _mm512_setzero_ps()
            } else {
                _mm512_loadu_ps(odd.add(j))
            };
            let halves: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(
                dst.add(j).cast(),
                _mm512_permutexvar_epi16(interleave, halves),
            );
        }
        j += 16;
    }
}

/// Proof that the CPU has AVX-512F, AVX-512 BF16 and FMA, and that the AVX-512 kernels are
/// enabled (see [`crate::avx512_enabled`]).
///
/// Its K steps are pairs of k: A's "f32" elements are two bf16 (k = 2p low, 2p + 1 high, as
/// `bf16_pairs` in the driver writes them) and a bf16 panel holds, per step and column, the
/// same two k side by side. `vdpbf16ps` then adds both products into each f32 lane: the odd
/// k's first, then the even one's, each rounded to nearest even, with denormal inputs and
/// results flushed to zero (Intel SDM; checked on hardware, see `naive::matmul_bias_nt_bf16_pairs`).
/// The products of two bf16 are exact in f32, so no other rounding happens.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Bf16Kernel(());

impl Avx512Bf16Kernel {
    pub(crate) fn new() -> Option<Self> {
        (crate::avx512_enabled() && is_x86_feature_detected!("avx512bf16"))
            .then_some(Avx512Bf16Kernel(()))
    }
}

impl MicroKernel for Avx512Bf16Kernel {
    const MR: usize = MR_AVX512;
    const NR: usize = 32;
    // 128 bytes of panel per step, as for f32: the same K block in steps covers twice the k.
    const KC: usize = 192;
    const KC_WHOLE: usize = 192; // K = 384 in one block
    const MC: usize = 192;

    unsafe fn tile<E: PanelElem>(
        self,
        k: usize,
        a: *const f32,
        b: *const E,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        bias: *const f32,
        gelu: bool,
        prefetch: *const u8,
    ) {
        let t = Avx512Tile {
            k,
            a,
            a_row: 1,
            a_col: MR_AVX512,
            b,
            c,
            ldc,
            accumulate,
            bias,
            gelu,
            prefetch,
        };
        // SAFETY: holding `self` proves AVX-512F + BF16 + FMA; the pointer contract is the
        // caller's, with panels of bf16 pairs (checked in `tile_avx512_bf16_with`).
        unsafe { tile_avx512_bf16_with(MR_AVX512, t) }
    }

    unsafe fn tile_rows<E: PanelElem>(
        self,
        rows: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const E,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        bias: *const f32,
        gelu: bool,
        prefetch: *const u8,
    ) {
        let t = Avx512Tile {
            k,
            a,
            a_row: lda,
            a_col: 1,
            b,
            c,
            ldc,
            accumulate,
            bias,
            gelu,
            prefetch,
        };
        // SAFETY: as for `tile`, with A's rows in place (the `tile_rows` contract).
        unsafe { tile_avx512_bf16_with(rows, t) }
    }
}

/// [`tile_avx512_bf16`] with the row count (1..=MR) made a constant once per tile.
///
/// # Safety
/// As [`tile_avx512_bf16`] with MR = `rows`.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16,fma")]
unsafe fn tile_avx512_bf16_with<E: PanelElem>(rows: usize, t: Avx512Tile<E>) {
    assert!(
        E::FORMAT == PanelFormat::Bf16,
        "the vdpbf16ps kernel multiplies bf16 panels only"
    );
    // SAFETY: forwarded from this function's contract, with MR = rows.
    unsafe { with_avx512_rows!(rows, "AVX-512 BF16 tile", |MR| tile_avx512_bf16::<MR, E>(t)) }
}

/// One MR x 32 register tile of `vdpbf16ps` over `k` steps (pairs of k).
///
/// # Safety
/// AVX-512F + BF16 + FMA; the [`MicroKernel::tile`] pointer contract with MR <= 12 rows,
/// NR = 32, a step being a pair: A's elements (the bits of two bf16) readable at
/// a + i·a_row + p·a_col, and `b` holding k·64 bf16 (per step, 32 columns x 2).
#[inline]
#[target_feature(enable = "avx512f,avx512bf16,fma")]
unsafe fn tile_avx512_bf16<const MR: usize, E: PanelElem>(t: Avx512Tile<E>) {
    let Avx512Tile {
        k,
        a,
        a_row,
        a_col,
        b,
        c,
        ldc,
        accumulate,
        bias,
        gelu,
        prefetch,
    } = t;
    let b = b as *const u16;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    // SAFETY (whole body): every offset stays inside the contract's regions: c + i·ldc
    // + {0, 16} .. +16 for i < MR, a + i·a_row + p·a_col for p < k and i < MR, b + p·64 +
    // {0, 32} .. +32 for p < k. Loads and stores are unaligned; a prefetch never faults.
    unsafe {
        if accumulate {
            for (i, row) in acc.iter_mut().enumerate() {
                row[0] = _mm512_loadu_ps(c.add(i * ldc));
                row[1] = _mm512_loadu_ps(c.add(i * ldc + 16));
            }
        }
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.add(i * a_row));
        for p in 0..k {
            // Into L2, as `tile_avx512` does: Zen 4, 2 threads, 3 alternating rounds, W1 bf16
            // medians e5-small 2.77-3.81 -> 2.41-2.67 ms, koe5-shape 35.4-42.5 -> 31.2-38.2 ms.
            if !prefetch.is_null() {
                let ahead = prefetch.wrapping_add(p * 128);
                _mm_prefetch::<_MM_HINT_T1>(ahead as *const i8);
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64) as *const i8);
            }
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * 64).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * 64 + 32).cast()));
            for (i, row) in acc.iter_mut().enumerate() {
                // The pair's 32 bits in every lane (a broadcast moves bits, never rounds).
                let ai: __m512bh = std::mem::transmute(_mm512_set1_ps(*rows[i].add(p * a_col)));
                row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
            }
        }
        store_tile_avx512(acc, c, ldc, bias, gelu);
    }
}

/// Sixteen panel values from `p`, widened to f32.
///
/// # Safety
/// AVX-512F, and 16 readable values at `p`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load16_avx512<E: PanelElem>(p: *const E) -> __m512 {
    // SAFETY: 16 values = 64 bytes (f32) or 32 bytes (f16, bf16) readable at p (contract);
    // the loads are unaligned.
    unsafe {
        match E::FORMAT {
            PanelFormat::F32 => _mm512_loadu_ps(p as *const f32),
            PanelFormat::F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
            PanelFormat::Bf16 => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(
                _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i)),
            )),
        }
    }
}
