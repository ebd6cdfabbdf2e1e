//! Matrix multiplication: `out = x · wᵀ + bias` for linear layers, `a · bᵀ` and `a · b` for
//! attention.
//!
//! Every public function checks all shapes first, then calls `sgemm`, the crate's only
//! `unsafe` code, a thin wrapper around `matrixmultiply::sgemm` that reads PyTorch's `[out, in]`
//! weight layout through strides (no transposed copy).
//!
//! # Numerics
//! Each output element is one f32 dot product with FMA (on CPUs that have it), summed in blocks
//! of `kc = 256` along K, then the bias is added in f32: `out = fl(x·wᵀ) + bias`, like a GEMM
//! followed by a bias epilogue. The [`naive`] twins accumulate in f64 and round once, so they are
//! the more accurate reference; on integer-valued inputs both are exact and agree bit for bit.
//!
//! # Determinism
//! matrixmultiply splits work between its threads (`MATMUL_NUM_THREADS`, default the physical
//! core count, at most 4) along M and N only, never along K, and its edge tiles run the same
//! micro-kernel as full tiles. So an output row depends only on its own input row: not on the
//! thread count, and not on which other rows share the call (a text alone equals the same text
//! inside a batch; see the `row_results_do_not_depend_on_the_batch` test).

pub mod int8;
pub(crate) mod kernels;
pub mod naive;
pub mod packed;
mod panel_memory;

use crate::error::{expect_2d, expect_shape, Result};
use crate::tensor::{TensorView, TensorViewMut};

/// Outputs of at least this many bytes are written with non-temporal stores, which skip
/// reading each line before it is overwritten and leave the caches to the operands: an
/// output this large leaves the caches before it is read anyway. On the Xeon, a KoE5 W2 int8
/// batch spent a quarter of its time in output stores: koe5-shape W2 int8 1.24-1.30x,
/// e5-small 1.12-1.16x. Small outputs (a query's) stay on the usual path: a streamed output
/// is read back from memory, and e5-small's W1 was 20% slower streamed.
pub(crate) const STREAM_MIN_BYTES: usize = 2 << 20;

/// Orders a task's non-temporal stores before what it does next (reporting itself done to
/// rayon): they are weakly ordered, and whoever reads the output must see them.
pub(crate) fn fence_streamed_stores() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sfence has no operands and touches no memory; SSE is part of x86-64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// `out[M,N] = x[M,K] · w[N,K]ᵀ + bias[N]`
///
/// `w` is in PyTorch's `nn.Linear` layout `[out_features, in_features]`.
pub fn matmul_bias_nt(
    mut out: TensorViewMut<'_>,
    x: TensorView<'_>,
    w: TensorView<'_>,
    bias: TensorView<'_>,
) -> Result<()> {
    const OP: &str = "matmul_bias_nt";
    let (_, _, n) = check_nt(OP, &out, ("x", x), ("w", w))?;
    expect_shape(OP, "bias", bias.shape(), &["N"], &[n])?;
    gemm_nt(out.as_mut_slice(), x, w);
    add_bias_rows(out.as_mut_slice(), bias.as_slice());
    Ok(())
}

/// `out[M,N] = a[M,K] · b[N,K]ᵀ` (attention scores: Q · Kᵀ)
pub fn matmul_nt(mut out: TensorViewMut<'_>, a: TensorView<'_>, b: TensorView<'_>) -> Result<()> {
    check_nt("matmul_nt", &out, ("a", a), ("b", b))?;
    gemm_nt(out.as_mut_slice(), a, b);
    Ok(())
}

/// `out[M,N] = a[M,K] · b[K,N]` (attention context: P · V)
pub fn matmul_nn(mut out: TensorViewMut<'_>, a: TensorView<'_>, b: TensorView<'_>) -> Result<()> {
    let (m, k, n) = check_nn("matmul_nn", &out, a, b)?;
    sgemm(
        MatMut::new(out.as_mut_slice(), m, n, n),
        1.0,
        Mat::new(a.as_slice(), m, k, k, 1),
        Mat::new(b.as_slice(), k, n, n, 1),
    );
    Ok(())
}

/// Checks out[M,N], a[M,K], b[N,K] (each input with its name for messages); returns (M, K, N).
pub(crate) fn check_nt(
    op: &'static str,
    out: &TensorViewMut<'_>,
    (a_name, a): (&'static str, TensorView<'_>),
    (b_name, b): (&'static str, TensorView<'_>),
) -> Result<(usize, usize, usize)> {
    let (m, k) = expect_2d(op, a_name, a.shape(), ["M", "K"])?;
    let (n, _) = expect_2d(op, b_name, b.shape(), ["N", "K"])?;
    expect_shape(op, b_name, b.shape(), &["N", "K"], &[n, k])?;
    expect_shape(op, "out", out.shape(), &["M", "N"], &[m, n])?;
    Ok((m, k, n))
}

/// Checks out[M,N], a[M,K], b[K,N]; returns (M, K, N).
pub(crate) fn check_nn(
    op: &'static str,
    out: &TensorViewMut<'_>,
    a: TensorView<'_>,
    b: TensorView<'_>,
) -> Result<(usize, usize, usize)> {
    let (m, k) = expect_2d(op, "a", a.shape(), ["M", "K"])?;
    let (_, n) = expect_2d(op, "b", b.shape(), ["K", "N"])?;
    expect_shape(op, "b", b.shape(), &["K", "N"], &[k, n])?;
    expect_shape(op, "out", out.shape(), &["M", "N"], &[m, n])?;
    Ok((m, k, n))
}

