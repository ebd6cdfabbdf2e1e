//! One post-LayerNorm transformer layer (BERT and XLM-R share it):
//! `h = LN(x + Attn(x))`, then `LN(h + FFN(h))`, FFN = dense -> exact GELU -> dense.

use koembed_tensor as ops;
use koembed_tensor::{
    matmul_packed_bias, matmul_packed_bias_residual, matmul_packed_bias_residual_from_pairs,
    matmul_packed_bias_to_pairs, matmul_quantized_bias, matmul_quantized_bias_residual, Bf16Pairs,
    Epilogue, GemmKernel, PackedMatrix, PanelFormat, QuantizedMatrix, Tensor, TensorView,
    TensorViewMut,
};

use crate::batch::PackedBatch;
use crate::config::EncoderConfig;
use crate::dtype::ComputeDtype;
use crate::encoder::WeightScope;
use crate::stages::{Laps, Stage};
use crate::weights::{F32Weight, WeightError, WeightStore};

/// An `nn.Linear`: the weight [out, in] (PyTorch layout) packed once at load into the GEMM
/// kernel's panel layout, in the encoder's [`ComputeDtype`], and the bias [out] (f32).
pub(crate) struct Linear {
    pub weight: LinearWeight,
    pub bias: Tensor,
}

/// A linear layer's packed weight in one [`ComputeDtype`].
pub(crate) enum LinearWeight {
    /// f32, f16 or bf16 panels of the float GEMM.
    Float(PackedMatrix),
    /// int8 panels, a scale per output channel.
    Int8(QuantizedMatrix),
}

impl LinearWeight {
    fn pack(w: TensorView<'_>, dtype: ComputeDtype) -> Self {
        let format = match dtype {
            ComputeDtype::F32 => PanelFormat::F32,
            ComputeDtype::F16 => PanelFormat::F16,
            ComputeDtype::Bf16 => PanelFormat::Bf16,
            ComputeDtype::Int8 => {
                return LinearWeight::Int8(
                    QuantizedMatrix::quantize_b(w).expect("a checked [out, in] weight quantizes"),
                )
            }
        };
        LinearWeight::Float(
            PackedMatrix::pack_b_as(w, GemmKernel::detect_for(format), format)
                .expect("a checked [out, in] weight packs"),
        )
    }

    /// Bytes held by the packed weight.
    pub fn memory_bytes(&self) -> usize {
        match self {
            LinearWeight::Float(p) => p.memory_bytes(),
            LinearWeight::Int8(q) => q.memory_bytes(),
        }
    }
}

impl Linear {
    pub fn new(
        store: &WeightStore,
        weight: &F32Weight,
        bias: &F32Weight,
        out_features: usize,
        in_features: usize,
        dtype: ComputeDtype,
    ) -> Self {
        Self::stacked(store, &[(weight, bias)], out_features, in_features, dtype)
    }

    /// Several linear layers over the same input as one: their weights stacked along the
    /// output axis (Q, K and V become one `[3H, H]` GEMM whose output rows are `[q | k | v]`).
    pub fn stacked(
        store: &WeightStore,
        parts: &[(&F32Weight, &F32Weight)],
        out_features_each: usize,
        in_features: usize,
        dtype: ComputeDtype,
    ) -> Self {
        let out_features = out_features_each * parts.len();
        let weight = match parts {
            [(w, _)] => LinearWeight::pack(
                TensorView::new(store.f32_data(w), &[out_features, in_features])
                    .expect("weight shape checked at load"),
                dtype,
            ),
            _ => {
                let mut stacked = Vec::with_capacity(out_features * in_features);
                for (w, _) in parts {
                    stacked.extend_from_slice(store.f32_data(w));
                }
                LinearWeight::pack(
                    TensorView::new(&stacked, &[out_features, in_features])
                        .expect("weight shapes checked at load"),
                    dtype,
                )
            }
        };
        let mut bias = Vec::with_capacity(out_features);
        for (_, b) in parts {
            bias.extend_from_slice(store.f32_data(b));
        }
        Linear {
            weight,
            bias: Tensor::from_vec(bias, &[out_features]).expect("bias shape checked at load"),
        }
    }

    /// out[M, out_features] = epilogue(x · Wᵀ + b), into a buffer of that shape.
    pub fn forward_into(&self, out: TensorViewMut<'_>, x: TensorView<'_>, epilogue: Epilogue) {
        match &self.weight {
            LinearWeight::Float(w) => matmul_packed_bias(out, x, w, self.bias.view(), epilogue),
            LinearWeight::Int8(w) => matmul_quantized_bias(out, x, w, self.bias.view(), epilogue),
        }
        .expect("shapes checked at load");
    }

    /// out[M, out_features] = x · Wᵀ + b + residual: the projection and its residual
    /// connection, into a buffer of that shape.
    pub fn forward_residual_into(
        &self,
        out: TensorViewMut<'_>,
        x: TensorView<'_>,
        residual: TensorView<'_>,
    ) {
        match &self.weight {
            LinearWeight::Float(w) => {
                matmul_packed_bias_residual(out, x, w, self.bias.view(), residual)
            }
            LinearWeight::Int8(w) => {
                matmul_quantized_bias_residual(out, x, w, self.bias.view(), residual)
            }
        }
        .expect("shapes checked at load");
    }

