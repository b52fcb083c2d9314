//! Options for opening a database.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bmt_core::{Blake2bValueHasher, ValueHasher};

use crate::flat::MAX_VALUE_LEN;
use crate::io::{FileStorage, Storage};
use crate::trie::DEFAULT_ELIDE_BELOW;

/// The default of [`Options::expected_keys`].
const DEFAULT_EXPECTED_KEYS: u64 = 1 << 20;

/// How to open a database. Built with [`Options::new`] and the setters.
#[derive(Clone)]
pub struct Options {
    pub(crate) path: PathBuf,
    pub(crate) page_cache_bytes: u64,
    pub(crate) durable_commits: bool,
    pub(crate) create_if_missing: bool,
    pub(crate) elide_below: u32,
    pub(crate) expected_keys: u64,
    pub(crate) space_slack_percent: u32,
    pub(crate) max_value_size: usize,
    pub(crate) rollback: bool,
    pub(crate) rollback_retained: u32,
    pub(crate) rollback_memory_commits: usize,
    pub(crate) rollback_memory_bytes: usize,
    pub(crate) rollback_segment_size: u64,
    pub(crate) rollback_dir: Option<PathBuf>,
    pub(crate) value_hasher: Arc<dyn ValueHasher>,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) warm_up: bool,
    pub(crate) preload: bool,
    pub(crate) write_ahead_log: bool,
    pub(crate) wal_size: u64,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("path", &self.path)
            .field("page_cache_bytes", &self.page_cache_bytes)
            .field("durable_commits", &self.durable_commits)
            .field("create_if_missing", &self.create_if_missing)
            .field("elide_below", &self.elide_below)
            .field("expected_keys", &self.expected_keys)
            .field("space_slack_percent", &self.space_slack_percent)
            .field("max_value_size", &self.max_value_size)
            .field("rollback", &self.rollback)
            .field("rollback_retained", &self.rollback_retained)
            .field("rollback_memory_commits", &self.rollback_memory_commits)
            .field("rollback_memory_bytes", &self.rollback_memory_bytes)
            .field("rollback_segment_size", &self.rollback_segment_size)
            .field("rollback_dir", &self.rollback_dir)
            .field("value_hasher", &self.value_hasher.name())
            .field("storage", &self.storage)
            .field("warm_up", &self.warm_up)
            .field("preload", &self.preload)
            .field("write_ahead_log", &self.write_ahead_log)
            .field("wal_size", &self.wal_size)
            .finish()
    }
}

impl Options {
    /// Options for the database in directory `path`, with the defaults: a 256 MiB page
    /// cache, durable commits, created if missing, the Gray Paper value hash, real files.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Options {
            path: path.as_ref().to_path_buf(),
            page_cache_bytes: 256 << 20,
            durable_commits: true,
            create_if_missing: true,
            elide_below: DEFAULT_ELIDE_BELOW,
            expected_keys: DEFAULT_EXPECTED_KEYS,
            space_slack_percent: 50,
            max_value_size: MAX_VALUE_LEN,
            rollback: true,
            rollback_retained: 100,
            rollback_memory_commits: 16,
            rollback_memory_bytes: 64 << 20,
            rollback_segment_size: 128 << 20,
            rollback_dir: None,
            value_hasher: Arc::new(Blake2bValueHasher),
            storage: Arc::new(FileStorage::default()),
            warm_up: false,
            preload: true,
            write_ahead_log: true,
            wal_size: 8 << 20,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of decoded pages kept in memory (at least 64 KiB).
    pub fn page_cache_size(mut self, bytes: u64) -> Self {
        self.page_cache_bytes = bytes.max(64 << 10);
        self
    }

    /// Whether each commit is durable when it returns (the default). With `false`, commits
    /// are still atomic, but a crash may lose the commits since the last [`crate::Nomt::sync`]
    /// (or close): the database then opens at the last synced commit.
    pub fn durable_commits(mut self, durable: bool) -> Self {
        self.durable_commits = durable;
        self
    }

    /// Whether small durable commits are made durable by appending their changes to a
    /// write-ahead log and syncing that one short write (default true), their pages written
    /// to the data file later, many commits at a time (see `docs/design.md`). Without it,
    /// every durable commit writes its pages and syncs them. A log left by a crash is replayed
    /// at open either way.
    pub fn write_ahead_log(mut self, on: bool) -> Self {
        self.write_ahead_log = on;
        self
    }

    /// The size of the write-ahead log file (default 8 MiB, at least 4 KiB): when the next
    /// record does not fit, the pages of the commits it holds are written first.
    pub fn write_ahead_log_size(mut self, bytes: u64) -> Self {
        self.wal_size = bytes.max(4 << 10);
        self
    }

