//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`; not part of the
//! API, no stability promise).
//!
//! Every decoder of bytes read from disk is reached from here. Pages are resealed with a valid
//! header and checksum before they are decoded: random bytes would almost never pass the
//! CRC-32C, and the checks worth fuzzing are the ones behind it (entry offsets, counts,
//! ordering, bits that must agree), which guard against a page that is well formed on the
//! outside and wrong inside. Each function must return without panicking, whatever the input.

use crate::freelist::{Delta, FreeSpace};
use crate::meta::Meta;
use crate::page::{self, HEADER_SIZE, PAGE_SIZE, PageBuf, PageKind};

const KINDS: [PageKind; 7] = [
    PageKind::Meta,
    PageKind::BranchNode,
    PageKind::LeafNode,
    PageKind::Trie,
    PageKind::FreeList,
    PageKind::Overflow,
    PageKind::FreeListDelta,
];

/// Decodes `data` as a page. The first byte picks the kind, the next four are the header's
/// length field, the rest is the page body; the header and checksum are then made valid, and
/// the page is decoded as the engine decodes a page of that kind read from disk. The raw
/// bytes are also checked as a page as they are (which must fail or pass, never panic).
pub fn page(data: &[u8]) {
    let mut raw = PageBuf::zeroed();
    let n = data.len().min(PAGE_SIZE);
    raw.bytes_mut()[..n].copy_from_slice(&data[..n]);
    for kind in KINDS {
        let _ = page::verify(raw.bytes(), kind, 2, None);
    }

    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let kind = KINDS[selector as usize % KINDS.len()];
    let (len, body) = match rest.split_first_chunk::<4>() {
        Some((len, body)) => (u32::from_le_bytes(*len), body),
        None => (0, rest),
    };
    let mut p = PageBuf::zeroed();
    let n = body.len().min(PAGE_SIZE - HEADER_SIZE);
    p.bytes_mut()[HEADER_SIZE..HEADER_SIZE + n].copy_from_slice(&body[..n]);
    p.seal(kind, len, 1, 2);
    assert!(page::verify(p.bytes(), kind, 2, Some(p.stored_crc())).is_ok());
    match kind {
        PageKind::Meta => {
            let _ = Meta::decode(&p);
        }
        PageKind::BranchNode | PageKind::LeafNode => crate::btree::fuzz_node(kind, &p),
        PageKind::Trie => crate::trie::fuzz_page(&p),
        PageKind::FreeList => {
            let mut free = FreeSpace::default();
            let _ = free.decode_page(&p, 1 << 20);
        }
        PageKind::FreeListDelta => {
            if let Ok(delta) = Delta::decode(&p) {
                let mut free = FreeSpace::default();
                free.free(2, 1000);
                let _ = delta.apply(&mut free, 1 << 20);
            }
        }
        PageKind::Overflow => {}
    }
}

/// Decodes `data` as a flat-store entry (the payload of a B+tree leaf entry).
pub fn flat_entry(data: &[u8]) {
    if let Ok(entry) = crate::flat::decode(data) {
        let _ = format!("{entry:?}");
    }
}

/// Decodes `data` as the body of a rollback log record (behind its checksum).
pub fn log_record(data: &[u8]) {
    crate::rollback::fuzz_record_body(data);
}
