//! State keys: exactly 31 bytes since Gray Paper 0.6.6.
//!
//! Bit `i` of a key is read most-significant-bit first within each byte, bytes in order, so
//! the order of keys in the trie is the lexicographic order of their bytes. Before GP 0.6.6,
//! keys were 32 bytes of which only the first 31 counted; the API accepts a 32-byte key only
//! when its last byte is zero, so that no caller silently loses a byte that mattered to them.

use std::fmt;
use std::str::FromStr;

use crate::hex_util::{HexError, strip_0x};

/// Length in bytes of a state key.
pub const KEY_LEN: usize = 31;

/// Number of bits in a key; also the maximum depth of a leaf.
pub const KEY_BITS: usize = KEY_LEN * 8;

/// A 31-byte JAM state key. Keys order as their bytes do (the trie's order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Key(pub [u8; KEY_LEN]);

impl Ord for Key {
    /// The bytes' lexicographic order, decided by the first eight bytes as one number when
    /// they differ (almost always, for keys that are hashes): sorting and searching the
    /// changes of a commit compare keys millions of times, and a comparison of byte slices
    /// is a call to `memcmp`.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let head = |k: &Key| u64::from_be_bytes(k.0[..8].try_into().expect("31 bytes"));
        head(self)
            .cmp(&head(other))
            .then_with(|| self.0[8..].cmp(&other.0[8..]))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A byte string could not be made into a [`Key`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Keys are 31 bytes (or 32 with a zero last byte).
    #[error("a key must be 31 bytes (or 32 with a zero last byte), got {0} bytes")]
    WrongLength(usize),
    /// A 32-byte key whose last byte is not zero would lose information if truncated.
    #[error("a 32-byte key must end with a zero byte, got 0x{0:02x}")]
    NonZeroLastByte(u8),
    /// The key is not valid hex.
    #[error("key: {0}")]
    Hex(#[from] HexError),
}

impl Key {
    /// Wraps 31 bytes.
    pub const fn new(bytes: [u8; KEY_LEN]) -> Self {
        Key(bytes)
    }

    /// Builds a key from 31 bytes, or from 32 bytes whose last byte is zero.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        match bytes.len() {
            KEY_LEN => {
                let mut k = [0u8; KEY_LEN];
                k.copy_from_slice(bytes);
                Ok(Key(k))
            }
            32 if bytes[31] == 0 => Key::from_slice(&bytes[..KEY_LEN]),
            32 => Err(KeyError::NonZeroLastByte(bytes[31])),
            n => Err(KeyError::WrongLength(n)),
        }
    }

    /// Builds a key from the first 31 bytes of a longer byte string, ignoring the rest.
    ///
    /// Only for loading pre-0.6.6 test files, whose 32nd key byte was ignored by the
    /// merklization. The database API never truncates.
    pub fn truncating(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < KEY_LEN {
            return Err(KeyError::WrongLength(bytes.len()));
        }
        Key::from_slice(&bytes[..KEY_LEN])
    }

    /// The key bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Bit `i` (0-based, MSB first), for `i < 248`.
    #[inline]
    pub fn bit(&self, i: usize) -> bool {
        (self.0[i >> 3] >> (7 - (i & 7))) & 1 == 1
    }

    /// The key with bit `i` set to `value`.
    #[inline]
    pub fn with_bit(mut self, i: usize, value: bool) -> Self {
        let mask = 1u8 << (7 - (i & 7));
        if value {
            self.0[i >> 3] |= mask;
        } else {
            self.0[i >> 3] &= !mask;
        }
        self
    }

    /// The key with its first `bits` bits (at most 8) replaced by the low `bits` bits of
    /// `value`, most significant first.
    pub fn with_prefix_bits(mut self, value: u8, bits: usize) -> Self {
        debug_assert!(bits <= 8);
        for i in 0..bits {
            self = self.with_bit(i, (value >> (bits - 1 - i)) & 1 == 1);
        }
        self
    }

    /// The number of leading bits this key shares with `other` (248 if they are equal).
    #[inline]
    pub fn common_prefix_bits(&self, other: &Key) -> usize {
        for (i, (a, b)) in self.0.iter().zip(other.0.iter()).enumerate() {
            let x = a ^ b;
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        KEY_BITS
    }

    /// The key with every bit from `bits` on cleared: the canonical form of a path prefix.
    pub fn prefix(mut self, bits: usize) -> Self {
        if bits >= KEY_BITS {
            return self;
        }
        let byte = bits >> 3;
        let keep = (bits & 7) as u32;
        self.0[byte] &= (0xFF00u16 >> keep) as u8;
        for b in &mut self.0[byte + 1..] {
            *b = 0;
        }
        self
    }

    /// The key with every bit from `bits` on set: the last key of a path prefix's range.
    pub fn prefix_end(mut self, bits: usize) -> Self {
        if bits >= KEY_BITS {
            return self;
        }
        let byte = bits >> 3;
        let keep = (bits & 7) as u32;
        self.0[byte] |= (0xFFu16 >> keep) as u8;
        for b in &mut self.0[byte + 1..] {
            *b = 0xFF;
        }
        self
    }

    /// Lowercase hex, without a `0x` prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.to_hex())
    }
}

