//! The engine against the pinned Python reference: token ids, hidden states, pooled vectors,
//! final embeddings and Matryoshka vectors, on every model with goldens.
//!
//! Models under `models/` are built by `cargo xtask models` (the README's test command does it
//! first); a missing model is a failure that says how to build it, never a skip.

use koembed_embed::{EmbedOptions, Embedder, Prompt, TokenizedText};
use koembed_golden::{
    compare_ids, compare_matrix, compare_rows, verify_model_sha256, Golden, Tolerance,
};
use koembed_xlmr::PackedBatch;

fn load(model: &str) -> (Golden, Embedder) {
    let golden = Golden::load(&koembed_golden::testdata_dir(), model)
        .unwrap_or_else(|e| panic!("goldens of {model}: {e}"));
    let dir = golden.model_dir();
    assert!(
        dir.join("config.json").is_file(),
        "{} is missing: build the test models with `cargo xtask models`",
        dir.display()
    );
    verify_model_sha256(&dir, &golden.meta).unwrap_or_else(|e| panic!("{e}"));
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

fn label(golden: &Golden, r: usize) -> String {
    let row = golden.row(r);
    format!(
        "row {r} ({}, {})",
        row.text_id,
        row.prompt_name.as_deref().unwrap_or("no prompt")
    )
}

/// Every check on one model; returns the failures so that one run shows them all.
fn check_model(model: &str) {
    let (golden, embedder) = load(model);
    let mut failures = Vec::new();

    // 1. Token ids and truncation flags, row by row.
    let mut tokenized: Vec<TokenizedText> = Vec::new();
    for r in 0..golden.n_rows() {
        let t = embedder
            .tokenize(golden.text(r), &prompt_of(&golden, r))
            .unwrap_or_else(|e| panic!("{}: {e}", label(&golden, r)));
        if let Err(e) = compare_ids(
            &format!("{model} token ids, {}", label(&golden, r)),
            &t.ids,
            golden.token_ids(r),
        ) {
            failures.push(e.to_string());
        }
        if t.truncated != golden.row(r).truncated {
            failures.push(format!(
                "{model} {}: truncated = {}, reference says {}",
                label(&golden, r),
                t.truncated,
                golden.row(r).truncated
            ));
        }
        tokenized.push(TokenizedText {
            ids: golden.token_ids(r).to_vec(),
            truncated: t.truncated,
        });
    }

    // 2. Hidden states of the chosen rows, layer by layer (from the reference's own ids).
    let encoder = embedder.encoder();
    for &r in &golden.meta.hidden_rows {
        let batch = PackedBatch::new(encoder.config(), &[golden.token_ids(r)]).unwrap();
        let states = encoder.forward_all_layers(&batch);
        for &layer in &golden.meta.hidden_layers {
            let (expected, shape) = golden
                .hidden(r, layer)
                .expect("hidden state listed in meta");
            let name = format!(
                "{model} hidden state after layer {layer}, {}",
                label(&golden, r)
            );
            if let Err(e) = compare_matrix(
                &name,
                states[layer].as_slice(),
                expected,
                shape[1],
                "token",
                Tolerance::HIDDEN,
            ) {
                failures.push(e.to_string());
            }
        }
    }

    // 3. Pooled vectors (before Dense / Normalize), all rows in one packed batch.
    let include_prompt = embedder.model_dir().pooling.include_prompt;
    let mut pooled = Vec::new();
    for (r, t) in tokenized.iter().enumerate() {
        let masked = if include_prompt {
            0
        } else {
            golden.row(r).prompt_length
        };
        pooled.extend_from_slice(
            embedder
                .pool_batch(std::slice::from_ref(t), masked)
                .unwrap()
                .as_slice(),
        );
    }
    // Before Normalize, the pooled vector is a mean of last hidden states (components of size
    // ~1, norm ~sqrt(hidden)): numerics.md's hidden-state tolerance applies. Without a Normalize
    // module it is the model's output, held to the embedding bound (scaled by its rms).
    let pooled_tolerance = if golden.meta.normalize {
        Tolerance::HIDDEN
    } else {
        Tolerance::POOLED
    };
    if let Err(e) = compare_rows(
        &format!("{model} pooled"),
        &pooled,
        golden.pooled.data(),
        golden.pooled.cols(),
        |r| label(&golden, r),
        pooled_tolerance,
    ) {
        failures.push(e.to_string());
    }

    // 4. Final embeddings through the public API, one call per prompt, rows in input order.
    let tol = if golden.meta.normalize {
        Tolerance::EMBEDDING
    } else {
        Tolerance::POOLED
    };
    let mut all_prompts: Vec<Prompt> = Vec::new();
    for r in 0..golden.n_rows() {
        let p = prompt_of(&golden, r);
        if !all_prompts.contains(&p) {
            all_prompts.push(p);
        }
    }
    let mut embeddings = vec![f32::NAN; golden.embeddings.data().len()];
    let dim = golden.embeddings.cols();
    for prompt in &all_prompts {
        let rows: Vec<usize> = (0..golden.n_rows())
            .filter(|&r| &prompt_of(&golden, r) == prompt)
            .collect();
        let texts: Vec<&str> = rows.iter().map(|&r| golden.text(r)).collect();
        let options = EmbedOptions {
            prompt: prompt.clone(),
            batch_size: 16,
            ..EmbedOptions::default()
        };
        let out = embedder.embed(&texts, &options).unwrap();
        for (i, &r) in rows.iter().enumerate() {
            embeddings[r * dim..(r + 1) * dim].copy_from_slice(out.row(i).as_slice().unwrap());
        }
        if let (Some(m), Some(d)) = (&golden.matryoshka, golden.meta.matryoshka_dim) {
            let options = EmbedOptions {
                truncate_dim: Some(d),
                normalize: Some(true),
                ..options
            };
            let cut = embedder.embed(&texts, &options).unwrap();
            for (i, &r) in rows.iter().enumerate() {
                let name = format!("{model} matryoshka {d}, {}", label(&golden, r));
                if let Err(e) = compare_rows(
                    &name,
                    cut.row(i).as_slice().unwrap(),
                    m.row(r),
                    d,
                    |_| label(&golden, r),
                    Tolerance::EMBEDDING,
                ) {
                    failures.push(e.to_string());
                }
            }
        }
    }
    if let Err(e) = compare_rows(
        &format!("{model} embeddings"),
        &embeddings,
        golden.embeddings.data(),
        dim,
        |r| label(&golden, r),
        tol,
    ) {
        failures.push(e.to_string());
    }

    assert!(
        failures.is_empty(),
        "{model}: {} check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tiny_bert_matches_reference() {
    check_model("tiny-bert");
}

#[test]
fn tiny_xlmr_matches_reference() {
    check_model("tiny-xlmr");
}

#[test]
fn e5_small_matches_reference() {
    check_model("e5-small");
}

#[test]
fn e5_small_f16_matches_reference() {
    check_model("e5-small-f16");
}

#[test]
fn e5_small_xlmr_matches_reference() {
    check_model("e5-small-xlmr");
}

#[test]
fn frony_tiny_like_matches_reference() {
    check_model("frony-tiny-like");
}

#[test]
fn minilm_matches_reference() {
    check_model("minilm");
}

#[test]
fn koe5_shape_matches_reference() {
    check_model("koe5-shape");
}
