//! Int8 GEMM for linear layers: weights quantized once at load, activations per row per call,
//! `out = epilogue(dequant(q_x · q_wᵀ) + bias)`.
//!
//! ```text
//! let w1 = QuantizedMatrix::quantize_b(w1_view)?;          // at model load, w1: [N, K]
//! matmul_quantized_bias(h, x, &w1, b1, Epilogue::Gelu)?;   // h[M,N] ≈ gelu(x[M,K] · w1ᵀ + b1)
//! ```
//!
//! An approximation of [`matmul_packed_bias`](super::packed::matmul_packed_bias), opt-in by
//! building a [`QuantizedMatrix`] instead of a `PackedMatrix`: about a quarter of the weight
//! memory, and faster where the f32 kernel is compute bound.
//!
//! # Quantization (symmetric, no zero points, never -128)
//! For a row `v` of K values (a weight row `w[j, :]` at [`QuantizedMatrix::quantize_b`], an
//! activation row `x[i, :]` at every call):
//! - `scale = max_k |v[k]| / 127` (one f32 division);
//! - `q[k] = clamp(round_half_even(v[k] / scale), -127, 127)` (one f32 division per element,
//!   rounded to nearest, ties to even, as the default FP rounding mode does).
//!
//! A row whose scale is 0 (all zeros, or a max so small that `max / 127` underflows) gets
//! `q = 0` and scale 0: its products are 0, never NaN. Weights must be finite
//! ([`QuantizedMatrix::quantize_b`] refuses others); an activation row holding a NaN or an
//! infinity has a NaN or infinite scale and `q = 0`, so its whole output row is NaN.
//!
//! Activations are quantized per row, once per call, before any task starts: a row's result
//! never depends on the other rows, on M, on the task split or on the thread count.
//!
//! # Arithmetic
//! `acc[i, j] = Σ_k q_x[i, k] · q_w[j, k]` is exact in i32: |acc| <= 127² · K < 2³¹ for
//! K <= [`MAX_K`] (checked at quantize time). The output element, in f32 and this order
//! (separate multiply and add, no FMA, on every kernel):
//!
//! ```text
//! v = f32(acc) · (scale_x[i] · scale_w[j]) + bias[j]    // f32(acc): round to nearest even
//! v = gelu_erf_f32(v)                                     // Epilogue::Gelu
//! v = v + residual[i, j]                                  // matmul_quantized_bias_residual
//! ```
//!
//! Every kernel performs exactly these operations (the vector GELU is bit for bit
//! [`gelu_erf_f32`]), so the AVX-512 VNNI and AVX2 kernels, the portable kernel and the
//! scalar [`naive`] twin give the same bits, which the tests assert.
//!
//! # Error against the f32 product
//! Each quantized value is off by at most half a step, so with `e_x = scale_x / 2`,
//! `e_w = scale_w / 2`: `|out - x·wᵀ - bias| <= e_x·Σ_k|w| + e_w·Σ_k|x| + K·e_x·e_w` plus f32
//! rounding of the epilogue (tested, with the cosine of whole rows, in `tests/int8_gemm.rs`).
//!
//! # Layout and loops
//! [`QuantizedMatrix`] stores `q_w` in panels of NR = 16 output columns, K padded with
//! zeros to a multiple of 4 and N to a multiple of 16 (scale 0 past N): for each group of 4
//! consecutive k (a "quad"), the 16 columns' 4 bytes each, so that one 32-byte load holds 8
//! columns x 4 k and lines up with a broadcast of 4 bytes of an activation row (and one
//! 64-byte load holds a whole quad for VNNI). Every kernel reads this one layout. The driver
//! quantizes x into `M` (rounded up to MR = 4) rows of K padded to 4 bytes, plus the kernel's
//! unsigned operands (|x| for AVX2, x + 128 for VNNI); tasks (a block of rows x a range of
//! panels) run on rayon as in [`super::packed`]. Within a task: panel → K block of
//! 512 (8 KB of the panel, kept in L1) → MR-row group, the exact i32 sums of each tile
//! carried across K blocks in a small scratch, then the float epilogue once per tile.

use rayon::prelude::*;

use super::kernels::int8_portable::PortableInt8Kernel;
#[cfg(target_arch = "x86_64")]
use super::kernels::int8_x86::{AmxInt8Kernel, Avx2Int8Kernel, Avx512VnniInt8Kernel};
use super::kernels::{tile_prefetch, BPrefetch};
use super::packed::Epilogue;
use super::panel_memory::PanelMemory;
use super::STREAM_MIN_BYTES;
use crate::aligned::CacheLineVec;
use crate::error::{expect_2d, expect_shape, Result, TensorError};
use crate::ops::gelu_f32::gelu_erf_f32;
use crate::tensor::{TensorView, TensorViewMut};

/// Rows of a register tile (one activation row broadcast each per k quad).
pub(crate) const MR: usize = 4;
/// Columns of a weight panel and of a register tile: two ymm vectors of 8 i32 accumulators.
pub(crate) const NR: usize = 16;
/// K block (a multiple of 4): a block of a weight panel, KC·NR = 8 KB, stays in the 32 KB L1d
/// while every row group of the task multiplies with it.
const KC: usize = 512;
/// Most row groups a vector kernel holds in registers at once.
pub(crate) const MAX_GROUPS: usize = 4;
/// Most row groups any kernel takes per pass over a panel block (the AMX kernel's four 16-row
/// tiles).
pub(crate) const MAX_PASS_GROUPS: usize = 16;
/// Most weight panels any kernel takes per pass ([`Int8MicroKernel::PASS_PANELS`]).
pub(crate) const MAX_PASS_PANELS: usize = 4;
/// Largest K whose sums cannot overflow i32: 127² · K <= i32::MAX.
pub const MAX_K: usize = i32::MAX as usize / (127 * 127);

