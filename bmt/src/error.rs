//! The database's error type.

use std::io;
use std::path::PathBuf;

use bmt_core::{Hash, KeyError};

/// An error from the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed. The handle is poisoned: reopen to recover.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Data read from disk failed its checks.
    #[error("{path} is corrupted at offset {offset}: {what}")]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad page or record.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Another handle (in this or another process) has the database open.
    #[error("the database at {0} is locked by another handle")]
    Locked(PathBuf),
    /// The files were written by an unknown format version.
    #[error("{path}: unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The database was built with another value hasher or trie layout option.
    #[error("the database was built with {what} {stored:?}, but opened with {given:?}")]
    IncompatibleOptions {
        /// Which option.
        what: &'static str,
        /// The value recorded in the database.
        stored: String,
        /// The value given to open it.
        given: String,
    },
    /// An earlier I/O error poisoned this handle; only reopening continues.
    #[error("the handle is poisoned by an earlier I/O error; reopen the database")]
    Poisoned,
    /// The handle was closed.
    #[error("the database handle is closed")]
    Closed,
    /// The value is longer than the database accepts.
    #[error("a value of {len} bytes exceeds the maximum of {max} bytes")]
    ValueTooLarge {
        /// The value's length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// A key is malformed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A session was prepared against a root that is no longer the database's root.
    #[error("stale session: prepared against root {expected}, but the database is at {actual}")]
    Stale {
        /// The root the session was built on.
        expected: Hash,
        /// The database's root now.
        actual: Hash,
    },
    /// A rollback asked for more commits than the rollback log holds; nothing was changed.
    #[error("cannot roll back {requested} commits: the rollback log holds {available}")]
    RollbackWindow {
        /// Commits asked for.
        requested: u32,
        /// Commits that can be rolled back.
        available: u32,
    },
    /// The rollback log is off (`Options::rollback(false)`).
    #[error("the rollback log is disabled")]
    RollbackDisabled,
    /// A root that is neither the current one nor within the rollback window.
    #[error("root {0} is not the current root nor within the rollback window")]
    UnknownRoot(Hash),
    /// A write session is open (or staged changes on the handle), and this needs the writer.
    #[error("another writer is active: {0}")]
    WriterBusy(&'static str),
    /// Overlays that do not form a chain from the database's root.
    #[error("invalid overlay chain: {0}")]
    InvalidOverlays(&'static str),
    /// The database path is unusable (for example, not a directory).
    #[error("invalid database path {path}: {why}")]
    InvalidPath {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// The database's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
