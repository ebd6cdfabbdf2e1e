//! Attention over packed batches: the packed-GEMM kernel (`attention_packed_qkv`: per sequence
//! and head, K/V packed once, query blocks kept in L2, fused scale + softmax) against the same
//! computation through matrixmultiply (`matmul_nt`, `softmax_rows_inplace`, `matmul_nn` per
//! head on contiguous copies), interleaved in one process.
//!
//! Run: `cargo bench -p koembed-benches --bench attention` (criterion), or with the filter
//! `table` for one summary table (GFLOP/s of Q·Kᵀ and P·V, % of the measured fp32 peak, ratio).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use koembed_benches::{
    attention_flops, interleaved_medians, percent_of_peak, pseudo_random, Variant,
};
use koembed_tensor::{
    attention_packed_qkv, matmul_nn, matmul_nt, softmax_rows_inplace, GemmKernel, Tensor,
};
use rayon::prelude::*;

/// (sequences, tokens each, hidden, heads): W1, W2, W3 on e5-small; W3 on the KoE5 shape.
const CASES: [(usize, usize, usize, usize); 4] = [
    (1, 16, 384, 12),
    (64, 128, 384, 12),
    (8, 512, 384, 12),
    (8, 512, 1024, 16),
];

struct Case {
    seqs: usize,
    t: usize,
    h: usize,
    heads: usize,
    qkv: Tensor,
    ranges: Vec<std::ops::Range<usize>>,
}

impl Case {
    fn new((seqs, t, h, heads): (usize, usize, usize, usize)) -> Case {
        let qkv =
            Tensor::from_vec(pseudo_random(seqs * t * 3 * h, 7, 2.0), &[seqs * t, 3 * h]).unwrap();
        Case {
            seqs,
            t,
            h,
            heads,
            qkv,
            ranges: (0..seqs).map(|s| s * t..(s + 1) * t).collect(),
        }
    }

    fn id(&self) -> String {
        format!("{}x{}_H{}_heads{}", self.seqs, self.t, self.h, self.heads)
    }

    fn flops(&self) -> u64 {
        self.seqs as u64 * attention_flops(self.t, self.h)
    }

    fn packed(&self, out: &mut Tensor, kernel: GemmKernel) {
        attention_packed_qkv(
            out.view_mut(),
            self.qkv.view(),
            &self.ranges,
            self.heads,
            kernel,
        )
        .unwrap();
    }

    /// The matrixmultiply route, parallel over (sequence, head) like the packed kernel.
    fn matrixmultiply(&self, out: &mut Tensor) {
        let (t, h, d) = (self.t, self.h, self.h / self.heads);
        let scale = 1.0 / (d as f32).sqrt();
        let q = self.qkv.as_slice();
        let heads: Vec<Vec<f32>> = (0..self.seqs * self.heads)
            .into_par_iter()
            .map(|i| {
                let (s, head) = (i / self.heads, i % self.heads);
                let part = |which: usize| {
                    let mut m = Tensor::zeros(&[t, d]);
                    for (r, row) in m.as_mut_slice().chunks_exact_mut(d).enumerate() {
                        let start = (s * t + r) * 3 * h + which * h + head * d;
                        row.copy_from_slice(&q[start..start + d]);
                    }
                    m
                };
                let (qh, kh, vh) = (part(0), part(1), part(2));
                let mut scores = Tensor::zeros(&[t, t]);
                matmul_nt(scores.view_mut(), qh.view(), kh.view()).unwrap();
                scores.as_mut_slice().iter_mut().for_each(|v| *v *= scale);
                softmax_rows_inplace(scores.view_mut()).unwrap();
                let mut ctx = Tensor::zeros(&[t, d]);
                matmul_nn(ctx.view_mut(), scores.view(), vh.view()).unwrap();
                ctx.as_slice().to_vec()
            })
            .collect();
        let o = out.as_mut_slice();
        for (i, ctx) in heads.iter().enumerate() {
            let (s, head) = (i / self.heads, i % self.heads);
            for (r, row) in ctx.chunks_exact(d).enumerate() {
                let start = (s * t + r) * h + head * d;
                o[start..start + d].copy_from_slice(row);
            }
        }
    }
}

fn attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention");
    for case in CASES.map(Case::new) {
        let mut out = Tensor::zeros(&[case.seqs * case.t, case.h]);
        group.throughput(Throughput::Elements(case.flops()));
        for kernel in GemmKernel::supported() {
            group.bench_function(
                BenchmarkId::new(case.id(), format!("packed_{kernel:?}")),
                |b| {
                    b.iter(|| {
                        case.packed(&mut out, kernel);
                        black_box(out.as_slice());
                    })
                },
            );
        }
        group.bench_function(BenchmarkId::new(case.id(), "matrixmultiply"), |b| {
            b.iter(|| {
                case.matrixmultiply(&mut out);
                black_box(out.as_slice());
            })
        });
    }
    group.finish();
}

fn summary(_: &mut Criterion) {
    if !koembed_benches::table_requested() {
        return;
    }
    println!("\n| case | variant | GFLOP/s median | % of peak | vs matrixmultiply |");
    println!("|---|---|---|---|---|");
    for case in CASES.map(Case::new) {
        let outs: Vec<std::cell::RefCell<Tensor>> = (0..4)
            .map(|_| std::cell::RefCell::new(Tensor::zeros(&[case.seqs * case.t, case.h])))
            .collect();
        let case = &case;
        let outs = &outs;
        let mut variants: Vec<Variant<'_>> = vec![(
            "matrixmultiply".into(),
            Box::new(move || case.matrixmultiply(&mut outs[0].borrow_mut())),
        )];
        for (i, kernel) in GemmKernel::supported().into_iter().enumerate() {
            variants.push((
                format!("packed {kernel:?}"),
                Box::new(move || case.packed(&mut outs[1 + i].borrow_mut(), kernel)),
            ));
        }
        let flops = case.flops() as f64;
        let reps = (1e10 / flops).clamp(7.0, 300.0) as usize;
        let times = interleaved_medians(reps, &mut variants);
        let base = times[0].0;
        for ((name, _), (median, _)) in variants.iter().zip(&times) {
            let gflops = flops / median / 1e9;
            println!(
                "| {} | {name} | {gflops:.1} | {:.0}% | {:.2}x |",
                case.id(),
                percent_of_peak(gflops),
                base / median
            );
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10);
    targets = attention, summary
}
criterion_main!(benches);
