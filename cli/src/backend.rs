//! Where `replay-trace` keeps the state it replays: a deliberately narrow trait.
//!
//! Replaying a trace should exercise the real database (`bmt`) the way a JAM node would: start
//! from a state, apply a block's changes as writes and deletes, commit, and compare the root
//! the store reports with the one in the trace. Until the database crate is ready, the same
//! replay runs against [`MemoryBackend`], a `BTreeMap` whose root is recomputed from scratch by
//! the `bmt-core` reference builder at each commit. Keeping the trait to four operations (begin
//! fresh, insert, delete, commit) means switching to the database later touches only a new
//! implementation, not the replay logic, and the in-memory one stays as the oracle.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use bmt_core::{Hash, Key, root_from_sorted};

/// A key/value state that can take a batch of changes and report its root.
pub trait StateBackend {
    /// Starts over from an empty state (root [`Hash::ZERO`]), dropping anything uncommitted.
    fn begin_fresh(&mut self) -> Result<()>;

    /// Stages writes (insert or overwrite) and deletes, to be applied by the next
    /// [`StateBackend::commit`]. Deleting an absent key is not an error.
    fn apply(&mut self, writes: Vec<(Key, Vec<u8>)>, deletes: Vec<Key>) -> Result<()>;

    /// Applies everything staged and returns the new state root.
    fn commit(&mut self) -> Result<Hash>;
}

/// The reference backend: an in-memory map, its root rebuilt in full at each commit.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    committed: BTreeMap<Key, Vec<u8>>,
    staged_writes: Vec<(Key, Vec<u8>)>,
    staged_deletes: Vec<Key>,
}

impl MemoryBackend {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateBackend for MemoryBackend {
    fn begin_fresh(&mut self) -> Result<()> {
        *self = Self::default();
        Ok(())
    }

    fn apply(&mut self, writes: Vec<(Key, Vec<u8>)>, deletes: Vec<Key>) -> Result<()> {
        self.staged_writes.extend(writes);
        self.staged_deletes.extend(deletes);
        Ok(())
    }

    fn commit(&mut self) -> Result<Hash> {
        // Deletes first, then writes: a key both deleted and written in one batch ends written.
        for key in self.staged_deletes.drain(..) {
            self.committed.remove(&key);
        }
        for (key, value) in self.staged_writes.drain(..) {
            self.committed.insert(key, value);
        }
        root_from_sorted(self.committed.iter())
            .map_err(|e| anyhow!("internal error: map not sorted: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_applies_writes_and_deletes() {
        let a = Key([1; 31]);
        let b = Key([2; 31]);
        let mut backend = MemoryBackend::new();
        assert_eq!(backend.commit().unwrap(), Hash::ZERO);
        backend
            .apply(vec![(a, vec![1]), (b, vec![2])], vec![])
            .unwrap();
        let both = backend.commit().unwrap();
        assert_eq!(
            both,
            root_from_sorted([(a, vec![1u8]), (b, vec![2u8])]).unwrap()
        );
        backend.apply(vec![], vec![b]).unwrap();
        assert_eq!(
            backend.commit().unwrap(),
            root_from_sorted([(a, vec![1u8])]).unwrap()
        );
        backend.begin_fresh().unwrap();
        assert_eq!(backend.commit().unwrap(), Hash::ZERO);
    }
}
