//! Packed GEMM for linear layers: weights packed once at load, `out = epilogue(x · wᵀ + bias)`.
//!
//! ```text
//! let w1 = PackedMatrix::pack_b(w1_view)?;          // at model load, w1: [N, K] (PyTorch)
//! matmul_packed_bias(h, x, &w1, b1, Epilogue::Gelu)?; // h[M,N] = gelu(x[M,K] · w1ᵀ + b1)
//! ```
//!
//! # Structure (BLIS-style)
//! - [`PackedMatrix`] holds `w` transposed into the layout of one micro-kernel: K blocks of KC
//!   (one block when K is at most the kernel's `KC_WHOLE`: 384 on AVX2, so that each output
//!   tile of e5-small's K = 384 products is stored once, not stored and re-read), each split
//!   into panels of NR output columns (zero-padded), each panel k-major
//!   (`panel[p·NR + j] = w[j0 + j, k0 + p]`), 64-byte aligned.
//! - A (`x`) is not packed: the kernel broadcasts MR-row panels straight from the row-major
//!   rows (measured faster than packing on this project's shapes with the AVX2 kernel). The
//!   AVX-512 kernel at M >= [`PACK_A_MIN_M`] and K < [`PACK_A_MAX_K`] (or
//!   M >= [`ALIASED_PACK_A_MIN_M`] when A's row stride is a multiple of 4 KB) is the exception: each task packs its rows per K block, MR
//!   rows interleaved (see [`MicroKernel::PACKS_A`]). A last, partial panel of
//!   fewer rows runs the same kernel instantiated for that many rows (AVX2: 1..=6), so it costs
//!   neither a packing pass nor FMAs on rows past M: at M = 16 (one query) that was a third of
//!   the tiles. Tiles on the right edge (N not a multiple of NR) go through a scratch tile on
//!   the stack.
//! - Loops: task (M block x range of NR panels) → K block → B panel (stays in L1) → A panel
//!   (from L2) → register tile. When the last K block is stored, bias is added in registers
//!   and GELU applied to the tile just stored, while it is in L1 (AVX2; in registers on the
//!   other kernels).
//! - Prefetch: when M is small (one query) every B panel comes from memory once. The first tile
//!   over a panel prefetches it a little ahead of its reads, and the second tile, which reuses
//!   the panel from L1 and so leaves memory idle, prefetches the next panel at the same pace
//!   (measured on e5-small W1: 4-6% off the median query, alternating runs), when few tiles
//!   share a panel: see [`tile_prefetch`]. The AVX-512 f32 kernel also has each tile
//!   prefetch, for writing, the output rows the next tile will store (`prefetch_next_tile`).
//! - Tasks run on rayon: whole M blocks when M is large (of 48 rows when all of B fits in 4 MB,
//!   see [`SMALL_B_BYTES`]; else the kernel's MC), and the N panels split into chunks so both
//!   cores work even at M = 16. K is never split between threads. (The single-threaded path,
//!   attention's per-head products, keeps the kernel's MC; a plain product over one K block,
//!   attention's scores, runs row tiles outer and all B panels inner, one kernel call per row
//!   tile: see `Call::serial_rows_of_panels`.)
//!
//! # Determinism and numerics
//! See the `gemm::kernels` module: each output element is one accumulation chain over K in
//! index order (FMA on the SIMD kernels), then `+ bias` in f32, then the epilogue. So a row's
//! result does not depend on M, on the other rows in the call, on the task split or on the
//! thread count; the AVX2 and AVX-512 kernels agree bit for bit; the portable kernel (unfused
//! multiply-add) may differ from them by rounding. Error against the f64-accumulated
//! [`naive`](super::naive) twin: within `(K + 2)·2^-24·Σ|x·w| + |bias|` like any f32 dot product
//! (tested), plus [`gelu_erf_f32`]'s 2.4e-7 for [`Epilogue::Gelu`].

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::kernels::amx::AmxBf16Kernel;
use super::kernels::portable::PortableKernel;
#[cfg(target_arch = "x86_64")]
use super::kernels::x86::{
    bias_gelu_store_bf16_cvtne_avx512, Avx2Kernel, Avx512Bf16Kernel, Avx512Kernel, Bf16RowStore,
};
pub use super::kernels::PanelFormat;
use super::kernels::{
    prefetch_rows, tile_prefetch, MicroKernel, PanelElem, PrefetchTo, MAX_A_PANEL, MAX_TILE,
};
use super::panel_memory::PanelMemory;
use crate::aligned::CacheLineVec;
use crate::error::{expect_2d, expect_shape, Result, TensorError};
use crate::ops::gelu_f32::gelu_erf_f32;
use crate::tensor::{TensorView, TensorViewMut};

/// The most output a task covers when K spans several K blocks (each block adds into it in
/// memory): 384 KB, in L2 next to the A block. A task of 192 rows x all of KoE5's 4,096
/// FFN columns (3 MB) re-read its output from memory per K block: f32 2,048 x 1,024 x 4,096
/// + GELU 70.5 -> 63.4 ms, x 3,072 48.2 -> 41.3 ms (2 threads) with the cap.
const TASK_OUTPUT_BYTES: usize = 384 << 10;

/// Below this many multiply-adds (M·N·K) a call runs on the calling thread only.
const PAR_MIN_FMAS: usize = 1 << 18;
/// Tasks per rayon thread when splitting a few row blocks over the columns (queries; large
/// batches have more row blocks than this anyway): more than one evens out a noisy, shared
/// machine, but each costs a hand-over. On the Xeon, 4 -> 2 took e5-small W1 from 3.83-3.86
/// to 3.34-3.70 ms, KoE5 W1 72.4-73.4 -> 70.7-71.3 ms (1: 3.42-3.55 and 72.6-72.7 ms).
const TASKS_PER_THREAD: usize = 2;
/// A B of at most this many bytes stays in L3 while the M blocks take turns with it, so the
/// M block can shrink to [`SMALL_B_M_BLOCK`] rows: in-process A/B over e5-small W2's four GEMMs
/// (B of 0.6-2.4 MB, M = 8192, 4 runs) 48 rows took 0.955-0.969x the time of 144, and 36-96
/// rows 0.96-0.98x; at M = 128 no change (0.997x). KoE5's (16 MB) took 1.01-1.06x: there
/// every M block streams B from memory again, and the kernel's own M block stays.
const SMALL_B_BYTES: usize = 4 << 20;
/// The M block for a small B (a multiple of every kernel's MR: 4, 6, 12).
const SMALL_B_M_BLOCK: usize = 48;
/// From this many rows on, a kernel that can ([`MicroKernel::PACKS_A`]) reads A packed per
/// task and K block rather than in place. At M = 16 packing made e5-small's GEMMs slower
/// (best of 200, 2 threads: 16 x 1536 x 384 from 336-339 to 245-254 GFLOP/s: the buffer and the
/// pass cost as much as a task's few tiles), at M = 128 mixed.
const PACK_A_MIN_M: usize = 1024;
/// From this depth on, many rows alone no longer make A packed (aliased rows still do): a
/// K block of an unaliased A row panel is then read from L2 as fast as from the packed
/// buffer, and the packing pass is pure cost. Zen 4, e5-small W2, `koembed bench --stages`:
/// FFN out (8192 x 1536 x 384, lda 6 KB) 203 -> 208 GFLOP/s; end to end, 3 alternating
/// rounds, W2 4342-4369 -> 4404-4438 tok/s, W3 3688-3714 -> 3718-3736; the K = 384 GEMMs
/// lose about 0.5% unpacked, so they stay packed. KoE5's rows are all 4 KB-aliased.
const PACK_A_MAX_K: usize = 1024;
/// From this many rows on, A is packed also when its row stride is a multiple of 4 KB
/// (KoE5's activations: K = 1,024 or 4,096; attention's queries inside the Q/K/V rows of
/// 3,072): in place, a tile's rows then share one L1 set. Xeon, 2 threads, medians of 4
/// alternating rounds: 96 x 1,024 x 3,072 304 -> 315 GFLOP/s, 128 x 1,024 x 4,096 290 -> 303,
/// attention over 8 x 512 tokens (16 heads of 64) 220 -> 225; but 32 and 16 rows 4-30%
/// slower (the buffer and the pass are then most of the call), 64 mixed (+7% at K = 1,024,
/// -4% at 4,096).
const ALIASED_PACK_A_MIN_M: usize = 96;

/// Which micro-kernel a [`PackedMatrix`] is packed for (and so which one multiplies with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmKernel {
    /// AMX: `tdpbf16ps` on 16 x 16 tiles over pairs of k, a 32 x 32 register tile; bf16
    /// panels only, K padded to 32. Its sums are not one f32 chain (see `kernels::amx`).
    AmxBf16,
    /// AVX-512 BF16: `vdpbf16ps` on pairs of k, 12 x 32 register tile; bf16 panels only
    /// ([`PanelFormat::Bf16`]), and its own order of operations: per pair, the odd k's product
    /// is added, then the even one's, denormals flushed (see [`naive::matmul_bias_nt_bf16_pairs`](super::naive::matmul_bias_nt_bf16_pairs)).
    Avx512Bf16,
    /// AVX-512F, 12 x 32 register tile.
    Avx512,
    /// AVX2 + FMA, 6 x 16 register tile.
    Avx2,
    /// Plain Rust, 4 x 8 tile, separate multiply and add.
    Portable,
}

impl GemmKernel {
    /// The fastest kernel this CPU supports for f32 (and f16) panels.
    pub fn detect() -> GemmKernel {
        Self::supported()[0]
    }

    /// The kernel for panels in `format` on this CPU: [`Self::detect`]'s, except that bf16
    /// panels get `vdpbf16ps` ([`GemmKernel::Avx512Bf16`]) where the CPU has it and it is
    /// the faster: not on Intel's Xeons, where it multiplies half as many pairs per second as
    /// the FMA (60 against 120 GMAC/s per core on the AVX-512 BF16 Xeon here, 2026-11-27),
    /// so the FMA kernel on bf16 panels is faster. `KOEMBED_VDPBF16PS=1` (or `0`) overrides.
    pub fn detect_for(format: PanelFormat) -> GemmKernel {
        if format == PanelFormat::Bf16 && GemmKernel::AmxBf16.is_supported() {
            return GemmKernel::AmxBf16;
        }
        let pairs = GemmKernel::Avx512Bf16;
        if format == PanelFormat::Bf16 && pairs.is_supported() && pairs_are_faster() {
            pairs
        } else {
            Self::detect()
        }
    }

