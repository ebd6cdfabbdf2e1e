//! The x86 int8 kernels: AVX2 (below) and AVX-512 VNNI ([`Avx512VnniInt8Kernel`]), each a
//! 4 x 16 tile of i32 accumulators over k quads.
//!
//! # AVX2
//!
//! # Why no saturation
//! `vpmaddubsw` multiplies unsigned bytes by signed bytes and adds adjacent pairs into i16 with
//! saturation. With activations offset to u8 (x + 128, up to 255) a pair can reach
//! 2·255·127 = 64770 and saturates silently. Instead the unsigned operand is |x| <= 127 and the
//! signed one is w with x's sign moved onto it (`vpsignb`, as llama.cpp does), so that
//! |x|·(sign(x)·w) = x·w and a pair is at most 2·127·127 = 32258 < 32767: never saturated, so
//! every sum is exact. `vpmaddwd` with ones then adds the two pairs of a quad into i32.
//!
//! # Per k quad
//! Two 32-byte loads of the panel (columns 0..8 and 8..16, 4 k each), then per row: broadcast
//! 4 bytes of x and of |x| (loads, no shuffle), 2 x (`vpsignb`, `vpmaddubsw`, `vpmaddwd`,
//! `vpaddd`). 8 accumulators + 2 panel vectors + ones + per-row temporaries fit the 16 ymm.

use std::arch::x86_64::*;

use crate::gemm::int8::{
    quantize_activation_row, with_block, Int8Epilogue, Int8MicroKernel, Int8Tile, MAX_GROUPS,
    MAX_PASS_GROUPS, MR, NR,
};
use crate::ops::gelu_f32::x86::{gelu_avx2, gelu_avx512};

/// Proof that the CPU has AVX2 and FMA (the vector GELU uses FMA).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Int8Kernel(());

impl Avx2Int8Kernel {
    pub(crate) fn new() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
            .then_some(Avx2Int8Kernel(()))
    }
}

impl Int8MicroKernel for Avx2Int8Kernel {
    fn accumulate(self, t: &Int8Tile<'_>, acc: &mut [[i32; NR]; MR]) {
        let kcb = t.kcb();
        // SAFETY: holding `self` proves AVX2; `kcb()` checked that every row holds kcb bytes
        // (a and a_u8) and the panel block kcb · NR bytes, which is all `accumulate_avx2`
        // reads.
        unsafe {
            if !t.prefetch.is_null() {
                accumulate_avx2::<true>(t, kcb, acc)
            } else {
                accumulate_avx2::<false>(t, kcb, acc)
            }
        }
    }

    fn finish(self, acc: &[[i32; NR]; MR], e: &Int8Epilogue<'_>, out: &mut [[f32; NR]; MR]) {
        // SAFETY: holding `self` proves AVX2 + FMA; all operands are fixed-size arrays.
        unsafe { finish_avx2(acc, e, out) }
    }

    fn quantize_row(self, row: &[f32], q: &mut [i8], q_u8: &mut [u8]) -> f32 {
        // SAFETY: holding `self` proves AVX2; the function reads and writes only its slices.
        unsafe { quantize_row_avx2::<Self>(row, q, q_u8) }
    }
}

/// [`quantize_activation_row`] with kernel `Kr`'s unsigned operand, compiled for AVX2: the
/// compiler vectorises the max, the division, the rounding and the conversions 8 lanes at a
/// time (IEEE operations, so the same bits as the baseline build; the int8 tests compare them
/// with the scalar twin).
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2<Kr: Int8MicroKernel>(
    row: &[f32],
    q: &mut [i8],
    q_u8: &mut [u8],
) -> f32 {
    quantize_activation_row(row, q, q_u8, Kr::unsigned_operand)
}

