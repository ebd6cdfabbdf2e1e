//! `koembed search`: embed a corpus once (cached beside it), then rank it for each query.
//!
//! Scores are cosine similarities (dot products of normalized vectors); equal scores keep
//! corpus order, as in `koembed eval`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::bail;
use koembed_embed::{EmbedOptions, Prompt};
use ndarray::Array2;

use crate::cli::Context;
use crate::input::{self, Record};
use crate::model::{self, BatchTokensArg, ModelArg};
use crate::{cache, eval, output, progress};

pub const EXAMPLES: &str = "Examples:\n  \
    koembed search --model models/e5-small --corpus testdata/debian-faq-ko/corpus.jsonl \"데비안이란 무엇인가요?\"\n  \
    koembed search --model nlpai-lab/KoE5 --corpus notes.txt --top-k 3 --json \"질문 하나\" \"질문 둘\"\n\n\
    The corpus is embedded with the passage prompt once and cached in <CORPUS>.koembed-cache/ \
    (keyed by the model, prompt, --dim and the corpus texts); later runs only embed the queries. \
    Without QUERY arguments, queries are read from stdin, one per line.";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArg,
    /// The passages: one per line, or .jsonl with "text" (and "_id"/"id", shown if present).
    #[arg(long, value_name = "FILE")]
    pub corpus: PathBuf,
    /// The JSON Lines field holding the passage text.
    #[arg(long, value_name = "NAME")]
    pub field: Option<String>,
    /// Passages to show per query.
    #[arg(short = 'k', long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub top_k: u32,
    /// Prompt name for the queries.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "query",
        conflicts_with = "query_prefix"
    )]
    pub query_prompt: String,
    /// A literal prefix for the queries instead of a named prompt.
    #[arg(long, value_name = "TEXT")]
    pub query_prefix: Option<String>,
    /// Prompt name for the passages.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "passage",
        conflicts_with = "passage_prefix"
    )]
    pub passage_prompt: String,
    /// A literal prefix for the passages instead of a named prompt.
    #[arg(long, value_name = "TEXT")]
    pub passage_prefix: Option<String>,
    /// Matryoshka: compare the first N dimensions (re-normalized).
    #[arg(long, value_name = "N")]
    pub dim: Option<usize>,
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    #[command(flatten)]
    pub batch_tokens: BatchTokensArg,
    /// Neither read nor write the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// One JSON object per query: {"query", "results": [{"rank", "score", "index", "line", "id", "text"}]}.
    #[arg(long)]
    pub json: bool,
    /// The queries (default: read from stdin, one per line).
    #[arg(value_name = "QUERY")]
    pub queries: Vec<String>,
}

fn prompt(name: &str, prefix: &Option<String>) -> Prompt {
    match prefix {
        Some(p) => Prompt::Literal(p.clone()),
        None => Prompt::Named(name.to_string()),
    }
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    if args.corpus == std::path::Path::new("-") {
        bail!("--corpus must be a file: its vectors are cached beside it");
    }
    let queries = input::args_or_stdin(&args.queries, "query", "queries")?;
    let embedder = model::load(&args.model, ctx)?;
    let options = |prompt: Prompt| EmbedOptions {
        prompt,
        normalize: Some(true),
        truncate_dim: args.dim,
        batch_size: args.batch_size as usize,
        max_batch_tokens: args.batch_tokens.max_batch_tokens as usize,
    };
    let query_options = options(prompt(&args.query_prompt, &args.query_prefix));
    let passage_options = options(prompt(&args.passage_prompt, &args.passage_prefix));
    model::check_prompt(&embedder, &query_options.prompt)?;
    let passage_prompt = model::check_prompt(&embedder, &passage_options.prompt)?;
    let dim = model::check_dim(&embedder, args.dim)?;

    // A blank line is not a passage (line numbers still count it).
    let mut corpus = input::read_records(Some(&args.corpus), args.field.as_deref())?;
    corpus.retain(|r| !r.text.trim().is_empty());
    let texts: Vec<&str> = corpus.iter().map(|r| r.text.as_str()).collect();
    let settings = cache::Settings {
        prompt: passage_prompt.as_deref(),
        dim,
        normalize: true,
    };
    let cache_path = match args.no_cache {
        true => None,
        false => Some(cache::cache_path(
            &args.corpus,
            &embedder,
            &settings,
            &texts,
        )?),
    };
    let cached = cache_path
        .as_deref()
        .and_then(|p| cache::load(p, texts.len(), dim));
    let passages = match (cached, &cache_path) {
        (Some(vectors), Some(path)) => {
            ctx.detail(&format!(
                "cache hit: {} passages from {}",
                texts.len(),
                path.display()
            ));
            vectors
        }
        _ => {
            let embedded = progress::embed_all(&embedder, &texts, &passage_options, "corpus", ctx)?;
            ctx.note(&format!(
                "corpus: {}",
                embedded.summary(embedder.tokenizer().max_seq_length())
            ));
            if let Some(path) = &cache_path {
                match cache::store(path, &embedded.output.embeddings) {
                    Ok(()) => ctx.detail(&format!("cache miss: wrote {}", path.display())),
                    Err(e) => ctx.note(&format!(
                        "warning: the corpus vectors are not cached: {e:#}"
                    )),
                }
            }
            embedded.output.embeddings
        }
    };
    let query_vectors = embedder.embed(&queries, &query_options)?;
    let text = report(
        &queries,
        &query_vectors,
        &passages,
        &corpus,
        args.top_k as usize,
        args.json,
    );
    output::write_stdout(text.as_bytes())
}

