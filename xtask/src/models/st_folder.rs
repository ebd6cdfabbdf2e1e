//! A sentence-transformers model folder: the pipeline files around model.safetensors, the build
//! record that says the folder is complete, and the build-aside-then-rename that guarantees a
//! half-built folder never looks complete.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Written last into a finished folder.
pub const BUILD_RECORD: &str = ".koembed-build.json";

/// The pipeline of every model built here: the encoder, mean pooling, then L2 normalization.
pub struct Pipeline<'a> {
    pub hidden: usize,
    /// (name, prompt) pairs for config_sentence_transformers.json's `prompts`.
    pub prompts: &'a [(&'a str, &'a str)],
    /// Extra keys for config_sentence_transformers.json (sentence-transformers ignores them).
    pub extra_config: Vec<(&'a str, Value)>,
}

/// Writes modules.json, sentence_bert_config.json, 1_Pooling/config.json and
/// config_sentence_transformers.json; returns their paths relative to `dir`.
pub fn write_pipeline(dir: &Path, pipeline: &Pipeline) -> anyhow::Result<Vec<String>> {
    let module = |idx: usize, path: &str, kind: &str| {
        let kind = format!("sentence_transformers.models.{kind}");
        json!({"idx": idx, "name": idx.to_string(), "path": path, "type": kind})
    };
    let modules = json!([
        module(0, "", "Transformer"),
        module(1, "1_Pooling", "Pooling"),
        module(2, "2_Normalize", "Normalize")
    ]);
    let prompts: serde_json::Map<String, Value> = pipeline
        .prompts
        .iter()
        .map(|&(name, prompt)| (name.to_string(), json!(prompt)))
        .collect();
    let mut st_config = json!({
        "__version__": {"sentence_transformers": "4.1.0", "transformers": "4.51.3"},
        "prompts": prompts,
        "default_prompt_name": null,
        "similarity_fn_name": "cosine",
    });
    for (key, value) in &pipeline.extra_config {
        st_config[*key] = value.clone();
    }
    let files = [
        ("modules.json", pretty_json(&modules)?),
        (
            "sentence_bert_config.json",
            pretty_json(&json!({"max_seq_length": 512, "do_lower_case": false}))?,
        ),
        (
            "1_Pooling/config.json",
            pretty_json(&MeanPooling::new(pipeline.hidden))?,
        ),
        (
            "config_sentence_transformers.json",
            pretty_json(&st_config)?,
        ),
    ];
    for (path, bytes) in &files {
        write_file(&dir.join(path), bytes)?;
    }
    Ok(files.iter().map(|(path, _)| path.to_string()).collect())
}

/// 1_Pooling/config.json with every key sentence-transformers 4.x writes, in its order: mean
/// over all tokens (special tokens and the prompt included).
#[derive(Serialize)]
struct MeanPooling {
    word_embedding_dimension: usize,
    pooling_mode_cls_token: bool,
    pooling_mode_mean_tokens: bool,
    pooling_mode_max_tokens: bool,
    pooling_mode_mean_sqrt_len_tokens: bool,
    pooling_mode_weightedmean_tokens: bool,
    pooling_mode_lasttoken: bool,
    include_prompt: bool,
}

impl MeanPooling {
    fn new(dimension: usize) -> Self {
        MeanPooling {
            word_embedding_dimension: dimension,
            pooling_mode_cls_token: false,
            pooling_mode_mean_tokens: true,
            pooling_mode_max_tokens: false,
            pooling_mode_mean_sqrt_len_tokens: false,
            pooling_mode_weightedmean_tokens: false,
            pooling_mode_lasttoken: false,
            include_prompt: true,
        }
    }
}

/// Pretty JSON (2 spaces) and a final newline.
fn pretty_json(value: &impl Serialize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    write_file(path, &pretty_json(value)?)
}

pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// What was built; stored as the build record and printed in the summary table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BuildRecord {
    pub builder_version: u32,
    pub model: String,
    pub architecture: String,
    pub dtype: String,
    pub safetensors_bytes: u64,
    pub safetensors_sha256: String,
    /// Every file of the folder, relative to it (the record itself excluded).
    pub files: Vec<String>,
}

/// The folder's build record if the folder is complete and built by this builder version,
/// else why it must be (re)built.
pub fn completed_build(
    dir: &Path,
    model: &str,
    builder_version: u32,
) -> Result<BuildRecord, String> {
    let record_path = dir.join(BUILD_RECORD);
    let text = fs::read_to_string(&record_path).map_err(|_| "not built yet".to_string())?;
    let record: BuildRecord =
        serde_json::from_str(&text).map_err(|e| format!("unreadable build record ({e})"))?;
    if record.model != model {
        return Err(format!("the folder holds {}", record.model));
    }
    if record.builder_version != builder_version {
        return Err(format!(
            "built by builder version {}, this is {builder_version}",
            record.builder_version
        ));
    }
    if let Some(missing) = record.files.iter().find(|f| !dir.join(f).is_file()) {
        return Err(format!("{missing} is missing"));
    }
    let size = fs::metadata(dir.join("model.safetensors"))
        .map(|m| m.len())
        .unwrap_or(0);
    if size != record.safetensors_bytes {
        return Err(format!(
            "model.safetensors has {size} bytes, the build record says {}",
            record.safetensors_bytes
        ));
    }
    Ok(record)
}

