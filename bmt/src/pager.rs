//! Page I/O for the data file: checked reads through a bounded cache, batched writes, and
//! the poisoning rule (any I/O error stops the handle).
//!
//! Pages are copy-on-write, so a page number names fixed content for as long as anything can
//! reach it: the cache is keyed by page number and never needs invalidating, only overwriting
//! when a freed page is reused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::io::StorageFile;
use crate::page::{self, PAGE_SIZE, PageBuf, PageKind, PageRef};

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
}

/// The data file with its page cache.
#[derive(Debug)]
pub struct Pager {
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    cache: quick_cache::sync::Cache<u64, Arc<PageBuf>>,
    poisoned: Arc<AtomicBool>,
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
        Pager {
            file,
            path: path.to_path_buf(),
            cache: quick_cache::sync::Cache::new(items),
            poisoned,
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

    /// Wraps an I/O error and poisons the handle.
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
    ) -> Result<Arc<PageBuf>> {
        if let Some(page) = self.cache.get(&r.pgno) {
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
        self.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        let page = self.read_uncached(r.pgno, kind, Some(r.crc))?;
        validate(&page).map_err(|e| self.corrupted(r.pgno, format!("{kind:?} page: {e}")))?;
        let page: Arc<PageBuf> = Arc::from(page);
        self.cache.insert(r.pgno, page.clone());
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
    ) -> Result<Arc<PageBuf>> {
        if let Some(page) = self.cache.get(&r.pgno) {
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
        self.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        self.check_poisoned()?;
        let mut page = PageBuf::zeroed();
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
        let page: Arc<PageBuf> = Arc::from(page);
        self.cache.insert(r.pgno, page.clone());
        Ok(page)
    }

    /// Reads and checks page `pgno` without the cache (meta slots, recovery).
    pub fn read_uncached(
        &self,
        pgno: u64,
        kind: PageKind,
        expected_crc: Option<u32>,
    ) -> Result<Box<PageBuf>> {
        self.check_poisoned()?;
        let mut page = PageBuf::zeroed();
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
        let mut page = PageBuf::zeroed();
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
    ) -> Result<Vec<u8>> {
        self.check_poisoned()?;
        let len = pages
            .checked_mul(PAGE_SIZE as u64)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| self.corrupted(pgno, "extent length overflows"))?;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, pgno * PAGE_SIZE as u64)
            .map_err(|e| self.read_error(pgno, e))?;
        self.counters
            .bytes_read
            .fetch_add(len as u64, Ordering::Relaxed);
        page::verify(&buf, kind, pgno, Some(expected_crc))
            .map_err(|e| self.corrupted(pgno, format!("{kind:?} extent: {e}")))?;
        Ok(buf)
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

    /// Writes sealed pages (any order), coalescing runs of consecutive pages, and puts them in
    /// the cache.
    pub fn write_pages(&self, mut pages: Vec<(u64, Arc<PageBuf>)>) -> Result<()> {
        self.check_poisoned()?;
        pages.sort_unstable_by_key(|(pgno, _)| *pgno);
        const MAX_RUN: usize = 256;
        let mut i = 0;
        let mut buf: Vec<u8> = Vec::new();
        while i < pages.len() {
            let mut j = i + 1;
            while j < pages.len() && j - i < MAX_RUN && pages[j].0 == pages[j - 1].0 + 1 {
                j += 1;
            }
            let offset = pages[i].0 * PAGE_SIZE as u64;
            if j - i == 1 {
                self.file
                    .write_all_at(pages[i].1.bytes(), offset)
                    .map_err(|e| self.io_error(e))?;
            } else {
                buf.clear();
                for (_, p) in &pages[i..j] {
                    buf.extend_from_slice(p.bytes());
                }
                self.file
                    .write_all_at(&buf, offset)
                    .map_err(|e| self.io_error(e))?;
            }
            self.counters
                .bytes_written
                .fetch_add(((j - i) * PAGE_SIZE) as u64, Ordering::Relaxed);
            i = j;
        }
        for (pgno, page) in pages {
            self.cache.insert(pgno, page);
        }
        Ok(())
    }

    /// Writes raw bytes (an extent) at page `pgno`.
    pub fn write_extent(&self, pgno: u64, bytes: &[u8]) -> Result<()> {
        self.check_poisoned()?;
        self.file
            .write_all_at(bytes, pgno * PAGE_SIZE as u64)
            .map_err(|e| self.io_error(e))?;
        self.counters
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Writes one page outside the cache (meta slots).
    pub fn write_uncached(&self, pgno: u64, page: &PageBuf) -> Result<()> {
        self.write_extent(pgno, page.bytes())
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

    /// Drops a page from the cache (when it is freed).
    pub fn forget(&self, pgno: u64) {
        self.cache.remove(&pgno);
    }
}
