//! A sentence-transformers model folder: which modules run, in what order, with what settings.
//!
//! Reads `modules.json`, `sentence_bert_config.json`, the Pooling / Dense module configs and
//! `config_sentence_transformers.json`. A bare Hugging Face folder (no `modules.json`) gets the
//! conventional pipeline: mean pooling, no normalization, and a warning saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::EmbedError;
use crate::pool::{PoolingConfig, PoolingMode};

/// An activation a Dense module may apply after its linear map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseActivation {
    Identity,
    Tanh,
}

/// A sentence-transformers `Dense` module (a linear map after pooling).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseModule {
    pub dir: PathBuf,
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub activation: DenseActivation,
}

/// Everything the pipeline reads from the model folder, decided once at load.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDir {
    pub root: PathBuf,
    /// The folder holding config.json, the weights and tokenizer.json.
    pub transformer_dir: PathBuf,
    /// `max_seq_length` from sentence_bert_config.json; `None` means "the model's limit".
    pub max_seq_length: Option<usize>,
    pub do_lower_case: bool,
    pub pooling: PoolingConfig,
    pub dense: Vec<DenseModule>,
    pub normalize: bool,
    /// Named prompts from config_sentence_transformers.json (`query` -> `"query: "`).
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
    /// Matryoshka dimensions the model documents (koembed reads `matryoshka_dims` from
    /// config_sentence_transformers.json); informational: any cut is allowed.
    pub matryoshka_dims: Vec<usize>,
    /// False for a bare Hugging Face folder (defaults were assumed).
    pub is_sentence_transformers: bool,
    /// Things the user should know about how the folder was read (e.g. assumed defaults).
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default = "default_dense_activation")]
    activation_function: String,
}

fn yes() -> bool {
    true
}

