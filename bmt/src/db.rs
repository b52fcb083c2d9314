//! The database handle: open and recovery, the overlay of uncommitted changes, reads, and the
//! commit protocol.
//!
//! # Commit, step by step
//!
//! 1. The overlay (a hash map of uncommitted writes and deletes) is taken whole and sorted.
//! 2. Each change is looked up in the flat store: a delete of an absent key or a write of the
//!    value already there changes nothing and is dropped; the others become trie changes
//!    (new leaf hash, and +1/0/-1 keys).
//! 3. The trie is updated along the changed paths only ([`crate::trie::Update`]).
//! 4. New pages get page numbers from the free space (never a page the committed state uses),
//!    children before parents: overflow extents, trie pages, the trie page table, the flat
//!    store, and (when a meta record is written) the free list.
//! 5. All new pages are written, then made durable (`fdatasync`).
//! 6. The meta record naming the new roots is written to the slot that does not hold the
//!    record in force, and made durable. This is the commit point. (A commit of at most 64
//!    pages merges 5 and 6: its record lists its pages and goes with them, one sync.)
//!
//! A small commit (see [`crate::wal`]) replaces 5 and 6 by one record of its changes appended
//! to the write-ahead log and synced: that sync is its commit point. Its pages stay in memory
//! until a checkpoint writes them with a meta record; open replays the log's records.
//!
//! With `durable_commits(false)`, steps 5 and 6 are put off to [`Nomt::sync`]: the commit's
//! pages are written but not synced and no meta record is written, so a crash returns the
//! database to the last synced commit, whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bmt_core::{Hash, Key, KeyError, LeafValue, MerkleProof, MultiProof, ValueHasher, Witness};
use parking_lot::{Mutex, RwLock};

use crate::btree;
use crate::check::{CheckProgress, CheckReport};
use crate::error::{Error, Result};
use crate::flat::{self, Entry};
use crate::freelist::{Delta, FreeSpace};
use crate::io::{DirLock, Storage};
use crate::meta::{MAX_JOURNAL, Meta, MetaError, OneSync};
use crate::metrics::{IoStats, Metrics};
use crate::options::Options;
use crate::page::{PAGE_REF_SIZE, PageBuf, PageKind, PageRef, SharedPage};
use crate::pager::{Pager, Preloaded, WriteBatch};
use crate::preload::Preload;
use crate::rollback::{LogOptions, LogState, ReverseDelta, RollbackLog};
use crate::session::{Layer, Overlay, ReadSession, View, WriteSession, WriterGuard};
use crate::staged::Staged;
use crate::trie::{self, NodeKind, PageId, TrieChange, TrieSource};
use crate::wal::{self, Wal, WalRecord};
use crate::warm::WarmUp;

/// The name of the data file inside the database directory.
pub const DATA_FILE: &str = "data.bmt";

/// Something that names a state key: a [`Key`], 31 bytes, or 32 bytes ending in zero.
pub trait IntoKey {
    /// The key, or why these bytes are not one.
    fn into_key(self) -> Result<Key, KeyError>;
}

impl IntoKey for Key {
    fn into_key(self) -> Result<Key, KeyError> {
        Ok(self)
    }
}

impl IntoKey for &Key {
    fn into_key(self) -> Result<Key, KeyError> {
        Ok(*self)
    }
}

impl IntoKey for [u8; 31] {
    fn into_key(self) -> Result<Key, KeyError> {
        Ok(Key(self))
    }
}

impl IntoKey for [u8; 32] {
    fn into_key(self) -> Result<Key, KeyError> {
        Key::from_slice(&self)
    }
}

impl IntoKey for &[u8] {
    fn into_key(self) -> Result<Key, KeyError> {
        Key::from_slice(self)
    }
}

impl IntoKey for &Vec<u8> {
    fn into_key(self) -> Result<Key, KeyError> {
        Key::from_slice(self)
    }
}

/// One committed state, as readers see it.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub(crate) seq: u64,
    pub(crate) root: Hash,
    pub(crate) key_count: u64,
    pub(crate) flat_root: Option<PageRef>,
    pub(crate) pt_root: Option<PageRef>,
}

/// The result of a commit.
///
/// It holds the state before the commit (so that [`FinishedSession::generate_witness`] can
/// prove against it): the pages of that state are not reused until it is dropped.
#[derive(Debug, Clone)]
pub struct FinishedSession {
    prev_root: Hash,
    root: Hash,
    seq: u64,
    rollback_id: Option<u64>,
    witness: Arc<WitnessSource>,
}

/// What a commit did, before it is handed out as a [`FinishedSession`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed {
    prev_root: Hash,
    root: Hash,
    seq: u64,
    rollback_id: Option<u64>,
}

/// What a finished session needs to build its witness: the state before and the changes.
#[derive(Debug)]
pub(crate) struct WitnessSource {
    pub(crate) db: Arc<Inner>,
    pub(crate) view: View,
    pub(crate) reads: Changes,
    pub(crate) writes: Arc<Changes>,
}

impl PartialEq for FinishedSession {
    fn eq(&self, other: &Self) -> bool {
        (self.prev_root, self.root, self.seq, self.rollback_id)
            == (other.prev_root, other.root, other.seq, other.rollback_id)
    }
}

impl Eq for FinishedSession {}

impl FinishedSession {
    /// The id of the commit in the rollback log (its sequence number), or `None` when the
    /// rollback log is off.
    pub fn rollback_id(&self) -> Option<u64> {
        self.rollback_id
    }

    /// The witness of the commit: a proof of every key it wrote (and read, for a write session
    /// that tracked reads) against [`FinishedSession::prev_root`], enough for a stateless
    /// verifier to recompute [`FinishedSession::root`].
    pub fn generate_witness(&self) -> Result<Witness> {
        let w = &self.witness;
        w.db.check_usable()?;
        w.view.witness(&w.db, &w.reads, &w.writes, self.root)
    }

    pub(crate) fn new(done: Committed, source: WitnessSource) -> Self {
        FinishedSession {
            prev_root: done.prev_root,
            root: done.root,
            seq: done.seq,
            rollback_id: done.rollback_id,
            witness: Arc::new(source),
        }
    }

    /// The root before the commit.
    pub fn prev_root(&self) -> Hash {
        self.prev_root
    }

    /// The root after the commit.
    pub fn root(&self) -> Hash {
        self.root
    }

    /// The commit's sequence number (one more for each commit).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// Where the time of one commit went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommitStats {
    /// Effective changes (writes of new values and deletes of present keys).
    pub changes: usize,
    /// Looking up the old entries of the changed keys.
    pub classify: std::time::Duration,
    /// Updating the trie along the changed paths, and (at the same time) the flat store.
    pub trie: std::time::Duration,
    /// Building the trie page table and giving the new pages their places.
    pub btree: std::time::Duration,
    /// Writing the new pages.
    pub write: std::time::Duration,
    /// Making them durable and writing the meta record.
    pub sync: std::time::Duration,
    /// Pages written (extents counted in pages).
    pub pages_written: u64,
}

/// The writer's bookkeeping: what is free, what waits to become free, where the file ends.
#[derive(Debug)]
pub(crate) struct Space {
    /// Pages free now.
    free: FreeSpace,
    /// Pages freed by commit `seq`, reusable once no reader holds an older state and that
    /// commit is durable.
    pending: Vec<(u64, Vec<(u64, u64)>)>,
    /// Pages in use: the logical end of the file.
    page_count: u64,
    /// The free list as the last meta record has it, and what changed since.
    list: ListState,
    /// The last commit whose meta record is durable.
    durable_seq: u64,
    /// The meta slot (0 or 1) holding the record in force: the next record goes to the other
    /// one. (Not `seq % 2`: commits left unsynced write no record, so the sequence numbers of
    /// consecutive records need not alternate in parity.)
    meta_slot: u64,
    /// Pages the last commit wrote.
    last_commit_pages: u64,
    /// [`crate::Options::space_slack_percent`].
    slack_percent: u64,
}

impl Space {
    /// How many free pages the file may hold before a commit fills short runs instead of
    /// growing the file: [`crate::Options::space_slack_percent`] of the pages in use (half by
    /// default), or three times what the last commit wrote if that is more. Room beyond what
    /// each commit frees is what lets runs of free pages grow long (see [`allocate_pages`]).
    ///
    /// At 2^24 keys, where a 10,000-update commit writes about 10,000 leaves that live for
    /// dozens of commits, the holes those leaves leave are short, and the commit's writes
    /// (one per run of consecutive pages) are what the device spends most of its time on.
    /// Measured there (`bmt bench -w randw -c 24`, each run on a copy of one database):
    /// with a quarter, 16,200 writes per commit, 36,218 updates/s, a file of 1,740 MiB (50
    /// commits; the writes per commit were steady throughout); with half, 13,000 writes,
    /// 44,660/s, 2,126 MiB; with all, 11,500 writes, 47,448/s, 2,740 MiB (160 commits each).
    fn slack(&self) -> u64 {
        let used = self.page_count.saturating_sub(self.free.pages());
        (used.saturating_mul(self.slack_percent) / 100).max(3 * self.last_commit_pages)
    }
}

/// Pages whose content was last written at most this many commits ago are *hot*: they are
/// likely to be replaced by the next commit too (the upper trie, B+tree branches, the pages
/// of a small state).
pub(crate) const HOT_AGE: u64 = 2;

/// Flat-store pages a commit submits at a time while it seals the rest (see
/// [`btree::write_streaming`]).
const FLAT_WRITE_BATCH: usize = 2048;

/// The free space a commit takes its pages from (see [`allocate_pages`]).
struct Allocator<'s> {
    free: &'s mut FreeSpace,
    page_count: &'s mut u64,
    slack: u64,
}

impl Allocator<'_> {
    /// `n` contiguous pages; `hot`: for a hot structure (see [`HOT_AGE`]).
    fn take(&mut self, n: u64, hot: bool) -> u64 {
        allocate_pages(self.free, self.page_count, self.slack, n, hot)
    }
}

/// Trie pages a commit has given places to and sealed: their page-table changes, the pages
/// they replace, and (until submitted) the pages themselves.
#[derive(Default)]
struct PlacedTriePages {
    table_changes: Vec<(Key, Option<[u8; PAGE_REF_SIZE]>)>,
    freed: Vec<(u64, u64)>,
    pages: Vec<(u64, SharedPage)>,
    /// Pages already submitted.
    written: u64,
}

impl PlacedTriePages {
    fn append(&mut self, mut other: PlacedTriePages) {
        self.table_changes.append(&mut other.table_changes);
        self.freed.append(&mut other.freed);
        self.written += other.written;
        if self.pages.is_empty() {
            self.pages = other.pages;
        } else {
            self.pages.append(&mut other.pages);
        }
    }
}

