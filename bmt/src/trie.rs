//! The trie store: the hashes of the state trie in 4 KiB pages, updated along the paths of the
//! changed keys only.
//!
//! # Pages
//!
//! The trie is cut into layers of pages, in the database's [`Shape`]: the top page (layer 0)
//! holds the nodes at depths 1 to `t` (its `t` levels, 1 to 6, fixed when the database is
//! created), and every page of a lower layer the 126 nodes of six levels below its path `p`,
//! so pages start at depths 0, `t`, `t + 6`, `t + 12`, ... Nodes are in heap order: relative
//! depth `r` (1 to the page's levels), position `j` among the `2^r` nodes of that level (the
//! `r` key bits below `p` read as a number), index `2^r - 2 + j`. The node at `p` itself
//! belongs to the page above (the root node, at depth 0, is kept in the meta record).
//!
//! Why the shape depends on the state's size: with six levels everywhere (`t = 6`), pages
//! start at depths 0, 6, 12, 18, and at 2^24 keys the lowest stored layer (depth 18, about 64
//! keys a page) would be 262,144 pages, a gigabyte that no cache of a few hundred MiB holds,
//! so nearly every update would read one trie page from the device besides its flat-store
//! leaf. With `t = 3` the lowest stored layer at 2^24 keys is the one at depth 15 (32,768
//! pages of about 512 keys, 128 MiB), below which the subtries at depth 21 hold about 8 keys,
//! rebuilt from the flat-store leaf the update reads anyway. But at 2^20 keys `t = 3` would
//! store the layer at depth 15 (32 keys a page), four times the pages to write per commit of
//! the layer at depth 12 that `t = 6` stores. See [`Shape::top_levels_for`].
//!
//! A node hash says nothing of the node's kind, so each page also records which of its nodes
//! are leaves (a zero hash is an empty subtrie; any other hash is a branch unless marked a
//! leaf). The `2^levels` bottom nodes of a page are the tops of the pages of the next layer.
//!
//! # Elided pages
//!
//! Keys of a random state spread so evenly that the last page on each path holds only a few
//! leaves; stored in full, those pages would take most of the disk. So a page is stored
//! only when at least `T` keys (the elision threshold, recorded in the meta record) fall under
//! its path. Below that, the nodes are not stored: whoever needs them rebuilds them from the
//! fewer than `T` keys under the path, which are one short, contiguous run of the flat store.
//! The invariant "stored if and only if at least `T` keys below" makes the stored set a
//! function of the state alone, so it needs no bookkeeping beyond each page's key count.
//!
//! Page layout after the common header (whose length field holds the page's levels, 1 to 6;
//! 0 in a page of format version 3 or older, which has 6):
//!
//! | bytes of the page | field |
//! |---|---|
//! | 32..4064 | 126 node hashes, 32 bytes each, in heap order (a top page of `t` levels uses the first `2^(t+1) - 2`) |
//! | 4064..4080 | leaf bits: bit `i` (u128 little endian) set when node `i` is a leaf |
//! | 4080..4088 | stored-child bits: bit `j` (u64) set when the page below bottom node `j` is stored |
//! | 4088..4096 | number of keys under the page's path (u64) |
//!
//! Pages are found through the page table, a B+tree from page id to page reference (see
//! [`PageId::table_key`]), and like every page they are copy-on-write.
//!
//! # Updates
//!
//! [`Update`] takes a sorted batch of effective changes (inserts, value changes, deletes of
//! present keys) and walks down only where changes are. At a branch it splits the batch on the
//! next key bit and recombines the two results: a side that became empty next to a leaf pulls
//! the leaf up (its hash does not depend on its depth). Where a change lands on a leaf or an
//! empty subtrie, the new subtrie is built from the keys now under that position. Each page
//! that is touched is copied, changed, and later written to a fresh place; pages whose key
//! count falls below `T` are dropped with everything under them.

use rustc_hash::FxHashMap as HashMap;

use bmt_core::{
    Hash, KEY_BITS, Key, LeafNode, LeafValue, MerkleProof, MultiProof, Position, ProofError,
    ProofNode, Terminal, blake2b_256_many, hash_branch,
};

use crate::btree::Cursor;
use crate::error::{Error, Result};
use std::sync::Arc;

use crate::page::{HEADER_SIZE, PAGE_SIZE, PageBuf, PageRef, SharedPage};

/// Levels of every page below the top page.
pub const PAGE_LEVELS: usize = 6;
/// Node slots per page (a top page of fewer levels uses the first `2^(levels+1) - 2`).
pub const PAGE_NODES: usize = 126;
const LEAF_BITS_AT: usize = HEADER_SIZE + PAGE_NODES * 32;
const STORED_AT: usize = LEAF_BITS_AT + 16;
const COUNT_AT: usize = STORED_AT + 8;
const _: () = assert!(COUNT_AT + 8 == PAGE_SIZE);

/// The default elision threshold: pages with fewer keys below them are not stored.
pub const DEFAULT_ELIDE_BELOW: u32 = 20;

/// How the trie is cut into pages, and which pages are stored: fixed when the database is
/// created, and recorded in its meta record.
///
/// The top page has `top_levels` levels (1 to 6) and every other page 6, so pages start at
/// depths 0, `t`, `t + 6`, `t + 12`, ... for `t = top_levels`. What `t` is best for depends
/// on how many keys the state holds (see [`Shape::for_keys`]): the lowest layer of stored
/// pages should hold a few hundred keys a page, so that the stored trie is a small part of
/// the database (and stays cached) while the elided subtries below it hold a few keys each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Pages with fewer keys below them are not stored (at least 2).
    pub elide_below: u32,
    /// Levels of the top page: 1 to 6.
    pub top_levels: u8,
}

impl Shape {
    /// The top page's levels for a state of about `keys` keys, a page cache of `cache_bytes`
    /// and the elision threshold `elide_below` (`T`): such that at that size the lowest
    /// stored layer holds at least 256 keys a page (so that the subtries elided below it hold
    /// 4 or more: fewer would mean more pages to write per commit for little less hashing),
    /// more if that is what it takes for the stored trie to fit in half the cache (so that a
    /// commit finds its trie pages there, and reads from the device only its flat-store
    /// leaves), but at most `32 T` (so that the subtries below hold about `T / 2` keys and
    /// nearly all are elided: with about `T` keys, a good part of them would be stored, a
    /// layer of mostly empty pages; measured at 2^24 keys with `t = 2`, pages of 1,024 keys
    /// and subtries of 16 below: a file of 3.1 GB, 25,600 pages written per 10,000 updates
    /// against 22,400, and 35,402 updates/s against 45,966 with `t = 3`). With a 256 MiB cache
    /// and `T = 20` the lowest stored pages start at depth 12 at 2^20 keys (a top page of 6
    /// levels: pages at 0, 6, 12, 18, ...), and at depth 15 at 2^24 keys (3 levels: pages at
    /// 0, 3, 9, 15, 21, ...), where pages at depth 12 or 18 would hold 4 or 64 times too many,
    /// or a gigabyte of pages.
    pub fn top_levels_for(keys: u64, cache_bytes: u64, elide_below: u32) -> u8 {
        let keys = u128::from(keys.max(1));
        let fits = (keys * 2 * PAGE_SIZE as u128).div_ceil(u128::from(cache_bytes.max(1)));
        let most = 32 * u128::from(elide_below.max(2));
        let per_page = fits.clamp(most.min(256), most);
        // The deepest layer with at least `per_page` keys a page, then one deeper if its
        // pages would hold more than `most`.
        let mut lowest = (keys / per_page).checked_ilog2().unwrap_or(0) as usize;
        if keys >> lowest > most {
            lowest += 1;
        }
        match lowest % PAGE_LEVELS {
            0 => PAGE_LEVELS as u8,
            t => t as u8,
        }
    }

    /// Whether the shape is one this build handles.
    pub fn is_valid(&self) -> bool {
        self.elide_below >= 2 && (1..=PAGE_LEVELS as u8).contains(&self.top_levels)
    }

    fn t(&self) -> usize {
        self.top_levels as usize
    }

