//! A streaming safetensors writer.
//!
//! Why not `safetensors::serialize_to_file`: it needs every tensor's bytes up front (1.1 GB for
//! koe5-shape), and its header layout is the crate's choice, which may change between versions.
//! The goldens pin each model's sha256, so we write the bytes ourselves, deterministically:
//! `u64 header length`, the JSON header (`__metadata__` first, then the tensors in model
//! order), padded with spaces to a multiple of 8 as the reference implementation does, then
//! the data, tensor after tensor, little-endian. Values are converted and hashed chunk by chunk,
//! so memory stays at one chunk whatever the model size.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context};
use half::f16;
use rayon::prelude::*;

use super::files::HashingWriter;
use super::progress::{Progress, Unit};

/// Elements converted and written at a time.
const CHUNK_ELEMENTS: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dtype {
    F32,
    F16,
}

impl Dtype {
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
        }
    }

    pub fn torch_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
        }
    }

    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }
}

/// Where a tensor's values come from.
pub enum Values<'a> {
    /// Values in memory (borrowed from the loaded weights, or owned when a variant changed them).
    Data(Cow<'a, [f32]>),
    /// Values computed from the flat element index when written: never all in memory at once.
    Generated(Box<dyn Fn(u64) -> f32 + Sync + 'a>),
}

pub struct OutTensor<'a> {
    pub name: String,
    pub dims: Vec<usize>,
    pub values: Values<'a>,
}

impl OutTensor<'_> {
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }
}

#[derive(Debug)]
pub struct WrittenFile {
    pub bytes: u64,
    pub sha256: String,
}

/// Writes `tensors`, all stored as `dtype`, to `path`; returns the size and sha256 of the file.
pub fn write(
    path: &Path,
    dtype: Dtype,
    tensors: &[OutTensor],
    label: &str,
) -> anyhow::Result<WrittenFile> {
    for tensor in tensors {
        if let Values::Data(data) = &tensor.values {
            ensure!(
                data.len() == tensor.elements(),
                "tensor {}: {} values for shape {:?}",
                tensor.name,
                data.len(),
                tensor.dims
            );
        }
    }
    let header = header_bytes(dtype, tensors);
    let data_bytes: u64 = tensors
        .iter()
        .map(|t| (t.elements() * dtype.size()) as u64)
        .sum();
    let total = 8 + header.len() as u64 + data_bytes;

    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 22, file));
    let progress = Progress::new(label, total, Unit::Bytes);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    progress.inc(8 + header.len() as u64);

    let mut values = Vec::with_capacity(CHUNK_ELEMENTS);
    let mut bytes = Vec::with_capacity(CHUNK_ELEMENTS * dtype.size());
    for tensor in tensors {
        let elements = tensor.elements();
        let mut start = 0;
        while start < elements {
            let end = (start + CHUNK_ELEMENTS).min(elements);
            fill_chunk(&tensor.values, start, end, &mut values);
            encode(dtype, &values, &mut bytes)
                .with_context(|| format!("tensor {} (elements {start}..{end})", tensor.name))?;
            out.write_all(&bytes)
                .with_context(|| format!("writing {}", path.display()))?;
            progress.inc(bytes.len() as u64);
            start = end;
        }
    }
    ensure!(
        out.bytes_written() == total,
        "wrote {} bytes, expected {total}",
        out.bytes_written()
    );
    let (buffered, sha256) = out
        .finish()
        .with_context(|| format!("writing {}", path.display()))?;
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    progress.finish();
    Ok(WrittenFile {
        bytes: total,
        sha256,
    })
}

/// The JSON header, padded with spaces to a multiple of 8 bytes.
fn header_bytes(dtype: Dtype, tensors: &[OutTensor]) -> Vec<u8> {
    let mut entries = vec![r#""__metadata__":{"format":"pt"}"#.to_string()];
    let mut offset = 0usize;
    for tensor in tensors {
        let end = offset + tensor.elements() * dtype.size();
        let dims: Vec<String> = tensor.dims.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            r#"{}:{{"dtype":"{}","shape":[{}],"data_offsets":[{offset},{end}]}}"#,
            serde_json::to_string(&tensor.name).expect("a string serializes"),
            dtype.safetensors_name(),
            dims.join(","),
        ));
        offset = end;
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    header
}

fn fill_chunk(source: &Values, start: usize, end: usize, chunk: &mut Vec<f32>) {
    chunk.clear();
    match source {
        Values::Data(data) => chunk.extend_from_slice(&data[start..end]),
        Values::Generated(value_at) => {
            chunk.resize(end - start, 0.0);
            chunk
                .par_iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = value_at((start + i) as u64));
        }
    }
}

