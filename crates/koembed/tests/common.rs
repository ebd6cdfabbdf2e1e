//! Shared by the integration tests: where the built models and the test data are.

#![allow(dead_code)]

use std::path::PathBuf;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A model built by `cargo xtask models`; a missing one fails with the command to build it.
pub fn built_model(name: &str) -> PathBuf {
    let dir = koembed_golden::models_dir().join(name);
    assert!(
        dir.join("config.json").is_file(),
        "{} is missing: build the test models with `cargo xtask models`",
        dir.display()
    );
    dir
}

pub fn faq_dir() -> PathBuf {
    workspace_root().join("testdata/debian-faq-ko")
}

/// nDCG@10, MRR@10, Recall@1/10 of `embedder` on the Korean Debian FAQ set, with the model's
/// query and passage prompts.
pub fn faq_metrics(embedder: &koembed_embed::Embedder) -> koembed::eval::RetrievalMetrics {
    use koembed_embed::{EmbedOptions, Prompt};
    let set = koembed::eval::BeirSet::load(&faq_dir()).unwrap();
    let options = |name: &str| EmbedOptions {
        prompt: Prompt::Named(name.into()),
        ..EmbedOptions::default()
    };
    let queries: Vec<&str> = set.queries.iter().map(|d| d.text.as_str()).collect();
    let corpus: Vec<&str> = set.corpus.iter().map(|d| d.text.as_str()).collect();
    let q = embedder.embed(&queries, &options("query")).unwrap();
    let c = embedder.embed(&corpus, &options("passage")).unwrap();
    koembed::eval::evaluate(&set, &q, &c)
}
