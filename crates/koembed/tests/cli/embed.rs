//! `koembed embed` gives the reference's vectors (the e5-small goldens), through every input
//! and output format.

use koembed_golden::{testdata_dir, Golden};

use crate::{common, koembed, max_abs_diff, path_arg, temp_dir};

const TOLERANCE: f32 = 1e-5;

fn golden() -> Golden {
    Golden::load(&testdata_dir(), "e5-small").expect("the e5-small goldens load")
}

/// Compares `vectors[i]` with the golden row of (text i of `text_ids`, prompt).
fn check_rows(
    golden: &Golden,
    text_ids: &[&str],
    prompt: Option<&str>,
    vectors: &[Vec<f32>],
    what: &str,
) {
    assert_eq!(
        vectors.len(),
        text_ids.len(),
        "{what}: one vector per input text"
    );
    for (id, v) in text_ids.iter().zip(vectors) {
        let r = golden
            .find_row(id, prompt)
            .unwrap_or_else(|| panic!("no golden row for {id} {prompt:?}"));
        let diff = max_abs_diff(v, golden.embeddings.row(r));
        assert!(
            diff <= TOLERANCE,
            "{what}: text {id}, prompt {prompt:?}: differs by {diff:e}"
        );
    }
}

fn parse_jsonl(bytes: &[u8]) -> Vec<Vec<f32>> {
    let text = std::str::from_utf8(bytes).unwrap();
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["index"], i, "rows in input order");
            v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn parse_npy(path: &std::path::Path) -> ndarray::Array2<f32> {
    koembed::npy::parse_npy_f32(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn lines_on_stdin_to_jsonl_on_stdout_match_the_goldens() {
    let model = common::built_model("e5-small");
    let golden = golden();
    // One text per line: the golden texts that hold no line break.
    let texts: Vec<_> = golden
        .texts
        .iter()
        .filter(|t| !t.text.contains(['\n', '\r']))
        .collect();
    assert!(texts.len() >= 25, "most golden texts fit on a line");
    let input: String = texts.iter().map(|t| format!("{}\n", t.text)).collect();
    let run = koembed(&["embed", "--model", &path_arg(&model)], input.as_bytes()).ok();
    let ids: Vec<&str> = texts.iter().map(|t| t.id.as_str()).collect();
    check_rows(
        &golden,
        &ids,
        None,
        &parse_jsonl(&run.stdout),
        "stdin -> jsonl",
    );
    // stderr is not a terminal: no progress bar, only the summary, with the reference's counts.
    let truncated = ids
        .iter()
        .filter(|id| golden.row(golden.find_row(id, None).unwrap()).truncated)
        .count();
    let tokens: usize = ids
        .iter()
        .map(|id| golden.row(golden.find_row(id, None).unwrap()).n_tokens)
        .sum();
    let summary = format!(
        "koembed: {} texts, {tokens} tokens, {truncated} truncated (max 512 tokens), ",
        ids.len()
    );
    assert!(
        run.stderr.starts_with(&summary),
        "expected {summary:?}, got:\n{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn jsonl_file_with_a_named_prompt_to_npy_matches_the_goldens() {
    let model = common::built_model("e5-small");
    let golden = golden();
    let dir = temp_dir("embed-npy");
    // Every golden text, line breaks and all, in a .jsonl with the text under "body".
    let input = dir.join("texts.jsonl");
    let lines: String = golden
        .texts
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({"_id": t.id, "body": t.text})))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let out = dir.join("vectors.npy");
    let args = [
        "-q",
        "embed",
        "-m",
        &path_arg(&model),
        "--prompt",
        "query",
        "--field",
        "body",
    ];
    let mut args = args.to_vec();
    let (i, o) = (path_arg(&input), path_arg(&out));
    args.extend(["-i", &i, "-o", &o]);
    let run = koembed(&args, b"").ok();
    assert!(
        run.stdout.is_empty() && run.stderr.is_empty(),
        "-q and -o: nothing printed"
    );
    let vectors = parse_npy(&out);
    assert_eq!(vectors.dim(), (golden.texts.len(), 384));
    let rows: Vec<Vec<f32>> = vectors.rows().into_iter().map(|r| r.to_vec()).collect();
    let ids: Vec<&str> = golden.texts.iter().map(|t| t.id.as_str()).collect();
    check_rows(
        &golden,
        &ids,
        Some("query"),
        &rows,
        "jsonl --prompt query -> npy",
    );
}

#[test]
fn a_literal_prefix_equals_the_named_prompt() {
    let model = common::built_model("e5-small");
    let golden = golden();
    let dir = temp_dir("embed-prefix");
    let texts: Vec<_> = golden
        .texts
        .iter()
        .filter(|t| !t.text.contains(['\n', '\r']))
        .take(12)
        .collect();
    let input = dir.join("texts.txt");
    std::fs::write(
        &input,
        texts
            .iter()
            .map(|t| format!("{}\n", t.text))
            .collect::<String>(),
    )
    .unwrap();
    let out = dir.join("vectors.jsonl");
    let args = [
        "embed",
        "-m",
        &path_arg(&model),
        "--prefix",
        "passage: ",
        "-i",
        &path_arg(&input),
        "-o",
        &path_arg(&out),
    ];
    koembed(&args, b"").ok();
    let ids: Vec<&str> = texts.iter().map(|t| t.id.as_str()).collect();
    check_rows(
        &golden,
        &ids,
        Some("passage"),
        &parse_jsonl(&std::fs::read(&out).unwrap()),
        "--prefix",
    );
}

#[test]
fn max_batch_tokens_rejects_bad_values_and_does_not_change_the_vectors() {
    let model = common::built_model("e5-small");
    let m = path_arg(&model);
    // Usage errors come from the argument parser: status 2, with the option and value named.
    for bad in ["0", "abc", "99999999999"] {
        let run = koembed(&["embed", "--model", &m, "--max-batch-tokens", bad], b"x\n");
        assert_eq!(
            run.code,
            Some(2),
            "--max-batch-tokens {bad}:\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("--max-batch-tokens") && run.stderr.contains(bad),
            "--max-batch-tokens {bad}:\n{}",
            run.stderr
        );
        assert!(run.stdout.is_empty());
    }
    // Every subcommand with --batch-size takes it.
    for sub in ["embed", "search", "eval", "bench"] {
        let help = koembed(&[sub, "--help"], b"").ok().stdout_text();
        assert!(
            help.contains("--max-batch-tokens <N>"),
            "{sub} --help:\n{help}"
        );
    }
    // Golden texts of 2 to 512 tokens: a budget of 40 tokens and 3 texts per call splits them
    // into many calls (the long ones alone); the output is byte for byte the default's.
    let golden = golden();
    let input: String = golden
        .texts
        .iter()
        .filter(|t| !t.text.contains(['\n', '\r']))
        .map(|t| format!("{}\n", t.text))
        .collect();
    let default = koembed(&["-q", "embed", "--model", &m], input.as_bytes()).ok();
    let small = koembed(
        &[
            "-q",
            "embed",
            "--model",
            &m,
            "--batch-size",
            "3",
            "--max-batch-tokens",
            "40",
        ],
        input.as_bytes(),
    )
    .ok();
    assert!(!default.stdout.is_empty());
    assert!(
        small.stdout == default.stdout,
        "--max-batch-tokens 40 changed the output"
    );
    let one_call = koembed(
        &[
            "-q",
            "embed",
            "--model",
            &m,
            "--batch-size",
            "1000",
            "--max-batch-tokens",
            "1000000",
        ],
        input.as_bytes(),
    )
    .ok();
    assert!(
        one_call.stdout == default.stdout,
        "one encoder call for all texts changed the output"
    );
}