/// Little-endian bytes of `values` as `dtype`. F16 rounds to nearest even (IEEE, identical on
/// every machine whether or not the CPU has F16C) and refuses values that overflow to infinity.
fn encode(dtype: Dtype, values: &[f32], bytes: &mut Vec<u8>) -> anyhow::Result<()> {
    const PER_TASK: usize = 1 << 14;
    bytes.clear();
    bytes.resize(values.len() * dtype.size(), 0);
    let overflow = bytes
        .par_chunks_mut(PER_TASK * dtype.size())
        .zip(values.par_chunks(PER_TASK))
        .map(|(out, values)| match dtype {
            Dtype::F32 => {
                for (out, v) in out.chunks_exact_mut(4).zip(values) {
                    out.copy_from_slice(&v.to_le_bytes());
                }
                false
            }
            Dtype::F16 => {
                let mut overflow = false;
                for (out, v) in out.chunks_exact_mut(2).zip(values) {
                    let half = f16::from_f32(*v);
                    overflow |= half.is_infinite() && v.is_finite();
                    out.copy_from_slice(&half.to_bits().to_le_bytes());
                }
                overflow
            }
        })
        .reduce(|| false, |a, b| a || b);
    if overflow {
        bail!("a value overflows f16");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::{Dtype as StDtype, SafeTensors};

    fn sample_tensors() -> Vec<OutTensor<'static>> {
        vec![
            OutTensor {
                name: "a.weight".into(),
                dims: vec![2, 3],
                values: Values::Data(Cow::Owned(vec![0.5, -1.0, 2.0, 3.25, 0.0, -0.125])),
            },
            OutTensor {
                name: "b.bias".into(),
                dims: vec![3],
                values: Values::Generated(Box::new(|i| i as f32 * 10.0)),
            },
        ]
    }

    fn write_to_temp(dtype: Dtype, tensors: &[OutTensor]) -> (Vec<u8>, WrittenFile) {
        let dir =
            std::env::temp_dir().join(format!("koembed-st-test-{}-{dtype:?}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let written = write(&path, dtype, tensors, "test").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        (bytes, written)
    }

    #[test]
    fn the_safetensors_crate_reads_what_we_write() {
        for dtype in [Dtype::F32, Dtype::F16] {
            let (bytes, written) = write_to_temp(dtype, &sample_tensors());
            assert_eq!(written.bytes, bytes.len() as u64);
            assert_eq!(written.sha256, super::super::files::sha256_hex(&bytes));
            let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            assert_eq!(header_len % 8, 0, "header is padded to 8 bytes");

            let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
            assert_eq!(metadata.metadata().as_ref().unwrap()["format"], "pt");
            let file = SafeTensors::deserialize(&bytes).unwrap();
            let a = file.tensor("a.weight").unwrap();
            assert_eq!(a.shape(), &[2, 3]);
            let b = file.tensor("b.bias").unwrap();
            assert_eq!(b.shape(), &[3]);
            let decode = |raw: &[u8]| -> Vec<f32> {
                match dtype {
                    Dtype::F32 => raw
                        .chunks(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    Dtype::F16 => raw
                        .chunks(2)
                        .map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f32())
                        .collect(),
                }
            };
            let expected_dtype = if dtype == Dtype::F32 {
                StDtype::F32
            } else {
                StDtype::F16
            };
            assert_eq!(a.dtype(), expected_dtype);
            // All sample values are exact in f16 too.
            assert_eq!(decode(a.data()), vec![0.5, -1.0, 2.0, 3.25, 0.0, -0.125]);
            assert_eq!(decode(b.data()), vec![0.0, 10.0, 20.0]);
        }
    }

    #[test]
    fn f16_conversion_rounds_to_nearest_even_and_rejects_overflow() {
        let mut bytes = Vec::new();
        // 1 + 2^-11 lies halfway between 1 and the next f16 (1 + 2^-10): ties go to even (1.0).
        // 1 + 3 * 2^-11 lies halfway between 1 + 2^-10 and 1 + 2^-9: even is 1 + 2^-9.
        encode(
            Dtype::F16,
            &[1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11)],
            &mut bytes,
        )
        .unwrap();
        assert_eq!(bytes, [0x00, 0x3c, 0x02, 0x3c]);
        assert!(encode(Dtype::F16, &[70000.0], &mut bytes).is_err());
    }

    #[test]
    fn a_wrong_value_count_is_an_error() {
        let tensors = vec![OutTensor {
            name: "t".into(),
            dims: vec![4],
            values: Values::Data(Cow::Owned(vec![1.0; 3])),
        }];
        let err = write(
            Path::new("/nonexistent/never-created"),
            Dtype::F32,
            &tensors,
            "test",
        )
        .unwrap_err();
        assert!(err.to_string().contains("tensor t"), "{err}");
    }
}
