//! The matmuls against their naive twins and against plain loops written here.

mod common;

use common::{bits, Rng, BIG_COMBOS, SIZES};
use koembed_tensor::testing::{assert_close, Tolerance};
use koembed_tensor::{matmul_bias_nt, matmul_nn, matmul_nt, naive, Tensor, TensorError};

fn all_shapes() -> Vec<(usize, usize, usize)> {
    let mut shapes = Vec::new();
    for &m in &SIZES {
        for &k in &SIZES {
            for &n in &SIZES {
                shapes.push((m, k, n));
            }
        }
    }
    shapes.extend(BIG_COMBOS);
    shapes
}

fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape).unwrap()
}

/// out[M,N] = x[M,K]·w[N,K]ᵀ + b[N] by the definition, in exact integer arithmetic.
fn int_reference_nt(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0i64;
            for l in 0..k {
                acc += x[i * k + l] as i64 * w[j * k + l] as i64;
            }
            out[i * n + j] = acc as f32 + b.map_or(0.0, |b| b[j]);
        }
    }
    out
}

#[test]
fn integer_inputs_are_exact_in_fast_and_naive_paths() {
    let mut rng = Rng::new(1);
    for (m, k, n) in all_shapes() {
        let x = rng.int_vec(m * k, 4);
        let w = rng.int_vec(n * k, 4);
        let b = rng.int_vec(n, 100);
        let want = int_reference_nt(&x, &w, Some(&b), m, k, n);
        let (x, w, b) = (t(x, &[m, k]), t(w, &[n, k]), t(b, &[n]));

        // NaN-filled outputs prove the kernels never read them.
        let mut fast = Tensor::full(&[m, n], f32::NAN);
        matmul_bias_nt(fast.view_mut(), x.view(), w.view(), b.view()).unwrap();
        let mut slow = Tensor::full(&[m, n], f32::NAN);
        naive::matmul_bias_nt(slow.view_mut(), x.view(), w.view(), b.view()).unwrap();
        let what = format!("matmul_bias_nt m={m} k={k} n={n}");
        assert_close(&what, fast.as_slice(), &want, &[m, n], Tolerance::exact());
        assert_close(&what, slow.as_slice(), &want, &[m, n], Tolerance::exact());

        // matmul_nt: the same without the bias.
        let want_nt = int_reference_nt(x.as_slice(), w.as_slice(), None, m, k, n);
        let mut fast = Tensor::full(&[m, n], f32::NAN);
        matmul_nt(fast.view_mut(), x.view(), w.view()).unwrap();
        let mut slow = Tensor::full(&[m, n], f32::NAN);
        naive::matmul_nt(slow.view_mut(), x.view(), w.view()).unwrap();
        let what = format!("matmul_nt m={m} k={k} n={n}");
        assert_close(
            &what,
            fast.as_slice(),
            &want_nt,
            &[m, n],
            Tolerance::exact(),
        );
        assert_close(
            &what,
            slow.as_slice(),
            &want_nt,
            &[m, n],
            Tolerance::exact(),
        );

        // matmul_nn with y = wᵀ laid out as [K, N]: the same products.
        let mut y = vec![0.0; k * n];
        for j in 0..n {
            for l in 0..k {
                y[l * n + j] = w.as_slice()[j * k + l];
            }
        }
        let y = t(y, &[k, n]);
        let mut fast = Tensor::full(&[m, n], f32::NAN);
        matmul_nn(fast.view_mut(), x.view(), y.view()).unwrap();
        let mut slow = Tensor::full(&[m, n], f32::NAN);
        naive::matmul_nn(slow.view_mut(), x.view(), y.view()).unwrap();
        let what = format!("matmul_nn m={m} k={k} n={n}");
        assert_close(
            &what,
            fast.as_slice(),
            &want_nt,
            &[m, n],
            Tolerance::exact(),
        );
        assert_close(
            &what,
            slow.as_slice(),
            &want_nt,
            &[m, n],
            Tolerance::exact(),
        );
    }
}

/// The worst-case rounding error of an f32 dot product of length k plus one addition, in any
/// summation order, given a bound on sum(|x_l * w_l|) + |bias|: (k + 2)·2^-24·sum.
fn dot_error_bound(k: usize, abs_sum: f32) -> Tolerance {
    Tolerance {
        abs: (k + 2) as f32 * f32::EPSILON / 2.0 * abs_sum,
        rel: 0.0,
    }
}

#[test]
fn float_inputs_match_the_naive_twin() {
    let mut rng = Rng::new(2);
    for (m, k, n) in all_shapes()
        .into_iter()
        .chain([(16, 384, 1536), (33, 1536, 384)])
    {
        let x = t(rng.uniform_vec(m * k, -1.0, 1.0), &[m, k]);
        let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
        let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
        let mut fast = Tensor::full(&[m, n], f32::NAN);
        matmul_bias_nt(fast.view_mut(), x.view(), w.view(), b.view()).unwrap();
        let mut slow = Tensor::full(&[m, n], f32::NAN);
        naive::matmul_bias_nt(slow.view_mut(), x.view(), w.view(), b.view()).unwrap();
        let what = format!("matmul_bias_nt m={m} k={k} n={n}");
        let tol = dot_error_bound(k, 1.0 * 0.1 * k as f32 + 1.0);
        assert_close(&what, fast.as_slice(), slow.as_slice(), &[m, n], tol);

        let y = t(rng.uniform_vec(k * n, -1.0, 1.0), &[k, n]);
        let mut fast = Tensor::full(&[m, n], f32::NAN);
        matmul_nn(fast.view_mut(), x.view(), y.view()).unwrap();
        let mut slow = Tensor::full(&[m, n], f32::NAN);
        naive::matmul_nn(slow.view_mut(), x.view(), y.view()).unwrap();
        let what = format!("matmul_nn m={m} k={k} n={n}");
        let tol = dot_error_bound(k, k as f32);
        assert_close(&what, fast.as_slice(), slow.as_slice(), &[m, n], tol);
    }
}