    /// The depth of the top position of the pages of `layer`: 0, `t`, `t + 6`, ...
    pub fn layer_top(&self, layer: usize) -> usize {
        if layer == 0 {
            0
        } else {
            self.t() + PAGE_LEVELS * (layer - 1)
        }
    }

    /// The deepest layer of pages (the last whose top is above depth 248).
    pub fn max_layer(&self) -> usize {
        (KEY_BITS - 1 - self.t()) / PAGE_LEVELS + 1
    }

    /// Whether a page starts at `depth` (its top position is there).
    pub fn is_page_top(&self, depth: usize) -> bool {
        depth == 0 || (depth >= self.t() && (depth - self.t()).is_multiple_of(PAGE_LEVELS))
    }

    /// The levels of the page whose top is at `top`.
    fn levels_at(&self, top: usize) -> usize {
        if top == 0 { self.t() } else { PAGE_LEVELS }
    }

    /// The depth of the bottom nodes of the page whose top is at `top`.
    fn bottom_of(&self, top: usize) -> usize {
        top + self.levels_at(top)
    }

    /// The top of the page that holds the node at `depth` (1 or more).
    fn top_above(&self, depth: usize) -> usize {
        if depth <= self.t() {
            0
        } else {
            (depth - self.t() - 1) / PAGE_LEVELS * PAGE_LEVELS + self.t()
        }
    }

    /// The index, in its page, of the first bottom node of the page whose top is at `top`.
    fn bottom_base(&self, top: usize) -> usize {
        (1 << self.levels_at(top)) - 2
    }

    /// The index of the top page's bottom node on `key`'s path: its first `t` bits.
    fn top_bits(&self, key: &Key) -> usize {
        key.0[0] as usize >> (8 - self.t())
    }

    /// The top page.
    pub fn root_page(&self) -> PageId {
        PageId {
            path: Key::default(),
            top: 0,
            levels: self.top_levels,
        }
    }

    /// The page whose top position is at `depth` (a page top: see [`Shape::is_page_top`]) on
    /// `key`'s path.
    pub fn page(&self, key: &Key, depth: usize) -> PageId {
        debug_assert!(self.is_page_top(depth));
        PageId {
            path: key.prefix(depth),
            top: depth as u8,
            levels: self.levels_at(depth) as u8,
        }
    }

    /// The page of `layer` on `key`'s path.
    pub fn page_at_layer(&self, key: &Key, layer: usize) -> PageId {
        self.page(key, self.layer_top(layer))
    }

    /// The page whose page-table key this is (see [`PageId::table_key`]), if it is one.
    pub fn page_of_table_key(&self, key: &Key) -> Option<PageId> {
        let marker = (0..KEY_BITS).rev().find(|&i| key.bit(i))?;
        if !self.is_page_top(marker) {
            return None;
        }
        Some(self.page(key, marker))
    }

    /// The index of the node at `depth` on `key`'s path inside its page.
    fn node_index(&self, key: &Key, depth: usize) -> usize {
        let top = self.top_above(depth);
        let r = depth - top;
        let mut j = 0usize;
        for i in top..depth {
            j = (j << 1) | key.bit(i) as usize;
        }
        (1 << r) - 2 + j
    }
}

/// Which page: the path bits above it, where it starts and how many levels it holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct PageId {
    /// The path: the first `top` bits, the rest zero.
    path: Key,
    /// The depth of the page's top position.
    top: u8,
    /// The page's levels.
    levels: u8,
}

impl PageId {
    /// The key of this page in the page table: the path bits, then a 1 bit, then zeros.
    pub fn table_key(&self) -> Key {
        self.path.with_bit(self.depth(), true)
    }

    /// The path bits above the page (the rest zero).
    pub fn path(&self) -> Key {
        self.path
    }

    /// The depth of the page's top position.
    pub fn depth(&self) -> usize {
        self.top as usize
    }

    /// The page's levels.
    pub fn levels(&self) -> usize {
        self.levels as usize
    }

    /// The number of bottom nodes (and of pages that may be stored below).
    pub fn bottom_nodes(&self) -> usize {
        1 << self.levels()
    }

    /// The page below bottom node `j`.
    pub fn child(&self, j: usize) -> PageId {
        let top = self.depth();
        let levels = self.levels();
        let mut path = self.path;
        // (Below the last layer's page, positions past the key's last bit do not exist.)
        for b in (0..levels).filter(|b| top + b < KEY_BITS) {
            path = path.with_bit(top + b, j >> (levels - 1 - b) & 1 == 1);
        }
        PageId {
            path,
            top: (top + levels).min(u8::MAX as usize) as u8,
            levels: PAGE_LEVELS as u8,
        }
    }
}

/// What checking one stored trie page found (see [`check_page`]).
#[derive(Debug)]
pub struct PageCheck {
    /// The hash of the position above the page (a branch over its two top nodes).
    pub top: Hash,
    /// Keys under the page, as the page records.
    pub count: u64,
    /// Bottom branches whose page below is stored: `(j, hash)`.
    pub stored_children: Vec<(usize, Hash)>,
    /// Bottom branches whose page below is elided: `(j, hash)`, to recompute from the keys.
    pub elided_children: Vec<(usize, Hash)>,
}

/// Checks a stored trie page on its own: every branch inside it is the hash of its two
/// children and has at least two keys below (not two empty children, nor a leaf beside an
/// empty one); nothing lies below a leaf or an empty position.
pub fn check_page(page: &PageBuf) -> Result<PageCheck, String> {
    let levels = raw_levels(page)?;
    let p = TriePage::decode(page);
    let at = |d: usize, i: usize| (1usize << d) - 2 + i;
    for d in 1..levels {
        for i in 0..1usize << d {
            let (l, r) = (p.node(at(d + 1, 2 * i)), p.node(at(d + 1, 2 * i + 1)));
            match p.node(at(d, i)) {
                NodeKind::Branch(h) => {
                    let collapses = matches!(
                        (l, r),
                        (NodeKind::Empty, NodeKind::Empty)
                            | (NodeKind::Leaf(_), NodeKind::Empty)
                            | (NodeKind::Empty, NodeKind::Leaf(_))
                    );
                    if collapses {
                        return Err(format!("branch at depth {d}, index {i} is not canonical"));
                    }
                    if bmt_core::hash_branch(&l.hash(), &r.hash()) != h {
                        return Err(format!("branch at depth {d}, index {i} has a wrong hash"));
                    }
                }
                NodeKind::Leaf(_) | NodeKind::Empty => {
                    if l != NodeKind::Empty || r != NodeKind::Empty {
                        return Err(format!("nodes below a leaf or empty position at depth {d}"));
                    }
                }
            }
        }
    }
    let (n0, n1) = (p.node(0), p.node(1));
    let mut check = PageCheck {
        top: bmt_core::hash_branch(&n0.hash(), &n1.hash()),
        count: p.count(),
        stored_children: Vec::new(),
        elided_children: Vec::new(),
    };
    for j in 0..1 << levels {
        if let NodeKind::Branch(h) = p.node(at(levels, j)) {
            if p.child_stored(j) {
                check.stored_children.push((j, h));
            } else {
                check.elided_children.push((j, h));
            }
        }
    }
    Ok(check)
}

/// The page ids on the paths of sorted `keys` at `layer`, in page-table key order, each once,
/// with the range of keys under each.
pub fn page_ids_at(
    shape: Shape,
    keys: &[Key],
    layer: usize,
) -> Vec<(PageId, std::ops::Range<usize>)> {
    let mut out: Vec<(PageId, std::ops::Range<usize>)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let id = shape.page_at_layer(k, layer);
        match out.last_mut() {
            Some((last, range)) if *last == id => range.end = i + 1,
            _ => out.push((id, i..i + 1)),
        }
    }
    out
}

/// What is at a position of the trie.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NodeKind {
    /// An empty subtrie.
    Empty,
    /// A leaf, by hash.
    Leaf(Hash),
    /// A branch, by hash.
    Branch(Hash),
}

