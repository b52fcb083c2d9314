//! Multiproofs: one proof for many keys, present or absent, sharing the nodes their paths have
//! in common, from which a stateless verifier can also compute the root after updates.
//!
//! A multiproof is the part of the trie the keys' paths pass through, cut off at the siblings:
//! a binary tree whose inner nodes are the branches on the paths and whose outer nodes are
//!
//! - [`ProofNode::Hash`]: a subtrie off the paths, known only by its hash;
//! - [`ProofNode::Empty`]: an empty subtrie;
//! - [`ProofNode::Leaf`]: a leaf, in full (a key and its embedded value or value hash).
//!
//! A key's path ends at a leaf (its own, or another key's: then it is absent) or at an empty
//! subtrie (absent), or at a `Hash` (the proof does not cover it).
//!
//! # Updates without the state
//!
//! [`MultiProof::apply_updates`] rebuilds the root after writes and deletes of covered keys.
//! Inserting splits a leaf or fills an empty subtrie, both in the proof. Deleting can leave a
//! branch with one empty side: if the other side is a single leaf, that leaf moves up (and its
//! hash does not change); if it is a deeper subtrie, the branch stays. A bare sibling hash does
//! not say which, and trusting a prover on it would let it choose the new root. So the proof
//! must carry such a sibling's own node, a leaf or a branch over two hashes, and an update that
//! exposes a bare hash fails with [`MultiProofError::InsufficientProof`], naming the positions
//! to expand. Generators that know the updates (witnesses) expand exactly those.
//!
//! # Binary encoding
//!
//! ```text
//! count    4 bytes, little endian: the number of nodes, at least 1
//! kinds    ceil(count / 4) bytes: 2 bits per node in pre-order (parent, left subtree, right
//!          subtree), most significant bits first: 00 empty, 01 hash, 10 leaf, 11 branch;
//!          unused bits zero
//! payload  for each node in pre-order: a hash, 32 bytes (a left child's with its top bit
//!          cleared, since its parent's encoding drops it); a leaf, its 64-byte encoding;
//!          nothing for empty and branch
//! ```
//!
//! The decoder accepts only what [`MultiProof::encode`] produces for some trie: it rejects
//! trailing bytes, set padding bits, a zero hash (that is an empty node), a left hash with its
//! top bit set, branches deeper than 247, a branch over two empty sides or over an empty side
//! and a leaf (that leaf would sit higher), and leaves whose key is not on their path.

use std::collections::BTreeMap;

use crate::hash::{Hash, ValueHasher};
use crate::key::{KEY_BITS, Key};
use crate::node::{LeafNode, LeafValue, NODE_LEN, Node, NodeError, hash_branch};
use crate::proof::{MerkleProof, ProofError, Reader, ShortInput, Terminal};

/// A node of a multiproof, as produced in pre-order by a generator.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProofNode {
    /// An empty subtrie.
    Empty,
    /// A subtrie off the proven paths, by hash.
    Hash(Hash),
    /// A leaf in full.
    Leaf(LeafNode),
    /// A branch; its left subtree follows, then its right subtree.
    Branch,
}

/// A node's place in the trie: the first `depth` bits of `path` (the rest are zero).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Position {
    /// The path bits, tail cleared.
    pub path: Key,
    /// The number of path bits: the node's depth.
    pub depth: usize,
}

impl Position {
    /// The position of depth `depth` on the path of `key`.
    pub fn of(key: &Key, depth: usize) -> Self {
        Position {
            path: key.prefix(depth),
            depth,
        }
    }
}

/// A node as stored: 8 bytes, with hashes and leaves kept apart, so that a decoder's memory
/// stays a small multiple of its input whatever the input.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stored {
    Empty,
    /// Index into `hashes`.
    Hash(u32),
    /// Index into `leaves`.
    Leaf(u32),
    /// A branch; its left child is the next node, its right child at this index.
    Branch {
        right: u32,
    },
}

/// A node as read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum View {
    Empty,
    Hash(Hash),
    Leaf(LeafNode),
    Branch { right: u32 },
}

/// A proof for many keys against one root. See the module documentation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MultiProof {
    nodes: Vec<Stored>,
    hashes: Vec<Hash>,
    leaves: Vec<LeafNode>,
}

