//! The `koembed` command, one module per subcommand (`embed`, `search`, `eval`, `tokenize`,
//! `inspect`, `bench`, `serve`), plus what they share: reading inputs, loading the model, running the
//! embedder with progress, writing outputs, and the search cache.

pub mod bench;
pub mod cache;
pub mod cli;
pub mod embed;
pub mod eval;
pub mod input;
pub mod inspect;
pub mod model;
pub mod npy;
pub mod output;
pub mod progress;
pub mod search;
pub mod serve;
pub mod threads;
pub mod tokenize;
pub mod workload;