impl NodeKind {
    /// The node's hash (zero when empty).
    pub fn hash(&self) -> Hash {
        match self {
            NodeKind::Empty => Hash::ZERO,
            NodeKind::Leaf(h) | NodeKind::Branch(h) => *h,
        }
    }

    /// The root node of a state with `key_count` keys and root `root`.
    pub fn root(root: Hash, key_count: u64) -> Self {
        match key_count {
            0 => NodeKind::Empty,
            1 => NodeKind::Leaf(root),
            _ => NodeKind::Branch(root),
        }
    }
}

/// A trie page in memory: the page buffer itself, in its on-disk layout (so that copying a
/// stored page to change it, and writing it, are each one 4 KiB copy or none).
#[derive(Debug)]
pub struct TriePage {
    page: Box<PageBuf>,
}

impl Clone for TriePage {
    fn clone(&self) -> Self {
        TriePage::decode(&self.page)
    }
}

impl TriePage {
    fn empty(count: u64, levels: usize) -> Self {
        let mut page = PageBuf::scratch();
        // The header too: a zero sequence number says the page has no earlier version.
        page.bytes_mut()[..COUNT_AT].fill(0);
        page.bytes_mut()[8..12].copy_from_slice(&(levels as u32).to_le_bytes());
        let mut p = TriePage { page };
        p.set_count(count);
        p
    }

    fn decode(page: &PageBuf) -> Self {
        let mut copy = PageBuf::scratch();
        copy.bytes_mut().copy_from_slice(page.bytes());
        TriePage { page: copy }
    }

    /// The page as an unsealed page buffer.
    pub fn into_page(self) -> Box<PageBuf> {
        self.page
    }

    fn leaf_bits(&self) -> u128 {
        u128::from_le_bytes(
            self.page.bytes()[LEAF_BITS_AT..STORED_AT]
                .try_into()
                .expect("16 bytes"),
        )
    }

    fn stored(&self) -> u64 {
        raw_stored_bits(&self.page)
    }

    fn count(&self) -> u64 {
        u64::from_le_bytes(self.page.bytes()[COUNT_AT..].try_into().expect("8 bytes"))
    }

    fn set_count(&mut self, count: u64) {
        self.page.bytes_mut()[COUNT_AT..].copy_from_slice(&count.to_le_bytes());
    }

    fn node(&self, i: usize) -> NodeKind {
        raw_node(&self.page, i)
    }

    fn set(&mut self, i: usize, node: NodeKind) {
        let at = HEADER_SIZE + 32 * i;
        let mut leaves = self.leaf_bits();
        if matches!(node, NodeKind::Leaf(_)) {
            leaves |= 1 << i;
        } else {
            leaves &= !(1 << i);
        }
        let b = self.page.bytes_mut();
        b[at..at + 32].copy_from_slice(node.hash().as_bytes());
        b[LEAF_BITS_AT..STORED_AT].copy_from_slice(&leaves.to_le_bytes());
    }

    fn child_stored(&self, j: usize) -> bool {
        self.stored() >> j & 1 == 1
    }

    fn set_child_stored(&mut self, j: usize, stored: bool) {
        let bits = if stored {
            self.stored() | 1 << j
        } else {
            self.stored() & !(1 << j)
        };
        self.page.bytes_mut()[STORED_AT..COUNT_AT].copy_from_slice(&bits.to_le_bytes());
    }
}

/// A trie page as a source has it: on disk (by reference), or in memory (changed by an
/// uncommitted session).
#[derive(Clone, Debug)]
pub enum PageView {
    /// A committed page and its reference.
    Stored(SharedPage, PageRef),
    /// A page of an uncommitted overlay.
    Memory(Arc<TriePage>),
}

impl PageView {
    /// Node `i`.
    pub fn node(&self, i: usize) -> NodeKind {
        match self {
            PageView::Stored(p, _) => raw_node(p, i),
            PageView::Memory(p) => p.node(i),
        }
    }

    /// Whether the page below bottom node `j` is stored.
    pub fn child_stored(&self, j: usize) -> bool {
        self.stored_bits() >> j & 1 == 1
    }

    fn stored_bits(&self) -> u64 {
        match self {
            PageView::Stored(p, _) => raw_stored_bits(p),
            PageView::Memory(p) => p.stored(),
        }
    }

    /// A copy to change, and the committed page it replaces (if on disk).
    fn to_owned(&self) -> (TriePage, Option<PageRef>) {
        match self {
            PageView::Stored(p, r) => (TriePage::decode(p), Some(*r)),
            PageView::Memory(p) => ((**p).clone(), None),
        }
    }

    /// The committed page this view is, if any.
    fn stored_ref(&self) -> Option<PageRef> {
        match self {
            PageView::Stored(_, r) => Some(*r),
            PageView::Memory(_) => None,
        }
    }
}

/// Node `i` of a raw trie page, without decoding the whole page.
fn raw_node(page: &PageBuf, i: usize) -> NodeKind {
    let b = page.bytes();
    let at = HEADER_SIZE + 32 * i;
    let h = Hash(b[at..at + 32].try_into().expect("32 bytes"));
    let leaves = u128::from_le_bytes(b[LEAF_BITS_AT..STORED_AT].try_into().expect("16"));
    if h.is_zero() {
        NodeKind::Empty
    } else if leaves >> i & 1 == 1 {
        NodeKind::Leaf(h)
    } else {
        NodeKind::Branch(h)
    }
}

/// Fuzzing: checks `page` as a trie page read from disk and, when it passes, runs the
/// whole-page check of `bmt check` and reads every node.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_page(page: &PageBuf) {
    if validate_page(page).is_err() {
        return;
    }
    let _ = check_page(page);
    for i in 0..PAGE_NODES {
        let _ = raw_node(page, i);
    }
    let _ = raw_stored_bits(page);
}

/// Seals a trie page made by an update (see [`TriePage::into_page`]) for writing as page
/// `pgno` of commit `seq`, keeping the levels its header records; returns its checksum.
pub fn seal_page(page: &mut PageBuf, seq: u64, pgno: u64) -> u32 {
    let levels = u32::from_le_bytes(page.bytes()[8..12].try_into().expect("4 bytes"));
    page.seal(crate::page::PageKind::Trie, levels, seq, pgno)
}

/// The levels a trie page's header records: 1 to 6 (a page of format version 3 or older
/// records 0, and has 6).
fn raw_levels(page: &PageBuf) -> Result<usize, String> {
    let levels = u32::from_le_bytes(page.bytes()[8..12].try_into().expect("4 bytes"));
    match levels as usize {
        0 => Ok(PAGE_LEVELS),
        l @ 1..=PAGE_LEVELS => Ok(l),
        other => Err(format!("a trie page of {other} levels")),
    }
}

/// [`validate_page`] of the page read as page `id`, whose levels must be the layer's.
pub fn validate_page_of(page: &PageBuf, id: &PageId) -> Result<(), String> {
    validate_page(page)?;
    levels_match(page, id)
}

/// Whether a page that passed [`validate_page`] has the levels of page `id`'s layer.
pub fn levels_match(page: &PageBuf, id: &PageId) -> Result<(), String> {
    match raw_levels(page)? {
        l if l == id.levels() => Ok(()),
        l => Err(format!("a page of {l} levels at depth {}", id.depth())),
    }
}

/// Checks a trie page read from disk: its levels, and leaf and stored bits only where they
/// make sense.
pub fn validate_page(page: &PageBuf) -> Result<(), String> {
    let levels = raw_levels(page)?;
    let nodes = (1 << (levels + 1)) - 2;
    let leaves = u128::from_le_bytes(
        page.bytes()[LEAF_BITS_AT..STORED_AT]
            .try_into()
            .expect("16 bytes"),
    );
    if leaves >> nodes != 0 {
        return Err("leaf bits beyond the last node".into());
    }
    for i in 0..PAGE_NODES {
        let at = HEADER_SIZE + 32 * i;
        let zero = page.bytes()[at..at + 32] == [0; 32];
        if leaves >> i & 1 == 1 && zero {
            return Err(format!("node {i} is an empty leaf"));
        }
        if i >= nodes && !zero {
            return Err(format!("node {i} beyond a {levels}-level page"));
        }
    }
    let stored = raw_stored_bits(page);
    if stored.checked_shr(1 << levels).unwrap_or(0) != 0 {
        return Err("stored-child bits beyond the bottom nodes".into());
    }
    for j in 0..1 << levels {
        if stored >> j & 1 == 1
            && !matches!(raw_node(page, (1 << levels) - 2 + j), NodeKind::Branch(_))
        {
            return Err(format!(
                "stored child {j} under a node that is not a branch"
            ));
        }
    }
    let count = u64::from_le_bytes(page.bytes()[COUNT_AT..].try_into().expect("8 bytes"));
    if count < 2 {
        return Err(format!("a stored page with {count} keys"));
    }
    Ok(())
}