/// What a multiproof shows about a key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lookup {
    /// The key is present; its leaf holds this.
    Present(LeafValue),
    /// The key is absent.
    Absent,
}

/// A pre-order node sequence or byte string is not a canonical multiproof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultiProofDecodeError {
    /// The input ends early.
    #[error("truncated multiproof: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where the read started.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes after the end.
    #[error("{0} trailing bytes after the multiproof")]
    TrailingBytes(usize),
    /// A multiproof has at least one node.
    #[error("a multiproof has no nodes")]
    NoNodes,
    /// The node count does not match the tree the kinds describe.
    #[error("the node sequence does not form exactly one tree")]
    NotOneTree,
    /// Unused bits of the kinds are set.
    #[error("unused kind bits are set")]
    KindPadding,
    /// A hash node holds the zero hash (it should be an empty node).
    #[error("node {0} is a zero hash")]
    ZeroHash(usize),
    /// A left child's hash has its top bit set.
    #[error("node {0}: a left child's hash has its top bit set")]
    LeftHashTopBit(usize),
    /// A leaf node is not a valid leaf encoding.
    #[error("node {index}: {error}")]
    BadLeaf {
        /// The node index.
        index: usize,
        /// What is wrong.
        error: NodeError,
    },
    /// A leaf node holds a branch encoding.
    #[error("node {0}: a leaf node holds a branch encoding")]
    LeafIsBranch(usize),
    /// A branch deeper than 247: keys have 248 bits.
    #[error("node {0}: a branch at depth 248 or deeper")]
    TooDeep(usize),
    /// A branch over two empty subtries, or over an empty subtrie and a leaf.
    #[error("node {0}: a branch over an empty side and a {1} cannot be in a trie")]
    NonCanonicalBranch(usize, &'static str),
    /// A leaf's key does not lie on its path.
    #[error("node {0}: leaf key {1} is not on its path")]
    LeafOffPath(usize, Key),
}

/// A multiproof does not show what was asked of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultiProofError {
    /// The proof does not lead to the expected root.
    #[error("the multiproof gives root {computed}, not {expected}")]
    RootMismatch {
        /// The root the caller expects.
        expected: Hash,
        /// The root the proof leads to.
        computed: Hash,
    },
    /// The key's path ends at a bare hash: the proof says nothing of it.
    #[error("the multiproof does not cover key {0}")]
    NotCovered(Key),
    /// The key is present with another value.
    #[error("key {0} holds another value")]
    ValueMismatch(Key),
    /// The key was expected present but is absent.
    #[error("key {0} is absent")]
    ExpectedPresent(Key),
    /// The key was expected absent but is present.
    #[error("key {0} is present")]
    ExpectedAbsent(Key),
    /// The updates expose subtries known only by hash: the proof must give their nodes.
    #[error("the updates need the nodes at {} positions the proof gives only by hash", .0.len())]
    InsufficientProof(Vec<Position>),
    /// A path of the multiproof is not a canonical single-key proof.
    #[error("malformed path: {0}")]
    Malformed(ProofError),
}

impl MultiProof {
    /// Builds a multiproof from nodes in pre-order, checking that they form one canonical
    /// tree. Left-child hashes are stored with their top bit cleared.
    pub fn from_preorder<I>(nodes: I) -> Result<Self, MultiProofDecodeError>
    where
        I: IntoIterator<Item = ProofNode>,
    {
        let mut proof = MultiProof {
            nodes: Vec::new(),
            hashes: Vec::new(),
            leaves: Vec::new(),
        };
        for node in nodes {
            proof.push(node)?;
        }
        proof.link(true)?;
        Ok(proof)
    }

    fn push(&mut self, node: ProofNode) -> Result<(), MultiProofDecodeError> {
        let index = |len: usize| u32::try_from(len).map_err(|_| MultiProofDecodeError::NotOneTree);
        let stored = match node {
            ProofNode::Empty => Stored::Empty,
            ProofNode::Hash(h) => {
                self.hashes.push(h);
                Stored::Hash(index(self.hashes.len() - 1)?)
            }
            ProofNode::Leaf(l) => {
                self.leaves.push(l);
                Stored::Leaf(index(self.leaves.len() - 1)?)
            }
            ProofNode::Branch => Stored::Branch { right: 0 },
        };
        self.nodes.push(stored);
        Ok(())
    }

