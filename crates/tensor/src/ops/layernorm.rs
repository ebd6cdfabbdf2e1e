//! LayerNorm over the last axis, the residual add, and the two fused as BERT's post-LN block
//! needs them: `x = LN(x + residual)`.
//!
//! # Numerics
//! Statistics are two-pass and accumulated in f64 (mean, then the mean of squared deviations),
//! and the normalisation `(x - mean) · rstd · gamma + beta` is evaluated in f64 and rounded to
//! f32 once. This is exact enough that eps = 1e-12 and rows like `1e4 + noise` (where one-pass
//! f32 `E[x²] - E[x]²` loses every digit) come out right: see the tests.
//! The residual add is done in f32 first, as PyTorch does (`LayerNorm(hidden + input)`).

use crate::error::{expect_2d, expect_shape, Result, TensorError};
use crate::ops::{for_each_row, for_each_row_pair};
use crate::tensor::{TensorView, TensorViewMut};

/// `x[M,N] = LayerNorm(x)` with `gamma[N]`, `beta[N]`, over each row.
///
/// `eps` must be finite and >= 0. With eps > 0 a constant row (variance 0) gives `beta` exactly;
/// with eps = 0 it gives NaN, as PyTorch does.
pub fn layernorm_inplace(
    mut x: TensorViewMut<'_>,
    gamma: TensorView<'_>,
    beta: TensorView<'_>,
    eps: f32,
) -> Result<()> {
    const OP: &str = "layernorm_inplace";
    let (_, n) = check_layernorm(OP, &x, gamma, beta, eps)?;
    let (gamma, beta) = (gamma.as_slice(), beta.as_slice());
    for_each_row(x.as_mut_slice(), n, |row| {
        layernorm_row(row, gamma, beta, eps)
    });
    Ok(())
}

/// a[...] += b[...] elementwise (same shape, any rank), in f32.
pub fn add_inplace(mut a: TensorViewMut<'_>, b: TensorView<'_>) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(TensorError::ShapeMismatch {
            op: "add_inplace",
            operand: "b",
            expected: format!("{:?}, the shape of `a`", a.shape()),
            found: b.shape().to_vec(),
        });
    }
    for (x, y) in a.as_mut_slice().iter_mut().zip(b.as_slice()) {
        *x += y;
    }
    Ok(())
}

/// `x[M,N] = LayerNorm(x + residual[M,N])` with `gamma[N]`, `beta[N]`: BERT's post-LN residual block.
///
/// The sum is rounded to f32 before normalising, so the result is bit-identical to
/// [`add_inplace`] followed by [`layernorm_inplace`].
pub fn add_layernorm_inplace(
    mut x: TensorViewMut<'_>,
    residual: TensorView<'_>,
    gamma: TensorView<'_>,
    beta: TensorView<'_>,
    eps: f32,
) -> Result<()> {
    const OP: &str = "add_layernorm_inplace";
    let (m, n) = check_layernorm(OP, &x, gamma, beta, eps)?;
    expect_shape(OP, "residual", residual.shape(), &["M", "N"], &[m, n])?;
    let (gamma, beta) = (gamma.as_slice(), beta.as_slice());
    for_each_row_pair(x.as_mut_slice(), residual.as_slice(), n, |row, res| {
        for (v, r) in row.iter_mut().zip(res) {
            *v += r;
        }
        layernorm_row(row, gamma, beta, eps);
    });
    Ok(())
}

/// Checks x[M,N], gamma[N], beta[N] and eps; returns (M, N).
fn check_layernorm(
    op: &'static str,
    x: &TensorViewMut<'_>,
    gamma: TensorView<'_>,
    beta: TensorView<'_>,
    eps: f32,
) -> Result<(usize, usize)> {
    let (m, n) = expect_2d(op, "x", x.shape(), ["M", "N"])?;
    expect_shape(op, "gamma", gamma.shape(), &["N"], &[n])?;
    expect_shape(op, "beta", beta.shape(), &["N"], &[n])?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(TensorError::InvalidArgument {
            op,
            message: format!("eps must be finite and >= 0, got {eps}"),
        });
    }
    Ok((m, n))
}

/// One row: two-pass f64 statistics, f64 normalisation, one rounding.
///
/// Compiled for the widest vectors the CPU has: the same operations lane by lane (Rust never
/// fuses a multiply and an add on its own), so the same bits, 8 f64 a vector instead of
/// SSE2's 2 (LayerNorm was 6% of an e5-small int8 batch).
fn layernorm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::avx512_enabled() {
            // SAFETY: avx512_enabled() checked that the CPU has AVX-512F.
            return unsafe { layernorm_row_avx512(row, gamma, beta, eps) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            return unsafe { layernorm_row_avx2(row, gamma, beta, eps) };
        }
    }
    layernorm_row_any(row, gamma, beta, eps)
}

/// [`layernorm_row`] compiled for AVX-512F.
///
/// # Safety
/// AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn layernorm_row_avx512(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    layernorm_row_any(row, gamma, beta, eps)
}

/// [`layernorm_row`] compiled for AVX2.
///
/// # Safety
/// AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn layernorm_row_avx2(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    layernorm_row_any(row, gamma, beta, eps)
}

#[inline(always)]
fn layernorm_row_any(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f64;
    let mean = sum_f64(row, |v| v as f64) / n;
    let var = sum_f64(row, |v| {
        let d = v as f64 - mean;
        d * d
    }) / n;
    let rstd = 1.0 / (var + eps as f64).sqrt();
    for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = ((*v as f64 - mean) * rstd * g as f64 + b as f64) as f32;
    }
}

/// `Σ f(v)` over the row in f64, in 8 interleaved partial sums (element i into sum i mod 8,
/// then the 8 in order, then the tail): a fixed order, so the same bits every run, and 8
/// independent chains instead of one, so the sum vectorises and does not wait on the latency
/// of each add (it was most of LayerNorm's time at 384 and 1024 wide).
#[inline(always)]
fn sum_f64(row: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (s, &v) in lanes.iter_mut().zip(chunk) {
            *s += f(v);
        }
    }
    let mut total = lanes.iter().sum::<f64>();
    for &v in tail {
        total += f(v);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row function the CPU runs (AVX-512 or AVX2 build) against the same code built for
    /// the baseline: bit for bit, over odd widths and rows far from zero mean.
    #[test]
    fn every_build_of_the_row_gives_the_baseline_bits() {
        let mut seed = 0x9e37_79b9_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        for n in [1, 2, 7, 8, 9, 17, 65, 384, 1024, 1025] {
            for offset in [0.0f32, 3.0, -1e4] {
                let row: Vec<f32> = (0..n).map(|_| offset + next()).collect();
                let gamma: Vec<f32> = (0..n).map(|_| 1.0 + next()).collect();
                let beta: Vec<f32> = (0..n).map(|_| next()).collect();
                for eps in [1e-12f32, 1e-5] {
                    let (mut fast, mut base) = (row.clone(), row.clone());
                    layernorm_row(&mut fast, &gamma, &beta, eps);
                    layernorm_row_any(&mut base, &gamma, &beta, eps);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&fast), bits(&base), "n={n} offset={offset} eps={eps}");
                }
            }
        }
    }
}
