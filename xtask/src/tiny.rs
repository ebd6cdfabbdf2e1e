//! `cargo xtask tiny`: the tiny random models committed under `testdata/tiny/`.
//!
//! Two complete sentence-transformers folders, a few hundred KB each, with seeded deterministic
//! weights (splitmix64) in f32 safetensors under the standard Hugging Face tensor names:
//!
//! - `tiny-bert`: BertModel, 2 layers, hidden 40, 5 heads, FFN 72, eps 1e-12, 64 positions,
//!   2 token types; mean pooling without the prompt (`include_prompt: false`), Normalize;
//!   prompts `query: ` / `passage: `.
//! - `tiny-xlmr`: XLMRobertaModel, 2 layers, hidden 48, 3 heads, FFN 100, eps 1e-5, 66 positions
//!   (64 tokens, ids start at padding_idx + 1 = 2), 1 token type, pad 1; CLS pooling and no
//!   Normalize module, so raw vectors are compared.
//!
//! Both carry a reduced copy of the XLM-R Unigram tokenizer (testdata/xlmr-tokenizer): the same
//! normalizer, pre-tokenizer, post-processor and decoder, the specials, and a subset of the pieces
//! renumbered densely (see [`reduce_tokenizer`]). Regenerating gives identical bytes (a test
//! checks it), so the goldens exported on these folders stay valid.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

use crate::paths;

#[derive(clap::Args, Default)]
pub struct Args {
    /// Write the models into this folder instead of testdata/tiny/.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let out = args
        .out
        .unwrap_or_else(|| paths::testdata_dir().join("tiny"));
    let written = generate(&paths::testdata_dir(), &out)?;
    for (name, bytes) in written {
        println!("tiny: {} ({} KB)", out.join(name).display(), bytes / 1024);
    }
    Ok(())
}

/// How many of the most frequent regular pieces (ids 4, 5, ...) every tiny tokenizer keeps on
/// top of the pieces the golden texts need.
const FIRST_REGULAR_PIECES: usize = 600;
/// The tiny models' max_seq_length; the tokenizer keeps every piece that the full tokenizer puts
/// in the first this-many tokens of a golden text (with and without the prompts).
const MAX_SEQ_LENGTH: usize = 64;
/// The prompts the golden texts are tokenized with (tiny-bert's, and the e5 convention).
const PROMPTS: [&str; 2] = ["query: ", "passage: "];

#[derive(Clone, Copy, PartialEq)]
enum Arch {
    Bert,
    XlmRoberta,
}

#[derive(Clone, Copy, PartialEq)]
enum Pooling {
    /// Mean over the tokens, prompt tokens excluded.
    MeanWithoutPrompt,
    Cls,
}

struct Spec {
    name: &'static str,
    arch: Arch,
    layers: usize,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    layer_norm_eps: f64,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    pad_token_id: u32,
    pooling: Pooling,
    normalize: bool,
    prompts: &'static [(&'static str, &'static str)],
    with_pooler: bool,
    seed: u64,
}

const SPECS: [Spec; 2] = [
    Spec {
        name: "tiny-bert",
        arch: Arch::Bert,
        layers: 2,
        hidden: 40,
        heads: 5,
        intermediate: 72,
        layer_norm_eps: 1e-12,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        // As multilingual-e5-small's BertModel config says; BertModel does not use it.
        pad_token_id: 0,
        pooling: Pooling::MeanWithoutPrompt,
        normalize: true,
        prompts: &[("query", "query: "), ("passage", "passage: ")],
        with_pooler: true,
        seed: 0x6b6f_656d_6265_6401,
    },
    Spec {
        name: "tiny-xlmr",
        arch: Arch::XlmRoberta,
        layers: 2,
        hidden: 48,
        heads: 3,
        intermediate: 100,
        layer_norm_eps: 1e-5,
        max_position_embeddings: 66,
        type_vocab_size: 1,
        pad_token_id: 1,
        pooling: Pooling::Cls,
        normalize: false,
        prompts: &[],
        // No pooler: sentence-transformers does not use it (transformers initializes it).
        with_pooler: false,
        seed: 0x6b6f_656d_6265_6402,
    },
];

