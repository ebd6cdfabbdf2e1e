//! The first process (PID 1) of the emulated AVX-512 machine that `cargo xtask emulate` boots:
//! it runs every test program under `/tests` with the AVX-512 kernels opted in, prints a line
//! the host reads after each, then idles until the host stops the emulator.
//!
//! It refuses to run the tests if the CPU it sees lacks AVX-512F: the point of the run is the
//! AVX-512 kernels, and without them every test would pass on the AVX2 kernels alone.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Lines the host looks for on the serial console (see `xtask/src/emulate.rs`).
const MARK: &str = "KOEMBED-EMU";

fn main() {
    // What the kernel passes after `--` on its command line: the test harness's arguments.
    let harness_args: Vec<String> = std::env::args().skip(1).collect();
    let avx512 = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("fma");
    println!(
        "{MARK}-CPU avx512f+fma={avx512} (avx {}, avx2 {}, fma {}, avx512f {}, xsave {})",
        std::arch::is_x86_feature_detected!("avx"),
        std::arch::is_x86_feature_detected!("avx2"),
        std::arch::is_x86_feature_detected!("fma"),
        std::arch::is_x86_feature_detected!("avx512f"),
        std::arch::is_x86_feature_detected!("xsave"),
    );
    if avx512 {
        run_tests(&harness_args);
    }
    println!("{MARK}-DONE");
    // PID 1 must not exit (the kernel would panic); the host stops the emulator.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn run_tests(harness_args: &[String]) {
    let mut tests: Vec<PathBuf> = match std::fs::read_dir("/tests") {
        Ok(dir) => dir.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(err) => {
            println!("{MARK}-EXIT /tests unreadable: {err}");
            return;
        }
    };
    tests.sort();
    for test in tests {
        let name = test
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        println!("{MARK}-RUN {name}");
        let start = Instant::now();
        let status = Command::new(&test)
            .args(harness_args)
            .env("KOEMBED_AVX512", "1")
            .status();
        let code = match status {
            Ok(s) => s.code().map_or_else(|| format!("{s}"), |c| c.to_string()),
            Err(err) => format!("not started: {err}"),
        };
        println!(
            "{MARK}-EXIT {name} {code} {:.0}s",
            start.elapsed().as_secs_f64()
        );
    }
}
