//! Memory-mapped safetensors checkpoints: one file or a sharded set, every tensor looked up by
//! name and checked for dtype and shape before use.
//!
//! f32 tensors are borrowed straight from the map (no copy); f16 and bf16 tensors are converted
//! to f32 once, at load ([`WeightStore::load_f32`]). Embedding tables stay in the file in their
//! own dtype and only the rows a batch needs are read ([`WeightStore::load_table`]). Errors
//! name the file, the tensor, what was expected and what was found.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap, UncheckedAdvice};
use safetensors::tensor::{Dtype, SafeTensors};

/// Dtypes koembed reads weights from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    F16,
    BF16,
}

impl WeightDtype {
    fn from_safetensors(dtype: Dtype) -> Option<Self> {
        match dtype {
            Dtype::F32 => Some(Self::F32),
            Dtype::F16 => Some(Self::F16),
            Dtype::BF16 => Some(Self::BF16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
        }
    }

    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file (truncated or corrupt?): {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Index { path: PathBuf, reason: String },
    #[error("no model.safetensors or model.safetensors.index.json in {dir}")]
    NoCheckpoint { dir: PathBuf },
    #[error("tensor `{tensor}` is missing from {files}")]
    Missing { tensor: String, files: String },
    #[error(
        "{path}: tensor `{tensor}` has dtype {found}; koembed reads F32, F16 and BF16 weights"
    )]
    Dtype {
        path: PathBuf,
        tensor: String,
        found: String,
    },
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// One mapped safetensors file and its parsed header.
struct MappedFile {
    path: PathBuf,
    /// Kept open for [`WeightStore::gather_rows`]'s positioned reads.
    file: File,
    map: Mmap,
}

/// Where one tensor lives.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    file: usize,
    /// Byte range within the file.
    bytes: Range<usize>,
}

/// f32 weights: borrowed from the map when the file holds f32 at a 4-byte-aligned offset,
/// converted otherwise. Resolve to a slice with [`WeightStore::f32_data`].
#[derive(Debug)]
pub enum F32Weight {
    Mapped { file: usize, bytes: Range<usize> },
    Owned(Vec<f32>),
}

/// A `[rows, row_len]` table (an embedding matrix) left in the file, in the file's dtype: read
/// row by row with [`WeightStore::gather_rows`], never converted or held whole.
#[derive(Debug)]
pub struct MappedTable {
    file: usize,
    bytes: Range<usize>,
    dtype: WeightDtype,
    rows: usize,
    row_len: usize,
}

impl MappedTable {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn row_len(&self) -> usize {
        self.row_len
    }

    pub fn dtype(&self) -> WeightDtype {
        self.dtype
    }
}

/// A checkpoint: every tensor of one `model.safetensors` or of the shards an index names.
pub struct WeightStore {
    files: Vec<MappedFile>,
    entries: BTreeMap<String, TensorEntry>,
}

