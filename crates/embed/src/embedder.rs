//! [`Embedder`]: a sentence-transformers model folder turned into vectors.
//!
//! text -> prompt -> token ids -> packed batch -> encoder -> pooling -> Dense -> Normalize ->
//! Matryoshka cut, the same steps and order as `SentenceTransformer.encode`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use koembed_tensor::{Tensor, TensorView};
use koembed_xlmr::{ComputeDtype, Encoder, EncoderConfig, F32Weight, PackedBatch, WeightStore};
use ndarray::Array2;

use crate::error::EmbedError;
use crate::model_dir::{DenseActivation, DenseModule, ModelDir};
use crate::pool::{l2_normalize, pool_sequence};
use crate::tokenize::{TextTokenizer, TokenizedText};

/// Which prompt to prepend to every text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Prompt {
    /// The model's `default_prompt_name`, if it has one; else none.
    #[default]
    ModelDefault,
    /// No prompt, even if the model has a default.
    None,
    /// A prompt by name (`query`, `passage`, ...): from the model's config, else the convention
    /// of its family (see [`Embedder::prompts`]).
    Named(String),
    /// A literal prefix, prepended as given.
    Literal(String),
}

/// Options of one [`Embedder::embed`] call.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOptions {
    pub prompt: Prompt,
    /// `None`: as the model's modules say (its Normalize module). `Some(true)`: L2-normalize
    /// the final vectors (like `normalize_embeddings=True`). `Some(false)`: skip the model's
    /// Normalize module and return raw vectors.
    pub normalize: Option<bool>,
    /// Matryoshka: keep the first `d` dimensions, then re-normalize if normalization is on.
    pub truncate_dim: Option<usize>,
    /// At most this many texts per encoder call. Results do not depend on it.
    pub batch_size: usize,
    /// At most this many tokens (prompt and special tokens included, after truncation) per
    /// encoder call; a single text longer than this still runs, alone. Results do not depend
    /// on it. See [`Embedder::embed_with_report`] for how batches are formed, and
    /// [`DEFAULT_MAX_BATCH_TOKENS`] for the default.
    pub max_batch_tokens: usize,
}

/// The default token budget of one encoder call: 16384 tokens, text-embeddings-inference's
/// default `max_batch_tokens`. It is the default `batch_size` (32) times the 512 tokens the
/// E5/KoE5 family allows, so on those models it never splits a batch that `batch_size` would
/// keep whole, while a model with a longer max_seq_length cannot build a bigger encoder input
/// than that (the activations of one call take about
/// `max_batch_tokens × (5 × hidden_size + intermediate_size) × 4` bytes: ~230 MB for a
/// 384-wide model, ~600 MB for a 1024-wide one).
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 16384;

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            prompt: Prompt::ModelDefault,
            normalize: None,
            truncate_dim: None,
            batch_size: 32,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
        }
    }
}

/// Vectors plus what the caller should know about how they were made.
#[derive(Debug, Clone)]
pub struct EmbedOutput {
    /// [texts, dim], in input order.
    pub embeddings: Array2<f32>,
    /// How many texts were longer than the model's max_seq_length and were cut.
    pub truncated: usize,
    /// Tokens fed to the encoder (after truncation), over all texts.
    pub tokens: usize,
}

struct DenseLayer {
    store: WeightStore,
    weight: F32Weight,
    bias: Option<F32Weight>,
    module: DenseModule,
}

impl DenseLayer {
    fn load(module: &DenseModule) -> Result<Self, EmbedError> {
        let store = WeightStore::open_files(&[module.dir.join("model.safetensors")])?;
        let weight = store.load_f32("linear.weight", &[module.out_features, module.in_features])?;
        let bias = if module.bias {
            Some(store.load_f32("linear.bias", &[module.out_features])?)
        } else {
            None
        };
        Ok(DenseLayer {
            store,
            weight,
            bias,
            module: module.clone(),
        })
    }

