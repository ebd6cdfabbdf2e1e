//! The hub's HTTP API, as huggingface_hub uses it:
//!
//! - `GET {endpoint}/api/models/{repo}/revision/{revision}`: JSON with `sha` (the commit) and
//!   `siblings: [{"rfilename": ...}]`;
//! - `HEAD {endpoint}/{repo}/resolve/{commit}/{file}` (redirects not followed, so the hub's own
//!   headers are read): `X-Linked-Etag` / `ETag`, `X-Linked-Size` / `Content-Length`, and a
//!   `Location` for LFS files stored on a CDN;
//! - `GET` of the file (redirects followed), with `Range: bytes=N-` to resume.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use ureq::config::RedirectAuthHeaders;
use ureq::http::Response;
use ureq::typestate::WithoutBody;
use ureq::{Agent, Body, RequestBuilder};

use crate::error::io_err;
use crate::settings::Settings;
use crate::spec::is_commit_hash;
use crate::HubError;

/// A repo at a revision: the commit the revision points at, and the files it holds.
pub struct RepoInfo {
    pub commit: String,
    pub files: BTreeSet<String>,
}

/// What a HEAD on a file's resolve URL tells.
pub struct FileMeta {
    /// Where to GET the bytes (the CDN `Location` for LFS files).
    pub url: String,
    /// The blob name: the sha256 for LFS files, the git blob hash otherwise.
    pub etag: String,
    pub size: u64,
    /// The sha256 of the content, when the hub gives it (LFS files).
    pub sha256: Option<String>,
}

/// What a request was about, to say so when it fails.
enum Subject<'a> {
    Repo { revision: &'a str },
    File { commit: &'a str, file: &'a str },
}

const PROGRESS_TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

pub struct Hub {
    agent: Agent,
    endpoint: String,
    token: Option<String>,
    progress: bool,
}

impl Hub {
    pub fn new(settings: &Settings) -> Hub {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .redirect_auth_headers(RedirectAuthHeaders::SameHost)
            .user_agent(format!("koembed/{}", env!("CARGO_PKG_VERSION")))
            // Sizes and Range offsets are about the stored bytes, not a compressed stream.
            .accept_encoding("identity")
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Hub {
            agent,
            endpoint: settings.endpoint.clone(),
            token: settings.token.clone(),
            progress: settings.progress,
        }
    }

