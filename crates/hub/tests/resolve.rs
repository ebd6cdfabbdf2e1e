//! `resolve_model` against a local hub-shaped server (tests/fake_hub): cache hits, downloads into
//! the huggingface_hub cache layout, revisions, resume after a broken transfer, and the errors.
#![cfg(unix)] // the cache layout under test is made of symlinks

mod fake_hub;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fake_hub::{dead_endpoint, FakeFile, FakeHub, Faults, Repo, Tree};
use koembed_hub::{resolve_model, HubError, ResolveOptions};

const REPO: &str = "test-org/tiny-model";
const MAIN: &str = "1111111111111111111111111111111111111111";
const OLD: &str = "2222222222222222222222222222222222222222";
const V2: &str = "3333333333333333333333333333333333333333";
const BIN_ONLY: &str = "4444444444444444444444444444444444444444";
const SHARDED: &str = "5555555555555555555555555555555555555555";
const WEIGHTS_LEN: usize = 300_000;

const MODULES: &str = r#"[
  {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
]"#;

fn text(s: &str) -> FakeFile {
    FakeFile {
        data: s.as_bytes().to_vec(),
        lfs: false,
    }
}

/// Deterministic bytes that differ per `seed`.
fn bytes(seed: u8, len: usize) -> FakeFile {
    let data = (0..len)
        .map(|i| ((i as u64 * 2654435761) >> 7) as u8 ^ seed)
        .collect();
    FakeFile { data, lfs: true }
}

