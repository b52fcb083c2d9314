//! Free space: which pages of the data file hold nothing the current state needs.
//!
//! Pages are never overwritten while a committed state that can still be opened refers to
//! them (copy-on-write), so every commit frees the pages it replaced and allocates fresh
//! ones. Freed pages become reusable when no reader holds a state that uses them; until then
//! they wait in pending groups tagged with the commit that freed them.
//!
//! # On disk
//!
//! Each meta record names the head of a chain of free-list pages listing every page that its
//! state does not use, as extents (runs of pages). Pages freed by that very commit are included:
//! whoever opens the database from this record never needs the state before it. Page layout
//! after the common header (length field = number of extents in the page):
//!
//! | bytes | field |
//! |---|---|
//! | 0..12 | reference to the next free-list page (zeros at the end of the chain) |
//! | 12.. | extents: 8-byte first page, 8-byte page count, little endian |

use std::collections::BTreeMap;

use crate::page::{HEADER_SIZE, PAGE_REF_SIZE, PAGE_SIZE, PageBuf, PageKind, PageRef};

/// Extents per free-list page.
pub const EXTENTS_PER_PAGE: usize = (PAGE_SIZE - HEADER_SIZE - PAGE_REF_SIZE) / 16;

/// A set of free page runs, kept coalesced.
#[derive(Debug, Clone, Default)]
pub struct FreeSpace {
    /// First page → run length.
    runs: BTreeMap<u64, u64>,
    /// Runs handed out by [`FreeSpace::allocate`] since [`FreeSpace::take_allocated`].
    allocated: Vec<(u64, u64)>,
}

impl PartialEq for FreeSpace {
    fn eq(&self, other: &Self) -> bool {
        self.runs == other.runs
    }
}

impl Eq for FreeSpace {}

impl FreeSpace {
    /// No free pages.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of free pages.
    #[cfg(test)]
    pub fn pages(&self) -> u64 {
        self.runs.values().sum()
    }

