//! The encoder forward pass: embeddings, then post-LayerNorm transformer layers, over a packed
//! batch. Every weight is checked for presence, dtype and shape in [`Encoder::load`], before the
//! first forward.

use std::path::Path;

use koembed_tensor::Tensor;

use crate::batch::PackedBatch;
use crate::config::EncoderConfig;
use crate::dtype::ComputeDtype;
use crate::layer::{EncoderLayer, LayerNormParams, LayerScratch, Linear};
use crate::stages::{Laps, Stage, StageTimes};
use crate::weights::{legacy_alias, scoped, F32Weight, MappedTable, WeightError, WeightStore};

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Batch(#[from] crate::batch::BatchError),
}

/// Looks weights up under the checkpoint's prefix, with the legacy `gamma`/`beta` names as a
/// fallback, and checks each one's shape.
pub(crate) struct WeightScope<'a> {
    pub store: &'a WeightStore,
    pub prefix: String,
    /// What the linear layers are packed in.
    pub dtype: ComputeDtype,
}

impl WeightScope<'_> {
    pub fn load(&self, name: &str, shape: &[usize]) -> Result<F32Weight, WeightError> {
        self.store.load_f32(&self.resolve(name), shape)
    }

    /// The stored name of `name`: with the prefix, or its legacy alias when only that exists.
    fn resolve(&self, name: &str) -> String {
        let full = scoped(&self.prefix, name);
        if !self.store.contains(&full) {
            if let Some(alias) = legacy_alias(&full).filter(|a| self.store.contains(a)) {
                return alias;
            }
        }
        full
    }

    pub fn table(&self, name: &str, shape: [usize; 2]) -> Result<MappedTable, WeightError> {
        self.store.load_table(&self.resolve(name), shape)
    }

    /// Checks an `nn.Linear`'s weight and bias, and packs the weight for the GEMM kernel.
    pub fn linear(
        &self,
        name: &str,
        out_features: usize,
        in_features: usize,
    ) -> Result<Linear, WeightError> {
        let weight = self.load(&format!("{name}.weight"), &[out_features, in_features])?;
        let bias = self.load(&format!("{name}.bias"), &[out_features])?;
        Ok(Linear::new(
            self.store,
            &weight,
            &bias,
            out_features,
            in_features,
            self.dtype,
        ))
    }

    /// Checks several linear layers over the same input and packs them as one (see
    /// [`Linear::stacked`]).
    pub fn linear_stacked(
        &self,
        names: &[&str],
        out_features_each: usize,
        in_features: usize,
    ) -> Result<Linear, WeightError> {
        let mut parts = Vec::with_capacity(names.len());
        for name in names {
            let weight = self.load(&format!("{name}.weight"), &[out_features_each, in_features])?;
            let bias = self.load(&format!("{name}.bias"), &[out_features_each])?;
            parts.push((weight, bias));
        }
        let refs: Vec<_> = parts.iter().map(|(w, b)| (w, b)).collect();
        Ok(Linear::stacked(
            self.store,
            &refs,
            out_features_each,
            in_features,
            self.dtype,
        ))
    }

    pub fn layer_norm(&self, name: &str, size: usize) -> Result<LayerNormParams, WeightError> {
        Ok(LayerNormParams {
            gamma: self.load(&format!("{name}.weight"), &[size])?,
            beta: self.load(&format!("{name}.bias"), &[size])?,
        })
    }
}

/// The embedding tables and their LayerNorm.
struct Embeddings {
    /// Left in the file in its own dtype: a batch reads only its tokens' rows.
    word: MappedTable,
    position: F32Weight,
    token_type: F32Weight,
    layer_norm: LayerNormParams,
}

/// A loaded BERT / XLM-R encoder: the config, the mapped checkpoint and every layer's weights.
pub struct Encoder {
    config: EncoderConfig,
    dtype: ComputeDtype,
    store: WeightStore,
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// Loads `config.json` and the safetensors checkpoint of a Hugging Face model folder.
    pub fn load(dir: &Path) -> Result<Self, EncoderError> {
        Self::load_with_dtype(dir, ComputeDtype::F32)
    }

    /// [`Self::load`] with the linear layers packed in `dtype`.
    pub fn load_with_dtype(dir: &Path, dtype: ComputeDtype) -> Result<Self, EncoderError> {
        let config = EncoderConfig::from_file(&dir.join("config.json"))?;
        let store = WeightStore::open_dir(dir)?;
        Ok(Self::from_parts_with_dtype(config, store, dtype)?)
    }

    /// Checks and resolves every weight the forward pass will read (f32 linear layers).
    pub fn from_parts(config: EncoderConfig, store: WeightStore) -> Result<Self, WeightError> {
        Self::from_parts_with_dtype(config, store, ComputeDtype::F32)
    }

