//! Softmax over each row, with max subtraction.
//!
//! # Numerics
//! `e_j = exp(x_j - max)` in f32 (std's `expf`), the sum of the `e_j` in f64, and
//! `e_j · (1/sum)` in f64 rounded to f32 once.
//!
//! # Masked entries and special rows
//! - `-inf` entries (masked keys) become exactly 0 and do not disturb the others.
//! - A row whose entries are all `-inf` (every key masked) becomes **all zeros**, not NaN: such a
//!   query attends to nothing. (PyTorch gives NaN for `-inf` masks and a uniform row for its
//!   `finfo.min` masks; koembed's packed batches never produce this row.)
//! - A row with a NaN, or with `+inf` (inf - inf), becomes all NaN, as in PyTorch.

use crate::error::{expect_2d, Result};
use crate::ops::for_each_row;
use crate::tensor::TensorViewMut;

/// `x[M,N] = softmax(x)` over each row (see the module docs for `-inf` and all-masked rows).
pub fn softmax_rows_inplace(mut x: TensorViewMut<'_>) -> Result<()> {
    let (_, n) = expect_2d("softmax_rows_inplace", "x", x.shape(), ["M", "N"])?;
    for_each_row(x.as_mut_slice(), n, softmax_row);
    Ok(())
}

/// One row, in place.
pub(crate) fn softmax_row(row: &mut [f32]) {
    // f32::max skips NaN; a NaN entry still makes the row NaN through exp(NaN) in the sum.
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sum = 0.0f64;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v = (*v as f64 * inv) as f32;
    }
}
