//! The number format an encoder's linear layers run in (`--dtype`).

use std::fmt;
use std::str::FromStr;

/// What the encoder's linear layers (Q/K/V, attention output, FFN in and out: all but a few
/// percent of the work) compute in. Embeddings, LayerNorm, attention, softmax, residuals and
/// pooling stay f32 in every one; f32 is the default and the only one that matches the
/// reference to the parity tolerances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ComputeDtype {
    /// f32 weights and activations, f32 accumulation.
    #[default]
    F32,
    /// f16 weights (half the memory), widened to f32 in the GEMM; f32 activations.
    F16,
    /// bf16 weights and activations (rounded to nearest even), f32 accumulation.
    Bf16,
    /// int8 weights (symmetric, per output channel) and activations (symmetric, per row at run
    /// time), exact i32 accumulation, rescaled to f32.
    Int8,
}

impl ComputeDtype {
    pub const ALL: [ComputeDtype; 4] = [
        ComputeDtype::F32,
        ComputeDtype::F16,
        ComputeDtype::Bf16,
        ComputeDtype::Int8,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ComputeDtype::F32 => "f32",
            ComputeDtype::F16 => "f16",
            ComputeDtype::Bf16 => "bf16",
            ComputeDtype::Int8 => "int8",
        }
    }
}

impl fmt::Display for ComputeDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ComputeDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown dtype `{s}`: expected one of f32, f16, bf16, int8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for d in ComputeDtype::ALL {
            assert_eq!(d.name().parse::<ComputeDtype>(), Ok(d));
        }
        assert_eq!("BF16".parse::<ComputeDtype>(), Ok(ComputeDtype::Bf16));
        let err = "fp8".parse::<ComputeDtype>().unwrap_err();
        assert!(err.contains("fp8") && err.contains("int8"), "{err}");
    }
}
