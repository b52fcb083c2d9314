//! The 4 KiB page and its header, shared by every on-disk structure.
//!
//! Every page starts with a 32-byte header:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"bmtP"` |
//! | 4 | page kind ([`PageKind`]) |
//! | 5 | page format version (1) |
//! | 6..8 | zero |
//! | 8..12 | length: bytes of content in use (kind-specific meaning, little endian) |
//! | 12..16 | CRC-32C of the page with these four bytes taken as zero, little endian |
//! | 16..24 | sequence number of the commit that wrote the page, little endian |
//! | 24..32 | the page's own page number, little endian |
//!
//! The checksum covers the magic, kind, length, sequence number, page number and content, so a
//! zero-filled page (bad magic), a torn page (bad checksum) or a page written to the wrong
//! place (wrong page number) is rejected. A *stale* page (a valid older page left where a newer
//! one was expected) is caught by the reference that points at it: every reference to a page
//! ([`PageRef`]) carries the page's checksum, and the reader compares them.

use std::fmt;

/// Size of every page.
pub const PAGE_SIZE: usize = 4096;
/// Size of the common page header.
pub const HEADER_SIZE: usize = 32;
/// The page magic.
pub const PAGE_MAGIC: [u8; 4] = *b"bmtP";
/// The page format version.
pub const PAGE_VERSION: u8 = 1;

/// What a page holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageKind {
    /// A commit record (meta slot).
    Meta = 1,
    /// A B+tree branch.
    BranchNode = 2,
    /// A B+tree leaf.
    LeafNode = 3,
    /// A trie page: hashes of a 6-level subtrie.
    Trie = 4,
    /// A free-list page.
    FreeList = 5,
    /// The first page of a value stored out of line.
    Overflow = 6,
    /// A free-list journal entry.
    FreeListDelta = 7,
}

impl PageKind {
    pub(crate) fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => PageKind::Meta,
            2 => PageKind::BranchNode,
            3 => PageKind::LeafNode,
            4 => PageKind::Trie,
            5 => PageKind::FreeList,
            6 => PageKind::Overflow,
            7 => PageKind::FreeListDelta,
            _ => return None,
        })
    }
}

/// A page-aligned 4 KiB buffer (aligned so that it can be used for direct I/O).
#[repr(C, align(4096))]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PageBuf(pub [u8; PAGE_SIZE]);

/// Page buffers kept for reuse at most (64 MiB).
const POOL_PAGES: usize = 16384;

/// Page buffers kept for reuse.
static POOL: parking_lot::Mutex<Vec<Box<PageBuf>>> = parking_lot::Mutex::new(Vec::new());

/// Page buffers each thread keeps for itself at most, before [`POOL`]. A lookup that misses
/// the cache takes a buffer for the page it reads and gives one back for the page the cache
/// evicts for it: with its own few, a reader thread never takes the pool's lock, whose cache
/// line the I/O and warm-up threads also use (the lock and its unlock were a quarter of a
/// missing lookup's CPU time at 2^24 keys, measured with perf).
const LOCAL_PAGES: usize = 32;

thread_local! {
    static LOCAL: std::cell::RefCell<Vec<Box<PageBuf>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A page shared between the cache and its readers. The page is boxed apart from the
/// reference counts: an `Arc<PageBuf>` would put the counts in front of a 4096-aligned page
/// and take 8 KiB for every 4 KiB page.
pub type SharedPage = std::sync::Arc<Box<PageBuf>>;

/// A run of pages in one aligned buffer: an overflow extent.
pub type Extent = Vec<PageBuf>;

/// The bytes of an extent.
pub fn extent_bytes(extent: &[PageBuf]) -> &[u8] {
    bytemuck::cast_slice(extent)
}

/// The bytes of an extent, mutably.
pub fn extent_bytes_mut(extent: &mut [PageBuf]) -> &mut [u8] {
    bytemuck::cast_slice_mut(extent)
}

/// A zeroed extent of `pages` pages.
pub fn zeroed_extent(pages: usize) -> Extent {
    bytemuck::zeroed_vec(pages)
}

impl fmt::Debug for PageBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageBuf(kind {}, pgno {})", self.0[4], self.pgno())
    }
}

impl PageBuf {
    /// A zeroed page, reusing a recycled buffer when there is one.
    pub fn zeroed() -> Box<PageBuf> {
        match POOL.lock().pop() {
            Some(mut page) => {
                page.0.fill(0);
                page
            }
            None => bytemuck::zeroed_box(),
        }
    }

