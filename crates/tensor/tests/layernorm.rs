//! LayerNorm, the residual add and the fused add + LayerNorm against scalar f64 code.

mod common;

use common::{bits, Rng, BIG_COMBOS, SIZES};
use koembed_tensor::testing::{assert_close, Tolerance};
use koembed_tensor::{add_inplace, add_layernorm_inplace, layernorm_inplace, Tensor, TensorError};

fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape).unwrap()
}

/// The definition, row by row, in f64: (x - mean) / sqrt(var + eps) * gamma + beta.
fn reference(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let n = gamma.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(n) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        for j in 0..n {
            let norm = (row[j] as f64 - mean) / (var + eps as f64).sqrt();
            out.push((norm * gamma[j] as f64 + beta[j] as f64) as f32);
        }
    }
    out
}

fn shapes() -> Vec<(usize, usize)> {
    let mut s: Vec<(usize, usize)> = SIZES
        .iter()
        .flat_map(|&m| SIZES.iter().map(move |&n| (m, n)))
        .collect();
    s.extend(BIG_COMBOS.iter().map(|&(m, _, n)| (m, n)));
    s.extend([(130, 384), (3, 1024)]);
    s
}

/// Within an f32 ulp or so of the f64 definition (the kernel rounds once; the reference divides
/// where the kernel multiplies by 1/sqrt).
const TOL: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-6,
};

#[test]
fn matches_the_definition_on_odd_shapes() {
    let mut rng = Rng::new(10);
    for (m, n) in shapes() {
        for eps in [1e-12, 1e-5] {
            let x = rng.uniform_vec(m * n, -3.0, 3.0);
            let gamma = rng.uniform_vec(n, 0.5, 1.5);
            let beta = rng.uniform_vec(n, -0.5, 0.5);
            let want = reference(&x, &gamma, &beta, eps);
            let mut got = t(x, &[m, n]);
            let (g, b) = (t(gamma, &[n]), t(beta, &[n]));
            layernorm_inplace(got.view_mut(), g.view(), b.view(), eps).unwrap();
            let what = format!("layernorm m={m} n={n} eps={eps:e}");
            assert_close(&what, got.as_slice(), &want, &[m, n], TOL);
        }
    }
}

#[test]
fn large_offset_with_tiny_eps() {
    // 1e4 + noise: one-pass f32 E[x²] - E[x]² would lose every digit (1e8 vs variance ~0.3).
    let mut rng = Rng::new(11);
    let (m, n) = (7, 384);
    for noise in [1.0f32, 0.01] {
        let x: Vec<f32> = (0..m * n)
            .map(|_| 1e4 + rng.uniform(-noise, noise))
            .collect();
        let gamma = rng.uniform_vec(n, 0.5, 1.5);
        let beta = rng.uniform_vec(n, -0.5, 0.5);
        let want = reference(&x, &gamma, &beta, 1e-12);
        let mut got = t(x, &[m, n]);
        let (g, b) = (t(gamma, &[n]), t(beta, &[n]));
        layernorm_inplace(got.view_mut(), g.view(), b.view(), 1e-12).unwrap();
        let what = format!("layernorm 1e4 + noise {noise}");
        assert_close(&what, got.as_slice(), &want, &[m, n], TOL);
        // Each row is normalised: mean ~0 and variance ~1 before gamma/beta.
        let mut unit = t(got.as_slice().to_vec(), &[m, n]);
        for (i, v) in unit.as_mut_slice().iter_mut().enumerate() {
            *v = (*v - b.as_slice()[i % n]) / g.as_slice()[i % n];
        }
        for r in 0..m {
            let row = unit.row(r);
            let mean: f64 = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var: f64 = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "row {r}: {mean} {var}"
            );
        }
    }
}

#[test]
fn constant_rows_give_beta() {
    let n = 17;
    let beta: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
    let (g, b) = (t(vec![2.0; n], &[n]), t(beta.clone(), &[n]));
    for value in [0.0f32, 1e4, -3.5, 1e-30] {
        let mut x = Tensor::full(&[3, n], value);
        layernorm_inplace(x.view_mut(), g.view(), b.view(), 1e-12).unwrap();
        for r in 0..3 {
            assert_eq!(x.row(r), &beta[..], "constant {value}");
        }
    }
    // N = 1: every row is constant.
    let mut x = t(vec![5.0, -2.0], &[2, 1]);
    layernorm_inplace(
        x.view_mut(),
        t(vec![3.0], &[1]).view(),
        t(vec![0.5], &[1]).view(),
        1e-12,
    )
    .unwrap();
    assert_eq!(x.as_slice(), &[0.5, 0.5]);
}