/// Takes `n` contiguous pages for a commit, so that its pages reach the device as a few long
/// writes rather than one write per scattered page:
///
/// - while the file's free pages are fewer than `slack`, from a long free run, continuing the
///   last one, else from the end of the file (the file grows rather than fill short runs);
/// - past that, pages of a hot structure (see [`HOT_AGE`]) still come from a long run if
///   there is one (a commit's hot pages then lie together and come free together at the
///   next commit, as a long run again), other pages from the lowest run of 4 pages or more,
///   else of 2 or more, else any that fits ([`FreeSpace::allocate_short`]: the free space of
///   a state whose commits free random pages is short runs, and single pages taken from the
///   lowest would be written one at a time).
fn allocate_pages(
    free: &mut FreeSpace,
    page_count: &mut u64,
    slack: u64,
    n: u64,
    hot: bool,
) -> u64 {
    let extend = |page_count: &mut u64| {
        let p = *page_count;
        *page_count += n;
        p
    };
    if free.pages() < slack {
        return free.allocate_long(n).unwrap_or_else(|| extend(page_count));
    }
    hot.then(|| free.allocate_long(n))
        .flatten()
        .or_else(|| free.allocate_short(n))
        .unwrap_or_else(|| extend(page_count))
}

/// The persisted free list: a full list, then a journal of changes, one entry per meta record
/// (so that a small commit writes one journal page, not the whole list).
#[derive(Debug, Clone, Default)]
pub(crate) struct ListState {
    full: Option<PageRef>,
    full_pages: Vec<u64>,
    journal: Option<PageRef>,
    journal_pages: Vec<u64>,
    /// Runs no longer free since the last meta record (allocations from the free space).
    removed: Vec<(u64, u64)>,
    /// Runs freed since the last meta record.
    added: Vec<(u64, u64)>,
}

impl ListState {
    /// The pages the list itself takes: its full list and journal pages.
    pub(crate) fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.full_pages.iter().chain(&self.journal_pages).copied()
    }
}

/// The database behind a [`Nomt`] handle, shared with its sessions.
pub(crate) struct Inner {
    path: PathBuf,
    options: Options,
    pub(crate) pager: Pager,
    pub(crate) hasher: Arc<dyn ValueHasher>,
    pub(crate) trie_shape: trie::Shape,
    current: RwLock<Arc<Version>>,
    /// Versions handed to readers, to know which freed pages are still in use.
    history: Mutex<Vec<Arc<Version>>>,
    /// Staged changes of the handle (see [`crate::staged`]).
    pub(crate) overlay: Staged,
    pub(crate) writer: Mutex<Space>,
    last_commit: Mutex<CommitStats>,
    /// The sequence number of an incomplete one-sync commit that open passed over.
    discarded_at_open: Option<u64>,
    closed: AtomicBool,
    lock: Mutex<Option<Box<dyn DirLock>>>,
    /// The rollback log, when enabled.
    pub(crate) log: Mutex<Option<RollbackLog>>,
    /// The write-ahead log of small commits (see [`crate::wal`]), and the records open found
    /// in it, to be committed again.
    wal: Mutex<Option<Wal>>,
    wal_replay: Mutex<Vec<WalRecord>>,
    /// Counters.
    pub(crate) metrics: Metrics,
    /// Whether a write session is open.
    pub(crate) writer_active: AtomicBool,
    /// Reads ahead the pages of written keys (when `Options::warm_up` is on).
    pub(crate) warm: WarmUp,
    /// Reads the data file into the cache after open (when `Options::preload` is on).
    pub(crate) preload: Preload,
}

/// Changes to keys (`None`: a delete), in key order.
pub(crate) type Changes = BTreeMap<Key, Option<Vec<u8>>>;

/// What a commit does to the rollback log.
#[derive(Debug, Clone, Copy)]
enum LogAction {
    /// Append the commit's reverse delta (when the log is enabled).
    Append,
    /// Drop the `n` newest deltas: the commit is their rollback, and must give `root`.
    Pop { n: u32, root: Hash },
}

impl Inner {
    /// Opens (or creates) the database described by `options`.
    ///
    /// Opening reads the two meta records and takes the newer valid one: no part of the data
    /// is scanned. A second open of the same directory, from this process or another, fails
    /// with [`Error::Locked`] while the first handle is open.
    fn open(options: Options) -> Result<Inner> {
        let storage: Arc<dyn Storage> = options.storage.clone();
        let path = options.path.clone();
        let io_err = |source| Error::Io {
            path: path.clone(),
            source,
        };
        if !storage.exists(&path).map_err(io_err)? {
            if !options.create_if_missing {
                return Err(Error::InvalidPath {
                    path: path.clone(),
                    why: "no database here (and create_if_missing is off)".into(),
                });
            }
            storage.create_dir_all(&path).map_err(io_err)?;
        }
        let lock = storage
            .try_lock(&path)
            .map_err(io_err)?
            .ok_or_else(|| Error::Locked(path.clone()))?;
        let data_path = path.join(DATA_FILE);
        let existed = storage.exists(&data_path).map_err(io_err)?;
        let file = storage
            .open(&data_path, true, true)
            .map_err(|source| Error::Io {
                path: data_path.clone(),
                source,
            })?;
        let poisoned = Arc::new(AtomicBool::new(false));
        let pager = Pager::new(file, &data_path, options.page_cache_bytes, poisoned);
        let file_pages = pager.file_pages()?;
        let hasher = options.value_hasher.clone();
        let mut discarded_at_open = None;
        let meta = if !existed || file_pages == 0 {
            None
        } else {
            let log_dir = options
                .rollback_dir
                .clone()
                .unwrap_or_else(|| path.join("rollback"));
            // The records a meta record carries are put back in the log before its own
            // record is checked.
            let log_complete = |one: &OneSync| -> Result<bool> {
                if let Some(carried) = &one.carried {
                    crate::rollback::restore_carried(&*storage, &log_dir, carried)?;
                }
                match &one.log_record {
                    Some(r) => crate::rollback::record_is_intact(&*storage, &log_dir, r),
                    None => Ok(true),
                }
            };
            match recover_meta(&pager, &log_complete) {
                Ok((m, slot, discarded)) => {
                    discarded_at_open = discarded;
                    Some((m, slot))
                }
                // The database's creation never completed (it failed, or the power went,
                // before both meta slots were durable): nothing was ever committed, since any
                // commit with changes writes past the two meta pages. Start afresh.
                Err(Error::Corrupted { .. }) if file_pages <= 2 => None,
                Err(e) => return Err(e),
            }
        };
        let fresh = meta.is_none();
        let (meta, meta_slot) = match meta {
            Some(m) => m,
            None => {
                debug_assert!(fresh);
                let m = Meta {
                    seq: 0,
                    root: Hash::ZERO,
                    flat_root: None,
                    pt_root: None,
                    freelist: None,
                    journal: None,
                    journal_len: 0,
                    page_count: 2,
                    key_count: 0,
                    elide_below: options.elide_below,
                    top_levels: trie::Shape::top_levels_for(
                        options.expected_keys,
                        options.page_cache_bytes,
                        options.elide_below,
                    ),
                    hasher: hasher.name().to_string(),
                    rollback: [0; 48],
                    one_sync: None,
                };
                // Both slots hold a valid record from the start.
                pager.write_uncached(0, &m.encode(0))?;
                let mut m1 = m.clone();
                m1.seq = 1;
                pager.write_uncached(1, &m1.encode(1))?;
                pager.sync()?;
                storage.sync_dir(&path).map_err(io_err)?;
                (m1, 1)
            }
        };
        if meta.hasher != hasher.name() {
            return Err(Error::IncompatibleOptions {
                what: "value hasher",
                stored: meta.hasher.clone(),
                given: hasher.name().to_string(),
            });
        }
        let (free, list) = load_free_list(&pager, &meta)?;
        let log = if options.rollback {
            let state = LogState::decode(&meta.rollback);
            Some(RollbackLog::open(
                storage.clone(),
                LogOptions {
                    retained: options.rollback_retained,
                    memory_commits: options.rollback_memory_commits,
                    memory_bytes: options.rollback_memory_bytes,
                    segment_size: options.rollback_segment_size,
                    dir: options
                        .rollback_dir
                        .clone()
                        .unwrap_or_else(|| path.join("rollback")),
                },
                state,
            )?)
        } else {
            None
        };
        // The write-ahead log, also when it is off now: a log left by a crash holds
        // acknowledged commits. (A new database has none: records of a database whose data
        // file was removed are dropped.) Not created where no commit would use it.
        let wal_path = path.join(wal::WAL_FILE);
        let wanted = options.write_ahead_log && options.durable_commits;
        let (wal, mut wal_replay) = if wanted || storage.exists(&wal_path).map_err(io_err)? {
            let (wal, records) =
                Wal::open(&*storage, &path, options.wal_size, meta.seq, meta.root)?;
            (Some(wal), records)
        } else {
            (None, Vec::new())
        };
        if fresh {
            wal_replay.clear();
        }
        let version = Arc::new(Version {
            seq: meta.seq,
            root: meta.root,
            key_count: meta.key_count,
            flat_root: meta.flat_root,
            pt_root: meta.pt_root,
        });
        let slack_percent = u64::from(options.space_slack_percent);
        Ok(Inner {
            wal: Mutex::new(wal),
            wal_replay: Mutex::new(wal_replay),
            path,
            trie_shape: meta.trie_shape(),
            options,
            pager,
            hasher,
            current: RwLock::new(version.clone()),
            history: Mutex::new(vec![version]),
            overlay: Staged::default(),
            writer: Mutex::new(Space {
                free,
                pending: Vec::new(),
                page_count: meta.page_count,
                list,
                durable_seq: meta.seq,
                meta_slot,
                last_commit_pages: 0,
                slack_percent,
            }),
            last_commit: Mutex::new(CommitStats::default()),
            discarded_at_open,
            closed: AtomicBool::new(false),
            lock: Mutex::new(Some(lock)),
            log: Mutex::new(log),
            metrics: Metrics::default(),
            writer_active: AtomicBool::new(false),
            warm: WarmUp::default(),
            preload: Preload::default(),
        })
    }