/// The committed state a trie operation reads: stored trie pages and the flat store.
pub trait TrieSource: Sync {
    /// The stored page `id` and its reference, or `None` if not stored.
    fn page(&self, id: &PageId) -> Result<Option<PageView>>;

    /// Calls `f` with every key in `lo..=hi` and what its leaf holds, in order, until `f`
    /// returns false. `cursor` carries the position between scans of one walk.
    fn scan(
        &self,
        cursor: &mut Cursor,
        lo: &Key,
        hi: &Key,
        f: &mut dyn FnMut(&Key, LeafValue) -> Result<bool>,
    ) -> Result<()>;

    /// An error for a trie that contradicts the flat store.
    fn inconsistent(&self, what: String) -> Error;
}

/// Keys under the position (`key`, `depth`) with what their leaves hold.
fn scan_leaves(
    src: &dyn TrieSource,
    cursor: &mut Cursor,
    key: &Key,
    depth: usize,
) -> Result<Vec<(Key, LeafValue)>> {
    let lo = key.prefix(depth);
    let hi = key.prefix_end(depth);
    let mut out = Vec::new();
    src.scan(cursor, &lo, &hi, &mut |k, v| {
        out.push((*k, v));
        Ok(true)
    })?;
    Ok(out)
}

/// The hash of the subtrie of sorted `leaves` whose top is at `depth`.
fn subtrie(leaves: &[(Key, Hash)], depth: usize) -> NodeKind {
    match leaves {
        [] => NodeKind::Empty,
        [(_, h)] => NodeKind::Leaf(*h),
        _ => NodeKind::Branch(branch_over(leaves, depth)),
    }
}

/// The hash of the branch at `depth` over two or more sorted, distinct `leaves` that share
/// their first `depth` bits: the branch where the first and last keys part, under a chain of
/// branches with one empty side up to `depth`.
fn branch_over(leaves: &[(Key, Hash)], depth: usize) -> Hash {
    let (first, last) = (&leaves[0].0, &leaves[leaves.len() - 1].0);
    let part = first.common_prefix_bits(last);
    let split = leaves.partition_point(|(k, _)| !k.bit(part.min(KEY_BITS - 1)));
    if part >= KEY_BITS || split == 0 || split == leaves.len() {
        // Equal or unsorted keys (only from a corrupted store): no trie has them, and any
        // hash will fail the root check.
        return leaves[0].1;
    }
    let side = |leaves: &[(Key, Hash)]| match leaves {
        [] => Hash::ZERO,
        [(_, h)] => *h,
        _ => branch_over(leaves, part + 1),
    };
    let mut h = hash_branch(&side(&leaves[..split]), &side(&leaves[split..]));
    for d in (depth..part).rev() {
        h = if first.bit(d) {
            hash_branch(&Hash::ZERO, &h)
        } else {
            hash_branch(&h, &Hash::ZERO)
        };
    }
    h
}

/// An effective change to the trie.
#[derive(Clone, Copy, Debug)]
pub struct TrieChange {
    /// The key.
    pub key: Key,
    /// The new leaf's hash, or `None` for a delete.
    pub leaf: Option<Hash>,
    /// +1 for a new key, -1 for a deleted one, 0 for a changed value.
    pub delta: i64,
}

impl TrieChange {
    /// The change of `key`'s leaf from `old` to `new` (values as their leaves hold them).
    pub fn between(key: Key, old: Option<&LeafValue>, new: Option<LeafValue>) -> TrieChange {
        let delta = match (old, &new) {
            (None, Some(_)) => 1,
            (Some(_), None) => -1,
            _ => 0,
        };
        TrieChange {
            key,
            leaf: new.map(|value| bmt_core::LeafNode { key, value }.hash()),
            delta,
        }
    }

    /// [`TrieChange::between`] of many keys, each given with whether it had a leaf and its new
    /// leaf's value: the new leaves are hashed side by side (see [`blake2b_256_many`]).
    pub fn between_many(changes: &[(Key, bool, Option<LeafValue>)]) -> Vec<TrieChange> {
        let encoded: Vec<bmt_core::EncodedNode> = changes
            .iter()
            .filter_map(|(key, _, new)| new.map(|value| LeafNode { key: *key, value }.encode()))
            .collect();
        let mut hashes = vec![Hash::ZERO; encoded.len()];
        blake2b_256_many(&encoded, &mut hashes);
        let mut hashes = hashes.into_iter();
        changes
            .iter()
            .map(|(key, had, new)| TrieChange {
                key: *key,
                leaf: new.and_then(|_| hashes.next()),
                delta: match (had, new) {
                    (false, Some(_)) => 1,
                    (true, None) => -1,
                    _ => 0,
                },
            })
            .collect()
    }
}

/// A page touched by an update.
#[derive(Debug)]
enum Touched {
    /// The page's new content, and the reference of the page it replaces.
    Live(TriePage, Option<PageRef>),
    /// The page is no longer stored.
    Removed(Option<PageRef>),
}

/// The outcome of an update: the new root node and the pages to write or drop.
#[derive(Debug)]
pub struct TrieDelta {
    /// The new root node.
    pub root: NodeKind,
    /// New page contents (with the page they replace), and pages no longer stored.
    pub pages: Vec<(PageId, Option<TriePage>, Option<PageRef>)>,
}

/// Where an update hands the pages of each subtrie below the top page as soon as that
/// subtrie is done (see [`Update::run`]): page id, new content (`None`: no longer stored), and
/// the committed page it replaces.
pub type PageSink<'s> =
    dyn Fn(Vec<(PageId, Option<TriePage>, Option<PageRef>)>) -> Result<()> + Sync + 's;

/// One batch of changes being applied to the trie.
pub struct Update<'a> {
    src: &'a dyn TrieSource,
    cursor: Cursor,
    shape: Shape,
    touched: HashMap<PageId, Touched>,
    /// New nodes at the top page's bottom (depth 3) computed beforehand (in parallel), by the
    /// top 3 key bits.
    /// (With whether the page below each is stored: its pages may have been handed to the
    /// sink already, see [`Update::run`].)
    precomputed: HashMap<usize, (NodeKind, bool)>,
    /// Buffers of `merged_leaves`, kept from call to call.
    scratch_keys: Vec<Key>,
    scratch_nodes: Vec<bmt_core::EncodedNode>,
    scratch_hashes: Vec<Hash>,
}

/// Batches at least this large update the 8 subtries below the top page in parallel.
const PARALLEL_MIN_CHANGES: usize = 256;

