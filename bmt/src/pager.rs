//! Page I/O for the data file: checked reads through a bounded cache, batched writes, and
//! the poisoning rule (any I/O error stops the handle).
//!
//! Pages are copy-on-write, so a page number names fixed content for as long as anything can
//! reach it: the cache is keyed by page number and never needs invalidating, only overwriting
//! when a freed page is reused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use parking_lot::Mutex;

use crate::cache::PageCache;
use crate::meta::Written;
pub use crate::write_batch::WriteBatch;

use crate::error::{Error, Result};
use crate::io::StorageFile;
use crate::page::{
    self, Extent, PAGE_SIZE, PageBuf, PageKind, PageRef, SharedPage, extent_bytes,
    extent_bytes_mut, zeroed_extent,
};
use crate::uring;

/// Counters of the I/O done through a pager.
#[derive(Debug, Default)]
pub struct IoCounters {
    /// Bytes read from the file.
    pub bytes_read: AtomicU64,
    /// Bytes written to the file.
    pub bytes_written: AtomicU64,
    /// Page reads answered by the cache.
    pub cache_hits: AtomicU64,
    /// Page reads that went to the file.
    pub cache_misses: AtomicU64,
    /// `fdatasync` calls.
    pub syncs: AtomicU64,
    /// Pages read ahead by [`Pager::prefetch`].
    pub prefetched: AtomicU64,
    /// Pages cached by [`Pager::cache_preloaded`].
    pub preloaded: AtomicU64,
    /// Preload reads that failed (the preload then stopped).
    pub preload_errors: AtomicU64,
}

/// What [`Pager::cache_preloaded`] did with a chunk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Preloaded {
    /// Pages cached.
    pub cached: u64,
    /// Whether a page that could have been cached found no room.
    pub no_room: bool,
}

impl IoCounters {
    /// A snapshot of the counters.
    pub fn snapshot(&self) -> crate::metrics::IoStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::metrics::IoStats {
            page_cache_hits: get(&self.cache_hits),
            page_cache_misses: get(&self.cache_misses),
            pages_read_ahead: get(&self.prefetched),
            pages_preloaded: get(&self.preloaded),
            preload_read_errors: get(&self.preload_errors),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            data_syncs: get(&self.syncs),
        }
    }
}

/// The data file with its page cache.
#[derive(Debug)]
pub struct Pager {
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    cache: Arc<PageCache>,
    poisoned: Arc<AtomicBool>,
    /// `io_uring` when the storage gives a file descriptor, else a pool of I/O threads.
    uring: Option<mpsc::Sender<uring::Job>>,
    io: Option<IoThreads>,
    /// The pages and extents written since [`Pager::record_writes`], when recording: what a
    /// one-sync meta record lists.
    written: Mutex<Option<Vec<Written>>>,
    /// Pages of commits made durable by the write-ahead log, not yet written to the file
    /// (see [`crate::wal`]); reads that miss the cache find them here.
    deferred: Mutex<rustc_hash::FxHashMap<u64, Deferred>>,
    /// Writes submitted (see [`Pager::writes_submitted`]).
    writes_submitted: AtomicU64,
    /// I/O counters.
    pub counters: IoCounters,
}

impl Pager {
    /// A pager over `file` with a cache of about `cache_bytes`.
    pub fn new(
        file: Arc<dyn StorageFile>,
        path: &Path,
        cache_bytes: u64,
        poisoned: Arc<AtomicBool>,
    ) -> Self {
        let items = (cache_bytes / PAGE_SIZE as u64).max(16) as usize;
        let uring = file.raw_fd().and_then(|fd| uring::start(fd, file.clone()));
        let has_fd = file.raw_fd().is_some();
        Pager {
            written: Mutex::new(None),
            deferred: Mutex::new(rustc_hash::FxHashMap::default()),
            file,
            path: path.to_path_buf(),
            cache: Arc::new(PageCache::new(items)),
            poisoned,
            // A real file without io_uring gets many threads, to keep the disk's queue full;
            // storage without a file descriptor (memory, simulations) needs only a few.
            io: uring
                .is_none()
                .then(|| IoThreads::start(if has_fd { IO_THREADS } else { IO_THREADS_NO_FD })),
            uring,
            writes_submitted: AtomicU64::new(0),
            counters: IoCounters::default(),
        }
    }