/// A sentence-transformers repo at one commit; `version` makes commits differ.
fn tiny_model(version: u8) -> Tree {
    let mut tree = Tree::new();
    let config =
        format!(r#"{{"model_type": "xlm-roberta", "hidden_size": 8, "version": {version}}}"#);
    tree.insert("config.json".into(), text(&config));
    tree.insert(
        "tokenizer.json".into(),
        text(&format!(
            r#"{{"version": "1.0", "pad": "{}"}}"#,
            "x".repeat(5000)
        )),
    );
    tree.insert(
        "tokenizer_config.json".into(),
        text(r#"{"model_max_length": 512}"#),
    );
    tree.insert(
        "special_tokens_map.json".into(),
        text(r#"{"pad_token": "<pad>"}"#),
    );
    tree.insert("modules.json".into(), text(MODULES));
    tree.insert(
        "sentence_bert_config.json".into(),
        text(r#"{"max_seq_length": 512, "do_lower_case": false}"#),
    );
    tree.insert(
        "config_sentence_transformers.json".into(),
        text(r#"{"prompts": {"query": "query: "}}"#),
    );
    tree.insert("README.md".into(), text("# tiny model\n"));
    tree.insert(
        "1_Pooling/config.json".into(),
        text(r#"{"pooling_mode_mean_tokens": true}"#),
    );
    tree.insert("model.safetensors".into(), bytes(version, WEIGHTS_LEN));
    tree.insert("pytorch_model.bin".into(), bytes(version ^ 0x55, 1000));
    tree.insert("onnx/model.onnx".into(), bytes(version ^ 0x66, 1000));
    tree.insert(".gitattributes".into(), text("*.safetensors filter=lfs\n"));
    tree
}

/// The files koembed should fetch from `tiny_model` (not pytorch_model.bin, onnx/, .gitattributes).
const FETCHED: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "README.md",
    "1_Pooling/config.json",
    "model.safetensors",
];

fn repos() -> BTreeMap<String, Repo> {
    let mut repos = BTreeMap::new();
    let mut tiny = Repo::default();
    tiny.refs.insert("main".into(), MAIN.into());
    tiny.refs.insert("v2".into(), V2.into());
    tiny.commits.insert(MAIN.into(), tiny_model(1));
    tiny.commits.insert(OLD.into(), tiny_model(2));
    tiny.commits.insert(V2.into(), tiny_model(3));
    repos.insert(REPO.to_string(), tiny);

    let mut bin_only = Repo::default();
    bin_only.refs.insert("main".into(), BIN_ONLY.into());
    let mut tree = Tree::new();
    tree.insert("config.json".into(), text("{}"));
    tree.insert("tokenizer.json".into(), text("{}"));
    tree.insert("pytorch_model.bin".into(), bytes(9, 100));
    bin_only.commits.insert(BIN_ONLY.into(), tree);
    repos.insert("test-org/bin-only".to_string(), bin_only);

    let mut sharded = Repo::default();
    sharded.refs.insert("main".into(), SHARDED.into());
    let mut tree = Tree::new();
    tree.insert("config.json".into(), text("{}"));
    tree.insert("tokenizer.json".into(), text("{}"));
    let index = r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
    tree.insert("model.safetensors.index.json".into(), text(index));
    tree.insert("model-00001-of-00002.safetensors".into(), bytes(10, 5000));
    tree.insert("model-00002-of-00002.safetensors".into(), bytes(11, 7000));
    tree.insert("pytorch_model.bin".into(), bytes(12, 100));
    sharded.commits.insert(SHARDED.into(), tree);
    repos.insert("test-org/sharded".to_string(), sharded);
    repos
}

fn start(faults: Faults) -> FakeHub {
    FakeHub::start(repos(), faults)
}

/// Options that read nothing from the environment.
fn options(endpoint: &str, cache: &Path) -> ResolveOptions {
    ResolveOptions {
        progress: false,
        endpoint: Some(endpoint.to_string()),
        cache_dir: Some(cache.to_path_buf()),
        token: Some(String::new()),
        offline: Some(false),
    }
}

fn offline(cache: &Path) -> ResolveOptions {
    ResolveOptions {
        offline: Some(true),
        ..options(&dead_endpoint(), cache)
    }
}

fn repo_dir(cache: &Path) -> PathBuf {
    cache.join("models--test-org--tiny-model")
}

fn file_of(commit: &str, name: &str) -> FakeFile {
    let mut repos = repos();
    let mut tree = repos.get_mut(REPO).unwrap().commits.remove(commit).unwrap();
    tree.remove(name).unwrap()
}

/// Files directly in blobs/ (names only).
fn blob_names(cache: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(repo_dir(cache).join("blobs")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn exists_at_all(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Writes the cache the way huggingface_hub (Python) does: blobs named by etag, relative
/// symlinks from the snapshot, refs/main.
fn populate_like_python(cache: &Path, files: &[&str]) {
    let repo = repo_dir(cache);
    let tree = tiny_model(1);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), MAIN).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    for name in files {
        let file = &tree[*name];
        std::fs::write(repo.join("blobs").join(file.etag()), &file.data).unwrap();
        let link = repo.join("snapshots").join(MAIN).join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let up = "../".repeat(name.matches('/').count() + 2);
        std::os::unix::fs::symlink(format!("{up}blobs/{}", file.etag()), link).unwrap();
    }
}

fn assert_same_bytes(snapshot: &Path, commit: &str, files: &[&str]) {
    for name in files {
        let got = std::fs::read(snapshot.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            got == file_of(commit, name).data,
            "{name} differs from the served file"
        );
    }
}

#[test]
fn local_folder_is_returned_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().to_str().unwrap();
    let got = resolve_model(spec, &options(&dead_endpoint(), dir.path())).unwrap();
    assert_eq!(got, dir.path());
}

#[test]
fn a_missing_path_that_is_no_hub_id_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    std::fs::write(&file, b"x").unwrap();
    let missing = dir.path().join("no/such/model");
    for (spec, reason) in [
        (missing.to_str().unwrap(), "no such folder"),
        ("./models/KoE5", "no such folder"),
        ("KoE5", "no such folder"),
        (file.to_str().unwrap(), "it is a file"),
    ] {
        let err = resolve_model(spec, &options(&dead_endpoint(), dir.path())).unwrap_err();
        assert!(matches!(err, HubError::NotAModel { .. }), "{spec}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(spec) && msg.contains(reason) && msg.contains("org/name"),
            "{msg}"
        );
    }
}

#[test]
fn a_python_populated_cache_resolves_without_a_server() {
    let cache = tempfile::tempdir().unwrap();
    populate_like_python(cache.path(), FETCHED);
    let expected = repo_dir(cache.path()).join("snapshots").join(MAIN);
    let online_but_down = options(&dead_endpoint(), cache.path());
    assert_eq!(resolve_model(REPO, &online_but_down).unwrap(), expected);
    assert_eq!(
        resolve_model(REPO, &offline(cache.path())).unwrap(),
        expected
    );
    assert_eq!(
        resolve_model(&format!("{REPO}@{MAIN}"), &offline(cache.path())).unwrap(),
        expected
    );
}

#[test]
fn downloads_a_missing_model_into_the_huggingface_cache_layout() {
    let hub = start(Faults::default());
    let cache = tempfile::tempdir().unwrap();
    let snapshot = resolve_model(REPO, &options(&hub.endpoint, cache.path())).unwrap();
    let repo = repo_dir(cache.path());
    assert_eq!(snapshot, repo.join("snapshots").join(MAIN));
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        MAIN
    );
    assert_same_bytes(&snapshot, MAIN, FETCHED);
    for name in FETCHED {
        let link = std::fs::read_link(snapshot.join(name))
            .unwrap_or_else(|e| panic!("{name} is no symlink: {e}"));
        let up = "../".repeat(name.matches('/').count() + 2);
        assert_eq!(
            link,
            PathBuf::from(format!("{up}blobs/{}", file_of(MAIN, name).etag())),
            "{name}"
        );
    }
    // LFS blobs are named by their sha256; nothing half-written remains.
    let weights = file_of(MAIN, "model.safetensors");
    assert!(repo.join("blobs").join(weights.sha256()).is_file());
    assert!(blob_names(cache.path())
        .iter()
        .all(|b| !b.ends_with(".incomplete")));
    for skipped in ["pytorch_model.bin", "onnx/model.onnx", ".gitattributes"] {
        assert!(
            !exists_at_all(&snapshot.join(skipped)),
            "{skipped} was downloaded"
        );
    }
    let requests = hub.requests();
    assert!(requests
        .iter()
        .all(|r| !r.path.contains("pytorch_model.bin") && !r.path.contains("onnx")));
    assert!(
        requests.iter().all(|r| r.header("authorization").is_none()),
        "no token was configured"
    );

    let count = hub.request_count();
    assert_eq!(
        resolve_model(REPO, &options(&hub.endpoint, cache.path())).unwrap(),
        snapshot
    );
    assert_eq!(
        hub.request_count(),
        count,
        "a second resolve must not touch the network"
    );
    assert_eq!(
        resolve_model(REPO, &offline(cache.path())).unwrap(),
        snapshot
    );
}

#[test]
fn a_partial_python_cache_gets_only_the_missing_files() {
    // What `AutoModel.from_pretrained` leaves: no modules.json, so pooling would be guessed.
    let cache = tempfile::tempdir().unwrap();
    populate_like_python(
        cache.path(),
        &["config.json", "tokenizer.json", "model.safetensors"],
    );
    let err = resolve_model(REPO, &offline(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("modules.json") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );

    let hub = start(Faults::default());
    let snapshot = resolve_model(REPO, &options(&hub.endpoint, cache.path())).unwrap();
    assert_same_bytes(&snapshot, MAIN, FETCHED);
    let requests = hub.requests();
    assert!(requests
        .iter()
        .all(|r| !r.path.ends_with("/model.safetensors") && !r.path.starts_with("/cdn/")));
    assert!(requests.iter().any(|r| r.path.ends_with("/modules.json")));
}

#[test]
fn revisions_name_a_branch_or_a_commit() {
    let hub = start(Faults::default());
    let cache = tempfile::tempdir().unwrap();
    let repo = repo_dir(cache.path());

    let branch =
        resolve_model(&format!("{REPO}@v2"), &options(&hub.endpoint, cache.path())).unwrap();
    assert_eq!(branch, repo.join("snapshots").join(V2));
    assert_eq!(std::fs::read_to_string(repo.join("refs/v2")).unwrap(), V2);
    assert_same_bytes(&branch, V2, FETCHED);

    let commit = resolve_model(
        &format!("{REPO}@{OLD}"),
        &options(&hub.endpoint, cache.path()),
    )
    .unwrap();
    assert_eq!(commit, repo.join("snapshots").join(OLD));
    assert_same_bytes(&commit, OLD, FETCHED);
    assert!(
        !repo.join("refs").join(OLD).exists(),
        "a commit is not a ref"
    );
    assert!(!repo.join("refs/main").exists(), "main was never asked for");
    assert_ne!(
        std::fs::read(commit.join("config.json")).unwrap(),
        std::fs::read(branch.join("config.json")).unwrap()
    );
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.path == format!("/api/models/{REPO}/revision/{OLD}")));

    let count = hub.request_count();
    resolve_model(&format!("{REPO}@v2"), &options(&hub.endpoint, cache.path())).unwrap();
    resolve_model(
        &format!("{REPO}@{OLD}"),
        &options(&hub.endpoint, cache.path()),
    )
    .unwrap();
    assert_eq!(hub.request_count(), count);
}

#[test]
fn a_broken_transfer_keeps_the_partial_blob_and_resumes_with_a_range_request() {
    let cut = 100_000;
    let hub = start(Faults {
        cut: Some(("model.safetensors".into(), cut)),
        ..Faults::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let weights = file_of(MAIN, "model.safetensors");
    let repo = repo_dir(cache.path());
    let blob = repo.join("blobs").join(weights.sha256());
    let partial = repo
        .join("blobs")
        .join(format!("{}.incomplete", weights.sha256()));
    let in_snapshot = repo.join("snapshots").join(MAIN).join("model.safetensors");

    let err = resolve_model(REPO, &options(&hub.endpoint, cache.path())).unwrap_err();
    assert!(
        matches!(err, HubError::Interrupted { received, .. } if received == cut as u64),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains(REPO) && msg.contains("resumes"),
        "{msg}"
    );
    assert!(
        !exists_at_all(&in_snapshot),
        "a half-written file is in the snapshot"
    );
    assert!(
        !exists_at_all(&blob),
        "a half-written blob has its final name"
    );
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), cut as u64);

    let snapshot = resolve_model(REPO, &options(&hub.endpoint, cache.path())).unwrap();
    let last_get = hub
        .requests()
        .into_iter()
        .rfind(|r| r.method == "GET" && r.path.starts_with("/cdn/"))
        .unwrap();
    assert_eq!(
        last_get.header("range"),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_same_bytes(&snapshot, MAIN, FETCHED);
    assert!(!exists_at_all(&partial));
}

#[test]
fn an_unknown_repo_or_revision_is_named_in_the_error() {
    let hub = start(Faults::default());
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model(
        "test-org/no-such-model",
        &options(&hub.endpoint, cache.path()),
    )
    .unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("test-org/no-such-model")
            && msg.contains("not found")
            && msg.contains("HF_TOKEN"),
        "{msg}"
    );
    assert!(msg.contains("private"), "{msg}");

    let err = resolve_model(
        &format!("{REPO}@no-such-branch"),
        &options(&hub.endpoint, cache.path()),
    )
    .unwrap_err();
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(REPO) && msg.contains("no-such-branch"),
        "{msg}"
    );
}

#[test]
fn a_file_the_hub_does_not_serve_is_named_in_the_error() {
    let hub = start(Faults {
        hidden: Some("tokenizer.json".into()),
        ..Faults::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model(REPO, &options(&hub.endpoint, cache.path())).unwrap_err();
    assert!(matches!(err, HubError::FileNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains(REPO) && msg.contains(MAIN),
        "{msg}"
    );
    assert!(!exists_at_all(
        &repo_dir(cache.path())
            .join("snapshots")
            .join(MAIN)
            .join("tokenizer.json")
    ));
}

#[test]
fn a_size_that_does_not_match_leaves_nothing_complete_looking() {
    for file in ["model.safetensors", "tokenizer.json"] {
        let hub = start(Faults {
            size_lie: Some((file.into(), 10)),
            ..Faults::default()
        });
        let cache = tempfile::tempdir().unwrap();
        let err = resolve_model(REPO, &options(&hub.endpoint, cache.path())).unwrap_err();
        assert!(
            matches!(err, HubError::SizeMismatch { .. }),
            "{file}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(file) && msg.contains(REPO), "{msg}");
        let etag = file_of(MAIN, file).etag();
        assert!(!exists_at_all(
            &repo_dir(cache.path())
                .join("snapshots")
                .join(MAIN)
                .join(file)
        ));
        assert!(
            blob_names(cache.path())
                .iter()
                .all(|b| !b.starts_with(&etag)),
            "{:?}",
            blob_names(cache.path())
        );
    }
}

#[test]
fn corrupt_lfs_bytes_fail_the_sha256_check() {
    let hub = start(Faults {
        corrupt: Some("model.safetensors".into()),
        ..Faults::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model(REPO, &options(&hub.endpoint, cache.path())).unwrap_err();
    assert!(matches!(err, HubError::HashMismatch { .. }), "{err:?}");
    let sha = file_of(MAIN, "model.safetensors").sha256();
    assert!(err.to_string().contains(&sha), "{err}");
    assert!(!exists_at_all(
        &repo_dir(cache.path())
            .join("snapshots")
            .join(MAIN)
            .join("model.safetensors")
    ));
    assert!(blob_names(cache.path())
        .iter()
        .all(|b| !b.starts_with(&sha)));
}

#[test]
fn the_token_is_sent_as_a_bearer_header() {
    let hub = start(Faults {
        token: Some("hf_secret".into()),
        ..Faults::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model(REPO, &options(&hub.endpoint, cache.path())).unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    let with_token = ResolveOptions {
        token: Some("hf_secret".into()),
        ..options(&hub.endpoint, cache.path())
    };
    let snapshot = resolve_model(REPO, &with_token).unwrap();
    assert_same_bytes(&snapshot, MAIN, FETCHED);
    let hub_requests: Vec<_> = hub
        .requests()
        .into_iter()
        .skip(1)
        .filter(|r| !r.path.starts_with("/cdn/"))
        .collect();
    assert!(hub_requests.len() > 10);
    for r in hub_requests {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer hf_secret"),
            "{} {}",
            r.method,
            r.path
        );
    }
}

#[test]
fn offline_with_a_model_not_in_the_cache_says_so_and_stays_off_the_network() {
    let hub = start(Faults::default());
    let cache = tempfile::tempdir().unwrap();
    let options = ResolveOptions {
        offline: Some(true),
        ..options(&hub.endpoint, cache.path())
    };
    let err = resolve_model(REPO, &options).unwrap_err();
    assert!(matches!(err, HubError::NotInCache { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(REPO)
            && msg.contains("not in the Hugging Face cache")
            && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );
    assert!(msg.contains("refs/main"), "{msg}");
    assert_eq!(hub.request_count(), 0);
}

#[test]
fn a_repo_without_safetensors_is_refused() {
    let hub = start(Faults::default());
    let cache = tempfile::tempdir().unwrap();
    let err =
        resolve_model("test-org/bin-only", &options(&hub.endpoint, cache.path())).unwrap_err();
    assert!(matches!(err, HubError::NoSafetensors { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("test-org/bin-only")
            && msg.contains("safetensors")
            && msg.contains("pytorch_model.bin"),
        "{msg}"
    );
    assert_eq!(hub.request_count(), 1, "only the revision API is asked");
}

#[test]
fn sharded_weights_are_fetched_from_their_index() {
    let hub = start(Faults::default());
    let cache = tempfile::tempdir().unwrap();
    let snapshot =
        resolve_model("test-org/sharded", &options(&hub.endpoint, cache.path())).unwrap();
    for file in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(snapshot.join(file).is_file(), "{file}");
    }
    assert!(!exists_at_all(&snapshot.join("pytorch_model.bin")));
    // The repo has no modules.json: recorded, so the snapshot counts as complete offline.
    let marker = cache
        .path()
        .join("models--test-org--sharded/.no_exist")
        .join(SHARDED)
        .join("modules.json");
    assert!(marker.is_file());
    assert_eq!(
        resolve_model("test-org/sharded", &offline(cache.path())).unwrap(),
        snapshot
    );
}