    /// x[rows, in] -> [rows, out]
    fn forward(&self, x: &Tensor) -> Tensor {
        let (n, k) = (self.module.out_features, self.module.in_features);
        let zeros;
        let bias = match &self.bias {
            Some(b) => self.store.f32_data(b),
            None => {
                zeros = vec![0.0; n];
                &zeros
            }
        };
        let mut out = Tensor::zeros(&[x.rows(), n]);
        koembed_tensor::matmul_bias_nt(
            out.view_mut(),
            x.view(),
            TensorView::new(self.store.f32_data(&self.weight), &[n, k]).expect("checked at load"),
            TensorView::new(bias, &[n]).expect("checked at load"),
        )
        .expect("shapes checked at load");
        if self.module.activation == DenseActivation::Tanh {
            out.as_mut_slice().iter_mut().for_each(|v| *v = v.tanh());
        }
        out
    }
}

pub struct Embedder {
    dir: ModelDir,
    tokenizer: TextTokenizer,
    encoder: Encoder,
    dense: Vec<DenseLayer>,
    prompts: BTreeMap<String, String>,
    /// Where the prompts came from: "config" or the name of a convention.
    prompt_source: &'static str,
}

impl Embedder {
    /// Loads a sentence-transformers folder (or a bare Hugging Face model folder).
    pub fn load(path: &Path) -> Result<Self, EmbedError> {
        Self::load_with_dtype(path, ComputeDtype::F32)
    }

    /// [`Self::load`] with the encoder's linear layers in `dtype` (f32 is exact; see
    /// [`ComputeDtype`] for the others). Dense modules and pooling stay f32.
    pub fn load_with_dtype(path: &Path, dtype: ComputeDtype) -> Result<Self, EmbedError> {
        let dir = ModelDir::read(path)?;
        let encoder =
            Encoder::load_with_dtype(&dir.transformer_dir, dtype).map_err(|e| match e {
                koembed_xlmr::EncoderError::Config(e) => EmbedError::EncoderConfig(e),
                koembed_xlmr::EncoderError::Weights(e) => EmbedError::Weights(e),
                koembed_xlmr::EncoderError::Batch(e) => EmbedError::Option(e.to_string()),
            })?;
        let config = encoder.config();
        let model_limit = config.max_tokens();
        let max_seq_length = match dir.max_seq_length {
            Some(n) if n > model_limit => {
                return Err(EmbedError::Config {
                    path: dir.transformer_dir.join("sentence_bert_config.json"),
                    reason: format!(
                    "max_seq_length {n} exceeds the {model_limit} tokens the position table allows"
                ),
                })
            }
            Some(n) => n,
            None => model_limit
                .min(tokenizer_model_max_length(&dir.transformer_dir).unwrap_or(usize::MAX)),
        };
        let tokenizer = TextTokenizer::load(
            &dir.transformer_dir.join("tokenizer.json"),
            max_seq_length,
            dir.do_lower_case,
        )?;
        let dense = dir
            .dense
            .iter()
            .map(DenseLayer::load)
            .collect::<Result<Vec<_>, _>>()?;
        let mut expected_in = dir.pooling.output_dim(config.hidden_size);
        for layer in &dense {
            if layer.module.in_features != expected_in {
                return Err(EmbedError::Config {
                    path: layer.module.dir.join("config.json"),
                    reason: format!(
                        "in_features {} does not match the {expected_in} values the previous module gives",
                        layer.module.in_features
                    ),
                });
            }
            expected_in = layer.module.out_features;
        }
        let (prompts, prompt_source) = if !dir.prompts.is_empty() {
            (dir.prompts.clone(), "config_sentence_transformers.json")
        } else if tokenizer.has_token("<Q>") && tokenizer.has_token("<P>") {
            (
                convention(&[("query", "<Q>"), ("passage", "<P>")]),
                "the <Q>/<P> convention (frony)",
            )
        } else if tokenizer.vocab_size() >= XLMR_VOCAB_SIZE {
            // The multilingual E5 family and KoE5 (the XLM-R vocabulary) are trained with these.
            (
                convention(&[("query", "query: "), ("passage", "passage: ")]),
                "the E5 convention",
            )
        } else {
            (BTreeMap::new(), "none: this model has no prompts")
        };
        Ok(Embedder {
            dir,
            tokenizer,
            encoder,
            dense,
            prompts,
            prompt_source,
        })
    }

