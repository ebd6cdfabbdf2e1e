//! koembed's numbers: f32 tensors and the kernels of a BERT / XLM-RoBERTa encoder layer.
//!
//! No model and no tokenizer here. Data flows through these kernels in the order a layer runs
//! them:
//!
//! | step | function | shapes |
//! |---|---|---|
//! | Q, K, V, output and FFN projections | [`matmul_bias_nt`] | `out[M,N] = x[M,K] · w[N,K]ᵀ + b[N]` |
//! | attention over one sequence | [`attention_single_sequence`] (or `_qkv`) | `out[T,H]` from q, k, v `[T,H]` |
//! | residual + post-LN | [`add_layernorm_inplace`] | `x[M,N] = LN(x + residual)` |
//! | FFN activation | [`gelu_erf_inplace`] | exact erf GELU, elementwise |
//!
//! plus [`matmul_nt`] / [`matmul_nn`] (no bias), [`softmax_rows_inplace`], [`layernorm_inplace`],
//! [`add_inplace`], the triple-loop twins in [`naive`], half-precision conversion in [`convert`]
//! and comparison helpers for tests in [`testing`].
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
//! The only `unsafe` code is the call into `matrixmultiply::sgemm` in [`gemm`].

pub mod convert;
pub mod error;
pub mod gemm;
pub mod ops;
pub mod tensor;
pub mod testing;

/// The triple-loop reference twins of the matmuls (`naive::matmul_bias_nt`, ...).
pub use gemm::naive;

pub use error::{Result, TensorError};
pub use gemm::packed::{matmul_packed_bias, Epilogue, GemmKernel, PackedMatrix};
pub use gemm::{matmul_bias_nt, matmul_nn, matmul_nt};
pub use half::{bf16, f16};
pub use ops::attention::{attention_single_sequence, attention_single_sequence_qkv};
pub use ops::gelu::{erf, gelu_erf, gelu_erf_inplace};
pub use ops::gelu_f32::{gelu_erf_f32, gelu_erf_f32_inplace, gelu_erf_f32_inplace_with, GeluKernel};
pub use ops::layernorm::{add_inplace, add_layernorm_inplace, layernorm_inplace};
pub use ops::softmax::softmax_rows_inplace;
pub use tensor::{Tensor, TensorView, TensorViewMut, MAX_RANK};