/// Generates both tiny models from `testdata` (texts + full tokenizer) into `out`.
/// Returns (folder name, total bytes) per model.
pub fn generate(testdata: &Path, out: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let full_path = testdata.join("xlmr-tokenizer/tokenizer.json");
    let full_json: Value = serde_json::from_slice(
        &fs::read(&full_path).with_context(|| format!("reading {}", full_path.display()))?,
    )?;
    let full = tokenizers::Tokenizer::from_file(&full_path)
        .map_err(|e| anyhow::anyhow!("loading {}: {e}", full_path.display()))?;
    let texts = read_texts(&testdata.join("golden/texts.jsonl"))?;
    let keep = pieces_to_keep(&full, &full_json, &texts)?;
    let tokenizer_json = reduce_tokenizer(&full_json, &keep)?;
    let vocab_size = keep.len();

    let mut written = Vec::new();
    for spec in &SPECS {
        let dir = out.join(spec.name);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(dir.join("1_Pooling"))?;
        let mut files: Vec<(&str, Vec<u8>)> = vec![
            ("tokenizer.json", tokenizer_json.clone().into_bytes()),
            ("tokenizer_config.json", tokenizer_config(&tokenizer_json)?),
            ("config.json", model_config(spec, vocab_size)),
            (
                "sentence_bert_config.json",
                pretty(&json!({"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": false})),
            ),
            ("config_sentence_transformers.json", st_config(spec)),
            ("modules.json", modules(spec)),
            ("1_Pooling/config.json", pooling_config(spec)),
            ("model.safetensors", weights(spec, vocab_size)?),
        ];
        files.push(("README.md", readme(spec, vocab_size).into_bytes()));
        let mut total = 0;
        for (name, bytes) in files {
            total += bytes.len() as u64;
            fs::write(dir.join(name), bytes).with_context(|| format!("writing {name}"))?;
        }
        written.push((spec.name.to_string(), total));
    }
    Ok(written)
}

fn read_texts(path: &Path) -> anyhow::Result<Vec<String>> {
    let data = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut texts = Vec::new();
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)?;
        let text = v["text"]
            .as_str()
            .context("texts.jsonl: a line without \"text\"")?;
        texts.push(text.to_string());
    }
    Ok(texts)
}

/// Python's `str.strip()` (what sentence-transformers' Transformer.tokenize applies to every
/// text): Rust's White_Space plus U+001C..U+001F.
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// The old ids kept in the reduced vocabulary: the specials, `<mask>`, every piece the full
/// tokenizer emits in the first [`MAX_SEQ_LENGTH`] tokens of a golden text (raw and stripped,
/// with and without each prompt), the first [`FIRST_REGULAR_PIECES`] regular pieces, and the
/// lowest-scoring piece (Unigram scores `<unk>` at min score - 10: keeping the minimum keeps
/// the unknown penalty, hence the segmentation, the same as the full tokenizer's).
fn pieces_to_keep(
    full: &tokenizers::Tokenizer,
    full_json: &Value,
    texts: &[String],
) -> anyhow::Result<BTreeSet<u32>> {
    let vocab = full_json["model"]["vocab"]
        .as_array()
        .context("model.vocab")?;
    let mut keep: BTreeSet<u32> = (0..4).collect();
    for t in full_json["added_tokens"]
        .as_array()
        .context("added_tokens")?
    {
        keep.insert(t["id"].as_u64().context("added token id")? as u32);
    }
    keep.extend((4..4 + FIRST_REGULAR_PIECES as u32).take_while(|&i| (i as usize) < vocab.len()));
    let min_piece = (4..vocab.len())
        .filter(|&i| vocab[i][0].as_str() != Some("<mask>"))
        .min_by(|&a, &b| {
            let (sa, sb) = (vocab[a][1].as_f64().unwrap(), vocab[b][1].as_f64().unwrap());
            sa.total_cmp(&sb).then(a.cmp(&b))
        })
        .context("empty vocabulary")?;
    keep.insert(min_piece as u32);
    for text in texts {
        for prompt in std::iter::once("").chain(PROMPTS) {
            let joined = format!("{prompt}{text}");
            for input in [joined.as_str(), python_strip(&joined)] {
                let enc = full
                    .encode(input, true)
                    .map_err(|e| anyhow::anyhow!("tokenizing {input:?}: {e}"))?;
                keep.extend(enc.get_ids().iter().take(MAX_SEQ_LENGTH));
            }
        }
    }
    Ok(keep)
}

