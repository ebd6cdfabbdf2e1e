//! `koembed embed`: texts in, vectors out (JSON Lines or .npy), in input order.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::bail;
use clap::ValueEnum;
use koembed_embed::EmbedOptions;

use crate::cli::Context;
use crate::model::{self, BatchTokensArg, ModelArg, PromptArgs};
use crate::{input, npy, output, progress};

pub const EXAMPLES: &str = "Examples:\n  \
    koembed embed --model models/e5-small --prompt passage -i docs.txt -o docs.npy\n  \
    echo '데비안은 무엇인가요?' | koembed embed --model nlpai-lab/KoE5 --prompt query\n  \
    koembed embed --model models/e5-small --field body -i corpus.jsonl --dim 256 -o v.jsonl\n\n\
    Input: one text per line (stdin or -i FILE), or JSON Lines with a \"text\" field when FILE \
    ends in .jsonl or --field is given.\n\
    Output: {\"index\": i, \"embedding\": [...]} per line, or a float32 .npy [n, dim] when -o \
    ends in .npy (or --format npy).";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Jsonl,
    Npy,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Matryoshka: keep the first N dimensions (then re-normalize if the model normalizes).
    #[arg(long, value_name = "N")]
    pub dim: Option<usize>,
    /// Skip the model's Normalize module (raw pooled vectors).
    #[arg(long)]
    pub no_normalize: bool,
    /// Texts per encoder call (the vectors do not depend on it).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    #[command(flatten)]
    pub batch_tokens: BatchTokensArg,
    /// Input file: one text per line, or .jsonl (default: stdin).
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Read JSON Lines and take the text from this field (default for .jsonl: text).
    #[arg(long, value_name = "NAME")]
    pub field: Option<String>,
    /// Output file (default: stdout), written atomically; a .npy name selects the npy format.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format (default: from the output name, else jsonl).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let format = match (args.format, &args.output) {
        (Some(f), _) => f,
        (None, Some(path))
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("npy")) =>
        {
            Format::Npy
        }
        _ => Format::Jsonl,
    };
    if format == Format::Npy && args.output.is_none() && std::io::stdout().is_terminal() {
        bail!(
            "refusing to write binary .npy data to a terminal: give -o FILE.npy or redirect stdout"
        );
    }
    let embedder = model::load(&args.model, ctx)?;
    let options = EmbedOptions {
        prompt: args.prompt.prompt(),
        normalize: if args.no_normalize { Some(false) } else { None },
        truncate_dim: args.dim,
        batch_size: args.batch_size as usize,
        max_batch_tokens: args.batch_tokens.max_batch_tokens as usize,
    };
    model::check_prompt(&embedder, &options.prompt)?;
    model::check_dim(&embedder, args.dim)?;
    let records = input::read_records(args.input.as_deref(), args.field.as_deref())?;
    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    let embedded = progress::embed_all(&embedder, &texts, &options, "embedding", ctx)?;
    let bytes = match format {
        Format::Npy => npy::npy_bytes(&embedded.output.embeddings),
        Format::Jsonl => output::jsonl_bytes(&embedded.output.embeddings),
    };
    output::write_to(args.output.as_deref(), &bytes)?;
    ctx.note(&embedded.summary(embedder.tokenizer().max_seq_length()));
    Ok(())
}
