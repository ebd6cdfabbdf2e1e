//! The server on a loopback port with e5-small: every endpoint, every refusal, batching,
//! the queue bound, panics, the API key and the metrics.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use koembed_embed::Prompt;
use koembed_server::ServerConfig;
use serde_json::json;

#[test]
fn openai_vectors_equal_the_library_and_usage_counts_tokens() {
    let server = start_default();
    let answer = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "e5-small", "input": TEXTS, "input_type": "query"}),
    )
    .ok()
    .json();
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], "e5-small");
    assert_eq!(answer["data"][0]["object"], "embedding");
    let want = library(TEXTS, Prompt::Named("query".into()), None);
    assert_close(&openai_vectors(&answer), &want, 1e-6);

    let tokens: usize = TEXTS
        .iter()
        .map(|t| {
            embedder()
                .tokenize(t, &Prompt::Named("query".into()))
                .unwrap()
                .ids
                .len()
        })
        .sum();
    assert_eq!(answer["usage"]["prompt_tokens"], tokens);
    assert_eq!(answer["usage"]["total_tokens"], tokens);

    // One text alone, as a plain string, with prompt_name: the same vector as in the batch.
    let alone = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "x", "input": TEXTS[1], "prompt_name": "query"}),
    )
    .ok()
    .json();
    assert_close(&openai_vectors(&alone), &want[1..2], 1e-6);

    // No prompt field: the server default (e5-small has no default prompt: none).
    let plain = post(&server, "/v1/embeddings", &json!({"input": [TEXTS[0]]}))
        .ok()
        .json();
    assert_close(
        &openai_vectors(&plain),
        &library(&TEXTS[..1], Prompt::None, None),
        1e-6,
    );
}

#[test]
fn the_server_default_prompt_applies_when_the_request_names_none() {
    let server = start(ServerConfig {
        default_prompt: Prompt::Named("passage".into()),
        ..ServerConfig::default()
    });
    let answer = post(&server, "/v1/embeddings", &json!({"input": TEXTS}))
        .ok()
        .json();
    let want = library(TEXTS, Prompt::Named("passage".into()), None);
    assert_close(&openai_vectors(&answer), &want, 1e-6);
    // input_type "document" is the passage prompt too; "query" overrides the default.
    let doc = post(
        &server,
        "/embed",
        &json!({"inputs": TEXTS, "input_type": "document"}),
    )
    .ok()
    .json();
    let doc: Vec<Vec<f32>> = doc.as_array().unwrap().iter().map(floats).collect();
    assert_close(&doc, &want, 1e-6);
    let query = post(
        &server,
        "/embed",
        &json!({"inputs": TEXTS[0], "input_type": "query"}),
    )
    .ok()
    .json();
    assert_close(
        &[floats(&query[0])],
        &library(&TEXTS[..1], Prompt::Named("query".into()), None),
        1e-6,
    );
}