/// The full tokenizer.json with only the pieces in `keep` (old ids), renumbered densely in old-id
/// order; added tokens and the post-processor's special-token ids follow the renumbering.
/// Serialized by the tokenizers crate itself (compact), so the bytes are canonical.
pub fn reduce_tokenizer(full_json: &Value, keep: &BTreeSet<u32>) -> anyhow::Result<String> {
    let new_id = |old: u64| -> anyhow::Result<u64> {
        let pos = keep.range(..old as u32).count();
        ensure!(
            keep.contains(&(old as u32)),
            "id {old} is referenced but not kept"
        );
        Ok(pos as u64)
    };
    let mut t = full_json.clone();
    let vocab = t["model"]["vocab"].as_array().context("model.vocab")?;
    let reduced: Vec<Value> = keep.iter().map(|&i| vocab[i as usize].clone()).collect();
    t["model"]["vocab"] = Value::Array(reduced);
    let unk = t["model"]["unk_id"].as_u64().context("model.unk_id")?;
    t["model"]["unk_id"] = json!(new_id(unk)?);
    for added in t["added_tokens"].as_array_mut().context("added_tokens")? {
        let old = added["id"].as_u64().context("added token id")?;
        added["id"] = json!(new_id(old)?);
    }
    let specials = t["post_processor"]["special_tokens"]
        .as_object_mut()
        .context("post_processor.special_tokens")?;
    for special in specials.values_mut() {
        for id in special["ids"].as_array_mut().context("special ids")? {
            *id = json!(new_id(id.as_u64().context("special id")?)?);
        }
    }
    // Check that the pieces still sit at their new ids, then let the crate serialize it.
    let tok: tokenizers::Tokenizer = serde_json::to_string(&t)?
        .parse()
        .map_err(|e| anyhow::anyhow!("the reduced tokenizer does not load: {e}"))?;
    for (new, &old) in keep.iter().enumerate() {
        let piece = full_json["model"]["vocab"][old as usize][0]
            .as_str()
            .unwrap_or_default();
        ensure!(
            tok.token_to_id(piece) == Some(new as u32),
            "piece {piece:?} not at id {new}"
        );
    }
    tok.to_string(false)
        .map_err(|e| anyhow::anyhow!("serializing the tokenizer: {e}"))
}

/// tokenizer_config.json as transformers 4.51 writes it for XLMRobertaTokenizer, with the
/// added tokens at their new ids.
fn tokenizer_config(tokenizer_json: &str) -> anyhow::Result<Vec<u8>> {
    let t: Value = serde_json::from_str(tokenizer_json)?;
    let mut decoder = serde_json::Map::new();
    for added in t["added_tokens"].as_array().context("added_tokens")? {
        let mut entry = added.clone();
        let id = entry.as_object_mut().unwrap().remove("id").context("id")?;
        decoder.insert(id.to_string(), entry);
    }
    Ok(pretty(&json!({
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": true,
        "cls_token": "<s>",
        "eos_token": "</s>",
        "extra_special_tokens": {},
        "mask_token": "<mask>",
        "model_max_length": MAX_SEQ_LENGTH,
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "tokenizer_class": "XLMRobertaTokenizer",
        "unk_token": "<unk>",
    })))
}

