//! Attention with bf16 products on AMX: what [`super::attention::attention_packed_qkv`] runs
//! for [`GemmKernel::AmxBf16`](crate::GemmKernel::AmxBf16), the kernel of bf16 layers.
//!
//! Per (sequence, head), as PyTorch runs a bf16 model's attention:
//!
//! ```text
//! scores = fl32(bf16(Q_h) · bf16(K_h)ᵀ)            // tdpbf16ps, f32 sums
//! P      = bf16(softmax(scores · scale))            // f32 softmax, the same kernel as f32
//! ctx_h  = fl32(P · bf16(V_h))                      // tdpbf16ps, f32 sums
//! ```
//!
//! Each head rounds its Q, K and V columns to bf16 (`vcvtne2ps2bf16`: denormals become zero, as
//! `tdpbf16ps` reads them anyway) into per-thread scratch, laid out as
//! `tdpbf16ps` reads them: Q as rows of pairs of dimensions, K transposed (a step is a pair of
//! dimensions, the columns are keys), V as pairs of keys (a step is two consecutive keys, the
//! columns are dimensions), keys padded with zeros to whole steps. Queries run 16 at a time:
//! their score rows (`16 x T` f32) and P rows stay in L1 between the two products.
//!
//! The products are not one f32 chain per output (see `kernels::amx`), so the results are
//! tested against the f64 products of the same bf16 values within a bound, and bit for bit
//! where the sums are exact; as for f32, each output depends only on its own sequence and
//! head (a sequence alone or in a batch, any thread count: the same bits).

use std::ops::Range;

use rayon::prelude::*;

use super::attention::{Columns, OutPtr};
use crate::aligned::CacheLineVec;
use crate::gemm::kernels::amx::{multiply_16_rows_amx, AmxBf16Kernel};
use crate::gemm::kernels::x86::{interleave_rows_bf16_avx512, store_rows_bf16_cvtne_avx512};
use crate::gemm::packed::{gather_panel, PanelSource};
use crate::ops::softmax::x86::softmax_rows_scaled_to_bf16_avx512;

/// Rows of a tile, and the steps (pairs) of one `tdpbf16ps`.
const TILE: usize = 16;
/// Below this many multiply-adds in all the heads run on the calling thread.
const PAR_MIN_FMAS: usize = 1 << 16;

/// Proof that attention can run on AMX here: the AMX bf16 kernel, AVX-512 BW and BF16 for the
/// rounding stores.
#[derive(Clone, Copy)]
pub(super) struct AmxAttention {
    amx: AmxBf16Kernel,
}

