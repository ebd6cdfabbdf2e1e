//! Which files of a sentence-transformers repo koembed fetches, and when a snapshot holds all
//! it needs.
//!
//! Each module folder (the repo root is the Transformer's, unless modules.json says otherwise)
//! gives its small files ([`METADATA`]) and, for Transformer and Dense modules, safetensors
//! weights: `model.safetensors`, or `model.safetensors.index.json` and the shards it names.
//! Other weight formats (pytorch_model.bin, onnx/, openvino/, *.h5, *.msgpack) are never fetched.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// The small files fetched from every module folder, when the repo has them.
pub const METADATA: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "README.md",
];

/// Files that change the vectors when present (pooling, prompts, sequence length), so a snapshot
/// is complete only when each is there or known to be absent (a `.no_exist` marker, as
/// huggingface_hub leaves when the hub has no such file).
pub const DECISIVE: &[&str] = &[
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    Transformer,
    Pooling,
    Dense,
    Other,
}

/// A module of the pipeline and its folder, relative to the snapshot (`""` for the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub dir: String,
    pub kind: ModuleKind,
}

/// The modules listed in the snapshot's modules.json; just a root Transformer without one.
/// (A modules.json that does not parse is left for the model loader to report.)
pub fn modules(snapshot: &Path) -> Vec<Module> {
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        path: String,
        #[serde(rename = "type")]
        kind: String,
    }
    let root = vec![Module {
        dir: String::new(),
        kind: ModuleKind::Transformer,
    }];
    let Ok(text) = std::fs::read_to_string(snapshot.join("modules.json")) else {
        return root;
    };
    let Ok(entries) = serde_json::from_str::<Vec<Entry>>(&text) else {
        return root;
    };
    entries
        .into_iter()
        .filter(|e| crate::cache::is_safe_file_name(&e.path) || e.path.is_empty())
        .map(|e| {
            let kind = match e.kind.rsplit('.').next().unwrap_or_default() {
                "Transformer" => ModuleKind::Transformer,
                "Pooling" => ModuleKind::Pooling,
                "Dense" => ModuleKind::Dense,
                _ => ModuleKind::Other,
            };
            Module {
                dir: e.path.trim_end_matches('/').to_string(),
                kind,
            }
        })
        .collect()
}

