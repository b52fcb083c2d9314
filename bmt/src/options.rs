//! Options for opening a database.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bmt_core::{Blake2bValueHasher, ValueHasher};

use crate::flat::MAX_VALUE_LEN;
use crate::io::{FileStorage, Storage};
use crate::trie::DEFAULT_ELIDE_BELOW;

/// How to open a database. Built with [`Options::new`] and the setters.
#[derive(Clone)]
pub struct Options {
    pub(crate) path: PathBuf,
    pub(crate) page_cache_bytes: u64,
    pub(crate) durable_commits: bool,
    pub(crate) create_if_missing: bool,
    pub(crate) elide_below: u32,
    pub(crate) max_value_size: usize,
    pub(crate) value_hasher: Arc<dyn ValueHasher>,
    pub(crate) storage: Arc<dyn Storage>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("path", &self.path)
            .field("page_cache_bytes", &self.page_cache_bytes)
            .field("durable_commits", &self.durable_commits)
            .field("create_if_missing", &self.create_if_missing)
            .field("elide_below", &self.elide_below)
            .field("max_value_size", &self.max_value_size)
            .field("value_hasher", &self.value_hasher.name())
            .field("storage", &self.storage)
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
            max_value_size: MAX_VALUE_LEN,
            value_hasher: Arc::new(Blake2bValueHasher),
            storage: Arc::new(FileStorage::default()),
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
    /// flat store when needed (default 20, at least 2). Fixed when the database is created.
    pub fn elide_below(mut self, keys: u32) -> Self {
        self.elide_below = keys.max(2);
        self
    }

    /// The longest value [`crate::Nomt::insert`] accepts (default and upper bound: 1 GiB).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes.min(MAX_VALUE_LEN);
        self
    }

    /// Where the files live (default: the real file system). Tests use
    /// [`crate::io::MemStorage`].
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }
}
