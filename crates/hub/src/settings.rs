//! The resolve settings: `ResolveOptions` first, then the Hugging Face environment variables.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::{HubError, ResolveOptions};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

#[derive(Debug, Clone)]
pub struct Settings {
    /// Without a trailing `/`.
    pub endpoint: String,
    /// The hub cache folder (`HF_HUB_CACHE`), holding `models--org--name/`.
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    pub offline: bool,
    /// Draw progress bars (asked for, and stderr is a terminal).
    pub progress: bool,
}

impl Settings {
    pub fn new(options: &ResolveOptions) -> Result<Settings, HubError> {
        let endpoint = options.endpoint.clone().or_else(|| env("HF_ENDPOINT"));
        let endpoint = endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/');
        let cache_dir = match &options.cache_dir {
            Some(dir) => dir.clone(),
            None => match env("HF_HUB_CACHE").or_else(|| env("HUGGINGFACE_HUB_CACHE")) {
                Some(dir) => PathBuf::from(dir),
                None => hf_home().ok_or(HubError::NoCacheDir)?.join("hub"),
            },
        };
        let token = match &options.token {
            Some(token) => Some(token.clone()).filter(|t| !t.is_empty()),
            None => env_token(),
        };
        let offline = options
            .offline
            .unwrap_or_else(|| env_flag("HF_HUB_OFFLINE"));
        let progress = options.progress
            && std::io::stderr().is_terminal()
            && !env_flag("HF_HUB_DISABLE_PROGRESS_BARS");
        Ok(Settings {
            endpoint: endpoint.to_string(),
            cache_dir,
            token,
            offline,
            progress,
        })
    }
}

/// A variable's value, unless unset or blank.
fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `1`, `ON`, `YES` or `TRUE` (any case), as huggingface_hub reads its switches.
fn env_flag(name: &str) -> bool {
    env(name)
        .is_some_and(|v| matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"))
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
fn hf_home() -> Option<PathBuf> {
    if let Some(home) = env("HF_HOME") {
        return Some(PathBuf::from(home));
    }
    let cache = env("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| {
        env("HOME")
            .or_else(|| env("USERPROFILE"))
            .map(|h| PathBuf::from(h).join(".cache"))
    })?;
    Some(cache.join("huggingface"))
}

/// `HF_TOKEN`, else the token file `huggingface-cli login` writes (`HF_TOKEN_PATH`, else
/// `HF_HOME/token`).
fn env_token() -> Option<String> {
    if let Some(token) = env("HF_TOKEN").or_else(|| env("HUGGING_FACE_HUB_TOKEN")) {
        return Some(token);
    }
    let path = env("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .or_else(|| Some(hf_home()?.join("token")))?;
    let token = std::fs::read_to_string(path).ok()?;
    Some(token.trim().to_string()).filter(|t| !t.is_empty())
}