    /// The panel formats the kernel multiplies.
    pub fn formats(self) -> &'static [PanelFormat] {
        match self {
            GemmKernel::AmxBf16 | GemmKernel::Avx512Bf16 => &[PanelFormat::Bf16],
            _ => &[PanelFormat::F32, PanelFormat::F16, PanelFormat::Bf16],
        }
    }

    /// Every kernel this CPU supports for panels in `format`, fastest first.
    pub fn supported_for(format: PanelFormat) -> Vec<GemmKernel> {
        [
            GemmKernel::AmxBf16,
            GemmKernel::Avx512Bf16,
            GemmKernel::Avx512,
            GemmKernel::Avx2,
            GemmKernel::Portable,
        ]
        .into_iter()
        .filter(|k| k.formats().contains(&format) && k.is_supported())
        .collect()
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            GemmKernel::AmxBf16 => AmxBf16Kernel::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx512Bf16 => Avx512Bf16Kernel::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx512 => Avx512Kernel::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx2 => Avx2Kernel::new().is_some(),
            GemmKernel::Portable => PortableKernel::new().is_some(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this CPU supports for f32 panels, fastest first (never empty: ends with
    /// `Portable`).
    pub fn supported() -> Vec<GemmKernel> {
        Self::supported_for(PanelFormat::F32)
    }

    /// Panel values per K step: 2 for the kernels that multiply pairs of k.
    fn step_values(self) -> usize {
        match self {
            GemmKernel::AmxBf16 | GemmKernel::Avx512Bf16 => 2,
            _ => 1,
        }
    }

    /// K steps of the packed layout for a K (padded to the kernel's step multiple).
    fn steps(self, k: usize) -> usize {
        fn of<K: MicroKernel>(steps: usize) -> usize {
            steps.next_multiple_of(K::STEP_MULTIPLE)
        }
        let steps = k.div_ceil(self.step_values());
        match self {
            #[cfg(target_arch = "x86_64")]
            GemmKernel::AmxBf16 => of::<AmxBf16Kernel>(steps),
            _ => steps,
        }
    }

    /// (MR, NR, K block in steps) of the kernel for a K: the packed layout.
    fn shape(self, k: usize) -> (usize, usize, usize) {
        fn of<K: MicroKernel>(k: usize) -> (usize, usize, usize) {
            (K::MR, K::NR, K::k_block(k))
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            GemmKernel::AmxBf16 => of::<AmxBf16Kernel>(self.steps(k)),
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx512Bf16 => of::<Avx512Bf16Kernel>(self.steps(k)),
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx512 => of::<Avx512Kernel>(k),
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx2 => of::<Avx2Kernel>(k),
            #[allow(unreachable_patterns)]
            _ => of::<PortableKernel>(k),
        }
    }
}

/// Whether `vdpbf16ps` beats the FMA on this CPU (see [`GemmKernel::detect_for`]): by the
/// variable `KOEMBED_VDPBF16PS` when set, else on every vendor but Intel (AMD's Zen 4 and 5
/// issue it at the FMA's rate with twice the products, by AMD's documentation; not measured
/// here).
fn pairs_are_faster() -> bool {
    match std::env::var("KOEMBED_VDPBF16PS").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => !cpu_vendor_is_intel(),
    }
}

fn cpu_vendor_is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Leaf 0 exists on every x86-64 CPU.
        let id = std::arch::x86_64::__cpuid(0);
        // "GenuineIntel" in EBX, EDX, ECX.
        id.ebx == 0x756e_6547 && id.edx == 0x4965_6e69 && id.ecx == 0x6c65_746e
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What happens to `x · wᵀ + bias` as it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// Store `x · wᵀ + bias`.
    None,
    /// Store `gelu(x · wᵀ + bias)`: exact-erf GELU evaluated in f32, bit for bit
    /// [`gelu_erf_f32`] (max abs error 2.3842e-7 against the f64 reference on [-10, 10]).
    Gelu,
}

/// A weight matrix `w[N, K]` (PyTorch `nn.Linear` layout) packed for one micro-kernel.
///
/// Packing copies the weights once (`K · N` rounded up to the kernel's NR, 4 bytes each, or 2
/// in a half [`PanelFormat`]); do it at model load and keep the packed matrix instead of the
/// f32 view.
pub struct PackedMatrix {
    kernel: GemmKernel,
    format: PanelFormat,
    n: usize,
    k: usize,
    /// K steps of the kernel: K, or K/2 rounded up for a kernel of k pairs.
    steps: usize,
    /// Panel values per step (1, or 2 for pairs).
    step_values: usize,
    /// N rounded up to NR.
    n_pad: usize,
    nr: usize,
    /// K block, in steps.
    kc: usize,
    /// The panels: `steps · n_pad · step_values` values of the format's type.
    panels: PanelMemory,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("kernel", &self.kernel)
            .field("format", &self.format)
            .field("n", &self.n)
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

impl PackedMatrix {
    /// Packs `w[N, K]` for the fastest kernel of this CPU ([`GemmKernel::detect`]).
    pub fn pack_b(w: TensorView<'_>) -> Result<PackedMatrix> {
        Self::pack_b_with_kernel(w, GemmKernel::detect())
    }

    /// Packs `w[N, K]` for a chosen kernel (tests and benchmarks pin kernels this way); errors if
    /// the CPU does not support it.
    pub fn pack_b_with_kernel(w: TensorView<'_>, kernel: GemmKernel) -> Result<PackedMatrix> {
        Self::pack_b_as(w, kernel, PanelFormat::F32)
    }

    /// Packs `w[N, K]` for a chosen kernel, storing the weights in `format`: f16 and bf16
    /// round each weight to nearest (ties to even) and halve the memory; the kernels widen
    /// them back to f32 as they load them, and accumulate in f32 as for f32 panels.
    pub fn pack_b_as(
        w: TensorView<'_>,
        kernel: GemmKernel,
        format: PanelFormat,
    ) -> Result<PackedMatrix> {
        const OP: &str = "PackedMatrix::pack_b";
        let (n, k) = expect_2d(OP, "w", w.shape(), ["N", "K"])?;
        if !kernel.is_supported() {
            return Err(TensorError::InvalidArgument {
                op: OP,
                message: format!("GEMM kernel {kernel:?} is not supported by this CPU"),
            });
        }
        if !kernel.formats().contains(&format) {
            return Err(TensorError::InvalidArgument {
                op: OP,
                message: format!(
                    "GEMM kernel {kernel:?} does not multiply {} panels",
                    format.name()
                ),
            });
        }
        let data = w.as_slice();
        if kernel.step_values() == 2 {
            return Ok(Self::pack_pairs_bf16(data, n, k, kernel));
        }
        Ok(match format {
            PanelFormat::F32 => Self::pack_strided_as::<f32>(data, n, k, k, 1, kernel),
            PanelFormat::F16 => Self::pack_strided_as::<half::f16>(data, n, k, k, 1, kernel),
            PanelFormat::Bf16 => Self::pack_strided_as::<half::bf16>(data, n, k, k, 1, kernel),
        })
    }

    /// Packs the `N x K` matrix whose element (j, p) is `data[j·row_stride + p·col_stride]`:
    /// `w[N, K]` rows (`row_stride = K, col_stride = 1`), a column block of a wider matrix, or a
    /// `[K, N]` matrix read transposed (`row_stride = 1`). Attention packs K and V this way,
    /// straight out of the fused QKV buffer. The caller has checked that `kernel` is supported.
    pub(crate) fn pack_strided(
        data: &[f32],
        n: usize,
        k: usize,
        row_stride: usize,
        col_stride: usize,
        kernel: GemmKernel,
    ) -> PackedMatrix {
        Self::pack_strided_as::<f32>(data, n, k, row_stride, col_stride, kernel)
    }

    /// [`Self::pack_strided`] into panels of `E`.
    fn pack_strided_as<E: PanelElem>(
        data: &[f32],
        n: usize,
        k: usize,
        row_stride: usize,
        col_stride: usize,
        kernel: GemmKernel,
    ) -> PackedMatrix {
        let (_, nr, kc) = kernel.shape(k);
        let n_pad = n.div_ceil(nr) * nr;
        let len = n_pad * k;
        let panels = PanelMemory::zeroed(len * std::mem::size_of::<E>());
        let mut matrix = PackedMatrix {
            kernel,
            format: E::FORMAT,
            n,
            k,
            steps: k,
            step_values: 1,
            n_pad,
            nr,
            kc,
            panels,
        };
        let packed = matrix.data_mut::<E>();
        // K block at k0 of length kcb starts at k0·n_pad; its panel jp at + jp·kcb·NR.
        let mut k0 = 0;
        while k0 < k {
            let kcb = kc.min(k - k0);
            let block = &mut packed[k0 * n_pad..(k0 + kcb) * n_pad];
            // An f32 panel is written in place; a half one is gathered in f32 and converted at
            // once (a vector conversion for f16).
            let pack_panel = |scratch: &mut Vec<f32>, (jp, panel): (usize, &mut [E])| {
                let source = PanelSource {
                    nr,
                    cols: nr.min(n - jp * nr),
                    k0,
                    kcb,
                    n0: jp * nr,
                    row_stride,
                    col_stride,
                };
                match E::as_f32_mut(panel) {
                    Some(panel) => gather_panel(panel, data, source),
                    None => {
                        scratch.clear();
                        scratch.resize(kcb * nr, 0.0);
                        gather_panel(scratch, data, source);
                        E::from_f32_slice(panel, scratch);
                    }
                }
            };
            // Weights at load are packed on every pool thread (a KoE5 layer is 50 MB); the
            // K and V blocks that attention packs per head, on the caller's.
            if n_pad * kcb >= PAR_PACK_MIN {
                block
                    .par_chunks_exact_mut(kcb * nr)
                    .enumerate()
                    .for_each_init(Vec::new, pack_panel);
            } else {
                let mut scratch = Vec::new();
                block
                    .chunks_exact_mut(kcb * nr)
                    .enumerate()
                    .for_each(|panel| pack_panel(&mut scratch, panel));
            }
            k0 += kcb;
        }
        matrix
    }

