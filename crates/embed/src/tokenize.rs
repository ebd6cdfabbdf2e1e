//! Text -> token ids, as sentence-transformers' Transformer module tokenizes: Python's
//! `str.strip()`, optional lower-casing, the folder's own tokenizer.json (run by the `tokenizers`
//! crate, as transformers 4.x runs it), truncation to `max_seq_length` with the specials kept.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::{
    DecoderWrapper, Encoding, Model, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    Tokenizer, TokenizerImpl, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::EmbedError;
use crate::unigram::CompactUnigram;

/// One tokenized text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    pub ids: Vec<u32>,
    /// The text had more tokens than `max_seq_length` and was cut.
    pub truncated: bool,
}

/// The crate's pipeline around koembed's compact Unigram model (see `unigram.rs`).
type CompactUnigramTokenizer = TokenizerImpl<
    CompactUnigram,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Which model runs inside the crate's pipeline.
enum Engine {
    /// SentencePiece Unigram (XLM-R and its family): the crate's `Unigram` would hold ~290 MB
    /// for XLM-R's vocabulary, `CompactUnigram` gives the same ids in ~8 MB.
    CompactUnigram(Box<CompactUnigramTokenizer>),
    /// Every other model type (WordPiece, BPE, ...), as the crate loads it.
    Crate(Box<Tokenizer>),
}

/// Just enough of tokenizer.json to choose the engine.
#[derive(Deserialize)]
struct ModelTypeProbe {
    model: ModelType,
}

