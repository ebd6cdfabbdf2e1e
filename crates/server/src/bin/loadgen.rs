//! `koembed-loadgen`: a closed-loop load test of a running `koembed serve`.
//!
//! N clients (threads with keep-alive connections) each send one request after another, for a
//! fixed time, through OpenAI's `/v1/embeddings` (base64 vectors, as the official client asks
//! by default) with texts taken in turn from a corpus (`.jsonl` with a `text` field, or one
//! text per line). Reports texts/s, tokens/s (from `usage`), latency percentiles, errors,
//! intended 429s, and the server's peak RSS when given its pid.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "koembed-loadgen",
    about = "Load test of a running koembed serve (OpenAI /v1/embeddings)",
    after_help = "Example:\n  \
        koembed serve --model models/e5-small --threads 2 --port 8080 & \n  \
        koembed-loadgen --url http://127.0.0.1:8080 --corpus testdata/debian-faq-ko/corpus.jsonl \
        --clients 64 --seconds 60 --pid $!"
)]
struct Args {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Texts to send: .jsonl (the `text` field) or one text per line.
    #[arg(long)]
    corpus: PathBuf,
    /// Concurrent clients, each with one request in flight at a time.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to send.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Texts per request.
    #[arg(long, default_value_t = 1)]
    texts_per_request: usize,
    /// The prompt (`input_type`): passage, as `koembed bench` uses on a corpus.
    #[arg(long, default_value = "passage")]
    input_type: String,
    /// The server's pid, to report its peak RSS (VmHWM).
    #[arg(long)]
    pid: Option<u32>,
    /// Sent as `Authorization: Bearer KEY`.
    #[arg(long)]
    api_key: Option<String>,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct ClientReport {
    latencies: Vec<Duration>,
    texts: usize,
    tokens: usize,
    rejected: usize,
    errors: usize,
    first_error: Option<String>,
}

fn read_corpus(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut texts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if jsonl {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            match v["text"].as_str() {
                Some(t) => texts.push(t.to_string()),
                None => bail!("{} line {}: no \"text\" field", path.display(), i + 1),
            }
        } else {
            texts.push(line.to_string());
        }
    }
    if texts.is_empty() {
        bail!("{} has no texts", path.display());
    }
    Ok(texts)
}

fn client(id: usize, args: &Args, texts: &[String], deadline: Instant) -> ClientReport {
    let agent = ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build(),
    );
    let url = format!("{}/v1/embeddings", args.url.trim_end_matches('/'));
    let mut report = ClientReport::default();
    // Each client walks the corpus from its own offset, so concurrent requests mix lengths.
    let mut next = id * 7919 % texts.len();
    while Instant::now() < deadline {
        let batch: Vec<&str> = (0..args.texts_per_request)
            .map(|k| texts[(next + k) % texts.len()].as_str())
            .collect();
        next = (next + args.texts_per_request) % texts.len();
        let body = json!({
            "model": "loadgen",
            "input": batch,
            "input_type": args.input_type,
            "encoding_format": "base64",
            "truncate": true,
        })
        .to_string();
        let mut request = agent.post(&url).header("Content-Type", "application/json");
        if let Some(key) = &args.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let started = Instant::now();
        let result = request.send(body.as_bytes()).and_then(|mut r| {
            let status = r.status().as_u16();
            let text = r
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()?;
            Ok((status, text))
        });
        let took = started.elapsed();
        match result {
            Ok((200, text)) => {
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                let n = v["data"].as_array().map_or(0, Vec::len);
                if n != batch.len() {
                    report.errors += 1;
                    report
                        .first_error
                        .get_or_insert(format!("bad answer: {text:.200}"));
                    continue;
                }
                report.latencies.push(took);
                report.texts += n;
                report.tokens += v["usage"]["total_tokens"].as_u64().unwrap_or(0) as usize;
            }
            Ok((429, _)) => {
                report.rejected += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok((status, text)) => {
                report.errors += 1;
                report
                    .first_error
                    .get_or_insert(format!("{status}: {text:.200}"));
            }
            Err(e) => {
                report.errors += 1;
                report.first_error.get_or_insert(e.to_string());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    report
}

/// Peak resident set size of a process, in MB (Linux: VmHWM in /proc/PID/status).
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if args.clients == 0 || args.texts_per_request == 0 {
        bail!("--clients and --texts-per-request must be at least 1");
    }
    let texts = Arc::new(read_corpus(&args.corpus)?);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let threads: Vec<_> = (0..args.clients)
        .map(|id| {
            let (args, texts) = (args.clone(), texts.clone());
            std::thread::spawn(move || client(id, &args, &texts, deadline))
        })
        .collect();
    let reports: Vec<ClientReport> = threads
        .into_iter()
        .map(|t| t.join().expect("a client thread panicked"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies: Vec<Duration> = reports.iter().flat_map(|r| r.latencies.clone()).collect();
    latencies.sort();
    let texts_done: usize = reports.iter().map(|r| r.texts).sum();
    let tokens: usize = reports.iter().map(|r| r.tokens).sum();
    let errors: usize = reports.iter().map(|r| r.errors).sum();
    let rejected: usize = reports.iter().map(|r| r.rejected).sum();
    let first_error = reports.iter().find_map(|r| r.first_error.clone());
    let rss = args.pid.and_then(peak_rss_mb);
    let summary = json!({
        "clients": args.clients,
        "seconds": elapsed,
        "requests": latencies.len(),
        "texts": texts_done,
        "texts_per_s": texts_done as f64 / elapsed,
        "tokens_per_s": tokens as f64 / elapsed,
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
        "errors": errors,
        "rejected_429": rejected,
        "peak_rss_mb": rss,
        "first_error": first_error,
    });
    if args.json {
        println!("{summary}");
    } else {
        println!("| clients | seconds | requests | texts/s | tokens/s | p50 ms | p99 ms | errors | 429s | server peak RSS |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {} | {:.1} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            args.clients,
            elapsed,
            latencies.len(),
            texts_done as f64 / elapsed,
            tokens as f64 / elapsed,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            errors,
            rejected,
            rss.map_or("-".to_string(), |mb| format!("{mb:.0} MB")),
        );
        if let Some(e) = first_error {
            eprintln!("koembed-loadgen: first error: {e}");
        }
    }
    if errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}