    /// Packs `w[N, K]` (row-major) as bf16 pairs: per K step p and column j, the values of
    /// k = 2p and 2p + 1 side by side (`vdpbf16ps`'s operand), a zero for the odd K's last.
    fn pack_pairs_bf16(data: &[f32], n: usize, k: usize, kernel: GemmKernel) -> PackedMatrix {
        let (_, nr, kc) = kernel.shape(k);
        let steps = kernel.steps(k);
        let n_pad = n.div_ceil(nr) * nr;
        let len = steps * n_pad * 2;
        let panels = PanelMemory::zeroed(len * std::mem::size_of::<half::bf16>());
        let mut matrix = PackedMatrix {
            kernel,
            format: PanelFormat::Bf16,
            n,
            k,
            steps,
            step_values: 2,
            n_pad,
            nr,
            kc,
            panels,
        };
        let packed = matrix.data_mut::<half::bf16>();
        let mut s0 = 0;
        while s0 < steps {
            let kcb = kc.min(steps - s0);
            let block = &mut packed[s0 * n_pad * 2..(s0 + kcb) * n_pad * 2];
            // Gather the block's 2·kcb k values (fewer at an odd K's end) as f32, then
            // interleave the pairs while rounding.
            let pack_panel = |scratch: &mut Vec<f32>, (jp, panel): (usize, &mut [half::bf16])| {
                // Steps past K (padding) gather nothing and stay zero.
                let k_values = (2 * kcb).min(k.saturating_sub(2 * s0));
                scratch.clear();
                scratch.resize(2 * kcb * nr, 0.0);
                let source = PanelSource {
                    nr,
                    cols: nr.min(n - jp * nr),
                    k0: 2 * s0,
                    kcb: k_values,
                    n0: jp * nr,
                    row_stride: k,
                    col_stride: 1,
                };
                gather_panel(scratch, data, source);
                for p in 0..kcb {
                    for j in 0..nr {
                        for h in 0..2 {
                            panel[(p * nr + j) * 2 + h] =
                                half::bf16::from_f32(scratch[(2 * p + h) * nr + j]);
                        }
                    }
                }
            };
            if n_pad * kcb * 2 >= PAR_PACK_MIN {
                block
                    .par_chunks_exact_mut(kcb * nr * 2)
                    .enumerate()
                    .for_each_init(Vec::new, pack_panel);
            } else {
                let mut scratch = Vec::new();
                block
                    .chunks_exact_mut(kcb * nr * 2)
                    .enumerate()
                    .for_each(|panel| pack_panel(&mut scratch, panel));
            }
            s0 += kcb;
        }
        matrix
    }

    /// Output features N (rows of the original `w`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features K (columns of the original `w`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The kernel this matrix is packed for.
    pub fn kernel(&self) -> GemmKernel {
        self.kernel
    }

    /// The number format the weights are stored in.
    pub fn format(&self) -> PanelFormat {
        self.format
    }

    /// Bytes held (padding included).
    pub fn memory_bytes(&self) -> usize {
        self.panels.len()
    }

    /// The packed data: `steps · n_pad · step_values` values of `E`.
    fn data<E: PanelElem>(&self) -> &[E] {
        assert_eq!(E::FORMAT, self.format, "panels read in another format");
        self.panels
            .as_slice(self.steps * self.n_pad * self.step_values)
    }

    /// [`Self::data`], writable (used only while packing).
    fn data_mut<E: PanelElem>(&mut self) -> &mut [E] {
        assert_eq!(E::FORMAT, self.format, "panels written in another format");
        self.panels
            .as_mut_slice(self.steps * self.n_pad * self.step_values)
    }

    /// Panel `jp` of the K block starting at step `k0` with `kcb` steps: `kcb · NR` steps'
    /// values.
    fn panel<E: PanelElem>(&self, k0: usize, kcb: usize, jp: usize) -> &[E] {
        let sv = self.step_values;
        &self.data::<E>()[(k0 * self.n_pad + jp * kcb * self.nr) * sv..][..kcb * self.nr * sv]
    }
}

/// Rows `0..m` of `x` (row stride `lda`, `k` values each) rounded to bf16 precision (nearest,
/// ties to even) and stored as f32, row stride `k`.
fn round_rows_to_bf16(x: &[f32], m: usize, k: usize, lda: usize) -> CacheLineVec<f32> {
    rows_of(m, k, m * k, |i, dst| {
        for (d, &v) in dst.iter_mut().zip(&x[i * lda..i * lda + k]) {
            *d = round_to_bf16(v);
        }
    })
}

/// `m` rows of `width` f32, row `i` written by `fill(i, row)`; on the pool's threads when the
/// `work` (values read) is worth it.
fn rows_of(
    m: usize,
    width: usize,
    work: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) -> CacheLineVec<f32> {
    // On a cache line: the AMX kernel loads 64-byte rows of it.
    let mut storage = CacheLineVec::filled(m * width, 0.0f32);
    let out = storage.as_mut_slice();
    let fill_row = |(i, row): (usize, &mut [f32])| fill(i, row);
    if work < PAR_MIN_FMAS / 4 {
        out.chunks_exact_mut(width.max(1))
            .enumerate()
            .for_each(fill_row);
    } else {
        out.par_chunks_exact_mut(width.max(1))
            .enumerate()
            .for_each(fill_row);
    }
    storage
}

/// Rows `rows` of `x` (row stride `lda`, `k` values each) as bf16 pairs into `dst`, row stride
/// `steps` (at least `k.div_ceil(2)`): step p of a row holds bf16(x[2p]) in its low half and
/// bf16(x[2p + 1]) (0 past K) in its high half, stored as the bits of an f32; zeros after.
/// Denormals may become zero ([`Bf16RowStore::Cvtne`]): the pair kernels read them so.
fn fill_bf16_pairs(dst: &mut [f32], x: &[f32], rows: std::ops::Range<usize>, k: usize, lda: usize) {
    let steps = dst.len() / rows.len().max(1);
    #[cfg(target_arch = "x86_64")]
    if let Some(store) = Bf16RowStore::detect().filter(|_| !rows.is_empty()) {
        // 32 values a store (the scalar loop below, compiled for SSE2 only, was 6% of a bf16
        // batch).
        assert!(steps >= k.div_ceil(2) && x.len() >= (rows.end - 1) * lda + k);
        // SAFETY: `store` detected here; rows.len() rows of k f32 at stride lda from row
        // rows.start (inside x, asserted), into rows of 2·steps >= k u16 covering `dst`.
        unsafe {
            store.store(
                x[rows.start * lda..].as_ptr(),
                lda,
                rows.len(),
                k,
                dst.as_mut_ptr().cast(),
                2 * steps,
            )
        };
        if 2 * steps > k {
            for row in dst.chunks_exact_mut(steps) {
                // SAFETY: as below, the row's u16 view.
                let halves: &mut [u16] =
                    unsafe { std::slice::from_raw_parts_mut(row.as_mut_ptr().cast(), 2 * steps) };
                halves[k..].fill(0);
            }
        }
        return;
    }
    for (i, dst) in rows.zip(dst.chunks_exact_mut(steps.max(1))) {
        // A step's two bf16 are the two little-endian (x86) halves of its 32 bits: the row's bf16
        // in k order, written as consecutive u16 (a narrowing loop that vectorises).
        // SAFETY: `dst` is `steps` f32 = 2·steps u16 of the same memory, borrowed mutably
        // here alone; u16 has the smaller alignment, and every bit pattern is an f32.
        let halves: &mut [u16] =
            unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast(), 2 * dst.len()) };
        let (values, padding) = halves.split_at_mut(k);
        store_bf16_bits(values, &x[i * lda..i * lda + k]);
        padding.fill(0);
    }
}

/// `dst[j]` = the bits of bf16(`src[j]`) ([`round_to_bf16`]).
fn store_bf16_bits(dst: &mut [u16], src: &[f32]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = (round_to_bf16(v).to_bits() >> 16) as u16;
    }
}

/// `bf16::from_f32(v).to_f32()` without the branches, so that the loop vectorises: add half an
/// ulp of bf16 (less one, plus the kept low bit: ties to even) and clear the low 16 bits. NaN
/// stays NaN (its quiet bit is set first, so no carry reaches the exponent); ±inf and values
/// that round past f32::MAX become ±inf, as in the reference conversion.
#[inline]
pub(crate) fn round_to_bf16(v: f32) -> f32 {
    let bits = v.to_bits();
    let nan = (bits & 0x7fff_ffff) > 0x7f80_0000;
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    f32::from_bits(if nan {
        (bits | 0x0040_0000) & 0xffff_0000
    } else {
        rounded
    })
}

/// Values packed per K block and panel on the caller's thread below this (f32 count).
const PAR_PACK_MIN: usize = 1 << 18;

/// Where one panel's values are in the source of [`PackedMatrix::pack_strided`]: columns
/// `n0..n0 + cols` (of `nr`) and K steps `k0..k0 + kcb`.
#[derive(Clone, Copy)]
pub(crate) struct PanelSource {
    pub nr: usize,
    pub cols: usize,
    pub k0: usize,
    pub kcb: usize,
    pub n0: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// Writes one panel (`kcb x nr`, K step major) from `data`; columns past `cols` are left as
/// they are (zero).
pub(crate) fn gather_panel(panel: &mut [f32], data: &[f32], src: PanelSource) {
    let PanelSource {
        nr,
        cols,
        k0,
        kcb,
        n0,
        row_stride,
        col_stride,
    } = src;
    if col_stride == 1 {
        // Whole 16 x 16 blocks as register transposes where the CPU has AVX-512 (attention
        // packs every head's keys this way: the scalar loop below was 4% of an int8 batch).
        #[cfg(target_arch = "x86_64")]
        let done = if crate::avx512_enabled() {
            // SAFETY: avx512_enabled() checked AVX-512F.
            unsafe { transpose_blocks_avx512(panel, data, &src) }
        } else {
            (0, 0)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = (0, 0);
        // Rows of w are contiguous along k: a transpose, 8 k steps at a time so that reads
        // stay sequential and writes stay within a few cache lines (what the blocks left: all
        // k steps of columns done.1.., and steps done.0.. of the columns before).
        let mut p0 = 0;
        while p0 < kcb {
            let steps = 8.min(kcb - p0);
            let first_col = if p0 + steps <= done.0 { done.1 } else { 0 };
            for j in first_col..cols {
                let row = &data[(n0 + j) * row_stride + k0 + p0..][..steps];
                for (q, &v) in row.iter().enumerate() {
                    panel[(p0 + q) * nr + j] = v;
                }
            }
            p0 += steps;
        }
    } else if row_stride == 1 {
        // [K, N] read transposed: each k step is a contiguous run of N values.
        for p in 0..kcb {
            let base = (k0 + p) * col_stride + n0;
            // A zip, not copy_from_slice: a 16-float run is not worth a memcpy call.
            for (d, &v) in panel[p * nr..p * nr + cols]
                .iter_mut()
                .zip(&data[base..base + cols])
            {
                *d = v;
            }
        }
    } else {
        for p in 0..kcb {
            let base = (k0 + p) * col_stride + n0 * row_stride;
            for (j, dst) in panel[p * nr..p * nr + cols].iter_mut().enumerate() {
                *dst = data[base + j * row_stride];
            }
        }
    }
}

/// The whole 16 x 16 blocks of [`gather_panel`]'s transpose (`col_stride == 1`): k steps
/// `0..steps` x columns `0..cols16`, each block 16 loads, four rounds of shuffles and 16
/// stores. Returns `(steps, cols16)`, both multiples of 16.
///
/// # Safety
/// AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_blocks_avx512(
    panel: &mut [f32],
    data: &[f32],
    src: &PanelSource,
) -> (usize, usize) {
    use std::arch::x86_64::*;
    let (steps, cols16) = (src.kcb / 16 * 16, src.cols / 16 * 16);
    for pb in (0..steps).step_by(16) {
        for jb in (0..cols16).step_by(16) {
            // Row i: column jb + i of the panel, its 16 k steps from pb (checked slices).
            let r: [__m512; 16] = std::array::from_fn(|i| {
                let row = &data[(src.n0 + jb + i) * src.row_stride + src.k0 + pb..][..16];
                // SAFETY: `row` holds 16 f32.
                unsafe { _mm512_loadu_ps(row.as_ptr()) }
            });
            // Pairs of rows interleaved, then quads, then 128-bit lanes twice: out[c] holds
            // element c of every row.
            let t: [__m512; 16] = std::array::from_fn(|i| {
                let (a, b) = (r[i & !1], r[i | 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                }
            });
            // u[4g + q]: rows 4g..4g+4, elements q, q+4, q+8, q+12 (one per 128-bit lane).
            let u: [__m512; 16] = std::array::from_fn(|i| {
                let (g, q) = (i / 4, i % 4);
                let (a, b) = (t[4 * g + q / 2], t[4 * g + 2 + q / 2]);
                if q % 2 == 0 {
                    _mm512_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm512_shuffle_ps::<0xEE>(a, b)
                }
            });
            // v[8h + e]: rows 8h..8h+8 of element e (lanes: e, e + 8 of rows 8h..+4, then of
            // rows 8h+4..+8), for e < 8 from lanes 0/2 of u, e >= 4 from lanes 1/3.
            let v: [__m512; 16] = std::array::from_fn(|i| {
                let (h, e) = (i / 8, i % 8);
                let (a, b) = (u[8 * h + e % 4], u[8 * h + 4 + e % 4]);
                if e < 4 {
                    _mm512_shuffle_f32x4::<0x88>(a, b)
                } else {
                    _mm512_shuffle_f32x4::<0xDD>(a, b)
                }
            });
            for c in 0..16 {
                // Element c: from v[c % 8] (rows 0-7) and v[8 + c % 8] (rows 8-15); lanes 0
                // and 2 hold elements below 8, lanes 1 and 3 those from 8.
                let (a, b) = (v[c % 8], v[8 + c % 8]);
                let col = if c < 8 {
                    _mm512_shuffle_f32x4::<0x88>(a, b)
                } else {
                    _mm512_shuffle_f32x4::<0xDD>(a, b)
                };
                let dst = &mut panel[(pb + c) * src.nr + jb..][..16];
                // SAFETY: `dst` holds 16 f32.
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), col) };
            }
        }
    }
    (steps, cols16)
}

