//! Float32 matrices as NumPy `.npy` files: writing (format version 1.0) and reading back the
//! files koembed writes (little-endian float32, C order, 2-D; versions 1.0 to 3.0).

use std::io::Write;

use anyhow::{bail, Context};
use ndarray::Array2;

/// The bytes of a C-order little-endian float32 .npy file holding `matrix`.
pub fn npy_bytes(matrix: &Array2<f32>) -> Vec<u8> {
    let (rows, cols) = matrix.dim();
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple
    // of 64 and ended by a newline, as numpy writes it.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + rows * cols * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in matrix.iter() {
        out.write_all(&v.to_le_bytes())
            .expect("writing to a Vec cannot fail");
    }
    out
}

/// Parses a `.npy` holding a little-endian float32 C-order 2-D array.
pub fn parse_npy_f32(bytes: &[u8]) -> anyhow::Result<Array2<f32>> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not a .npy file (no \\x93NUMPY magic)");
    }
    let (header_start, header_len) = match bytes[6] {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 if bytes.len() >= 12 => (
            12,
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
        ),
        v => bail!("unsupported .npy version {v}"),
    };
    let data_start = header_start + header_len;
    let header = bytes
        .get(header_start..data_start)
        .and_then(|h| std::str::from_utf8(h).ok())
        .context("truncated or non-text .npy header")?;
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.contains("'descr':'<f4'") {
        bail!("not little-endian float32 data: {header}");
    }
    if !compact.contains("'fortran_order':False") {
        bail!("not in C order: {header}");
    }
    let shape = compact
        .split("'shape':(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .context("no shape in the .npy header")?;
    let dims = shape
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad shape ({shape})"))?;
    let [rows, cols] = dims[..] else {
        bail!("expected a 2-D array, the shape is ({shape})");
    };
    let data = &bytes[data_start..];
    if data.len() != rows * cols * 4 {
        bail!("{} data bytes for shape ({rows}, {cols})", data.len());
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Array2::from_shape_vec((rows, cols), values)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_data_follows_in_c_order() {
        let m = ndarray::array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let bytes = npy_bytes(&m);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(
            header.contains("'shape': (2, 3)") && header.ends_with('\n'),
            "{header:?}"
        );
        let data: Vec<f32> = bytes[10 + header_len..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn reads_back_what_it_writes() {
        let m = ndarray::array![[1.0f32, -2.5, 3.0], [4.0, 5.0, f32::MIN_POSITIVE]];
        assert_eq!(parse_npy_f32(&npy_bytes(&m)).unwrap(), m);
        let empty = Array2::<f32>::zeros((0, 7));
        assert_eq!(parse_npy_f32(&npy_bytes(&empty)).unwrap().dim(), (0, 7));
        let mut bytes = npy_bytes(&m);
        bytes.pop();
        assert!(parse_npy_f32(&bytes).is_err());
        assert!(parse_npy_f32(b"nonsense").is_err());
    }
}
