//! `tokenize`, `bench`, `inspect` and the help texts.

use crate::{common, koembed, path_arg, temp_dir, tiny_xlmr};

#[test]
fn tokenize_hello_world() {
    let model = path_arg(&common::built_model("e5-small"));
    let run = koembed(&["tokenize", "-m", &model, "--json", "Hello world"], b"").ok();
    let v: serde_json::Value = serde_json::from_str(run.stdout_text().trim()).unwrap();
    assert_eq!(v["ids"], serde_json::json!([0, 35378, 8999, 2]));
    assert_eq!(
        v["pieces"],
        serde_json::json!(["<s>", "▁Hello", "▁world", "</s>"])
    );
    assert_eq!(v["truncated"], false);

    let run = koembed(&["tokenize", "-m", &model, "Hello world"], b"").ok();
    let text = run.stdout_text();
    assert!(text.contains("ids        [0, 35378, 8999, 2]\n"), "{text}");
    assert!(text.contains("truncated  no\n"), "{text}");

    // The prompt is part of what the model sees; texts may come from stdin.
    let run = koembed(
        &["tokenize", "-m", &model, "--prompt", "query", "--json"],
        b"Hello world\n",
    )
    .ok();
    let v: serde_json::Value = serde_json::from_str(run.stdout_text().trim()).unwrap();
    assert_eq!(v["prompt"], "query: ");
    assert_eq!(v["pieces"][1], "▁que");
}

#[test]
fn tokenize_reports_truncation() {
    let tiny = path_arg(&tiny_xlmr());
    let long = "가나다 ".repeat(200);
    let run = koembed(&["tokenize", "-m", &tiny, "--json", &long], b"").ok();
    let v: serde_json::Value = serde_json::from_str(run.stdout_text().trim()).unwrap();
    assert_eq!(v["truncated"], true);
    assert_eq!(v["n_tokens"], 64);
}

#[test]
fn bench_w1_prints_the_peer_keys() {
    let model = path_arg(&common::built_model("e5-small"));
    let run = koembed(
        &[
            "bench",
            "-m",
            &model,
            "--workload",
            "W1",
            "--json",
            "--calls",
            "2",
            "--threads",
            "1",
        ],
        b"",
    )
    .ok();
    let v: serde_json::Value =
        serde_json::from_str(run.stdout_text().trim()).expect("one JSON line");
    for key in ["tok_s", "ms", "peak_rss_mb"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    assert_eq!(v["tokens"], 16);
    assert_eq!(v["threads"], 1);
    assert_eq!(v["n"], 2);
    assert_eq!(v["workload"], "W1");
}

#[test]
fn bench_refuses_xlmr_workloads_on_a_smaller_vocabulary_and_times_a_file() {
    let minilm = path_arg(&common::built_model("minilm"));
    koembed(&["bench", "-m", &minilm, "--workload", "W2"], b"")
        .fails_with("workload W2 uses XLM-R token ids (up to 250001), but")
        .fails_with("has a vocabulary of 30522 tokens");
    let dir = temp_dir("bench");
    let corpus = dir.join("texts.txt");
    std::fs::write(&corpus, "first text\nsecond text\n").unwrap();
    let run = koembed(
        &[
            "bench",
            "-m",
            &minilm,
            "--workload",
            &path_arg(&corpus),
            "--calls",
            "1",
        ],
        b"",
    )
    .ok();
    assert!(
        run.stdout_text().contains("1 calls: median "),
        "{}",
        run.stdout_text()
    );
    koembed(&["bench", "-m", &minilm, "--workload", "W9"], b"")
        .fails_with("not W1, W2, W3 nor a file");
}

#[test]
fn inspect_describes_the_model() {
    let run = koembed(&["inspect", "-m", &path_arg(&tiny_xlmr())], b"").ok();
    let text = run.stdout_text();
    for expected in [
        "architecture XLMRobertaModel",
        "parameters",
        "on disk",
        "memory",
        "pooling      cls",
        "prompts",
        "max length   64 tokens",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in ["embed", "search", "eval", "tokenize", "inspect", "bench"] {
        let run = koembed(&[sub, "--help"], b"").ok();
        let help = run.stdout_text();
        assert!(
            help.contains("Example") && help.contains(&format!("koembed {sub} --model")),
            "{sub}:\n{help}"
        );
    }
}