    fn view(&self, i: usize) -> View {
        match self.nodes[i] {
            Stored::Empty => View::Empty,
            Stored::Hash(h) => View::Hash(self.hashes[h as usize]),
            Stored::Leaf(l) => View::Leaf(self.leaves[l as usize]),
            Stored::Branch { right } => View::Branch { right },
        }
    }

    /// Walks the pre-order sequence: fills in right-child indices and checks the shape.
    /// With `normalize`, left hashes get their top bit cleared; otherwise a set one is an
    /// error (the decoder's canonical check).
    fn link(&mut self, normalize: bool) -> Result<(), MultiProofDecodeError> {
        if self.nodes.is_empty() {
            return Err(MultiProofDecodeError::NoNodes);
        }
        let end = self.link_at(0, 0, Key::default(), false, normalize)?;
        if end != self.nodes.len() {
            return Err(MultiProofDecodeError::NotOneTree);
        }
        Ok(())
    }

    /// Links the subtree starting at `index`, at `depth` on `path`; returns the index after it.
    fn link_at(
        &mut self,
        index: usize,
        depth: usize,
        path: Key,
        is_left: bool,
        normalize: bool,
    ) -> Result<usize, MultiProofDecodeError> {
        if index >= self.nodes.len() {
            return Err(MultiProofDecodeError::NotOneTree);
        }
        match self.view(index) {
            View::Empty => Ok(index + 1),
            View::Hash(h) => {
                let kept = if is_left { h.with_top_bit_cleared() } else { h };
                if kept.is_zero() {
                    return Err(MultiProofDecodeError::ZeroHash(index));
                }
                if kept != h {
                    if !normalize {
                        return Err(MultiProofDecodeError::LeftHashTopBit(index));
                    }
                    if let Stored::Hash(at) = self.nodes[index] {
                        self.hashes[at as usize] = kept;
                    }
                }
                Ok(index + 1)
            }
            View::Leaf(leaf) => {
                if leaf.key.common_prefix_bits(&path) < depth {
                    return Err(MultiProofDecodeError::LeafOffPath(index, leaf.key));
                }
                Ok(index + 1)
            }
            View::Branch { .. } => {
                if depth >= KEY_BITS {
                    return Err(MultiProofDecodeError::TooDeep(index));
                }
                let right = self.link_at(index + 1, depth + 1, path, true, normalize)?;
                let end = self.link_at(
                    right,
                    depth + 1,
                    path.with_bit(depth, true),
                    false,
                    normalize,
                )?;
                let right_u32 =
                    u32::try_from(right).map_err(|_| MultiProofDecodeError::NotOneTree)?;
                self.nodes[index] = Stored::Branch { right: right_u32 };
                match (self.nodes[index + 1], self.nodes[right]) {
                    (Stored::Empty, Stored::Empty) => Err(
                        MultiProofDecodeError::NonCanonicalBranch(index, "empty side"),
                    ),
                    (Stored::Empty, Stored::Leaf(_)) | (Stored::Leaf(_), Stored::Empty) => {
                        Err(MultiProofDecodeError::NonCanonicalBranch(index, "leaf"))
                    }
                    _ => Ok(end),
                }
            }
        }
    }

    /// The nodes in pre-order.
    pub fn nodes(&self) -> impl Iterator<Item = ProofNode> + '_ {
        (0..self.nodes.len()).map(|i| match self.view(i) {
            View::Empty => ProofNode::Empty,
            View::Hash(h) => ProofNode::Hash(h),
            View::Leaf(l) => ProofNode::Leaf(l),
            View::Branch { .. } => ProofNode::Branch,
        })
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a multiproof has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The root the proof leads to.
    pub fn root(&self) -> Hash {
        self.hash_at(0)
    }

    fn hash_at(&self, index: usize) -> Hash {
        match self.view(index) {
            View::Empty => Hash::ZERO,
            View::Hash(h) => h,
            View::Leaf(l) => l.hash(),
            View::Branch { right } => {
                hash_branch(&self.hash_at(index + 1), &self.hash_at(right as usize))
            }
        }
    }

