"""ONNX Runtime's own profile of a workload, per operator: the peer's side of
`koembed bench --stages`.

usage: python ort_profile.py MODEL.onnx W1|W2|W3 THREADS [--reps N] [--peers ../shared/peers]
Same session as ../shared/peers/bench_ort.py (intra-op THREADS, sequential, all graph
optimizations) with ORT's profiler on. Prints, per operator type and output width, the median
time per run and the share, and what the operator covers in koembed's stage names: ORT's fused
`Attention` holds the Q/K/V projection and attention, `MatMul` nodes leave bias, GELU and the
residual to `BiasGelu` and `SkipLayerNormalization`.
"""
import argparse, collections, json, os, statistics, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("onnx"); ap.add_argument("workload"); ap.add_argument("threads", type=int)
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--peers", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "..", "..", "shared", "peers"))
a = ap.parse_args()
sys.path.insert(0, a.peers)
import numpy as np
import onnxruntime as ort
import workloads

so = ort.SessionOptions()
so.intra_op_num_threads = a.threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.enable_profiling = True
so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
sess = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])
ids = workloads.make(a.workload)
names = {i.name for i in sess.get_inputs()}
feeds = {k: v for k, v in {"input_ids": ids, "attention_mask": np.ones_like(ids)}.items() if k in names}
sess.run(None, feeds)  # warm-up (profiled too; dropped below)
walls = []
for _ in range(a.reps):
    t = time.perf_counter()
    sess.run(None, feeds)
    walls.append(time.perf_counter() - t)
events = json.load(open(sess.end_profiling()))

# Node events in run order; a run ends at its "model_run" event.
runs, current = [], collections.defaultdict(float)
for e in events:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        args = e["args"]
        shape = next(iter(args.get("output_type_shape", [{}])[0].values()), [])
        current[(args.get("op_name"), shape[-1] if shape else None)] += e["dur"] / 1e3
    elif e.get("cat") == "Session" and e["name"] == "model_run":
        runs.append(current); current = collections.defaultdict(float)
runs = runs[1:]  # the warm-up
COVERS = {"Attention": "qkv projection + attention", "BiasGelu": "gelu (+ ffn in bias)",
          "SkipLayerNormalization": "residual + bias + layernorm",
          "EmbedLayerNormalization": "embeddings"}
keys = sorted({k for r in runs for k in r}, key=lambda k: -statistics.median(r.get(k, 0) for r in runs))
total = statistics.median(sum(r.values()) for r in runs)
print(f"onnxruntime {ort.__version__}, {os.path.basename(a.onnx)}, {a.workload}, {a.threads} threads, "
      f"{len(runs)} runs: wall median {statistics.median(walls) * 1e3:.2f} ms, operators {total:.2f} ms")
print(f"{'operator':<26} {'width':>6} {'ms/run':>10} {'share':>7}  covers")
for op, width in keys:
    ms = statistics.median(r.get((op, width), 0) for r in runs)
    if ms < 0.005 * total:
        continue
    # The FFN's inner width is 4x the hidden size: 1536 (e5-small) or 4096 (KoE5), against 384 or 1024.
    wide = op == "MatMul" and (width or 0) > 1024
    covers = COVERS.get(op, "ffn in" if wide else "attention output, ffn out" if op == "MatMul" else "")
    print(f"{op:<26} {width!s:>6} {ms:>10.2f} {100 * ms / total:>6.1f}%  {covers}")
