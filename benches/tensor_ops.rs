//! Kernel benchmarks for koembed-tensor.
//!
//! Matmul throughput is reported by criterion as "elem/s" where one element is one FLOP, so
//! `Gelem/s` reads as GFLOP/s. Run: `cargo bench -p koembed-benches --bench tensor_ops`
//! (add a filter such as `matmul_bias_nt` to run one group).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use koembed_benches::{attention_flops, matmul_flops, pseudo_random};
use koembed_tensor::{
    add_layernorm_inplace, attention_single_sequence_qkv, gelu_erf_inplace, layernorm_inplace,
    matmul_bias_nt, softmax_rows_inplace, Tensor,
};

/// e5-small's shapes: hidden 384, FFN 1536, 12 heads.
const HIDDEN: usize = 384;
const FFN: usize = 1536;
const HEADS: usize = 12;
/// Tokens per call: one short query, and a batch.
const TOKENS: [usize; 2] = [16, 128];

fn tensor(shape: &[usize], seed: u32, scale: f32) -> Tensor {
    let len = shape.iter().product();
    Tensor::from_vec(pseudo_random(len, seed, scale), shape).unwrap()
}

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_bias_nt");
    // FFN up (K = 384 -> N = 1536) and down (K = 1536 -> N = 384).
    for (k, n) in [(HIDDEN, FFN), (FFN, HIDDEN)] {
        for m in TOKENS {
            let x = tensor(&[m, k], 1, 1.0);
            let w = tensor(&[n, k], 2, 0.05);
            let b = tensor(&[n], 3, 0.1);
            let mut out = Tensor::zeros(&[m, n]);
            group.throughput(Throughput::Elements(matmul_flops(m, k, n)));
            group.bench_function(BenchmarkId::new(format!("{m}x{k}x{n}"), "GFLOP"), |bench| {
                bench.iter(|| {
                    matmul_bias_nt(out.view_mut(), x.view(), w.view(), b.view()).unwrap();
                    black_box(out.as_slice());
                })
            });
        }
    }
    group.finish();
}

fn rowwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("rowwise");
    for m in TOKENS {
        let gamma = tensor(&[HIDDEN], 4, 1.0);
        let beta = tensor(&[HIDDEN], 5, 0.1);
        let x0 = tensor(&[m, HIDDEN], 6, 3.0);
        let residual = tensor(&[m, HIDDEN], 7, 3.0);
        let mut x = x0.clone();
        group.throughput(Throughput::Elements((m * HIDDEN) as u64));
        group.bench_function(
            BenchmarkId::new("layernorm", format!("{m}x{HIDDEN}")),
            |bench| {
                bench.iter(|| {
                    x.as_mut_slice().copy_from_slice(x0.as_slice());
                    layernorm_inplace(x.view_mut(), gamma.view(), beta.view(), 1e-12).unwrap();
                    black_box(x.as_slice());
                })
            },
        );
        group.bench_function(
            BenchmarkId::new("add_layernorm", format!("{m}x{HIDDEN}")),
            |bench| {
                bench.iter(|| {
                    x.as_mut_slice().copy_from_slice(x0.as_slice());
                    add_layernorm_inplace(
                        x.view_mut(),
                        residual.view(),
                        gamma.view(),
                        beta.view(),
                        1e-12,
                    )
                    .unwrap();
                    black_box(x.as_slice());
                })
            },
        );

        // Attention scores of one layer: [heads * T, T].
        let s0 = tensor(&[HEADS * m, m], 8, 8.0);
        let mut s = s0.clone();
        group.throughput(Throughput::Elements((HEADS * m * m) as u64));
        group.bench_function(
            BenchmarkId::new("softmax", format!("{}x{m}", HEADS * m)),
            |bench| {
                bench.iter(|| {
                    s.as_mut_slice().copy_from_slice(s0.as_slice());
                    softmax_rows_inplace(s.view_mut()).unwrap();
                    black_box(s.as_slice());
                })
            },
        );

        let a0 = pseudo_random(m * FFN, 9, 4.0);
        let mut a = a0.clone();
        group.throughput(Throughput::Elements((m * FFN) as u64));
        group.bench_function(
            BenchmarkId::new("gelu_erf", format!("{m}x{FFN}")),
            |bench| {
                bench.iter(|| {
                    a.copy_from_slice(&a0);
                    gelu_erf_inplace(&mut a);
                    black_box(&a);
                })
            },
        );
    }
    group.finish();
}

fn attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention_single_sequence");
    for t in TOKENS {
        let qkv = tensor(&[t, 3 * HIDDEN], 10, 1.0);
        let mut out = Tensor::zeros(&[t, HIDDEN]);
        group.throughput(Throughput::Elements(attention_flops(t, HIDDEN)));
        group.bench_function(
            BenchmarkId::new(format!("T{t}_H{HIDDEN}_heads{HEADS}"), "GFLOP"),
            |bench| {
                bench.iter(|| {
                    attention_single_sequence_qkv(out.view_mut(), qkv.view(), HEADS).unwrap();
                    black_box(out.as_slice());
                })
            },
        );
    }
    group.finish();
}

fn config() -> Criterion {
    // Short runs: these are for comparing kernels side by side, not for publication.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = matmul, rowwise, attention
}
criterion_main!(benches);
