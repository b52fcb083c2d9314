//! The page cache: checked pages by page number, a fixed number of them, shared by readers
//! and commits.
//!
//! Why not a general-purpose cache crate: a warm `get` is a chain of dependent memory loads,
//! and at 2^20 keys and more each one is a likely CPU cache miss (about 200 ns on this
//! machine). A general cache answers a hit with a clone of the stored `Arc`: find the slot,
//! load the entry it points to, increment the `Arc`'s count (a locked write to a third cache
//! line), follow the `Arc` to the `Box`, and only then load the page. Here a hit is one load
//! from a dense array indexed by page number (the [`PageIndex`]: eight bytes per page of the
//! file, the page's address with its use count in the low bits), then the page itself, and
//! [`PageCache::with`] lends the page under its shard's read lock without touching its
//! reference count. The array is small enough to stay in the CPU's caches (240 KiB for a
//! 2^20-key database) where a hash table's control bytes and slots (about four times that,
//! two cache lines per probe) did not: its slot load was a quarter of a warm leaf visit.
//!
//! Each shard's hash map owns the pages (their `Arc`s); the index only mirrors it, and both
//! change together under the shard's write lock. A reader holds the shard's read lock while it
//! uses a page it found in the index, so the page cannot be evicted under it.
//!
//! Eviction is CLOCK with a small use count: a hit raises a page's count (up to 3); when a
//! shard is full, the hand goes round its pages in insertion order, lowering counts and
//! evicting the first page at zero. A page read once (a commit's new pages, a read-ahead
//! nobody used) is evicted on the hand's first visit, except a trie page, which starts with a
//! count of 31 (see [`entry_of`]); the upper pages of the trees, used by every lookup, stay.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::page::{PageBuf, SharedPage};

/// Shards: independent locks, so that readers and a commit's I/O threads rarely meet.
const SHARDS: usize = 16;
/// The highest use count hits raise a page to.
const MAX_USES: usize = 3;
/// The use count a trie page starts with (see [`entry_of`]).
const TRIE_START_USES: usize = 31;
/// The low bits of an index entry that hold the use count (a page's address is 4096-aligned).
const USES_MASK: usize = 31;
const _: () = assert!(MAX_USES <= USES_MASK && TRIE_START_USES <= USES_MASK);
const _: () = assert!(std::mem::align_of::<PageBuf>() > USES_MASK);
/// Page numbers per chunk of the index: 16,384 (64 MiB of file), 128 KiB of entries.
const CHUNK_BITS: u32 = 14;
/// Chunks of the index: page numbers below 2^28 (a file of 1 TiB) are cached; a page beyond is
/// read from the device each time (no database of this design comes near).
const CHUNKS: usize = 1 << 14;

/// Where each cached page is, by page number: the page's address with its use count in the
/// low two bits, or 0 when the page is not cached. Chunks are allocated as the file grows
/// into them and kept until the cache is dropped.
struct PageIndex {
    chunks: Box<[OnceLock<Box<[AtomicUsize]>>]>,
}

