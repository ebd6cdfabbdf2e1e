//! koembed's numbers: f32 tensors and the kernels of a BERT / XLM-RoBERTa encoder layer.
//!
//! No model and no tokenizer here. Data flows through these kernels in the order a layer runs
//! them:
//!
//! | step | function | shapes |
//! |---|---|---|
//! | Q, K, V, output and FFN projections | [`matmul_packed_bias`] with a [`PackedMatrix`] built at load (or [`matmul_bias_nt`]) | `out[M,N] = epilogue(x[M,K] · w[N,K]ᵀ + b[N])` |
//! | attention over one sequence | [`attention_single_sequence`] (or `_qkv`) | `out[T,H]` from q, k, v `[T,H]` |
//! | residual + post-LN | [`add_layernorm_inplace`] | `x[M,N] = LN(x + residual)` |
//! | FFN activation | fused: [`Epilogue::Gelu`]; alone: [`gelu_erf_f32_inplace`] (or [`gelu_erf_inplace`], f64) | erf GELU, elementwise |
//!
//! plus int8 linear layers ([`matmul_quantized_bias`] with a [`QuantizedMatrix`]: opt-in,
//! approximate, a quarter of the weight memory), [`matmul_nt`] / [`matmul_nn`] (no bias),
//! [`softmax_rows_inplace`], [`layernorm_inplace`], [`add_inplace`], the triple-loop twins in
//! [`naive`], half-precision conversion in [`convert`] and comparison helpers for tests in
//! [`testing`].
//!
//! # Conventions
//! - Tensors are dense, row-major f32 ([`Tensor`] owns, [`TensorView`] / [`TensorViewMut`]
//!   borrow, e.g. from a memory-mapped safetensors file).
//! - Ops take the output first, then inputs (llm.c style), with the shapes in a comment.
//! - Every op checks all shapes before writing anything and returns [`TensorError`] naming the
//!   operation and the shapes. Outputs are written, never read (tests pass NaN-filled outputs).
//! - Results do not depend on the thread count or on which other rows share a call.
//!
//! Numerics (accumulation precision, erf error bound, special values) are documented on each op.
//!
//! SIMD kernels (GEMM micro-kernels, vector GELU) are chosen at run time
//! (`is_x86_feature_detected!`): AVX-512F, AVX2 + FMA, or portable code. A kernel type can only be
//! constructed on a CPU that supports it; [`GemmKernel`] and [`GeluKernel`] pin one for tests and
//! benchmarks. `unsafe` code lives in the micro-kernels (`gemm::kernels`), the packed and int8
//! GEMM drivers ([`gemm::packed`], [`gemm::int8`]), the vector GELU ([`ops::gelu_f32`]) and the call into
//! `matrixmultiply::sgemm` in [`gemm`], each block with its SAFETY argument.

pub mod aligned;
pub mod convert;
pub mod error;
pub mod gemm;
pub mod ops;
pub mod tensor;
pub mod testing;

/// The triple-loop reference twins of the matmuls (`naive::matmul_bias_nt`, ...).
pub use gemm::naive;

pub use error::{Result, TensorError};
pub use gemm::int8::{
    matmul_quantized_bias, matmul_quantized_bias_residual, Int8Kernel, QuantizedMatrix,
};
pub use gemm::packed::{
    matmul_packed_bias, matmul_packed_bias_residual, matmul_packed_bias_residual_from_pairs,
    matmul_packed_bias_to_pairs, Bf16Pairs, Epilogue, GemmKernel, PackedMatrix, PanelFormat,
};
pub use gemm::{matmul_bias_nt, matmul_nn, matmul_nt};
pub use half::{bf16, f16};
pub use ops::attention::{
    attention_packed_qkv, attention_single_sequence, attention_single_sequence_qkv,
};
pub use ops::gelu::{erf, gelu_erf, gelu_erf_inplace};
pub use ops::gelu_f32::{
    gelu_erf_f32, gelu_erf_f32_inplace, gelu_erf_f32_inplace_with, GeluKernel,
};
pub use ops::layernorm::{add_inplace, add_layernorm_inplace, layernorm_inplace};
pub use ops::softmax::softmax_rows_inplace;
pub use tensor::{Tensor, TensorView, TensorViewMut, MAX_RANK};

/// Whether the AVX-512 kernels may run: the CPU has AVX-512F and FMA, and `KOEMBED_AVX512` is
/// not `0`.
///
/// On by default since they ran on hardware (an AVX-512 Xeon, 2026-11-27: every tensor test
/// passes pinned to them, and they are faster than AVX2 there). `KOEMBED_AVX512=0` turns them
/// off, for an A/B against the AVX2 kernels or a CPU that clocks down under AVX-512.
pub fn avx512_enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Read once: kernels are looked up per GEMM call, and getenv takes a lock.
        static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ENABLED.get_or_init(|| {
            std::env::var_os("KOEMBED_AVX512").is_none_or(|v| v != "0")
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