/// out[M,N] = a[M,K] · b[N,K]ᵀ on checked shapes.
fn gemm_nt(out: &mut [f32], a: TensorView<'_>, b: TensorView<'_>) {
    let (m, k) = (a.rows(), a.cols());
    let n = b.rows();
    sgemm(
        MatMut::new(out, m, n, n),
        1.0,
        Mat::new(a.as_slice(), m, k, k, 1),
        // bᵀ[K,N] read from b[N,K]: element (kk, j) is b[j*K + kk].
        Mat::new(b.as_slice(), k, n, 1, k),
    );
}

/// out[M,N] += bias[N] on every row.
fn add_bias_rows(out: &mut [f32], bias: &[f32]) {
    if bias.is_empty() {
        return;
    }
    for row in out.chunks_exact_mut(bias.len()) {
        for (o, b) in row.iter_mut().zip(bias) {
            *o += b;
        }
    }
}

/// A read-only matrix inside a slice: element (i, j) is `data[i * row_stride + j * col_stride]`.
///
/// The constructor proves every element is in bounds, which is what [`sgemm`]'s safety rests on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// # Panics
    /// If an element would fall outside `data` or a stride exceeds `isize::MAX`.
    pub(crate) fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Mat<'a> {
        assert_in_bounds(data.len(), rows, cols, row_stride, col_stride);
        Mat {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }
}

/// A mutable row-major matrix inside a slice: element (i, j) is `data[i * row_stride + j]`,
/// with `row_stride >= cols` so that no two elements share memory.
#[derive(Debug)]
pub(crate) struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> MatMut<'a> {
    /// # Panics
    /// If an element would fall outside `data`, rows would overlap (`row_stride < cols` with
    /// more than one row) or the stride exceeds `isize::MAX`.
    pub(crate) fn new(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(
            rows <= 1 || row_stride >= cols,
            "MatMut: row stride {row_stride} < {cols} columns would make rows overlap"
        );
        assert_in_bounds(data.len(), rows, cols, row_stride, 1);
        MatMut {
            data,
            rows,
            cols,
            row_stride,
        }
    }
}

/// Panics unless every element (i, j) of a rows x cols matrix with these strides lies inside a
/// slice of `len` elements, and the strides fit in `isize`.
fn assert_in_bounds(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) {
    assert!(
        isize::try_from(row_stride).is_ok() && isize::try_from(col_stride).is_ok(),
        "matrix strides ({row_stride}, {col_stride}) exceed isize::MAX"
    );
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows - 1).checked_mul(row_stride).and_then(|r| {
        (cols - 1)
            .checked_mul(col_stride)
            .and_then(|c| r.checked_add(c))
    });
    assert!(
        matches!(last, Some(last) if last < len),
        "{rows}x{cols} matrix with strides ({row_stride}, {col_stride}) does not fit in {len} elements"
    );
}

/// c[M,N] = alpha · a[M,K] · b[K,N]. `c` is written, never read (it may hold NaN).
///
/// The one `unsafe` call of the crate.
///
/// # Panics
/// If the dimensions of `a`, `b` and `c` do not chain (callers check shapes first and report
/// errors; this is the last line of defence before raw pointers).
pub(crate) fn sgemm(c: MatMut<'_>, alpha: f32, a: Mat<'_>, b: Mat<'_>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && c.rows == m && c.cols == n,
        "sgemm: [{}, {}] · [{}, {}] -> [{}, {}] does not chain",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: matrixmultiply reads A(i, l) at `a + i*rsa + l*csa` for i < m, l < k, B(l, j) at
    // `b + l*rsb + j*csb` for l < k, j < n, and writes C(i, j) at `c + i*rsc + j*csc` for i < m,
    // j < n (with beta = 0 it never reads C, and for k = 0 it only writes zeros to C).
    // - In bounds: `Mat::new` / `MatMut::new` asserted that the last element of each matrix,
    //   (rows-1)*row_stride + (cols-1)*col_stride, is inside its slice, and all strides are
    //   non-negative, so every element is; strides fit in isize (asserted there too).
    // - No aliasing: `c.data` is a `&mut` borrow, so it overlaps neither `a.data` nor `b.data`
    //   (A and B may overlap each other: they are only read). C's elements are distinct:
    //   col stride 1 and row stride >= cols (asserted in `MatMut::new`; unused when m == 1).
    // - The borrows outlive the call, which is synchronous: matrixmultiply's worker threads
    //   finish before `sgemm` returns.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            0.0,
            c.data.as_mut_ptr(),
            c.row_stride as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "does not fit")]
    fn mat_out_of_bounds_panics() {
        let data = [0.0; 11];
        let _ = Mat::new(&data, 3, 4, 4, 1);
    }

    #[test]
    #[should_panic(expected = "overlap")]
    fn mat_mut_overlapping_rows_panics() {
        let mut data = [0.0; 12];
        let _ = MatMut::new(&mut data, 3, 4, 3);
    }

    #[test]
    fn strided_sub_matrices() {
        // a = columns 1..3 of a [2, 4] matrix, b = its transpose read through strides.
        let buf: Vec<f32> = (0..8).map(|v| v as f32).collect(); // [[0,1,2,3],[4,5,6,7]]
        let a = Mat::new(&buf[1..], 2, 2, 4, 1); // [[1,2],[5,6]]
        let bt = Mat::new(&buf[1..], 2, 2, 1, 4); // [[1,5],[2,6]]
        let mut c = [f32::NAN; 6];
        sgemm(MatMut::new(&mut c, 2, 2, 3), 0.5, a, bt);
        // [[1,2],[5,6]] · [[1,5],[2,6]] = [[5,17],[17,61]]; alpha 0.5; column 2 untouched.
        assert_eq!(c[..2], [2.5, 8.5]);
        assert!(c[2].is_nan());
        assert_eq!(c[3..5], [8.5, 30.5]);
        assert!(c[5].is_nan());
    }
}
