//! The int8 GEMM, every kernel this CPU supports, against its scalar twin (bit for bit: the sums
//! are exact integers and every kernel runs the one documented float epilogue), against the f32
//! product (the quantization error), and for determinism across M, batch and thread count.

mod common;

use common::{bits, int8_kernels, with_threads, Rng};
use koembed_tensor::gemm::int8::{naive, MAX_K};
use koembed_tensor::{
    matmul_quantized_bias, matmul_quantized_bias_residual, Epilogue, Int8Kernel, QuantizedMatrix,
    Tensor, TensorError, TensorViewMut,
};

const SIZES: [usize; 10] = [1, 3, 7, 16, 17, 64, 65, 127, 384, 1025];

fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape).unwrap()
}

/// (M, K, N) from SIZES³ with at most 1M multiply-adds (the scalar twin is slow in the test
/// profile), plus a deterministic sample of larger ones, plus every M from 8 to 13 (row groups
/// of 4 taken 2, 3 or 4 to a pass over a panel, with a partial last group), plus multiples of
/// 16 rows and more with 1 to 4 panels at a time, K past a 64-k chunk and past a K block (the
/// AMX kernel's 16-row tiles, panels taken 4 at a time, and the rows and k it leaves to VNNI).
fn shapes() -> Vec<(usize, usize, usize)> {
    let mut v: Vec<(usize, usize, usize)> = (8..=13).map(|m| (m, 1025, 33)).collect();
    for m in [16, 20, 32, 48, 64, 68] {
        for k in [64, 200, 1100] {
            v.push((m, k, 81));
        }
    }
    let mut i = 0;
    for &m in &SIZES {
        for &k in &SIZES {
            for &n in &SIZES {
                i += 1;
                let work = m * k * n;
                if work <= 1_000_000 || (work <= 20_000_000 && i % 13 == 0) {
                    v.push((m, k, n));
                }
            }
        }
    }
    v
}

fn quantized_call(kernel: Int8Kernel, x: &Tensor, w: &Tensor, b: &Tensor, epi: Epilogue) -> Tensor {
    let q = QuantizedMatrix::quantize_b_with_kernel(w.view(), kernel).unwrap();
    let mut out = Tensor::full(&[x.rows(), w.rows()], f32::NAN);
    matmul_quantized_bias(out.view_mut(), x.view(), &q, b.view(), epi).unwrap();
    out
}

fn naive_call(x: &Tensor, w: &Tensor, b: &Tensor, epi: Epilogue) -> Tensor {
    let mut out = Tensor::full(&[x.rows(), w.rows()], f32::NAN);
    naive::matmul_quantized_bias(out.view_mut(), x.view(), w.view(), b.view(), epi).unwrap();
    out
}

fn naive_residual_call(x: &Tensor, w: &Tensor, b: &Tensor, r: &Tensor) -> Tensor {
    let mut out = Tensor::full(&[x.rows(), w.rows()], f32::NAN);
    naive::matmul_quantized_bias_residual(out.view_mut(), x.view(), w.view(), b.view(), r.view())
        .unwrap();
    out
}

#[test]
fn every_int8_kernel_is_listed() {
    let ks = Int8Kernel::supported();
    println!("supported int8 kernels: {ks:?}");
    assert_eq!(ks.last(), Some(&Int8Kernel::Portable));
    assert_eq!(Int8Kernel::detect(), ks[0]);
    for k in [Int8Kernel::Avx512Vnni, Int8Kernel::Avx2] {
        if !k.is_supported() {
            let w = Tensor::zeros(&[4, 4]);
            assert!(QuantizedMatrix::quantize_b_with_kernel(w.view(), k).is_err());
        }
    }
}

#[test]
fn every_kernel_equals_the_naive_twin_bit_for_bit() {
    let mut rng = Rng::new(31);
    for (m, k, n) in shapes() {
        // Mixed magnitudes: some rows and columns far smaller than others.
        let x_scale = rng.uniform(0.01, 3.0);
        let x = t(rng.uniform_vec(m * k, -x_scale, x_scale), &[m, k]);
        let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
        let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
        let epi = if (m + k + n) % 2 == 0 {
            Epilogue::Gelu
        } else {
            Epilogue::None
        };
        let want = naive_call(&x, &w, &b, epi);
        // One thread takes all panels in one task (runs of panels at a time), two split them.
        for (kernel, threads) in int8_kernels().into_iter().flat_map(|k| [(k, 1), (k, 2)]) {
            let got = with_threads(threads, || quantized_call(kernel, &x, &w, &b, epi));
            assert_eq!(
                bits(got.as_slice()),
                bits(want.as_slice()),
                "{kernel:?} {epi:?} m={m} k={k} n={n}, {threads} threads"
            );
        }
    }
}

