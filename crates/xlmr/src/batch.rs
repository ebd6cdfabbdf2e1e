//! The encoder's input contract: several token sequences packed back to back, no padding.
//!
//! Positions are computed here, once, per family; both restart for every sequence:
//! - BERT: 0, 1, 2, ...
//! - XLM-R: transformers' `cumsum(ids != pad) * (ids != pad) + pad`, so the first real token
//!   sits at `pad + 1`, and a `<pad>` id inside a text (a user may type the literal string)
//!   takes position `pad` without advancing the count.

use std::ops::Range;

use crate::config::{EncoderConfig, Family};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedBatch {
    /// Every sequence's token ids, concatenated.
    pub ids: Vec<u32>,
    /// The position id of each token (an index into the position table).
    pub positions: Vec<u32>,
    /// Sequence s is `ids[seq_offsets[s]..seq_offsets[s + 1]]`.
    pub seq_offsets: Vec<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("sequence {sequence} is empty")]
    Empty { sequence: usize },
    #[error("sequence {sequence} has {len} tokens; this model's position table allows {max}")]
    TooLong {
        sequence: usize,
        len: usize,
        max: usize,
    },
    #[error(
        "sequence {sequence}, token {token}: id {id} is outside the vocabulary (size {vocab})"
    )]
    BadId {
        sequence: usize,
        token: usize,
        id: u32,
        vocab: usize,
    },
}

impl PackedBatch {
    pub fn new<S: AsRef<[u32]>>(
        config: &EncoderConfig,
        sequences: &[S],
    ) -> Result<Self, BatchError> {
        let total: usize = sequences.iter().map(|s| s.as_ref().len()).sum();
        let mut ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut seq_offsets = Vec::with_capacity(sequences.len() + 1);
        seq_offsets.push(0);
        let max = config.max_tokens();
        let pad = config.pad_token_id;
        for (sequence, seq) in sequences.iter().enumerate() {
            let seq = seq.as_ref();
            if seq.is_empty() {
                return Err(BatchError::Empty { sequence });
            }
            if seq.len() > max {
                return Err(BatchError::TooLong {
                    sequence,
                    len: seq.len(),
                    max,
                });
            }
            let mut real_tokens = 0;
            for (token, &id) in seq.iter().enumerate() {
                if id as usize >= config.vocab_size {
                    return Err(BatchError::BadId {
                        sequence,
                        token,
                        id,
                        vocab: config.vocab_size,
                    });
                }
                ids.push(id);
                let position = match config.family {
                    Family::Bert => token,
                    Family::XlmRoberta if id == pad => pad as usize,
                    Family::XlmRoberta => {
                        real_tokens += 1;
                        pad as usize + real_tokens
                    }
                };
                positions.push(position as u32);
            }
            seq_offsets.push(ids.len());
        }
        Ok(PackedBatch {
            ids,
            positions,
            seq_offsets,
        })
    }

    pub fn num_sequences(&self) -> usize {
        self.seq_offsets.len() - 1
    }

    pub fn num_tokens(&self) -> usize {
        self.ids.len()
    }

    /// The token rows of sequence `s`.
    pub fn sequence(&self, s: usize) -> Range<usize> {
        self.seq_offsets[s]..self.seq_offsets[s + 1]
    }

    /// Every sequence's rows, in order.
    pub fn sequences(&self) -> Vec<Range<usize>> {
        self.seq_offsets.windows(2).map(|w| w[0]..w[1]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(model_type: &str) -> EncoderConfig {
        let text = format!(
            r#"{{"model_type": "{model_type}", "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 100,
                "max_position_embeddings": 6}}"#
        );
        EncoderConfig::from_json(&text).unwrap()
    }

    #[test]
    fn bert_positions_restart_at_zero_per_sequence() {
        let b = PackedBatch::new(&config("bert"), &[vec![5, 6, 7], vec![8, 9]]).unwrap();
        assert_eq!(b.ids, vec![5, 6, 7, 8, 9]);
        assert_eq!(b.positions, vec![0, 1, 2, 0, 1]);
        assert_eq!(b.seq_offsets, vec![0, 3, 5]);
        assert_eq!(b.sequence(1), 3..5);
    }

    #[test]
    fn xlmr_positions_start_after_the_padding_index() {
        let b = PackedBatch::new(&config("xlm-roberta"), &[vec![5, 6], vec![8, 9, 10]]).unwrap();
        assert_eq!(b.positions, vec![2, 3, 2, 3, 4]);
    }

    #[test]
    fn xlmr_pad_ids_inside_a_text_take_the_padding_position() {
        // transformers: create_position_ids_from_input_ids with padding_idx 1.
        let b = PackedBatch::new(&config("xlm-roberta"), &[vec![0, 1, 7, 2]]).unwrap();
        assert_eq!(b.positions, vec![2, 1, 3, 4]);
        let b = PackedBatch::new(&config("bert"), &[vec![0, 1, 7, 2]]).unwrap();
        assert_eq!(b.positions, vec![0, 1, 2, 3]);
    }

    #[test]
    fn bad_sequences_are_refused_with_their_index() {
        let c = config("xlm-roberta");
        assert_eq!(
            PackedBatch::new(&c, &[vec![1u32], vec![]]).unwrap_err(),
            BatchError::Empty { sequence: 1 }
        );
        assert_eq!(
            PackedBatch::new(&c, &[vec![1u32; 5]]).unwrap_err(),
            BatchError::TooLong {
                sequence: 0,
                len: 5,
                max: 4
            }
        );
        assert_eq!(
            PackedBatch::new(&c, &[vec![1u32, 100]]).unwrap_err(),
            BatchError::BadId {
                sequence: 0,
                token: 1,
                id: 100,
                vocab: 100
            }
        );
    }
}
