//! From a request's fields to tokenized texts: the input shapes clients send, the prompt
//! choice, and the per-request limits (number of inputs, tokens per input, empty input).

use koembed_embed::{Embedder, Prompt, TokenizedText};
use serde_json::Value;

use crate::error::ApiError;

/// What a client asked to embed.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    Texts(Vec<String>),
    /// Token ids as the model sees them (what `/tokenize` returns: specials included, no
    /// prompt added).
    Ids(Vec<Vec<u32>>),
}

impl Inputs {
    /// `input` (OpenAI) / `inputs` (TEI): a string, an array of strings, an array of token
    /// ids, or an array of arrays of token ids.
    pub fn parse(value: Option<&Value>, param: &'static str) -> Result<Inputs, ApiError> {
        let shape = || {
            ApiError::bad_request(format!(
                "'{param}' must be a string, an array of strings, an array of token ids or an \
                 array of arrays of token ids"
            ))
            .param(param)
        };
        let value = value
            .ok_or_else(|| ApiError::bad_request(format!("'{param}' is missing")).param(param))?;
        let items = match value {
            Value::String(s) => return Ok(Inputs::Texts(vec![s.clone()])),
            Value::Array(items) => items,
            _ => return Err(shape()),
        };
        if items.is_empty() {
            return Err(ApiError::bad_request(format!("'{param}' is an empty array")).param(param));
        }
        if items.iter().all(Value::is_string) {
            let texts = items
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect();
            return Ok(Inputs::Texts(texts));
        }
        if items.iter().all(Value::is_number) {
            return Ok(Inputs::Ids(vec![token_ids(items, param)?]));
        }
        if items.iter().all(Value::is_array) {
            let ids = items
                .iter()
                .map(|v| token_ids(v.as_array().map(Vec::as_slice).unwrap_or_default(), param))
                .collect::<Result<_, _>>()?;
            return Ok(Inputs::Ids(ids));
        }
        Err(shape())
    }

    pub fn len(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.len(),
            Inputs::Ids(i) => i.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn token_ids(items: &[Value], param: &'static str) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "'{param}': token ids must be non-negative integers, got {v}"
                    ))
                    .param(param)
                })
        })
        .collect()
}

/// The prompt of one request: `prompt_name`, else `input_type` (`query`; `passage`,
/// `document`, `search_document`; `search_query`), else the server's default.
pub fn choose_prompt(
    prompt_name: Option<&str>,
    input_type: Option<&str>,
    default: &Prompt,
) -> Result<Prompt, ApiError> {
    let from_type = match input_type {
        None => None,
        Some("query" | "search_query") => Some("query"),
        Some("passage" | "document" | "search_document") => Some("passage"),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown input_type \"{other}\": use query, passage or document"
            ))
            .param("input_type"))
        }
    };
    match (prompt_name, from_type) {
        (Some(name), Some(t)) if name != t => Err(ApiError::bad_request(format!(
            "prompt_name \"{name}\" and input_type \"{}\" disagree: give one of them",
            input_type.unwrap_or_default()
        ))
        .param("input_type")),
        (Some(name), _) | (None, Some(name)) => Ok(Prompt::Named(name.to_string())),
        (None, None) => Ok(default.clone()),
    }
}

/// What the compute thread needs for one request.
pub struct Tokenized {
    pub texts: Vec<TokenizedText>,
    /// Prompt tokens left out of pooling (see `TextTokenizer::prompt_length`).
    pub masked_prefix: usize,
    pub tokens: usize,
}

/// Tokenizes (texts) or checks (token ids) every input. A text longer than the model's
/// max_seq_length is cut when `truncate`, else refused with 413.
pub fn tokenize(
    embedder: &Embedder,
    inputs: &Inputs,
    prompt: &Prompt,
    truncate: bool,
    param: &'static str,
) -> Result<Tokenized, ApiError> {
    let max_len = embedder.tokenizer().max_seq_length();
    let too_long = |i: usize| {
        ApiError::too_large(format!(
            "{param}[{i}] is longer than this model's maximum of {max_len} tokens (prompt and \
             special tokens included); send \"truncate\": true to cut it"
        ))
        .param(param)
        .code("input_too_long")
    };
    let empty = |i: usize| ApiError::bad_request(format!("{param}[{i}] is empty")).param(param);
    let (texts, masked_prefix) = match inputs {
        Inputs::Texts(texts) => {
            let literal = embedder
                .resolve_prompt(prompt)
                .map_err(|e| ApiError::bad_request(e.to_string()).param("prompt_name"))?;
            let masked_prefix = match &literal {
                Some(p) if !embedder.model_dir().pooling.include_prompt => embedder
                    .tokenizer()
                    .prompt_length(p)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
                _ => 0,
            };
            let mut out = Vec::with_capacity(texts.len());
            for (i, text) in texts.iter().enumerate() {
                if text.is_empty() {
                    return Err(empty(i));
                }
                let t = embedder
                    .tokenize(text, prompt)
                    .map_err(|e| ApiError::bad_request(format!("{param}[{i}]: {e}")))?;
                if t.truncated && !truncate {
                    return Err(too_long(i));
                }
                out.push(t);
            }
            (out, masked_prefix)
        }
        Inputs::Ids(ids) => {
            let vocab = embedder.tokenizer().vocab_size();
            let mut out = Vec::with_capacity(ids.len());
            for (i, ids) in ids.iter().enumerate() {
                if ids.is_empty() {
                    return Err(empty(i));
                }
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(ApiError::bad_request(format!(
                        "{param}[{i}]: token id {bad} is outside this model's vocabulary of \
                         {vocab}"
                    ))
                    .param(param));
                }
                let truncated = ids.len() > max_len;
                if truncated && !truncate {
                    return Err(too_long(i));
                }
                out.push(TokenizedText {
                    ids: ids[..ids.len().min(max_len)].to_vec(),
                    truncated,
                });
            }
            (out, 0)
        }
    };
    let tokens = texts.iter().map(|t| t.ids.len()).sum();
    Ok(Tokenized {
        texts,
        masked_prefix,
        tokens,
    })
}

