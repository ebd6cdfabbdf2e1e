//! `CompactUnigram` against the `tokenizers` crate's own `Unigram`, loaded from the same
//! tokenizer.json: token ids, pieces, offsets and truncation flags must be identical on the
//! golden texts, the Debian FAQ corpus and queries, adversarial strings and seeded random text.
//!
//! Models under `models/` are built by `cargo xtask models`; a missing one is a failure, never a
//! skip.

use std::path::{Path, PathBuf};

use koembed_embed::tokenize::python_strip;
use koembed_embed::unigram::CompactUnigram;
use koembed_embed::TextTokenizer;
use tokenizers::{
    DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
    TokenizerImpl, TruncationDirection, TruncationParams, TruncationStrategy,
};

type CompactUnigramTokenizer = TokenizerImpl<
    CompactUnigram,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

fn tokenizer_files() -> Vec<PathBuf> {
    let models = koembed_golden::models_dir();
    let testdata = koembed_golden::testdata_dir();
    let files = vec![
        models.join("e5-small/tokenizer.json"),
        // The XLM-R vocabulary with <Q>/<P> added tokens.
        models.join("frony-tiny-like/tokenizer.json"),
        testdata.join("xlmr-tokenizer/tokenizer.json"),
        // 1,055 pieces: most characters are unknown, which exercises unk fusing.
        testdata.join("tiny/tiny-xlmr/tokenizer.json"),
    ];
    for file in &files {
        assert!(
            file.is_file(),
            "{} is missing: build the test models with `cargo xtask models`",
            file.display()
        );
    }
    files
}

fn jsonl_texts(path: &Path) -> Vec<String> {
    let content =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    content
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["text"].as_str().unwrap().to_string()
        })
        .collect()
}

/// xorshift64*: a fixed sequence on every machine, no dependency.
struct SeededRng(u64);

impl SeededRng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn adversarial_texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "",
        " ",
        "   \t\n  ",
        "\u{3000}",
        "\u{0}",
        "a\u{0}b",
        "\u{1}\u{2}\u{7}\u{1b}\u{7f}",
        "\r\n\t",
        "😀",
        "😀😀😀 👨‍👩‍👧‍👦 🇰🇷",
        "한국어 문장입니다.",
        "Debian 12 (bookworm) 버전은 2023-06-10에 나왔습니다; apt-get install ✓",
        "𒀀𒀁𒀂𒀃",
        "ᚠᛇᚻ ᛒᛦᚦ",
        "𐀀𐀁 𐀂",
        "ꙮꙮꙮ",
        "\u{e000}\u{f8ff}\u{10ffff}",
        "\u{fffd}\u{fffe}",
        "e\u{301}\u{302}\u{303} a\u{20dd} 한\u{302}",
        "\u{1100}\u{1161}\u{11a8}",
        "\u{200b}\u{200c}\u{200d}\u{feff}",
        "ＡＢＣ１２３ ｶﾀｶﾅ",
        "▁▁▁ ▁ a▁b",
        "<s></s><unk><pad><mask>",
        "x<unk>y <mask> a</s>b",
        "<Q> 질문 <P> 문서",
        "ﷺ ﷽",
        "ᄀᄀᄀᄀᄀ",
        "I'm 3.14159 ½ ⅓ ² ₂",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Long runs of characters without a piece (fused into one unk).
    texts.push("𒀀".repeat(300));
    texts.push(format!("가{}나", "\u{e000}".repeat(100)));
    // 10k-character strings.
    texts.push("가나다라마바사 ".repeat(1250));
    texts.push("a".repeat(10_000));
    texts.push("데비안FAQ123".repeat(1000));
    texts
}

fn random_texts(count: usize) -> Vec<String> {
    let alphabet: Vec<char> = "가각나다라마바사아자차카타파하한국어글ㄱㄴㅏㅓ \
        abcdefgxyzABCZ0123456789 .,;:!?'\"()[]<>/-_~\t\n\u{3000}▁\
        éüßçñ東京日本語中文русскийΩλ😀👍🇰🇷𒀀𐀀ꙮ\u{0}\u{1}\u{7f}\u{200b}\u{301}\u{20dd}\u{feff}\u{e000}\u{fffd}ＡＢ１"
        .chars()
        .collect();
    let mut rng = SeededRng(0x6b6f_656d_6265_6421);
    (0..count)
        .map(|_| {
            let len = rng.below(60);
            let mut text: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            if rng.below(8) == 0 {
                text.push_str(["<s>", "</s>", "<unk>", "<mask>", "<pad>"][rng.below(5)]);
            }
            text
        })
        .collect()
}