impl<'a> Update<'a> {
    /// Applies `changes` (sorted, distinct keys, effective) to the trie with root `root` and
    /// `key_count` keys.
    ///
    /// With a `sink`, a large batch hands the pages of each of the subtries below the top
    /// page to it as soon as that subtrie is done, on the thread that did it (a commit then
    /// starts writing them while the other subtries are still being updated); the returned
    /// delta holds the other pages.
    pub fn run(
        src: &'a dyn TrieSource,
        shape: Shape,
        root: NodeKind,
        key_count: u64,
        changes: &[TrieChange],
        sink: Option<&PageSink<'_>>,
    ) -> Result<TrieDelta> {
        let threshold = shape.elide_below;
        let root_stored = key_count >= threshold as u64;
        let new_update = |touched, precomputed| Update {
            src,
            cursor: Cursor::new(),
            shape,
            touched,
            precomputed,
            scratch_keys: Vec::new(),
            scratch_nodes: Vec::new(),
            scratch_hashes: Vec::new(),
        };
        // Not when the top page goes (fewer keys than the threshold after the changes): the
        // whole trie is then rebuilt from the keys, and the stored pages below are dropped
        // from the top page down, which must find them all still in this update (a subtrie
        // updated beforehand would have handed its pages to the sink, and they would be
        // dropped twice).
        let top_stays =
            key_count as i64 + changes.iter().map(|c| c.delta).sum::<i64>() >= threshold as i64;
        let (touched, precomputed) = if root_stored
            && top_stays
            && matches!(root, NodeKind::Branch(_))
            && changes.len() >= PARALLEL_MIN_CHANGES
        {
            Self::below_top_page(src, shape, changes, &new_update, sink)?
        } else {
            (HashMap::default(), HashMap::default())
        };
        let mut up = new_update(touched, precomputed);
        let new_root = up.update(Key::default(), 0, root, root_stored, changes)?;
        Ok(TrieDelta {
            root: new_root,
            pages: pages_of(up.touched),
        })
    }

    /// Updates, in parallel, each subtrie below the top page whose top (at depth 3) is a
    /// branch with changes under it; returns the pages they touched and their new tops.
    #[allow(clippy::type_complexity)]
    fn below_top_page(
        src: &'a dyn TrieSource,
        shape: Shape,
        changes: &[TrieChange],
        new_update: &(
             dyn Fn(HashMap<PageId, Touched>, HashMap<usize, (NodeKind, bool)>) -> Update<'a> + Sync
         ),
        sink: Option<&PageSink<'_>>,
    ) -> Result<(HashMap<PageId, Touched>, HashMap<usize, (NodeKind, bool)>)> {
        use rayon::prelude::*;
        let Some(top) = src.page(&shape.root_page())? else {
            return Err(src.inconsistent("the top trie page is missing".into()));
        };
        let mut groups = Vec::new();
        let mut start = 0;
        while start < changes.len() {
            let j = shape.top_bits(&changes[start].key);
            let end = start + changes[start..].partition_point(|c| shape.top_bits(&c.key) == j);
            if let old @ NodeKind::Branch(_) = top.node(shape.bottom_base(0) + j) {
                groups.push((j, old, top.child_stored(j), start..end));
            }
            start = end;
        }
        type Done = (usize, (NodeKind, bool), HashMap<PageId, Touched>);
        let results: Vec<Result<Done>> = groups
            .into_par_iter()
            .map(|(j, old, stored, range)| {
                let mut up = new_update(HashMap::default(), HashMap::default());
                let t = shape.t();
                let key = Key::default().with_prefix_bits(j as u8, t);
                let node = up.update(key, t, old, stored, &changes[range])?;
                let now_stored = matches!(
                    up.touched.get(&shape.page(&key, t)),
                    Some(Touched::Live(..))
                );
                // The pages of this subtrie are final: nothing above the top page's bottom
                // nodes touches them (the top page itself is updated after all of them).
                if let Some(sink) = sink {
                    sink(pages_of(std::mem::take(&mut up.touched)))?;
                }
                Ok((j, (node, now_stored), up.touched))
            })
            .collect();
        let mut touched = HashMap::default();
        let mut precomputed = HashMap::default();
        for r in results {
            let (j, node, t) = r?;
            touched.extend(t);
            precomputed.insert(j, node);
        }
        Ok((touched, precomputed))
    }

    /// The node at (`key`, `depth`), a page top (see [`Shape::is_page_top`]) or the root, with
    /// `changes` below it: returns its new value. `stored` says whether the page below it (its
    /// children's page) is stored in the old trie.
    fn update(
        &mut self,
        key: Key,
        depth: usize,
        old: NodeKind,
        stored: bool,
        changes: &[TrieChange],
    ) -> Result<NodeKind> {
        if changes.is_empty() {
            return Ok(old);
        }
        if depth == self.shape.t()
            && let Some((node, _)) = self.precomputed.get(&self.shape.top_bits(&key))
        {
            return Ok(*node);
        }
        debug_assert!(self.shape.is_page_top(depth));
        match old {
            NodeKind::Branch(_) => {}
            NodeKind::Empty => {
                let leaves: Vec<(Key, Hash)> = changes
                    .iter()
                    .filter_map(|c| c.leaf.map(|h| (c.key, h)))
                    .collect();
                return self.build(&key, depth, &leaves);
            }
            NodeKind::Leaf(h) => {
                let leaves = self.around_leaf(&key, depth, h, changes)?;
                return self.build(&key, depth, &leaves);
            }
        }
        if depth >= KEY_BITS {
            return Err(self.src.inconsistent("a branch at depth 248".into()));
        }
        if !stored {
            let leaves = self.merged_leaves(&key, depth, changes)?;
            return self.build(&key, depth, &leaves);
        }
        let id = self.shape.page(&key, depth);
        let (mut page, old_ref) = self.take_page(id)?;
        let delta: i64 = changes.iter().map(|c| c.delta).sum();
        let count = page.count() as i64 + delta;
        if count < self.shape.elide_below as i64 {
            let leaves = self.merged_leaves(&key, depth, changes)?;
            self.remove_stored(id, page.stored(), old_ref)?;
            return Ok(subtrie(&leaves, depth));
        }
        page.set_count(count as u64);
        let result = self.update_within(&mut page, depth, key, depth, changes);
        self.touched.insert(id, Touched::Live(page, old_ref));
        result
    }

    /// The branch at (`key`, `depth`) whose children lie in `page` (the page whose top is at
    /// depth `top`), with `changes` below it: updates its children in `page` and returns its
    /// new value.
    fn update_within(
        &mut self,
        page: &mut TriePage,
        top: usize,
        key: Key,
        depth: usize,
        changes: &[TrieChange],
    ) -> Result<NodeKind> {
        if depth >= KEY_BITS {
            return Err(self.src.inconsistent("a branch at depth 248".into()));
        }
        let split = changes.partition_point(|c| !c.key.bit(depth));
        let lkey = key.with_bit(depth, false);
        let rkey = key.with_bit(depth, true);
        let (li, ri) = child_indices(&key, top, depth);
        let (lold, rold) = (page.node(li), page.node(ri));
        let l = self.child(page, top, lkey, depth + 1, li, lold, &changes[..split])?;
        let r = self.child(page, top, rkey, depth + 1, ri, rold, &changes[split..])?;
        let (l_at, r_at, result) = match (l, r) {
            (NodeKind::Empty, NodeKind::Empty) => {
                (NodeKind::Empty, NodeKind::Empty, NodeKind::Empty)
            }
            (NodeKind::Empty, NodeKind::Leaf(x)) | (NodeKind::Leaf(x), NodeKind::Empty) => {
                (NodeKind::Empty, NodeKind::Empty, NodeKind::Leaf(x))
            }
            (l, r) => (l, r, NodeKind::Branch(hash_branch(&l.hash(), &r.hash()))),
        };
        self.place(
            page,
            &lkey,
            depth + 1,
            li,
            l_at,
            !changes[..split].is_empty(),
        );
        self.place(
            page,
            &rkey,
            depth + 1,
            ri,
            r_at,
            !changes[split..].is_empty(),
        );
        Ok(result)
    }

    /// The child at (`key`, `depth`), node `index` of `page`, with `changes` below it: its new
    /// value (not yet written into `page`).
    #[allow(clippy::too_many_arguments)]
    fn child(
        &mut self,
        page: &mut TriePage,
        top: usize,
        key: Key,
        depth: usize,
        index: usize,
        old: NodeKind,
        changes: &[TrieChange],
    ) -> Result<NodeKind> {
        if changes.is_empty() {
            return Ok(old);
        }
        match old {
            NodeKind::Branch(_) if depth < self.shape.bottom_of(top) => {
                self.update_within(page, top, key, depth, changes)
            }
            NodeKind::Branch(_) => {
                let stored = page.child_stored(index - self.shape.bottom_base(top));
                self.update(key, depth, old, stored, changes)
            }
            NodeKind::Empty => {
                let leaves: Vec<(Key, Hash)> = changes
                    .iter()
                    .filter_map(|c| c.leaf.map(|h| (c.key, h)))
                    .collect();
                self.build_within(page, top, &key, depth, &leaves)
            }
            NodeKind::Leaf(h) => {
                let leaves = self.around_leaf(&key, depth, h, changes)?;
                self.build_within(page, top, &key, depth, &leaves)
            }
        }
    }

