//! Multi-head attention over one sequence against a scalar f64 reference.
#![allow(clippy::single_range_in_vec_init)] // one sequence is a one-element slice of row ranges

mod common;

use common::{bits, Rng, SIZES};
use koembed_tensor::testing::{assert_close, Tolerance};
use koembed_tensor::{
    attention_packed_qkv, attention_single_sequence, attention_single_sequence_qkv, GemmKernel,
    Tensor,
};

fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape).unwrap()
}

/// softmax(Q_h K_hᵀ / √d) V_h per head, all in f64, heads side by side along H.
fn reference(q: &[f32], k: &[f32], v: &[f32], t_len: usize, h: usize, heads: usize) -> Vec<f32> {
    let d = h / heads;
    let mut out = vec![0.0f32; t_len * h];
    for head in 0..heads {
        let c = head * d;
        for i in 0..t_len {
            let scores: Vec<f64> = (0..t_len)
                .map(|j| {
                    (0..d)
                        .map(|l| q[i * h + c + l] as f64 * k[j * h + c + l] as f64)
                        .sum::<f64>()
                        / (d as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for l in 0..d {
                let ctx: f64 = (0..t_len)
                    .map(|j| e[j] / sum * v[j * h + c + l] as f64)
                    .sum();
                out[i * h + c + l] = ctx as f32;
            }
        }
    }
    out
}

/// (H, n_heads): head sizes 1, 3, 7, 16, 32 and BERT-small's 384 / 12.
const HEADS: [(usize, usize); 6] = [(1, 1), (3, 1), (21, 3), (17, 17), (64, 4), (384, 12)];

#[test]
fn matches_the_definition() {
    let mut rng = Rng::new(30);
    for &t_len in SIZES.iter().chain(&[130]) {
        for (h, heads) in HEADS {
            let q = rng.uniform_vec(t_len * h, -2.0, 2.0);
            let k = rng.uniform_vec(t_len * h, -2.0, 2.0);
            let v = rng.uniform_vec(t_len * h, -1.0, 1.0);
            let want = reference(&q, &k, &v, t_len, h, heads);
            let (q, k, v) = (t(q, &[t_len, h]), t(k, &[t_len, h]), t(v, &[t_len, h]));
            let mut out = Tensor::full(&[t_len, h], f32::NAN);
            attention_single_sequence(out.view_mut(), q.view(), k.view(), v.view(), heads).unwrap();
            let what = format!("attention T={t_len} H={h} heads={heads}");
            let tol = Tolerance {
                abs: 2e-6,
                rel: 1e-5,
            };
            assert_close(&what, out.as_slice(), &want, &[t_len, h], tol);
        }
    }
}

#[test]
fn fused_qkv_equals_separate_and_heads_equal_single_head_calls() {
    let mut rng = Rng::new(31);
    let (t_len, h, heads) = (17, 21, 3);
    let d = h / heads;
    let qkv = rng.uniform_vec(t_len * 3 * h, -2.0, 2.0);
    let part = |which: usize| -> Vec<f32> {
        qkv.chunks(3 * h)
            .flat_map(|row| row[which * h..(which + 1) * h].to_vec())
            .collect()
    };
    let (q, k, v) = (
        t(part(0), &[t_len, h]),
        t(part(1), &[t_len, h]),
        t(part(2), &[t_len, h]),
    );
    let mut separate = Tensor::full(&[t_len, h], f32::NAN);
    attention_single_sequence(separate.view_mut(), q.view(), k.view(), v.view(), heads).unwrap();
    let mut fused = Tensor::full(&[t_len, h], f32::NAN);
    let qkv = t(qkv.clone(), &[t_len, 3 * h]);
    attention_single_sequence_qkv(fused.view_mut(), qkv.view(), heads).unwrap();
    assert_eq!(bits(fused.as_slice()), bits(separate.as_slice()));

    // Each head, copied out contiguously and run as a 1-head attention, gives the same bits:
    // reading heads through strides changes nothing.
    for head in 0..heads {
        let cols = |m: &Tensor| -> Tensor {
            let data = (0..t_len)
                .flat_map(|i| m.row(i)[head * d..(head + 1) * d].to_vec())
                .collect();
            t(data, &[t_len, d])
        };
        let mut one = Tensor::full(&[t_len, d], f32::NAN);
        attention_single_sequence(
            one.view_mut(),
            cols(&q).view(),
            cols(&k).view(),
            cols(&v).view(),
            1,
        )
        .unwrap();
        assert_eq!(
            bits(one.as_slice()),
            bits(cols(&separate).as_slice()),
            "head {head}"
        );
    }
}

#[test]
fn a_row_attends_to_the_matching_key() {
    // Keys are one-hot and far apart; each query matches one key strongly, so the output row is
    // (almost exactly) that key's value row.
    let (t_len, h) = (4, 4);
    let mut q = vec![0.0; 16];
    let mut k = vec![0.0; 16];
    for i in 0..t_len {
        q[i * h + (3 - i)] = 100.0;
        k[i * h + i] = 100.0;
    }
    let v: Vec<f32> = (0..16).map(|x| x as f32).collect();
    let mut out = Tensor::full(&[t_len, h], f32::NAN);
    attention_single_sequence(
        out.view_mut(),
        t(q, &[4, 4]).view(),
        t(k, &[4, 4]).view(),
        t(v.clone(), &[4, 4]).view(),
        1,
    )
    .unwrap();
    for i in 0..t_len {
        assert_eq!(out.row(i), &v[(3 - i) * h..(4 - i) * h], "row {i}");
    }
}

#[test]
fn errors() {
    let x = Tensor::zeros(&[5, 12]);
    let mut out = Tensor::full(&[5, 12], f32::NAN);
    let e = attention_single_sequence(out.view_mut(), x.view(), x.view(), x.view(), 5).unwrap_err();
    assert_eq!(
        e.to_string(),
        "attention_single_sequence: n_heads = 5 does not divide the hidden size H = 12"
    );
    assert!(attention_single_sequence(out.view_mut(), x.view(), x.view(), x.view(), 0).is_err());
    let e = attention_single_sequence(
        out.view_mut(),
        x.view(),
        Tensor::zeros(&[6, 12]).view(),
        x.view(),
        3,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "attention_single_sequence: `k` has shape [6, 12], expected [T, H] = [5, 12]"
    );
    let e = attention_single_sequence_qkv(out.view_mut(), x.view(), 3).unwrap_err();
    assert_eq!(
        e.to_string(),
        "attention_single_sequence_qkv: `qkv` has shape [5, 12], expected [T, 3*H] = [5, 36]"
    );
    assert!(out.as_slice().iter().all(|v| v.is_nan()));
    // Empty sequence.
    let e0 = Tensor::zeros(&[0, 12]);
    let mut o0 = Tensor::zeros(&[0, 12]);
    attention_single_sequence(o0.view_mut(), e0.view(), e0.view(), e0.view(), 3).unwrap();
    attention_single_sequence_qkv(o0.view_mut(), Tensor::zeros(&[0, 36]).view(), 3).unwrap();
}

/// Sequences of these lengths packed one after the other (200 spans three query blocks).
const PACKED_LENGTHS: [usize; 7] = [1, 7, 17, 65, 130, 3, 200];

#[test]
fn packed_batch_matches_the_definition_with_every_kernel() {
    let mut rng = Rng::new(32);
    for (h, heads) in [(21, 3), (384, 12), (64, 1)] {
        let total: usize = PACKED_LENGTHS.iter().sum::<usize>() + 5;
        let qkv = rng.uniform_vec(total * 3 * h, -2.0, 2.0);
        // Sequences with a gap of 5 rows in front (rows outside every range stay untouched).
        let ranges = packed_ranges(5, &PACKED_LENGTHS);
        for kernel in GemmKernel::supported() {
            let mut out = Tensor::full(&[total, h], f32::NAN);
            attention_packed_qkv(
                out.view_mut(),
                t(qkv.clone(), &[total, 3 * h]).view(),
                &ranges,
                heads,
                kernel,
            )
            .unwrap();
            assert!(
                out.as_slice()[..5 * h].iter().all(|v| v.is_nan()),
                "gap rows written"
            );
            for r in &ranges {
                let part = |which: usize| -> Vec<f32> {
                    qkv[r.start * 3 * h..r.end * 3 * h]
                        .chunks(3 * h)
                        .flat_map(|row| row[which * h..(which + 1) * h].to_vec())
                        .collect()
                };
                let want = reference(&part(0), &part(1), &part(2), r.len(), h, heads);
                let got = &out.as_slice()[r.start * h..r.end * h];
                let what = format!("{kernel:?} H={h} heads={heads} sequence {r:?}");
                let tol = Tolerance {
                    abs: 2e-6,
                    rel: 1e-5,
                };
                assert_close(&what, got, &want, &[r.len(), h], tol);

                // The same sequence alone gives the same bits as inside the batch.
                let alone: Vec<f32> = qkv[r.start * 3 * h..r.end * 3 * h].to_vec();
                let mut out_alone = Tensor::full(&[r.len(), h], f32::NAN);
                attention_packed_qkv(
                    out_alone.view_mut(),
                    t(alone, &[r.len(), 3 * h]).view(),
                    &[0..r.len()],
                    heads,
                    kernel,
                )
                .unwrap();
                assert_eq!(
                    bits(out_alone.as_slice()),
                    bits(got),
                    "{what}: alone vs batch"
                );
            }
        }
    }
}

#[test]
#[allow(clippy::reversed_empty_ranges)] // 5..4 is the bad input under test
fn packed_batch_refuses_bad_ranges() {
    let qkv = Tensor::zeros(&[10, 36]);
    let mut out = Tensor::full(&[10, 12], f32::NAN);
    let k = GemmKernel::detect();
    for bad in [vec![0..4, 3..6], vec![0..11], vec![5..4]] {
        let e = attention_packed_qkv(out.view_mut(), qkv.view(), &bad, 3, k).unwrap_err();
        assert!(e.to_string().contains("ascending, disjoint"), "{e}");
    }
    assert!(out.as_slice().iter().all(|v| v.is_nan()));
}

fn bf16_round(x: f32) -> f64 {
    koembed_tensor::bf16::from_f32(x).to_f64()
}

/// The bf16 attention of one head's query row: P = softmax(bf16(q)·bf16(k)ᵀ·scale) in f64,
/// rounded to bf16, times bf16(V) in f64. Returns the context row and, per column, the
/// allowed error: where a P lies within 1e-4 (relative) of a bf16 rounding midpoint, the
/// kernel's f32 scores and exp may round it the other way (a bf16 ulp times |v|); the rest
/// is the f32 error of scores, exp and sums (2e-4 of Σ P·|v|, far above what they reach).
fn bf16_reference_row(
    q: &[f32],
    keys: &[&[f32]],
    values: &[&[f32]],
    scale: f32,
) -> (Vec<f64>, Vec<f64>) {
    let scores: Vec<f64> = keys
        .iter()
        .map(|k| {
            q.iter()
                .zip(*k)
                .map(|(&a, &b)| bf16_round(a) * bf16_round(b))
                .sum::<f64>()
                * scale as f64
        })
        .collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    let d = values[0].len();
    let (mut ctx, mut tol) = (vec![0.0f64; d], vec![1e-6f64; d]);
    for (j, v) in values.iter().enumerate() {
        let p = e[j] / sum;
        let pb = bf16_round(p as f32);
        // The midpoint between pb and its neighbour on p's side, where the rounding turns.
        let neighbour = {
            let bits = koembed_tensor::bf16::from_f64(pb).to_bits();
            let bits = if p >= pb { bits + 1 } else { bits - 1 };
            koembed_tensor::bf16::from_bits(bits).to_f64()
        };
        let ulp = (neighbour - pb).abs();
        let may_flip = ((p - (pb + neighbour) / 2.0) / p).abs() < 1e-4;
        for l in 0..d {
            let vb = bf16_round(v[l]);
            ctx[l] += pb * vb;
            tol[l] += 2e-4 * pb * vb.abs() + if may_flip { ulp * vb.abs() } else { 0.0 };
        }
    }
    (ctx, tol)
}

/// Row ranges of sequences of `lengths` packed one after the other from row `start`.
fn packed_ranges(start: usize, lengths: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = start;
    for &len in lengths {
        ranges.push(start..start + len);
        start += len;
    }
    ranges
}

/// `attention_packed_qkv` on the AMX bf16 kernel into `rows x h` filled with `fill` first.
fn run_amx(
    ranges: &[std::ops::Range<usize>],
    qkv: &[f32],
    rows: usize,
    h: usize,
    heads: usize,
    fill: f32,
) -> Tensor {
    let mut out = Tensor::full(&[rows, h], fill);
    attention_packed_qkv(
        out.view_mut(),
        t(qkv.to_vec(), &[rows, 3 * h]).view(),
        ranges,
        heads,
        GemmKernel::AmxBf16,
    )
    .unwrap();
    out
}

/// (H, n_heads) whose heads are whole AMX steps (d = 32, 64, 128: up to 8 column tiles).
const AMX_HEADS: [(usize, usize); 4] = [(64, 2), (384, 12), (128, 2), (128, 1)];
const AMX_LENGTHS: [usize; 10] = [1, 7, 17, 65, 130, 3, 200, 16, 32, 33];

#[test]
fn amx_bf16_attention_matches_the_bf16_definition() {
    if !GemmKernel::AmxBf16.is_supported() {
        eprintln!("no AMX-BF16 here: the bf16 attention kernel is not tested on this CPU");
        return;
    }
    let mut rng = Rng::new(77);
    for (h, heads) in AMX_HEADS {
        let d = h / heads;
        let scale = (1.0 / (d as f64).sqrt()) as f32;
        let total: usize = AMX_LENGTHS.iter().sum::<usize>() + 5;
        let qkv = rng.uniform_vec(total * 3 * h, -2.0, 2.0);
        let ranges = packed_ranges(5, &AMX_LENGTHS);
        let run = |ranges: &[std::ops::Range<usize>], qkv: &[f32], rows: usize| {
            run_amx(ranges, qkv, rows, h, heads, f32::NAN)
        };
        let out = run(&ranges, &qkv, total);
        assert!(
            out.as_slice()[..5 * h].iter().all(|v| v.is_nan()),
            "gap rows written"
        );
        let row = |i: usize, which: usize, head: usize| -> &[f32] {
            &qkv[i * 3 * h + which * h + head * d..][..d]
        };
        let mut worst = 0.0f64;
        for r in &ranges {
            for head in 0..heads {
                let keys: Vec<&[f32]> = r.clone().map(|j| row(j, 1, head)).collect();
                let values: Vec<&[f32]> = r.clone().map(|j| row(j, 2, head)).collect();
                for i in r.clone() {
                    let (want, tol) = bf16_reference_row(row(i, 0, head), &keys, &values, scale);
                    let got = &out.as_slice()[i * h + head * d..][..d];
                    for l in 0..d {
                        let err = (got[l] as f64 - want[l]).abs();
                        assert!(
                            err <= tol[l],
                            "H={h} heads={heads} sequence {r:?} row {i} head {head} column {l}: \
                             got {} want {} (|diff| {err:.3e} > {:.3e})",
                            got[l],
                            want[l],
                            tol[l]
                        );
                        worst = worst.max(err / tol[l]);
                    }
                }
            }
            // The same sequence alone gives the same bits as inside the batch.
            let alone = run(&[0..r.len()], &qkv[r.start * 3 * h..r.end * 3 * h], r.len());
            assert_eq!(
                bits(alone.as_slice()),
                bits(&out.as_slice()[r.start * h..r.end * h]),
                "H={h} sequence {r:?}: alone vs batch"
            );
        }
        // One thread or two: the same bits.
        let one = common::with_threads(1, || run(&ranges, &qkv, total));
        assert_eq!(bits(one.as_slice()), bits(out.as_slice()), "H={h}: threads");
        eprintln!("H={h} heads={heads}: worst error {worst:.3} of the allowed");
    }
}

/// Heads that are not whole AMX steps (d = 24 here) run the f32 attention: the same bits as the
/// f32 kernel's.
#[test]
fn amx_bf16_attention_falls_back_to_f32_for_other_head_sizes() {
    let mut rng = Rng::new(78);
    let (h, heads) = (48, 2);
    let total: usize = AMX_LENGTHS.iter().sum();
    let qkv = rng.uniform_vec(total * 3 * h, -2.0, 2.0);
    let ranges = packed_ranges(0, &AMX_LENGTHS);
    let run = |kernel: GemmKernel| {
        let mut out = Tensor::full(&[total, h], f32::NAN);
        attention_packed_qkv(
            out.view_mut(),
            t(qkv.clone(), &[total, 3 * h]).view(),
            &ranges,
            heads,
            kernel,
        )
        .unwrap();
        out
    };
    let f32_bits = bits(run(GemmKernel::detect()).as_slice());
    for kernel in GemmKernel::supported_for(koembed_tensor::PanelFormat::Bf16) {
        if kernel.formats() == [koembed_tensor::PanelFormat::Bf16] {
            assert_eq!(bits(run(kernel).as_slice()), f32_bits, "{kernel:?}");
        }
    }
}

/// A NaN in one sequence stays in it: the heads that run after it on the same thread (one
/// thread: in order) reuse its scratch, padding included, and must give the bits they give alone.
#[test]
fn amx_bf16_attention_keeps_a_nan_inside_its_sequence() {
    if !GemmKernel::AmxBf16.is_supported() {
        eprintln!("no AMX-BF16 here: the bf16 attention kernel is not tested on this CPU");
        return;
    }
    let mut rng = Rng::new(79);
    let (h, heads) = (64, 2);
    let lengths = [40, 7, 33, 1, 18];
    let total: usize = lengths.iter().sum();
    for which in 0..3 {
        let mut qkv = rng.uniform_vec(total * 3 * h, -2.0, 2.0);
        // Row 3 of the first sequence: a NaN in q, k or v of both heads.
        for head in 0..heads {
            qkv[3 * 3 * h + which * h + head * 32 + 5] = f32::NAN;
        }
        let ranges = packed_ranges(0, &lengths);
        let run = |ranges: &[std::ops::Range<usize>], qkv: &[f32], rows: usize| {
            run_amx(ranges, qkv, rows, h, heads, 0.0)
        };
        let out = common::with_threads(1, || run(&ranges, &qkv, total));
        assert!(
            out.as_slice()[..40 * h].iter().any(|v| v.is_nan()),
            "q/k/v {which}: no NaN in its own sequence"
        );
        for r in &ranges[1..] {
            let alone = run(&[0..r.len()], &qkv[r.start * 3 * h..r.end * 3 * h], r.len());
            let got = &out.as_slice()[r.start * h..r.end * h];
            assert!(
                got.iter().all(|v| v.is_finite()),
                "NaN in q/k/v {which} leaked into {r:?}"
            );
            assert_eq!(bits(alone.as_slice()), bits(got), "sequence {r:?}");
        }
    }
}
