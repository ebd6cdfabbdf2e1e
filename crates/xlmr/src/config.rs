//! `config.json` -> [`EncoderConfig`]: what the encoder needs to know, decided once at load.
//!
//! Model-family rules (the XLM-R position offset, the `bert.` / `roberta.` weight prefix of
//! classification checkpoints) are resolved here and carried as data, so the forward pass never
//! asks which family it runs.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The two encoder families koembed runs. Both are post-LayerNorm BERT encoders; they differ in
/// how positions are numbered and which config values they default to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `BertModel` (also multilingual-e5-small and frony, which pair it with the XLM-R tokenizer).
    Bert,
    /// `XLMRobertaModel` (KoE5, bge-m3): positions start at `pad_token_id + 1`.
    XlmRoberta,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::XlmRoberta => "xlm-roberta",
        }
    }
}

/// Everything the encoder's forward pass depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub family: Family,
    /// The architecture named in `config.json` (e.g. `BertModel`), for reports.
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub pad_token_id: u32,
    /// Position id of a sequence's first token: 0 for BERT, `pad_token_id + 1` for XLM-R.
    pub position_offset: usize,
    /// Prefix of every weight name in the checkpoint (`""`, `"bert."` or `"roberta."`); the
    /// weight loader also tries `""` when a base-model checkpoint is paired with a
    /// classification config.
    pub weight_prefix: String,
    /// Weight dtype the checkpoint says it holds (`torch_dtype`), for reports only: the loader
    /// trusts the safetensors header.
    pub torch_dtype: Option<String>,
}

impl EncoderConfig {
    /// Head dimension (`hidden_size / num_heads`).
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// The longest token sequence the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset)
    }

    /// Parameter count of the encoder as loaded (embeddings + layers, without a pooler).
    pub fn parameter_count(&self) -> usize {
        let h = self.hidden_size;
        let f = self.intermediate_size;
        let embeddings =
            (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h;
        let attention = 4 * (h * h + h) + 2 * h;
        let ffn = h * f + f + f * h + h + 2 * h;
        embeddings + self.num_layers * (attention + ffn)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text).map_err(|reason| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses and validates a `config.json`; the error string names the field.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| format!("not a valid config.json: {e}"))?;
        raw.validate()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// `config.json` as transformers writes it; only the fields koembed reads or refuses.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    pad_token_id: Option<u32>,
    position_embedding_type: Option<String>,
    #[serde(default)]
    is_decoder: bool,
    #[serde(default)]
    add_cross_attention: bool,
    torch_dtype: Option<String>,
}

fn require(value: Option<usize>, field: &str) -> Result<usize, String> {
    match value {
        Some(0) => Err(format!("`{field}` is 0")),
        Some(v) => Ok(v),
        None => Err(format!("missing field `{field}`")),
    }
}