    /// The hash of every node, by index.
    fn all_hashes(&self) -> Vec<Hash> {
        let mut out = vec![Hash::ZERO; self.nodes.len()];
        for i in (0..self.nodes.len()).rev() {
            out[i] = match self.view(i) {
                View::Empty => Hash::ZERO,
                View::Hash(h) => h,
                View::Leaf(l) => l.hash(),
                View::Branch { right } => hash_branch(&out[i + 1], &out[right as usize]),
            };
        }
        out
    }

    /// Checks that the proof leads to `root`.
    pub fn verify(&self, root: &Hash) -> Result<(), MultiProofError> {
        let computed = self.root();
        if computed != *root {
            return Err(MultiProofError::RootMismatch {
                expected: *root,
                computed,
            });
        }
        Ok(())
    }

    /// Follows `key`'s path to its end: the node index and depth.
    fn walk(&self, key: &Key) -> (usize, usize) {
        let (mut index, mut depth) = (0usize, 0usize);
        while let Stored::Branch { right } = self.nodes[index] {
            index = if key.bit(depth) {
                right as usize
            } else {
                index + 1
            };
            depth += 1;
        }
        (index, depth)
    }

    /// What the proof shows about `key` (not checked against any root: see
    /// [`MultiProof::verify`]).
    pub fn lookup(&self, key: &Key) -> Result<Lookup, MultiProofError> {
        match self.view(self.walk(key).0) {
            View::Empty => Ok(Lookup::Absent),
            View::Leaf(l) if l.key == *key => Ok(Lookup::Present(l.value)),
            View::Leaf(_) => Ok(Lookup::Absent),
            View::Hash(_) | View::Branch { .. } => Err(MultiProofError::NotCovered(*key)),
        }
    }