/// Below this many multiply-adds (M·N·K) a call runs on the calling thread only.
const PAR_MIN_MACS: usize = 1 << 18;
/// Tasks per rayon thread when splitting: more than one evens out a noisy, shared machine.
const TASKS_PER_THREAD: usize = 4;
/// How the passes over a panel block prefetch it: the first 1,024 bytes (16 quads) ahead, the
/// second the next panel's block.
const B_PREFETCH: BPrefetch = BPrefetch {
    ahead: 1024,
    next_panel: true,
};
/// Bytes of quantized activations (values and unsigned operands) one M block may hold: they
/// stay in the 512 KB L2 while the block's weight panels stream past.
const A_BLOCK_BYTES: usize = 192 * 1024;
/// Below this many activation values, quantizing them is not worth handing to rayon.
const PAR_MIN_QUANTIZE: usize = 1 << 16;
/// 1.5·2²³: for |y| < 2²², `y + ROUND_MAGIC` lands where the f32 spacing is 1, so it is y
/// rounded to the nearest integer, ties to even, plus ROUND_MAGIC, and its bits minus
/// ROUND_MAGIC's bits are that integer: rounding in plain arithmetic that vectorises, unlike
/// `round_ties_even` on x86-64's SSE2 baseline.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Which micro-kernel multiplies with a [`QuantizedMatrix`]. Both read the same packed layout
/// and give the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Int8Kernel {
    /// AMX: the VNNI kernel with 16-row passes on `tdpbusd` tiles (64 k per instruction).
    AmxInt8,
    /// AVX-512 VNNI: `vpdpbusd` on x + 128 and w, minus 128·Σw; 4 x 16 tile. On where the CPU has it, like
    /// every AVX-512 kernel unless `KOEMBED_AVX512=0` ([`crate::avx512_enabled`]).
    Avx512Vnni,
    /// AVX2: `vpmaddubsw` on |x| and w with x's sign, `vpmaddwd` to i32; 4 x 16 tile.
    Avx2,
    /// Plain Rust i32 dot products.
    Portable,
}

impl Int8Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Int8Kernel {
        Self::supported()[0]
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::AmxInt8 => AmxInt8Kernel::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx512Vnni => Avx512VnniInt8Kernel::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2 => Avx2Int8Kernel::new().is_some(),
            Int8Kernel::Portable => PortableInt8Kernel::new().is_some(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this CPU supports, fastest first (never empty: ends with `Portable`).
    pub fn supported() -> Vec<Int8Kernel> {
        [
            Int8Kernel::AmxInt8,
            Int8Kernel::Avx512Vnni,
            Int8Kernel::Avx2,
            Int8Kernel::Portable,
        ]
        .into_iter()
        .filter(|k| k.is_supported())
        .collect()
    }
}

/// The inputs of one register tile over one K block: [`MR`] quantized activation rows times
/// one block of a weight panel.
pub(crate) struct Int8Tile<'a> {
    /// Row `i` of the tile is `a[i·lda..][..kcb]`.
    pub(crate) a: &'a [i8],
    /// The kernel's unsigned operands of `a` ([`Int8MicroKernel::unsigned_operand`]: `|a|`
    /// for AVX2, `a + 128` for VNNI), same layout.
    pub(crate) a_u8: &'a [u8],
    pub(crate) lda: usize,
    /// One K block of a weight panel: `kcb / 4` quads of NR columns x 4 bytes.
    pub(crate) b: &'a [i8],
    /// Null, or bytes to stream into cache at the pace the tile reads `b` (`prefetch + p·NR`
    /// at k step p): the first tile over a panel block streams it from memory and prefetches a
    /// little ahead in it, the second one (reusing the block from L1) the next panel's block
    /// when few tiles share a block. A hint only; results do not depend on it.
    pub(crate) prefetch: *const i8,
}

impl Int8Tile<'_> {
    /// The K block length, after checking that every row and the panel block hold it: what
    /// the kernels' unchecked reads rely on.
    pub(crate) fn kcb(&self) -> usize {
        let kcb = self.b.len() / NR;
        assert!(
            self.b.len() == kcb * NR && kcb.is_multiple_of(4),
            "int8 tile: panel block of {} bytes",
            self.b.len()
        );
        let a_len = (MR - 1) * self.lda + kcb;
        assert!(
            self.a.len() >= a_len && self.a_u8.len() >= a_len,
            "int8 tile: activation rows too short"
        );
        kcb
    }
}

/// What turns a tile's sums into output values: see [`dequantize`].
pub(crate) struct Int8Epilogue<'a> {
    pub(crate) row_scales: &'a [f32; MR],
    pub(crate) col_scales: &'a [f32; NR],
    pub(crate) bias: &'a [f32; NR],
    pub(crate) gelu: bool,
    /// Store whole 64-byte output rows with non-temporal stores (see [`super::STREAM_MIN_BYTES`]).
    pub(crate) stream: bool,
}