    pub(crate) fn check_usable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.pager.check_poisoned()
    }

    /// The state committed last: the version readers start from.
    pub(crate) fn version(&self) -> Arc<Version> {
        self.current.read().clone()
    }

    /// The root of the last committed state.
    pub fn root(&self) -> Hash {
        self.current.read().root
    }

    /// The number of keys in the last committed state.
    pub fn key_count(&self) -> u64 {
        self.current.read().key_count
    }

    /// Stages a write of `value` under `key`, seen by [`Nomt::get`] at once and applied to
    /// disk by the next [`Nomt::commit`].
    pub fn insert(&self, key: impl IntoKey, value: impl AsRef<[u8]>) -> Result<()> {
        let key = key.into_key()?;
        let value = value.as_ref();
        self.check_value(value)?;
        self.check_handle_writes()?;
        self.metrics.write();
        self.overlay.insert(key, Some(value.to_vec()));
        self.warm.hint(key);
        Ok(())
    }

    /// A value longer than the database accepts is an error.
    pub(crate) fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.options.max_value_size {
            return Err(Error::ValueTooLarge {
                len: value.len() as u64,
                max: self.options.max_value_size as u64,
            });
        }
        Ok(())
    }

    /// The handle's own writes wait for no one: they fail while a write session is open.
    fn check_handle_writes(&self) -> Result<()> {
        self.check_usable()?;
        if self.writer_active.load(Ordering::Acquire) {
            return Err(Error::WriterBusy("a write session is open"));
        }
        Ok(())
    }

    /// Stages a delete of `key` (deleting an absent key is not an error).
    pub fn delete(&self, key: impl IntoKey) -> Result<()> {
        let key = key.into_key()?;
        self.check_handle_writes()?;
        self.metrics.write();
        self.overlay.insert(key, None);
        self.warm.hint(key);
        Ok(())
    }

    /// The value of `key`: staged changes first, then the committed state.
    pub fn get(&self, key: impl IntoKey) -> Result<Option<Vec<u8>>> {
        let key = key.into_key()?;
        self.check_usable()?;
        if let Some(staged) = self.overlay.get(&key) {
            self.metrics.read(true);
            return Ok(staged);
        }
        self.metrics.read(false);
        let version = self.version();
        self.get_committed(&version, &key)
    }

    pub(crate) fn get_committed(&self, version: &Version, key: &Key) -> Result<Option<Vec<u8>>> {
        // An inline value is copied out of the cached leaf; an overflow value is read after.
        let found = btree::get_with(&self.pager, version.flat_root, key, |payload| {
            self.decode_entry(payload).map(|entry| match entry {
                Entry::Inline { value, .. } => Ok(value.to_vec()),
                Entry::Overflow(o) => Err(o),
            })
        })?;
        match found.transpose()? {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value)),
            Some(Err(overflow)) => Ok(Some(self.entry_value(&Entry::Overflow(overflow))?)),
        }
    }

    pub(crate) fn decode_entry<'p>(&self, payload: &'p [u8]) -> Result<Entry<'p>> {
        flat::decode(payload).map_err(|e| self.pager.corrupted(0, format!("flat entry: {e}")))
    }

    fn entry_value(&self, entry: &Entry<'_>) -> Result<Vec<u8>> {
        match entry {
            Entry::Inline { value, .. } => Ok(value.to_vec()),
            Entry::Overflow(o) => {
                let extent = self
                    .pager
                    .read_extent(o.pgno, o.pages, PageKind::Overflow, o.crc)?;
                flat::extent_value(crate::page::extent_bytes(&extent), o)
                    .map_err(|e| self.pager.corrupted(o.pgno, e))
            }
        }
    }

    /// A proof of `key`'s committed value (or absence) against [`Nomt::root`].
    pub fn generate_proof(&self, key: impl IntoKey) -> Result<MerkleProof> {
        let key = key.into_key()?;
        self.check_usable()?;
        let version = self.version();
        let src = Snapshot {
            db: self,
            version: &version,
            hints: None,
        };
        trie::prove(
            &src,
            self.trie_shape,
            NodeKind::root(version.root, version.key_count),
            version.key_count,
            &key,
        )
    }

    /// Where the time of the last successful commit went.
    pub fn last_commit_stats(&self) -> CommitStats {
        *self.last_commit.lock()
    }

    /// Applies every staged change to disk, atomically, and returns the new root.
    ///
    /// The commit is durable when this returns (unless `durable_commits(false)`). If it
    /// fails, the database stays at its previous root and the staged changes are kept; an
    /// I/O failure also poisons the handle, and reopening recovers the last durable commit
    /// (the failed one too, if its meta record was already durable).
    pub fn commit(self: &Arc<Self>) -> Result<FinishedSession> {
        self.check_handle_writes()?;
        let staged = self.overlay.take();
        let mut sorted: Vec<(Key, Option<Vec<u8>>)> = staged.into_iter().collect();
        if sorted.len() >= PARALLEL_MIN {
            use rayon::slice::ParallelSliceMut;
            sorted.par_sort_unstable_by_key(|(k, _)| *k);
        } else {
            sorted.sort_unstable_by_key(|(k, _)| *k);
        }
        // (Already sorted: the map is built without comparing again.)
        let changes: Changes = sorted.into_iter().collect();
        match self.commit_with(&changes, LogAction::Append) {
            Ok((done, base)) => Ok(self.finished(done, base, changes)),
            Err(e) => {
                // Give the changes back, under anything staged since.
                self.overlay.give_back(changes);
                Err(e)
            }
        }
    }

    /// Commits `changes` with the writer held; a failure gives back the pages it took and
    /// leaves the rollback log as it was. Returns the state it started from too.
    fn commit_with(
        &self,
        changes: &BTreeMap<Key, Option<Vec<u8>>>,
        action: LogAction,
    ) -> Result<(Committed, Arc<Version>)> {
        self.commit_with_mode(changes, action, false)
    }

    /// [`Inner::commit_with`]; `replay` for a commit of the write-ahead log replayed at open,
    /// which is neither logged again nor made durable by itself (open checkpoints after the
    /// last one).
    fn commit_with_mode(
        &self,
        changes: &BTreeMap<Key, Option<Vec<u8>>>,
        action: LogAction,
        replay: bool,
    ) -> Result<(Committed, Arc<Version>)> {
        let started = std::time::Instant::now();
        let mut space = self.writer.lock();
        // The warm-up thread's hints so far are for these changes, which the commit reads.
        self.warm.commit_started();
        let page_count = space.page_count;
        let base = self.version();
        match self.commit_changes(&mut space, changes, action, &base, replay) {
            Ok(done) => {
                self.metrics.commit(started.elapsed());
                Ok((done, base))
            }
            Err(e) => {
                // Any I/O error stops the handle (the rollback log's included).
                if matches!(e, Error::Io { .. }) {
                    self.pager.poison();
                }
                // Undo the writer's bookkeeping, unless the commit was published (it failed
                // after its commit point, and stands).
                if self.version().seq == base.seq {
                    for (start, len) in space.free.take_allocated() {
                        space.free.free(start, len);
                    }
                    space.page_count = page_count;
                    if let Some(log) = self.log.lock().as_mut() {
                        log.reject();
                    }
                }
                self.metrics.failed_commit();
                Err(e)
            }
        }
    }

    /// Commits a prepared session's changes, if the database is still at the root they were
    /// prepared on.
    pub(crate) fn commit_layer(&self, layer: &Layer) -> Result<(Committed, Arc<Version>)> {
        self.check_handle_writes()?;
        let root = self.root();
        if root != layer.prev_root {
            return Err(Error::Stale {
                expected: layer.prev_root,
                actual: root,
            });
        }
        self.commit_with(&layer.flat, LogAction::Append)
    }

    /// Undoes the last `n` commits: their rollback deltas, merged, are applied as one commit,
    /// whose root is the root before the first of them. Asking for more than the log holds
    /// changes nothing ([`Error::RollbackWindow`]).
    pub fn rollback_n(self: &Arc<Self>, n: u32) -> Result<FinishedSession> {
        self.check_handle_writes()?;
        if n == 0 {
            return Err(Error::RollbackWindow {
                requested: 0,
                available: self.log.lock().as_ref().map_or(0, |l| l.len()),
            });
        }
        let deltas = {
            let mut log = self.log.lock();
            let log = log.as_mut().ok_or(Error::RollbackDisabled)?;
            log.newest(n)?
        };
        let mut expected = self.root();
        for d in &deltas {
            if d.root != expected {
                return Err(Error::Corrupted {
                    path: self.path.join("rollback"),
                    offset: 0,
                    what: format!("delta of commit {} does not follow the state", d.seq),
                });
            }
            expected = d.prev_root;
        }
        // Older deltas override newer ones: the value before the oldest commit wins. Sorted
        // once (stable, newest first, so an older value comes after a newer one of the same
        // key and is the one kept), then built in bulk rather than inserted key by key.
        let mut all: Vec<(Key, Option<Vec<u8>>)> = deltas
            .iter()
            .flat_map(|d| d.entries.iter().cloned())
            .collect();
        all.sort_by_key(|(k, _)| *k);
        let mut kept: Vec<(Key, Option<Vec<u8>>)> = Vec::with_capacity(all.len());
        for (k, v) in all {
            match kept.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => kept.push((k, v)),
            }
        }
        let changes: BTreeMap<Key, Option<Vec<u8>>> = kept.into_iter().collect();
        let (done, base) = self.commit_with(&changes, LogAction::Pop { n, root: expected })?;
        self.metrics.rollback();
        Ok(self.finished(done, base, changes))
    }

    /// The session of a commit of `changes` made on the handle (no reads recorded) from
    /// `base`: it keeps `base` so that it can prove its transition.
    fn finished(
        self: &Arc<Self>,
        done: Committed,
        base: Arc<Version>,
        changes: BTreeMap<Key, Option<Vec<u8>>>,
    ) -> FinishedSession {
        FinishedSession::new(
            done,
            WitnessSource {
                db: self.clone(),
                view: View::of(base),
                reads: Changes::new(),
                writes: Arc::new(changes),
            },
        )
    }

    /// The changes that lead from the current state back to `root` (a root within the
    /// rollback window).
    pub(crate) fn changes_back_to(&self, root: Hash) -> Result<BTreeMap<Key, Option<Vec<u8>>>> {
        let mut log = self.log.lock();
        let log = log.as_mut().ok_or(Error::UnknownRoot(root))?;
        let deltas = log.newest(log.len())?;
        let mut changes = BTreeMap::new();
        for d in &deltas {
            for (k, v) in &d.entries {
                changes.insert(*k, v.clone());
            }
            if d.prev_root == root {
                return Ok(changes);
            }
        }
        Err(Error::UnknownRoot(root))
    }

    fn commit_changes(
        &self,
        space: &mut Space,
        changes: &BTreeMap<Key, Option<Vec<u8>>>,
        action: LogAction,
        base: &Arc<Version>,
        replay: bool,
    ) -> Result<Committed> {
        let seq = base.seq + 1;
        let logging = self.options.rollback;
        let durable = self.options.durable_commits && !replay;
        // A small durable commit is made durable by the write-ahead log, its pages kept in
        // memory until a checkpoint; the log's pages and commits are bounded, and a full log
        // checkpoints first. A commit made durable in place writes the kept pages with its
        // own.
        let logged = durable && self.wal_takes(changes, action);
        if logged && base.seq > space.durable_seq {
            let full = self.pager.deferred_count() >= WAL_MAX_DEFERRED_PAGES
                || base.seq - space.durable_seq >= WAL_MAX_COMMITS
                || !self
                    .wal
                    .lock()
                    .as_ref()
                    .is_some_and(|w| w.has_room(wal::record_len(changes)));
            if full {
                self.checkpoint(space, base)?;
            }
        }
        let released = self.release_pending(space, base);
        let mut stats = CommitStats::default();
        let mut clock = std::time::Instant::now();
        let mut lap = |slot: &mut std::time::Duration| {
            let now = std::time::Instant::now();
            *slot = now - clock;
            clock = now;
        };
        let keys: Vec<Key> = changes.keys().copied().collect();
        // Where the stored trie pages on the changed paths are (the page table), then, side by
        // side, those pages read ahead and one walk of the flat store for the old entries of
        // the changed keys and the leaves of the elided subtries around them: both read many
        // pages at a time. (Not side by side for a few keys: waking a second thread costs
        // more than a warm cache's lookups; measured, single-update p50 0.72 against 0.57 ms.)
        let paths = self.trie_paths(base, &keys)?;
        let (walked, trie_pages) = join(
            changes.len(),
            || -> Result<btree::Walked> {
                let walk = |keys: &[Key], also: &[Key]| {
                    btree::walk_for_commit(&self.pager, base.flat_root, keys, also)
                };
                if keys.len() < PARALLEL_MIN {
                    return walk(&keys, &paths.range_ends);
                }
                // Two walks side by side, of the keys before and after the middle one.
                let half = keys.len() / 2;
                let pivot = keys[half];
                let split = paths.range_ends.partition_point(|k| *k < pivot);
                let (first, second) = rayon::join(
                    || walk(&keys[..half], &paths.range_ends[..split]),
                    || walk(&keys[half..], &paths.range_ends[split..]),
                );
                let mut walked = first?;
                walked.append(second?);
                Ok(walked)
            },
            || {
                self.pager
                    .read_many(&paths.refs, (PageKind::Trie, PageKind::Trie), |_, p| {
                        trie::validate_page(p)
                    })
            },
        );
        let btree::Walked {
            payloads: olds,
            leaves,
            memo,
        } = walked?;
        let stored = paths
            .ids
            .iter()
            .zip(paths.refs.iter().zip(trie_pages?))
            .map(|(id, (r, page))| {
                trie::levels_match(&page, id).map_err(|e| self.pager.corrupted(r.pgno, e))?;
                Ok((*id, (*r, page)))
            })
            .collect::<Result<_>>()?;
        let hints = CommitHints { stored, leaves };
        let src = Snapshot {
            db: self,
            version: base,
            hints: Some(&hints),
        };
        // Classify the changes against the committed state, in two halves side by side.
        let reverse_wanted = logging && matches!(action, LogAction::Append);
        let entries: Vec<(&Key, &Option<Vec<u8>>)> = changes.iter().collect();
        let half = entries.len().div_ceil(2);
        let (first, second) = join(
            changes.len(),
            || self.classify(&entries[..half], &olds[..half], reverse_wanted),
            || self.classify(&entries[half..], &olds[half..], reverse_wanted),
        );
        let (mut classified, second) = (first?, second?);
        classified.append(second);
        let Classified {
            mut reverse,
            trie: trie_changes,
            keys: flat_keys,
            olds: flat_olds,
            payloads: new_payloads,
            mut freed,
            delta,
        } = classified;
        let key_count = base.key_count as i64 + delta;
        let mut large: Vec<(Key, &[u8])> = Vec::new();
        for (key, p) in flat_keys.iter().zip(&new_payloads) {
            if let NewPayload::Large(v) = p {
                large.push((*key, v));
            }
        }

        stats.changes = trie_changes.len();
        lap(&mut stats.classify);

        // From here on, pages are allocated; work on a copy of the free space so that a
        // failure leaves the writer's state as it was.
        // Pages come from the free space, which logs what it hands out: a failed commit gives
        // them back (see `commit`).
        // (Under a lock: the trie's pages are given their places while the flat store's are.)
        let alloc = Mutex::new(Allocator {
            slack: space.slack(),
            free: &mut space.free,
            page_count: &mut space.page_count,
        });
        let alloc_run = |n: u64, hot: bool| -> u64 { alloc.lock().take(n, hot) };
        let writes = WriteBatch::new();
        // If the commit fails from here on, its writes in flight must end before a later
        // commit can reuse their pages.
        let _settle = Settle(&self.pager, writes.clone());
        // A logged commit's pages are kept, not written (and dropped if it fails).
        let deferred = Deferral {
            pager: &self.pager,
            pages: Mutex::new(Vec::new()),
            done: AtomicBool::new(false),
        };
        let submit = |pages: Vec<(u64, SharedPage)>| {
            if logged {
                deferred.pages.lock().extend(pages.iter().map(|(p, _)| *p));
                self.pager.defer_pages(pages);
            } else {
                self.pager.submit_pages(pages, &writes);
            }
        };
        // What this commit writes, for a one-sync meta record; a commit made durable in place
        // also writes the pages of logged commits before it.
        self.pager.record_writes();
        let flushed = if durable && !logged {
            let oldest = self.oldest_reader(base);
            self.pager.flush_deferred(&writes, oldest)
        } else {
            0
        };

        // Values stored out of line: their writes start now.
        let mut large_payloads = Vec::with_capacity(large.len());
        for (_, v) in &large {
            let pages = flat::extent_pages(v.len());
            let pgno = alloc_run(pages, false);
            let (extent, crc) = flat::build_extent(v, seq, pgno);
            stats.pages_written += pages;
            self.pager.submit_extent(pgno, Arc::new(extent), &writes);
            large_payloads.push(flat::encode_overflow(&flat::OverflowRef {
                hash: self.hasher.hash_value(v),
                len: v.len() as u64,
                pgno,
                pages,
                crc,
            }));
        }
        let mut large_iter = large_payloads.iter();
        let flat_changes: Vec<(Key, Option<&[u8]>)> = flat_keys
            .iter()
            .zip(&new_payloads)
            .map(|(key, p)| {
                let payload = match p {
                    NewPayload::Delete => None,
                    NewPayload::Inline(bytes) => Some(bytes.as_slice()),
                    NewPayload::Large(_) => large_iter.next().map(|p| p.as_slice()),
                };
                (*key, payload)
            })
            .collect();

        // Trie pages: given their places in page-id order, sealed, and written (or kept).
        let place_trie_pages =
            |mut pages: Vec<(PageId, Option<trie::TriePage>, Option<PageRef>)>,
             parallel: bool|
             -> PlacedTriePages {
                pages.sort_unstable_by_key(|(id, ..)| *id);
                let mut placed = PlacedTriePages::default();
                let mut new_pages: Vec<(Key, u64, Box<PageBuf>)> = Vec::with_capacity(pages.len());
                {
                    let mut alloc = alloc.lock();
                    for (id, page, old) in pages {
                        if let Some(old) = old {
                            placed.freed.push((old.pgno, 1));
                        }
                        match page {
                            Some(p) => {
                                let page = p.into_page();
                                // (Until sealed, the page's header holds the commit that wrote its
                                // last version; zero for a new page.)
                                let hot = seq.saturating_sub(page.seq()) <= HOT_AGE;
                                new_pages.push((id.table_key(), alloc.take(1, hot), page));
                            }
                            None => placed.table_changes.push((id.table_key(), None)),
                        }
                    }
                }
                let seal = |(key, pgno, mut buf): (Key, u64, Box<PageBuf>)| {
                    let crc = trie::seal_page(&mut buf, seq, pgno);
                    let mut r = [0u8; PAGE_REF_SIZE];
                    PageRef { pgno, crc }.encode(&mut r);
                    ((key, Some(r)), (pgno, SharedPage::new(buf)))
                };
                let sealed: Vec<_> = if parallel && new_pages.len() >= PARALLEL_MIN {
                    use rayon::prelude::*;
                    new_pages.into_par_iter().map(seal).collect()
                } else {
                    new_pages.into_iter().map(seal).collect()
                };
                for (change, page) in sealed {
                    placed.table_changes.push(change);
                    placed.pages.push(page);
                }
                placed
            };
        // The pages of each subtrie below the top page, written as soon as it is done, while
        // the other subtries are still being updated (at 2^20 keys the trie's pages are
        // otherwise the last writes of a 10,000-update commit, and it waits for them).
        let streamed = Mutex::new(PlacedTriePages::default());
        let sink = |pages: Vec<(PageId, Option<trie::TriePage>, Option<PageRef>)>| -> Result<()> {
            let mut placed = place_trie_pages(pages, false);
            self.pager.demote_cached(&placed.freed);
            placed.written += placed.pages.len() as u64;
            submit(std::mem::take(&mut placed.pages));
            streamed.lock().append(placed);
            Ok(())
        };

        // The trie along the changed paths and the flat store, side by side: both read only
        // the committed state.
        // The flat store's new pages are written as soon as they have page numbers.
        let (delta, flat) = join(
            changes.len(),
            || {
                trie::Update::run(
                    &src,
                    self.trie_shape,
                    NodeKind::root(base.root, base.key_count),
                    base.key_count,
                    &trie_changes,
                    Some(&sink),
                )
            },
            || -> Result<(Option<PageRef>, Vec<u64>, u64)> {
                let flat = btree::update_with(
                    &self.pager,
                    Some(&memo),
                    Some(&flat_olds),
                    base.flat_root,
                    &flat_changes,
                )?;
                let replaced: Vec<(u64, u64)> = flat.freed.iter().map(|p| (*p, 1)).collect();
                self.pager.demote_cached(&replaced);
                // Written as they are sealed, a few thousand at a time.
                let mut written = 0u64;
                let root = btree::write_streaming(
                    flat.root,
                    seq,
                    &mut |hot| alloc_run(1, hot),
                    FLAT_WRITE_BATCH,
                    &mut |pages| {
                        written += pages.len() as u64;
                        submit(pages);
                    },
                );
                // While the trie is still being updated (the flat store is done first): the old
                // copies of the pages freed when the commit began. Nothing this commit reads is
                // among them, and a page it wrote again is kept (see the pager). (If the commit
                // fails before this, they stay cached: harmless, as above.)
                self.pager.forget_cached_before(&released, seq);
                Ok((root, flat.freed, written))
            },
        );
        let (delta, (flat_root, flat_freed, flat_written)) = (delta?, flat?);
        let new_root = delta.root.hash();
        if let LogAction::Pop { root, .. } = action
            && new_root != root
        {
            return Err(Error::Corrupted {
                path: self.path.join("rollback"),
                offset: 0,
                what: format!("rolling back gives root {new_root}, not {root}"),
            });
        }
        freed.extend(flat_freed.iter().map(|p| (*p, 1)));
        stats.pages_written += flat_written;
        lap(&mut stats.trie);

        // The trie's other pages (the top page's, or all of a small commit's), then the page
        // table that finds them all.
        let mut placed = streamed.into_inner();
        stats.pages_written += placed.written;
        placed.append(place_trie_pages(delta.pages, true));
        let PlacedTriePages {
            mut table_changes,
            freed: trie_freed,
            pages: mut out_pages,
            ..
        } = placed;
        freed.extend(trie_freed);
        let mut alloc_one = |hot: bool| alloc_run(1, hot);
        table_changes.sort_by_key(|(k, _)| *k);
        let table_list: Vec<btree::Change<'_>> = table_changes
            .iter()
            .map(|(k, v)| (*k, v.as_ref().map(|r| &r[..])))
            .collect();
        let table = btree::update_with(
            &self.pager,
            Some(&paths.table_memo),
            None,
            base.pt_root,
            &table_list,
        )?;
        freed.extend(table.freed.iter().map(|p| (*p, 1)));
        let pt_root = btree::write(table.root, seq, &mut alloc_one, &mut out_pages);

        let version = Version {
            seq,
            root: new_root,
            key_count: key_count.max(0) as u64,
            flat_root,
            pt_root,
        };

        stats.pages_written += out_pages.len() as u64;
        submit(out_pages);

        // The rollback log: this commit's delta appended, or the rolled-back ones dropped.
        let log_state = {
            let mut log = self.log.lock();
            match (log.as_mut(), action) {
                (Some(log), LogAction::Append) => log
                    .propose_append(Arc::new(ReverseDelta {
                        seq,
                        prev_root: base.root,
                        root: new_root,
                        entries: std::mem::take(&mut reverse),
                    }))?
                    .encode(),
                (Some(log), LogAction::Pop { n, .. }) => log.propose_pop(n)?.encode(),
                (None, _) => [0; 48],
            }
        };

        // The free list of the new state goes with the same writes when the commit is made
        // durable now.
        let mut list = space.list.clone();
        list.removed.extend(space.free.take_allocated());
        list.added.extend(freed.iter().copied());
        let freed_by_logged = logged.then(|| freed.clone());
        let mut pending = space.pending.clone();
        pending.push((seq, freed));
        // Made durable now, in place (not by the write-ahead log, nor left unsynced).
        let in_place = durable && !logged;
        if in_place {
            let pages = self.prepare_list(
                seq,
                &mut space.free,
                &mut space.page_count,
                &mut pending,
                &mut list,
            );
            self.pager.submit_pages(pages, &writes);
        }
        lap(&mut stats.btree);

        // A small commit lists what it wrote in its meta record, which goes with its pages,
        // and syncs once.
        let written = self.pager.take_written();
        let meta = in_place.then(|| {
            // Not with pages of logged commits: some may be dead in this commit's state (it
            // replaced them), free to reuse once it is durable, and a record listing them
            // would stop being complete when they are reused. Such a commit syncs twice.
            let one_sync = written
                .filter(|w| flushed == 0 && w.len() <= ONE_SYNC_MAX_WRITTEN)
                .map(|written| {
                    let log = self.log.lock();
                    let log = log.as_ref();
                    // The log's unsynced records ride in the meta record if they fit.
                    let room = crate::meta::carry_room(written.len());
                    OneSync {
                        log_record: log.and_then(|l| l.proposed_record()),
                        carried: log.and_then(|l| l.carry(room)),
                        written,
                    }
                });
            self.meta_of(&version, space.page_count, &list, log_state, one_sync)
        });
        if let Some(meta) = meta.as_ref().filter(|m| m.one_sync.is_some()) {
            // Open checks only the log record a one-sync record names, or those it carries:
            // if this one carries none, every record before it must be durable before it can
            // reach the disk (the log's sync runs while the pages are being written).
            if meta.one_sync.as_ref().is_some_and(|o| o.carried.is_none())
                && let Some(log) = self.log.lock().as_mut()
            {
                log.sync()?;
            }
            self.pager.submit_meta(
                1 - space.meta_slot,
                meta.encode(1 - space.meta_slot),
                &writes,
            );
        }
        // Wait for every write, then make them durable (with the meta record), or append the
        // commit to the write-ahead log and sync that.
        self.pager.wait(&writes)?;
        // The cached copies of the pages this commit replaced. Nothing reads them but readers
        // of older states, which find them on the device or deferred, now that the writes
        // are done (not before: a deferred page this commit writes is in neither place while
        // its write is in flight). Left cached until they are released, at the next commit,
        // they would crowd out the pages the next block reads (a trie page starts with a
        // high use count).
        for (_, freed) in pending.iter().filter(|(s, _)| *s == seq) {
            self.pager.forget_cached_before(freed, seq);
        }
        lap(&mut stats.write);
        if let Some(meta) = &meta {
            self.finish_meta(meta, 1 - space.meta_slot)?;
            space.durable_seq = seq;
            space.meta_slot = 1 - space.meta_slot;
            if let Some(wal) = self.wal.lock().as_mut() {
                wal.restart(seq);
            }
        }
        if logged {
            let mut wal = self.wal.lock();
            let wal = wal.as_mut().ok_or(Error::Poisoned)?;
            wal.append(seq, base.root, new_root, changes)?;
        }
        deferred.done.store(true, Ordering::Relaxed);
        if let Some(freed) = freed_by_logged {
            self.pager.deferred_freed(&freed, seq);
        }
        lap(&mut stats.sync);
        space.last_commit_pages = stats.pages_written;
        *self.last_commit.lock() = stats;

        // The commit happened: publish it. Nothing below may undo it.
        let mut prune = Ok(());
        if let Some(log) = self.log.lock().as_mut() {
            log.accept();
            if in_place {
                prune = log.delete_before(log.state());
            }
        }
        space.pending = pending;
        space.list = list;
        let version = Arc::new(version);
        *self.current.write() = version.clone();
        self.history.lock().push(version);
        // Old log segments that could not be removed: the commit stands, but the handle stops
        // here like after any I/O error (the segments are removed at the next open).
        if let Err(e) = prune {
            self.pager.poison();
            return Err(e);
        }
        Ok(Committed {
            prev_root: base.root,
            root: new_root,
            seq,
            rollback_id: (logging && matches!(action, LogAction::Append)).then_some(seq),
        })
    }

    /// The effective changes among `entries` (key, new value) given their old entries `olds`:
    /// writes of the value already there and deletes of absent keys are dropped.
    fn classify<'c>(
        &self,
        entries: &[(&Key, &'c Option<Vec<u8>>)],
        olds: &[Option<btree::Payload>],
        reverse_wanted: bool,
    ) -> Result<Classified<'c>> {
        let mut out = Classified::default();
        // The changed keys' leaves, hashed together at the end.
        let mut leaves = Vec::new();
        for ((key, new), old) in entries.iter().zip(olds) {
            let old_entry = old
                .as_ref()
                .map(|p| self.decode_entry(p.bytes()))
                .transpose()?;
            let old_leaf = old_entry.as_ref().map(Entry::leaf_value);
            let new_leaf = new.as_ref().map(|v| LeafValue::new(v, &*self.hasher));
            if old_leaf == new_leaf {
                continue;
            }
            if let Some(Entry::Overflow(o)) = &old_entry {
                out.freed.push((o.pgno, o.pages));
            }
            if reverse_wanted {
                let prior = old_entry
                    .as_ref()
                    .map(|e| self.entry_value(e))
                    .transpose()?;
                out.reverse.push((**key, prior));
            }
            leaves.push((**key, old_leaf.is_some(), new_leaf));
            out.payloads.push(match new {
                None => NewPayload::Delete,
                Some(v) if v.len() <= flat::INLINE_MAX => {
                    NewPayload::Inline(flat::encode_inline(v, &*self.hasher))
                }
                Some(v) => NewPayload::Large(v),
            });
            out.keys.push(**key);
            out.olds.push(old.as_ref().and_then(btree::Payload::at));
        }
        out.trie = TrieChange::between_many(&leaves);
        out.delta = out.trie.iter().map(|c| c.delta).sum();
        Ok(out)
    }

    /// Plans the preload's next chunk (see [`crate::preload`]): up to `max` pages from `next`,
    /// below `end` (the file's pages when the preload began: it does not chase a growing
    /// file), the pages in use and the file's length. `None` when none are left or the
    /// handle is closed or poisoned.
    ///
    /// The chunk is then read without the writer's lock, so that commits need not wait for
    /// the device, and cached by [`Inner::preload_cache`] under it. Here no write is in
    /// flight (a commit or checkpoint waits for its writes before it lets go of the lock), so
    /// if no write is submitted by then, the bytes read are the file's current ones.
    pub(crate) fn preload_plan(
        &self,
        next: u64,
        end: u64,
        max: usize,
    ) -> Result<Option<PreloadChunk>> {
        let space = self.writer.lock();
        if self.check_usable().is_err() {
            return Ok(None);
        }
        // Pages of logged commits may lie past the end of the file until a checkpoint.
        let end = end.min(space.page_count).min(self.pager.file_pages()?);
        if next >= end {
            return Ok(None);
        }
        Ok(Some(PreloadChunk {
            start: next,
            pages: (end - next).min(max as u64),
            writes: self.pager.writes_submitted(),
        }))
    }

    /// Caches the pages of `chunk`, read into `buf` since [`Inner::preload_plan`] planned it,
    /// under the writer's lock: first read again if a write was submitted meanwhile (its
    /// bytes may be older than the file's). `None` if the handle was closed or poisoned
    /// meanwhile. A failed read poisons nothing (see [`Pager::read_for_preload`]).
    pub(crate) fn preload_cache(
        &self,
        chunk: &PreloadChunk,
        buf: &mut [PageBuf],
    ) -> std::io::Result<Option<Preloaded>> {
        let _space = self.writer.lock();
        if self.check_usable().is_err() {
            return Ok(None);
        }
        if self.pager.writes_submitted() != chunk.writes {
            self.pager.read_for_preload(chunk.start, buf)?;
        }
        Ok(Some(self.pager.cache_preloaded(
            chunk.start,
            buf,
            crate::preload::validate,
        )))
    }

    /// Pages read ahead into the cache so far.
    pub(crate) fn pages_read_ahead(&self) -> u64 {
        self.pager.counters.prefetched.load(Ordering::Relaxed)
    }

    /// Reads into the cache, many at a time, the pages a commit of sorted `keys` on `version`
    /// would read first: the stored trie pages on their paths and the flat-store pages on
    /// their paths and around them (see [`crate::warm`]).
    pub(crate) fn read_ahead(&self, version: &Version, keys: &[Key]) -> Result<()> {
        // On this thread: the thread pool is the commits'.
        let paths = self.trie_paths_of(version, keys, false)?;
        self.pager
            .prefetch(&paths.refs, (PageKind::Trie, PageKind::Trie), |_, p| {
                trie::validate_page(p)
            })?;
        let mut all: Vec<Key> = keys.iter().chain(&paths.range_ends).copied().collect();
        all.sort_unstable();
        all.dedup();
        btree::prefetch_paths(&self.pager, version.flat_root, &all)
    }

    /// Looks up, a layer at a time in the page table, the stored trie pages on the paths of
    /// sorted `keys`, and where each path's stored pages end, the range of flat-store keys the
    /// trie is rebuilt from there.
    ///
    /// Many keys are looked up in two halves side by side. A page on the paths of both halves
    /// is on the path of the first half's last key, so the second half's copies of those
    /// (at most one per layer) are dropped.
    fn trie_paths(&self, version: &Version, keys: &[Key]) -> Result<TriePaths> {
        if keys.len() < PARALLEL_PATHS_MIN {
            return self.trie_paths_of(version, keys, true);
        }
        let half = keys.len() / 2;
        let (first, second) = rayon::join(
            || self.trie_paths_of(version, &keys[..half], true),
            || self.trie_paths_of(version, &keys[half..], true),
        );
        let (mut paths, second) = (first?, second?);
        let last = keys[half - 1];
        let shape = self.trie_shape;
        let shared: Vec<PageId> = (0..=shape.max_layer())
            .map(|layer| shape.page_at_layer(&last, layer))
            .collect();
        for (id, r) in second.ids.into_iter().zip(second.refs) {
            if !shared.contains(&id) {
                paths.ids.push(id);
                paths.refs.push(r);
            }
        }
        paths.range_ends.extend(second.range_ends);
        paths.range_ends.sort_unstable();
        paths.range_ends.dedup();
        paths.table_memo.extend(second.table_memo);
        Ok(paths)
    }

    /// [`Inner::trie_paths`] on one thread; with `keep_table_pages`, the page-table pages
    /// read are kept in [`TriePaths::table_memo`] (for a commit, not the warm-up).
    fn trie_paths_of(
        &self,
        version: &Version,
        keys: &[Key],
        keep_table_pages: bool,
    ) -> Result<TriePaths> {
        let mut keys: Vec<Key> = keys.to_vec();
        let mut paths = TriePaths::default();
        let shape = self.trie_shape;
        for layer in 0..=shape.max_layer() {
            if keys.is_empty() {
                break;
            }
            let ids = trie::page_ids_at(shape, &keys, layer);
            let table_keys: Vec<Key> = ids.iter().map(|(id, _)| id.table_key()).collect();
            let found = if keep_table_pages {
                btree::get_many_keeping(
                    &self.pager,
                    version.pt_root,
                    &table_keys,
                    &mut paths.table_memo,
                )?
            } else {
                btree::get_many(&self.pager, version.pt_root, &table_keys)?
            };
            let mut below = Vec::new();
            for ((id, range), payload) in ids.iter().zip(found) {
                match payload
                    .filter(|p| p.bytes().len() == PAGE_REF_SIZE)
                    .and_then(|p| PageRef::decode(p.bytes()))
                {
                    Some(r) => {
                        paths.ids.push(*id);
                        paths.refs.push(r);
                        below.extend_from_slice(&keys[range.clone()]);
                    }
                    None => {
                        let key = keys[range.start];
                        let depth = shape.layer_top(layer);
                        paths.range_ends.push(key.prefix(depth));
                        paths.range_ends.push(key.prefix_end(depth));
                    }
                }
            }
            keys = below;
        }
        paths.range_ends.sort_unstable();
        paths.range_ends.dedup();
        Ok(paths)
    }

    /// The pages of the free list of the state of commit `seq`: a journal entry with what
    /// changed since the last meta record or, every so often, the whole list (every page the
    /// state does not use). Takes its pages from the free space.
    fn prepare_list(
        &self,
        seq: u64,
        free: &mut FreeSpace,
        page_count: &mut u64,
        pending: &mut Vec<(u64, Vec<(u64, u64)>)>,
        list: &mut ListState,
    ) -> Vec<(u64, SharedPage)> {
        let take_page = |free: &mut FreeSpace, page_count: &mut u64| {
            allocate_pages(free, page_count, 0, 1, true)
        };
        list.removed.extend(free.take_allocated());
        let journal_len = list.journal_pages.len() as u32;
        if journal_len < MAX_JOURNAL && Delta::fits(list.removed.len() + 1, list.added.len()) {
            // One journal entry. Its own page, if taken from the free space, is among the
            // runs it removes.
            let pgno = take_page(free, page_count);
            list.removed.extend(free.take_allocated());
            let delta = Delta {
                prev: list.journal,
                removed: std::mem::take(&mut list.removed),
                added: std::mem::take(&mut list.added),
            };
            let (page, r) = delta.encode(pgno, seq);
            list.journal = Some(r);
            list.journal_pages.push(pgno);
            return vec![(pgno, Arc::new(page))];
        }
        // The whole list. The pages of the old list and journal are free in the new one.
        let old: Vec<(u64, u64)> = list
            .full_pages
            .iter()
            .chain(&list.journal_pages)
            .map(|p| (*p, 1))
            .collect();
        pending.push((seq, old));
        // The list pages come from the pages free now (or the file end); the list names
        // everything this state does not use, as a reopen sees it: free and pending pages.
        let mut pgnos: Vec<u64> = Vec::new();
        let all = loop {
            let mut all = free.clone();
            for (_, runs) in pending.iter() {
                for (s, l) in runs {
                    all.free(*s, *l);
                }
            }
            let needed = all.pages_needed();
            if needed <= pgnos.len() {
                break all;
            }
            while pgnos.len() < needed {
                pgnos.push(take_page(free, page_count));
            }
        };
        free.take_allocated();
        let (head, pages) = all.encode(&pgnos, seq);
        *list = ListState {
            full: head,
            full_pages: pgnos,
            ..ListState::default()
        };
        pages.into_iter().map(|(p, b)| (p, Arc::new(b))).collect()
    }

    /// The meta record of `version` with the free list `list`.
    fn meta_of(
        &self,
        version: &Version,
        page_count: u64,
        list: &ListState,
        rollback: [u8; 48],
        one_sync: Option<OneSync>,
    ) -> Meta {
        Meta {
            seq: version.seq,
            root: version.root,
            flat_root: version.flat_root,
            pt_root: version.pt_root,
            freelist: list.full,
            journal: list.journal,
            journal_len: list.journal_pages.len() as u32,
            page_count,
            key_count: version.key_count,
            elide_below: self.trie_shape.elide_below,
            top_levels: self.trie_shape.top_levels,
            hasher: self.hasher.name().to_string(),
            rollback,
            one_sync,
        }
    }

    /// Makes a commit durable once its writes are done: the commit point. For a two-sync
    /// record, the pages (and the rollback log) are made durable, then the meta record is
    /// written and made durable. A one-sync record was written with the pages already (after
    /// a sync of the log, unless it carries the log's unsynced records): one sync makes it
    /// and them durable together; it counts at open only if all it lists is intact.
    /// The record goes to meta slot `slot`, which must not be the one in force.
    fn finish_meta(&self, meta: &Meta, slot: u64) -> Result<()> {
        let carried = meta.one_sync.as_ref().is_some_and(|o| o.carried.is_some());
        let (pages, log) = if carried {
            // The meta record carries the log's unsynced records: the data file's sync alone
            // makes the commit durable.
            (self.pager.sync(), Ok(()))
        } else {
            rayon::join(
                || self.pager.sync(),
                || match self.log.lock().as_mut() {
                    Some(log) => log.sync(),
                    None => Ok(()),
                },
            )
        };
        pages?;
        log?;
        if meta.one_sync.is_none() {
            self.pager.write_uncached(slot, &meta.encode(slot))?;
            self.pager.sync()?;
        }
        Ok(())
    }

    /// Moves pending pages to the free space once nothing can read them: their commit is
    /// durable, and no reader holds a state older than that commit. Returns the runs freed,
    /// whose cached copies the commit drops once its flat store is written, while its trie is
    /// still being updated ([`Pager::forget_cached_before`]): one cache removal per freed
    /// page, thousands for a large commit, is then off its critical path.
    fn release_pending(&self, space: &mut Space, current: &Arc<Version>) -> Vec<(u64, u64)> {
        let oldest_reader = self.oldest_reader(current);
        let durable = space.durable_seq;
        let mut keep = Vec::new();
        let mut released: Vec<(u64, u64)> = Vec::new();
        for (seq, runs) in std::mem::take(&mut space.pending) {
            if seq <= durable && seq <= oldest_reader {
                released.extend(runs);
            } else {
                keep.push((seq, runs));
            }
        }
        space.pending = keep;
        // Coalesce first: one free-space update per run of adjacent pages.
        released.sort_unstable();
        let mut runs = Vec::new();
        let mut i = 0;
        while i < released.len() {
            let (start, mut len) = released[i];
            while i + 1 < released.len() && released[i + 1].0 == start + len {
                i += 1;
                len += released[i].1;
            }
            space.free.free(start, len);
            runs.push((start, len));
            i += 1;
        }
        self.pager.forget_deferred(&runs);
        runs
    }

    /// Commits again the records open found in the write-ahead log (commits acknowledged
    /// after the meta record in force), checks that each gives the root it recorded, and
    /// checkpoints.
    fn replay_wal(&self) -> Result<()> {
        let records = std::mem::take(&mut *self.wal_replay.lock());
        if records.is_empty() {
            return Ok(());
        }
        for r in &records {
            let (done, _) = self.commit_with_mode(&r.changes, LogAction::Append, true)?;
            if done.root != r.root || done.seq != r.seq {
                return Err(Error::Corrupted {
                    path: self.path.join(wal::WAL_FILE),
                    offset: 0,
                    what: format!(
                        "replaying commit {} of the write-ahead log gives root {}, not {}",
                        r.seq, done.root, r.root
                    ),
                });
            }
        }
        self.sync()
    }

    /// The oldest state a reader holds (`current`'s if none holds an older one).
    fn oldest_reader(&self, current: &Arc<Version>) -> u64 {
        let mut history = self.history.lock();
        history.retain(|v| Arc::strong_count(v) > 1 || Arc::ptr_eq(v, current));
        history.iter().map(|v| v.seq).min().unwrap_or(current.seq)
    }

    /// Whether the write-ahead log takes a commit of `changes`: a small commit that appends
    /// (not a rollback), of values stored inline, when the log is on.
    fn wal_takes(&self, changes: &BTreeMap<Key, Option<Vec<u8>>>, action: LogAction) -> bool {
        self.options.write_ahead_log
            && matches!(action, LogAction::Append)
            && changes.len() <= WAL_MAX_CHANGES
            && changes
                .values()
                .all(|v| v.as_ref().is_none_or(|v| v.len() <= flat::INLINE_MAX))
            && {
                let len = wal::record_len(changes);
                len <= wal::MAX_RECORD
                    && self
                        .wal
                        .lock()
                        .as_ref()
                        .is_some_and(|w| len as u64 <= w.capacity())
            }
    }

    /// Makes every commit so far durable (a no-op when commits are durable already).
    pub fn sync(&self) -> Result<()> {
        self.check_usable()?;
        let mut guard = self.writer.lock();
        let version = self.version();
        self.checkpoint(&mut guard, &version)
    }

    /// Makes every commit up to `version` (the current one) durable in place: the pages of
    /// commits left unsynced or made durable by the write-ahead log, the free list, a meta
    /// record. The log then starts again.
    fn checkpoint(&self, space: &mut Space, version: &Arc<Version>) -> Result<()> {
        if space.durable_seq == version.seq {
            return Ok(());
        }
        let mut pending = space.pending.clone();
        let mut list = space.list.clone();
        let page_count_before = space.page_count;
        let log_state = self
            .log
            .lock()
            .as_ref()
            .map_or([0; 48], |l| l.state().encode());
        let pages = self.prepare_list(
            version.seq,
            &mut space.free,
            &mut space.page_count,
            &mut pending,
            &mut list,
        );
        let batch = WriteBatch::new();
        self.pager
            .flush_deferred(&batch, self.oldest_reader(version));
        self.pager.submit_pages(pages, &batch);
        let result = self.pager.wait(&batch).and_then(|()| {
            let meta = self.meta_of(version, space.page_count, &list, log_state, None);
            self.finish_meta(&meta, 1 - space.meta_slot)
        });
        if let Err(e) = result {
            for (start, len) in space.free.take_allocated() {
                space.free.free(start, len);
            }
            space.page_count = page_count_before;
            return Err(e);
        }
        space.pending = pending;
        space.list = list;
        space.durable_seq = version.seq;
        space.meta_slot = 1 - space.meta_slot;
        if let Some(wal) = self.wal.lock().as_mut() {
            wal.restart(version.seq);
        }
        if let Some(log) = self.log.lock().as_mut()
            && let Err(e) = log.delete_before(log.state())
        {
            self.pager.poison();
            return Err(e);
        }
        Ok(())
    }

    /// Makes everything durable and releases the directory: later calls on this handle fail
    /// with [`Error::Closed`]. Staged, uncommitted changes are dropped.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.warm.stop();
        let result = if self.pager.check_poisoned().is_ok() {
            self.closed.store(false, Ordering::Release);
            let r = self.sync();
            self.closed.store(true, Ordering::Release);
            r
        } else {
            Ok(())
        };
        self.lock.lock().take();
        result
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("path", &self.path)
            .field("root", &self.root())
            .field("key_count", &self.key_count())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Runs two closures, side by side for batches large enough to be worth a thread hand-over