    /// Checks that the proof leads to `root` and that each key holds the given value
    /// (`Some`) or is absent (`None`).
    pub fn verify_entries<'a, I, H>(
        &self,
        root: &Hash,
        entries: I,
        hasher: &H,
    ) -> Result<(), MultiProofError>
    where
        I: IntoIterator<Item = (&'a Key, Option<&'a [u8]>)>,
        H: ValueHasher + ?Sized,
    {
        self.verify(root)?;
        for (key, value) in entries {
            match (self.lookup(key)?, value) {
                (Lookup::Absent, None) => {}
                (Lookup::Absent, Some(_)) => return Err(MultiProofError::ExpectedPresent(*key)),
                (Lookup::Present(_), None) => return Err(MultiProofError::ExpectedAbsent(*key)),
                (Lookup::Present(held), Some(v)) => {
                    if !held.matches(v, hasher) {
                        return Err(MultiProofError::ValueMismatch(*key));
                    }
                }
            }
        }
        Ok(())
    }

    /// The single-key proof of `key` contained in this multiproof.
    pub fn proof_of(&self, key: &Key) -> Result<MerkleProof, MultiProofError> {
        let mut proofs = self.proofs_of(std::slice::from_ref(key))?;
        Ok(proofs.remove(0))
    }

    /// The single-key proofs of `keys`, in order (hashing the proof's nodes once).
    pub fn proofs_of(&self, keys: &[Key]) -> Result<Vec<MerkleProof>, MultiProofError> {
        let hashes = self.all_hashes();
        keys.iter()
            .map(|key| {
                let (mut index, mut depth) = (0usize, 0usize);
                let mut siblings = Vec::new();
                while let Stored::Branch { right } = self.nodes[index] {
                    let (next, other) = if key.bit(depth) {
                        (right as usize, index + 1)
                    } else {
                        (index + 1, right as usize)
                    };
                    siblings.push(hashes[other]);
                    index = next;
                    depth += 1;
                }
                let terminal = match self.view(index) {
                    View::Empty => Terminal::Empty,
                    View::Leaf(l) if l.key == *key => Terminal::Included,
                    View::Leaf(l) => Terminal::OtherLeaf(l),
                    _ => return Err(MultiProofError::NotCovered(*key)),
                };
                // A linked multiproof is canonical, so this does not fail; an error is
                // reported rather than trusted away.
                MerkleProof::new(*key, siblings, terminal).map_err(MultiProofError::Malformed)
            })
            .collect()
    }

    /// The root after applying `updates` (a value to write, or `None` to delete) to the
    /// trie this proof comes from. Later updates of a key override earlier ones. Every key
    /// must be covered, and every subtrie a delete exposes must be given in full (see the
    /// module documentation).
    ///
    /// This does not check the proof against the old root: call [`MultiProof::verify`].
    pub fn apply_updates<'a, I, H>(&self, updates: I, hasher: &H) -> Result<Hash, MultiProofError>
    where
        I: IntoIterator<Item = (&'a Key, Option<&'a [u8]>)>,
        H: ValueHasher + ?Sized,
    {
        let net: BTreeMap<Key, Option<LeafNode>> = updates
            .into_iter()
            .map(|(k, v)| (*k, v.map(|v| LeafNode::new(*k, v, hasher))))
            .collect();
        let mut tree = Tree::from_proof(self, 0);
        for (key, leaf) in &net {
            match leaf {
                Some(leaf) => tree.insert(0, leaf)?,
                None => tree.delete(0, key)?,
            };
        }
        let mut exposed = Vec::new();
        let root = tree.finish(Position::of(&Key::default(), 0), &mut exposed);
        if !exposed.is_empty() {
            return Err(MultiProofError::InsufficientProof(exposed));
        }
        Ok(root.hash())
    }

    /// The canonical binary encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let n = self.nodes.len();
        let mut out = Vec::with_capacity(4 + n.div_ceil(4) + n * 33);
        out.extend_from_slice(&(n as u32).to_le_bytes());
        let kinds_at = out.len();
        out.resize(kinds_at + n.div_ceil(4), 0);
        for i in 0..n {
            let kind: u8 = match self.view(i) {
                View::Empty => 0,
                View::Hash(h) => {
                    out.extend_from_slice(&h.0);
                    1
                }
                View::Leaf(l) => {
                    out.extend_from_slice(&l.encode());
                    2
                }
                View::Branch { .. } => 3,
            };
            out[kinds_at + i / 4] |= kind << (6 - 2 * (i % 4));
        }
        out
    }

    /// Decodes a canonical encoding, rejecting anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, MultiProofDecodeError> {
        let mut r = Reader::new(bytes);
        let n = u32::from_le_bytes(r.array::<4>()?) as usize;
        if n == 0 {
            return Err(MultiProofDecodeError::NoNodes);
        }
        // Bounded by the input: the kinds take n / 4 bytes.
        let kinds = r.take(n.div_ceil(4))?;
        if !n.is_multiple_of(4) && kinds[n / 4] & (0xFF >> (2 * (n % 4))) != 0 {
            return Err(MultiProofDecodeError::KindPadding);
        }
        let kind = |i: usize| (kinds[i / 4] >> (6 - 2 * (i % 4))) & 3;
        // Check the shape on the kinds alone before allocating anything per node, and that
        // the payload is exactly as long as the kinds say.
        let payload = check_shape(n, kind)?;
        match r.remaining().cmp(&payload) {
            std::cmp::Ordering::Less => {
                return Err(MultiProofDecodeError::Truncated {
                    offset: bytes.len(),
                    needed: payload - r.remaining(),
                });
            }
            std::cmp::Ordering::Greater => {
                return Err(MultiProofDecodeError::TrailingBytes(
                    r.remaining() - payload,
                ));
            }
            std::cmp::Ordering::Equal => {}
        }
        let mut proof = MultiProof {
            nodes: Vec::with_capacity(n),
            hashes: Vec::new(),
            leaves: Vec::new(),
        };
        for i in 0..n {
            let node = match kind(i) {
                0 => ProofNode::Empty,
                1 => ProofNode::Hash(Hash(r.array::<32>()?)),
                2 => match Node::decode(r.take(NODE_LEN)?) {
                    Ok(Node::Leaf(l)) => ProofNode::Leaf(l),
                    Ok(Node::Branch(_)) => return Err(MultiProofDecodeError::LeafIsBranch(i)),
                    Err(error) => return Err(MultiProofDecodeError::BadLeaf { index: i, error }),
                },
                _ => ProofNode::Branch,
            };
            proof.push(node)?;
        }
        proof.link(false)?;
        Ok(proof)
    }
}

