//! `cargo xtask test`: the README's test command and what `.ci/run` runs: the test models,
//! `cargo test --workspace --release`, then the AVX-512 kernels' tests under emulation.

use std::process::Command;

use anyhow::{bail, Context};

use crate::paths;

#[derive(clap::Args, Default)]
pub struct Args {
    /// Extra arguments passed to `cargo test` (after `--workspace --release`).
    #[arg(trailing_var_arg = true)]
    cargo_args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::models::run(crate::models::Args::default())
        .context("building the test models (cargo xtask models)")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .current_dir(paths::workspace_root())
        .env("KOEMBED_MODELS", paths::models_dir())
        .args(["test", "--workspace", "--release"])
        .args(&args.cargo_args)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    // The AVX-512 kernels cannot run on this project's AVX2 machines: test them on an
    // emulated CPU (see `cargo xtask emulate`).
    crate::emulate::run(crate::emulate::Args::default())
        .context("testing the AVX-512 kernels on an emulated CPU (cargo xtask emulate)")
}
