//! The reference root builder: the state root of a set of key/value pairs, streamed in key
//! order, in O(n) hashes and O(depth) memory.
//!
//! It is the oracle the database is held against, so it is written for obviousness first and
//! speed second (it must still build the root of a million keys in about a second).
//!
//! # How it works
//!
//! In a sorted run of keys, let `lcp(i)` be the number of leading bits key `i` shares with key
//! `i + 1`. The leaf of key `i` sits at depth `max(lcp(i - 1), lcp(i)) + 1` (as high as it can
//! while still being alone in its subtrie), and the branch that separates keys `i` and `i + 1`
//! sits at depth `lcp(i)`. The builder keeps a stack of finished subtries, each with the depth
//! of its top node, strictly deepening from bottom to top. After each key it folds the top of
//! the stack up to depth `lcp(i) + 1`: two entries at the same depth are siblings and merge
//! into their parent branch; a lone entry gets a parent branch with an empty other side. At the
//! end everything is folded to the base depth (0 for a whole trie).

use crate::hash::{Blake2bValueHasher, Hash, ValueHasher};
use crate::key::{KEY_BITS, Key};
use crate::node::{LeafNode, hash_branch};

/// Keys given to a [`RootBuilder`] were out of order or outside its subtrie.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Keys must come in strictly increasing order (no duplicates).
    #[error("keys out of order: {next} after {previous}")]
    OutOfOrder {
        /// The key given before.
        previous: Key,
        /// The key that should have been larger.
        next: Key,
    },
    /// A subtrie builder got a key that does not share the subtrie's path.
    #[error("key {key} is outside the subtrie at depth {depth}")]
    OutsideSubtrie {
        /// The offending key.
        key: Key,
        /// The subtrie's depth.
        depth: usize,
    },
}

#[derive(Clone, Copy)]
struct Pending {
    depth: usize,
    hash: Hash,
    /// Any key inside this subtrie: it gives the path bits above it.
    key: Key,
}

/// Builds the root of a trie (or of one subtrie) from leaves given in key order.
#[derive(Debug)]
pub struct RootBuilder {
    base_depth: usize,
    stack: Vec<Pending>,
    /// The last key pushed, its leaf hash, and the lcp with the key before it.
    last: Option<(Key, Hash, Option<usize>)>,
    /// The first key, to check that all keys stay inside a subtrie.
    first: Option<Key>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {})", self.depth, self.hash)
    }
}

impl Default for RootBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RootBuilder {
    /// A builder for a whole trie.
    pub fn new() -> Self {
        Self::at_depth(0)
    }

    /// A builder for the subtrie whose top sits at `depth`: every key pushed must share the
    /// same first `depth` bits, and [`RootBuilder::finish`] gives the subtrie's hash (the value
    /// its parent branch holds for it).
    pub fn at_depth(depth: usize) -> Self {
        assert!(depth <= KEY_BITS, "depth {depth} is deeper than a key");
        RootBuilder {
            base_depth: depth,
            stack: Vec::with_capacity(16),
            last: None,
            first: None,
        }
    }

    /// Adds the next key and its value (hashed with the Gray Paper value hash if long).
    pub fn push(&mut self, key: &Key, value: &[u8]) -> Result<(), BuildError> {
        self.push_with(key, value, &Blake2bValueHasher)
    }

    /// Adds the next key and its value, hashing long values with `hasher`.
    pub fn push_with<H: ValueHasher + ?Sized>(
        &mut self,
        key: &Key,
        value: &[u8],
        hasher: &H,
    ) -> Result<(), BuildError> {
        self.check_order(key)?;
        self.push_leaf_hash_unchecked(*key, LeafNode::new(*key, value, hasher).hash());
        Ok(())
    }

    /// Adds the next key with its leaf's hash already computed.
    pub fn push_leaf_hash(&mut self, key: &Key, leaf_hash: Hash) -> Result<(), BuildError> {
        self.check_order(key)?;
        self.push_leaf_hash_unchecked(*key, leaf_hash);
        Ok(())
    }

