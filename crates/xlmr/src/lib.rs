//! BERT and XLM-RoBERTa encoders over memory-mapped safetensors.
//!
//! This crate knows one encoder forward pass and nothing of sentence-transformers:
//! config.json becomes an [`EncoderConfig`], a checkpoint a [`WeightStore`], token sequences a
//! [`PackedBatch`], and [`Encoder::forward`] turns the batch into hidden states.

pub mod batch;
pub mod config;
pub mod dtype;
pub mod encoder;
pub mod layer;
pub mod stages;
pub mod weights;

pub use batch::{BatchError, PackedBatch};
pub use config::{ConfigError, EncoderConfig, Family};
pub use dtype::ComputeDtype;
pub use encoder::{Encoder, EncoderError};
pub use layer::EncoderLayer;
pub use stages::{Stage, StageTimes};
pub use weights::{F32Weight, MappedTable, WeightDtype, WeightError, WeightStore};
