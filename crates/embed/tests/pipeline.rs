//! Pipeline variants the test models do not carry, checked against the tiny-bert goldens:
//! a bare Hugging Face folder, and a Dense module after pooling.

use std::path::{Path, PathBuf};

use koembed_embed::{EmbedOptions, Embedder, Prompt};
use koembed_golden::{compare_rows, Golden, Tolerance};
use safetensors::tensor::{Dtype, TensorView};

fn tiny_bert() -> PathBuf {
    koembed_golden::workspace_root().join("testdata/tiny/tiny-bert")
}

/// A copy of tiny-bert's files in a fresh folder, without the ones named in `skip`.
fn copy_model(name: &str, skip: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("koembed-pipeline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&tiny_bert(), &dir, skip);
    dir
}

fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        if path.is_dir() {
            copy_dir(&path, &to.join(&name), skip);
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// The prompt-free rows of the tiny-bert goldens and their texts.
fn plain_rows(golden: &Golden) -> Vec<usize> {
    (0..golden.n_rows())
        .filter(|&r| golden.row(r).prompt.is_empty())
        .collect()
}

#[test]
fn a_bare_huggingface_folder_is_mean_pooled_without_normalization() {
    let golden = Golden::load(&koembed_golden::testdata_dir(), "tiny-bert").unwrap();
    // No modules.json: sentence-transformers builds Transformer + mean Pooling, no Normalize.
    let dir = copy_model(
        "bare",
        &[
            "modules.json",
            "1_Pooling",
            "config_sentence_transformers.json",
            "sentence_bert_config.json",
        ],
    );
    let embedder = Embedder::load(&dir).unwrap();
    assert!(!embedder.model_dir().is_sentence_transformers);
    assert!(!embedder.model_dir().warnings.is_empty());
    let rows = plain_rows(&golden);
    let texts: Vec<&str> = rows.iter().map(|&r| golden.text(r)).collect();
    let options = EmbedOptions {
        prompt: Prompt::None,
        ..EmbedOptions::default()
    };
    let got = embedder.embed(&texts, &options).unwrap();
    let expected: Vec<f32> = rows
        .iter()
        .flat_map(|&r| golden.pooled.row(r).to_vec())
        .collect();
    compare_rows(
        "bare folder",
        got.as_slice().unwrap(),
        &expected,
        40,
        |i| format!("row {}", rows[i]),
        Tolerance::HIDDEN,
    )
    .unwrap();
}

#[test]
fn a_dense_module_maps_the_pooled_vector_before_normalize() {
    let golden = Golden::load(&koembed_golden::testdata_dir(), "tiny-bert").unwrap();
    let dir = copy_model("dense", &["modules.json"]);
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
            {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("2_Dense")).unwrap();
    std::fs::write(
        dir.join("2_Dense/config.json"),
        r#"{"in_features": 40, "out_features": 8, "bias": true,
            "activation_function": "torch.nn.modules.activation.Tanh"}"#,
    )
    .unwrap();
    // W[o][i] = small integers, b[o] = o / 10: the expected output is computed here in f64.
    let weight: Vec<f32> = (0..8 * 40)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0)
        .collect();
    let bias: Vec<f32> = (0..8).map(|o| o as f32 / 10.0).collect();
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (wb, bb) = (bytes(&weight), bytes(&bias));
    safetensors::serialize_to_file(
        [
            (
                "linear.weight",
                TensorView::new(Dtype::F32, vec![8, 40], &wb).unwrap(),
            ),
            (
                "linear.bias",
                TensorView::new(Dtype::F32, vec![8], &bb).unwrap(),
            ),
        ],
        &None,
        &dir.join("2_Dense/model.safetensors"),
    )
    .unwrap();

    let embedder = Embedder::load(&dir).unwrap();
    assert_eq!(embedder.dim(), 8);
    let rows = plain_rows(&golden);
    let texts: Vec<&str> = rows.iter().map(|&r| golden.text(r)).collect();
    let got = embedder
        .embed(
            &texts,
            &EmbedOptions {
                prompt: Prompt::None,
                ..EmbedOptions::default()
            },
        )
        .unwrap();
    let mut expected = Vec::new();
    for &r in &rows {
        let pooled = golden.pooled.row(r);
        let mut v: Vec<f64> = (0..8)
            .map(|o| {
                let dot: f64 = (0..40)
                    .map(|i| weight[o * 40 + i] as f64 * pooled[i] as f64)
                    .sum();
                (dot + bias[o] as f64).tanh()
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        expected.extend(v.iter().map(|&x| x as f32));
    }
    compare_rows(
        "dense",
        got.as_slice().unwrap(),
        &expected,
        8,
        |i| format!("row {}", rows[i]),
        Tolerance::EMBEDDING,
    )
    .unwrap();

    // A Dense whose in_features does not match the pooled size is refused, naming the file.
    std::fs::write(
        dir.join("2_Dense/config.json"),
        r#"{"in_features": 41, "out_features": 8, "activation_function": "torch.nn.modules.linear.Identity"}"#,
    )
    .unwrap();
    let err = Embedder::load(&dir)
        .err()
        .expect("mismatched Dense must fail")
        .to_string();
    assert!(err.contains("2_Dense"), "{err}");
}