/// `out[M,N] = epilogue(x[M,K] · wᵀ + bias[N])` with `w` packed by [`PackedMatrix::pack_b`].
///
/// `out` is written, never read (it may hold NaN). All shapes are checked before anything is
/// written. Uses the kernel the matrix was packed for, on rayon's threads.
pub fn matmul_packed_bias(
    mut out: TensorViewMut<'_>,
    x: TensorView<'_>,
    w: &PackedMatrix,
    bias: TensorView<'_>,
    epilogue: Epilogue,
) -> Result<()> {
    const OP: &str = "matmul_packed_bias";
    let (m, k) = check_packed(OP, &out, x, w, bias)?;
    let call = Call::new(m, k, x.as_slice(), w, bias.as_slice(), epilogue);
    call.dispatch_parallel(out.as_mut_slice());
    Ok(())
}

/// `out[M,N] = x[M,K] · wᵀ + bias[N] + residual[M,N]`: a projection followed by its residual
/// connection (the input of the next LayerNorm), in one pass over the output.
///
/// Rounds like the two separate steps: `fl(fl(x · wᵀ + bias) + residual)`.
pub fn matmul_packed_bias_residual(
    mut out: TensorViewMut<'_>,
    x: TensorView<'_>,
    w: &PackedMatrix,
    bias: TensorView<'_>,
    residual: TensorView<'_>,
) -> Result<()> {
    const OP: &str = "matmul_packed_bias_residual";
    let (m, k) = check_packed(OP, &out, x, w, bias)?;
    expect_shape(OP, "residual", residual.shape(), &["M", "N"], &[m, w.n])?;
    let call = Call {
        residual: Some(residual.as_slice()),
        ..Call::new(m, k, x.as_slice(), w, bias.as_slice(), Epilogue::None)
    };
    call.dispatch_parallel(out.as_mut_slice());
    Ok(())
}

/// Activations rounded to bf16 (nearest, ties to even), two k to a 32-bit step: the operand
/// of the bf16 pair kernels (AMX and AVX-512 BF16). A GEMM can store its output this way
/// ([`matmul_packed_bias_to_pairs`]) for the next to read
/// ([`matmul_packed_bias_residual_from_pairs`]), without an f32 copy of it in between: the
/// FFN's intermediate of a bf16 model, which that GEMM would round to bf16 anyway.
pub struct Bf16Pairs {
    /// Row i: `steps` f32-sized steps, bf16 of k = 2p in the low half of step p and of
    /// k = 2p + 1 in the high half; zeros past K.
    data: CacheLineVec<f32>,
    rows: usize,
    k: usize,
    steps: usize,
}

impl Bf16Pairs {
    /// Room for `rows` rows of `w`'s K inputs, laid out for `w`'s kernel, or None when that
    /// kernel does not multiply pairs of k.
    pub fn for_input_of(w: &PackedMatrix, rows: usize) -> Option<Bf16Pairs> {
        (w.step_values == 2).then(|| Bf16Pairs {
            data: CacheLineVec::filled(rows * w.steps, 0.0),
            rows,
            k: w.k,
            steps: w.steps,
        })
    }

    /// Rows held (calls use the first M).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values a row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Row `i`'s K values as f32 (bf16 widens to f32 exactly).
    pub fn row_f32(&self, i: usize) -> Vec<f32> {
        let row = &self.data.as_slice()[i * self.steps..(i + 1) * self.steps];
        let mut values = Vec::with_capacity(self.k);
        for &step in row {
            let bits = step.to_bits();
            values.push(f32::from_bits(bits << 16));
            values.push(f32::from_bits(bits & 0xffff_0000));
        }
        values.truncate(self.k);
        values
    }
}

/// The first M rows of `out` = bf16(epilogue(x · wᵀ + bias)): [`matmul_packed_bias`] with each
/// output rounded to bf16 (nearest, ties to even; denormals may become zero, as the pair
/// kernels read them: see `Bf16RowStore`), stored as pairs. `out` holds N values a row and at
/// least M rows.
pub fn matmul_packed_bias_to_pairs(
    out: &mut Bf16Pairs,
    x: TensorView<'_>,
    w: &PackedMatrix,
    bias: TensorView<'_>,
    epilogue: Epilogue,
) -> Result<()> {
    const OP: &str = "matmul_packed_bias_to_pairs";
    let (m, k) = check_inputs(OP, x, w, bias)?;
    if out.k != w.n || out.rows < m {
        return Err(TensorError::InvalidArgument {
            op: OP,
            message: format!(
                "out holds {} rows of {} values; needs {m} of N = {}",
                out.rows, out.k, w.n
            ),
        });
    }
    let call = Call::new(m, k, x.as_slice(), w, bias.as_slice(), epilogue);
    let out_steps = out.steps;
    if k > 0 && w.steps <= w.kc {
        // One K block: each tile is final when the kernel stores it, so it can be rounded
        // there (`block`), and no f32 copy of the output is made.
        let call = Call {
            pairs_out: Some(out_steps),
            ..call
        };
        call.dispatch_parallel(&mut out.data.as_mut_slice()[..m * out_steps]);
    } else {
        // Several K blocks add into the output in f32: round it once it is complete.
        let mut values = CacheLineVec::filled(m * w.n, 0.0f32);
        call.dispatch_parallel(values.as_mut_slice());
        let values = values.as_slice();
        out.data.as_mut_slice()[..m * out_steps]
            .par_chunks_exact_mut(out_steps)
            .enumerate()
            .for_each(|(i, row)| fill_bf16_pairs(row, values, i..i + 1, w.n, w.n));
    }
    Ok(())
}

/// [`matmul_packed_bias_residual`] with x given as bf16 pairs made for `w`
/// ([`Bf16Pairs::for_input_of`]): the same bits as passing the f32 values they hold. M is
/// `out`'s row count.
pub fn matmul_packed_bias_residual_from_pairs(
    mut out: TensorViewMut<'_>,
    x: &Bf16Pairs,
    w: &PackedMatrix,
    bias: TensorView<'_>,
    residual: TensorView<'_>,
) -> Result<()> {
    const OP: &str = "matmul_packed_bias_residual_from_pairs";
    let (m, n) = expect_2d(OP, "out", out.shape(), ["M", "N"])?;
    expect_shape(OP, "w", &[w.n], &["N"], &[n])?;
    expect_shape(OP, "bias", bias.shape(), &["N"], &[n])?;
    expect_shape(OP, "residual", residual.shape(), &["M", "N"], &[m, n])?;
    if w.step_values != 2 || x.k != w.k || x.steps != w.steps || x.rows < m {
        return Err(TensorError::InvalidArgument {
            op: OP,
            message: format!(
                "x holds {} rows of {} values in {} steps; w ({:?}, K = {}) needs {m} rows of \
                 {} steps",
                x.rows, x.k, x.steps, w.kernel, w.k, w.steps
            ),
        });
    }
    let call = Call {
        m,
        k: w.steps,
        n,
        x: &x.data.as_slice()[..m * x.steps],
        lda: x.steps,
        w,
        bias: Some(bias.as_slice()),
        gelu: false,
        residual: Some(residual.as_slice()),
        pairs_of_k: None,
        pairs_out: None,
    };
    call.dispatch_kernel::<half::bf16>(out.as_mut_slice());
    Ok(())
}

fn check_packed(
    op: &'static str,
    out: &TensorViewMut<'_>,
    x: TensorView<'_>,
    w: &PackedMatrix,
    bias: TensorView<'_>,
) -> Result<(usize, usize)> {
    let (m, k) = check_inputs(op, x, w, bias)?;
    expect_shape(op, "out", out.shape(), &["M", "N"], &[m, w.n])?;
    Ok((m, k))
}

/// x `[M, K]` with w's K, bias `[N]`: returns (M, K).
fn check_inputs(
    op: &'static str,
    x: TensorView<'_>,
    w: &PackedMatrix,
    bias: TensorView<'_>,
) -> Result<(usize, usize)> {
    let (m, k) = expect_2d(op, "x", x.shape(), ["M", "K"])?;
    expect_shape(op, "x", x.shape(), &["M", "K"], &[m, w.k])?;
    expect_shape(op, "bias", bias.shape(), &["N"], &[w.n])?;
    Ok((m, k))
}

