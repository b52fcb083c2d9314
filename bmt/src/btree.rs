//! A copy-on-write B+tree of 31-byte keys and short byte-string payloads.
//!
//! Two structures use it: the flat store (state key → value entry, see [`crate::flat`]) and the
//! trie page table (trie page id → page reference, see [`crate::trie`]). Keys sort as byte
//! strings, which for state keys is also the trie's order, so the keys under any trie node
//! are one contiguous range of the tree.
//!
//! The tree is never modified in place. A commit applies a sorted batch of changes in one
//! pass ([`update_with`]): every leaf with changes is rebuilt (merged, split or joined with a
//! neighbour), every branch above it is rebuilt, and the result is a tree of new in-memory
//! nodes hanging off unchanged on-disk pages. [`write()`] then gives the new nodes fresh page
//! numbers, children before parents (a parent records each child's page number and checksum),
//! and the replaced pages are reported as freed.
//!
//! # Pages
//!
//! Leaf (kind [`PageKind::LeafNode`], header length field = number of entries `n`):
//!
//! | bytes after the header | field |
//! |---|---|
//! | 0..2n | offset of each entry from the start of the page, u16 little endian, increasing |
//! | ... | entries: key (31 bytes), payload length (u16 little endian), payload |
//!
//! Branch (kind [`PageKind::BranchNode`], header length field = number of children `n`, 2 to
//! 95; a root branch may have 1 only transiently, never on disk):
//!
//! | bytes after the header | field |
//! |---|---|
//! | 0..12n | child references: page number (u64) and checksum (u32), little endian |
//! | 12n..12n+31(n-1) | separators: the smallest key child `i` may hold, for `i` in 1..n |
//!
//! Child `i` holds the keys from separator `i` (inclusive) to separator `i + 1` (exclusive).

use std::sync::Arc;

use bmt_core::{KEY_LEN, Key};

use crate::error::Result;
use crate::page::{HEADER_SIZE, PAGE_REF_SIZE, PAGE_SIZE, PageBuf, PageKind, PageRef, SharedPage};
use crate::pager::Pager;

/// Largest payload an entry may have.
pub const MAX_PAYLOAD: usize = 1200;
/// Most children a branch page holds.
pub const BRANCH_MAX: usize = (PAGE_SIZE - HEADER_SIZE + KEY_LEN) / (PAGE_REF_SIZE + KEY_LEN);
/// Bytes of a leaf available for offsets and entries.
const LEAF_SPACE: usize = PAGE_SIZE - HEADER_SIZE;
/// Fixed bytes per leaf entry besides its payload: offset, key, length.
const ENTRY_OVERHEAD: usize = 2 + KEY_LEN + 2;
/// A rebuilt node below this share of a page is joined with a neighbour.
const UNDERFULL: usize = LEAF_SPACE / 4;

/// A change to apply: a new payload, or `None` to delete.
pub type Change<'a> = (Key, Option<&'a [u8]>);

/// A payload inside a cached page, without copying.
#[derive(Clone, Debug)]
pub struct Payload {
    page: SharedPage,
    start: usize,
    len: usize,
}

impl Payload {
    /// The payload bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.page.bytes()[self.start..self.start + self.len]
    }
}

// ---------------------------------------------------------------------------------------------
// Reading pages

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

/// Checks a leaf read from disk so that the accessors below cannot go out of bounds.
fn validate_leaf(page: &PageBuf) -> Result<(), String> {
    let b = page.bytes();
    let n = page.len_field() as usize;
    if n == 0 || n > LEAF_SPACE / ENTRY_OVERHEAD {
        return Err(format!("leaf with {n} entries"));
    }
    let mut expected = HEADER_SIZE + 2 * n;
    let mut prev: Option<&[u8]> = None;
    for i in 0..n {
        let off = u16_at(b, HEADER_SIZE + 2 * i);
        if off != expected || off + KEY_LEN + 2 > PAGE_SIZE {
            return Err(format!("entry {i} at offset {off}, expected {expected}"));
        }
        let len = u16_at(b, off + KEY_LEN);
        let end = off + KEY_LEN + 2 + len;
        if len > MAX_PAYLOAD || end > PAGE_SIZE {
            return Err(format!("entry {i} overruns the page"));
        }
        let key = &b[off..off + KEY_LEN];
        if prev.is_some_and(|p| p >= key) {
            return Err(format!("entry {i} out of order"));
        }
        prev = Some(key);
        expected = end;
    }
    Ok(())
}

/// Checks a branch read from disk.
fn validate_branch(page: &PageBuf) -> Result<(), String> {
    let b = page.bytes();
    let n = page.len_field() as usize;
    if !(2..=BRANCH_MAX).contains(&n) {
        return Err(format!("branch with {n} children"));
    }
    for i in 0..n {
        let at = HEADER_SIZE + PAGE_REF_SIZE * i;
        match PageRef::decode(&b[at..at + PAGE_REF_SIZE]) {
            Some(r) if r.pgno >= 2 => {}
            _ => return Err(format!("child {i} has no valid page number")),
        }
    }
    let seps = HEADER_SIZE + PAGE_REF_SIZE * n;
    for i in 1..n.saturating_sub(1) {
        let a = &b[seps + KEY_LEN * (i - 1)..seps + KEY_LEN * i];
        let c = &b[seps + KEY_LEN * i..seps + KEY_LEN * (i + 1)];
        if a >= c {
            return Err(format!("separator {i} out of order"));
        }
    }
    Ok(())
}

/// A node read from disk.
enum Node {
    Leaf(SharedPage),
    Branch(SharedPage),
}

pub(crate) fn validate_node(kind: PageKind, p: &PageBuf) -> Result<(), String> {
    if kind == PageKind::LeafNode {
        validate_leaf(p)
    } else {
        validate_branch(p)
    }
}

/// Fuzzing: checks `page` as a node of `kind` and, when it passes, reads every part of it the
/// way lookups and updates do.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_node(kind: PageKind, page: &PageBuf) {
    if validate_node(kind, page).is_err() {
        return;
    }
    let probe = [0x80u8; KEY_LEN];
    if kind == PageKind::LeafNode {
        for i in 0..leaf_len(page) {
            let _ = leaf_key_owned(page, i);
            let _ = leaf_entry_cost(page, i);
            let _ = crate::flat::decode(leaf_payload(page, i));
        }
        let _ = leaf_search(page, &probe);
        let _ = leaf_bytes(page);
    } else {
        for i in 0..branch_len(page) {
            let _ = branch_child(page, i);
        }
        for i in 1..branch_len(page) {
            let _ = branch_sep_owned(page, i);
        }
        let _ = branch_route(page, &probe);
    }
}

/// [`read_node`], looking in `memo` first (pages a walk of this commit already read, checked
/// then).
fn read_node_memo(pager: &Pager, memo: Option<&PageMemo>, r: PageRef) -> Result<Node> {
    if let Some(page) = memo.and_then(|m| m.get(&r.pgno))
        && page.stored_crc() == r.crc
    {
        return Ok(if page.bytes()[4] == PageKind::LeafNode as u8 {
            Node::Leaf(page.clone())
        } else {
            Node::Branch(page.clone())
        });
    }
    read_node(pager, r)
}

fn read_node(pager: &Pager, r: PageRef) -> Result<Node> {
    let page = pager.read_either(r, PageKind::LeafNode, PageKind::BranchNode, validate_node)?;
    Ok(if page.bytes()[4] == PageKind::LeafNode as u8 {
        Node::Leaf(page)
    } else {
        Node::Branch(page)
    })
}

fn leaf_len(p: &PageBuf) -> usize {
    p.len_field() as usize
}

fn leaf_key(p: &PageBuf, i: usize) -> &[u8] {
    let off = u16_at(p.bytes(), HEADER_SIZE + 2 * i);
    &p.bytes()[off..off + KEY_LEN]
}

fn leaf_key_owned(p: &PageBuf, i: usize) -> Key {
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(leaf_key(p, i));
    Key(k)
}