/// (waking a worker costs tens of microseconds: more than a small commit's whole work).
fn join<A, B, RA, RB>(changes: usize, a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    if changes < PARALLEL_MIN {
        (a(), b())
    } else {
        rayon::join(a, b)
    }
}

/// Commits with fewer changes do their work on one thread.
const PARALLEL_MIN: usize = 64;

/// Fewer keys have their trie paths looked up on one thread (see [`Inner::trie_paths`]).
const PARALLEL_PATHS_MIN: usize = 1024;

/// The most changes a commit made durable by the write-ahead log may have: beyond a few
/// hundred, its scattered pages cost less to write now than to keep.
const WAL_MAX_CHANGES: usize = 256;
/// A checkpoint comes before a logged commit once this many pages are kept in memory
/// (16 MiB)...
const WAL_MAX_DEFERRED_PAGES: usize = 4096;
/// ...or this many commits are in the log (which bounds the work of a replay at open).
const WAL_MAX_COMMITS: u64 = 1024;

/// The pages a logged commit kept in memory: dropped again if the commit fails.
struct Deferral<'a> {
    pager: &'a Pager,
    pages: Mutex<Vec<u64>>,
    done: AtomicBool,
}

impl Drop for Deferral<'_> {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Relaxed) {
            self.pager.undefer(&self.pages.lock());
        }
    }
}

