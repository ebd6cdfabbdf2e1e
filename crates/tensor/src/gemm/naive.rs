//! Triple-loop twins of the matmuls: the reference the fast paths are tested against.
//!
//! Same signatures and shape checks as the parent module. Each dot product is accumulated in f64
//! in index order and rounded to f32 once (then the bias is added in f32), so these are at least
//! as accurate as the fast path and independent of any blocking or thread count.

use crate::error::{expect_shape, Result};
use crate::gemm::{check_nn, check_nt};
use crate::tensor::{TensorView, TensorViewMut};

/// `out[M,N] = x[M,K] · w[N,K]ᵀ + bias[N]`
pub fn matmul_bias_nt(
    mut out: TensorViewMut<'_>,
    x: TensorView<'_>,
    w: TensorView<'_>,
    bias: TensorView<'_>,
) -> Result<()> {
    const OP: &str = "matmul_bias_nt";
    let (m, k, n) = check_nt(OP, &out, ("x", x), ("w", w))?;
    expect_shape(OP, "bias", bias.shape(), &["N"], &[n])?;
    let (out, x, w, bias) = (
        out.as_mut_slice(),
        x.as_slice(),
        w.as_slice(),
        bias.as_slice(),
    );
    for i in 0..m {
        for j in 0..n {
            let dot = dot_f64(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
            out[i * n + j] = dot as f32 + bias[j];
        }
    }
    Ok(())
}

/// `out[M,N] = a[M,K] · b[N,K]ᵀ`
pub fn matmul_nt(mut out: TensorViewMut<'_>, a: TensorView<'_>, b: TensorView<'_>) -> Result<()> {
    let (m, k, n) = check_nt("matmul_nt", &out, ("a", a), ("b", b))?;
    let (out, a, b) = (out.as_mut_slice(), a.as_slice(), b.as_slice());
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = dot_f64(&a[i * k..(i + 1) * k], &b[j * k..(j + 1) * k]) as f32;
        }
    }
    Ok(())
}

/// `out[M,N] = a[M,K] · b[K,N]`
pub fn matmul_nn(mut out: TensorViewMut<'_>, a: TensorView<'_>, b: TensorView<'_>) -> Result<()> {
    let (m, k, n) = check_nn("matmul_nn", &out, a, b)?;
    let (out, a, b) = (out.as_mut_slice(), a.as_slice(), b.as_slice());
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for l in 0..k {
                acc += a[i * k + l] as f64 * b[l * n + j] as f64;
            }
            out[i * n + j] = acc as f32;
        }
    }
    Ok(())
}

/// `out[M,N] = x[M,K] · w[N,K]ᵀ + bias[N]` as `vdpbf16ps` computes it (the twin of
/// [`GemmKernel::Avx512Bf16`](crate::GemmKernel::Avx512Bf16)): x and w rounded to bf16
/// (nearest even), then per output an f32 sum over pairs of k, from +0: add the odd k's
/// product, then the even k's, each addition rounded to nearest even, with denormal operands
/// and results flushed to zero of the same sign; a zero pads an odd K. Then `+ bias` in f32.
///
/// Intel's pseudo-code for the instruction; on an AVX-512 BF16 Xeon the order shows: with
/// acc = 1, an odd product of 2²⁴ and an even one of 1 give 2²⁴ (1 + 2²⁴ rounds to 2²⁴ first),
/// the other way round 2²⁴ + 2; a denormal accumulator becomes 0.
pub fn matmul_bias_nt_bf16_pairs(
    mut out: TensorViewMut<'_>,
    x: TensorView<'_>,
    w: TensorView<'_>,
    bias: TensorView<'_>,
) -> Result<()> {
    const OP: &str = "matmul_bias_nt_bf16_pairs";
    let (m, k, n) = check_nt(OP, &out, ("x", x), ("w", w))?;
    expect_shape(OP, "bias", bias.shape(), &["N"], &[n])?;
    let to_bf16 = |v: &[f32]| -> Vec<f32> {
        v.iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect()
    };
    let (x, w) = (to_bf16(x.as_slice()), to_bf16(w.as_slice()));
    let (out, bias) = (out.as_mut_slice(), bias.as_slice());
    let flush = |v: f32| {
        if v.is_subnormal() {
            0.0f32.copysign(v)
        } else {
            v
        }
    };
    let at = |row: &[f32], l: usize| row.get(l).copied().unwrap_or(0.0);
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            let mut acc = 0.0f32;
            for p in 0..k.div_ceil(2) {
                for l in [2 * p + 1, 2 * p] {
                    let product = flush(flush(at(xr, l)) * flush(at(wr, l)));
                    acc = flush(flush(acc) + product);
                }
            }
            out[i * n + j] = acc + bias[j];
        }
    }
    Ok(())
}

fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}