/// An int8 micro-kernel: exact i32 sums of a tile, then the float epilogue.
///
/// Safe methods: each kernel proves the CPU supports it by its constructor, and checks its
/// slices ([`Int8Tile::kcb`]) before any unchecked read.
pub(crate) trait Int8MicroKernel: Copy + Send + Sync {
    /// `acc[i][j] += Σ_k a[i, k] · b[k, j]` over the tile's K block.
    fn accumulate(self, t: &Int8Tile<'_>, acc: &mut [[i32; NR]; MR]);

    /// Row groups (of MR rows) that [`Self::accumulate_groups`] takes in one pass over a
    /// panel block when a task has `groups` of them (1..=[`MAX_PASS_GROUPS`]).
    fn groups_per_pass(groups: usize) -> usize {
        let _ = groups;
        1
    }

    /// Rows of an M block (a multiple of MR) for K = `k_pad`: the rows that share each block
    /// of weights from L1 while their activations stay in L2.
    fn block_rows(k_pad: usize) -> usize {
        // Activation values and unsigned operands.
        (A_BLOCK_BYTES / (2 * k_pad.max(1)) / MR * MR).clamp(MR, 256)
    }

    /// [`Self::accumulate`] for up to [`MAX_PASS_GROUPS`] tiles over the same panel block
    /// (`tiles[g].b` all equal, `accs.len() == tiles.len()`). A kernel with registers for
    /// more rows reads the block once for all of them: at M = 16 the block then streams from
    /// memory once, with 16 rows' work to hide it, instead of once for 4 rows and 3 times
    /// from L1.
    fn accumulate_groups(self, tiles: &[Int8Tile<'_>], accs: &mut [[[i32; NR]; MR]]) {
        for (t, acc) in tiles.iter().zip(accs) {
            self.accumulate(t, acc);
        }
    }

    /// Rows that go through all of a task's panels before the next rows start: the output
    /// is then written a few rows at a time (stores spread over hundreds of rows, 64 bytes to
    /// each, ran at a third of the memory's write speed). Without a limit (the default), the
    /// rows of an M block.
    const SUB_BLOCK_ROWS: usize = usize::MAX;

    /// Most panels a task takes for K = `k_pad` (unlimited by default): with
    /// [`Self::SUB_BLOCK_ROWS`], those panels are read again for every few rows, from L2 if
    /// they fit.
    fn max_chunk_panels(k_pad: usize) -> usize {
        let _ = k_pad;
        usize::MAX
    }

    /// Weight panels one pass takes at once ([`Self::accumulate_panels`]), at most
    /// [`MAX_PASS_PANELS`].
    const PASS_PANELS: usize = 1;

    /// [`Self::accumulate_groups`] over the same K block of `bs.len()` (1..=[`Self::PASS_PANELS`])
    /// weight panels: `tiles` hold the rows (their `b` is `bs[0]`), and panel p's accumulators
    /// are `accs[p·stride..][..tiles.len()]`. A kernel with room for it keeps a loaded
    /// activation tile for several panels.
    fn accumulate_panels(
        self,
        tiles: &[Int8Tile<'_>],
        bs: &[&[i8]],
        accs: &mut [[[i32; NR]; MR]],
        stride: usize,
    ) {
        for (p, &b) in bs.iter().enumerate() {
            let panel_tiles = with_block(tiles, b, 0);
            let accs = &mut accs[p * stride..][..tiles.len()];
            self.accumulate_groups(&panel_tiles[..tiles.len()], accs);
        }
    }

    /// `out[i][j] = dequantize(acc[i][j], ...)`.
    fn finish(self, acc: &[[i32; NR]; MR], e: &Int8Epilogue<'_>, out: &mut [[f32; NR]; MR]);

    /// [`Self::finish`] into the output: row i to `dst[i]` (if any), plus `residual[i]` (if
    /// any). SIMD kernels store from registers, instead of a copy per row.
    fn finish_into(
        self,
        acc: &[[i32; NR]; MR],
        e: &Int8Epilogue<'_>,
        dst: [Option<&mut [f32; NR]>; MR],
        residual: [Option<&[f32; NR]>; MR],
    ) {
        let mut values = [[0.0f32; NR]; MR];
        self.finish(acc, e, &mut values);
        for ((d, r), v) in dst.into_iter().zip(residual).zip(&values) {
            if let Some(d) = d {
                match r {
                    Some(r) => {
                        for ((d, &v), &s) in d.iter_mut().zip(v).zip(r) {
                            *d = v + s;
                        }
                    }
                    None => copy_row(d, v),
                }
            }
        }
    }

    /// The sums a tile starts from, per column, given the column's `Σ_k q_w` (the VNNI
    /// kernel's correction; 0 by default).
    fn acc_start(col_sums: &[i32; NR]) -> [i32; NR] {
        let _ = col_sums;
        [0; NR]
    }

    /// The unsigned byte the kernel multiplies for an activation value `q` (into
    /// [`Int8Tile::a_u8`]): `|q|` by default (the AVX2 kernel moves q's sign onto the weight).
    fn unsigned_operand(q: i8) -> u8 {
        q.unsigned_abs()
    }

    /// [`quantize_activation_row`]; SIMD kernels compile the same code for their ISA (the
    /// same operations in the same order, so the same bits).
    fn quantize_row(self, row: &[f32], q: &mut [i8], q_u8: &mut [u8]) -> f32 {
        quantize_activation_row(row, q, q_u8, Self::unsigned_operand)
    }
}

/// `tiles` over panel block `b` instead, from k `from` of the block on; prefetch off.
pub(crate) fn with_block<'a>(
    tiles: &[Int8Tile<'a>],
    b: &'a [i8],
    from: usize,
) -> [Int8Tile<'a>; MAX_PASS_GROUPS] {
    assert!(tiles.len() <= MAX_PASS_GROUPS && !tiles.is_empty());
    std::array::from_fn(|g| {
        let t = &tiles[g.min(tiles.len() - 1)];
        Int8Tile {
            a: &t.a[from..],
            a_u8: &t.a_u8[from..],
            lda: t.lda,
            b: &b[from * NR..],
            prefetch: std::ptr::null(),
        }
    })
}

/// The one definition of an output element before the residual (see the module docs).
#[inline]
pub(crate) fn dequantize(acc: i32, row_scale: f32, col_scale: f32, bias: f32, gelu: bool) -> f32 {
    let v = acc as f32 * (row_scale * col_scale) + bias;
    if gelu {
        gelu_erf_f32(v)
    } else {
        v
    }
}

/// Quantizes `row` into `q[..row.len()]` (the rest of `q` untouched); returns the scale.
///
/// The max of |v| is taken on the bit patterns (an integer max: exact, vectorises, and a NaN
/// wins over every number), so a non-finite row gives a non-finite scale.
#[inline(always)]
fn quantize_row(row: &[f32], q: &mut [i8]) -> f32 {
    let amax_bits = row
        .iter()
        .map(|v| v.to_bits() & 0x7fff_ffff)
        .fold(0, u32::max);
    let scale = f32::from_bits(amax_bits) / 127.0;
    let q = &mut q[..row.len()];
    if scale > 0.0 && scale.is_finite() {
        for (d, &v) in q.iter_mut().zip(row) {
            // |v / scale| <= 127 (about: v is finite and |v| <= 127·scale), far below 2²²:
            // the sum's low mantissa bits hold round(v / scale) in two's complement, read
            // with integer arithmetic, which vectorises where a float-to-int cast does not.
            let sum_bits = (v / scale + ROUND_MAGIC).to_bits() as i32;
            *d = (sum_bits - ROUND_MAGIC.to_bits() as i32).clamp(-127, 127) as i8;
        }
    } else {
        q.fill(0);
    }
    scale
}

/// Quantizes an activation row into `q` and the kernel's unsigned operands into `q_u8`
/// ([`Int8MicroKernel::unsigned_operand`]; see `kernels::int8_x86`); returns the scale.
#[inline(always)]
pub(crate) fn quantize_activation_row(
    row: &[f32],
    q: &mut [i8],
    q_u8: &mut [u8],
    // A function item, not a pointer: each kernel's loop is compiled (and vectorised) with
    // its own operand inlined.
    unsigned_operand: impl Fn(i8) -> u8,
) -> f32 {
    let scale = quantize_row(row, q);
    for (d, &v) in q_u8.iter_mut().zip(q.iter()) {
        *d = unsigned_operand(v);
    }
    scale
}

/// A weight matrix `w[N, K]` (PyTorch `nn.Linear` layout) quantized to int8 per output channel
/// and packed in 16-column panels (see the module docs).
///
/// Holds `n_pad · k_pad` bytes (N rounded up to 16, K to 4) plus one f32 scale per column.
pub struct QuantizedMatrix {
    kernel: Int8Kernel,
    n: usize,
    k: usize,
    /// K rounded up to 4.
    k_pad: usize,
    /// N rounded up to NR.
    n_pad: usize,
    /// The panels: `n_pad · k_pad` int8 values.
    panels: PanelMemory,
    /// `scale_w[j]` for j < n_pad (0 past N).
    scales: Vec<f32>,
    /// `Σ_k q_w[j, k]` for j < n_pad (0 past N).
    col_sums: Vec<i32>,
}

impl std::fmt::Debug for QuantizedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizedMatrix")
            .field("kernel", &self.kernel)
            .field("n", &self.n)
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

impl QuantizedMatrix {
    /// Quantizes `w[N, K]` for the fastest kernel of this CPU ([`Int8Kernel::detect`]).
    pub fn quantize_b(w: TensorView<'_>) -> Result<QuantizedMatrix> {
        Self::quantize_b_with_kernel(w, Int8Kernel::detect())
    }

    /// Quantizes `w[N, K]` for a chosen kernel (tests and benchmarks pin kernels this way).
    ///
    /// Errors if the CPU does not support the kernel, if K > [`MAX_K`] (the i32 sums could
    /// overflow) or if `w` holds a NaN or an infinity.
    pub fn quantize_b_with_kernel(w: TensorView<'_>, kernel: Int8Kernel) -> Result<Self> {
        const OP: &str = "QuantizedMatrix::quantize_b";
        let (n, k) = expect_2d(OP, "w", w.shape(), ["N", "K"])?;
        if !kernel.is_supported() {
            return Err(TensorError::InvalidArgument {
                op: OP,
                message: format!("int8 kernel {kernel:?} is not supported by this CPU"),
            });
        }
        if k > MAX_K {
            return Err(TensorError::InvalidArgument {
                op: OP,
                message: format!("K = {k} > {MAX_K}: int8 sums could overflow i32"),
            });
        }
        let data = w.as_slice();
        let k_pad = k.next_multiple_of(4);
        let n_pad = n.next_multiple_of(NR);
        let len = n_pad * k_pad;
        let mut panels = PanelMemory::zeroed(len);
        let mut scales = vec![0.0f32; n_pad];
        let packed = panels.as_mut_slice::<i8>(len);
        // Panel jp holds columns jp·NR..: column c of it, k quad p at p·4·NR + c·4.
        // The panel's NR rows are quantized first, then interleaved quad by quad, so that the
        // panel is written front to back (row by row, each row's quads land 64 bytes apart).
        let quantize_panel =
            |rows: &mut Vec<i8>, (jp, (panel, scales)): (usize, (&mut [i8], &mut [f32]))| {
                // Rows past n, and each row's tail past k, stay 0, as the padding must.
                rows.clear();
                rows.resize(NR * k_pad, 0);
                for ((c, scale), q) in scales
                    .iter_mut()
                    .enumerate()
                    .zip(rows.chunks_exact_mut(k_pad.max(1)))
                {
                    let j = jp * NR + c;
                    if j >= n {
                        break;
                    }
                    *scale = quantize_row(&data[j * k..(j + 1) * k], q);
                }
                for (p, quads) in panel.chunks_exact_mut(4 * NR).enumerate() {
                    for (c, quad) in quads.chunks_exact_mut(4).enumerate() {
                        // A 4-byte move: the slice lengths are constants.
                        quad.copy_from_slice(&rows[c * k_pad + 4 * p..][..4]);
                    }
                }
            };
        // A KoE5 layer's weights are 12 M values: every pool thread quantizes panels. (K = 0:
        // no panels, and every scale stays 0.)
        if n * k >= PAR_MIN_QUANTIZE {
            packed
                .par_chunks_exact_mut((k_pad * NR).max(1))
                .zip(scales.par_chunks_exact_mut(NR))
                .enumerate()
                .for_each_init(Vec::new, quantize_panel);
        } else {
            let mut rows = Vec::new();
            packed
                .chunks_exact_mut((k_pad * NR).max(1))
                .zip(scales.chunks_exact_mut(NR))
                .enumerate()
                .for_each(|panel| quantize_panel(&mut rows, panel));
        }
        // A row holding a NaN or an infinity has a non-finite scale: the first such row holds
        // the first bad weight.
        if let Some(j) = scales[..n].iter().position(|s| !s.is_finite()) {
            let row = &data[j * k..(j + 1) * k];
            let c = row.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(TensorError::InvalidArgument {
                op: OP,
                message: format!("w[{j}, {c}] = {} is not finite", row[c]),
            });
        }
        let col_sums = column_sums(panels.as_slice::<i8>(len), k_pad, n_pad);
        Ok(QuantizedMatrix {
            kernel,
            n,
            k,
            k_pad,
            n_pad,
            panels,
            scales,
            col_sums,
        })
    }

    /// Output features N (rows of the original `w`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features K (columns of the original `w`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The kernel that multiplies with this matrix.
    pub fn kernel(&self) -> Int8Kernel {
        self.kernel
    }

    /// Bytes held: the int8 panels (padding included), the f32 scales and the column sums.
    pub fn memory_bytes(&self) -> usize {
        self.panels.len()
            + self.scales.len() * std::mem::size_of::<f32>()
            + self.col_sums.len() * std::mem::size_of::<i32>()
    }

    /// Panel `jp`: columns `jp·NR ..`, `k_pad · NR` bytes.
    fn panel(&self, jp: usize) -> &[i8] {
        &self.panels.as_slice::<i8>(self.n_pad * self.k_pad)[jp * self.k_pad * NR..]
            [..self.k_pad * NR]
    }
}

/// `Σ_k q_w[j, k]` of every column of the packed panels (|sum| <= 127·K: no overflow).
fn column_sums(packed: &[i8], k_pad: usize, n_pad: usize) -> Vec<i32> {
    let panel_sums = |panel: &[i8]| -> [i32; NR] {
        let mut sums = [0i32; NR];
        for quads in panel.chunks_exact(4 * NR) {
            for (sum, quad) in sums.iter_mut().zip(quads.chunks_exact(4)) {
                *sum += quad.iter().map(|&v| v as i32).sum::<i32>();
            }
        }
        sums
    };
    let per_panel: Vec<[i32; NR]> = if k_pad == 0 {
        return vec![0; n_pad];
    } else if packed.len() >= PAR_MIN_QUANTIZE {
        packed
            .par_chunks_exact(k_pad * NR)
            .map(panel_sums)
            .collect()
    } else {
        packed.chunks_exact(k_pad * NR).map(panel_sums).collect()
    };
    per_panel.into_iter().flatten().collect()
}

/// `out[M,N] = epilogue(x[M,K] · wᵀ + bias[N])` in int8 with `w` from
/// [`QuantizedMatrix::quantize_b`] (x quantized per row; see the module docs for the exact
/// arithmetic).
///
/// `out` is written, never read (it may hold NaN). All shapes are checked before anything is
/// written. Uses the matrix's kernel, on rayon's threads.
pub fn matmul_quantized_bias(
    mut out: TensorViewMut<'_>,
    x: TensorView<'_>,
    w: &QuantizedMatrix,
    bias: TensorView<'_>,
    epilogue: Epilogue,
) -> Result<()> {
    const OP: &str = "matmul_quantized_bias";
    check_shapes(OP, &out, x, w, bias)?;
    run(
        out.as_mut_slice(),
        x,
        w,
        bias.as_slice(),
        epilogue == Epilogue::Gelu,
        None,
    );
    Ok(())
}

/// `out[M,N] = x[M,K] · wᵀ + bias[N] + residual[M,N]` in int8: a projection and its residual
/// connection in one pass, rounded like the two steps: `fl(fl(dequant + bias) + residual)`.
pub fn matmul_quantized_bias_residual(
    mut out: TensorViewMut<'_>,
    x: TensorView<'_>,
    w: &QuantizedMatrix,
    bias: TensorView<'_>,
    residual: TensorView<'_>,
) -> Result<()> {
    const OP: &str = "matmul_quantized_bias_residual";
    let m = check_shapes(OP, &out, x, w, bias)?;
    expect_shape(OP, "residual", residual.shape(), &["M", "N"], &[m, w.n])?;
    run(
        out.as_mut_slice(),
        x,
        w,
        bias.as_slice(),
        false,
        Some(residual.as_slice()),
    );
    Ok(())
}

/// Checks x[M, K], bias[N], out[M, N] against `w`; returns M.
fn check_shapes(
    op: &'static str,
    out: &TensorViewMut<'_>,
    x: TensorView<'_>,
    w: &QuantizedMatrix,
    bias: TensorView<'_>,
) -> Result<usize> {
    let (m, _) = expect_2d(op, "x", x.shape(), ["M", "K"])?;
    expect_shape(op, "x", x.shape(), &["M", "K"], &[m, w.k])?;
    expect_shape(op, "bias", bias.shape(), &["N"], &[w.n])?;
    expect_shape(op, "out", out.shape(), &["M", "N"], &[m, w.n])?;
    Ok(m)
}

/// One row of x with its quantized values, the kernel's unsigned operands and its scale to fill.
type ActivationRow<'a> = ((&'a [f32], (&'a mut [i8], &'a mut [u8])), &'a mut f32);

/// Quantizes x and runs the matrix's kernel over the whole output (shapes checked).
fn run(
    out: &mut [f32],
    x: TensorView<'_>,
    w: &QuantizedMatrix,
    bias: &[f32],
    gelu: bool,
    residual: Option<&[f32]>,
) {
    match w.kernel {
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::AmxInt8 => {
            let kr = AmxInt8Kernel::new().unwrap_or_else(missing);
            run_with(kr, out, x, w, bias, gelu, residual)
        }
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni => {
            let kr = Avx512VnniInt8Kernel::new().unwrap_or_else(missing);
            run_with(kr, out, x, w, bias, gelu, residual)
        }
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => {
            let kr = Avx2Int8Kernel::new().unwrap_or_else(missing);
            run_with(kr, out, x, w, bias, gelu, residual)
        }
        Int8Kernel::Portable => {
            let kr = PortableInt8Kernel::new().unwrap_or_else(missing);
            run_with(kr, out, x, w, bias, gelu, residual)
        }
        #[allow(unreachable_patterns)]
        _ => missing::<()>(),
    }
}

/// [`run`] on one kernel: quantization included, so that it runs on the kernel's ISA too.
fn run_with<Kr: Int8MicroKernel>(
    kr: Kr,
    out: &mut [f32],
    x: TensorView<'_>,
    w: &QuantizedMatrix,
    bias: &[f32],
    gelu: bool,
    residual: Option<&[f32]>,
) {
    let (m, n, k, k_pad) = (x.rows(), w.n, w.k, w.k_pad);
    if m == 0 || n == 0 {
        return;
    }
    let m_pad = m.next_multiple_of(MR);
    // Rows past M and k past K stay zero with scale 0: they only fill lanes that are dropped.
    // On cache lines: the AMX kernel loads 64-byte rows of them.
    let mut a_storage = CacheLineVec::filled(m_pad * k_pad, 0i8);
    let mut a_u8_storage = CacheLineVec::filled(m_pad * k_pad, 0u8);
    let (a, a_u8) = (a_storage.as_mut_slice(), a_u8_storage.as_mut_slice());
    let mut row_scales = vec![0.0f32; m_pad];
    // K = 0: no values, every scale 0 (an empty row has max 0), nothing to quantize.
    if k > 0 {
        let rows = x
            .as_slice()
            .chunks_exact(k)
            .zip(a.chunks_exact_mut(k_pad).zip(a_u8.chunks_exact_mut(k_pad)))
            .zip(&mut row_scales);
        let quantize = |((x_row, (q, q_u8)), scale): ActivationRow<'_>| {
            *scale = kr.quantize_row(x_row, q, q_u8);
        };
        if m * k < PAR_MIN_QUANTIZE {
            rows.for_each(quantize);
        } else {
            let rows: Vec<_> = rows.collect();
            rows.into_par_iter().for_each(quantize);
        }
    }
    let mut padded_bias = vec![0.0f32; w.n_pad];
    padded_bias[..n].copy_from_slice(bias);
    let call = Call {
        m,
        n,
        k_pad,
        a,
        a_u8,
        row_scales: &row_scales,
        w,
        bias: &padded_bias,
        gelu,
        residual,
    };
    call.run(kr, out);
}

fn missing<T>() -> T {
    unreachable!("a QuantizedMatrix is only built for a supported kernel")
}

/// The quantized operands of one call.
struct Call<'a> {
    m: usize,
    n: usize,
    k_pad: usize,
    /// `m_pad` rows of `k_pad` quantized activations, zero past M and K.
    a: &'a [i8],
    a_u8: &'a [u8],
    /// `m_pad` scales, 0 past M.
    row_scales: &'a [f32],
    w: &'a QuantizedMatrix,
    /// `n_pad` values, 0 past N.
    bias: &'a [f32],
    gelu: bool,
    /// `[M, N]` added to the output after the bias.
    residual: Option<&'a [f32]>,
}

/// The output pointer shared by the tasks of one call, each writing its own disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks of `Call::run` write disjoint elements (distinct M blocks or distinct column
// ranges) of the `&mut [f32]` borrowed for the whole call, and `run` returns only after all
// tasks finish (rayon's `for_each` joins).
unsafe impl Send for OutPtr {}
// SAFETY: as above; the pointer itself is only copied between threads.
unsafe impl Sync for OutPtr {}

impl Call<'_> {
    /// Whether the output is written with non-temporal stores ([`super::STREAM_MIN_BYTES`]).
    fn streams_output(&self) -> bool {
        self.m * self.n * 4 >= STREAM_MIN_BYTES
    }

