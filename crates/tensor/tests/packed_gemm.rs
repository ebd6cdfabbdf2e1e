//! The packed GEMM, every kernel this CPU supports, against the naive f64 twin and exact
//! integer references; determinism across M, batch composition and thread count.

mod common;

use common::{bits, gemm_kernels, with_threads, Rng};
use koembed_tensor::testing::{assert_close, Tolerance};
use koembed_tensor::{
    gelu_erf_f32, matmul_packed_bias, naive, Epilogue, GemmKernel, PackedMatrix, Tensor,
};

const SIZES: [usize; 10] = [1, 3, 7, 16, 17, 64, 65, 127, 384, 1025];

fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape).unwrap()
}

/// (M, K, N) from SIZES³: every shape with at most 4M multiply-adds, plus a deterministic
/// sample of the larger ones (the naive twin is slow there).
fn shapes() -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    let mut i = 0;
    for &m in &SIZES {
        for &k in &SIZES {
            for &n in &SIZES {
                i += 1;
                let work = m * k * n;
                if work <= 4_000_000 || (work <= 60_000_000 && i % 9 == 0) {
                    v.push((m, k, n));
                }
            }
        }
    }
    v
}

/// Weights over 4 MB take each kernel's own M block (smaller ones a short one, so the shapes
/// above never reach it): over two whole blocks of 96 rows (AVX-512) and a partial one,
/// integer inputs give the exact products, and rows run alone give the batch's bits.
#[test]
fn weights_over_4_mb_take_the_kernels_m_block() {
    // 1,100 x 1,025 f32 weights: 4.5 MB; 230 rows = 96 + 96 + 38 (AVX-512), 144 + 86 (AVX2).
    let (m, k, n) = (230, 1025, 1100);
    assert_exact_on_integers(31, (m, k, n));
    assert_row_ranges_equal_the_batch((m, k, n), 32, &[0..1, 90..100, 95..97, 190..230, 0..230]);
}

#[test]
fn rows_4_kb_apart_are_packed_from_96_rows() {
    // K = 1,024: A's rows are 4 KB apart, so from 96 rows on the AVX-512 kernel packs them
    // (below, it reads them in place); N = 40 ends in a partial panel.
    let (m, k, n) = (97, 1024, 40);
    assert_exact_on_integers(47, (m, k, n));
    // Rows alone (in place) and in a batch of 96 or 97 (packed) give the same bits.
    assert_row_ranges_equal_the_batch((m, k, n), 33, &[0..1, 0..95, 0..96, 1..97, 90..97]);
}

#[test]
fn packed_rows_are_kept_across_column_chunks() {
    // 4.5 MB of weights: M blocks of 96 rows, and 35 panels in chunks of 32 (each chunk's
    // output under 384 KB). K = 1,024 packs A; on one thread the four tasks (2 M blocks x 2
    // chunks) run in order: the second chunk reuses its block's packed rows, the second
    // block packs its own.
    with_threads(1, || assert_exact_on_integers(53, (192, 1024, 1100)));
}

#[test]
fn output_rows_4_kb_apart_keep_their_partial_sums_apart() {
    // N = 1,024: the output's rows are 4 KB apart, so over several K blocks (K = 450: 384 + 66
    // on AVX-512) the AVX-512 kernel keeps each task's partial sums in a buffer of its own and
    // copies the finished tiles out. 61 rows = 48 + 13: two M blocks, the last tile 1 row.
    let (m, k, n) = (61, 450, 1024);
    assert_exact_on_integers(59, (m, k, n));
    assert_row_ranges_equal_the_batch((m, k, n), 60, &[0..1, 40..50, 47..61, 0..61]);
    // The epilogues on the finished tiles: GELU and the residual, bit for bit on the plain
    // (exact) result.
    let (x, w, b, want) = integer_case(&mut Rng::new(61), (m, k, n));
    let r = t(Rng::new(62).uniform_vec(m * n, -3.0, 3.0), &[m, n]);
    for kernel in gemm_kernels() {
        let what = format!("{kernel:?} m={m} k={k} n={n}");
        let gelu = packed_call(kernel, &x, &w, &b, Epilogue::Gelu);
        let gelu_want: Vec<f32> = want.iter().map(|&v| gelu_erf_f32(v)).collect();
        assert_eq!(bits(gelu.as_slice()), bits(&gelu_want), "{what} GELU");
        let got = residual_call(kernel, &x, &w, &b, &r);
        let plus: Vec<f32> = want.iter().zip(r.as_slice()).map(|(a, b)| a + b).collect();
        assert_eq!(bits(got.as_slice()), bits(&plus), "{what} residual");
    }
}

/// Every kernel gives the exact products of an [`integer_case`] of this shape.
fn assert_exact_on_integers(seed: u64, (m, k, n): (usize, usize, usize)) {
    let (x, w, b, want) = integer_case(&mut Rng::new(seed), (m, k, n));
    for kernel in gemm_kernels() {
        let got = packed_call(kernel, &x, &w, &b, Epilogue::None);
        let what = format!("{kernel:?} m={m} k={k} n={n}");
        assert_close(&what, got.as_slice(), &want, &[m, n], Tolerance::exact());
    }
}

