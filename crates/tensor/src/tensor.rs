//! [`Tensor`] (owned), [`TensorView`] (borrowed, `Copy`) and [`TensorViewMut`] (borrowed,
//! mutable): contiguous, row-major `f32` data plus a shape.
//!
//! There are no strides: every tensor and view is dense and row-major. The last axis is the
//! "column" axis; [`rows`](Tensor::rows) and [`cols`](Tensor::cols) look at any tensor as the
//! matrix `[product of the leading axes, last axis]`, so a `[B, T, H]` tensor is also a
//! `[B*T, H]` matrix without a reshape.
//!
//! A view is what the ops take. Weights memory-mapped from safetensors become a view with
//! [`TensorView::new`] without a copy; an owned tensor lends one with [`Tensor::view`].

use std::fmt;
use std::ops::Range;

use crate::aligned::CacheLineVec;
use crate::error::{Result, TensorError};

/// The largest number of axes a shape may have. An encoder needs at most 3 (`[heads, T, T]`).
pub const MAX_RANK: usize = 4;

/// A shape stored inline (no allocation), so that views are `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    dims: [usize; MAX_RANK],
    rank: usize,
}

impl Shape {
    /// Checks the rank and that the element count fits in `usize`.
    pub(crate) fn new(op: &'static str, dims: &[usize]) -> Result<Shape> {
        if dims.len() > MAX_RANK {
            return Err(TensorError::UnsupportedShape {
                op,
                shape: dims.to_vec(),
                reason: "more than MAX_RANK = 4 axes",
            });
        }
        if dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .is_none()
        {
            return Err(TensorError::UnsupportedShape {
                op,
                shape: dims.to_vec(),
                reason: "element count overflows usize",
            });
        }
        let mut inline = [0; MAX_RANK];
        inline[..dims.len()].copy_from_slice(dims);
        Ok(Shape {
            dims: inline,
            rank: dims.len(),
        })
    }

    pub(crate) fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    pub(crate) fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// Columns of the matrix view: the last axis (1 for a scalar).
    pub(crate) fn cols(&self) -> usize {
        self.dims().last().copied().unwrap_or(1)
    }

    /// Rows of the matrix view: the product of all axes but the last (1 for rank 0 and 1).
    pub(crate) fn rows(&self) -> usize {
        match self.rank {
            0 => 1,
            r => self.dims[..r - 1].iter().product(),
        }
    }

    /// The same shape with axis 0 replaced by `n`.
    fn with_first(mut self, n: usize) -> Shape {
        assert!(self.rank > 0, "a rank-0 tensor has no axis 0");
        self.dims[0] = n;
        self
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.dims(), f)
    }
}

/// Checks that `len` elements are what `shape` describes.
fn check_len(op: &'static str, len: usize, shape: &Shape) -> Result<()> {
    if len == shape.numel() {
        Ok(())
    } else {
        Err(TensorError::LengthMismatch {
            op,
            len,
            shape: shape.dims().to_vec(),
            expected: shape.numel(),
        })
    }
}

/// Elements of axis 0's entries (the stride of axis 0), 1 for rank 0.
fn outer_stride(shape: &Shape) -> usize {
    shape.dims().iter().skip(1).product()
}

/// Short `Debug` output: shape and the first few values.
fn debug_data(name: &str, shape: &Shape, data: &[f32], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    const SHOWN: usize = 8;
    write!(f, "{name}{shape:?} ")?;
    f.debug_list().entries(data.iter().take(SHOWN)).finish()?;
    if data.len() > SHOWN {
        write!(f, " (+{} more)", data.len() - SHOWN)?;
    }
    Ok(())
}

/// An owned, contiguous, row-major `f32` tensor of rank at most [`MAX_RANK`].
///
/// Storage made here (`zeros`, `full`) starts on a 64-byte boundary, so that rows of 16 f32
/// are whole cache lines for the SIMD and AMX kernels; `from_vec` keeps the caller's `Vec`.
#[derive(Clone)]
pub struct Tensor {
    data: CacheLineVec<f32>,
    shape: Shape,
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape && self.as_slice() == other.as_slice()
    }
}

impl Tensor {
    /// A tensor of zeros.
    ///
    /// # Panics
    /// If `shape` has more than [`MAX_RANK`] axes or its element count overflows (a programming
    /// error, like a too-large `Vec::with_capacity`).
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A tensor with every element set to `value` (NaN fills are handy in tests: they prove an
    /// output is never read).
    ///
    /// # Panics
    /// As [`Tensor::zeros`].
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        let shape = Shape::new("Tensor::full", shape).unwrap_or_else(|e| panic!("{e}"));
        Tensor {
            data: CacheLineVec::filled(shape.numel(), value),
            shape,
        }
    }

