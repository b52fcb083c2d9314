//! Sessions: snapshot reads, write sessions with their intermediate roots, prepared sessions,
//! and overlays (prepared changes kept in memory, which later sessions build on).
//!
//! A session reads a *view*: a committed state (held, so that a commit cannot reuse its
//! pages while the session lives) with zero or more *layers* on top. A layer is a set of
//! uncommitted changes and the trie pages they change, computed against the view below it;
//! it never touches the disk. Reading through a view looks in the layers, newest first, then
//! in the committed state; the trie sees the layers' pages before the stored ones.
//!
//! - A read session at the current root is the committed state alone (creating it takes an
//!   `Arc` clone). At an older root within the rollback window, its layer holds the prior
//!   values of everything committed since (from the rollback log) and the trie pages they
//!   give: the old root, with proofs, computed along the changed paths only.
//! - A write session collects changes; [`WriteSession::root`] computes the layer they make
//!   (along the changed paths only) and [`WriteSession::prepare`] freezes it.
//! - A prepared session commits (if the database is still at its starting root), or becomes an
//!   [`Overlay`] that later write sessions build on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bmt_core::{Hash, Key, LeafValue, MerkleProof, MultiProof, MultiProofError, Witness};

use crate::btree;
use crate::db::{Changes, FinishedSession, Inner, IntoKey, Snapshot, Version, WitnessSource};
use crate::error::{Error, Result};
use crate::trie::{self, NodeKind, PageId, PageView, TrieChange, TriePage, TrieSource};

/// Uncommitted changes and the trie pages they give, against the view below.
#[derive(Debug)]
pub(crate) struct Layer {
    /// The changes, with full values (`None`: deleted).
    pub(crate) flat: Arc<Changes>,
    /// What the changed keys' leaves hold (`None`: deleted).
    leaves: BTreeMap<Key, Option<LeafValue>>,
    /// Trie pages as the changes leave them (`None`: no longer stored).
    pages: HashMap<PageId, Option<Arc<TriePage>>>,
    /// The root of the view below.
    pub(crate) prev_root: Hash,
    /// The root with the changes.
    pub(crate) root: Hash,
    /// The number of keys with the changes.
    pub(crate) key_count: u64,
}

/// A committed state and uncommitted layers on it, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) base: Arc<Version>,
    pub(crate) layers: Vec<Arc<Layer>>,
}

impl View {
    /// The committed state alone.
    pub(crate) fn of(base: Arc<Version>) -> View {
        View {
            base,
            layers: Vec::new(),
        }
    }

    pub(crate) fn root(&self) -> Hash {
        self.layers.last().map_or(self.base.root, |l| l.root)
    }

    pub(crate) fn key_count(&self) -> u64 {
        self.layers
            .last()
            .map_or(self.base.key_count, |l| l.key_count)
    }

    fn root_node(&self) -> NodeKind {
        NodeKind::root(self.root(), self.key_count())
    }

    /// The value of `key` in this view.
    pub(crate) fn get(&self, db: &Inner, key: &Key) -> Result<Option<Vec<u8>>> {
        for layer in self.layers.iter().rev() {
            if let Some(v) = layer.flat.get(key) {
                return Ok(v.clone());
            }
        }
        db.get_committed(&self.base, key)
    }

    pub(crate) fn source<'a>(&'a self, db: &'a Inner) -> LayeredSource<'a> {
        LayeredSource {
            base: Snapshot {
                db,
                version: &self.base,
                hints: None,
            },
            layers: &self.layers,
        }
    }

    /// The proof of `key` in this view.
    pub(crate) fn prove(&self, db: &Inner, key: &Key) -> Result<MerkleProof> {
        let src = self.source(db);
        trie::prove(&src, db.trie_shape, self.root_node(), self.key_count(), key)
    }

    /// A multiproof of `keys` (any order, repeats allowed) against this view's root.
    pub(crate) fn multiproof(&self, db: &Inner, keys: &[Key]) -> Result<MultiProof> {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let src = self.source(db);
        trie::multiproof(
            &src,
            db.trie_shape,
            self.root_node(),
            self.key_count(),
            &keys,
            &HashSet::new(),
        )
    }

