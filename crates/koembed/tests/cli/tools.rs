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
    for key in ["tok_s", "ms", "peak_rss_mb", "load_ms"] {
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

/// A model that Python's huggingface_hub put in the standard cache (blobs + snapshot symlinks +
/// refs/main) is found by its hub id, offline, and gives the same vectors as the folder.
#[test]
fn a_hub_id_resolves_from_the_huggingface_cache() {
    let hf_home = temp_dir("hf-home");
    let repo = hf_home.join("hub/models--koembed-test--tiny-bert");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    let source = common::workspace_root().join("testdata/tiny/tiny-bert");
    for entry in walk(&source) {
        let relative = entry.strip_prefix(&source).unwrap();
        let bytes = std::fs::read(&entry).unwrap();
        let blob_name = format!("blob-{}", relative.to_string_lossy().replace('/', "-"));
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::write(repo.join("blobs").join(&blob_name), &bytes).unwrap();
        let link = snapshot.join(relative);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = relative.components().count() + 1;
        let target = format!("{}blobs/{blob_name}", "../".repeat(depth));
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();

    let run_with_cache = |model: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_koembed"))
            .args(["embed", "-q", "--model", model, "-i"])
            .arg(common::workspace_root().join("testdata/debian-faq-ko/COPYRIGHT"))
            .env("HF_HOME", &hf_home)
            .env_remove("HF_HUB_CACHE")
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let by_id = run_with_cache("koembed-test/tiny-bert");
    let by_folder = run_with_cache(&path_arg(&source));
    assert!(!by_id.is_empty());
    assert_eq!(by_id, by_folder);
    // An id that is not in the cache, offline: a clear error naming it, no network touched.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_koembed"))
        .args(["inspect", "--model", "koembed-test/absent"])
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("koembed-test/absent") && stderr.contains("HF_HUB_OFFLINE"),
        "{stderr}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn bench_stages_prints_every_stage() {
    let model = path_arg(&common::built_model("e5-small"));
    let args = [
        "bench", "-m", &model, "-w", "W1", "--calls", "2", "--stages",
    ];
    let text = koembed(&args, b"").ok().stdout_text();
    assert!(text.contains("encoder stages over 2 more calls"), "{text}");
    for stage in [
        "embeddings",
        "qkv projection",
        "attention ",
        "attention output + residual",
        "attention layernorm",
        "ffn in + gelu",
        "ffn out + residual",
        "output layernorm",
        "encoder ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(stage)),
            "no {stage:?} row in\n{text}"
        );
    }

    let run = koembed(&[&args[..], &["--json"]].concat(), b"").ok();
    let v: serde_json::Value =
        serde_json::from_str(run.stdout_text().trim()).expect("one JSON line");
    let stages = v["stages"].as_array().expect("a stages array");
    assert_eq!(stages.len(), 8, "{v}");
    for s in stages {
        let matmul = !matches!(
            s["stage"].as_str().unwrap(),
            "embeddings" | "attention layernorm" | "output layernorm"
        );
        assert!(s["ms"].as_f64().is_some_and(|ms| ms > 0.0), "{s}");
        assert_eq!(s["gflop_s"].as_f64().is_some(), matmul, "{s}");
    }

    let dir = temp_dir("bench-stages");
    let corpus = dir.join("texts.txt");
    std::fs::write(&corpus, "a text\n").unwrap();
    koembed(
        &["bench", "-m", &model, "-w", &path_arg(&corpus), "--stages"],
        b"",
    )
    .fails_with("--stages times the encoder on W1, W2 or W3 only");
}
