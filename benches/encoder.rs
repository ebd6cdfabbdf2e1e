//! One encoder layer and the whole pipeline on the real test models (`cargo xtask models`).
//!
//! - `layer/<model>/<workload>`: embeddings + one post-LN layer (the model's config cut to one
//!   layer), on the W1 / W2 token ids; throughput in FLOP (dense layers + attention).
//! - `end_to_end/e5-small/<workload>`: encoder + mean pooling + normalize on W1 / W2 / W3 token
//!   ids (what `koembed bench` times), and `faq64`: 64 Korean FAQ passages from raw text,
//!   tokenization and the passage prompt included.
//!
//! Run: `cargo bench -p koembed-benches --bench encoder` (a filter such as `layer` narrows it);
//! `-- table` prints GFLOP/s and % of the measured fp32 peak per case instead.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use koembed::workload::Workload;
use koembed_benches::{interleaved_medians, percent_of_peak, Variant};
use koembed_embed::{EmbedOptions, Embedder, Prompt, TokenizedText};
use koembed_xlmr::{Encoder, EncoderConfig, PackedBatch, WeightStore};

/// Dense-layer and attention FLOP of one layer over sequences of these lengths.
fn layer_flops(config: &EncoderConfig, lengths: &[usize]) -> f64 {
    let (h, f) = (config.hidden_size as f64, config.intermediate_size as f64);
    lengths
        .iter()
        .map(|&t| {
            let t = t as f64;
            t * 2.0 * (4.0 * h * h + 2.0 * h * f) + 4.0 * t * t * h
        })
        .sum()
}

fn model_dir(name: &str) -> Option<std::path::PathBuf> {
    let dir = koembed_golden::models_dir().join(name);
    if dir.join("config.json").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipping {name}: {} is missing (run `cargo xtask models`)",
            dir.display()
        );
        None
    }
}

fn one_layer_encoder(dir: &Path) -> Encoder {
    let mut config = EncoderConfig::from_file(&dir.join("config.json")).unwrap();
    config.num_layers = 1;
    Encoder::from_parts(config, WeightStore::open_dir(dir).unwrap()).unwrap()
}

fn workload(name: &str) -> Workload {
    Workload::by_name(name).unwrap()
}

/// (model, workloads) of the layer benchmark.
const LAYER_CASES: [(&str, [&str; 2]); 2] =
    [("e5-small", ["W1", "W2"]), ("koe5-shape", ["W1", "W3"])];

/// One (model, workload) case of the layer benchmark; cases of a model share its encoder.
struct LayerCase {
    model: &'static str,
    workload: &'static str,
    encoder: std::rc::Rc<Encoder>,
    batch: PackedBatch,
    flops: f64,
}

fn layer_cases() -> Vec<LayerCase> {
    let mut cases = Vec::new();
    for (model, workloads) in LAYER_CASES {
        let Some(dir) = model_dir(model) else {
            continue;
        };
        let encoder = std::rc::Rc::new(one_layer_encoder(&dir));
        for w in workloads {
            let ids = workload(w).token_ids();
            let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
            cases.push(LayerCase {
                model,
                workload: w,
                batch: PackedBatch::new(encoder.config(), &ids).unwrap(),
                flops: layer_flops(encoder.config(), &lengths),
                encoder: encoder.clone(),
            });
        }
    }
    cases
}

fn layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer");
    for case in layer_cases() {
        group.throughput(Throughput::Elements(case.flops as u64));
        group.bench_function(BenchmarkId::new(case.model, case.workload), |b| {
            b.iter(|| case.encoder.forward(&case.batch))
        });
    }
    group.finish();
}

fn tokenized(w: &str) -> Vec<TokenizedText> {
    workload(w)
        .token_ids()
        .into_iter()
        .map(|ids| TokenizedText {
            ids,
            truncated: false,
        })
        .collect()
}

/// The first 64 passages of the Korean FAQ corpus in testdata.
fn faq_passages() -> Vec<String> {
    let path = koembed_golden::testdata_dir().join("debian-faq-ko/corpus.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(64)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

fn end_to_end(c: &mut Criterion) {
    let Some(dir) = model_dir("e5-small") else {
        return;
    };
    let embedder = Embedder::load(&dir).unwrap();
    let options = EmbedOptions::default();
    let mut group = c.benchmark_group("end_to_end");
    for w in ["W1", "W2", "W3"] {
        let texts = tokenized(w);
        group.throughput(Throughput::Elements(workload(w).tokens() as u64));
        group.bench_function(BenchmarkId::new("e5-small", w), |b| {
            b.iter(|| embedder.embed_tokenized(&texts, 0, &options).unwrap())
        });
    }
    let passages = faq_passages();
    let passage = EmbedOptions {
        prompt: Prompt::Named("passage".into()),
        ..EmbedOptions::default()
    };
    let tokens = embedder
        .embed_with_report(&passages, &passage)
        .unwrap()
        .tokens;
    group.throughput(Throughput::Elements(tokens as u64));
    group.bench_function(BenchmarkId::new("e5-small", "faq64"), |b| {
        b.iter(|| embedder.embed(&passages, &passage).unwrap())
    });
    group.finish();
}

/// One table: layer GFLOP/s and % of peak; end to end tokens/s.
fn summary(_: &mut Criterion) {
    if !koembed_benches::table_requested() {
        return;
    }
    println!("\n| case | median ms | GFLOP/s | % of peak | tokens/s |");
    println!("|---|---|---|---|---|");
    for case in layer_cases() {
        let flops = case.flops;
        let mut v: Vec<Variant<'_>> = vec![(
            "layer".into(),
            Box::new(|| {
                std::hint::black_box(case.encoder.forward(&case.batch));
            }),
        )];
        let reps = (2e10 / flops).clamp(5.0, 200.0) as usize;
        let (median, _) = interleaved_medians(reps, &mut v)[0];
        let g = flops / median / 1e9;
        println!(
            "| one layer, {} {} | {:.2} | {g:.1} | {:.0}% | {:.0} |",
            case.model,
            case.workload,
            median * 1e3,
            percent_of_peak(g),
            workload(case.workload).tokens() as f64 / median
        );
    }
    if let Some(dir) = model_dir("e5-small") {
        let embedder = Embedder::load(&dir).unwrap();
        let options = EmbedOptions::default();
        for w in ["W1", "W2", "W3"] {
            let texts = tokenized(w);
            let mut v: Vec<Variant<'_>> = vec![(
                "e2e".into(),
                Box::new(|| {
                    std::hint::black_box(embedder.embed_tokenized(&texts, 0, &options).unwrap());
                }),
            )];
            let reps = if w == "W1" { 200 } else { 5 };
            let (median, _) = interleaved_medians(reps, &mut v)[0];
            let per_token = {
                let config = embedder.encoder().config();
                let lengths = vec![workload(w).seq_len; workload(w).batch];
                layer_flops(config, &lengths) * config.num_layers as f64
            };
            let g = per_token / median / 1e9;
            println!(
                "| end to end, e5-small {w} | {:.2} | {g:.1} | {:.0}% | {:.0} |",
                median * 1e3,
                percent_of_peak(g),
                workload(w).tokens() as f64 / median
            );
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = layer, end_to_end, summary
}
criterion_main!(benches);
