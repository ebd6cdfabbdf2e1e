//! `--dtype f16 | bf16 | int8` against the f32 reference: cosine of every golden text's final
//! embedding to the pinned Python reference's, and retrieval on the Korean Debian FAQ set next
//! to f32's, on e5-small and koe5-shape. The gates are issue 6's; the tables these tests print
//! (`--nocapture`) are the README's "Reduced precision" figures.

mod common;

use koembed::eval::RetrievalMetrics as Metrics;
use koembed_embed::{ComputeDtype, EmbedOptions, Embedder, Prompt};
use koembed_golden::Golden;

/// Lowest cosine to the reference allowed on any golden text.
fn min_cosine_gate(dtype: ComputeDtype) -> f64 {
    match dtype {
        ComputeDtype::F32 => 0.999_999,
        ComputeDtype::F16 | ComputeDtype::Bf16 => 0.999,
        ComputeDtype::Int8 => 0.995,
    }
}

/// How far nDCG@10 may move from f32's.
const NDCG_GATE: f64 = 0.01;

const REDUCED: [ComputeDtype; 3] = [ComputeDtype::F16, ComputeDtype::Bf16, ComputeDtype::Int8];

fn load(model: &str, dtype: ComputeDtype) -> Embedder {
    let dir = common::built_model(model);
    Embedder::load_with_dtype(&dir, dtype)
        .unwrap_or_else(|e| panic!("loading {} as {dtype}: {e}", dir.display()))
}

fn prompt_of(golden: &Golden, r: usize) -> Prompt {
    let row = golden.row(r);
    match row.prompt_name {
        None if row.prompt.is_empty() => Prompt::None,
        _ => Prompt::Literal(row.prompt.clone()),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Cosine of each golden text's embedding (this dtype) to the reference's, in row order.
fn golden_cosines(golden: &Golden, embedder: &Embedder) -> Vec<f64> {
    let dim = golden.embeddings.cols();
    let mut cosines = vec![f64::NAN; golden.n_rows()];
    let mut prompts: Vec<Prompt> = Vec::new();
    for r in 0..golden.n_rows() {
        let p = prompt_of(golden, r);
        if !prompts.contains(&p) {
            prompts.push(p);
        }
    }
    for prompt in prompts {
        let rows: Vec<usize> = (0..golden.n_rows())
            .filter(|&r| prompt_of(golden, r) == prompt)
            .collect();
        let texts: Vec<&str> = rows.iter().map(|&r| golden.text(r)).collect();
        let options = EmbedOptions {
            prompt,
            ..EmbedOptions::default()
        };
        let out = embedder.embed(&texts, &options).unwrap();
        for (i, &r) in rows.iter().enumerate() {
            let want = &golden.embeddings.data()[r * dim..(r + 1) * dim];
            cosines[r] = cosine(out.row(i).as_slice().unwrap(), want);
        }
    }
    cosines
}

fn check_golden_cosines(model: &str) {
    let golden = Golden::load(&koembed_golden::testdata_dir(), model)
        .unwrap_or_else(|e| panic!("goldens of {model}: {e}"));
    let mut failures = Vec::new();
    println!("| model | dtype | texts | min cosine | mean cosine | worst text |");
    println!("|---|---|---|---|---|---|");
    for dtype in REDUCED {
        let cosines = golden_cosines(&golden, &load(model, dtype));
        let (worst, min) = cosines
            .iter()
            .copied()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
        let worst_id = &golden.row(worst).text_id;
        println!(
            "| {model} | {dtype} | {} | {min:.6} | {mean:.6} | {worst_id} |",
            cosines.len()
        );
        // NaN fails too.
        if min.is_nan() || min < min_cosine_gate(dtype) {
            failures.push(format!(
                "{model} {dtype}: min cosine {min:.6} (row {worst}, {worst_id}) is below {}",
                min_cosine_gate(dtype)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check_retrieval(model: &str) {
    let reference = common::faq_metrics(&load(model, ComputeDtype::F32));
    println!("| model | dtype | nDCG@10 | MRR@10 | Recall@1 | Recall@10 |");
    println!("|---|---|---|---|---|---|");
    let row = |dtype: ComputeDtype, m: &Metrics| {
        println!(
            "| {model} | {dtype} | {:.4} | {:.4} | {:.4} | {:.4} |",
            m.ndcg_at_10, m.mrr_at_10, m.recall_at_1, m.recall_at_10
        )
    };
    row(ComputeDtype::F32, &reference);
    let mut failures = Vec::new();
    for dtype in REDUCED {
        let m = common::faq_metrics(&load(model, dtype));
        row(dtype, &m);
        let delta = (m.ndcg_at_10 - reference.ndcg_at_10).abs();
        if delta.is_nan() || delta > NDCG_GATE {
            failures.push(format!(
                "{model} {dtype}: nDCG@10 {:.4} is {delta:.4} from f32's {:.4} (gate {NDCG_GATE})",
                m.ndcg_at_10, reference.ndcg_at_10
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn e5_small_reduced_precision_stays_close_to_the_reference() {
    check_golden_cosines("e5-small");
}

#[test]
fn koe5_shape_reduced_precision_stays_close_to_the_reference() {
    check_golden_cosines("koe5-shape");
}

#[test]
fn e5_small_reduced_precision_retrieval_matches_f32() {
    check_retrieval("e5-small");
}

#[test]
fn koe5_shape_reduced_precision_retrieval_matches_f32() {
    check_retrieval("koe5-shape");
}
