//! Preloading: reading the data file into the page cache at open, on a thread of its own.
//!
//! A freshly opened handle has an empty cache: until the pages are back, every lookup of a
//! commit or a read is a device read, one at a time (about 70 µs each here), where a cached
//! page costs well under a microsecond. A node that restarts pays this on its first blocks,
//! and a commit of a single update then takes about twice as long as on a warm cache. When
//! the whole file fits in the cache, reading it in order, 256 KiB at a time, fills the cache
//! at the device's sequential rate (a 117 MiB file in a fraction of a second) instead.
//!
//! Correctness does not depend on it: a cached page is found by its page number and checked
//! against the reference's checksum, so only bytes that are a page's current contents may go
//! in. Every write to the data file is made under the writer's lock and finished before a
//! commit or checkpoint releases it, and the pager counts the writes it is given. A chunk is
//! read between two holds of that lock, so that commits do not wait for the device: if no
//! write was counted in between, the bytes read are the file's current ones; if one was, the
//! chunk is read again under the lock. Its pages are cached under the lock, where pages held
//! back by the write-ahead log (whose bytes in the file are old) are skipped, and nothing
//! already cached is replaced: a page that a reader or the commit cached first stays. A free page's old bytes may go in; no reference names them, and the commit
//! that reuses the page caches its new bytes over them. Pages pass the checks a read from the
//! file makes (header, checksum, the structure's own layout check) or stay out.
//!
//! The thread holds the database weakly and stops when it is closed, poisoned or dropped. An
//! I/O error poisons the handle, as the same failure in a commit's read would.

use std::sync::Weak;

use parking_lot::{Condvar, Mutex};

use crate::db::Inner;
use crate::page::{PageBuf, PageKind, zeroed_extent};

/// Pages read at once: 256 KiB, long enough for the device's sequential rate, short enough
/// that a commit waiting for the writer's lock waits a fraction of a millisecond.
pub(crate) const CHUNK_PAGES: usize = 64;

/// Whether the preload has finished, for [`Preload::wait`].
#[derive(Debug)]
pub(crate) struct Preload {
    running: Mutex<bool>,
    finished: Condvar,
}

impl Default for Preload {
    fn default() -> Self {
        Preload {
            running: Mutex::new(false),
            finished: Condvar::new(),
        }
    }
}

impl Preload {
    /// Starts the thread for `db`, if its data file fits in the cache. If the thread cannot
    /// be started, nothing is preloaded.
    pub(crate) fn start(&self, db: Weak<Inner>) {
        *self.running.lock() = true;
        let spawned = std::thread::Builder::new()
            .name("bmt-preload".into())
            .spawn(move || {
                run(&db);
                if let Some(db) = db.upgrade() {
                    db.preload.finish();
                }
            })
            .is_ok();
        if !spawned {
            self.finish();
        }
    }

    fn finish(&self) {
        *self.running.lock() = false;
        self.finished.notify_all();
    }

    /// Waits until the preload has finished (at once if none is running).
    pub(crate) fn wait(&self) {
        let mut running = self.running.lock();
        while *running {
            self.finished.wait(&mut running);
        }
    }
}

fn run(db: &Weak<Inner>) {
    let Some(first) = db.upgrade() else {
        return;
    };
    let Ok(file_pages) = first.pager.file_pages() else {
        return;
    };
    if file_pages > first.pager.cache_capacity() as u64 {
        return;
    }
    drop(first);
    let mut buf = zeroed_extent(CHUNK_PAGES);
    // The meta slots (pages 0 and 1) are read uncached.
    let mut next = 2;
    loop {
        let Some(db) = db.upgrade() else {
            return;
        };
        match db.preload_chunk(next, &mut buf) {
            Ok(Some(read)) => next += read,
            // Done, or the handle closed or failed (an I/O error has poisoned it).
            Ok(None) | Err(_) => return,
        }
    }
}

/// The check a page read from the file passes before it is cached: the layout check of the
/// structure its kind belongs to.
pub(crate) fn validate(kind: PageKind, page: &PageBuf) -> Result<(), String> {
    match kind {
        PageKind::Trie => crate::trie::validate_page(page),
        PageKind::BranchNode | PageKind::LeafNode => crate::btree::validate_node(kind, page),
        _ => Err(format!("{kind:?} pages are not preloaded")),
    }
}