/// `out[M, N] (row stride ldc) = x[M, K] (row stride lda) · wᵀ` on the calling thread only:
/// the building block of attention, where the parallelism is over sequences and heads.
///
/// # Safety
/// `out` points to M rows of N writable f32 at row stride `ldc` (`ldc >= N`) that nothing
/// else accesses during the call. `x` must hold row `M - 1`'s K values at `(M - 1)·lda`
/// (checked: a short `x` panics before anything is written).
pub(crate) unsafe fn matmul_packed_serial(
    out: *mut f32,
    ldc: usize,
    x: &[f32],
    lda: usize,
    m: usize,
    w: &PackedMatrix,
) {
    let k = w.k;
    if m > 0 && k > 0 {
        assert!(
            x.len() >= (m - 1) * lda + k,
            "matmul_packed_serial: x too short"
        );
    }
    let call = Call {
        m,
        k,
        n: w.n,
        x,
        lda,
        w,
        bias: None,
        gelu: false,
        residual: None,
        pairs_of_k: None,
        pairs_out: None,
    };
    let out = OutPtr(out);
    assert_eq!(w.format, PanelFormat::F32, "attention packs f32 panels");
    match w.kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded from this function's contract.
        GemmKernel::Avx512 => unsafe {
            call.serial::<_, f32>(Avx512Kernel::new().unwrap_or_else(missing), out, ldc)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        GemmKernel::Avx2 => unsafe {
            call.serial::<_, f32>(Avx2Kernel::new().unwrap_or_else(missing), out, ldc)
        },
        // SAFETY: as above.
        GemmKernel::Portable => unsafe {
            call.serial::<_, f32>(PortableKernel::new().unwrap_or_else(missing), out, ldc)
        },
        #[allow(unreachable_patterns)]
        _ => missing::<()>(),
    }
}

fn missing<T>() -> T {
    unreachable!("a PackedMatrix is only built for a supported kernel")
}

/// The checked operands of one call.
struct Call<'a> {
    m: usize,
    k: usize,
    n: usize,
    /// Row `i` of x starts at `x[i·lda]`.
    x: &'a [f32],
    lda: usize,
    w: &'a PackedMatrix,
    bias: Option<&'a [f32]>,
    gelu: bool,
    /// `[M, N]` added to the output (row stride N) after the bias.
    residual: Option<&'a [f32]>,
    /// `Some(K)`: x holds K f32 a row, and `k` counts the pair kernels' steps; each task
    /// converts its rows to bf16 pairs before its tiles read them.
    pairs_of_k: Option<usize>,
    /// `Some(steps)`: the output is bf16 pairs, `steps` a row (as f32-sized steps), each
    /// value rounded as its tile is stored; one K block only.
    pairs_out: Option<usize>,
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