fn model_config(spec: &Spec, vocab_size: usize) -> Vec<u8> {
    let mut c = json!({
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": null,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": spec.hidden,
        "initializer_range": 0.02,
        "intermediate_size": spec.intermediate,
        "layer_norm_eps": spec.layer_norm_eps,
        "max_position_embeddings": spec.max_position_embeddings,
        "num_attention_heads": spec.heads,
        "num_hidden_layers": spec.layers,
        "pad_token_id": spec.pad_token_id,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": "4.51.3",
        "type_vocab_size": spec.type_vocab_size,
        "use_cache": true,
        "vocab_size": vocab_size,
    });
    match spec.arch {
        Arch::Bert => {
            c["architectures"] = json!(["BertModel"]);
            c["model_type"] = json!("bert");
        }
        Arch::XlmRoberta => {
            c["architectures"] = json!(["XLMRobertaModel"]);
            c["model_type"] = json!("xlm-roberta");
            c["bos_token_id"] = json!(0);
            c["eos_token_id"] = json!(2);
        }
    }
    pretty(&c)
}

fn st_config(spec: &Spec) -> Vec<u8> {
    let prompts: serde_json::Map<String, Value> = spec
        .prompts
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    pretty(&json!({
        "__version__": {"sentence_transformers": "4.1.0", "transformers": "4.51.3", "pytorch": "2.6.0"},
        "prompts": prompts,
        "default_prompt_name": null,
        "similarity_fn_name": "cosine",
        "model_type": "SentenceTransformer",
    }))
}

fn modules(spec: &Spec) -> Vec<u8> {
    let mut m = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if spec.normalize {
        m.push(json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
    }
    pretty(&Value::Array(m))
}

fn pooling_config(spec: &Spec) -> Vec<u8> {
    let (cls, mean, include_prompt) = match spec.pooling {
        Pooling::MeanWithoutPrompt => (false, true, false),
        Pooling::Cls => (true, false, true),
    };
    pretty(&json!({
        "word_embedding_dimension": spec.hidden,
        "pooling_mode_cls_token": cls,
        "pooling_mode_mean_tokens": mean,
        "pooling_mode_max_tokens": false,
        "pooling_mode_mean_sqrt_len_tokens": false,
        "pooling_mode_weightedmean_tokens": false,
        "pooling_mode_lasttoken": false,
        "include_prompt": include_prompt,
    }))
}

fn readme(spec: &Spec, vocab_size: usize) -> String {
    let arch = match spec.arch {
        Arch::Bert => "BertModel",
        Arch::XlmRoberta => "XLMRobertaModel",
    };
    format!(
        "# {name}\n\nA tiny random {arch} for tests, written by `cargo xtask tiny` (xtask/src/tiny.rs): \
         do not edit, regenerate. {layers} layers, hidden {hidden}, {heads} heads, FFN {ffn}, \
         vocab {vocab_size} (a reduced XLM-R Unigram tokenizer), max_seq_length {msl}. \
         Seeded uniform weights (splitmix64, seed {seed:#x}); the vectors mean nothing.\n",
        name = spec.name,
        layers = spec.layers,
        hidden = spec.hidden,
        heads = spec.heads,
        ffn = spec.intermediate,
        msl = MAX_SEQ_LENGTH,
        seed = spec.seed,
    )
}

/// Pretty JSON with object keys sorted and a final newline, independent of serde_json's map
/// features (feature unification across the workspace must not change committed bytes).
fn pretty(v: &Value) -> Vec<u8> {
    fn write(v: &Value, indent: usize, out: &mut String) {
        let pad = |n: usize| "  ".repeat(n);
        match v {
            Value::Object(map) if !map.is_empty() => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push_str("{\n");
                for (i, k) in keys.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push_str(": ");
                    write(&map[k.as_str()], indent + 1, out);
                    out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push('}');
            }
            Value::Array(items) if !items.is_empty() => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    write(item, indent + 1, out);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push(']');
            }
            other => out.push_str(&serde_json::to_string(other).unwrap()),
        }
    }
    let mut out = String::new();
    write(v, 0, &mut out);
    out.push('\n');
    out.into_bytes()
}

