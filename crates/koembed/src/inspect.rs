//! `koembed inspect`: what a model folder holds and how koembed will run it.

use std::fmt::Write;

use koembed_embed::Embedder;

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A human-readable report of a loaded model.
pub fn report(embedder: &Embedder) -> String {
    let dir = embedder.model_dir();
    let c = embedder.encoder_config();
    let weights = embedder.encoder().weights();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "model        {}", dir.root.display());
    let _ = writeln!(w, "architecture {} ({})", c.architecture, c.family.name());
    let _ = writeln!(
        w,
        "sizes        {} layers, hidden {}, {} heads (head dim {}), FFN {}, vocab {}",
        c.num_layers,
        c.hidden_size,
        c.num_heads,
        c.head_dim(),
        c.intermediate_size,
        c.vocab_size
    );
    let _ = writeln!(
        w,
        "positions    {} (first token at {}), layer_norm_eps {:e}",
        c.max_position_embeddings, c.position_offset, c.layer_norm_eps
    );
    let _ = writeln!(w, "parameters   {:.1} M (encoder, no pooler)", c.parameter_count() as f64 / 1e6);
    let mut on_disk = Vec::new();
    let mut converted = 0usize;
    for (dtype, (count, bytes)) in weights.dtype_summary() {
        on_disk.push(format!("{dtype}: {count} tensors, {}", mib(bytes)));
        if dtype != "F32" && dtype != "I64" {
            converted += bytes * 2;
        }
    }
    let _ = writeln!(w, "on disk      {} in {} file(s): {}", mib(weights.mapped_bytes()), weights.paths().len(), on_disk.join("; "));
    let _ = writeln!(
        w,
        "memory       f32 weights are mapped from the file (page cache, shared); half-precision \
         weights converted to f32 at load take {}",
        mib(converted)
    );
    let max_len = embedder.tokenizer().max_seq_length();
    let _ = writeln!(w, "max length   {max_len} tokens (longer texts are truncated and counted)");
    let _ = writeln!(w, "pooling      {}", dir.pooling.describe());
    let dense: Vec<String> = dir.dense.iter().map(|d| format!("Dense {}->{}", d.in_features, d.out_features)).collect();
    if !dense.is_empty() {
        let _ = writeln!(w, "dense        {}", dense.join(", "));
    }
    let _ = writeln!(w, "normalize    {}", if dir.normalize { "yes (Normalize module)" } else { "no" });
    let _ = writeln!(w, "dimension    {}", embedder.dim());
    if !dir.matryoshka_dims.is_empty() {
        let dims: Vec<String> = dir.matryoshka_dims.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(w, "matryoshka   {}", dims.join(", "));
    }
    let (prompts, source) = embedder.prompts();
    let listed: Vec<String> = prompts.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    let _ = writeln!(w, "prompts      {} (from {source})", listed.join(", "));
    if let Some(name) = &dir.default_prompt_name {
        let _ = writeln!(w, "default      prompt {name}");
    }
    for warning in &dir.warnings {
        let _ = writeln!(w, "warning      {warning}");
    }
    out
}