    /// A page buffer for content that will overwrite all of it (a page read from the file, a
    /// page built whole): a recycled buffer as its last use left it, without the cost of
    /// zeroing it, or a new zeroed one. Taken from this thread's own few first (see
    /// [`LOCAL_PAGES`]).
    pub fn scratch() -> Box<PageBuf> {
        let local = LOCAL.with(|l| l.try_borrow_mut().ok().and_then(|mut l| l.pop()));
        if let Some(page) = local {
            return page;
        }
        // The pool's lock is let go before a new buffer is allocated (a temporary in a
        // `match` scrutinee would hold it through the allocation and its page faults).
        let pooled = POOL.lock().pop();
        pooled.unwrap_or_else(bytemuck::zeroed_box)
    }

    /// Gives a page buffer back for reuse. A commit allocates and frees thousands of pages;
    /// without this, allocators hand the memory back to the kernel and fault it in again,
    /// zero-filled, at the next commit (a fifth of a commit's time in one measurement).
    pub fn recycle(page: Box<PageBuf>) {
        let page = LOCAL.with(|l| match l.try_borrow_mut() {
            Ok(mut l) if l.len() < LOCAL_PAGES => {
                l.push(page);
                None
            }
            _ => Some(page),
        });
        if let Some(page) = page {
            let mut pool = POOL.lock();
            if pool.len() < POOL_PAGES {
                pool.push(page);
            }
        }
    }

    /// Asks the CPU to start loading the cache lines of bytes `range` of the page, so that
    /// the loads of a search that follow overlap instead of waiting for one miss after
    /// another. A hint only: it changes no data, and out-of-page bytes are left out.
    pub fn prefetch(&self, range: std::ops::Range<usize>) {
        let end = range.end.min(PAGE_SIZE);
        let mut at = range.start & !63;
        while at < end {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `at` is inside the page, so the pointer is in bounds; a prefetch reads
            // nothing the program sees and cannot fault.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T0>(self.0.as_ptr().add(at).cast());
            }
            at += 64;
        }
    }

    /// The page bytes.
    pub fn bytes(&self) -> &[u8; PAGE_SIZE] {
        &self.0
    }

    /// The page bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8; PAGE_SIZE] {
        &mut self.0
    }

    /// The content after the header.
    pub fn body(&self) -> &[u8] {
        &self.0[HEADER_SIZE..]
    }

    /// The content after the header, mutably.
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.0[HEADER_SIZE..]
    }

    /// The length field.
    pub fn len_field(&self) -> u32 {
        u32::from_le_bytes(self.0[8..12].try_into().expect("4 bytes"))
    }

    /// The sequence number field.
    pub fn seq(&self) -> u64 {
        u64::from_le_bytes(self.0[16..24].try_into().expect("8 bytes"))
    }

    /// The page number field.
    pub fn pgno(&self) -> u64 {
        u64::from_le_bytes(self.0[24..32].try_into().expect("8 bytes"))
    }

    /// The stored checksum.
    pub fn stored_crc(&self) -> u32 {
        u32::from_le_bytes(self.0[12..16].try_into().expect("4 bytes"))
    }

    /// Writes the header and the checksum; returns the checksum.
    pub fn seal(&mut self, kind: PageKind, len: u32, seq: u64, pgno: u64) -> u32 {
        write_header(&mut self.0, kind, len, seq, pgno)
    }
}

/// Writes a header into the first 32 bytes of `bytes` and seals the checksum over all of
/// `bytes` (one page, or a whole multi-page extent); returns the checksum.
pub fn write_header(bytes: &mut [u8], kind: PageKind, len: u32, seq: u64, pgno: u64) -> u32 {
    bytes[0..4].copy_from_slice(&PAGE_MAGIC);
    bytes[4] = kind as u8;
    bytes[5] = PAGE_VERSION;
    bytes[6..8].fill(0);
    bytes[8..12].copy_from_slice(&len.to_le_bytes());
    bytes[12..16].fill(0);
    bytes[16..24].copy_from_slice(&seq.to_le_bytes());
    bytes[24..32].copy_from_slice(&pgno.to_le_bytes());
    let crc = checksum(bytes);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    crc
}

/// CRC-32C of `bytes` with the checksum field (bytes 12..16) taken as zero.
pub fn checksum(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&bytes[..12]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &bytes[16..])
}

