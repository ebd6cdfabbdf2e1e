//! The sentence-transformers pipeline and koembed's library API:
//! text -> prompt -> token ids -> encoder -> pooling -> Dense -> normalize -> Matryoshka cut.

pub mod embedder;
pub mod error;
pub mod model_dir;
pub mod pool;
pub mod tokenize;
pub mod unigram;

pub use embedder::{EmbedOptions, EmbedOutput, Embedder, Prompt, DEFAULT_MAX_BATCH_TOKENS};
pub use error::EmbedError;
pub use koembed_xlmr::ComputeDtype;
pub use model_dir::ModelDir;
pub use pool::{PoolingConfig, PoolingMode};
pub use tokenize::{TextTokenizer, TokenizedText};