    /// Room for `rows` of this layer's inputs as bf16 pairs, when its kernel reads those.
    pub fn pairs_input(&self, rows: usize) -> Option<Bf16Pairs> {
        match &self.weight {
            LinearWeight::Float(w) => Bf16Pairs::for_input_of(w, rows),
            LinearWeight::Int8(_) => None,
        }
    }

    /// [`Self::forward_into`] with the output rounded to bf16 and stored as pairs, for the
    /// next layer to read without an f32 copy.
    pub fn forward_to_pairs(&self, out: &mut Bf16Pairs, x: TensorView<'_>, epilogue: Epilogue) {
        match &self.weight {
            LinearWeight::Float(w) => {
                matmul_packed_bias_to_pairs(out, x, w, self.bias.view(), epilogue)
            }
            LinearWeight::Int8(_) => unreachable!("pairs are made for bf16 layers only"),
        }
        .expect("shapes checked at load");
    }

    /// [`Self::forward_residual_into`] reading x as bf16 pairs made for this layer.
    pub fn forward_residual_from_pairs(
        &self,
        out: TensorViewMut<'_>,
        x: &Bf16Pairs,
        residual: TensorView<'_>,
    ) {
        match &self.weight {
            LinearWeight::Float(w) => {
                matmul_packed_bias_residual_from_pairs(out, x, w, self.bias.view(), residual)
            }
            LinearWeight::Int8(_) => unreachable!("pairs are made for bf16 layers only"),
        }
        .expect("shapes checked at load");
    }
}

/// Tokens of whole sequences that a layer runs at a time. Every step of a layer but attention
/// works row by row, and attention stays inside each sequence, so a layer can run on groups of
/// whole sequences, one after the other, with the same bits; its activations (Q/K/V, context,
/// attention output, FFN intermediate: 9 H floats per token when the FFN is 4 H wide) then
/// exist for one group, not the whole batch. KoE5 on 8,192 tokens (W2) needed 302 MB of them
/// at once, a group of 2,048 tokens needs 75 MB (e5-small: 28 MB); `embed`'s default budget
/// of 16,384 tokens per call needed 604 MB. A longer sequence is a group of its own. Groups of
/// 1,024 tokens made e5-small's W2 4-5% slower (in-process A/B: eight times as many parallel
/// steps, each half as long); 2,048 and 4,096 were within the noise of the whole batch.
const GROUP_TOKENS: usize = 2048;

/// Consecutive whole sequences of a batch, run through a layer together.
struct SequenceGroup {
    /// The group's rows in the batch.
    rows: std::ops::Range<usize>,
    /// Each sequence's rows, counted from the group's first row.
    sequences: Vec<std::ops::Range<usize>>,
}

/// The activations of one group of sequences, allocated once per forward pass (for the
/// largest group) and reused by every group and layer: fresh multi-megabyte buffers per
/// operation would cost a page fault per 4 KB each time.
pub(crate) struct LayerScratch {
    groups: Vec<SequenceGroup>,
    qkv: Tensor,
    context: Tensor,
    attended: Tensor,
    inner: Tensor,
    /// The FFN intermediate as bf16 pairs, when the FFN's output layer reads those (bf16 on
    /// AVX-512 BF16 or AMX): made by the first layer, then `inner` is not used.
    inner_pairs: Option<Bf16Pairs>,
    /// Rows of the largest group.
    rows: usize,
}

impl LayerScratch {
    pub fn new(batch: &PackedBatch, config: &EncoderConfig) -> Self {
        let mut groups: Vec<SequenceGroup> = Vec::new();
        for seq in batch.sequences() {
            match groups.last_mut() {
                Some(group) if group.rows.len() + seq.len() <= GROUP_TOKENS => {
                    let first = group.rows.start;
                    group.sequences.push(seq.start - first..seq.end - first);
                    group.rows.end = seq.end;
                }
                _ => groups.push(SequenceGroup {
                    sequences: std::iter::once(0..seq.len()).collect(),
                    rows: seq,
                }),
            }
        }
        let rows = groups.iter().map(|g| g.rows.len()).max().unwrap_or(0);
        let h = config.hidden_size;
        LayerScratch {
            groups,
            qkv: Tensor::zeros(&[rows, 3 * h]),
            context: Tensor::zeros(&[rows, h]),
            attended: Tensor::zeros(&[rows, h]),
            inner: Tensor::zeros(&[rows, config.intermediate_size]),
            inner_pairs: None,
            rows,
        }
    }
}

pub(crate) struct LayerNormParams {
    pub gamma: F32Weight,
    pub beta: F32Weight,
}