    fn check_order(&mut self, key: &Key) -> Result<(), BuildError> {
        if let Some((previous, _, _)) = &self.last
            && previous >= key
        {
            return Err(BuildError::OutOfOrder {
                previous: *previous,
                next: *key,
            });
        }
        match &self.first {
            None => self.first = Some(*key),
            Some(first) => {
                if first.common_prefix_bits(key) < self.base_depth {
                    return Err(BuildError::OutsideSubtrie {
                        key: *key,
                        depth: self.base_depth,
                    });
                }
            }
        }
        Ok(())
    }

    fn push_leaf_hash_unchecked(&mut self, key: Key, hash: Hash) {
        match self.last.take() {
            None => self.last = Some((key, hash, None)),
            Some((prev_key, prev_hash, prev_lcp)) => {
                let lcp = prev_key.common_prefix_bits(&key);
                self.place(prev_key, prev_hash, prev_lcp, Some(lcp));
                self.fold(lcp + 1);
                self.last = Some((key, hash, Some(lcp)));
            }
        }
    }

    /// Puts a leaf on the stack at its final depth, given the lcps with its neighbours.
    fn place(&mut self, key: Key, hash: Hash, lcp_before: Option<usize>, lcp_after: Option<usize>) {
        let above = match (lcp_before, lcp_after) {
            (None, None) => None,
            (Some(a), None) | (None, Some(a)) => Some(a),
            (Some(a), Some(b)) => Some(a.max(b)),
        };
        let depth = above.map_or(self.base_depth, |d| d + 1);
        self.stack.push(Pending { depth, hash, key });
    }

    /// Folds the top of the stack until its depth is at most `target`.
    fn fold(&mut self, target: usize) {
        while let Some(top) = self.stack.last().copied() {
            if top.depth <= target {
                break;
            }
            let n = self.stack.len();
            let parent_depth = top.depth - 1;
            if n >= 2 && self.stack[n - 2].depth == top.depth {
                let left = self.stack[n - 2];
                self.stack.truncate(n - 2);
                self.stack.push(Pending {
                    depth: parent_depth,
                    hash: hash_branch(&left.hash, &top.hash),
                    key: top.key,
                });
            } else {
                let hash = if top.key.bit(parent_depth) {
                    hash_branch(&Hash::ZERO, &top.hash)
                } else {
                    hash_branch(&top.hash, &Hash::ZERO)
                };
                self.stack.truncate(n - 1);
                self.stack.push(Pending {
                    depth: parent_depth,
                    hash,
                    key: top.key,
                });
            }
        }
    }

    /// The root of everything pushed ([`Hash::ZERO`] if nothing was).
    pub fn finish(mut self) -> Hash {
        if let Some((key, hash, lcp)) = self.last.take() {
            self.place(key, hash, lcp, None);
        }
        self.fold(self.base_depth);
        debug_assert!(self.stack.len() <= 1);
        self.stack.pop().map_or(Hash::ZERO, |p| p.hash)
    }
}

/// The root of key/value pairs given in strictly increasing key order.
pub fn root_from_sorted<K, V, I>(entries: I) -> Result<Hash, BuildError>
where
    I: IntoIterator<Item = (K, V)>,
    K: std::borrow::Borrow<Key>,
    V: AsRef<[u8]>,
{
    root_from_sorted_with(entries, &Blake2bValueHasher)
}

/// [`root_from_sorted`] with another value hasher.
pub fn root_from_sorted_with<K, V, I, H>(entries: I, hasher: &H) -> Result<Hash, BuildError>
where
    I: IntoIterator<Item = (K, V)>,
    K: std::borrow::Borrow<Key>,
    V: AsRef<[u8]>,
    H: ValueHasher + ?Sized,
{
    let mut builder = RootBuilder::new();
    for (k, v) in entries {
        builder.push_with(k.borrow(), v.as_ref(), hasher)?;
    }
    Ok(builder.finish())
}