pub fn write_build_record(dir: &Path, record: &BuildRecord) -> anyhow::Result<()> {
    write_json(&dir.join(BUILD_RECORD), record)
}

/// An empty folder to build `name` in, private to this process (`<name>.tmp.<pid>`), so two
/// builds running at once never write into the same folder. Leftovers of builds that died are
/// removed first.
pub fn fresh_build_dir(models_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    remove_dead_build_dirs(models_dir, name);
    let dir = models_dir.join(format!("{name}.tmp.{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn remove_dead_build_dirs(models_dir: &Path, name: &str) {
    // Only where /proc tells which processes are alive; elsewhere leftovers stay (harmless).
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!("{name}.tmp.");
    let Ok(entries) = fs::read_dir(models_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Moves the finished `build_dir` to `final_dir`, replacing whatever was there (an incomplete
/// or outdated build, or a complete one under `--force`). The old folder is moved aside first
/// and deleted after, so `final_dir` is missing only between two renames.
pub fn install(build_dir: &Path, final_dir: &Path) -> anyhow::Result<()> {
    ensure!(
        build_dir.join(BUILD_RECORD).is_file(),
        "{} has no build record",
        build_dir.display()
    );
    let name = final_dir
        .file_name()
        .context("the model folder has no name")?
        .to_string_lossy();
    let aside = final_dir.with_file_name(format!("{name}.old.{}", std::process::id()));
    let had_old = final_dir.exists();
    if had_old {
        fs::rename(final_dir, &aside)
            .with_context(|| format!("moving {} aside", final_dir.display()))?;
    }
    fs::rename(build_dir, final_dir).with_context(|| {
        format!(
            "renaming {} to {}",
            build_dir.display(),
            final_dir.display()
        )
    })?;
    if had_old {
        fs::remove_dir_all(&aside).with_context(|| format!("removing {}", aside.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("koembed-st-folder-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(files: Vec<String>) -> BuildRecord {
        BuildRecord {
            builder_version: 3,
            model: "m".into(),
            architecture: "BertModel".into(),
            dtype: "F32".into(),
            safetensors_bytes: 4,
            safetensors_sha256: "x".into(),
            files,
        }
    }

    #[test]
    fn a_folder_is_complete_only_with_its_record_and_files() {
        let models = scratch("complete");
        let build = fresh_build_dir(&models, "m").unwrap();
        let files = write_pipeline(
            &build,
            &Pipeline {
                hidden: 8,
                prompts: &[("query", "query: ")],
                extra_config: vec![],
            },
        )
        .unwrap();
        write_file(&build.join("model.safetensors"), b"1234").unwrap();
        let final_dir = models.join("m");
        let mut all = files.clone();
        all.push("model.safetensors".into());
        assert!(completed_build(&build, "m", 3).is_err(), "no record yet");
        write_build_record(&build, &record(all.clone())).unwrap();
        install(&build, &final_dir).unwrap();
        assert!(!build.exists());
        assert_eq!(
            completed_build(&final_dir, "m", 3).unwrap(),
            record(all.clone())
        );
        assert!(completed_build(&final_dir, "m", 4)
            .unwrap_err()
            .contains("builder version"));
        assert!(completed_build(&final_dir, "other", 3).is_err());

        let pooling: Value =
            serde_json::from_slice(&fs::read(final_dir.join("1_Pooling/config.json")).unwrap())
                .unwrap();
        assert_eq!(pooling["pooling_mode_mean_tokens"], true);
        assert_eq!(pooling["include_prompt"], true);
        assert_eq!(pooling.as_object().unwrap().len(), 8);
        let text = fs::read_to_string(final_dir.join("1_Pooling/config.json")).unwrap();
        assert!(
            text.starts_with("{\n  \"word_embedding_dimension\": 8,"),
            "{text}"
        );
        let st: Value = serde_json::from_slice(
            &fs::read(final_dir.join("config_sentence_transformers.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(st["prompts"]["query"], "query: ");
        assert_eq!(st["default_prompt_name"], Value::Null);

        // Reinstalling over a complete folder replaces it; a truncated weight file is incomplete.
        let build = fresh_build_dir(&models, "m").unwrap();
        write_file(&build.join("model.safetensors"), b"12").unwrap();
        write_build_record(&build, &record(vec!["model.safetensors".into()])).unwrap();
        install(&build, &final_dir).unwrap();
        assert!(completed_build(&final_dir, "m", 3)
            .unwrap_err()
            .contains("2 bytes"));
        fs::remove_dir_all(&models).unwrap();
    }
}