/// Start and length of entry `i`'s payload.
fn leaf_payload_span(p: &PageBuf, i: usize) -> (usize, usize) {
    let off = u16_at(p.bytes(), HEADER_SIZE + 2 * i);
    let len = u16_at(p.bytes(), off + KEY_LEN);
    (off + KEY_LEN + 2, len)
}

fn leaf_payload(p: &PageBuf, i: usize) -> &[u8] {
    let (start, len) = leaf_payload_span(p, i);
    &p.bytes()[start..start + len]
}

/// Bytes entry `i` takes in a leaf, offset included.
fn leaf_entry_cost(p: &PageBuf, i: usize) -> usize {
    ENTRY_OVERHEAD + leaf_payload_span(p, i).1
}

fn branch_len(p: &PageBuf) -> usize {
    p.len_field() as usize
}

fn branch_child(p: &PageBuf, i: usize) -> PageRef {
    let at = HEADER_SIZE + PAGE_REF_SIZE * i;
    // Validated when read: every child reference is present.
    PageRef::decode(&p.bytes()[at..at + PAGE_REF_SIZE]).unwrap_or(PageRef { pgno: 0, crc: 0 })
}

/// Separator `i` (1 ≤ i < n).
fn branch_sep(p: &PageBuf, i: usize) -> &[u8] {
    let at = HEADER_SIZE + PAGE_REF_SIZE * branch_len(p) + KEY_LEN * (i - 1);
    &p.bytes()[at..at + KEY_LEN]
}

fn branch_sep_owned(p: &PageBuf, i: usize) -> Key {
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(branch_sep(p, i));
    Key(k)
}

/// The child of a branch whose range holds `key`.
/// Compares two keys: the first eight bytes as a number decide almost always, without a
/// call to `memcmp`.
#[inline]
fn cmp_keys(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let head = |k: &[u8]| u64::from_be_bytes(k[..8].try_into().expect("keys are 31 bytes"));
    head(a).cmp(&head(b)).then_with(|| a[8..].cmp(&b[8..]))
}

fn branch_route(p: &PageBuf, key: &[u8]) -> usize {
    branch_route_within(p, key, 0, u64::MAX)
}

/// [`branch_route`] in a branch whose keys' first eight bytes lie in `lo..=hi`: guided
/// like [`leaf_search_within`].
fn branch_route_within(p: &PageBuf, key: &[u8], lo: u64, hi: u64) -> usize {
    // The number of separators ≤ key (separator `i` is at index `i`, from 1).
    let n = branch_len(p);
    // The separators and child references next to the first guess, loaded together.
    let around = |m: usize| {
        let sep = HEADER_SIZE + PAGE_REF_SIZE * n + KEY_LEN * (m - 1);
        p.prefetch(sep.saturating_sub(KEY_LEN)..sep + 2 * KEY_LEN);
        let child = HEADER_SIZE + PAGE_REF_SIZE * m;
        p.prefetch(child - PAGE_REF_SIZE..child + PAGE_REF_SIZE);
    };
    let (after, _) = guided_search(1, n, key, (lo, hi), false, around, |i| branch_sep(p, i));
    after - 1
}

/// Index of the first entry ≥ key, and whether it equals key.
fn leaf_search(p: &PageBuf, key: &[u8]) -> (usize, bool) {
    leaf_search_from(p, 0, key)
}

/// [`leaf_search`] among the entries from `from` on.
fn leaf_search_from(p: &PageBuf, from: usize, key: &[u8]) -> (usize, bool) {
    leaf_search_within(p, from, key, 0, u64::MAX)
}

/// The first eight bytes of a key as a number: the keys' order, almost always.
fn head(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[..8].try_into().expect("keys are 31 bytes"))
}

/// [`leaf_search_from`] in a leaf whose keys' first eight bytes lie in `lo..=hi` (the
/// parent's separators).
fn leaf_search_within(p: &PageBuf, from: usize, key: &[u8], lo: u64, hi: u64) -> (usize, bool) {
    // The entries next to the first guess (keys and, for a hit, the payload after the key),
    // loaded together.
    let around = |m: usize| {
        let at = u16_at(p.bytes(), HEADER_SIZE + 2 * m);
        p.prefetch(at.saturating_sub(64)..at + 128);
    };
    guided_search(from, leaf_len(p), key, (lo, hi), true, around, |i| {
        leaf_key(p, i)
    })
}

/// About `x * n / span` (`x <= span`, `n` a page's worth or less), from the top 32 bits of
/// `span` and what `x` has at the same places: a guess needs no more precision, and a 64-bit
/// division is several times cheaper than the 128-bit one the exact product would need.
fn scale(x: u64, span: u64, n: usize) -> usize {
    let shift = (u64::BITS - span.leading_zeros()).saturating_sub(32);
    ((x >> shift) * n as u64 / (span >> shift).max(1)) as usize
}

/// The first index in `a..b` whose key (`key_at`) is greater than `key` (or, with `stop_at_equal`,
/// not less than it, and whether it equals it), the keys being sorted and their first eight
/// bytes within `lo..=hi`. State keys are hashes, spread evenly, so the index is guessed from
/// where `key` falls in that range, and each guess narrows the range: a few probes of the
/// page, each a likely cache miss, instead of a binary search's six or seven. After three
/// guesses (or with no useful bounds) the search is binary, so that chosen keys cannot slow it
/// by more than three probes. `prefetch_around` is called with the first guess before it is
/// probed, to start loading its neighbours too (the next probes are usually among them).
fn guided_search<'p>(
    mut a: usize,
    mut b: usize,
    key: &[u8],
    (mut lo, mut hi): (u64, u64),
    stop_at_equal: bool,
    prefetch_around: impl Fn(usize),
    key_at: impl Fn(usize) -> &'p [u8],
) -> (usize, bool) {
    use std::cmp::Ordering;
    let k = head(key);
    // Keys before `a` are on the left of `key`, keys from `b` on its right.
    let step = |m: usize, a: &mut usize, b: &mut usize| -> Option<(u64, bool)> {
        let at = key_at(m);
        match cmp_keys(at, key) {
            Ordering::Equal if stop_at_equal => None,
            Ordering::Less | Ordering::Equal => {
                *a = m + 1;
                Some((head(at), true))
            }
            Ordering::Greater => {
                *b = m;
                Some((head(at), false))
            }
        }
    };
    for guess in 0..3 {
        if b <= a + 4 || !(lo..=hi).contains(&k) || hi - lo == u64::MAX {
            break;
        }
        let m = (a + scale(k - lo, hi - lo + 1, b - a)).min(b - 1);
        if guess == 0 {
            prefetch_around(m);
        }
        match step(m, &mut a, &mut b) {
            None => return (m, true),
            Some((h, true)) => lo = h,
            Some((h, false)) => hi = h,
        }
    }
    while a < b {
        let m = (a + b) / 2;
        if step(m, &mut a, &mut b).is_none() {
            return (m, true);
        }
    }
    (a, false)
}

/// The first eight bytes of a leaf's bounds, for [`leaf_search_within`].
fn head_bounds(lower: Option<Key>, upper: Option<Key>) -> (u64, u64) {
    (
        lower.map_or(0, |k| head(&k.0)),
        upper.map_or(u64::MAX, |k| head(&k.0)),
    )
}

/// The child of branch `p` (whose keys' first eight bytes lie within `bounds`) that holds
/// `key`, and the first eight bytes of that child's bounds.
fn route(p: &PageBuf, key: &Key, (lo, hi): (u64, u64)) -> (PageRef, (u64, u64)) {
    let i = branch_route_within(p, &key.0, lo, hi);
    let lo = if i > 0 { head(branch_sep(p, i)) } else { lo };
    let hi = if i + 1 < branch_len(p) {
        head(branch_sep(p, i + 1))
    } else {
        hi
    };
    (branch_child(p, i), (lo, hi))
}

