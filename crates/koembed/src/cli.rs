//! The command line: global options, the subcommands, and dispatch.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

use crate::{bench, embed, eval, inspect, search, serve, threads, tokenize};

#[derive(Parser)]
#[command(
    name = "koembed",
    version,
    about = "Korean retrieval embeddings on the CPU, with the same vectors as sentence-transformers",
    after_help = "Examples:\n  \
        koembed embed --model models/e5-small --prompt passage -i docs.txt -o docs.npy\n  \
        koembed search --model nlpai-lab/KoE5 --corpus faq.jsonl \"데비안 설치 방법\"\n  \
        koembed bench --model models/e5-small --workload W2 --json\n\n\
        MODEL is a sentence-transformers folder or a Hugging Face hub id (org/name[@revision])."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Threads for the encoder (rayon pool and matrix multiply). Default: the cores this
    /// process may use (affinity and cgroup quota), unless RAYON_NUM_THREADS /
    /// MATMUL_NUM_THREADS are set.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// No progress bar, summary or warnings on stderr (errors are still printed).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Say more on stderr (e.g. whether the search cache was used).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Embed texts (one per line, or a .jsonl field) into vectors: JSON Lines or .npy.
    #[command(after_help = embed::EXAMPLES)]
    Embed(embed::Args),
    /// Embed a corpus once (cached beside it) and print the top passages for each query.
    #[command(after_help = search::EXAMPLES)]
    Search(search::Args),
    /// nDCG@10, MRR@10, Recall@1/10 on a BEIR-style folder (corpus/queries/qrels .jsonl).
    #[command(after_help = eval::EXAMPLES)]
    Eval(eval::Args),
    /// Show the token ids and pieces the model sees for each text (prompt included).
    #[command(after_help = tokenize::EXAMPLES)]
    Tokenize(tokenize::Args),
    /// Describe a model: architecture, sizes, dtypes, memory, pooling, prompts, max length.
    #[command(after_help = inspect::EXAMPLES)]
    Inspect(inspect::Args),
    /// Time the encoder on a standard workload (W1/W2/W3) or a text corpus.
    #[command(after_help = bench::EXAMPLES)]
    Bench(bench::Args),
    /// Serve embeddings over HTTP (OpenAI and text-embeddings-inference APIs), batching
    /// concurrent requests.
    #[command(after_help = serve::EXAMPLES)]
    Serve(serve::Args),
}

/// What a subcommand knows about how it was called, besides its own arguments.
#[derive(Debug, Clone)]
pub struct Context {
    pub quiet: bool,
    pub verbose: bool,
    /// The encoder's thread count, as configured at startup.
    pub threads: usize,
}

impl Context {
    /// A progress bar is drawn only for a person watching: stderr is a terminal and not `-q`.
    pub fn show_progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    /// Prints a `koembed: ...` note on stderr unless `-q`.
    pub fn note(&self, message: &str) {
        if !self.quiet {
            eprintln!("koembed: {message}");
        }
    }

    /// Prints a note only with `-v`.
    pub fn detail(&self, message: &str) {
        if self.verbose {
            eprintln!("koembed: {message}");
        }
    }
}

/// Sizes the thread pools, then runs the subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let threads = threads::configure(cli.global.threads.map(usize::from))?;
    let ctx = Context {
        quiet: cli.global.quiet,
        verbose: cli.global.verbose,
        threads,
    };
    match cli.command {
        Command::Embed(args) => embed::run(args, &ctx),
        Command::Search(args) => search::run(args, &ctx),
        Command::Eval(args) => eval::run(args, &ctx),
        Command::Tokenize(args) => tokenize::run(args, &ctx),
        Command::Inspect(args) => inspect::run(args, &ctx),
        Command::Bench(args) => bench::run(args, &ctx),
        Command::Serve(args) => serve::run(args, &ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_an_example() {
        for sub in Cli::command().get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("koembed "),
                "{} has no example",
                sub.get_name()
            );
        }
    }
}