    /// The file's path (for error messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails fast if an earlier I/O error poisoned the handle.
    pub fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Stops the handle: every later call fails with `Error::Poisoned`.
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// An I/O error on the data file; it poisons the handle.
    pub fn io_error(&self, source: std::io::Error) -> Error {
        self.poisoned.store(true, Ordering::Release);
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// A corruption error at page `pgno`.
    pub fn corrupted(&self, pgno: u64, what: impl Into<String>) -> Error {
        Error::Corrupted {
            path: self.path.clone(),
            offset: pgno * PAGE_SIZE as u64,
            what: what.into(),
        }
    }

    /// Reads and checks the page `r` points to, expecting `kind`; a page read from the file
    /// (not the cache) must also pass `validate`, the structure's own check of its layout.
    pub fn read_with(
        &self,
        r: PageRef,
        kind: PageKind,
        validate: impl Fn(&PageBuf) -> Result<(), String>,
    ) -> Result<SharedPage> {
        if let Some(page) = self.cache.get(r.pgno) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            if page.stored_crc() == r.crc && page.bytes()[4] == kind as u8 {
                return Ok(page);
            }
            // A cached page that does not match its reference: check it the slow way for a
            // precise error.
            page::verify(page.bytes(), kind, r.pgno, Some(r.crc))
                .map_err(|e| self.corrupted(r.pgno, format!("{kind:?} page: {e}")))?;
            return Ok(page);
        }
        if let Some(page) = self.deferred_page(r.pgno) {
            if page.stored_crc() != r.crc || page.bytes()[4] != kind as u8 {
                page::verify(page.bytes(), kind, r.pgno, Some(r.crc))
                    .map_err(|e| self.corrupted(r.pgno, format!("{kind:?} page: {e}")))?;
            }
            return Ok(page);
        }
        self.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        let page = self.read_uncached(r.pgno, kind, Some(r.crc))?;
        validate(&page).map_err(|e| self.corrupted(r.pgno, format!("{kind:?} page: {e}")))?;
        let page: SharedPage = Arc::new(page);
        cache_insert(&self.cache, r.pgno, page.clone());
        Ok(page)
    }

    /// Reads and checks the page `r` points to, which may be of kind `a` or `b` (the page's
    /// kind byte decides); a page read from the file must also pass `validate`.
    pub fn read_either(
        &self,
        r: PageRef,
        a: PageKind,
        b: PageKind,
        validate: impl Fn(PageKind, &PageBuf) -> Result<(), String>,
    ) -> Result<SharedPage> {
        if let Some(page) = self.cache.get(r.pgno) {
            // The header with what follows it (a leaf's offsets), loaded together.
            page.prefetch(0..192);
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            let k = page.bytes()[4];
            if page.stored_crc() == r.crc && (k == a as u8 || k == b as u8) {
                return Ok(page);
            }
            let kind = if k == b as u8 { b } else { a };
            page::verify(page.bytes(), kind, r.pgno, Some(r.crc))
                .map_err(|e| self.corrupted(r.pgno, format!("{kind:?} page: {e}")))?;
            return Ok(page);
        }
        if let Some(page) = self.deferred_page(r.pgno) {
            let k = page.bytes()[4];
            if page.stored_crc() != r.crc || (k != a as u8 && k != b as u8) {
                let kind = if k == b as u8 { b } else { a };
                page::verify(page.bytes(), kind, r.pgno, Some(r.crc))
                    .map_err(|e| self.corrupted(r.pgno, format!("{kind:?} page: {e}")))?;
            }
            return Ok(page);
        }
        self.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        self.check_poisoned()?;
        let mut page = PageBuf::scratch();
        self.file
            .read_exact_at(page.bytes_mut(), r.pgno * PAGE_SIZE as u64)
            .map_err(|e| self.read_error(r.pgno, e))?;
        self.counters
            .bytes_read
            .fetch_add(PAGE_SIZE as u64, Ordering::Relaxed);
        let kind = if page.bytes()[4] == b as u8 { b } else { a };
        page::verify(page.bytes(), kind, r.pgno, Some(r.crc))
            .map_err(|e| self.corrupted(r.pgno, format!("{kind:?} page: {e}")))?;
        validate(kind, &page).map_err(|e| self.corrupted(r.pgno, format!("{kind:?} page: {e}")))?;
        let page: SharedPage = Arc::new(page);
        cache_insert(&self.cache, r.pgno, page.clone());
        Ok(page)
    }

    /// Calls `f` with the page `r` points to, checked as by [`Pager::read_either`]. A cached
    /// page is lent under the cache's lock, without cloning its reference (see
    /// [`crate::cache`]): `f` must be short and must not use the pager. Also says whether the
    /// page was cached (not counted here: see [`Pager::count_hits`]).
    pub fn visit_either<R>(
        &self,
        r: PageRef,
        a: PageKind,
        b: PageKind,
        validate: impl Fn(PageKind, &PageBuf) -> Result<(), String>,
        guess: std::ops::Range<usize>,
        f: impl Fn(&PageBuf) -> R,
    ) -> Result<(R, bool)> {
        let hit = self.cache.with(r.pgno, |page| {
            // The header with what follows it (a leaf's offsets), loaded together, and where
            // the caller guesses it will look next.
            page.prefetch(0..192);
            page.prefetch(guess);
            let k = page.bytes()[4];
            (page.stored_crc() == r.crc && (k == a as u8 || k == b as u8)).then(|| f(page))
        });
        if let Some(Some(out)) = hit {
            return Ok((out, true));
        }
        // Not cached, or cached but not matching `r` (which the full read reports precisely).
        let page = self.read_either(r, a, b, validate)?;
        Ok((f(&page), false))
    }

