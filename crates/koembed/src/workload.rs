//! The benchmark workloads W1-W3: the same token ids for every engine
//! (shared/peers/workloads.md), so that timings compare side by side.
//!
//! `id[r][c] = 5 + splitmix64((S << 32) + r*L + c) mod 249997`, then `id[r][0] = 0` and
//! `id[r][L-1] = 2`, for seed S (W1: 1, W2: 2, W3: 3), row r, column c, length L.

/// One standard workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub name: &'static str,
    pub seed: u64,
    pub batch: usize,
    pub seq_len: usize,
}

pub const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "W1",
        seed: 1,
        batch: 1,
        seq_len: 16,
    },
    Workload {
        name: "W2",
        seed: 2,
        batch: 64,
        seq_len: 128,
    },
    Workload {
        name: "W3",
        seed: 3,
        batch: 8,
        seq_len: 512,
    },
];

/// Every id is below this: valid for any XLM-R-vocabulary model (250002 tokens).
pub const MIN_VOCAB: usize = 250_002;

impl Workload {
    /// `W1`, `w2`, ... (case-insensitive).
    pub fn by_name(name: &str) -> Option<Workload> {
        WORKLOADS
            .iter()
            .copied()
            .find(|w| w.name.eq_ignore_ascii_case(name))
    }

    /// The token ids, one row per sequence.
    pub fn token_ids(&self) -> Vec<Vec<u32>> {
        let len = self.seq_len as u64;
        (0..self.batch as u64)
            .map(|r| {
                let mut row: Vec<u32> = (0..len)
                    .map(|c| (5 + splitmix64((self.seed << 32) + r * len + c) % 249_997) as u32)
                    .collect();
                row[0] = 0;
                row[self.seq_len - 1] = 2;
                row
            })
            .collect()
    }

    pub fn tokens(&self) -> usize {
        self.batch * self.seq_len
    }
}

/// The SplitMix64 finalizer (wrapping arithmetic).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w1_is_the_published_row() {
        let w1 = Workload::by_name("w1").unwrap().token_ids();
        let expected = [
            0, 195965, 53027, 242534, 161711, 31817, 152599, 235049, 95189, 89804, 236075, 26380,
            38592, 49932, 28770, 2,
        ];
        assert_eq!(w1, vec![expected.to_vec()]);
    }

    #[test]
    fn shapes_and_specials_and_range() {
        for w in WORKLOADS {
            let ids = w.token_ids();
            assert_eq!(ids.len(), w.batch);
            for row in &ids {
                assert_eq!(row.len(), w.seq_len);
                assert_eq!((row[0], row[w.seq_len - 1]), (0, 2));
                assert!(row[1..w.seq_len - 1]
                    .iter()
                    .all(|&id| (5..250_002).contains(&id)));
            }
        }
        assert_eq!(Workload::by_name("W4"), None);
    }
}
