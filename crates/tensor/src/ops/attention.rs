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
//! The heads are read in place through strides (no copy of Q, K, V), including from a fused
//! `[T, 3H]` QKV buffer. Heads run in parallel on rayon's threads, each into its own buffer; the
//! result is the same for any thread count.

use rayon::prelude::*;

use crate::error::{expect_2d, expect_shape, Result, TensorError};
use crate::gemm::{sgemm, Mat, MatMut};
use crate::ops::softmax::softmax_row;
use crate::tensor::{TensorView, TensorViewMut};

/// `out[T,H] = attention(q[T,H], k[T,H], v[T,H])` with `n_heads` heads of `H / n_heads` columns.
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
    attention(out.as_mut_slice(), t, h, n_heads, sources);
    Ok(())
}

/// `out[T,H] = attention(q, k, v)` where `qkv[T, 3H]` holds `[q | k | v]` side by side in each row
/// (the output of one matmul with the three projection weights stacked along N).
pub fn attention_single_sequence_qkv(
    mut out: TensorViewMut<'_>,
    qkv: TensorView<'_>,
    n_heads: usize,
) -> Result<()> {
    const OP: &str = "attention_single_sequence_qkv";
    let (t, h) = expect_2d(OP, "out", out.shape(), ["T", "H"])?;
    expect_shape(OP, "qkv", qkv.shape(), &["T", "3*H"], &[t, 3 * h])?;
    check_heads(OP, h, n_heads)?;
    let data = qkv.as_slice();
    let sources = [0, h, 2 * h].map(|offset| Columns {
        data: data.get(offset..).unwrap_or(&[]),
        row_stride: 3 * h,
    });
    attention(out.as_mut_slice(), t, h, n_heads, sources);
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
struct Columns<'a> {
    data: &'a [f32],
    row_stride: usize,
}

impl<'a> Columns<'a> {
    /// Columns `col .. col + d` of all `t` rows, as a `[t, d]` matrix.
    fn block(self, t: usize, col: usize, d: usize) -> Mat<'a> {
        Mat::new(&self.data[col..], t, d, self.row_stride, 1)
    }

    /// The transpose of [`Self::block`], as a `[d, t]` matrix.
    fn block_t(self, t: usize, col: usize, d: usize) -> Mat<'a> {
        Mat::new(&self.data[col..], d, t, 1, self.row_stride)
    }
}

/// out[T,H] from checked q, k, v sources.
fn attention(out: &mut [f32], t: usize, h: usize, n_heads: usize, [q, k, v]: [Columns<'_>; 3]) {
    if t == 0 || h == 0 {
        return;
    }
    let d = h / n_heads;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let heads: Vec<Vec<f32>> = (0..n_heads)
        .into_par_iter()
        .map(|head| {
            let col = head * d;
            // scores[T,T] = Q_h · K_hᵀ / √d
            let mut scores = vec![0.0f32; t * t];
            sgemm(
                MatMut::new(&mut scores, t, t, t),
                scale,
                q.block(t, col, d),
                k.block_t(t, col, d),
            );
            scores.chunks_exact_mut(t).for_each(softmax_row);
            // ctx[T,d] = P · V_h
            let mut ctx = vec![0.0f32; t * d];
            sgemm(
                MatMut::new(&mut ctx, t, d, d),
                1.0,
                Mat::new(&scores, t, t, t, 1),
                v.block(t, col, d),
            );
            ctx
        })
        .collect();
    for (head, ctx) in heads.iter().enumerate() {
        for (out_row, ctx_row) in out.chunks_exact_mut(h).zip(ctx.chunks_exact(d)) {
            out_row[head * d..(head + 1) * d].copy_from_slice(ctx_row);
        }
    }
}