    /// Counts `hits` cache hits of [`Pager::visit_either`] (which tells whether its page was
    /// cached, and counts nothing: a walk adds its hits once, not one atomic operation per
    /// level).
    pub fn count_hits(&self, hits: u64) {
        self.counters.cache_hits.fetch_add(hits, Ordering::Relaxed);
    }

    /// Reads and checks page `pgno` without the cache (meta slots, recovery).
    pub fn read_uncached(
        &self,
        pgno: u64,
        kind: PageKind,
        expected_crc: Option<u32>,
    ) -> Result<Box<PageBuf>> {
        self.check_poisoned()?;
        let mut page = PageBuf::scratch();
        self.file
            .read_exact_at(page.bytes_mut(), pgno * PAGE_SIZE as u64)
            .map_err(|e| self.read_error(pgno, e))?;
        self.counters
            .bytes_read
            .fetch_add(PAGE_SIZE as u64, Ordering::Relaxed);
        page::verify(page.bytes(), kind, pgno, expected_crc)
            .map_err(|e| self.corrupted(pgno, format!("{kind:?} page: {e}")))?;
        Ok(page)
    }

    /// Reads page `pgno` without any check (to diagnose a page that failed them).
    pub fn read_raw(&self, pgno: u64) -> Result<Box<PageBuf>> {
        let mut page = PageBuf::scratch();
        self.file
            .read_exact_at(page.bytes_mut(), pgno * PAGE_SIZE as u64)
            .map_err(|e| self.read_error(pgno, e))?;
        Ok(page)
    }

    /// Reads `pages` pages from `pgno` (an extent) and checks them as one unit of `kind`.
    pub fn read_extent(
        &self,
        pgno: u64,
        pages: u64,
        kind: PageKind,
        expected_crc: u32,
    ) -> Result<Extent> {
        self.check_poisoned()?;
        let n = usize::try_from(pages)
            .ok()
            .filter(|n| n.checked_mul(PAGE_SIZE).is_some())
            .ok_or_else(|| self.corrupted(pgno, "extent length overflows"))?;
        let mut extent = zeroed_extent(n);
        let buf = extent_bytes_mut(&mut extent);
        self.file
            .read_exact_at(buf, pgno * PAGE_SIZE as u64)
            .map_err(|e| self.read_error(pgno, e))?;
        self.counters
            .bytes_read
            .fetch_add((n * PAGE_SIZE) as u64, Ordering::Relaxed);
        page::verify(buf, kind, pgno, Some(expected_crc))
            .map_err(|e| self.corrupted(pgno, format!("{kind:?} extent: {e}")))?;
        Ok(extent)
    }