#[test]
fn base64_decodes_to_the_float_vectors() {
    let server = start_default();
    let body = |format: &str| json!({"input": TEXTS, "encoding_format": format});
    let float = openai_vectors(&post(&server, "/v1/embeddings", &body("float")).ok().json());
    let b64 = post(&server, "/v1/embeddings", &body("base64")).ok().json();
    let decoded: Vec<Vec<f32>> = b64["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(item["embedding"].as_str().expect("a base64 string"))
                .unwrap();
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect();
    assert_eq!(decoded[0].len(), embedder().dim());
    assert_close(&decoded, &float, 0.0);
}

#[test]
fn dimensions_cut_and_renormalize() {
    let server = start_default();
    let full = openai_vectors(
        &post(&server, "/v1/embeddings", &json!({"input": TEXTS}))
            .ok()
            .json(),
    );
    let cut = openai_vectors(
        &post(
            &server,
            "/v1/embeddings",
            &json!({"input": TEXTS, "dimensions": 64}),
        )
        .ok()
        .json(),
    );
    for (c, f) in cut.iter().zip(&full) {
        assert_eq!(c.len(), 64);
        assert!((norm(c) - 1.0).abs() < 1e-5, "norm {}", norm(c));
        let n = norm(&f[..64]);
        let expected: Vec<f32> = f[..64].iter().map(|x| x / n).collect();
        assert_close(std::slice::from_ref(c), &[expected], 1e-6);
    }
    assert_close(&cut, &library(TEXTS, Prompt::None, Some(64)), 1e-6);
    let tei = post(
        &server,
        "/embed",
        &json!({"inputs": TEXTS, "dimensions": 64}),
    )
    .ok()
    .json();
    let tei: Vec<Vec<f32>> = tei.as_array().unwrap().iter().map(floats).collect();
    assert_close(&tei, &cut, 1e-6);
}

#[test]
fn token_ids_from_tokenize_embed_like_the_text() {
    let server = start_default();
    let tokens = post(
        &server,
        "/tokenize",
        &json!({"inputs": TEXTS, "input_type": "query"}),
    )
    .ok()
    .json();
    let ids: Vec<Vec<u64>> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|seq| {
            seq.as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_u64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(tokens[0][0]["text"], "<s>");
    assert_eq!(ids[0][0], 0);
    assert_eq!(*ids[0].last().unwrap(), 2);
    let want = library(TEXTS, Prompt::Named("query".into()), None);
    let by_ids = post(&server, "/v1/embeddings", &json!({"input": ids}))
        .ok()
        .json();
    assert_close(&openai_vectors(&by_ids), &want, 1e-6);
    // A single array of ids is one input.
    let one = post(&server, "/v1/embeddings", &json!({"input": ids[0]}))
        .ok()
        .json();
    assert_close(&openai_vectors(&one), &want[..1], 1e-6);
    let bad = post(
        &server,
        "/v1/embeddings",
        &json!({"input": [0, 999_999_999, 2]}),
    );
    assert!(bad.openai_error(400).contains("vocabulary"));
}

#[test]
fn tei_embed_info_health_and_models() {
    let server = start_default();
    let answer = post(&server, "/embed", &json!({"inputs": TEXTS}))
        .ok()
        .json();
    let vectors: Vec<Vec<f32>> = answer.as_array().unwrap().iter().map(floats).collect();
    assert_close(&vectors, &library(TEXTS, Prompt::None, None), 1e-6);
    let single = post(&server, "/embed", &json!({"inputs": TEXTS[0]}))
        .ok()
        .json();
    assert_eq!(single.as_array().unwrap().len(), 1);

    // normalize: false gives the raw pooled vectors, whose norm is not 1.
    let raw = post(
        &server,
        "/embed",
        &json!({"inputs": TEXTS[0], "normalize": false}),
    )
    .ok()
    .json();
    let raw = floats(&raw[0]);
    assert!((norm(&raw) - 1.0).abs() > 1e-3);
    let unit: Vec<f32> = raw.iter().map(|x| x / norm(&raw)).collect();
    assert_close(&[unit], &vectors[..1], 1e-6);

    let info = get(&server, "/info").ok().json();
    assert_eq!(info["dim"], 384);
    assert_eq!(info["model_dtype"], "f32");
    assert_eq!(info["max_input_length"], 512);
    assert_eq!(info["prompts"]["query"], "query: ");
    let health = get(&server, "/health").ok();
    assert_eq!(health.text, "ok");
    let models = get(&server, "/v1/models").ok().json();
    assert_eq!(models["data"][0]["id"], "e5-small");
}

#[test]
fn bad_requests_get_400_in_the_shape_of_the_endpoint() {
    let server = start_default();
    let url = format!("{}/v1/embeddings", server.url());
    let raw = |body: &str| request("POST", &url, Some(body), &[]);
    assert!(raw("{\"input\": ")
        .openai_error(400)
        .contains("invalid JSON"));
    assert!(raw("not json").openai_error(400).contains("invalid JSON"));
    assert!(raw("{\"input\": \"a\", \"dimensions\": \"x\"}")
        .openai_error(400)
        .contains("invalid type"));
    assert!(raw("{\"input\": \"a\", \"encoding_format\": 3}")
        .openai_error(400)
        .contains("invalid type"));

    let openai = |body: serde_json::Value| post(&server, "/v1/embeddings", &body);
    for (body, needle, param) in [
        (json!({"model": "m"}), "missing", "input"),
        (json!({"input": 42}), "must be a string", "input"),
        (json!({"input": ["a", 1]}), "must be a string", "input"),
        (json!({"input": {"text": "a"}}), "must be a string", "input"),
        (json!({"input": []}), "empty array", "input"),
        (json!({"input": ["a", ""]}), "input[1] is empty", "input"),
        (json!({"input": [[]]}), "input[0] is empty", "input"),
        (
            json!({"input": "a", "dimensions": 385}),
            "1..=384",
            "dimensions",
        ),
        (
            json!({"input": "a", "dimensions": 0}),
            "out of range",
            "dimensions",
        ),
        (
            json!({"input": "a", "encoding_format": "int8"}),
            "int8",
            "encoding_format",
        ),
        (
            json!({"input": "a", "input_type": "banana"}),
            "banana",
            "input_type",
        ),
        (
            json!({"input": "a", "input_type": "query", "prompt_name": "passage"}),
            "disagree",
            "input_type",
        ),
        (
            json!({"input": "a", "prompt_name": "nope"}),
            "nope",
            "prompt_name",
        ),
    ] {
        let answer = openai(body.clone());
        let message = answer.openai_error(400);
        assert!(message.contains(needle), "{body}: {message}");
        assert_eq!(answer.json()["error"]["param"], param, "{body}");
        assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
    }
    let tei = post(
        &server,
        "/embed",
        &json!({"inputs": "a", "dimensions": 1000}),
    );
    assert!(tei.tei_error(400).contains("1..=384"));
    assert_eq!(tei.json()["error_type"], "Validation");
    let tei = post(&server, "/embed", &json!({"inputs": 3}));
    assert!(tei.tei_error(400).contains("'inputs'"));
    let tok = post(
        &server,
        "/tokenize",
        &json!({"inputs": "a", "add_special_tokens": false}),
    );
    tok.tei_error(400);
    let missing = post(&server, "/v2/nothing", &json!({}));
    missing.tei_error(404);
}

#[test]
fn size_limits_get_413_and_truncate_cuts_long_texts() {
    let server = start(ServerConfig {
        max_body_bytes: 4096,
        max_inputs: 3,
        ..ServerConfig::default()
    });
    // Body over the limit.
    let big = json!({"input": "가".repeat(3000)});
    let answer = post(&server, "/v1/embeddings", &big);
    assert!(answer.openai_error(413).contains("4096 bytes"));
    post(&server, "/embed", &json!({"inputs": "가".repeat(3000)})).tei_error(413);
    // Too many inputs.
    let answer = post(
        &server,
        "/v1/embeddings",
        &json!({"input": ["a", "b", "c", "d"]}),
    );
    assert!(answer.openai_error(413).contains("limit is 3"));

    // Longer than the model's 512 tokens: refused unless truncate.
    let server = start_default();
    let long = "데비안 패키지 관리 ".repeat(200);
    let answer = post(
        &server,
        "/v1/embeddings",
        &json!({"input": [TEXTS[0], long]}),
    );
    let message = answer.openai_error(413);
    assert!(
        message.contains("input[1]") && message.contains("512"),
        "{message}"
    );
    assert_eq!(answer.json()["error"]["code"], "input_too_long");
    post(&server, "/embed", &json!({"inputs": long})).tei_error(413);
    let cut = post(
        &server,
        "/v1/embeddings",
        &json!({"input": [long], "truncate": true}),
    )
    .ok()
    .json();
    assert_eq!(cut["usage"]["prompt_tokens"], 512);
    // The library cuts the same way.
    assert_close(
        &openai_vectors(&cut),
        &library(&[&long], Prompt::None, None),
        1e-6,
    );
    let tei = post(
        &server,
        "/embed",
        &json!({"inputs": long, "truncate": true}),
    )
    .ok()
    .json();
    assert_close(&[floats(&tei[0])], &openai_vectors(&cut), 1e-6);

    // --auto-truncate makes truncation the default.
    let auto = start(ServerConfig {
        auto_truncate: true,
        ..ServerConfig::default()
    });
    post(&auto, "/v1/embeddings", &json!({"input": [long]})).ok();
    post(
        &auto,
        "/v1/embeddings",
        &json!({"input": [long], "truncate": false}),
    )
    .openai_error(413);
}

/// Holds the compute thread in its next encoder call until released.
struct Gate {
    armed: AtomicBool,
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

#[test]
fn a_full_queue_answers_429_at_once() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        armed: AtomicBool::new(true),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let hook_gate = gate.clone();
    let server = start(ServerConfig {
        max_concurrent_requests: 1,
        before_batch: Some(Arc::new(move |_| {
            if hook_gate.armed.swap(false, Ordering::SeqCst) {
                hook_gate.entered.lock().unwrap().send(()).unwrap();
                let _ = hook_gate.release.lock().unwrap().recv();
            }
        })),
        ..ServerConfig::default()
    });
    let url = server.url();
    let first = std::thread::spawn(move || {
        request(
            "POST",
            &format!("{url}/v1/embeddings"),
            Some(&json!({"input": TEXTS}).to_string()),
            &[],
        )
    });
    entered
        .recv_timeout(Duration::from_secs(60))
        .expect("the first request reached the encoder");

    let started = Instant::now();
    let busy = post(&server, "/v1/embeddings", &json!({"input": "b"}));
    assert!(busy.openai_error(429).contains("busy"));
    assert_eq!(busy.json()["error"]["type"], "rate_limit_error");
    assert!(busy
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("retry-after")));
    post(&server, "/embed", &json!({"inputs": "b"})).tei_error(429);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "429 must come at once"
    );
    // Endpoints that do not queue still answer.
    get(&server, "/health").ok();

    release.send(()).unwrap();
    first.join().unwrap().ok();
    // The slot is free again.
    post(&server, "/v1/embeddings", &json!({"input": "b"})).ok();
    let metrics = get(&server, "/metrics").ok().text;
    assert!(
        metrics.contains("koembed_requests_total{endpoint=\"/v1/embeddings\",status=\"429\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_panic_fails_one_request_and_the_server_goes_on() {
    let panic_next = Arc::new(AtomicBool::new(false));
    let flag = panic_next.clone();
    let server = start(ServerConfig {
        before_batch: Some(Arc::new(move |_| {
            if flag.swap(false, Ordering::SeqCst) {
                panic!("injected by the test");
            }
        })),
        ..ServerConfig::default()
    });
    post(&server, "/v1/embeddings", &json!({"input": TEXTS})).ok();
    panic_next.store(true, Ordering::SeqCst);
    let failed = post(&server, "/v1/embeddings", &json!({"input": TEXTS}));
    assert!(failed.openai_error(500).contains("injected by the test"));
    assert_eq!(failed.json()["error"]["type"], "server_error");
    let after = post(&server, "/v1/embeddings", &json!({"input": TEXTS}))
        .ok()
        .json();
    assert_close(
        &openai_vectors(&after),
        &library(TEXTS, Prompt::None, None),
        1e-6,
    );
    get(&server, "/health").ok();
}

#[test]
fn a_wrong_or_missing_api_key_gets_401() {
    let server = start(ServerConfig {
        api_key: Some("s3cret".into()),
        ..ServerConfig::default()
    });
    let url = format!("{}/v1/embeddings", server.url());
    let body = json!({"input": "a"}).to_string();
    let call = |headers: &[(&str, &str)]| request("POST", &url, Some(&body), headers);
    for headers in [
        &[][..],
        &[("Authorization", "Bearer wrong")][..],
        &[("Authorization", "Bearer s3cre")][..],
        &[("Authorization", "s3cret")][..],
        &[("Authorization", "Basic s3cret")][..],
    ] {
        let answer = call(headers);
        answer.openai_error(401);
        assert_eq!(answer.json()["error"]["code"], "invalid_api_key");
    }
    call(&[("Authorization", "Bearer s3cret")]).ok();
    let tei = request(
        "POST",
        &format!("{}/embed", server.url()),
        Some("{\"inputs\": \"a\"}"),
        &[],
    );
    tei.tei_error(401);
    request("GET", &format!("{}/metrics", server.url()), None, &[]).tei_error(401);
    // /health answers load balancers without the key.
    get(&server, "/health").ok();
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_requests_batches_and_tokens() {
    let server = start_default();
    let before = get(&server, "/metrics").ok().text;
    assert_eq!(metric(&before, "koembed_tokens_total"), 0.0);
    let answer = post(&server, "/v1/embeddings", &json!({"input": TEXTS}))
        .ok()
        .json();
    post(&server, "/v1/embeddings", &json!({"input": []})).openai_error(400);
    let after = get(&server, "/metrics").ok().text;
    let tokens = answer["usage"]["prompt_tokens"].as_f64().unwrap();
    assert_eq!(metric(&after, "koembed_tokens_total"), tokens);
    assert_eq!(metric(&after, "koembed_texts_total"), 3.0);
    assert_eq!(metric(&after, "koembed_batch_size_count"), 1.0);
    assert_eq!(metric(&after, "koembed_batch_size_sum"), 3.0);
    assert_eq!(metric(&after, "koembed_batch_tokens_sum"), tokens);
    assert_eq!(
        metric(&after, "koembed_inference_duration_seconds_count"),
        1.0
    );
    assert_eq!(metric(&after, "koembed_queue_duration_seconds_count"), 1.0);
    assert_eq!(metric(&after, "koembed_requests_in_flight"), 0.0);
    assert_eq!(
        metric(
            &after,
            "koembed_requests_total{endpoint=\"/v1/embeddings\",status=\"200\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "koembed_requests_total{endpoint=\"/v1/embeddings\",status=\"400\"}"
        ),
        1.0
    );
    assert!(after.contains("# TYPE koembed_inference_duration_seconds histogram"));
}

#[test]
fn concurrent_requests_share_encoder_calls_without_changing_vectors() {
    // Hold the first call so that the requests behind it pile up and are merged.
    let calls = Arc::new(AtomicUsize::new(0));
    let largest = Arc::new(AtomicUsize::new(0));
    let (c, l) = (calls.clone(), largest.clone());
    let server = start(ServerConfig {
        max_batch_tokens: 64,
        before_batch: Some(Arc::new(move |texts| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            l.fetch_max(texts, Ordering::SeqCst);
        })),
        ..ServerConfig::default()
    });
    let texts: Vec<String> = (0..24)
        .map(|i| format!("{} {}", TEXTS[i % 3], "데비안 ".repeat(i % 7)))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = library(&refs, Prompt::Named("passage".into()), None);
    let threads: Vec<_> = texts
        .iter()
        .cloned()
        .map(|text| {
            let url = format!("{}/v1/embeddings", server.url());
            std::thread::spawn(move || {
                let body = json!({"input": [text], "input_type": "passage"}).to_string();
                openai_vectors(&request("POST", &url, Some(&body), &[]).ok().json())
                    .pop()
                    .unwrap()
            })
        })
        .collect();
    let got: Vec<Vec<f32>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_close(&got, &want, 1e-6);
    assert!(
        largest.load(Ordering::SeqCst) > 1,
        "no call merged two requests"
    );
    // The 64-token budget cut the work into several calls.
    assert!(calls.load(Ordering::SeqCst) > 2);
}
