//! Errors of the embedding pipeline: each names the file, field or input it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a model folder: {reason}")]
    NotAModelDir { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{path}: cannot load the tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("text {index}: tokenization failed: {reason}")]
    Tokenize { index: usize, reason: String },
    #[error(transparent)]
    EncoderConfig(#[from] koembed_xlmr::ConfigError),
    #[error(transparent)]
    Weights(#[from] koembed_xlmr::WeightError),
    #[error("unknown prompt name \"{name}\"; {}", known_prompts(known))]
    UnknownPrompt { name: String, known: String },
    #[error("invalid option: {0}")]
    Option(String),
}

fn known_prompts(known: &str) -> String {
    if known.is_empty() {
        "this model has no named prompts; give the text to prepend as a literal prefix (--prefix)"
            .to_string()
    } else {
        format!("this model knows: {known}")
    }
}