    pub fn model_dir(&self) -> &ModelDir {
        &self.dir
    }

    pub fn encoder_config(&self) -> &EncoderConfig {
        self.encoder.config()
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Named prompts this model answers to, and where they came from (its config, or the
    /// convention of its family when the config has none).
    pub fn prompts(&self) -> (&BTreeMap<String, String>, &'static str) {
        (&self.prompts, self.prompt_source)
    }

    /// Length of the output vectors before any Matryoshka cut.
    pub fn dim(&self) -> usize {
        match self.dense.last() {
            Some(layer) => layer.module.out_features,
            None => self
                .dir
                .pooling
                .output_dim(self.encoder.config().hidden_size),
        }
    }

    /// The literal prompt an option stands for.
    pub fn resolve_prompt(&self, prompt: &Prompt) -> Result<Option<String>, EmbedError> {
        match prompt {
            Prompt::None => Ok(None),
            Prompt::Literal(text) => Ok(Some(text.clone())),
            Prompt::ModelDefault => Ok(self
                .dir
                .default_prompt_name
                .as_ref()
                .and_then(|name| self.prompts.get(name).cloned())),
            Prompt::Named(name) => match self.prompts.get(name) {
                Some(text) => Ok(Some(text.clone())),
                None => Err(EmbedError::UnknownPrompt {
                    name: name.clone(),
                    known: self.prompts.keys().cloned().collect::<Vec<_>>().join(", "),
                }),
            },
        }
    }

    /// Token ids of `prompt + text`, truncated like the reference.
    pub fn tokenize(&self, text: &str, prompt: &Prompt) -> Result<TokenizedText, EmbedError> {
        let prompt = self.resolve_prompt(prompt)?;
        self.tokenizer
            .encode(&with_prompt(prompt.as_deref(), text), 0)
    }

    /// Embeds `texts` (in input order). See [`Embedder::embed_with_report`] for counts.
    pub fn embed<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
    ) -> Result<Array2<f32>, EmbedError> {
        Ok(self.embed_with_report(texts, options)?.embeddings)
    }

    /// Embeds `texts` and says how many were truncated and how many tokens ran.
    ///
    /// Every text is tokenized first (a failure names the text's index in `texts`, and no
    /// encoder work is done). The texts are then ordered by token count, longest first (ties
    /// keep input order), and cut greedily into encoder calls of at most `batch_size` texts and
    /// at most `max_batch_tokens` tokens; a text longer than the budget runs alone. Rows come
    /// back in input order, and a text's vector does not depend on the batch it ran in.
    pub fn embed_with_report<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
    ) -> Result<EmbedOutput, EmbedError> {
        self.embed_with_progress(texts, options, |_, _| {})
    }

