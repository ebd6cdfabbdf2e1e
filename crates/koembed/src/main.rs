//! The `koembed` command.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use koembed::{eval, input, inspect, npy, output};
use koembed_embed::{EmbedOptions, Embedder, Prompt};

#[derive(Parser)]
#[command(name = "koembed", version, about = "Korean retrieval embeddings on the CPU, with the same vectors as sentence-transformers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed texts (one per line) into vectors.
    #[command(after_help = "Example:\n  koembed embed --model models/e5-small --prompt passage -i docs.txt -o docs.npy")]
    Embed(EmbedArgs),
    /// Describe a model folder: architecture, sizes, dtypes, pooling, prompts.
    #[command(after_help = "Example:\n  koembed inspect --model models/e5-small")]
    Inspect {
        #[arg(long)]
        model: PathBuf,
    },
    /// nDCG@10, MRR@10, Recall@1/10 on a BEIR-style folder (corpus/queries/qrels .jsonl).
    #[command(after_help = "Example:\n  koembed eval --model models/e5-small --data testdata/debian-faq-ko --json")]
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Prompt name for the queries.
        #[arg(long, default_value = "query")]
        query_prompt: String,
        /// Prompt name for the corpus.
        #[arg(long, default_value = "passage")]
        passage_prompt: String,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Npy,
}

#[derive(clap::Args)]
struct EmbedArgs {
    /// A sentence-transformers (or Hugging Face) model folder.
    #[arg(long)]
    model: PathBuf,
    /// A named prompt (`query`, `passage`, or one from the model's config).
    #[arg(long, conflicts_with = "prefix")]
    prompt: Option<String>,
    /// A literal prefix prepended to every text.
    #[arg(long)]
    prefix: Option<String>,
    /// Matryoshka: keep the first N dimensions (then re-normalize).
    #[arg(long)]
    dim: Option<usize>,
    /// Skip the model's Normalize module.
    #[arg(long)]
    no_normalize: bool,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Input file, one text per line (default: stdin).
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Output file (default: stdout); `.npy` selects the npy format.
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// No summary on stderr.
    #[arg(short, long)]
    quiet: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => embed(args),
        Command::Inspect { model } => Embedder::load(&model)
            .with_context(|| format!("loading {}", model.display()))
            .map(|e| print!("{}", inspect::report(&e))),
        Command::Eval { model, data, json, query_prompt, passage_prompt, batch_size } => {
            run_eval(&model, &data, json, query_prompt, passage_prompt, batch_size)
        }
    };
    if let Err(err) = result {
        eprintln!("koembed: error: {err:#}");
        std::process::exit(1);
    }
}

fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    let embedder = Embedder::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    for warning in &embedder.model_dir().warnings {
        eprintln!("koembed: warning: {warning}");
    }
    let texts = match &args.input {
        Some(path) => {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            input::read_lines(BufReader::new(file), &path.display().to_string())?
        }
        None => input::read_lines(std::io::stdin().lock(), "stdin")?,
    };
    let prompt = match (args.prompt, args.prefix) {
        (Some(name), _) => Prompt::Named(name),
        (None, Some(prefix)) => Prompt::Literal(prefix),
        (None, None) => Prompt::ModelDefault,
    };
    let options = EmbedOptions {
        prompt,
        normalize: if args.no_normalize { Some(false) } else { None },
        truncate_dim: args.dim,
        batch_size: args.batch_size,
    };
    let start = std::time::Instant::now();
    let out = embedder.embed_with_report(&texts, &options)?;
    let format = match (args.format, &args.output) {
        (Some(f), _) => f,
        (None, Some(path)) if path.extension().is_some_and(|e| e == "npy") => Format::Npy,
        _ => Format::Jsonl,
    };
    let bytes = match format {
        Format::Npy => npy::npy_bytes(&out.embeddings),
        Format::Jsonl => output::jsonl_bytes(&out.embeddings),
    };
    match &args.output {
        Some(path) => output::write_atomically(path, &bytes)?,
        None => std::io::stdout().lock().write_all(&bytes).context("writing to stdout")?,
    }
    if !args.quiet {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "koembed: {} texts, {} tokens, {} truncated to {} tokens, {:.0} tokens/s",
            texts.len(),
            out.tokens,
            out.truncated,
            embedder.tokenizer().max_seq_length(),
            out.tokens as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

fn run_eval(model: &Path, data: &Path, json: bool, query_prompt: String, passage_prompt: String, batch_size: usize) -> anyhow::Result<()> {
    let embedder = Embedder::load(model).with_context(|| format!("loading {}", model.display()))?;
    let set = eval::BeirSet::load(data)?;
    let options = |prompt: String| EmbedOptions {
        prompt: Prompt::Named(prompt),
        normalize: Some(true),
        batch_size,
        ..EmbedOptions::default()
    };
    let queries: Vec<&str> = set.queries.iter().map(|d| d.text.as_str()).collect();
    let corpus: Vec<&str> = set.corpus.iter().map(|d| d.text.as_str()).collect();
    let q = embedder.embed(&queries, &options(query_prompt))?;
    let c = embedder.embed(&corpus, &options(passage_prompt))?;
    let m = eval::evaluate(&set, &q, &c);
    if m.queries == 0 {
        bail!("{}: no query has a relevant document in qrels.jsonl", data.display());
    }
    if json {
        println!("{}", m.as_json());
    } else {
        println!(
            "nDCG@10 {:.4}  MRR@10 {:.4}  Recall@1 {:.4}  Recall@10 {:.4}  ({} queries)",
            m.ndcg_at_10, m.mrr_at_10, m.recall_at_1, m.recall_at_10, m.queries
        );
    }
    Ok(())
}
