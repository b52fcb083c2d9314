//! Helpers shared by the reliability tests: the model's state, its reference root, and a
//! seeded generator so that every workload replays exactly from its seed.

#![allow(dead_code)] // Each test crate uses a different subset.

use std::collections::BTreeMap;

use bmt::{Hash, Key};
use bmt_core::ReferenceTrie;

/// The model of the database's contents.
pub type State = BTreeMap<Key, Vec<u8>>;

/// The reference root of `state` (the oracle every root is held against).
pub fn root_of(state: &State) -> Hash {
    ReferenceTrie::new(state.iter().map(|(k, v)| (*k, v.clone()))).root()
}

/// SplitMix64.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
