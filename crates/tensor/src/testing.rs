//! Comparing f32 results in tests: say where and by how much, not just "assertion failed".
//!
//! ```
//! use koembed_tensor::testing::{assert_close, Tolerance};
//! let got = [1.0, 2.0, 3.0000002];
//! let want = [1.0, 2.0, 3.0];
//! assert_close("example", &got, &want, &[3], Tolerance::strict());
//! ```
//!
//! On failure the panic message reads like
//! `matmul [7, 17]: 2 of 119 values differ (|diff| > 0 + 0·|expected|); max abs diff 0.5 at
//! [3, 4] (actual 12.5, expected 12); max rel diff ...; NMSE ...; first: [3, 4] 12.5 vs 12, ...`.

use std::fmt;

/// `|actual - expected| <= abs + rel · |expected|`, elementwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
}

impl Tolerance {
    /// Bit-for-bit equal values (NaN matches NaN; +0 matches -0).
    pub const fn exact() -> Tolerance {
        Tolerance { abs: 0.0, rel: 0.0 }
    }

    /// A few f32 ulps: two implementations of the same f32 formula.
    pub const fn strict() -> Tolerance {
        Tolerance {
            abs: 1e-6,
            rel: 1e-6,
        }
    }

    /// Different summation orders over a few hundred terms.
    pub const fn balanced() -> Tolerance {
        Tolerance {
            abs: 1e-5,
            rel: 1e-5,
        }
    }

    /// Layer outputs against the PyTorch reference (numerics.md: 1e-4 per hidden state).
    pub const fn permissive() -> Tolerance {
        Tolerance {
            abs: 1e-4,
            rel: 1e-4,
        }
    }
}

/// The outcome of [`compare`]: how many values differ, where, and by how much.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// Number of values compared.
    pub len: usize,
    /// Values outside the tolerance (NaN against a number counts; NaN against NaN does not).
    pub mismatches: usize,
    /// The first few mismatches: (flat index, actual, expected).
    pub first: Vec<(usize, f32, f32)>,
    /// Largest |actual - expected| over finite pairs, with its flat index.
    pub max_abs_diff: f32,
    pub max_abs_at: usize,
    /// Largest |actual - expected| / |expected| over finite pairs with expected != 0.
    pub max_rel_diff: f32,
    pub max_rel_at: usize,
    /// Normalised mean squared error, mse(actual, expected) / mse(expected, 0) (finite pairs).
    pub nmse: f64,
    tolerance: Tolerance,
    shape: Vec<usize>,
    actual_at_max: (f32, f32),
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.mismatches == 0
    }
}

/// How many mismatches [`Comparison::first`] keeps.
const FIRST_SHOWN: usize = 5;

/// Compares `actual` with `expected` elementwise. `shape` (its product must equal the length, or
/// pass `&[len]`) is only used to print indices as `[row, col]`.
///
/// # Panics
/// If the lengths differ or `shape` does not describe them.
pub fn compare(actual: &[f32], expected: &[f32], shape: &[usize], tol: Tolerance) -> Comparison {
    assert_eq!(
        actual.len(),
        expected.len(),
        "compare: actual has {} values, expected {}",
        actual.len(),
        expected.len()
    );
    assert_eq!(
        shape.iter().product::<usize>(),
        actual.len(),
        "compare: shape {shape:?} does not describe {} values",
        actual.len()
    );
    let mut c = Comparison {
        len: actual.len(),
        mismatches: 0,
        first: Vec::new(),
        max_abs_diff: 0.0,
        max_abs_at: 0,
        max_rel_diff: 0.0,
        max_rel_at: 0,
        nmse: 0.0,
        tolerance: tol,
        shape: shape.to_vec(),
        actual_at_max: (0.0, 0.0),
    };
    let (mut err2, mut ref2) = (0.0f64, 0.0f64);
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let ok = if a.is_nan() || e.is_nan() {
            a.is_nan() && e.is_nan()
        } else if a.is_infinite() || e.is_infinite() {
            a == e
        } else {
            let diff = (a - e).abs();
            if diff > c.max_abs_diff {
                c.max_abs_diff = diff;
                c.max_abs_at = i;
                c.actual_at_max = (a, e);
            }
            if e != 0.0 && diff / e.abs() > c.max_rel_diff {
                c.max_rel_diff = diff / e.abs();
                c.max_rel_at = i;
            }
            let d = a as f64 - e as f64;
            err2 += d * d;
            ref2 += e as f64 * e as f64;
            a == e || diff <= tol.abs + tol.rel * e.abs()
        };
        if !ok {
            c.mismatches += 1;
            if c.first.len() < FIRST_SHOWN {
                c.first.push((i, a, e));
            }
        }
    }
    c.nmse = if ref2 > 0.0 {
        err2 / ref2
    } else if err2 > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    c
}

/// Panics with a [`Comparison`] report unless every value is within `tol`.
#[track_caller]
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], shape: &[usize], tol: Tolerance) {
    let c = compare(actual, expected, shape, tol);
    if !c.passed() {
        panic!("{what} {shape:?}: {c}");
    }
}

/// Flat index to a multi-index of `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (slot, &dim) in idx.iter_mut().zip(shape).rev() {
        if dim > 0 {
            *slot = i % dim;
            i /= dim;
        }
    }
    idx
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |i| unravel(i, &self.shape);
        write!(
            f,
            "{} of {} values differ (|diff| > {:e} + {:e}·|expected|); max abs diff {:e} at {:?} \
             (actual {}, expected {}); max rel diff {:e} at {:?}; NMSE {:e}",
            self.mismatches,
            self.len,
            self.tolerance.abs,
            self.tolerance.rel,
            self.max_abs_diff,
            at(self.max_abs_at),
            self.actual_at_max.0,
            self.actual_at_max.1,
            self.max_rel_diff,
            at(self.max_rel_at),
            self.nmse,
        )?;
        if !self.first.is_empty() {
            write!(f, "; first:")?;
            for &(i, a, e) in &self.first {
                write!(f, " {:?} {a} vs {e},", at(i))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_where_and_by_how_much() {
        let want = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let got = [0.0, 1.5, 2.0, f32::NAN, 4.0, 5.0];
        let c = compare(&got, &want, &[2, 3], Tolerance::strict());
        assert_eq!(c.mismatches, 2);
        assert_eq!(c.first.len(), 2);
        assert_eq!(c.first[0].0, 1);
        assert_eq!(c.max_abs_diff, 0.5);
        let msg = c.to_string();
        assert!(msg.starts_with("2 of 6 values differ"), "{msg}");
        assert!(msg.contains("at [0, 1]"), "{msg}");
        assert!(msg.contains("[1, 0] NaN vs 3"), "{msg}");
    }

    #[test]
    fn nan_matches_nan_and_exact_means_equal() {
        let v = [f32::NAN, f32::INFINITY, -0.0, 1.0];
        let w = [f32::NAN, f32::INFINITY, 0.0, 1.0];
        assert!(compare(&v, &w, &[4], Tolerance::exact()).passed());
        let c = compare(&[1.0], &[1.0 + f32::EPSILON], &[1], Tolerance::exact());
        assert_eq!(c.mismatches, 1);
    }

    #[test]
    #[should_panic(expected = "demo [3]: 1 of 3 values differ")]
    fn assert_close_panics_with_the_report() {
        assert_close(
            "demo",
            &[1.0, 2.0, 3.0],
            &[1.0, 2.0, 4.0],
            &[3],
            Tolerance::strict(),
        );
    }
}
