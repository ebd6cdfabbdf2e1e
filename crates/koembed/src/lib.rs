//! The pieces of the `koembed` command that are worth testing on their own: input reading,
//! output formats, retrieval evaluation, model reports.

pub mod eval;
pub mod input;
pub mod inspect;
pub mod npy;
pub mod output;
