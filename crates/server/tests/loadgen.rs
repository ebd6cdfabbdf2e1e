//! A short run of the load generator (8 clients, 2 s) against an in-process server: no
//! errors, every text answered, and the batcher merged requests. The full load test (64
//! clients, 60 s) is in the README.

mod common;

use std::process::Command;

use common::*;

#[test]
fn loadgen_smoke_run_has_no_errors() {
    let server = start_default();
    let corpus = koembed_golden::workspace_root().join("testdata/debian-faq-ko/corpus.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_koembed-loadgen"))
        .args([
            "--url",
            &server.url(),
            "--clients",
            "8",
            "--seconds",
            "2",
            "--json",
        ])
        .arg("--corpus")
        .arg(&corpus)
        .args(["--pid", &std::process::id().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["rejected_429"], 0, "{report}");
    assert!(report["texts"].as_u64().unwrap() > 0, "{report}");
    assert!(report["tokens_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["peak_rss_mb"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["p99_ms"].as_f64().unwrap() >= report["p50_ms"].as_f64().unwrap());

    // 8 clients with one text each: some encoder calls ran texts of several requests.
    let metrics = get(&server, "/metrics").ok().text;
    let line = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let batches = line("koembed_batch_size_count");
    let texts = line("koembed_batch_size_sum");
    assert!(
        texts > batches,
        "{texts} texts in {batches} calls: nothing was merged"
    );
}
