//! Half-precision weights to `f32`, once, at load.
//!
//! Both conversions are exact (every f16 and bf16 value, NaN and ±inf included, is an f32
//! value). The result costs 4 bytes per weight, twice the file's size.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::error::{Result, TensorError};

/// `f16` values to `f32` (uses the CPU's conversion instructions where the `half` crate finds
/// them).
pub fn f16_to_f32_vec(src: &[f16]) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    src.convert_to_f32_slice(&mut out);
    out
}

/// `bf16` values to `f32`.
pub fn bf16_to_f32_vec(src: &[bf16]) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    src.convert_to_f32_slice(&mut out);
    out
}

/// Little-endian `f16` bytes (as stored in safetensors, any alignment) to `f32`.
pub fn f16_le_bytes_to_f32_vec(bytes: &[u8]) -> Result<Vec<f32>> {
    check_even("f16_le_bytes_to_f32_vec", bytes)?;
    Ok(bytes
        .chunks_exact(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect())
}

/// Little-endian `bf16` bytes (as stored in safetensors, any alignment) to `f32`.
pub fn bf16_le_bytes_to_f32_vec(bytes: &[u8]) -> Result<Vec<f32>> {
    check_even("bf16_le_bytes_to_f32_vec", bytes)?;
    Ok(bytes
        .chunks_exact(2)
        .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect())
}

fn check_even(op: &'static str, bytes: &[u8]) -> Result<()> {
    if bytes.len().is_multiple_of(2) {
        Ok(())
    } else {
        Err(TensorError::InvalidArgument {
            op,
            message: format!(
                "{} bytes is not a whole number of 2-byte values",
                bytes.len()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_f16_and_bf16_value_converts_exactly() {
        // All 65536 bit patterns of each type, through both the slice and the byte paths.
        let bits: Vec<u16> = (0..=u16::MAX).collect();
        let halfs: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        let brains: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();

        let a = f16_to_f32_vec(&halfs);
        let b = f16_le_bytes_to_f32_vec(&bytes).unwrap();
        let c = bf16_to_f32_vec(&brains);
        let d = bf16_le_bytes_to_f32_vec(&bytes).unwrap();
        for (i, &bit) in bits.iter().enumerate() {
            let h = f16::from_bits(bit);
            let want = h.to_f32();
            if h.is_nan() {
                assert!(a[i].is_nan() && b[i].is_nan(), "f16 {bit:#06x}");
            } else {
                assert_eq!(a[i].to_bits(), want.to_bits(), "f16 {bit:#06x}");
                assert_eq!(b[i].to_bits(), want.to_bits(), "f16 {bit:#06x}");
                // An f16 value survives the round trip, so the conversion was exact.
                assert_eq!(f16::from_f32(a[i]).to_bits(), bit);
            }
            // bf16 is the top half of an f32.
            let want = f32::from_bits((bit as u32) << 16);
            if want.is_nan() {
                assert!(c[i].is_nan() && d[i].is_nan(), "bf16 {bit:#06x}");
            } else {
                assert_eq!(c[i].to_bits(), want.to_bits(), "bf16 {bit:#06x}");
                assert_eq!(d[i].to_bits(), want.to_bits(), "bf16 {bit:#06x}");
            }
        }
    }

    #[test]
    fn odd_byte_count_is_an_error() {
        let e = f16_le_bytes_to_f32_vec(&[0, 0, 0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f16_le_bytes_to_f32_vec: 3 bytes is not a whole number of 2-byte values"
        );
        assert!(bf16_le_bytes_to_f32_vec(&[1]).is_err());
    }
}
