//! Trie nodes and their exact 64-byte Gray Paper encodings.
//!
//! Every node is 64 bytes and is identified by its BLAKE2b-256 hash. The first byte holds the
//! node type in its top bits:
//!
//! | node | byte 0 | bytes 1..32 | bytes 32..64 |
//! |---|---|---|---|
//! | branch | `left[0] & 0x7F` | `left[1..32]` | `right` |
//! | embedded leaf (value ≤ 32 bytes) | `0x80 \| len` | key (31 bytes) | value, zero-padded |
//! | regular leaf (value > 32 bytes) | `0xC0` | key (31 bytes) | value hash |
//!
//! A branch drops the most significant bit of its left child's hash, so a decoded branch does
//! not give the left child's full hash back: stores keep full child hashes elsewhere and build
//! these encodings only to hash or to prove.

use crate::hash::{Hash, ValueHasher, blake2b_256};
use crate::key::{KEY_LEN, Key};

/// Length in bytes of every encoded node.
pub const NODE_LEN: usize = 64;

/// Values of at most this many bytes are embedded in their leaf; longer ones are hashed.
pub const MAX_EMBEDDED_VALUE: usize = 32;

/// A 64-byte node encoding.
pub type EncodedNode = [u8; NODE_LEN];

/// What a leaf holds of its value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeafValue {
    /// The value itself (at most 32 bytes), zero-padded to 32 bytes.
    Embedded {
        /// The value's length, 0 to 32.
        len: u8,
        /// The value, then zero padding.
        bytes: [u8; MAX_EMBEDDED_VALUE],
    },
    /// The hash of a value longer than 32 bytes.
    Hashed(Hash),
}

impl LeafValue {
    /// What a leaf holds for `value`.
    pub fn new<H: ValueHasher + ?Sized>(value: &[u8], hasher: &H) -> Self {
        if value.len() <= MAX_EMBEDDED_VALUE {
            let mut bytes = [0u8; MAX_EMBEDDED_VALUE];
            bytes[..value.len()].copy_from_slice(value);
            LeafValue::Embedded {
                len: value.len() as u8,
                bytes,
            }
        } else {
            LeafValue::Hashed(hasher.hash_value(value))
        }
    }

    /// The embedded value, if the value is embedded.
    pub fn embedded(&self) -> Option<&[u8]> {
        match self {
            LeafValue::Embedded { len, bytes } => Some(&bytes[..*len as usize]),
            LeafValue::Hashed(_) => None,
        }
    }

    /// Whether `value` is the value this leaf commits to.
    pub fn matches<H: ValueHasher + ?Sized>(&self, value: &[u8], hasher: &H) -> bool {
        *self == LeafValue::new(value, hasher)
    }
}

impl std::fmt::Debug for LeafValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeafValue::Embedded { len, bytes } => {
                write!(f, "Embedded(0x{})", hex::encode(&bytes[..*len as usize]))
            }
            LeafValue::Hashed(h) => write!(f, "Hashed({h})"),
        }
    }
}

/// A leaf: a key and what it holds of its value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LeafNode {
    /// The leaf's key.
    pub key: Key,
    /// The embedded value or the value hash.
    pub value: LeafValue,
}

impl LeafNode {
    /// The leaf of `key` holding `value`.
    pub fn new<H: ValueHasher + ?Sized>(key: Key, value: &[u8], hasher: &H) -> Self {
        LeafNode {
            key,
            value: LeafValue::new(value, hasher),
        }
    }

    /// The 64-byte encoding `L(k, v)`.
    pub fn encode(&self) -> EncodedNode {
        let mut out = [0u8; NODE_LEN];
        out[1..32].copy_from_slice(&self.key.0);
        match &self.value {
            LeafValue::Embedded { len, bytes } => {
                out[0] = 0x80 | len;
                out[32..].copy_from_slice(bytes);
            }
            LeafValue::Hashed(h) => {
                out[0] = 0xC0;
                out[32..].copy_from_slice(&h.0);
            }
        }
        out
    }

    /// The leaf's hash `H(L(k, v))`.
    pub fn hash(&self) -> Hash {
        blake2b_256(&self.encode())
    }
}

/// A branch: the hashes of its two children ([`Hash::ZERO`] for an empty side).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BranchNode {
    /// The left (bit 0) child. After [`Node::decode`], its top bit is unknown and cleared.
    pub left: Hash,
    /// The right (bit 1) child.
    pub right: Hash,
}

impl BranchNode {
    /// The 64-byte encoding `B(l, r)`.
    pub fn encode(&self) -> EncodedNode {
        encode_branch(&self.left, &self.right)
    }

    /// The branch's hash `H(B(l, r))`.
    pub fn hash(&self) -> Hash {
        hash_branch(&self.left, &self.right)
    }
}

/// A decoded node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Node {
    /// A branch (left child's top bit cleared: the encoding does not keep it).
    Branch(BranchNode),
    /// A leaf.
    Leaf(LeafNode),
}

