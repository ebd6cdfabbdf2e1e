//! Shared helpers for the benchmarks (machine peak, FLOP counts, inputs, interleaved timing).

use std::time::Instant;

/// The benchmark machine's fp32 FMA peak with 2 threads (2 Zen 4 cores at 3.66 GHz, 32 FLOP per
/// cycle each; `shared/docs/performance.md`). Practical sgemm reaches about 90% of it.
pub const PEAK_FP32_GFLOPS_2T: f64 = 234.0;

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

/// Percent of [`PEAK_FP32_GFLOPS_2T`] reached by `gflops`.
pub fn percent_of_peak(gflops: f64) -> f64 {
    100.0 * gflops / PEAK_FP32_GFLOPS_2T
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