/// Waits for a batch of writes when dropped (on every way out of a commit).
struct Settle<'a>(&'a Pager, Arc<WriteBatch>);

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        let _ = self.0.wait(&self.1);
    }
}

/// Reads both meta slots and returns the newer valid record.
/// The free list of a meta record: its full list, then its journal applied.
pub(crate) fn load_free_list(pager: &Pager, meta: &Meta) -> Result<(FreeSpace, ListState)> {
    let mut free = FreeSpace::new();
    let mut list = ListState {
        full: meta.freelist,
        journal: meta.journal,
        ..ListState::default()
    };
    let mut next = meta.freelist;
    while let Some(r) = next {
        if list.full_pages.len() as u64 > meta.page_count {
            return Err(pager.corrupted(r.pgno, "free-list chain loops"));
        }
        let page = pager.read_uncached(r.pgno, PageKind::FreeList, Some(r.crc))?;
        list.full_pages.push(r.pgno);
        next = free
            .decode_page(&page, meta.page_count)
            .map_err(|e| pager.corrupted(r.pgno, e))?;
    }
    let mut deltas = Vec::new();
    let mut next = meta.journal;
    while let Some(r) = next {
        if deltas.len() as u32 >= meta.journal_len {
            return Err(pager.corrupted(r.pgno, "free-list journal longer than recorded"));
        }
        let page = pager.read_uncached(r.pgno, PageKind::FreeListDelta, Some(r.crc))?;
        let delta = Delta::decode(&page).map_err(|e| pager.corrupted(r.pgno, e))?;
        next = delta.prev;
        list.journal_pages.push(r.pgno);
        deltas.push((r.pgno, delta));
    }
    if deltas.len() as u32 != meta.journal_len {
        return Err(pager.corrupted(0, "free-list journal shorter than recorded"));
    }
    list.journal_pages.reverse();
    for (pgno, delta) in deltas.iter().rev() {
        delta
            .apply(&mut free, meta.page_count)
            .map_err(|e| pager.corrupted(*pgno, e))?;
    }
    if free.iter().any(|(s, l)| s + l > meta.page_count) {
        return Err(pager.corrupted(0, "free list names pages past the end of the data"));
    }
    Ok((free, list))
}

