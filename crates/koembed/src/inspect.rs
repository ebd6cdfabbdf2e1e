//! `koembed inspect`: what a model folder holds and how koembed will run it.

use std::fmt::Write;

use koembed_embed::Embedder;

use crate::cli::Context;
use crate::model::{self, ModelArg};
use crate::output;

pub const EXAMPLES: &str = "Examples:\n  \
    koembed inspect --model models/e5-small\n  \
    koembed inspect --model nlpai-lab/KoE5@main";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArg,
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let embedder = model::load(&args.model, ctx)?;
    let mut text = report(&embedder);
    let _ = writeln!(text, "threads      {} (change with --threads)", ctx.threads);
    output::write_stdout(text.as_bytes())
}

/// Bytes of the encoder's working buffers for one call on `texts` sequences of `len` tokens,
/// a rough upper bound: per token the hidden state, its residual copy, the fused QKV, the
/// attention output and the FFN intermediate (f32), plus a `len` x `len` score matrix per head.
pub fn working_bytes(embedder: &Embedder, texts: usize, len: usize) -> usize {
    let c = embedder.encoder_config();
    let per_token = 4 * (6 * c.hidden_size + c.intermediate_size);
    let scores = 4 * len * len * c.num_heads;
    texts * len * per_token + scores
}

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
    let _ = writeln!(
        w,
        "parameters   {:.1} M (encoder, no pooler)",
        c.parameter_count() as f64 / 1e6
    );
    let on_disk: Vec<String> = weights
        .dtype_summary()
        .into_iter()
        .map(|(dtype, (count, bytes))| format!("{dtype}: {count} tensors, {}", mib(bytes)))
        .collect();
    let _ = writeln!(
        w,
        "on disk      {} in {} file(s): {}",
        mib(weights.mapped_bytes()),
        weights.paths().len(),
        on_disk.join("; ")
    );
    let encoder = embedder.encoder();
    let _ = writeln!(
        w,
        "memory       linear layers packed in {} at load: {} private; the file ({}) stays mapped \
         (page cache, shared) for embedding rows, read as used",
        encoder.dtype(),
        mib(encoder.packed_weight_bytes()),
        mib(weights.mapped_bytes()),
    );
    let max_len = embedder.tokenizer().max_seq_length();
    let _ = writeln!(
        w,
        "             working buffers about {} for a batch of 32 texts of {max_len} tokens",
        mib(working_bytes(embedder, 32, max_len))
    );
    let _ = writeln!(
        w,
        "max length   {max_len} tokens (longer texts are truncated and counted)"
    );
    let _ = writeln!(w, "pooling      {}", dir.pooling.describe());
    let dense: Vec<String> = dir
        .dense
        .iter()
        .map(|d| format!("Dense {}->{}", d.in_features, d.out_features))
        .collect();
    if !dense.is_empty() {
        let _ = writeln!(w, "dense        {}", dense.join(", "));
    }
    let _ = writeln!(
        w,
        "normalize    {}",
        if dir.normalize {
            "yes (Normalize module)"
        } else {
            "no"
        }
    );
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