    /// Takes ownership of `data` as a tensor of `shape`; errors if the lengths disagree.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let shape = Shape::new("Tensor::from_vec", shape)?;
        check_len("Tensor::from_vec", data.len(), &shape)?;
        Ok(Tensor {
            data: CacheLineVec::from_vec(data),
            shape,
        })
    }

    /// The same data under another shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<Tensor> {
        let shape = Shape::new("Tensor::reshape", shape)?;
        check_len("Tensor::reshape", self.data.len(), &shape)?;
        Ok(Tensor {
            data: self.data,
            shape,
        })
    }

    pub fn shape(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn rank(&self) -> usize {
        self.shape.rank
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Rows of the matrix view `[product of leading axes, last axis]` (1 for rank 0 and 1).
    pub fn rows(&self) -> usize {
        self.shape.rows()
    }

    /// Columns of the matrix view: the last axis (1 for rank 0).
    pub fn cols(&self) -> usize {
        self.shape.cols()
    }

    /// Row `i` of the matrix view. Panics if `i >= rows()`.
    pub fn row(&self, i: usize) -> &[f32] {
        let c = self.cols();
        &self.as_slice()[i * c..(i + 1) * c]
    }

    /// Row `i` of the matrix view, mutable. Panics if `i >= rows()`.
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        let c = self.cols();
        &mut self.as_mut_slice()[i * c..(i + 1) * c]
    }

    pub fn as_slice(&self) -> &[f32] {
        self.data.as_slice()
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data.as_mut_slice()
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.data.into_vec()
    }

    /// Borrows the whole tensor as a view.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            data: self.data.as_slice(),
            shape: self.shape,
        }
    }

    /// Borrows the whole tensor as a mutable view.
    pub fn view_mut(&mut self) -> TensorViewMut<'_> {
        TensorViewMut {
            data: self.data.as_mut_slice(),
            shape: self.shape,
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_data("Tensor", &self.shape, self.as_slice(), f)
    }
}

/// A borrowed, contiguous, row-major `f32` tensor. `Copy`: pass it by value.
#[derive(Clone, Copy, PartialEq)]
pub struct TensorView<'a> {
    data: &'a [f32],
    shape: Shape,
}

impl<'a> TensorView<'a> {
    /// Views `data` (for example a weight borrowed from a memory map) as a tensor of `shape`;
    /// errors if the lengths disagree.
    pub fn new(data: &'a [f32], shape: &[usize]) -> Result<TensorView<'a>> {
        Self::checked("TensorView::new", data, shape)
    }

    /// The same data under another shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<TensorView<'a>> {
        Self::checked("TensorView::reshape", self.data, shape)
    }

    fn checked(op: &'static str, data: &'a [f32], shape: &[usize]) -> Result<TensorView<'a>> {
        let shape = Shape::new(op, shape)?;
        check_len(op, data.len(), &shape)?;
        Ok(TensorView { data, shape })
    }

    pub fn shape(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn rank(&self) -> usize {
        self.shape.rank
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Rows of the matrix view (see [`Tensor::rows`]).
    pub fn rows(&self) -> usize {
        self.shape.rows()
    }

    /// Columns of the matrix view (see [`Tensor::cols`]).
    pub fn cols(&self) -> usize {
        self.shape.cols()
    }

    /// Row `i` of the matrix view. Panics if `i >= rows()`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        let c = self.cols();
        &self.data[i * c..(i + 1) * c]
    }

    /// The entries `range` of axis 0 (rows of a 2-D view, for example one sequence of a packed
    /// batch), without a copy. Panics if the range is out of bounds or the view has rank 0.
    pub fn slice_rows(self, range: Range<usize>) -> TensorView<'a> {
        let stride = outer_stride(&self.shape);
        let shape = self.shape.with_first(range.len());
        assert!(
            range.start <= range.end && range.end <= self.shape.dims[0],
            "slice_rows: range {range:?} out of bounds for axis 0 of {:?}",
            self.shape
        );
        TensorView {
            data: &self.data[range.start * stride..range.end * stride],
            shape,
        }
    }

    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// Copies the view into an owned tensor.
    pub fn to_tensor(&self) -> Tensor {
        Tensor {
            data: CacheLineVec::from_slice(self.data),
            shape: self.shape,
        }
    }
}

impl fmt::Debug for TensorView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_data("TensorView", &self.shape, self.data, f)
    }
}

/// A mutable borrowed, contiguous, row-major `f32` tensor: the output operand of the ops.
pub struct TensorViewMut<'a> {
    data: &'a mut [f32],
    shape: Shape,
}

impl<'a> TensorViewMut<'a> {
    /// Views `data` as a mutable tensor of `shape`; errors if the lengths disagree.
    pub fn new(data: &'a mut [f32], shape: &[usize]) -> Result<TensorViewMut<'a>> {
        Self::checked("TensorViewMut::new", data, shape)
    }

    /// The same data under another shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<TensorViewMut<'a>> {
        Self::checked("TensorViewMut::reshape", self.data, shape)
    }

    fn checked(op: &'static str, data: &'a mut [f32], shape: &[usize]) -> Result<Self> {
        let shape = Shape::new(op, shape)?;
        check_len(op, data.len(), &shape)?;
        Ok(TensorViewMut { data, shape })
    }

