//! A SentencePiece Unigram model that gives the `tokenizers` crate's `Unigram` token ids in a
//! fraction of its memory.
//!
//! The crate's `Unigram` keeps a byte trie with one hash map per node (~2M nodes for XLM-R's
//! 250,002 pieces), a `String` per piece twice over, and is loaded through a `serde_json::Value`
//! of the whole model section: ~290 MB resident for XLM-R. `CompactUnigram` keeps the distinct
//! pieces sorted by their bytes in one arena (~8 MB for XLM-R) and finds the pieces that start at
//! a position by narrowing a range of that sorted array one byte at a time, which is the
//! crate's common-prefix search without a trie.
//!
//! The tokenization is the crate's `Unigram::encode_optimized` + `Model::tokenize` (0.21.4),
//! replicated step by step, including what decides ties and how unknown characters are fused.
//! It plugs into the crate's `TokenizerImpl` as its `Model`, so normalizer, pre-tokenizer, added
//! tokens, post-processor and truncation stay the crate's own code.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tokenizers::{AddedToken, Model, Token, Trainer};

/// The crate's `K_UNK_PENALTY`: an unknown character scores this much below the rarest piece.
const UNK_PENALTY: f64 = 10.0;

/// Unigram model with the distinct pieces sorted by bytes.
///
/// Pieces are addressed by their rank in that order ("slot"). A piece listed twice in the
/// vocabulary has one slot, which answers with the *last* of its ids and that id's score, as the
/// crate's `token_to_ids` map (filled in id order, later inserts win) does.
#[derive(Clone)]
pub struct CompactUnigram {
    /// Piece bytes of every slot, concatenated in slot order.
    piece_bytes: Vec<u8>,
    /// Slot `s` is `piece_bytes[piece_starts[s]..piece_starts[s + 1]]`.
    piece_starts: Vec<u32>,
    /// Vocabulary id of each slot.
    slot_ids: Vec<u32>,
    /// Score of each slot (the score of `slot_ids[s]`).
    slot_scores: Vec<f64>,
    /// Slot of each vocabulary id, for `id_to_token` (duplicates share a slot).
    slot_of_id: Vec<u32>,
    /// Slots whose piece begins with byte `b` are `first_byte_slots[b]..first_byte_slots[b + 1]`.
    first_byte_slots: Vec<u32>,
    unk_id: Option<u32>,
    /// Lowest score over the whole vocabulary, duplicates included (as the crate computes it).
    min_score: f64,
    byte_fallback: bool,
}

impl fmt::Debug for CompactUnigram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompactUnigram")
            .field("vocab", &self.slot_of_id.len())
            .field("distinct_pieces", &self.slot_ids.len())
            .field("unk_id", &self.unk_id)
            .field("byte_fallback", &self.byte_fallback)
            .finish()
    }
}

/// The vocabulary in id order, as read from tokenizer.json, before sorting.
#[derive(Default)]
struct VocabInIdOrder {
    bytes: Vec<u8>,
    /// Piece `i` is `bytes[ends[i - 1]..ends[i]]` (`ends[-1]` = 0).
    ends: Vec<u32>,
    scores: Vec<f64>,
}

impl VocabInIdOrder {
    fn push(&mut self, piece: &str, score: f64) -> Result<(), String> {
        self.bytes.extend_from_slice(piece.as_bytes());
        let end = u32::try_from(self.bytes.len())
            .map_err(|_| "the vocabulary has more than 4 GiB of piece bytes".to_string())?;
        self.ends.push(end);
        self.scores.push(score);
        Ok(())
    }

    fn piece(&self, id: usize) -> &[u8] {
        let start = if id == 0 {
            0
        } else {
            self.ends[id - 1] as usize
        };
        &self.bytes[start..self.ends[id] as usize]
    }

    fn len(&self) -> usize {
        self.scores.len()
    }
}