/// The payload stored under `key`.
pub fn get(pager: &Pager, root: Option<PageRef>, key: &Key) -> Result<Option<Payload>> {
    let Some(mut r) = root else { return Ok(None) };
    // The first eight bytes of the bounds of the node reached (its parent's separators).
    let (mut lo, mut hi) = (0u64, u64::MAX);
    loop {
        match read_node(pager, r)? {
            Node::Branch(p) => (r, (lo, hi)) = route(&p, key, (lo, hi)),
            Node::Leaf(p) => {
                let (i, found) = leaf_search_within(&p, 0, &key.0, lo, hi);
                if !found {
                    return Ok(None);
                }
                let (start, len) = leaf_payload_span(&p, i);
                return Ok(Some(Payload {
                    page: p,
                    start,
                    len,
                }));
            }
        }
    }
}

/// Where in a leaf holding the keys of `lo..=hi` the entry of a key whose first eight bytes
/// are `k` likely is, so that it starts loading together with the page's header instead of
/// after it (two dependent memory misses become about one: a warm `get` at 2^20 keys is
/// mostly such misses). State keys are hashes, spread evenly, and leaves are packed nearly
/// full in key order, so the entry sits about as far into the page as `k` is into `lo..=hi`;
/// the window (four cache lines either side) covers the usual spread of a key's rank among
/// some sixty entries. A wrong guess (a leaf half full after splits, long values, a branch
/// page, whose references come before its separators) costs only a few wasted prefetches.
fn entry_guess(k: u64, lo: u64, hi: u64) -> std::ops::Range<usize> {
    const WINDOW: usize = 256;
    if hi <= lo || !(lo..=hi).contains(&k) || hi - lo == u64::MAX {
        return 0..0;
    }
    let at = HEADER_SIZE + scale(k - lo, hi - lo, LEAF_SPACE);
    at.saturating_sub(WINDOW)..at + WINDOW
}

/// `f` of the payload stored under `key`, the payload borrowed from the cached leaf (one
/// cache lookup per level, no page reference taken: the fast path of a `get`).
pub fn get_with<R>(
    pager: &Pager,
    root: Option<PageRef>,
    key: &Key,
    f: impl Fn(&[u8]) -> R,
) -> Result<Option<R>> {
    enum Step<R> {
        Down(PageRef, (u64, u64)),
        Found(Option<R>),
    }
    let Some(mut r) = root else { return Ok(None) };
    // The first eight bytes of the bounds of the node reached (its parent's separators).
    let mut bounds = (0u64, u64::MAX);
    let mut hits = 0;
    loop {
        let (lo, hi) = bounds;
        let step = pager.visit_either(
            r,
            PageKind::LeafNode,
            PageKind::BranchNode,
            validate_node,
            entry_guess(head(&key.0), lo, hi),
            |p| {
                if p.bytes()[4] == PageKind::LeafNode as u8 {
                    let (i, found) = leaf_search_within(p, 0, &key.0, lo, hi);
                    return Step::Found(found.then(|| {
                        let (start, len) = leaf_payload_span(p, i);
                        f(&p.bytes()[start..start + len])
                    }));
                }
                let (child, bounds) = route(p, key, (lo, hi));
                Step::Down(child, bounds)
            },
        )?;
        hits += u64::from(step.1);
        match step.0 {
            Step::Down(child, b) => {
                r = child;
                bounds = b;
            }
            Step::Found(out) => {
                pager.count_hits(hits);
                return Ok(out);
            }
        }
    }
}

/// Walks the paths of sorted `keys` level by level, reading each level's pages into the
/// cache many at a time first, and calls `leaf` with every leaf reached, the range of `keys`
/// that falls in it and the bounds of its key range (`None`: unbounded), in key order.
/// Every page read on the way goes into `memo`, when given.
fn walk_levels(
    pager: &Pager,
    root: Option<PageRef>,
    keys: &[Key],
    mut memo: Option<&mut PageMemo>,
    leaf: &mut dyn FnMut(SharedPage, std::ops::Range<usize>, Option<Key>, Option<Key>),
) -> Result<()> {
    let Some(root) = root else { return Ok(()) };
    type Step = (PageRef, std::ops::Range<usize>, Option<Key>, Option<Key>);
    let mut level: Vec<Step> = vec![(root, 0..keys.len(), None, None)];
    while !level.is_empty() {
        let refs: Vec<PageRef> = level.iter().map(|(r, ..)| *r).collect();
        let pages = pager.read_many(
            &refs,
            (PageKind::LeafNode, PageKind::BranchNode),
            validate_node,
        )?;
        let mut next = Vec::new();
        for ((r, range, lower, upper), p) in level.into_iter().zip(pages) {
            if let Some(memo) = memo.as_deref_mut() {
                memo.insert(r.pgno, p.clone());
            }
            if p.bytes()[4] == PageKind::LeafNode as u8 {
                leaf(p, range, lower, upper);
                continue;
            }
            let keys = &keys[range.clone()];
            let n = branch_len(&p);
            let mut c = 0;
            for i in 0..n {
                if c == keys.len() {
                    break;
                }
                let end = if i + 1 < n {
                    let sep = branch_sep(&p, i + 1);
                    c + keys[c..].partition_point(|k| cmp_keys(&k.0, sep).is_lt())
                } else {
                    keys.len()
                };
                if end > c {
                    let lo = if i == 0 {
                        lower
                    } else {
                        Some(branch_sep_owned(&p, i))
                    };
                    let hi = if i + 1 == n {
                        upper
                    } else {
                        Some(branch_sep_owned(&p, i + 1))
                    };
                    next.push((
                        branch_child(&p, i),
                        range.start + c..range.start + end,
                        lo,
                        hi,
                    ));
                }
                c = end;
            }
        }
        level = next;
    }
    Ok(())
}

/// Pages read by one walk, by page number, so that a later pass over the same paths (an
/// update) does not go through the shared cache again.
pub type PageMemo = rustc_hash::FxHashMap<u64, SharedPage>;

/// The leaves one walk reached, with the key range each covers: ranges of keys inside one of
/// them are read without descending the tree.
#[derive(Debug, Default)]
pub struct LeafWindows {
    /// Sorted by range; `None` bounds are unbounded.
    leaves: Vec<(Option<Key>, Option<Key>, SharedPage)>,
}

impl LeafWindows {
    /// Calls `f` with every entry in `lo..=hi`, in order, if the leaves cover the whole range
    /// (one leaf, or neighbours one after the other: an elided subtrie's keys may straddle
    /// two leaves), then returns true; returns false, calling nothing, if they do not.
    pub fn range(
        &self,
        lo: &Key,
        hi: &Key,
        f: &mut dyn FnMut(&Key, &[u8]) -> Result<bool>,
    ) -> Result<bool> {
        // The last leaf whose lower bound is at most `lo`.
        let at = self
            .leaves
            .partition_point(|(lower, ..)| lower.is_none_or(|l| l <= *lo));
        let Some(first) = at.checked_sub(1) else {
            return Ok(false);
        };
        // The leaves from `first` to `last` follow one another and cover `lo..=hi`.
        let mut last = first;
        while let Some(upper) = self.leaves[last].1.filter(|u| u <= hi) {
            match self.leaves.get(last + 1) {
                Some((Some(next), ..)) if *next == upper => last += 1,
                _ => return Ok(false),
            }
        }
        for (n, (lower, upper, page)) in self.leaves[first..=last].iter().enumerate() {
            let start = if n == 0 {
                let (l, h) = head_bounds(*lower, *upper);
                leaf_search_within(page, 0, &lo.0, l, h).0
            } else {
                0
            };
            for i in start..leaf_len(page) {
                let key = leaf_key_owned(page, i);
                if key > *hi || !f(&key, leaf_payload(page, i))? {
                    return Ok(true);
                }
            }
        }
        Ok(true)
    }
}

/// Reads into the cache, level by level and many pages at a time, every page on the paths
/// of sorted `keys`.
pub fn prefetch_paths(pager: &Pager, root: Option<PageRef>, keys: &[Key]) -> Result<()> {
    walk_levels(pager, root, keys, None, &mut |_, _, _, _| {})
}