    /// A shorter-lived mutable view of the same data, so `self` can be used again afterwards.
    pub fn reborrow(&mut self) -> TensorViewMut<'_> {
        TensorViewMut {
            data: self.data,
            shape: self.shape,
        }
    }

    /// A read-only view of the same data.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            data: self.data,
            shape: self.shape,
        }
    }

    pub fn shape(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn rank(&self) -> usize {
        self.shape.rank
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Rows of the matrix view (see [`Tensor::rows`]).
    pub fn rows(&self) -> usize {
        self.shape.rows()
    }

    /// Columns of the matrix view (see [`Tensor::cols`]).
    pub fn cols(&self) -> usize {
        self.shape.cols()
    }

    /// Row `i` of the matrix view. Panics if `i >= rows()`.
    pub fn row(&self, i: usize) -> &[f32] {
        let c = self.cols();
        &self.data[i * c..(i + 1) * c]
    }

    /// Row `i` of the matrix view, mutable. Panics if `i >= rows()`.
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        let c = self.cols();
        &mut self.data[i * c..(i + 1) * c]
    }

    /// The entries `range` of axis 0, mutable (see [`TensorView::slice_rows`]).
    pub fn slice_rows(self, range: Range<usize>) -> TensorViewMut<'a> {
        let stride = outer_stride(&self.shape);
        let shape = self.shape.with_first(range.len());
        assert!(
            range.start <= range.end && range.end <= self.shape.dims[0],
            "slice_rows: range {range:?} out of bounds for axis 0 of {:?}",
            self.shape
        );
        TensorViewMut {
            data: &mut self.data[range.start * stride..range.end * stride],
            shape,
        }
    }

    pub fn as_slice(&self) -> &[f32] {
        self.data
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data
    }

    /// Gives back the borrowed slice with the view's full lifetime.
    pub fn into_slice(self) -> &'a mut [f32] {
        self.data
    }
}

impl fmt::Debug for TensorViewMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_data("TensorViewMut", &self.shape, self.data, f)
    }
}

impl<'a> From<&'a Tensor> for TensorView<'a> {
    fn from(t: &'a Tensor) -> Self {
        t.view()
    }
}

impl<'a> From<&'a mut Tensor> for TensorViewMut<'a> {
    fn from(t: &'a mut Tensor) -> Self {
        t.view_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_checks_the_length() {
        let t = Tensor::from_vec(vec![1.0; 6], &[2, 3]).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!((t.rows(), t.cols()), (2, 3));
        let e = Tensor::from_vec(vec![1.0; 5], &[2, 3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Tensor::from_vec: data has 5 elements, but shape [2, 3] needs 6"
        );
        let e = Tensor::from_vec(vec![], &[1, 1, 1, 1, 0]).unwrap_err();
        assert!(matches!(e, TensorError::UnsupportedShape { .. }), "{e}");
        let e = Tensor::from_vec(vec![], &[usize::MAX, 2]).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    #[test]
    fn matrix_view_of_any_rank() {
        let t = Tensor::zeros(&[2, 3, 4]);
        assert_eq!((t.rows(), t.cols()), (6, 4));
        let t = Tensor::zeros(&[5]);
        assert_eq!((t.rows(), t.cols()), (1, 5));
        let t = Tensor::zeros(&[]);
        assert_eq!((t.rows(), t.cols(), t.len()), (1, 1, 1));
    }

    #[test]
    fn rows_and_slices() {
        let mut t = Tensor::from_vec((0..12).map(|i| i as f32).collect(), &[4, 3]).unwrap();
        assert_eq!(t.row(2), &[6.0, 7.0, 8.0]);
        t.row_mut(0)[1] = -1.0;
        let v = t.view();
        assert_eq!(v.row(0), &[0.0, -1.0, 2.0]);
        let s = v.slice_rows(1..3);
        assert_eq!(s.shape(), &[2, 3]);
        assert_eq!(s.as_slice(), &[3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let r = v.reshape(&[2, 6]).unwrap();
        assert_eq!(r.row(1), &[6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);

        let mut m = t.view_mut().slice_rows(3..4);
        m.row_mut(0).fill(0.5);
        assert_eq!(t.row(3), &[0.5, 0.5, 0.5]);

        let t3 = Tensor::zeros(&[3, 2, 2]);
        assert_eq!(t3.view().slice_rows(1..2).shape(), &[1, 2, 2]);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn slice_rows_out_of_bounds_panics() {
        let t = Tensor::zeros(&[2, 3]);
        let _ = t.view().slice_rows(1..3);
    }

    #[test]
    fn view_over_borrowed_data() {
        let data = [1.0f32, 2.0, 3.0, 4.0];
        let v = TensorView::new(&data, &[2, 2]).unwrap();
        assert_eq!(v.to_tensor().into_vec(), data);
        assert!(TensorView::new(&data, &[3]).is_err());
        let mut buf = [0.0f32; 4];
        let mut m = TensorViewMut::new(&mut buf, &[4]).unwrap();
        m.reborrow().as_mut_slice()[0] = 9.0;
        assert_eq!(m.view().as_slice()[0], 9.0);
    }
}
