//! Row softmax against scalar f64 code, and its masked and special rows.

mod common;

use common::{Rng, BIG_COMBOS, SIZES};
use koembed_tensor::testing::{assert_close, Tolerance};
use koembed_tensor::{softmax_rows_inplace, Tensor};

fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape).unwrap()
}

/// exp(x - max) / sum, in f64, for rows with at least one finite entry.
fn reference(x: &[f32], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(n) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        out.extend(e.iter().map(|v| (v / sum) as f32));
    }
    out
}

/// expf is within an ulp; the sum and scale add well under one more.
const TOL: Tolerance = Tolerance {
    abs: 1e-9,
    rel: 4e-7,
};

fn shapes() -> Vec<(usize, usize)> {
    let mut s: Vec<(usize, usize)> = SIZES
        .iter()
        .flat_map(|&m| SIZES.iter().map(move |&n| (m, n)))
        .collect();
    s.extend(BIG_COMBOS.iter().map(|&(m, k, _)| (m, k)));
    s.push((12 * 130, 130));
    s
}

#[test]
fn matches_the_definition_on_odd_shapes() {
    let mut rng = Rng::new(20);
    for (m, n) in shapes() {
        for scale in [1.0f32, 30.0] {
            let x: Vec<f32> = rng.uniform_vec(m * n, -scale, scale);
            let want = reference(&x, n);
            let mut got = t(x, &[m, n]);
            softmax_rows_inplace(got.view_mut()).unwrap();
            let what = format!("softmax m={m} n={n} scale={scale}");
            assert_close(&what, got.as_slice(), &want, &[m, n], TOL);
            for r in 0..m {
                let s: f64 = got.row(r).iter().map(|&v| v as f64).sum();
                assert!((s - 1.0).abs() < 1e-6, "{what}: row {r} sums to {s}");
            }
        }
    }
}

#[test]
fn shift_invariant_and_no_overflow() {
    let x = vec![1e30f32, 1e30, -1e30, 88.0, 89.0, 1000.0];
    let mut got = t(x, &[2, 3]);
    softmax_rows_inplace(got.view_mut()).unwrap();
    assert_eq!(got.row(0), &[0.5, 0.5, 0.0]);
    let want = reference(&[0.0, 1.0, 912.0], 3);
    assert_close("big", got.row(1), &want, &[3], TOL);
}

#[test]
fn masked_entries_are_zero_and_do_not_disturb_the_rest() {
    let ninf = f32::NEG_INFINITY;
    let x = vec![0.5, ninf, -1.0, ninf, 2.0, ninf, ninf, ninf];
    let mut got = t(x, &[2, 4]);
    softmax_rows_inplace(got.view_mut()).unwrap();
    // Row 0 is softmax([0.5, -1]) at columns 0 and 2; row 1 has one live entry.
    let want_row0 = reference(&[0.5, -1.0], 2);
    assert_eq!(got.row(0)[1], 0.0);
    assert_eq!(got.row(0)[3], 0.0);
    assert_close(
        "masked row",
        &[got.row(0)[0], got.row(0)[2]],
        &want_row0,
        &[2],
        TOL,
    );
    assert_eq!(got.row(1)[0], 1.0);
    assert_eq!(&got.row(1)[1..], &[0.0, 0.0, 0.0]);
}

#[test]
fn an_all_masked_row_is_zeros_not_nan() {
    let ninf = f32::NEG_INFINITY;
    let x = vec![ninf, ninf, ninf, 1.0, 2.0, 3.0];
    let mut got = t(x, &[2, 3]);
    softmax_rows_inplace(got.view_mut()).unwrap();
    assert_eq!(got.row(0), &[0.0, 0.0, 0.0]);
    assert_close(
        "neighbour row",
        got.row(1),
        &reference(&[1.0, 2.0, 3.0], 3),
        &[3],
        TOL,
    );
}

#[test]
fn nan_and_plus_inf_rows_become_nan() {
    let x = vec![1.0, f32::NAN, 2.0, 1.0, f32::INFINITY, 2.0, 1.0, 1.0, 1.0];
    let mut got = t(x, &[3, 3]);
    softmax_rows_inplace(got.view_mut()).unwrap();
    assert!(got.row(0).iter().all(|v| v.is_nan()));
    assert!(got.row(1).iter().all(|v| v.is_nan()));
    let third = 1.0f32 / 3.0;
    assert_eq!(got.row(2), &[third, third, third]);
    // No finite entry at all: NaN still wins over the all-masked zeros.
    let ninf = f32::NEG_INFINITY;
    for row in [[f32::NAN; 3], [f32::NAN, ninf, ninf]] {
        let mut got = t(row.to_vec(), &[1, 3]);
        softmax_rows_inplace(got.view_mut()).unwrap();
        assert!(got.row(0).iter().all(|v| v.is_nan()), "{row:?}");
    }
}

#[test]
fn single_column_and_empty() {
    let mut x = t(vec![-5.0, 0.0, 7.0], &[3, 1]);
    softmax_rows_inplace(x.view_mut()).unwrap();
    assert_eq!(x.as_slice(), &[1.0, 1.0, 1.0]);
    softmax_rows_inplace(Tensor::zeros(&[0, 5]).view_mut()).unwrap();
    softmax_rows_inplace(Tensor::zeros(&[5, 0]).view_mut()).unwrap();
    let e = softmax_rows_inplace(Tensor::zeros(&[5]).view_mut()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "softmax_rows_inplace: `x` has shape [5], expected a 2-D [M, N]"
    );
}