#[test]
fn residual_equals_the_naive_twin_bit_for_bit() {
    let mut rng = Rng::new(32);
    for (m, k, n) in [
        (1, 1, 1),
        (7, 65, 17),
        (17, 384, 65),
        (65, 17, 384),
        (130, 1025, 7),
    ] {
        let x = t(rng.uniform_vec(m * k, -1.0, 1.0), &[m, k]);
        let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
        let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
        let r = t(rng.uniform_vec(m * n, -3.0, 3.0), &[m, n]);
        let want = naive_residual_call(&x, &w, &b, &r);
        for kernel in int8_kernels() {
            let q = QuantizedMatrix::quantize_b_with_kernel(w.view(), kernel).unwrap();
            let mut got = Tensor::full(&[m, n], f32::NAN);
            matmul_quantized_bias_residual(got.view_mut(), x.view(), &q, b.view(), r.view())
                .unwrap();
            assert_eq!(
                bits(got.as_slice()),
                bits(want.as_slice()),
                "{kernel:?} m={m} k={k} n={n}"
            );
            // fl(fl(x·wᵀ + b) + r): the plain result plus the residual.
            let plain = quantized_call(kernel, &x, &w, &b, Epilogue::None);
            let sum: Vec<f32> = plain
                .as_slice()
                .iter()
                .zip(r.as_slice())
                .map(|(a, b)| a + b)
                .collect();
            assert_eq!(
                bits(got.as_slice()),
                bits(&sum),
                "{kernel:?} m={m} k={k} n={n}"
            );
        }
    }
}

/// All ±127 after quantization, K = 1025: a kernel feeding `vpmaddubsw` x + 128 (up to 255)
/// would saturate every i16 pair (2·255·127 > 32767); with |x| and the sign moved to w the
/// pairs peak at 2·127² = 32258 and the i32 sums reach ±127²·1025 exactly.
#[test]
fn extreme_values_do_not_saturate() {
    let (m, k, n) = (6, 1025, 19);
    let mut rng = Rng::new(33);
    // Rows of x: all +1, all -1, alternating, random signs; w likewise. |x| = |w| = 1 gives
    // scale 1/127 and q = ±127 everywhere.
    let signs = |rng: &mut Rng, r: usize, c: usize| -> Vec<f32> {
        (0..r * c)
            .map(|e| match (e / c) % 4 {
                0 => 1.0,
                1 => -1.0,
                2 => {
                    if e % 2 == 0 {
                        1.0
                    } else {
                        -1.0
                    }
                }
                _ => {
                    if rng.next_u64().is_multiple_of(2) {
                        1.0
                    } else {
                        -1.0
                    }
                }
            })
            .collect()
    };
    let x = t(signs(&mut rng, m, k), &[m, k]);
    let w = t(signs(&mut rng, n, k), &[n, k]);
    let b = Tensor::zeros(&[n]);
    let want = naive_call(&x, &w, &b, Epilogue::None);
    let s = 1.0f32 / 127.0;
    for kernel in int8_kernels() {
        let got = quantized_call(kernel, &x, &w, &b, Epilogue::None);
        assert_eq!(bits(got.as_slice()), bits(want.as_slice()), "{kernel:?}");
        for i in 0..m {
            for j in 0..n {
                let dot: i64 = (0..k)
                    .map(|l| (x.row(i)[l] * w.row(j)[l]) as i64 * 127 * 127)
                    .sum();
                let exact = dot as f32 * (s * s);
                assert_eq!(got.row(i)[j], exact, "{kernel:?} [{i}, {j}]");
            }
        }
        // Same signs everywhere: the largest sum, 127²·1025 = 16,532,225.
        assert_eq!(got.row(0)[0], (127 * 127 * 1025) as f32 * (s * s));
        assert!((got.row(0)[0] - 1025.0).abs() < 1e-3);
        assert!((got.row(1)[0] + 1025.0).abs() < 1e-3);
    }
}