impl LayerNormParams {
    /// x = LN(x)
    pub fn apply(&self, x: TensorViewMut<'_>, store: &WeightStore, eps: f32) {
        let n = x.cols();
        let gamma = TensorView::new(store.f32_data(&self.gamma), &[n]).expect("checked at load");
        let beta = TensorView::new(store.f32_data(&self.beta), &[n]).expect("checked at load");
        ops::layernorm_inplace(x, gamma, beta, eps).expect("checked at load");
    }
}

pub struct EncoderLayer {
    /// Q, K and V stacked: one GEMM whose rows are `[q | k | v]`.
    qkv: Linear,
    attention_output: Linear,
    attention_norm: LayerNormParams,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNormParams,
}

impl EncoderLayer {
    pub(crate) fn load(
        scope: &WeightScope<'_>,
        name: &str,
        config: &EncoderConfig,
    ) -> Result<Self, WeightError> {
        let h = config.hidden_size;
        let f = config.intermediate_size;
        Ok(EncoderLayer {
            qkv: scope.linear_stacked(
                &[
                    &format!("{name}.attention.self.query"),
                    &format!("{name}.attention.self.key"),
                    &format!("{name}.attention.self.value"),
                ],
                h,
                h,
            )?,
            attention_output: scope.linear(&format!("{name}.attention.output.dense"), h, h)?,
            attention_norm: scope.layer_norm(&format!("{name}.attention.output.LayerNorm"), h)?,
            intermediate: scope.linear(&format!("{name}.intermediate.dense"), f, h)?,
            output: scope.linear(&format!("{name}.output.dense"), h, f)?,
            output_norm: scope.layer_norm(&format!("{name}.output.LayerNorm"), h)?,
        })
    }

    /// Bytes held by the layer's packed linear weights.
    pub(crate) fn packed_weight_bytes(&self) -> usize {
        [
            &self.qkv,
            &self.attention_output,
            &self.intermediate,
            &self.output,
        ]
        .iter()
        .map(|l| l.weight.memory_bytes())
        .sum()
    }

    /// The kernel of attention's two products: bf16 ones (on AMX) in a bf16 layer, as
    /// PyTorch runs a bf16 model; f32 in every other dtype (int8 quantizes the linear layers
    /// only).
    fn attention_kernel(&self) -> GemmKernel {
        match &self.qkv.weight {
            LinearWeight::Float(w) if w.format() == PanelFormat::Bf16 => w.kernel(),
            _ => GemmKernel::detect(),
        }
    }

    /// x[num_tokens, hidden] -> the layer's output, in place.
    pub(crate) fn forward(
        &self,
        x: &mut Tensor,
        scratch: &mut LayerScratch,
        store: &WeightStore,
        config: &EncoderConfig,
        laps: &mut Laps<'_>,
    ) {
        let LayerScratch {
            groups,
            qkv,
            context,
            attended,
            inner,
            inner_pairs,
            rows,
        } = scratch;
        let eps = config.layer_norm_eps;
        if inner_pairs.is_none() {
            *inner_pairs = self.output.pairs_input(*rows);
        }
        for group in groups.iter() {
            let g = group.rows.len();
            let mut x = x.view_mut().slice_rows(group.rows.clone());
            let mut qkv = qkv.view_mut().slice_rows(0..g);
            let mut context = context.view_mut().slice_rows(0..g);
            let mut attended = attended.view_mut().slice_rows(0..g);
            let mut inner = inner.view_mut().slice_rows(0..g);

            self.qkv
                .forward_into(qkv.reborrow(), x.view(), Epilogue::None);
            laps.lap(Stage::QkvProjection);
            // Attention never crosses sequences: each one attends over its own rows only.
            ops::attention_packed_qkv(
                context.reborrow(),
                qkv.view(),
                &group.sequences,
                config.num_heads,
                self.attention_kernel(),
            )
            .expect("shapes follow the config");
            laps.lap(Stage::Attention);
            self.attention_output.forward_residual_into(
                attended.reborrow(),
                context.view(),
                x.view(),
            );
            laps.lap(Stage::AttentionOutput);
            self.attention_norm.apply(attended.reborrow(), store, eps);
            laps.lap(Stage::AttentionNorm);

            // Bias and the erf GELU are applied as the GEMM stores its tiles. x has been
            // consumed (it was the residual of `attended`): the FFN's output goes there.
            if let Some(pairs) = inner_pairs.as_mut() {
                // bf16: the intermediate is stored as the bf16 that the next GEMM would round
                // it to anyway (the same bits, half the bytes, no conversion pass).
                self.intermediate
                    .forward_to_pairs(pairs, attended.view(), Epilogue::Gelu);
                laps.lap(Stage::FfnIn);
                self.output
                    .forward_residual_from_pairs(x.reborrow(), pairs, attended.view());
            } else {
                self.intermediate
                    .forward_into(inner.reborrow(), attended.view(), Epilogue::Gelu);
                laps.lap(Stage::FfnIn);
                self.output
                    .forward_residual_into(x.reborrow(), inner.view(), attended.view());
            }
            laps.lap(Stage::FfnOut);
            self.output_norm.apply(x, store, eps);
            laps.lap(Stage::OutputNorm);
        }
    }
}
