//! Warm-up: reading, on a thread of its own, the pages that staged writes will need when they
//! are committed.
//!
//! A commit of a batch of writes first looks up every written key: its flat-store leaf (for
//! the old value) and the stored trie pages on its path. On a state larger than the page
//! cache, most of those are device reads, and the commit waits for them. With warm-up on
//! ([`crate::Options::warm_up`]), every key written on the handle or in a write session is
//! also handed to this thread, which reads those pages into the cache many at a time while
//! the caller goes on staging (or reading: a block's transactions read accounts one by one,
//! each a device read, and the pages for the writes come in meanwhile). The commit then
//! finds them cached. Nothing is computed here that the commit relies on: this thread only
//! fills the cache, so a key whose pages are not read in time (or are evicted again) costs
//! the commit its read, as without warm-up.
//!
//! Keys are queued without blocking the writer (a full queue drops the hint), and read in
//! batches of the keys waiting, sorted, against the state committed last. An I/O error on
//! the data file poisons the handle, as it would in the commit (see the pager); a closed or
//! poisoned handle reads nothing more.

use std::sync::Weak;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use bmt_core::Key;
use parking_lot::Mutex;

use crate::db::Inner;

/// Keys queued at most: a little more than a large block's writes.
const QUEUE: usize = 1 << 16;

/// Keys read per batch at most.
const BATCH: usize = 4096;

/// The warm-up thread's queue. Dropping it (or [`WarmUp::stop`]) ends the thread.
#[derive(Debug, Default)]
pub(crate) struct WarmUp {
    sender: Mutex<Option<SyncSender<Key>>>,
}

impl WarmUp {
    /// Starts the thread for the database `db` (held weakly: the thread ends when the
    /// database does). If the thread cannot be started, warm-up stays off.
    pub(crate) fn start(&self, db: Weak<Inner>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Key>(QUEUE);
        let started = std::thread::Builder::new()
            .name("bmt-warm-up".into())
            .spawn(move || run(db, receiver))
            .is_ok();
        *self.sender.lock() = started.then_some(sender);
    }

    /// Queues `key`, whose pages a commit will need; dropped if the queue is full.
    pub(crate) fn hint(&self, key: Key) {
        let mut sender = self.sender.lock();
        if let Some(s) = sender.as_ref()
            && let Err(TrySendError::Disconnected(_)) = s.try_send(key)
        {
            *sender = None;
        }
    }

    /// Ends the thread (after the batch it is reading).
    pub(crate) fn stop(&self) {
        self.sender.lock().take();
    }
}

fn run(db: Weak<Inner>, keys: Receiver<Key>) {
    // Whether the last batch read anything: while batches find every page cached, only a
    // sample of each is looked up (the lookups of a state that fits in the cache would only
    // take CPU from the caller), until a sample misses again.
    let mut missing = true;
    while let Ok(first) = keys.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match keys.try_recv() {
                Ok(k) => batch.push(k),
                Err(_) => break,
            }
        }
        if !missing {
            batch.truncate(SAMPLE);
        }
        let Some(db) = db.upgrade() else {
            return;
        };
        if db.check_usable().is_err() {
            continue;
        }
        batch.sort_unstable();
        batch.dedup();
        let version = db.version();
        let before = db.pages_read_ahead();
        // Errors are the foreground's to report: an I/O error has poisoned the handle
        // already, and a damaged page fails the commit's own read of it.
        let _ = db.read_ahead(&version, &batch);
        missing = db.pages_read_ahead() > before;
        drop(db);
    }
}

/// Keys looked up of a batch while the batches before found everything cached.
const SAMPLE: usize = 32;