    /// [`Self::from_parts`] with the linear layers packed in `dtype`.
    pub fn from_parts_with_dtype(
        config: EncoderConfig,
        store: WeightStore,
        dtype: ComputeDtype,
    ) -> Result<Self, WeightError> {
        let prefix = resolve_prefix(&config, &store);
        let scope = WeightScope {
            store: &store,
            prefix,
            dtype,
        };
        let h = config.hidden_size;
        let embeddings = Embeddings {
            word: scope.table("embeddings.word_embeddings.weight", [config.vocab_size, h])?,
            position: scope.load(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type: scope.load(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            layer_norm: scope.layer_norm("embeddings.LayerNorm", h)?,
        };
        let layers = (0..config.num_layers)
            .map(|i| {
                let layer = EncoderLayer::load(&scope, &format!("encoder.layer.{i}"), &config);
                // The layer holds packed copies now; its mapped originals need not stay
                // resident. Per layer, so that load never holds the whole file beside the
                // packed weights (the peak RSS of a half or int8 model would be the file's).
                store.release_resident_pages();
                layer
            })
            .collect::<Result<Vec<_>, _>>()?;
        drop(scope);
        Ok(Encoder {
            config,
            dtype,
            store,
            embeddings,
            layers,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// What the linear layers compute in.
    pub fn dtype(&self) -> ComputeDtype {
        self.dtype
    }

    /// Bytes held by the packed linear-layer weights (the bulk of the encoder's own memory).
    pub fn packed_weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(EncoderLayer::packed_weight_bytes)
            .sum()
    }

    pub fn weights(&self) -> &WeightStore {
        &self.store
    }

    /// The last hidden state, [num_tokens, hidden].
    pub fn forward(&self, batch: &PackedBatch) -> Tensor {
        on_worker(|| self.forward_here(batch, Laps::new(None)))
    }

    /// [`forward`](Self::forward), adding the wall time of each [`Stage`] to `times` (the same
    /// bits: only clock reads are added, 8 per layer and group of sequences).
    pub fn forward_timed(&self, batch: &PackedBatch, times: &mut StageTimes) -> Tensor {
        on_worker(|| self.forward_here(batch, Laps::new(Some(times))))
    }

    fn forward_here(&self, batch: &PackedBatch, mut laps: Laps<'_>) -> Tensor {
        let mut x = self.embed(batch);
        let mut scratch = LayerScratch::new(batch, &self.config);
        laps.lap(Stage::Embeddings);
        for layer in &self.layers {
            layer.forward(&mut x, &mut scratch, &self.store, &self.config, &mut laps);
        }
        x
    }

    /// Every hidden state: index 0 after the embeddings, index i after layer i (as
    /// transformers' `output_hidden_states`), each [num_tokens, hidden].
    pub fn forward_all_layers(&self, batch: &PackedBatch) -> Vec<Tensor> {
        on_worker(|| self.forward_all_layers_here(batch))
    }

    fn forward_all_layers_here(&self, batch: &PackedBatch) -> Vec<Tensor> {
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        let mut x = self.embed(batch);
        states.push(x.clone());
        let mut scratch = LayerScratch::new(batch, &self.config);
        let mut untimed = Laps::new(None);
        for layer in &self.layers {
            layer.forward(
                &mut x,
                &mut scratch,
                &self.store,
                &self.config,
                &mut untimed,
            );
            states.push(x.clone());
        }
        states
    }

    /// word + position + token type 0, then LayerNorm.
    fn embed(&self, batch: &PackedBatch) -> Tensor {
        let h = self.config.hidden_size;
        let position = self.store.f32_data(&self.embeddings.position);
        // The XLM-R tokenizer gives no token_type_ids: every token uses row 0.
        let token_type = &self.store.f32_data(&self.embeddings.token_type)[..h];
        let mut x = Tensor::zeros(&[batch.num_tokens(), h]);
        let ids = batch.ids.iter().map(|&id| id as usize);
        self.store
            .gather_rows(&self.embeddings.word, ids, x.as_mut_slice())
            .expect("token ids are checked against the vocabulary when the batch is built");
        for (t, out) in x.as_mut_slice().chunks_exact_mut(h).enumerate() {
            let pos = batch.positions[t] as usize;
            let p = &position[pos * h..(pos + 1) * h];
            for i in 0..h {
                out[i] = out[i] + p[i] + token_type[i];
            }
        }
        self.embeddings
            .layer_norm
            .apply(x.view_mut(), &self.store, self.config.layer_norm_eps);
        x
    }
}

/// Runs `f` on one of rayon's worker threads. A forward pass has about seven parallel
/// operations per layer; started from a thread outside the pool, each one would hand its work
/// to the pool and put the caller to sleep until it is done (two thread wake-ups per operation,
/// a large part of a 16-token query's time). From a worker, the caller takes part in the work.
fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

/// The checkpoint's weight-name prefix: the config's (`bert.` / `roberta.` for classification
/// heads) when the checkpoint uses it, else none (a base model saved without its head).
fn resolve_prefix(config: &EncoderConfig, store: &WeightStore) -> String {
    let probe = "embeddings.word_embeddings.weight";
    for prefix in [config.weight_prefix.as_str(), "", "bert.", "roberta."] {
        if store.contains(&scoped(prefix, probe)) {
            return prefix.to_string();
        }
    }
    config.weight_prefix.clone()
}