/// # Safety
/// AVX2; rows `i < MR` of `t.a` and `t.a_u8` hold `kcb` bytes from `i·t.lda`, and `t.b` holds
/// `kcb · NR` bytes; `kcb` is a multiple of 4.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn accumulate_avx2<const PREFETCH_B: bool>(
    t: &Int8Tile<'_>,
    kcb: usize,
    acc_out: &mut [[i32; NR]; MR],
) {
    let ones = _mm256_set1_epi16(1);
    // SAFETY: each acc row is [i32; 16]: two 8-lane loads.
    let mut acc: [[__m256i; 2]; MR] = std::array::from_fn(|i| unsafe {
        let row = acc_out[i].as_ptr().cast::<__m256i>();
        [_mm256_loadu_si256(row), _mm256_loadu_si256(row.add(1))]
    });
    let a: [*const i8; MR] = std::array::from_fn(|i| t.a[i * t.lda..].as_ptr());
    let a_u8: [*const u8; MR] = std::array::from_fn(|i| t.a_u8[i * t.lda..].as_ptr());
    let b = t.b.as_ptr();
    for p in (0..kcb).step_by(4) {
        // SAFETY: p + 4 <= kcb, so b + p·NR .. + 4·NR (two 32-byte loads) is inside the
        // panel block, and a[i] + p .. + 4 inside row i (the function's contract). Loads are
        // unaligned; a prefetch never faults, so its address may run past the panel.
        unsafe {
            if PREFETCH_B {
                _mm_prefetch::<_MM_HINT_T0>(t.prefetch.wrapping_add(p * NR));
            }
            let b0 = _mm256_loadu_si256(b.add(p * NR).cast());
            let b1 = _mm256_loadu_si256(b.add(p * NR + 32).cast());
            for (i, row) in acc.iter_mut().enumerate() {
                let signs = _mm256_set1_epi32(a[i].add(p).cast::<i32>().read_unaligned());
                let mags = _mm256_set1_epi32(a_u8[i].add(p).cast::<i32>().read_unaligned());
                let pairs0 = _mm256_maddubs_epi16(mags, _mm256_sign_epi8(b0, signs));
                let pairs1 = _mm256_maddubs_epi16(mags, _mm256_sign_epi8(b1, signs));
                row[0] = _mm256_add_epi32(row[0], _mm256_madd_epi16(pairs0, ones));
                row[1] = _mm256_add_epi32(row[1], _mm256_madd_epi16(pairs1, ones));
            }
        }
    }
    for (row, v) in acc_out.iter_mut().zip(&acc) {
        // SAFETY: each acc row is [i32; 16]: two 8-lane stores.
        unsafe {
            let row = row.as_mut_ptr().cast::<__m256i>();
            _mm256_storeu_si256(row, v[0]);
            _mm256_storeu_si256(row.add(1), v[1]);
        }
    }
}

/// The epilogue of `int8::dequantize`, lane-wise: f32(acc) · (row_scale · col_scale) + bias,
/// then the vector GELU (bit for bit `gelu_erf_f32`).
///
/// # Safety
/// AVX2 + FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn finish_avx2(acc: &[[i32; NR]; MR], e: &Int8Epilogue<'_>, out: &mut [[f32; NR]; MR]) {
    // SAFETY (whole body): every load and store is of two 8-lane halves of a [_; 16] array.
    unsafe {
        let scale0 = _mm256_loadu_ps(e.col_scales.as_ptr());
        let scale1 = _mm256_loadu_ps(e.col_scales.as_ptr().add(8));
        let bias0 = _mm256_loadu_ps(e.bias.as_ptr());
        let bias1 = _mm256_loadu_ps(e.bias.as_ptr().add(8));
        let mut v = [[_mm256_setzero_ps(); 2]; MR];
        for ((v_row, acc_row), &row_scale) in v.iter_mut().zip(acc).zip(e.row_scales) {
            let rs = _mm256_set1_ps(row_scale);
            let c0 = _mm256_mul_ps(rs, scale0);
            let c1 = _mm256_mul_ps(rs, scale1);
            let acc_row = acc_row.as_ptr().cast::<__m256i>();
            let a0 = _mm256_cvtepi32_ps(_mm256_loadu_si256(acc_row));
            let a1 = _mm256_cvtepi32_ps(_mm256_loadu_si256(acc_row.add(1)));
            v_row[0] = _mm256_add_ps(_mm256_mul_ps(a0, c0), bias0);
            v_row[1] = _mm256_add_ps(_mm256_mul_ps(a1, c1), bias1);
        }
        if e.gelu {
            // Two rows (4 vectors) at a time: independent chains overlap.
            for rows in v.chunks_exact_mut(2) {
                let [a, b, c, d] = gelu_avx2([rows[0][0], rows[0][1], rows[1][0], rows[1][1]]);
                rows[0] = [a, b];
                rows[1] = [c, d];
            }
        }
        for (out_row, v_row) in out.iter_mut().zip(&v) {
            _mm256_storeu_ps(out_row.as_mut_ptr(), v_row[0]);
            _mm256_storeu_ps(out_row.as_mut_ptr().add(8), v_row[1]);
        }
    }
}

