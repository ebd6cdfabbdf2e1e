//! Bad input gets a clear message naming what is wrong, exit status 1, and never a panic
//! (`koembed()` fails any run whose stderr says "panicked"). Empty input is not an error.

use std::path::Path;

use crate::{common, koembed, path_arg, temp_dir, tiny_xlmr};

fn embed_args<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["embed", "--model", model];
    args.extend_from_slice(extra);
    args
}

/// A copy of tiny-xlmr without `file`.
fn model_without(file: &str, dir: &Path) -> String {
    let copy = dir.join(format!("no-{file}"));
    std::fs::create_dir_all(copy.join("1_Pooling")).unwrap();
    for entry in walk(&tiny_xlmr()) {
        let relative = entry.strip_prefix(tiny_xlmr()).unwrap();
        if relative != Path::new(file) {
            std::fs::copy(&entry, copy.join(relative)).unwrap();
        }
    }
    path_arg(&copy)
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
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
fn invalid_utf8_names_the_line() {
    let tiny = path_arg(&tiny_xlmr());
    let dir = temp_dir("utf8");
    let input = dir.join("texts.txt");
    std::fs::write(&input, b"fine\nalso fine\nbroken \xff\xfe here\n").unwrap();
    koembed(&embed_args(&tiny, &["-i", &path_arg(&input)]), b"")
        .fails_with("texts.txt line 3: not valid UTF-8");
    koembed(&embed_args(&tiny, &[]), b"ok\n\xc3\n").fails_with("stdin line 2: not valid UTF-8");
}

#[test]
fn bad_jsonl_lines_are_named() {
    let tiny = path_arg(&tiny_xlmr());
    let dir = temp_dir("jsonl");
    let input = dir.join("docs.jsonl");
    std::fs::write(&input, "{\"text\": \"a\"}\n{\"body\": \"b\"}\n").unwrap();
    let i = path_arg(&input);
    koembed(&embed_args(&tiny, &["-i", &i]), b"")
        .fails_with("docs.jsonl line 2: no \"text\" field");
    koembed(&embed_args(&tiny, &["-i", &i, "--field", "body"]), b"")
        .fails_with("docs.jsonl line 1: no \"body\" field");
    std::fs::write(&input, "{\"text\": \"a\"}\n\n{\"text\": \"a\"\n").unwrap();
    koembed(&embed_args(&tiny, &["-i", &i]), b"").fails_with("docs.jsonl line 3: not valid JSON");
}

#[test]
fn a_missing_model_file_is_named() {
    let dir = temp_dir("missing");
    let no_weights = model_without("model.safetensors", &dir);
    koembed(&embed_args(&no_weights, &[]), b"x\n").fails_with("no model.safetensors");
    let no_tokenizer = model_without("tokenizer.json", &dir);
    koembed(&embed_args(&no_tokenizer, &[]), b"x\n").fails_with("tokenizer.json");
    let no_config = model_without("config.json", &dir);
    koembed(&embed_args(&no_config, &[]), b"x\n").fails_with("config.json");
    let nowhere = path_arg(&dir.join("no-such-model"));
    koembed(&embed_args(&nowhere, &[]), b"x\n").fails_with("no-such-model");
}

#[test]
fn a_wrong_dim_names_the_allowed_range() {
    let tiny = path_arg(&tiny_xlmr());
    koembed(&embed_args(&tiny, &["--dim", "49"]), b"x\n")
        .fails_with("--dim 49 is out of range: this model allows 1..=48");
    koembed(&embed_args(&tiny, &["--dim", "0"]), b"x\n").fails_with("1..=48");
    // In range: 12 values per line.
    let run = koembed(&embed_args(&tiny, &["--dim", "12"]), b"x\n").ok();
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["embedding"].as_array().unwrap().len(), 12);
}

#[test]
fn an_unknown_prompt_lists_the_known_ones() {
    // tiny-bert has query/passage in its config_sentence_transformers.json.
    let tiny = path_arg(&common::workspace_root().join("testdata/tiny/tiny-bert"));
    koembed(&embed_args(&tiny, &["--prompt", "qeury"]), b"x\n")
        .fails_with("unknown prompt name \"qeury\"; this model knows: passage, query");
    koembed(&["tokenize", "-m", &tiny, "--prompt", "qeury", "x"], b"")
        .fails_with("this model knows: passage, query");
    let faq = path_arg(&common::faq_dir().join("corpus.jsonl"));
    koembed(
        &[
            "search",
            "-m",
            &tiny,
            "--corpus",
            &faq,
            "--query-prompt",
            "q",
            "x",
        ],
        b"",
    )
    .fails_with("unknown prompt name \"q\"");
    // A model without prompts says so and points at --prefix.
    let xlmr = path_arg(&tiny_xlmr());
    koembed(&embed_args(&xlmr, &["--prompt", "query"]), b"x\n").fails_with(
        "this model has no named prompts; give the text to prepend as a literal prefix (--prefix)",
    );
}

#[test]
fn empty_input_gives_empty_output() {
    let tiny = path_arg(&tiny_xlmr());
    let run = koembed(&embed_args(&tiny, &[]), b"").ok();
    assert!(run.stdout.is_empty());
    assert!(run.stderr.contains("0 texts"), "{}", run.stderr);
    let dir = temp_dir("empty");
    let (input, out) = (dir.join("empty.txt"), dir.join("v.npy"));
    std::fs::write(&input, b"").unwrap();
    koembed(
        &embed_args(
            &tiny,
            &["-q", "-i", &path_arg(&input), "-o", &path_arg(&out)],
        ),
        b"",
    )
    .ok();
    let vectors = koembed::npy::parse_npy_f32(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(vectors.dim(), (0, 48));
    let jsonl = dir.join("empty.jsonl");
    std::fs::write(&jsonl, b"\n").unwrap();
    let run = koembed(&embed_args(&tiny, &["-i", &path_arg(&jsonl)]), b"").ok();
    assert!(run.stdout.is_empty());
}

#[test]
fn empty_lines_are_texts_and_keep_their_rows() {
    let tiny = path_arg(&tiny_xlmr());
    let run = koembed(&embed_args(&tiny, &["-q"]), b"a\n\nb\r\n").ok();
    let lines: Vec<serde_json::Value> = run
        .stdout_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["index"], 1);
}

#[test]
fn a_missing_input_file_and_bad_options_fail_cleanly() {
    let tiny = path_arg(&tiny_xlmr());
    koembed(&embed_args(&tiny, &["-i", "/nonexistent/texts.txt"]), b"")
        .fails_with("cannot open /nonexistent/texts.txt");
    // Usage errors come from the argument parser: status 2, with the option named.
    let run = koembed(&embed_args(&tiny, &["--batch-size", "0"]), b"");
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--batch-size"), "{}", run.stderr);
    let run = koembed(&embed_args(&tiny, &["--threads", "0"]), b"");
    assert_eq!(run.code, Some(2));
    // An output folder that does not exist: the file is named, nothing is left behind.
    koembed(
        &embed_args(&tiny, &["-o", "/nonexistent/dir/v.npy"]),
        b"x\n",
    )
    .fails_with("/nonexistent/dir/v.npy");
}