/// Quantization error against the f32 (f64-accumulated) product: within the half-step bound
/// `e_x·Σ|w| + e_w·Σ|x| + K·e_x·e_w` (+ f32 rounding), and rows with cosine >= 0.999.
#[test]
fn error_against_the_f32_product_is_within_the_quantization_bound() {
    let mut rng = Rng::new(34);
    for (m, k, n) in [(17, 384, 129), (5, 1025, 64), (33, 65, 300)] {
        let x = t(rng.uniform_vec(m * k, -2.0, 2.0), &[m, k]);
        let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
        let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
        for kernel in int8_kernels() {
            let got = quantized_call(kernel, &x, &w, &b, Epilogue::None);
            for i in 0..m {
                let xr = x.row(i);
                let ex = xr.iter().fold(0.0f32, |a, v| a.max(v.abs())) as f64 / 127.0 / 2.0;
                let sum_x: f64 = xr.iter().map(|v| v.abs() as f64).sum();
                let (mut dot_ge, mut gg, mut ee) = (0.0f64, 0.0f64, 0.0f64);
                for j in 0..n {
                    let wr = w.row(j);
                    let ew = wr.iter().fold(0.0f32, |a, v| a.max(v.abs())) as f64 / 127.0 / 2.0;
                    let sum_w: f64 = wr.iter().map(|v| v.abs() as f64).sum();
                    let exact: f64 = xr
                        .iter()
                        .zip(wr)
                        .map(|(&a, &c)| a as f64 * c as f64)
                        .sum::<f64>()
                        + b.as_slice()[j] as f64;
                    let g = got.row(i)[j] as f64;
                    let bound =
                        ex * sum_w + ew * sum_x + k as f64 * ex * ew + 1e-5 * (1.0 + exact.abs());
                    assert!(
                        (g - exact).abs() <= bound,
                        "{kernel:?} m={m} k={k} n={n} [{i}, {j}]: {g} vs {exact}, bound {bound}"
                    );
                    dot_ge += g * exact;
                    gg += g * g;
                    ee += exact * exact;
                }
                let cosine = dot_ge / (gg.sqrt() * ee.sqrt());
                assert!(
                    cosine >= 0.999,
                    "{kernel:?} m={m} k={k} n={n} row {i}: cosine {cosine}"
                );
            }
        }
    }
}

#[test]
fn a_row_alone_equals_the_same_row_in_a_batch() {
    let (m, k, n) = (65, 1025, 389);
    let mut rng = Rng::new(35);
    // Rows of very different magnitudes: per-row scales must not leak between rows.
    let mut xs = Vec::with_capacity(m * k);
    for i in 0..m {
        let s = 0.01 + (i % 7) as f32;
        xs.extend(rng.uniform_vec(k, -s, s));
    }
    let x = t(xs, &[m, k]);
    let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
    let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
    for kernel in int8_kernels() {
        let q = QuantizedMatrix::quantize_b_with_kernel(w.view(), kernel).unwrap();
        for epi in [Epilogue::None, Epilogue::Gelu] {
            let mut full = Tensor::full(&[m, n], f32::NAN);
            matmul_quantized_bias(full.view_mut(), x.view(), &q, b.view(), epi).unwrap();
            for rows in [0..1, 5..6, 63..64, 64..65, 3..19, 1..65] {
                let mut part = Tensor::full(&[rows.len(), n], f32::NAN);
                let xs = x.view().slice_rows(rows.clone());
                matmul_quantized_bias(part.view_mut(), xs, &q, b.view(), epi).unwrap();
                let want = full.view().slice_rows(rows.clone());
                assert_eq!(
                    bits(part.as_slice()),
                    bits(want.as_slice()),
                    "{kernel:?} {epi:?} rows {rows:?}"
                );
            }
        }
    }
}

#[test]
fn one_two_and_three_threads_give_the_same_bits() {
    let mut rng = Rng::new(36);
    for (m, k, n) in [(16, 384, 1536), (130, 1536, 384), (3, 65, 1025)] {
        let x = t(rng.uniform_vec(m * k, -2.0, 2.0), &[m, k]);
        let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
        let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
        for kernel in int8_kernels() {
            let run = || bits(quantized_call(kernel, &x, &w, &b, Epilogue::Gelu).as_slice());
            let one = with_threads(1, run);
            assert_eq!(
                one,
                with_threads(2, run),
                "{kernel:?} m={m} k={k} n={n}: 1 vs 2"
            );
            assert_eq!(
                one,
                with_threads(3, run),
                "{kernel:?} m={m} k={k} n={n}: 1 vs 3"
            );
        }
    }
}

