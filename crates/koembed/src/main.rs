//! The `koembed` command: parse the arguments, size the thread pools, run the subcommand, and
//! turn an error into one line on stderr and exit status 1.

use clap::Parser;
use koembed::cli::Cli;

fn main() {
    let cli = Cli::parse();
    if let Err(err) = koembed::cli::run(cli) {
        // A reader that went away (`koembed embed ... | head`) is not an error of ours.
        let broken_pipe = err.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("koembed: error: {err:#}");
        std::process::exit(1);
    }
}
