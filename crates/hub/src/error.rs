//! What can go wrong while resolving a model; every error names the repo, file, URL or path.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "`{spec}` is not a model folder ({reason}), nor a hub id of the form org/name or \
         org/name@revision"
    )]
    NotAModel { spec: String, reason: String },

    #[error("model {repo} was not found at {url}: check the name; {hint}")]
    RepoNotFound {
        repo: String,
        url: String,
        hint: String,
    },

    #[error(
        "model {repo} has no revision `{revision}` ({url}): use a branch, a tag or a full \
         40-character commit hash"
    )]
    RevisionNotFound {
        repo: String,
        revision: String,
        url: String,
    },

    #[error(
        "access to model {repo} was refused (HTTP {status} from {url}): it is gated or private; \
         accept its terms on the hub and set HF_TOKEN to a token that can read it"
    )]
    AccessDenied {
        repo: String,
        url: String,
        status: u16,
    },

    #[error("model {repo} has no file {file} at commit {commit} ({url} answered 404)")]
    FileNotFound {
        repo: String,
        file: String,
        commit: String,
        url: String,
    },

    #[error("{url} answered HTTP {status}{detail}")]
    Http {
        url: String,
        status: u16,
        detail: String,
    },

    #[error(
        "could not reach {url}: {reason} (set HF_HUB_OFFLINE=1 to use only models already in \
         the cache)"
    )]
    Unreachable { url: String, reason: String },

    #[error(
        "download of {file} of {repo} from {url} broke off after {received} of {expected} \
         bytes ({reason}); the partial file {partial} is kept and the next run resumes it"
    )]
    Interrupted {
        repo: String,
        file: String,
        url: String,
        partial: PathBuf,
        received: u64,
        expected: u64,
        reason: String,
    },

    #[error(
        "{url} sent {received} bytes, but the hub said {file} of {repo} has {expected}; the \
         download was thrown away"
    )]
    SizeMismatch {
        repo: String,
        file: String,
        url: String,
        expected: u64,
        received: u64,
    },

    #[error(
        "the sha256 of {file} of {repo} downloaded from {url} is {actual}, but the hub said \
         {expected}; the download was thrown away"
    )]
    HashMismatch {
        repo: String,
        file: String,
        url: String,
        expected: String,
        actual: String,
    },

    #[error("unexpected answer from {url}: {reason}")]
    BadResponse { url: String, reason: String },

    #[error(
        "model {repo} (revision {revision}) has no safetensors weights: koembed needs \
         model.safetensors or model.safetensors.index.json, and the repo has {weights}"
    )]
    NoSafetensors {
        repo: String,
        revision: String,
        weights: String,
    },

    #[error(
        "model {repo} at commit {commit} lacks {missing}, which koembed needs (looked in {dir})"
    )]
    MissingFiles {
        repo: String,
        commit: String,
        dir: PathBuf,
        missing: String,
    },

    #[error(
        "model {repo} (revision {revision}) is not in the Hugging Face cache: {detail}; \
         HF_HUB_OFFLINE is set, so koembed did not download it (run once without \
         HF_HUB_OFFLINE=1, or `huggingface-cli download {repo}`)"
    )]
    NotInCache {
        repo: String,
        revision: String,
        detail: String,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot locate the Hugging Face cache: set HF_HUB_CACHE or HF_HOME (HOME is not set)")]
    NoCacheDir,
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
    let path = path.into();
    move |source| HubError::Io { path, source }
}