    /// Number of runs.
    #[cfg(test)]
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Iterates over the runs (first page, length) in page order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs.iter().map(|(a, b)| (*a, *b))
    }

    /// Marks `len` pages from `start` free. Freeing a page twice is a logic error.
    pub fn free(&mut self, start: u64, len: u64) {
        debug_assert!(len > 0);
        let mut start = start;
        let mut len = len;
        if let Some((&prev, &plen)) = self.runs.range(..start).next_back() {
            debug_assert!(prev + plen <= start, "double free of page {start}");
            if prev + plen == start {
                self.runs.remove(&prev);
                start = prev;
                len += plen;
            }
        }
        if let Some(&nlen) = self.runs.get(&(start + len)) {
            self.runs.remove(&(start + len));
            len += nlen;
        }
        debug_assert!(
            self.runs.range(start..start + len).next().is_none(),
            "double free in run {start}+{len}"
        );
        self.runs.insert(start, len);
    }

    /// Takes `len` contiguous pages (the lowest run that fits), if any.
    pub fn allocate(&mut self, len: u64) -> Option<u64> {
        let (&start, &rlen) = self.runs.iter().find(|(_, l)| **l >= len)?;
        self.runs.remove(&start);
        if rlen > len {
            self.runs.insert(start + len, rlen - len);
        }
        self.allocated.push((start, len));
        Some(start)
    }

    /// The runs allocated since the last call.
    pub fn take_allocated(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.allocated)
    }

    /// Removes `len` pages from `start`, which must all be free; returns whether they were.
    pub fn remove(&mut self, start: u64, len: u64) -> bool {
        let Some((&s, &l)) = self.runs.range(..=start).next_back() else {
            return false;
        };
        if len == 0 || start + len > s + l {
            return false;
        }
        self.runs.remove(&s);
        if start > s {
            self.runs.insert(s, start - s);
        }
        if start + len < s + l {
            self.runs.insert(start + len, s + l - start - len);
        }
        true
    }

    /// Whether `pgno` is free.
    #[cfg(test)]
    pub fn contains(&self, pgno: u64) -> bool {
        self.runs
            .range(..=pgno)
            .next_back()
            .is_some_and(|(s, l)| pgno < s + l)
    }

    /// Encodes the runs into free-list pages at the given page numbers (enough of them: see
    /// [`FreeSpace::pages_needed`]); returns the head reference and the sealed pages.
    pub fn encode(&self, pgnos: &[u64], seq: u64) -> (Option<PageRef>, Vec<(u64, Box<PageBuf>)>) {
        let runs: Vec<(u64, u64)> = self.iter().collect();
        let chunks: Vec<&[(u64, u64)]> = runs.chunks(EXTENTS_PER_PAGE).collect();
        assert!(chunks.len() <= pgnos.len(), "not enough free-list pages");
        let mut next: Option<PageRef> = None;
        let mut out = Vec::with_capacity(chunks.len());
        // Written back to front so that each page can name the next one with its checksum.
        for (i, chunk) in chunks.iter().enumerate().rev() {
            let mut page = PageBuf::zeroed();
            let body = page.body_mut();
            PageRef::encode_opt(next, &mut body[..PAGE_REF_SIZE]);
            for (j, (start, len)) in chunk.iter().enumerate() {
                let at = PAGE_REF_SIZE + 16 * j;
                body[at..at + 8].copy_from_slice(&start.to_le_bytes());
                body[at + 8..at + 16].copy_from_slice(&len.to_le_bytes());
            }
            let pgno = pgnos[i];
            let crc = page.seal(PageKind::FreeList, chunk.len() as u32, seq, pgno);
            next = Some(PageRef { pgno, crc });
            out.push((pgno, page));
        }
        out.reverse();
        (next, out)
    }

    /// The number of free-list pages needed to encode this set.
    pub fn pages_needed(&self) -> usize {
        self.runs.len().div_ceil(EXTENTS_PER_PAGE)
    }

    /// Decodes the extents of one free-list page into this set; returns the next reference.
    pub fn decode_page(&mut self, page: &PageBuf) -> Result<Option<PageRef>, String> {
        let n = page.len_field() as usize;
        if n > EXTENTS_PER_PAGE {
            return Err(format!("free-list page claims {n} extents"));
        }
        let body = page.body();
        let next = PageRef::decode(&body[..PAGE_REF_SIZE]);
        for j in 0..n {
            let at = PAGE_REF_SIZE + 16 * j;
            let start = u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
            let len = u64::from_le_bytes(body[at + 8..at + 16].try_into().expect("8 bytes"));
            if len == 0
                || start < 2
                || start.checked_add(len).is_none()
                || self.overlaps(start, len)
            {
                return Err(format!("invalid free extent {start}+{len}"));
            }
            self.free(start, len);
        }
        Ok(next)
    }

    /// Whether any of `len` pages from `start` is free.
    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        if let Some((s, l)) = self.runs.range(..=start).next_back()
            && s + l > start
        {
            return true;
        }
        self.runs.range(start..start + len).next().is_some()
    }
}

/// Runs a free-list journal page holds (removed and added together).
pub const DELTA_RUNS: usize = (PAGE_SIZE - HEADER_SIZE - PAGE_REF_SIZE - 8) / 16;

/// One entry of the free-list journal: how the free list of one meta record differs from the
/// previous one's. Page layout after the common header (length field = number of runs):
///
/// | bytes | field |
/// |---|---|
/// | 0..12 | reference to the previous entry (zeros for the first after a full list) |
/// | 12..16 | number of runs removed (allocated), u32 |
/// | 16..20 | number of runs added (freed), u32 |
/// | 20.. | the removed runs, then the added runs: first page (u64), pages (u64) |
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// The entry before this one.
    pub prev: Option<PageRef>,
    /// Runs that stopped being free.
    pub removed: Vec<(u64, u64)>,
    /// Runs that became free.
    pub added: Vec<(u64, u64)>,
}

impl Delta {
    /// Whether it fits in one page.
    pub fn fits(removed: usize, added: usize) -> bool {
        removed + added <= DELTA_RUNS
    }