impl CompactUnigram {
    /// A model from `(piece, score)` pairs in id order, with the crate's `Unigram::from` checks.
    pub fn from_pieces<S: AsRef<str>>(
        pieces: &[(S, f64)],
        unk_id: Option<usize>,
        byte_fallback: bool,
    ) -> Result<Self, String> {
        let mut vocab = VocabInIdOrder::default();
        for (piece, score) in pieces {
            vocab.push(piece.as_ref(), *score)?;
        }
        Self::build(vocab, unk_id, byte_fallback)
    }

    fn build(
        vocab: VocabInIdOrder,
        unk_id: Option<usize>,
        byte_fallback: bool,
    ) -> Result<Self, String> {
        let n = vocab.len();
        if let Some(unk_id) = unk_id {
            if n == 0 {
                return Err("the vocabulary is empty but at least <unk> is needed".into());
            }
            if unk_id >= n {
                return Err(format!(
                    "unk_id {unk_id} is not in the vocabulary of {n} pieces"
                ));
            }
        }
        if u32::try_from(n).is_err() {
            return Err(format!("{n} pieces do not fit u32 ids"));
        }

        // Stable sort: equal pieces keep id order, so the last of a run is the id that wins.
        let mut ids_by_piece: Vec<u32> = (0..n as u32).collect();
        ids_by_piece.sort_by(|&a, &b| vocab.piece(a as usize).cmp(vocab.piece(b as usize)));

        let mut piece_bytes = Vec::with_capacity(vocab.bytes.len());
        let mut piece_starts = vec![0u32];
        let mut slot_ids = Vec::new();
        let mut slot_scores = Vec::new();
        let mut slot_of_id = vec![0u32; n];
        for (rank, &id) in ids_by_piece.iter().enumerate() {
            let piece = vocab.piece(id as usize);
            let same_as_previous =
                rank > 0 && vocab.piece(ids_by_piece[rank - 1] as usize) == piece;
            if same_as_previous {
                let last = slot_ids.len() - 1;
                slot_ids[last] = id;
                slot_scores[last] = vocab.scores[id as usize];
            } else {
                piece_bytes.extend_from_slice(piece);
                piece_starts.push(piece_bytes.len() as u32);
                slot_ids.push(id);
                slot_scores.push(vocab.scores[id as usize]);
            }
            slot_of_id[id as usize] = (slot_ids.len() - 1) as u32;
        }
        drop(ids_by_piece);

        // Counting sort boundaries on the first byte; the empty piece (if any) sorts first and
        // belongs to no byte's range.
        let slot_count = slot_ids.len();
        let mut first_byte_slots = vec![0u32; 257];
        let mut slot = 0usize;
        for (byte, boundary) in first_byte_slots.iter_mut().enumerate() {
            while slot < slot_count {
                let start = piece_starts[slot] as usize;
                let end = piece_starts[slot + 1] as usize;
                // The empty piece counts as below every byte.
                if start == end || (piece_bytes[start] as usize) < byte {
                    slot += 1;
                } else {
                    break;
                }
            }
            *boundary = slot as u32;
        }

        let min_score = vocab
            .scores
            .iter()
            .fold(f64::INFINITY, |min, &s| if s < min { s } else { min });

        Ok(Self {
            piece_bytes,
            piece_starts,
            slot_ids,
            slot_scores,
            slot_of_id,
            first_byte_slots,
            unk_id: unk_id.map(|id| id as u32),
            min_score,
            byte_fallback,
        })
    }

    /// Heap bytes held by the model.
    pub fn heap_bytes(&self) -> usize {
        self.piece_bytes.capacity()
            + 4 * (self.piece_starts.capacity()
                + self.slot_ids.capacity()
                + self.slot_of_id.capacity()
                + self.first_byte_slots.capacity())
            + 8 * self.slot_scores.capacity()
    }

    pub fn byte_fallback(&self) -> bool {
        self.byte_fallback
    }

    fn slot_piece(&self, slot: usize) -> &[u8] {
        &self.piece_bytes[self.piece_starts[slot] as usize..self.piece_starts[slot + 1] as usize]
    }