impl PageIndex {
    fn new() -> Self {
        PageIndex {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }

    fn split(pgno: u64) -> Option<(usize, usize)> {
        let chunk = usize::try_from(pgno >> CHUNK_BITS).ok()?;
        let at = (pgno & ((1 << CHUNK_BITS) - 1)) as usize;
        (chunk < CHUNKS).then_some((chunk, at))
    }

    /// Page `pgno`'s entry, if its chunk exists.
    fn entry(&self, pgno: u64) -> Option<&AtomicUsize> {
        let (chunk, at) = Self::split(pgno)?;
        self.chunks[chunk].get()?.get(at)
    }

    /// Page `pgno`'s entry, its chunk allocated if need be; `None` past the last chunk.
    fn entry_or_create(&self, pgno: u64) -> Option<&AtomicUsize> {
        let (chunk, at) = Self::split(pgno)?;
        self.chunks[chunk]
            .get_or_init(|| (0..1 << CHUNK_BITS).map(|_| AtomicUsize::new(0)).collect())
            .get(at)
    }
}

/// The entry of a page just cached: its address, and no uses yet, except for a trie page.
///
/// A trie page starts with uses to spare, so that it outlives several rounds of the clock
/// without a hit. The stored trie is small next to the flat store (at 2^24 keys, about 33,000
/// pages against 300,000 leaves) but each of its lowest pages is used by a commit every few
/// commits, and each use writes a new copy at a new page number, cached afresh with no hits:
/// starting at zero, a rewritten trie page was evicted by the flood of each commit's leaves
/// before its next use, and about half the pages a 10,000-update commit read at 2^24 keys
/// were trie pages read again. Leaves, used once every few dozen commits, gain little from
/// staying. Measured per 10,000-update commit at 2^24 keys (trie pages read from the device):
/// 2,000 to 2,500 starting at 7, about 1,000 at 15, 300 to 1,000 at 31. Pages nobody uses
/// still go after 31 rounds.
fn entry_of(page: &SharedPage) -> usize {
    let bytes: &PageBuf = page;
    let uses = if bytes.bytes()[4] == crate::page::PageKind::Trie as u8 {
        TRIE_START_USES
    } else {
        0
    };
    std::ptr::from_ref(bytes) as usize | uses
}

#[derive(Default)]
struct Shard {
    /// The cached pages; [`PageIndex`] holds the address of each (and nothing else).
    pages: FxHashMap<u64, SharedPage>,
    /// Page numbers in the hand's order; may hold numbers since removed (skipped) or twice.
    clock: VecDeque<u64>,
}

impl Shard {
    /// Evicts one page, returning it (`index`: the cache's, whose entries for this shard's
    /// pages the caller may change: it holds the shard's write lock).
    fn evict_one(&mut self, index: &PageIndex) -> Option<SharedPage> {
        // Each turn lowers a count or evicts, and a count is at most USES_MASK, so this ends
        // within (USES_MASK + 1) rounds of the clock.
        while let Some(pgno) = self.clock.pop_front() {
            if !self.pages.contains_key(&pgno) {
                continue;
            }
            // Every cached page has an entry (inserted with it).
            let entry = index.entry(pgno)?;
            let v = entry.load(Ordering::Relaxed);
            if v & USES_MASK > 0 {
                entry.store(v - 1, Ordering::Relaxed);
                self.clock.push_back(pgno);
                continue;
            }
            entry.store(0, Ordering::Relaxed);
            return self.pages.remove(&pgno);
        }
        None
    }

    /// Removes page `pgno` (the caller holds the shard's write lock).
    fn remove(&mut self, index: &PageIndex, pgno: u64) -> Option<SharedPage> {
        let page = self.pages.remove(&pgno)?;
        if let Some(entry) = index.entry(pgno) {
            entry.store(0, Ordering::Relaxed);
        }
        self.compact_clock();
        Some(page)
    }

    /// Drops the clock's stale entries once they outnumber the pages (after many removals).
    fn compact_clock(&mut self) {
        if self.clock.len() > 2 * self.pages.len() + 64 {
            let mut seen = rustc_hash::FxHashSet::default();
            let pages = &self.pages;
            self.clock
                .retain(|p| pages.contains_key(p) && seen.insert(*p));
        }
    }
}

/// Pages by page number, at most about `capacity` of them.
pub struct PageCache {
    shards: Box<[RwLock<Shard>]>,
    index: PageIndex,
    shard_capacity: usize,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageCache({} pages at most)", self.capacity())
    }
}

