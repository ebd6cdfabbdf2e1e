//! `koembed bench`: time the encoder on a standard workload (W1-W3, token ids shared with the
//! peer benchmarks) or end to end on a text corpus.
//!
//! W1-W3 run encoder + pooling + normalize on fixed token ids (no tokenizer, no prompt); a FILE
//! runs the whole `embed` path, tokenization included. One warm-up call, then timed calls until
//! `--seconds` have passed (and at least 3 calls), or exactly `--calls N`; the median counts.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use koembed_embed::{EmbedOptions, Embedder, Prompt, TokenizedText};
use koembed_xlmr::{PackedBatch, Stage, StageTimes};

use crate::cli::Context;
use crate::input;
use crate::model::{self, BatchTokensArg, ModelArg, PromptArgs};
use crate::output;
use crate::workload::{Workload, MIN_VOCAB};

pub const EXAMPLES: &str = "Examples:\n  \
    koembed bench --model models/e5-small --workload W2 --threads 2 --json\n  \
    koembed bench --model models/e5-small --workload testdata/debian-faq-ko/corpus.jsonl\n\n\
    W1 = 1 x 16 tokens (a query: latency), W2 = 64 x 128 (bulk passages: throughput), \
    W3 = 8 x 512 (long passages), on fixed token ids (splitmix64, the same ids as the \
    peer benchmarks; XLM-R vocabulary models only), through encoder, pooling and normalize. FILE = a text corpus (lines or .jsonl), embedded with the passage \
    prompt, tokenization included.\n\
    --json prints one line: {\"peer\", \"model\", \"workload\", \"threads\", \"dtype\", \"tokens\", \"n\", \"ms\", \
    \"ms_min\", \"tok_s\", \"peak_rss_mb\", \"load_ms\"}, ms being the median per call and load_ms \
    the time to load the model (map, convert or quantize, pack; tokenizer included).";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArg,
    /// W1, W2, W3, or a text corpus FILE.
    #[arg(long, short = 'w', value_name = "W1|W2|W3|FILE")]
    pub workload: String,
    /// Keep timing calls for at least this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    pub seconds: f64,
    /// Time exactly N calls instead (after the warm-up).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub calls: Option<u32>,
    /// One JSON line, with the keys the peer benchmarks print.
    #[arg(long)]
    pub json: bool,
    /// W1-W3: after the timed calls, run as many again with a clock around each encoder stage
    /// (Q/K/V, attention, projections, FFN, LayerNorms) and print each one's time per call,
    /// share and GFLOP/s.
    #[arg(long)]
    pub stages: bool,
    /// FILE workloads: texts per encoder call.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    // FILE workloads: the token budget per encoder call.
    #[command(flatten)]
    pub batch_tokens: BatchTokensArg,
    /// FILE workloads: the prompt (default: the model's `passage` prompt, if it has one).
    #[command(flatten)]
    pub prompt: PromptArgs,
}

/// The timings of one benchmark.
#[derive(Debug, Clone)]
pub struct Timings {
    pub calls: Vec<Duration>,
}

impl Timings {
    pub fn median(&self) -> Duration {
        let mut sorted = self.calls.clone();
        sorted.sort();
        match sorted.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        }
    }

    pub fn min(&self) -> Duration {
        self.calls.iter().copied().min().unwrap_or_default()
    }
}

/// One warm-up call, then timed calls until `min_time` has passed and at least 3 ran, or
/// exactly `calls`. `call` returns how many tokens it ran.
pub fn time_calls(
    mut call: impl FnMut() -> anyhow::Result<usize>,
    min_time: Duration,
    calls: Option<usize>,
) -> anyhow::Result<(Timings, usize)> {
    let tokens = call()?;
    let mut timings = Timings { calls: Vec::new() };
    let start = Instant::now();
    loop {
        let done = match calls {
            Some(n) => timings.calls.len() >= n,
            None => timings.calls.len() >= 3 && start.elapsed() >= min_time,
        };
        if done {
            return Ok((timings, tokens));
        }
        let t = Instant::now();
        call()?;
        timings.calls.push(t.elapsed());
    }
}

