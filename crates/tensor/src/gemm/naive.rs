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

fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}