/// The payloads stored under sorted, distinct `keys`, reading each page on their paths once,
/// a level at a time and many pages at once.
pub fn get_many(
    pager: &Pager,
    root: Option<PageRef>,
    keys: &[Key],
) -> Result<Vec<Option<Payload>>> {
    get_many_with(pager, root, keys, None)
}

/// [`get_many`], keeping every page read in `memo` (for an update of the same keys to find
/// them there rather than in the cache, which a large commit's writes may have flushed).
pub fn get_many_keeping(
    pager: &Pager,
    root: Option<PageRef>,
    keys: &[Key],
    memo: &mut PageMemo,
) -> Result<Vec<Option<Payload>>> {
    get_many_with(pager, root, keys, Some(memo))
}

fn get_many_with(
    pager: &Pager,
    root: Option<PageRef>,
    keys: &[Key],
    memo: Option<&mut PageMemo>,
) -> Result<Vec<Option<Payload>>> {
    let mut out: Vec<Option<Payload>> = vec![None; keys.len()];
    walk_levels(pager, root, keys, memo, &mut |p, range, lower, upper| {
        let (lo, hi) = head_bounds(lower, upper);
        for i in range {
            let (at, found) = leaf_search_within(&p, 0, &keys[i].0, lo, hi);
            if found {
                let (start, len) = leaf_payload_span(&p, at);
                out[i] = Some(Payload {
                    page: p.clone(),
                    start,
                    len,
                });
            }
        }
    })?;
    Ok(out)
}

/// What one walk for a commit found: the payloads of its keys, the leaves on the paths of its
/// keys and of further keys (the ends of ranges it will read), and every page read.
#[derive(Debug, Default)]
pub struct Walked {
    /// The payload of each of the keys, in their order.
    pub payloads: Vec<Option<Payload>>,
    /// The leaves reached.
    pub leaves: LeafWindows,
    /// Every page read.
    pub memo: PageMemo,
}

impl Walked {
    /// Adds what a walk of keys after this one's found.
    pub fn append(&mut self, mut next: Walked) {
        self.payloads.append(&mut next.payloads);
        self.leaves.leaves.append(&mut next.leaves.leaves);
        if self.memo.len() < next.memo.len() {
            std::mem::swap(&mut self.memo, &mut next.memo);
        }
        self.memo.extend(next.memo);
    }
}

/// [`get_many`] of sorted, distinct `keys`, walking the paths of sorted `also` at the same
/// time (their payloads are not wanted, their leaves are), keeping every page read.
pub fn walk_for_commit(
    pager: &Pager,
    root: Option<PageRef>,
    keys: &[Key],
    also: &[Key],
) -> Result<Walked> {
    // Both lists merged, each key once; `wanted[i]` is the position in `keys` of merged key
    // `i`, if it is one of them.
    let mut merged: Vec<Key> = Vec::with_capacity(keys.len() + also.len());
    let mut wanted: Vec<Option<usize>> = Vec::with_capacity(keys.len() + also.len());
    let (mut i, mut j) = (0, 0);
    while i < keys.len() || j < also.len() {
        if j == also.len() || (i < keys.len() && keys[i] <= also[j]) {
            if j < also.len() && also[j] == keys[i] {
                j += 1;
            }
            merged.push(keys[i]);
            wanted.push(Some(i));
            i += 1;
        } else {
            if merged.last() != Some(&also[j]) {
                merged.push(also[j]);
                wanted.push(None);
            }
            j += 1;
        }
    }
    let mut walked = Walked {
        payloads: vec![None; keys.len()],
        ..Walked::default()
    };
    let Walked {
        payloads,
        leaves,
        memo,
    } = &mut walked;
    walk_levels(
        pager,
        root,
        &merged,
        Some(memo),
        &mut |p, range, lower, upper| {
            let (lo, hi) = head_bounds(lower, upper);
            for m in range {
                let Some(k) = wanted[m] else { continue };
                let (at, found) = leaf_search_within(&p, 0, &keys[k].0, lo, hi);
                if found {
                    let (start, len) = leaf_payload_span(&p, at);
                    payloads[k] = Some(Payload {
                        page: p.clone(),
                        start,
                        len,
                    });
                }
            }
            leaves.leaves.push((lower, upper, p));
        },
    )?;
    Ok(walked)
}

/// A position in the tree kept between range scans, so that scans in increasing key order
/// (the trie's walk) descend from the root only when they leave the current subtree.
#[derive(Debug, Default)]
pub struct Cursor {
    /// From the root down: a page and the key range it covers (`None`: unbounded).
    path: Vec<(SharedPage, Option<Key>, Option<Key>)>,
}

impl Cursor {
    /// A cursor positioned nowhere.
    pub fn new() -> Self {
        Self::default()
    }

    /// The leaf whose range holds `key`, with the range's end.
    fn seek(
        &mut self,
        pager: &Pager,
        root: PageRef,
        key: &Key,
    ) -> Result<(SharedPage, Option<Key>)> {
        while let Some((_, lower, upper)) = self.path.last() {
            if lower.is_none_or(|l| l <= *key) && upper.is_none_or(|u| *key < u) {
                break;
            }
            self.path.pop();
        }
        if self.path.is_empty() {
            let page = match read_node(pager, root)? {
                Node::Leaf(p) | Node::Branch(p) => p,
            };
            self.path.push((page, None, None));
        }
        loop {
            let (page, lower, upper) = self.path.last().expect("the path holds the root");
            if page.bytes()[4] == PageKind::LeafNode as u8 {
                return Ok((page.clone(), *upper));
            }
            let n = branch_len(page);
            let i = branch_route(page, &key.0);
            let lo = if i == 0 {
                *lower
            } else {
                Some(branch_sep_owned(page, i))
            };
            let hi = if i + 1 == n {
                *upper
            } else {
                Some(branch_sep_owned(page, i + 1))
            };
            let child = match read_node(pager, branch_child(page, i))? {
                Node::Leaf(p) | Node::Branch(p) => p,
            };
            self.path.push((child, lo, hi));
        }
    }
}

/// `range` through a cursor kept from earlier scans.
pub fn range_with(
    pager: &Pager,
    root: Option<PageRef>,
    cursor: &mut Cursor,
    lo: &Key,
    hi: &Key,
    f: &mut dyn FnMut(&Key, &[u8]) -> Result<bool>,
) -> Result<()> {
    let Some(root) = root else { return Ok(()) };
    let mut from = *lo;
    loop {
        let (leaf, upper) = cursor.seek(pager, root, &from)?;
        let (start, _) = leaf_search(&leaf, &from.0);
        for i in start..leaf_len(&leaf) {
            let key = leaf_key_owned(&leaf, i);
            if key > *hi || !f(&key, leaf_payload(&leaf, i))? {
                return Ok(());
            }
        }
        match upper {
            Some(u) if u <= *hi => from = u,
            _ => return Ok(()),
        }
    }
}

/// Calls `f` for every entry with `lo ≤ key ≤ hi`, in key order; `f` returns false to stop.
#[cfg(test)]
pub fn range(
    pager: &Pager,
    root: Option<PageRef>,
    lo: &Key,
    hi: &Key,
    f: &mut dyn FnMut(&Key, &[u8]) -> Result<bool>,
) -> Result<()> {
    range_with(pager, root, &mut Cursor::new(), lo, hi, f)
}

