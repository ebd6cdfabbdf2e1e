//! koe5-shape's weights: seeded random values in KoE5's exact architecture, for timing and
//! memory at KoE5's size (random values time the same as trained ones) and for parity against
//! the Python reference on the same file.
//!
//! Every value is a pure function of (seed, tensor name, element index): a counter-based
//! generator (splitmix64 keyed per tensor) has no state to carry from one element to the next,
//! so the values are generated in parallel, in any order, chunk by chunk, and come out bit
//! identical on every machine and thread count. That matters: goldens pin the file's sha256.

use super::encoder::{encoder_tensors, pooler_tensors, EncoderShape, Role, TensorSpec};
use super::safetensors_out::{OutTensor, Values};

pub const KOE5_SHAPE_SEED: u64 = 0x4b6f_4535_5368_6170; // "KoE5Shap"

/// splitmix64's increment (2^64 / golden ratio).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Uniform on [-a, a] has std a / sqrt(3): a = 0.02 * sqrt(3) gives BERT's init std 0.02.
const WEIGHT_HALF_WIDTH: f32 = 0.034_641_016;
/// LayerNorm weights are 1 + noise, LayerNorm biases and dense biases small noise: trained
/// models are not exactly 1 / 0 there, and a kernel that ignored them would go unnoticed.
const LAYER_NORM_WEIGHT_NOISE: f32 = 0.05;
const BIAS_NOISE: f32 = 0.02;

/// XLM-R's pad id and padding_idx: its word and position rows are zero (as transformers
/// initialises `nn.Embedding(padding_idx=1)`).
const PADDING_ROW: usize = 1;

/// splitmix64's output function (Steele, Lea, Flood 2014), a bijective 64-bit mixer.
pub fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a: a stable hash of the tensor name (std's hashers may change between Rust
/// versions; this may not).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The random stream of one tensor: element i is the (i + 1)-th output of splitmix64 seeded
/// with a key derived from the seed and the tensor's name.
#[derive(Clone, Copy)]
pub struct TensorRng {
    key: u64,
}

impl TensorRng {
    pub fn new(seed: u64, tensor_name: &str) -> Self {
        TensorRng {
            key: splitmix64_mix(seed ^ fnv1a64(tensor_name.as_bytes())),
        }
    }

    pub fn bits(&self, index: u64) -> u64 {
        splitmix64_mix(
            self.key
                .wrapping_add(index.wrapping_add(1).wrapping_mul(GAMMA)),
        )
    }

    /// Uniform on [-1, 1) in steps of 2^-23: the top 24 bits, so every step is exact in f32.
    pub fn symmetric_unit(&self, index: u64) -> f32 {
        (self.bits(index) >> 40) as f32 * (1.0 / (1u32 << 23) as f32) - 1.0
    }
}

/// How one tensor is initialised.
#[derive(Clone, Copy)]
struct Init {
    rng: TensorRng,
    role: Role,
    /// (row, row length) of a row kept at zero.
    zero_row: Option<(usize, usize)>,
}

impl Init {
    fn value(&self, index: u64) -> f32 {
        if let Some((row, row_len)) = self.zero_row {
            if index as usize / row_len == row {
                return 0.0;
            }
        }
        let u = self.rng.symmetric_unit(index);
        match self.role {
            Role::Weight => u * WEIGHT_HALF_WIDTH,
            Role::Bias | Role::LayerNormBias => u * BIAS_NOISE,
            Role::LayerNormWeight => 1.0 + u * LAYER_NORM_WEIGHT_NOISE,
        }
    }
}

/// The encoder and pooler tensors of `shape` (an XLMRobertaModel), with generated values.
pub fn random_xlmr_tensors(shape: &EncoderShape, seed: u64) -> Vec<OutTensor<'static>> {
    let mut specs = encoder_tensors(shape);
    specs.extend(pooler_tensors(shape));
    specs
        .into_iter()
        .map(|spec| generated_tensor(spec, seed))
        .collect()
}

