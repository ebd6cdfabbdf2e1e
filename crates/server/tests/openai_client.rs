//! The official `openai` Python client against the server, unchanged: installed with pip into
//! a venv under target/ (kept for later runs). Without network the test fails: it does not
//! skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use koembed_embed::Prompt;
use koembed_server::ServerConfig;

/// The client version the test pins.
const OPENAI_VERSION: &str = "1.109.1";

const SCRIPT: &str = r#"
import json, sys
import openai

client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2])
texts = json.loads(sys.argv[3])
# No encoding_format: the client asks for base64 and decodes it itself.
default = client.embeddings.create(model="e5-small", input=texts)
floats = client.embeddings.create(
    model="e5-small", input=texts, encoding_format="float", dimensions=128,
    extra_body={"input_type": "query"},
)
one = client.embeddings.create(model="e5-small", input=texts[0])
try:
    client.embeddings.create(model="e5-small", input=texts, dimensions=4096)
    bad = None
except openai.BadRequestError as e:
    bad = {"status": e.status_code, "message": e.message}
wrong_key = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="wrong", max_retries=0)
try:
    wrong_key.embeddings.create(model="e5-small", input="a")
    unauthorized = None
except openai.AuthenticationError as e:
    unauthorized = e.status_code
print(json.dumps({
    "version": openai.__version__,
    "default": [d.embedding for d in default.data],
    "floats": [d.embedding for d in floats.data],
    "one": [d.embedding for d in one.data],
    "usage": [default.usage.prompt_tokens, default.usage.total_tokens],
    "model": default.model,
    "bad": bad,
    "unauthorized": unauthorized,
}))
"#;

/// A venv with the pinned client, made once under target/.
fn venv_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("openai-{OPENAI_VERSION}-venv"));
    let python = venv.join("bin/python");
    let marker = venv.join("installed");
    if marker.is_file() {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .expect("running python3 -m venv: is python3 (with venv) installed?");
    assert!(
        status.success(),
        "python3 -m venv {} failed",
        venv.display()
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(format!("openai=={OPENAI_VERSION}"))
        .output()
        .expect("running pip");
    assert!(
        out.status.success(),
        "pip install openai=={OPENAI_VERSION} failed (this test needs PyPI; it does not skip \
         without network):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&marker, OPENAI_VERSION).unwrap();
    python
}

#[test]
fn the_openai_python_client_works_unchanged() {
    let python = venv_python();
    let server = start(ServerConfig {
        model_name: "e5-small".into(),
        api_key: Some("test-key".into()),
        ..ServerConfig::default()
    });
    let texts = serde_json::to_string(TEXTS).unwrap();
    let out = Command::new(&python)
        .args(["-c", SCRIPT, &server.url(), "test-key", &texts])
        .output()
        .expect("running the client script");
    assert!(
        out.status.success(),
        "the openai client script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["version"], OPENAI_VERSION);
    assert_eq!(answer["model"], "e5-small");

    let vectors = |key: &str| -> Vec<Vec<f32>> {
        answer[key].as_array().unwrap().iter().map(floats).collect()
    };
    let want = library(TEXTS, Prompt::None, None);
    // The default (base64) path decodes to our float32 values exactly.
    assert_close(&vectors("default"), &want, 1e-6);
    assert_close(&vectors("one"), &want[..1], 1e-6);
    assert_close(
        &vectors("floats"),
        &library(TEXTS, Prompt::Named("query".into()), Some(128)),
        1e-6,
    );
    let tokens: usize = TEXTS
        .iter()
        .map(|t| embedder().tokenize(t, &Prompt::None).unwrap().ids.len())
        .sum();
    assert_eq!(answer["usage"], serde_json::json!([tokens, tokens]));
    assert_eq!(answer["bad"]["status"], 400, "{}", answer["bad"]);
    assert!(answer["bad"]["message"]
        .as_str()
        .unwrap()
        .contains("dimensions"));
    assert_eq!(answer["unauthorized"], 401);
}