    /// [`Embedder::embed_with_report`], calling `progress(texts, tokens)` after each encoder
    /// call with the number of texts and tokens it embedded (texts are done longest first,
    /// not in input order).
    pub fn embed_with_progress<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<EmbedOutput, EmbedError> {
        if options.batch_size == 0 {
            return Err(EmbedError::Option("batch_size must be at least 1".into()));
        }
        if options.max_batch_tokens == 0 {
            return Err(EmbedError::Option(
                "max_batch_tokens must be at least 1".into(),
            ));
        }
        let dim = self.dim();
        let out_dim = match options.truncate_dim {
            Some(d) if d == 0 || d > dim => {
                return Err(EmbedError::Option(format!(
                    "truncate_dim {d} is outside 1..={dim} (this model's dimension)"
                )))
            }
            Some(d) => d,
            None => dim,
        };
        let prompt = self.resolve_prompt(&options.prompt)?;
        // sentence-transformers passes prompt_length to Pooling whenever a prompt is used;
        // Pooling masks those tokens only when include_prompt is false.
        let masked_prefix = match &prompt {
            Some(p) if !self.dir.pooling.include_prompt => self.tokenizer.prompt_length(p)?,
            _ => 0,
        };
        let tokenized = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                self.tokenizer
                    .encode(&with_prompt(prompt.as_deref(), text.as_ref()), i)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let truncated = tokenized.iter().filter(|t| t.truncated).count();
        let tokens = tokenized.iter().map(|t| t.ids.len()).sum::<usize>();

        // Longest first; `sort_by_key` is stable, so equal lengths keep input order.
        let mut by_length: Vec<(usize, TokenizedText)> =
            tokenized.into_iter().enumerate().collect();
        by_length.sort_by_key(|(_, t)| std::cmp::Reverse(t.ids.len()));
        let (order, sorted): (Vec<usize>, Vec<TokenizedText>) = by_length.into_iter().unzip();
        let lengths: Vec<usize> = sorted.iter().map(|t| t.ids.len()).collect();

        let mut embeddings = Array2::<f32>::zeros((texts.len(), out_dim));
        for batch in plan_batches(&lengths, options.batch_size, options.max_batch_tokens) {
            let vectors = self.embed_tokenized(&sorted[batch.clone()], masked_prefix, options)?;
            for (row, &input_index) in vectors.rows().into_iter().zip(&order[batch.clone()]) {
                embeddings.row_mut(input_index).assign(&row);
            }
            progress(batch.len(), lengths[batch].iter().sum());
        }
        Ok(EmbedOutput {
            embeddings,
            truncated,
            tokens,
        })
    }

    /// The rest of the pipeline on already tokenized texts (prompt included): encoder, pooling
    /// (the first `masked_prefix` tokens left out, see [`TextTokenizer::prompt_length`]),
    /// Dense, Normalize and the Matryoshka cut of `options`. One encoder call: `batch_size` and
    /// `max_batch_tokens` are not applied here.
    pub fn embed_tokenized(
        &self,
        tokenized: &[TokenizedText],
        masked_prefix: usize,
        options: &EmbedOptions,
    ) -> Result<Array2<f32>, EmbedError> {
        let dim = self.dim();
        let out_dim = options.truncate_dim.unwrap_or(dim);
        if out_dim == 0 || out_dim > dim {
            return Err(EmbedError::Option(format!(
                "truncate_dim {out_dim} is outside 1..={dim} (this model's dimension)"
            )));
        }
        let normalize_module = self.dir.normalize && options.normalize != Some(false);
        let normalize_final =
            options.normalize == Some(true) || (normalize_module && options.truncate_dim.is_some());
        let pooled = self.pool_batch(tokenized, masked_prefix)?;
        let vectors = self.dense.iter().fold(pooled, |x, layer| layer.forward(&x));
        let mut out = Array2::<f32>::zeros((tokenized.len(), out_dim));
        for (row, mut target) in vectors.as_slice().chunks_exact(dim).zip(out.rows_mut()) {
            let mut v = row.to_vec();
            if normalize_module {
                l2_normalize(&mut v);
            }
            v.truncate(out_dim);
            if normalize_final {
                l2_normalize(&mut v);
            }
            target.assign(&ndarray::ArrayView1::from(&v[..]));
        }
        Ok(out)
    }

    /// Runs the encoder on already tokenized sequences and pools each one:
    /// [sequences, pooled dim], before Dense and Normalize.
    pub fn pool_batch(
        &self,
        tokenized: &[TokenizedText],
        masked_prefix: usize,
    ) -> Result<Tensor, EmbedError> {
        let hidden = self.encoder.config().hidden_size;
        let pooled_dim = self.dir.pooling.output_dim(hidden);
        let mut pooled = Tensor::zeros(&[tokenized.len(), pooled_dim]);
        if tokenized.is_empty() {
            return Ok(pooled);
        }
        let sequences: Vec<&[u32]> = tokenized.iter().map(|t| t.ids.as_slice()).collect();
        let batch = PackedBatch::new(self.encoder.config(), &sequences)
            .map_err(|e| EmbedError::Option(e.to_string()))?;
        let states = self.encoder.forward(&batch);
        for s in 0..batch.num_sequences() {
            let rows = batch.sequence(s);
            pool_sequence(
                pooled.row_mut(s),
                &states.as_slice()[rows.start * hidden..rows.end * hidden],
                hidden,
                &self.dir.pooling.modes,
                masked_prefix,
            );
        }
        Ok(pooled)
    }
}

