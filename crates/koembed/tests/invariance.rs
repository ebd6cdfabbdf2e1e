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

/// A layer runs on groups of whole sequences of about 2,048 tokens: a batch of several groups
/// gives every sequence the bits it gets alone.
#[test]
fn a_batch_of_several_sequence_groups_equals_each_sequence_alone() {
    use koembed_xlmr::PackedBatch;
    let embedder = Embedder::load(&common::built_model("e5-small")).unwrap();
    let encoder = embedder.encoder();
    // 23 sequences of 100 to 499 tokens: 6,887 tokens, at least four groups.
    let sequences: Vec<Vec<u32>> = (0..23usize)
        .map(|s| {
            let len = 100 + (s * 173) % 400;
            (0..len)
                .map(|i| 5 + ((s * 7919 + i * 997) % 200_000) as u32)
                .collect()
        })
        .collect();
    let batch = PackedBatch::new(encoder.config(), &sequences).unwrap();
    let all = encoder.forward(&batch);
    let bits = |v: &[f32]| -> Vec<u32> { v.iter().map(|x| x.to_bits()).collect() };
    let h = encoder.config().hidden_size;
    let mut row = 0;
    for (s, seq) in sequences.iter().enumerate() {
        let alone = encoder.forward(&PackedBatch::new(encoder.config(), &[seq]).unwrap());
        let in_batch = &all.as_slice()[row * h..(row + seq.len()) * h];
        assert!(
            bits(alone.as_slice()) == bits(in_batch),
            "sequence {s} ({} tokens, from row {row}) differs in the batch",
            seq.len()
        );
        row += seq.len();
    }
    assert_eq!(row, all.rows());
    assert!(row > 3 * 2048, "{row} tokens: fewer than four groups");
}

#[test]
fn timing_the_stages_changes_no_bit_and_times_every_stage() {
    use koembed_xlmr::{PackedBatch, Stage, StageTimes};
    use std::time::{Duration, Instant};
    let embedder = Embedder::load(&common::built_model("e5-small")).unwrap();
    let encoder = embedder.encoder();
    let sequences: Vec<Vec<u32>> = vec![
        vec![0, 35378, 8999, 2],
        (0..41).map(|i| 5 + i * 997).collect(),
    ];
    let batch = PackedBatch::new(encoder.config(), &sequences).unwrap();
    let plain = encoder.forward(&batch);
    let mut times = StageTimes::new();
    let start = Instant::now();
    let timed = encoder.forward_timed(&batch, &mut times);
    encoder.forward_timed(&batch, &mut times);
    let wall = start.elapsed();
    let bits = |v: &[f32]| -> Vec<u32> { v.iter().map(|x| x.to_bits()).collect() };
    assert!(
        bits(plain.as_slice()) == bits(timed.as_slice()),
        "a clock changed the output"
    );
    assert_eq!(times.passes(), 2);
    for stage in Stage::ALL {
        assert!(times.total(stage) > Duration::ZERO, "{stage:?} never timed");
    }
    assert!(
        times.sum() <= wall,
        "{:?} of stages in {wall:?}",
        times.sum()
    );
}

#[test]
fn stage_flops_of_e5_small_on_w2() {
    use koembed_xlmr::{PackedBatch, Stage};
    let embedder = Embedder::load(&common::built_model("e5-small")).unwrap();
    let config = embedder.encoder_config();
    let sequences = vec![vec![5u32; 128]; 64];
    let batch = PackedBatch::new(config, &sequences).unwrap();
    // 12 layers, 8192 tokens, hidden 384, FFN 1536, 64 sequences of 128.
    let want = [
        (Stage::Embeddings, None),
        (Stage::QkvProjection, Some(86_973_087_744)),
        (Stage::Attention, Some(19_327_352_832)),
        (Stage::AttentionOutput, Some(28_991_029_248)),
        (Stage::AttentionNorm, None),
        (Stage::FfnIn, Some(115_964_116_992)),
        (Stage::FfnOut, Some(115_964_116_992)),
        (Stage::OutputNorm, None),
    ];
    for (stage, flops) in want {
        assert_eq!(stage.flops(config, &batch), flops, "{stage:?}");
    }
}
