//! `cargo xtask demo`: the README's main job. Builds the test models if missing, then runs the
//! `koembed` command on them: a model summary, Korean questions answered from the Debian FAQ
//! with `koembed search`, and the retrieval figures of the whole FAQ set with `koembed eval`.

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
    let status = Command::new(binary)
        .args(args)
        .status()
        .context("running koembed")?;
    if !status.success() {
        bail!("koembed {} failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    crate::models::run(crate::models::Args::default()).context("building the test models")?;
    let koembed = koembed_binary()?;
    let models = paths::models_dir();
    let e5 = models.join("e5-small");
    run_koembed(&koembed, &["inspect", "--model", &e5.to_string_lossy()])?;
    let faq = paths::testdata_dir().join("debian-faq-ko");
    let corpus = faq.join("corpus.jsonl");
    run_koembed(
        &koembed,
        &[
            "search",
            "--model",
            &e5.to_string_lossy(),
            "--corpus",
            &corpus.to_string_lossy(),
            "--top-k",
            "2",
            "데비안에서 버그를 어떻게 보고하나요?",
            "데비안 설치 이미지를 어디서 어떻게 얻나요?",
            "어떻게 데비안 개발자가 될 수 있나요?",
        ],
    )?;
    run_koembed(
        &koembed,
        &[
            "eval",
            "--model",
            &e5.to_string_lossy(),
            "--data",
            &faq.to_string_lossy(),
        ],
    )?;
    println!("(the pinned sentence-transformers reference gives nDCG@10 0.5957, MRR@10 0.5425, Recall@1 0.4464, Recall@10 0.7679)");
    Ok(())
}
