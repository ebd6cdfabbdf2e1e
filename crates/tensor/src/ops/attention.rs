//! Multi-head self-attention over one sequence (no mask: a packed batch has no padding).
//!
//! Heads lie side by side along the hidden axis as in BERT: head `h` owns columns
//! `h*d .. (h+1)*d` of `[T, H]`, with `d = H / n_heads`. For each head:
//!
//! ```text
//! scores[T,T] = (Q_h[T,d] · K_h[T,d]ᵀ) · (1/√d)      // f32 dot products, then the f32 scale
//! P[T,T]      = softmax over each row (see softmax.rs)
//! ctx_h[T,d]  = P · V_h[T,d]                          // written to out[:, h*d..(h+1)*d]
//! ```
//!
//! # Kernel
//! One task per (sequence, head), on rayon's threads: K_h and V_h are packed once for the
//! packed-GEMM micro-kernel straight from the projection output (through strides, no copy of Q,
//! K, V), then the queries run in blocks of [`QUERY_BLOCK`] rows so that the block's score rows
//! (`QUERY_BLOCK x T` f32: 198 KB at T = 512, each row padded to an odd number of cache lines
//! so that a tile's rows do not share L1 sets) stay in L2 between the score GEMM, the fused
//! scale + softmax and the context GEMM. The score GEMM (K = the head size: one K block) runs
//! each row tile over all key panels in one kernel call. Scores are `fl(Q_h·K_hᵀ)` (one FMA chain per element,
//! as in the linear layers), then `· scale` in f32, then softmax. With the AVX-512 or AVX2 softmax the
//! context GEMM takes the unnormalised exp rows and each context row is multiplied by its
//! row's 1/sum afterwards: d products a row instead of T.
//!
//! Each output element depends only on its own sequence, so results do not depend on the
//! other sequences of a batch, on the task split or on the thread count.

use std::ops::Range;

use rayon::prelude::*;

use crate::aligned::CacheLineVec;
use crate::error::{expect_2d, expect_shape, Result, TensorError};
use crate::gemm::kernels::{prefetch_rows, PrefetchTo};
use crate::gemm::packed::{matmul_packed_serial, GemmKernel, PackedMatrix};
#[cfg(target_arch = "x86_64")]
use crate::ops::attention_amx::{attention_amx, AmxAttention};
use crate::ops::softmax::{softmax_rows_scaled_unnormalised, SoftmaxKernel};
use crate::tensor::{TensorView, TensorViewMut};

/// Query rows per score block (a multiple of both micro-kernels' MR, 6 and 8).
const QUERY_BLOCK: usize = 96;
/// Below this many multiply-adds in all (about 2·T²·H) the heads run on the calling thread.
const PAR_MIN_FMAS: usize = 1 << 16;

/// `out[T,H] = attention(q[T,H], k[T,H], v[T,H])` with `n_heads` heads of `H / n_heads` columns.
#[allow(clippy::single_range_in_vec_init)] // one sequence: a one-element slice of ranges
pub fn attention_single_sequence(
    mut out: TensorViewMut<'_>,
    q: TensorView<'_>,
    k: TensorView<'_>,
    v: TensorView<'_>,
    n_heads: usize,
) -> Result<()> {
    const OP: &str = "attention_single_sequence";
    let (t, h) = expect_2d(OP, "q", q.shape(), ["T", "H"])?;
    expect_shape(OP, "k", k.shape(), &["T", "H"], &[t, h])?;
    expect_shape(OP, "v", v.shape(), &["T", "H"], &[t, h])?;
    expect_shape(OP, "out", out.shape(), &["T", "H"], &[t, h])?;
    check_heads(OP, h, n_heads)?;
    let sources = [q, k, v].map(|s| Columns {
        data: s.as_slice(),
        row_stride: h,
    });
    attention(
        out.as_mut_slice(),
        h,
        n_heads,
        sources,
        &[0..t],
        GemmKernel::detect(),
    );
    Ok(())
}

/// `out[T,H] = attention(q, k, v)` where `qkv[T, 3H]` holds `[q | k | v]` side by side in each row
/// (the output of one matmul with the three projection weights stacked along N).
#[allow(clippy::single_range_in_vec_init)] // one sequence: a one-element slice of ranges
pub fn attention_single_sequence_qkv(
    out: TensorViewMut<'_>,
    qkv: TensorView<'_>,
    n_heads: usize,
) -> Result<()> {
    let t = qkv.shape().first().copied().unwrap_or(0);
    packed_qkv(
        "attention_single_sequence_qkv",
        out,
        qkv,
        &[0..t],
        n_heads,
        GemmKernel::detect(),
    )
}

