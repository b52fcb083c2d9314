//! Hashes: the 32-byte identity of every trie node, and the functions that make them.
//!
//! The Gray Paper fixes one hash for nodes: BLAKE2b with a 32-byte digest (not BLAKE2b-512
//! truncated). Values longer than 32 bytes are also hashed before they go into a leaf; that
//! value hash is BLAKE2b-256 in the Gray Paper too, but it is kept behind [`ValueHasher`] so a
//! database can be built with another one (and must then always be opened with it).

use std::fmt;
use std::str::FromStr;

use std::sync::LazyLock;

use crate::hex_util::{HexError, decode_fixed_hex};

/// Length in bytes of a node hash.
pub const HASH_LEN: usize = 32;

/// A 32-byte hash: the identity of a trie node, a subtree or a whole state (its root).
///
/// [`Hash::ZERO`] stands for an empty subtrie, and is the root of an empty state.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; HASH_LEN]);

impl Hash {
    /// The zero hash `Z`: an empty subtrie.
    pub const ZERO: Hash = Hash([0; HASH_LEN]);

    /// Wraps 32 bytes.
    pub const fn new(bytes: [u8; HASH_LEN]) -> Self {
        Hash(bytes)
    }

    /// The bytes of the hash.
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// Whether this is the zero hash (an empty subtrie).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; HASH_LEN]
    }

    /// The hash with its most significant bit cleared: what a branch keeps of a left child.
    pub fn with_top_bit_cleared(mut self) -> Self {
        self.0[0] &= 0x7F;
        self
    }

    /// Lowercase hex, without a `0x` prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl FromStr for Hash {
    type Err = HexError;

    /// Parses 64 hex digits, with or without a `0x` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_fixed_hex::<HASH_LEN>(s).map(Hash)
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<[u8; HASH_LEN]> for Hash {
    fn from(bytes: [u8; HASH_LEN]) -> Self {
        Hash(bytes)
    }
}

impl From<Hash> for [u8; HASH_LEN] {
    fn from(hash: Hash) -> Self {
        hash.0
    }
}

/// BLAKE2b parameters with a 32-byte digest (the digest length is a parameter of BLAKE2b, so
/// this is not BLAKE2b-512 truncated).
static PARAMS_256: LazyLock<blake2b_simd::Params> = LazyLock::new(|| {
    let mut p = blake2b_simd::Params::new();
    p.hash_length(HASH_LEN);
    p
});

/// BLAKE2b with a 32-byte digest, the Gray Paper's `H`.
///
/// `blake2b_simd` picks its AVX2 implementation at run time where the CPU has it (about a
/// fifth faster than a portable one for a 64-byte node here); see [`blake2b_256_many`] for
/// several independent inputs at once.
pub fn blake2b_256(data: &[u8]) -> Hash {
    to_hash(PARAMS_256.hash(data))
}

/// BLAKE2b-256 of each of `inputs`, into `out` (which must be as long): independent inputs
/// are hashed up to four at a time in SIMD lanes, about twice as fast per hash as one at a
/// time.
pub fn blake2b_256_many<I: AsRef<[u8]>>(inputs: &[I], out: &mut [Hash]) {
    assert_eq!(inputs.len(), out.len(), "one output per input");
    for (inputs, out) in inputs.chunks(4).zip(out.chunks_mut(4)) {
        match inputs.len() {
            1 => out[0] = blake2b_256(inputs[0].as_ref()),
            2 => many::<2, I>(inputs, out),
            3 => many::<3, I>(inputs, out),
            _ => many::<4, I>(inputs, out),
        }
    }
}

/// `N` hashes side by side (`inputs` and `out` hold `N` each).
fn many<const N: usize, I: AsRef<[u8]>>(inputs: &[I], out: &mut [Hash]) {
    let mut jobs: [blake2b_simd::many::HashManyJob<'_>; N] = std::array::from_fn(|i| {
        blake2b_simd::many::HashManyJob::new(&PARAMS_256, inputs[i].as_ref())
    });
    blake2b_simd::many::hash_many(jobs.iter_mut());
    for (job, o) in jobs.iter().zip(out.iter_mut()) {
        *o = to_hash(job.to_hash());
    }
}

fn to_hash(h: blake2b_simd::Hash) -> Hash {
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(h.as_bytes());
    Hash(out)
}

/// The hash of a value that is too long to be embedded in its leaf (more than 32 bytes).
///
/// The Gray Paper uses BLAKE2b-256 ([`Blake2bValueHasher`]). Another hasher makes a different
/// (non-JAM) trie; a database records the [`ValueHasher::name`] it was built with.
pub trait ValueHasher: Send + Sync {
    /// Hashes a value longer than 32 bytes.
    fn hash_value(&self, value: &[u8]) -> Hash;

    /// A short stable name identifying the function (at most 32 bytes of ASCII), recorded by
    /// databases so that a database is never opened with a different hasher.
    fn name(&self) -> &str;
}

/// The Gray Paper value hash: BLAKE2b-256.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blake2bValueHasher;

impl ValueHasher for Blake2bValueHasher {
    fn hash_value(&self, value: &[u8]) -> Hash {
        blake2b_256(value)
    }

    fn name(&self) -> &str {
        "blake2b-256"
    }
}

impl<T: ValueHasher + ?Sized> ValueHasher for &T {
    fn hash_value(&self, value: &[u8]) -> Hash {
        (**self).hash_value(value)
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}

impl<T: ValueHasher + ?Sized> ValueHasher for std::sync::Arc<T> {
    fn hash_value(&self, value: &[u8]) -> Hash {
        (**self).hash_value(value)
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake2b_256_is_not_truncated_512() {
        // Known answer: blake2b(b"", digest_size=32).
        assert_eq!(
            blake2b_256(b"").to_hex(),
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
        );
    }

    #[test]
    fn many_equals_one_at_a_time() {
        let inputs: Vec<Vec<u8>> = (0..19u8).map(|i| vec![i; 64 + i as usize]).collect();
        let mut out = vec![Hash::ZERO; inputs.len()];
        blake2b_256_many(&inputs, &mut out);
        for (input, h) in inputs.iter().zip(&out) {
            assert_eq!(*h, blake2b_256(input));
        }
    }

    #[test]
    fn hash_hex_round_trip() {
        let h = blake2b_256(b"abc");
        assert_eq!(h.to_string().parse::<Hash>().unwrap(), h);
        assert_eq!(format!("0x{h}").parse::<Hash>().unwrap(), h);
        assert!("00".parse::<Hash>().is_err());
    }
}