impl PageCache {
    /// A cache of at most `capacity` pages (at least one per shard).
    pub fn new(capacity: usize) -> Self {
        let shard_capacity = capacity.div_ceil(SHARDS).max(1);
        PageCache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            index: PageIndex::new(),
            shard_capacity,
        }
    }

    /// The most pages the cache holds.
    pub fn capacity(&self) -> usize {
        self.shard_capacity * SHARDS
    }

    fn shard(&self, pgno: u64) -> &RwLock<Shard> {
        // Page numbers are dense: mix them so that neighbours spread over the shards.
        let h = pgno.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60;
        &self.shards[h as usize % SHARDS]
    }

    /// Raises the use count in `entry` (a nonzero entry read under its shard's read lock).
    fn touch(entry: &AtomicUsize, v: usize) {
        // A racy increment is fine: the count is a hint for eviction, and the address part
        // cannot change while the read lock is held (only writers change it).
        if v & USES_MASK < MAX_USES {
            entry.store(v + 1, Ordering::Relaxed);
        }
    }

    /// Calls `f` with page `pgno` if it is cached, under its shard's read lock (`f` must not
    /// use the cache).
    pub fn with<R>(&self, pgno: u64, f: impl FnOnce(&PageBuf) -> R) -> Option<R> {
        let _shard = self.shard(pgno).read();
        let entry = self.index.entry(pgno)?;
        let v = entry.load(Ordering::Relaxed);
        if v == 0 {
            return None;
        }
        Self::touch(entry, v);
        // SAFETY: a nonzero entry is the address of the box of a page that the shard's map
        // holds (entries and map change together under the shard's write lock, and we hold
        // its read lock until `f` returns), so the box is alive for the whole borrow; a shared
        // page's box is never written.
        let page = unsafe { &*((v & !USES_MASK) as *const PageBuf) };
        Some(f(page))
    }

    /// Page `pgno`, if cached.
    pub fn get(&self, pgno: u64) -> Option<SharedPage> {
        let shard = self.shard(pgno).read();
        let page = shard.pages.get(&pgno)?;
        if let Some(entry) = self.index.entry(pgno) {
            Self::touch(entry, entry.load(Ordering::Relaxed));
        }
        Some(page.clone())
    }

    /// Whether page `pgno` is cached (without counting a use).
    pub fn contains(&self, pgno: u64) -> bool {
        self.shard(pgno).read().pages.contains_key(&pgno)
    }

    /// Caches `page` as page `pgno`, replacing what was cached there; returns the pages that
    /// left the cache (for their buffers to be reused): `page` itself if its number is past
    /// what the cache indexes.
    pub fn insert(&self, pgno: u64, page: SharedPage) -> Vec<SharedPage> {
        let mut out = Vec::new();
        let Some(entry) = self.index.entry_or_create(pgno) else {
            out.push(page);
            return out;
        };
        let mut shard = self.shard(pgno).write();
        if let Some(slot) = shard.pages.get_mut(&pgno) {
            entry.store(entry_of(&page), Ordering::Relaxed);
            out.push(std::mem::replace(slot, page));
            return out;
        }
        while shard.pages.len() >= self.shard_capacity {
            match shard.evict_one(&self.index) {
                Some(p) => out.push(p),
                None => break,
            }
        }
        entry.store(entry_of(&page), Ordering::Relaxed);
        shard.pages.insert(pgno, page);
        shard.clock.push_back(pgno);
        shard.compact_clock();
        out
    }

    /// Caches `page` as page `pgno` only if nothing is cached there and its shard has room:
    /// nothing is replaced or evicted. Gives the page back when it was not cached.
    pub fn insert_if_room(&self, pgno: u64, page: SharedPage) -> Option<SharedPage> {
        let Some(entry) = self.index.entry_or_create(pgno) else {
            return Some(page);
        };
        let mut shard = self.shard(pgno).write();
        if shard.pages.len() >= self.shard_capacity || shard.pages.contains_key(&pgno) {
            return Some(page);
        }
        entry.store(entry_of(&page), Ordering::Relaxed);
        shard.pages.insert(pgno, page);
        shard.clock.push_back(pgno);
        shard.compact_clock();
        None
    }

    /// Makes page `pgno`, if cached, the next page its shard evicts, unless it is used again
    /// first: a page the commit under way replaces. (Not removed: readers of older states
    /// may still use it, and it may be the only copy while its write is in flight; see
    /// [`crate::pager::Pager::forget_cached_before`].)
    pub fn demote(&self, pgno: u64) {
        let mut shard = self.shard(pgno).write();
        if !shard.pages.contains_key(&pgno) {
            return;
        }
        if let Some(entry) = self.index.entry(pgno) {
            let v = entry.load(Ordering::Relaxed);
            entry.store(v & !USES_MASK, Ordering::Relaxed);
        }
        // The page's other place in the clock stays (a page may be there twice).
        shard.clock.push_front(pgno);
        shard.compact_clock();
    }

    /// Removes page `pgno`, returning it.
    pub fn remove(&self, pgno: u64) -> Option<SharedPage> {
        self.shard(pgno).write().remove(&self.index, pgno)
    }

    /// Removes the page `pgno` if `stale` says so of its bytes.
    pub fn remove_if(&self, pgno: u64, stale: impl Fn(&PageBuf) -> bool) -> Option<SharedPage> {
        let mut shard = self.shard(pgno).write();
        if !shard.pages.get(&pgno).is_some_and(|p| stale(p)) {
            return None;
        }
        shard.remove(&self.index, pgno)
    }

    /// The number of cached pages.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().pages.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn page(tag: u8) -> SharedPage {
        let mut p = PageBuf::zeroed();
        p.bytes_mut()[100] = tag;
        Arc::new(p)
    }

    #[test]
    fn holds_at_most_its_capacity_and_gives_back_what_it_evicts() {
        let cache = PageCache::new(64);
        let mut evicted = 0;
        for pgno in 0..1000u64 {
            evicted += cache.insert(pgno, page(pgno as u8)).len();
            assert!(cache.len() <= cache.capacity());
        }
        assert_eq!(cache.len() + evicted, 1000);
        // What is cached is what was inserted under that number.
        for pgno in 0..1000u64 {
            if let Some(b) = cache.with(pgno, |p| p.bytes()[100]) {
                assert_eq!(b, pgno as u8);
                assert_eq!(cache.get(pgno).map(|p| p.bytes()[100]), Some(pgno as u8));
            }
        }
    }

    #[test]
    fn replacing_and_removing_a_page() {
        let cache = PageCache::new(64);
        assert!(cache.insert(7, page(1)).is_empty());
        let old = cache.insert(7, page(2));
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].bytes()[100], 1);
        assert_eq!(cache.with(7, |p| p.bytes()[100]), Some(2));
        assert!(cache.contains(7));
        assert_eq!(cache.remove(7).map(|p| p.bytes()[100]), Some(2));
        assert!(!cache.contains(7));
        assert!(cache.with(7, |_| ()).is_none());
        assert!(cache.remove(7).is_none());
    }

    #[test]
    fn pages_far_apart_and_past_the_index() {
        // Pages in different chunks of the index, including the last one, are cached; a
        // page number past the index (or one no file reaches, as a corrupted reference may
        // hold) is given back uncached, and looking it up finds nothing.
        let cache = PageCache::new(64);
        let last = ((CHUNKS as u64) << CHUNK_BITS) - 1;
        for (tag, pgno) in [
            (1, 0),
            (2, 1 << CHUNK_BITS),
            (3, 5 << CHUNK_BITS | 17),
            (4, last),
        ] {
            assert!(cache.insert(pgno, page(tag)).is_empty());
            assert_eq!(cache.with(pgno, |p| p.bytes()[100]), Some(tag));
        }
        for pgno in [last + 1, u64::MAX] {
            let back = cache.insert(pgno, page(9));
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].bytes()[100], 9);
            assert!(cache.insert_if_room(pgno, page(9)).is_some());
            assert!(cache.with(pgno, |_| ()).is_none());
            assert!(cache.get(pgno).is_none());
            assert!(!cache.contains(pgno));
            assert!(cache.remove(pgno).is_none());
        }
        assert_eq!(cache.len(), 4);
        assert_eq!(cache.remove(last).map(|p| p.bytes()[100]), Some(4));
        assert!(cache.with(last, |_| ()).is_none());
    }

    fn trie_page(tag: u8) -> SharedPage {
        let mut p = PageBuf::zeroed();
        p.bytes_mut()[4] = crate::page::PageKind::Trie as u8;
        p.bytes_mut()[100] = tag;
        Arc::new(p)
    }

    #[test]
    fn a_demoted_page_is_evicted_first_unless_used_again() {
        // One shard's worth: page numbers that all land in the shard of page 0.
        let cache = PageCache::new(SHARDS * 8);
        let same: Vec<u64> = (0..100_000u64)
            .filter(|p| std::ptr::eq(cache.shard(*p), cache.shard(0)))
            .take(10)
            .collect();
        // Eight trie pages fill the shard: each starts with a high use count.
        for &p in &same[..8] {
            assert!(cache.insert(p, trie_page(1)).is_empty());
        }
        cache.demote(same[5]);
        cache.demote(same[2]);
        // Page 2 was demoted last, but is used again: page 5 goes first, then 2.
        assert!(cache.with(same[2], |_| ()).is_some());
        let out = cache.insert(same[8], page(2));
        assert_eq!(out.len(), 1);
        assert!(!cache.contains(same[5]) && cache.contains(same[2]));
        let out = cache.insert(same[9], page(2));
        assert_eq!(out.len(), 1);
        assert!(!cache.contains(same[2]));
        for &p in [0, 1, 3, 4, 6, 7].iter().map(|&i| &same[i]) {
            assert!(cache.contains(p));
        }
        // Demoting a page not cached does nothing.
        cache.demote(12_345_678);
        assert!(!cache.contains(12_345_678));
    }

    #[test]
    fn inserting_if_room_neither_replaces_nor_evicts() {
        let cache = PageCache::new(64);
        assert!(cache.insert(7, page(1)).is_empty());
        let back = cache
            .insert_if_room(7, page(2))
            .expect("7 is cached: not replaced");
        assert_eq!(back.bytes()[100], 2);
        assert_eq!(cache.with(7, |p| p.bytes()[100]), Some(1));
        // Fill the cache: every later insert_if_room gives its page back, and what is cached
        // stays.
        let mut cached = 1;
        for pgno in 100..10_000 {
            if cache.insert_if_room(pgno, page(3)).is_none() {
                cached += 1;
            }
        }
        assert_eq!(cached, cache.len());
        assert_eq!(
            cached,
            cache.capacity(),
            "thousands of page numbers fill every shard"
        );
        assert!(cache.insert_if_room(20_000, page(4)).is_some());
        assert_eq!(cache.with(7, |p| p.bytes()[100]), Some(1));
    }

    #[test]
    fn concurrent_readers_never_see_another_pages_bytes() {
        // Readers borrow and clone pages while writers insert, replace and remove them in a
        // cache small enough to evict all the time: every page seen is the one asked for.
        fn tagged(pgno: u64) -> SharedPage {
            let mut p = PageBuf::zeroed();
            p.bytes_mut()[100..108].copy_from_slice(&pgno.to_le_bytes());
            Arc::new(p)
        }
        let tag = |p: &PageBuf| u64::from_le_bytes(p.bytes()[100..108].try_into().unwrap());
        let cache = PageCache::new(SHARDS * 4);
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..20_000u64 {
                        let pgno = (i * 7 + t) % 500;
                        match i % 5 {
                            0 => drop(cache.remove(pgno)),
                            _ => drop(cache.insert(pgno, tagged(pgno))),
                        }
                    }
                });
            }
            for t in 0..2u64 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..40_000u64 {
                        let pgno = (i * 13 + t) % 500;
                        if let Some(seen) = cache.with(pgno, tag) {
                            assert_eq!(seen, pgno);
                        }
                        if let Some(page) = cache.get(pgno) {
                            assert_eq!(tag(&page), pgno);
                        }
                    }
                });
            }
        });
        assert!(cache.len() <= cache.capacity());
    }

    #[test]
    fn pages_in_use_outlive_a_stream_of_pages_read_once() {
        // One page per shard's worth used over and over survives many more pages inserted
        // once; removals and reinsertions do not grow the clock without bound.
        let cache = PageCache::new(SHARDS * 8);
        let hot: Vec<u64> = (0..SHARDS as u64).collect();
        for &h in &hot {
            cache.insert(h, page(1));
        }
        for pgno in 1000..20_000u64 {
            for &h in &hot {
                cache.with(h, |_| ());
            }
            cache.insert(pgno, page(0));
            if pgno % 3 == 0 {
                cache.remove(pgno);
                cache.insert(pgno, page(0));
            }
        }
        for &h in &hot {
            assert!(cache.contains(h), "page {h} was evicted");
        }
        for s in cache.shards.iter() {
            let s = s.read();
            assert!(s.clock.len() <= 2 * s.pages.len() + 64);
        }
    }
}