fn default_dense_activation() -> String {
    // sentence-transformers' Dense defaults to Tanh when the config does not say.
    "torch.nn.modules.activation.Tanh".to_string()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| EmbedError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn config_err(path: &Path, reason: impl Into<String>) -> EmbedError {
    EmbedError::Config {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl ModelDir {
    pub fn read(root: &Path) -> Result<Self, EmbedError> {
        if !root.is_dir() {
            return Err(EmbedError::NotAModelDir {
                path: root.to_path_buf(),
                reason: "no such folder".into(),
            });
        }
        let modules_path = root.join("modules.json");
        if !modules_path.is_file() {
            return Self::bare(root);
        }
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        let mut transformer_dir = None;
        let mut pooling = None;
        let mut dense = Vec::new();
        let mut normalize = false;
        let mut warnings = Vec::new();
        for module in &modules {
            let dir = root.join(&module.path);
            let short = module.kind.rsplit('.').next().unwrap_or(&module.kind);
            match short {
                "Transformer" => {
                    if transformer_dir.is_some() || pooling.is_some() {
                        return Err(config_err(
                            &modules_path,
                            "Transformer must be the first and only encoder module",
                        ));
                    }
                    transformer_dir = Some(dir);
                }
                "Pooling" => {
                    if transformer_dir.is_none() {
                        return Err(config_err(
                            &modules_path,
                            "Pooling comes before any Transformer module",
                        ));
                    }
                    pooling = Some(read_pooling(&dir.join("config.json"))?);
                }
                "Dense" => {
                    if pooling.is_none() {
                        return Err(config_err(&modules_path, "Dense comes before Pooling"));
                    }
                    dense.push(read_dense(&dir)?);
                }
                "Normalize" => normalize = true,
                other => {
                    return Err(config_err(
                        &modules_path,
                        format!(
                            "unsupported module type \"{}\" ({other}); koembed runs Transformer, \
                             Pooling, Dense and Normalize",
                            module.kind
                        ),
                    ))
                }
            }
        }
        let transformer_dir =
            transformer_dir.ok_or_else(|| config_err(&modules_path, "no Transformer module"))?;
        let pooling = match pooling {
            Some(p) => p,
            None => {
                warnings.push(format!(
                    "{} lists no Pooling module: using mean pooling",
                    modules_path.display()
                ));
                PoolingConfig::mean()
            }
        };
        let st_config_path = transformer_dir.join("sentence_bert_config.json");
        let st_config: SentenceBertConfig = if st_config_path.is_file() {
            read_json(&st_config_path)?
        } else {
            SentenceBertConfig::default()
        };
        let mut dir = ModelDir {
            root: root.to_path_buf(),
            transformer_dir,
            max_seq_length: st_config.max_seq_length,
            do_lower_case: st_config.do_lower_case,
            pooling,
            dense,
            normalize,
            prompts: BTreeMap::new(),
            default_prompt_name: None,
            matryoshka_dims: Vec::new(),
            is_sentence_transformers: true,
            warnings,
        };
        dir.read_prompts(&root.join("config_sentence_transformers.json"))?;
        Ok(dir)
    }

    /// A folder with only config.json, weights and a tokenizer: what sentence-transformers does
    /// with one (mean pooling, no normalization).
    fn bare(root: &Path) -> Result<Self, EmbedError> {
        if !root.join("config.json").is_file() {
            return Err(EmbedError::NotAModelDir {
                path: root.to_path_buf(),
                reason: "it has neither modules.json nor config.json".into(),
            });
        }
        Ok(ModelDir {
            root: root.to_path_buf(),
            transformer_dir: root.to_path_buf(),
            max_seq_length: None,
            do_lower_case: false,
            pooling: PoolingConfig::mean(),
            dense: Vec::new(),
            normalize: false,
            prompts: BTreeMap::new(),
            default_prompt_name: None,
            matryoshka_dims: Vec::new(),
            is_sentence_transformers: false,
            warnings: vec![format!(
                "{} has no modules.json (not a sentence-transformers model): using mean pooling \
                 without normalization, as sentence-transformers does",
                root.display()
            )],
        })
    }

    fn read_prompts(&mut self, path: &Path) -> Result<(), EmbedError> {
        if !path.is_file() {
            return Ok(());
        }
        let value: Value = read_json(path)?;
        if let Some(prompts) = value.get("prompts") {
            let prompts = prompts
                .as_object()
                .ok_or_else(|| config_err(path, "`prompts` is not an object"))?;
            for (name, prompt) in prompts {
                let prompt = prompt
                    .as_str()
                    .ok_or_else(|| config_err(path, format!("`prompts.{name}` is not a string")))?;
                self.prompts.insert(name.clone(), prompt.to_string());
            }
        }
        match value.get("default_prompt_name") {
            None | Some(Value::Null) => {}
            Some(Value::String(name)) => {
                if !self.prompts.contains_key(name) {
                    return Err(config_err(
                        path,
                        format!("`default_prompt_name` \"{name}\" is not one of the prompts"),
                    ));
                }
                self.default_prompt_name = Some(name.clone());
            }
            Some(_) => return Err(config_err(path, "`default_prompt_name` is not a string")),
        }
        if let Some(dims) = value.get("matryoshka_dims") {
            let dims = dims
                .as_array()
                .ok_or_else(|| config_err(path, "`matryoshka_dims` is not an array"))?;
            for d in dims {
                let d = d.as_u64().filter(|&d| d > 0).ok_or_else(|| {
                    config_err(path, "`matryoshka_dims` holds a non-positive number")
                })?;
                self.matryoshka_dims.push(d as usize);
            }
        }
        Ok(())
    }
}

fn read_pooling(path: &Path) -> Result<PoolingConfig, EmbedError> {
    let value: Value = read_json(path)?;
    let flag = |key: &str| -> Result<bool, EmbedError> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(config_err(path, format!("`{key}` is not true or false"))),
        }
    };
    // The order sentence-transformers concatenates modes in.
    let mut modes = Vec::new();
    if flag("pooling_mode_cls_token")? {
        modes.push(PoolingMode::Cls);
    }
    if flag("pooling_mode_max_tokens")? {
        modes.push(PoolingMode::Max);
    }
    if flag("pooling_mode_mean_tokens")? {
        modes.push(PoolingMode::Mean);
    }
    if flag("pooling_mode_mean_sqrt_len_tokens")? {
        modes.push(PoolingMode::MeanSqrtLen);
    }
    if flag("pooling_mode_weightedmean_tokens")? {
        modes.push(PoolingMode::WeightedMean);
    }
    if flag("pooling_mode_lasttoken")? {
        modes.push(PoolingMode::LastToken);
    }
    if modes.is_empty() {
        return Err(config_err(path, "no pooling mode is set to true"));
    }
    let include_prompt = match value.get("include_prompt") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(config_err(path, "`include_prompt` is not true or false")),
    };
    let word_embedding_dimension = value
        .get("word_embedding_dimension")
        .and_then(Value::as_u64)
        .map(|d| d as usize);
    Ok(PoolingConfig {
        modes,
        include_prompt,
        word_embedding_dimension,
    })
}

