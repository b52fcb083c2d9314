//! The full check of a database (`Nomt::check`, `bmt check DIR`): every structure read from
//! disk and verified, and the root recomputed from the flat store's contents.
//!
//! Normal operation reads only what it needs, and a page is checked when it is read. A node
//! operator who suspects the disk wants the rest checked too, before trusting the state: this
//! reads every page the state in force uses and checks
//!
//! - each page's checksum against its own header and the reference that leads to it, and its
//!   structure (B+tree order, separators that bound their children's keys, leaves at one depth);
//! - every value: overflow extents' checksums, and each stored value hash against the value;
//! - the Gray Paper root of the flat store's contents, recomputed from scratch, against the
//!   root in the meta record, and the number of keys;
//! - every stored trie page: each branch inside it is the hash of its children; the top of
//!   each page is the node above it (in its parent page, or the root); its stored-child bits
//!   name exactly the pages in the page table; its key count is the number of keys under it;
//!   and every subtrie elided below it, recomputed from the flat store, is the branch above it;
//! - the free list: it and the pages in use are disjoint and cover the file;
//! - every live record of the rollback log, and that they chain to the root.

use std::collections::{HashMap, HashSet};

use bmt_core::{Hash, Key, RootBuilder};

use crate::btree;
use crate::db::{Inner, load_free_list, recover_meta};
use crate::error::Result;
use crate::flat::{self, Entry};
use crate::meta::OneSync;
use crate::page::{PAGE_REF_SIZE, PageKind, PageRef};
use crate::trie::{self, PageId};

/// Which part of the check is running, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckStage {
    /// Reading the trie page table and every stored trie page.
    TriePages,
    /// Reading the flat store and recomputing the root (progress counts keys).
    FlatStore,
    /// Checking the free list against the pages in use.
    FreeSpace,
    /// Reading the rollback log.
    RollbackLog,
}

/// Progress of a check: the stage, and how far it is (`done` of `total`, in the stage's unit).
#[derive(Debug, Clone, Copy)]
pub struct CheckProgress {
    /// The stage.
    pub stage: CheckStage,
    /// Units done.
    pub done: u64,
    /// Units in all (an estimate for the flat store: the recorded number of keys).
    pub total: u64,
}

/// What a successful check saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The root, as recorded and as recomputed.
    pub root: Hash,
    /// Keys in the flat store.
    pub keys: u64,
    /// Pages of the flat store's B+tree.
    pub flat_pages: u64,
    /// Pages of overflow extents (values over the inline limit).
    pub overflow_pages: u64,
    /// Pages of the trie page table's B+tree.
    pub table_pages: u64,
    /// Stored trie pages.
    pub trie_pages: u64,
    /// Levels of the trie's top page (the database's trie shape: pages start at depths 0,
    /// this, this + 6, ...).
    pub trie_top_levels: u8,
    /// Subtries below stored pages recomputed from the flat store.
    pub elided_subtries: u64,
    /// Pages of the free list and its journal.
    pub free_list_pages: u64,
    /// Free pages.
    pub free_pages: u64,
    /// Pages in the file (in use or free, the two meta slots included).
    pub file_pages: u64,
    /// Live rollback records read.
    pub rollback_records: u32,
}

/// Pages in use, each exactly once.
struct UsedPages {
    bits: Vec<u64>,
    count: u64,
}

impl UsedPages {
    fn mark(&mut self, db: &Inner, pgno: u64, pages: u64, what: &str) -> Result<()> {
        for p in pgno..pgno.saturating_add(pages) {
            let (w, b) = ((p / 64) as usize, p % 64);
            if w >= self.bits.len() {
                return Err(db
                    .pager
                    .corrupted(p, format!("{what} page past the end of the data")));
            }
            if self.bits[w] >> b & 1 == 1 {
                return Err(db.pager.corrupted(p, format!("{what} page used twice")));
            }
            self.bits[w] |= 1 << b;
            self.count += 1;
        }
        Ok(())
    }