/// x[M,K], w[N,K], b[N] of small integers and the exact `x · wᵀ + b` (|products| <= 16, sums
/// <= 16·K + 100: exact in f32 in any order for the K here).
fn integer_case(
    rng: &mut Rng,
    (m, k, n): (usize, usize, usize),
) -> (Tensor, Tensor, Tensor, Vec<f32>) {
    let x = rng.int_vec(m * k, 4);
    let w = rng.int_vec(n * k, 4);
    let b = rng.int_vec(n, 100);
    let mut want = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: i64 = (0..k)
                .map(|l| x[i * k + l] as i64 * w[j * k + l] as i64)
                .sum();
            want[i * n + j] = dot as f32 + b[j];
        }
    }
    (t(x, &[m, k]), t(w, &[n, k]), t(b, &[n]), want)
}

/// `x · wᵀ + b + r` by `matmul_packed_bias_residual` on weights packed for `kernel`.
fn residual_call(kernel: GemmKernel, x: &Tensor, w: &Tensor, b: &Tensor, r: &Tensor) -> Tensor {
    let p = PackedMatrix::pack_b_with_kernel(w.view(), kernel).unwrap();
    let mut out = Tensor::full(&[x.rows(), w.rows()], f32::NAN);
    koembed_tensor::matmul_packed_bias_residual(out.view_mut(), x.view(), &p, b.view(), r.view())
        .unwrap();
    out
}

fn packed_call(kernel: GemmKernel, x: &Tensor, w: &Tensor, b: &Tensor, epi: Epilogue) -> Tensor {
    let p = PackedMatrix::pack_b_with_kernel(w.view(), kernel).unwrap();
    let mut out = Tensor::full(&[x.rows(), w.rows()], f32::NAN);
    matmul_packed_bias(out.view_mut(), x.view(), &p, b.view(), epi).unwrap();
    out
}

#[test]
fn every_kernel_is_listed() {
    let ks = GemmKernel::supported();
    println!("supported GEMM kernels: {ks:?}");
    assert_eq!(ks.last(), Some(&GemmKernel::Portable));
    assert_eq!(GemmKernel::detect(), ks[0]);
    // The pair kernels multiply bf16 panels only, so they are not among the f32 kernels.
    assert!(!ks.contains(&GemmKernel::Avx512Bf16) && !ks.contains(&GemmKernel::AmxBf16));
    for k in [
        GemmKernel::AmxBf16,
        GemmKernel::Avx512Bf16,
        GemmKernel::Avx512,
        GemmKernel::Avx2,
    ] {
        if !k.is_supported() {
            let w = Tensor::zeros(&[4, 4]);
            assert!(PackedMatrix::pack_b_with_kernel(w.view(), k).is_err());
        }
    }
}

#[test]
fn float_inputs_within_the_naive_error_bound() {
    let mut rng = Rng::new(11);
    for kernel in gemm_kernels() {
        for (m, k, n) in shapes() {
            let x = t(rng.uniform_vec(m * k, -1.0, 1.0), &[m, k]);
            let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
            let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
            let got = packed_call(kernel, &x, &w, &b, Epilogue::None);
            let mut want = Tensor::full(&[m, n], f32::NAN);
            naive::matmul_bias_nt(want.view_mut(), x.view(), w.view(), b.view()).unwrap();
            // Worst-case f32 dot product + bias error: (K + 2)·2^-24·(Σ|x·w| + |b|).
            let tol = Tolerance {
                abs: (k + 2) as f32 * f32::EPSILON / 2.0 * (0.1 * k as f32 + 1.0),
                rel: 0.0,
            };
            let what = format!("{kernel:?} m={m} k={k} n={n}");
            assert_close(&what, got.as_slice(), want.as_slice(), &[m, n], tol);
        }
    }
}

#[test]
fn integer_inputs_are_exact() {
    let mut rng = Rng::new(12);
    for kernel in gemm_kernels() {
        for (m, k, n) in shapes() {
            let (x, w, b, want) = integer_case(&mut rng, (m, k, n));
            let got = packed_call(kernel, &x, &w, &b, Epilogue::None);
            let what = format!("{kernel:?} m={m} k={k} n={n}");
            assert_close(&what, got.as_slice(), &want, &[m, n], Tolerance::exact());
        }
    }
}

#[test]
fn gelu_epilogue_is_gelu_of_the_plain_result() {
    let mut rng = Rng::new(13);
    for kernel in gemm_kernels() {
        for (m, k, n) in [(1, 7, 3), (17, 65, 127), (130, 384, 200), (16, 1025, 64)] {
            let x = t(rng.uniform_vec(m * k, -2.0, 2.0), &[m, k]);
            let w = t(rng.uniform_vec(n * k, -0.2, 0.2), &[n, k]);
            let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
            let plain = packed_call(kernel, &x, &w, &b, Epilogue::None);
            let fused = packed_call(kernel, &x, &w, &b, Epilogue::Gelu);
            let want: Vec<f32> = plain.as_slice().iter().map(|&v| gelu_erf_f32(v)).collect();
            assert_eq!(
                bits(fused.as_slice()),
                bits(&want),
                "{kernel:?} m={m} k={k} n={n}"
            );
        }
    }
}

