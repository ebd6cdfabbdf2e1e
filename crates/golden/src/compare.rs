//! Comparing outputs with goldens: where, and by how much.
//!
//! The tolerances are the ones of /work/shared/docs/numerics.md (fp32 path against the fp32
//! reference). A failure names the tensor, the place (row/token and column) of the largest
//! difference, its size, how many values are over, the lowest cosine and the first few
//! offenders, so that a failing test says what to look at.

use std::fmt;

/// How close is close enough. Named presets; [`Tolerance::new`] for others.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub name: &'static str,
    /// Largest allowed |actual - expected| per value (times the scale, see `scale_by_rms`).
    pub max_abs: f32,
    /// Lowest allowed cosine per row (vector), when checked.
    pub min_cosine: Option<f64>,
    /// Multiply `max_abs` by max(1, rms(expected)): for tensors whose magnitude grows (hidden
    /// states, raw pooled vectors).
    pub scale_by_rms: bool,
}

impl Tolerance {
    /// Bit-for-bit (-0.0 == 0.0).
    pub const EXACT: Tolerance = Tolerance {
        name: "EXACT",
        max_abs: 0.0,
        min_cosine: None,
        scale_by_rms: false,
    };
    /// Final (normalized) embeddings: max |diff| <= 1e-5 per component, cosine >= 0.99999.
    pub const EMBEDDING: Tolerance = Tolerance {
        name: "EMBEDDING",
        max_abs: 1e-5,
        min_cosine: Some(0.99999),
        scale_by_rms: false,
    };
    /// Pooled vectors before Normalize (or the output of a model without it): as EMBEDDING, with
    /// the absolute bound scaled by the vectors' rms when it exceeds 1.
    pub const POOLED: Tolerance = Tolerance {
        name: "POOLED",
        max_abs: 1e-5,
        min_cosine: Some(0.99999),
        scale_by_rms: true,
    };
    /// Hidden states per layer: max |diff| <= 1e-4 scaled by the layer's rms where it exceeds 1.
    pub const HIDDEN: Tolerance = Tolerance {
        name: "HIDDEN",
        max_abs: 1e-4,
        min_cosine: None,
        scale_by_rms: true,
    };
    /// The same text alone and inside a batch (any composition, any thread count): 1e-6.
    pub const BATCH_INVARIANCE: Tolerance = Tolerance {
        name: "BATCH_INVARIANCE",
        max_abs: 1e-6,
        min_cosine: None,
        scale_by_rms: false,
    };
    /// Reduced precision (f16/bf16/int8 weights) is judged by cosine per text only; this is the
    /// floor, report min and mean (the [`Report`] has both).
    pub const REDUCED_PRECISION: Tolerance = Tolerance {
        name: "REDUCED_PRECISION",
        max_abs: f32::INFINITY,
        min_cosine: Some(0.999),
        scale_by_rms: false,
    };

    /// A named tolerance of one's own.
    pub const fn new(name: &'static str, max_abs: f32, min_cosine: Option<f64>) -> Tolerance {
        Tolerance {
            name,
            max_abs,
            min_cosine,
            scale_by_rms: false,
        }
    }
}

/// What a comparison measured (also inside a [`Mismatch`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub name: String,
    pub tolerance: Tolerance,
    pub rows: usize,
    pub cols: usize,
    /// The bound actually applied: `max_abs` times `scale`.
    pub allowed_abs: f32,
    pub scale: f32,
    pub max_abs_diff: f32,
    /// Flat index of the largest difference (NaN counts as infinite).
    pub max_index: usize,
    /// How many values are over `allowed_abs`.
    pub over: usize,
    /// Lowest cosine over the rows and its row (when the tolerance checks cosine).
    pub min_cosine: Option<(f64, usize)>,
    pub mean_cosine: Option<f64>,
    /// NMSE = mse(actual, expected) / mse(expected, 0).
    pub nmse: f64,
}

impl Report {
    /// (row, col) of the largest difference.
    pub fn max_at(&self) -> (usize, usize) {
        (
            self.max_index / self.cols.max(1),
            self.max_index % self.cols.max(1),
        )
    }
}