/// Cuts sequences of `lengths` tokens (in the order they are to run) into consecutive batches
/// of at most `batch_size` sequences and at most `max_tokens` tokens, greedily: a batch is
/// closed when the next sequence would break either limit. A sequence longer than `max_tokens`
/// gets a batch of its own. Both limits are at least 1.
fn plan_batches(lengths: &[usize], batch_size: usize, max_tokens: usize) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, &len) in lengths.iter().enumerate() {
        let count = i - start;
        if count > 0 && (count == batch_size || tokens + len > max_tokens) {
            batches.push(start..i);
            (start, tokens) = (i, 0);
        }
        tokens += len;
    }
    if start < lengths.len() {
        batches.push(start..lengths.len());
    }
    batches
}

/// Pieces of the XLM-R SentencePiece vocabulary, which the E5-family models share.
const XLMR_VOCAB_SIZE: usize = 250_002;

fn with_prompt(prompt: Option<&str>, text: &str) -> String {
    match prompt {
        Some(p) => format!("{p}{text}"),
        None => text.to_string(),
    }
}

fn convention(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `model_max_length` from tokenizer_config.json, which sentence-transformers uses when the
/// folder has no max_seq_length. Absent or absurd values (transformers writes 1e30 for "none")
/// mean no limit.
fn tokenizer_model_max_length(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let n = value.get("model_max_length")?.as_f64()?;
    (1.0..1e9).contains(&n).then_some(n as usize)
}

#[cfg(test)]
mod tests {
    use super::plan_batches;

    #[test]
    fn batches_close_at_the_token_budget_or_the_text_count() {
        // Budget 10: 6+4 fits, 6+4+3 does not; 3+3+3 fits, 3+3+3+2 does not.
        assert_eq!(
            plan_batches(&[6, 4, 3, 3, 3, 2], 32, 10),
            [0..2, 2..5, 5..6]
        );
        // batch_size 2 closes before the budget does.
        assert_eq!(plan_batches(&[3, 3, 3, 1, 1], 2, 100), [0..2, 2..4, 4..5]);
        // Exactly the budget still fits.
        assert_eq!(plan_batches(&[5, 5, 5], 8, 10), [0..2, 2..3]);
    }

    #[test]
    fn a_sequence_over_the_budget_runs_alone() {
        assert_eq!(plan_batches(&[50, 20, 2, 2], 32, 10), [0..1, 1..2, 2..4]);
        let alone = plan_batches(&[50], 32, 1);
        assert_eq!((alone.len(), alone[0].clone()), (1, 0..1));
    }

    #[test]
    fn every_sequence_is_in_exactly_one_batch() {
        assert!(plan_batches(&[], 4, 4).is_empty());
        let lengths: Vec<usize> = (0..100).map(|i| 1 + (i * 37) % 29).collect();
        for (batch_size, budget) in [(1, 1), (3, 20), (7, 64), (100, 10_000)] {
            let batches = plan_batches(&lengths, batch_size, budget);
            let mut next = 0;
            for b in &batches {
                assert_eq!(b.start, next);
                assert!(!b.is_empty() && b.len() <= batch_size);
                let tokens: usize = lengths[b.clone()].iter().sum();
                assert!(tokens <= budget || b.len() == 1, "{b:?}: {tokens} tokens");
                next = b.end;
            }
            assert_eq!(next, lengths.len());
        }
    }
}
