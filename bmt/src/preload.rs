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
//! The thread holds the database weakly and stops when it is closed, poisoned or dropped. It
//! reads only the pages the file had when it began (a bulk load right after open cannot keep
//! it going), and stops early once the cache has no room. A failed read stops it without
//! poisoning the handle: it reads free pages too, which nothing else would read, so a bad
//! sector there must not take the database down; a reader or commit that needs a page in
//! the same place meets the error itself (and poisons the handle then). Failed reads are
//! counted (`IoStats::preload_read_errors`).

use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};

use crate::db::Inner;
use crate::page::{PageBuf, PageKind, zeroed_extent};

/// Pages read at once: 256 KiB, long enough for the device's sequential rate, short enough
/// that a commit waiting for the writer's lock waits a fraction of a millisecond.
pub(crate) const CHUNK_PAGES: usize = 64;

/// Whether the preload has finished, for [`Preload::wait`].
#[derive(Debug, Default)]
pub(crate) struct Preload {
    state: Arc<Running>,
}

#[derive(Debug, Default)]
struct Running {
    running: Mutex<bool>,
    finished: Condvar,
}

impl Running {
    fn finish(&self) {
        *self.running.lock() = false;
        self.finished.notify_all();
    }
}

/// Marks the preload finished when the thread ends, however it ends (a panic included), so
/// that [`Preload::wait`] cannot wait for ever.
struct Finish(Arc<Running>);

impl Drop for Finish {
    fn drop(&mut self) {
        self.0.finish();
    }
}

impl Preload {
    /// Starts the thread for `db`, if its data file fits in the cache. If the thread cannot
    /// be started, nothing is preloaded.
    pub(crate) fn start(&self, db: Weak<Inner>) {
        *self.state.running.lock() = true;
        let finish = Finish(self.state.clone());
        let spawned = std::thread::Builder::new()
            .name("bmt-preload".into())
            .spawn(move || {
                let _finish = finish;
                run(&db);
            });
        // If the thread could not be started, its closure (and with it `finish`) is dropped.
        drop(spawned);
    }

    /// Waits until the preload has finished (at once if none is running).
    pub(crate) fn wait(&self) {
        let mut running = self.state.running.lock();
        while *running {
            self.state.finished.wait(&mut running);
        }
    }
}

fn run(db: &Weak<Inner>) {
    let Some(first) = db.upgrade() else {
        return;
    };
    // The pages the file has now: later pages are the commits' own, which they cache.
    let Ok(end) = first.pager.file_pages() else {
        return;
    };
    if end > first.pager.cache_capacity() as u64 {
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
        // Done, or the handle closed or failed.
        let Ok(Some(chunk)) = db.preload_plan(next, end, CHUNK_PAGES) else {
            return;
        };
        let buf = &mut buf[..chunk.pages as usize];
        // A failed read stops the preload (it is counted; see `Pager::read_for_preload`).
        if db.pager.read_for_preload(chunk.start, buf).is_err() {
            return;
        }
        match db.preload_cache(&chunk, buf) {
            // The cache is full: the rest would find no room either.
            Ok(Some(done)) if done.no_room && done.cached == 0 => return,
            Ok(Some(_)) => next += chunk.pages,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::io::MemStorage;
    use crate::page::{PageKind, zeroed_extent};
    use crate::{Nomt, Options};

    use crate::testing::key;

    /// Commits of 600 updates each (written in place, not through the write-ahead log).
    fn update(db: &Nomt, rounds: std::ops::Range<u64>) {
        for round in rounds {
            for i in 0..600 {
                let i = (i * 7 + round * 13) % 5_000;
                db.insert(key(i), format!("{i} in round {round}").into_bytes())
                    .unwrap();
            }
            db.commit().unwrap();
        }
    }

    fn is_tree_page(page: &[u8]) -> bool {
        PageKind::from_u8(page[4]).is_some_and(|k| {
            matches!(
                k,
                PageKind::BranchNode | PageKind::LeafNode | PageKind::Trie
            )
        })
    }

    /// A chunk read before commits rewrote pages in it, and cached after them with the cache
    /// emptied meanwhile: the old bytes must not go in. Only the read made again under the
    /// writer's lock keeps them out (the test fails without it), which a race in the
    /// integration tests would reach only by chance.
    #[test]
    fn a_chunk_overtaken_by_commits_is_read_again() {
        let storage = MemStorage::new();
        let db = Nomt::open(
            Options::new("/db")
                .storage(Arc::new(storage))
                .preload(false),
        )
        .unwrap();
        for i in 0..5_000 {
            db.insert(key(i), format!("{i}").into_bytes()).unwrap();
        }
        db.commit().unwrap();
        update(&db, 0..4);
        let inner = db.inner().clone();
        let end = inner.pager.file_pages().unwrap();
        let chunk = inner.preload_plan(2, end, end as usize).unwrap().unwrap();
        let mut old = zeroed_extent(chunk.pages as usize);
        inner.pager.read_for_preload(chunk.start, &mut old).unwrap();

        // Commits reuse pages freed before: some pages of the chunk get new bytes.
        update(&db, 4..10);
        let mut now = zeroed_extent(chunk.pages as usize);
        inner.pager.read_for_preload(chunk.start, &mut now).unwrap();
        let rewritten = old
            .iter()
            .zip(&now)
            .filter(|(o, n)| o.bytes() != n.bytes() && is_tree_page(o.bytes()))
            .count();
        assert!(rewritten > 0, "the commits rewrote no page of the chunk");
        // The file grew, but the preload does not go past the pages it had when it began.
        assert!(inner.pager.file_pages().unwrap() > end);
        assert!(inner.preload_plan(end, end, 64).unwrap().is_none());
        let cache = inner.pager.page_cache();
        for pgno in 0..inner.pager.file_pages().unwrap() {
            cache.remove(pgno);
        }

        let done = inner.preload_cache(&chunk, &mut old).unwrap().unwrap();
        assert!(done.cached > 0);
        for (pgno, current) in (chunk.start..).zip(&now) {
            if let Some(cached) = cache.get(pgno) {
                assert!(
                    cached.bytes() == current.bytes(),
                    "page {pgno} is cached with bytes older than the file's"
                );
            }
        }
        db.check(&mut |_| {}).unwrap();
        for i in (0..5_000).step_by(7) {
            assert!(db.get(key(i)).unwrap().is_some());
        }
    }
}