/// splitmix64: a tiny, well-mixed, seedable generator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), on a 2^-23 grid (exact in f32).
    fn symmetric(&mut self) -> f32 {
        ((self.next() >> 40) as f32) / (1u64 << 23) as f32 - 1.0
    }
}

/// A generator per tensor, seeded from the model's seed and the tensor's name, so that adding a
/// tensor never changes the others.
fn rng_for(seed: u64, name: &str) -> SplitMix64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut r = SplitMix64(seed ^ h);
    r.next();
    r
}

/// How a tensor's values are drawn: `center + scale * u`, u uniform in [-1, 1).
#[derive(Clone, Copy)]
struct Init {
    center: f32,
    scale: f32,
}

fn weights(spec: &Spec, vocab_size: usize) -> anyhow::Result<Vec<u8>> {
    let h = spec.hidden;
    let f = spec.intermediate;
    // Matrices ~ U(-1/sqrt(fan_in), ..) * sqrt(3): unit-ish variance through each layer, so the
    // attention is far from uniform and the FFN far from linear (bugs show in the outputs).
    let mat = |fan_in: usize| Init {
        center: 0.0,
        scale: (3.0 / fan_in as f32).sqrt(),
    };
    let bias = Init {
        center: 0.0,
        scale: 0.1,
    };
    let ln_w = Init {
        center: 1.0,
        scale: 0.2,
    };
    let ln_b = Init {
        center: 0.0,
        scale: 0.2,
    };
    let emb = Init {
        center: 0.0,
        scale: 1.0,
    };

    let mut tensors: Vec<(String, Vec<usize>, Init)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![vocab_size, h],
            emb,
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![spec.max_position_embeddings, h],
            emb,
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![spec.type_vocab_size, h],
            emb,
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h], ln_w),
        ("embeddings.LayerNorm.bias".into(), vec![h], ln_b),
    ];
    for l in 0..spec.layers {
        let p = format!("encoder.layer.{l}");
        for (name, shape, init) in [
            ("attention.self.query.weight", vec![h, h], mat(h)),
            ("attention.self.query.bias", vec![h], bias),
            ("attention.self.key.weight", vec![h, h], mat(h)),
            ("attention.self.key.bias", vec![h], bias),
            ("attention.self.value.weight", vec![h, h], mat(h)),
            ("attention.self.value.bias", vec![h], bias),
            ("attention.output.dense.weight", vec![h, h], mat(h)),
            ("attention.output.dense.bias", vec![h], bias),
            ("attention.output.LayerNorm.weight", vec![h], ln_w),
            ("attention.output.LayerNorm.bias", vec![h], ln_b),
            ("intermediate.dense.weight", vec![f, h], mat(h)),
            ("intermediate.dense.bias", vec![f], bias),
            ("output.dense.weight", vec![h, f], mat(f)),
            ("output.dense.bias", vec![h], bias),
            ("output.LayerNorm.weight", vec![h], ln_w),
            ("output.LayerNorm.bias", vec![h], ln_b),
        ] {
            tensors.push((format!("{p}.{name}"), shape, init));
        }
    }
    if spec.with_pooler {
        tensors.push(("pooler.dense.weight".into(), vec![h, h], mat(h)));
        tensors.push(("pooler.dense.bias".into(), vec![h], bias));
    }

    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape, init) in tensors {
        let n: usize = shape.iter().product();
        let mut rng = rng_for(spec.seed, &name);
        let mut values: Vec<f32> = (0..n)
            .map(|_| init.center + init.scale * rng.symmetric())
            .collect();
        // XLM-R: the padding rows (word id pad_token_id, position padding_idx) are zero, as
        // nn.Embedding(padding_idx=1) leaves them; they are never looked up for real tokens.
        if spec.arch == Arch::XlmRoberta
            && (name == "embeddings.word_embeddings.weight"
                || name == "embeddings.position_embeddings.weight")
        {
            let row = spec.pad_token_id as usize;
            values[row * h..(row + 1) * h].fill(0.0);
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        data.push((name, shape, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                bytes,
            )?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let bytes = safetensors::serialize(views, &metadata)?;
    if bytes.is_empty() {
        bail!("empty safetensors");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("koembed-tiny-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(dir).unwrap().to_path_buf());
                }
            }
        }
        out.sort();
        out
    }

    /// Regenerating gives exactly the committed bytes (the goldens were made on them).
    #[test]
    fn tiny_models_regenerate_identically() {
        let out = temp_dir("regen");
        generate(&paths::testdata_dir(), &out).unwrap();
        let committed = paths::testdata_dir().join("tiny");
        for spec in &SPECS {
            let (a, b) = (out.join(spec.name), committed.join(spec.name));
            let (fa, fb) = (files_under(&a), files_under(&b));
            assert_eq!(
                fa, fb,
                "{}: the file lists differ (run cargo xtask tiny?)",
                spec.name
            );
            for f in fa {
                assert!(
                    fs::read(a.join(&f)).unwrap() == fs::read(b.join(&f)).unwrap(),
                    "{}/{}: regenerated bytes differ from the committed ones",
                    spec.name,
                    f.display()
                );
            }
        }
        fs::remove_dir_all(&out).unwrap();
    }

    /// The reduced tokenizer gives the same pieces as the full one on a Korean golden text whose
    /// pieces it all keeps, and stays a working Unigram tokenizer elsewhere (<unk> for the rest).
    #[test]
    fn tiny_tokenizer_matches_full_tokenizer() {
        let td = paths::testdata_dir();
        let full =
            tokenizers::Tokenizer::from_file(td.join("xlmr-tokenizer/tokenizer.json")).unwrap();
        let tiny =
            tokenizers::Tokenizer::from_file(td.join("tiny/tiny-bert/tokenizer.json")).unwrap();
        let texts = read_texts(&td.join("golden/texts.jsonl")).unwrap();
        let mut checked = 0;
        for text in &texts {
            let fe = full.encode(text.as_str(), true).unwrap();
            if fe.get_ids().len() > MAX_SEQ_LENGTH
                || !text.chars().any(|c| ('가'..='힣').contains(&c))
            {
                continue;
            }
            let te = tiny.encode(text.as_str(), true).unwrap();
            assert_eq!(
                te.get_tokens(),
                fe.get_tokens(),
                "pieces differ on {text:?}"
            );
            for (t, f) in te.get_ids().iter().zip(fe.get_ids()) {
                assert_eq!(tiny.id_to_token(*t), full.id_to_token(*f));
            }
            checked += 1;
        }
        assert!(checked >= 5, "only {checked} Korean texts checked");
        // The specials keep their ids, <mask> is last; the post-processor adds <s> ... </s>.
        let vocab = tiny.get_vocab_size(true) as u32;
        assert_eq!(tiny.token_to_id("<s>"), Some(0));
        assert_eq!(tiny.token_to_id("<pad>"), Some(1));
        assert_eq!(tiny.token_to_id("</s>"), Some(2));
        assert_eq!(tiny.token_to_id("<unk>"), Some(3));
        assert_eq!(tiny.token_to_id("<mask>"), Some(vocab - 1));
        let e = tiny.encode("질문 <mask> 뷁뷁", true).unwrap();
        assert_eq!(e.get_ids().first(), Some(&0));
        assert_eq!(e.get_ids().last(), Some(&2));
        assert!(e.get_ids().contains(&(vocab - 1)));
        assert!(e.get_ids().contains(&3), "{:?}", e.get_tokens());
    }

    #[test]
    fn python_strip_matches_str_strip() {
        assert_eq!(python_strip(" \t\n\u{3000}a b\u{a0}\u{1f}"), "a b");
        assert_eq!(python_strip("\u{200b}x\u{200b}"), "\u{200b}x\u{200b}");
        assert_eq!(python_strip(" \u{85} "), "");
    }
}
