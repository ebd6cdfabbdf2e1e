//! Pooling token vectors into one vector per text, as sentence-transformers' Pooling module
//! does, over one sequence of a packed batch (no padding).

/// One pooling mode; a model may concatenate several (in this enum's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    Cls,
    Max,
    Mean,
    MeanSqrtLen,
    WeightedMean,
    LastToken,
}

impl PoolingMode {
    pub fn name(self) -> &'static str {
        match self {
            PoolingMode::Cls => "cls",
            PoolingMode::Max => "max",
            PoolingMode::Mean => "mean",
            PoolingMode::MeanSqrtLen => "mean_sqrt_len",
            PoolingMode::WeightedMean => "weightedmean",
            PoolingMode::LastToken => "lasttoken",
        }
    }
}

/// `1_Pooling/config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolingConfig {
    pub modes: Vec<PoolingMode>,
    /// False: the prompt's tokens (and the leading `<s>`) are left out of the pooled tokens.
    pub include_prompt: bool,
    pub word_embedding_dimension: Option<usize>,
}

impl PoolingConfig {
    pub fn mean() -> Self {
        PoolingConfig {
            modes: vec![PoolingMode::Mean],
            include_prompt: true,
            word_embedding_dimension: None,
        }
    }

    pub fn output_dim(&self, hidden: usize) -> usize {
        hidden * self.modes.len()
    }

    pub fn describe(&self) -> String {
        let modes: Vec<&str> = self.modes.iter().map(|m| m.name()).collect();
        let mut text = modes.join("+");
        if !self.include_prompt {
            text.push_str(" (prompt excluded)");
        }
        text
    }
}

/// Pools one sequence.
///
/// `out` is [modes.len() * hidden]; `tokens` is the sequence's last hidden state,
/// [n_tokens, hidden] row-major. The first `masked_prefix` tokens count as masked, which is how
/// sentence-transformers leaves the prompt out (`attention_mask[:, :prompt_length] = 0`).
pub fn pool_sequence(
    out: &mut [f32],
    tokens: &[f32],
    hidden: usize,
    modes: &[PoolingMode],
    masked_prefix: usize,
) {
    assert_eq!(
        out.len(),
        modes.len() * hidden,
        "pool_sequence: output length"
    );
    assert_eq!(tokens.len() % hidden, 0, "pool_sequence: token rows");
    let n_tokens = tokens.len() / hidden;
    let first_kept = masked_prefix.min(n_tokens);
    let kept = &tokens[first_kept * hidden..];
    let row = |t: usize| &tokens[t * hidden..(t + 1) * hidden];
    for (mode, out) in modes.iter().zip(out.chunks_exact_mut(hidden)) {
        match mode {
            PoolingMode::Cls => match n_tokens {
                0 => out.fill(0.0),
                _ => out.copy_from_slice(row(0)),
            },
            PoolingMode::Max => {
                // The reference sets masked tokens to -1e9 before the max.
                let masked_value = if first_kept > 0 {
                    -1e9f32
                } else {
                    f32::NEG_INFINITY
                };
                out.fill(masked_value);
                for token in kept.chunks_exact(hidden) {
                    for (o, &x) in out.iter_mut().zip(token) {
                        *o = o.max(x);
                    }
                }
            }
            PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                sum_rows(out, kept, hidden);
                let count = (n_tokens - first_kept) as f32;
                let divisor = match mode {
                    PoolingMode::Mean => count.max(1e-9),
                    _ => count.max(1e-9).sqrt(),
                };
                out.iter_mut().for_each(|o| *o /= divisor);
            }
            PoolingMode::WeightedMean => {
                // Weight of token t is its position t + 1 in the sequence.
                out.fill(0.0);
                let mut weight_sum = 0.0f32;
                for t in first_kept..n_tokens {
                    let w = (t + 1) as f32;
                    weight_sum += w;
                    for (o, &x) in out.iter_mut().zip(row(t)) {
                        *o += w * x;
                    }
                }
                let divisor = weight_sum.max(1e-9);
                out.iter_mut().for_each(|o| *o /= divisor);
            }
            PoolingMode::LastToken => {
                if first_kept < n_tokens {
                    out.copy_from_slice(row(n_tokens - 1));
                } else {
                    out.fill(0.0);
                }
            }
        }
    }
}

fn sum_rows(out: &mut [f32], rows: &[f32], hidden: usize) {
    out.fill(0.0);
    for token in rows.chunks_exact(hidden) {
        for (o, &x) in out.iter_mut().zip(token) {
            *o += x;
        }
    }
}

/// L2-normalizes a vector the way `torch.nn.functional.normalize` does (norm clamped at 1e-12).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt() as f32;
    let divisor = norm.max(1e-12);
    v.iter_mut().for_each(|x| *x /= divisor);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Three tokens, hidden 2: integer values keep every result exact.
    const TOKENS: [f32; 6] = [1.0, -2.0, 3.0, 4.0, 5.0, -6.0];

    fn pool(modes: &[PoolingMode], masked_prefix: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; modes.len() * 2];
        pool_sequence(&mut out, &TOKENS, 2, modes, masked_prefix);
        out
    }

    #[test]
    fn each_mode_matches_hand_computed_values() {
        assert_eq!(pool(&[PoolingMode::Cls], 0), [1.0, -2.0]);
        assert_eq!(pool(&[PoolingMode::Max], 0), [5.0, 4.0]);
        assert_eq!(pool(&[PoolingMode::Mean], 0), [3.0, -4.0 / 3.0]);
        let s = 3f32.sqrt();
        assert_eq!(pool(&[PoolingMode::MeanSqrtLen], 0), [9.0 / s, -4.0 / s]);
        // weights 1, 2, 3: (1 + 6 + 15) / 6, (-2 + 8 - 18) / 6
        assert_eq!(
            pool(&[PoolingMode::WeightedMean], 0),
            [22.0 / 6.0, -12.0 / 6.0]
        );
        assert_eq!(pool(&[PoolingMode::LastToken], 0), [5.0, -6.0]);
    }

    #[test]
    fn modes_concatenate_in_config_order() {
        assert_eq!(
            pool(&[PoolingMode::Cls, PoolingMode::Mean], 0),
            [1.0, -2.0, 3.0, -4.0 / 3.0]
        );
    }

    #[test]
    fn masked_prefix_leaves_the_prompt_out() {
        assert_eq!(pool(&[PoolingMode::Mean], 1), [4.0, -1.0]);
        assert_eq!(pool(&[PoolingMode::Max], 2), [5.0, -6.0]);
        // CLS is the first token whatever the mask says, as in the reference.
        assert_eq!(pool(&[PoolingMode::Cls], 2), [1.0, -2.0]);
        // weights 2, 3 for tokens 1, 2
        assert_eq!(
            pool(&[PoolingMode::WeightedMean], 1),
            [(6.0 + 15.0) / 5.0, (8.0 - 18.0) / 5.0]
        );
        // Everything masked: the reference divides a zero sum by 1e-9.
        assert_eq!(pool(&[PoolingMode::Mean], 5), [0.0, 0.0]);
        assert_eq!(pool(&[PoolingMode::LastToken], 3), [0.0, 0.0]);
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = [3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = [0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0, 0.0]);
    }
}