/// A failed comparison: `Display` (and `Debug`, so `unwrap()` prints it) says where and by how
/// much.
#[derive(Clone, PartialEq)]
pub struct Mismatch {
    /// None when the shapes did not even match.
    pub report: Option<Box<Report>>,
    pub message: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Mismatch {}

/// Compares one vector (or any flat tensor): positions are reported as flat indices, the cosine
/// is over the whole.
pub fn compare(
    name: &str,
    actual: &[f32],
    expected: &[f32],
    tol: Tolerance,
) -> Result<Report, Mismatch> {
    compare_rows(
        name,
        actual,
        expected,
        expected.len().max(1),
        |_| String::new(),
        tol,
    )
}

/// Compares a row-major [rows, cols] matrix; `axis` names its rows in messages ("row" for
/// sentence vectors, "token" for hidden states). The cosine is per row.
pub fn compare_matrix(
    name: &str,
    actual: &[f32],
    expected: &[f32],
    cols: usize,
    axis: &str,
    tol: Tolerance,
) -> Result<Report, Mismatch> {
    compare_rows(name, actual, expected, cols, |r| format!("{axis} {r}"), tol)
}

/// [`compare_matrix`] with a label per row (e.g. `row 17 (ko-q1.1, query)`).
pub fn compare_rows(
    name: &str,
    actual: &[f32],
    expected: &[f32],
    cols: usize,
    label: impl Fn(usize) -> String,
    tol: Tolerance,
) -> Result<Report, Mismatch> {
    if actual.len() != expected.len() || cols == 0 || expected.len() % cols != 0 {
        return Err(Mismatch {
            report: None,
            message: format!(
                "{name}: shape mismatch: {} actual values, {} expected (rows of {cols})",
                actual.len(),
                expected.len()
            ),
        });
    }
    let rows = expected.len() / cols;
    let rms = (expected
        .iter()
        .map(|&e| (e as f64) * (e as f64))
        .sum::<f64>()
        / expected.len().max(1) as f64)
        .sqrt();
    let scale = if tol.scale_by_rms {
        rms.max(1.0) as f32
    } else {
        1.0
    };
    let allowed = tol.max_abs * scale;

    let diff_at = |i: usize| -> f32 {
        let (a, e) = (actual[i], expected[i]);
        if a.is_nan() && e.is_nan() {
            0.0
        } else if a.is_nan() || e.is_nan() {
            f32::INFINITY
        } else if a == e {
            0.0 // also inf == inf
        } else {
            (a - e).abs()
        }
    };
    let (mut max_diff, mut max_index, mut over) = (0.0f32, 0usize, 0usize);
    let mut first_over = Vec::new();
    let (mut err2, mut ref2) = (0.0f64, 0.0f64);
    for (i, &e) in expected.iter().enumerate() {
        let d = diff_at(i);
        if d > max_diff || (d.is_nan() && !max_diff.is_nan()) {
            max_diff = d;
            max_index = i;
        }
        if d > allowed {
            over += 1;
            if first_over.len() < 5 {
                first_over.push(i);
            }
        }
        err2 += (d as f64) * (d as f64);
        ref2 += (e as f64) * (e as f64);
    }
    let nmse = if ref2 > 0.0 {
        err2 / ref2
    } else if err2 > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };

    let (mut min_cos, mut sum_cos) = ((f64::INFINITY, 0usize), 0.0);
    let mut cos_fail = false;
    if let Some(need) = tol.min_cosine {
        for r in 0..rows {
            let c = cosine(
                &actual[r * cols..(r + 1) * cols],
                &expected[r * cols..(r + 1) * cols],
            );
            sum_cos += c;
            if c < min_cos.0 || c.is_nan() {
                min_cos = (c, r);
            }
        }
        // NaN fails too.
        cos_fail = min_cos.0.is_nan() || min_cos.0 < need;
    }
    let report = Report {
        name: name.to_string(),
        tolerance: tol,
        rows,
        cols,
        allowed_abs: allowed,
        scale,
        max_abs_diff: max_diff,
        max_index,
        over,
        min_cosine: tol.min_cosine.map(|_| min_cos),
        mean_cosine: tol.min_cosine.map(|_| sum_cos / rows.max(1) as f64),
        nmse,
    };
    if over == 0 && !cos_fail {
        return Ok(report);
    }

