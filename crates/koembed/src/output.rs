//! Writing results: to stdout, or to a file atomically (a file under its final name is always
//! complete).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use ndarray::Array2;

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().context("output path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Writes `bytes` to stdout and flushes. A closed pipe comes back as `BrokenPipe`, which `main`
/// treats as a normal end.
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .context("writing to stdout")
}

/// Writes to `path` atomically, or to stdout when `None`.
pub fn write_to(path: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match path {
        Some(path) => write_atomically(path, bytes),
        None => write_stdout(bytes),
    }
}

#[derive(serde::Serialize)]
struct EmbeddingLine<'a> {
    index: usize,
    embedding: &'a [f32],
}

/// JSON Lines: `{"index": i, "embedding": [...]}` per row, floats in their shortest f32 form.
pub fn jsonl_bytes(matrix: &Array2<f32>) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, row) in matrix.rows().into_iter().enumerate() {
        let embedding = row
            .to_slice()
            .expect("rows of a standard-layout array are contiguous");
        serde_json::to_writer(&mut out, &EmbeddingLine { index, embedding })
            .expect("serializing floats cannot fail");
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_keeps_index_first_and_f32_precision() {
        let m = ndarray::array![[0.1f32, -2.5], [1.0, 0.0]];
        let text = String::from_utf8(jsonl_bytes(&m)).unwrap();
        assert_eq!(
            text,
            "{\"index\":0,\"embedding\":[0.1,-2.5]}\n{\"index\":1,\"embedding\":[1.0,0.0]}\n"
        );
    }

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("koembed-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.npy");
        write_atomically(&path, b"abc").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