fn all_texts() -> Vec<String> {
    let testdata = koembed_golden::testdata_dir();
    let mut texts = jsonl_texts(&testdata.join("golden/texts.jsonl"));
    texts.extend(jsonl_texts(&testdata.join("debian-faq-ko/corpus.jsonl")));
    texts.extend(jsonl_texts(&testdata.join("debian-faq-ko/queries.jsonl")));
    texts.extend(adversarial_texts());
    texts.extend(random_texts(3000));
    texts
}

fn crate_tokenizer(file: &Path, max_seq_length: usize) -> Tokenizer {
    let mut tokenizer = Tokenizer::from_file(file).unwrap();
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_seq_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .unwrap();
    tokenizer.with_padding(None);
    tokenizer
}

/// The pipeline the way sentence-transformers runs it (strip, truncation with specials kept):
/// `TextTokenizer` (compact model) against the crate's `Tokenizer` with the same settings.
#[test]
fn text_tokenizer_matches_the_crate_ids_and_truncation() {
    let texts = all_texts();
    for file in tokenizer_files() {
        for max_seq_length in [512, 16] {
            let ours = TextTokenizer::load(&file, max_seq_length, false).unwrap();
            assert!(ours.uses_compact_unigram(), "{}", file.display());
            let reference = crate_tokenizer(&file, max_seq_length);
            assert_eq!(
                ours.vocab_size(),
                reference.get_vocab_size(true),
                "{}",
                file.display()
            );
            let mut mismatches = Vec::new();
            for (index, text) in texts.iter().enumerate() {
                let expected = reference.encode(python_strip(text), true).unwrap();
                let actual = ours.encode(text, index).unwrap();
                let expected_truncated = !expected.get_overflowing().is_empty();
                if actual.ids != expected.get_ids() || actual.truncated != expected_truncated {
                    mismatches.push(format!(
                        "text {index} {:?}: ours {:?} (truncated {}), crate {:?} (truncated {})",
                        text.chars().take(80).collect::<String>(),
                        actual.ids,
                        actual.truncated,
                        expected.get_ids(),
                        expected_truncated
                    ));
                }
            }
            assert!(
                mismatches.is_empty(),
                "{} at max_seq_length {max_seq_length}: {} of {} texts differ, first: {:#?}",
                file.display(),
                mismatches.len(),
                texts.len(),
                &mismatches[..mismatches.len().min(5)]
            );
        }
    }
}

/// The raw pipeline without strip or truncation: ids, pieces and offsets of every token, so
/// leading/trailing whitespace and the model's offsets are compared too.
#[test]
fn compact_pipeline_matches_the_crate_tokens_and_offsets() {
    let texts = all_texts();
    for file in tokenizer_files() {
        let json = std::fs::read_to_string(&file).unwrap();
        let ours: CompactUnigramTokenizer = serde_json::from_str(&json).unwrap();
        let reference = Tokenizer::from_file(&file).unwrap();
        assert_eq!(ours.get_vocab_size(false), reference.get_vocab_size(false));
        for (index, text) in texts.iter().enumerate() {
            for add_special_tokens in [true, false] {
                let expected = reference.encode(text.as_str(), add_special_tokens).unwrap();
                let actual = ours.encode(text.as_str(), add_special_tokens).unwrap();
                let label = format!(
                    "{} text {index} {:?} specials {add_special_tokens}",
                    file.display(),
                    text.chars().take(80).collect::<String>()
                );
                assert_eq!(actual.get_ids(), expected.get_ids(), "{label}");
                assert_eq!(actual.get_tokens(), expected.get_tokens(), "{label}");
                assert_eq!(actual.get_offsets(), expected.get_offsets(), "{label}");
                assert_eq!(
                    actual.get_special_tokens_mask(),
                    expected.get_special_tokens_mask(),
                    "{label}"
                );
            }
        }
        // Vocabulary lookups both ways, every id.
        for id in 0..reference.get_vocab_size(true) as u32 + 2 {
            let piece = reference.id_to_token(id);
            assert_eq!(ours.id_to_token(id), piece, "id {id}");
            if let Some(piece) = piece {
                assert_eq!(
                    ours.token_to_id(&piece),
                    reference.token_to_id(&piece),
                    "{piece:?}"
                );
            }
        }
    }
}