    let place = |i: usize| -> String {
        let (r, c) = (i / cols, i % cols);
        if rows == 1 {
            format!("index {c}")
        } else {
            let l = label(r);
            if l.is_empty() {
                format!("row {r}, col {c}")
            } else {
                format!("{l}, col {c}")
            }
        }
    };
    let mut msg = format!(
        "{name}: {over} of {} values over tolerance {} (max |diff| <= {allowed:.3e}{}); \
         max |diff| {max_diff:.3e} at {} (actual {:?}, expected {:?}); nmse {nmse:.3e}",
        expected.len(),
        tol.name,
        if scale != 1.0 {
            format!(" = {:.0e} x rms {scale:.3}", tol.max_abs)
        } else {
            String::new()
        },
        place(max_index),
        actual[max_index],
        expected[max_index],
    );
    if let (Some(need), Some(mean)) = (tol.min_cosine, report.mean_cosine) {
        let where_ = if rows == 1 {
            String::new()
        } else {
            format!(" at {}", row_name(&label, min_cos.1))
        };
        msg += &format!(
            "\n  cosine: min {:.7}{where_} (needs >= {need}), mean {mean:.7}{}",
            min_cos.0,
            if cos_fail { " FAILED" } else { "" }
        );
    }
    if !first_over.is_empty() {
        msg += "\n  first over:";
        for &i in &first_over {
            msg += &format!(
                "\n    {}: actual {:?}, expected {:?}, |diff| {:.3e}",
                place(i),
                actual[i],
                expected[i],
                diff_at(i)
            );
        }
    }
    Err(Mismatch {
        report: Some(Box::new(report)),
        message: msg,
    })
}

fn row_name(label: &impl Fn(usize) -> String, r: usize) -> String {
    let l = label(r);
    if l.is_empty() {
        format!("row {r}")
    } else {
        l
    }
}

/// Cosine in f64; two zero vectors are identical (1), one zero vector is orthogonal (0).
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 && bb == 0.0 {
        1.0
    } else if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Token ids must be identical: reports the first differing position with some context.
