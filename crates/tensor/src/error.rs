//! The one error type of this crate: every message names the operation and the shapes involved.

use thiserror::Error;

/// What went wrong, and in which operation.
///
/// Operations check all shapes before touching any data, so an error means that nothing was
/// written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TensorError {
    /// An operand does not have the shape the operation needs.
    ///
    /// `expected` is written with the operation's dimension names and their values, for example
    /// `[N, K] = [1536, 384]`, so the message says both what the rule is and what it resolved to.
    #[error("{op}: `{operand}` has shape {found:?}, expected {expected}")]
    ShapeMismatch {
        op: &'static str,
        operand: &'static str,
        expected: String,
        found: Vec<usize>,
    },

    /// A buffer's length does not match the number of elements its shape describes.
    #[error("{op}: data has {len} elements, but shape {shape:?} needs {expected}")]
    LengthMismatch {
        op: &'static str,
        len: usize,
        shape: Vec<usize>,
        expected: usize,
    },

    /// A shape with more axes than [`MAX_RANK`](crate::MAX_RANK), or whose element count
    /// overflows `usize`.
    #[error("{op}: shape {shape:?} is not supported ({reason})")]
    UnsupportedShape {
        op: &'static str,
        shape: Vec<usize>,
        reason: &'static str,
    },

    /// A scalar argument is out of its domain (for example `n_heads` not dividing the hidden
    /// size, or a negative LayerNorm epsilon).
    #[error("{op}: {message}")]
    InvalidArgument { op: &'static str, message: String },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = TensorError> = std::result::Result<T, E>;

/// Builds a [`TensorError::ShapeMismatch`] unless `found == expected`.
///
/// `names` are the dimension names in the operation's shape comment (`["N", "K"]`), used to write
/// the expected shape as `[N, K] = [1536, 384]`.
pub(crate) fn expect_shape(
    op: &'static str,
    operand: &'static str,
    found: &[usize],
    names: &[&str],
    expected: &[usize],
) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    Err(TensorError::ShapeMismatch {
        op,
        operand,
        expected: format!("[{}] = {:?}", names.join(", "), expected),
        found: found.to_vec(),
    })
}

/// Returns `(rows, cols)` of a 2-D shape, or a [`TensorError::ShapeMismatch`] naming the
/// expected axes (`[M, K]`).
pub(crate) fn expect_2d(
    op: &'static str,
    operand: &'static str,
    found: &[usize],
    names: [&str; 2],
) -> Result<(usize, usize)> {
    match *found {
        [r, c] => Ok((r, c)),
        _ => Err(TensorError::ShapeMismatch {
            op,
            operand,
            expected: format!("a 2-D [{}, {}]", names[0], names[1]),
            found: found.to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_operation_and_the_shapes() {
        let e = expect_shape(
            "matmul_bias_nt",
            "w",
            &[1536, 385],
            &["N", "K"],
            &[1536, 384],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "matmul_bias_nt: `w` has shape [1536, 385], expected [N, K] = [1536, 384]"
        );
        let e = expect_2d("layernorm_inplace", "x", &[2, 3, 4], ["M", "N"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "layernorm_inplace: `x` has shape [2, 3, 4], expected a 2-D [M, N]"
        );
    }
}