/// Checks, from the node kinds alone, that `n` nodes in pre-order form one tree no deeper
/// than a key and with no branch that cannot be in a trie; returns the payload length the
/// kinds call for. Uses memory for one path only.
fn check_shape(n: usize, kind: impl Fn(usize) -> u8) -> Result<usize, MultiProofDecodeError> {
    const EMPTY: u8 = 0;
    const LEAF: u8 = 2;
    const BRANCH: u8 = 3;
    // For each open branch on the current path: the kind of its finished left child, if any.
    let mut open: Vec<Option<u8>> = Vec::with_capacity(64);
    let mut payload = 0usize;
    let mut done = false;
    for i in 0..n {
        if done {
            return Err(MultiProofDecodeError::NotOneTree);
        }
        let k = kind(i);
        payload += match k {
            1 => 32,
            LEAF => NODE_LEN,
            _ => 0,
        };
        if k == BRANCH {
            if open.len() >= KEY_BITS {
                return Err(MultiProofDecodeError::TooDeep(i));
            }
            open.push(None);
            continue;
        }
        // A finished subtree of kind `k`: close every branch it completes.
        let mut finished = k;
        loop {
            match open.last_mut() {
                None => {
                    done = true;
                    break;
                }
                Some(left @ None) => {
                    *left = Some(finished);
                    break;
                }
                Some(Some(left)) => {
                    match (*left, finished) {
                        (EMPTY, EMPTY) => {
                            return Err(MultiProofDecodeError::NonCanonicalBranch(i, "empty side"));
                        }
                        (EMPTY, LEAF) | (LEAF, EMPTY) => {
                            return Err(MultiProofDecodeError::NonCanonicalBranch(i, "leaf"));
                        }
                        _ => {}
                    }
                    open.pop();
                    finished = BRANCH;
                }
            }
        }
    }
    if !done {
        return Err(MultiProofDecodeError::NotOneTree);
    }
    Ok(payload)
}

impl From<ShortInput> for MultiProofDecodeError {
    fn from(e: ShortInput) -> Self {
        MultiProofDecodeError::Truncated {
            offset: e.offset,
            needed: e.needed,
        }
    }
}

/// A mutable copy of a multiproof's tree, for [`MultiProof::apply_updates`].
enum Tree {
    Empty,
    Hash(Hash),
    Leaf(LeafNode),
    /// `changed`: something under this branch was written or deleted.
    Branch(Box<Tree>, Box<Tree>, bool),
}

/// What a subtree became after the updates.
enum Outcome {
    Empty,
    Leaf(LeafNode),
    /// A subtree that is not a single leaf, or whose kind is unknown (a bare hash).
    Other(Hash),
}

impl Outcome {
    fn hash(&self) -> Hash {
        match self {
            Outcome::Empty => Hash::ZERO,
            Outcome::Leaf(l) => l.hash(),
            Outcome::Other(h) => *h,
        }
    }
}

impl Tree {
    fn from_proof(proof: &MultiProof, index: usize) -> Tree {
        match proof.view(index) {
            View::Empty => Tree::Empty,
            View::Hash(h) => Tree::Hash(h),
            View::Leaf(l) => Tree::Leaf(l),
            View::Branch { right } => Tree::Branch(
                Box::new(Tree::from_proof(proof, index + 1)),
                Box::new(Tree::from_proof(proof, right as usize)),
                false,
            ),
        }
    }

