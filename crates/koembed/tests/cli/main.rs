//! End-to-end tests of the `koembed` binary: each runs the built command as a user would and
//! checks its stdout, stderr and exit status.

#[path = "../common.rs"]
mod common;

mod embed;
mod errors;
mod search;
mod serve;
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one run of the command gave.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    /// Asserts exit status 0 and returns self.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "koembed failed:\n{}", self.stderr);
        self
    }

    /// Asserts exit status 1 with `message` in the error line.
    pub fn fails_with(self, message: &str) -> Self {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit status 1; stderr:\n{}",
            self.stderr
        );
        assert!(
            self.stderr.contains("koembed: error: ") && self.stderr.contains(message),
            "expected {message:?} in stderr:\n{}",
            self.stderr
        );
        self
    }
}

/// Runs `koembed args...` with `stdin` as its input.
pub fn koembed<S: AsRef<std::ffi::OsStr>>(args: &[S], stdin: &[u8]) -> Run {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_koembed"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the koembed binary runs");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().expect("koembed finishes");
    writer.join().expect("stdin writer");
    let run = Run {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "koembed panicked:\n{}",
        run.stderr
    );
    run
}

/// A fresh folder for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("koembed-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temporary folder");
    dir
}

pub fn tiny_xlmr() -> PathBuf {
    common::workspace_root().join("testdata/tiny/tiny-xlmr")
}

pub fn path_arg(p: &Path) -> String {
    p.to_str().expect("UTF-8 test path").to_string()
}

/// Max |a - b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