/// Proof that the CPU has AVX-512F, AVX-512 VNNI, AVX2 and FMA
/// and that the AVX-512 kernels are enabled (see [`crate::avx512_enabled`]).
///
/// # Why no correction is lost
/// `vpdpbusd` multiplies unsigned bytes by signed bytes and adds each group of 4 products
/// into an i32 lane with no intermediate saturation. The unsigned operand is `x + 128` (in
/// 1..=255, since x >= -127), so a lane sums `Σ (x + 128)·w = Σ x·w + 128·Σ w`, and a tile's
/// sums start from `-128·Σ w` over the whole K (the column sums, computed once at quantize
/// time: [`Int8MicroKernel::acc_start`]). Every step is i32 arithmetic modulo 2³², and the
/// true result fits i32 (|Σ x·w| <= 127²·K, see `MAX_K`), so it comes out exact even where an
/// intermediate sum wraps: the same bits as the AVX2 and portable kernels.
///
/// # Per k quad
/// One 64-byte load of the panel (16 columns x 4 k), then per row a broadcast of 4 bytes of
/// `x + 128` and one `vpdpbusd` into the row's accumulator. Quads alternate between two sets of
/// accumulators, so that 8 independent sums hide `vpdpbusd`'s latency.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512VnniInt8Kernel(());

impl Avx512VnniInt8Kernel {
    pub(crate) fn new() -> Option<Self> {
        (crate::avx512_enabled()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma"))
        .then_some(Avx512VnniInt8Kernel(()))
    }
}

impl Int8MicroKernel for Avx512VnniInt8Kernel {
    fn unsigned_operand(q: i8) -> u8 {
        // x + 128 for x in -127..=127: flipping the sign bit of the two's complement byte.
        (q as u8) ^ 0x80
    }

    fn acc_start(col_sums: &[i32; NR]) -> [i32; NR] {
        col_sums.map(|s| s.wrapping_mul(-128))
    }

    // A query (M <= 16) in one pass: the panel streams from memory once, for 16 rows (KoE5
    // W1 int8 36 -> 26.5 ms). Larger M in passes of 8 rows: 16 rows a pass was slower there
    // (e5-small W2 int8 9,350 against 10,400-10,700 tok/s with 8; 10,100 with 4).
    fn groups_per_pass(groups: usize) -> usize {
        if groups <= MAX_GROUPS {
            groups
        } else {
            2
        }
    }

