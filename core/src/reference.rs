//! The reference trie: a whole state held in memory as a sorted list, with the root, proofs
//! and multiproofs computed straight from the Gray Paper's definition.
//!
//! It is deliberately simple (every subtrie hash is rebuilt from the leaves under it with a
//! [`RootBuilder`]) and independent of any database: the database's roots and proofs are held
//! against it in tests.

use std::collections::HashSet;

use crate::builder::RootBuilder;
use crate::hash::{Blake2bValueHasher, Hash, ValueHasher};
use crate::key::Key;
use crate::multiproof::{MultiProof, MultiProofError, Position, ProofNode};
use crate::node::LeafNode;
use crate::proof::{MerkleProof, Terminal};
use crate::witness::Witness;

/// A whole state in memory, in key order.
#[derive(Debug, Clone)]
pub struct ReferenceTrie<H = Blake2bValueHasher> {
    keys: Vec<Key>,
    values: Vec<Vec<u8>>,
    leaves: Vec<LeafNode>,
    leaf_hashes: Vec<Hash>,
    hasher: H,
}

impl ReferenceTrie<Blake2bValueHasher> {
    /// A trie of `entries` in any order; for a repeated key the last value wins.
    pub fn new<I: IntoIterator<Item = (Key, Vec<u8>)>>(entries: I) -> Self {
        Self::with_hasher(entries, Blake2bValueHasher)
    }
}

