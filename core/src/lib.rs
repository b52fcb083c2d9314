//! `bmt-core`: the JAM state trie of the Gray Paper (Appendix D, v0.6.6 and later), exactly,
//! without I/O.
//!
//! - [`Key`]: 31-byte state keys, bits read most significant first.
//! - [`node`]: the 64-byte branch and leaf encodings and their BLAKE2b-256 hashes.
//! - [`RootBuilder`], [`root_from_sorted`], [`root_from_unsorted`]: the reference root
//!   builder, streaming, in O(n) hashes and O(depth) memory.
//! - [`MerkleProof`]: single-key inclusion and exclusion proofs.
//! - [`MultiProof`]: many keys in one proof, with stateless updates of the root.
//! - [`Witness`]: what a stateless verifier needs to check one state transition.
//! - [`ReferenceTrie`]: a whole state in memory, the oracle for roots and proofs.
//!
//! See `docs/merklization.md` in the repository for the layouts byte by byte.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod builder;
pub mod hash;
mod hex_util;
pub mod key;
pub mod multiproof;
pub mod node;
pub mod proof;
pub mod reference;
pub mod witness;

pub use builder::{
    BuildError, RootBuilder, root_from_sorted, root_from_sorted_with, root_from_unsorted,
    root_from_unsorted_with,
};
pub use hash::{Blake2bValueHasher, HASH_LEN, Hash, ValueHasher, blake2b_256, blake2b_256_many};
pub use hex_util::{HexError, decode_hex};
pub use key::{KEY_BITS, KEY_LEN, Key, KeyError};
pub use multiproof::{
    Lookup, MultiProof, MultiProofDecodeError, MultiProofError, Position, ProofNode,
};
pub use node::{
    BranchNode, EncodedNode, LeafNode, LeafValue, MAX_EMBEDDED_VALUE, NODE_LEN, Node, NodeError,
    hash_branch, hash_leaf,
};
pub use proof::{MerkleProof, ProofDecodeError, ProofError, Terminal, VerifyError};
pub use reference::ReferenceTrie;
pub use witness::{Access, Witness, WitnessDecodeError, WitnessError};
