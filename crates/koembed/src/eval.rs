//! `koembed eval`: retrieval evaluation on a BEIR-style folder: corpus.jsonl, queries.jsonl,
//! qrels.jsonl.
//!
//! Scores are cosine similarities (dot products of normalized vectors); ties are broken by
//! corpus order, as a stable sort over the corpus does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use koembed_embed::{EmbedOptions, Prompt};
use ndarray::{Array2, ArrayView1};
use serde::Deserialize;

use crate::cli::Context;
use crate::model::{self, BatchTokensArg, ModelArg};
use crate::{output, progress};

pub const EXAMPLES: &str = "Example:\n  \
    koembed eval --model models/e5-small --data testdata/debian-faq-ko --json\n\n\
    DIR holds corpus.jsonl ({\"_id\", \"text\"}), queries.jsonl ({\"_id\", \"text\"}) and qrels.jsonl \
    ({\"query-id\", \"corpus-id\", \"score\"}). --json prints one object with the keys ndcg@10, \
    mrr@10, recall@1, recall@10 and queries.";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArg,
    /// The BEIR-style folder.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Prompt name for the queries.
    #[arg(long, value_name = "NAME", default_value = "query")]
    pub query_prompt: String,
    /// Prompt name for the corpus.
    #[arg(long, value_name = "NAME", default_value = "passage")]
    pub passage_prompt: String,
    /// Matryoshka: evaluate the first N dimensions (re-normalized).
    #[arg(long, value_name = "N")]
    pub dim: Option<usize>,
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    #[command(flatten)]
    pub batch_tokens: BatchTokensArg,
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let embedder = model::load(&args.model, ctx)?;
    let options = |prompt: &str| EmbedOptions {
        prompt: Prompt::Named(prompt.to_string()),
        normalize: Some(true),
        truncate_dim: args.dim,
        batch_size: args.batch_size as usize,
        max_batch_tokens: args.batch_tokens.max_batch_tokens as usize,
    };
    let (query_options, passage_options) =
        (options(&args.query_prompt), options(&args.passage_prompt));
    model::check_prompt(&embedder, &query_options.prompt)?;
    model::check_prompt(&embedder, &passage_options.prompt)?;
    model::check_dim(&embedder, args.dim)?;
    let set = BeirSet::load(&args.data)?;
    let queries: Vec<&str> = set.queries.iter().map(|d| d.text.as_str()).collect();
    let corpus: Vec<&str> = set.corpus.iter().map(|d| d.text.as_str()).collect();
    let q = progress::embed_all(&embedder, &queries, &query_options, "queries", ctx)?;
    let c = progress::embed_all(&embedder, &corpus, &passage_options, "corpus", ctx)?;
    let max_len = embedder.tokenizer().max_seq_length();
    ctx.detail(&format!("queries: {}", q.summary(max_len)));
    ctx.detail(&format!("corpus: {}", c.summary(max_len)));
    let m = evaluate(&set, &q.output.embeddings, &c.output.embeddings);
    if m.queries == 0 {
        bail!(
            "{}: no query has a relevant document in qrels.jsonl",
            args.data.display()
        );
    }
    let text = if args.json {
        format!("{}\n", m.as_json())
    } else {
        format!(
            "nDCG@10 {:.4}  MRR@10 {:.4}  Recall@1 {:.4}  Recall@10 {:.4}  ({} queries)\n",
            m.ndcg_at_10, m.mrr_at_10, m.recall_at_1, m.recall_at_10, m.queries
        )
    };
    output::write_stdout(text.as_bytes())
}

#[derive(Debug, Clone, Deserialize)]
pub struct Document {
    #[serde(rename = "_id")]
    pub id: String,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct BeirSet {
    pub corpus: Vec<Document>,
    pub queries: Vec<Document>,
    /// query id -> (corpus id -> relevance grade)
    pub qrels: HashMap<String, HashMap<String, f64>>,
}

#[derive(Deserialize)]
struct Qrel {
    #[serde(rename = "query-id")]
    query_id: String,
    #[serde(rename = "corpus-id")]
    corpus_id: String,
    score: f64,
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

impl BeirSet {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let corpus: Vec<Document> = read_jsonl(&dir.join("corpus.jsonl"))?;
        let queries: Vec<Document> = read_jsonl(&dir.join("queries.jsonl"))?;
        let mut qrels: HashMap<String, HashMap<String, f64>> = HashMap::new();
        for q in read_jsonl::<Qrel>(&dir.join("qrels.jsonl"))? {
            qrels
                .entry(q.query_id)
                .or_default()
                .insert(q.corpus_id, q.score);
        }
        if corpus.is_empty() || queries.is_empty() {
            bail!(
                "{}: the corpus and the queries must not be empty",
                dir.display()
            );
        }
        Ok(BeirSet {
            corpus,
            queries,
            qrels,
        })
    }
}

/// Mean metrics over the queries that have at least one relevant document.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalMetrics {
    pub ndcg_at_10: f64,
    pub mrr_at_10: f64,
    pub recall_at_1: f64,
    pub recall_at_10: f64,
    pub queries: usize,
}