pub fn compare_ids(name: &str, actual: &[u32], expected: &[u32]) -> Result<(), Mismatch> {
    if actual == expected {
        return Ok(());
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    let window = |v: &[u32]| -> String {
        let (a, b) = (first.saturating_sub(3), (first + 4).min(v.len()));
        format!(
            "{}{:?}{}",
            if a > 0 { "... " } else { "" },
            &v[a..b],
            if b < v.len() { " ..." } else { "" }
        )
    };
    Err(Mismatch {
        report: None,
        message: format!(
            "{name}: token ids differ at position {first} (actual {} tokens, expected {}): \
             actual {} vs expected {}",
            actual.len(),
            expected.len(),
            window(actual),
            window(expected)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919) % 113) as f32 / 113.0 - 0.5)
            .collect()
    }

    #[test]
    fn equal_inputs_pass_with_a_report() {
        let e = ramp(40);
        let r = compare_matrix("x", &e, &e, 8, "row", Tolerance::EMBEDDING).unwrap();
        assert_eq!(r.over, 0);
        assert_eq!(r.max_abs_diff, 0.0);
        assert!((r.min_cosine.unwrap().0 - 1.0).abs() < 1e-12);
        assert_eq!(r.rows, 5);
    }

    #[test]
    fn detects_a_planted_difference_and_reports_its_place() {
        let e = ramp(40);
        let mut a = e.clone();
        a[27] += 3e-5; // row 3, col 3 of 8 columns
        let m =
            compare_matrix("tiny embeddings", &a, &e, 8, "row", Tolerance::EMBEDDING).unwrap_err();
        let rep = m.report.clone().unwrap();
        assert_eq!(rep.max_index, 27);
        assert_eq!(rep.max_at(), (3, 3));
        assert_eq!(rep.over, 1);
        assert!(
            (rep.max_abs_diff - 3e-5).abs() < 1e-6,
            "{}",
            rep.max_abs_diff
        );
        let text = m.to_string();
        assert!(text.contains("tiny embeddings"), "{text}");
        assert!(text.contains("row 3, col 3"), "{text}");
        assert!(text.contains("1 of 40"), "{text}");
        assert!(text.contains("EMBEDDING"), "{text}");
        // Debug (what unwrap() prints) is the same message.
        assert_eq!(format!("{m:?}"), text);
    }

    #[test]
    fn under_tolerance_passes() {
        let e = ramp(16);
        let mut a = e.clone();
        a[5] += 5e-6;
        assert!(compare("v", &a, &e, Tolerance::EMBEDDING).is_ok());
        assert!(compare("v", &a, &e, Tolerance::EXACT).is_err());
    }

    #[test]
    fn low_cosine_fails_even_within_max_abs() {
        // Tiny vectors: every difference under 1e-5, direction very different.
        let e = vec![1e-6f32, 0.0, 0.0, 0.0];
        let a = vec![0.0f32, 1e-6, 0.0, 0.0];
        let m = compare("small", &a, &e, Tolerance::EMBEDDING).unwrap_err();
        assert!(m.to_string().contains("cosine: min 0.0000000"), "{m}");
        assert_eq!(m.report.unwrap().over, 0);
    }

    #[test]
    fn cosine_failure_names_the_row() {
        let e = ramp(32);
        let mut a = e.clone();
        for v in &mut a[16..24] {
            *v = -*v;
        }
        let m = compare_rows(
            "rows",
            &a,
            &e,
            8,
            |r| format!("row {r} (text-{r})"),
            Tolerance::REDUCED_PRECISION,
        )
        .unwrap_err();
        assert_eq!(m.report.as_ref().unwrap().min_cosine.unwrap().1, 2);
        assert!(m.to_string().contains("row 2 (text-2)"), "{m}");
    }

    #[test]
    fn nan_is_a_mismatch_and_wins_the_max() {
        let e = ramp(10);
        let mut a = e.clone();
        a[2] += 1.0;
        a[7] = f32::NAN;
        let m = compare("nan", &a, &e, Tolerance::HIDDEN).unwrap_err();
        let rep = m.report.unwrap();
        assert_eq!(rep.max_index, 7);
        assert_eq!(rep.over, 2);
        assert!(m.message.contains("index 7"), "{}", m.message);
    }

    #[test]
    fn hidden_tolerance_scales_with_rms() {
        let e: Vec<f32> = ramp(64).iter().map(|v| v * 100.0).collect();
        let mut a = e.clone();
        a[10] += 1e-3; // over 1e-4, under 1e-4 x rms (~29)
        let r = compare_matrix("h", &a, &e, 16, "token", Tolerance::HIDDEN).unwrap();
        assert!(r.scale > 20.0, "{}", r.scale);
        a[10] += 1.0;
        let m = compare_matrix("layer 3", &a, &e, 16, "token", Tolerance::HIDDEN).unwrap_err();
        assert!(m.to_string().contains("token 0, col 10"), "{m}");
    }

    #[test]
    fn shape_mismatch_is_reported() {
        let m = compare("s", &[1.0, 2.0], &[1.0, 2.0, 3.0], Tolerance::EXACT).unwrap_err();
        assert!(m.report.is_none());
        assert!(m.message.contains("shape mismatch"));
    }

    #[test]
    fn ids_report_the_first_difference() {
        assert!(compare_ids("ids", &[0, 5, 6, 2], &[0, 5, 6, 2]).is_ok());
        let m = compare_ids("ids", &[0, 5, 7, 2], &[0, 5, 6, 2]).unwrap_err();
        assert!(m.message.contains("position 2"), "{m}");
        let m = compare_ids("ids", &[0, 5], &[0, 5, 2]).unwrap_err();
        assert!(m.message.contains("position 2"), "{m}");
    }
}