#[test]
fn row_results_do_not_depend_on_the_batch() {
    // K = 384 > kc = 256 (two K blocks), M > mc = 64 (several M blocks), N large enough that
    // matrixmultiply uses its threads: each row must still equal that row computed alone.
    let (m, k, n) = (130, 384, 1536);
    let mut rng = Rng::new(3);
    let x = t(rng.uniform_vec(m * k, -2.0, 2.0), &[m, k]);
    let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
    let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
    let mut full = Tensor::zeros(&[m, n]);
    matmul_bias_nt(full.view_mut(), x.view(), w.view(), b.view()).unwrap();
    for rows in [0..1, 5..6, 64..65, 129..130, 3..70, 60..130] {
        let len = rows.len();
        let mut part = Tensor::full(&[len, n], f32::NAN);
        let xs = x.view().slice_rows(rows.clone());
        matmul_bias_nt(part.view_mut(), xs, w.view(), b.view()).unwrap();
        let want = full.view().slice_rows(rows.clone());
        assert_eq!(
            bits(part.as_slice()),
            bits(want.as_slice()),
            "rows {rows:?}"
        );
    }
}

#[test]
fn empty_dimensions() {
    // K = 0: out = bias. M = 0 or N = 0: nothing to do.
    let x = Tensor::zeros(&[3, 0]);
    let w = Tensor::zeros(&[2, 0]);
    let b = t(vec![1.5, -2.0], &[2]);
    let mut out = Tensor::full(&[3, 2], f32::NAN);
    matmul_bias_nt(out.view_mut(), x.view(), w.view(), b.view()).unwrap();
    assert_eq!(out.as_slice(), &[1.5, -2.0, 1.5, -2.0, 1.5, -2.0]);
    let mut out = Tensor::full(&[3, 2], f32::NAN);
    naive::matmul_bias_nt(out.view_mut(), x.view(), w.view(), b.view()).unwrap();
    assert_eq!(out.as_slice(), &[1.5, -2.0, 1.5, -2.0, 1.5, -2.0]);
    let mut out = Tensor::full(&[3, 2], f32::NAN);
    matmul_nt(out.view_mut(), x.view(), w.view()).unwrap();
    assert_eq!(out.as_slice(), &[0.0; 6]);

    let x = Tensor::zeros(&[0, 4]);
    let w = Tensor::zeros(&[2, 4]);
    let mut out = Tensor::zeros(&[0, 2]);
    matmul_bias_nt(out.view_mut(), x.view(), w.view(), b.view()).unwrap();
    let y = Tensor::zeros(&[4, 0]);
    let mut out = Tensor::zeros(&[0, 0]);
    matmul_nn(out.view_mut(), x.view(), y.view()).unwrap();
}

#[test]
fn shape_errors_name_the_operation_and_the_shapes() {
    let x = Tensor::zeros(&[16, 384]);
    let w = Tensor::zeros(&[1536, 385]);
    let b = Tensor::zeros(&[1536]);
    let mut out = Tensor::full(&[16, 1536], f32::NAN);
    let e = matmul_bias_nt(out.view_mut(), x.view(), w.view(), b.view()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul_bias_nt: `w` has shape [1536, 385], expected [N, K] = [1536, 384]"
    );
    // Nothing was written.
    assert!(out.as_slice().iter().all(|v| v.is_nan()));

    let w = Tensor::zeros(&[1536, 384]);
    let e = matmul_bias_nt(
        out.view_mut(),
        x.view(),
        w.view(),
        Tensor::zeros(&[384]).view(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul_bias_nt: `bias` has shape [384], expected [N] = [1536]"
    );
    let e = naive::matmul_bias_nt(
        out.view_mut(),
        x.view(),
        w.view(),
        Tensor::zeros(&[384]).view(),
    )
    .unwrap_err();
    assert!(matches!(
        e,
        TensorError::ShapeMismatch {
            operand: "bias",
            ..
        }
    ));

    let mut small = Tensor::zeros(&[16, 1535]);
    let e = matmul_bias_nt(small.view_mut(), x.view(), w.view(), b.view()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul_bias_nt: `out` has shape [16, 1535], expected [M, N] = [16, 1536]"
    );

    let e = matmul_nt(
        out.view_mut(),
        Tensor::zeros(&[16, 384, 1]).view(),
        w.view(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul_nt: `a` has shape [16, 384, 1], expected a 2-D [M, K]"
    );

    let e = matmul_nn(out.view_mut(), x.view(), Tensor::zeros(&[383, 1536]).view()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul_nn: `b` has shape [383, 1536], expected [K, N] = [384, 1536]"
    );
}