/// The peak resident set size of this process (`VmHWM` in /proc/self/status), in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    if !(args.seconds.is_finite() && args.seconds >= 0.0) {
        bail!("--seconds must be a number >= 0, not {}", args.seconds);
    }
    let workload = Workload::by_name(&args.workload);
    if args.stages && workload.is_none() {
        bail!(
            "--stages times the encoder on W1, W2 or W3 only, not on --workload {} \
             (a text corpus is cut into batches of its own)",
            args.workload
        );
    }
    let load_start = Instant::now();
    let embedder = model::load(&args.model, ctx)?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let model_name = model_label(&args.model.model);
    let min_time = Duration::from_secs_f64(args.seconds);
    let calls = args.calls.map(|n| n as usize);
    let mut stages = None;
    let (timings, tokens, label) = match workload {
        Some(w) => {
            check_workload(&embedder, &w, &args.model.model)?;
            let sequences: Vec<TokenizedText> = w
                .token_ids()
                .into_iter()
                .map(|ids| TokenizedText {
                    ids,
                    truncated: false,
                })
                .collect();
            let (t, n) = time_calls(|| run_token_ids(&embedder, &sequences), min_time, calls)?;
            if args.stages {
                stages = Some(time_stages(&embedder, &sequences, t.calls.len())?);
            }
            (
                t,
                n,
                format!(
                    "{} ({} x {} = {} tokens)",
                    w.name,
                    w.batch,
                    w.seq_len,
                    w.tokens()
                ),
            )
        }
        None => {
            let path = Path::new(&args.workload);
            if !path.is_file() {
                bail!("--workload {}: not W1, W2, W3 nor a file", args.workload);
            }
            let records = input::read_records(Some(path), None)?;
            if records.is_empty() {
                bail!("{}: no texts to time", path.display());
            }
            let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
            let prompt = match (&args.prompt.prompt, &args.prompt.prefix) {
                (None, None) if embedder.prompts().0.contains_key("passage") => {
                    Prompt::Named("passage".into())
                }
                _ => args.prompt.prompt(),
            };
            model::check_prompt(&embedder, &prompt)?;
            let options = EmbedOptions {
                prompt,
                batch_size: args.batch_size as usize,
                max_batch_tokens: args.batch_tokens.max_batch_tokens as usize,
                ..EmbedOptions::default()
            };
            let run = || Ok(embedder.embed_with_report(&texts, &options)?.tokens);
            let (t, n) = time_calls(run, min_time, calls)?;
            (
                t,
                n,
                format!("{} ({} texts, {n} tokens)", path.display(), texts.len()),
            )
        }
    };
    let median = timings.median().as_secs_f64();
    let tok_s = tokens as f64 / median.max(1e-12);
    let rss = peak_rss_mb().unwrap_or(f64::NAN);
    let text = if args.json {
        let mut line = serde_json::json!({
            "peer": "koembed",
            "model": model_name,
            "workload": args.workload,
            "threads": ctx.threads,
            "dtype": args.model.dtype.name(),
            "tokens": tokens,
            "n": timings.calls.len(),
            "ms": round(median * 1e3, 3),
            "ms_min": round(timings.min().as_secs_f64() * 1e3, 3),
            "tok_s": round(tok_s, 1),
            "peak_rss_mb": round(rss, 1),
            "load_ms": round(load_ms, 1),
        });
        if let Some((times, flops)) = &stages {
            line["stages"] = stages_json(times, flops);
        }
        format!("{line}\n")
    } else {
        format!(
            "{model_name} ({}), {label}, {} threads\n\
             loaded in {load_ms:.0} ms; {} calls: median {:.2} ms (min {:.2} ms), {tok_s:.0} tokens/s, \
             peak RSS {rss:.1} MB\n",
            args.model.dtype,
            ctx.threads,
            timings.calls.len(),
            median * 1e3,
            timings.min().as_secs_f64() * 1e3,
        ) + &stages
            .map(|(t, f)| stages_table(&t, &f))
            .unwrap_or_default()
    };
    output::write_stdout(text.as_bytes())
}

/// Each stage's FLOP per encoder call (`None`: not a matrix product).
type StageFlops = Vec<(Stage, Option<u64>)>;

/// `calls` encoder passes on `sequences` with a clock around each stage.
fn time_stages(
    embedder: &Embedder,
    sequences: &[TokenizedText],
    calls: usize,
) -> anyhow::Result<(StageTimes, StageFlops)> {
    let ids: Vec<&[u32]> = sequences.iter().map(|s| s.ids.as_slice()).collect();
    let encoder = embedder.encoder();
    let batch = PackedBatch::new(encoder.config(), &ids).context("packing the workload")?;
    let mut times = StageTimes::new();
    for _ in 0..calls {
        std::hint::black_box(encoder.forward_timed(&batch, &mut times));
    }
    let flops = Stage::ALL
        .iter()
        .map(|&s| (s, s.flops(encoder.config(), &batch)))
        .collect();
    Ok((times, flops))
}