impl FromStr for Key {
    type Err = KeyError;

    /// Parses 62 hex digits (or 64 ending in `00`), with or without a `0x` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(strip_0x(s)).map_err(HexError::from)?;
        Key::from_slice(&bytes)
    }
}

impl From<[u8; KEY_LEN]> for Key {
    fn from(bytes: [u8; KEY_LEN]) -> Self {
        Key(bytes)
    }
}

impl TryFrom<&[u8]> for Key {
    type Error = KeyError;
    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Key::from_slice(bytes)
    }
}

impl TryFrom<[u8; 32]> for Key {
    type Error = KeyError;
    fn try_from(bytes: [u8; 32]) -> Result<Self, Self::Error> {
        Key::from_slice(&bytes)
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Pairs that differ at any byte (in the first eight or only after them), in that
        /// byte alone or from it on.
        #[test]
        fn keys_order_as_their_bytes(
            a: [u8; KEY_LEN],
            at in 0..KEY_LEN,
            byte: u8,
            tail: [u8; KEY_LEN],
            whole_tail: bool,
        ) {
            let mut b = a;
            b[at] = byte;
            if whole_tail {
                b[at..].copy_from_slice(&tail[at..]);
            }
            let (ka, kb) = (Key(a), Key(b));
            proptest::prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            proptest::prop_assert_eq!(kb.cmp(&ka), b.cmp(&a));
            proptest::prop_assert_eq!(ka.partial_cmp(&kb), Some(a.cmp(&b)));
            proptest::prop_assert_eq!(ka.cmp(&ka), std::cmp::Ordering::Equal);
        }
    }

    #[test]
    fn lengths() {
        assert!(Key::from_slice(&[1; 31]).is_ok());
        assert_eq!(
            Key::from_slice(&[1; 30]).unwrap_err(),
            KeyError::WrongLength(30)
        );
        let mut k32 = [7u8; 32];
        assert_eq!(
            Key::from_slice(&k32).unwrap_err(),
            KeyError::NonZeroLastByte(7)
        );
        k32[31] = 0;
        assert_eq!(Key::from_slice(&k32).unwrap(), Key([7; 31]));
        assert_eq!(
            Key::from_slice(&[0; 33]).unwrap_err(),
            KeyError::WrongLength(33)
        );
        assert_eq!(Key::truncating(&[9; 32]).unwrap(), Key([9; 31]));
    }

    #[test]
    fn bits_are_msb_first() {
        let mut b = [0u8; 31];
        b[0] = 160; // bits([160, 0]) = [1,0,1,0,...]
        let k = Key(b);
        assert!(k.bit(0));
        assert!(!k.bit(1));
        assert!(k.bit(2));
        assert!(!k.bit(7));
        let mut last = [0u8; 31];
        last[30] = 1;
        assert!(Key(last).bit(247));
        assert_eq!(Key(last).common_prefix_bits(&Key([0; 31])), 247);
        assert_eq!(Key(b).common_prefix_bits(&Key(b)), KEY_BITS);
        assert_eq!(Key([0; 31]).with_bit(247, true), Key(last));
    }

    #[test]
    fn prefix_clears_tail() {
        let k = Key([0xFF; 31]);
        assert_eq!(k.prefix(0), Key([0; 31]));
        let p = k.prefix(11);
        assert_eq!(p.0[0], 0xFF);
        assert_eq!(p.0[1], 0xE0);
        assert!(p.0[2..].iter().all(|&b| b == 0));
        assert_eq!(k.prefix(248), k);
        let z = Key([0; 31]);
        assert_eq!(z.prefix_end(0), Key([0xFF; 31]));
        let e = z.prefix_end(11);
        assert_eq!((e.0[0], e.0[1], e.0[2]), (0, 0x1F, 0xFF));
        assert_eq!(z.prefix_end(248), z);
    }

    #[test]
    fn hex() {
        let k = Key([0xAB; 31]);
        assert_eq!(k.to_string().parse::<Key>().unwrap(), k);
        assert_eq!(format!("0x{k}00").parse::<Key>().unwrap(), k);
        assert!(format!("0x{k}01").parse::<Key>().is_err());
        assert!("zz".parse::<Key>().is_err());
    }
}