    /// Writes `node` as node `index` of `page` (at `depth` on `key`'s path); for a bottom node,
    /// also whether the page below it is stored, when `changed` below.
    fn place(
        &self,
        page: &mut TriePage,
        key: &Key,
        depth: usize,
        index: usize,
        node: NodeKind,
        changed: bool,
    ) {
        page.set(index, node);
        if self.shape.is_page_top(depth) {
            let j = index - self.shape.bottom_base(self.shape.top_above(depth));
            let stored = match node {
                NodeKind::Branch(_) if changed => {
                    match self.touched.get(&self.shape.page(key, depth)) {
                        Some(Touched::Live(..)) => true,
                        Some(Touched::Removed(_)) => false,
                        // A subtrie below the top page updated beforehand, whose pages may
                        // have gone to the sink.
                        None if depth == self.shape.t() => self
                            .precomputed
                            .get(&self.shape.top_bits(key))
                            .is_some_and(|(_, stored)| *stored),
                        None => false,
                    }
                }
                NodeKind::Branch(_) => page.child_stored(j),
                _ => false,
            };
            page.set_child_stored(j, stored);
        }
    }

    /// The keys under a leaf's position after the changes: the leaf's own key (read from the
    /// flat store) merged with the changes.
    fn around_leaf(
        &mut self,
        key: &Key,
        depth: usize,
        hash: Hash,
        changes: &[TrieChange],
    ) -> Result<Vec<(Key, Hash)>> {
        let existing = scan_leaves(self.src, &mut self.cursor, key, depth)?;
        let [(k, _)] = existing[..] else {
            return Err(self.src.inconsistent(format!(
                "a trie leaf at depth {depth} covers {} keys",
                existing.len()
            )));
        };
        Ok(merge_changes(&[(k, hash)], changes))
    }

    /// A stored page, taken out of the update's pages (or copied from the committed state) to
    /// be changed, with the reference of the committed page it replaces.
    fn take_page(&mut self, id: PageId) -> Result<(TriePage, Option<PageRef>)> {
        match self.touched.remove(&id) {
            Some(Touched::Live(page, old)) => Ok((page, old)),
            Some(Touched::Removed(_)) => Err(self
                .src
                .inconsistent(format!("trie page {id:?} written after removal"))),
            None => {
                let view = self.src.page(&id)?.ok_or_else(|| {
                    self.src
                        .inconsistent(format!("trie page {id:?} is missing"))
                })?;
                Ok(view.to_owned())
            }
        }
    }

    /// The keys under a position after the changes, with leaf hashes.
    fn merged_leaves(
        &mut self,
        key: &Key,
        depth: usize,
        changes: &[TrieChange],
    ) -> Result<Vec<(Key, Hash)>> {
        // The leaves under the position that no change replaces or deletes (those need no
        // hash), encoded for hashing side by side; buffers kept from call to call.
        let (lo, hi) = (key.prefix(depth), key.prefix_end(depth));
        let mut keys = std::mem::take(&mut self.scratch_keys);
        let mut encoded = std::mem::take(&mut self.scratch_nodes);
        keys.clear();
        encoded.clear();
        let mut j = 0;
        self.src.scan(&mut self.cursor, &lo, &hi, &mut |k, v| {
            while changes.get(j).is_some_and(|c| c.key < *k) {
                j += 1;
            }
            if changes.get(j).is_none_or(|c| c.key != *k) {
                keys.push(*k);
                encoded.push(LeafNode { key: *k, value: v }.encode());
            }
            Ok(true)
        })?;
        let mut hashes = std::mem::take(&mut self.scratch_hashes);
        hashes.clear();
        hashes.resize(encoded.len(), Hash::ZERO);
        blake2b_256_many(&encoded, &mut hashes);
        let merged = merge_sorted(&keys, &hashes, changes);
        self.scratch_keys = keys;
        self.scratch_nodes = encoded;
        self.scratch_hashes = hashes;
        Ok(merged)
    }

    /// Builds from nothing the subtrie of `leaves` at a page top (`key`, `depth`), storing a
    /// page below it if it has at least `T` keys.
    fn build(&mut self, key: &Key, depth: usize, leaves: &[(Key, Hash)]) -> Result<NodeKind> {
        if (leaves.len() as u64) < u64::from(self.shape.elide_below.max(2)) {
            return Ok(subtrie(leaves, depth));
        }
        let id = self.shape.page(key, depth);
        let old = match self.touched.remove(&id) {
            Some(Touched::Live(_, old)) | Some(Touched::Removed(old)) => old,
            None => None,
        };
        let mut page = TriePage::empty(leaves.len() as u64, self.shape.levels_at(depth));
        let result = self.build_branch(&mut page, depth, key, depth, leaves);
        self.touched.insert(id, Touched::Live(page, old));
        result
    }

    /// Builds from nothing the subtrie of `leaves` at (`key`, `depth`), a position in `page`
    /// (whose top is at `top`) or its top.
    fn build_within(
        &mut self,
        page: &mut TriePage,
        top: usize,
        key: &Key,
        depth: usize,
        leaves: &[(Key, Hash)],
    ) -> Result<NodeKind> {
        if leaves.len() < 2 {
            return Ok(subtrie(leaves, depth));
        }
        if depth == self.shape.bottom_of(top) {
            return self.build(key, depth, leaves);
        }
        self.build_branch(page, top, key, depth, leaves)
    }

    /// The branch over two or more `leaves` at (`key`, `depth`), its children written into
    /// `page`.
    fn build_branch(
        &mut self,
        page: &mut TriePage,
        top: usize,
        key: &Key,
        depth: usize,
        leaves: &[(Key, Hash)],
    ) -> Result<NodeKind> {
        if depth >= KEY_BITS {
            return Err(self.src.inconsistent("two equal keys".into()));
        }
        let split = leaves.partition_point(|(k, _)| !k.bit(depth));
        let lkey = key.with_bit(depth, false);
        let rkey = key.with_bit(depth, true);
        let (li, ri) = child_indices(key, top, depth);
        let l = self.build_within(page, top, &lkey, depth + 1, &leaves[..split])?;
        let r = self.build_within(page, top, &rkey, depth + 1, &leaves[split..])?;
        self.place(page, &lkey, depth + 1, li, l, true);
        self.place(page, &rkey, depth + 1, ri, r, true);
        Ok(NodeKind::Branch(hash_branch(&l.hash(), &r.hash())))
    }

    /// Drops the stored page `id` (with its stored-child bits and reference) and every stored
    /// page below it.
    fn remove_stored(&mut self, id: PageId, stored_bits: u64, old: Option<PageRef>) -> Result<()> {
        self.touched.insert(id, Touched::Removed(old));
        for j in 0..id.bottom_nodes() {
            if stored_bits >> j & 1 == 1 {
                let child = id.child(j);
                let (bits, r) = match self.touched.remove(&child) {
                    Some(Touched::Live(p, r)) => (p.stored(), r),
                    Some(Touched::Removed(r)) => {
                        self.touched.insert(child, Touched::Removed(r));
                        continue;
                    }
                    None => match self.src.page(&child)? {
                        Some(view) => (view.stored_bits(), view.stored_ref()),
                        None => continue,
                    },
                };
                self.remove_stored(child, bits, r)?;
            }
        }
        Ok(())
    }
}

/// The pages an update touched, as [`TrieDelta::pages`] lists them.
fn pages_of(touched: HashMap<PageId, Touched>) -> Vec<(PageId, Option<TriePage>, Option<PageRef>)> {
    touched
        .into_iter()
        .map(|(id, t)| match t {
            Touched::Live(p, old) => (id, Some(p), old),
            Touched::Removed(old) => (id, None, old),
        })
        .collect()
}

