//! `bmt`: an embedded, persistent, authenticated key-value store whose root is the JAM Gray
//! Paper state root.
//!
//! ```no_run
//! use bmt::{Nomt, Options};
//! # fn main() -> bmt::Result<()> {
//! let db = Nomt::open(Options::new("/tmp/state"))?;
//! db.insert([1u8; 31], b"value")?;
//! let done = db.commit()?;
//! let proof = db.generate_proof([1u8; 31])?;
//! proof.verify(&bmt_core::Key([1; 31]), Some(b"value"), &done.root()).unwrap();
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod btree;
mod cache;
mod changes;
mod check;
mod db;
mod error;
mod flat;
mod freelist;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
mod meta;
mod metrics;
mod options;
mod page;
mod pager;
mod preload;
mod rollback;
mod session;
pub mod sim;
mod staged;
mod trie;
mod uring;
mod wal;
mod warm;
mod write_batch;

pub use bmt_core::{Hash, Key, KeyError, MerkleProof, MultiProof, ValueHasher, Witness};
pub use check::{CheckProgress, CheckReport, CheckStage};
pub use db::{CommitStats, FinishedSession, IntoKey, Nomt};
pub use error::{Error, Result};
pub use metrics::{IoStats, LatencyHistogram, Metrics};
pub use options::Options;
pub use session::{Overlay, PreparedSession, ReadSession, WriteSession};

/// The README's Rust examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;

/// Helpers shared by the unit tests.
#[cfg(test)]
mod testing {
    /// Key `i` of a test: its first eight bytes `i` times an odd constant, so that
    /// consecutive numbers spread over the key space (and over the trie).
    pub(crate) fn key(i: u64) -> crate::Key {
        let mut k = [0u8; 31];
        k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        crate::Key(k)
    }
}
