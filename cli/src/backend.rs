//! Where `replay-trace` keeps the state it replays: a deliberately narrow trait.
//!
//! Replaying a trace exercises the real database (`bmt`) the way a JAM node would: start from
//! a state, apply a block's changes as writes and deletes, commit, and compare the root the
//! store reports with the one in the trace. [`DbBackend`] does that on a fresh temporary
//! database per file. [`MemoryBackend`], a `BTreeMap` whose root is recomputed from scratch by
//! the `bmt-core` reference builder at each commit, stays as the oracle the tests compare with.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};
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

/// The database backend: a fresh database in a temporary directory for each file.
#[derive(Debug, Default)]
pub struct DbBackend {
    db: Option<(bmt::Nomt, tempfile::TempDir)>,
}

impl DbBackend {
    /// No database yet; [`StateBackend::begin_fresh`] makes one.
    pub fn new() -> Self {
        Self::default()
    }

    fn db(&mut self) -> Result<&bmt::Nomt> {
        if self.db.is_none() {
            self.begin_fresh()?;
        }
        Ok(&self.db.as_ref().expect("opened just above").0)
    }
}

impl StateBackend for DbBackend {
    fn begin_fresh(&mut self) -> Result<()> {
        // Close the old database before its directory goes.
        self.db = None;
        let dir = tempfile::tempdir().context("creating a temporary database directory")?;
        let db = bmt::Nomt::open(bmt::Options::new(dir.path()).page_cache_size(64 << 20))
            .context("opening a temporary database")?;
        self.db = Some((db, dir));
        Ok(())
    }

    fn apply(&mut self, writes: Vec<(Key, Vec<u8>)>, deletes: Vec<Key>) -> Result<()> {
        let db = self.db()?;
        for key in deletes {
            db.delete(key)?;
        }
        for (key, value) in writes {
            db.insert(key, value)?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<Hash> {
        Ok(self.db()?.commit()?.root())
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

    #[test]
    fn database_backend_agrees_with_the_oracle() {
        let mut oracle = MemoryBackend::new();
        let mut db = DbBackend::new();
        let mut x = 7u64;
        for round in 0..5u8 {
            let mut writes = Vec::new();
            let mut deletes = Vec::new();
            for i in 0..300u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let mut k = [0u8; 31];
                k[..8].copy_from_slice(&(x % 700).to_be_bytes());
                if (i + round as u64).is_multiple_of(4) {
                    deletes.push(Key(k));
                } else {
                    writes.push((Key(k), vec![round; (x % 90) as usize]));
                }
            }
            oracle.apply(writes.clone(), deletes.clone()).unwrap();
            db.apply(writes, deletes).unwrap();
            assert_eq!(db.commit().unwrap(), oracle.commit().unwrap());
        }
    }
}