    fn accumulate_groups(self, tiles: &[Int8Tile<'_>], accs: &mut [[[i32; NR]; MR]]) {
        assert!(tiles.len() == accs.len() && tiles.len() <= MAX_GROUPS);
        let Some(first) = tiles.first() else {
            return;
        };
        // Every tile is checked (rows and block length); the panel block must be one.
        let kcb = first.kcb();
        for t in tiles {
            assert!(
                t.kcb() == kcb && std::ptr::eq(t.b, first.b),
                "int8 groups: one panel block"
            );
        }
        // SAFETY: holding `self` proves AVX-512F and VNNI; `kcb()` checked, for every tile,
        // that each of its MR rows of `a_u8` holds kcb bytes and the block kcb · NR bytes.
        unsafe {
            match tiles.len() {
                1 => self.accumulate(first, &mut accs[0]),
                2 => accumulate_vnni_rows::<8>(tiles, kcb, accs),
                3 => accumulate_vnni_rows::<12>(tiles, kcb, accs),
                _ => accumulate_vnni_rows::<16>(tiles, kcb, accs),
            }
        }
    }

    fn accumulate(self, t: &Int8Tile<'_>, acc: &mut [[i32; NR]; MR]) {
        let kcb = t.kcb();
        // SAFETY: holding `self` proves AVX-512F and VNNI; `kcb()` checked that every row holds
        // kcb bytes of `a_u8` and the panel block kcb · NR bytes, which is all
        // `accumulate_vnni` reads.
        unsafe {
            if !t.prefetch.is_null() {
                accumulate_vnni::<true>(t, kcb, acc)
            } else {
                accumulate_vnni::<false>(t, kcb, acc)
            }
        }
    }

    fn finish(self, acc: &[[i32; NR]; MR], e: &Int8Epilogue<'_>, out: &mut [[f32; NR]; MR]) {
        // SAFETY: holding `self` proves AVX-512F + FMA; all operands are fixed-size arrays.
        unsafe { finish_avx512(acc, e, out) }
    }

    fn finish_into(
        self,
        acc: &[[i32; NR]; MR],
        e: &Int8Epilogue<'_>,
        dst: [Option<&mut [f32; NR]>; MR],
        residual: [Option<&[f32; NR]>; MR],
    ) {
        // SAFETY: holding `self` proves AVX-512F + FMA; all operands are fixed-size arrays.
        unsafe { finish_into_avx512(acc, e, dst, residual) }
    }

    fn quantize_row(self, row: &[f32], q: &mut [i8], q_u8: &mut [u8]) -> f32 {
        // SAFETY: holding `self` proves AVX-512F; the function reads and writes only its
        // slices.
        unsafe { quantize_row_avx512::<Self>(row, q, q_u8) }
    }
}

/// [`quantize_row_avx2`] compiled 16 lanes wide.
///
/// # Safety
/// AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn quantize_row_avx512<Kr: Int8MicroKernel>(
    row: &[f32],
    q: &mut [i8],
    q_u8: &mut [u8],
) -> f32 {
    quantize_activation_row(row, q, q_u8, Kr::unsigned_operand)
}

/// [`finish_avx2`] a whole tile row per vector: the same operations lane by lane (separate
/// multiply and add, the vector GELU that is bit for bit `gelu_erf_f32`), so the same bits.
///
/// # Safety
/// AVX-512F + FMA.
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn finish_avx512(acc: &[[i32; NR]; MR], e: &Int8Epilogue<'_>, out: &mut [[f32; NR]; MR]) {
    // SAFETY: AVX-512F + FMA (contract); every store is of a whole [f32; 16] array.
    unsafe {
        for (out_row, v_row) in out.iter_mut().zip(values_avx512(acc, e)) {
            _mm512_storeu_ps(out_row.as_mut_ptr(), v_row);
        }
    }
}

/// `Int8MicroKernel::finish_into` from registers.
///
/// # Safety
/// AVX-512F + FMA.
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn finish_into_avx512(
    acc: &[[i32; NR]; MR],
    e: &Int8Epilogue<'_>,
    dst: [Option<&mut [f32; NR]>; MR],
    residual: [Option<&[f32; NR]>; MR],
) {
    // SAFETY: AVX-512F + FMA (contract); every load and store is of a whole [f32; 16] array.
    unsafe {
        for ((d, r), v) in dst.into_iter().zip(residual).zip(values_avx512(acc, e)) {
            if let Some(d) = d {
                let v = match r {
                    Some(r) => _mm512_add_ps(v, _mm512_loadu_ps(r.as_ptr())),
                    None => v,
                };
                if e.stream && (d.as_ptr() as usize).is_multiple_of(64) {
                    // A whole line, written without reading it first (STREAM_MIN_BYTES).
                    _mm512_stream_ps(d.as_mut_ptr(), v);
                } else {
                    _mm512_storeu_ps(d.as_mut_ptr(), v);
                }
            }
        }
    }
}

/// The tile's output values, a row per vector (see [`finish_avx512`]).
///
/// Always inlined, into callers compiled for AVX-512F + FMA: returned through memory, the four
/// vectors were stored and loaded again per tile, and those stores waited behind the output's.
///
/// # Safety
/// AVX-512F + FMA.
#[inline(always)]
unsafe fn values_avx512(acc: &[[i32; NR]; MR], e: &Int8Epilogue<'_>) -> [__m512; MR] {
    // SAFETY (whole body): every load is of a whole [_; 16] array.
    unsafe {
        let scale = _mm512_loadu_ps(e.col_scales.as_ptr());
        let bias = _mm512_loadu_ps(e.bias.as_ptr());
        let v: [__m512; MR] = std::array::from_fn(|i| {
            let c = _mm512_mul_ps(_mm512_set1_ps(e.row_scales[i]), scale);
            let a = _mm512_cvtepi32_ps(_mm512_loadu_si512(acc[i].as_ptr().cast()));
            _mm512_add_ps(_mm512_mul_ps(a, c), bias)
        });
        if e.gelu {
            gelu_avx512(v)
        } else {
            v
        }
    }
}

/// [`accumulate_vnni`] for R = MR·G rows, of the G = `tiles.len()` tiles over one panel block:
/// one load of the block per quad for all rows, R independent sums.
///
/// # Safety
/// AVX-512F + VNNI; R = MR·tiles.len() = MR·accs.len(); for every tile, rows `i < MR` of
/// `a_u8` hold `kcb` bytes from `i·lda`; the tiles share `b`, which holds `kcb · NR` bytes;
/// `kcb` is a multiple of 4.
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn accumulate_vnni_rows<const R: usize>(
    tiles: &[Int8Tile<'_>],
    kcb: usize,
    accs: &mut [[[i32; NR]; MR]],
) {
    let row = |r: usize| -> (usize, usize) { (r / MR, r % MR) };
    // SAFETY: each acc row is [i32; 16]: one 16-lane load.
    let mut acc: [__m512i; R] = std::array::from_fn(|r| {
        let (g, i) = row(r);
        unsafe { _mm512_loadu_si512(accs[g][i].as_ptr().cast()) }
    });
    let a: [*const u8; R] = std::array::from_fn(|r| {
        let (g, i) = row(r);
        tiles[g].a_u8[i * tiles[g].lda..].as_ptr()
    });
    let (b, prefetch) = (tiles[0].b.as_ptr(), tiles[0].prefetch);
    for q in 0..kcb / 4 {
        // SAFETY: quad q < kcb / 4: b + q·4·NR .. + 64 is inside the panel block and a[r] +
        // 4q .. + 4 inside row r (the contract). Loads are unaligned; a prefetch never faults.
        unsafe {
            if !prefetch.is_null() {
                _mm_prefetch::<_MM_HINT_T0>(prefetch.wrapping_add(4 * q * NR));
            }
            let bq = _mm512_loadu_si512(b.add(4 * q * NR).cast());
            for (v, &ar) in acc.iter_mut().zip(&a) {
                let x = _mm512_set1_epi32(ar.add(4 * q).cast::<i32>().read_unaligned());
                *v = _mm512_dpbusd_epi32(*v, x, bq);
            }
        }
    }
    for (r, v) in acc.into_iter().enumerate() {
        let (g, i) = row(r);
        // SAFETY: each acc row is [i32; 16]: one 16-lane store.
        unsafe { _mm512_storeu_si512(accs[g][i].as_mut_ptr().cast(), v) };
    }
}

/// # Safety
/// AVX-512F + VNNI; rows `i < MR` of `t.a_u8` hold `kcb` bytes from `i·t.lda`, and `t.b` holds
/// `kcb · NR` bytes; `kcb` is a multiple of 4.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn accumulate_vnni<const PREFETCH_B: bool>(
    t: &Int8Tile<'_>,
    kcb: usize,
    acc_out: &mut [[i32; NR]; MR],
) {
    // SAFETY: each acc row is [i32; 16]: one 16-lane load.
    let mut acc: [__m512i; MR] =
        std::array::from_fn(|i| unsafe { _mm512_loadu_si512(acc_out[i].as_ptr().cast()) });
    let mut acc_odd = [_mm512_setzero_si512(); MR];
    let a: [*const u8; MR] = std::array::from_fn(|i| t.a_u8[i * t.lda..].as_ptr());
    let b = t.b.as_ptr();
    let quads = kcb / 4;
    // SAFETY (both loops): quad q < kcb / 4, so b + q·4·NR .. + 64 is inside the panel block
    // and a[i] + 4q .. + 4 inside row i (the function's contract). Loads are unaligned; a
    // prefetch never faults, so its address may run past the panel.
    for q in (0..quads / 2).map(|h| 2 * h) {
        unsafe {
            if PREFETCH_B {
                _mm_prefetch::<_MM_HINT_T0>(t.prefetch.wrapping_add(4 * q * NR));
            }
            let b0 = _mm512_loadu_si512(b.add(4 * q * NR).cast());
            let b1 = _mm512_loadu_si512(b.add(4 * (q + 1) * NR).cast());
            for i in 0..MR {
                let x0 = _mm512_set1_epi32(a[i].add(4 * q).cast::<i32>().read_unaligned());
                let x1 = _mm512_set1_epi32(a[i].add(4 * q + 4).cast::<i32>().read_unaligned());
                acc[i] = _mm512_dpbusd_epi32(acc[i], x0, b0);
                acc_odd[i] = _mm512_dpbusd_epi32(acc_odd[i], x1, b1);
            }
        }
    }
    if quads % 2 == 1 {
        let q = quads - 1;
        unsafe {
            let b0 = _mm512_loadu_si512(b.add(4 * q * NR).cast());
            for i in 0..MR {
                let x0 = _mm512_set1_epi32(a[i].add(4 * q).cast::<i32>().read_unaligned());
                acc[i] = _mm512_dpbusd_epi32(acc[i], x0, b0);
            }
        }
    }
    for ((row, v), odd) in acc_out.iter_mut().zip(acc).zip(acc_odd) {
        let sum = _mm512_add_epi32(v, odd);
        // SAFETY: each acc row is [i32; 16]: one 16-lane store.
        unsafe { _mm512_storeu_si512(row.as_mut_ptr().cast(), sum) };
    }
}

/// Proof of [`Avx512VnniInt8Kernel`]'s ISA plus AMX-INT8 tiles granted
/// ([`super::amx::amx_tiles_granted`]).
///
/// The VNNI kernel with 16-row passes on AMX: `tdpbusd` multiplies the same operands as
/// `vpdpbusd` (x + 128 unsigned, w signed) with the same exact i32 sums, 64 k per
/// instruction; a K block's last k (below a multiple of 64) and passes of fewer than 16 rows
/// run the VNNI code. So the same tile starts (-128·Σw) and the same bits as every other int8
/// kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AmxInt8Kernel(Avx512VnniInt8Kernel);

/// Bytes of weight panels a task of the AMX kernel takes (half the Xeon's 2 MB L2).
const AMX_B_CHUNK_BYTES: usize = 1 << 20;

/// Row groups in one 16-row AMX tile.
const AMX_GROUPS: usize = 16 / MR;

impl AmxInt8Kernel {
    pub(crate) fn new() -> Option<Self> {
        // Asked once: CPUID exits to the hypervisor under a VM (1.6% of a KoE5 int8 query
        // when asked per call).
        static INT8: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // CPUID.(7, 0):EDX bit 25: AMX-INT8.
        let int8 = *INT8.get_or_init(|| __cpuid_count(7, 0).edx & (1 << 25) != 0);
        let vnni = Avx512VnniInt8Kernel::new()?;
        (int8 && super::amx::amx_tiles_granted()).then_some(AmxInt8Kernel(vnni))
    }
}

impl Int8MicroKernel for AmxInt8Kernel {
    fn unsigned_operand(q: i8) -> u8 {
        Avx512VnniInt8Kernel::unsigned_operand(q)
    }