/// Most pages and extents a commit may write to be made durable with one sync (its meta record
/// lists them; at most [`crate::meta::MAX_WRITTEN`]). Small commits are the ones whose latency
/// the second sync would double; larger ones keep the two-sync protocol, whose records need no
/// check at open.
const ONE_SYNC_MAX_WRITTEN: usize = 64;

/// The meta record in force and its slot: of the two slots, the valid record with the higher
/// sequence number whose commit completed (for a one-sync record: every page it lists intact,
/// then its rollback log part, checked with `log_complete`). Also the sequence number of a
/// newer record passed over as incomplete.
pub(crate) fn recover_meta(
    pager: &Pager,
    log_complete: &dyn Fn(&OneSync) -> Result<bool>,
) -> Result<(Meta, u64, Option<u64>)> {
    let mut valid: Vec<(Meta, u64)> = Vec::new();
    let mut errors = Vec::new();
    for slot in 0..2u64 {
        match pager.read_uncached(slot, PageKind::Meta, None) {
            Ok(page) => match Meta::decode(&page) {
                Ok(m) => valid.push((m, slot)),
                Err(MetaError::UnknownVersion(v)) => {
                    return Err(Error::UnsupportedVersion {
                        path: pager.path().to_path_buf(),
                        found: v,
                        supported: crate::meta::FORMAT_VERSION,
                    });
                }
                Err(MetaError::Invalid(e)) => errors.push(format!("slot {slot}: {e}")),
            },
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => {
                // A page format this build does not know is a version error, not corruption.
                // (A slot past the end of the file is just not valid.)
                match pager.read_raw(slot) {
                    Ok(page)
                        if page.bytes()[0..4] == crate::page::PAGE_MAGIC
                            && page.bytes()[5] != crate::page::PAGE_VERSION =>
                    {
                        return Err(Error::UnsupportedVersion {
                            path: pager.path().to_path_buf(),
                            found: page.bytes()[5] as u32,
                            supported: crate::page::PAGE_VERSION as u32,
                        });
                    }
                    Err(e @ Error::Io { .. }) => return Err(e),
                    _ => {}
                }
                errors.push(format!("slot {slot}: {e}"))
            }
        }
    }
    valid.sort_by_key(|(m, _)| std::cmp::Reverse(m.seq));
    let mut discarded = None;
    for (m, slot) in valid {
        let complete = match &m.one_sync {
            None => true,
            Some(one) => {
                let mut ok = true;
                for w in &one.written {
                    if !ok {
                        break;
                    }
                    ok = pager.is_intact(w)?;
                }
                ok && log_complete(one)?
            }
        };
        if complete {
            return Ok((m, slot, discarded));
        }
        discarded = discarded.or(Some(m.seq));
        errors.push(format!("slot {slot}: commit {} did not complete", m.seq));
    }
    Err(pager.corrupted(0, format!("no valid meta record ({})", errors.join("; "))))
}

