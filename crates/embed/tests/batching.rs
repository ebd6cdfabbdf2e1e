//! Token-budget batching in `Embedder::embed_with_report`: texts run longest first, cut by
//! `batch_size` and `max_batch_tokens`, and every text gets the vector it gets alone, in input
//! order, whatever batch it lands in.
//!
//! Models under `models/` are built by `cargo xtask models`; a missing model is a failure that
//! says how to build it, never a skip.

use koembed_embed::{EmbedError, EmbedOptions, Embedder, Prompt, DEFAULT_MAX_BATCH_TOKENS};
use koembed_golden::{compare_rows, Golden, Tolerance};
use ndarray::Array2;

fn load(model: &str) -> (Golden, Embedder) {
    let golden = Golden::load(&koembed_golden::testdata_dir(), model)
        .unwrap_or_else(|e| panic!("goldens of {model}: {e}"));
    let dir = golden.model_dir();
    assert!(
        dir.join("config.json").is_file(),
        "{} is missing: build the test models with `cargo xtask models`",
        dir.display()
    );
    let embedder =
        Embedder::load(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    (golden, embedder)
}

fn prompt_of(golden: &Golden, r: usize) -> Prompt {
    let row = golden.row(r);
    match row.prompt_name {
        None if row.prompt.is_empty() => Prompt::None,
        _ => Prompt::Literal(row.prompt.clone()),
    }
}

/// The golden rows grouped by prompt (each group in row order, i.e. texts.jsonl order, which
/// mixes short questions and long answers).
fn prompt_groups(golden: &Golden) -> Vec<(Prompt, Vec<usize>)> {
    let mut groups: Vec<(Prompt, Vec<usize>)> = Vec::new();
    for r in 0..golden.n_rows() {
        let p = prompt_of(golden, r);
        match groups.iter_mut().find(|(q, _)| *q == p) {
            Some((_, rows)) => rows.push(r),
            None => groups.push((p, vec![r])),
        }
    }
    groups
}

fn options(prompt: &Prompt, batch_size: usize, max_batch_tokens: usize) -> EmbedOptions {
    EmbedOptions {
        prompt: prompt.clone(),
        batch_size,
        max_batch_tokens,
        ..EmbedOptions::default()
    }
}

/// Each text in its own `embed` call: the reference no batching can influence.
fn one_per_call(embedder: &Embedder, texts: &[&str], prompt: &Prompt) -> Array2<f32> {
    let dim = embedder.dim();
    let mut out = Array2::zeros((texts.len(), dim));
    for (i, text) in texts.iter().enumerate() {
        let v = embedder
            .embed(&[*text], &options(prompt, 1, DEFAULT_MAX_BATCH_TOKENS))
            .unwrap();
        out.row_mut(i).assign(&v.row(0));
    }
    out
}

/// The (row, max |diff|) of the row that differs most.
fn worst_row(a: &Array2<f32>, b: &Array2<f32>) -> (usize, f32) {
    assert_eq!(a.dim(), b.dim(), "shapes differ");
    a.rows()
        .into_iter()
        .zip(b.rows())
        .map(|(x, y)| {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max)
        })
        .enumerate()
        .fold(
            (0, 0.0),
            |best, (r, d)| if d > best.1 { (r, d) } else { best },
        )
}

/// The encoder calls the documented rule gives, as (texts, tokens): lengths sorted longest
/// first (stable), cut greedily by `batch_size` texts and `budget` tokens, an over-budget text
/// alone. Written out here independently of the library.
fn expected_calls(lengths: &[usize], batch_size: usize, budget: usize) -> Vec<(usize, usize)> {
    let mut sorted = lengths.to_vec();
    sorted.sort_by(|a, b| b.cmp(a));
    let mut calls = Vec::new();
    let (mut texts, mut tokens) = (0, 0);
    for len in sorted {
        if texts > 0 && (texts == batch_size || tokens + len > budget) {
            calls.push((texts, tokens));
            (texts, tokens) = (0, 0);
        }
        texts += 1;
        tokens += len;
    }
    if texts > 0 {
        calls.push((texts, tokens));
    }
    calls
}

/// (batch_size, max_batch_tokens) settings, from one text per call to one call for all.
const SETTINGS: [(usize, usize); 6] = [
    (2, 1),
    (3, 40),
    (5, 100),
    (64, 200),
    (32, DEFAULT_MAX_BATCH_TOKENS),
    (1000, 1_000_000),
];

