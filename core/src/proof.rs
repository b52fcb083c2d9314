//! Single-key Merkle proofs: inclusion and exclusion.
//!
//! A proof is the list of sibling hashes along the key's path, root to leaf, and what the path
//! ends at (the terminal):
//!
//! - [`Terminal::Included`]: the key's own leaf. The verifier rebuilds it from the key and the
//!   value it is given.
//! - [`Terminal::Empty`]: an empty subtrie. The key is absent.
//! - [`Terminal::OtherLeaf`]: the leaf of another key that shares the first `depth` bits of the
//!   path. The key is absent (a leaf sits as high as it can, so no other key of the trie is
//!   under that path).
//!
//! The proof carries its key. Left siblings are kept with their top bit cleared, in memory and
//! in the encoding, because a branch encoding drops that bit: so the encoding is canonical and
//! one trie and key give exactly one proof.
//!
//! # Binary encoding
//!
//! ```text
//! key        31 bytes
//! depth      1 byte, 0..=248: the number of siblings
//! present    ceil(depth / 8) bytes: bit i (MSB first) set when sibling i is not empty;
//!            unused bits zero
//! siblings   32 bytes for each present sibling, root to leaf; a left sibling (key bit i = 1)
//!            has its top bit cleared
//! terminal   1 byte: 0 included, 1 empty, 2 other leaf followed by its 64-byte encoding
//! ```
//!
//! The decoder rejects anything another proof would not encode to: set padding bits, a zero
//! hash given as present, a left sibling with its top bit set, a deepest sibling that is empty
//! (the terminal would then sit higher), an other-leaf with the proof's key or off the path, and
//! trailing bytes.

use crate::hash::{Blake2bValueHasher, Hash, ValueHasher};
use crate::key::{KEY_BITS, KEY_LEN, Key};
use crate::node::{LeafNode, NODE_LEN, Node, NodeError, hash_branch};

/// Where a proof's path ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Terminal {
    /// The key's own leaf: the key is present, with the value the verifier is given.
    Included,
    /// An empty subtrie: the key is absent.
    Empty,
    /// The leaf of another key sharing the path: the key is absent.
    OtherLeaf(LeafNode),
}

/// A proof that a key has a given value, or is absent, in the trie with a given root.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MerkleProof {
    key: Key,
    siblings: Vec<Hash>,
    terminal: Terminal,
}

/// A proof was rejected by [`MerkleProof::verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The proof is for another key.
    #[error("the proof is for key {proof_key}, not {key}")]
    KeyMismatch {
        /// The key asked about.
        key: Key,
        /// The key the proof is for.
        proof_key: Key,
    },
    /// A value was claimed but the proof shows the key absent.
    #[error("a value was claimed, but the proof shows the key is absent")]
    ExpectedInclusion,
    /// Absence was claimed but the proof shows the key present.
    #[error("absence was claimed, but the proof shows the key is present")]
    ExpectedExclusion,
    /// The proof is malformed (see [`ProofError`]).
    #[error(transparent)]
    Malformed(#[from] ProofError),
    /// The proof does not lead to the root.
    #[error("the proof gives root {computed}, not {expected}")]
    RootMismatch {
        /// The root the caller expects.
        expected: Hash,
        /// The root the proof leads to.
        computed: Hash,
    },
}

/// A proof is not well formed: it could not come from any trie.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// More than 248 siblings.
    #[error("proof depth {0} exceeds 248")]
    TooDeep(usize),
    /// The deepest sibling is empty, so the terminal would sit higher.
    #[error("the deepest sibling is empty: not a canonical trie path")]
    EmptyDeepestSibling,
    /// An other-leaf terminal holds the proof's own key.
    #[error("the other-leaf terminal holds the proof's own key")]
    OtherLeafIsOwnKey,
    /// An other-leaf terminal's key leaves the proof's path.
    #[error(
        "the other-leaf terminal's key leaves the path at bit {diverges_at}, above depth {depth}"
    )]
    OtherLeafOffPath {
        /// Where the keys diverge.
        diverges_at: usize,
        /// The proof's depth.
        depth: usize,
    },
}

