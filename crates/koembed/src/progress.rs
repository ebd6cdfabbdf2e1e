//! Embedding many texts with a progress bar (rate and ETA on stderr, for a person watching)
//! and a one-line summary at the end.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use koembed_embed::{EmbedOptions, EmbedOutput, Embedder};

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

/// Embeds `texts` in one library call, which batches them longest first by `batch_size` and
/// `max_batch_tokens` (over the whole input, so that texts of similar length run together);
/// the bar follows each encoder call. Rows come back in input order, and vectors do not depend
/// on the batching (see the invariance tests).
pub fn embed_all<S: AsRef<str>>(
    embedder: &Embedder,
    texts: &[S],
    options: &EmbedOptions,
    what: &str,
    ctx: &Context,
) -> anyhow::Result<Embedded> {
    let start = Instant::now();
    let bar = bar(texts.len() as u64, what, ctx.show_progress());
    let (mut done, mut tokens) = (0usize, 0usize);
    let output = embedder.embed_with_progress(texts, options, |batch_texts, batch_tokens| {
        done += batch_texts;
        tokens += batch_tokens;
        bar.inc(batch_texts as u64);
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{:.1} texts/s, {:.0} tokens/s",
            done as f64 / secs,
            tokens as f64 / secs
        ));
    })?;
    bar.finish_and_clear();
    Ok(Embedded {
        output,
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