impl<'a> Call<'a> {
    /// `out[M, N] = epilogue(x[M, K] · wᵀ + bias)`, x's rows K apart.
    fn new(
        m: usize,
        k: usize,
        x: &'a [f32],
        w: &'a PackedMatrix,
        bias: &'a [f32],
        epilogue: Epilogue,
    ) -> Call<'a> {
        Call {
            m,
            k,
            n: w.n,
            x,
            lda: k,
            w,
            bias: Some(bias),
            gelu: epilogue == Epilogue::Gelu,
            residual: None,
            pairs_of_k: None,
            pairs_out: None,
        }
    }

    fn dispatch_parallel(&self, out: &mut [f32]) {
        match self.w.format {
            PanelFormat::F32 => self.dispatch_kernel::<f32>(out),
            PanelFormat::F16 => self.dispatch_kernel::<half::f16>(out),
            PanelFormat::Bf16 if self.w.step_values == 2 => {
                // The pair kernels' operand: per row, K/2 steps of two bf16 (as the bits of
                // an f32, which the driver moves but never computes with), made by each task
                // for its own rows (`block`).
                let call = Call {
                    k: self.w.steps,
                    pairs_of_k: Some(self.k),
                    ..*self
                };
                call.dispatch_kernel::<half::bf16>(out)
            }
            PanelFormat::Bf16 => {
                // bf16 compute: the activations are rounded to bf16 like the weights, the
                // products accumulate in f32.
                let rounded = round_rows_to_bf16(self.x, self.m, self.k, self.lda);
                let call = Call {
                    x: rounded.as_slice(),
                    lda: self.k,
                    ..*self
                };
                call.dispatch_kernel::<half::bf16>(out)
            }
        }
    }

    fn dispatch_kernel<E: PanelElem>(&self, out: &mut [f32]) {
        match self.w.kernel {
            #[cfg(target_arch = "x86_64")]
            GemmKernel::AmxBf16 => {
                self.run::<_, E>(AmxBf16Kernel::new().unwrap_or_else(missing), out)
            }
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx512Bf16 => {
                self.run::<_, E>(Avx512Bf16Kernel::new().unwrap_or_else(missing), out)
            }
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx512 => {
                self.run::<_, E>(Avx512Kernel::new().unwrap_or_else(missing), out)
            }
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx2 => self.run::<_, E>(Avx2Kernel::new().unwrap_or_else(missing), out),
            GemmKernel::Portable => {
                self.run::<_, E>(PortableKernel::new().unwrap_or_else(missing), out)
            }
            #[allow(unreachable_patterns)]
            _ => missing::<()>(),
        }
    }

    /// The bias padded to whole panels (zeros past N), or None.
    fn padded_bias(&self) -> Option<Vec<f32>> {
        self.bias.map(|b| {
            let mut padded = vec![0.0f32; self.w.n_pad];
            padded[..self.n].copy_from_slice(b);
            padded
        })
    }

    /// The whole output with row stride N, split into tasks on rayon's threads.
    fn run<Kr: MicroKernel, E: PanelElem>(&self, kr: Kr, out: &mut [f32]) {
        let (m, n, k) = (self.m, self.n, self.k);
        // Output row stride, in f32 (pairs: a step is an f32's room for two bf16).
        let ldc = self.pairs_out.unwrap_or(n);
        assert_eq!(out.len(), m * ldc, "matmul_packed_bias: out length");
        assert_eq!(self.w.nr, Kr::NR, "packed for another kernel");
        assert_eq!(self.w.kc, Kr::k_block(self.k), "packed for another kernel");
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            self.empty_k(out, n);
            return;
        }
        let n_panels = self.w.n_pad / Kr::NR;
        let bias = self.padded_bias();
        let mc = if self.w.memory_bytes() <= SMALL_B_BYTES {
            SMALL_B_M_BLOCK.next_multiple_of(Kr::MR)
        } else {
            Kr::MC
        };
        let m_blocks = m.div_ceil(mc);
        let threads = if m * n * k.max(1) < PAR_MIN_FMAS {
            1
        } else {
            rayon::current_num_threads()
        };
        let chunks_wanted = (threads * TASKS_PER_THREAD).div_ceil(m_blocks);
        let mut panels_per_chunk = n_panels.div_ceil(chunks_wanted.clamp(1, n_panels));
        if self.w.kc < k {
            // Each K block adds into the task's output in memory: keep that region in L2.
            let panel_bytes = mc.min(m) * Kr::NR * std::mem::size_of::<f32>();
            panels_per_chunk = panels_per_chunk.min((TASK_OUTPUT_BYTES / panel_bytes).max(1));
        }
        let n_chunks = n_panels.div_ceil(panels_per_chunk);
        if let (Some(k_values), true) = (self.pairs_of_k, n_chunks > 1) {
            // Several tasks share each block of rows (few rows, a query): their bf16 pairs
            // are made once, before the tasks, not by each (a KoE5 bf16 query was 5-7% slower).
            let pairs = rows_of(m, k, m * k_values, |i, row| {
                fill_bf16_pairs(row, self.x, i..i + 1, k_values, self.lda)
            });
            let call = Call {
                x: pairs.as_slice(),
                lda: k,
                pairs_of_k: None,
                ..*self
            };
            return call.run::<Kr, E>(kr, out);
        }
        let tasks = m_blocks * n_chunks;
        let out_ptr = OutPtr(out.as_mut_ptr());
        // Consecutive tasks are one M block's column chunks: a run of them on one thread packs
        // the block's A once for all of them (`KeptRows`) instead of once per chunk (KoE5's
        // FFN in has 4 chunks, QKV 3). 2 threads, medians of 4 alternating rounds: 4,096 x
        // 1,024 x 3,072 360 -> 367 GFLOP/s, 8,192 x 1,024 x 4,096 357 -> 364, 4,096 x 1,024
        // x 4,096 352 -> 354.
        let task = |(kept, partials): &mut (KeptRows, PartialSums), t: usize| {
            let (mb, nc) = (t / n_chunks, t % n_chunks);
            let rows = mb * mc..((mb + 1) * mc).min(m);
            let panels = nc * panels_per_chunk..((nc + 1) * panels_per_chunk).min(n_panels);
            let kept = (n_chunks > 1).then_some(kept);
            // SAFETY: task t alone writes rows `rows` x columns of `panels` (clamped to N); see
            // `OutPtr`. `out` outlives the tasks.
            unsafe {
                self.block::<Kr, E>(
                    kr,
                    out_ptr,
                    ldc,
                    rows,
                    panels,
                    bias.as_deref(),
                    kept,
                    Some(partials),
                )
            };
        };
        if threads == 1 || tasks == 1 {
            let mut state = Default::default();
            (0..tasks).for_each(|t| task(&mut state, t));
        } else {
            (0..tasks)
                .into_par_iter()
                .for_each_init(Default::default, task);
        }
    }

    /// No products: what the kernels store for an empty chain, (0 + bias), GELU, + residual.
    fn empty_k(&self, out: &mut [f32], n: usize) {
        for (i, row) in out.chunks_exact_mut(n).enumerate() {
            for (j, o) in row.iter_mut().enumerate() {
                let mut v = 0.0 + self.bias.map_or(0.0, |b| b[j]);
                if self.gelu {
                    v = gelu_erf_f32(v);
                }
                if let Some(r) = self.residual {
                    v += r[i * n + j];
                }
                *o = v;
            }
        }
    }

    /// The whole output on the calling thread, at row stride `ldc`.
    ///
    /// # Safety
    /// `out` points to M rows of N f32 at row stride `ldc` that nothing else accesses.
    unsafe fn serial<Kr: MicroKernel, E: PanelElem>(&self, kr: Kr, out: OutPtr, ldc: usize) {
        assert_eq!(self.w.nr, Kr::NR, "packed for another kernel");
        assert_eq!(self.w.kc, Kr::k_block(self.k), "packed for another kernel");
        if self.m == 0 || self.n == 0 {
            return;
        }
        if self.k == 0 {
            for i in 0..self.m {
                // SAFETY: row i < M of the caller's region.
                unsafe { std::slice::from_raw_parts_mut(out.0.add(i * ldc), self.n) }.fill(0.0);
            }
            return;
        }
        if self.k <= self.w.kc && Kr::MR * self.k <= MAX_A_PANEL && self.is_plain() {
            // SAFETY: forwarded from this function's contract.
            return unsafe { self.serial_rows_of_panels::<Kr, E>(kr, out, ldc) };
        }
        let bias = self.padded_bias();
        let n_panels = self.w.n_pad / Kr::NR;
        let mut r0 = 0;
        while r0 < self.m {
            let rows = r0..(r0 + Kr::MC).min(self.m);
            // SAFETY: forwarded from this function's contract.
            unsafe {
                self.block::<Kr, E>(kr, out, ldc, rows, 0..n_panels, bias.as_deref(), None, None)
            };
            r0 += Kr::MC;
        }
    }

    /// No bias, GELU, residual or bf16 pairs on either side: a plain `x · wᵀ`.
    fn is_plain(&self) -> bool {
        self.bias.is_none()
            && !self.gelu
            && self.residual.is_none()
            && self.pairs_of_k.is_none()
            && self.pairs_out.is_none()
    }

    /// [`Self::serial`] for a plain product over one K block (attention's scores, K = the head
    /// size): each MR-row tile of A multiplied by every B panel in one kernel call
    /// ([`MicroKernel::tile_row_of_panels`]), A read in place; a partial last panel goes
    /// through a scratch tile. (Packing each row tile of A first cost 9% of attention at
    /// T = 128: the packing waited on Q's rows, which the tiles' FMAs otherwise overlap.) B (T keys x the head size: 64 KB at T = 512, d = 32)
    /// streams from L2 past each row tile. Through [`Self::block`] the driver's per-tile work
    /// was 15% of these 32-step tiles.
    ///
    /// # Safety
    /// As [`Self::serial`]; `self.k <= self.w.kc` and [`Self::is_plain`].
    unsafe fn serial_rows_of_panels<Kr: MicroKernel, E: PanelElem>(
        &self,
        kr: Kr,
        out: OutPtr,
        ldc: usize,
    ) {
        let (mr, nr, k) = (Kr::MR, Kr::NR, self.k);
        debug_assert!(k <= self.w.kc && self.is_plain());
        let whole = self.n / nr;
        let panel_stride = k * nr * self.w.step_values;
        let panels = self.w.panel::<E>(0, k, 0).as_ptr();
        // Rows a multiple of 4 KB apart (KoE5's queries in Q/K/V rows of 3,072) would share
        // one L1 set: copied side by side first.
        let aliased = (self.lda * std::mem::size_of::<f32>()).is_multiple_of(4096);
        let mut copied = [0.0f32; MAX_A_PANEL];
        let mut r0 = 0;
        while r0 < self.m {
            let rows = mr.min(self.m - r0);
            let in_place = &self.x[r0 * self.lda..];
            let (a, lda) = if aliased {
                for i in 0..rows {
                    copied[i * k..(i + 1) * k]
                        .copy_from_slice(&in_place[i * self.lda..i * self.lda + k]);
                }
                (copied.as_ptr(), k)
            } else {
                (in_place.as_ptr(), self.lda)
            };
            // SAFETY: `rows` rows of k values lda apart at a (x's rows, checked by the
            // caller to hold (m - 1)·lda + k values, or their copy); the `whole` panels of
            // this K block lie `panel_stride` apart from `panels`; output rows r0 .. r0 +
            // rows <= M, columns 0 .. whole·NR <= N, are the caller's (contract).
            unsafe {
                kr.tile_row_of_panels(
                    rows,
                    k,
                    a,
                    lda,
                    panels,
                    panel_stride,
                    whole,
                    out.0.add(r0 * ldc),
                    ldc,
                )
            };
            let cols = self.n - whole * nr;
            if cols > 0 {
                let mut tile = [0.0f32; MAX_TILE];
                // SAFETY: the last panel (zero-padded to NR columns) into a scratch tile of
                // rows x NR f32 at stride NR.
                unsafe {
                    kr.tile_rows(
                        rows,
                        k,
                        a,
                        lda,
                        self.w.panel::<E>(0, k, whole).as_ptr(),
                        tile.as_mut_ptr(),
                        nr,
                        false,
                        std::ptr::null(),
                        false,
                        std::ptr::null(),
                    )
                };
                for i in 0..rows {
                    // SAFETY: row r0 + i < M, columns whole·NR .. N of the caller's output.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out.0.add((r0 + i) * ldc + whole * nr), cols)
                    };
                    dst.copy_from_slice(&tile[i * nr..i * nr + cols]);
                }
            }
            r0 += mr;
        }
    }

    /// Whether A is read packed (when the kernel can): many rows of a shallow product, or rows
    /// that would share L1 sets.
    fn packs_a(&self) -> bool {
        let aliased = (self.lda * std::mem::size_of::<f32>()).is_multiple_of(4096);
        (self.m >= PACK_A_MIN_M && self.k < PACK_A_MAX_K)
            || (aliased && self.m >= ALIASED_PACK_A_MIN_M)
    }

    /// Prefetches, for writing, the output of the tile after (`jp`, `ip`) in [`Self::block`]'s
    /// order (the next row tile over the same panel, else the first over the next panel), so
    /// that its stores do not wait on their lines. On the Xeon (2 threads, best of 6 calls,
    /// medians of 4 alternating rounds), KoE5's GEMMs at M = 4,096, x 1,024 x 4,096 (FFN in):
    /// 341 -> 361 GFLOP/s, x 1,024 x 3,072 (QKV) 343 -> 365, x 1,024 x 1,024 370 -> 381, x 4,096
    /// x 1,024 unchanged; e5-small's 8,192 x 384 x 1,536 352 -> 368, x 384 x 1,152 348 -> 361;
    /// M = 16 and 128 unchanged. A plain (read) prefetch gained less (351 for FFN in), two
    /// tiles ahead no more.
    #[allow(clippy::too_many_arguments)]
    fn prefetch_next_tile<Kr: MicroKernel>(
        &self,
        out: OutPtr,
        ldc: usize,
        rows: &std::ops::Range<usize>,
        panels: &std::ops::Range<usize>,
        jp: usize,
        ip: usize,
        k_blocks_left: usize,
        partials: Option<(*const f32, usize)>,
    ) {
        if !Kr::PREFETCH_OUTPUT {
            return;
        }
        let (mr, nr) = (Kr::MR, Kr::NR);
        let (jp, ip, k_blocks_left) = if (ip + 1) * mr < rows.len() {
            (jp, ip + 1, k_blocks_left)
        } else if jp + 1 < panels.end {
            (jp + 1, 0, k_blocks_left)
        } else if k_blocks_left > 1 {
            (panels.start, 0, k_blocks_left - 1)
        } else {
            return;
        };
        let (r0, j0) = (rows.start + ip * mr, jp * nr);
        let tile_rows = mr.min(rows.end - r0);
        if let Some((first, pldc)) = partials {
            // That tile's partial sums (see `Self::block`), which it reads and writes; only
            // in the last K block is its output written, by a copy.
            let at = first.wrapping_add(ip * mr * pldc + (jp - panels.start) * nr);
            let stride = pldc * std::mem::size_of::<f32>();
            prefetch_rows(PrefetchTo::L1, at as *const u8, tile_rows, stride, nr * 4);
            if k_blocks_left > 1 {
                return;
            }
        }
        // Row stride in bytes: ldc f32, or 2·ldc bf16 for a pairs output.
        let stride = ldc * std::mem::size_of::<f32>();
        let value_bytes = if self.pairs_out.is_some() { 2 } else { 4 };
        prefetch_rows(
            PrefetchTo::L1,
            (out.0 as *const u8).wrapping_add(r0 * stride + j0 * value_bytes),
            tile_rows,
            stride,
            nr.min(self.n - j0) * value_bytes,
        );
        if let Some(residual) = self.residual {
            // And the residual it adds, which nothing else brings into cache.
            prefetch_rows(
                PrefetchTo::L1,
                residual.as_ptr().wrapping_add(r0 * self.n + j0) as *const u8,
                tile_rows,
                self.n * std::mem::size_of::<f32>(),
                nr.min(self.n - j0) * std::mem::size_of::<f32>(),
            );
        }
    }

    /// The residual from row `r0`, column `j0` on (row stride N), checked to hold `rows` rows
    /// of `cols` values there; null without a residual.
    fn residual_rows(&self, r0: usize, j0: usize, rows: usize, cols: usize) -> *const f32 {
        match self.residual {
            Some(residual) => {
                let first = r0 * self.n + j0;
                assert!(rows == 0 || first + (rows - 1) * self.n + cols <= residual.len());
                residual[first..].as_ptr()
            }
            None => std::ptr::null(),
        }
    }

    /// Whether a task keeps its partial sums apart from the output between K blocks: when
    /// there are several K blocks and the output's rows lie a multiple of 4 KB apart (KoE5:
    /// N = 1,024, 3,072, 4,096), where a tile's rows share their L1 sets (and, 16 KB apart,
    /// their L2 sets: a task's 384 KB of output no longer stays in L2). Zen 4, one thread,
    /// best of 6: 2,048 x 1,024 x 4,096 ran at 94-96 GFLOP/s against 98-101 for N = 4,128 or
    /// 4,160; 2 threads, KoE5's GEMMs at M = 4,096 (3 alternating rounds, with the tile's
    /// inlined store): FFN in 182-190 -> 193-200, FFN out 190-194 -> 202-203, QKV 180-194 ->
    /// 182-197, attention output 201 -> 205-208; koe5-shape W3 278, 284 -> 292, 299 tok/s.
    fn partials_apart<Kr: MicroKernel>(&self, ldc: usize) -> bool {
        Kr::PARTIALS_APART
            && self.k > self.w.kc
            && self.pairs_out.is_none()
            && (ldc * std::mem::size_of::<f32>()).is_multiple_of(4096)
    }

    /// Computes rows `rows` x the columns of B panels `panels` of the output. `kept`: the
    /// packed A rows the thread's previous task left (reused when they are these rows, and
    /// left for the next), or None to pack A per K block.
    ///
    /// # Safety
    /// `out` points to the M x N output at row stride `ldc`; no other thread accesses this
    /// region during the call.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<Kr: MicroKernel, E: PanelElem>(
        &self,
        kr: Kr,
        out: OutPtr,
        ldc: usize,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        bias: Option<&[f32]>,
        mut kept: Option<&mut KeptRows>,
        mut partials: Option<&mut PartialSums>,
    ) {
        let (mr, nr, n, k) = (Kr::MR, Kr::NR, self.n, self.k);
        let a_panels = rows.len().div_ceil(mr);
        // The task's partial sums between K blocks, rows of its panels' columns at a stride
        // one cache line past a multiple of 4 KB, when the output's own stride would put a
        // tile's rows in one L1 set (see `Self::partials_apart`). The last K block finishes
        // each tile there (bias, GELU) and copies it out. Bit for bit the same sums: stored
        // and reloaded as f32.
        let pldc = panels.len() * nr + 16;
        let mut partial_sums = match partials.as_mut() {
            Some(p) if self.partials_apart::<Kr>(ldc) => {
                let len = a_panels * mr * pldc;
                Some(match p.0.take() {
                    Some(buf) if buf.len() >= len => buf,
                    _ => CacheLineVec::filled(len, 0.0f32),
                })
            }
            _ => None,
        };
        let partials_at = partial_sums
            .as_mut()
            .map(|buf| (buf.as_mut_slice().as_mut_ptr(), pldc));
        // A's rows for this block: x in place, or this block's rows as bf16 pairs (made here,
        // so that they go from x into L2 once and the tiles read them there; a conversion of
        // the whole matrix before the GEMM wrote and re-read it through memory: 11% of an
        // e5-small bf16 batch).
        let pairs = self.pairs_of_k.map(|k_values| {
            let mut pairs = CacheLineVec::filled(rows.len() * k, 0.0f32);
            fill_bf16_pairs(
                pairs.as_mut_slice(),
                self.x,
                rows.clone(),
                k_values,
                self.lda,
            );
            pairs
        });
        let (a_rows, a_first, lda) = match &pairs {
            Some(pairs) => (pairs.as_slice(), rows.start, k),
            None => (self.x, 0, self.lda),
        };
        // A bf16 output's f32 tile, and whether AVX-512 rounds it into the output.
        let mut pairs_tile = [0.0f32; MAX_TILE];
        #[cfg(target_arch = "x86_64")]
        let rounding_store = self.pairs_out.and_then(|_| Bf16RowStore::detect());
        // A's rows packed per K block, MR rows interleaved (`[panel][p][i]`), when the kernel
        // asks for it.
        // Packed A: per K block, or (`kept`) all K blocks side by side, kept for the next
        // task over the same rows, which then packs nothing.
        let slot = a_panels * mr * self.w.kc;
        let packs_a = Kr::PACKS_A && self.packs_a();
        let whole_k = packs_a && kept.is_some();
        let reused = whole_k
            && kept
                .as_ref()
                .is_some_and(|kept| kept.first_row == Some(rows.start));
        let mut packed_a = packs_a.then(|| {
            let len = if whole_k {
                k.div_ceil(self.w.kc) * slot
            } else {
                slot
            };
            match kept.as_mut().and_then(|kept| kept.rows.take()) {
                Some(buf) if buf.len() >= len => buf,
                _ => CacheLineVec::filled(len, 0.0f32),
            }
        });
        let mut k0 = 0;
        loop {
            let kcb = self.w.kc.min(k - k0);
            let first = k0 == 0;
            let last = k0 + kcb == k;
            let a_slot = if whole_k { (k0 / self.w.kc) * slot } else { 0 };
            let k_blocks_left = (k - k0).div_ceil(self.w.kc);
            if let (Some(buf), false) = (&mut packed_a, reused) {
                let buf = &mut buf.as_mut_slice()[a_slot..];
                for ip in 0..a_panels {
                    let r0 = rows.start + ip * mr;
                    kr.pack_a_panel(
                        &mut buf[ip * kcb * mr..(ip + 1) * kcb * mr],
                        &a_rows[(r0 - a_first) * lda + k0..],
                        lda,
                        kcb,
                        mr.min(rows.end - r0),
                    );
                }
            }
            for jp in panels.clone() {
                let b_panel = self.w.panel::<E>(k0, kcb, jp);
                let j0 = jp * nr;
                let cols = nr.min(n - j0);
                let bias_ptr = match bias {
                    Some(b) if last => b[j0..j0 + nr].as_ptr(),
                    _ => std::ptr::null(),
                };
                let gelu = last && self.gelu;
                // The panel after this one: the next of this task in this K block, or the
                // task's first in the next K block.
                let next_panel = || {
                    if jp + 1 < panels.end {
                        self.w.panel::<E>(k0, kcb, jp + 1).as_ptr() as *const u8
                    } else if !last {
                        let next_kcb = self.w.kc.min(k - k0 - kcb);
                        self.w.panel::<E>(k0 + kcb, next_kcb, panels.start).as_ptr() as *const u8
                    } else {
                        std::ptr::null()
                    }
                };
                for ip in 0..a_panels {
                    let prefetch = tile_prefetch(
                        ip,
                        a_panels,
                        b_panel.as_ptr() as *const u8,
                        Kr::B_PREFETCH,
                        next_panel,
                    );
                    let r0 = rows.start + ip * mr;
                    let tile_rows = mr.min(rows.end - r0);
                    self.prefetch_next_tile::<Kr>(
                        out,
                        ldc,
                        &rows,
                        &panels,
                        jp,
                        ip,
                        k_blocks_left,
                        partials_at.map(|(p, l)| (p as *const f32, l)),
                    );
                    // One register tile of `tile_rows` rows into c (row stride ldc_c). A is read
                    // in place, a last partial panel included: no packing pass, and no FMAs on
                    // rows past M.
                    let run_tile = |c: *mut f32, ldc_c: usize, bias_ptr: *const f32, gelu: bool| {
                        if let Some(buf) = &packed_a {
                            let a = &buf.as_slice()[a_slot..][ip * kcb * mr..(ip + 1) * kcb * mr];
                            // SAFETY: `a` holds panel ip's kcb·MR packed values (its rows
                            // past tile_rows are not read); b_panel, bias_ptr and c as below.
                            return unsafe {
                                kr.tile_packed_rows(
                                    tile_rows,
                                    kcb,
                                    a.as_ptr(),
                                    b_panel.as_ptr(),
                                    c,
                                    ldc_c,
                                    !first,
                                    bias_ptr,
                                    gelu,
                                    prefetch,
                                )
                            };
                        }
                        let a = &a_rows[(r0 - a_first) * lda + k0..];
                        debug_assert!(a.len() >= (tile_rows - 1) * lda + kcb);
                        // SAFETY: rows r0 .. r0 + tile_rows <= rows.end <= M of A hold kcb
                        // values from k0 at stride lda (x: checked when the call was built;
                        // pairs: made above for `rows`);
                        // b_panel holds kcb·NR values, bias_ptr NR (or null); c's first
                        // tile_rows rows of NR f32 are the caller's to write.
                        unsafe {
                            kr.tile_rows(
                                tile_rows,
                                kcb,
                                a.as_ptr(),
                                lda,
                                b_panel.as_ptr(),
                                c,
                                ldc_c,
                                !first,
                                bias_ptr,
                                gelu,
                                prefetch,
                            )
                        }
                    };
                    if self.pairs_out.is_some() {
                        // bf16 output: the tile in f32 on the stack, then each value rounded
                        // into its half of a step (one K block: `first` and `last`, so the
                        // tile reads nothing of `tmp` and writes every value read back).
                        debug_assert!(first && last && self.residual.is_none());
                        let tmp = &mut pairs_tile;
                        // With AMX, the bias and GELU go with the rounding, in one pass over
                        // the stored tile instead of two (the epilogue's pass stored the tile
                        // again for the rounding to read back): e5-small's FFN-in stage 112 ->
                        // 96 ms per W2 batch. Rounding each tile one tile later, into two
                        // buffers, so the next tile's products would hide the wait on the tile
                        // store, was slower (112 -> 122 ms).
                        #[cfg(target_arch = "x86_64")]
                        if let (true, Some(Bf16RowStore::Cvtne), 32) =
                            (Kr::SPLIT_EPILOGUE, rounding_store, cols)
                        {
                            debug_assert_eq!(nr, 32);
                            run_tile(tmp.as_mut_ptr(), nr, std::ptr::null(), false);
                            // SAFETY: `Cvtne` was detected (AVX-512 F, BW, BF16; FMA with
                            // `avx512_enabled`); tmp holds tile_rows rows of nr = 32 f32,
                            // bias_ptr is null or 32 values; the output rows as below.
                            unsafe {
                                bias_gelu_store_bf16_cvtne_avx512(
                                    tmp.as_ptr(),
                                    nr,
                                    tile_rows,
                                    bias_ptr,
                                    gelu,
                                    out.0.cast::<u16>().add(2 * ldc * r0 + j0),
                                    2 * ldc,
                                )
                            };
                            continue;
                        }
                        run_tile(tmp.as_mut_ptr(), nr, bias_ptr, gelu);
                        #[cfg(target_arch = "x86_64")]
                        if let Some(store) = rounding_store {
                            // SAFETY: `store` detected above; tmp holds tile_rows rows of nr >=
                            // cols f32; the output rows as below.
                            unsafe {
                                store.store(
                                    tmp.as_ptr(),
                                    nr,
                                    tile_rows,
                                    cols,
                                    out.0.cast::<u16>().add(2 * ldc * r0 + j0),
                                    2 * ldc,
                                )
                            };
                            continue;
                        }
                        for i in 0..tile_rows {
                            // SAFETY: row r0 + i < M of the pairs output holds 2·ldc u16 at
                            // u16 offset 2·ldc·(r0 + i); columns j0..j0 + cols <= N <= 2·ldc
                            // are inside it and this task's region.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out.0.cast::<u16>().add(2 * ldc * (r0 + i) + j0),
                                    cols,
                                )
                            };
                            store_bf16_bits(dst, &tmp[i * nr..i * nr + cols]);
                        }
                        continue;
                    }
                    // This tile's partial sums (rows of NR at stride pldc), when kept apart.
                    let partial = partials_at.map(|(p, pldc)| {
                        // SAFETY: the buffer holds a_panels·MR rows of pldc >= panels·NR f32.
                        unsafe { p.add(ip * mr * pldc + (jp - panels.start) * nr) }
                    });
                    if let (Some(partial), false) = (partial, last) {
                        // No bias, GELU or residual before the last K block.
                        run_tile(partial, pldc, std::ptr::null(), false);
                        continue;
                    }
                    // Partial sums only for N a multiple of 1,024: never an edge tile.
                    debug_assert!(partial.is_none() || cols == nr);
                    if cols == nr {
                        // The tile_rows x NR tile at (r0, j0) lies inside the M x N output
                        // (r0 + tile_rows <= M, j0 + NR <= N) and inside this task's region.
                        let c = unsafe { out.0.add(r0 * ldc + j0) };
                        if let Some(partial) = partial {
                            // The last K block: finished in the partial tile, then copied out,
                            // plus the residual connection on the way (the output's lines are
                            // then only written).
                            run_tile(partial, pldc, bias_ptr, gelu);
                            // SAFETY: the partial tile's rows (NR f32 at stride pldc, in the
                            // buffer) and the output tile's (above) do not overlap; the
                            // residual's rows r0.. of N f32 hold columns j0..j0 + NR.
                            unsafe {
                                kr.finish_rows(
                                    tile_rows,
                                    nr,
                                    partial,
                                    pldc,
                                    self.residual_rows(r0, j0, tile_rows, nr),
                                    n,
                                    c,
                                    ldc,
                                )
                            };
                            continue;
                        }
                        run_tile(c, ldc, bias_ptr, gelu);
                    } else {
                        // Right edge: the same kernel on a scratch tile, then copy the valid part.
                        let mut tmp = [0.0f32; MAX_TILE];
                        for i in 0..tile_rows {
                            // SAFETY: row r0 + i < M, columns j0..j0 + cols <= N: inside the
                            // output and this task's region.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(out.0.add((r0 + i) * ldc + j0), cols)
                            };
                            if !first {
                                tmp[i * nr..i * nr + cols].copy_from_slice(dst);
                            }
                        }
                        // `tmp` holds MAX_TILE >= MR·NR f32: the MR x NR tile, row stride NR.
                        run_tile(tmp.as_mut_ptr(), nr, bias_ptr, gelu);
                        for i in 0..tile_rows {
                            // SAFETY: as above.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(out.0.add((r0 + i) * ldc + j0), cols)
                            };
                            dst.copy_from_slice(&tmp[i * nr..i * nr + cols]);
                        }
                    }
                    if last && self.residual.is_some() {
                        // The tile is still in L1: add the residual connection now.
                        // SAFETY: the tile's rows r0.. x columns j0..j0 + cols of the output
                        // (as for the edge tile above) and of the residual (M x N).
                        unsafe {
                            let c = out.0.add(r0 * ldc + j0);
                            kr.finish_rows(
                                tile_rows,
                                cols,
                                c,
                                ldc,
                                self.residual_rows(r0, j0, tile_rows, cols),
                                n,
                                c,
                                ldc,
                            )
                        };
                    }
                }
            }
            k0 += kcb;
            if k0 >= k {
                break;
            }
        }
        if let (Some(kept), true) = (kept, whole_k) {
            kept.rows = packed_a;
            kept.first_row = Some(rows.start);
        }
        if let (Some(p), Some(buf)) = (partials, partial_sums) {
            p.0 = Some(buf);
        }
    }
}

