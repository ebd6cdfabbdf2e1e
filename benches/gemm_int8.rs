//! Int8 GEMM ([`matmul_quantized_bias`]) against the f32 packed GEMM ([`matmul_packed_bias`]),
//! each with the fastest kernel of this CPU, on the encoder's linear-layer shapes.
//!
//! One operation = one multiply or one add (2·M·N·K per call), for both, so GOP/s of the int8
//! kernel and GFLOP/s of the f32 one compare directly. The int8 time includes quantizing the
//! activations (every call does).
//! Run: `cargo bench -p koembed-benches --bench gemm_int8 -- <filter>` (e.g. `128x384`); the
//! summary table (interleaved medians in one process, the ratio int8 / f32) only with the
//! filter `table`.

use std::cell::RefCell;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use koembed_benches::{interleaved_medians, matmul_flops, pseudo_random, Variant};
use koembed_tensor::{
    matmul_packed_bias, matmul_quantized_bias, Epilogue, Int8Kernel, PackedMatrix, QuantizedMatrix,
    Tensor,
};

/// (K, N): e5-small FFN up / down, KoE5 FFN up / down.
const SHAPES: [(usize, usize); 4] = [(384, 1536), (1536, 384), (1024, 4096), (4096, 1024)];
const TOKENS: [usize; 2] = [16, 128];

fn tensor(shape: &[usize], seed: u32, scale: f32) -> Tensor {
    let len = shape.iter().product();
    Tensor::from_vec(pseudo_random(len, seed, scale), shape).unwrap()
}

fn cases() -> Vec<(usize, usize, usize)> {
    SHAPES
        .iter()
        .flat_map(|&(k, n)| TOKENS.map(|m| (m, k, n)))
        .collect()
}

fn gemm_int8(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_int8");
    for (m, k, n) in cases() {
        let x = tensor(&[m, k], 1, 1.0);
        let w = tensor(&[n, k], 2, 0.05);
        let b = tensor(&[n], 3, 0.1);
        let mut out = Tensor::zeros(&[m, n]);
        group.throughput(Throughput::Elements(matmul_flops(m, k, n)));
        let id = format!("{m}x{k}x{n}");
        let p = PackedMatrix::pack_b(w.view()).unwrap();
        group.bench_function(
            BenchmarkId::new(&id, format!("f32_{:?}", p.kernel())),
            |bench| {
                bench.iter(|| {
                    matmul_packed_bias(out.view_mut(), x.view(), &p, b.view(), Epilogue::None)
                        .unwrap();
                    black_box(out.as_slice());
                })
            },
        );
        for kernel in Int8Kernel::supported() {
            let q = QuantizedMatrix::quantize_b_with_kernel(w.view(), kernel).unwrap();
            group.bench_function(BenchmarkId::new(&id, format!("int8_{kernel:?}")), |bench| {
                bench.iter(|| {
                    matmul_quantized_bias(out.view_mut(), x.view(), &q, b.view(), Epilogue::None)
                        .unwrap();
                    black_box(out.as_slice());
                })
            });
        }
    }
    group.finish();
}

/// One table: f32 packed and int8 (best kernels), interleaved in this process (filter `table`).
fn summary(_: &mut Criterion) {
    if !koembed_benches::table_requested() {
        return;
    }
    let (f32_kernel, int8_kernel) = (koembed_tensor::GemmKernel::detect(), Int8Kernel::detect());
    println!(
        "\n| M x K x N | f32 {f32_kernel:?} GFLOP/s | int8 {int8_kernel:?} GOP/s | int8 / f32 | \
         f32 best | int8 best | int8 / f32 (best) | weights f32 / int8 MB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (m, k, n) in cases() {
        let x = tensor(&[m, k], 1, 1.0);
        let w = tensor(&[n, k], 2, 0.05);
        let b = tensor(&[n], 3, 0.1);
        let ops = matmul_flops(m, k, n) as f64;
        let reps = (2e10 / ops).clamp(15.0, 300.0) as usize;
        let p = PackedMatrix::pack_b(w.view()).unwrap();
        let q = QuantizedMatrix::quantize_b(w.view()).unwrap();
        let outs = [(); 2].map(|_| RefCell::new(Tensor::zeros(&[m, n])));
        let (x, b, p, q, outs) = (&x, &b, &p, &q, &outs);
        let mut variants: Vec<Variant<'_>> = vec![
            (
                "f32".into(),
                Box::new(move || {
                    let mut o = outs[0].borrow_mut();
                    matmul_packed_bias(o.view_mut(), x.view(), p, b.view(), Epilogue::None).unwrap()
                }),
            ),
            (
                "int8".into(),
                Box::new(move || {
                    let mut o = outs[1].borrow_mut();
                    matmul_quantized_bias(o.view_mut(), x.view(), q, b.view(), Epilogue::None)
                        .unwrap()
                }),
            ),
        ];
        let secs = interleaved_medians(reps, &mut variants);
        let ((f_med, f_best), (i_med, i_best)) = (secs[0], secs[1]);
        println!(
            "| {m}x{k}x{n} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1} | {:.2}x | {:.2} / {:.2} |",
            ops / f_med / 1e9,
            ops / i_med / 1e9,
            f_med / i_med,
            ops / f_best / 1e9,
            ops / i_best / 1e9,
            f_best / i_best,
            p.memory_bytes() as f64 / 1e6,
            q.memory_bytes() as f64 / 1e6,
        );
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
}

criterion_group! {
    name = benches;
    config = config();
    targets = gemm_int8
}
criterion_group! {
    name = table;
    config = Criterion::default();
    targets = summary
}
criterion_main!(benches, table);