/// A byte string is not a valid node encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Nodes are exactly 64 bytes.
    #[error("a node is 64 bytes, got {0}")]
    WrongLength(usize),
    /// Header bytes 0xC1..=0xFF are not assigned.
    #[error("invalid leaf header 0x{0:02x}")]
    InvalidHeader(u8),
    /// An embedded value is at most 32 bytes long.
    #[error("embedded value length {0} exceeds 32")]
    EmbeddedTooLong(u8),
    /// The bytes after an embedded value must be zero.
    #[error("non-zero padding after an embedded value")]
    NonZeroPadding,
}

impl Node {
    /// Decodes and validates a 64-byte node encoding.
    pub fn decode(bytes: &[u8]) -> Result<Node, NodeError> {
        let bytes: &EncodedNode = bytes
            .try_into()
            .map_err(|_| NodeError::WrongLength(bytes.len()))?;
        let head = bytes[0];
        if head & 0x80 == 0 {
            let mut left = [0u8; 32];
            let mut right = [0u8; 32];
            left.copy_from_slice(&bytes[..32]);
            right.copy_from_slice(&bytes[32..]);
            return Ok(Node::Branch(BranchNode {
                left: Hash(left),
                right: Hash(right),
            }));
        }
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&bytes[1..32]);
        let mut tail = [0u8; 32];
        tail.copy_from_slice(&bytes[32..]);
        let value = if head & 0xC0 == 0x80 {
            let len = head & 0x3F;
            if len as usize > MAX_EMBEDDED_VALUE {
                return Err(NodeError::EmbeddedTooLong(len));
            }
            if tail[len as usize..].iter().any(|&b| b != 0) {
                return Err(NodeError::NonZeroPadding);
            }
            LeafValue::Embedded { len, bytes: tail }
        } else if head == 0xC0 {
            LeafValue::Hashed(Hash(tail))
        } else {
            return Err(NodeError::InvalidHeader(head));
        };
        Ok(Node::Leaf(LeafNode {
            key: Key(key),
            value,
        }))
    }

    /// The node's 64-byte encoding.
    pub fn encode(&self) -> EncodedNode {
        match self {
            Node::Branch(b) => b.encode(),
            Node::Leaf(l) => l.encode(),
        }
    }
}

/// The 64-byte encoding of a branch over `left` and `right`.
#[inline]
pub fn encode_branch(left: &Hash, right: &Hash) -> EncodedNode {
    let mut out = [0u8; NODE_LEN];
    out[..32].copy_from_slice(&left.0);
    out[0] &= 0x7F;
    out[32..].copy_from_slice(&right.0);
    out
}

/// The hash of a branch over `left` and `right`.
#[inline]
pub fn hash_branch(left: &Hash, right: &Hash) -> Hash {
    blake2b_256(&encode_branch(left, right))
}

/// The hash of the leaf of `key` holding `value`.
pub fn hash_leaf<H: ValueHasher + ?Sized>(key: &Key, value: &[u8], hasher: &H) -> Hash {
    LeafNode::new(*key, value, hasher).hash()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Blake2bValueHasher;

    #[test]
    fn leaf_headers() {
        let h = Blake2bValueHasher;
        let k = Key([3; 31]);
        assert_eq!(LeafNode::new(k, b"", &h).encode()[0], 0x80);
        assert_eq!(LeafNode::new(k, &[0], &h).encode()[0], 0x81);
        assert_eq!(LeafNode::new(k, &[0; 32], &h).encode()[0], 0xA0);
        let long = LeafNode::new(k, &[0; 33], &h).encode();
        assert_eq!(long[0], 0xC0);
        assert_eq!(&long[32..], blake2b_256(&[0; 33]).as_bytes());
    }

    #[test]
    fn decode_round_trip_and_errors() {
        let h = Blake2bValueHasher;
        for v in [&b""[..], b"x", &[5u8; 32], &[6u8; 100]] {
            let leaf = LeafNode::new(Key([9; 31]), v, &h);
            assert_eq!(Node::decode(&leaf.encode()).unwrap(), Node::Leaf(leaf));
        }
        let b = BranchNode {
            left: Hash([0xFF; 32]),
            right: Hash([1; 32]),
        };
        match Node::decode(&b.encode()).unwrap() {
            Node::Branch(d) => {
                assert_eq!(d.left, Hash([0xFF; 32]).with_top_bit_cleared());
                assert_eq!(d.right, b.right);
                assert_eq!(d.hash(), b.hash());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(Node::decode(&[0; 63]), Err(NodeError::WrongLength(63)));
        let mut bad = [0u8; 64];
        bad[0] = 0xC1;
        assert_eq!(Node::decode(&bad), Err(NodeError::InvalidHeader(0xC1)));
        bad[0] = 0x80 | 33;
        assert_eq!(Node::decode(&bad), Err(NodeError::EmbeddedTooLong(33)));
        bad[0] = 0x81;
        bad[40] = 1;
        assert_eq!(Node::decode(&bad), Err(NodeError::NonZeroPadding));
    }
}
