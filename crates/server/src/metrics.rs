//! Counters and histograms for `GET /metrics`, in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A Prometheus histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    state: Mutex<HistogramState>,
}

#[derive(Default, Clone)]
struct HistogramState {
    /// counts[i]: observations <= bounds[i] and > bounds[i - 1]; the last one is +Inf.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            state: Mutex::new(HistogramState {
                counts: vec![0; bounds.len() + 1],
                sum: 0.0,
            }),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.counts[bucket] += 1;
        state.sum += value;
    }

    pub fn count(&self) -> u64 {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.counts.iter().sum()
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in state.counts.iter().enumerate() {
            cumulative += count;
            let le = match self.bounds.get(i) {
                Some(b) => b.to_string(),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {cumulative}", state.sum);
    }
}

const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const TEXTS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
const TOKENS: &[f64] = &[
    16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0,
];

/// Everything `/metrics` reports.
pub struct Metrics {
    /// (endpoint, status) -> answered requests.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Requests admitted and not yet answered (queued, tokenizing or running).
    pub in_flight: AtomicI64,
    pub texts: AtomicU64,
    pub tokens: AtomicU64,
    pub request_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub batch_texts: Histogram,
    pub batch_tokens: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            in_flight: AtomicI64::new(0),
            texts: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            request_seconds: Histogram::new(SECONDS),
            queue_seconds: Histogram::new(SECONDS),
            inference_seconds: Histogram::new(SECONDS),
            batch_texts: Histogram::new(TEXTS),
            batch_tokens: Histogram::new(TOKENS),
        }
    }
}

impl Metrics {
    pub fn count_request(&self, endpoint: &str, status: u16, took: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry((endpoint.to_string(), status)).or_default() += 1;
        drop(requests);
        self.request_seconds.observe(took.as_secs_f64());
    }

    /// One encoder call of `texts` texts and `tokens` tokens that took `took`.
    pub fn count_batch(&self, texts: usize, tokens: usize, took: Duration) {
        self.texts.fetch_add(texts as u64, Ordering::Relaxed);
        self.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        self.batch_texts.observe(texts as f64);
        self.batch_tokens.observe(tokens as f64);
        self.inference_seconds.observe(took.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP koembed_requests_total HTTP requests answered, by endpoint and status.\n\
             # TYPE koembed_requests_total counter\n",
        );
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ((endpoint, status), n) in &requests {
            let _ = writeln!(
                out,
                "koembed_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP koembed_requests_in_flight Embedding requests admitted and not yet answered.\n\
             # TYPE koembed_requests_in_flight gauge\nkoembed_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP koembed_texts_total Texts embedded.\n# TYPE koembed_texts_total counter\n\
             koembed_texts_total {}",
            self.texts.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP koembed_tokens_total Tokens run through the encoder (prompts and special \
             tokens included).\n# TYPE koembed_tokens_total counter\nkoembed_tokens_total {}",
            self.tokens.load(Ordering::Relaxed)
        );
        self.request_seconds.write(
            &mut out,
            "koembed_request_duration_seconds",
            "Time to answer a request (every endpoint).",
        );
        self.queue_seconds.write(
            &mut out,
            "koembed_queue_duration_seconds",
            "Time a request waited before its first text entered an encoder call.",
        );
        self.inference_seconds.write(
            &mut out,
            "koembed_inference_duration_seconds",
            "Time of one encoder call (encoder, pooling, Dense).",
        );
        self.batch_texts.write(
            &mut out,
            "koembed_batch_size",
            "Texts per encoder call (from one or several requests).",
        );
        self.batch_tokens
            .write(&mut out, "koembed_batch_tokens", "Tokens per encoder call.");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 5.0, 50.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.write(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum 56.5\nx_count 4\n"), "{out}");
    }
}