/// A thread's buffer for a task's partial sums (see `Call::block`), reused by its next task.
#[derive(Default)]
struct PartialSums(Option<CacheLineVec<f32>>);

/// A task's packed A rows (all K blocks), kept for the next task of the same call over the
/// same rows (`first_row`).
#[derive(Default)]
struct KeptRows {
    first_row: Option<usize>,
    rows: Option<CacheLineVec<f32>>,
}

#[cfg(test)]
mod tests {
    use super::round_to_bf16;

    /// The serial product over one K block (attention's scores), row tiles over all panels,
    /// with every kernel: odd M (partial row tiles), N (a partial last panel), K, rows of A in
    /// place, padded and 4 KB apart (copied first), the output at a padded stride whose
    /// padding stays untouched. Small integers, so every product and sum is exact.
    #[test]
    fn one_k_block_products_match_the_exact_product_with_every_kernel() {
        use super::{matmul_packed_serial, GemmKernel, PackedMatrix};
        use crate::tensor::Tensor;
        const PAD: f32 = -777.0;
        for kernel in GemmKernel::supported() {
            for (m, n, k) in [
                (1, 1, 1),
                (7, 33, 7),
                (12, 32, 32),
                (13, 65, 32),
                (25, 130, 64),
                (97, 7, 17),
                (17, 512, 32),
            ] {
                for lda in [k, k + 5, 1024] {
                    let x: Vec<f32> = (0..m * lda).map(|i| (i % 7) as f32 - 3.0).collect();
                    let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 - 2.0).collect();
                    let packed = PackedMatrix::pack_b_with_kernel(
                        Tensor::from_vec(w.clone(), &[n, k]).unwrap().view(),
                        kernel,
                    )
                    .unwrap();
                    let ldc = n + 3;
                    let mut out = vec![PAD; m * ldc];
                    // SAFETY: out holds m rows of ldc >= n f32, only this test's.
                    unsafe { matmul_packed_serial(out.as_mut_ptr(), ldc, &x, lda, m, &packed) };
                    for i in 0..m {
                        for j in 0..ldc {
                            let want = if j < n {
                                (0..k).map(|p| x[i * lda + p] * w[j * k + p]).sum::<f32>()
                            } else {
                                PAD
                            };
                            let got = out[i * ldc + j];
                            assert_eq!(
                                got, want,
                                "{kernel:?} {m} x {k} x {n}, lda {lda}: row {i} column {j}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_rounding_matches_the_reference_conversion() {
        // Every exponent, sign and the low bits around the rounding point (ties included).
        let mut checked = 0;
        for hi in (0u32..=0xffff).step_by(7) {
            for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1234, 0xc000] {
                let v = f32::from_bits(hi << 16 | lo);
                let want = half::bf16::from_f32(v).to_f32();
                let got = round_to_bf16(v);
                if want.is_nan() {
                    assert!(got.is_nan(), "{v:e} ({:#x})", v.to_bits());
                } else {
                    assert_eq!(got.to_bits(), want.to_bits(), "{v:e} ({:#x})", v.to_bits());
                }
                checked += 1;
            }
        }
        assert!(checked > 70_000);
    }

    /// `finish_rows` of a kernel against the scalar sum, over odd widths (masked tails), odd
    /// strides, with and without a residual, into another buffer and in place; columns past
    /// the width untouched.
    fn check_finish_rows<Kr: super::MicroKernel>(kr: Kr, name: &str) {
        let value = |i: usize| ((i * 37 % 101) as f32 - 50.0) * 0.37;
        for (rows, cols) in [
            (1, 1),
            (3, 7),
            (12, 16),
            (5, 17),
            (2, 31),
            (7, 65),
            (1, 100),
        ] {
            let (lds, ldr, ldd) = (cols + 3, cols + 1, cols + 5);
            let src: Vec<f32> = (0..rows * lds).map(value).collect();
            let res: Vec<f32> = (0..rows * ldr).map(|i| value(i + 7) * 1e-3).collect();
            for with_residual in [false, true] {
                let residual = if with_residual {
                    res.as_ptr()
                } else {
                    std::ptr::null()
                };
                let want = |i: usize, j: usize| {
                    let s = src[i * lds + j];
                    if with_residual {
                        s + res[i * ldr + j]
                    } else {
                        s
                    }
                };
                let mut dst = vec![-9.0f32; rows * ldd];
                // SAFETY: rows x cols inside each buffer at its stride.
                unsafe {
                    kr.finish_rows(
                        rows,
                        cols,
                        src.as_ptr(),
                        lds,
                        residual,
                        ldr,
                        dst.as_mut_ptr(),
                        ldd,
                    )
                };
                let mut in_place = src.clone();
                let p = in_place.as_mut_ptr();
                // SAFETY: as above; src and dst the same elements.
                unsafe { kr.finish_rows(rows, cols, p, lds, residual, ldr, p, lds) };
                for i in 0..rows {
                    let at = format!("{name} {rows}x{cols} row {i}, residual {with_residual}");
                    for j in 0..ldd {
                        let want_dst = if j < cols { want(i, j) } else { -9.0 };
                        assert_eq!(
                            dst[i * ldd + j].to_bits(),
                            want_dst.to_bits(),
                            "{at} col {j}"
                        );
                    }
                    for j in 0..lds {
                        let want_in_place = if j < cols {
                            want(i, j)
                        } else {
                            src[i * lds + j]
                        };
                        assert_eq!(
                            in_place[i * lds + j].to_bits(),
                            want_in_place.to_bits(),
                            "{at} col {j} in place"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_kernel_finishes_rows_as_the_scalar_sum() {
        use super::super::kernels::portable::PortableKernel;
        check_finish_rows(PortableKernel::new().unwrap(), "portable");
        #[cfg(target_arch = "x86_64")]
        {
            use super::super::kernels::x86::{Avx2Kernel, Avx512Kernel};
            if let Some(kr) = Avx2Kernel::new() {
                check_finish_rows(kr, "avx2");
            }
            match Avx512Kernel::new() {
                Some(kr) => check_finish_rows(kr, "avx512"),
                None => println!("no AVX-512 here: its finish_rows not compared"),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_bf16_stores_round_like_the_scalar_one() {
        use super::super::kernels::x86::{store_rows_bf16_avx512, store_rows_bf16_cvtne_avx512};
        if !crate::avx512_enabled() || !is_x86_feature_detected!("avx512bw") {
            println!("no AVX-512 BW here: nothing to compare");
            return;
        }
        let cvtne = is_x86_feature_detected!("avx512bf16");
        // The same bit patterns as above (NaN, inf, denormals, ties), in rows of odd widths
        // (masked tails) at odd strides.
        let mut values = Vec::new();
        for hi in (0u32..=0xffff).step_by(7) {
            for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1234, 0xc000] {
                values.push(f32::from_bits(hi << 16 | lo));
            }
        }
        for (rows, cols) in [
            (1, 1),
            (3, 7),
            (5, 16),
            (7, 17),
            (16, 32),
            (2, 33),
            (3, 65),
            (2, 95),
        ] {
            let (ld_src, ld_dst) = (cols + 3, cols + 5);
            for chunk in values
                .chunks(rows * ld_src)
                .filter(|c| c.len() == rows * ld_src)
            {
                for flushing in [false, true] {
                    if flushing && !cvtne {
                        continue;
                    }
                    let mut got = vec![0xabcdu16; rows * ld_dst];
                    // SAFETY: AVX-512 F + BW (and BF16 when flushing) checked above; `chunk`
                    // holds rows x ld_src >= cols f32 and `got` rows x ld_dst >= cols u16.
                    unsafe {
                        let store = if flushing {
                            store_rows_bf16_cvtne_avx512
                        } else {
                            store_rows_bf16_avx512
                        };
                        store(chunk.as_ptr(), ld_src, rows, cols, got.as_mut_ptr(), ld_dst)
                    };
                    for i in 0..rows {
                        for j in 0..ld_dst {
                            let v = chunk.get(i * ld_src + j).copied().unwrap_or(0.0);
                            let want = if j >= cols {
                                0xabcd // past the row's values: untouched
                            } else if flushing && v.is_subnormal() {
                                (v.to_bits() >> 16) as u16 & 0x8000 // ±0
                            } else {
                                (round_to_bf16(v).to_bits() >> 16) as u16
                            };
                            assert_eq!(
                                got[i * ld_dst + j],
                                want,
                                "{rows}x{cols} ({i}, {j}) {v:e}, flushing: {flushing}"
                            );
                        }
                    }
                }
            }
        }
    }
}
