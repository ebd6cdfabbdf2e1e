//! The search cache: a corpus's vectors stored beside it, in `<corpus>.koembed-cache/<key>.npy`.
//!
//! The key is a sha256 over everything the vectors depend on:
//! - koembed's version and a cache format number;
//! - the model's identity: every file of the model folder, two levels deep (modules such as
//!   `1_Pooling/` included; hidden files and `*.md` left out), in path order; JSON files up to
//!   1 MiB by their bytes (config.json, modules.json, the pooling config, ...), other files
//!   (weights, tokenizer.json) by name, size and modification time, not by content, so that a
//!   second run does not have to read a gigabyte of weights;
//! - the literal prompt, the output dimension, the tokenizer's max length, normalization;
//! - the corpus texts as read (so the same texts under another `--field` share an entry, and
//!   an edit anywhere in them makes a new one).

use std::path::{Path, PathBuf};

use anyhow::Context;
use koembed_embed::Embedder;
use ndarray::Array2;
use sha2::{Digest, Sha256};

use crate::{npy, output};

const FORMAT: &str = "koembed search cache v1";
const SMALL_JSON: u64 = 1 << 20;

/// What the cached vectors were made with, besides the model and the texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings<'a> {
    pub prompt: Option<&'a str>,
    pub dim: usize,
    pub normalize: bool,
}

/// `<corpus>.koembed-cache/`
pub fn cache_dir(corpus: &Path) -> PathBuf {
    let mut name = corpus.file_name().unwrap_or_default().to_os_string();
    name.push(".koembed-cache");
    corpus.with_file_name(name)
}

/// The cache file for these vectors: `<corpus>.koembed-cache/<sha256 hex>.npy`.
pub fn cache_path<S: AsRef<str>>(
    corpus: &Path,
    embedder: &Embedder,
    settings: &Settings,
    texts: &[S],
) -> anyhow::Result<PathBuf> {
    let mut h = Sha256::new();
    field(&mut h, FORMAT.as_bytes());
    field(&mut h, env!("CARGO_PKG_VERSION").as_bytes());
    model_identity(&mut h, &embedder.model_dir().root)?;
    if embedder.model_dir().transformer_dir != embedder.model_dir().root {
        model_identity(&mut h, &embedder.model_dir().transformer_dir)?;
    }
    let settings = format!(
        "prompt={:?} dim={} normalize={} max_seq_length={}",
        settings.prompt,
        settings.dim,
        settings.normalize,
        embedder.tokenizer().max_seq_length()
    );
    field(&mut h, settings.as_bytes());
    field(&mut h, &(texts.len() as u64).to_le_bytes());
    for text in texts {
        field(&mut h, text.as_ref().as_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(cache_dir(corpus).join(format!("{hex}.npy")))
}

/// The cached vectors, if the file is there and holds `rows` x `dim` floats.
pub fn load(path: &Path, rows: usize, dim: usize) -> Option<Array2<f32>> {
    let bytes = std::fs::read(path).ok()?;
    npy::parse_npy_f32(&bytes)
        .ok()
        .filter(|m| m.dim() == (rows, dim))
}

/// Stores the vectors (atomically: a reader never sees half a file).
pub fn store(path: &Path, vectors: &Array2<f32>) -> anyhow::Result<()> {
    let dir = path.parent().context("cache path without a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    output::write_atomically(path, &npy::npy_bytes(vectors))
}

/// A length-prefixed field, so that no two different sequences of fields hash alike.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn model_identity(h: &mut Sha256, root: &Path) -> anyhow::Result<()> {
    let mut files = Vec::new();
    list_files(root, root, 2, &mut files)?;
    files.sort();
    for relative in files {
        let path = root.join(&relative);
        let meta =
            std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        field(h, relative.to_string_lossy().as_bytes());
        let is_json = relative.extension().is_some_and(|e| e == "json");
        if is_json && meta.len() <= SMALL_JSON {
            field(
                h,
                &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
            );
        } else {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            field(
                h,
                format!("size={} mtime_ns={mtime}", meta.len()).as_bytes(),
            );
        }
    }
    Ok(())
}

fn list_files(root: &Path, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str.starts_with('.') || name_str.ends_with(".md") {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: the Hugging Face cache links snapshot files to blobs.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth > 1 {
                list_files(root, &path, depth - 1, out)?;
            }
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(relative.to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_sits_beside_the_corpus() {
        assert_eq!(
            cache_dir(Path::new("data/faq/corpus.jsonl")),
            PathBuf::from("data/faq/corpus.jsonl.koembed-cache")
        );
        assert_eq!(
            cache_dir(Path::new("c.txt")),
            PathBuf::from("c.txt.koembed-cache")
        );
    }

    #[test]
    fn fields_are_length_prefixed() {
        let digest = |parts: &[&str]| {
            let mut h = Sha256::new();
            parts.iter().for_each(|p| field(&mut h, p.as_bytes()));
            h.finalize()
        };
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
    }
}