    /// A read past the end of the file is corruption (a reference to a page never written),
    /// not an I/O failure.
    fn read_error(&self, pgno: u64, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            self.corrupted(pgno, "reference past the end of the file")
        } else {
            self.io_error(e)
        }
    }

    /// Starts writing sealed pages (any order) on the I/O threads, runs of consecutive pages
    /// in one vectored write each, and puts them in the cache. [`Pager::wait`] on `batch`
    /// waits for them.
    pub fn submit_pages(&self, mut pages: Vec<(u64, SharedPage)>, batch: &Arc<WriteBatch>) {
        pages.sort_unstable_by_key(|(pgno, _)| *pgno);
        if let Some(written) = self.written.lock().as_mut() {
            written.extend(pages.iter().map(|(pgno, page)| Written {
                pgno: *pgno,
                pages: 1,
                crc: page.stored_crc(),
            }));
        }
        const MAX_RUN: usize = 256;
        for (pgno, page) in &pages {
            cache_insert(&self.cache, *pgno, page.clone());
        }
        let mut run: Vec<SharedPage> = Vec::new();
        let mut start = 0u64;
        for (pgno, page) in pages {
            if !run.is_empty() && (pgno != start + run.len() as u64 || run.len() == MAX_RUN) {
                self.submit(start, Payload::Pages(std::mem::take(&mut run)), batch);
            }
            if run.is_empty() {
                start = pgno;
            }
            run.push(page);
        }
        if !run.is_empty() {
            self.submit(start, Payload::Pages(run), batch);
        }
    }

    /// Starts writing an extent at page `pgno` on the I/O threads.
    pub fn submit_extent(&self, pgno: u64, extent: Arc<Extent>, batch: &Arc<WriteBatch>) {
        if let Some(written) = self.written.lock().as_mut() {
            written.push(Written {
                pgno,
                pages: extent.len() as u32,
                crc: extent[0].stored_crc(),
            });
        }
        self.submit(pgno, Payload::Extent(extent), batch);
    }

    /// Starts writing a meta record into slot `slot` on the I/O threads, with `batch` (not
    /// cached, not recorded).
    pub fn submit_meta(&self, slot: u64, page: Box<PageBuf>, batch: &Arc<WriteBatch>) {
        self.submit(slot, Payload::Pages(vec![Arc::new(page)]), batch);
    }

    /// Starts recording the pages and extents written from now on (dropping any earlier
    /// record).
    pub fn record_writes(&self) {
        *self.written.lock() = Some(Vec::new());
    }

    /// Stops recording; returns what was written since [`Pager::record_writes`].
    pub fn take_written(&self) -> Option<Vec<Written>> {
        self.written.lock().take()
    }

    /// Whether the page or extent `w` is on disk as written: its header names its page and
    /// its checksum is the listed one and matches its bytes. A read past the end of the file
    /// is a no; an I/O error is an error.
    pub fn is_intact(&self, w: &Written) -> Result<bool> {
        let mut extent = crate::page::zeroed_extent(w.pages as usize);
        let bytes = crate::page::extent_bytes_mut(&mut extent);
        match self.file.read_exact_at(bytes, w.pgno * PAGE_SIZE as u64) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(self.io_error(e)),
        }
        let head = &extent[0];
        Ok(head.pgno() == w.pgno
            && head.stored_crc() == w.crc
            && crate::page::checksum(crate::page::extent_bytes(&extent)) == w.crc)
    }

    fn submit(&self, pgno: u64, payload: Payload, batch: &Arc<WriteBatch>) {
        let bytes = match &payload {
            Payload::Pages(p) => p.len() * PAGE_SIZE,
            Payload::Extent(e) => e.len() * PAGE_SIZE,
            Payload::Read(_) => 0,
        };
        self.counters
            .bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.writes_submitted.fetch_add(1, Ordering::Relaxed);
        batch.add();
        let job = Job {
            file: self.file.clone(),
            offset: pgno * PAGE_SIZE as u64,
            payload,
            batch: batch.clone(),
        };
        self.dispatch(job);
    }

    /// Hands a job to the `io_uring` executor, or to the I/O threads without it.
    fn dispatch(&self, job: Job) {
        let Some(uring) = &self.uring else {
            match &self.io {
                Some(threads) => {
                    if let Err(returned) = threads.sender.send(job) {
                        // The I/O threads are gone (they never stop while the pager lives).
                        returned.0.run();
                    }
                }
                None => job.run(),
            }
            return;
        };
        let Job {
            offset,
            payload,
            batch,
            file,
        } = job;
        let first_error = |results: &[(uring::Op, std::io::Result<()>)]| {
            results.iter().find_map(|(_, r)| {
                r.as_ref()
                    .err()
                    .map(|e| std::io::Error::new(e.kind(), e.to_string()))
            })
        };
        let (ops, done): (Vec<uring::Op>, uring::OnDone) = match payload {
            Payload::Pages(pages) => (
                vec![uring::Op::WritePages { offset, pages }],
                Box::new(move |results| batch.complete(first_error(&results))),
            ),
            Payload::Extent(extent) => (
                uring::extent_ops(offset, extent),
                Box::new(move |results| batch.complete(first_error(&results))),
            ),
            Payload::Read(read) => (
                read.refs
                    .iter()
                    .map(|r| uring::Op::Read {
                        offset: r.pgno * PAGE_SIZE as u64,
                        buf: PageBuf::scratch(),
                    })
                    .collect(),
                Box::new(move |results| {
                    let error = first_error(&results);
                    for ((op, result), r) in results.into_iter().zip(&read.refs) {
                        if let (uring::Op::Read { buf, .. }, Ok(())) = (op, result) {
                            read.admit(*r, buf);
                        }
                    }
                    batch.complete(error);
                }),
            ),
        };
        if let Err(returned) = uring.send(uring::Job { ops, done }) {
            // The executor is gone (it never stops while the pager lives): fail the job.
            let results = returned
                .0
                .ops
                .into_iter()
                .map(|op| (op, Err(std::io::Error::other("I/O executor stopped"))))
                .collect();
            (returned.0.done)(results);
        }
        drop(file);
    }

    /// Reads, many at once on the I/O threads, the pages of `refs` that are not in the cache,
    /// and puts those that pass their checks (of `kind`, and `validate`) in the cache. A page
    /// that fails its checks is left out, for the normal read to report; a read that fails
    /// is an I/O error like any other (it poisons the handle). At most half the cache is
    /// filled this way, so that prefetched pages are not evicted before they are used.
    pub fn prefetch(
        &self,
        refs: &[PageRef],
        kinds: (PageKind, PageKind),
        validate: fn(PageKind, &PageBuf) -> Result<(), String>,
    ) -> Result<()> {
        let budget = self.cache.capacity() / 2;
        let mut missing: Vec<PageRef> = refs
            .iter()
            .filter(|r| !self.cache.contains(r.pgno))
            .copied()
            .collect();
        if !missing.is_empty() {
            // Pages not yet written are not read from the file.
            let deferred = self.deferred.lock();
            if !deferred.is_empty() {
                missing.retain(|r| !deferred.contains_key(&r.pgno));
            }
        }
        missing.sort_unstable_by_key(|r| r.pgno);
        missing.dedup_by_key(|r| r.pgno);
        missing.truncate(budget);
        if missing.is_empty() {
            return Ok(());
        }
        let batch = WriteBatch::new();
        const PER_JOB: usize = 8;
        for chunk in missing.chunks(PER_JOB) {
            batch.add();
            let job = Job {
                file: self.file.clone(),
                offset: 0,
                payload: Payload::Read(Read {
                    refs: chunk.to_vec(),
                    kinds,
                    validate,
                    cache: self.cache.clone(),
                }),
                batch: batch.clone(),
            };
            self.dispatch(job);
        }
        self.counters
            .prefetched
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        self.wait(&batch)
    }

    /// Reads pages `start..start + buf.len()` in one read, for the preload (see
    /// [`crate::preload`]); the caller keeps the range within the file. A failed read is
    /// counted and returned but does not poison the handle: the preload reads free pages too,
    /// which nothing else would read, and it is only an optimisation.
    pub fn read_for_preload(&self, start: u64, buf: &mut [PageBuf]) -> std::io::Result<()> {
        let bytes = extent_bytes_mut(buf);
        self.counters
            .bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.file
            .read_exact_at(bytes, start * PAGE_SIZE as u64)
            .inspect_err(|_| {
                self.counters.preload_errors.fetch_add(1, Ordering::Relaxed);
            })
    }

    /// Writes submitted to the file so far (each write adds one): a preload read is the
    /// file's current bytes only if no write was submitted or in flight while it ran.
    pub fn writes_submitted(&self) -> u64 {
        self.writes_submitted.load(Ordering::Relaxed)
    }

    /// Caches each page of `buf` (pages `start..`, read by [`Pager::read_for_preload`] while
    /// no write could change them) that is a B+tree or trie page passing the checks a read
    /// from the file makes (its header and checksum, and `validate`), unless that page number
    /// is cached already or deferred (its bytes in the file are old), or the cache has no
    /// room for it: nothing is replaced or evicted. The caller holds the writer's lock.
    ///
    /// The pages are checked before the deferred pages' lock is taken, so that readers
    /// looking for a deferred page do not wait for the checksums.
    pub fn cache_preloaded(
        &self,
        start: u64,
        buf: &[PageBuf],
        validate: fn(PageKind, &PageBuf) -> Result<(), String>,
    ) -> Preloaded {
        let candidates: Vec<(u64, &PageBuf)> = (start..)
            .zip(buf.iter())
            .filter(|(pgno, page)| {
                PageKind::from_u8(page.bytes()[4]).is_some_and(|kind| {
                    matches!(
                        kind,
                        PageKind::BranchNode | PageKind::LeafNode | PageKind::Trie
                    ) && !self.cache.contains(*pgno)
                        && page::verify(page.bytes(), kind, *pgno, None).is_ok()
                        && validate(kind, page).is_ok()
                })
            })
            .collect();
        let deferred = self.deferred.lock();
        let mut out = Preloaded::default();
        for (pgno, page) in candidates {
            if deferred.contains_key(&pgno) {
                continue;
            }
            let mut copy = PageBuf::scratch();
            copy.bytes_mut().copy_from_slice(page.bytes());
            match self.cache.insert_if_room(pgno, Arc::new(copy)) {
                None => out.cached += 1,
                Some(back) => {
                    // Taken meanwhile by a reader's copy, or no room in its shard.
                    out.no_room |= !self.cache.contains(pgno);
                    recycle(back);
                }
            }
        }
        self.counters
            .preloaded
            .fetch_add(out.cached, Ordering::Relaxed);
        out
    }

    /// The page cache, for tests that arrange what it holds.
    #[cfg(test)]
    pub fn page_cache(&self) -> &PageCache {
        &self.cache
    }

    /// The most pages the cache holds.
    pub fn cache_capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// The pages `refs` point to (each of kind `kinds.0` or `kinds.1`, checked as by
    /// [`Pager::read_either`]), in order: those in the cache at once, the others read many
    /// at a time first ([`Pager::prefetch`]). One cache lookup for a cached page, where a
    /// read-ahead and then a read would take two.
    pub fn read_many(
        &self,
        refs: &[PageRef],
        kinds: (PageKind, PageKind),
        validate: fn(PageKind, &PageBuf) -> Result<(), String>,
    ) -> Result<Vec<SharedPage>> {
        let (a, b) = kinds;
        let mut out: Vec<Option<SharedPage>> = Vec::with_capacity(refs.len());
        let mut missing: Vec<PageRef> = Vec::new();
        for r in refs {
            let hit = self.cache.get(r.pgno).filter(|p| {
                let k = p.bytes()[4];
                p.stored_crc() == r.crc && (k == a as u8 || k == b as u8)
            });
            if hit.is_none() {
                missing.push(*r);
            }
            out.push(hit);
        }
        let hits = (refs.len() - missing.len()) as u64;
        self.counters.cache_hits.fetch_add(hits, Ordering::Relaxed);
        if !missing.is_empty() {
            self.prefetch(&missing, kinds, validate)?;
        }
        refs.iter()
            .zip(out)
            .map(|(r, page)| match page {
                Some(p) => Ok(p),
                None => self.read_either(*r, a, b, validate),
            })
            .collect()
    }

    /// Waits for every write of `batch`; the first failure poisons the handle.
    pub fn wait(&self, batch: &Arc<WriteBatch>) -> Result<()> {
        match batch.wait() {
            Some(e) => Err(self.io_error(e)),
            None => Ok(()),
        }
    }

    /// Writes sealed pages and waits for them.
    #[cfg(test)]
    pub fn write_pages(&self, pages: Vec<(u64, SharedPage)>) -> Result<()> {
        self.check_poisoned()?;
        let batch = WriteBatch::new();
        self.submit_pages(pages, &batch);
        self.wait(&batch)
    }

    /// Writes one page outside the cache (meta slots), and waits for it.
    pub fn write_uncached(&self, pgno: u64, page: &PageBuf) -> Result<()> {
        self.check_poisoned()?;
        self.writes_submitted.fetch_add(1, Ordering::Relaxed);
        self.file
            .write_all_at(page.bytes(), pgno * PAGE_SIZE as u64)
            .map_err(|e| self.io_error(e))?;
        self.counters
            .bytes_written
            .fetch_add(PAGE_SIZE as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Makes all writes so far durable.
    pub fn sync(&self) -> Result<()> {
        self.check_poisoned()?;
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data().map_err(|e| self.io_error(e))
    }

    /// The file length in pages.
    pub fn file_pages(&self) -> Result<u64> {
        Ok(self.file.size().map_err(|e| self.io_error(e))? / PAGE_SIZE as u64)
    }

    /// Forgets the deferred copies of the pages of `runs` (`(first page, pages)`), which were
    /// just freed; their cached copies go later ([`Pager::forget_cached_before`]).
    pub fn forget_deferred(&self, runs: &[(u64, u64)]) {
        let mut deferred = self.deferred.lock();
        if deferred.is_empty() {
            return;
        }
        for &(start, len) in runs {
            for pgno in start..start + len {
                deferred.remove(&pgno);
            }
        }
    }

    /// Makes the cached pages of `runs`, which the commit under way replaces, the first
    /// the cache evicts: the pages the commit writes then take their room, not that of the
    /// pages the next block reads. They leave the cache when the commit's writes are done
    /// ([`Pager::forget_cached_before`]).
    pub fn demote_cached(&self, runs: &[(u64, u64)]) {
        for &(start, len) in runs {
            for pgno in start..start + len {
                self.cache.demote(pgno);
            }
        }
    }

    /// Drops from the cache the pages of `runs` whose cached copy was written before commit
    /// `seq`: pages freed when that commit began and not written again by it. Until then
    /// their old copies are harmless: no state that can be read names them, and a page
    /// written again is cached over its old copy.
    pub fn forget_cached_before(&self, runs: &[(u64, u64)], seq: u64) {
        for &(start, len) in runs {
            for pgno in start..start + len {
                if let Some(page) = self.cache.remove_if(pgno, |p| p.seq() < seq) {
                    recycle(page);
                }
            }
        }
    }

    /// Keeps sealed pages in memory instead of writing them (a commit made durable by the
    /// write-ahead log): they are cached, and found by reads until [`Pager::flush_deferred`]
    /// writes them.
    pub fn defer_pages(&self, pages: Vec<(u64, SharedPage)>) {
        let mut deferred = self.deferred.lock();
        for (pgno, page) in pages {
            cache_insert(&self.cache, pgno, page.clone());
            deferred.insert(
                pgno,
                Deferred {
                    page,
                    freed_by: None,
                },
            );
        }
    }

    /// A deferred page, put back in the cache (a read that missed it).
    fn deferred_page(&self, pgno: u64) -> Option<SharedPage> {
        let page = {
            let deferred = self.deferred.lock();
            deferred.get(&pgno)?.page.clone()
        };
        self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
        cache_insert(&self.cache, pgno, page.clone());
        Some(page)
    }

    /// Pages not yet written.
    pub fn deferred_count(&self) -> usize {
        self.deferred.lock().len()
    }

    /// Notes that commit `seq` freed the pages `runs`: those still deferred need not be
    /// written once no reader holds a state older than `seq`.
    pub fn deferred_freed(&self, runs: &[(u64, u64)], seq: u64) {
        let mut deferred = self.deferred.lock();
        if deferred.is_empty() {
            return;
        }
        for &(start, len) in runs {
            for p in start..start + len {
                if let Some(d) = deferred.get_mut(&p) {
                    d.freed_by = Some(seq);
                }
            }
        }
    }

    /// Drops deferred pages that a failed commit made (their page numbers go back to the
    /// free space).
    pub fn undefer(&self, pgnos: &[u64]) {
        let mut deferred = self.deferred.lock();
        for p in pgnos {
            if deferred.remove(p).is_some()
                && let Some(page) = self.cache.remove(*p)
            {
                recycle(page);
            }
        }
    }

    /// Starts writing every deferred page with `batch` (a checkpoint, or a commit made
    /// durable in place), but those freed by a commit no newer than `oldest_reader`: no
    /// state that anyone can read holds them. Returns the pages submitted.
    pub fn flush_deferred(&self, batch: &Arc<WriteBatch>, oldest_reader: u64) -> usize {
        let taken = std::mem::take(&mut *self.deferred.lock());
        let pages: Vec<(u64, SharedPage)> = taken
            .into_iter()
            .filter(|(_, d)| d.freed_by.is_none_or(|s| s > oldest_reader))
            .map(|(pgno, d)| (pgno, d.page))
            .collect();
        let n = pages.len();
        if n > 0 {
            self.submit_pages(pages, batch);
        }
        n
    }
}

/// A page kept in memory until a checkpoint writes it.
#[derive(Debug)]
struct Deferred {
    page: SharedPage,
    /// The commit that freed it, if one did.
    freed_by: Option<u64>,
}

/// Caches a page, recycling the buffers of the pages that leave the cache.
fn cache_insert(cache: &PageCache, pgno: u64, page: SharedPage) {
    for old in cache.insert(pgno, page) {
        recycle(old);
    }
}

/// Recycles the buffer of a page leaving the cache, when nothing else holds it.
fn recycle(page: SharedPage) {
    if let Ok(page) = Arc::try_unwrap(page) {
        PageBuf::recycle(page);
    }
}

/// Threads that carry out reads ahead and writes, so that a commit's pages go to the device
/// while it goes on computing, and many reads and writes are in flight at once (direct I/O
/// blocks until the device has answered: random 4 KiB reads reach about 14,000 per second one
/// at a time and about 100,000 per second 64 at a time here).
const IO_THREADS: usize = 64;
/// I/O threads for storage without a file descriptor.
const IO_THREADS_NO_FD: usize = 4;

#[derive(Debug)]
enum Payload {
    Pages(Vec<SharedPage>),
    Extent(Arc<Extent>),
    Read(Read),
}

/// Pages to read ahead into the cache.
struct Read {
    refs: Vec<PageRef>,
    kinds: (PageKind, PageKind),
    validate: fn(PageKind, &PageBuf) -> Result<(), String>,
    cache: Arc<PageCache>,
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Read({} pages)", self.refs.len())
    }
}

