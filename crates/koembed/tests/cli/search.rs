//! `koembed search` finds the FAQ answers and caches the corpus; `koembed eval` reproduces the
//! reference's retrieval figures.

use std::collections::HashMap;

use crate::{common, koembed, path_arg, temp_dir};

/// Questions of queries.jsonl that e5-small answers at rank 1 (checked), by query id.
const QUESTIONS: [(&str, &str); 5] = [
    ("q2.3", "데비안 설치 이미지를 어디서 어떻게 얻나요?"),
    ("q5.12", "구글 Earth는 어디 있나요?"),
    ("q6.3", "\"sid\"는 무엇인가요?"),
    ("q12.5", "데비안에서 버그를 어떻게 보고하나요?"),
    (
        "q13.1",
        "어떻게 데비안 멤버 및 데비안 개발자가 될 수 있나요?",
    ),
];

fn qrels() -> HashMap<String, String> {
    let text = std::fs::read_to_string(common::faq_dir().join("qrels.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["query-id"].as_str().unwrap().to_string(),
                v["corpus-id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn search_finds_the_faq_answers_and_the_second_run_uses_the_cache() {
    let model = common::built_model("e5-small");
    let dir = temp_dir("search");
    // The FAQ answers of up to 400 characters, plus the expected ones, in corpus order: a
    // quarter of the corpus's tokens, to keep the test quick (`eval` covers the whole corpus).
    let qrels = qrels();
    let expected: Vec<&str> = QUESTIONS
        .iter()
        .map(|(id, _)| qrels[*id].as_str())
        .collect();
    let full = std::fs::read_to_string(common::faq_dir().join("corpus.jsonl")).unwrap();
    let subset: Vec<&str> = full
        .lines()
        .filter(|line| {
            let doc: serde_json::Value = serde_json::from_str(line).unwrap();
            doc["text"].as_str().unwrap().chars().count() <= 400
                || expected.contains(&doc["_id"].as_str().unwrap())
        })
        .collect();
    assert!(subset.len() > 50, "{} passages", subset.len());
    let corpus = dir.join("corpus.jsonl");
    std::fs::write(&corpus, subset.join("\n") + "\n").unwrap();
    let queries_file = std::fs::read_to_string(common::faq_dir().join("queries.jsonl")).unwrap();
    for (id, question) in QUESTIONS {
        assert!(queries_file.contains(&format!(
            "\"_id\": \"{id}\", \"text\": {}",
            serde_json::json!(question)
        )));
    }
    let mut args = vec![
        "-v".to_string(),
        "search".into(),
        "-m".into(),
        path_arg(&model),
    ];
    args.extend([
        "--corpus".into(),
        path_arg(&corpus),
        "--top-k".into(),
        "3".into(),
        "--json".into(),
    ]);
    args.extend(QUESTIONS.iter().map(|(_, q)| q.to_string()));

    let first = koembed(&args, b"").ok();
    assert!(
        first.stderr.contains("cache miss: wrote "),
        "{}",
        first.stderr
    );
    let cache_dir = dir.join("corpus.jsonl.koembed-cache");
    let cached: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "one cache file: {cached:?}");
    let vectors = koembed::npy::parse_npy_f32(&std::fs::read(&cached[0]).unwrap()).unwrap();
    assert_eq!(vectors.dim(), (subset.len(), 384));
    let written = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();

    let results: Vec<serde_json::Value> = first
        .stdout_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), QUESTIONS.len());
    for ((id, question), result) in QUESTIONS.iter().zip(&results) {
        assert_eq!(result["query"], *question);
        let top: Vec<&str> = result["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(top.len(), 3);
        assert!(
            top.contains(&qrels[*id].as_str()),
            "{id} {question}: expected {} in the top 3, got {top:?}",
            qrels[*id]
        );
        let scores: Vec<f64> = result["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["score"].as_f64().unwrap())
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "scores descend: {scores:?}"
        );
    }

    let second = koembed(&args, b"").ok();
    let hit = format!(
        "cache hit: {} passages from {}",
        subset.len(),
        cached[0].display()
    );
    assert!(
        second.stderr.contains(&hit),
        "expected {hit:?} in:\n{}",
        second.stderr
    );
    assert!(!second.stderr.contains("cache miss"), "{}", second.stderr);
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
        written,
        "the cache was not rewritten"
    );
    assert_eq!(second.stdout, first.stdout, "same results from the cache");

    // Text output: one block per query, the id shown.
    let run = koembed(
        &[
            "search",
            "-q",
            "-m",
            &path_arg(&model),
            "--corpus",
            &path_arg(&corpus),
            "-k",
            "1",
            QUESTIONS[1].1,
        ],
        b"",
    )
    .ok();
    let text = run.stdout_text();
    assert!(
        text.starts_with(&format!("query: {}\n  1  0.", QUESTIONS[1].1)),
        "{text}"
    );
    assert!(text.contains("id d5.12"), "{text}");
}

#[test]
fn eval_reproduces_the_reference_figures() {
    let model = common::built_model("e5-small");
    let run = koembed(
        &[
            "eval",
            "-m",
            &path_arg(&model),
            "--data",
            &path_arg(&common::faq_dir()),
            "--json",
        ],
        b"",
    )
    .ok();
    let m: serde_json::Value =
        serde_json::from_str(run.stdout_text().trim()).expect("one JSON object");
    for (key, want) in [
        ("ndcg@10", 0.5957),
        ("mrr@10", 0.5425),
        ("recall@1", 0.4464),
        ("recall@10", 0.7679),
    ] {
        let got = m[key].as_f64().unwrap_or_else(|| panic!("no {key} in {m}"));
        assert!(
            (got - want).abs() < 0.0005,
            "{key}: {got:.4}, the reference gives {want}"
        );
    }
    assert_eq!(m["queries"], 112);
}