impl RawConfig {
    fn validate(self) -> Result<EncoderConfig, String> {
        let model_type = self
            .model_type
            .as_deref()
            .ok_or("missing field `model_type`")?;
        let family = match model_type {
            "bert" => Family::Bert,
            "xlm-roberta" | "roberta" => Family::XlmRoberta,
            other => {
                return Err(format!(
                "unsupported `model_type` \"{other}\" (koembed runs \"bert\" and \"xlm-roberta\")"
            ))
            }
        };
        let architecture = self
            .architectures
            .first()
            .cloned()
            .unwrap_or_else(|| match family {
                Family::Bert => "BertModel".to_string(),
                Family::XlmRoberta => "XLMRobertaModel".to_string(),
            });
        let weight_prefix = match architecture.as_str() {
            "BertModel" | "XLMRobertaModel" | "RobertaModel" => "",
            "BertForSequenceClassification" | "BertForMaskedLM" => "bert.",
            "XLMRobertaForSequenceClassification"
            | "XLMRobertaForMaskedLM"
            | "RobertaForSequenceClassification"
            | "RobertaForMaskedLM" => "roberta.",
            other => {
                return Err(format!(
                    "unsupported `architectures` entry \"{other}\" (koembed runs BertModel, \
                     XLMRobertaModel and their *ForSequenceClassification / *ForMaskedLM checkpoints)"
                ))
            }
        }
        .to_string();

        // "gelu" in transformers is the exact erf form; every other activation would silently
        // give different vectors, so it is refused by name.
        let act = self.hidden_act.as_deref().unwrap_or("gelu");
        if act != "gelu" {
            return Err(format!(
                "unsupported `hidden_act` \"{act}\" (koembed implements \"gelu\", the exact erf form)"
            ));
        }
        let pos_type = self
            .position_embedding_type
            .as_deref()
            .unwrap_or("absolute");
        if pos_type != "absolute" {
            return Err(format!(
                "unsupported `position_embedding_type` \"{pos_type}\" (only \"absolute\" is implemented)"
            ));
        }
        if self.is_decoder || self.add_cross_attention {
            return Err(
                "`is_decoder` / `add_cross_attention` is set: koembed runs encoders only".into(),
            );
        }

        let hidden_size = require(self.hidden_size, "hidden_size")?;
        let num_heads = require(self.num_attention_heads, "num_attention_heads")?;
        if hidden_size % num_heads != 0 {
            return Err(format!(
                "`hidden_size` {hidden_size} is not a multiple of `num_attention_heads` {num_heads}"
            ));
        }
        let (default_eps, default_pad, default_types) = match family {
            Family::Bert => (1e-12, 0, 2),
            Family::XlmRoberta => (1e-5, 1, 1),
        };
        let layer_norm_eps = self.layer_norm_eps.unwrap_or(default_eps);
        if !(layer_norm_eps > 0.0 && layer_norm_eps < 1.0) {
            return Err(format!(
                "`layer_norm_eps` {layer_norm_eps} is out of range (0, 1)"
            ));
        }
        let pad_token_id = self.pad_token_id.unwrap_or(default_pad);
        let position_offset = match family {
            Family::Bert => 0,
            Family::XlmRoberta => pad_token_id as usize + 1,
        };
        let max_position_embeddings =
            require(self.max_position_embeddings, "max_position_embeddings")?;
        if max_position_embeddings <= position_offset {
            return Err(format!(
                "`max_position_embeddings` {max_position_embeddings} leaves no room for tokens \
                 after the position offset {position_offset}"
            ));
        }
        Ok(EncoderConfig {
            family,
            architecture,
            vocab_size: require(self.vocab_size, "vocab_size")?,
            hidden_size,
            num_layers: require(self.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            intermediate_size: require(self.intermediate_size, "intermediate_size")?,
            max_position_embeddings,
            type_vocab_size: self.type_vocab_size.unwrap_or(default_types).max(1),
            layer_norm_eps: layer_norm_eps as f32,
            pad_token_id,
            position_offset,
            weight_prefix,
            torch_dtype: self.torch_dtype,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E5_SMALL: &str = r#"{
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 1536, "vocab_size": 250037, "max_position_embeddings": 512,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "position_embedding_type": "absolute", "torch_dtype": "float32"
    }"#;

    const KOE5: &str = r#"{
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "hidden_act": "gelu",
        "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
        "intermediate_size": 4096, "vocab_size": 250002, "max_position_embeddings": 514,
        "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1
    }"#;

    #[test]
    fn bert_positions_start_at_zero() {
        let c = EncoderConfig::from_json(E5_SMALL).unwrap();
        assert_eq!(c.family, Family::Bert);
        assert_eq!(c.position_offset, 0);
        assert_eq!(c.max_tokens(), 512);
        assert_eq!(c.head_dim(), 32);
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert_eq!(c.weight_prefix, "");
    }

    #[test]
    fn xlmr_positions_start_after_padding_idx() {
        let c = EncoderConfig::from_json(KOE5).unwrap();
        assert_eq!(c.family, Family::XlmRoberta);
        assert_eq!(c.position_offset, 2);
        assert_eq!(c.max_tokens(), 512);
        assert_eq!(c.head_dim(), 64);
    }

    #[test]
    fn koe5_parameter_count_matches_the_published_size() {
        // performance.md: XLM-R large, 558.8 M parameters without the pooler.
        let c = EncoderConfig::from_json(KOE5).unwrap();
        let millions = c.parameter_count() as f64 / 1e6;
        assert!((millions - 558.8).abs() < 0.1, "{millions} M");
    }

    #[test]
    fn classification_checkpoints_carry_their_prefix() {
        let text = KOE5.replace("XLMRobertaModel", "XLMRobertaForSequenceClassification");
        assert_eq!(
            EncoderConfig::from_json(&text).unwrap().weight_prefix,
            "roberta."
        );
        let text = E5_SMALL.replace("\"BertModel\"", "\"BertForSequenceClassification\"");
        assert_eq!(
            EncoderConfig::from_json(&text).unwrap().weight_prefix,
            "bert."
        );
    }

    #[test]
    fn unsupported_values_are_refused_by_name() {
        let cases = [
            (E5_SMALL.replace("\"gelu\"", "\"gelu_new\""), "hidden_act"),
            (
                E5_SMALL.replace("\"absolute\"", "\"relative_key\""),
                "position_embedding_type",
            ),
            (E5_SMALL.replace("\"bert\"", "\"gpt2\""), "model_type"),
            (
                E5_SMALL.replace("\"BertModel\"", "\"BertLMHeadModel\""),
                "architectures",
            ),
            (
                E5_SMALL.replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 7"),
                "num_attention_heads",
            ),
            (E5_SMALL.replace("\"hidden_size\": 384,", ""), "hidden_size"),
            (E5_SMALL.replace("1e-12", "-1"), "layer_norm_eps"),
        ];
        for (text, field) in cases {
            let err = EncoderConfig::from_json(&text).unwrap_err();
            assert!(err.contains(field), "error {err:?} should name {field}");
        }
    }

    #[test]
    fn file_errors_name_the_file() {
        let err = EncoderConfig::from_file(Path::new("/nonexistent/config.json")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/config.json"));
    }
}