/// `dir/file`, or `file` for the root.
pub fn join(dir: &str, file: &str) -> String {
    if dir.is_empty() {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

/// A module folder's small files the repo has (with the weight index when there is no single
/// weights file), and the decisive ones it lacks.
pub fn folder_files(dir: &str, repo_files: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for name in METADATA {
        let file = join(dir, name);
        if repo_files.contains(&file) {
            present.push(file);
        } else if DECISIVE.contains(name) {
            absent.push(file);
        }
    }
    let index = join(dir, WEIGHTS_INDEX);
    if !repo_files.contains(&join(dir, WEIGHTS)) && repo_files.contains(&index) {
        present.push(index);
    }
    (present, absent)
}

/// The weight files of a module folder: `model.safetensors`, or the shards named by the index
/// already in the snapshot.
pub fn weight_files(snapshot: &Path, dir: &str, repo_files: &BTreeSet<String>) -> Vec<String> {
    let single = join(dir, WEIGHTS);
    if repo_files.contains(&single) {
        return vec![single];
    }
    shards(snapshot, dir)
        .into_iter()
        .filter(|f| repo_files.contains(f))
        .collect()
}

/// The shard files `dir/model.safetensors.index.json` names (its `weight_map` values).
fn shards(snapshot: &Path, dir: &str) -> BTreeSet<String> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    std::fs::read_to_string(snapshot.join(join(dir, WEIGHTS_INDEX)))
        .ok()
        .and_then(|text| serde_json::from_str::<Index>(&text).ok())
        .map(|index| {
            index
                .weight_map
                .into_values()
                .map(|shard| join(dir, &shard))
                .collect()
        })
        .unwrap_or_default()
}

/// True when the repo has safetensors weights somewhere koembed would look.
pub fn has_safetensors(repo_files: &BTreeSet<String>) -> bool {
    repo_files.iter().any(|f| {
        let name = f.rsplit('/').next().unwrap_or(f);
        (name == WEIGHTS || name == WEIGHTS_INDEX)
            && !f.starts_with("onnx/")
            && !f.starts_with("openvino/")
    })
}

/// The repo's weight files of any format, for saying what it has instead of safetensors.
pub fn weight_like(repo_files: &BTreeSet<String>) -> Vec<String> {
    const EXTENSIONS: &[&str] = &[
        ".bin",
        ".safetensors",
        ".onnx",
        ".h5",
        ".msgpack",
        ".pt",
        ".pth",
        ".ckpt",
        ".gguf",
        ".ot",
        ".xml",
    ];
    repo_files
        .iter()
        .filter(|f| EXTENSIONS.iter().any(|ext| f.ends_with(ext)))
        .cloned()
        .collect()
}

/// What koembed needs and the snapshot lacks: empty when the snapshot is complete.
pub fn missing(snapshot: &Path, no_exist: &Path) -> Vec<String> {
    let has = |f: &str| snapshot.join(f).is_file();
    let known = |f: &str| has(f) || no_exist.join(f).is_file();
    let mut missing = Vec::new();
    let mut need = |f: String, ok: bool| {
        if !ok {
            missing.push(f);
        }
    };
    let sentence_transformers = has("modules.json");
    need("modules.json".into(), known("modules.json"));
    if sentence_transformers {
        need(
            "config_sentence_transformers.json".into(),
            known("config_sentence_transformers.json"),
        );
    }
    for module in modules(snapshot) {
        let file = |name: &str| join(&module.dir, name);
        match module.kind {
            ModuleKind::Transformer => {
                for name in ["config.json", "tokenizer.json"] {
                    need(file(name), has(&file(name)));
                }
                if sentence_transformers {
                    let config = file("sentence_bert_config.json");
                    need(config.clone(), known(&config));
                }
                if !has(&file(WEIGHTS)) {
                    if has(&file(WEIGHTS_INDEX)) {
                        for shard in shards(snapshot, &module.dir) {
                            need(shard.clone(), has(&shard));
                        }
                    } else {
                        need(file(WEIGHTS), false);
                    }
                }
            }
            ModuleKind::Pooling => need(file("config.json"), has(&file("config.json"))),
            ModuleKind::Dense => {
                need(file("config.json"), has(&file("config.json")));
                need(file(WEIGHTS), has(&file(WEIGHTS)));
            }
            ModuleKind::Other => {}
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const MODULES: &str = r#"[
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]"#;

    #[test]
    fn a_snapshot_is_complete_with_configs_tokenizer_weights_and_pooling() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, no_exist) = (dir.path().join("snap"), dir.path().join("no_exist"));
        assert_eq!(
            missing(&snap, &no_exist),
            ["modules.json", "config.json", "tokenizer.json", WEIGHTS]
        );
        write(&snap, "modules.json", MODULES);
        for file in [
            "config.json",
            "tokenizer.json",
            "sentence_bert_config.json",
            WEIGHTS,
        ] {
            write(&snap, file, "{}");
        }
        assert_eq!(
            missing(&snap, &no_exist),
            ["config_sentence_transformers.json", "1_Pooling/config.json"]
        );
        write(&no_exist, "config_sentence_transformers.json", "");
        write(&snap, "1_Pooling/config.json", "{}");
        assert!(missing(&snap, &no_exist).is_empty());
    }

    #[test]
    fn sharded_weights_need_every_shard() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, no_exist) = (dir.path().join("snap"), dir.path().join("no_exist"));
        write(&no_exist, "modules.json", "");
        for file in [
            "config.json",
            "tokenizer.json",
            "model-00001-of-00002.safetensors",
        ] {
            write(&snap, file, "{}");
        }
        let index = r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
        write(&snap, WEIGHTS_INDEX, index);
        assert_eq!(
            missing(&snap, &no_exist),
            ["model-00002-of-00002.safetensors"]
        );
    }

    #[test]
    fn picks_files_from_a_listing() {
        let files: BTreeSet<String> = [
            "config.json",
            "modules.json",
            "pytorch_model.bin",
            "onnx/model.onnx",
            WEIGHTS_INDEX,
            "README.md",
        ]
        .map(String::from)
        .into();
        let (present, absent) = folder_files("", &files);
        assert_eq!(
            present,
            ["config.json", "modules.json", "README.md", WEIGHTS_INDEX]
        );
        assert_eq!(
            absent,
            [
                "sentence_bert_config.json",
                "config_sentence_transformers.json"
            ]
        );
        assert!(has_safetensors(&files));
        let only_bin: BTreeSet<String> = ["config.json", "pytorch_model.bin", "onnx/model.onnx"]
            .map(String::from)
            .into();
        assert!(!has_safetensors(&only_bin));
        assert_eq!(
            weight_like(&only_bin),
            ["onnx/model.onnx", "pytorch_model.bin"]
        );
    }
}