impl Read {
    fn run(&self, file: &dyn StorageFile) -> std::io::Result<()> {
        for r in &self.refs {
            let mut page = PageBuf::scratch();
            file.read_exact_at(page.bytes_mut(), r.pgno * PAGE_SIZE as u64)?;
            self.admit(*r, page);
        }
        Ok(())
    }

    /// Caches a page read ahead if it passes its checks.
    fn admit(&self, r: PageRef, page: Box<PageBuf>) {
        let (a, b) = self.kinds;
        let kind = if page.bytes()[4] == b as u8 { b } else { a };
        if page::verify(page.bytes(), kind, r.pgno, Some(r.crc)).is_ok()
            && (self.validate)(kind, &page).is_ok()
        {
            cache_insert(&self.cache, r.pgno, Arc::new(page));
        }
    }
}

#[derive(Debug)]
struct Job {
    file: Arc<dyn StorageFile>,
    offset: u64,
    payload: Payload,
    batch: Arc<WriteBatch>,
}

impl Job {
    fn run(self) {
        let result = match &self.payload {
            Payload::Pages(pages) => {
                let bufs: Vec<&[u8]> = pages.iter().map(|p| &p.bytes()[..]).collect();
                self.file.write_vectored_at(&bufs, self.offset)
            }
            Payload::Extent(extent) => self.file.write_all_at(extent_bytes(extent), self.offset),
            Payload::Read(read) => read.run(&*self.file),
        };
        self.batch.complete(result.err());
    }
}