#[derive(Deserialize)]
struct ModelType {
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub struct TextTokenizer {
    engine: Engine,
    path: PathBuf,
    max_seq_length: usize,
    do_lower_case: bool,
}

/// Python's `str.strip()`: `char::is_whitespace` plus the four ASCII separators U+001C..U+001F
/// that Python also counts as whitespace.
pub fn python_strip(text: &str) -> &str {
    let is_space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    text.trim_matches(is_space)
}

impl TextTokenizer {
    pub fn load(
        path: &Path,
        max_seq_length: usize,
        do_lower_case: bool,
    ) -> Result<Self, EmbedError> {
        if !path.is_file() {
            return Err(EmbedError::Tokenizer {
                path: path.to_path_buf(),
                reason: "file not found (koembed needs a tokenizer.json)".into(),
            });
        }
        let tok_err = |reason: String| EmbedError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        let json = std::fs::read_to_string(path).map_err(|e| tok_err(e.to_string()))?;
        // A tokenizer.json without a tagged model (legacy) or that does not parse goes to the
        // crate, which then says what is wrong with it.
        let is_unigram = serde_json::from_str::<ModelTypeProbe>(&json)
            .is_ok_and(|probe| probe.model.kind.as_deref() == Some("Unigram"));
        // transformers calls the fast tokenizer with truncation="longest_first" and
        // max_length=max_seq_length: the sequence is cut so that it fits *with* its specials.
        let truncation = TruncationParams {
            max_length: max_seq_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        };
        let truncation_err =
            |e: tokenizers::Error| tok_err(format!("max_seq_length {max_seq_length}: {e}"));
        let engine = if is_unigram {
            // The crate's own deserializer (added tokens, normalizer, ...) with our model.
            let mut tokenizer: CompactUnigramTokenizer =
                serde_json::from_str(&json).map_err(|e| tok_err(e.to_string()))?;
            drop(json);
            tokenizer
                .with_truncation(Some(truncation))
                .map_err(truncation_err)?;
            tokenizer.with_padding(None);
            Engine::CompactUnigram(Box::new(tokenizer))
        } else {
            let mut tokenizer: Tokenizer = json
                .parse()
                .map_err(|e: tokenizers::Error| tok_err(e.to_string()))?;
            drop(json);
            tokenizer
                .with_truncation(Some(truncation))
                .map_err(truncation_err)?;
            tokenizer.with_padding(None);
            Engine::Crate(Box::new(tokenizer))
        };
        Ok(Self {
            engine,
            path: path.to_path_buf(),
            max_seq_length,
            do_lower_case,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Model pieces and added tokens, each distinct string once (the crate's
    /// `get_vocab_size(true)`).
    pub fn vocab_size(&self) -> usize {
        match &self.engine {
            // Counted without building the crate's 250k-entry `HashMap<String, u32>`.
            Engine::CompactUnigram(tokenizer) => {
                let model = tokenizer.get_model();
                let added_outside_model = tokenizer
                    .get_added_vocabulary()
                    .get_vocab()
                    .keys()
                    .filter(|token| model.token_to_id(token).is_none())
                    .count();
                model.distinct_pieces() + added_outside_model
            }
            Engine::Crate(tokenizer) => tokenizer.get_vocab_size(true),
        }
    }

    fn encode_with_specials(&self, text: &str) -> tokenizers::Result<Encoding> {
        match &self.engine {
            Engine::CompactUnigram(tokenizer) => tokenizer.encode(text, true),
            Engine::Crate(tokenizer) => tokenizer.encode(text, true),
        }
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.engine {
            Engine::CompactUnigram(tokenizer) => tokenizer.token_to_id(token),
            Engine::Crate(tokenizer) => tokenizer.token_to_id(token),
        }
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        match &self.engine {
            Engine::CompactUnigram(tokenizer) => tokenizer.id_to_token(id),
            Engine::Crate(tokenizer) => tokenizer.id_to_token(id),
        }
    }

    /// Whether the compact Unigram model runs this tokenizer (tests and reports).
    pub fn uses_compact_unigram(&self) -> bool {
        matches!(self.engine, Engine::CompactUnigram(_))
    }

    /// Tokenizes `prompt + text` (the prompt is prepended as a string, as sentence-transformers
    /// does). `index` only labels errors.
    pub fn encode(&self, text: &str, index: usize) -> Result<TokenizedText, EmbedError> {
        let text = python_strip(text);
        let lowered;
        let text = if self.do_lower_case {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let encoding = self
            .encode_with_specials(text)
            .map_err(|e| EmbedError::Tokenize {
                index,
                reason: e.to_string(),
            })?;
        Ok(TokenizedText {
            ids: encoding.get_ids().to_vec(),
            truncated: !encoding.get_overflowing().is_empty(),
        })
    }

    /// The number of leading tokens sentence-transformers masks out of pooling when
    /// `include_prompt` is false: the prompt's own token count without its final `</s>`.
    pub fn prompt_length(&self, prompt: &str) -> Result<usize, EmbedError> {
        let tokens = self.encode(prompt, 0)?;
        Ok(tokens.ids.len().saturating_sub(1))
    }

    /// Whether the tokenizer knows `token` (a vocabulary piece or an added token).
    pub fn has_token(&self, token: &str) -> bool {
        self.token_to_id(token).is_some()
    }

    /// Token pieces of ids, for `tokenize` reports.
    pub fn pieces(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.id_to_token(id).unwrap_or_else(|| format!("<id {id}>")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_matches_python() {
        assert_eq!(python_strip("  a b \t\n"), "a b");
        assert_eq!(python_strip("\u{3000}한국어\u{a0}"), "한국어");
        assert_eq!(python_strip("\u{1c}x\u{1f}"), "x");
        // Python does not strip ZERO WIDTH SPACE or the BOM.
        assert_eq!(python_strip("\u{200b}x\u{feff}"), "\u{200b}x\u{feff}");
        assert_eq!(python_strip(" \t "), "");
    }

    fn xlmr_tokenizer(max_seq_length: usize) -> TextTokenizer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/xlmr-tokenizer/tokenizer.json");
        TextTokenizer::load(&path, max_seq_length, false).unwrap()
    }

    #[test]
    fn xlmr_layout_and_truncation_keep_the_specials() {
        let tok = xlmr_tokenizer(512);
        // assets.md: "Hello world" -> [0, 35378, 8999, 2].
        let t = tok.encode("Hello world", 0).unwrap();
        assert_eq!(t.ids, vec![0, 35378, 8999, 2]);
        assert!(!t.truncated);
        assert_eq!(tok.encode("", 0).unwrap().ids, vec![0, 2]);

        let tok = xlmr_tokenizer(3);
        let t = tok.encode("Hello world", 0).unwrap();
        assert_eq!(t.ids, vec![0, 35378, 2]);
        assert!(t.truncated);
    }

    #[test]
    fn prompt_length_excludes_the_final_separator() {
        let tok = xlmr_tokenizer(512);
        let n = tok.encode("query:", 0).unwrap().ids.len();
        assert_eq!(tok.prompt_length("query: ").unwrap(), n - 1);
    }

    #[test]
    fn missing_tokenizer_is_named() {
        let err = TextTokenizer::load(Path::new("/nonexistent/tokenizer.json"), 8, false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/tokenizer.json"), "{err}");
    }
}