/// `prompts`: which prompt groups to run (None: all), to keep the 12-layer models quick.
fn check_batch_invariance(model: &str, prompts: Option<&[Prompt]>) {
    let (golden, embedder) = load(model);
    let mut failures = Vec::new();
    for (prompt, rows) in prompt_groups(&golden) {
        if prompts.is_some_and(|p| !p.contains(&prompt)) {
            continue;
        }
        let texts: Vec<&str> = rows.iter().map(|&r| golden.text(r)).collect();
        let lengths: Vec<usize> = texts
            .iter()
            .map(|t| embedder.tokenize(t, &prompt).unwrap().ids.len())
            .collect();
        assert!(
            lengths.windows(2).any(|w| w[0] < w[1]) && lengths.windows(2).any(|w| w[0] > w[1]),
            "{model}: the test needs texts of mixed lengths in mixed order: {lengths:?}"
        );
        let alone = one_per_call(&embedder, &texts, &prompt);
        for (batch_size, budget) in SETTINGS {
            let what = format!("{model}, {prompt:?}, batch_size {batch_size}, budget {budget}");
            let mut calls = Vec::new();
            let out = embedder
                .embed_with_progress(&texts, &options(&prompt, batch_size, budget), |n, t| {
                    calls.push((n, t))
                })
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let (row, diff) = worst_row(&out.embeddings, &alone);
            if diff > 1e-6 {
                failures.push(format!(
                    "{what}: text {row} ({}) differs from the same text alone by {diff:e}",
                    golden.row(rows[row]).text_id
                ));
            }
            let expected = expected_calls(&lengths, batch_size, budget);
            if calls != expected {
                failures.push(format!(
                    "{what}: encoder calls (texts, tokens) {calls:?}, expected {expected:?}"
                ));
            }
            let tokens: usize = rows.iter().map(|&r| golden.row(r).n_tokens).sum();
            let truncated = rows.iter().filter(|&&r| golden.row(r).truncated).count();
            if (out.tokens, out.truncated) != (tokens, truncated) {
                failures.push(format!(
                    "{what}: {} tokens, {} truncated; the reference says {tokens}, {truncated}",
                    out.tokens, out.truncated
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{model}: {} check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn mixed_lengths_give_the_same_vectors_in_any_batching_e5_small() {
    check_batch_invariance("e5-small", Some(&[Prompt::None]));
}

#[test]
fn mixed_lengths_give_the_same_vectors_in_any_batching_e5_small_xlmr() {
    check_batch_invariance("e5-small-xlmr", Some(&[Prompt::Literal("query: ".into())]));
}

#[test]
fn mixed_lengths_give_the_same_vectors_in_any_batching_tiny_models() {
    // tiny-bert leaves the prompt out of pooling (include_prompt false); tiny-xlmr has
    // XLM-R positions and a 64-token max_seq_length, so many texts are truncated.
    check_batch_invariance("tiny-bert", None);
    check_batch_invariance("tiny-xlmr", None);
}

#[test]
fn a_text_longer_than_the_budget_still_embeds() {
    let (golden, embedder) = load("e5-small");
    // Rows without a prompt: two short questions, a 512-token (truncated) answer, and a text
    // of several thousand tokens that the 512-token max_seq_length cuts.
    let plain: Vec<usize> = (0..golden.n_rows())
        .filter(|&r| golden.row(r).prompt.is_empty())
        .collect();
    let longest = *plain
        .iter()
        .max_by_key(|&&r| golden.row(r).n_tokens)
        .unwrap();
    let shortest = *plain
        .iter()
        .min_by_key(|&&r| golden.row(r).n_tokens)
        .unwrap();
    assert_eq!(golden.row(longest).n_tokens, 512);
    let huge = golden.text(longest).repeat(8);
    let second = *plain
        .iter()
        .find(|&&r| r != shortest && (10..100).contains(&golden.row(r).n_tokens))
        .unwrap();
    let texts = [
        golden.text(shortest),
        golden.text(longest),
        huge.as_str(),
        golden.text(second),
    ];
    let alone = one_per_call(&embedder, &texts, &Prompt::None);
    for budget in [1, 16, 511] {
        let mut calls = Vec::new();
        let out = embedder
            .embed_with_progress(&texts, &options(&Prompt::None, 32, budget), |n, t| {
                calls.push((n, t))
            })
            .unwrap();
        let (row, diff) = worst_row(&out.embeddings, &alone);
        assert!(
            diff <= 1e-6,
            "budget {budget}: text {row} differs from itself alone by {diff:e}"
        );
        // The two long texts run first, each alone and whole up to max_seq_length.
        assert_eq!(&calls[..2], [(1, 512), (1, 512)], "budget {budget}");
        assert_eq!(
            calls.iter().map(|c| c.0).sum::<usize>(),
            texts.len(),
            "budget {budget}: every text embedded once: {calls:?}"
        );
        let truncated = 1 + golden.row(longest).truncated as usize;
        assert_eq!(out.truncated, truncated, "budget {budget}");
        let short_tokens = golden.row(shortest).n_tokens + golden.row(second).n_tokens;
        assert_eq!(out.tokens, 1024 + short_tokens, "budget {budget}");
        // The truncated text is the reference's vector of its first 512 tokens.
        compare_rows(
            &format!("budget {budget}, the 512-token text"),
            out.embeddings.row(1).as_slice().unwrap(),
            golden.embeddings.row(longest),
            golden.embeddings.cols(),
            |_| golden.row(longest).text_id.clone(),
            Tolerance::EMBEDDING,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn a_zero_token_budget_is_an_option_error() {
    let embedder = Embedder::load(&koembed_golden::testdata_dir().join("tiny/tiny-xlmr")).unwrap();
    for texts in [&["한국어 문장"][..], &[][..]] {
        let zero = EmbedOptions {
            max_batch_tokens: 0,
            ..EmbedOptions::default()
        };
        match embedder.embed(texts, &zero) {
            Err(EmbedError::Option(message)) => {
                assert!(message.contains("max_batch_tokens"), "{message}")
            }
            other => panic!("max_batch_tokens 0 on {} texts: {other:?}", texts.len()),
        }
        let zero = EmbedOptions {
            batch_size: 0,
            ..EmbedOptions::default()
        };
        assert!(matches!(
            embedder.embed(texts, &zero),
            Err(EmbedError::Option(_))
        ));
    }
    assert_eq!(EmbedOptions::default().max_batch_tokens, 16384);
}

/// Every prompt group of `model` with tiny batches (7 texts, 100 tokens): final vectors,
/// Matryoshka vectors and counts against the reference.
fn check_goldens_with_small_batches(model: &str) -> Vec<String> {
    let (golden, embedder) = load(model);
    let mut failures = Vec::new();
    let tol = if golden.meta.normalize {
        Tolerance::EMBEDDING
    } else {
        Tolerance::POOLED
    };
    let dim = golden.embeddings.cols();
    let label = |r: usize| format!("row {r} ({})", golden.row(r).text_id);
    for (prompt, rows) in prompt_groups(&golden) {
        let texts: Vec<&str> = rows.iter().map(|&r| golden.text(r)).collect();
        let small = options(&prompt, 7, 100);
        let out = embedder.embed_with_report(&texts, &small).unwrap();
        let expected: Vec<f32> = rows
            .iter()
            .flat_map(|&r| golden.embeddings.row(r).to_vec())
            .collect();
        if let Err(e) = compare_rows(
            &format!("{model} {prompt:?} embeddings, batches of <= 7 texts and <= 100 tokens"),
            out.embeddings.as_slice().unwrap(),
            &expected,
            dim,
            |i| label(rows[i]),
            tol,
        ) {
            failures.push(e.to_string());
        }
        let tokens: usize = rows.iter().map(|&r| golden.row(r).n_tokens).sum();
        let truncated = rows.iter().filter(|&&r| golden.row(r).truncated).count();
        if (out.tokens, out.truncated) != (tokens, truncated) {
            failures.push(format!(
                "{model} {prompt:?}: {} tokens, {} truncated; the reference says {tokens}, {truncated}",
                out.tokens, out.truncated
            ));
        }
        if let (Some(m), Some(d)) = (&golden.matryoshka, golden.meta.matryoshka_dim) {
            let cut_options = EmbedOptions {
                truncate_dim: Some(d),
                normalize: Some(true),
                ..small.clone()
            };
            let cut = embedder.embed(&texts, &cut_options).unwrap();
            let expected: Vec<f32> = rows.iter().flat_map(|&r| m.row(r).to_vec()).collect();
            if let Err(e) = compare_rows(
                &format!("{model} {prompt:?} matryoshka {d}, small batches"),
                cut.as_slice().unwrap(),
                &expected,
                d,
                |i| label(rows[i]),
                Tolerance::EMBEDDING,
            ) {
                failures.push(e.to_string());
            }
        }
    }
    failures
}

#[test]
fn small_token_budgets_still_match_the_goldens() {
    // koe5-shape (24 layers of 1024) and e5-small-f16 are left to golden_parity: same code
    // path, ten times the time.
    let mut failures = Vec::new();
    for model in [
        "tiny-bert",
        "tiny-xlmr",
        "e5-small",
        "e5-small-xlmr",
        "frony-tiny-like",
        "minilm",
    ] {
        failures.extend(check_goldens_with_small_batches(model));
    }
    assert!(
        failures.is_empty(),
        "{} check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