fn generated_tensor(spec: TensorSpec, seed: u64) -> OutTensor<'static> {
    let zero_row = match spec.name.as_str() {
        "embeddings.word_embeddings.weight" | "embeddings.position_embeddings.weight" => {
            Some((PADDING_ROW, spec.dims[1]))
        }
        _ => None,
    };
    let init = Init {
        rng: TensorRng::new(seed, &spec.name),
        role: spec.role,
        zero_row,
    };
    OutTensor {
        name: spec.name,
        dims: spec.dims,
        values: Values::Generated(Box::new(move |i| init.value(i))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::encoder::KOE5;

    #[test]
    fn splitmix64_and_fnv1a_match_their_reference_values() {
        // splitmix64 seeded with 0: its first output (Vigna's reference splitmix64.c).
        assert_eq!(splitmix64_mix(GAMMA), 0xe220_a839_7b1d_cdaf);
        // FNV-1a 64 test vectors (Fowler, Noll, Vo).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn the_generator_is_pinned() {
        // Written down once, and reproduced by an independent Python implementation of the
        // same definition: a change here changes koe5-shape's sha256.
        let rng = TensorRng::new(
            KOE5_SHAPE_SEED,
            "encoder.layer.0.attention.self.query.weight",
        );
        assert_eq!(rng.bits(0), 0x49b8_0942_99b0_3b9e);
        assert_eq!(rng.bits(1), 0xd237_7666_b5d1_46c4);
        assert_eq!(rng.bits(1 << 40), 0x7f53_3e8c_9b06_27b9);
        assert_eq!(rng.symmetric_unit(0).to_bits(), 0xbed9_1fdc); // -0.4240712
    }

    #[test]
    fn koe5_shape_values_are_pinned() {
        let tensors = random_xlmr_tensors(&KOE5, KOE5_SHAPE_SEED);
        let value = |name: &str, index: u64| {
            let tensor = tensors.iter().find(|t| t.name == name).unwrap();
            match &tensor.values {
                Values::Generated(f) => f(index),
                Values::Data(_) => unreachable!(),
            }
        };
        // Row 1 (padding_idx) of both tables is zero; its neighbours are not.
        let h = 1024;
        for i in [h as u64, h as u64 + 5, 2 * h as u64 - 1] {
            assert_eq!(value("embeddings.word_embeddings.weight", i), 0.0);
            assert_eq!(value("embeddings.position_embeddings.weight", i), 0.0);
        }
        assert_ne!(
            value("embeddings.word_embeddings.weight", h as u64 - 1),
            0.0
        );
        assert_ne!(
            value("embeddings.position_embeddings.weight", 2 * h as u64),
            0.0
        );
        assert_eq!(
            value("embeddings.word_embeddings.weight", 0).to_bits(),
            0x3ccf_3c73
        ); // 0.02529738
        assert_eq!(
            value("encoder.layer.23.output.LayerNorm.weight", 7).to_bits(),
            0x3f82_a5c0
        ); // 1.0206833
        assert_eq!(value("pooler.dense.bias", 3).to_bits(), 0xbbd4_cdc7); // -0.006494257
    }

    #[test]
    fn weights_have_std_0_02_and_layer_norm_weights_sit_near_one() {
        let init = Init {
            rng: TensorRng::new(1, "w"),
            role: Role::Weight,
            zero_row: None,
        };
        let n = 200_000;
        let values: Vec<f64> = (0..n).map(|i| init.value(i) as f64).collect();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!(mean.abs() < 3e-4, "mean {mean}");
        assert!((std - 0.02).abs() < 2e-4, "std {std}");
        assert!(values.iter().all(|v| v.abs() <= WEIGHT_HALF_WIDTH as f64));

        let init = Init {
            role: Role::LayerNormWeight,
            ..init
        };
        assert!((0..1000)
            .map(|i| init.value(i))
            .all(|v| (0.95..=1.05).contains(&v)));
    }

    #[test]
    fn koe5_shape_has_the_tensor_list_of_koe5() {
        let tensors = random_xlmr_tensors(&KOE5, KOE5_SHAPE_SEED);
        // 5 embedding tensors, 16 per layer, the pooler's 2.
        assert_eq!(tensors.len(), 5 + 24 * 16 + 2);
        let elements: usize = tensors.iter().map(|t| t.elements()).sum();
        // XLM-R large's 559.9 M parameters (with pooler, type_vocab_size 1).
        assert_eq!(elements, 559_890_432);
    }
}