/// A changed key's new flat-store payload.
#[derive(Debug)]
enum NewPayload<'c> {
    /// The key is deleted.
    Delete,
    /// The encoded payload of a value stored in the leaf.
    Inline(Vec<u8>),
    /// A value stored out of line (its payload is made once its pages are known).
    Large(&'c [u8]),
}

/// The effective changes of part of a commit, in key order.
#[derive(Debug, Default)]
struct Classified<'c> {
    /// Each changed key's value before the commit, for the rollback log.
    reverse: Vec<(Key, Option<Vec<u8>>)>,
    /// The trie's changes.
    trie: Vec<TrieChange>,
    /// The flat store's changes: keys, where each key's old payload was, the new payloads.
    keys: Vec<Key>,
    olds: Vec<btree::OldAt>,
    payloads: Vec<NewPayload<'c>>,
    /// Out-of-line values the changes replace.
    freed: Vec<(u64, u64)>,
    /// The change in the number of keys.
    delta: i64,
}

impl<'c> Classified<'c> {
    /// Appends the changes of the part after this one.
    fn append(&mut self, mut next: Classified<'c>) {
        self.reverse.append(&mut next.reverse);
        self.trie.append(&mut next.trie);
        self.keys.append(&mut next.keys);
        self.olds.append(&mut next.olds);
        self.payloads.append(&mut next.payloads);
        self.freed.append(&mut next.freed);
        self.delta += next.delta;
    }
}

/// Where the stored trie pages on a commit's changed paths are, and where those paths'
/// elided subtries lie in the flat store.
#[derive(Debug, Default)]
struct TriePaths {
    /// The stored pages on the paths.
    ids: Vec<PageId>,
    /// Their references.
    refs: Vec<PageRef>,
    /// Both ends of each elided subtrie's key range, sorted.
    range_ends: Vec<Key>,
    /// The page table's pages read on the way: the commit's update of the page table finds
    /// them here. (By then a large commit has put thousands of new pages in the cache, and
    /// at 2^24 keys the page table's leaves read at the start of the commit were read again,
    /// one at a time, behind the commit's writes: 175 reads and 50 ms, measured.)
    table_memo: btree::PageMemo,
}

/// A chunk of the data file for the preload to read: pages `start..start + pages`, planned
/// when the pager had been given `writes` writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreloadChunk {
    pub(crate) start: u64,
    pub(crate) pages: u64,
    writes: u64,
}

/// What a commit's lookups found, so that its trie update reads neither the page table nor
/// the flat store's upper levels again.
#[derive(Debug)]
pub(crate) struct CommitHints {
    /// The stored trie pages on the changed paths, read.
    stored: rustc_hash::FxHashMap<PageId, (PageRef, SharedPage)>,
    leaves: btree::LeafWindows,
}

/// A committed state as the trie reads it.
pub(crate) struct Snapshot<'a> {
    pub(crate) db: &'a Inner,
    pub(crate) version: &'a Version,
    /// What this commit's lookups found (only for the state a commit starts from).
    pub(crate) hints: Option<&'a CommitHints>,
}

impl TrieSource for Snapshot<'_> {
    fn page(&self, id: &PageId) -> Result<Option<trie::PageView>> {
        if let Some((r, page)) = self.hints.and_then(|h| h.stored.get(id)) {
            return Ok(Some(trie::PageView::Stored(page.clone(), *r)));
        }
        let Some(payload) = btree::get(&self.db.pager, self.version.pt_root, &id.table_key())?
        else {
            return Ok(None);
        };
        let r = PageRef::decode(payload.bytes())
            .filter(|_| payload.bytes().len() == PAGE_REF_SIZE)
            .ok_or_else(|| self.db.pager.corrupted(0, "bad trie page reference"))?;
        let page = self
            .db
            .pager
            .read_with(r, PageKind::Trie, |p| trie::validate_page_of(p, id))?;
        Ok(Some(trie::PageView::Stored(page, r)))
    }

    fn scan(
        &self,
        cursor: &mut btree::Cursor,
        lo: &Key,
        hi: &Key,
        f: &mut dyn FnMut(&Key, LeafValue) -> Result<bool>,
    ) -> Result<()> {
        let mut each = |k: &Key, payload: &[u8]| {
            let entry = self.db.decode_entry(payload)?;
            f(k, entry.leaf_value())
        };
        if let Some(hints) = self.hints
            && hints.leaves.range(lo, hi, &mut each)?
        {
            return Ok(());
        }
        btree::range_with(
            &self.db.pager,
            self.version.flat_root,
            cursor,
            lo,
            hi,
            &mut each,
        )
    }

    fn inconsistent(&self, what: String) -> Error {
        self.db.pager.corrupted(0, format!("trie: {what}"))
    }
}