impl AmxAttention {
    /// `None` when the CPU lacks AMX-BF16 (or the state was refused) or AVX-512 BW, or when a
    /// head's `d` columns are not whole `tdpbf16ps` steps (d a multiple of 32).
    pub(super) fn new(head_dim: usize) -> Option<Self> {
        if head_dim == 0 || !head_dim.is_multiple_of(2 * TILE) {
            return None;
        }
        let amx = AmxBf16Kernel::new()?;
        (is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512bf16"))
            .then_some(AmxAttention { amx })
    }
}

/// A thread's buffers, kept from head to head (pairs of bf16 are held in f32-sized elements).
#[derive(Default)]
struct HeadScratch {
    /// bf16(Q_h): T rows of d/2 pairs, then padding rows up to a multiple of 16.
    q: Buffer,
    /// bf16(K_h) as rows of d/2 pairs, before the transpose.
    k_rows: Buffer,
    /// bf16(K_h) transposed: d/2 steps of T16 keys (padding past T).
    k_steps: Buffer,
    /// bf16(V_h) as T32/2 steps (pairs of keys, zeros past T) of d columns.
    v_steps: Buffer,
    /// 16 query rows of f32 scores, then probabilities, at stride T16.
    scores: Buffer,
    /// bf16(P): 16 rows of T32/2 pairs (zeros past T).
    p: Buffer,
    /// The context of a last block of fewer than 16 queries.
    context: Buffer,
}

#[derive(Default)]
struct Buffer(Option<CacheLineVec<f32>>);

impl Buffer {
    /// The first `len` values, the buffer grown (zeroed, on a cache line) if shorter.
    fn take(&mut self, len: usize) -> &mut [f32] {
        let grow = self.0.as_ref().is_none_or(|v| v.len() < len);
        if grow {
            self.0 = Some(CacheLineVec::filled(len, 0.0));
        }
        &mut self.0.as_mut().expect("filled above").as_mut_slice()[..len]
    }
}

/// `out[T, H]` from checked q, k, v sources and sequence ranges (see the module docs).
pub(super) fn attention_amx(
    proof: AmxAttention,
    out: &mut [f32],
    h: usize,
    n_heads: usize,
    [q, k, v]: [Columns<'_>; 3],
    sequences: &[Range<usize>],
) {
    if h == 0 || sequences.iter().all(|r| r.is_empty()) {
        return;
    }
    let d = h / n_heads;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let rows_total = out.len() / h;
    let out_ptr = OutPtr(out.as_mut_ptr());
    let task = |scratch: &mut HeadScratch, index: usize| {
        let (rows, head) = (&sequences[index / n_heads], index % n_heads);
        if rows.is_empty() {
            return;
        }
        debug_assert!(rows.end <= rows_total);
        let head = Head {
            rows: rows.clone(),
            col: head * d,
            d,
            h,
            scale,
        };
        // SAFETY: `out_ptr` points to `rows_total` rows of h f32; this task writes only its
        // sequence's rows x its head's columns, which no other task touches (see OutPtr).
        unsafe { head.run(proof, scratch, [q, k, v], out_ptr) };
    };
    let tasks = sequences.len() * n_heads;
    let fmas: usize = sequences.iter().map(|r| 2 * r.len() * r.len() * h).sum();
    if tasks > 1 && fmas >= PAR_MIN_FMAS && rayon::current_num_threads() > 1 {
        (0..tasks)
            .into_par_iter()
            .for_each_init(HeadScratch::default, task);
    } else {
        let mut scratch = HeadScratch::default();
        (0..tasks).for_each(|index| task(&mut scratch, index));
    }
}

/// One head of one sequence.
struct Head {
    rows: Range<usize>,
    /// The head's first column.
    col: usize,
    d: usize,
    h: usize,
    scale: f32,
}

impl Head {
    /// # Safety
    /// `out` holds the rows `self.rows` of h f32 each, and nothing else accesses their columns
    /// `col .. col + d` during the call; the sources hold those rows and columns.
    unsafe fn run(
        &self,
        proof: AmxAttention,
        scratch: &mut HeadScratch,
        [q, k, v]: [Columns<'_>; 3],
        out: OutPtr,
    ) {
        let Head {
            ref rows,
            col,
            d,
            h,
            scale,
        } = *self;
        let t = rows.len();
        let t16 = t.next_multiple_of(TILE);
        let t32 = t.next_multiple_of(2 * TILE);
        let dims = d / 2; // steps of the score product
        let keys = t32 / 2; // steps of the context product
        let q_src = q.from(rows.start, col);
        let k_src = k.from(rows.start, col);
        let v_src = v.from(rows.start, col);
        assert!(
            q_src.len() >= (t - 1) * q.row_stride + d,
            "attention: q too short"
        );
        assert!(
            k_src.len() >= (t - 1) * k.row_stride + d,
            "attention: k too short"
        );
        assert!(
            v_src.len() >= (t - 1) * v.row_stride + d,
            "attention: v too short"
        );

        let q_pairs = scratch.q.take(t16 * dims);
        let k_rows = scratch.k_rows.take(t * dims);
        // SAFETY: AVX-512 F, BW and BF16 (the proof); t rows of d f32 at the source stride
        // (asserted above), t rows of d bf16 = dims pairs into buffers of t16·dims and t·dims
        // pairs.
        unsafe {
            store_rows_bf16_cvtne_avx512(
                q_src.as_ptr(),
                q.row_stride,
                t,
                d,
                q_pairs.as_mut_ptr().cast(),
                d,
            );
            store_rows_bf16_cvtne_avx512(
                k_src.as_ptr(),
                k.row_stride,
                t,
                d,
                k_rows.as_mut_ptr().cast(),
                d,
            );
        }
        // Q's rows past T and K's keys past T hold whatever the last head left: they make
        // only scores of padding rows and columns, which nothing reads.
        let k_steps = scratch.k_steps.take(dims * t16);
        // A transpose of 4-byte pairs: the f32 panel gather moves their bits unchanged.
        gather_panel(
            k_steps,
            k_rows,
            PanelSource {
                nr: t16,
                cols: t,
                k0: 0,
                kcb: dims,
                n0: 0,
                row_stride: dims,
                col_stride: 1,
            },
        );
        let v_steps = scratch.v_steps.take(keys * d);
        // V's row of a key, null past T (a row of zeros).
        let v_row = |key: usize| {
            if key < t {
                v_src[key * v.row_stride..].as_ptr()
            } else {
                std::ptr::null()
            }
        };
        for (s, step) in v_steps.chunks_exact_mut(d).enumerate() {
            let (even, odd) = (v_row(2 * s), v_row(2 * s + 1));
            if even.is_null() {
                step.fill(0.0);
            } else {
                // SAFETY: AVX-512 F, BW and BF16 (the proof); d is a multiple of 16; both
                // rows hold d f32 (asserted above), `step` d values.
                unsafe { interleave_rows_bf16_avx512(even, odd, d, step.as_mut_ptr().cast()) };
            }
        }

        let scores = scratch.scores.take(TILE * t16);
        let p = scratch.p.take(TILE * keys);
        for row in p.chunks_exact_mut(keys) {
            // Keys past T: zero, as are V's (a stale NaN there would reach every output). The
            // stores below write keys < T only, so this holds for every block.
            row[t / 2..].fill(0.0);
        }
        let context = scratch.context.take(TILE * d);
        let mut r0 = 0;
        while r0 < t {
            let live = TILE.min(t - r0);
            // SAFETY: AMX (the proof); 16 rows of `dims` pairs of Q from row r0 (< t16 rows
            // held), `dims` steps of t16 keys, 16 rows of t16 scores.
            unsafe {
                multiply_16_rows_amx(
                    proof.amx,
                    dims,
                    q_pairs[r0 * dims..].as_ptr(),
                    dims,
                    k_steps.as_ptr(),
                    t16,
                    t16 / TILE,
                    scores.as_mut_ptr(),
                    t16,
                )
            };
            // SAFETY: AVX-512 F, BW and BF16 (the proof); `live` rows of t scores at stride
            // t16 into rows of t bf16 at stride 2·keys bf16 (the rows of `p`); scale > 0.
            unsafe {
                softmax_rows_scaled_to_bf16_avx512(
                    scores.as_mut_ptr(),
                    t16,
                    live,
                    t,
                    scale,
                    p.as_mut_ptr().cast(),
                    2 * keys,
                )
            };
            let (dst, ldc) = if live == TILE {
                // SAFETY: rows r0 .. r0 + 16 <= t of the sequence, column `col`: this head's.
                (unsafe { out.get().add((rows.start + r0) * h + col) }, h)
            } else {
                (context.as_mut_ptr(), d)
            };
            // SAFETY: AMX; 16 rows of `keys` pairs of P, `keys` steps of d values of V, and 16
            // rows of d outputs at stride ldc: this head's block of `out` or `context`.
            unsafe {
                multiply_16_rows_amx(
                    proof.amx,
                    keys,
                    p.as_ptr(),
                    keys,
                    v_steps.as_ptr(),
                    d,
                    d / TILE,
                    dst,
                    ldc,
                )
            };
            if live < TILE {
                for (i, row) in context.chunks_exact(d).take(live).enumerate() {
                    // SAFETY: row r0 + i < t of the sequence, this head's d columns.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            out.get().add((rows.start + r0 + i) * h + col),
                            d,
                        )
                    };
                    dst.copy_from_slice(row);
                }
            }
            r0 += TILE;
        }
    }
}
