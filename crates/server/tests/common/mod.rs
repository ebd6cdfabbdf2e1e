//! Shared by the server's integration tests: the e5-small model (loaded once per test
//! binary), servers on loopback ports, and a small blocking HTTP client.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use koembed_embed::{EmbedOptions, Embedder, Prompt};
use koembed_server::{RunningServer, ServerConfig};
use serde_json::Value;

pub fn model_dir() -> PathBuf {
    let dir = koembed_golden::models_dir().join("e5-small");
    assert!(
        dir.join("config.json").is_file(),
        "{} is missing: build the test models with `cargo xtask models`",
        dir.display()
    );
    dir
}

pub fn embedder() -> Arc<Embedder> {
    static EMBEDDER: OnceLock<Arc<Embedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| Arc::new(Embedder::load(&model_dir()).expect("loading e5-small")))
        .clone()
}

pub fn start(config: ServerConfig) -> RunningServer {
    RunningServer::start("127.0.0.1:0".parse().unwrap(), embedder(), config)
        .expect("starting the server")
}

pub fn start_default() -> RunningServer {
    start(ServerConfig {
        model_name: "e5-small".into(),
        ..ServerConfig::default()
    })
}

/// Status, body text, and the parsed body when it is JSON.
pub struct Answer {
    pub status: u16,
    pub text: String,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn ok(self) -> Self {
        assert_eq!(self.status, 200, "{}", self.text);
        self
    }

    /// Asserts an OpenAI-shaped error with this status and returns its message.
    pub fn openai_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        let e = &self.json()["error"];
        for key in ["message", "type", "param", "code"] {
            assert!(e.get(key).is_some(), "no error.{key} in {}", self.text);
        }
        e["message"].as_str().unwrap().to_string()
    }

    /// Asserts a text-embeddings-inference-shaped error and returns its message.
    pub fn tei_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        let v = self.json();
        assert!(v["error_type"].is_string(), "{}", self.text);
        v["error"].as_str().unwrap().to_string()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build(),
    )
}

pub fn request(method: &str, url: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let agent = agent();
    let result = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        (_, body) => {
            let mut r = agent.post(url).header("Content-Type", "application/json");
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.send(body.unwrap_or("").as_bytes())
        }
    };
    let mut response = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = response
        .body_mut()
        .with_config()
        .limit(100 * 1024 * 1024)
        .read_to_string()
        .unwrap();
    Answer {
        status,
        text,
        headers,
    }
}

pub fn post(server: &RunningServer, path: &str, body: &Value) -> Answer {
    request(
        "POST",
        &format!("{}{path}", server.url()),
        Some(&body.to_string()),
        &[],
    )
}

pub fn get(server: &RunningServer, path: &str) -> Answer {
    request("GET", &format!("{}{path}", server.url()), None, &[])
}

/// The vectors of an OpenAI answer (float format), by index.
pub fn openai_vectors(answer: &Value) -> Vec<Vec<f32>> {
    let data = answer["data"].as_array().expect("data");
    let mut out = vec![Vec::new(); data.len()];
    for item in data {
        let i = item["index"].as_u64().unwrap() as usize;
        out[i] = floats(&item["embedding"]);
    }
    out
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array of numbers")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// What the library gives for `texts` (one call, all texts).
pub fn library(texts: &[&str], prompt: Prompt, dim: Option<usize>) -> Vec<Vec<f32>> {
    let options = EmbedOptions {
        prompt,
        truncate_dim: dim,
        ..EmbedOptions::default()
    };
    embedder()
        .embed(texts, &options)
        .unwrap()
        .rows()
        .into_iter()
        .map(|r| r.to_vec())
        .collect()
}

/// Asserts equal lengths and every value within `tol`, naming the first difference.
pub fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], tol: f32) {
    assert_eq!(got.len(), want.len(), "number of vectors");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "vector {i}: length");
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                (a - b).abs() <= tol,
                "vector {i}[{j}]: {a} vs {b} (tolerance {tol})"
            );
        }
    }
}

pub fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

pub const TEXTS: &[&str] = &[
    "데비안은 무엇인가요?",
    "데비안 GNU/리눅스는 자유 소프트웨어로 이루어진 운영 체제입니다. 데비안 프로젝트가 만듭니다.",
    "How do I install Debian?",
];