/// Attention over a packed batch: `qkv[T_total, 3H]` holds the sequences' rows one after the
/// other (`sequences`: ascending, non-overlapping row ranges), and each sequence attends only
/// over its own rows (no padding, no mask). Rows outside every range are left untouched.
/// `kernel` picks the GEMM micro-kernel (tests pin each one the CPU supports). The kernel of
/// bf16 panels [`GemmKernel::AmxBf16`] runs both products in bf16 on AMX (Q, K, V and the
/// probabilities rounded to bf16, f32 sums and softmax: see `attention_amx.rs`) when the head
/// size is a multiple of 32; otherwise, and for [`GemmKernel::Avx512Bf16`], attention runs
/// in f32 on [`GemmKernel::detect`]'s kernel.
pub fn attention_packed_qkv(
    out: TensorViewMut<'_>,
    qkv: TensorView<'_>,
    sequences: &[Range<usize>],
    n_heads: usize,
    kernel: GemmKernel,
) -> Result<()> {
    packed_qkv("attention_packed_qkv", out, qkv, sequences, n_heads, kernel)
}

fn packed_qkv(
    op: &'static str,
    mut out: TensorViewMut<'_>,
    qkv: TensorView<'_>,
    sequences: &[Range<usize>],
    n_heads: usize,
    kernel: GemmKernel,
) -> Result<()> {
    let (t, h) = expect_2d(op, "out", out.shape(), ["T", "H"])?;
    expect_shape(op, "qkv", qkv.shape(), &["T", "3*H"], &[t, 3 * h])?;
    check_heads(op, h, n_heads)?;
    let mut end = 0;
    for (i, r) in sequences.iter().enumerate() {
        if r.start < end || r.start > r.end || r.end > t {
            return Err(TensorError::InvalidArgument {
                op,
                message: format!(
                    "sequence {i} has rows {r:?}: ranges must be ascending, disjoint and within \
                     the {t} rows"
                ),
            });
        }
        end = r.end;
    }
    if !kernel.is_supported() {
        return Err(TensorError::InvalidArgument {
            op,
            message: format!("GEMM kernel {kernel:?} is not supported by this CPU"),
        });
    }
    let data = qkv.as_slice();
    let sources = [0, h, 2 * h].map(|offset| Columns {
        data: data.get(offset..).unwrap_or(&[]),
        row_stride: 3 * h,
    });
    let kernel = match kernel {
        GemmKernel::AmxBf16 | GemmKernel::Avx512Bf16 => {
            #[cfg(target_arch = "x86_64")]
            if let Some(amx) =
                AmxAttention::new(h / n_heads).filter(|_| kernel == GemmKernel::AmxBf16)
            {
                attention_amx(amx, out.as_mut_slice(), h, n_heads, sources, sequences);
                return Ok(());
            }
            GemmKernel::detect()
        }
        f32_kernel => f32_kernel,
    };
    attention(out.as_mut_slice(), h, n_heads, sources, sequences, kernel);
    Ok(())
}

fn check_heads(op: &'static str, h: usize, n_heads: usize) -> Result<()> {
    if n_heads == 0 || !h.is_multiple_of(n_heads) {
        return Err(TensorError::InvalidArgument {
            op,
            message: format!("n_heads = {n_heads} does not divide the hidden size H = {h}"),
        });
    }
    Ok(())
}

/// A `[T, H]` operand whose row `i` starts at `data[i * row_stride]`.
#[derive(Clone, Copy)]
pub(super) struct Columns<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
}

impl<'a> Columns<'a> {
    /// From row `row`, column `col` on.
    pub fn from(self, row: usize, col: usize) -> &'a [f32] {
        &self.data[row * self.row_stride + col..]
    }
}