    /// The whole `[M, N]` output, split into tasks on rayon's threads.
    fn run<Kr: Int8MicroKernel>(&self, kr: Kr, out: &mut [f32]) {
        let (m, n) = (self.m, self.n);
        assert_eq!(out.len(), m * n, "matmul_quantized_bias: out length");
        let m_pad = m.next_multiple_of(MR);
        let n_panels = self.w.n_pad / NR;
        // Rows per M block: a multiple of MR whose activations fit A_BLOCK_BYTES.
        let block_rows = Kr::block_rows(self.k_pad);
        assert!(
            block_rows >= MR && block_rows.is_multiple_of(MR),
            "int8: M block of {block_rows} rows"
        );
        let m_blocks = m_pad.div_ceil(block_rows);
        let threads = if m * n * self.k_pad < PAR_MIN_MACS {
            1
        } else {
            rayon::current_num_threads()
        };
        let chunks_wanted = (threads * TASKS_PER_THREAD).div_ceil(m_blocks);
        let panels_per_chunk = n_panels
            .div_ceil(chunks_wanted.clamp(1, n_panels))
            .min(Kr::max_chunk_panels(self.k_pad).max(1));
        let n_chunks = n_panels.div_ceil(panels_per_chunk);
        let tasks = m_blocks * n_chunks;
        let out_ptr = OutPtr(out.as_mut_ptr());
        let stream = self.streams_output();
        let task = |t: usize| {
            let (mb, nc) = (t / n_chunks, t % n_chunks);
            let rows = mb * block_rows..((mb + 1) * block_rows).min(m_pad);
            let panels = nc * panels_per_chunk..((nc + 1) * panels_per_chunk).min(n_panels);
            // SAFETY: task t alone writes rows `rows` (clamped to M) x the columns of `panels`
            // (clamped to N); see `OutPtr`. `out` outlives the tasks.
            unsafe { self.block(kr, out_ptr, rows, panels) };
            if stream {
                super::fence_streamed_stores();
            }
        };
        if threads == 1 || tasks == 1 {
            (0..tasks).for_each(task);
        } else {
            (0..tasks).into_par_iter().for_each(task);
        }
    }