    /// Whether keys written on the handle or in a write session are handed to a thread that
    /// reads the pages their commit will need into the page cache while the caller goes on
    /// (default false). It pays off when the state is larger than the cache and writes are
    /// staged for a while before the commit (a block's transactions); with everything
    /// cached, the thread looks up only a sample of the keys. Results are the same either
    /// way.
    pub fn warm_up(mut self, on: bool) -> Self {
        self.warm_up = on;
        self
    }

    /// Whether open starts a thread that reads the data file into the page cache, if the
    /// file fits in it (default true), so that a restarted node's first reads and commits
    /// find their pages cached instead of reading them one at a time. The file is read in
    /// order, 256 KiB at a time, without holding up commits (a read that a commit's writes
    /// may have overtaken is made again); it fills only free room in the cache, and a page a
    /// reader or commit cached first is kept. A file larger than the cache is not read. Results are the same
    /// either way; [`crate::Nomt::wait_for_preload`] waits for it to finish.
    pub fn preload(mut self, on: bool) -> Self {
        self.preload = on;
        self
    }

    /// Whether to create the database if the directory holds none (default true).
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// The hash of values longer than 32 bytes (default BLAKE2b-256, the Gray Paper's). A
    /// database records the hasher's name and refuses to open with another.
    pub fn value_hasher(mut self, hasher: Arc<dyn ValueHasher>) -> Self {
        self.value_hasher = hasher;
        self
    }

    /// Trie pages with fewer keys below them than this are not stored but rebuilt from the
    /// flat store when needed (default 20, from 2 to 2^24 - 1). Fixed when the database is
    /// created.
    pub fn elide_below(mut self, keys: u32) -> Self {
        self.elide_below = keys.clamp(2, (1 << 24) - 1);
        self
    }

    /// About how many keys the state will hold (default 2^20): a new database cuts its trie
    /// into pages so that, at that size and with this page cache, the stored trie fits in
    /// half the cache and the subtries rebuilt from the flat store hold a few keys each: its
    /// top page gets 1 to 6 levels, every other page 6 (`docs/design.md`). Any size works
    /// with any setting; a state far from it (8 times larger or smaller) writes more trie
    /// pages per commit, hashes more or reads more. Fixed when the database is created:
    /// opening an existing one ignores it.
    pub fn expected_keys(mut self, keys: u64) -> Self {
        self.expected_keys = keys;
        self
    }

    /// How much free space the data file may hold, as a percentage of the pages the state
    /// uses (default 50, at most 400), before commits fill short runs of free pages instead
    /// of growing the file. More slack: longer runs of free pages, so a commit's pages go to
    /// the device in fewer, longer writes (at 2^24 keys the writes are most of a large
    /// commit's device time), for a larger file. Measured at 2^24 keys: 25% gave 36,000
    /// updates/s and a 1.7 GB file, 50% 44,700/s and 2.1 GB, 100% 47,400/s and 2.7 GB. Can be
    /// changed at every open.
    pub fn space_slack_percent(mut self, percent: u32) -> Self {
        self.space_slack_percent = percent.min(400);
        self
    }

    /// The longest value [`crate::Nomt::insert`] accepts (default and upper bound: 1 GiB).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes.min(MAX_VALUE_LEN);
        self
    }

    /// Whether commits keep the prior values of the keys they change, so that they can be
    /// rolled back (default true). Without it, [`crate::Nomt::rollback`] and reads at older
    /// roots are refused.
    pub fn rollback(mut self, enabled: bool) -> Self {
        self.rollback = enabled;
        self
    }

    /// How many of the last commits can be rolled back, and read at (default 100).
    pub fn rollback_retained(mut self, commits: u32) -> Self {
        self.rollback_retained = commits.max(1);
        self
    }

    /// The newest rollback deltas also kept in memory: at most this many commits' worth
    /// (default 16) and at most this many bytes (default 64 MiB), whichever is less.
    pub fn rollback_in_memory(mut self, commits: usize, bytes: usize) -> Self {
        self.rollback_memory_commits = commits;
        self.rollback_memory_bytes = bytes;
        self
    }

    /// The size of the rollback log's segment files (default 128 MiB).
    pub fn rollback_segment_size(mut self, bytes: u64) -> Self {
        self.rollback_segment_size = bytes.max(4096);
        self
    }

    /// The folder of the rollback log (default `rollback` in the database directory).
    pub fn rollback_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.rollback_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Where the files live (default: the real file system). Tests use
    /// [`crate::io::MemStorage`].
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }
}