    fn acc_start(col_sums: &[i32; NR]) -> [i32; NR] {
        Avx512VnniInt8Kernel::acc_start(col_sums)
    }

    fn accumulate(self, t: &Int8Tile<'_>, acc: &mut [[i32; NR]; MR]) {
        self.0.accumulate(t, acc)
    }

    fn groups_per_pass(groups: usize) -> usize {
        groups.min(MAX_PASS_GROUPS)
    }

    // Each pass of 64 rows goes through the task's panels, which stay in L2 (1 MB of them);
    // an M block is only a unit of work.
    fn block_rows(_k_pad: usize) -> usize {
        256
    }

    const SUB_BLOCK_ROWS: usize = MAX_PASS_GROUPS * MR;

    fn max_chunk_panels(k_pad: usize) -> usize {
        (AMX_B_CHUNK_BYTES / (k_pad.max(1) * NR) / Self::PASS_PANELS * Self::PASS_PANELS)
            .max(Self::PASS_PANELS)
    }

    const PASS_PANELS: usize = 4;

    fn accumulate_groups(self, tiles: &[Int8Tile<'_>], accs: &mut [[[i32; NR]; MR]]) {
        let Some(first) = tiles.first() else {
            return;
        };
        let stride = accs.len();
        self.accumulate_panels(tiles, &[first.b], accs, stride);
    }

    fn accumulate_panels(
        self,
        tiles: &[Int8Tile<'_>],
        bs: &[&[i8]],
        accs: &mut [[[i32; NR]; MR]],
        stride: usize,
    ) {
        let (len, np) = (tiles.len(), bs.len());
        let Some(first) = tiles.first() else {
            return;
        };
        assert!(
            len <= MAX_PASS_GROUPS
                && (1..=Self::PASS_PANELS).contains(&np)
                && stride >= len
                && (np - 1) * stride + len <= accs.len(),
            "AMX int8: accumulators for {np} panels of {len} groups"
        );
        let kcb = first.kcb();
        for (g, t) in tiles.iter().enumerate() {
            // The rows must be consecutive rows of one buffer (as the driver lays them).
            assert!(
                t.kcb() == kcb
                    && t.lda == first.lda
                    && std::ptr::eq(t.a_u8.as_ptr(), first.a_u8[g * MR * first.lda..].as_ptr()),
                "AMX int8: consecutive rows"
            );
        }
        assert!(
            bs.iter().all(|b| b.len() == kcb * NR),
            "AMX int8: panel blocks of {kcb} k"
        );
        let whole = kcb / 64 * 64;
        // Whole 16-row tiles on AMX; the groups past them on VNNI.
        let amx_groups = if whole == 0 {
            0
        } else {
            len / AMX_GROUPS * AMX_GROUPS
        };
        for t0 in (0..amx_groups).step_by(AMX_GROUPS) {
            let base = accs.as_mut_ptr();
            // SAFETY: holding `self` proves AMX-INT8 with the tile state. C: panel p's groups
            // t0..t0 + 4 at p·stride + t0 are inside `accs` (asserted: (np-1)·stride + len
            // <= accs.len()), 16 contiguous rows of 16 i32, disjoint across panels (stride >=
            // len). A: the 16 consecutive rows of groups t0.. hold kcb >= whole bytes each at
            // stride lda (`kcb()` checked every group's rows). B: each block holds kcb·16 >=
            // whole·16 bytes.
            unsafe {
                let c =
                    std::array::from_fn(|p| base.add(p.min(np - 1) * stride + t0).cast::<i32>());
                let b = std::array::from_fn(|p| bs[p.min(np - 1)].as_ptr());
                super::amx::accumulate_amx_u8s8(
                    c,
                    tiles[t0].a_u8.as_ptr(),
                    first.lda,
                    b,
                    np,
                    whole / 64,
                );
            }
        }
        for (p, &b) in bs.iter().enumerate() {
            let accs = &mut accs[p * stride..][..len];
            if whole < kcb && amx_groups > 0 {
                // The last k of the block on VNNI, into the same sums.
                let rest = with_block(&tiles[..amx_groups], b, whole);
                for (t, acc) in rest[..amx_groups]
                    .chunks(MAX_GROUPS)
                    .zip(accs[..amx_groups].chunks_mut(MAX_GROUPS))
                {
                    self.0.accumulate_groups(t, acc);
                }
            }
            if amx_groups < len {
                let rest = with_block(&tiles[amx_groups..], b, 0);
                for (t, acc) in rest[..len - amx_groups]
                    .chunks(MAX_GROUPS)
                    .zip(accs[amx_groups..].chunks_mut(MAX_GROUPS))
                {
                    self.0.accumulate_groups(t, acc);
                }
            }
        }
    }

    fn finish(self, acc: &[[i32; NR]; MR], e: &Int8Epilogue<'_>, out: &mut [[f32; NR]; MR]) {
        self.0.finish(acc, e, out)
    }

    fn finish_into(
        self,
        acc: &[[i32; NR]; MR],
        e: &Int8Epilogue<'_>,
        dst: [Option<&mut [f32; NR]>; MR],
        residual: [Option<&[f32; NR]>; MR],
    ) {
        self.0.finish_into(acc, e, dst, residual)
    }

    fn quantize_row(self, row: &[f32], q: &mut [i8], q_u8: &mut [u8]) -> f32 {
        self.0.quantize_row(row, q, q_u8)
    }
}
