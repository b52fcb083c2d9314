//! `bmt-bench`: criterion micro-benchmarks of `bmt-core` (and later `bmt`), and the
//! `proof_sizes` example.
//!
//! Run the benchmarks with `cargo bench -p bmt-bench --bench core`, the example with
//! `cargo run --release -p bmt-bench --example proof_sizes`.
//!
//! This library holds only deterministic data generation, so that every run (and every
//! figure quoted in `docs/merklization.md`) sees the same keys. It uses its own SplitMix64
//! rather than a `rand` generator, whose output may change between `rand` versions.

use bmt_core::{KEY_LEN, Key};

/// A small deterministic generator (SplitMix64): the same seed always gives the same bytes.
#[derive(Debug, Clone)]
pub struct DetRng(u64);

impl DetRng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        DetRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// A uniformly random index below `n` (`n > 0`; the tiny modulo bias does not matter here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `k` distinct indices below `n`, in random order (a partial Fisher-Yates shuffle).
    pub fn distinct_indices(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "cannot pick {k} distinct indices below {n}");
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }

    /// A random 31-byte key.
    pub fn key(&mut self) -> Key {
        let mut k = [0u8; KEY_LEN];
        self.fill(&mut k);
        Key(k)
    }

    /// A random 32-byte value.
    pub fn value32(&mut self) -> Vec<u8> {
        let mut v = vec![0u8; 32];
        self.fill(&mut v);
        v
    }
}

/// `n` random keys with random 32-byte values, in generation order (not sorted). With 31-byte
/// random keys a repeat is vanishingly unlikely, but callers that need distinct keys should
/// sort and dedup.
pub fn random_entries(seed: u64, n: usize) -> Vec<(Key, Vec<u8>)> {
    let mut rng = DetRng::new(seed);
    (0..n).map(|_| (rng.key(), rng.value32())).collect()
}

/// [`random_entries`], sorted by key with duplicate keys removed (the first value kept).
pub fn sorted_random_entries(seed: u64, n: usize) -> Vec<(Key, Vec<u8>)> {
    let mut entries = random_entries(seed, n);
    entries.sort_by_key(|e| e.0);
    entries.dedup_by_key(|e| e.0);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        assert_eq!(random_entries(7, 10), random_entries(7, 10));
        assert_ne!(random_entries(7, 10), random_entries(8, 10));
        let s = sorted_random_entries(7, 1000);
        assert_eq!(s.len(), 1000);
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
        let mut picked = DetRng::new(1).distinct_indices(100, 40);
        picked.sort();
        picked.dedup();
        assert_eq!(picked.len(), 40);
        assert!(picked.iter().all(|&i| i < 100));
    }
}