/// The output shared by the (sequence, head) tasks.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub *mut f32);
// SAFETY: each task writes only its own sequence's rows x its own head's columns (the ranges are
// checked disjoint), and `attention` returns only after rayon has joined every task.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method, so that closures capture the whole (Sync) wrapper, not the raw field.
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// out[T,H] from checked q, k, v sources and sequence ranges.
fn attention(
    out: &mut [f32],
    h: usize,
    n_heads: usize,
    [q, k, v]: [Columns<'_>; 3],
    sequences: &[Range<usize>],
    kernel: GemmKernel,
) {
    if h == 0 || sequences.iter().all(|r| r.is_empty()) {
        return;
    }
    let d = h / n_heads;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let softmax = match kernel {
        GemmKernel::Portable => SoftmaxKernel::Scalar,
        GemmKernel::Avx2 => SoftmaxKernel::detect_avx2(),
        _ => SoftmaxKernel::detect(),
    };
    let rows_total = out.len() / h;
    let out_ptr = OutPtr(out.as_mut_ptr());
    // `scratch`: the thread's score rows, kept from task to task (a fresh zeroed 64 KB per
    // head and sequence was 1.6 GB of memset in a KoE5 W2 batch); the GEMM writes every
    // score before softmax reads it.
    let task = |scratch: &mut CacheLineVec<f32>, index: usize| {
        let (rows, head) = (&sequences[index / n_heads], index % n_heads);
        let t = rows.len();
        if t == 0 {
            return;
        }
        debug_assert!(rows.end <= rows_total);
        let col = head * d;
        if let Some(next) = sequences.get((index + 1) / n_heads) {
            prefetch_head_rows([q, k, v], next.clone(), (index + 1) % n_heads * d, d);
        }
        // K_h as B of scores = Q_h · K_hᵀ: N = t keys, K = d.
        let keys =
            PackedMatrix::pack_strided(k.from(rows.start, col), t, d, k.row_stride, 1, kernel);
        // V_h as B of ctx = P · V_h: N = d, K = t, read transposed.
        let values =
            PackedMatrix::pack_strided(v.from(rows.start, col), d, t, 1, v.row_stride, kernel);
        let ld = score_row_stride(t);
        let need = QUERY_BLOCK.min(t) * ld;
        if scratch.len() < need {
            *scratch = CacheLineVec::filled(need, 0.0f32);
        }
        let scores = &mut scratch.as_mut_slice()[..need];
        let mut inverses = [0.0f32; QUERY_BLOCK];
        let mut r0 = 0;
        while r0 < t {
            let m = QUERY_BLOCK.min(t - r0);
            let block = &mut scores[..m * ld];
            // SAFETY: `block` is m rows of ld >= t f32, owned here.
            unsafe {
                matmul_packed_serial(
                    block.as_mut_ptr(),
                    ld,
                    q.from(rows.start + r0, col),
                    q.row_stride,
                    m,
                    &keys,
                )
            };
            let inverses = &mut inverses[..m];
            softmax_rows_scaled_unnormalised(block, t, ld, scale, softmax, inverses);
            let ctx = out_ptr.get().wrapping_add((rows.start + r0) * h + col);
            // SAFETY: rows rows.start + r0 .. + m (< rows.end <= rows_total) x columns
            // col .. col + d (<= h) of `out`, at stride h: this task's own region (see OutPtr).
            unsafe { matmul_packed_serial(ctx, h, block, ld, m, &values) };
            for (i, &inverse) in inverses.iter().enumerate() {
                if inverse != 1.0 {
                    // SAFETY: row i < m of the region above, d values.
                    let row = unsafe { std::slice::from_raw_parts_mut(ctx.add(i * h), d) };
                    row.iter_mut().for_each(|v| *v *= inverse);
                }
            }
            r0 += m;
        }
    };
    let tasks = sequences.len() * n_heads;
    let fmas: usize = sequences.iter().map(|r| 2 * r.len() * r.len() * h).sum();
    if tasks > 1 && fmas >= PAR_MIN_FMAS && rayon::current_num_threads() > 1 {
        (0..tasks)
            .into_par_iter()
            .for_each_init(|| CacheLineVec::from_vec(Vec::new()), task);
    } else {
        let mut scratch = CacheLineVec::from_vec(Vec::new());
        (0..tasks).for_each(|index| task(&mut scratch, index));
    }
}

/// The distance between score rows: whole cache lines, and an odd number of them, so that the
/// 12 rows a tile reads or writes fall in 12 different L1 sets. At T = 512 rows 2 KB apart
/// shared 2 of the 64 sets (4 KB a way), and the tile's lines of P pushed V's out of them.
fn score_row_stride(t: usize) -> usize {
    let lines = t.div_ceil(16);
    (lines | 1) * 16
}

/// Asks L2 for the Q, K and V columns `col .. col + d` of rows `rows` (the next task's head),
/// while this task computes: the Q/K/V output of a large batch does not fit the L3, and a
/// head reads 128-byte pieces of rows thousands of bytes apart, which the hardware prefetchers
/// do not follow.
fn prefetch_head_rows(sources: [Columns<'_>; 3], rows: Range<usize>, col: usize, d: usize) {
    let f32_bytes = std::mem::size_of::<f32>();
    for s in sources {
        prefetch_rows(
            PrefetchTo::L2,
            s.data
                .as_ptr()
                .wrapping_add(rows.start * s.row_stride + col) as *const u8,
            rows.len(),
            s.row_stride * f32_bytes,
            d * f32_bytes,
        );
    }
}
