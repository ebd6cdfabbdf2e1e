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