#[derive(Debug)]
struct IoThreads {
    sender: mpsc::Sender<Job>,
}

impl IoThreads {
    fn start(n: usize) -> Self {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..n {
            let receiver = receiver.clone();
            // The threads end when the sender (the pager) is dropped.
            let _ = std::thread::Builder::new()
                .name(format!("bmt-io-{i}"))
                .spawn(move || {
                    loop {
                        let job = receiver.lock().recv();
                        match job {
                            Ok(job) => job.run(),
                            Err(_) => return,
                        }
                    }
                });
        }
        IoThreads { sender }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::io::{MemStorage, Storage};

    fn pager(cache_bytes: u64) -> Pager {
        let storage = MemStorage::new();
        let file = storage.open(Path::new("/db/data"), true, true).unwrap();
        Pager::new(
            file,
            Path::new("/db/data"),
            cache_bytes,
            Arc::new(AtomicBool::new(false)),
        )
    }

    /// A sealed page of `kind` at `pgno`, its bytes marked with `tag`; and its reference.
    fn page(kind: PageKind, pgno: u64, tag: u8) -> (SharedPage, PageRef) {
        let mut p = PageBuf::scratch();
        p.bytes_mut().fill(0);
        p.bytes_mut()[100] = tag;
        let crc = p.seal(kind, 100, 1, pgno);
        (Arc::new(p), PageRef { pgno, crc })
    }

    fn accept(_: PageKind, _: &PageBuf) -> Result<(), String> {
        Ok(())
    }

    fn tag(pager: &Pager, r: PageRef) -> u8 {
        pager
            .read_with(r, PageKind::LeafNode, |_| Ok(()))
            .unwrap()
            .bytes()[100]
    }

    #[test]
    fn preloading_caches_only_what_the_file_holds_for_the_current_state() {
        let pager = pager(1 << 20);
        // Pages 2..10 in the file: leaves, then page 6 a free-list page and page 7 damaged.
        let mut pages: Vec<(u64, SharedPage)> = (2..10)
            .map(|pgno| (pgno, page(PageKind::LeafNode, pgno, pgno as u8).0))
            .collect();
        pages[4].1 = page(PageKind::FreeList, 6, 6).0;
        pager.write_pages(pages).unwrap();
        let mut damaged = PageBuf::scratch();
        damaged
            .bytes_mut()
            .copy_from_slice(page(PageKind::LeafNode, 7, 7).0.bytes());
        damaged.bytes_mut()[200] ^= 1;
        pager.write_uncached(7, &damaged).unwrap();
        for pgno in 2..10 {
            pager.cache.remove(pgno);
        }
        // Page 3 is cached with newer bytes than the file's (a reader's copy is never
        // replaced); page 4 is held back by the write-ahead log and was evicted since (the
        // file's bytes at 4 are old: they must not come back).
        let (new3, ref3) = page(PageKind::LeafNode, 3, 33);
        pager.cache.insert(3, new3);
        let (new4, ref4) = page(PageKind::LeafNode, 4, 44);
        pager.defer_pages(vec![(4, new4)]);
        pager.cache.remove(4);

        let mut buf = zeroed_extent(8);
        pager.read_for_preload(2, &mut buf).unwrap();
        let done = pager.cache_preloaded(2, &buf, accept);
        // 2, 5, 8, 9: not 3 (cached), 4 (deferred), 6 (not a tree page), 7 (damaged).
        assert_eq!(
            done,
            Preloaded {
                cached: 4,
                no_room: false
            }
        );
        assert_eq!(pager.counters.snapshot().pages_preloaded, 4);
        for pgno in [2, 5, 8, 9] {
            assert!(pager.cache.contains(pgno), "{pgno}");
        }
        for pgno in [4, 6, 7] {
            assert!(!pager.cache.contains(pgno), "{pgno}");
        }
        assert_eq!(tag(&pager, ref3), 33);
        assert_eq!(tag(&pager, ref4), 44);
        let misses = pager.counters.snapshot().page_cache_misses;
        assert_eq!(tag(&pager, page(PageKind::LeafNode, 8, 8).1), 8);
        assert_eq!(pager.counters.snapshot().page_cache_misses, misses);

        // Pages failing the structure's own check stay out.
        for pgno in 2..10 {
            pager.cache.remove(pgno);
        }
        let reject = |_: PageKind, _: &PageBuf| Err("no".to_string());
        assert_eq!(pager.cache_preloaded(2, &buf, reject), Preloaded::default());
    }

    #[test]
    fn freed_pages_leave_the_cache_unless_the_commit_wrote_them_again() {
        let pager = pager(1 << 20);
        // Pages 2..6 cached as written by commit 1; then pages 4 and 5 are written again by
        // commit 3 (the commit that freed 2..6 reused them), and 4 is also deferred.
        for pgno in 2..6 {
            pager
                .cache
                .insert(pgno, page(PageKind::LeafNode, pgno, 1).0);
        }
        let again = |pgno: u64| {
            let mut p = PageBuf::scratch();
            p.bytes_mut().fill(0);
            p.seal(PageKind::LeafNode, 100, 3, pgno);
            Arc::new(p)
        };
        pager.cache.insert(5, again(5));
        pager.defer_pages(vec![(4, again(4))]);
        pager.forget_deferred(&[(2, 2)]);
        assert!(pager.deferred.lock().contains_key(&4));
        pager.forget_deferred(&[(4, 1)]);
        assert!(!pager.deferred.lock().contains_key(&4));
        pager.forget_cached_before(&[(2, 4)], 3);
        for pgno in [2, 3] {
            assert!(!pager.cache.contains(pgno), "{pgno}");
        }
        for pgno in [4, 5] {
            assert_eq!(pager.cache.get(pgno).unwrap().seq(), 3, "{pgno}");
        }
    }

    #[test]
    fn preloading_never_evicts() {
        // 16 pages of cache (the least), 64 pages in the file.
        let pager = pager(64 << 10);
        let pages: Vec<(u64, SharedPage)> = (2..66)
            .map(|pgno| (pgno, page(PageKind::LeafNode, pgno, 1).0))
            .collect();
        pager.write_pages(pages).unwrap();
        // The writes cached what fits; the preload finds no room and replaces nothing.
        let before: Vec<u64> = (2..66).filter(|p| pager.cache.contains(*p)).collect();
        let mut buf = zeroed_extent(64);
        pager.read_for_preload(2, &mut buf).unwrap();
        let done = pager.cache_preloaded(2, &buf, accept);
        assert_eq!(done.cached, 0);
        assert!(done.no_room);
        let after: Vec<u64> = (2..66).filter(|p| pager.cache.contains(*p)).collect();
        assert_eq!(before, after);
    }
}