fn read_dense(dir: &Path) -> Result<DenseModule, EmbedError> {
    let path = dir.join("config.json");
    let config: DenseConfig = read_json(&path)?;
    let activation = match config.activation_function.as_str() {
        "torch.nn.modules.linear.Identity" => DenseActivation::Identity,
        "torch.nn.modules.activation.Tanh" => DenseActivation::Tanh,
        other => {
            return Err(config_err(
                &path,
                format!(
                "unsupported `activation_function` \"{other}\" (koembed runs Identity and Tanh)"
            ),
            ))
        }
    };
    Ok(DenseModule {
        dir: dir.to_path_buf(),
        in_features: config.in_features,
        out_features: config.out_features,
        bias: config.bias,
        activation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("koembed-modeldir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const MODULES: &str = r#"[
      {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
      {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
      {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
      {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]"#;

    fn sentence_transformers_dir(name: &str) -> PathBuf {
        let dir = temp_dir(name);
        write(&dir.join("config.json"), "{}");
        write(&dir.join("modules.json"), MODULES);
        write(
            &dir.join("sentence_bert_config.json"),
            r#"{"max_seq_length": 128, "do_lower_case": true}"#,
        );
        write(
            &dir.join("1_Pooling/config.json"),
            r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true,
                "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
                "pooling_mode_mean_sqrt_len_tokens": false, "include_prompt": false}"#,
        );
        write(
            &dir.join("2_Dense/config.json"),
            r#"{"in_features": 768, "out_features": 256, "bias": true,
                "activation_function": "torch.nn.modules.linear.Identity"}"#,
        );
        write(
            &dir.join("config_sentence_transformers.json"),
            r#"{"prompts": {"query": "<Q>", "passage": "<P>"}, "default_prompt_name": "query",
                "matryoshka_dims": [384, 192]}"#,
        );
        dir
    }

    #[test]
    fn reads_every_sentence_transformers_file() {
        let dir = sentence_transformers_dir("full");
        let m = ModelDir::read(&dir).unwrap();
        assert_eq!(m.transformer_dir, dir.join(""));
        assert_eq!(m.max_seq_length, Some(128));
        assert!(m.do_lower_case);
        assert_eq!(m.pooling.modes, vec![PoolingMode::Cls, PoolingMode::Mean]);
        assert!(!m.pooling.include_prompt);
        assert_eq!(m.dense.len(), 1);
        assert_eq!(m.dense[0].out_features, 256);
        assert_eq!(m.dense[0].activation, DenseActivation::Identity);
        assert!(m.normalize);
        assert_eq!(m.prompts["query"], "<Q>");
        assert_eq!(m.default_prompt_name.as_deref(), Some("query"));
        assert_eq!(m.matryoshka_dims, vec![384, 192]);
        assert!(m.warnings.is_empty());
    }

    #[test]
    fn bare_huggingface_dir_gets_mean_pooling_and_a_warning() {
        let dir = temp_dir("bare");
        write(&dir.join("config.json"), "{}");
        let m = ModelDir::read(&dir).unwrap();
        assert!(!m.is_sentence_transformers);
        assert_eq!(m.pooling.modes, vec![PoolingMode::Mean]);
        assert!(!m.normalize);
        assert_eq!(m.warnings.len(), 1);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let dir = sentence_transformers_dir("bad-activation");
        write(
            &dir.join("2_Dense/config.json"),
            r#"{"in_features": 768, "out_features": 256, "activation_function": "torch.nn.modules.activation.ReLU"}"#,
        );
        let err = ModelDir::read(&dir).unwrap_err().to_string();
        assert!(err.contains("2_Dense") && err.contains("ReLU"), "{err}");

        let dir = sentence_transformers_dir("bad-default-prompt");
        write(
            &dir.join("config_sentence_transformers.json"),
            r#"{"prompts": {"query": "q: "}, "default_prompt_name": "document"}"#,
        );
        let err = ModelDir::read(&dir).unwrap_err().to_string();
        assert!(
            err.contains("config_sentence_transformers.json") && err.contains("document"),
            "{err}"
        );

        let dir = sentence_transformers_dir("no-pooling-mode");
        write(
            &dir.join("1_Pooling/config.json"),
            r#"{"pooling_mode_mean_tokens": false}"#,
        );
        let err = ModelDir::read(&dir).unwrap_err().to_string();
        assert!(
            err.contains("1_Pooling") && err.contains("pooling mode"),
            "{err}"
        );

        let dir = sentence_transformers_dir("broken-json");
        write(&dir.join("modules.json"), "[{");
        let err = ModelDir::read(&dir).unwrap_err().to_string();
        assert!(err.contains("modules.json"), "{err}");

        let err = ModelDir::read(Path::new("/nonexistent/model"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/model"), "{err}");
    }
}