/// (ms per call, share of the encoder's time, GFLOP/s) of one stage.
fn stage_row(times: &StageTimes, stage: Stage, flops: Option<u64>) -> (f64, f64, Option<f64>) {
    let total = times.total(stage).as_secs_f64();
    let per_call = total / times.passes().max(1) as f64;
    let share = 100.0 * total / times.sum().as_secs_f64().max(1e-12);
    let gflop_s = flops.map(|f| f as f64 / per_call.max(1e-12) / 1e9);
    (per_call * 1e3, share, gflop_s)
}

fn stages_table(times: &StageTimes, flops: &StageFlops) -> String {
    let mut out = format!(
        "encoder stages over {} more calls (a clock around each):\n{:<28} {:>10} {:>7} {:>8}\n",
        times.passes(),
        "stage",
        "ms/call",
        "share",
        "GFLOP/s"
    );
    for &(stage, f) in flops {
        let (ms, share, gflop_s) = stage_row(times, stage, f);
        let g = gflop_s.map_or("-".to_string(), |g| format!("{g:.1}"));
        out += &format!("{:<28} {ms:>10.2} {share:>6.1}% {g:>8}\n", stage.name());
    }
    let all: u64 = flops.iter().filter_map(|&(_, f)| f).sum();
    let ms = times.sum().as_secs_f64() * 1e3 / times.passes().max(1) as f64;
    out += &format!(
        "{:<28} {ms:>10.2} {:>6.1}% {:>8.1}\n",
        "encoder",
        100.0,
        all as f64 / (ms / 1e3).max(1e-12) / 1e9
    );
    out
}

fn stages_json(times: &StageTimes, flops: &StageFlops) -> serde_json::Value {
    flops
        .iter()
        .map(|&(stage, f)| {
            let (ms, share, gflop_s) = stage_row(times, stage, f);
            serde_json::json!({
                "stage": stage.name(),
                "ms": round(ms, 3),
                "share": round(share, 2),
                "gflop_s": gflop_s.map(|g| round(g, 1)),
            })
        })
        .collect()
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// The model's folder name (`e5-small`) or hub id, for reports.
fn model_label(spec: &str) -> String {
    let path = Path::new(spec);
    match path.is_dir() {
        true => path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| spec.to_string()),
        false => spec.to_string(),
    }
}

/// W1-W3 use XLM-R ids and up to 512 positions: refuse models they do not fit.
fn check_workload(embedder: &Embedder, w: &Workload, model: &str) -> anyhow::Result<()> {
    let c = embedder.encoder_config();
    if c.vocab_size < MIN_VOCAB {
        bail!(
            "workload {} uses XLM-R token ids (up to {}), but {model} has a vocabulary of {} tokens: \
             time it on a text corpus instead (--workload FILE)",
            w.name,
            MIN_VOCAB - 1,
            c.vocab_size
        );
    }
    if w.seq_len > c.max_tokens() {
        bail!(
            "workload {} has {} tokens per sequence, but {model} takes at most {}: \
             time it on a text corpus instead (--workload FILE)",
            w.name,
            w.seq_len,
            c.max_tokens()
        );
    }
    Ok(())
}

/// The whole pipeline after tokenization (encoder, pooling, Dense, Normalize) on fixed token
/// ids; returns the token count.
fn run_token_ids(embedder: &Embedder, sequences: &[TokenizedText]) -> anyhow::Result<usize> {
    let vectors = embedder
        .embed_tokenized(sequences, 0, &EmbedOptions::default())
        .context("running the encoder")?;
    std::hint::black_box(&vectors);
    Ok(sequences.iter().map(|s| s.ids.len()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = |v: &[u64]| Timings {
            calls: v.iter().map(|&m| Duration::from_millis(m)).collect(),
        };
        assert_eq!(ms(&[5, 1, 3]).median(), Duration::from_millis(3));
        assert_eq!(ms(&[4, 1, 3, 2]).median(), Duration::from_micros(2500));
        assert_eq!(ms(&[4, 1, 3, 2]).min(), Duration::from_millis(1));
    }

    #[test]
    fn exactly_n_calls_after_one_warm_up() {
        let mut count = 0;
        let (t, tokens) = time_calls(
            || {
                count += 1;
                Ok(7)
            },
            Duration::from_secs(100),
            Some(4),
        )
        .unwrap();
        assert_eq!((t.calls.len(), tokens, count), (4, 7, 5));
    }

    #[test]
    fn peak_rss_is_read() {
        assert!(peak_rss_mb().unwrap() > 0.0);
    }
}