/// Why a page failed its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageCheckError {
    /// Not a page at all (zeroed or foreign bytes).
    BadMagic,
    /// A page format this build does not know.
    UnknownVersion(u8),
    /// Another kind of page than expected.
    WrongKind {
        /// What was expected.
        expected: PageKind,
        /// The kind byte found.
        found: u8,
    },
    /// The page records another page number: written to the wrong place.
    WrongPageNumber(u64),
    /// The checksum does not match the content: torn or corrupted.
    BadChecksum,
    /// A valid page, but not the one the reference expects: stale.
    Stale,
}

impl fmt::Display for PageCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageCheckError::BadMagic => write!(f, "bad page magic"),
            PageCheckError::UnknownVersion(v) => write!(f, "unknown page format version {v}"),
            PageCheckError::WrongKind { expected, found } => {
                write!(f, "expected a {expected:?} page, found kind {found}")
            }
            PageCheckError::WrongPageNumber(n) => write!(f, "page records page number {n}"),
            PageCheckError::BadChecksum => write!(f, "checksum mismatch"),
            PageCheckError::Stale => write!(f, "stale page (checksum differs from its reference)"),
        }
    }
}

/// Checks the header and checksum of a page or extent read from `pgno`.
pub fn verify(
    bytes: &[u8],
    kind: PageKind,
    pgno: u64,
    expected_crc: Option<u32>,
) -> Result<(), PageCheckError> {
    if bytes[0..4] != PAGE_MAGIC {
        return Err(PageCheckError::BadMagic);
    }
    if bytes[5] != PAGE_VERSION {
        return Err(PageCheckError::UnknownVersion(bytes[5]));
    }
    if PageKind::from_u8(bytes[4]) != Some(kind) {
        return Err(PageCheckError::WrongKind {
            expected: kind,
            found: bytes[4],
        });
    }
    let recorded = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
    if recorded != pgno {
        return Err(PageCheckError::WrongPageNumber(recorded));
    }
    let stored = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if checksum(bytes) != stored {
        return Err(PageCheckError::BadChecksum);
    }
    if let Some(expected) = expected_crc
        && expected != stored
    {
        return Err(PageCheckError::Stale);
    }
    Ok(())
}

/// A reference to a page: where it is and the checksum it must have.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PageRef {
    /// Page number (offset / 4096). Never 0 or 1: those are the meta slots.
    pub pgno: u64,
    /// The page's checksum.
    pub crc: u32,
}

/// Encoded size of a [`PageRef`].
pub const PAGE_REF_SIZE: usize = 12;

impl PageRef {
    /// Encodes as 8-byte page number and 4-byte checksum, little endian.
    pub fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.pgno.to_le_bytes());
        out[8..12].copy_from_slice(&self.crc.to_le_bytes());
    }

    /// Decodes; a zero page number means "none".
    pub fn decode(bytes: &[u8]) -> Option<PageRef> {
        let pgno = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        (pgno != 0).then_some(PageRef { pgno, crc })
    }

    /// Encodes an optional reference (none as zeros).
    pub fn encode_opt(r: Option<PageRef>, out: &mut [u8]) {
        match r {
            Some(r) => r.encode(out),
            None => out[..PAGE_REF_SIZE].fill(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_verify() {
        let mut p = PageBuf::zeroed();
        p.body_mut()[5] = 7;
        let crc = p.seal(PageKind::LeafNode, 10, 3, 42);
        assert_eq!(verify(p.bytes(), PageKind::LeafNode, 42, Some(crc)), Ok(()));
        assert_eq!(
            verify(p.bytes(), PageKind::LeafNode, 43, None),
            Err(PageCheckError::WrongPageNumber(42))
        );
        assert!(matches!(
            verify(p.bytes(), PageKind::Trie, 42, None),
            Err(PageCheckError::WrongKind { .. })
        ));
        assert_eq!(
            verify(p.bytes(), PageKind::LeafNode, 42, Some(crc ^ 1)),
            Err(PageCheckError::Stale)
        );
        let mut torn = p.clone();
        torn.0[100] ^= 1;
        assert_eq!(
            verify(torn.bytes(), PageKind::LeafNode, 42, None),
            Err(PageCheckError::BadChecksum)
        );
        assert_eq!(
            verify(&[0; PAGE_SIZE], PageKind::LeafNode, 42, None),
            Err(PageCheckError::BadMagic)
        );
    }
}