#[test]
fn zero_rows_empty_dimensions_and_non_finite_inputs() {
    for kernel in int8_kernels() {
        // K = 0: out = bias (after the epilogue); M = 0 and N = 0: nothing.
        let b = t(vec![1.5, -2.0], &[2]);
        let got = quantized_call(
            kernel,
            &Tensor::zeros(&[3, 0]),
            &Tensor::zeros(&[2, 0]),
            &b,
            Epilogue::None,
        );
        assert_eq!(got.as_slice(), &[1.5, -2.0, 1.5, -2.0, 1.5, -2.0]);
        let got = quantized_call(
            kernel,
            &Tensor::zeros(&[0, 4]),
            &Tensor::zeros(&[2, 4]),
            &b,
            Epilogue::Gelu,
        );
        assert!(got.is_empty());
        let got = quantized_call(
            kernel,
            &Tensor::zeros(&[3, 4]),
            &Tensor::zeros(&[0, 4]),
            &Tensor::zeros(&[0]),
            Epilogue::None,
        );
        assert!(got.is_empty());
        // An all-zero weight row (scale 0) and an all-zero activation row give the bias, no NaN.
        let x = t(vec![0.0, 0.0, 0.0, 1.0, -2.0, 3.0], &[2, 3]);
        let w = t(vec![0.0, 0.0, 0.0, 0.5, 0.25, -1.0], &[2, 3]);
        let got = quantized_call(kernel, &x, &w, &b, Epilogue::None);
        assert_eq!(got.row(0), &[1.5, -2.0]);
        assert_eq!(got.row(1)[0], 1.5);
        assert!((got.row(1)[1] - (-2.0 + 0.5 - 0.5 - 3.0)).abs() < 0.05);
        // A NaN or an infinity in an activation row makes that row NaN, and only that row.
        for bad in [f32::NAN, f32::INFINITY] {
            let x = t(vec![1.0, bad, 0.0, 1.0, -2.0, 3.0], &[2, 3]);
            let got = quantized_call(kernel, &x, &w, &b, Epilogue::Gelu);
            assert!(got.row(0).iter().all(|v| v.is_nan()), "{kernel:?} {bad}");
            assert!(got.row(1).iter().all(|v| v.is_finite()), "{kernel:?} {bad}");
            assert!(naive_call(&x, &w, &b, Epilogue::Gelu)
                .row(0)
                .iter()
                .all(|v| v.is_nan()));
        }
        // K = 1, N = 1.
        let x = t(vec![2.0, -3.0, 0.0], &[3, 1]);
        let w = t(vec![0.5], &[1, 1]);
        let got = quantized_call(kernel, &x, &w, &t(vec![0.25], &[1]), Epilogue::None);
        assert_eq!(got.as_slice(), &[1.25, -1.25, 0.25]);
    }
}

