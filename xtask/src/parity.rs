//! `cargo xtask parity`: how close koembed is to the pinned reference, per model and per layer.
//!
//! For every model with goldens: max |diff| of the hidden states after each stored layer (over
//! the stored rows), of the pooled vectors and of the final embeddings, and the lowest cosine of
//! the final vectors. Prints a Markdown table (the README carries it).

use std::time::Instant;

use anyhow::Context;
use koembed_embed::{EmbedOptions, Embedder, Prompt, TokenizedText};
use koembed_golden::{Golden, Tolerance};
use koembed_xlmr::PackedBatch;

#[derive(clap::Args, Default)]
pub struct Args {
    /// Only these models (folder names under testdata/golden/); default: all.
    #[arg(long)]
    only: Vec<String>,
}

struct Row {
    model: String,
    ids_equal: String,
    layers: Vec<(usize, f32)>,
    pooled: f32,
    embeddings: f32,
    min_cosine: f64,
    seconds: f64,
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

fn prompt_of(golden: &Golden, r: usize) -> Prompt {
    let row = golden.row(r);
    if row.prompt.is_empty() {
        Prompt::None
    } else {
        Prompt::Literal(row.prompt.clone())
    }
}

fn measure(model: &str) -> anyhow::Result<Row> {
    let start = Instant::now();
    let golden = Golden::load(&koembed_golden::testdata_dir(), model)?;
    let dir = golden.model_dir();
    koembed_golden::verify_model_sha256(&dir, &golden.meta)?;
    let embedder = Embedder::load(&dir).with_context(|| format!("loading {}", dir.display()))?;

    let mut ids_differ = 0;
    let mut tokenized = Vec::new();
    for r in 0..golden.n_rows() {
        let t = embedder.tokenize(golden.text(r), &prompt_of(&golden, r))?;
        if t.ids != golden.token_ids(r) {
            ids_differ += 1;
        }
        tokenized.push(TokenizedText {
            ids: golden.token_ids(r).to_vec(),
            truncated: t.truncated,
        });
    }

    let encoder = embedder.encoder();
    let mut layers: Vec<(usize, f32)> = golden
        .meta
        .hidden_layers
        .iter()
        .map(|&l| (l, 0.0))
        .collect();
    for &r in &golden.meta.hidden_rows {
        let batch = PackedBatch::new(encoder.config(), &[golden.token_ids(r)])?;
        let states = encoder.forward_all_layers(&batch);
        for (layer, worst) in layers.iter_mut() {
            let (expected, _) = golden
                .hidden(r, *layer)
                .context("hidden state listed in meta")?;
            *worst = worst.max(max_abs_diff(states[*layer].as_slice(), expected));
        }
    }

    let include_prompt = embedder.model_dir().pooling.include_prompt;
    let mut pooled = 0.0f32;
    for (r, t) in tokenized.iter().enumerate() {
        let masked = if include_prompt {
            0
        } else {
            golden.row(r).prompt_length
        };
        let p = embedder.pool_batch(std::slice::from_ref(t), masked)?;
        pooled = pooled.max(max_abs_diff(p.as_slice(), golden.pooled.row(r)));
    }

    let mut embeddings = 0.0f32;
    let mut min_cosine = 1.0f64;
    for r in 0..golden.n_rows() {
        let options = EmbedOptions {
            prompt: prompt_of(&golden, r),
            ..EmbedOptions::default()
        };
        let v = embedder.embed(&[golden.text(r)], &options)?;
        let v = v.row(0).to_vec();
        embeddings = embeddings.max(max_abs_diff(&v, golden.embeddings.row(r)));
        min_cosine = min_cosine.min(cosine(&v, golden.embeddings.row(r)));
    }
    Ok(Row {
        model: model.to_string(),
        ids_equal: format!("{}/{}", golden.n_rows() - ids_differ, golden.n_rows()),
        layers,
        pooled,
        embeddings,
        min_cosine,
        seconds: start.elapsed().as_secs_f64(),
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let models = if args.only.is_empty() {
        Golden::list(&koembed_golden::testdata_dir())?
    } else {
        args.only
    };
    println!("| model | token ids equal | hidden state max abs diff, by layer | pooled max abs diff | embedding max abs diff | 1 - min cosine |");
    println!("|---|---|---|---|---|---|");
    let mut failed = Vec::new();
    for model in &models {
        match measure(model) {
            Ok(row) => {
                let layers: Vec<String> = row
                    .layers
                    .iter()
                    .map(|(l, d)| format!("{l}: {d:.1e}"))
                    .collect();
                println!(
                    "| {} | {} | {} | {:.1e} | {:.1e} | {:.1e} |",
                    row.model,
                    row.ids_equal,
                    layers.join(", "),
                    row.pooled,
                    row.embeddings,
                    1.0 - row.min_cosine
                );
                eprintln!("xtask parity: {} took {:.1} s", row.model, row.seconds);
                if row.min_cosine < Tolerance::EMBEDDING.min_cosine.unwrap_or(0.0) {
                    failed.push(model.clone());
                }
            }
            Err(e) => {
                println!("| {model} | error: {e:#} | | | | |");
                failed.push(model.clone());
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "parity below the tolerance or not measurable for: {}",
            failed.join(", ")
        );
    }
    Ok(())
}