/// The root of key/value pairs in any order. When a key appears more than once, the last
/// value given wins (as if the pairs were inserted into a map in order).
pub fn root_from_unsorted<V, I>(entries: I) -> Hash
where
    I: IntoIterator<Item = (Key, V)>,
    V: AsRef<[u8]>,
{
    root_from_unsorted_with(entries, &Blake2bValueHasher)
}

/// [`root_from_unsorted`] with another value hasher.
pub fn root_from_unsorted_with<V, I, H>(entries: I, hasher: &H) -> Hash
where
    I: IntoIterator<Item = (Key, V)>,
    V: AsRef<[u8]>,
    H: ValueHasher + ?Sized,
{
    let mut leaves: Vec<(Key, Hash)> = entries
        .into_iter()
        .map(|(k, v)| (k, LeafNode::new(k, v.as_ref(), hasher).hash()))
        .collect();
    // Stable sort, then keep the last of equal keys.
    leaves.sort_by_key(|a| a.0);
    let mut builder = RootBuilder::new();
    let mut i = 0;
    while i < leaves.len() {
        let mut j = i;
        while j + 1 < leaves.len() && leaves[j + 1].0 == leaves[i].0 {
            j += 1;
        }
        builder.push_leaf_hash_unchecked(leaves[j].0, leaves[j].1);
        i = j + 1;
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::hash_leaf;

    /// The Gray Paper's recursive definition, written as directly as possible.
    fn naive(entries: &[(Key, Vec<u8>)], depth: usize) -> Hash {
        match entries.len() {
            0 => Hash::ZERO,
            1 => hash_leaf(&entries[0].0, &entries[0].1, &Blake2bValueHasher),
            _ => {
                let (l, r): (Vec<_>, Vec<_>) =
                    entries.iter().cloned().partition(|(k, _)| !k.bit(depth));
                hash_branch(&naive(&l, depth + 1), &naive(&r, depth + 1))
            }
        }
    }

    fn key(first: u8, last: u8) -> Key {
        let mut k = [0u8; 31];
        k[0] = first;
        k[30] = last;
        Key(k)
    }

    #[test]
    fn matches_naive_definition() {
        let sets: Vec<Vec<(Key, Vec<u8>)>> = vec![
            vec![],
            vec![(key(1, 0), vec![1])],
            vec![(key(0, 0), vec![]), (key(0, 1), vec![2; 40])],
            vec![
                (key(0, 0), vec![1]),
                (key(0x80, 0), vec![2]),
                (key(0xC0, 3), vec![3]),
                (key(0xC0, 4), vec![4]),
                (key(0xFF, 0xFF), vec![5]),
            ],
        ];
        for set in sets {
            let mut sorted = set.clone();
            sorted.sort();
            assert_eq!(
                root_from_sorted(sorted.iter().map(|(k, v)| (k, v))).unwrap(),
                naive(&sorted, 0)
            );
            assert_eq!(root_from_unsorted(set.clone()), naive(&sorted, 0));
        }
    }

    #[test]
    fn subtrie_builder() {
        let entries = [(key(0xC0, 3), vec![3]), (key(0xC0, 4), vec![4])];
        let mut b = RootBuilder::at_depth(2);
        for (k, v) in &entries {
            b.push(k, v).unwrap();
        }
        assert_eq!(b.finish(), naive(&entries, 2));
        let mut b = RootBuilder::at_depth(2);
        b.push(&key(0x00, 0), b"").unwrap();
        assert!(matches!(
            b.push(&key(0xC0, 0), b""),
            Err(BuildError::OutsideSubtrie { .. })
        ));
    }

    #[test]
    fn rejects_disorder_and_last_value_wins() {
        assert!(matches!(
            root_from_sorted([(key(2, 0), b"a"), (key(1, 0), b"b")]),
            Err(BuildError::OutOfOrder { .. })
        ));
        assert!(matches!(
            root_from_sorted([(key(1, 0), b"a"), (key(1, 0), b"b")]),
            Err(BuildError::OutOfOrder { .. })
        ));
        assert_eq!(
            root_from_unsorted([(key(1, 0), b"a"), (key(1, 0), b"b")]),
            root_from_unsorted([(key(1, 0), b"b")])
        );
    }
}