/// The top `k` passages of each query, as text or JSON Lines.
fn report(
    queries: &[String],
    q: &Array2<f32>,
    c: &Array2<f32>,
    corpus: &[Record],
    k: usize,
    json: bool,
) -> String {
    let scores = q.dot(&c.t());
    let mut out = String::new();
    for (qi, query) in queries.iter().enumerate() {
        let top: Vec<usize> = eval::rank(scores.row(qi)).into_iter().take(k).collect();
        if json {
            let results: Vec<serde_json::Value> = top
                .iter()
                .enumerate()
                .map(|(rank, &d)| {
                    serde_json::json!({
                        "rank": rank + 1,
                        "score": shortest(scores[[qi, d]]),
                        "index": d,
                        "line": corpus[d].line,
                        "id": corpus[d].id,
                        "text": corpus[d].text,
                    })
                })
                .collect();
            let line = serde_json::json!({"query": query, "results": results});
            let _ = writeln!(out, "{line}");
        } else {
            if qi > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "query: {query}");
            for (rank, &d) in top.iter().enumerate() {
                let record = &corpus[d];
                let label = match &record.id {
                    Some(id) => format!("id {id}"),
                    None => format!("line {}", record.line),
                };
                let _ = writeln!(
                    out,
                    "{:>3}  {:.4}  {label}  {}",
                    rank + 1,
                    scores[[qi, d]],
                    snippet(&record.text, 100)
                );
            }
        }
    }
    out
}

/// An f32 as JSON in its shortest round-trip form (0.8885, not 0.8884999752044678).
fn shortest(x: f32) -> serde_json::Value {
    x.to_string()
        .parse::<f64>()
        .map_or(serde_json::Value::Null, serde_json::Value::from)
}

/// The text on one line, cut to `max_chars` characters.
fn snippet(text: &str, max_chars: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_flattens_and_cuts_on_characters() {
        assert_eq!(snippet("a\n b\tc", 10), "a b c");
        assert_eq!(snippet("데비안은 무엇", 3), "데비안…");
    }

    #[test]
    fn report_ranks_by_score_and_shows_ids_or_lines() {
        let record = |text: &str, id: Option<&str>, line| Record {
            text: text.into(),
            id: id.map(Into::into),
            line,
        };
        let corpus = vec![record("first", None, 1), record("second", Some("d2"), 2)];
        let q = ndarray::array![[0.0f32, 1.0]];
        let c = ndarray::array![[1.0f32, 0.0], [0.0, 1.0]];
        let text = report(&["q".into()], &q, &c, &corpus, 2, false);
        assert_eq!(
            text,
            "query: q\n  1  1.0000  id d2  second\n  2  0.0000  line 1  first\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(report(&["q".into()], &q, &c, &corpus, 1, true).trim()).unwrap();
        assert_eq!(json["results"][0]["id"], "d2");
        assert_eq!(json["results"].as_array().unwrap().len(), 1);
    }
}