    /// Encodes into a sealed page at `pgno`; returns it and its reference.
    pub fn encode(&self, pgno: u64, seq: u64) -> (Box<PageBuf>, PageRef) {
        let mut page = PageBuf::zeroed();
        let body = page.body_mut();
        PageRef::encode_opt(self.prev, &mut body[..PAGE_REF_SIZE]);
        body[12..16].copy_from_slice(&(self.removed.len() as u32).to_le_bytes());
        body[16..20].copy_from_slice(&(self.added.len() as u32).to_le_bytes());
        for (i, (s, l)) in self.removed.iter().chain(&self.added).enumerate() {
            let at = 20 + 16 * i;
            body[at..at + 8].copy_from_slice(&s.to_le_bytes());
            body[at + 8..at + 16].copy_from_slice(&l.to_le_bytes());
        }
        let n = (self.removed.len() + self.added.len()) as u32;
        let crc = page.seal(PageKind::FreeListDelta, n, seq, pgno);
        (page, PageRef { pgno, crc })
    }

    /// Decodes a page that passed its checks.
    pub fn decode(page: &PageBuf) -> Result<Delta, String> {
        let body = page.body();
        let removed = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes")) as usize;
        let added = u32::from_le_bytes(body[16..20].try_into().expect("4 bytes")) as usize;
        if !Self::fits(removed, added) || removed + added != page.len_field() as usize {
            return Err(format!(
                "free-list journal entry with {removed} + {added} runs"
            ));
        }
        let run = |i: usize| {
            let at = 20 + 16 * i;
            (
                u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes")),
                u64::from_le_bytes(body[at + 8..at + 16].try_into().expect("8 bytes")),
            )
        };
        Ok(Delta {
            prev: PageRef::decode(&body[..PAGE_REF_SIZE]),
            removed: (0..removed).map(run).collect(),
            added: (removed..removed + added).map(run).collect(),
        })
    }

    /// Applies the entry to the free list it follows; fails on a change that does not fit it
    /// (a removed run not free, an added run already free).
    pub fn apply(&self, free: &mut FreeSpace) -> Result<(), String> {
        for &(s, l) in &self.removed {
            if !free.remove(s, l) {
                return Err(format!("journal removes {s}+{l}, which is not free"));
            }
        }
        for &(s, l) in &self.added {
            if l == 0 || s < 2 || s.checked_add(l).is_none() || free.overlaps(s, l) {
                return Err(format!("journal frees {s}+{l}, which is free already"));
            }
            free.free(s, l);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_and_allocate() {
        let mut f = FreeSpace::new();
        f.free(10, 2);
        f.free(14, 1);
        f.free(12, 2);
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![(10, 5)]);
        assert_eq!(f.allocate(3), Some(10));
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![(13, 2)]);
        assert_eq!(f.allocate(3), None);
        assert!(f.contains(14));
        assert!(!f.contains(15));
        assert_eq!((f.pages(), f.runs()), (2, 1));
        assert_eq!(f.take_allocated(), vec![(10, 3)]);
        f.free(20, 10);
        assert!(f.remove(22, 3));
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            vec![(13, 2), (20, 2), (25, 5)]
        );
        assert!(!f.remove(21, 3));
    }

    #[test]
    fn journal_entries() {
        let mut f = FreeSpace::new();
        f.free(10, 10);
        let d = Delta {
            prev: Some(PageRef { pgno: 3, crc: 9 }),
            removed: vec![(10, 2), (15, 1)],
            added: vec![(40, 4)],
        };
        let (page, r) = d.encode(7, 5);
        crate::page::verify(page.bytes(), PageKind::FreeListDelta, 7, Some(r.crc)).unwrap();
        let back = Delta::decode(&page).unwrap();
        assert_eq!(back, d);
        back.apply(&mut f).unwrap();
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            vec![(12, 3), (16, 4), (40, 4)]
        );
        assert!(back.apply(&mut f).is_err());
    }

    #[test]
    fn encode_decode() {
        let mut f = FreeSpace::new();
        for i in 0..1000u64 {
            f.free(2 + i * 3, 1 + i % 2);
        }
        let n = f.pages_needed();
        assert!(n >= 3);
        let pgnos: Vec<u64> = (5000..5000 + n as u64).collect();
        let (head, pages) = f.encode(&pgnos, 7);
        let mut g = FreeSpace::new();
        let mut next = head;
        let mut i = 0;
        while let Some(r) = next {
            let (pgno, page) = &pages[i];
            assert_eq!(*pgno, r.pgno);
            crate::page::verify(page.bytes(), PageKind::FreeList, r.pgno, Some(r.crc)).unwrap();
            next = g.decode_page(page).unwrap();
            i += 1;
        }
        assert_eq!(f, g);
    }
}
