"""OpenBLAS sgemm through numpy on the GEMM bench's shapes: x[M,K] @ w[N,K].T + b, 2 threads.

usage: OPENBLAS_NUM_THREADS=2 python numpy_sgemm.py
Prints one Markdown row per shape: GFLOP/s median (and best) of interleaved calls, the same
shapes and FLOP count as `cargo bench -p koembed-benches --bench gemm -- table`.
"""
import statistics, time
import numpy as np

SHAPES = [(384, 1536), (1536, 384), (1024, 4096), (4096, 1024)]
TOKENS = [16, 128, 8192]

print(f"numpy {np.__version__}")
print("| M x K x N | OpenBLAS (numpy) GFLOP/s median | best |")
print("|---|---|---|")
rng = np.random.default_rng(0)
for k, n in SHAPES:
    for m in TOKENS:
        x = rng.uniform(-1, 1, (m, k)).astype(np.float32)
        w = rng.uniform(-0.05, 0.05, (n, k)).astype(np.float32)
        b = rng.uniform(-0.1, 0.1, n).astype(np.float32)
        out = np.empty((m, n), np.float32)
        flops = 2.0 * m * k * n
        reps = int(min(max(2e10 / flops, 7), 300))
        np.matmul(x, w.T, out=out); out += b
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            np.matmul(x, w.T, out=out)
            out += b
            times.append(time.perf_counter() - t)
        med, best = statistics.median(times), min(times)
        print(f"| {m}x{k}x{n} | {flops / med / 1e9:.1f} | {flops / best / 1e9:.1f} |", flush=True)