impl RetrievalMetrics {
    pub fn as_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ndcg@10": self.ndcg_at_10,
            "mrr@10": self.mrr_at_10,
            "recall@1": self.recall_at_1,
            "recall@10": self.recall_at_10,
            "queries": self.queries,
        })
    }
}

/// Document indices by descending score; equal scores keep corpus order.
pub fn rank(scores: ArrayView1<f32>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Scores every query against every document (`queries · corpusᵀ`) and averages the metrics.
pub fn evaluate(
    set: &BeirSet,
    query_vectors: &Array2<f32>,
    corpus_vectors: &Array2<f32>,
) -> RetrievalMetrics {
    let scores = query_vectors.dot(&corpus_vectors.t());
    let mut sums = BTreeMap::<&str, f64>::new();
    let mut counted = 0;
    for (qi, query) in set.queries.iter().enumerate() {
        let Some(relevant) = set.qrels.get(&query.id) else {
            continue;
        };
        let relevant: HashMap<&str, f64> = relevant
            .iter()
            .filter(|(_, &g)| g > 0.0)
            .map(|(d, &g)| (d.as_str(), g))
            .collect();
        if relevant.is_empty() {
            continue;
        }
        counted += 1;
        let ranking = rank(scores.row(qi));
        let top: Vec<&str> = ranking
            .iter()
            .take(10)
            .map(|&d| set.corpus[d].id.as_str())
            .collect();
        let gain = |doc: &str| relevant.get(doc).copied().unwrap_or(0.0);
        let dcg: f64 = top
            .iter()
            .enumerate()
            .map(|(i, d)| gain(d) / (i as f64 + 2.0).log2())
            .sum();
        let mut ideal: Vec<f64> = relevant.values().copied().collect();
        ideal.sort_by(|a, b| b.total_cmp(a));
        let idcg: f64 = ideal
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, g)| g / (i as f64 + 2.0).log2())
            .sum();
        *sums.entry("ndcg").or_default() += dcg / idcg;
        let first_hit = top.iter().position(|d| relevant.contains_key(d));
        *sums.entry("mrr").or_default() += first_hit.map_or(0.0, |i| 1.0 / (i as f64 + 1.0));
        let hits_at = |k: usize| {
            top.iter()
                .take(k)
                .filter(|d| relevant.contains_key(*d))
                .count() as f64
        };
        *sums.entry("r1").or_default() += hits_at(1) / relevant.len() as f64;
        *sums.entry("r10").or_default() += hits_at(10) / relevant.len() as f64;
    }
    let mean = |k: &str| sums.get(k).copied().unwrap_or(0.0) / counted.max(1) as f64;
    RetrievalMetrics {
        ndcg_at_10: mean("ndcg"),
        mrr_at_10: mean("mrr"),
        recall_at_1: mean("r1"),
        recall_at_10: mean("r10"),
        queries: counted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn metrics_by_hand() {
        let doc = |id: &str| Document {
            id: id.into(),
            text: String::new(),
        };
        let set = BeirSet {
            corpus: vec![doc("a"), doc("b"), doc("c")],
            queries: vec![doc("q1"), doc("q2"), doc("q3")],
            qrels: [("q1", "a"), ("q2", "c"), ("q3", "b")]
                .iter()
                .map(|(q, d)| (q.to_string(), HashMap::from([(d.to_string(), 1.0)])))
                .collect(),
        };
        // q1: a first. q2: a 0, b 0.5, c 0.4 -> c second. q3: a and b tie at 0.5, corpus order
        // puts a first, so the relevant b is second.
        let queries = array![[1.0f32, 0.0], [0.0, 1.0], [0.5, 0.5]];
        let corpus = array![[1.0f32, 0.0], [0.5, 0.5], [0.0, 0.4]];
        let m = evaluate(&set, &queries, &corpus);
        let ndcg = (1.0 + 1.0 / 3f64.log2() + 1.0 / 3f64.log2()) / 3.0;
        assert!((m.ndcg_at_10 - ndcg).abs() < 1e-12, "{m:?}");
        assert!((m.mrr_at_10 - (1.0 + 0.5 + 0.5) / 3.0).abs() < 1e-12);
        assert!((m.recall_at_1 - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.recall_at_10, 1.0);
        assert_eq!(m.queries, 3);
    }
}
