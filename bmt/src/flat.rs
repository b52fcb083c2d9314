//! The flat store's entries: how a state value is kept under its key in the B+tree.
//!
//! The trie needs, for every key, what its leaf commits to: the value itself when it is at most
//! 32 bytes, its hash otherwise. Entries keep that hash beside longer values, so that trie work
//! (rebuilding elided subtries, proofs) never re-hashes or even reads long values. Values
//! longer than [`INLINE_MAX`] live out of line in an overflow extent: a run of contiguous pages
//! with one header and one checksum over the whole run.
//!
//! # Payload layout (the B+tree entry's payload)
//!
//! | tag | meaning | then |
//! |---|---|---|
//! | 0 | value of at most 32 bytes | the value |
//! | 1 | value of 33 to 1024 bytes | value hash (32), the value |
//! | 2 | value in an overflow extent | value hash (32), length (u64), first page (u64), pages (u64), checksum (u32) |
//!
//! # Overflow extent
//!
//! The common page header (kind [`PageKind::Overflow`], length field = value length) in the
//! first 32 bytes, then the value, then zero padding to a whole page. The header checksum
//! covers the whole extent.

use bmt_core::{Hash, LeafValue, MAX_EMBEDDED_VALUE, ValueHasher};

use crate::page::{
    Extent, HEADER_SIZE, PAGE_SIZE, PageKind, extent_bytes_mut, write_header, zeroed_extent,
};

/// Longest value kept inside a B+tree leaf.
pub const INLINE_MAX: usize = 1024;
/// Longest value the database accepts (1 GiB).
pub const MAX_VALUE_LEN: usize = 1 << 30;

/// A decoded flat-store payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A value kept in the leaf (with its hash when longer than 32 bytes).
    Inline {
        /// The value.
        value: &'a [u8],
        /// Its hash, for values longer than 32 bytes.
        hash: Option<Hash>,
    },
    /// A value in an overflow extent.
    Overflow(OverflowRef),
}

/// Where an out-of-line value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverflowRef {
    /// The value's hash.
    pub hash: Hash,
    /// The value's length.
    pub len: u64,
    /// First page of the extent.
    pub pgno: u64,
    /// Pages in the extent.
    pub pages: u64,
    /// The extent's checksum.
    pub crc: u32,
}

impl Entry<'_> {
    /// What the value's trie leaf holds.
    pub fn leaf_value(&self) -> LeafValue {
        match self {
            Entry::Inline { value, hash: None } => {
                let mut bytes = [0u8; MAX_EMBEDDED_VALUE];
                bytes[..value.len()].copy_from_slice(value);
                LeafValue::Embedded {
                    len: value.len() as u8,
                    bytes,
                }
            }
            Entry::Inline {
                hash: Some(hash), ..
            } => LeafValue::Hashed(*hash),
            Entry::Overflow(o) => LeafValue::Hashed(o.hash),
        }
    }
}

/// The payload for a value kept inline (at most [`INLINE_MAX`] bytes).
pub fn encode_inline<H: ValueHasher + ?Sized>(value: &[u8], hasher: &H) -> Vec<u8> {
    debug_assert!(value.len() <= INLINE_MAX);
    if value.len() <= MAX_EMBEDDED_VALUE {
        let mut out = Vec::with_capacity(1 + value.len());
        out.push(0);
        out.extend_from_slice(value);
        out
    } else {
        let mut out = Vec::with_capacity(33 + value.len());
        out.push(1);
        out.extend_from_slice(hasher.hash_value(value).as_bytes());
        out.extend_from_slice(value);
        out
    }
}

/// The payload pointing at an overflow extent.
pub fn encode_overflow(o: &OverflowRef) -> Vec<u8> {
    let mut out = Vec::with_capacity(61);
    out.push(2);
    out.extend_from_slice(o.hash.as_bytes());
    out.extend_from_slice(&o.len.to_le_bytes());
    out.extend_from_slice(&o.pgno.to_le_bytes());
    out.extend_from_slice(&o.pages.to_le_bytes());
    out.extend_from_slice(&o.crc.to_le_bytes());
    out
}

