//! BERT and XLM-RoBERTa encoders over memory-mapped safetensors.
//!
//! This crate knows one encoder forward pass and nothing of sentence-transformers: config.json
//! becomes an [`EncoderConfig`], a checkpoint becomes a [`WeightStore`].

pub mod config;
pub mod weights;

pub use config::{ConfigError, EncoderConfig, Family};
pub use weights::{F32Weight, WeightDtype, WeightError, WeightStore};