    /// The layer `changes` make on this view.
    pub(crate) fn layer(
        &self,
        db: &Inner,
        changes: BTreeMap<Key, Option<Vec<u8>>>,
    ) -> Result<Layer> {
        // What each changed key's leaf holds now, from the layers or the committed state.
        let mut old: Vec<Option<Option<LeafValue>>> = vec![None; changes.len()];
        let mut from_base: Vec<(usize, Key)> = Vec::new();
        for (i, key) in changes.keys().enumerate() {
            match self
                .layers
                .iter()
                .rev()
                .find_map(|l| l.leaves.get(key).copied())
            {
                Some(v) => old[i] = Some(v),
                None => from_base.push((i, *key)),
            }
        }
        let keys: Vec<Key> = from_base.iter().map(|(_, k)| *k).collect();
        let found = btree::get_many(&db.pager, self.base.flat_root, &keys)?;
        for ((i, _), payload) in from_base.iter().zip(found) {
            let leaf = payload
                .map(|p| db.decode_entry(p.bytes()).map(|e| e.leaf_value()))
                .transpose()?;
            old[*i] = Some(leaf);
        }
        let mut trie_changes = Vec::with_capacity(changes.len());
        let mut leaves = BTreeMap::new();
        let mut key_count = self.key_count() as i64;
        for ((key, new), old) in changes.iter().zip(old) {
            let old = old.flatten();
            let new_leaf = new.as_ref().map(|v| LeafValue::new(v, &*db.hasher));
            leaves.insert(*key, new_leaf);
            if old == new_leaf {
                continue;
            }
            let change = TrieChange::between(*key, old.as_ref(), new_leaf);
            key_count += change.delta;
            trie_changes.push(change);
        }
        let src = self.source(db);
        let delta = trie::Update::run(
            &src,
            db.trie_shape,
            self.root_node(),
            self.key_count(),
            &trie_changes,
            None,
        )?;
        let pages = delta
            .pages
            .into_iter()
            .map(|(id, page, _)| (id, page.map(Arc::new)))
            .collect();
        Ok(Layer {
            flat: Arc::new(changes),
            leaves,
            pages,
            prev_root: self.root(),
            root: delta.root.hash(),
            key_count: key_count.max(0) as u64,
        })
    }

    /// A witness of reading `reads` (with the values this view holds) and then applying
    /// `writes`, whose result is `root`.
    pub(crate) fn witness(
        &self,
        db: &Inner,
        reads: &BTreeMap<Key, Option<Vec<u8>>>,
        writes: &BTreeMap<Key, Option<Vec<u8>>>,
        root: Hash,
    ) -> Result<Witness> {
        let mut keys: Vec<Key> = reads.keys().chain(writes.keys()).copied().collect();
        keys.sort();
        keys.dedup();
        let src = self.source(db);
        let mut expand = HashSet::new();
        loop {
            let proof = trie::multiproof(
                &src,
                db.trie_shape,
                self.root_node(),
                self.key_count(),
                &keys,
                &expand,
            )?;
            match proof.apply_updates(writes.iter().map(|(k, v)| (k, v.as_deref())), &*db.hasher) {
                Err(MultiProofError::InsufficientProof(positions)) => {
                    let before = expand.len();
                    expand.extend(positions);
                    if expand.len() == before {
                        return Err(src.inconsistent(
                            "the witness proof cannot show the siblings the writes expose".into(),
                        ));
                    }
                }
                Err(e) => {
                    return Err(src.inconsistent(format!("the witness proof is unusable: {e}")));
                }
                Ok(_) => {
                    return Ok(Witness {
                        prev_root: self.root(),
                        root,
                        keys,
                        reads: reads.iter().map(|(k, v)| (*k, v.clone())).collect(),
                        writes: writes.iter().map(|(k, v)| (*k, v.clone())).collect(),
                        proof,
                    });
                }
            }
        }
    }
}

/// The trie source of a view: the layers' pages and keys over the committed state's.
pub(crate) struct LayeredSource<'a> {
    base: Snapshot<'a>,
    layers: &'a [Arc<Layer>],
}

impl TrieSource for LayeredSource<'_> {
    fn page(&self, id: &PageId) -> Result<Option<PageView>> {
        for layer in self.layers.iter().rev() {
            if let Some(page) = layer.pages.get(id) {
                return Ok(page.clone().map(PageView::Memory));
            }
        }
        self.base.page(id)
    }

    fn scan(
        &self,
        cursor: &mut btree::Cursor,
        lo: &Key,
        hi: &Key,
        f: &mut dyn FnMut(&Key, LeafValue) -> Result<bool>,
    ) -> Result<()> {
        if self.layers.is_empty() {
            return self.base.scan(cursor, lo, hi, f);
        }
        // The layers' changes in the range, the newest of each key.
        let mut changed: BTreeMap<Key, Option<LeafValue>> = BTreeMap::new();
        for layer in self.layers.iter().rev() {
            for (k, v) in layer.leaves.range(*lo..=*hi) {
                changed.entry(*k).or_insert(*v);
            }
        }
        let mut pending = changed.into_iter().peekable();
        let mut stopped = false;
        self.base.scan(cursor, lo, hi, &mut |k, v| {
            while let Some((ck, cv)) = pending.peek().copied() {
                if ck >= *k {
                    break;
                }
                pending.next();
                if let Some(cv) = cv
                    && !f(&ck, cv)?
                {
                    stopped = true;
                    return Ok(false);
                }
            }
            if pending.peek().is_some_and(|(ck, _)| ck == k) {
                let (ck, cv) = pending.next().expect("just peeked");
                return match cv {
                    Some(cv) => {
                        let go = f(&ck, cv)?;
                        stopped = !go;
                        Ok(go)
                    }
                    None => Ok(true),
                };
            }
            let go = f(k, v)?;
            stopped = !go;
            Ok(go)
        })?;
        if !stopped {
            for (ck, cv) in pending {
                if let Some(cv) = cv
                    && !f(&ck, cv)?
                {
                    break;
                }
            }
        }
        Ok(())
    }

    fn inconsistent(&self, what: String) -> Error {
        self.base.inconsistent(what)
    }
}

