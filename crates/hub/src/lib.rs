//! Model references: a local folder, or a Hugging Face hub id (`org/name[@revision]`) resolved in
//! the standard Hugging Face cache and downloaded into it when missing.
//!
//! # Resolution order
//!
//! 1. `spec` names an existing folder: it is returned as is (so a local `org/name` folder wins
//!    over the hub id).
//! 2. `spec` is `org/name` or `org/name@revision` (a branch, a tag or a 40-hex commit; `main`
//!    when omitted): the commit is the revision itself, or what `refs/<revision>` in the cache
//!    holds. When `snapshots/<commit>/` has every file koembed needs, that folder is returned
//!    without touching the network (a branch is not re-checked for new commits: ask for
//!    `@<commit>`, or delete `refs/<branch>`, to move on).
//! 3. Offline (`HF_HUB_OFFLINE=1`): an error saying what is missing from the cache.
//! 4. Otherwise the hub is asked which commit the revision is at and which files it holds, and
//!    the missing files are downloaded into the cache; the snapshot folder is returned.
//!
//! Anything else is an error naming the spec.
//!
//! # Environment ([`ResolveOptions`] fields override these)
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `HF_HUB_CACHE` | the cache folder | `HF_HOME/hub` |
//! | `HF_HOME` | Hugging Face's home (holds `hub/` and `token`) | `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` |
//! | `HF_ENDPOINT` | the hub to download from | `https://huggingface.co` |
//! | `HF_TOKEN` | sent as `Authorization: Bearer` for private or gated models | the file `HF_HOME/token` (`huggingface-cli login`) |
//! | `HF_HUB_OFFLINE` | `1`: never use the network, resolve from the cache only | off |
//! | `HF_HUB_DISABLE_PROGRESS_BARS` | `1`: no progress bars | off |
//!
//! # Cache layout (shared with huggingface_hub, so Python downloads are found and reused)
//!
//! ```text
//! models--org--name/refs/<revision>            commit hash of a branch or tag
//! models--org--name/blobs/<etag>               contents (sha256 for LFS files)
//! models--org--name/blobs/<etag>.incomplete    a download in progress, resumed next time
//! models--org--name/snapshots/<commit>/<file>  relative symlinks into ../../blobs/
//! models--org--name/.no_exist/<commit>/<file>  marks files the repo does not have
//! ```
//!
//! A file appears in `snapshots/` only once its blob is complete and verified (size, and
//! sha256 for LFS files), so a folder this crate returns never holds a half-written file.
//!
//! # What is downloaded
//!
//! From the root and from each module folder listed in modules.json: config.json,
//! tokenizer.json, tokenizer_config.json, special_tokens_map.json, modules.json,
//! sentence_bert_config.json, config_sentence_transformers.json, README.md (those the repo
//! has), and the safetensors weights of the Transformer and Dense modules (`model.safetensors`,
//! or `model.safetensors.index.json` and its shards). pytorch_model.bin, onnx/, openvino/,
//! *.h5, *.msgpack are never fetched; a repo without safetensors weights is refused.

// Errors are rare and sit beside network and disk I/O: their size does not matter, their
// text does.
#![allow(clippy::result_large_err)]

mod cache;
mod error;
mod remote;
mod settings;
mod spec;
mod wanted;

use std::path::{Path, PathBuf};

pub use error::HubError;
pub use settings::DEFAULT_ENDPOINT;
pub use spec::HubId;

use cache::RepoCache;
use remote::Hub;
use settings::Settings;
use wanted::ModuleKind;

/// How to resolve. `None` fields come from the environment (see the crate docs).
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Show download progress on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
    /// The hub's base URL (`HF_ENDPOINT`).
    pub endpoint: Option<String>,
    /// The cache folder holding `models--org--name/` (`HF_HUB_CACHE`).
    pub cache_dir: Option<PathBuf>,
    /// The access token (`HF_TOKEN`, else the `HF_HOME/token` file); `Some("")` sends none.
    pub token: Option<String>,
    /// Resolve from the cache only (`HF_HUB_OFFLINE`).
    pub offline: Option<bool>,
}

/// A local folder as is; otherwise a hub id resolved to its snapshot folder in the cache,
/// downloading what is missing.
pub fn resolve_model(spec: &str, options: &ResolveOptions) -> Result<PathBuf, HubError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let Some(id) = HubId::parse(spec) else {
        let reason = if path.exists() {
            "it is a file"
        } else {
            "no such folder"
        };
        return Err(HubError::NotAModel {
            spec: spec.to_string(),
            reason: reason.to_string(),
        });
    };
    let settings = Settings::new(options)?;
    let cache = RepoCache::new(&settings.cache_dir, &id.repo);
    let commit = id
        .commit()
        .map(str::to_string)
        .or_else(|| cache.read_ref(&id.revision));
    if let Some(commit) = &commit {
        let snapshot = cache.snapshot(commit);
        if wanted::missing(&snapshot, &cache.no_exist(commit)).is_empty() {
            return Ok(snapshot);
        }
    }
    if settings.offline {
        return Err(not_in_cache(&id, &cache, commit.as_deref()));
    }
    download(&id, &cache, &Hub::new(&settings))
}

