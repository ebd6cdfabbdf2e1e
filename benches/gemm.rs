//! Packed GEMM (each kernel this CPU supports, and f16 / bf16 panels) against matrixmultiply (`matmul_bias_nt`), in the
//! same run, on the encoder's linear-layer shapes; and the f32 GELU kernels against the exact
//! f64 one.
//!
//! criterion reports "elem/s" with one element = one FLOP, so `Gelem/s` reads as GFLOP/s; after
//! the run a summary table prints GFLOP/s and % of the 234 GFLOP/s 2-thread peak per case
//! (median of a few timed calls, measured in the same process so ratios are comparable).
//! Run: `cargo bench -p koembed-benches --bench gemm -- <filter>` (e.g. `384x1536`, `gelu`);
//! the summary table only with the filter `table`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use koembed_benches::{
    back_to_back_median, interleaved_medians, matmul_flops, percent_of_peak, pseudo_random, Variant,
};
use koembed_tensor::{
    gelu_erf_f32_inplace_with, gelu_erf_inplace, matmul_bias_nt, matmul_packed_bias, Epilogue,
    GeluKernel, GemmKernel, PackedMatrix, PanelFormat, Tensor,
};

/// (K, N): e5-small FFN up / down, KoE5 FFN up / down.
const SHAPES: [(usize, usize); 4] = [(384, 1536), (1536, 384), (1024, 4096), (4096, 1024)];
const TOKENS: [usize; 3] = [16, 128, 8192];

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

fn gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    for (m, k, n) in cases() {
        let x = tensor(&[m, k], 1, 1.0);
        let w = tensor(&[n, k], 2, 0.05);
        let b = tensor(&[n], 3, 0.1);
        let mut out = Tensor::zeros(&[m, n]);
        group.throughput(Throughput::Elements(matmul_flops(m, k, n)));
        let id = format!("{m}x{k}x{n}");
        group.bench_function(BenchmarkId::new(&id, "matrixmultiply"), |bench| {
            bench.iter(|| {
                matmul_bias_nt(out.view_mut(), x.view(), w.view(), b.view()).unwrap();
                black_box(out.as_slice());
            })
        });
        for kernel in GemmKernel::supported() {
            if kernel == GemmKernel::Portable && m > 128 {
                continue;
            }
            let p = PackedMatrix::pack_b_with_kernel(w.view(), kernel).unwrap();
            group.bench_function(
                BenchmarkId::new(&id, format!("packed_{kernel:?}")),
                |bench| {
                    bench.iter(|| {
                        matmul_packed_bias(out.view_mut(), x.view(), &p, b.view(), Epilogue::None)
                            .unwrap();
                        black_box(out.as_slice());
                    })
                },
            );
        }
        // FFN up with the fused GELU (the best kernel) against GEMM + exact GELU.
        if n > k {
            let p = PackedMatrix::pack_b(w.view()).unwrap();
            group.bench_function(BenchmarkId::new(&id, "packed_gelu_fused"), |bench| {
                bench.iter(|| {
                    matmul_packed_bias(out.view_mut(), x.view(), &p, b.view(), Epilogue::Gelu)
                        .unwrap();
                    black_box(out.as_slice());
                })
            });
            group.bench_function(
                BenchmarkId::new(&id, "matrixmultiply+gelu_erf_exact"),
                |bench| {
                    bench.iter(|| {
                        matmul_bias_nt(out.view_mut(), x.view(), w.view(), b.view()).unwrap();
                        gelu_erf_inplace(out.as_mut_slice());
                        black_box(out.as_slice());
                    })
                },
            );
        }
    }
    group.finish();
}

fn gelu(c: &mut Criterion) {
    let mut group = c.benchmark_group("gelu");
    for m in TOKENS {
        let a0 = pseudo_random(m * 1536, 9, 4.0);
        let mut a = a0.clone();
        group.throughput(Throughput::Elements(a.len() as u64));
        group.bench_function(
            BenchmarkId::new(format!("{m}x1536"), "exact_f64"),
            |bench| {
                bench.iter(|| {
                    a.copy_from_slice(&a0);
                    gelu_erf_inplace(&mut a);
                    black_box(&a);
                })
            },
        );
        for kernel in GeluKernel::supported() {
            group.bench_function(
                BenchmarkId::new(format!("{m}x1536"), format!("f32_{kernel:?}")),
                |bench| {
                    bench.iter(|| {
                        a.copy_from_slice(&a0);
                        gelu_erf_f32_inplace_with(kernel, &mut a);
                        black_box(&a);
                    })
                },
            );
        }
    }
    group.finish();
}

