//! One post-LayerNorm transformer layer (BERT and XLM-R share it):
//! `h = LN(x + Attn(x))`, then `LN(h + FFN(h))`, FFN = dense -> exact GELU -> dense.

use koembed_tensor as ops;
use koembed_tensor::{
    matmul_packed_bias, matmul_packed_bias_residual, matmul_quantized_bias,
    matmul_quantized_bias_residual, Epilogue, GemmKernel, PackedMatrix, PanelFormat,
    QuantizedMatrix, Tensor, TensorView,
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
            PackedMatrix::pack_b_as(w, GemmKernel::detect(), format)
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
    pub fn forward_into(&self, out: &mut Tensor, x: &Tensor, epilogue: Epilogue) {
        match &self.weight {
            LinearWeight::Float(w) => {
                matmul_packed_bias(out.view_mut(), x.view(), w, self.bias.view(), epilogue)
            }
            LinearWeight::Int8(w) => {
                matmul_quantized_bias(out.view_mut(), x.view(), w, self.bias.view(), epilogue)
            }
        }
        .expect("shapes checked at load");
    }

    /// out[M, out_features] = x · Wᵀ + b + residual: the projection and its residual
    /// connection, into a buffer of that shape.
    pub fn forward_residual_into(&self, out: &mut Tensor, x: &Tensor, residual: &Tensor) {
        match &self.weight {
            LinearWeight::Float(w) => matmul_packed_bias_residual(
                out.view_mut(),
                x.view(),
                w,
                self.bias.view(),
                residual.view(),
            ),
            LinearWeight::Int8(w) => matmul_quantized_bias_residual(
                out.view_mut(),
                x.view(),
                w,
                self.bias.view(),
                residual.view(),
            ),
        }
        .expect("shapes checked at load");
    }
}

/// The activations of one layer, allocated once per forward pass and reused by every layer:
/// fresh multi-megabyte buffers per operation would cost a page fault per 4 KB each time.
pub(crate) struct LayerScratch {
    /// The batch's sequence row ranges (attention stays inside each).
    sequences: Vec<std::ops::Range<usize>>,
    qkv: Tensor,
    context: Tensor,
    attended: Tensor,
    inner: Tensor,
}

impl LayerScratch {
    pub fn new(batch: &PackedBatch, config: &EncoderConfig) -> Self {
        let (h, tokens) = (config.hidden_size, batch.num_tokens());
        LayerScratch {
            sequences: batch.sequences(),
            qkv: Tensor::zeros(&[tokens, 3 * h]),
            context: Tensor::zeros(&[tokens, h]),
            attended: Tensor::zeros(&[tokens, h]),
            inner: Tensor::zeros(&[tokens, config.intermediate_size]),
        }
    }
}

pub(crate) struct LayerNormParams {
    pub gamma: F32Weight,
    pub beta: F32Weight,
}

impl LayerNormParams {
    /// x = LN(x)
    pub fn apply(&self, x: &mut Tensor, store: &WeightStore, eps: f32) {
        let n = x.cols();
        let gamma = TensorView::new(store.f32_data(&self.gamma), &[n]).expect("checked at load");
        let beta = TensorView::new(store.f32_data(&self.beta), &[n]).expect("checked at load");
        ops::layernorm_inplace(x.view_mut(), gamma, beta, eps).expect("checked at load");
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
            sequences,
            qkv,
            context,
            attended,
            inner,
        } = scratch;
        self.qkv.forward_into(qkv, x, Epilogue::None);
        laps.lap(Stage::QkvProjection);
        // Attention never crosses sequences: each one attends over its own rows only.
        ops::attention_packed_qkv(
            context.view_mut(),
            qkv.view(),
            sequences,
            config.num_heads,
            GemmKernel::detect(),
        )
        .expect("shapes follow the config");
        laps.lap(Stage::Attention);
        self.attention_output
            .forward_residual_into(attended, context, x);
        laps.lap(Stage::AttentionOutput);
        self.attention_norm
            .apply(attended, store, config.layer_norm_eps);
        laps.lap(Stage::AttentionNorm);

        // Bias and the erf GELU are applied as the GEMM stores its tiles.
        self.intermediate
            .forward_into(inner, attended, Epilogue::Gelu);
        laps.lap(Stage::FfnIn);
        // x has been consumed (it was the residual of `attended`): the output goes there.
        self.output.forward_residual_into(x, inner, attended);
        laps.lap(Stage::FfnOut);
        self.output_norm.apply(x, store, config.layer_norm_eps);
        laps.lap(Stage::OutputNorm);
    }
}