/// The indices, in the page whose top is at `top`, of the two children of the node at
/// (`key`, `depth`).
fn child_indices(key: &Key, top: usize, depth: usize) -> (usize, usize) {
    let r = depth + 1 - top;
    let mut j = 0usize;
    for i in top..depth {
        j = (j << 1) | key.bit(i) as usize;
    }
    let left = (1 << r) - 2 + 2 * j;
    (left, left + 1)
}

fn raw_stored_bits(page: &PageBuf) -> u64 {
    u64::from_le_bytes(page.bytes()[STORED_AT..COUNT_AT].try_into().expect("8"))
}

/// Merges sorted keys with their leaf hashes (none of them changed) and sorted changes.
fn merge_sorted(keys: &[Key], hashes: &[Hash], changes: &[TrieChange]) -> Vec<(Key, Hash)> {
    let mut out = Vec::with_capacity(keys.len() + changes.len());
    let (mut i, mut j) = (0, 0);
    while i < keys.len() || j < changes.len() {
        if j == changes.len() || (i < keys.len() && keys[i] < changes[j].key) {
            out.push((keys[i], hashes[i]));
            i += 1;
        } else {
            if let Some(h) = changes[j].leaf {
                out.push((changes[j].key, h));
            }
            j += 1;
        }
    }
    out
}

/// Merges sorted (key, leaf hash) pairs with sorted changes.
fn merge_changes(old: &[(Key, Hash)], changes: &[TrieChange]) -> Vec<(Key, Hash)> {
    let mut out = Vec::with_capacity(old.len() + changes.len());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < changes.len() {
        if j == changes.len() || (i < old.len() && old[i].0 < changes[j].key) {
            out.push(old[i]);
            i += 1;
        } else {
            let c = &changes[j];
            if i < old.len() && old[i].0 == c.key {
                i += 1;
            }
            if let Some(h) = c.leaf {
                out.push((c.key, h));
            }
            j += 1;
        }
    }
    out
}

/// The proof of `key` in the trie with root node `root` and `key_count` keys.
pub fn prove(
    src: &dyn TrieSource,
    shape: Shape,
    root: NodeKind,
    key_count: u64,
    key: &Key,
) -> Result<MerkleProof> {
    let mut siblings = Vec::new();
    let mut cursor = Cursor::new();
    let mut node = root;
    let mut depth = 0usize;
    // The page holding the children of the current node, when stored.
    let mut stored = key_count >= u64::from(shape.elide_below);
    let mut page: Option<PageView> = None;
    let terminal = loop {
        match node {
            NodeKind::Empty => break Terminal::Empty,
            NodeKind::Leaf(_) => {
                let found = scan_leaves(src, &mut cursor, key, depth)?;
                let [(k, value)] = found[..] else {
                    return Err(src.inconsistent(format!(
                        "a trie leaf at depth {depth} covers {} keys",
                        found.len()
                    )));
                };
                break if k == *key {
                    Terminal::Included
                } else {
                    Terminal::OtherLeaf(LeafNode { key: k, value })
                };
            }
            NodeKind::Branch(_) => {}
        }
        if shape.is_page_top(depth) {
            if !stored {
                // Elided: finish the path from the keys below.
                let leaves: Vec<(Key, Hash, LeafValue)> =
                    scan_leaves(src, &mut cursor, key, depth)?
                        .into_iter()
                        .map(|(k, v)| (k, LeafNode { key: k, value: v }.hash(), v))
                        .collect();
                break finish_from_leaves(&leaves, key, depth, &mut siblings);
            }
            let id = shape.page(key, depth);
            page = Some(
                src.page(&id)?
                    .ok_or_else(|| src.inconsistent(format!("trie page {id:?} is missing")))?,
            );
        }
        let p = page
            .as_ref()
            .expect("a stored page is loaded at every page top");
        if depth >= KEY_BITS {
            return Err(src.inconsistent("a branch at depth 248".into()));
        }
        let own = shape.node_index(key, depth + 1);
        let other = shape.node_index(&key.with_bit(depth, !key.bit(depth)), depth + 1);
        siblings.push(p.node(other).hash());
        node = p.node(own);
        depth += 1;
        if shape.is_page_top(depth) {
            stored = p.child_stored(own - shape.bottom_base(shape.top_above(depth)));
        }
    };
    MerkleProof::new(*key, siblings, terminal).map_err(|e: ProofError| {
        src.inconsistent(format!("the stored trie gives a malformed proof: {e}"))
    })
}

/// A multiproof of sorted, distinct `keys` in the trie with root node `root` and `key_count`
/// keys. Nodes at the positions in `expand` that would be given by hash are given in full
/// instead (a leaf, or a branch over its children's hashes): the siblings a delete exposes.
pub fn multiproof(
    src: &dyn TrieSource,
    shape: Shape,
    root: NodeKind,
    key_count: u64,
    keys: &[Key],
    expand: &std::collections::HashSet<Position>,
) -> Result<MultiProof> {
    let mut walk = ProofWalk {
        src,
        shape,
        cursor: Cursor::new(),
        expand,
        out: Vec::new(),
    };
    walk.node(
        Key::default(),
        0,
        root,
        key_count >= u64::from(shape.elide_below),
        None,
        keys,
    )?;
    MultiProof::from_preorder(walk.out)
        .map_err(|e| src.inconsistent(format!("the stored trie gives a malformed multiproof: {e}")))
}

struct ProofWalk<'a> {
    src: &'a dyn TrieSource,
    shape: Shape,
    cursor: Cursor,
    expand: &'a std::collections::HashSet<Position>,
    out: Vec<ProofNode>,
}