    fn is_used(&self, p: u64) -> bool {
        self.bits
            .get((p / 64) as usize)
            .is_some_and(|w| w >> (p % 64) & 1 == 1)
    }
}

/// A stored page's expected key count, and the keys seen under it.
struct Counted {
    id: PageId,
    expected: u64,
    seen: u64,
}

/// An elided subtrie to recompute: its position, and the branch hash above it.
struct Elided {
    prefix: Key,
    depth: usize,
    expected: Hash,
}

impl Inner {
    /// Checks the whole database (see the module docs). Commits wait while it runs.
    pub(crate) fn check(&self, progress: &mut dyn FnMut(CheckProgress)) -> Result<CheckReport> {
        self.check_usable()?;
        self.sync()?;
        let _writer = self.writer.lock();
        let meta = {
            let log = self.log.lock();
            let log_complete = |one: &OneSync| match (&one.log_record, log.as_ref()) {
                (Some(r), Some(log)) => log.record_is_intact(r),
                _ => Ok(true),
            };
            let (meta, slot, _) = recover_meta(&self.pager, &log_complete)?;
            (meta, slot)
        };
        let (meta, slot) = meta;
        let version = self.version();
        if meta.root != version.root || meta.seq != version.seq {
            return Err(self
                .pager
                .corrupted(slot, "the meta record on disk is not the state in force"));
        }
        let mut report = CheckReport {
            root: meta.root,
            file_pages: meta.page_count,
            trie_top_levels: self.trie_shape.top_levels,
            ..CheckReport::default()
        };
        let mut used = UsedPages {
            bits: vec![0; meta.page_count.div_ceil(64) as usize],
            count: 0,
        };
        used.mark(self, 0, 2, "meta")?;

        // The page table and every stored trie page.
        let mut pages: Vec<(PageId, PageRef)> = Vec::new();
        btree::walk(
            &self.pager,
            meta.pt_root,
            &mut |pgno| {
                report.table_pages += 1;
                used.mark(self, pgno, 1, "page-table")
            },
            &mut |key, payload| {
                let id = self.trie_shape.page_of_table_key(key).ok_or_else(|| {
                    self.pager
                        .corrupted(0, format!("page-table key {key} names no trie page"))
                })?;
                let r = PageRef::decode(payload)
                    .filter(|_| payload.len() == PAGE_REF_SIZE)
                    .ok_or_else(|| self.pager.corrupted(0, "bad trie page reference"))?;
                pages.push((id, r));
                Ok(())
            },
        )?;
        let stored: HashSet<PageId> = pages.iter().map(|(id, _)| *id).collect();
        let mut tops: HashMap<PageId, Hash> = HashMap::new();
        let mut expected_tops: Vec<(PageId, Hash)> = Vec::new();
        let mut counted: Vec<Counted> = Vec::new();
        let mut elided: Vec<Elided> = Vec::new();
        let total_pages = pages.len() as u64;
        for (n, (id, r)) in pages.iter().enumerate() {
            let page = self
                .pager
                .read_uncached(r.pgno, PageKind::Trie, Some(r.crc))?;
            trie::validate_page_of(&page, id).map_err(|e| self.pager.corrupted(r.pgno, e))?;
            used.mark(self, r.pgno, 1, "trie")?;
            let c = trie::check_page(&page).map_err(|e| self.pager.corrupted(r.pgno, e))?;
            if c.count < u64::from(self.trie_shape.elide_below) {
                return Err(self.pager.corrupted(
                    r.pgno,
                    format!(
                        "a stored trie page with {} keys (threshold {})",
                        c.count, self.trie_shape.elide_below
                    ),
                ));
            }
            for j in 0..id.bottom_nodes() {
                let child = id.child(j);
                let bit = c.stored_children.iter().any(|(cj, _)| *cj == j);
                if bit != stored.contains(&child) {
                    return Err(self.pager.corrupted(
                        r.pgno,
                        format!("stored-child bit {j} disagrees with the page table"),
                    ));
                }
            }
            for (j, h) in &c.stored_children {
                expected_tops.push((id.child(*j), *h));
            }
            for (j, h) in &c.elided_children {
                let child = id.child(*j);
                elided.push(Elided {
                    prefix: child.path(),
                    depth: child.depth(),
                    expected: *h,
                });
            }
            tops.insert(*id, c.top);
            counted.push(Counted {
                id: *id,
                expected: c.count,
                seen: 0,
            });
            report.trie_pages += 1;
            if n.is_multiple_of(1024) {
                progress(CheckProgress {
                    stage: CheckStage::TriePages,
                    done: n as u64,
                    total: total_pages,
                });
            }
        }
        for (id, h) in expected_tops {
            if tops.get(&id) != Some(&h) {
                return Err(self.pager.corrupted(
                    0,
                    format!("trie page {id:?} does not hash to the branch above it"),
                ));
            }
        }
        if let Some(top) = tops.get(&self.trie_shape.root_page()) {
            if meta.key_count >= 2 && *top != meta.root {
                return Err(self
                    .pager
                    .corrupted(0, "the top trie page does not hash to the root"));
            }
        } else if !pages.is_empty() {
            return Err(self
                .pager
                .corrupted(0, "trie pages stored without the top page"));
        }

        // The flat store: every entry and value, the root recomputed, keys counted under each
        // stored page, elided subtries recomputed.
        counted.sort_by_key(|c| (c.id.depth(), c.id.path()));
        elided.sort_by_key(|e| e.prefix);
        let mut by_layer: Vec<(usize, usize)> = Vec::new(); // (start, end) in `counted` per layer
        let mut i = 0;
        while i < counted.len() {
            let layer = counted[i].id.depth();
            let start = i;
            while i < counted.len() && counted[i].id.depth() == layer {
                i += 1;
            }
            by_layer.push((start, i));
        }
        let mut cursors: Vec<usize> = by_layer.iter().map(|(s, _)| *s).collect();
        let mut builder = RootBuilder::new();
        let mut elided_at = 0usize;
        // The builder of the elided subtrie the walk is in, and its keys so far.
        let mut sub: Option<(RootBuilder, u64)> = None;
        let hasher = self.hasher.clone();
        let threshold = u64::from(self.trie_shape.elide_below);
        let finish_sub = |sub: &mut Option<(RootBuilder, u64)>, e: &Elided| -> Result<()> {
            let (got, n) = sub.take().map_or((Hash::ZERO, 0), |(b, n)| (b.finish(), n));
            if n >= threshold {
                return Err(self.pager.corrupted(
                    0,
                    format!(
                        "the subtrie under {} at depth {} has {n} keys but no stored page",
                        e.prefix, e.depth
                    ),
                ));
            }
            if got != e.expected {
                return Err(self.pager.corrupted(
                    0,
                    format!(
                        "the subtrie under {} at depth {} does not match its stored branch",
                        e.prefix, e.depth
                    ),
                ));
            }
            Ok(())
        };
        let mut keys = 0u64;
        let mut flat_pages = 0u64;
        let mut extents: Vec<(u64, u64)> = Vec::new();
        btree::walk(
            &self.pager,
            meta.flat_root,
            &mut |pgno| {
                flat_pages += 1;
                used.mark(self, pgno, 1, "flat-store")
            },
            &mut |key, payload| {
                let entry = flat::decode(payload)
                    .map_err(|e| self.pager.corrupted(0, format!("flat entry of {key}: {e}")))?;
                let value: Vec<u8> = match &entry {
                    Entry::Inline { value, hash } => {
                        if hash.is_some_and(|h| h != hasher.hash_value(value)) {
                            return Err(self.pager.corrupted(
                                0,
                                format!("the stored hash of {key}'s value is wrong"),
                            ));
                        }
                        value.to_vec()
                    }
                    Entry::Overflow(o) => {
                        let extent =
                            self.pager
                                .read_extent(o.pgno, o.pages, PageKind::Overflow, o.crc)?;
                        extents.push((o.pgno, o.pages));
                        let v = flat::extent_value(crate::page::extent_bytes(&extent), o)
                            .map_err(|e| self.pager.corrupted(o.pgno, e))?;
                        if hasher.hash_value(&v) != o.hash {
                            return Err(self.pager.corrupted(
                                o.pgno,
                                format!("the stored hash of {key}'s value is wrong"),
                            ));
                        }
                        v
                    }
                };
                builder
                    .push_with(key, &value, &*hasher)
                    .map_err(|e| self.pager.corrupted(0, format!("flat store order: {e}")))?;
                // Keys under each stored page.
                for (layer, (_, end)) in by_layer.iter().enumerate() {
                    let c = &mut cursors[layer];
                    while *c < *end
                        && counted[*c].id.path().prefix_end(counted[*c].id.depth()) < *key
                    {
                        *c += 1;
                    }
                    if *c < *end && key.prefix(counted[*c].id.depth()) == counted[*c].id.path() {
                        counted[*c].seen += 1;
                    }
                }
                // The elided subtrie this key lies in, if any.
                while elided_at < elided.len()
                    && elided[elided_at].prefix.prefix_end(elided[elided_at].depth) < *key
                {
                    finish_sub(&mut sub, &elided[elided_at])?;
                    elided_at += 1;
                }
                if let Some(e) = elided.get(elided_at)
                    && key.prefix(e.depth) == e.prefix
                {
                    let (b, n) = sub.get_or_insert_with(|| (RootBuilder::at_depth(e.depth), 0));
                    b.push_with(key, &value, &*hasher)
                        .map_err(|e| self.pager.corrupted(0, format!("flat store order: {e}")))?;
                    *n += 1;
                }
                keys += 1;
                if keys.is_multiple_of(65536) {
                    progress(CheckProgress {
                        stage: CheckStage::FlatStore,
                        done: keys,
                        total: meta.key_count,
                    });
                }
                Ok(())
            },
        )?;
        while elided_at < elided.len() {
            finish_sub(&mut sub, &elided[elided_at])?;
            elided_at += 1;
        }
        report.flat_pages = flat_pages;
        for (pgno, pages) in extents {
            used.mark(self, pgno, pages, "overflow")?;
            report.overflow_pages += pages;
        }
        report.elided_subtries = elided.len() as u64;
        report.keys = keys;
        if keys != meta.key_count {
            return Err(self.pager.corrupted(
                0,
                format!(
                    "the flat store holds {keys} keys, the meta record says {}",
                    meta.key_count
                ),
            ));
        }
        let root = builder.finish();
        if root != meta.root {
            return Err(self.pager.corrupted(
                0,
                format!(
                    "the flat store's root is {root}, the meta record says {}",
                    meta.root
                ),
            ));
        }
        for c in &counted {
            if c.seen != c.expected {
                return Err(self.pager.corrupted(
                    0,
                    format!(
                        "trie page {:?} records {} keys, the flat store has {}",
                        c.id, c.expected, c.seen
                    ),
                ));
            }
        }

        // Free space: the list and the pages in use are disjoint and cover the file.
        progress(CheckProgress {
            stage: CheckStage::FreeSpace,
            done: 0,
            total: 1,
        });
        let (free, list) = load_free_list(&self.pager, &meta)?;
        for p in list.pages() {
            used.mark(self, p, 1, "free-list")?;
            report.free_list_pages += 1;
        }
        for (start, len) in free.iter() {
            for p in start..start + len {
                if used.is_used(p) {
                    return Err(self.pager.corrupted(p, "a page both free and in use"));
                }
            }
            report.free_pages += len;
        }
        if used.count + report.free_pages != meta.page_count {
            return Err(self.pager.corrupted(
                0,
                format!(
                    "{} pages in use and {} free, but the file has {}",
                    used.count, report.free_pages, meta.page_count
                ),
            ));
        }

        // The rollback log.
        progress(CheckProgress {
            stage: CheckStage::RollbackLog,
            done: 0,
            total: 1,
        });
        if let Some(log) = self.log.lock().as_mut() {
            report.rollback_records = log.verify(meta.root)?;
        }
        Ok(report)
    }
}