#[test]
fn fused_add_layernorm_equals_add_then_layernorm() {
    let mut rng = Rng::new(12);
    for (m, n) in shapes() {
        let x = rng.uniform_vec(m * n, -3.0, 3.0);
        let res = rng.uniform_vec(m * n, -3.0, 3.0);
        let gamma = rng.uniform_vec(n, 0.5, 1.5);
        let beta = rng.uniform_vec(n, -0.5, 0.5);
        let (res, g, b) = (t(res, &[m, n]), t(gamma, &[n]), t(beta, &[n]));

        let mut two_step = t(x.clone(), &[m, n]);
        add_inplace(two_step.view_mut(), res.view()).unwrap();
        let sum = two_step.as_slice().to_vec();
        layernorm_inplace(two_step.view_mut(), g.view(), b.view(), 1e-12).unwrap();

        let mut fused = t(x, &[m, n]);
        add_layernorm_inplace(fused.view_mut(), res.view(), g.view(), b.view(), 1e-12).unwrap();
        assert_eq!(
            bits(fused.as_slice()),
            bits(two_step.as_slice()),
            "m={m} n={n}"
        );

        let want = reference(&sum, g.as_slice(), b.as_slice(), 1e-12);
        assert_close("add_layernorm", fused.as_slice(), &want, &[m, n], TOL);
    }
}

#[test]
fn add_is_exact_on_integers() {
    let mut rng = Rng::new(13);
    let a = rng.int_vec(3 * 7 * 2, 1000);
    let b = rng.int_vec(3 * 7 * 2, 1000);
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let mut a = t(a, &[3, 7, 2]);
    add_inplace(a.view_mut(), t(b, &[3, 7, 2]).view()).unwrap();
    assert_close("add", a.as_slice(), &want, &[3, 7, 2], Tolerance::exact());
}

#[test]
fn errors_name_the_operation_and_write_nothing() {
    let mut x = Tensor::full(&[2, 4], f32::NAN);
    let (g, b) = (Tensor::zeros(&[4]), Tensor::zeros(&[4]));
    let e =
        layernorm_inplace(x.view_mut(), Tensor::zeros(&[3]).view(), b.view(), 1e-12).unwrap_err();
    assert_eq!(
        e.to_string(),
        "layernorm_inplace: `gamma` has shape [3], expected [N] = [4]"
    );
    let e = layernorm_inplace(x.view_mut(), g.view(), b.view(), -1.0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "layernorm_inplace: eps must be finite and >= 0, got -1"
    );
    assert!(layernorm_inplace(x.view_mut(), g.view(), b.view(), f32::NAN).is_err());
    let e =
        layernorm_inplace(Tensor::zeros(&[8]).view_mut(), g.view(), b.view(), 1e-5).unwrap_err();
    assert!(matches!(e, TensorError::ShapeMismatch { operand: "x", .. }));

    let e = add_layernorm_inplace(
        x.view_mut(),
        Tensor::zeros(&[4, 2]).view(),
        g.view(),
        b.view(),
        1e-12,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "add_layernorm_inplace: `residual` has shape [4, 2], expected [M, N] = [2, 4]"
    );
    let e = add_inplace(x.view_mut(), Tensor::zeros(&[8]).view()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "add_inplace: `b` has shape [8], expected [2, 4], the shape of `a`"
    );
    assert!(x.as_slice().iter().all(|v| v.is_nan()));

    // Empty rows and empty matrices are fine.
    let mut empty = Tensor::zeros(&[0, 4]);
    layernorm_inplace(empty.view_mut(), g.view(), b.view(), 1e-12).unwrap();
    let mut no_cols = Tensor::zeros(&[3, 0]);
    let z = Tensor::zeros(&[0]);
    layernorm_inplace(no_cols.view_mut(), z.view(), z.view(), 1e-12).unwrap();
}
