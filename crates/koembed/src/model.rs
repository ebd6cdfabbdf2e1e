//! Options shared by the subcommands that load a model: `--model`, the prompt, the Matryoshka
//! cut; and loading, with the checks that make a bad option fail before any work is done.

use anyhow::{bail, Context as _};
use koembed_embed::{ComputeDtype, Embedder, Prompt, DEFAULT_MAX_BATCH_TOKENS};

use crate::cli::Context;

/// `--model`: a folder or a Hugging Face hub id.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArg {
    /// A sentence-transformers (or bare Hugging Face) model folder, or a hub id
    /// `org/name[@revision]` (downloaded into the Hugging Face cache when missing).
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: String,
    /// What the encoder's linear layers compute in: f32 (exact, the default), f16 (half the
    /// weight memory), bf16 (bf16 weights and activations, f32 sums) or int8 (per-channel
    /// weights, per-row activations). Accuracy per dtype: README, "Reduced precision".
    #[arg(long, value_name = "DTYPE", default_value = "f32")]
    pub dtype: ComputeDtype,
}

/// `--prompt NAME` or `--prefix TEXT`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PromptArgs {
    /// A named prompt (`query`, `passage`, or one from the model's config) prepended to every
    /// text. Default: the model's default_prompt_name, if any.
    #[arg(long, value_name = "NAME", conflicts_with = "prefix")]
    pub prompt: Option<String>,
    /// A literal prefix prepended to every text (e.g. "query: ").
    #[arg(long, value_name = "TEXT")]
    pub prefix: Option<String>,
}

impl PromptArgs {
    pub fn prompt(&self) -> Prompt {
        match (&self.prompt, &self.prefix) {
            (Some(name), _) => Prompt::Named(name.clone()),
            (None, Some(prefix)) => Prompt::Literal(prefix.clone()),
            (None, None) => Prompt::ModelDefault,
        }
    }
}

/// `--max-batch-tokens N`: the token budget of one encoder call, beside `--batch-size`.
#[derive(clap::Args, Debug, Clone)]
pub struct BatchTokensArg {
    /// At most N tokens per encoder call: texts are batched longest first, and a text longer
    /// than N runs alone. The vectors do not depend on it.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_MAX_BATCH_TOKENS as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_batch_tokens: u32,
}

/// Resolves `spec` (a folder or a hub id) and loads the model; prints its warnings unless `-q`.
pub fn load(model: &ModelArg, ctx: &Context) -> anyhow::Result<Embedder> {
    let spec = model.model.as_str();
    let options = koembed_hub::ResolveOptions {
        progress: !ctx.quiet,
        ..Default::default()
    };
    let dir = koembed_hub::resolve_model(spec, &options)
        .with_context(|| format!("cannot find the model {spec}"))?;
    let embedder = Embedder::load_with_dtype(&dir, model.dtype)
        .with_context(|| format!("cannot load the model {}", dir.display()))?;
    for warning in &embedder.model_dir().warnings {
        ctx.note(&format!("warning: {warning}"));
    }
    Ok(embedder)
}

/// Fails with the known names when the prompt is unknown to the model.
pub fn check_prompt(embedder: &Embedder, prompt: &Prompt) -> anyhow::Result<Option<String>> {
    Ok(embedder.resolve_prompt(prompt)?)
}

/// Fails with the allowed range when `--dim` does not fit the model.
pub fn check_dim(embedder: &Embedder, dim: Option<usize>) -> anyhow::Result<usize> {
    let full = embedder.dim();
    match dim {
        None => Ok(full),
        Some(d) if (1..=full).contains(&d) => Ok(d),
        Some(d) => bail!(
            "--dim {d} is out of range: this model allows 1..={full} (its dimension is {full})"
        ),
    }
}
