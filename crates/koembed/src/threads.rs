//! How many threads the encoder uses, decided once at startup.
//!
//! Two pools run the encoder: rayon's global pool (attention heads, row-wise ops) and
//! matrixmultiply's own threads, which it sizes from `MATMUL_NUM_THREADS` the first time it
//! multiplies (and caps at 4). So both are set here, before any model is loaded.

use anyhow::Context;

/// The cores this process may run on: `std::thread::available_parallelism` counts the CPU
/// affinity mask and, on Linux, the cgroup v2 quota (`cpu.max`).
pub fn available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sizes both pools and returns the encoder's thread count.
///
/// `Some(n)` (from `--threads`) wins over everything. Without it, `RAYON_NUM_THREADS` and
/// `MATMUL_NUM_THREADS`, when set, are left to their libraries; otherwise both get
/// [`available`].
pub fn configure(requested: Option<usize>) -> anyhow::Result<usize> {
    let from_env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
    };
    let default = available();
    let (rayon_threads, matmul_threads) = match requested {
        Some(n) => (n, n),
        None => (
            from_env("RAYON_NUM_THREADS").unwrap_or(default),
            from_env("MATMUL_NUM_THREADS").unwrap_or(default),
        ),
    };
    // matrixmultiply reads this once, lazily, at its first multiplication: nothing has run yet.
    std::env::set_var("MATMUL_NUM_THREADS", matmul_threads.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(rayon_threads)
        .build_global()
        .context("starting the thread pool")?;
    Ok(rayon_threads)
}
