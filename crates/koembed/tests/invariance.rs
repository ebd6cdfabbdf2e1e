//! A text's vector does not depend on what else is in its batch, nor on the thread count.

mod common;

use std::process::Command;

use koembed::eval::BeirSet;
use koembed_embed::{EmbedOptions, Embedder, Prompt};

/// 64 texts of very different lengths (FAQ questions and answers, some past 512 tokens).
fn mixed_texts() -> Vec<String> {
    let set = BeirSet::load(&common::faq_dir()).unwrap();
    let mut texts = Vec::new();
    for i in 0..32 {
        texts.push(set.queries[i * 3].text.clone());
        texts.push(set.corpus[i * 3 + 1].text.clone());
    }
    texts
}

#[test]
fn a_text_alone_equals_the_same_text_in_a_batch_of_64() {
    let embedder = Embedder::load(&common::built_model("e5-small")).unwrap();
    let texts = mixed_texts();
    let options = EmbedOptions {
        prompt: Prompt::Named("passage".into()),
        batch_size: 64,
        ..EmbedOptions::default()
    };
    let batched = embedder.embed(&texts, &options).unwrap();
    for i in [0usize, 1, 17, 63] {
        let alone = embedder.embed(&texts[i..i + 1], &options).unwrap();
        let max_diff = alone
            .row(0)
            .iter()
            .zip(batched.row(i))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff <= 1e-6,
            "text {i}: alone vs in a batch of 64 differ by {max_diff:e}"
        );
    }
}

#[test]
fn one_and_two_threads_give_the_same_vectors() {
    let model = common::built_model("e5-small");
    let dir = std::env::temp_dir().join(format!("koembed-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("texts.txt");
    let texts: Vec<String> = mixed_texts()
        .into_iter()
        .take(16)
        .map(|t| t.replace('\n', " "))
        .collect();
    std::fs::write(&input, texts.join("\n")).unwrap();
    let run = |threads: &str| {
        let out = dir.join(format!("v{threads}.npy"));
        let status = Command::new(env!("CARGO_BIN_EXE_koembed"))
            .args(["embed", "-q", "--model"])
            .arg(&model)
            .arg("-i")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .env("RAYON_NUM_THREADS", threads)
            .env("MATMUL_NUM_THREADS", threads)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(&out).unwrap()
    };
    let one = run("1");
    let two = run("2");
    assert_eq!(one.len(), two.len());
    let floats = |b: &[u8]| -> Vec<f32> {
        let data_start = 10 + u16::from_le_bytes([b[8], b[9]]) as usize;
        b[data_start..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let max_diff = floats(&one)
        .iter()
        .zip(floats(&two))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff <= 1e-6, "1 vs 2 threads differ by {max_diff:e}");
}