    /// Rows `rows` (MR-aligned, within `m_pad`) x the columns of panels `panels`.
    ///
    /// # Safety
    /// `out` points to the `[M, N]` output (row stride N); no other thread accesses this
    /// region during the call.
    unsafe fn block<Kr: Int8MicroKernel>(
        &self,
        kr: Kr,
        out: OutPtr,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
    ) {
        let sub_rows = Kr::SUB_BLOCK_ROWS.max(MR) / MR * MR;
        for r in rows.clone().step_by(sub_rows) {
            // SAFETY: the contract, for a part of the rows.
            unsafe {
                self.sub_block(
                    kr,
                    out,
                    r..r.saturating_add(sub_rows).min(rows.end),
                    panels.clone(),
                )
            };
        }
    }

    /// [`Self::block`] for rows `rows` that go through all panels at once.
    ///
    /// # Safety
    /// As [`Self::block`].
    unsafe fn sub_block<Kr: Int8MicroKernel>(
        &self,
        kr: Kr,
        out: OutPtr,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
    ) {
        let k_pad = self.k_pad;
        let groups = rows.len() / MR;
        let pass_panels = Kr::PASS_PANELS.clamp(1, MAX_PASS_PANELS);
        // Panel p's accumulators at p·groups.
        // On a cache line: AMX loads and stores the tiles as 16 rows of 64 bytes.
        let mut acc_storage = CacheLineVec::filled(groups * pass_panels * MR * NR, 0i32);
        let acc = acc_storage.as_mut_slice().as_chunks_mut::<NR>().0;
        let acc = acc.as_chunks_mut::<MR>().0;
        let mut jp = panels.start;
        while jp < panels.end {
            let np = pass_panels.min(panels.end - jp);
            for p in 0..np {
                let j0 = (jp + p) * NR;
                let start =
                    Kr::acc_start(self.w.col_sums[j0..j0 + NR].try_into().expect("NR sums"));
                // Row by row: `fill` with a 256-byte value is a memcpy call per tile.
                acc[p * groups..][..groups]
                    .iter_mut()
                    .flatten()
                    .for_each(|row| *row = start);
            }
            // K blocks: the blocks of the panels stay in L1 while the block's rows pass by.
            let mut k0 = 0;
            while k0 < k_pad {
                let kcb = KC.min(k_pad - k0);
                let bs: [&[i8]; MAX_PASS_PANELS] = std::array::from_fn(|p| {
                    let panel = self.w.panel(jp + p.min(np - 1));
                    &panel[k0 * NR..(k0 + kcb) * NR]
                });
                let b = bs[0];
                let per_pass = Kr::groups_per_pass(groups).clamp(1, MAX_PASS_GROUPS);
                let passes = groups.div_ceil(per_pass);
                let next_block = || {
                    if jp + 1 < panels.end {
                        self.w.panel(jp + 1)[k0 * NR..].as_ptr() as *const u8
                    } else {
                        std::ptr::null()
                    }
                };
                for pass in 0..passes {
                    let g0 = pass * per_pass;
                    let len = per_pass.min(groups - g0);
                    let prefetch = if np == 1 {
                        tile_prefetch(
                            pass,
                            passes,
                            b.as_ptr() as *const u8,
                            B_PREFETCH,
                            next_block,
                        ) as *const i8
                    } else {
                        std::ptr::null()
                    };
                    let tiles: [Int8Tile<'_>; MAX_PASS_GROUPS] = std::array::from_fn(|g| {
                        // Past this pass's groups: a copy of its last (not passed on).
                        let a0 = (rows.start + (g0 + g.min(len - 1)) * MR) * k_pad + k0;
                        Int8Tile {
                            a: &self.a[a0..],
                            a_u8: &self.a_u8[a0..],
                            lda: k_pad,
                            b,
                            prefetch,
                        }
                    });
                    if np == 1 {
                        kr.accumulate_groups(&tiles[..len], &mut acc[g0..g0 + len]);
                    } else {
                        kr.accumulate_panels(&tiles[..len], &bs[..np], &mut acc[g0..], groups);
                    }
                }
                k0 += kcb;
            }
            // Row by row across the panels: a row's 64·np bytes of output in one go (panel
            // after panel, each write went to a new page once per panel: 35 of a KoE5 FFN's
            // 60 ms went in its output stores).
            for g in 0..groups {
                for p in 0..np {
                    // SAFETY: the contract (this task's rows x panel jp + p's columns).
                    unsafe {
                        self.finish_tile(kr, out, rows.start + g * MR, jp + p, &acc[p * groups + g])
                    };
                }
            }
            jp += np;
        }
    }

    /// The output of rows `r0..r0 + MR` (those below M) x panel `jp`, from their sums `acc`.
    ///
    /// # Safety
    /// As [`Self::block`], for these rows and the panel's columns.
    #[inline]
    unsafe fn finish_tile<Kr: Int8MicroKernel>(
        &self,
        kr: Kr,
        out: OutPtr,
        r0: usize,
        jp: usize,
        tile_acc: &[[i32; NR]; MR],
    ) {
        let n = self.n;
        let j0 = jp * NR;
        let col_scales = self.w.scales[j0..j0 + NR].try_into().expect("NR scales");
        let bias = self.bias[j0..j0 + NR].try_into().expect("NR biases");
        let cols = NR.min(n - j0);
        let e = Int8Epilogue {
            row_scales: self.row_scales[r0..r0 + MR].try_into().expect("MR scales"),
            col_scales,
            bias,
            gelu: self.gelu,
            stream: self.streams_output(),
        };
        if cols == NR {
            // A whole tile width: the kernel stores its live rows itself.
            let live = MR.min(self.m - r0);
            let dst: [Option<&mut [f32; NR]>; MR] = std::array::from_fn(|i| {
                (i < live).then(|| {
                    // SAFETY: row r0 + i < M, columns j0..j0 + NR <= N: inside the
                    // output and this task's region (see the contract); each row once.
                    unsafe { &mut *(out.0.add((r0 + i) * n + j0) as *mut [f32; NR]) }
                })
            });
            let residual: [Option<&[f32; NR]>; MR] = std::array::from_fn(|i| {
                let r = self.residual.filter(|_| i < live)?;
                Some(r[(r0 + i) * n + j0..][..NR].try_into().expect("NR values"))
            });
            kr.finish_into(tile_acc, &e, dst, residual);
            return;
        }
        let mut values = [[0.0f32; NR]; MR];
        kr.finish(tile_acc, &e, &mut values);
        for (i, tile_row) in values.iter().enumerate().take(self.m - r0) {
            let r = r0 + i;
            // SAFETY: row r < M, columns j0..j0 + cols <= N: inside the output and this
            // task's region (see the contract).
            let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(r * n + j0), cols) };
            match self.residual {
                Some(residual) => {
                    let src = &residual[r * n + j0..][..cols];
                    for ((d, &v), &s) in dst.iter_mut().zip(tile_row).zip(src) {
                        *d = v + s;
                    }
                }
                None => match <&mut [f32; NR]>::try_from(&mut *dst) {
                    Ok(whole) => copy_row(whole, tile_row),
                    Err(_) => dst.copy_from_slice(&tile_row[..cols]),
                },
            }
        }
    }
}