/// What the offline error says is missing.
fn not_in_cache(id: &HubId, cache: &RepoCache, commit: Option<&str>) -> HubError {
    let detail = match commit {
        None => format!("{} does not exist", cache.ref_path(&id.revision).display()),
        Some(commit) => {
            let snapshot = cache.snapshot(commit);
            let missing = wanted::missing(&snapshot, &cache.no_exist(commit));
            format!("{} lacks {}", snapshot.display(), missing.join(", "))
        }
    };
    HubError::NotInCache {
        repo: id.repo.clone(),
        revision: id.revision.clone(),
        detail,
    }
}

/// Asks the hub for the revision's commit and files, and fetches what the snapshot lacks:
/// the small files first (they say which modules and weight shards there are), then weights.
fn download(id: &HubId, cache: &RepoCache, hub: &Hub) -> Result<PathBuf, HubError> {
    let info = hub.repo_info(&id.repo, &id.revision)?;
    let commit = info.commit.as_str();
    if !wanted::has_safetensors(&info.files) {
        let weights = wanted::weight_like(&info.files);
        let weights = if weights.is_empty() {
            "no weight files".to_string()
        } else {
            weights.join(", ")
        };
        return Err(HubError::NoSafetensors {
            repo: id.repo.clone(),
            revision: id.revision.clone(),
            weights,
        });
    }
    if id.commit().is_none() {
        cache.write_ref(&id.revision, commit)?;
    }
    let snapshot = cache.snapshot(commit);
    // Absent decisive files are recorded for the root and the Transformer's folder, where
    // `wanted::missing` looks for them.
    let fetch_folder = |dir: &str, record_absent: bool| -> Result<(), HubError> {
        let (present, absent) = wanted::folder_files(dir, &info.files);
        for file in absent.iter().filter(|_| record_absent) {
            cache.mark_absent(commit, file)?;
        }
        present
            .iter()
            .try_for_each(|file| fetch_file(hub, cache, &id.repo, commit, file))
    };
    fetch_folder("", true)?;
    let modules = wanted::modules(&snapshot);
    for module in modules.iter().filter(|m| !m.dir.is_empty()) {
        fetch_folder(&module.dir, module.kind == ModuleKind::Transformer)?;
    }
    for module in modules
        .iter()
        .filter(|m| matches!(m.kind, ModuleKind::Transformer | ModuleKind::Dense))
    {
        for file in wanted::weight_files(&snapshot, &module.dir, &info.files) {
            fetch_file(hub, cache, &id.repo, commit, &file)?;
        }
    }
    let missing = wanted::missing(&snapshot, &cache.no_exist(commit));
    if !missing.is_empty() {
        return Err(HubError::MissingFiles {
            repo: id.repo.clone(),
            commit: commit.to_string(),
            dir: snapshot,
            missing: missing.join(", "),
        });
    }
    Ok(snapshot)
}

/// Puts one file of the repo into `snapshots/<commit>/`: skipped when already there, linked
/// when its blob is, otherwise downloaded to `blobs/<etag>.incomplete`, verified, renamed to
/// `blobs/<etag>`, then linked.
fn fetch_file(
    hub: &Hub,
    cache: &RepoCache,
    repo: &str,
    commit: &str,
    file: &str,
) -> Result<(), HubError> {
    if !cache::is_safe_file_name(file) {
        let url = format!("{repo}@{commit}");
        return Err(HubError::BadResponse {
            url,
            reason: format!("unsafe file name {file:?}"),
        });
    }
    if cache.snapshot(commit).join(file).is_file() {
        return Ok(());
    }
    let meta = hub.file_meta(repo, commit, file)?;
    let blob = cache.blob(&meta.etag);
    if !blob.is_file() {
        let partial = cache.incomplete(&meta.etag);
        let blobs = partial.parent().expect("blobs folder");
        std::fs::create_dir_all(blobs).map_err(error::io_err(blobs))?;
        hub.download(repo, commit, file, &meta, &partial)?;
        std::fs::rename(&partial, &blob).map_err(error::io_err(&blob))?;
    }
    cache.link(commit, file, &meta.etag)
}
