//! The meta record: the commit point.
//!
//! Pages 0 and 1 of the data file are two meta slots. Commit `n` writes its record into slot
//! `n % 2` after every page it refers to is durable (or, for a small commit, together with
//! them: see below); once that record is durable, the commit has happened. Opening reads both slots and takes the valid record with the higher sequence
//! number, so a torn meta write leaves the previous commit in force.
//!
//! Record layout after the common page header (kind [`PageKind::Meta`], page number 0 or 1,
//! sequence number = the commit's):
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"BMTD"` |
//! | 4..8 | format version (u32) |
//! | 8..12 | page size (u32, 4096) |
//! | 12..44 | state root |
//! | 44..56 | flat store B+tree root reference (zeros: empty) |
//! | 56..68 | trie page table root reference (zeros: empty) |
//! | 68..80 | free-list head reference (zeros: no free pages) |
//! | 80..88 | pages in use: the file's logical length in pages |
//! | 88..96 | number of keys |
//! | 96..99 | trie page elision threshold (u24; in versions 1 to 3, a u32 at 96..100) |
//! | 99 | the trie's top page levels, 1 to 6 (version 4; before, 6) |
//! | 100..101 | length of the value hasher's name |
//! | 101..133 | value hasher's name (ASCII, zero padded) |
//! | 133..181 | reserved for the rollback log's state (zeros) |
//! | 181..193 | newest free-list journal entry (zeros: none since the full list) |
//! | 193..197 | number of journal entries (u32) |
//! | 197 | durability mode: 0 = the pages were durable before this record was written (two syncs); 1 = written with the pages, one sync (format version 2) |
//! | 198 | in mode 1: 1 if the commit appended a rollback log record, else 0 |
//! | 199..219 | that record: segment (u32), offset (u64), length in bytes (u32), CRC-32C (u32) |
//! | 219..221 | in mode 1: number of written-page entries `n` (u16, at most [`MAX_WRITTEN`]) |
//! | 221..221+16n | entries: first page (u64), pages (u32), the page's or extent's CRC-32C (u32) |
//! | c..c+2 | in mode 1 (format version 3), at `c = 221 + 16n`: number of carried log records `m` (u16) |
//! | c+2.. | `m` carried records, each: segment (u32), offset (u64), length `l` (u32), then the record's `l` bytes |
//!
//! All integers are little endian.
//!
//! **One sync for small commits.** A commit that writes at most [`MAX_WRITTEN`] pages and
//! extents lists them (and its rollback log record) in its meta record, writes the record
//! together with them and syncs once. Such a record counts at open only if everything it lists
//! is on disk with the listed checksum; otherwise the commit did not complete (its sync never
//! returned) and the other slot, written and synced by the commit before, is in force.
//!
//! **Carried log records.** A one-sync commit that appends to the rollback log would need a
//! second flush, of the log's segment, beside the data file's. Instead its meta record
//! carries the bytes of every log record appended since the log was last synced, its own
//! included, as long as they fit in the page; the log is synced only when they no longer do
//! (about every fifteenth single-update commit; then before the meta record is written) or
//! at a larger commit. Opening writes back whichever carried records are not intact in their
//! segments, and syncs those segments and the log's folder, before it checks the record the
//! meta record names. The records are cumulative, so the record in the other slot carries
//! all that its own state needs too.

use bmt_core::Hash;

use crate::page::{HEADER_SIZE, PAGE_REF_SIZE, PAGE_SIZE, PageBuf, PageKind, PageRef};

/// Magic at the start of the meta record body.
pub const META_MAGIC: [u8; 4] = *b"BMTD";
/// The on-disk format version this build writes (it reads versions 1 to 4; version 1 has no
/// one-sync records, version 2 no carried log records, and versions 1 to 3 record no trie
/// shape: theirs is a top page of 6 levels).
pub const FORMAT_VERSION: u32 = 4;
/// The oldest format version this build reads.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// Most written-page entries a one-sync meta record holds.
pub const MAX_WRITTEN: usize = (PAGE_SIZE - HEADER_SIZE - WRITTEN_AT) / WRITTEN_SIZE;
const WRITTEN_AT: usize = 221;
const WRITTEN_SIZE: usize = 16;
/// Bytes a carried log record takes in a meta record besides its own bytes.
pub const CARRIED_OVERHEAD: usize = 16;

/// Bytes left in a one-sync meta record listing `written` pages and extents for carried log
/// records (each takes [`CARRIED_OVERHEAD`] plus its length).
pub fn carry_room(written: usize) -> usize {
    (PAGE_SIZE - HEADER_SIZE).saturating_sub(WRITTEN_AT + WRITTEN_SIZE * written + 2)
}

/// A rollback log record whose bytes a meta record carries (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedRecord {
    /// Where it goes; `len` is the length of `bytes`.
    pub at: LogRecordRef,
    /// The record as written to its segment.
    pub bytes: Vec<u8>,
}

/// A page or an extent a commit wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Its first page.
    pub pgno: u64,
    /// Its length in pages.
    pub pages: u32,
    /// Its checksum (in its header).
    pub crc: u32,
}

/// The rollback log record a commit appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecordRef {
    /// Segment number.
    pub segment: u32,
    /// Byte offset in the segment.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// Its CRC-32C (as stored in its header).
    pub crc: u32,
}

/// What a one-sync meta record lists: everything its commit wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OneSync {
    /// Pages and extents of the data file.
    pub written: Vec<Written>,
    /// The rollback log record.
    pub log_record: Option<LogRecordRef>,
    /// Log records not yet synced in the log, carried here instead (see the module docs):
    /// `None` when the commit synced the log.
    pub carried: Option<Vec<CarriedRecord>>,
}
/// Most entries the free-list journal has before a full free list is written again.
pub const MAX_JOURNAL: u32 = 64;

/// A decoded meta record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Commit sequence number.
    pub seq: u64,
    /// The state root.
    pub root: Hash,
    /// Root of the flat store.
    pub flat_root: Option<PageRef>,
    /// Root of the trie page table.
    pub pt_root: Option<PageRef>,
    /// Head of the full free list.
    pub freelist: Option<PageRef>,
    /// Newest entry of the free-list journal.
    pub journal: Option<PageRef>,
    /// Entries in the journal.
    pub journal_len: u32,
    /// Pages in use (logical file length).
    pub page_count: u64,
    /// Number of keys.
    pub key_count: u64,
    /// Trie page elision threshold.
    pub elide_below: u32,
    /// Levels of the trie's top page (see [`crate::trie::Shape`]).
    pub top_levels: u8,
    /// Name of the value hasher.
    pub hasher: String,
    /// Opaque rollback log state (48 bytes).
    pub rollback: [u8; 48],
    /// For a commit made durable with one sync: what must be on disk for the record to count.
    pub one_sync: Option<OneSync>,
}

/// Why a meta slot could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaError {
    /// Not a meta record of this database format.
    Invalid(String),
    /// A meta record of an unknown format version.
    UnknownVersion(u32),
}

impl Meta {
    /// The trie's shape: its elision threshold and top page.
    pub fn trie_shape(&self) -> crate::trie::Shape {
        crate::trie::Shape {
            elide_below: self.elide_below,
            top_levels: self.top_levels,
        }
    }

    /// Encodes into a sealed page for slot `seq % 2`.
    /// Encodes the record for meta slot `slot` (0 or 1: the page number its header names).
    pub fn encode(&self, slot: u64) -> Box<PageBuf> {
        let mut page = PageBuf::zeroed();
        let b = page.body_mut();
        b[0..4].copy_from_slice(&META_MAGIC);
        b[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        b[12..44].copy_from_slice(self.root.as_bytes());
        PageRef::encode_opt(self.flat_root, &mut b[44..44 + PAGE_REF_SIZE]);
        PageRef::encode_opt(self.pt_root, &mut b[56..56 + PAGE_REF_SIZE]);
        PageRef::encode_opt(self.freelist, &mut b[68..68 + PAGE_REF_SIZE]);
        b[80..88].copy_from_slice(&self.page_count.to_le_bytes());
        b[88..96].copy_from_slice(&self.key_count.to_le_bytes());
        assert!(self.elide_below < 1 << 24, "elision threshold too large");
        b[96..99].copy_from_slice(&self.elide_below.to_le_bytes()[..3]);
        b[99] = self.top_levels;
        let name = self.hasher.as_bytes();
        let n = name.len().min(32);
        b[100] = n as u8;
        b[101..101 + n].copy_from_slice(&name[..n]);
        b[133..181].copy_from_slice(&self.rollback);
        PageRef::encode_opt(self.journal, &mut b[181..193]);
        b[193..197].copy_from_slice(&self.journal_len.to_le_bytes());
        let mut len = 198;
        if let Some(one) = &self.one_sync {
            assert!(one.written.len() <= MAX_WRITTEN, "too many written pages");
            b[197] = 1;
            if let Some(r) = one.log_record {
                b[198] = 1;
                b[199..203].copy_from_slice(&r.segment.to_le_bytes());
                b[203..211].copy_from_slice(&r.offset.to_le_bytes());
                b[211..215].copy_from_slice(&r.len.to_le_bytes());
                b[215..219].copy_from_slice(&r.crc.to_le_bytes());
            }
            b[219..221].copy_from_slice(&(one.written.len() as u16).to_le_bytes());
            for (i, w) in one.written.iter().enumerate() {
                let at = WRITTEN_AT + WRITTEN_SIZE * i;
                b[at..at + 8].copy_from_slice(&w.pgno.to_le_bytes());
                b[at + 8..at + 12].copy_from_slice(&w.pages.to_le_bytes());
                b[at + 12..at + 16].copy_from_slice(&w.crc.to_le_bytes());
            }
            len = WRITTEN_AT + WRITTEN_SIZE * one.written.len();
            let carried = one.carried.as_deref().unwrap_or_default();
            b[len..len + 2].copy_from_slice(&(carried.len() as u16).to_le_bytes());
            len += 2;
            for c in carried {
                assert!(
                    len + CARRIED_OVERHEAD + c.bytes.len() <= PAGE_SIZE - HEADER_SIZE,
                    "carried log records overflow the meta record"
                );
                b[len..len + 4].copy_from_slice(&c.at.segment.to_le_bytes());
                b[len + 4..len + 12].copy_from_slice(&c.at.offset.to_le_bytes());
                b[len + 12..len + 16].copy_from_slice(&(c.bytes.len() as u32).to_le_bytes());
                len += CARRIED_OVERHEAD;
                b[len..len + c.bytes.len()].copy_from_slice(&c.bytes);
                len += c.bytes.len();
            }
        }
        page.seal(PageKind::Meta, len as u32, self.seq, slot);
        page
    }

    /// Decodes a meta page that passed its page checks.
    pub fn decode(page: &PageBuf) -> Result<Meta, MetaError> {
        let b = page.body();
        if b[0..4] != META_MAGIC {
            return Err(MetaError::Invalid("bad meta magic".into()));
        }
        let version = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(MetaError::UnknownVersion(version));
        }
        let page_size = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if page_size as usize != PAGE_SIZE {
            return Err(MetaError::Invalid(format!("page size {page_size}")));
        }
        let n = b[100] as usize;
        if n > 32 {
            return Err(MetaError::Invalid("hasher name too long".into()));
        }
        let hasher = std::str::from_utf8(&b[101..101 + n])
            .map_err(|_| MetaError::Invalid("hasher name is not UTF-8".into()))?
            .to_string();
        let meta = Meta {
            seq: page.seq(),
            root: Hash(b[12..44].try_into().expect("32 bytes")),
            flat_root: PageRef::decode(&b[44..56]),
            pt_root: PageRef::decode(&b[56..68]),
            freelist: PageRef::decode(&b[68..80]),
            page_count: u64::from_le_bytes(b[80..88].try_into().expect("8 bytes")),
            key_count: u64::from_le_bytes(b[88..96].try_into().expect("8 bytes")),
            elide_below: if version >= 4 {
                u32::from_le_bytes([b[96], b[97], b[98], 0])
            } else {
                u32::from_le_bytes(b[96..100].try_into().expect("4 bytes"))
            },
            top_levels: if version >= 4 {
                b[99]
            } else {
                crate::trie::PAGE_LEVELS as u8
            },
            hasher,
            rollback: b[133..181].try_into().expect("48 bytes"),
            journal: PageRef::decode(&b[181..193]),
            journal_len: u32::from_le_bytes(b[193..197].try_into().expect("4 bytes")),
            one_sync: None,
        };
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let mut meta = meta;
        match (version, b[197]) {
            (_, 0) => {}
            (2.., 1) => {
                let log_record = match b[198] {
                    0 => None,
                    1 => Some(LogRecordRef {
                        segment: u32_at(199),
                        offset: u64_at(203),
                        len: u32_at(211),
                        crc: u32_at(215),
                    }),
                    f => return Err(MetaError::Invalid(format!("log record flag {f}"))),
                };
                let n = u16::from_le_bytes([b[219], b[220]]) as usize;
                if n > MAX_WRITTEN {
                    return Err(MetaError::Invalid(format!("{n} written pages listed")));
                }
                let mut written = Vec::with_capacity(n);
                for i in 0..n {
                    let at = WRITTEN_AT + WRITTEN_SIZE * i;
                    let w = Written {
                        pgno: u64_at(at),
                        pages: u32_at(at + 8),
                        crc: u32_at(at + 12),
                    };
                    if w.pgno < 2
                        || w.pages == 0
                        || w.pgno
                            .checked_add(u64::from(w.pages))
                            .is_none_or(|end| end > meta.page_count)
                    {
                        return Err(MetaError::Invalid(format!(
                            "written pages {}+{} outside 2..{}",
                            w.pgno, w.pages, meta.page_count
                        )));
                    }
                    written.push(w);
                }
                let carried = if version >= 3 {
                    Some(decode_carried(b, WRITTEN_AT + WRITTEN_SIZE * n)?)
                } else {
                    None
                };
                meta.one_sync = Some(OneSync {
                    written,
                    log_record,
                    carried: carried.filter(|c| !c.is_empty()),
                });
            }
            (_, m) => return Err(MetaError::Invalid(format!("durability mode {m}"))),
        }
        if meta.journal_len > MAX_JOURNAL || meta.journal.is_some() != (meta.journal_len > 0) {
            return Err(MetaError::Invalid(format!(
                "free-list journal of {} entries",
                meta.journal_len
            )));
        }
        for r in [meta.flat_root, meta.pt_root, meta.freelist, meta.journal]
            .into_iter()
            .flatten()
        {
            if r.pgno < 2 || r.pgno >= meta.page_count {
                return Err(MetaError::Invalid(format!(
                    "reference to page {} outside 2..{}",
                    r.pgno, meta.page_count
                )));
            }
        }
        if !meta.trie_shape().is_valid() {
            return Err(MetaError::Invalid(format!(
                "trie shape: threshold {}, top page of {} levels",
                meta.elide_below, meta.top_levels
            )));
        }
        Ok(meta)
    }
}

/// The carried log records of a version-3 one-sync record body `b`, from `at`.
fn decode_carried(b: &[u8], mut at: usize) -> Result<Vec<CarriedRecord>, MetaError> {
    let short = || MetaError::Invalid("carried log records run past the record".into());
    let field = |at: usize, n: usize| b.get(at..at + n).ok_or_else(short);
    let m = u16::from_le_bytes(field(at, 2)?.try_into().expect("2 bytes")) as usize;
    at += 2;
    let mut out = Vec::with_capacity(m.min(PAGE_SIZE / CARRIED_OVERHEAD));
    for _ in 0..m {
        let head = field(at, CARRIED_OVERHEAD)?;
        let segment = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
        let offset = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
        at += CARRIED_OVERHEAD;
        let bytes = field(at, len as usize)?.to_vec();
        at += len as usize;
        // A log record holds its CRC-32C at bytes 12..16 of its header.
        let crc = bytes
            .get(12..16)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .ok_or_else(|| MetaError::Invalid(format!("carried log record of {len} bytes")))?;
        out.push(CarriedRecord {
            at: LogRecordRef {
                segment,
                offset,
                len,
                crc,
            },
            bytes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Meta {
            seq: 5,
            root: Hash([9; 32]),
            flat_root: Some(PageRef { pgno: 7, crc: 1 }),
            pt_root: None,
            freelist: Some(PageRef { pgno: 3, crc: 2 }),
            page_count: 10,
            key_count: 100,
            elide_below: 20,
            top_levels: 3,
            hasher: "blake2b-256".into(),
            rollback: [4; 48],
            journal: Some(PageRef { pgno: 4, crc: 3 }),
            journal_len: 2,
            one_sync: None,
        };
        let page = m.encode(m.seq % 2);
        crate::page::verify(page.bytes(), PageKind::Meta, 1, None).unwrap();
        assert_eq!(Meta::decode(&page).unwrap(), m);

        let mut one = m.clone();
        one.one_sync = Some(OneSync {
            written: (0..MAX_WRITTEN as u64)
                .map(|i| Written {
                    pgno: 2 + i % 6,
                    pages: 1 + (i % 2) as u32,
                    crc: i as u32,
                })
                .collect(),
            log_record: Some(LogRecordRef {
                segment: 3,
                offset: 4096,
                len: 200,
                crc: 77,
            }),
            carried: None,
        });
        assert_eq!(Meta::decode(&one.encode(0)).unwrap(), one);
        one.one_sync = Some(OneSync::default());
        assert_eq!(Meta::decode(&one.encode(0)).unwrap(), one);

        // Carried log records, filling the room that is left.
        let record = |offset: u64, len: usize| {
            let mut bytes = vec![offset as u8; len];
            bytes[12..16].copy_from_slice(&(offset as u32 * 3).to_le_bytes());
            CarriedRecord {
                at: LogRecordRef {
                    segment: 1,
                    offset,
                    len: len as u32,
                    crc: offset as u32 * 3,
                },
                bytes,
            }
        };
        let written: Vec<Written> = (0..10)
            .map(|i| Written {
                pgno: 2 + i % 6,
                pages: 1,
                crc: 5,
            })
            .collect();
        let room = carry_room(written.len());
        let last = room - 2 * CARRIED_OVERHEAD - 184;
        one.one_sync = Some(OneSync {
            written,
            log_record: Some(record(184, last).at),
            carried: Some(vec![record(0, 184), record(184, last)]),
        });
        assert_eq!(Meta::decode(&one.encode(0)).unwrap(), one);
    }

    #[test]
    fn carried_records_that_run_past_the_page_are_an_error() {
        let mut page = Meta {
            seq: 5,
            root: Hash([9; 32]),
            flat_root: None,
            pt_root: None,
            freelist: None,
            page_count: 10,
            key_count: 0,
            elide_below: 20,
            top_levels: 3,
            hasher: "blake2b-256".into(),
            rollback: [0; 48],
            journal: None,
            journal_len: 0,
            one_sync: Some(OneSync::default()),
        }
        .encode(0);
        let body = page.body_mut();
        // One carried record of 2^31 bytes.
        body[WRITTEN_AT..WRITTEN_AT + 2].copy_from_slice(&1u16.to_le_bytes());
        body[WRITTEN_AT + 2 + 12..WRITTEN_AT + 2 + 16].copy_from_slice(&(1u32 << 31).to_le_bytes());
        assert!(matches!(Meta::decode(&page), Err(MetaError::Invalid(_))));
    }
}