/// `*dst = *src` as four 16-byte moves. Written as an array assignment, the copy became a
/// `memcpy` call per tile row (13% of an e5-small int8 batch with the VNNI kernel).
#[inline(always)]
fn copy_row(dst: &mut [f32; NR], src: &[f32; NR]) {
    for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
        let v: [f32; 4] = s.try_into().expect("4 values");
        // A fixed-size store: one vector move.
        <&mut [f32; 4]>::try_from(d)
            .expect("4 values")
            .clone_from(&v);
    }
}

/// Scalar twins of the int8 GEMM, from the f32 weights: the reference the kernels are tested
/// against.
///
/// Same quantization (written the obvious way: `f32::max`, `round_ties_even`), i64 sums, the same
/// epilogue in the same float order, one element at a time. Same shape checks as the fast
/// functions, except that `w` is the f32 `[N, K]` matrix (K up to [`MAX_K`], finite).
pub mod naive {
    use super::{Epilogue, MAX_K};
    use crate::error::{expect_2d, expect_shape, Result, TensorError};
    use crate::ops::gelu_f32::gelu_erf_f32;
    use crate::tensor::{TensorView, TensorViewMut};

    /// Symmetric int8 quantization of one row: (scale, q), NaN scale for a non-finite row.
    pub fn quantize_row(row: &[f32]) -> (f32, Vec<i8>) {
        if row.iter().any(|v| !v.is_finite()) {
            return (f32::NAN, vec![0; row.len()]);
        }
        let scale = row.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
        if scale == 0.0 {
            return (0.0, vec![0; row.len()]);
        }
        let q = row
            .iter()
            .map(|&v| (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8)
            .collect();
        (scale, q)
    }

    /// `out[M,N] = epilogue(x[M,K] · w[N,K]ᵀ + bias[N])` in int8, one element at a time.
    pub fn matmul_quantized_bias(
        mut out: TensorViewMut<'_>,
        x: TensorView<'_>,
        w: TensorView<'_>,
        bias: TensorView<'_>,
        epilogue: Epilogue,
    ) -> Result<()> {
        let n = check("naive::matmul_quantized_bias", &out, x, w, bias)?;
        compute(out.as_mut_slice(), x, w, bias.as_slice(), n, |v, _| {
            if epilogue == Epilogue::Gelu {
                gelu_erf_f32(v)
            } else {
                v
            }
        });
        Ok(())
    }

    /// `out[M,N] = x[M,K] · w[N,K]ᵀ + bias[N] + residual[M,N]` in int8, one element at a time.
    pub fn matmul_quantized_bias_residual(
        mut out: TensorViewMut<'_>,
        x: TensorView<'_>,
        w: TensorView<'_>,
        bias: TensorView<'_>,
        residual: TensorView<'_>,
    ) -> Result<()> {
        const OP: &str = "naive::matmul_quantized_bias_residual";
        let n = check(OP, &out, x, w, bias)?;
        expect_shape(
            OP,
            "residual",
            residual.shape(),
            &["M", "N"],
            &[x.rows(), n],
        )?;
        let residual = residual.as_slice();
        compute(out.as_mut_slice(), x, w, bias.as_slice(), n, |v, at| {
            v + residual[at]
        });
        Ok(())
    }

    /// Checks shapes; returns N.
    fn check(
        op: &'static str,
        out: &TensorViewMut<'_>,
        x: TensorView<'_>,
        w: TensorView<'_>,
        bias: TensorView<'_>,
    ) -> Result<usize> {
        let (n, k) = expect_2d(op, "w", w.shape(), ["N", "K"])?;
        let (m, _) = expect_2d(op, "x", x.shape(), ["M", "K"])?;
        expect_shape(op, "x", x.shape(), &["M", "K"], &[m, k])?;
        expect_shape(op, "bias", bias.shape(), &["N"], &[n])?;
        expect_shape(op, "out", out.shape(), &["M", "N"], &[m, n])?;
        if k > MAX_K || w.as_slice().iter().any(|v| !v.is_finite()) {
            return Err(TensorError::InvalidArgument {
                op,
                message: format!("w must be finite with K <= {MAX_K}"),
            });
        }
        Ok(n)
    }

    /// `out[i, j] = last(acc · (scale_x · scale_w) + bias, i·N + j)`.
    fn compute(
        out: &mut [f32],
        x: TensorView<'_>,
        w: TensorView<'_>,
        bias: &[f32],
        n: usize,
        last: impl Fn(f32, usize) -> f32,
    ) {
        let k = w.cols();
        let w_rows: Vec<(f32, Vec<i8>)> = (0..n).map(|j| quantize_row(w.row(j))).collect();
        for i in 0..x.rows() {
            let (scale_x, q_x) = quantize_row(&x.as_slice()[i * k..(i + 1) * k]);
            for (j, (scale_w, q_w)) in w_rows.iter().enumerate() {
                let acc: i64 = q_x
                    .iter()
                    .zip(q_w)
                    .map(|(&a, &b)| a as i64 * b as i64)
                    .sum();
                let v = acc as f32 * (scale_x * scale_w) + bias[j];
                out[i * n + j] = last(v, i * n + j);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_to_even_and_clamped() {
        // max 127 gives scale 1 exactly, so q = round(v).
        let row = [127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -127.0, 3.49];
        let mut q = [99i8; 10];
        let scale = quantize_row(&row, &mut q);
        assert_eq!(scale, 1.0);
        assert_eq!(q, [127, 0, 2, 2, 0, -2, 126, -127, 3, 99]);
        assert_eq!(naive::quantize_row(&row), (1.0, q[..9].to_vec()));
    }

    #[test]
    fn zero_tiny_and_non_finite_rows_quantize_to_zeros() {
        for row in [
            [0.0, -0.0, 0.0],
            [f32::from_bits(1), 0.0, -f32::from_bits(1)],
        ] {
            let mut q = [5i8; 3];
            assert_eq!(quantize_row(&row, &mut q), 0.0);
            assert_eq!(q, [0; 3]);
        }
        for row in [[1.0, f32::NAN, 2.0], [1.0, f32::NEG_INFINITY, 2.0]] {
            let mut q = [5i8; 3];
            assert!(!quantize_row(&row, &mut q).is_finite());
            assert_eq!(q, [0; 3]);
        }
    }

    /// `kr.quantize_row` against the scalar twin: scale, values and magnitudes, bit for bit.
    fn check_kernel_quantization<Kr: Int8MicroKernel>(kr: Kr, name: &str, row: &[f32]) {
        let (want_scale, want_q) = naive::quantize_row(row);
        let mut q = vec![99i8; row.len()];
        let mut q_u8 = vec![99u8; row.len()];
        let scale = kr.quantize_row(row, &mut q, &mut q_u8);
        assert_eq!(
            scale.to_bits(),
            want_scale.to_bits(),
            "{name}: scale of {row:?}"
        );
        assert_eq!(q, want_q, "{name}: values of {row:?}");
        let want_u8: Vec<u8> = want_q.iter().map(|&v| Kr::unsigned_operand(v)).collect();
        assert_eq!(q_u8, want_u8, "{name}: unsigned operands of {row:?}");
    }

    #[test]
    fn every_kernel_quantizes_like_the_scalar_twin() {
        let mut rows: Vec<Vec<f32>> = vec![
            vec![127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -127.0, 3.49],
            vec![
                -127.0, 126.5, -126.5, 125.5, -0.5, 0.5, 1.5, -1.5, 2.5, -2.5, 63.5, -63.5,
            ],
            vec![3e38, -3e38, 1.0, 1e37],
            vec![1e-38, -5e-39, 2e-39, 0.0, -0.0],
            vec![0.0; 9],
        ];
        // Odd lengths around the vector widths, values spanning several magnitudes.
        for len in [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 65, 384, 1025] {
            // A multiplicative hash spreads the values over [-3, 3).
            let mut row: Vec<f32> = (0..len)
                .map(|i| ((i * 2_654_435_761 + len) % 10_007) as f32 * (6.0 / 10_007.0) - 3.0)
                .collect();
            row[len / 2] *= 40.0;
            rows.push(row);
        }
        for row in &rows {
            check_kernel_quantization(PortableInt8Kernel::new().unwrap(), "portable", row);
            #[cfg(target_arch = "x86_64")]
            if let Some(kr) = Avx2Int8Kernel::new() {
                check_kernel_quantization(kr, "avx2", row);
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(kr) = Avx512VnniInt8Kernel::new() {
                check_kernel_quantization(kr, "avx512-vnni", row);
            }
        }
    }

    #[test]
    fn max_k_is_the_overflow_limit() {
        assert!(127i64 * 127 * MAX_K as i64 <= i32::MAX as i64);
        assert!(127i64 * 127 * (MAX_K as i64 + 1) > i32::MAX as i64);
    }
}