    /// Writes `leaf` into the subtree at `depth`; returns whether anything changed.
    fn insert(&mut self, depth: usize, leaf: &LeafNode) -> Result<bool, MultiProofError> {
        match self {
            Tree::Branch(left, right, changed) => {
                let side = if leaf.key.bit(depth) { right } else { left };
                let c = side.insert(depth + 1, leaf)?;
                *changed |= c;
                Ok(c)
            }
            Tree::Empty => {
                *self = Tree::Leaf(*leaf);
                Ok(true)
            }
            Tree::Leaf(existing) if existing.key == leaf.key => {
                let c = existing.value != leaf.value;
                existing.value = leaf.value;
                Ok(c)
            }
            Tree::Leaf(existing) => {
                // Split: branches down to where the two keys part, the first ones with an
                // empty side.
                let existing = *existing;
                let split = existing.key.common_prefix_bits(&leaf.key);
                let (l, r) = if leaf.key.bit(split) {
                    (existing, *leaf)
                } else {
                    (*leaf, existing)
                };
                let mut node = Tree::Branch(Box::new(Tree::Leaf(l)), Box::new(Tree::Leaf(r)), true);
                for d in (depth..split).rev() {
                    node = if leaf.key.bit(d) {
                        Tree::Branch(Box::new(Tree::Empty), Box::new(node), true)
                    } else {
                        Tree::Branch(Box::new(node), Box::new(Tree::Empty), true)
                    };
                }
                *self = node;
                Ok(true)
            }
            Tree::Hash(_) => Err(MultiProofError::NotCovered(leaf.key)),
        }
    }

    /// Deletes `key` from the subtree at `depth`; returns whether anything changed.
    fn delete(&mut self, depth: usize, key: &Key) -> Result<bool, MultiProofError> {
        match self {
            Tree::Branch(left, right, changed) => {
                let side = if key.bit(depth) { right } else { left };
                let c = side.delete(depth + 1, key)?;
                *changed |= c;
                Ok(c)
            }
            Tree::Empty => Ok(false),
            Tree::Leaf(existing) if existing.key == *key => {
                *self = Tree::Empty;
                Ok(true)
            }
            Tree::Leaf(_) => Ok(false),
            Tree::Hash(_) => Err(MultiProofError::NotCovered(*key)),
        }
    }

    /// Hashes the subtree bottom-up, moving lone leaves up; records bare hashes that a
    /// change left alone beside an empty side.
    fn finish(&self, at: Position, exposed: &mut Vec<Position>) -> Outcome {
        match self {
            Tree::Empty => Outcome::Empty,
            Tree::Hash(h) => Outcome::Other(*h),
            Tree::Leaf(l) => Outcome::Leaf(*l),
            Tree::Branch(left, right, changed) => {
                let left_at = Position::of(&at.path, at.depth + 1);
                let right_at = Position::of(&at.path.with_bit(at.depth, true), at.depth + 1);
                let l = left.finish(left_at, exposed);
                let r = right.finish(right_at, exposed);
                match (l, r) {
                    (Outcome::Empty, Outcome::Empty) => Outcome::Empty,
                    (Outcome::Empty, Outcome::Leaf(x)) | (Outcome::Leaf(x), Outcome::Empty) => {
                        Outcome::Leaf(x)
                    }
                    (l, r) => {
                        if *changed {
                            if matches!(l, Outcome::Empty) && matches!(**right, Tree::Hash(_)) {
                                exposed.push(right_at);
                            }
                            if matches!(r, Outcome::Empty) && matches!(**left, Tree::Hash(_)) {
                                exposed.push(left_at);
                            }
                        }
                        Outcome::Other(hash_branch(&l.hash(), &r.hash()))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_kinds_fail_before_any_allocation() {
        // 64 million empty nodes claimed, 16 MB of kinds: rejected at the second node.
        let n: u32 = 64 << 20;
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.resize(4 + (n as usize) / 4, 0);
        assert_eq!(
            MultiProof::decode(&bytes),
            Err(MultiProofDecodeError::NotOneTree)
        );
        // All branches: too deep after 248.
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.resize(4 + (n as usize) / 4, 0xFF);
        assert_eq!(
            MultiProof::decode(&bytes),
            Err(MultiProofDecodeError::TooDeep(248))
        );
        // A branch over two empties.
        let bytes = [3, 0, 0, 0, 0b1100_0000];
        assert_eq!(
            MultiProof::decode(&bytes),
            Err(MultiProofDecodeError::NonCanonicalBranch(2, "empty side"))
        );
        // The payload must match the kinds exactly.
        let bytes = [1, 0, 0, 0, 0b0100_0000, 1, 2];
        assert!(matches!(
            MultiProof::decode(&bytes),
            Err(MultiProofDecodeError::Truncated { .. })
        ));
    }
}