impl<H: ValueHasher> ReferenceTrie<H> {
    /// [`ReferenceTrie::new`] with another value hasher.
    pub fn with_hasher<I: IntoIterator<Item = (Key, Vec<u8>)>>(entries: I, hasher: H) -> Self {
        let mut entries: Vec<(Key, Vec<u8>)> = entries.into_iter().collect();
        entries.sort_by_key(|a| a.0);
        let mut keys: Vec<Key> = Vec::with_capacity(entries.len());
        let mut values: Vec<Vec<u8>> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            if keys.last() == Some(&k) {
                *values.last_mut().expect("keys and values have one length") = v;
            } else {
                keys.push(k);
                values.push(v);
            }
        }
        let leaves: Vec<LeafNode> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| LeafNode::new(*k, v, &hasher))
            .collect();
        let leaf_hashes = leaves.iter().map(LeafNode::hash).collect();
        ReferenceTrie {
            keys,
            values,
            leaves,
            leaf_hashes,
            hasher,
        }
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the state is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &Key) -> Option<&[u8]> {
        self.keys
            .binary_search(key)
            .ok()
            .map(|i| self.values[i].as_slice())
    }

    /// The value hasher.
    pub fn hasher(&self) -> &H {
        &self.hasher
    }

    /// The state root.
    pub fn root(&self) -> Hash {
        self.subtrie_hash(0, self.keys.len(), 0)
    }

    /// The hash of the subtrie of leaves `lo..hi` (all sharing their first `depth` bits),
    /// whose top sits at `depth`.
    fn subtrie_hash(&self, lo: usize, hi: usize, depth: usize) -> Hash {
        let mut b = RootBuilder::at_depth(depth);
        for i in lo..hi {
            // UNWRAP: keys are sorted, distinct and share the subtrie's prefix.
            b.push_leaf_hash(&self.keys[i], self.leaf_hashes[i])
                .expect("sorted distinct keys under one prefix");
        }
        b.finish()
    }

    /// Where leaves `lo..hi`, sharing `depth` bits, split on bit `depth`.
    fn split(&self, lo: usize, hi: usize, depth: usize) -> usize {
        lo + self.keys[lo..hi].partition_point(|k| !k.bit(depth))
    }

    /// The proof of `key`'s value or absence.
    pub fn prove(&self, key: &Key) -> MerkleProof {
        let (mut lo, mut hi, mut depth) = (0, self.keys.len(), 0);
        let mut siblings = Vec::new();
        let terminal = loop {
            match hi - lo {
                0 => break Terminal::Empty,
                1 if self.keys[lo] == *key => break Terminal::Included,
                1 => break Terminal::OtherLeaf(self.leaves[lo]),
                _ => {
                    let mid = self.split(lo, hi, depth);
                    if key.bit(depth) {
                        siblings.push(self.subtrie_hash(lo, mid, depth + 1));
                        lo = mid;
                    } else {
                        siblings.push(self.subtrie_hash(mid, hi, depth + 1));
                        hi = mid;
                    }
                    depth += 1;
                }
            }
        };
        // UNWRAP: a path generated from the trie is canonical.
        MerkleProof::new(*key, siblings, terminal).expect("a generated proof is canonical")
    }

    /// A multiproof of `keys` (present or absent), without expanded siblings: enough to
    /// verify reads and to apply writes, but deletes may need
    /// [`ReferenceTrie::multiproof_for_updates`].
    pub fn multiproof(&self, keys: &[Key]) -> MultiProof {
        self.multiproof_expanding(keys, &HashSet::new())
    }

    /// A multiproof of `keys` and of every updated key, with the siblings the updates expose
    /// given in full, so that [`MultiProof::apply_updates`] succeeds with these updates.
    pub fn multiproof_for_updates(
        &self,
        keys: &[Key],
        updates: &[(Key, Option<Vec<u8>>)],
    ) -> MultiProof {
        let mut all: Vec<Key> = keys.to_vec();
        all.extend(updates.iter().map(|(k, _)| *k));
        let mut expand = HashSet::new();
        loop {
            let proof = self.multiproof_expanding(&all, &expand);
            let result =
                proof.apply_updates(updates.iter().map(|(k, v)| (k, v.as_deref())), &self.hasher);
            match result {
                Err(MultiProofError::InsufficientProof(positions)) => {
                    let before = expand.len();
                    expand.extend(positions);
                    assert!(expand.len() > before, "expansion makes progress");
                }
                _ => return proof,
            }
        }
    }

    /// The witness of a transition from this state: `reads` are read (their values as this
    /// state holds them), then `writes` applied.
    pub fn witness(&self, reads: &[Key], writes: &[(Key, Option<Vec<u8>>)]) -> Witness {
        let mut reads: Vec<Key> = reads.to_vec();
        reads.sort();
        reads.dedup();
        let mut net: std::collections::BTreeMap<Key, Option<Vec<u8>>> =
            std::collections::BTreeMap::new();
        for (k, v) in writes {
            net.insert(*k, v.clone());
        }
        let writes: Vec<(Key, Option<Vec<u8>>)> = net.into_iter().collect();
        let mut keys: Vec<Key> = reads
            .iter()
            .chain(writes.iter().map(|(k, _)| k))
            .copied()
            .collect();
        keys.sort();
        keys.dedup();
        let proof = self.multiproof_for_updates(&keys, &writes);
        let mut after: std::collections::BTreeMap<Key, Vec<u8>> = self
            .keys
            .iter()
            .copied()
            .zip(self.values.iter().cloned())
            .collect();
        for (k, v) in &writes {
            match v {
                Some(v) => {
                    after.insert(*k, v.clone());
                }
                None => {
                    after.remove(k);
                }
            }
        }
        let root = ReferenceTrie::with_hasher(after, &self.hasher).root();
        Witness {
            prev_root: self.root(),
            root,
            reads: reads
                .iter()
                .map(|k| (*k, self.get(k).map(<[u8]>::to_vec)))
                .collect(),
            writes,
            keys,
            proof,
        }
    }

    fn multiproof_expanding(&self, keys: &[Key], expand: &HashSet<Position>) -> MultiProof {
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        let mut nodes = Vec::new();
        self.emit(
            0,
            self.keys.len(),
            &keys,
            0,
            Key::default(),
            expand,
            &mut nodes,
        );
        // UNWRAP: a multiproof generated from the trie is canonical.
        MultiProof::from_preorder(nodes).expect("a generated multiproof is canonical")
    }

    /// Emits, in pre-order, the multiproof nodes of the subtrie of leaves `lo..hi` at `depth`
    /// on `path`, for the sorted `keys` that fall in it.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        lo: usize,
        hi: usize,
        keys: &[Key],
        depth: usize,
        path: Key,
        expand: &HashSet<Position>,
        out: &mut Vec<ProofNode>,
    ) {
        if hi == lo {
            out.push(ProofNode::Empty);
        } else if hi - lo == 1 && (!keys.is_empty() || expand.contains(&Position::of(&path, depth)))
        {
            out.push(ProofNode::Leaf(self.leaves[lo]));
        } else if keys.is_empty() {
            if expand.contains(&Position::of(&path, depth)) {
                // The node itself: a branch over its two children's hashes.
                let mid = self.split(lo, hi, depth);
                out.push(ProofNode::Branch);
                for (a, b) in [(lo, mid), (mid, hi)] {
                    out.push(if a == b {
                        ProofNode::Empty
                    } else {
                        ProofNode::Hash(self.subtrie_hash(a, b, depth + 1))
                    });
                }
            } else {
                out.push(ProofNode::Hash(self.subtrie_hash(lo, hi, depth)));
            }
        } else {
            let mid = self.split(lo, hi, depth);
            let kmid = keys.partition_point(|k| !k.bit(depth));
            out.push(ProofNode::Branch);
            self.emit(lo, mid, &keys[..kmid], depth + 1, path, expand, out);
            self.emit(
                mid,
                hi,
                &keys[kmid..],
                depth + 1,
                path.with_bit(depth, true),
                expand,
                out,
            );
        }
    }
}