/// An embedded, persistent, authenticated JAM state database.
///
/// Writes go to an in-memory overlay that [`Nomt::get`] sees first; [`Nomt::commit`] applies
/// them to disk atomically and returns the new state root. The handle is `Send + Sync`:
/// reads and read sessions may run on many threads while one thread commits.
///
/// # Semantics where it matters
///
/// - A commit that fails leaves the database at its previous root, by itself, with the
///   staged changes still staged; if an I/O operation failed, the handle is poisoned and only
///   reopening continues (at the last durable commit).
/// - [`Nomt::rollback`] undoes the last *successful* commit; after a failed commit it undoes
///   the one before (the failed one changed nothing). It acts on committed state only:
///   changes staged on the handle stay staged.
/// - [`Nomt::get`] sees the handle's staged changes, then the committed state; it never sees
///   a write session's changes (they are the session's until committed).
/// - One writer at a time: while a write session is open, the handle's `insert`, `delete`,
///   `commit` and `rollback` fail with [`Error::WriterBusy`] rather than wait, and
///   [`Nomt::begin_write`] fails while the handle has staged changes or another session is
///   open.
pub struct Nomt {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Nomt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nomt")
            .field("path", &self.inner.path)
            .field("root", &self.root())
            .field("key_count", &self.key_count())
            .finish_non_exhaustive()
    }
}

impl Drop for Nomt {
    fn drop(&mut self) {
        let _ = self.inner.close();
    }
}

impl Nomt {
    /// Opens (or creates) the database described by `options`.
    ///
    /// Opening reads the two meta records, the free list and its journal: no part of the
    /// data is scanned. A second open of the same directory, from this process or another,
    /// fails with [`Error::Locked`] while the first handle is open.
    pub fn open(options: Options) -> Result<Nomt> {
        let (warm_up, preload) = (options.warm_up, options.preload);
        let inner = Arc::new(Inner::open(options)?);
        if let Err(e) = inner.replay_wal() {
            // Closing must not checkpoint a partial replay: the log keeps every record.
            inner.pager.poison();
            return Err(e);
        }
        if warm_up {
            inner.warm.start(Arc::downgrade(&inner));
        }
        if preload {
            inner.preload.start(Arc::downgrade(&inner));
        }
        Ok(Nomt { inner })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The root of the last committed state.
    pub fn root(&self) -> Hash {
        self.inner.root()
    }

    /// The number of keys in the last committed state.
    pub fn key_count(&self) -> u64 {
        self.inner.key_count()
    }

    /// Stages a write of `value` under `key`, seen by [`Nomt::get`] at once and applied to
    /// disk by the next [`Nomt::commit`].
    pub fn insert(&self, key: impl IntoKey, value: impl AsRef<[u8]>) -> Result<()> {
        self.inner.insert(key, value)
    }

    /// Stages a delete of `key` (deleting an absent key is not an error).
    pub fn delete(&self, key: impl IntoKey) -> Result<()> {
        self.inner.delete(key)
    }

    /// The value of `key`: staged changes first, then the committed state.
    pub fn get(&self, key: impl IntoKey) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    /// A proof of `key`'s committed value (or absence) against [`Nomt::root`].
    pub fn generate_proof(&self, key: impl IntoKey) -> Result<MerkleProof> {
        self.inner.generate_proof(key)
    }

    /// One proof of many keys' values (or absences) at the committed root, sharing the nodes
    /// their paths have in common (see [`ReadSession::generate_multiproof`]).
    pub fn generate_multiproof(&self, keys: &[Key]) -> Result<MultiProof> {
        self.begin_read()?.generate_multiproof(keys)
    }

    /// Applies every staged change to disk, atomically, and returns the new root.
    ///
    /// The commit is durable when this returns (unless `durable_commits(false)`). If it
    /// fails, the database stays at its previous root and the staged changes are kept; an
    /// I/O failure also poisons the handle, and reopening recovers the last durable commit
    /// (the failed one too, if its meta record was already durable).
    pub fn commit(&self) -> Result<FinishedSession> {
        self.inner.commit()
    }

    /// Undoes the most recent commit: the root is exactly the root before it. An error if the
    /// rollback log is empty or disabled; nothing changes then.
    pub fn rollback(&self) -> Result<FinishedSession> {
        self.inner.rollback_n(1)
    }

    /// Undoes the last `n` commits, in one commit. Asking for more than the rollback log
    /// holds is [`Error::RollbackWindow`], and changes nothing.
    pub fn rollback_n(&self, n: u32) -> Result<FinishedSession> {
        self.inner.rollback_n(n)
    }

    /// When open found the newest meta record to be a commit made durable with one sync
    /// (a small commit, see `docs/design.md`) whose pages were not all intact, its sequence
    /// number: the database opened at the commit before it. That is what a crash before
    /// the commit's sync returned leaves (the commit was never acknowledged); it is also what
    /// damage to one of those pages since then looks like, so a node that sees this without
    /// a crash should check its disk.
    pub fn incomplete_commit_discarded(&self) -> Option<u64> {
        self.inner.discarded_at_open
    }

    /// Commits that can be rolled back (and roots that can be read at, besides the current).
    pub fn rollback_window(&self) -> u32 {
        self.inner.log.lock().as_ref().map_or(0, |l| l.len())
    }

    /// Makes every commit so far durable (a no-op when commits are durable already).
    pub fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    /// Makes everything durable and releases the directory: later calls on this handle and
    /// its sessions fail with [`Error::Closed`]. Staged, uncommitted changes are dropped.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }

    /// The shared state, for the crate's own tests.
    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Waits until the preload that open started has read the data file into the page cache
    /// (see [`Options::preload`]); returns at once if there is none, or once the handle is
    /// closed or the preload stopped. Not from a [`Nomt::check`] progress callback: `check`
    /// holds the writer's lock, which the preload needs to finish.
    pub fn wait_for_preload(&self) {
        self.inner.preload.wait();
    }

    /// Where the time of the last successful commit went.
    pub fn last_commit_stats(&self) -> CommitStats {
        self.inner.last_commit_stats()
    }

    /// Reads and checks the whole database: every page's checksum and structure, every value,
    /// the stored trie against the flat store, the root recomputed from the contents, the
    /// free list and the rollback log (see `bmt check`). Commits wait while it runs.
    /// `progress` is called now and then. The first problem found is returned, as
    /// [`Error::Corrupted`] naming the file and position.
    pub fn check(&self, progress: &mut dyn FnMut(CheckProgress)) -> Result<CheckReport> {
        self.inner.check(progress)
    }

    /// The live counters of this handle.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The data file's I/O so far: page-cache hits and misses, pages read ahead, bytes read
    /// and written, syncs. Take two snapshots and subtract to measure a span (a commit, a
    /// benchmark run); [`Metrics::reset`] does not reset these.
    pub fn io_stats(&self) -> IoStats {
        self.inner.pager.counters.snapshot()
    }

    /// A read-only snapshot of the current committed state (the same as
    /// [`Nomt::begin_read`]).
    pub fn session(&self) -> ReadSession {
        ReadSession::new(self.inner.clone(), View::of(self.inner.version()))
    }

    /// A read-only snapshot of the current committed state.
    pub fn begin_read(&self) -> Result<ReadSession> {
        self.inner.check_usable()?;
        Ok(self.session())
    }

    /// A read-only snapshot of the state with `root`: the current one, or any within the
    /// rollback window (computed from the rollback log along the changed paths). Any other
    /// root is [`Error::UnknownRoot`].
    pub fn begin_read_at(&self, root: Hash) -> Result<ReadSession> {
        self.inner.check_usable()?;
        let base = self.inner.version();
        if base.root == root {
            return Ok(ReadSession::new(self.inner.clone(), View::of(base)));
        }
        let changes = self.inner.changes_back_to(root)?;
        // The log may have moved on since `base` was taken: compute against the state the
        // changes lead back from.
        let base = self.inner.version();
        let view = View::of(base);
        let layer = view.layer(&self.inner, changes)?;
        if layer.root != root {
            return Err(Error::UnknownRoot(root));
        }
        Ok(ReadSession::new(
            self.inner.clone(),
            View {
                base: view.base,
                layers: vec![Arc::new(layer)],
            },
        ))
    }

    /// A write session on the current committed state.
    pub fn begin_write(&self) -> Result<WriteSession> {
        let guard = WriterGuard::take(&self.inner)?;
        Ok(WriteSession::new(
            guard,
            View::of(self.inner.version()),
            false,
        ))
    }

    /// A write session that also records its reads, for [`PreparedSession::witness`](crate::PreparedSession::witness).
    pub fn begin_write_with_witness(&self) -> Result<WriteSession> {
        let guard = WriterGuard::take(&self.inner)?;
        Ok(WriteSession::new(
            guard,
            View::of(self.inner.version()),
            true,
        ))
    }

    /// A write session on top of uncommitted overlays, oldest first: the first must start
    /// at the database's root and each next one at the previous one's root
    /// ([`Error::InvalidOverlays`] otherwise).
    pub fn begin_write_with_overlay(&self, overlays: &[Overlay]) -> Result<WriteSession> {
        let guard = WriterGuard::take(&self.inner)?;
        let base = self.inner.version();
        let mut root = base.root;
        for o in overlays {
            if o.prev_root() != root {
                return Err(Error::InvalidOverlays(
                    "an overlay does not start at the root before it",
                ));
            }
            root = o.root();
        }
        let view = View {
            base,
            layers: overlays.iter().map(|o| o.layer.clone()).collect(),
        };
        Ok(WriteSession::new(guard, view, false))
    }

    /// Commits an overlay, if the database is at the root it starts from ([`Error::Stale`]
    /// otherwise).
    pub fn commit_overlay(&self, overlay: &Overlay) -> Result<FinishedSession> {
        let (done, base) = self.inner.commit_layer(&overlay.layer)?;
        Ok(FinishedSession::new(
            done,
            WitnessSource {
                db: self.inner.clone(),
                view: View::of(base),
                reads: Changes::new(),
                writes: overlay.layer.flat.clone(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::io::MemStorage;
    use crate::{Nomt, Options};

    use crate::testing::key;

    /// The pages a commit replaced leave the cache when it ends, not a commit later: until
    /// then they would take the room of the pages the next block reads.
    #[test]
    fn a_commit_drops_the_cached_copies_of_the_pages_it_replaced() {
        let options = Options::new("/db")
            .storage(Arc::new(MemStorage::new()))
            .preload(false)
            .warm_up(false);
        let db = Nomt::open(options).unwrap();
        for i in 0..5_000 {
            db.insert(key(i), i.to_le_bytes()).unwrap();
        }
        db.commit().unwrap();
        // Large commits, written in place, and small ones, made durable by the write-ahead
        // log (their pages stay in memory until a checkpoint writes them).
        for (round, step) in (1..7u64).zip([3, 3, 50, 50, 3, 50]) {
            // Every page cached, then many of them replaced by one commit.
            for i in 0..5_000 {
                db.get(key(i)).unwrap();
            }
            for i in (0..5_000).step_by(step) {
                db.insert(key(i), (i + (round << 32)).to_le_bytes())
                    .unwrap();
            }
            db.commit().unwrap();
            let inner = db.inner();
            let space = inner.writer.lock();
            let seq = inner.version().seq;
            let replaced: Vec<u64> = (space.pending.iter())
                .filter(|(s, _)| *s == seq)
                .flat_map(|(_, runs)| runs.iter().flat_map(|&(s, l)| s..s + l))
                .collect();
            assert!(replaced.len() > 20, "{} pages replaced", replaced.len());
            let cache = inner.pager.page_cache();
            let cached: Vec<u64> = replaced
                .into_iter()
                .filter(|p| cache.contains(*p))
                .collect();
            assert!(cached.is_empty(), "round {round}: {cached:?} still cached");
        }
    }
}