impl ProofWalk<'_> {
    fn expanded(&self, key: &Key, depth: usize) -> bool {
        !self.expand.is_empty() && self.expand.contains(&Position::of(key, depth))
    }

    /// Emits the node at (`key`, `depth`): `stored` says whether the page below it is stored
    /// (for page tops), `page` is the page holding its children otherwise.
    fn node(
        &mut self,
        key: Key,
        depth: usize,
        node: NodeKind,
        stored: bool,
        page: Option<&PageView>,
        keys: &[Key],
    ) -> Result<()> {
        let wanted = !keys.is_empty() || self.expanded(&key, depth);
        match node {
            NodeKind::Empty => {
                self.out.push(ProofNode::Empty);
                return Ok(());
            }
            NodeKind::Leaf(h) if !wanted => {
                self.out.push(ProofNode::Hash(h));
                return Ok(());
            }
            NodeKind::Branch(h) if !wanted => {
                self.out.push(ProofNode::Hash(h));
                return Ok(());
            }
            NodeKind::Leaf(_) => {
                let found = scan_leaves(self.src, &mut self.cursor, &key, depth)?;
                let [(k, value)] = found[..] else {
                    return Err(self.src.inconsistent(format!(
                        "a trie leaf at depth {depth} covers {} keys",
                        found.len()
                    )));
                };
                self.out.push(ProofNode::Leaf(LeafNode { key: k, value }));
                return Ok(());
            }
            NodeKind::Branch(_) => {}
        }
        if depth >= KEY_BITS {
            return Err(self.src.inconsistent("a branch at depth 248".into()));
        }
        let owned;
        let page = if self.shape.is_page_top(depth) {
            if !stored {
                let leaves: Vec<(Key, LeafValue, Hash)> =
                    scan_leaves(self.src, &mut self.cursor, &key, depth)?
                        .into_iter()
                        .map(|(k, v)| (k, v, LeafNode { key: k, value: v }.hash()))
                        .collect();
                return self.leaves(&key, depth, &leaves, keys);
            }
            let id = self.shape.page(&key, depth);
            owned = self.src.page(&id)?.ok_or_else(|| {
                self.src
                    .inconsistent(format!("trie page {id:?} is missing"))
            })?;
            &owned
        } else {
            page.ok_or_else(|| self.src.inconsistent("a page is missing".into()))?
        };
        let top = self.shape.top_above(depth + 1);
        let (li, ri) = child_indices(&key, top, depth);
        let (l, r) = (page.node(li), page.node(ri));
        self.out.push(ProofNode::Branch);
        if keys.is_empty() {
            // An expanded branch: its two children by hash.
            for child in [l, r] {
                self.out.push(match child {
                    NodeKind::Empty => ProofNode::Empty,
                    c => ProofNode::Hash(c.hash()),
                });
            }
            return Ok(());
        }
        let split = keys.partition_point(|k| !k.bit(depth));
        let bottom = depth + 1 == self.shape.bottom_of(top);
        let base = self.shape.bottom_base(top);
        let l_stored = bottom && page.child_stored(li.saturating_sub(base));
        let r_stored = bottom && page.child_stored(ri.saturating_sub(base));
        let inner = if bottom { None } else { Some(page) };
        self.node(
            key.with_bit(depth, false),
            depth + 1,
            l,
            l_stored,
            inner,
            &keys[..split],
        )?;
        self.node(
            key.with_bit(depth, true),
            depth + 1,
            r,
            r_stored,
            inner,
            &keys[split..],
        )
    }

    /// Emits the subtrie of `leaves` (all the keys under (`key`, `depth`)).
    fn leaves(
        &mut self,
        key: &Key,
        depth: usize,
        leaves: &[(Key, LeafValue, Hash)],
        keys: &[Key],
    ) -> Result<()> {
        let pairs = |l: &[(Key, LeafValue, Hash)]| -> Vec<(Key, Hash)> {
            l.iter().map(|(k, _, h)| (*k, *h)).collect()
        };
        let expanded = self.expanded(key, depth);
        match leaves.len() {
            0 => self.out.push(ProofNode::Empty),
            1 if !keys.is_empty() || expanded => self.out.push(ProofNode::Leaf(LeafNode {
                key: leaves[0].0,
                value: leaves[0].1,
            })),
            _ if keys.is_empty() && !expanded => self
                .out
                .push(ProofNode::Hash(subtrie(&pairs(leaves), depth).hash())),
            _ => {
                let split = leaves.partition_point(|(k, _, _)| !k.bit(depth));
                self.out.push(ProofNode::Branch);
                if keys.is_empty() {
                    for side in [&leaves[..split], &leaves[split..]] {
                        self.out.push(match subtrie(&pairs(side), depth + 1) {
                            NodeKind::Empty => ProofNode::Empty,
                            n => ProofNode::Hash(n.hash()),
                        });
                    }
                    return Ok(());
                }
                let ksplit = keys.partition_point(|k| !k.bit(depth));
                self.leaves(
                    &key.with_bit(depth, false),
                    depth + 1,
                    &leaves[..split],
                    &keys[..ksplit],
                )?;
                self.leaves(
                    &key.with_bit(depth, true),
                    depth + 1,
                    &leaves[split..],
                    &keys[ksplit..],
                )?;
            }
        }
        Ok(())
    }
}

/// Completes a proof path below `depth` from the sorted leaves under it.
fn finish_from_leaves(
    leaves: &[(Key, Hash, LeafValue)],
    key: &Key,
    depth: usize,
    siblings: &mut Vec<Hash>,
) -> Terminal {
    let mut lo = 0;
    let mut hi = leaves.len();
    let mut d = depth;
    loop {
        match hi - lo {
            0 => return Terminal::Empty,
            1 if leaves[lo].0 == *key => return Terminal::Included,
            1 => {
                return Terminal::OtherLeaf(LeafNode {
                    key: leaves[lo].0,
                    value: leaves[lo].2,
                });
            }
            _ => {
                let mid = lo + leaves[lo..hi].partition_point(|(k, _, _)| !k.bit(d));
                let (own, other) = if key.bit(d) {
                    ((mid, hi), (lo, mid))
                } else {
                    ((lo, mid), (mid, hi))
                };
                let pairs: Vec<(Key, Hash)> = leaves[other.0..other.1]
                    .iter()
                    .map(|(k, h, _)| (*k, *h))
                    .collect();
                siblings.push(subtrie(&pairs, d + 1).hash());
                (lo, hi) = own;
                d += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE3: Shape = Shape {
        elide_below: 20,
        top_levels: 3,
    };

    #[test]
    fn geometry() {
        for t in 1..=6u8 {
            let shape = Shape {
                elide_below: 20,
                top_levels: t,
            };
            let t = t as usize;
            let tops: Vec<usize> = (0..=shape.max_layer())
                .map(|l| shape.layer_top(l))
                .collect();
            assert_eq!(tops[..3], [0, t, t + 6]);
            assert!(*tops.last().unwrap() < KEY_BITS);
            assert!(shape.layer_top(shape.max_layer() + 1) >= KEY_BITS);
            for d in 0..KEY_BITS {
                assert_eq!(shape.is_page_top(d), tops.contains(&d), "depth {d}");
            }
            for d in 1..KEY_BITS {
                let top = shape.top_above(d);
                assert!(shape.is_page_top(top) && top < d && d <= shape.bottom_of(top));
            }
        }
        let mib = 1u64 << 20;
        let for_keys =
            |bits: u32, cache_mib: u64| Shape::top_levels_for(1 << bits, cache_mib * mib, 20);
        assert_eq!(for_keys(20, 256), 6);
        assert_eq!(for_keys(24, 256), 3);
        assert_eq!(for_keys(24, 1024), 4);
        assert_eq!(for_keys(22, 256), 2);
        assert_eq!(for_keys(4, 256), 6);
        // A small cache: pages of at most 32 T = 640 keys (512 at depth 15), not 1,024.
        assert_eq!(for_keys(24, 128), 3);
        assert_eq!(for_keys(26, 256), 5);
        // A small threshold: pages of at most 64 keys (T = 2).
        assert_eq!(Shape::top_levels_for(1 << 20, 256 * mib, 2), 2);
        assert_eq!(Shape::top_levels_for(0, 0, 0), 6);
        assert!((1..=6).contains(&Shape::top_levels_for(u64::MAX, 1, 20)));
        assert!((1..=6).contains(&Shape::top_levels_for(u64::MAX, u64::MAX, u32::MAX)));
    }

    #[test]
    fn node_indices() {
        let s = SHAPE3;
        let k = Key([0; 31]);
        assert_eq!(s.node_index(&k, 1), 0);
        assert_eq!(s.node_index(&k.with_bit(0, true), 1), 1);
        assert_eq!(s.node_index(&k, 3), 6);
        assert_eq!(s.node_index(&Key([0xFF; 31]), 3), 13);
        assert_eq!(s.node_index(&k, 4), 0);
        assert_eq!(s.node_index(&k, 9), 62);
        assert_eq!(s.node_index(&Key([0xFF; 31]), 9), 125);
        assert_eq!(s.node_index(&Key([0xFF; 31]), 10), 1);
        assert_eq!(s.page(&k, 0), s.root_page());
        assert_eq!(s.page(&k, 3).levels(), 6);
        assert_eq!(s.root_page().levels(), 3);
        assert_eq!(s.page_at_layer(&k, 2), s.page(&k, 9));
        assert_eq!(s.page_at_layer(&k, 41), s.page(&k, 243));
        assert_eq!(s.root_page().child(7), s.page(&Key([0xE0; 31]), 3));
        let ones = (3..9).fold(Key::default(), |p, b| p.with_bit(b, true));
        assert_eq!(s.page(&k, 3).child(63), s.page(&ones, 9));
        // The last page holds depths 244 to 248: 5 levels of its 6 exist.
        assert_eq!(s.node_index(&Key([0xFF; 31]), 248), (1 << 5) - 2 + 31);
    }

    #[test]
    fn table_keys_are_distinct() {
        let s = SHAPE3;
        let k = Key([0xAB; 31]);
        let a = s.page(&k, 3).table_key();
        let b = s.page(&k, 9).table_key();
        let c = s.root_page().table_key();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(s.page(&k, 243).table_key().bit(243));
        for id in [s.page(&k, 3), s.page(&k, 243), s.root_page()] {
            assert_eq!(s.page_of_table_key(&id.table_key()), Some(id));
        }
        assert_eq!(s.page_of_table_key(&Key::default().with_bit(6, true)), None);
    }
}
