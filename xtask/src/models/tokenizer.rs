//! The XLM-R tokenizer every multilingual model here ships, and frony's variant of it with
//! `<Q>` / `<P>` added as special tokens.

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

use super::files::sha256_hex;
use crate::paths;

/// sha256 of testdata/xlmr-tokenizer/tokenizer.json (see /work/shared/docs/assets.md §2).
pub const XLMR_TOKENIZER_SHA256: &str =
    "dd6bac111462c8b34ee1c227c4d8d41fe4ba67222b77de29e14d85ee5d042a4e";

/// frony-embed-tiny-ko-v1's prompt tokens: added after the 250002 XLM-R pieces, on rows of
/// the 250037-row embedding that no piece uses.
pub const FRONY_TOKENS: [(&str, u32); 2] = [("<Q>", 250002), ("<P>", 250003)];

/// The committed XLM-R tokenizer.json, checked against its pinned sha256.
pub fn committed_xlmr_tokenizer() -> anyhow::Result<Vec<u8>> {
    let path = paths::testdata_dir().join("xlmr-tokenizer/tokenizer.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let sha256 = sha256_hex(&bytes);
    ensure!(
        sha256 == XLMR_TOKENIZER_SHA256,
        "{} has sha256 {sha256}, expected {XLMR_TOKENIZER_SHA256}: \
         it must be the committed copy, byte for byte",
        path.display()
    );
    Ok(bytes)
}

/// `tokenizer_json` with `tokens` appended to `added_tokens` as special tokens (matched before
/// normalization, never split), every other byte unchanged.
///
/// Why not parse, edit and re-serialize the whole file: serde_json's default float parser is
/// not correctly rounded (a quarter of the 250002 Unigram scores come back one ulp off and are
/// then written with different digits). Enabling its `float_roundtrip` feature would fix that,
/// but feature unification would also change how the `tokenizers` crate reads those scores in
/// every workspace build. So the new entries, serialized by serde_json in the file's own
/// layout, are spliced into the original text, and serde_json checks the result.
pub fn with_added_special_tokens(
    tokenizer_json: &[u8],
    tokens: &[(&str, u32)],
) -> anyhow::Result<Vec<u8>> {
    let original: Value =
        serde_json::from_slice(tokenizer_json).context("parsing tokenizer.json")?;
    let vocab_size = original["model"]["vocab"]
        .as_array()
        .context("tokenizer.json has no model.vocab array")?
        .len();
    let existing = original["added_tokens"]
        .as_array()
        .context("tokenizer.json has no added_tokens array")?;
    let mut expected = original.clone();
    let mut insertion = String::new();
    for &(content, id) in tokens {
        ensure!(
            id as usize >= vocab_size,
            "id {id} for {content} is a vocabulary piece (vocab size {vocab_size})"
        );
        if let Some(clash) = existing
            .iter()
            .find(|t| t["id"] == id || t["content"] == content)
        {
            bail!("{content} (id {id}) clashes with the added token {clash}");
        }
        let entry = AddedToken {
            id,
            content,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: true,
        };
        expected["added_tokens"]
            .as_array_mut()
            .expect("checked above")
            .push(serde_json::to_value(&entry)?);
        // HF's layout: the entries of a top-level array are indented by 4 spaces.
        insertion.push_str(",\n    ");
        insertion.push_str(&serde_json::to_string_pretty(&entry)?.replace('\n', "\n    "));
    }

    let close = added_tokens_closing_bracket(tokenizer_json)?;
    // Insert right after the last entry's `}`, before the whitespace that precedes `]`.
    let insert_at = tokenizer_json[..close]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    ensure!(
        insert_at > 0 && tokenizer_json[insert_at - 1] == b'}',
        "added_tokens is empty or not a list of objects"
    );
    let edited = [
        &tokenizer_json[..insert_at],
        insertion.as_bytes(),
        &tokenizer_json[insert_at..],
    ]
    .concat();

    let reparsed: Value =
        serde_json::from_slice(&edited).context("the edited tokenizer.json does not parse")?;
    ensure!(
        reparsed == expected,
        "the edited tokenizer.json is not the original plus the new tokens"
    );
    Ok(edited)
}

/// An `added_tokens` entry, its fields in Hugging Face's order.
#[derive(serde::Serialize)]
struct AddedToken<'a> {
    id: u32,
    content: &'a str,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

/// Byte offset of the `]` closing the top-level `"added_tokens"` array. A small scanner that
/// knows strings (with escapes) and nesting, so a vocabulary piece spelled `added_tokens`
/// cannot fool it.
fn added_tokens_closing_bracket(json: &[u8]) -> anyhow::Result<usize> {
    let mut depth = 0usize;
    let mut added_tokens_depth = None;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                let text = json.get(start..i);
                let next = json
                    .get(i + 1..)
                    .and_then(|rest| rest.iter().find(|b| !b.is_ascii_whitespace()));
                if depth == 1 && next == Some(&b':') && text == Some(b"added_tokens".as_slice()) {
                    added_tokens_depth = Some(depth + 1);
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if json[i] == b']' && added_tokens_depth == Some(depth) {
                    return Ok(i);
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        i += 1;
    }
    bail!("tokenizer.json has no top-level added_tokens array")
}

/// tokenizer_config.json: enough for transformers' AutoTokenizer to load tokenizer.json as
/// XLMRobertaTokenizerFast (without `tokenizer_class` a BertModel config would make it pick
/// BertTokenizerFast) with XLM-R's special tokens.
pub fn xlmr_tokenizer_config(additional_special_tokens: &[&str]) -> Value {
    let mut config = json!({
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": 512,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": "<mask>",
        "clean_up_tokenization_spaces": true,
    });
    if !additional_special_tokens.is_empty() {
        config["additional_special_tokens"] = json!(additional_special_tokens);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::Tokenizer;

    fn tokenizers() -> (Tokenizer, Tokenizer) {
        let base = committed_xlmr_tokenizer().unwrap();
        let frony = with_added_special_tokens(&base, &FRONY_TOKENS).unwrap();
        (
            Tokenizer::from_bytes(&base).unwrap(),
            Tokenizer::from_bytes(&frony).unwrap(),
        )
    }

    fn ids(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
        tokenizer.encode(text, true).unwrap().get_ids().to_vec()
    }

    #[test]
    fn frony_prompt_tokens_become_their_ids() {
        let (base, frony) = tokenizers();
        let query = ids(&frony, "<Q>안녕하세요");
        assert_eq!(query[..2], [0, 250002], "{query:?}");
        assert_eq!(*query.last().unwrap(), 2);
        // After the added token, the text is tokenized on its own, as the base tokenizer does.
        assert_eq!(query[2..], ids(&base, "안녕하세요")[1..]);

        let passage = ids(&frony, "<P>hello");
        assert_eq!(passage[..2], [0, 250003], "{passage:?}");
        assert_eq!(passage[2..], ids(&base, "hello")[1..]);
        assert_eq!(frony.token_to_id("<Q>"), Some(250002));
        assert_eq!(frony.token_to_id("<P>"), Some(250003));
        assert_eq!(frony.get_vocab_size(true), 250004);
    }

    #[test]
    fn texts_without_the_prompt_tokens_tokenize_as_before() {
        let (base, frony) = tokenizers();
        for text in [
            "안녕하세요",
            "query: 데비안은 무엇입니까?",
            "Hello world",
            "<Q > and < P> are not the tokens, nor is <q>",
            "  spaces\tand\ttabs  ",
            "",
            "👩‍👩‍👧 emoji",
            "<mask> and <s> stay special",
        ] {
            assert_eq!(ids(&frony, text), ids(&base, text), "{text:?}");
        }
    }

    #[test]
    fn only_the_added_tokens_change_in_the_file() {
        let base = committed_xlmr_tokenizer().unwrap();
        let frony = with_added_special_tokens(&base, &FRONY_TOKENS).unwrap();
        let prefix = base.iter().zip(&frony).take_while(|(a, b)| a == b).count();
        let suffix = base
            .iter()
            .rev()
            .zip(frony.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        assert!(
            prefix + suffix >= base.len(),
            "bytes outside the insertion changed"
        );
        let inserted =
            std::str::from_utf8(&frony[prefix..frony.len() - (base.len() - prefix)]).unwrap();
        let entry = |id: u32, content: &str| {
            format!(
                ",\n    {{\n      \"id\": {id},\n      \"content\": \"{content}\",\n      \"single_word\": false,\n      \
                 \"lstrip\": false,\n      \"rstrip\": false,\n      \"normalized\": false,\n      \"special\": true\n    }}"
            )
        };
        assert_eq!(inserted, entry(250002, "<Q>") + &entry(250003, "<P>"));
    }

    #[test]
    fn the_scanner_finds_the_top_level_added_tokens_only() {
        let json = br#"{"model": {"vocab": [["added_tokens", 0.5]], "added_tokens": []},
            "x": "a\"] \\", "added_tokens" : [{"id": 1, "c": "]"}], "after": [1]}"#;
        let close = added_tokens_closing_bracket(json).unwrap();
        let text = std::str::from_utf8(json).unwrap();
        assert_eq!(close, text.find(r#"}], "after""#).unwrap() + 1);
        assert!(added_tokens_closing_bracket(br#"{"a": ["added_tokens"]}"#).is_err());
    }

    #[test]
    fn clashing_tokens_are_refused() {
        let base = committed_xlmr_tokenizer().unwrap();
        assert!(
            with_added_special_tokens(&base, &[("<Q>", 5)]).is_err(),
            "a piece id"
        );
        assert!(
            with_added_special_tokens(&base, &[("<mask>", 250002)]).is_err(),
            "an existing token"
        );
    }
}
