//! The page cache: checked pages by page number, a fixed number of them, shared by readers
//! and commits.
//!
//! Why not a general-purpose cache crate: a warm `get` is a chain of dependent memory loads,
//! and at 2^20 keys and more each one is a likely CPU cache miss (about 200 ns on this
//! machine). A general cache answers a hit with a clone of the stored `Arc`: find the slot,
//! load the entry it points to, increment the `Arc`'s count (a locked write to a third cache
//! line), follow the `Arc` to the `Box`, and only then load the page. Here a slot holds the
//! page's address next to its key, and [`PageCache::with`] lends the page under the shard's
//! read lock without touching its reference count: slot, then page. Measured on `randr`
//! (2^20 keys, warm), that is the larger part of a `get`'s misses.
//!
//! Eviction is CLOCK with a small use count: a hit raises a page's count (up to 3); when a
//! shard is full, the hand goes round its pages in insertion order, lowering counts and
//! evicting the first page at zero. A page read once (a commit's new pages, a read-ahead
//! nobody used) is evicted on the hand's first visit; the upper pages of the trees, used by
//! every lookup, stay.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::page::{PageBuf, SharedPage};

/// Shards: independent locks, so that readers and a commit's I/O threads rarely meet.
const SHARDS: usize = 16;
/// The highest use count.
const MAX_USES: u8 = 3;

/// A cached page.
struct Slot {
    page: SharedPage,
    /// The page's bytes: `page`'s box, kept here so that a hit need not load the `Arc`.
    bytes: NonNull<PageBuf>,
    uses: AtomicU8,
}

// SAFETY: `bytes` points into the box that `page` owns and keeps alive; the box is shared
// (behind an `Arc`), so nothing writes to it, and reading it from any thread is what `Arc<Box<
// PageBuf>>` (which is `Send + Sync`) already allows.
unsafe impl Send for Slot {}
// SAFETY: as above; the only interior mutability is the atomic `uses`.
unsafe impl Sync for Slot {}

impl Slot {
    fn new(page: SharedPage) -> Self {
        let bytes = NonNull::from(&**page);
        Slot {
            page,
            bytes,
            uses: AtomicU8::new(0),
        }
    }

    fn bytes(&self) -> &PageBuf {
        // SAFETY: see `unsafe impl Send for Slot`: the box lives as long as `self.page`,
        // which lives as long as `self`, and is never written while shared.
        unsafe { self.bytes.as_ref() }
    }

    fn touch(&self) {
        // A racy increment is fine: the count is a hint for eviction.
        let uses = self.uses.load(Ordering::Relaxed);
        if uses < MAX_USES {
            self.uses.store(uses + 1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Shard {
    slots: FxHashMap<u64, Slot>,
    /// Page numbers in the hand's order; may hold numbers since removed (skipped) or twice.
    clock: VecDeque<u64>,
}

impl Shard {
    /// Evicts one page, returning it.
    fn evict_one(&mut self) -> Option<SharedPage> {
        // Each turn lowers a count or evicts, and a count starts at most at MAX_USES, so
        // this ends within (MAX_USES + 1) rounds of the clock.
        while let Some(pgno) = self.clock.pop_front() {
            let Some(slot) = self.slots.get(&pgno) else {
                continue;
            };
            let uses = slot.uses.load(Ordering::Relaxed);
            if uses > 0 {
                slot.uses.store(uses - 1, Ordering::Relaxed);
                self.clock.push_back(pgno);
                continue;
            }
            return self.slots.remove(&pgno).map(|s| s.page);
        }
        None
    }

    /// Drops the clock's stale entries once they outnumber the pages (after many removals).
    fn compact_clock(&mut self) {
        if self.clock.len() > 2 * self.slots.len() + 64 {
            let mut seen = rustc_hash::FxHashSet::default();
            let slots = &self.slots;
            self.clock
                .retain(|p| slots.contains_key(p) && seen.insert(*p));
        }
    }
}

/// Pages by page number, at most about `capacity` of them.
pub struct PageCache {
    shards: Box<[RwLock<Shard>]>,
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

    /// Calls `f` with page `pgno` if it is cached, under its shard's read lock (`f` must not
    /// use the cache).
    pub fn with<R>(&self, pgno: u64, f: impl FnOnce(&PageBuf) -> R) -> Option<R> {
        let shard = self.shard(pgno).read();
        let slot = shard.slots.get(&pgno)?;
        slot.touch();
        Some(f(slot.bytes()))
    }

    /// Page `pgno`, if cached.
    pub fn get(&self, pgno: u64) -> Option<SharedPage> {
        let shard = self.shard(pgno).read();
        let slot = shard.slots.get(&pgno)?;
        slot.touch();
        Some(slot.page.clone())
    }

    /// Whether page `pgno` is cached (without counting a use).
    pub fn contains(&self, pgno: u64) -> bool {
        self.shard(pgno).read().slots.contains_key(&pgno)
    }

    /// Caches `page` as page `pgno`, replacing what was cached there; returns the pages that
    /// left the cache (for their buffers to be reused).
    pub fn insert(&self, pgno: u64, page: SharedPage) -> Vec<SharedPage> {
        let mut out = Vec::new();
        let mut shard = self.shard(pgno).write();
        if let Some(slot) = shard.slots.get_mut(&pgno) {
            let old = std::mem::replace(slot, Slot::new(page));
            out.push(old.page);
            return out;
        }
        while shard.slots.len() >= self.shard_capacity {
            match shard.evict_one() {
                Some(p) => out.push(p),
                None => break,
            }
        }
        shard.slots.insert(pgno, Slot::new(page));
        shard.clock.push_back(pgno);
        shard.compact_clock();
        out
    }

    /// Caches `page` as page `pgno` only if nothing is cached there and its shard has room:
    /// nothing is replaced or evicted. Gives the page back when it was not cached.
    pub fn insert_if_room(&self, pgno: u64, page: SharedPage) -> Option<SharedPage> {
        let mut shard = self.shard(pgno).write();
        if shard.slots.len() >= self.shard_capacity || shard.slots.contains_key(&pgno) {
            return Some(page);
        }
        shard.slots.insert(pgno, Slot::new(page));
        shard.clock.push_back(pgno);
        shard.compact_clock();
        None
    }

    /// Removes page `pgno`, returning it.
    pub fn remove(&self, pgno: u64) -> Option<SharedPage> {
        let mut shard = self.shard(pgno).write();
        let slot = shard.slots.remove(&pgno)?;
        shard.compact_clock();
        Some(slot.page)
    }

    /// Removes the page `pgno` if `stale` says so of its bytes.
    pub fn remove_if(&self, pgno: u64, stale: impl Fn(&PageBuf) -> bool) -> Option<SharedPage> {
        let mut shard = self.shard(pgno).write();
        if !shard.slots.get(&pgno).is_some_and(|s| stale(&s.page)) {
            return None;
        }
        let slot = shard.slots.remove(&pgno)?;
        shard.compact_clock();
        Some(slot.page)
    }

    /// The number of cached pages.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().slots.len()).sum()
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
            assert!(s.clock.len() <= 2 * s.slots.len() + 64);
        }
    }
}