#[test]
fn shape_and_argument_errors() {
    let q = QuantizedMatrix::quantize_b(Tensor::zeros(&[1536, 384]).view()).unwrap();
    assert_eq!(
        (q.n(), q.k(), q.kernel()),
        (1536, 384, Int8Kernel::detect())
    );
    let mut out = Tensor::full(&[16, 1536], f32::NAN);
    let e = matmul_quantized_bias(
        out.view_mut(),
        Tensor::zeros(&[16, 385]).view(),
        &q,
        Tensor::zeros(&[1536]).view(),
        Epilogue::None,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul_quantized_bias: `x` has shape [16, 385], expected [M, K] = [16, 384]"
    );
    let e = matmul_quantized_bias(
        out.view_mut(),
        Tensor::zeros(&[16, 384]).view(),
        &q,
        Tensor::zeros(&[384]).view(),
        Epilogue::None,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul_quantized_bias: `bias` has shape [384], expected [N] = [1536]"
    );
    let e = matmul_quantized_bias(
        Tensor::zeros(&[15, 1536]).view_mut(),
        Tensor::zeros(&[16, 384]).view(),
        &q,
        Tensor::zeros(&[1536]).view(),
        Epilogue::None,
    )
    .unwrap_err();
    assert!(
        matches!(e, TensorError::ShapeMismatch { operand: "out", .. }),
        "{e}"
    );
    let e = matmul_quantized_bias_residual(
        out.view_mut(),
        Tensor::zeros(&[16, 384]).view(),
        &q,
        Tensor::zeros(&[1536]).view(),
        Tensor::zeros(&[16, 1535]).view(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("`residual` has shape [16, 1535]"),
        "{e}"
    );
    assert!(out.as_slice().iter().all(|v| v.is_nan()), "nothing written");

    assert!(QuantizedMatrix::quantize_b(Tensor::zeros(&[2, 3, 4]).view()).is_err());
    let e = QuantizedMatrix::quantize_b(Tensor::zeros(&[1, MAX_K + 1]).view()).unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
    assert!(QuantizedMatrix::quantize_b(Tensor::zeros(&[1, MAX_K]).view()).is_ok());
    let e =
        QuantizedMatrix::quantize_b(t(vec![0.0, 1.0, f32::NAN, 2.0], &[2, 2]).view()).unwrap_err();
    assert!(e.to_string().contains("w[1, 0] = NaN is not finite"), "{e}");
}

#[test]
fn memory_is_one_byte_per_weight_plus_scales() {
    // Per column: an f32 scale and an i32 column sum.
    let (n, k) = (1537, 383);
    let q = QuantizedMatrix::quantize_b(Tensor::zeros(&[n, k]).view()).unwrap();
    let (n_pad, k_pad) = (n.next_multiple_of(16), k.next_multiple_of(4));
    assert!(q.memory_bytes() >= n_pad * k_pad + 8 * n_pad);
    assert!(q.memory_bytes() <= n_pad * k_pad + 8 * n_pad + 63);
}

/// Outputs of 2 MB and more go out with non-temporal stores (whole aligned 64-byte rows; the
/// rest, and unaligned outputs, with ordinary ones): the same bits as the twin, with and
/// without GELU and residual, on aligned and unaligned output buffers, 1 and 2 threads.
#[test]
fn large_streamed_outputs_equal_the_naive_twin_bit_for_bit() {
    let mut rng = Rng::new(33);
    // 1,100 x 512 and 600 x 977 f32: 2.25 MB and 2.34 MB.
    for (m, k, n) in [(1100, 40, 512), (600, 24, 977)] {
        let x = t(rng.uniform_vec(m * k, -2.0, 2.0), &[m, k]);
        let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
        let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
        let r = t(rng.uniform_vec(m * n, -3.0, 3.0), &[m, n]);
        let want_res = naive_residual_call(&x, &w, &b, &r);
        for kernel in int8_kernels() {
            let q = QuantizedMatrix::quantize_b_with_kernel(w.view(), kernel).unwrap();
            for epi in [Epilogue::None, Epilogue::Gelu] {
                let want = naive_call(&x, &w, &b, epi);
                for threads in [1, 2] {
                    let what = format!("{kernel:?} {epi:?} m={m} n={n}, {threads} threads");
                    let got = with_threads(threads, || quantized_call(kernel, &x, &w, &b, epi));
                    assert_eq!(bits(got.as_slice()), bits(want.as_slice()), "{what}");
                    // An output 4 bytes off a cache line: no row is a whole aligned line.
                    let mut storage = vec![f32::NAN; m * n + 1];
                    let offset = usize::from((storage.as_ptr() as usize).is_multiple_of(64));
                    let view =
                        TensorViewMut::new(&mut storage[offset..offset + m * n], &[m, n]).unwrap();
                    with_threads(threads, || {
                        matmul_quantized_bias(view, x.view(), &q, b.view(), epi).unwrap()
                    });
                    let shifted = &storage[offset..offset + m * n];
                    assert_eq!(bits(shifted), bits(want.as_slice()), "{what}, unaligned");
                }
            }
            let mut got = Tensor::full(&[m, n], f32::NAN);
            matmul_quantized_bias_residual(got.view_mut(), x.view(), &q, b.view(), r.view())
                .unwrap();
            let what = format!("{kernel:?} m={m} n={n} residual");
            assert_eq!(bits(got.as_slice()), bits(want_res.as_slice()), "{what}");
        }
    }
}
