//! Where a forward pass spends its time, stage by stage ([`Encoder::forward_timed`]), with the
//! arithmetic each stage does, so that a stage's speed can be read as GFLOP/s and set beside a
//! peer's profile of the same operators.
//!
//! [`Encoder::forward_timed`]: crate::Encoder::forward_timed

use std::time::{Duration, Instant};

use crate::batch::PackedBatch;
use crate::config::EncoderConfig;

/// One step of the forward pass. The layer stages are summed over all layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Word + position + token type lookups, then LayerNorm.
    Embeddings,
    /// The fused Q/K/V projection (one GEMM, N = 3·hidden).
    QkvProjection,
    /// Scores, scaled masked softmax and context, per sequence and head (K/V packing included).
    Attention,
    /// The attention output projection, with its bias and the residual added.
    AttentionOutput,
    /// The LayerNorm after attention.
    AttentionNorm,
    /// The FFN's first projection, with its bias and GELU.
    FfnIn,
    /// The FFN's second projection, with its bias and the residual added.
    FfnOut,
    /// The LayerNorm after the FFN.
    OutputNorm,
}

impl Stage {
    /// Every stage, in the order a layer runs them.
    pub const ALL: [Stage; 8] = [
        Stage::Embeddings,
        Stage::QkvProjection,
        Stage::Attention,
        Stage::AttentionOutput,
        Stage::AttentionNorm,
        Stage::FfnIn,
        Stage::FfnOut,
        Stage::OutputNorm,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Embeddings => "embeddings",
            Stage::QkvProjection => "qkv projection",
            Stage::Attention => "attention",
            Stage::AttentionOutput => "attention output + residual",
            Stage::AttentionNorm => "attention layernorm",
            Stage::FfnIn => "ffn in + gelu",
            Stage::FfnOut => "ffn out + residual",
            Stage::OutputNorm => "output layernorm",
        }
    }

    /// The multiply-add work of this stage over all layers for one forward pass of `batch`,
    /// in FLOP (2 per multiply-add); `None` for the stages that are not matrix products.
    pub fn flops(self, config: &EncoderConfig, batch: &PackedBatch) -> Option<u64> {
        let (h, inner) = (config.hidden_size as u64, config.intermediate_size as u64);
        let tokens = batch.num_tokens() as u64;
        let layers = config.num_layers as u64;
        let per_layer = match self {
            Stage::QkvProjection => 2 * tokens * h * 3 * h,
            // Q·Kᵀ and P·V, each s x s x head_dim per head, i.e. s·s·hidden over the heads.
            Stage::Attention => batch
                .sequences()
                .iter()
                .map(|r| 2 * 2 * (r.len() as u64).pow(2) * h)
                .sum(),
            Stage::AttentionOutput => 2 * tokens * h * h,
            Stage::FfnIn | Stage::FfnOut => 2 * tokens * h * inner,
            Stage::Embeddings | Stage::AttentionNorm | Stage::OutputNorm => return None,
        };
        Some(per_layer * layers)
    }

    fn index(self) -> usize {
        // Declared in the order of ALL.
        self as usize
    }
}

/// Wall time per [`Stage`], summed over the forward passes timed into it.
#[derive(Clone, Debug, Default)]
pub struct StageTimes {
    totals: [Duration; Stage::ALL.len()],
    passes: usize,
}

impl StageTimes {
    pub fn new() -> Self {
        Self::default()
    }

    /// The time spent in `stage` over all passes.
    pub fn total(&self, stage: Stage) -> Duration {
        self.totals[stage.index()]
    }

    /// How many forward passes were timed.
    pub fn passes(&self) -> usize {
        self.passes
    }

    /// The time of all stages over all passes.
    pub fn sum(&self) -> Duration {
        self.totals.iter().sum()
    }
}

/// Splits a forward pass into stages: each [`lap`](Laps::lap) charges the time since the
/// previous one to a stage. Without a [`StageTimes`] a lap does nothing.
pub(crate) struct Laps<'a> {
    /// The times to add to and the end of the last lap; None: not timing.
    clock: Option<(&'a mut StageTimes, Instant)>,
}

impl<'a> Laps<'a> {
    pub fn new(times: Option<&'a mut StageTimes>) -> Self {
        Laps {
            clock: times.map(|t| {
                t.passes += 1;
                (t, Instant::now())
            }),
        }
    }

    /// Charges the time since the last lap (or the start) to `stage`.
    pub fn lap(&mut self, stage: Stage) {
        if let Some((times, last)) = &mut self.clock {
            let now = Instant::now();
            times.totals[stage.index()] += now - *last;
            *last = now;
        }
    }
}
