//! One post-LayerNorm transformer layer (BERT and XLM-R share it):
//! `h = LN(x + Attn(x))`, then `LN(h + FFN(h))`, FFN = dense -> exact GELU -> dense.

use koembed_tensor as ops;
use koembed_tensor::{matmul_packed_bias, Epilogue, PackedMatrix, Tensor, TensorView};

use crate::batch::PackedBatch;
use crate::config::EncoderConfig;
use crate::encoder::WeightScope;
use crate::weights::{F32Weight, WeightError, WeightStore};

/// An `nn.Linear`: the weight [out, in] (PyTorch layout) packed once at load into the GEMM
/// kernel's panel layout, and the bias [out].
pub(crate) struct Linear {
    pub weight: PackedMatrix,
    pub bias: Tensor,
    pub out_features: usize,
}

impl Linear {
    pub fn new(
        store: &WeightStore,
        weight: &F32Weight,
        bias: &F32Weight,
        out_features: usize,
        in_features: usize,
    ) -> Self {
        let w = TensorView::new(store.f32_data(weight), &[out_features, in_features])
            .expect("weight shape checked at load");
        Linear {
            weight: PackedMatrix::pack_b(w).expect("a checked [out, in] weight packs"),
            bias: Tensor::from_vec(store.f32_data(bias).to_vec(), &[out_features])
                .expect("bias shape checked at load"),
            out_features,
        }
    }

    /// out[M, out_features] = epilogue(x[M, in_features] · Wᵀ + b)
    pub fn forward(&self, x: &Tensor, epilogue: Epilogue) -> Tensor {
        let mut out = Tensor::zeros(&[x.rows(), self.out_features]);
        matmul_packed_bias(
            out.view_mut(),
            x.view(),
            &self.weight,
            self.bias.view(),
            epilogue,
        )
        .expect("shapes checked at load");
        out
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

    /// x = LN(x + residual)
    pub fn apply_with_residual(
        &self,
        x: &mut Tensor,
        residual: &Tensor,
        store: &WeightStore,
        eps: f32,
    ) {
        let n = x.cols();
        let gamma = TensorView::new(store.f32_data(&self.gamma), &[n]).expect("checked at load");
        let beta = TensorView::new(store.f32_data(&self.beta), &[n]).expect("checked at load");
        ops::add_layernorm_inplace(x.view_mut(), residual.view(), gamma, beta, eps)
            .expect("checked at load");
    }
}

pub struct EncoderLayer {
    query: Linear,
    key: Linear,
    value: Linear,
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
            query: scope.linear(&format!("{name}.attention.self.query"), h, h)?,
            key: scope.linear(&format!("{name}.attention.self.key"), h, h)?,
            value: scope.linear(&format!("{name}.attention.self.value"), h, h)?,
            attention_output: scope.linear(&format!("{name}.attention.output.dense"), h, h)?,
            attention_norm: scope.layer_norm(&format!("{name}.attention.output.LayerNorm"), h)?,
            intermediate: scope.linear(&format!("{name}.intermediate.dense"), f, h)?,
            output: scope.linear(&format!("{name}.output.dense"), h, f)?,
            output_norm: scope.layer_norm(&format!("{name}.output.LayerNorm"), h)?,
        })
    }

    /// x[num_tokens, hidden] -> the layer's output, in place.
    pub(crate) fn forward(
        &self,
        x: &mut Tensor,
        batch: &PackedBatch,
        store: &WeightStore,
        config: &EncoderConfig,
    ) {
        let h = config.hidden_size;
        let q = self.query.forward(x, Epilogue::None);
        let k = self.key.forward(x, Epilogue::None);
        let v = self.value.forward(x, Epilogue::None);
        // Attention never crosses sequences: each one attends over its own rows only.
        let mut context = Tensor::zeros(&[batch.num_tokens(), h]);
        for s in 0..batch.num_sequences() {
            let rows = batch.sequence(s);
            ops::attention_single_sequence(
                context.view_mut().slice_rows(rows.clone()),
                q.view().slice_rows(rows.clone()),
                k.view().slice_rows(rows.clone()),
                v.view().slice_rows(rows),
                config.num_heads,
            )
            .expect("shapes follow the config");
        }
        let mut attended = self.attention_output.forward(&context, Epilogue::None);
        self.attention_norm
            .apply_with_residual(&mut attended, x, store, config.layer_norm_eps);

        // Bias and the erf GELU are applied as the GEMM stores its tiles.
        let inner = self.intermediate.forward(&attended, Epilogue::Gelu);
        let mut out = self.output.forward(&inner, Epilogue::None);
        self.output_norm
            .apply_with_residual(&mut out, &attended, store, config.layer_norm_eps);
        *x = out;
    }
}