/// A consistent, read-only snapshot of one state: the root it was opened at stays its root
/// while commits and rollbacks go on. Cheap to create; many can be open at once, on many
/// threads. The pages it reads are not reused until it is dropped (or closed).
#[derive(Debug)]
pub struct ReadSession {
    db: Arc<Inner>,
    view: View,
}

impl ReadSession {
    pub(crate) fn new(db: Arc<Inner>, view: View) -> Self {
        ReadSession { db, view }
    }

    /// The root of the snapshot.
    pub fn root(&self) -> Hash {
        self.view.root()
    }

    /// The number of keys in the snapshot.
    pub fn key_count(&self) -> u64 {
        self.view.key_count()
    }

    /// The value of `key` in the snapshot.
    pub fn get(&self, key: impl IntoKey) -> Result<Option<Vec<u8>>> {
        let key = key.into_key()?;
        self.db.check_usable()?;
        self.db.metrics.read(false);
        self.view.get(&self.db, &key)
    }

    /// A proof of `key`'s value (or absence) against [`ReadSession::root`].
    pub fn generate_proof(&self, key: impl IntoKey) -> Result<MerkleProof> {
        let key = key.into_key()?;
        self.db.check_usable()?;
        self.view.prove(&self.db, &key)
    }

    /// One proof of many keys' values (or absences) against [`ReadSession::root`], sharing
    /// the nodes their paths have in common: smaller than their separate proofs.
    /// [`MultiProof::verify_entries`] checks it; [`MultiProof::proof_of`] extracts a key's
    /// single proof.
    pub fn generate_multiproof(&self, keys: &[Key]) -> Result<MultiProof> {
        self.db.check_usable()?;
        self.view.multiproof(&self.db, keys)
    }

    /// Ends the session (dropping it does the same).
    pub fn close(self) {}
}

/// Marks the one write session of a database as taken, until dropped.
#[derive(Debug)]
pub(crate) struct WriterGuard(Arc<Inner>);

impl WriterGuard {
    pub(crate) fn take(db: &Arc<Inner>) -> Result<WriterGuard> {
        db.check_usable()?;
        if !db.overlay.is_empty() {
            return Err(Error::WriterBusy(
                "the handle has staged changes: commit them first",
            ));
        }
        if db
            .writer_active
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::WriterBusy("a write session is open"));
        }
        Ok(WriterGuard(db.clone()))
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.0.writer_active.store(false, Ordering::Release);
    }
}

/// A set of changes in preparation: reads see them first, [`WriteSession::root`] gives the
/// root they make, [`WriteSession::prepare`] freezes them.
///
/// Only one write session is open at a time; while it is, the handle's own `insert`,
/// `delete`, `commit` and `rollback` fail with [`Error::WriterBusy`] (they would otherwise
/// change the state under the session).
#[derive(Debug)]
pub struct WriteSession {
    db: Arc<Inner>,
    view: View,
    changes: BTreeMap<Key, Option<Vec<u8>>>,
    /// Keys read from the view, with the values it held (when tracking for a witness).
    reads: Option<BTreeMap<Key, Option<Vec<u8>>>>,
    /// The layer computed by the last `root()`, while no change came since.
    cached: Option<Arc<Layer>>,
    guard: WriterGuard,
}

impl WriteSession {
    pub(crate) fn new(guard: WriterGuard, view: View, witness: bool) -> Self {
        WriteSession {
            db: guard.0.clone(),
            view,
            changes: BTreeMap::new(),
            reads: witness.then(BTreeMap::new),
            cached: None,
            guard,
        }
    }

    /// The root the session started from.
    pub fn prev_root(&self) -> Hash {
        self.view.root()
    }

    /// Stages a write.
    pub fn insert(&mut self, key: impl IntoKey, value: impl AsRef<[u8]>) -> Result<()> {
        let key = key.into_key()?;
        let value = value.as_ref();
        self.db.check_value(value)?;
        self.db.check_usable()?;
        self.db.metrics.write();
        self.changes.insert(key, Some(value.to_vec()));
        self.db.warm.hint(key);
        self.cached = None;
        Ok(())
    }