/// Bytes are not a canonical encoded proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofDecodeError {
    /// The input ends early.
    #[error("truncated proof: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where the read started.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes after the end of the proof.
    #[error("{0} trailing bytes after the proof")]
    TrailingBytes(usize),
    /// Unused bits of the sibling bitmap are set.
    #[error("unused bits set in the sibling bitmap")]
    BitmapPadding,
    /// A sibling marked present is the zero hash.
    #[error("sibling {0} is marked present but is zero")]
    ZeroSibling(usize),
    /// A left sibling has its top bit set.
    #[error("left sibling {0} has its top bit set")]
    LeftSiblingTopBit(usize),
    /// Unknown terminal tag.
    #[error("unknown terminal tag {0}")]
    UnknownTerminal(u8),
    /// The other-leaf terminal is not a valid leaf.
    #[error("other-leaf terminal: {0}")]
    BadLeaf(#[from] NodeError),
    /// The other-leaf terminal is a branch encoding.
    #[error("other-leaf terminal is a branch")]
    TerminalIsBranch,
    /// The proof is structurally invalid.
    #[error(transparent)]
    Malformed(#[from] ProofError),
}

impl MerkleProof {
    /// A proof for `key` from its siblings (root to leaf, [`Hash::ZERO`] for an empty side)
    /// and terminal. Left siblings are stored with their top bit cleared.
    pub fn new(key: Key, siblings: Vec<Hash>, terminal: Terminal) -> Result<Self, ProofError> {
        let mut proof = MerkleProof {
            key,
            siblings,
            terminal,
        };
        for (i, s) in proof.siblings.iter_mut().enumerate() {
            if i < KEY_BITS && key.bit(i) {
                *s = s.with_top_bit_cleared();
            }
        }
        proof.check()?;
        Ok(proof)
    }

    fn check(&self) -> Result<(), ProofError> {
        let depth = self.siblings.len();
        if depth > KEY_BITS {
            return Err(ProofError::TooDeep(depth));
        }
        if depth > 0 && self.siblings[depth - 1].is_zero() {
            return Err(ProofError::EmptyDeepestSibling);
        }
        if let Terminal::OtherLeaf(leaf) = &self.terminal {
            if leaf.key == self.key {
                return Err(ProofError::OtherLeafIsOwnKey);
            }
            let shared = leaf.key.common_prefix_bits(&self.key);
            if shared < depth {
                return Err(ProofError::OtherLeafOffPath {
                    diverges_at: shared,
                    depth,
                });
            }
        }
        Ok(())
    }

    /// The key the proof is about.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Sibling hashes, root to leaf (left siblings with their top bit cleared).
    pub fn siblings(&self) -> &[Hash] {
        &self.siblings
    }

    /// The depth of the terminal: the number of siblings.
    pub fn depth(&self) -> usize {
        self.siblings.len()
    }

    /// Where the path ends.
    pub fn terminal(&self) -> &Terminal {
        &self.terminal
    }

    /// Whether the proof shows the key present.
    pub fn is_inclusion(&self) -> bool {
        self.terminal == Terminal::Included
    }

    /// The root this proof leads to if the key holds `value` (ignored for exclusion proofs).
    pub fn compute_root<H: ValueHasher + ?Sized>(&self, value: &[u8], hasher: &H) -> Hash {
        let mut h = match &self.terminal {
            Terminal::Included => LeafNode::new(self.key, value, hasher).hash(),
            Terminal::Empty => Hash::ZERO,
            Terminal::OtherLeaf(leaf) => leaf.hash(),
        };
        for (i, sibling) in self.siblings.iter().enumerate().rev() {
            h = if self.key.bit(i) {
                hash_branch(sibling, &h)
            } else {
                hash_branch(&h, sibling)
            };
        }
        h
    }

    /// Checks that in the trie with `root`, `key` holds `value` (`Some`) or is absent
    /// (`None`), with the Gray Paper value hash.
    pub fn verify(&self, key: &Key, value: Option<&[u8]>, root: &Hash) -> Result<(), VerifyError> {
        self.verify_with(key, value, root, &Blake2bValueHasher)
    }

    /// [`MerkleProof::verify`] with another value hasher.
    pub fn verify_with<H: ValueHasher + ?Sized>(
        &self,
        key: &Key,
        value: Option<&[u8]>,
        root: &Hash,
        hasher: &H,
    ) -> Result<(), VerifyError> {
        if *key != self.key {
            return Err(VerifyError::KeyMismatch {
                key: *key,
                proof_key: self.key,
            });
        }
        self.check()?;
        match (value, self.is_inclusion()) {
            (Some(_), false) => return Err(VerifyError::ExpectedInclusion),
            (None, true) => return Err(VerifyError::ExpectedExclusion),
            _ => {}
        }
        let computed = self.compute_root(value.unwrap_or_default(), hasher);
        if computed != *root {
            return Err(VerifyError::RootMismatch {
                expected: *root,
                computed,
            });
        }
        Ok(())
    }

    /// The canonical binary encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let depth = self.siblings.len();
        let present = self.siblings.iter().filter(|s| !s.is_zero()).count();
        let mut out = Vec::with_capacity(KEY_LEN + 2 + depth.div_ceil(8) + 32 * present + 64);
        out.extend_from_slice(&self.key.0);
        out.push(depth as u8);
        let bitmap_at = out.len();
        out.resize(bitmap_at + depth.div_ceil(8), 0);
        for (i, s) in self.siblings.iter().enumerate() {
            if !s.is_zero() {
                out[bitmap_at + i / 8] |= 0x80 >> (i % 8);
                out.extend_from_slice(&s.0);
            }
        }
        match &self.terminal {
            Terminal::Included => out.push(0),
            Terminal::Empty => out.push(1),
            Terminal::OtherLeaf(leaf) => {
                out.push(2);
                out.extend_from_slice(&leaf.encode());
            }
        }
        out
    }

    /// Decodes a canonical encoding, rejecting anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProofDecodeError> {
        let mut r = Reader::new(bytes);
        let key = Key(r.array::<KEY_LEN>()?);
        let depth = r.take(1)?[0] as usize;
        if depth > KEY_BITS {
            return Err(ProofError::TooDeep(depth).into());
        }
        let bitmap = r.take(depth.div_ceil(8))?;
        if !depth.is_multiple_of(8) && bitmap[depth / 8] & (0xFF >> (depth % 8)) != 0 {
            return Err(ProofDecodeError::BitmapPadding);
        }
        let mut siblings = Vec::with_capacity(depth);
        for i in 0..depth {
            if bitmap[i / 8] & (0x80 >> (i % 8)) == 0 {
                siblings.push(Hash::ZERO);
                continue;
            }
            let h = Hash(r.array::<32>()?);
            if h.is_zero() {
                return Err(ProofDecodeError::ZeroSibling(i));
            }
            if key.bit(i) && h.0[0] & 0x80 != 0 {
                return Err(ProofDecodeError::LeftSiblingTopBit(i));
            }
            siblings.push(h);
        }
        let terminal = match r.take(1)?[0] {
            0 => Terminal::Included,
            1 => Terminal::Empty,
            2 => match Node::decode(r.take(NODE_LEN)?)? {
                Node::Leaf(leaf) => Terminal::OtherLeaf(leaf),
                Node::Branch(_) => return Err(ProofDecodeError::TerminalIsBranch),
            },
            tag => return Err(ProofDecodeError::UnknownTerminal(tag)),
        };
        if r.remaining() != 0 {
            return Err(ProofDecodeError::TrailingBytes(r.remaining()));
        }
        let proof = MerkleProof {
            key,
            siblings,
            terminal,
        };
        proof.check()?;
        Ok(proof)
    }
}

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

/// The input ended `needed` bytes early, at `offset`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShortInput {
    pub(crate) offset: usize,
    pub(crate) needed: usize,
}

impl From<ShortInput> for ProofDecodeError {
    fn from(e: ShortInput) -> Self {
        ProofDecodeError::Truncated {
            offset: e.offset,
            needed: e.needed,
        }
    }
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ShortInput> {
        let available = self.bytes.len() - self.pos;
        if available < n {
            return Err(ShortInput {
                offset: self.pos,
                needed: n - available,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ShortInput> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
}