/// Decodes a payload read from disk.
pub fn decode(payload: &[u8]) -> Result<Entry<'_>, String> {
    let (&tag, rest) = payload.split_first().ok_or("empty flat entry")?;
    match tag {
        0 if rest.len() <= MAX_EMBEDDED_VALUE => Ok(Entry::Inline {
            value: rest,
            hash: None,
        }),
        1 if rest.len() > 32 + MAX_EMBEDDED_VALUE && rest.len() <= 32 + INLINE_MAX => {
            let hash = Hash(rest[..32].try_into().map_err(|_| "short hash")?);
            Ok(Entry::Inline {
                value: &rest[32..],
                hash: Some(hash),
            })
        }
        2 if rest.len() == 60 => {
            let u64_at = |at: usize| {
                u64::from_le_bytes(
                    rest[at..at + 8]
                        .try_into()
                        .expect("8 bytes in a 60-byte entry"),
                )
            };
            let o = OverflowRef {
                hash: Hash(rest[..32].try_into().expect("32 bytes")),
                len: u64_at(32),
                pgno: u64_at(40),
                pages: u64_at(48),
                crc: u32::from_le_bytes(rest[56..60].try_into().expect("4 bytes")),
            };
            if o.len as usize <= INLINE_MAX
                || o.len > MAX_VALUE_LEN as u64
                || o.pages != extent_pages(o.len as usize)
                || o.pgno < 2
            {
                return Err(format!("invalid overflow reference {o:?}"));
            }
            Ok(Entry::Overflow(o))
        }
        _ => Err(format!(
            "invalid flat entry (tag {tag}, {} bytes)",
            rest.len()
        )),
    }
}

/// Pages an extent for a value of `len` bytes takes.
pub fn extent_pages(len: usize) -> u64 {
    (HEADER_SIZE + len).div_ceil(PAGE_SIZE) as u64
}

/// Builds an overflow extent for `value` at page `pgno`; returns it and its checksum.
pub fn build_extent(value: &[u8], seq: u64, pgno: u64) -> (Extent, u32) {
    let mut extent = zeroed_extent(extent_pages(value.len()) as usize);
    let buf = extent_bytes_mut(&mut extent);
    buf[HEADER_SIZE..HEADER_SIZE + value.len()].copy_from_slice(value);
    let crc = write_header(buf, PageKind::Overflow, value.len() as u32, seq, pgno);
    (extent, crc)
}

/// The value inside an extent read from disk (already checked against its checksum).
pub fn extent_value(extent: &[u8], o: &OverflowRef) -> Result<Vec<u8>, String> {
    let len = o.len as usize;
    if extent.len() < HEADER_SIZE + len {
        return Err("overflow extent shorter than its value".into());
    }
    let recorded = u32::from_le_bytes(extent[8..12].try_into().expect("4 bytes")) as u64;
    if recorded != o.len {
        return Err(format!(
            "overflow extent holds {recorded} bytes, expected {}",
            o.len
        ));
    }
    Ok(extent[HEADER_SIZE..HEADER_SIZE + len].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bmt_core::Blake2bValueHasher;

    #[test]
    fn round_trips() {
        let h = Blake2bValueHasher;
        for len in [0usize, 1, 32, 33, 1024] {
            let v = vec![7u8; len];
            let p = encode_inline(&v, &h);
            let e = decode(&p).unwrap();
            match e {
                Entry::Inline { value, hash } => {
                    assert_eq!(value, &v[..]);
                    assert_eq!(hash.is_some(), len > 32);
                }
                _ => panic!(),
            }
            assert_eq!(e.leaf_value(), LeafValue::new(&v, &h));
        }
        let o = OverflowRef {
            hash: Hash([3; 32]),
            len: 5000,
            pgno: 9,
            pages: extent_pages(5000),
            crc: 77,
        };
        assert_eq!(decode(&encode_overflow(&o)).unwrap(), Entry::Overflow(o));
        assert!(decode(&[]).is_err());
        assert!(decode(&[0; 40]).is_err());
        assert!(decode(&[9]).is_err());
    }
}