    fn slot_of_piece(&self, piece: &[u8]) -> Option<usize> {
        let mut low = 0usize;
        let mut high = self.slot_ids.len();
        while low < high {
            let mid = low + (high - low) / 2;
            match self.slot_piece(mid).cmp(piece) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Calls `found(length, slot)` for every piece that is a prefix of `text`, shortest first:
    /// the order in which the crate's trie yields them, which decides ties in the Viterbi pass.
    fn for_each_prefix_piece(&self, text: &[u8], mut found: impl FnMut(usize, usize)) {
        let Some(&first) = text.first() else {
            return;
        };
        // Invariant: slots low..high are exactly the pieces that start with text[..depth].
        let mut low = self.first_byte_slots[first as usize] as usize;
        let mut high = self.first_byte_slots[first as usize + 1] as usize;
        let mut depth = 1;
        while low < high {
            // Sorted order puts the piece equal to the prefix (if any) before its extensions.
            if self.piece_starts[low + 1] - self.piece_starts[low] == depth as u32 {
                found(depth, low);
                low += 1;
            }
            let Some(&next) = text.get(depth) else {
                return;
            };
            // Every piece in low..high is now longer than `depth`; narrow on its byte there.
            let byte_at = |slot: usize| self.piece_bytes[self.piece_starts[slot] as usize + depth];
            low = partition_point(low, high, |slot| byte_at(slot) < next);
            high = partition_point(low, high, |slot| byte_at(slot) <= next);
            depth += 1;
        }
    }

    /// The pieces of `sentence` as (start, end, id) byte ranges, with runs of unknown pieces
    /// fused into one range whose id is `None` (looked up again by the caller, as the crate
    /// does). This is `Unigram::encode_optimized`.
    fn segment(&self, sentence: &str) -> tokenizers::Result<Vec<(usize, usize, Option<u32>)>> {
        #[derive(Clone, Copy)]
        struct BestPathNode {
            id: u32,
            best_path_score: f64,
            starts_at: Option<usize>,
        }
        let bytes = sentence.as_bytes();
        let size = bytes.len();
        let unk_score = self.min_score - UNK_PENALTY;
        let mut best_path_ends_at = vec![
            BestPathNode {
                id: 0,
                best_path_score: 0.0,
                starts_at: None,
            };
            size + 1
        ];
        let mut starts_at = 0;
        while starts_at < size {
            let best_path_score_till_here = best_path_ends_at[starts_at].best_path_score;
            let char_len = utf8_char_len(bytes[starts_at]);
            let mut has_single_node = false;
            self.for_each_prefix_piece(&bytes[starts_at..], |length, slot| {
                let target = &mut best_path_ends_at[starts_at + length];
                let candidate = self.slot_scores[slot] + best_path_score_till_here;
                // Strictly greater: the first candidate reaching a position keeps ties.
                if target.starts_at.is_none() || candidate > target.best_path_score {
                    target.best_path_score = candidate;
                    target.starts_at = Some(starts_at);
                    target.id = self.slot_ids[slot];
                }
                has_single_node |= length == char_len;
            });
            if !has_single_node {
                let target = &mut best_path_ends_at[starts_at + char_len];
                let candidate = unk_score + best_path_score_till_here;
                if target.starts_at.is_none() || candidate > target.best_path_score {
                    target.best_path_score = candidate;
                    target.starts_at = Some(starts_at);
                    target.id = self.unk_id.ok_or_else(missing_unk_id)?;
                }
            }
            starts_at += char_len;
        }

        // Backtrack; nodes with the unk id (unknown characters, and the unk piece itself) fuse.
        let mut pieces = Vec::new();
        let mut ends_at = size;
        // (start, end) of the run of unk nodes being fused.
        let mut open_unk_run: Option<(usize, usize)> = None;
        while ends_at > 0 {
            let node = best_path_ends_at[ends_at];
            let Some(starts_at) = node.starts_at else {
                // Unreachable: every character boundary gets a piece or the unk node.
                return Err("unigram lattice has no path".into());
            };
            if Some(node.id) == self.unk_id {
                open_unk_run = Some(match open_unk_run {
                    Some((_, end)) => (starts_at, end),
                    None => (starts_at, ends_at),
                });
            } else {
                if let Some((start, end)) = open_unk_run.take() {
                    pieces.push((start, end, None));
                }
                pieces.push((starts_at, ends_at, Some(node.id)));
            }
            ends_at = starts_at;
        }
        if let Some((start, end)) = open_unk_run {
            pieces.push((start, end, None));
        }
        pieces.reverse();
        Ok(pieces)
    }
}

fn missing_unk_id() -> tokenizers::Error {
    "Encountered an unknown token but `unk_id` is missing".into()
}

/// First index in `low..high` where `is_before` turns false (`is_before` is true then false).
fn partition_point(mut low: usize, mut high: usize, is_before: impl Fn(usize) -> bool) -> usize {
    while low < high {
        let mid = low + (high - low) / 2;
        if is_before(mid) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}

/// Length of the UTF-8 character whose first byte is `lead` (the text is a valid `str`).
fn utf8_char_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

impl Model for CompactUnigram {
    type Trainer = Untrainable;

    /// The crate's `Unigram::tokenize`: pieces with byte offsets relative to `sentence`; a fused
    /// unknown run is looked up as a piece, then as `<0xXX>` byte pieces (byte fallback), then
    /// becomes the unk id.
    fn tokenize(&self, sentence: &str) -> tokenizers::Result<Vec<Token>> {
        let pieces = self.segment(sentence)?;
        let mut tokens = Vec::with_capacity(pieces.len());
        for (start, end, id) in pieces {
            let value = &sentence[start..end];
            let offsets = (start, end);
            let id = match id {
                Some(id) => id,
                None => match self.slot_of_piece(value.as_bytes()) {
                    Some(slot) => self.slot_ids[slot],
                    None => {
                        if self.byte_fallback {
                            let byte_tokens: Option<Vec<Token>> = value
                                .bytes()
                                .map(|byte| {
                                    let byte_piece = format!("<0x{byte:02X}>");
                                    self.token_to_id(&byte_piece)
                                        .map(|id| Token::new(id, byte_piece, offsets))
                                })
                                .collect();
                            if let Some(byte_tokens) = byte_tokens {
                                tokens.extend(byte_tokens);
                                continue;
                            }
                        }
                        self.unk_id.ok_or_else(missing_unk_id)?
                    }
                },
            };
            tokens.push(Token::new(id, value.to_string(), offsets));
        }
        Ok(tokens)
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.slot_of_piece(token.as_bytes())
            .map(|slot| self.slot_ids[slot])
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        let slot = *self.slot_of_id.get(id as usize)?;
        // Pieces come from `str`s and slot boundaries are piece boundaries.
        Some(String::from_utf8_lossy(self.slot_piece(slot as usize)).into_owned())
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        (0..self.slot_ids.len())
            .map(|slot| {
                (
                    String::from_utf8_lossy(self.slot_piece(slot)).into_owned(),
                    self.slot_ids[slot],
                )
            })
            .collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.slot_of_id.len()
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("koembed's CompactUnigram is load-only: save the original tokenizer.json".into())
    }

    fn get_trainer(&self) -> Untrainable {
        Untrainable
    }
}

impl CompactUnigram {
    /// Number of distinct pieces (the size of `get_vocab()`).
    pub fn distinct_pieces(&self) -> usize {
        self.slot_ids.len()
    }
}

/// `Model` wants a trainer; koembed only runs pretrained tokenizers.
pub struct Untrainable;

impl Trainer for Untrainable {
    type Model = CompactUnigram;

    fn should_show_progress(&self) -> bool {
        false
    }

    fn train(&self, _model: &mut CompactUnigram) -> tokenizers::Result<Vec<AddedToken>> {
        Err("koembed's CompactUnigram cannot be trained".into())
    }

    fn feed<I, S, F>(&mut self, _iterator: I, _process: F) -> tokenizers::Result<()>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
        F: Fn(&str) -> tokenizers::Result<Vec<String>> + Sync,
    {
        Err("koembed's CompactUnigram cannot be trained".into())
    }
}

/// Reads tokenizer.json's `"model"` section (`type`, `vocab`, `unk_id`, `byte_fallback`)
/// straight into the arena: no `serde_json::Value`, no `String` per piece kept.
impl<'de> Deserialize<'de> for CompactUnigram {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ModelSectionVisitor)
    }
}

struct ModelSectionVisitor;

impl<'de> Visitor<'de> for ModelSectionVisitor {
    type Value = CompactUnigram;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a Unigram model section")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CompactUnigram, A::Error> {
        let mut vocab = None;
        let mut unk_id: Option<usize> = None;
        let mut byte_fallback = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "type" => {
                    let kind: String = map.next_value()?;
                    if kind != "Unigram" {
                        return Err(de::Error::custom(format!(
                            "model type \"{kind}\" is not Unigram"
                        )));
                    }
                }
                "unk_id" => unk_id = map.next_value()?,
                "byte_fallback" => byte_fallback = map.next_value()?,
                "vocab" => vocab = Some(map.next_value::<VocabSection>()?.0),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let vocab = vocab.ok_or_else(|| de::Error::custom("the Unigram model has no vocab"))?;
        CompactUnigram::build(vocab, unk_id, byte_fallback)
            .map_err(|e| de::Error::custom(format!("Unigram vocab: {e}")))
    }
}