impl WeightStore {
    /// Opens `model.safetensors`, or the shards of `model.safetensors.index.json`, in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self, WeightError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.is_file() {
            Self::open_files(&[single])
        } else if index.is_file() {
            Self::open_index(&index)
        } else {
            Err(WeightError::NoCheckpoint {
                dir: dir.to_path_buf(),
            })
        }
    }

    /// Opens a sharded checkpoint from its `model.safetensors.index.json`.
    pub fn open_index(index: &Path) -> Result<Self, WeightError> {
        let index_err = |reason: String| WeightError::Index {
            path: index.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(index).map_err(|source| WeightError::Io {
            path: index.to_path_buf(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| index_err(format!("invalid JSON: {e}")))?;
        let weight_map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| index_err("missing object `weight_map`".into()))?;
        let mut shard_names: Vec<&str> = Vec::new();
        for (tensor, file) in weight_map {
            let file = file
                .as_str()
                .ok_or_else(|| index_err(format!("`weight_map.{tensor}` is not a file name")))?;
            if file.contains('/') || file.contains("..") {
                return Err(index_err(format!(
                    "shard name {file:?} leaves the model folder"
                )));
            }
            if !shard_names.contains(&file) {
                shard_names.push(file);
            }
        }
        shard_names.sort_unstable();
        let dir = index.parent().unwrap_or(Path::new("."));
        let paths: Vec<PathBuf> = shard_names.iter().map(|f| dir.join(f)).collect();
        let store = Self::open_files(&paths)?;
        // The index is a promise about the shards; a tensor it names must be where it says.
        for (tensor, file) in weight_map {
            let file = file.as_str().unwrap_or_default();
            match store.entries.get(tensor) {
                Some(entry) if store.files[entry.file].path.ends_with(file) => {}
                Some(entry) => {
                    return Err(index_err(format!(
                        "names {file} for tensor `{tensor}`, but it is in {}",
                        store.files[entry.file].path.display()
                    )))
                }
                None => {
                    return Err(index_err(format!(
                        "names {file} for tensor `{tensor}`, which that file does not hold"
                    )))
                }
            }
        }
        Ok(store)
    }

    /// Maps each file and reads its header. A tensor present in two files is an error.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self, WeightError> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = BTreeMap::new();
        for path in paths {
            let file = File::open(path).map_err(|source| WeightError::Io {
                path: path.clone(),
                source,
            })?;
            // SAFETY: the map is read-only and private. Like every mmap-based loader (and the
            // safetensors Python library) we rely on the file not being truncated or rewritten
            // by another process while the model is loaded; the header and every tensor's byte
            // range are validated against the mapped length below, so no read goes past the map.
            let map = unsafe { Mmap::map(&file) }.map_err(|source| WeightError::Io {
                path: path.clone(),
                source,
            })?;
            let corrupt = |reason: String| WeightError::Corrupt {
                path: path.clone(),
                reason,
            };
            // read_metadata checks the header length, the JSON, that tensor ranges are
            // contiguous and that the data ends exactly at the end of the file.
            let (header_len, metadata) =
                SafeTensors::read_metadata(&map).map_err(|e| corrupt(format!("{e:?}")))?;
            let data_start = 8 + header_len;
            let file_index = files.len();
            for (name, info) in metadata.tensors() {
                let (start, end) = info.data_offsets;
                let expected_len = info
                    .shape
                    .iter()
                    .try_fold(info.dtype.size(), |acc, &d| acc.checked_mul(d))
                    .ok_or_else(|| corrupt(format!("tensor `{name}` has an overflowing shape")))?;
                if end - start != expected_len {
                    return Err(corrupt(format!(
                        "tensor `{name}` holds {} bytes, its shape {:?} needs {expected_len}",
                        end - start,
                        info.shape
                    )));
                }
                let entry = TensorEntry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    file: file_index,
                    bytes: data_start + start..data_start + end,
                };
                if let Some(previous) = entries.insert(name.clone(), entry) {
                    return Err(WeightError::Index {
                        path: path.clone(),
                        reason: format!(
                            "tensor `{name}` is also in {}",
                            files
                                .get(previous.file)
                                .map(|f: &MappedFile| f.path.display().to_string())
                                .unwrap_or_default()
                        ),
                    });
                }
            }
            files.push(MappedFile {
                path: path.clone(),
                file,
                map,
            });
        }
        Ok(Self { files, entries })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.entries.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The files of this checkpoint, for messages and reports.
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Total bytes mapped (the size of the checkpoint on disk).
    pub fn mapped_bytes(&self) -> usize {
        self.files.iter().map(|f| f.map.len()).sum()
    }

    /// How many tensors and bytes each dtype holds, for `inspect`.
    pub fn dtype_summary(&self) -> BTreeMap<String, (usize, usize)> {
        let mut summary = BTreeMap::new();
        for entry in self.entries.values() {
            let slot = summary
                .entry(format!("{:?}", entry.dtype))
                .or_insert((0, 0));
            slot.0 += 1;
            slot.1 += entry.bytes.len();
        }
        summary
    }

    fn files_display(&self) -> String {
        let names: Vec<String> = self
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        names.join(", ")
    }

    /// Checks that `name` exists with a float dtype and the expected shape, and returns it as
    /// f32: borrowed from the map when possible, converted once otherwise.
    pub fn load_f32(&self, name: &str, expected_shape: &[usize]) -> Result<F32Weight, WeightError> {
        let (entry, dtype) = self.checked_entry(name, expected_shape)?;
        let bytes = &self.files[entry.file].map[entry.bytes.clone()];
        Ok(match dtype {
            WeightDtype::F32
                if (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<f32>()) =>
            {
                F32Weight::Mapped {
                    file: entry.file,
                    bytes: entry.bytes.clone(),
                }
            }
            _ => F32Weight::Owned(decode_f32(bytes, dtype)),
        })
    }

    /// Checks that `name` exists with a float dtype and shape `[rows, row_len]`, and leaves it
    /// in the file (see [`MappedTable`]).
    pub fn load_table(
        &self,
        name: &str,
        expected_shape: [usize; 2],
    ) -> Result<MappedTable, WeightError> {
        let (entry, dtype) = self.checked_entry(name, &expected_shape)?;
        Ok(MappedTable {
            file: entry.file,
            bytes: entry.bytes.clone(),
            dtype,
            rows: expected_shape[0],
            row_len: expected_shape[1],
        })
    }

    /// The entry of `name` if it exists with a float dtype and the expected shape.
    fn checked_entry(
        &self,
        name: &str,
        expected_shape: &[usize],
    ) -> Result<(&TensorEntry, WeightDtype), WeightError> {
        let entry = self.entries.get(name).ok_or_else(|| WeightError::Missing {
            tensor: name.to_string(),
            files: self.files_display(),
        })?;
        let path = &self.files[entry.file].path;
        let dtype =
            WeightDtype::from_safetensors(entry.dtype).ok_or_else(|| WeightError::Dtype {
                path: path.clone(),
                tensor: name.to_string(),
                found: format!("{:?}", entry.dtype),
            })?;
        if entry.shape != expected_shape {
            return Err(WeightError::Shape {
                path: path.clone(),
                tensor: name.to_string(),
                expected: expected_shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        Ok((entry, dtype))
    }

    /// Drops the mapped pages from this process's resident memory and asks the kernel not to
    /// map neighbouring pages on later faults. Call it once the weights that are copied at
    /// load (packed GEMM panels) have been copied: from then on only what the forward pass
    /// still reads from the map (embedding rows, LayerNorm vectors) comes back, page by page,
    /// from the page cache. Without it an f32 model holds its weights twice.
    pub fn release_resident_pages(&self) {
        for file in &self.files {
            // SAFETY: the map is read-only and private and this process never writes through
            // it, so it has no copy-on-write pages: MADV_DONTNEED only unmaps clean file pages,
            // and the next read faults the same bytes back in from the file. No reference
            // into the map is invalidated (its address range stays mapped).
            // Both are hints: failing leaves the pages resident, which is only memory.
            let _ = unsafe { file.map.unchecked_advise(UncheckedAdvice::DontNeed) };
            let _ = file.map.advise(Advice::Random);
        }
    }

    /// Copies rows `ids` of `table` into consecutive `row_len` slices of `out`, as f32 (an
    /// embedding lookup).
    ///
    /// The rows are read with positioned reads instead of through the map: a lookup touches a
    /// few scattered rows of a table that is most of the file (250k x 384 f32 = 384 MB for
    /// e5-small), and page faults would map whole neighbourhoods of pages around each row,
    /// until the table is resident. If a read fails (the file was replaced or truncated under
    /// us), the rows come from the map instead; an id outside the table is an error.
    pub fn gather_rows(
        &self,
        table: &MappedTable,
        ids: impl IntoIterator<Item = usize>,
        out: &mut [f32],
    ) -> Result<(), WeightError> {
        use rayon::prelude::*;
        use std::os::unix::fs::FileExt;
        let mapped = &self.files[table.file];
        let row_bytes = table.row_len * table.dtype.size_in_bytes();
        let ids: Vec<usize> = ids.into_iter().collect();
        if let Some(&id) = ids.iter().find(|&&id| id >= table.rows) {
            return Err(WeightError::Index {
                path: mapped.path.clone(),
                reason: format!("row {id} is outside a table of {} rows", table.rows),
            });
        }
        // A read is a system call of a few microseconds: 8,192 tokens took 20 ms on one
        // thread, so the rows are read on all of them.
        let rows_per_task = 256;
        let row_len = table.row_len.max(1);
        out.par_chunks_mut(rows_per_task * row_len)
            .zip(ids.par_chunks(rows_per_task))
            .for_each(|(out, ids)| {
                let mut buf = vec![0u8; row_bytes];
                for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(row_len)) {
                    let start = table.bytes.start + id * row_bytes;
                    let bytes = match mapped.file.read_exact_at(&mut buf, start as u64) {
                        Ok(()) => &buf[..],
                        Err(_) => &mapped.map[start..start + row_bytes],
                    };
                    decode_into(bytes, table.dtype, dst);
                }
            });
        Ok(())
    }

    /// The f32 values of a weight loaded from this store.
    pub fn f32_data<'a>(&'a self, weight: &'a F32Weight) -> &'a [f32] {
        match weight {
            F32Weight::Owned(values) => values,
            F32Weight::Mapped { file, bytes } => {
                let raw = &self.files[*file].map[bytes.clone()];
                // SAFETY: `load_f32` only makes a `Mapped` weight for an F32 tensor whose start
                // is 4-byte aligned, and its length is a multiple of 4 (checked against the
                // shape at open). Every bit pattern is a valid f32, the map is read-only and
                // lives as long as `self`, and x86-64 / aarch64 are little-endian like the file.
                let (head, values, tail) = unsafe { raw.align_to::<f32>() };
                debug_assert!(head.is_empty() && tail.is_empty());
                values
            }
        }
    }
}

/// Little-endian `dtype` values to f32.
fn decode_f32(bytes: &[u8], dtype: WeightDtype) -> Vec<f32> {
    let mut out = vec![0.0f32; bytes.len() / dtype.size_in_bytes()];
    decode_into(bytes, dtype, &mut out);
    out
}

fn decode_into(bytes: &[u8], dtype: WeightDtype, out: &mut [f32]) {
    // A KoE5 checkpoint is 1.1 GB of f16: whole tensors convert on every pool thread, an
    // embedding row (a few hundred values) on the caller's.
    const PAR_CHUNK: usize = 1 << 16;
    let size = dtype.size_in_bytes();
    if out.len() > PAR_CHUNK {
        use rayon::prelude::*;
        out.par_chunks_mut(PAR_CHUNK)
            .zip(bytes.par_chunks(PAR_CHUNK * size))
            .for_each(|(dst, src)| decode_chunk(src, dtype, dst));
    } else {
        decode_chunk(bytes, dtype, out);
    }
}

fn decode_chunk(bytes: &[u8], dtype: WeightDtype, out: &mut [f32]) {
    match dtype {
        WeightDtype::F32 => {
            for (d, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        WeightDtype::F16 => {
            // The bytes may sit at any offset in the file: gather them into an aligned run of
            // f16, then widen the run at once (F16C where the CPU has it); element by element,
            // the conversion is a call per value, half of an f16 model's load time.
            use half::slice::HalfFloatSliceExt;
            let mut run = [half::f16::ZERO; 1024];
            for (dst, src) in out.chunks_mut(run.len()).zip(bytes.chunks(2 * run.len())) {
                let run = &mut run[..dst.len()];
                for (h, b) in run.iter_mut().zip(src.chunks_exact(2)) {
                    *h = half::f16::from_le_bytes([b[0], b[1]]);
                }
                run.convert_to_f32_slice(dst);
            }
        }
        WeightDtype::BF16 => {
            for (d, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
    }
}

/// A weight name inside a scope, as in `encoder.layer.3.attention.self.query.weight`.
pub fn scoped(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// Old BERT checkpoints name LayerNorm parameters `gamma` / `beta`; transformers renames them on
/// load, so koembed accepts both.
pub fn legacy_alias(name: &str) -> Option<String> {
    if let Some(stem) = name.strip_suffix("LayerNorm.weight") {
        return Some(format!("{stem}LayerNorm.gamma"));
    }
    if let Some(stem) = name.strip_suffix("LayerNorm.bias") {
        return Some(format!("{stem}LayerNorm.beta"));
    }
    None
}

/// The first of `prefixes` under which the checkpoint holds `name`: tells which prefix a
/// checkpoint uses (`""`, `"bert."`, `"roberta."`).
pub fn has_tensor_with_any_prefix<'a>(
    store: &WeightStore,
    prefixes: &'a [&'a str],
    name: &str,
) -> Option<&'a str> {
    prefixes
        .iter()
        .copied()
        .find(|prefix| store.contains(&scoped(prefix, name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn write_safetensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                (
                    name.to_string(),
                    TensorView::new(*dtype, shape.clone(), data).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, &None, path).unwrap();
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("koembed-weights-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn f32_f16_bf16_all_read_as_f32() {
        let dir = temp_dir("dtypes");
        let values = [1.0f32, -2.5, 0.333_251_95, 65504.0, 0.0, -0.0];
        let f16: Vec<u8> = values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        write_safetensors(
            &dir.join("model.safetensors"),
            &[
                ("a", Dtype::F32, vec![2, 3], f32_bytes(&values)),
                ("b", Dtype::F16, vec![6], f16),
                ("c", Dtype::BF16, vec![3, 2], bf16),
            ],
        );
        let store = WeightStore::open_dir(&dir).unwrap();
        let a = store.load_f32("a", &[2, 3]).unwrap();
        assert!(
            matches!(a, F32Weight::Mapped { .. }),
            "f32 should be borrowed"
        );
        assert_eq!(store.f32_data(&a), &values);
        let b = store.load_f32("b", &[6]).unwrap();
        let expected: Vec<f32> = values
            .iter()
            .map(|v| half::f16::from_f32(*v).to_f32())
            .collect();
        assert_eq!(store.f32_data(&b), expected.as_slice());
        let c = store.load_f32("c", &[3, 2]).unwrap();
        let expected: Vec<f32> = values
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_f32())
            .collect();
        assert_eq!(store.f32_data(&c), expected.as_slice());
    }

    /// Large tensors convert in parallel chunks and f16 in vector runs, from bytes at any
    /// offset: the same values as converting one by one.
    #[test]
    fn large_tensors_at_odd_offsets_decode_as_one_by_one() {
        let n = (1 << 17) + 1001;
        let values: Vec<f32> = (0..n)
            .map(|i| ((i as f32) * 0.37).sin() * 100.0 / (1 + i % 7) as f32)
            .collect();
        // Each value as the file stores it in `dtype`, and as f32 after one-by-one conversion.
        let encode = |dtype: WeightDtype, v: f32| -> (Vec<u8>, f32) {
            match dtype {
                WeightDtype::F32 => (v.to_le_bytes().to_vec(), v),
                WeightDtype::F16 => {
                    let h = half::f16::from_f32(v);
                    (h.to_le_bytes().to_vec(), h.to_f32())
                }
                WeightDtype::BF16 => {
                    let h = half::bf16::from_f32(v);
                    (h.to_le_bytes().to_vec(), h.to_f32())
                }
            }
        };
        let cases = [WeightDtype::F32, WeightDtype::F16, WeightDtype::BF16].map(|dtype| {
            let (bytes, want): (Vec<Vec<u8>>, Vec<f32>) =
                values.iter().map(|&v| encode(dtype, v)).unzip();
            (dtype, bytes.concat(), want)
        });
        for (dtype, bytes, want) in cases {
            let mut shifted = vec![0u8];
            shifted.extend_from_slice(&bytes);
            for len in [n, 1 << 16, 1025, 1] {
                let size = dtype.size_in_bytes();
                let got = decode_f32(&shifted[1..1 + len * size], dtype);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same && got.len() == len, "{dtype:?}, {len} values");
            }
        }
    }

    #[test]
    fn missing_tensor_wrong_shape_and_dtype_are_named() {
        let dir = temp_dir("errors");
        write_safetensors(
            &dir.join("model.safetensors"),
            &[
                (
                    "w",
                    Dtype::F32,
                    vec![2, 2],
                    f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
                ),
                ("ids", Dtype::I64, vec![1], vec![0; 8]),
            ],
        );
        let store = WeightStore::open_dir(&dir).unwrap();
        let err = store.load_f32("nope", &[2]).unwrap_err().to_string();
        assert!(
            err.contains("`nope`") && err.contains("model.safetensors"),
            "{err}"
        );
        let err = store.load_f32("w", &[4, 1]).unwrap_err().to_string();
        assert!(
            err.contains("[2, 2]") && err.contains("[4, 1]") && err.contains("`w`"),
            "{err}"
        );
        let err = store.load_f32("ids", &[1]).unwrap_err().to_string();
        assert!(err.contains("I64") && err.contains("`ids`"), "{err}");
    }

    #[test]
    fn truncated_and_garbage_files_are_errors_not_crashes() {
        let dir = temp_dir("corrupt");
        let path = dir.join("model.safetensors");
        write_safetensors(
            &path,
            &[("w", Dtype::F32, vec![4, 4], f32_bytes(&[0.5; 16]))],
        );
        let full = std::fs::read(&path).unwrap();
        for cut in [0, 3, 8, 20, full.len() - 1] {
            std::fs::write(&path, &full[..cut]).unwrap();
            let err = WeightStore::open_dir(&dir)
                .err()
                .expect("truncated file must fail");
            assert!(err.to_string().contains("model.safetensors"), "{err}");
        }
        let mut garbage = full.clone();
        garbage[0] = 0xff;
        garbage[5] = 0x7f; // header length now absurd
        std::fs::write(&path, &garbage).unwrap();
        assert!(WeightStore::open_dir(&dir).is_err());
        let mut bad_json = full;
        bad_json[8] = b'[';
        std::fs::write(&path, &bad_json).unwrap();
        assert!(WeightStore::open_dir(&dir).is_err());
    }

    #[test]
    fn sharded_checkpoints_follow_their_index() {
        let dir = temp_dir("sharded");
        write_safetensors(
            &dir.join("model-00001-of-00002.safetensors"),
            &[("a", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0]))],
        );
        write_safetensors(
            &dir.join("model-00002-of-00002.safetensors"),
            &[("b", Dtype::F32, vec![1], f32_bytes(&[3.0]))],
        );
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                "b": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let store = WeightStore::open_dir(&dir).unwrap();
        assert_eq!(
            store.f32_data(&store.load_f32("a", &[2]).unwrap()),
            &[1.0, 2.0]
        );
        assert_eq!(store.f32_data(&store.load_f32("b", &[1]).unwrap()), &[3.0]);

        // An index that lies about where a tensor lives is refused, naming the tensor.
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "model-00002-of-00002.safetensors",
                "b": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let err = WeightStore::open_dir(&dir).err().unwrap().to_string();
        assert!(err.contains("`a`"), "{err}");
    }

    #[test]
    fn empty_dir_says_what_is_missing() {
        let dir = temp_dir("empty");
        let err = WeightStore::open_dir(&dir).err().unwrap().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }

    #[test]
    fn store_can_be_shared_across_threads() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<WeightStore>();
    }

    #[test]
    fn legacy_layernorm_names() {
        assert_eq!(
            legacy_alias("encoder.layer.0.output.LayerNorm.weight").as_deref(),
            Some("encoder.layer.0.output.LayerNorm.gamma")
        );
        assert_eq!(legacy_alias("embeddings.word_embeddings.weight"), None);
    }
}
