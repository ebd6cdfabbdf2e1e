//! `koembed serve` as a process: the bound address on stderr, vectors equal to `koembed
//! embed`, and SIGTERM finishing the request in flight before exiting 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::built_model;
use crate::koembed;

/// One HTTP/1.1 request on a fresh connection (closed after the answer): status and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connecting to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().expect("an HTTP status line");
    let (_, body) = answer.split_once("\r\n\r\n").expect("headers end");
    (status, body.to_string())
}

/// The server process, killed if a test fails before it exits.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `koembed serve --port 0` and reads the bound address from stderr; the rest of
/// stderr keeps coming through the returned channel.
fn start_server() -> (Server, SocketAddr, mpsc::Receiver<String>) {
    let model = built_model("e5-small");
    let mut child = Server(
        Command::new(env!("CARGO_BIN_EXE_koembed"))
            .args(["serve", "--port", "0", "--threads", "2", "--model"])
            .arg(&model)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("koembed serve starts"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("koembed serve printed no address");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
            return (child, addr, lines);
        }
    }
}

fn vectors(openai_answer: &str) -> Vec<Vec<f64>> {
    let v: serde_json::Value = serde_json::from_str(openai_answer).unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn serve_answers_like_embed_and_sigterm_finishes_the_request_in_flight() {
    let (mut child, addr, lines) = start_server();

    // One text alone through the server equals `koembed embed --prompt query`.
    let text = "데비안에서 패키지를 설치하려면 어떻게 하나요?";
    let body = serde_json::json!({"model": "e5", "input": text, "input_type": "query"});
    let (status, answer) = http(addr, "POST", "/v1/embeddings", &body.to_string());
    assert_eq!(status, 200, "{answer}");
    let served = vectors(&answer).remove(0);
    let embedded = koembed(
        &[
            "embed",
            "--model",
            built_model("e5-small").to_str().unwrap(),
            "--prompt",
            "query",
        ],
        text.as_bytes(),
    )
    .ok()
    .stdout_text();
    let line: serde_json::Value = serde_json::from_str(embedded.lines().next().unwrap()).unwrap();
    let cli: Vec<f64> = line["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(served.len(), cli.len());
    for (i, (a, b)) in served.iter().zip(&cli).enumerate() {
        assert!(
            (a - b).abs() <= 1e-6,
            "[{i}]: served {a}, koembed embed {b}"
        );
    }

    // A long request (a few seconds of encoder work) in flight when SIGTERM comes.
    let long: Vec<String> = (0..24)
        .map(|i| format!("{i} {}", "데비안 패키지 관리 시스템과 저장소 ".repeat(120)))
        .collect();
    let body = serde_json::json!({"input": long, "truncate": true}).to_string();
    let in_flight = std::thread::spawn(move || http(addr, "POST", "/v1/embeddings", &body));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, metrics) = http(addr, "GET", "/metrics", "");
        if metrics.contains("koembed_requests_in_flight 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the long request never got in:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let (status, answer) = in_flight.join().unwrap();
    assert_eq!(
        status, 200,
        "the request in flight was not finished: {answer}"
    );
    assert_eq!(vectors(&answer).len(), 24);

    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "koembed serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr: Vec<String> = lines.try_iter().collect();
    assert_eq!(exit.code(), Some(0), "stderr:\n{}", stderr.join("\n"));
    assert!(
        stderr.iter().any(|l| l.contains("shutting down")),
        "{}",
        stderr.join("\n")
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after exit"
    );
}
