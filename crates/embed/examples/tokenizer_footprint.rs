//! Memory and speed of one tokenizer engine, in a fresh process:
//!
//!     cargo run --release -p koembed-embed --example tokenizer_footprint -- \
//!         compact|crate testdata/xlmr-tokenizer/tokenizer.json testdata/debian-faq-ko/corpus.jsonl
//!
//! `crate` loads the `tokenizers` crate's `Tokenizer` (its own `Unigram`), `compact` koembed's
//! `TextTokenizer` (`CompactUnigram`). Prints VmRSS/VmHWM around the load and tokens per second
//! over the corpus texts: the first pass, then 10 more (the crate's `Unigram` caches words, so
//! its later passes are partly cache hits; ours has no cache).

use std::path::Path;
use std::time::Instant;

use koembed_embed::tokenize::python_strip;
use koembed_embed::TextTokenizer;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

fn rss_and_peak_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, engine, tokenizer_path, corpus_path] = &args[..] else {
        eprintln!("usage: tokenizer_footprint compact|crate <tokenizer.json> <corpus.jsonl>");
        std::process::exit(2);
    };
    let texts: Vec<String> = std::fs::read_to_string(corpus_path)
        .expect("corpus")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("jsonl");
            value["text"].as_str().expect("text").to_string()
        })
        .collect();

    let (rss_before, peak_before) = rss_and_peak_mb();
    let load_start = Instant::now();
    let encode: Box<dyn Fn(&str) -> usize> = match engine.as_str() {
        "compact" => {
            let tokenizer = TextTokenizer::load(Path::new(tokenizer_path), 512, false)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(tokenizer.uses_compact_unigram());
            Box::new(move |text| tokenizer.encode(text, 0).expect("encode").ids.len())
        }
        "crate" => {
            let mut tokenizer = Tokenizer::from_file(tokenizer_path).expect("tokenizer");
            tokenizer
                .with_truncation(Some(TruncationParams {
                    max_length: 512,
                    strategy: TruncationStrategy::LongestFirst,
                    stride: 0,
                    direction: TruncationDirection::Right,
                }))
                .expect("truncation");
            Box::new(move |text| {
                tokenizer
                    .encode(python_strip(text), true)
                    .expect("encode")
                    .get_ids()
                    .len()
            })
        }
        other => panic!("unknown engine {other}: compact or crate"),
    };
    let load_seconds = load_start.elapsed().as_secs_f64();
    let (rss_after, peak_after) = rss_and_peak_mb();
    println!(
        "{engine}: load {load_seconds:.2} s, VmRSS {rss_before:.1} -> {rss_after:.1} MB, \
         VmHWM {peak_before:.1} -> {peak_after:.1} MB"
    );

    let start = Instant::now();
    let tokens: usize = texts.iter().map(|text| encode(text)).sum();
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{engine}: first pass {tokens} tokens ({} texts) in {:.1} ms, {:.0} tokens/s",
        texts.len(),
        seconds * 1e3,
        tokens as f64 / seconds
    );
    let passes = 10;
    let start = Instant::now();
    let mut total = 0;
    for _ in 0..passes {
        total += texts.iter().map(|text| encode(text)).sum::<usize>();
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{engine}: {passes} more passes {:.0} tokens/s",
        total as f64 / seconds
    );
    let (rss_end, peak_end) = rss_and_peak_mb();
    println!("{engine}: after tokenizing VmRSS {rss_end:.1} MB, VmHWM {peak_end:.1} MB");
}
