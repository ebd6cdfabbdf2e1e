//! Embedding many texts with a progress bar (rate and ETA on stderr, for a person watching)
//! and a one-line summary at the end.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use koembed_embed::{EmbedError, EmbedOptions, EmbedOutput, Embedder};
use ndarray::{s, Array2};

use crate::cli::Context;

/// An [`EmbedOutput`] and how long it took.
pub struct Embedded {
    pub output: EmbedOutput,
    pub elapsed: Duration,
}

impl Embedded {
    /// `N texts, T tokens, K truncated to L tokens, X tokens/s in S s`
    pub fn summary(&self, max_seq_length: usize) -> String {
        let secs = self.elapsed.as_secs_f64();
        format!(
            "{} texts, {} tokens, {} truncated (max {max_seq_length} tokens), {:.0} tokens/s in {secs:.2} s",
            self.output.embeddings.nrows(),
            self.output.tokens,
            self.output.truncated,
            self.output.tokens as f64 / secs.max(1e-9),
        )
    }
}

/// Embeds `texts` in input order, one `batch_size` chunk at a time so that a bar can follow.
/// Vectors do not depend on the chunking (see the invariance tests).
pub fn embed_all<S: AsRef<str>>(
    embedder: &Embedder,
    texts: &[S],
    options: &EmbedOptions,
    what: &str,
    ctx: &Context,
) -> anyhow::Result<Embedded> {
    let start = Instant::now();
    let bar = bar(texts.len() as u64, what, ctx.show_progress());
    let dim = options.truncate_dim.unwrap_or(embedder.dim());
    let mut embeddings = Array2::<f32>::zeros((texts.len(), dim));
    let (mut tokens, mut truncated) = (0, 0);
    let chunk = options.batch_size.max(1);
    for (i, texts) in texts.chunks(chunk).enumerate() {
        let first = i * chunk;
        let out = embedder
            .embed_with_report(texts, options)
            .map_err(|e| match e {
                // The library numbers texts within the call; give the index in the whole input.
                EmbedError::Tokenize { index, reason } => EmbedError::Tokenize {
                    index: first + index,
                    reason,
                },
                other => other,
            })?;
        embeddings
            .slice_mut(s![first..first + texts.len(), ..])
            .assign(&out.embeddings);
        tokens += out.tokens;
        truncated += out.truncated;
        bar.inc(texts.len() as u64);
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        let done = (first + texts.len()) as f64;
        bar.set_message(format!(
            "{:.1} texts/s, {:.0} tokens/s",
            done / secs,
            tokens as f64 / secs
        ));
    }
    bar.finish_and_clear();
    Ok(Embedded {
        output: EmbedOutput {
            embeddings,
            truncated,
            tokens,
        },
        elapsed: start.elapsed(),
    })
}

/// A bar on stderr when `visible`, else a hidden one that costs nothing.
pub fn bar(len: u64, what: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} texts ({msg}, ETA {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar =
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()).with_style(style);
    bar.set_prefix(what.to_string());
    bar
}