/// Normalize and Matryoshka cut of one raw vector, the steps `Embedder::embed_tokenized` takes
/// after Dense: the model's Normalize module unless `normalize == Some(false)`, the cut, then
/// a final normalization when asked for (`Some(true)`) or when a normalized vector was cut.
pub fn finish(
    mut v: Vec<f32>,
    model_normalizes: bool,
    normalize: Option<bool>,
    dim: Option<usize>,
) -> Vec<f32> {
    let normalize_module = model_normalizes && normalize != Some(false);
    let normalize_final = normalize == Some(true) || (normalize_module && dim.is_some());
    if normalize_module {
        koembed_embed::pool::l2_normalize(&mut v);
    }
    if let Some(d) = dim {
        v.truncate(d);
    }
    if normalize_final {
        koembed_embed::pool::l2_normalize(&mut v);
    }
    v
}

/// Checks `dimensions` against the model's.
pub fn check_dimensions(
    dimensions: Option<u64>,
    model_dim: usize,
) -> Result<Option<usize>, ApiError> {
    match dimensions {
        None => Ok(None),
        Some(d) if d >= 1 && d <= model_dim as u64 => Ok(Some(d as usize)),
        Some(d) => Err(ApiError::bad_request(format!(
            "dimensions {d} is out of range: this model's vectors have {model_dim} dimensions \
             (allowed: 1..={model_dim})"
        ))
        .param("dimensions")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_input_shape_parses() {
        let p = |v: Value| Inputs::parse(Some(&v), "input");
        assert_eq!(p(json!("a")).unwrap(), Inputs::Texts(vec!["a".into()]));
        assert_eq!(
            p(json!(["a", "b"])).unwrap(),
            Inputs::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            p(json!([0, 5, 2])).unwrap(),
            Inputs::Ids(vec![vec![0, 5, 2]])
        );
        assert_eq!(
            p(json!([[0, 2], [0, 7, 2]])).unwrap(),
            Inputs::Ids(vec![vec![0, 2], vec![0, 7, 2]])
        );
        for bad in [
            json!(5),
            json!(["a", 1]),
            json!([-1]),
            json!([1.5]),
            json!({}),
            json!([]),
        ] {
            let err = p(bad.clone()).unwrap_err();
            assert_eq!(err.status, 400, "{bad}");
            assert_eq!(err.param, Some("input"));
        }
        assert_eq!(Inputs::parse(None, "inputs").unwrap_err().status, 400);
    }

    #[test]
    fn prompt_name_and_input_type_agree_or_fail() {
        let d = Prompt::None;
        assert_eq!(choose_prompt(None, None, &d).unwrap(), Prompt::None);
        assert_eq!(
            choose_prompt(None, Some("document"), &d).unwrap(),
            Prompt::Named("passage".into())
        );
        assert_eq!(
            choose_prompt(Some("query"), Some("query"), &d).unwrap(),
            Prompt::Named("query".into())
        );
        assert!(choose_prompt(Some("query"), Some("passage"), &d).is_err());
        assert!(choose_prompt(None, Some("banana"), &d).is_err());
    }

    #[test]
    fn a_cut_normalized_vector_is_renormalized() {
        let v = finish(vec![3.0, 4.0, 12.0], true, None, Some(2));
        assert!(
            (v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6,
            "{v:?}"
        );
        let raw = finish(vec![3.0, 4.0, 12.0], true, Some(false), Some(2));
        assert_eq!(raw, vec![3.0, 4.0]);
        assert_eq!(check_dimensions(Some(0), 4).unwrap_err().status, 400);
        assert_eq!(check_dimensions(Some(5), 4).unwrap_err().status, 400);
        assert_eq!(check_dimensions(Some(4), 4).unwrap(), Some(4));
    }
}
