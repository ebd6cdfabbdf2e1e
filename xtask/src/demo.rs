//! `cargo xtask demo`: the README's main job. Builds the test models if missing, then runs the
//! `koembed` command on them: a summary of each model, and retrieval on the Korean Debian FAQ.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use crate::paths;

#[derive(clap::Args, Default)]
pub struct Args {}

fn koembed_binary() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .current_dir(paths::workspace_root())
        .args(["build", "--quiet", "--release", "--package", "koembed"])
        .status()
        .context("building koembed")?;
    if !status.success() {
        bail!("building koembed failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths::workspace_root().join("target"));
    Ok(target.join("release").join("koembed"))
}

fn run_koembed(binary: &PathBuf, args: &[&str]) -> anyhow::Result<()> {
    println!("\n$ koembed {}", args.join(" "));
    let status = Command::new(binary).args(args).status().context("running koembed")?;
    if !status.success() {
        bail!("koembed {} failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    crate::models::run(crate::models::Args::default()).context("building the test models")?;
    let koembed = koembed_binary()?;
    let models = paths::models_dir();
    for name in ["e5-small", "frony-tiny-like", "koe5-shape"] {
        let dir = models.join(name);
        run_koembed(&koembed, &["inspect", "--model", &dir.to_string_lossy()])?;
    }
    let faq = paths::testdata_dir().join("debian-faq-ko");
    let e5 = models.join("e5-small");
    run_koembed(
        &koembed,
        &["eval", "--model", &e5.to_string_lossy(), "--data", &faq.to_string_lossy()],
    )?;
    println!("(the pinned sentence-transformers reference gives nDCG@10 0.5957, MRR@10 0.5425, Recall@1 0.4464, Recall@10 0.7679)");
    Ok(())
}