/// `"vocab": [[piece, score], ...]`, streamed into a `VocabInIdOrder`.
struct VocabSection(VocabInIdOrder);

impl<'de> Deserialize<'de> for VocabSection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VocabVisitor;
        impl<'de> Visitor<'de> for VocabVisitor {
            type Value = VocabSection;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of [piece, score] pairs")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VocabSection, A::Error> {
                let mut vocab = VocabInIdOrder::default();
                while let Some((piece, score)) = seq.next_element::<(String, f64)>()? {
                    vocab.push(&piece, score).map_err(de::Error::custom)?;
                }
                Ok(VocabSection(vocab))
            }
        }
        deserializer.deserialize_seq(VocabVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::unigram::Unigram;

    fn both(
        pieces: &[(&str, f64)],
        unk_id: Option<usize>,
        byte_fallback: bool,
    ) -> (Unigram, CompactUnigram) {
        let owned: Vec<(String, f64)> = pieces.iter().map(|(p, s)| (p.to_string(), *s)).collect();
        (
            Unigram::from(owned, unk_id, byte_fallback).unwrap(),
            CompactUnigram::from_pieces(pieces, unk_id, byte_fallback).unwrap(),
        )
    }

    /// Tokens (id, value, offsets) or the error text, for both models.
    fn assert_same(crate_model: &Unigram, ours: &CompactUnigram, text: &str) {
        let expected = crate_model.tokenize(text).map_err(|e| e.to_string());
        let actual = ours.tokenize(text).map_err(|e| e.to_string());
        assert_eq!(actual, expected, "text {text:?}");
    }

    const SENTENCEPIECES: &[(&str, f64)] = &[
        ("<unk>", 0.0),
        ("ab", 0.0),
        ("cd", -0.1),
        ("abc", -0.2),
        ("a", -0.3),
        ("b", -0.4),
        ("c", -0.5),
        ("ABC", -0.5),
        ("abcdabcd", 20.0),
        ("q", 20.5),
        ("r", 20.5),
        ("qr", -0.5),
    ];

    #[test]
    fn matches_the_crate_on_its_own_examples() {
        let (crate_model, ours) = both(SENTENCEPIECES, Some(0), false);
        for text in [
            "",
            "abc",
            "AB",
            "abcd",
            "abcc",
            "xabcabaabcdd",
            "xyz東京",
            "ABC",
            "abABCcd",
            "ababcdabcdcd",
            "abqrcd",
            "<unk>",
            "x<unk>y",
            "<unk>ab<unk>",
            "é",
            "\u{0}",
        ] {
            assert_same(&crate_model, &ours, text);
        }
        assert_eq!(ours.get_vocab(), crate_model.get_vocab());
        assert_eq!(ours.get_vocab_size(), crate_model.get_vocab_size());
    }

    #[test]
    fn ties_keep_the_first_candidate() {
        // "ab" = "a"+"b" = 0 in score: the crate keeps whichever reached the end first.
        let (crate_model, ours) = both(
            &[
                ("<unk>", 0.0),
                ("a", 0.0),
                ("b", 0.0),
                ("ab", 0.0),
                ("ba", 0.0),
                ("aba", 0.0),
            ],
            Some(0),
            false,
        );
        for text in ["ab", "ba", "aba", "abab", "bab", "aabba", "abxab"] {
            assert_same(&crate_model, &ours, text);
        }
    }

    #[test]
    fn duplicate_pieces_answer_with_the_last_id() {
        let pieces = [
            ("<unk>", 0.0),
            ("a", -1.0),
            ("b", -2.0),
            ("a", -0.5),
            ("", -3.0),
        ];
        let (crate_model, ours) = both(&pieces, Some(0), false);
        for text in ["a", "ab", "ba", "aab", "xa"] {
            assert_same(&crate_model, &ours, text);
        }
        assert_eq!(ours.token_to_id("a"), Some(3));
        assert_eq!(ours.id_to_token(1).as_deref(), Some("a"));
        assert_eq!(ours.token_to_id(""), crate_model.token_to_id(""));
        assert_eq!(ours.get_vocab(), crate_model.get_vocab());
        for id in 0..6 {
            assert_eq!(ours.id_to_token(id), crate_model.id_to_token(id), "id {id}");
        }
    }

    #[test]
    fn byte_fallback_matches_the_crate() {
        let (crate_model, ours) = both(
            &[
                ("<unk>", 0.0),
                ("<0xC3>", -0.01),
                ("<0xA9>", -0.03),
                ("a", -1.0),
            ],
            Some(0),
            true,
        );
        for text in ["é", "?é", "aéa", "éé", "a"] {
            assert_same(&crate_model, &ours, text);
        }
    }

    #[test]
    fn without_unk_id_unknown_characters_fail_as_in_the_crate() {
        let (crate_model, ours) = both(&[("a", -1.0), ("b", -1.0)], None, false);
        for text in ["ab", "abc", "c"] {
            assert_same(&crate_model, &ours, text);
        }
    }

    #[test]
    fn malformed_vocabularies_are_refused() {
        assert!(CompactUnigram::from_pieces::<&str>(&[], Some(0), false).is_err());
        assert!(CompactUnigram::from_pieces(&[("a", 0.0)], Some(1), false).is_err());
        let err = serde_json::from_str::<CompactUnigram>(r#"{"type": "BPE", "vocab": []}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("BPE"), "{err}");
        assert!(serde_json::from_str::<CompactUnigram>(r#"{"type": "Unigram"}"#).is_err());
        assert!(
            serde_json::from_str::<CompactUnigram>(r#"{"vocab": [["a", "x"]], "unk_id": 0}"#)
                .is_err()
        );
    }

    #[test]
    fn reads_the_model_section() {
        let model: CompactUnigram = serde_json::from_str(
            r#"{"type": "Unigram", "unk_id": 1, "vocab": [["a", -1], ["<unk>", 0.0], ["\u00e9", -2.5]],
                "byte_fallback": false, "extra": {"x": [1, 2]}}"#,
        )
        .unwrap();
        assert_eq!(model.get_vocab_size(), 3);
        assert_eq!(model.token_to_id("é"), Some(2));
        assert_eq!(
            model
                .tokenize("aé?")
                .unwrap()
                .iter()
                .map(|t| t.id)
                .collect::<Vec<_>>(),
            vec![0, 2, 1]
        );
    }
}