    /// Stages a delete.
    pub fn delete(&mut self, key: impl IntoKey) -> Result<()> {
        let key = key.into_key()?;
        self.db.check_usable()?;
        self.db.metrics.write();
        self.changes.insert(key, None);
        self.db.warm.hint(key);
        self.cached = None;
        Ok(())
    }

    /// The value of `key`: the session's own changes first, then the state it builds on.
    pub fn get(&mut self, key: impl IntoKey) -> Result<Option<Vec<u8>>> {
        let key = key.into_key()?;
        self.db.check_usable()?;
        if let Some(v) = self.changes.get(&key) {
            self.db.metrics.read(true);
            return Ok(v.clone());
        }
        if let Some(reads) = &self.reads
            && let Some(v) = reads.get(&key)
        {
            self.db.metrics.read(true);
            return Ok(v.clone());
        }
        self.db.metrics.read(false);
        let v = self.view.get(&self.db, &key)?;
        if let Some(reads) = &mut self.reads {
            reads.insert(key, v.clone());
        }
        Ok(v)
    }

    fn layer(&mut self) -> Result<Arc<Layer>> {
        if let Some(l) = &self.cached {
            return Ok(l.clone());
        }
        let layer = Arc::new(self.view.layer(&self.db, self.changes.clone())?);
        self.cached = Some(layer.clone());
        Ok(layer)
    }

    /// The root the staged changes make, computed along their paths (not by rebuilding).
    pub fn root(&mut self) -> Result<Hash> {
        self.db.check_usable()?;
        Ok(self.layer()?.root)
    }

    /// Freezes the changes: their root is computed and the session can now be committed,
    /// discarded, or kept as an overlay.
    pub fn prepare(mut self) -> Result<PreparedSession> {
        self.db.check_usable()?;
        let layer = self.layer()?;
        Ok(PreparedSession {
            db: self.db,
            view: self.view,
            layer,
            reads: self.reads,
            guard: Some(self.guard),
        })
    }
}

/// A write session's frozen changes and their root: commit them, discard them, or keep them
/// as an [`Overlay`] to build on.
#[derive(Debug)]
pub struct PreparedSession {
    db: Arc<Inner>,
    view: View,
    layer: Arc<Layer>,
    reads: Option<BTreeMap<Key, Option<Vec<u8>>>>,
    guard: Option<WriterGuard>,
}

impl PreparedSession {
    /// The root after the changes.
    pub fn root(&self) -> Hash {
        self.layer.root
    }

    /// The root before them.
    pub fn prev_root(&self) -> Hash {
        self.layer.prev_root
    }

    /// The witness of the session: every key read (if the session tracked reads) or
    /// written, with a proof against [`PreparedSession::prev_root`].
    pub fn witness(&self) -> Result<Witness> {
        self.db.check_usable()?;
        let empty = BTreeMap::new();
        self.view.witness(
            &self.db,
            self.reads.as_ref().unwrap_or(&empty),
            &self.layer.flat,
            self.layer.root,
        )
    }

    /// Commits the changes, if the database is still at [`PreparedSession::prev_root`]
    /// (otherwise [`Error::Stale`], and nothing changes).
    pub fn commit(mut self) -> Result<FinishedSession> {
        // The writer is handed back before the commit takes it as the handle's.
        drop(self.guard.take());
        let (done, base) = self.db.commit_layer(&self.layer)?;
        Ok(FinishedSession::new(
            done,
            WitnessSource {
                db: self.db.clone(),
                view: View::of(base),
                reads: self.reads.take().unwrap_or_default(),
                writes: self.layer.flat.clone(),
            },
        ))
    }

    /// Discards the changes.
    pub fn rollback(self) {}

    /// Keeps the changes in memory as an overlay that later write sessions can build on
    /// (see [`crate::Nomt::begin_write_with_overlay`]); frees the writer.
    pub fn into_overlay(self) -> Overlay {
        Overlay { layer: self.layer }
    }
}

/// Prepared changes kept in memory, not committed: later write sessions can build on a chain
/// of them, and each can be committed once the database has reached its starting root.
#[derive(Debug, Clone)]
pub struct Overlay {
    pub(crate) layer: Arc<Layer>,
}

impl Overlay {
    /// The root with the overlay's changes.
    pub fn root(&self) -> Hash {
        self.layer.root
    }

    /// The root it was built on.
    pub fn prev_root(&self) -> Hash {
        self.layer.prev_root
    }

    /// The changes (`None`: a delete), in key order.
    pub fn changes(&self) -> impl Iterator<Item = (&Key, Option<&[u8]>)> {
        self.layer.flat.iter().map(|(k, v)| (k, v.as_deref()))
    }
}