/// Visits every page and entry of the tree, in key order, checking what a lookup does not:
/// that every key lies within the separators that lead to it, and that all leaves are at the
/// same depth. `page` is called with each page number (branches before their children),
/// `entry` with each entry.
pub fn walk(
    pager: &Pager,
    root: Option<PageRef>,
    page: &mut dyn FnMut(u64) -> Result<()>,
    entry: &mut dyn FnMut(&Key, &[u8]) -> Result<()>,
) -> Result<()> {
    let Some(root) = root else { return Ok(()) };
    let mut leaf_depth: Option<usize> = None;
    // (reference, depth, smallest key allowed, first key not allowed)
    let mut stack: Vec<(PageRef, usize, Option<Key>, Option<Key>)> = vec![(root, 0, None, None)];
    while let Some((r, depth, lo, hi)) = stack.pop() {
        page(r.pgno)?;
        let in_range = |k: &Key| lo.is_none_or(|lo| *k >= lo) && hi.is_none_or(|hi| *k < hi);
        match read_node(pager, r)? {
            Node::Leaf(p) => {
                if *leaf_depth.get_or_insert(depth) != depth {
                    return Err(pager.corrupted(r.pgno, "leaves at different depths"));
                }
                for i in 0..leaf_len(&p) {
                    let key = leaf_key_owned(&p, i);
                    if !in_range(&key) {
                        return Err(pager.corrupted(r.pgno, "a key outside its separators"));
                    }
                    entry(&key, leaf_payload(&p, i))?;
                }
            }
            Node::Branch(p) => {
                let n = branch_len(&p);
                let sep = |i: usize| (i >= 1 && i < n).then(|| branch_sep_owned(&p, i));
                for i in 1..n {
                    if !in_range(&branch_sep_owned(&p, i)) {
                        return Err(pager.corrupted(r.pgno, "a separator outside its range"));
                    }
                }
                // Pushed last child first, so that children are visited in key order.
                for i in (0..n).rev() {
                    let child_lo = if i == 0 { lo } else { sep(i) };
                    let child_hi = if i + 1 == n { hi } else { sep(i + 1) };
                    stack.push((branch_child(&p, i), depth + 1, child_lo, child_hi));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Updating

/// A node of the updated tree: unchanged on disk, or new in memory.
#[derive(Debug)]
pub enum Child {
    /// An unchanged page.
    Clean(PageRef),
    /// A new leaf: a page with its entries in place, not yet sealed.
    Leaf(Box<PageBuf>),
    /// A new branch.
    Branch(Box<NewBranch>),
}

/// A new branch: children and the separators between them (`seps[i]` is the smallest key of
/// `children[i + 1]`).
#[derive(Debug)]
pub struct NewBranch {
    children: Vec<Child>,
    seps: Vec<Key>,
}

/// One node of an update's result, with the key its range starts at (`None`: the start of the
/// node it replaces, which the parent already knows).
struct Piece {
    first: Option<Key>,
    node: Child,
}

/// The result of [`update_with`]: the new root, and the pages the update replaced.
#[derive(Debug)]
pub struct Updated {
    /// The new root (`None`: the tree is empty).
    pub root: Option<Child>,
    /// Pages that the new tree no longer uses.
    pub freed: Vec<u64>,
}

/// [`update_with`] with nothing read before (the tests' form).
#[cfg(test)]
pub fn update(pager: &Pager, root: Option<PageRef>, changes: &[Change<'_>]) -> Result<Updated> {
    update_with(pager, None, None, root, changes)
}

/// Where a change's key was found before the update: its leaf's page number, and the offset
/// and length of its payload there.
pub type OldAt = Option<(u64, usize, usize)>;

impl Payload {
    /// Where this payload is (see [`OldAt`]).
    pub fn at(&self) -> OldAt {
        Some((self.page.pgno(), self.start, self.len))
    }
}

/// Applies `changes` (sorted by key, each key once) to the tree at `root`, reading pages
/// from `memo` (pages read before by the same commit) where it has them; `olds`, when
/// given, says for each change where its key's payload was (so that a leaf updated in place
/// needs no search).
pub fn update_with(
    pager: &Pager,
    memo: Option<&PageMemo>,
    olds: Option<&[OldAt]>,
    root: Option<PageRef>,
    changes: &[Change<'_>],
) -> Result<Updated> {
    debug_assert!(olds.is_none_or(|o| o.len() == changes.len()));
    let rd = Reader { pager, memo, olds };
    let mut freed = Vec::new();
    if changes.is_empty() {
        return Ok(Updated {
            root: root.map(Child::Clean),
            freed,
        });
    }
    let mut pieces = match root {
        Some(r) => update_node(&rd, r, changes, 0, &mut freed)?,
        None => {
            let entries: Vec<(&[u8], &[u8])> = changes
                .iter()
                .filter_map(|(k, v)| v.map(|v| (&k.0[..], v)))
                .collect();
            pack_leaves(&entries)
        }
    };
    // Grow upwards while the root level has more than one node.
    while pieces.len() > 1 {
        pieces = pack_branches(pieces);
    }
    let mut root = pieces.pop().map(|p| p.node);
    // Shrink: a root branch with a single child is replaced by that child.
    while let Some(Child::Branch(b)) = &root
        && b.children.len() == 1
    {
        let Some(Child::Branch(b)) = root.take() else {
            unreachable!("matched just above")
        };
        root = b.children.into_iter().next();
    }
    Ok(Updated { root, freed })
}

/// Where an update reads pages: the pager, after a memo of pages already read.
struct Reader<'a> {
    pager: &'a Pager,
    memo: Option<&'a PageMemo>,
    olds: Option<&'a [OldAt]>,
}

impl Reader<'_> {
    fn node(&self, r: PageRef) -> Result<Node> {
        read_node_memo(self.pager, self.memo, r)
    }
}

/// Updates the subtree at `r` with `changes`, which are changes `at..` of the update.
fn update_node(
    rd: &Reader<'_>,
    r: PageRef,
    changes: &[Change<'_>],
    at: usize,
    freed: &mut Vec<u64>,
) -> Result<Vec<Piece>> {
    match rd.node(r)? {
        Node::Leaf(p) => {
            freed.push(r.pgno);
            let olds = rd.olds.map(|o| &o[at..at + changes.len()]);
            if let Some(page) = patch_leaf(&p, r.pgno, changes, olds) {
                return Ok(vec![Piece {
                    first: None,
                    node: Child::Leaf(page),
                }]);
            }
            let entries = merge_leaf(&p, changes);
            let mut pieces = pack_leaves(&entries);
            if let Some(first) = pieces.first_mut() {
                first.first = None;
            }
            Ok(pieces)
        }
        Node::Branch(p) => {
            freed.push(r.pgno);
            let n = branch_len(&p);
            // (separator or None for the first child, node, whether it was rebuilt)
            let mut out: Vec<(Option<Key>, Child, bool)> = Vec::with_capacity(n + 4);
            let mut c = 0usize;
            for i in 0..n {
                let end = if i + 1 < n {
                    let sep = branch_sep(&p, i + 1);
                    c + changes[c..].partition_point(|(k, _)| cmp_keys(&k.0, sep).is_lt())
                } else {
                    changes.len()
                };
                let sep = (i > 0).then(|| branch_sep_owned(&p, i));
                if end == c {
                    out.push((sep, Child::Clean(branch_child(&p, i)), false));
                    continue;
                }
                let pieces = update_node(rd, branch_child(&p, i), &changes[c..end], at + c, freed)?;
                for (j, piece) in pieces.into_iter().enumerate() {
                    let s = if j == 0 { sep } else { piece.first };
                    out.push((s, piece.node, true));
                }
                c = end;
            }
            join_underfull(rd, &mut out, freed)?;
            let pieces: Vec<Piece> = out
                .into_iter()
                .enumerate()
                .map(|(i, (s, node, _))| Piece {
                    first: if i == 0 { None } else { s },
                    node,
                })
                .collect();
            if pieces.is_empty() {
                return Ok(pieces);
            }
            let mut packed = pack_branches(pieces);
            if let Some(first) = packed.first_mut() {
                first.first = None;
            }
            Ok(packed)
        }
    }
}

/// The leaf with `changes` applied in place, if every one of them gives an existing key a
/// payload of the same length (the usual update of a fixed-size value): a copy of the page
/// with those payloads overwritten, instead of a rebuilt one. `None` otherwise.
/// `olds`, when given, says where each change's key was found (see [`OldAt`]); a position in
/// this leaf (page `pgno`) is used without searching for the key.
fn patch_leaf(
    p: &PageBuf,
    pgno: u64,
    changes: &[Change<'_>],
    olds: Option<&[OldAt]>,
) -> Option<Box<PageBuf>> {
    let mut spans = Vec::with_capacity(changes.len());
    let mut from = 0;
    for (n, (key, payload)) in changes.iter().enumerate() {
        let payload = (*payload)?;
        let (start, len) = match olds.and_then(|o| o[n]) {
            Some((at_pgno, start, len)) if at_pgno == pgno => (start, len),
            _ => {
                let (i, found) = leaf_search_from(p, from, &key.0);
                if !found {
                    return None;
                }
                from = i + 1;
                leaf_payload_span(p, i)
            }
        };
        if len != payload.len() {
            return None;
        }
        spans.push((start, payload));
    }
    let mut page = PageBuf::scratch();
    page.bytes_mut().copy_from_slice(p.bytes());
    for (start, payload) in spans {
        page.bytes_mut()[start..start + payload.len()].copy_from_slice(payload);
    }
    Some(page)
}

/// Merges a leaf's entries with sorted changes.
fn merge_leaf<'a>(p: &'a PageBuf, changes: &'a [Change<'a>]) -> Vec<(&'a [u8], &'a [u8])> {
    let n = leaf_len(p);
    let mut out = Vec::with_capacity(n + changes.len());
    let (mut i, mut j) = (0, 0);
    while i < n || j < changes.len() {
        let take_old = match (i < n, j < changes.len()) {
            (true, false) => true,
            (false, true) => false,
            _ => cmp_keys(leaf_key(p, i), &changes[j].0.0).is_lt(),
        };
        if take_old {
            out.push((leaf_key(p, i), leaf_payload(p, i)));
            i += 1;
        } else {
            let (k, v) = &changes[j];
            if i < n && leaf_key(p, i) == &k.0[..] {
                i += 1; // replaced or deleted
            }
            if let Some(v) = v {
                out.push((&k.0[..], *v));
            }
            j += 1;
        }
    }
    out
}

/// Packs sorted entries into as few leaves as fit, sharing the bytes evenly between them.
fn pack_leaves(entries: &[(&[u8], &[u8])]) -> Vec<Piece> {
    let total: usize = entries.iter().map(|(_, v)| ENTRY_OVERHEAD + v.len()).sum();
    if entries.is_empty() {
        return Vec::new();
    }
    let pages = total.div_ceil(LEAF_SPACE);
    let target = total.div_ceil(pages);
    let mut pieces = Vec::with_capacity(pages);
    let mut start = 0;
    while start < entries.len() {
        let mut used = 0;
        let mut end = start;
        while end < entries.len() {
            let cost = ENTRY_OVERHEAD + entries[end].1.len();
            if used + cost > LEAF_SPACE || (used >= target && end > start) {
                break;
            }
            used += cost;
            end += 1;
        }
        pieces.push(Piece {
            first: Some(key_of(entries[start].0)),
            node: Child::Leaf(build_leaf(&entries[start..end])),
        });
        start = end;
    }
    pieces
}

fn key_of(bytes: &[u8]) -> Key {
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(bytes);
    Key(k)
}

/// A leaf page (unsealed) holding `entries`, which must fit.
fn build_leaf(entries: &[(&[u8], &[u8])]) -> Box<PageBuf> {
    let mut page = PageBuf::scratch();
    let b = page.bytes_mut();
    let n = entries.len();
    let mut off = HEADER_SIZE + 2 * n;
    for (i, (k, v)) in entries.iter().enumerate() {
        b[HEADER_SIZE + 2 * i..HEADER_SIZE + 2 * i + 2]
            .copy_from_slice(&(off as u16).to_le_bytes());
        b[off..off + KEY_LEN].copy_from_slice(k);
        b[off + KEY_LEN..off + KEY_LEN + 2].copy_from_slice(&(v.len() as u16).to_le_bytes());
        b[off + KEY_LEN + 2..off + KEY_LEN + 2 + v.len()].copy_from_slice(v);
        off += KEY_LEN + 2 + v.len();
    }
    // The rest of the page is zero, whatever the buffer held before, and so is the header
    // until the page is sealed (its sequence number says the page has no earlier version).
    b[off..].fill(0);
    b[..HEADER_SIZE].fill(0);
    // The entry count lives in the header's length field, set when sealed.
    page.bytes_mut()[8..12].copy_from_slice(&(n as u32).to_le_bytes());
    page
}

/// Groups nodes into branches of at most [`BRANCH_MAX`] children, evenly.
fn pack_branches(pieces: Vec<Piece>) -> Vec<Piece> {
    let n = pieces.len();
    let groups = n.div_ceil(BRANCH_MAX);
    let per = n.div_ceil(groups);
    let mut out = Vec::with_capacity(groups);
    let mut iter = pieces.into_iter().peekable();
    while iter.peek().is_some() {
        let group: Vec<Piece> = iter.by_ref().take(per).collect();
        let first = group[0].first;
        let mut children = Vec::with_capacity(group.len());
        let mut seps = Vec::with_capacity(group.len());
        for (i, piece) in group.into_iter().enumerate() {
            if i > 0 {
                // Every piece after the first of its parent carries its first key.
                debug_assert!(piece.first.is_some(), "a later piece without a first key");
                seps.push(piece.first.unwrap_or_default());
            }
            children.push(piece.node);
        }
        out.push(Piece {
            first,
            node: Child::Branch(Box::new(NewBranch { children, seps })),
        });
    }
    out
}

/// Size in bytes of a node's content, for the underfull test (leaves only; branches are
/// measured in children).
fn leaf_bytes(page: &PageBuf) -> usize {
    (0..leaf_len(page)).map(|i| leaf_entry_cost(page, i)).sum()
}

/// Joins rebuilt leaves that came out underfull with a neighbour (reading it if unchanged),
/// so that deletes do not leave a tree of near-empty pages.
fn join_underfull(
    rd: &Reader<'_>,
    out: &mut Vec<(Option<Key>, Child, bool)>,
    freed: &mut Vec<u64>,
) -> Result<()> {
    if out.len() < 2 {
        return Ok(());
    }
    let mut i = 0;
    while i < out.len() && out.len() >= 2 {
        let small = matches!(&out[i], (_, Child::Leaf(p), true) if leaf_bytes(p) < UNDERFULL);
        if !small {
            i += 1;
            continue;
        }
        // Join with the right neighbour, or the left one for the last child.
        let (a, b) = if i + 1 < out.len() {
            (i, i + 1)
        } else {
            (i - 1, i)
        };
        let left = leaf_page_of(rd, &out[a].1, freed)?;
        let right = leaf_page_of(rd, &out[b].1, freed)?;
        let (Some(left), Some(right)) = (left, right) else {
            // A neighbour that is a branch (mixed levels cannot happen in a valid tree).
            i += 1;
            continue;
        };
        let mut entries: Vec<(&[u8], &[u8])> = Vec::new();
        for p in [&left, &right] {
            for j in 0..leaf_len(p) {
                entries.push((leaf_key(p, j), leaf_payload(p, j)));
            }
        }
        let pieces = pack_leaves(&entries);
        let sep = out[a].0;
        let mut replacement: Vec<(Option<Key>, Child, bool)> = Vec::new();
        for (j, piece) in pieces.into_iter().enumerate() {
            let s = if j == 0 { sep } else { piece.first };
            replacement.push((s, piece.node, false));
        }
        out.splice(a..=b, replacement);
        i = a + 1;
    }
    Ok(())
}

/// The page of a leaf child, reading it (and marking it freed) if unchanged.
fn leaf_page_of(
    rd: &Reader<'_>,
    child: &Child,
    freed: &mut Vec<u64>,
) -> Result<Option<SharedPage>> {
    Ok(match child {
        Child::Leaf(p) => Some(Arc::new(p.clone())),
        Child::Branch(_) => None,
        Child::Clean(r) => match rd.node(*r)? {
            Node::Leaf(p) => {
                freed.push(r.pgno);
                Some(p)
            }
            Node::Branch(_) => None,
        },
    })
}

/// Gives every new node of `root` a page number from `allocate`, children first, seals it and
/// adds it to `out`; returns the root's reference. `allocate` is told whether the page is hot
/// (see [`crate::db::HOT_AGE`]): branches are, and leaves whose last version is recent.
pub fn write(
    root: Option<Child>,
    seq: u64,
    allocate: &mut dyn FnMut(bool) -> u64,
    out: &mut Vec<(u64, SharedPage)>,
) -> Option<PageRef> {
    let mut sink = Sink {
        pages: std::mem::take(out),
        flush: None,
    };
    let root = root.map(|c| write_child(c, seq, allocate, &mut sink));
    *out = sink.pages;
    root
}

/// [`write`], handing the sealed pages to `flush` `every` pages at a time as they are
/// sealed (the last ones too), so that the first can be on their way to the device while
/// the rest are being placed and sealed (a 20,000-change commit at 2^24 keys seals about
/// 21,000 flat-store pages in 15 ms).
pub fn write_streaming(
    root: Option<Child>,
    seq: u64,
    allocate: &mut dyn FnMut(bool) -> u64,
    every: usize,
    flush: &mut dyn FnMut(Sealed),
) -> Option<PageRef> {
    let mut sink = Sink {
        pages: Vec::with_capacity(every),
        flush: Some((every, flush)),
    };
    let root = root.map(|c| write_child(c, seq, allocate, &mut sink));
    if let Some((_, flush)) = sink.flush
        && !sink.pages.is_empty()
    {
        flush(sink.pages);
    }
    root
}

/// Sealed pages with their page numbers.
type Sealed = Vec<(u64, SharedPage)>;

/// Where [`write_child`] puts sealed pages.
struct Sink<'a> {
    pages: Sealed,
    /// Hand the pages over every so many.
    flush: Option<(usize, &'a mut dyn FnMut(Sealed))>,
}

impl Sink<'_> {
    fn push(&mut self, pgno: u64, page: SharedPage) {
        self.pages.push((pgno, page));
        if let Some((every, flush)) = self.flush.as_mut()
            && self.pages.len() >= *every
        {
            flush(std::mem::replace(
                &mut self.pages,
                Vec::with_capacity(*every),
            ));
        }
    }
}

fn write_child(
    child: Child,
    seq: u64,
    allocate: &mut dyn FnMut(bool) -> u64,
    out: &mut Sink<'_>,
) -> PageRef {
    match child {
        Child::Clean(r) => r,
        Child::Leaf(mut page) => {
            // A leaf patched in place still has its last version's header (a built one, zero).
            let pgno = allocate(seq.saturating_sub(page.seq()) <= crate::db::HOT_AGE);
            let n = page.len_field();
            let crc = page.seal(PageKind::LeafNode, n, seq, pgno);
            out.push(pgno, Arc::new(page));
            PageRef { pgno, crc }
        }
        Child::Branch(b) => {
            let NewBranch { children, seps } = *b;
            let refs: Vec<PageRef> = children
                .into_iter()
                .map(|c| write_child(c, seq, allocate, out))
                .collect();
            let mut page = PageBuf::scratch();
            let n = refs.len();
            let bytes = page.bytes_mut();
            for (i, r) in refs.iter().enumerate() {
                r.encode(&mut bytes[HEADER_SIZE + PAGE_REF_SIZE * i..]);
            }
            let base = HEADER_SIZE + PAGE_REF_SIZE * n;
            for (i, s) in seps.iter().enumerate() {
                bytes[base + KEY_LEN * i..base + KEY_LEN * (i + 1)].copy_from_slice(&s.0);
            }
            bytes[base + KEY_LEN * seps.len()..].fill(0);
            let pgno = allocate(true);
            let crc = page.seal(PageKind::BranchNode, n as u32, seq, pgno);
            out.push(pgno, Arc::new(page));
            PageRef { pgno, crc }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{MemStorage, Storage};
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    proptest::proptest! {
        #[test]
        fn scaling_is_within_one_of_the_exact_quotient(
            span in 1u64..,
            x_frac in 0.0f64..=1.0,
            n in 1usize..=PAGE_SIZE,
        ) {
            let x = ((span as f64 * x_frac) as u64).min(span);
            let exact = (u128::from(x) * n as u128 / u128::from(span)) as usize;
            let got = scale(x, span, n);
            proptest::prop_assert!(got <= n);
            proptest::prop_assert!(got.abs_diff(exact) <= 1, "{} vs {}", got, exact);
        }
    }

    fn pager() -> Pager {
        let storage = MemStorage::new();
        let file = storage.open(Path::new("/db/data"), true, true).unwrap();
        Pager::new(
            file,
            Path::new("/db/data"),
            1 << 20,
            Arc::new(AtomicBool::new(false)),
        )
    }

    use crate::testing::key;

    /// Applies a batch and writes it; returns the new root.
    fn apply(
        pager: &Pager,
        root: Option<PageRef>,
        changes: &BTreeMap<Key, Option<Vec<u8>>>,
        next: &mut u64,
    ) -> Option<PageRef> {
        let list: Vec<Change<'_>> = changes.iter().map(|(k, v)| (*k, v.as_deref())).collect();
        let up = update(pager, root, &list).unwrap();
        let mut out = Vec::new();
        let mut alloc = |_hot| {
            *next += 1;
            *next
        };
        let r = write(up.root, 1, &mut alloc, &mut out);
        pager.write_pages(out).unwrap();
        r
    }

    fn check(pager: &Pager, root: Option<PageRef>, model: &BTreeMap<Key, Vec<u8>>) {
        for (k, v) in model {
            assert_eq!(get(pager, root, k).unwrap().unwrap().bytes(), &v[..]);
        }
        let mut seen = Vec::new();
        range(pager, root, &Key([0; 31]), &Key([0xFF; 31]), &mut |k, v| {
            seen.push((*k, v.to_vec()));
            Ok(true)
        })
        .unwrap();
        assert_eq!(
            seen,
            model
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn streamed_writes_hand_over_the_same_pages_in_batches() {
        // The same update written whole and streamed 50 pages at a time: the same root,
        // the same pages in the same order, in batches of 50 but the last.
        let pager = pager();
        let changes: BTreeMap<Key, Option<Vec<u8>>> = (0..20_000u64)
            .map(|i| (key(i), Some(i.to_le_bytes().to_vec())))
            .collect();
        let list: Vec<Change<'_>> = changes.iter().map(|(k, v)| (*k, v.as_deref())).collect();
        let (mut whole, mut batches) = (Vec::new(), Vec::new());
        // Page numbers 1, 2, 3, ... in the order asked for.
        let counting = || {
            let mut next = 0;
            move |_hot: bool| {
                next += 1;
                next
            }
        };
        let root = write(
            update(&pager, None, &list).unwrap().root,
            1,
            &mut counting(),
            &mut whole,
        );
        let streamed = write_streaming(
            update(&pager, None, &list).unwrap().root,
            1,
            &mut counting(),
            50,
            &mut |pages| batches.push(pages),
        );
        assert_eq!(root, streamed);
        assert!(whole.len() > 200, "{} pages", whole.len());
        let (last, full) = batches.split_last().unwrap();
        assert!(full.iter().all(|b| b.len() == 50) && !last.is_empty() && last.len() <= 50);
        let flat: Vec<&(u64, SharedPage)> = batches.iter().flatten().collect();
        assert_eq!(flat.len(), whole.len());
        for ((p, a), (q, b)) in whole.iter().zip(flat) {
            assert_eq!((p, a.bytes()), (q, b.bytes()));
        }
        pager.write_pages(whole).unwrap();
        check(
            &pager,
            root,
            &changes.into_iter().map(|(k, v)| (k, v.unwrap())).collect(),
        );
    }

    #[test]
    fn batches_of_inserts_updates_and_deletes() {
        let pager = pager();
        let mut next = 1u64;
        let mut root = None;
        let mut model = BTreeMap::new();
        for round in 0..6u64 {
            let mut changes = BTreeMap::new();
            for i in 0..3000u64 {
                let k = key(i * 7 + round % 3);
                let v = if (i + round) % 5 == 0 {
                    None
                } else {
                    Some(vec![(i % 251) as u8; ((i * 13 + round) % 300) as usize])
                };
                changes.insert(k, v);
            }
            for (k, v) in &changes {
                match v {
                    Some(v) => {
                        model.insert(*k, v.clone());
                    }
                    None => {
                        model.remove(k);
                    }
                }
            }
            root = apply(&pager, root, &changes, &mut next);
            check(&pager, root, &model);
        }
        // Delete everything.
        let changes: BTreeMap<Key, Option<Vec<u8>>> = model.keys().map(|k| (*k, None)).collect();
        root = apply(&pager, root, &changes, &mut next);
        assert!(root.is_none());
    }

    /// A xorshift generator for the search tests.
    fn generator(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Up to `n` sorted distinct keys whose first eight bytes are spread evenly (shape 0),
    /// clustered (1) or all equal (2), and probes: the keys, keys next to them, random keys.
    fn keys_and_probes(
        shape: u32,
        n: usize,
        next: &mut impl FnMut() -> u64,
    ) -> (Vec<Key>, Vec<Key>) {
        let mut keys: Vec<Key> = (0..n)
            .map(|_| {
                let mut k = [0u8; KEY_LEN];
                let h = match shape {
                    0 => next(),
                    1 => 0x4000_0000_0000_0000 + next() % 700,
                    _ => 7,
                };
                k[..8].copy_from_slice(&h.to_be_bytes());
                k[8..16].copy_from_slice(&next().to_be_bytes());
                Key(k)
            })
            .collect();
        keys.sort();
        keys.dedup();
        let mut probes: Vec<Key> = keys.clone();
        for _ in 0..250 {
            let mut k = keys[(next() % keys.len() as u64) as usize];
            k.0[30] ^= 1 + (next() % 255) as u8;
            probes.push(k);
            let mut r = [0u8; KEY_LEN];
            r[..8].copy_from_slice(&next().to_be_bytes());
            probes.push(Key(r));
        }
        (keys, probes)
    }

    #[test]
    fn guided_search_finds_what_binary_search_finds() {
        // Keys spread evenly, clustered, and sharing their first eight bytes; bounds right,
        // wrong and absent: the result is always the binary search's.
        let mut next = generator(0x2545_F491_4F6C_DD1D);
        for shape in 0..3 {
            let (keys, probes) = keys_and_probes(shape, 90, &mut next);
            let entries: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (&k.0[..], &b"v"[..])).collect();
            let page = build_leaf(&entries);
            let (first, last) = (head(&keys[0].0), head(&keys[keys.len() - 1].0));
            for probe in &probes {
                let i = keys.partition_point(|k| k < probe);
                let binary = (i, keys.get(i) == Some(probe));
                let bounds = [
                    (0, u64::MAX),
                    (first, last),
                    (last, first),
                    (first, first),
                    (3, 9),
                ];
                for (lo, hi) in bounds {
                    assert_eq!(leaf_search_within(&page, 0, &probe.0, lo, hi), binary);
                }
            }
        }
    }

    #[test]
    fn guided_route_finds_what_binary_search_finds() {
        let mut next = generator(0x9E37_79B9_7F4A_7C15);
        for shape in 0..3 {
            let (seps, probes) = keys_and_probes(shape, BRANCH_MAX - 1, &mut next);
            let children: Vec<Child> = (0..=seps.len())
                .map(|i| {
                    Child::Clean(PageRef {
                        pgno: 2 + i as u64,
                        crc: 0,
                    })
                })
                .collect();
            let mut out = Vec::new();
            let mut pgno = 1000;
            let branch = Child::Branch(Box::new(NewBranch {
                children,
                seps: seps.clone(),
            }));
            let mut allocate = |_| {
                pgno += 1;
                pgno
            };
            write(Some(branch), 1, &mut allocate, &mut out);
            let page = &out[0].1;
            let (first, last) = (head(&seps[0].0), head(&seps[seps.len() - 1].0));
            for probe in &probes {
                let want = seps.partition_point(|s| s <= probe);
                let bounds = [(0, u64::MAX), (first, last), (last, first), (5, 6)];
                for (lo, hi) in bounds {
                    assert_eq!(branch_route_within(page, &probe.0, lo, hi), want);
                }
            }
        }
    }

    /// A tree of 5,000 keys with 40-byte values: its root and its keys, sorted.
    fn five_thousand_keys(pager: &Pager) -> (Option<PageRef>, Vec<Key>) {
        let mut next = 1u64;
        let changes: BTreeMap<Key, Option<Vec<u8>>> =
            (0..5000u64).map(|i| (key(i), Some(vec![1; 40]))).collect();
        let root = apply(pager, None, &changes, &mut next);
        (root, changes.keys().copied().collect())
    }

    #[test]
    fn leaf_windows_answer_ranges_across_neighbouring_leaves_or_decline() {
        let pager = pager();
        let (root, keys) = five_thousand_keys(&pager);
        for (step, all_answered) in [(10, true), (400, false)] {
            // Walking every 10th key reaches every leaf (about 50 keys each); every 400th, a
            // leaf in eight.
            let walked: Vec<Key> = keys.iter().step_by(step).copied().collect();
            let windows = walk_for_commit(&pager, root, &walked, &[]).unwrap().leaves;
            let (mut answered, mut declined) = (0, 0);
            for a in (0..4800).step_by(37) {
                for len in [0, 1, 40, 60, 130] {
                    let (lo, hi) = (keys[a], keys[(a + len).min(4999)]);
                    let mut seen = Vec::new();
                    let covered = windows
                        .range(&lo, &hi, &mut |k, _| {
                            seen.push(*k);
                            Ok(true)
                        })
                        .unwrap();
                    if covered {
                        assert_eq!(seen, keys[a..=(a + len).min(4999)].to_vec());
                        answered += 1;
                    } else {
                        assert!(seen.is_empty());
                        declined += 1;
                    }
                }
            }
            assert_eq!(
                declined == 0,
                all_answered,
                "{answered} answered, {declined} not"
            );
            assert!(answered > 0);
        }
    }

    #[test]
    fn ranges() {
        let pager = pager();
        let (root, keys) = five_thousand_keys(&pager);
        let (lo, hi) = (keys[1000], keys[1200]);
        let mut seen = Vec::new();
        range(&pager, root, &lo, &hi, &mut |k, _| {
            seen.push(*k);
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, keys[1000..=1200].to_vec());
        // One cursor across many increasing scans gives the same as fresh scans.
        let mut cursor = Cursor::new();
        for w in keys.windows(7).step_by(5) {
            let mut a = Vec::new();
            range_with(&pager, root, &mut cursor, &w[1], &w[5], &mut |k, _| {
                a.push(*k);
                Ok(true)
            })
            .unwrap();
            assert_eq!(a, w[1..=5].to_vec());
        }
        // And after a jump backwards.
        let mut a = Vec::new();
        range_with(
            &pager,
            root,
            &mut cursor,
            &keys[3],
            &keys[4],
            &mut |k, _| {
                a.push(*k);
                Ok(true)
            },
        )
        .unwrap();
        assert_eq!(a, keys[3..=4].to_vec());
        let mut probe: Vec<Key> = keys.iter().step_by(3).copied().collect();
        probe.push(Key([0xFF; 31]));
        probe.sort();
        let got = get_many(&pager, root, &probe).unwrap();
        for (k, g) in probe.iter().zip(got) {
            assert_eq!(g.is_some(), keys.binary_search(k).is_ok());
        }
    }
}
