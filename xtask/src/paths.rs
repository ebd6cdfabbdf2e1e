//! Where things live in the workspace.

use std::path::PathBuf;

/// The workspace root (the folder holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}

/// `models/`, git-ignored; `KOEMBED_MODELS` overrides it.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("KOEMBED_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("models"),
    }
}

pub fn testdata_dir() -> PathBuf {
    workspace_root().join("testdata")
}

/// Downloaded wheels are kept here so a rebuild does not download again.
pub fn download_cache_dir() -> PathBuf {
    models_dir().join(".downloads")
}
