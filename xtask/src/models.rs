//! placeholder: owned by a helper.

#[derive(clap::Args, Default)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
