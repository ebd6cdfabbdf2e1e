//! Shared helpers for the benchmarks (machine peak, FLOP counts, inputs, interleaved timing).

use std::time::Instant;

/// The benchmark machine's fp32 FMA peak with 2 threads (2 Zen 4 cores at 3.66 GHz, 32 FLOP per
/// cycle each; `shared/docs/performance.md`). Practical sgemm reaches about 90% of it.
pub const PEAK_FP32_GFLOPS_2T: f64 = 234.0;

pub use rayon;

/// Floating-point operations of `out[M,N] = x[M,K] · w[N,K]ᵀ` (+ bias): one multiply and one add
/// per term.
pub fn matmul_flops(m: usize, k: usize, n: usize) -> u64 {
    2 * (m * k * n) as u64
}

/// Floating-point operations of one sequence's attention core (Q·Kᵀ and P·V; softmax not
/// counted).
pub fn attention_flops(t: usize, h: usize) -> u64 {
    2 * matmul_flops(t, h, t)
}

/// Deterministic values in [-scale, scale) (a cheap LCG: benchmarks need data, not randomness).
pub fn pseudo_random(len: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Percent of this machine's measured fp32 peak ([`measured_peak_gflops`]) reached by `gflops`.
pub fn percent_of_peak(gflops: f64) -> f64 {
    100.0 * gflops / measured_peak_gflops()
}

/// This machine's fp32 FMA peak on rayon's threads, measured once per process: each thread
/// runs independent AVX2 FMA chains (enough to hide the latency on two FMA pipes) for about
/// 0.05 s, best of 15 (the best, because a shared machine only ever slows a run down). Falls back to [`PEAK_FP32_GFLOPS_2T`] without AVX2 + FMA. The figure the
/// benchmark tables divide by, printed in their headers.
pub fn measured_peak_gflops() -> f64 {
    static PEAK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PEAK.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            use rayon::prelude::*;
            // The widest FMA the GEMM kernels use here: a Xeon with AVX-512 has twice the
            // AVX2 peak (two 512-bit FMA pipes), Zen 4 the same.
            let wide = koembed_tensor::GemmKernel::detect() == koembed_tensor::GemmKernel::Avx512;
            let threads = rayon::current_num_threads();
            let iters = 5_000_000u64;
            let best = (0..15)
                .map(|_| {
                    let start = Instant::now();
                    let sink: f32 = (0..threads)
                        .into_par_iter()
                        // SAFETY: AVX2 + FMA were checked just above, AVX-512F by the
                        // kernel's detection when `wide`.
                        .map(|t| unsafe {
                            if wide {
                                fma_chains_avx512(iters, t as f32)
                            } else {
                                fma_chains(iters, t as f32)
                            }
                        })
                        .sum();
                    std::hint::black_box(sink);
                    start.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min);
            // 10 chains x 8 (16) lanes x 2 FLOP per iteration per thread.
            let lanes = if wide { 16 } else { 8 };
            return (threads as u64 * iters * 10 * lanes * 2) as f64 / best / 1e9;
        }
        PEAK_FP32_GFLOPS_2T
    })
}

/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(seed); 10];
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    for _ in 0..iters {
        for v in &mut acc {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut lanes = [0.0f32; 8];
    let total = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
    // SAFETY: `lanes` holds 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
    lanes.iter().sum()
}

/// [`fma_chains`] on 16 lanes.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(seed); 10];
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    for _ in 0..iters {
        for v in &mut acc {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    _mm512_reduce_add_ps(
        acc.iter()
            .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v)),
    )
}

/// This machine's memory read bandwidth in GB/s on `threads` threads, measured once per
/// thread count: each thread sums its own slice of a 256 MB buffer (8 times the 32 MB L3, so it
/// comes from memory), best of 5. The figure to hold a memory-bound case against: one e5-small
/// query streams 85 MB of f32 weights.
pub fn measured_read_gbs(threads: usize) -> f64 {
    use rayon::prelude::*;
    static BUFFER: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    let words = BUFFER.get_or_init(|| (0..32u64 << 20).collect());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a bench thread pool");
    let best = (0..5)
        .map(|_| {
            let start = Instant::now();
            let sink: u64 = pool.install(|| {
                words
                    .par_chunks(words.len().div_ceil(threads))
                    .map(|c| c.iter().fold(0u64, |s, &w| s.wrapping_add(w)))
                    .reduce(|| 0, u64::wrapping_add)
            });
            std::hint::black_box(sink);
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    (words.len() * 8) as f64 / best / 1e9
}

/// A named closure to time.
pub type Variant<'a> = (String, Box<dyn FnMut() + 'a>);

/// Times the variants interleaved (one call of each per round, after one warm-up round), so
/// that load from other processes hits them alike; returns each variant's (median, best) seconds.
pub fn interleaved_medians(reps: usize, variants: &mut [Variant<'_>]) -> Vec<(f64, f64)> {
    for (_, f) in variants.iter_mut() {
        f();
    }
    let mut times = vec![Vec::with_capacity(reps); variants.len()];
    for _ in 0..reps {
        for ((_, f), t) in variants.iter_mut().zip(&mut times) {
            let s = Instant::now();
            f();
            t.push(s.elapsed().as_secs_f64());
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            (t[t.len() / 2], t[0])
        })
        .collect()
}

/// Median and best seconds of `reps` consecutive calls of `f` after one warm-up call: how
/// `benches/peers/numpy_sgemm.py` times OpenBLAS (its operands stay in cache and its threads
/// stay awake from call to call, unlike in [`interleaved_medians`], where the other variants
/// run in between).
pub fn back_to_back_median(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0])
}

/// Whether the benchmark was asked for its summary table (the filter `table`); if so, prints
/// the measured peak the table's "% of peak" column divides by.
pub fn table_requested() -> bool {
    if !std::env::args().any(|a| a == "table") {
        return false;
    }
    let threads = rayon::current_num_threads();
    println!(
        "\nmeasured fp32 FMA peak: {:.0} GFLOP/s on {threads} threads; memory reads {:.1} GB/s \
         on 1 thread, {:.1} GB/s on {threads}",
        measured_peak_gflops(),
        measured_read_gbs(1),
        measured_read_gbs(threads),
    );
    true
}