/// Rows `ranges` of x run alone give the bits they get in the whole `m x k` batch, for every
/// kernel and both epilogues.
fn assert_row_ranges_equal_the_batch(
    (m, k, n): (usize, usize, usize),
    seed: u64,
    ranges: &[std::ops::Range<usize>],
) {
    let mut rng = Rng::new(seed);
    let x = t(rng.uniform_vec(m * k, -2.0, 2.0), &[m, k]);
    let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
    let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
    for kernel in gemm_kernels() {
        let p = PackedMatrix::pack_b_with_kernel(w.view(), kernel).unwrap();
        for epi in [Epilogue::None, Epilogue::Gelu] {
            let mut full = Tensor::full(&[m, n], f32::NAN);
            matmul_packed_bias(full.view_mut(), x.view(), &p, b.view(), epi).unwrap();
            for rows in ranges {
                let mut part = Tensor::full(&[rows.len(), n], f32::NAN);
                let xs = x.view().slice_rows(rows.clone());
                matmul_packed_bias(part.view_mut(), xs, &p, b.view(), epi).unwrap();
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
fn a_row_alone_equals_the_same_row_in_a_batch() {
    // Lengths 1..=6 and longer ones leave every remainder mod the tile heights (6 for AVX2,
    // 12 for AVX-512, 4 portable): the last, partial tile is the same code as a full one, on
    // fewer rows.
    let ranges = [
        0..1,
        5..6,
        64..65,
        129..130,
        7..9,
        9..12,
        12..16,
        20..25,
        30..36,
        3..19,
        40..51,
        60..130,
        1..130,
    ];
    assert_row_ranges_equal_the_batch((130, 1025, 389), 14, &ranges);
}

/// From M = 1024 rows (and K under 1,024) the AVX-512 kernel packs A (a different driver
/// path): the same bits as the rows run few at a time, read in place; 1037 rows and
/// K = 1023 leave a partial row panel, a partial K block and k not a multiple of 16 (the
/// packing's scalar tail). At K = 1025 (rows 4,100 bytes apart) the batch reads A in place
/// too, and still gives the rows' bits and the exact integer products.
#[test]
fn packed_a_rows_equal_the_rows_read_in_place() {
    assert_row_ranges_equal_the_batch(
        (1037, 1023, 65),
        20,
        &[0..13, 500..511, 1024..1037, 3..1037],
    );
    assert_exact_on_integers(21, (1037, 1023, 65));
    assert_row_ranges_equal_the_batch((1037, 1025, 65), 22, &[0..13, 1024..1037, 3..1037]);
}

#[test]
fn one_and_two_threads_give_the_same_bits() {
    let mut rng = Rng::new(15);
    for (m, k, n) in [(16, 384, 1536), (130, 1536, 384), (3, 65, 1025)] {
        let x = t(rng.uniform_vec(m * k, -2.0, 2.0), &[m, k]);
        let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
        let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
        for kernel in gemm_kernels() {
            let run = || bits(packed_call(kernel, &x, &w, &b, Epilogue::Gelu).as_slice());
            let one = with_threads(1, run);
            let two = with_threads(2, run);
            let three = with_threads(3, run);
            assert_eq!(one, two, "{kernel:?} m={m} k={k} n={n}: 1 vs 2 threads");
            assert_eq!(one, three, "{kernel:?} m={m} k={k} n={n}: 1 vs 3 threads");
        }
    }
}

#[test]
fn simd_kernels_agree_bit_for_bit() {
    // AVX2 and AVX-512 run the same fused chain; where both exist they must agree exactly.
    let ks: Vec<_> = GemmKernel::supported()
        .into_iter()
        .filter(|&k| k != GemmKernel::Portable)
        .collect();
    if ks.len() < 2 {
        println!("only {ks:?}: nothing to compare");
        return;
    }
    let mut rng = Rng::new(16);
    let (m, k, n) = (37, 1025, 129);
    let x = t(rng.uniform_vec(m * k, -2.0, 2.0), &[m, k]);
    let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
    let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
    let a = packed_call(ks[0], &x, &w, &b, Epilogue::Gelu);
    let c = packed_call(ks[1], &x, &w, &b, Epilogue::Gelu);
    assert_eq!(bits(a.as_slice()), bits(c.as_slice()));
}

#[test]
fn empty_dimensions_and_shape_errors() {
    for kernel in gemm_kernels() {
        // K = 0: out = bias (after the epilogue).
        let x = Tensor::zeros(&[3, 0]);
        let w = Tensor::zeros(&[2, 0]);
        let b = t(vec![1.5, -2.0], &[2]);
        let got = packed_call(kernel, &x, &w, &b, Epilogue::None);
        assert_eq!(got.as_slice(), &[1.5, -2.0, 1.5, -2.0, 1.5, -2.0]);
        // M = 0 and N = 0.
        let got = packed_call(
            kernel,
            &Tensor::zeros(&[0, 4]),
            &Tensor::zeros(&[2, 4]),
            &b,
            Epilogue::Gelu,
        );
        assert!(got.is_empty());
        let got = packed_call(
            kernel,
            &Tensor::zeros(&[3, 4]),
            &Tensor::zeros(&[0, 4]),
            &Tensor::zeros(&[0]),
            Epilogue::None,
        );
        assert!(got.is_empty());
    }
    let p = PackedMatrix::pack_b(Tensor::zeros(&[1536, 384]).view()).unwrap();
    assert_eq!((p.n(), p.k()), (1536, 384));
    let mut out = Tensor::full(&[16, 1536], f32::NAN);
    let e = matmul_packed_bias(
        out.view_mut(),
        Tensor::zeros(&[16, 385]).view(),
        &p,
        Tensor::zeros(&[1536]).view(),
        Epilogue::None,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul_packed_bias: `x` has shape [16, 385], expected [M, K] = [16, 384]"
    );
    let e = matmul_packed_bias(
        out.view_mut(),
        Tensor::zeros(&[16, 384]).view(),
        &p,
        Tensor::zeros(&[384]).view(),
        Epilogue::None,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul_packed_bias: `bias` has shape [384], expected [N] = [1536]"
    );
    assert!(out.as_slice().iter().all(|v| v.is_nan()), "nothing written");
    assert!(PackedMatrix::pack_b(Tensor::zeros(&[2, 3, 4]).view()).is_err());
}

#[test]
fn residual_epilogue_is_the_plain_result_plus_the_residual() {
    let mut rng = Rng::new(17);
    for kernel in gemm_kernels() {
        for (m, k, n) in [
            (1, 7, 3),
            (7, 65, 17),
            (17, 384, 65),
            (65, 17, 384),
            (130, 1025, 7),
        ] {
            let x = t(rng.uniform_vec(m * k, -1.0, 1.0), &[m, k]);
            let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
            let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
            let r = t(rng.uniform_vec(m * n, -3.0, 3.0), &[m, n]);
            let plain = packed_call(kernel, &x, &w, &b, Epilogue::None);
            let got = residual_call(kernel, &x, &w, &b, &r);
            let want: Vec<f32> = plain
                .as_slice()
                .iter()
                .zip(r.as_slice())
                .map(|(a, b)| a + b)
                .collect();
            assert_eq!(
                bits(got.as_slice()),
                bits(&want),
                "{kernel:?} m={m} k={k} n={n}: fl(fl(x·wᵀ + b) + r)"
            );
        }
    }
    let p = PackedMatrix::pack_b(Tensor::zeros(&[4, 3]).view()).unwrap();
    let e = koembed_tensor::matmul_packed_bias_residual(
        Tensor::zeros(&[2, 4]).view_mut(),
        Tensor::zeros(&[2, 3]).view(),
        &p,
        Tensor::zeros(&[4]).view(),
        Tensor::zeros(&[2, 5]).view(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("`residual` has shape [2, 5]"), "{e}");
}

/// Half panels hold the weights rounded to nearest-even and widen them exactly; bf16 also rounds
/// the activations. The result must be bit for bit the f32 kernel's on the pre-rounded inputs,
/// for every kernel and shape.
#[test]
fn half_panels_equal_f32_panels_of_the_rounded_weights() {
    use koembed_tensor::{bf16, f16, PanelFormat};
    let mut rng = Rng::new(21);
    for kernel in gemm_kernels() {
        for (i, (m, k, n)) in shapes().into_iter().enumerate() {
            // Every third shape keeps the test quick at opt-level 1; all sizes still appear.
            if i % 3 != 0 && m * k * n > 100_000 {
                continue;
            }
            let x = t(rng.uniform_vec(m * k, -1.0, 1.0), &[m, k]);
            let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
            let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
            for format in [PanelFormat::F16, PanelFormat::Bf16] {
                let to_bf16 = |v: &[f32]| -> Vec<f32> {
                    v.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
                };
                let (x_in, w_in) = match format {
                    PanelFormat::F16 => (
                        x.as_slice().to_vec(),
                        w.as_slice()
                            .iter()
                            .map(|&v| f16::from_f32(v).to_f32())
                            .collect(),
                    ),
                    _ => (to_bf16(x.as_slice()), to_bf16(w.as_slice())),
                };
                let want = packed_call(
                    kernel,
                    &t(x_in, &[m, k]),
                    &t(w_in, &[n, k]),
                    &b,
                    Epilogue::Gelu,
                );
                let p = PackedMatrix::pack_b_as(w.view(), kernel, format).unwrap();
                assert_eq!(p.format(), format);
                let mut got = Tensor::full(&[m, n], f32::NAN);
                matmul_packed_bias(got.view_mut(), x.view(), &p, b.view(), Epilogue::Gelu).unwrap();
                assert_eq!(
                    bits(got.as_slice()),
                    bits(want.as_slice()),
                    "{kernel:?} {format:?} m={m} k={k} n={n}"
                );
            }
        }
    }
}

/// Small integers are exact in f16 and bf16: half panels give the exact integer product.
#[test]
fn half_panels_are_exact_on_integers_and_half_the_size() {
    use koembed_tensor::PanelFormat;
    let (m, k, n) = (17, 1025, 65);
    let (x, w, b, want) = integer_case(&mut Rng::new(22), (m, k, n));
    for kernel in gemm_kernels() {
        let full = PackedMatrix::pack_b_with_kernel(w.view(), kernel).unwrap();
        for format in [PanelFormat::F16, PanelFormat::Bf16] {
            let p = PackedMatrix::pack_b_as(w.view(), kernel, format).unwrap();
            assert!(
                p.memory_bytes() <= full.memory_bytes() / 2 + 64,
                "{kernel:?} {format:?}: {} bytes against {} in f32",
                p.memory_bytes(),
                full.memory_bytes()
            );
            let mut got = Tensor::full(&[m, n], f32::NAN);
            matmul_packed_bias(got.view_mut(), x.view(), &p, b.view(), Epilogue::None).unwrap();
            let what = format!("{kernel:?} {format:?}");
            assert_close(&what, got.as_slice(), &want, &[m, n], Tolerance::exact());
        }
    }
}

#[test]
fn k_block_boundaries_are_exact() {
    // Each kernel's K block (AVX-512 384, bf16 192, AVX2 and portable 256) and the largest K
    // run as one block (AVX2 384), one past each, and three blocks and a bit (769): a K block
    // dropped or read twice changes the sums.
    let mut rng = Rng::new(15);
    for kernel in gemm_kernels() {
        for k in [
            127, 128, 129, 191, 192, 193, 255, 256, 257, 383, 384, 385, 769,
        ] {
            let (m, n) = (17, 33);
            let x = rng.int_vec(m * k, 4);
            let w = rng.int_vec(n * k, 4);
            let b = rng.int_vec(n, 100);
            let want: Vec<f32> = (0..m * n)
                .map(|ij| {
                    let (i, j) = (ij / n, ij % n);
                    let dot: i64 = (0..k)
                        .map(|l| x[i * k + l] as i64 * w[j * k + l] as i64)
                        .sum();
                    dot as f32 + b[j]
                })
                .collect();
            let got = packed_call(
                kernel,
                &t(x, &[m, k]),
                &t(w, &[n, k]),
                &t(b, &[n]),
                Epilogue::None,
            );
            assert_eq!(bits(got.as_slice()), bits(&want), "{kernel:?} k={k}");
        }
    }
}

/// The `vdpbf16ps` kernel against its scalar twin (`naive::matmul_bias_nt_bf16_pairs`), bit
/// for bit, over odd shapes (odd K pads a zero into the last pair), its K block edges (192
/// steps = 384 k), and the GELU and residual epilogues.
#[test]
fn bf16_pair_kernel_equals_its_twin_bit_for_bit() {
    use koembed_tensor::{gelu_erf_f32, matmul_packed_bias_residual, PanelFormat};
    let kernels: Vec<GemmKernel> = GemmKernel::supported_for(PanelFormat::Bf16)
        .into_iter()
        .filter(|&k| k == GemmKernel::Avx512Bf16)
        .collect();
    println!("bf16 pair kernels here: {kernels:?}");
    let mut rng = Rng::new(23);
    let mut cases: Vec<(usize, usize, usize)> = shapes()
        .into_iter()
        .enumerate()
        .filter(|&(i, (m, k, n))| i % 2 == 0 || m * k * n <= 100_000)
        .map(|(_, s)| s)
        .collect();
    for k in [383, 384, 385, 767, 768, 769] {
        cases.push((13, k, 33));
    }
    for kernel in kernels {
        for &(m, k, n) in &cases {
            let x = t(rng.uniform_vec(m * k, -2.0, 2.0), &[m, k]);
            let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
            let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
            let r = t(rng.uniform_vec(m * n, -1.0, 1.0), &[m, n]);
            let mut want = Tensor::full(&[m, n], f32::NAN);
            naive::matmul_bias_nt_bf16_pairs(want.view_mut(), x.view(), w.view(), b.view())
                .unwrap();
            let p = PackedMatrix::pack_b_as(w.view(), kernel, PanelFormat::Bf16).unwrap();
            let what = format!("{kernel:?} m={m} k={k} n={n}");
            let mut got = Tensor::full(&[m, n], f32::NAN);
            matmul_packed_bias(got.view_mut(), x.view(), &p, b.view(), Epilogue::None).unwrap();
            assert_eq!(bits(got.as_slice()), bits(want.as_slice()), "{what}");
            matmul_packed_bias(got.view_mut(), x.view(), &p, b.view(), Epilogue::Gelu).unwrap();
            let gelu: Vec<f32> = want.as_slice().iter().map(|&v| gelu_erf_f32(v)).collect();
            assert_eq!(bits(got.as_slice()), bits(&gelu), "{what} GELU");
            matmul_packed_bias_residual(got.view_mut(), x.view(), &p, b.view(), r.view()).unwrap();
            let plus: Vec<f32> = want
                .as_slice()
                .iter()
                .zip(r.as_slice())
                .map(|(&v, &s)| v + s)
                .collect();
            assert_eq!(bits(got.as_slice()), bits(&plus), "{what} residual");
        }
        // Half the memory of f32 panels (an even K: an odd one pads a step), and only bf16
        // panels.
        let w = t(rng.uniform_vec(65 * 128, -1.0, 1.0), &[65, 128]);
        let f32_bytes = PackedMatrix::pack_b_with_kernel(w.view(), GemmKernel::Avx512)
            .unwrap()
            .memory_bytes();
        let p = PackedMatrix::pack_b_as(w.view(), kernel, PanelFormat::Bf16).unwrap();
        assert_eq!(p.memory_bytes(), f32_bytes / 2);
        for format in [PanelFormat::F32, PanelFormat::F16] {
            let err = PackedMatrix::pack_b_as(w.view(), kernel, format).unwrap_err();
            assert!(err.to_string().contains("does not multiply"), "{err}");
        }
    }
}

/// The twin itself against hand-computed sums: the order of the two products of a pair, and
/// the padding of an odd K.
#[test]
fn bf16_pair_twin_adds_the_odd_product_first() {
    let two24 = 16_777_216.0f32;
    let run = |x: Vec<f32>, w: Vec<f32>, bias: f32| {
        let k = x.len();
        let mut out = Tensor::zeros(&[1, 1]);
        naive::matmul_bias_nt_bf16_pairs(
            out.view_mut(),
            t(x, &[1, k]).view(),
            t(w, &[1, k]).view(),
            t(vec![bias], &[1]).view(),
        )
        .unwrap();
        out.as_slice()[0]
    };
    // Pair 0 makes acc = 1 (odd 0, even 1); pair 1: odd 2²⁴ then even 1 -> 2²⁴ (ties to even);
    // even 2²⁴ after odd 1 -> 2 + 2²⁴ exactly.
    assert_eq!(run(vec![1.0, 0.0, 1.0, two24], vec![1.0; 4], 0.0), two24);
    assert_eq!(
        run(vec![1.0, 0.0, two24, 1.0], vec![1.0; 4], 0.0),
        two24 + 2.0
    );
    // Odd K: the last pair's odd half is a zero.
    assert_eq!(run(vec![1.5, -2.0, 3.0], vec![2.0, 1.0, 1.0], 0.25), 4.25);
}

/// The AMX kernel (`tdpbf16ps`). Its sums are not one f32 chain (see `kernels::amx`), so:
/// within the f32 dot-product bound of the f64 product of the bf16-rounded inputs; exact on
/// small integers; its own bits for a row alone or in a batch and for 1, 2 or 3 threads; the
/// GELU and residual epilogues bit for bit on its plain result.
#[test]
fn amx_bf16_kernel_within_the_bound_and_invariant() {
    use koembed_tensor::{bf16, gelu_erf_f32, matmul_packed_bias_residual, PanelFormat};
    let kernels: Vec<GemmKernel> = GemmKernel::supported_for(PanelFormat::Bf16)
        .into_iter()
        .filter(|&k| k == GemmKernel::AmxBf16)
        .collect();
    println!("AMX kernels here: {kernels:?}");
    let to_bf16 =
        |v: &[f32]| -> Vec<f32> { v.iter().map(|&v| bf16::from_f32(v).to_f32()).collect() };
    let mut rng = Rng::new(24);
    let mut cases: Vec<(usize, usize, usize)> = shapes()
        .into_iter()
        .enumerate()
        .filter(|&(i, (m, k, n))| i % 2 == 0 || m * k * n <= 100_000)
        .map(|(_, s)| s)
        .collect();
    for (m, k) in [
        (31, 383),
        (32, 384),
        (33, 385),
        (64, 767),
        (65, 768),
        (16, 769),
        // The AMX kernel's K block: 768 pairs = 1,536 k.
        (33, 1535),
        (32, 1536),
        (17, 1537),
        (40, 3073),
    ] {
        cases.push((m, k, 65));
    }
    for kernel in kernels {
        let pack =
            |w: &Tensor| PackedMatrix::pack_b_as(w.view(), kernel, PanelFormat::Bf16).unwrap();
        for &(m, k, n) in &cases {
            let x = t(rng.uniform_vec(m * k, -1.0, 1.0), &[m, k]);
            let w = t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]);
            let b = t(rng.uniform_vec(n, -1.0, 1.0), &[n]);
            let r = t(rng.uniform_vec(m * n, -1.0, 1.0), &[m, n]);
            let (xr, wr) = (
                t(to_bf16(x.as_slice()), &[m, k]),
                t(to_bf16(w.as_slice()), &[n, k]),
            );
            let mut want = Tensor::full(&[m, n], f32::NAN);
            naive::matmul_bias_nt(want.view_mut(), xr.view(), wr.view(), b.view()).unwrap();
            let p = pack(&w);
            let what = format!("{kernel:?} m={m} k={k} n={n}");
            let mut got = Tensor::full(&[m, n], f32::NAN);
            matmul_packed_bias(got.view_mut(), x.view(), &p, b.view(), Epilogue::None).unwrap();
            let tol = Tolerance {
                abs: (k + 2) as f32 * f32::EPSILON / 2.0 * (0.1 * k as f32 + 1.0),
                rel: 0.0,
            };
            assert_close(&what, got.as_slice(), want.as_slice(), &[m, n], tol);
            let plain = got.as_slice().to_vec();
            matmul_packed_bias(got.view_mut(), x.view(), &p, b.view(), Epilogue::Gelu).unwrap();
            let gelu: Vec<f32> = plain.iter().map(|&v| gelu_erf_f32(v)).collect();
            assert_eq!(bits(got.as_slice()), bits(&gelu), "{what} GELU");
            matmul_packed_bias_residual(got.view_mut(), x.view(), &p, b.view(), r.view()).unwrap();
            let plus: Vec<f32> = plain
                .iter()
                .zip(r.as_slice())
                .map(|(&v, &s)| v + s)
                .collect();
            assert_eq!(bits(got.as_slice()), bits(&plus), "{what} residual");
            // Rows alone, and other thread counts: the same bits.
            for rows in [0..1, m / 2..m, m.saturating_sub(3)..m] {
                let mut part = Tensor::full(&[rows.len(), n], f32::NAN);
                let xs = x.view().slice_rows(rows.clone());
                matmul_packed_bias(part.view_mut(), xs, &p, b.view(), Epilogue::None).unwrap();
                let whole = &plain[rows.start * n..rows.end * n];
                assert_eq!(bits(part.as_slice()), bits(whole), "{what} rows {rows:?}");
            }
            if m * k * n > 100_000 {
                for threads in [1, 3] {
                    let again = with_threads(threads, || {
                        let mut o = Tensor::full(&[m, n], f32::NAN);
                        matmul_packed_bias(o.view_mut(), x.view(), &p, b.view(), Epilogue::None)
                            .unwrap();
                        o
                    });
                    assert_eq!(
                        bits(again.as_slice()),
                        bits(&plain),
                        "{what} {threads} threads"
                    );
                }
            }
        }
        // Small integers: every order gives the exact sum.
        let (m, k, n) = (37, 1025, 65);
        let x = rng.int_vec(m * k, 4);
        let w = rng.int_vec(n * k, 4);
        let b = rng.int_vec(n, 100);
        let want: Vec<f32> = (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                let dot: i64 = (0..k)
                    .map(|l| x[i * k + l] as i64 * w[j * k + l] as i64)
                    .sum();
                dot as f32 + b[j]
            })
            .collect();
        let p = pack(&t(w, &[n, k]));
        let mut got = Tensor::full(&[m, n], f32::NAN);
        matmul_packed_bias(
            got.view_mut(),
            t(x, &[m, k]).view(),
            &p,
            t(b, &[n]).view(),
            Epilogue::None,
        )
        .unwrap();
        assert_eq!(bits(got.as_slice()), bits(&want), "{kernel:?} integers");
    }
}

/// A GEMM storing bf16 pairs for the next to read: the same bits as the f32 output rounded to
/// bf16, and the next GEMM reading them gives the bits it gives on those values in f32.
#[test]
fn pair_output_and_input_equal_the_f32_path_rounded() {
    use koembed_tensor::{
        bf16, matmul_packed_bias_residual, matmul_packed_bias_residual_from_pairs,
        matmul_packed_bias_to_pairs, Bf16Pairs, PanelFormat,
    };
    let kernels: Vec<GemmKernel> = GemmKernel::supported_for(PanelFormat::Bf16)
        .into_iter()
        .filter(|&k| matches!(k, GemmKernel::AmxBf16 | GemmKernel::Avx512Bf16))
        .collect();
    println!("pair kernels here: {kernels:?}");
    let mut rng = Rng::new(31);
    // (M, K, N = the next GEMM's K, the next GEMM's N): tiles' right and bottom edges, odd K
    // (a half-filled last step), one K block and several (K = 3,073: rounded after the sum).
    let cases = [
        (1, 7, 1, 3),
        (7, 17, 33, 17),
        (33, 64, 65, 7),
        (65, 384, 1536, 65),
        (130, 385, 127, 384),
        (40, 3073, 17, 33),
        (1, 1024, 4096, 16),
    ];
    for kernel in kernels {
        let pack = |w: &Tensor| PackedMatrix::pack_b_as(w.view(), kernel, PanelFormat::Bf16);
        for &(m, k, n, n2) in &cases {
            let what = format!("{kernel:?} m={m} k={k} n={n} n2={n2}");
            let x = t(rng.uniform_vec(m * k, -1.0, 1.0), &[m, k]);
            let (w1, b1) = (
                t(rng.uniform_vec(n * k, -0.1, 0.1), &[n, k]),
                t(rng.uniform_vec(n, -1.0, 1.0), &[n]),
            );
            let (w2, b2) = (
                t(rng.uniform_vec(n2 * n, -0.1, 0.1), &[n2, n]),
                t(rng.uniform_vec(n2, -1.0, 1.0), &[n2]),
            );
            let r = t(rng.uniform_vec(m * n2, -1.0, 1.0), &[m, n2]);
            let (p1, p2) = (pack(&w1).unwrap(), pack(&w2).unwrap());
            for epilogue in [Epilogue::None, Epilogue::Gelu] {
                let mut f32_out = Tensor::full(&[m, n], f32::NAN);
                matmul_packed_bias(f32_out.view_mut(), x.view(), &p1, b1.view(), epilogue).unwrap();
                let rounded: Vec<f32> = f32_out
                    .as_slice()
                    .iter()
                    .map(|&v| bf16::from_f32(v).to_f32())
                    .collect();
                // Room for more rows than used, as a scratch buffer for the largest group.
                let mut pairs = Bf16Pairs::for_input_of(&p2, m + 3).unwrap();
                matmul_packed_bias_to_pairs(&mut pairs, x.view(), &p1, b1.view(), epilogue)
                    .unwrap();
                for i in 0..m {
                    assert_eq!(
                        bits(&pairs.row_f32(i)),
                        bits(&rounded[i * n..(i + 1) * n]),
                        "{what} {epilogue:?} row {i}"
                    );
                }
                let mut want = Tensor::full(&[m, n2], f32::NAN);
                let rounded = t(rounded, &[m, n]);
                matmul_packed_bias_residual(
                    want.view_mut(),
                    rounded.view(),
                    &p2,
                    b2.view(),
                    r.view(),
                )
                .unwrap();
                let mut got = Tensor::full(&[m, n2], f32::NAN);
                matmul_packed_bias_residual_from_pairs(
                    got.view_mut(),
                    &pairs,
                    &p2,
                    b2.view(),
                    r.view(),
                )
                .unwrap();
                assert_eq!(
                    bits(got.as_slice()),
                    bits(want.as_slice()),
                    "{what} {epilogue:?} next"
                );
            }
            // Pairs made for another matrix, or too few rows: an error, not a wrong answer.
            let mut short = Bf16Pairs::for_input_of(&p2, m - 1).unwrap();
            assert!(matmul_packed_bias_to_pairs(
                &mut short,
                x.view(),
                &p1,
                b1.view(),
                Epilogue::None
            )
            .is_err());
            let mut other = Bf16Pairs::for_input_of(&p1, m).unwrap();
            let err =
                matmul_packed_bias_to_pairs(&mut other, x.view(), &p1, b1.view(), Epilogue::None);
            assert_eq!(err.is_err(), k != n, "{what}");
        }
    }
    // A kernel of single k has no pair layout.
    let w = Tensor::zeros(&[4, 4]);
    let f32_panels = PackedMatrix::pack_b(w.view()).unwrap();
    assert!(Bf16Pairs::for_input_of(&f32_panels, 4).is_none());
}

/// The pair kernels (AMX `tdpbf16ps`, `vdpbf16ps`) read a denormal bf16 as zero: what lets
/// the bf16 stores that feed them flush denormals (`vcvtne2ps2bf16`) without changing a
/// product. The FMA kernels on bf16 panels keep them.
#[test]
fn pair_kernels_read_denormals_as_zero() {
    use koembed_tensor::PanelFormat;
    let (m, n, k) = (32, 32, 32);
    // bf16(1e-39) is a denormal bf16; times 1e30, 32 times: 3.2e-8 unless read as zero.
    let x = Tensor::from_vec(vec![1e-39f32; m * k], &[m, k]).unwrap();
    let w = Tensor::from_vec(vec![1e30f32; n * k], &[n, k]).unwrap();
    let bias = Tensor::zeros(&[n]);
    for kernel in GemmKernel::supported_for(PanelFormat::Bf16) {
        let packed = PackedMatrix::pack_b_as(w.view(), kernel, PanelFormat::Bf16).unwrap();
        let mut out = Tensor::full(&[m, n], f32::NAN);
        matmul_packed_bias(
            out.view_mut(),
            x.view(),
            &packed,
            bias.view(),
            Epilogue::None,
        )
        .unwrap();
        let pairs = kernel.formats() == [PanelFormat::Bf16];
        for &v in out.as_slice() {
            if pairs {
                assert_eq!(v, 0.0, "{kernel:?}");
            } else {
                assert!(v > 3e-8 && v < 3.5e-8, "{kernel:?}: {v:e}");
            }
        }
    }
}
