//! Model references: a local folder, or a Hugging Face hub id (`org/name[@revision]`) resolved in
//! the standard Hugging Face cache and downloaded into it when missing.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    Other(String),
}

/// How to resolve (progress, offline mode, endpoint and token come from the environment by default).
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Print download progress on stderr.
    pub progress: bool,
}

/// A local folder as is; otherwise a hub id resolved to its snapshot folder in the cache.
pub fn resolve_model(spec: &str, _options: &ResolveOptions) -> Result<PathBuf, HubError> {
    let path = PathBuf::from(spec);
    if path.is_dir() {
        return Ok(path);
    }
    Err(HubError::Other(format!("{spec} is not a folder (hub ids are not supported yet)")))
}