    /// `GET /api/models/{repo}/revision/{revision}`.
    pub fn repo_info(&self, repo: &str, revision: &str) -> Result<RepoInfo, HubError> {
        #[derive(Deserialize)]
        struct Info {
            sha: String,
            #[serde(default)]
            siblings: Vec<Sibling>,
        }
        #[derive(Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.endpoint,
            quote(revision, false)
        );
        let mut resp = self.call(self.agent.get(&url), &url)?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(&resp, &url, repo, Subject::Repo { revision }));
        }
        let bad = |reason: String| HubError::BadResponse {
            url: url.clone(),
            reason,
        };
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| bad(e.to_string()))?;
        let info: Info = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if !is_commit_hash(&info.sha) {
            return Err(bad(format!("`sha` is {:?}, not a commit hash", info.sha)));
        }
        Ok(RepoInfo {
            commit: info.sha,
            files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// `HEAD /{repo}/resolve/{commit}/{file}`, following only relative redirects (a renamed
    /// repo), as huggingface_hub does: an LFS file's redirect to its CDN carries the headers.
    pub fn file_meta(&self, repo: &str, commit: &str, file: &str) -> Result<FileMeta, HubError> {
        let mut url = format!(
            "{}/{repo}/resolve/{commit}/{}",
            self.endpoint,
            quote(file, true)
        );
        let mut hops = 0;
        let resp = loop {
            let head = self.agent.head(&url).config().max_redirects(0).build();
            let resp = self.call(head, &url)?;
            match header(&resp, "location") {
                Some(location)
                    if resp.status().is_redirection() && location.starts_with('/') && hops < 5 =>
                {
                    url = format!("{}{location}", origin(&url));
                    hops += 1;
                }
                _ => break resp,
            }
        };
        let status = resp.status();
        if !status.is_success() && !status.is_redirection() {
            return Err(self.status_error(&resp, &url, repo, Subject::File { commit, file }));
        }
        let bad = |reason: &str| HubError::BadResponse {
            url: url.clone(),
            reason: reason.to_string(),
        };
        if let Some(served) = header(&resp, "x-repo-commit") {
            if served != commit {
                return Err(bad(&format!(
                    "asked for commit {commit}, got X-Repo-Commit {served}"
                )));
            }
        }
        let linked_etag = header(&resp, "x-linked-etag").map(|e| normalize_etag(&e));
        let etag = linked_etag
            .clone()
            .or_else(|| header(&resp, "etag").map(|e| normalize_etag(&e)));
        let etag = etag
            .filter(|e| is_blob_name(e))
            .ok_or_else(|| bad("no usable ETag or X-Linked-Etag header"))?;
        let size = header(&resp, "x-linked-size")
            .or_else(|| header(&resp, "content-length").filter(|_| status.is_success()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no X-Linked-Size or Content-Length header"))?;
        let url = match header(&resp, "location").filter(|_| status.is_redirection()) {
            Some(location) if location.starts_with('/') => format!("{}{location}", origin(&url)),
            Some(location) => location,
            None => url,
        };
        let sha256 =
            linked_etag.filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()));
        Ok(FileMeta {
            url,
            etag,
            size,
            sha256,
        })
    }

    /// Downloads `meta.url` into `partial`, resuming what is already there with a Range
    /// request, and checks size and sha256. `partial` is kept when the transfer breaks off
    /// (the next run resumes it), and removed when the bytes are wrong.
    pub fn download(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        meta: &FileMeta,
        partial: &Path,
    ) -> Result<(), HubError> {
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial)
            .map_err(io_err(partial))?;
        let mut start = out.metadata().map_err(io_err(partial))?.len();
        if start > meta.size {
            out.set_len(0).map_err(io_err(partial))?;
            start = 0;
        }
        let mut received = start;
        if start < meta.size {
            let mut resp = self.get(&meta.url, start)?;
            if resp.status().as_u16() == 416 && start > 0 {
                // The server will not resume this partial file: start over.
                out.set_len(0).map_err(io_err(partial))?;
                start = 0;
                resp = self.get(&meta.url, 0)?;
            }
            match resp.status().as_u16() {
                206 if start > 0 => {
                    let range = header(&resp, "content-range").unwrap_or_default();
                    if !range.starts_with(&format!("bytes {start}-")) {
                        let reason =
                            format!("asked for bytes {start}-, got Content-Range {range:?}");
                        return Err(HubError::BadResponse {
                            url: meta.url.clone(),
                            reason,
                        });
                    }
                }
                200 => {
                    out.set_len(0).map_err(io_err(partial))?;
                    start = 0;
                }
                _ => {
                    let subject = Subject::File { commit, file };
                    return Err(self.status_error(&resp, &meta.url, repo, subject));
                }
            }
            let bar = self.progress_bar(file, meta.size, start);
            received = start;
            let mut body = resp.body_mut().as_reader();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        bar.abandon();
                        return Err(HubError::Interrupted {
                            repo: repo.to_string(),
                            file: file.to_string(),
                            url: meta.url.clone(),
                            partial: partial.to_path_buf(),
                            received,
                            expected: meta.size,
                            reason: e.to_string(),
                        });
                    }
                };
                out.write_all(&buf[..n]).map_err(io_err(partial))?;
                received += n as u64;
                bar.set_position(received);
            }
            bar.finish_and_clear();
        }
        out.flush().map_err(io_err(partial))?;
        drop(out);
        let thrown_away = |err: HubError| {
            let _ = std::fs::remove_file(partial);
            Err(err)
        };
        if received != meta.size {
            return thrown_away(HubError::SizeMismatch {
                repo: repo.to_string(),
                file: file.to_string(),
                url: meta.url.clone(),
                expected: meta.size,
                received,
            });
        }
        if let Some(expected) = &meta.sha256 {
            let actual = sha256_file(partial)?;
            if !actual.eq_ignore_ascii_case(expected) {
                return thrown_away(HubError::HashMismatch {
                    repo: repo.to_string(),
                    file: file.to_string(),
                    url: meta.url.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    fn get(&self, url: &str, start: u64) -> Result<Response<Body>, HubError> {
        let mut get = self.agent.get(url);
        if start > 0 {
            get = get.header("Range", format!("bytes={start}-"));
        }
        self.call(get, url)
    }

    /// Sends a request, with the token when it goes to the endpoint.
    fn call(
        &self,
        request: RequestBuilder<WithoutBody>,
        url: &str,
    ) -> Result<Response<Body>, HubError> {
        let request = match &self.token {
            Some(token) if url.starts_with(&self.endpoint) => {
                request.header("Authorization", format!("Bearer {token}"))
            }
            _ => request,
        };
        request.call().map_err(|e| HubError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// What an unsuccessful answer means for the repo or file that was asked about.
    fn status_error(
        &self,
        resp: &Response<Body>,
        url: &str,
        repo: &str,
        subject: Subject,
    ) -> HubError {
        let status = resp.status().as_u16();
        let code = header(resp, "x-error-code");
        let (repo, url) = (repo.to_string(), url.to_string());
        match (status, code.as_deref(), subject) {
            (404, Some("RevisionNotFound"), Subject::Repo { revision }) => {
                HubError::RevisionNotFound {
                    repo,
                    revision: revision.to_string(),
                    url,
                }
            }
            (404, code, Subject::File { commit, file }) if code != Some("RepoNotFound") => {
                HubError::FileNotFound {
                    repo,
                    file: file.to_string(),
                    commit: commit.to_string(),
                    url,
                }
            }
            (401 | 404, ..) => {
                let hint = match self.token {
                    Some(_) => {
                        "the token in use (HF_TOKEN or the saved login) may not have access to it"
                    }
                    None => "if it is private or gated, set HF_TOKEN to a token that can read it",
                };
                HubError::RepoNotFound {
                    repo,
                    url,
                    hint: hint.to_string(),
                }
            }
            (403, ..) => HubError::AccessDenied { repo, url, status },
            _ => {
                let detail = header(resp, "x-error-message")
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                HubError::Http {
                    url,
                    status,
                    detail,
                }
            }
        }
    }

    fn progress_bar(&self, file: &str, size: u64, start: u64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(PROGRESS_TEMPLATE)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(file.to_string());
        bar.set_position(start);
        bar
    }
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)?
        .to_str()
        .ok()
        .map(|v| v.trim().to_string())
}

/// `"abc"` or `W/"abc"` -> `abc`.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// An etag fit to name a file in blobs/ (hex digits on the hub; never a path).
fn is_blob_name(etag: &str) -> bool {
    !etag.is_empty()
        && etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`).
pub fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn sha256_file(path: &Path) -> Result<String, HubError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_err(path))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_template_parses() {
        assert!(ProgressStyle::with_template(PROGRESS_TEMPLATE).is_ok());
    }

    #[test]
    fn quotes_revisions_and_file_names() {
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(
            quote("1_Pooling/config.json", true),
            "1_Pooling/config.json"
        );
        assert_eq!(quote("a b+c", true), "a%20b%2Bc");
    }

    #[test]
    fn reads_etags_and_origins() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert!(
            is_blob_name("0a1b")
                && !is_blob_name("..")
                && !is_blob_name("a/b")
                && !is_blob_name("")
        );
        assert_eq!(origin("http://127.0.0.1:80/a/b"), "http://127.0.0.1:80");
        assert_eq!(origin("https://huggingface.co"), "https://huggingface.co");
    }
}
