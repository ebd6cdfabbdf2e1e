//! Shared test inputs: a seeded generator and the odd shapes every op is tried on.
#![allow(dead_code)]

/// Sizes that straddle SIMD widths and blocking edges (1, 3, 7, 17, 65).
pub const SIZES: [usize; 5] = [1, 3, 7, 17, 65];

/// (M, K, N) combinations up to 130, beyond the plain product of `SIZES`.
pub const BIG_COMBOS: [(usize, usize, usize); 5] = [
    (130, 65, 17),
    (17, 130, 65),
    (65, 17, 130),
    (130, 130, 7),
    (3, 130, 130),
];

/// SplitMix64: deterministic, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    pub fn uniform_vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Integers in [-r, r] as f32: products and sums stay exact in f32.
    pub fn int_vec(&mut self, len: usize, r: i64) -> Vec<f32> {
        (0..len)
            .map(|_| ((self.next_u64() % (2 * r as u64 + 1)) as i64 - r) as f32)
            .collect()
    }
}

/// Runs `f` inside a rayon pool of `threads` threads.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool")
        .install(f)
}

/// Bit patterns, so that NaN == NaN and -0 != +0.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The f32 GEMM kernels a test runs: see [`pinned`] (`KOEMBED_TEST_GEMM_KERNELS`).
pub fn gemm_kernels() -> Vec<koembed_tensor::GemmKernel> {
    pinned(
        "KOEMBED_TEST_GEMM_KERNELS",
        koembed_tensor::GemmKernel::supported(),
    )
}

/// The int8 kernels a test runs: see [`pinned`] (`KOEMBED_TEST_INT8_KERNELS`).
pub fn int8_kernels() -> Vec<koembed_tensor::Int8Kernel> {
    pinned(
        "KOEMBED_TEST_INT8_KERNELS",
        koembed_tensor::Int8Kernel::supported(),
    )
}

/// Every kernel this CPU supports, or only those named in the variable `var` (comma-separated
/// `Debug` names, e.g. `Avx512`), which `cargo xtask emulate` sets: under emulation the other
/// kernels are slow, and they are tested natively. A named kernel this CPU lacks fails the
/// test instead of testing nothing.
fn pinned<K: std::fmt::Debug + Copy>(var: &str, supported: Vec<K>) -> Vec<K> {
    let Ok(names) = std::env::var(var) else {
        return supported;
    };
    names
        .split(',')
        .map(|name| {
            *supported
                .iter()
                .find(|k| format!("{k:?}") == name.trim())
                .unwrap_or_else(|| panic!("{var}: {name} is not among {supported:?}"))
        })
        .collect()
}
