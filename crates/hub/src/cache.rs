//! The Hugging Face cache layout of one repo, as huggingface_hub reads and writes it:
//!
//! ```text
//! models--org--name/
//!   refs/<revision>            the commit hash a branch or tag pointed at
//!   blobs/<etag>               file contents, named by etag (sha256 for LFS files)
//!   blobs/<etag>.incomplete    a download in progress (resumed with a Range request)
//!   snapshots/<commit>/<file>  relative symlinks into ../../blobs/
//!   .no_exist/<commit>/<file>  empty markers: the repo has no such file at that commit
//! ```

use std::path::{Path, PathBuf};

use crate::error::io_err;
use crate::spec::is_commit_hash;
use crate::HubError;

pub struct RepoCache {
    root: PathBuf,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo: &str) -> RepoCache {
        RepoCache {
            root: cache_dir.join(format!("models--{}", repo.replace('/', "--"))),
        }
    }

    pub fn ref_path(&self, revision: &str) -> PathBuf {
        self.root.join("refs").join(revision)
    }

    /// The commit `refs/<revision>` holds, if any.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.ref_path(revision)).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_string())
    }

    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        write_atomic(&self.ref_path(revision), commit.as_bytes())
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    pub fn no_exist(&self, commit: &str) -> PathBuf {
        self.root.join(".no_exist").join(commit)
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    /// Records that the repo has no `file` at `commit`, so a later offline run knows the
    /// snapshot is complete without it.
    pub fn mark_absent(&self, commit: &str, file: &str) -> Result<(), HubError> {
        let path = self.no_exist(commit).join(file);
        if !path.exists() {
            write_atomic(&path, b"")?;
        }
        Ok(())
    }

    /// Makes `snapshots/<commit>/<file>` point at `blobs/<etag>` (a relative symlink, as
    /// huggingface_hub makes; replaced atomically if something was there).
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<(), HubError> {
        let link = self.snapshot(commit).join(file);
        let dir = link.parent().expect("a snapshot file has a parent folder");
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        // From snapshots/<commit>/<dirs of file>/ up to the repo folder.
        let up = "../".repeat(file.split('/').count() + 1);
        let target = PathBuf::from(format!("{up}blobs/{etag}"));
        let tmp = temp_name(&link);
        make_link(&target, &self.blob(etag), &tmp).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &link).map_err(io_err(&link))
    }
}

#[cfg(unix)]
fn make_link(relative: &Path, _blob: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(relative, link)
}

/// Where symlinks need privileges (Windows), a hard link, or else a copy.
#[cfg(not(unix))]
fn make_link(_relative: &Path, blob: &Path, link: &Path) -> std::io::Result<()> {
    std::fs::hard_link(blob, link).or_else(|_| std::fs::copy(blob, link).map(drop))
}

/// A sibling name for writing `path` before renaming it into place.
fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `path` whole or not at all (a temporary file renamed into place).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    let dir = path.parent().expect("cache files have a parent folder");
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = temp_name(path);
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// A repo-relative file name the hub may send: `/`-separated plain names, nothing that climbs
/// out of the snapshot folder.
pub fn is_safe_file_name(file: &str) -> bool {
    !file.is_empty()
        && !file.contains('\\')
        && file
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_out_like_huggingface_hub() {
        let cache = RepoCache::new(Path::new("/c"), "nlpai-lab/KoE5");
        assert_eq!(
            cache.snapshot("abc"),
            Path::new("/c/models--nlpai-lab--KoE5/snapshots/abc")
        );
        assert_eq!(
            cache.ref_path("refs/pr/1"),
            Path::new("/c/models--nlpai-lab--KoE5/refs/refs/pr/1")
        );
        assert_eq!(
            cache.incomplete("ab"),
            Path::new("/c/models--nlpai-lab--KoE5/blobs/ab.incomplete")
        );
    }

    #[test]
    fn refuses_file_names_that_climb_out() {
        assert!(is_safe_file_name("1_Pooling/config.json"));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a\\b",
            "./a",
        ] {
            assert!(!is_safe_file_name(bad), "{bad}");
        }
    }
}