/// One table with every GEMM case and variant, the variants of a case measured interleaved in
/// this process (filter `table`).
fn summary(_: &mut Criterion) {
    if !koembed_benches::table_requested() {
        return;
    }
    println!(
        "\n| M x K x N | variant | GFLOP/s median | % of peak | vs matrixmultiply | \
         GFLOP/s best | vs matrixmultiply (best) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (m, k, n) in cases() {
        let x = tensor(&[m, k], 1, 1.0);
        let w = tensor(&[n, k], 2, 0.05);
        let b = tensor(&[n], 3, 0.1);
        let flops = matmul_flops(m, k, n) as f64;
        let reps = (2e10 / flops).clamp(7.0, 300.0) as usize;
        let mut packed: Vec<PackedMatrix> = GemmKernel::supported()
            .into_iter()
            .filter(|&kr| kr != GemmKernel::Portable || m <= 128)
            .map(|kr| PackedMatrix::pack_b_with_kernel(w.view(), kr).unwrap())
            .collect();
        // Half-precision panels (--dtype f16 / bf16) on the fastest kernel.
        for format in [PanelFormat::F16, PanelFormat::Bf16] {
            packed.push(PackedMatrix::pack_b_as(w.view(), GemmKernel::detect(), format).unwrap());
        }
        // `vdpbf16ps` and AMX, where the CPU has them (whether or not the default for bf16).
        for kernel in [GemmKernel::Avx512Bf16, GemmKernel::AmxBf16] {
            if kernel.is_supported() {
                packed.push(PackedMatrix::pack_b_as(w.view(), kernel, PanelFormat::Bf16).unwrap());
            }
        }
        let outs: Vec<std::cell::RefCell<Tensor>> = (0..packed.len() + 3)
            .map(|_| std::cell::RefCell::new(Tensor::zeros(&[m, n])))
            .collect();
        let (x, b, outs) = (&x, &b, &outs);
        let mut variants: Vec<Variant<'_>> = Vec::new();
        let w_view = w.view();
        variants.push((
            "matrixmultiply".into(),
            Box::new(move || {
                let mut o = outs[0].borrow_mut();
                matmul_bias_nt(o.view_mut(), x.view(), w_view, b.view()).unwrap()
            }),
        ));
        for (i, p) in packed.iter().enumerate() {
            let out = &outs[1 + i];
            variants.push((
                format!("packed {:?} {}", p.kernel(), p.format().name()),
                Box::new(move || {
                    let mut o = out.borrow_mut();
                    matmul_packed_bias(o.view_mut(), x.view(), p, b.view(), Epilogue::None).unwrap()
                }),
            ));
        }
        if n > k {
            let (p, out) = (&packed[0], &outs[packed.len() + 1]);
            variants.push((
                format!("packed {:?} + fused GELU", p.kernel()),
                Box::new(move || {
                    let mut o = out.borrow_mut();
                    matmul_packed_bias(o.view_mut(), x.view(), p, b.view(), Epilogue::Gelu).unwrap()
                }),
            ));
            let out = &outs[packed.len() + 2];
            variants.push((
                "matrixmultiply + exact GELU".into(),
                Box::new(move || {
                    let mut o = out.borrow_mut();
                    matmul_bias_nt(o.view_mut(), x.view(), w_view, b.view()).unwrap();
                    gelu_erf_inplace(o.as_mut_slice());
                }),
            ));
        }
        let mut secs = interleaved_medians(reps, &mut variants);
        // The default kernel again, timed as the OpenBLAS peer script times numpy: the same
        // call back to back (at M = 16 the interleaved medians above include the other
        // variants evicting this one's weights from L2 and the second thread's wake-up).
        let (name, default_kernel) = (
            format!("{} back to back", variants[1].0),
            &mut variants[1].1,
        );
        let back_to_back = back_to_back_median(reps, default_kernel);
        secs.push(back_to_back);
        let names = variants.iter().map(|(name, _)| name.clone()).chain([name]);
        for (name, &(med, best)) in names.zip(&secs) {
            let g = flops / med / 1e9;
            println!(
                "| {m}x{k}x{n} | {name} | {g:.1} | {:.0}% | {:.2}x | {:.1} | {:.2}x |",
                percent_of_peak(g),
                secs[0].0 / med,
                flops / best / 1e9,
                secs[0].1 / best,
            );
        }
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
    targets = gemm, gelu
}
criterion_group! {
    name = table;
    config = Criterion::default();
    targets = summary
}
criterion_main!(benches, table);
