//! The write-ahead log: small commits made durable by one short sequential write.
//!
//! A commit made durable in place writes a dozen pages scattered over the data file (the trie
//! path, the B+tree leaves and branches, the page table, the free list) and the device must
//! flush them all; on a virtual disk that flush costs about three times a flush of one block.
//! A small commit therefore writes only its changes (the keys and their new values, the root
//! before and after) as one record appended to this log, and syncs it: that sync is its
//! commit point. Its pages are kept in memory ([`crate::pager::Pager::defer_pages`]) and
//! reach the data file at the next *checkpoint*: a durable meta record, written when enough
//! pages or commits have gathered, before any commit that is not logged here, and at `sync`
//! and close. Once a meta record is durable the log starts again from its beginning.
//!
//! After a crash, open takes the meta record in force (sequence number `g`), reads this log's
//! records of generation `g` in order, and commits each one's changes again on top of that
//! state: the same changes on the same state give the same pages' contents and the same root,
//! which each record holds and replay checks. It then checkpoints.
//!
//! # File
//!
//! `wal.bmt` in the database directory, filled with zeros when created (so that a record's
//! sync needs no change to the file's size or block map). Records lie back to back from
//! offset 0:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"bmtW"` |
//! | 4..8 | record length in bytes, header included (u32) |
//! | 8..12 | CRC-32C of the record with these four bytes as zero |
//! | 12..16 | zero |
//! | 16..24 | generation: the sequence number of the meta record the log follows |
//! | 24..32 | sequence number of the commit |
//! | 32..64 | root before the commit |
//! | 64..96 | root after the commit |
//! | 96..100 | number of changes (u32) |
//! | 100.. | for each change, in key order: key (31), present (1 byte), and if present the value's length (u32) and the value |
//!
//! Bytes 32 on are the body that the rollback log's records have too ([`crate::changes`]).
//!
//! All integers are little endian. A record counts only if its checksum is right, its
//! generation is the meta record's sequence number, and its sequence number and root before
//! follow the state before it: records of an older generation, left past the end of a newer
//! one, end the log. A record that fails its checksum ends it too (a write the power cut),
//! unless a later record of the same run starts within 64 KiB after it (the longest record):
//! then an acknowledged commit was damaged, and open fails with `Error::Corrupted` rather
//! than lose it. Open thus reads the log's records and 64 KiB past them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bmt_core::{Hash, Key};

use crate::error::{Error, Result};
use crate::io::{Storage, StorageFile};

/// The log's file name in the database directory.
pub(crate) const WAL_FILE: &str = "wal.bmt";

const MAGIC: [u8; 4] = *b"bmtW";
/// Where the body (`crate::changes`) starts.
const BODY_AT: usize = 32;
/// The header with the fixed part of the body: the least a record takes.
const HEADER: usize = 100;

/// The largest record a commit may log (larger commits are made durable in place).
pub(crate) const MAX_RECORD: usize = 64 << 10;

/// One logged commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalRecord {
    pub seq: u64,
    pub prev_root: Hash,
    pub root: Hash,
    pub changes: BTreeMap<Key, Option<Vec<u8>>>,
}

/// The bytes a record of `changes` takes.
pub(crate) fn record_len(changes: &BTreeMap<Key, Option<Vec<u8>>>) -> usize {
    BODY_AT + crate::changes::body_len(changes.values())
}

fn encode(
    generation: u64,
    seq: u64,
    prev_root: Hash,
    root: Hash,
    changes: &BTreeMap<Key, Option<Vec<u8>>>,
) -> Vec<u8> {
    let len = record_len(changes);
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&(len as u32).to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&generation.to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    crate::changes::encode_body(&mut b, &prev_root, &root, changes.iter());
    debug_assert_eq!(b.len(), len);
    let crc = crc32c::crc32c(&b);
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    b
}

/// What decoding the bytes at one offset found.
enum Decoded {
    /// A whole record with a right checksum: its generation, the record, its length.
    Record(u64, WalRecord, usize),
    /// No record here (zeros, a torn or garbled write, a stale length).
    Invalid,
}

/// Decodes the record at the start of `b` (which may run past its end).
fn decode(b: &[u8]) -> Decoded {
    let Some(head) = b.get(..HEADER) else {
        return Decoded::Invalid;
    };
    if head[0..4] != MAGIC {
        return Decoded::Invalid;
    }
    let len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
    let Some(rec) = b.get(..len).filter(|_| len >= HEADER) else {
        return Decoded::Invalid;
    };
    let stored = u32::from_le_bytes(rec[8..12].try_into().expect("4 bytes"));
    let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[..8]), &[0; 4]);
    if crc32c::crc32c_append(crc, &rec[12..]) != stored {
        return Decoded::Invalid;
    }
    let u64_at = |at: usize| u64::from_le_bytes(rec[at..at + 8].try_into().expect("8 bytes"));
    let Ok((prev_root, root, entries)) = crate::changes::decode_body(&rec[BODY_AT..]) else {
        return Decoded::Invalid;
    };
    // Keys in strictly increasing order, as written.
    if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Decoded::Invalid;
    }
    Decoded::Record(
        u64_at(16),
        WalRecord {
            seq: u64_at(24),
            prev_root,
            root,
            changes: entries.into_iter().collect(),
        },
        len,
    )
}

/// The log file and where its next record goes.
#[derive(Debug)]
pub(crate) struct Wal {
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    capacity: u64,
    /// Where the next record goes.
    tail: u64,
    /// The sequence number of the meta record in force: every record now written has it.
    generation: u64,
}

impl Wal {
    /// Opens the log in `dir` (creating it, `capacity` bytes of zeros, if there is none) and
    /// returns it with the records that follow the meta record in force (sequence number
    /// `generation`, root `root`), in order. The log's next record goes after them.
    pub fn open(
        storage: &dyn Storage,
        dir: &Path,
        capacity: u64,
        generation: u64,
        root: Hash,
    ) -> Result<(Wal, Vec<WalRecord>)> {
        let path = dir.join(WAL_FILE);
        let io_err = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let existed = storage.exists(&path).map_err(io_err)?;
        let file = storage.open(&path, true, false).map_err(io_err)?;
        let size = file.size().map_err(io_err)?;
        // Bytes from `at`, at most `len`, fewer at the end of the file.
        let read = |at: u64, len: usize| -> Result<Vec<u8>> {
            let n = (size.saturating_sub(at)).min(len as u64) as usize;
            let mut b = vec![0u8; n];
            if n > 0 {
                file.read_exact_at(&mut b, at).map_err(io_err)?;
            }
            Ok(b)
        };
        let mut records = Vec::new();
        let mut at = 0u64;
        let (mut seq, mut prev) = (generation, root);
        loop {
            let head = read(at, HEADER)?;
            let rec = match plausible_len(&head, (size - at) as usize) {
                Some(len) => read(at, len)?,
                None => head,
            };
            match decode(&rec) {
                Decoded::Record(g, r, len)
                    if g == generation && r.seq == seq + 1 && r.prev_root == prev =>
                {
                    seq = r.seq;
                    prev = r.root;
                    records.push(r);
                    at += len as u64;
                }
                _ => {
                    // No record of the run here: the end of the log, unless a later record
                    // of the run follows within the longest record's reach. Then the one here
                    // was acknowledged (its sync returned before the next was written) and
                    // was damaged since.
                    let window = read(at + 1, MAX_RECORD + HEADER)?;
                    for off in 0..window.len().saturating_sub(HEADER - 1) {
                        if window[off..off + 4] != MAGIC {
                            continue;
                        }
                        if let Decoded::Record(g, r, _) = decode(&window[off..])
                            && g == generation
                            && r.seq > seq
                        {
                            return Err(Error::Corrupted {
                                path,
                                offset: at,
                                what: format!(
                                    "the record of commit {} is damaged, and the record of \
                                     commit {} follows it",
                                    seq + 1,
                                    r.seq
                                ),
                            });
                        }
                    }
                    break;
                }
            }
        }
        let mut wal = Wal {
            file,
            path,
            capacity: capacity.max(size),
            tail: at,
            generation,
        };
        if size < wal.capacity {
            wal.fill_zeros(size)?;
            if !existed {
                storage.sync_dir(dir).map_err(|e| wal.io_error(e))?;
            }
        }
        Ok((wal, records))
    }

    fn io_error(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes zeros from `from` to the capacity, and syncs them.
    fn fill_zeros(&mut self, from: u64) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK as usize];
        let mut at = from;
        while at < self.capacity {
            let n = (self.capacity - at).min(CHUNK);
            self.file
                .write_all_at(&zeros[..n as usize], at)
                .map_err(|e| self.io_error(e))?;
            at += n;
        }
        self.file.sync_data().map_err(|e| self.io_error(e))
    }

    /// The file's size: no record is longer.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether a record of `len` bytes fits after the records written so far.
    pub fn has_room(&self, len: usize) -> bool {
        self.tail + len as u64 <= self.capacity
    }

    /// Appends the record of commit `seq` (from `prev_root` to `root` by `changes`) and makes
    /// it durable: that commit's commit point. The caller checked [`Wal::has_room`].
    pub fn append(
        &mut self,
        seq: u64,
        prev_root: Hash,
        root: Hash,
        changes: &BTreeMap<Key, Option<Vec<u8>>>,
    ) -> Result<()> {
        let bytes = encode(self.generation, seq, prev_root, root, changes);
        debug_assert!(self.has_room(bytes.len()));
        self.file
            .write_all_at(&bytes, self.tail)
            .map_err(|e| self.io_error(e))?;
        self.file.sync_data().map_err(|e| self.io_error(e))?;
        self.tail += bytes.len() as u64;
        Ok(())
    }

    /// Starts the log again from its beginning, once the meta record of commit `generation`
    /// is durable (every record so far is then in the data file).
    pub fn restart(&mut self, generation: u64) {
        self.generation = generation;
        self.tail = 0;
    }
}

/// The length the record header `head` claims, if it is a record's header whose length is
/// within `room` bytes.
fn plausible_len(head: &[u8], room: usize) -> Option<usize> {
    let head = head.get(..HEADER)?;
    if head[0..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(head[4..8].try_into().ok()?) as usize;
    (HEADER..=room.min(MAX_RECORD))
        .contains(&len)
        .then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemStorage;

    fn empty_dir() -> (MemStorage, &'static Path) {
        let storage = MemStorage::new();
        let dir = Path::new("/db");
        storage.create_dir_all(dir).unwrap();
        (storage, dir)
    }

    fn record(seq: u64, prev: Hash, n: u8) -> WalRecord {
        let changes = (0..n)
            .map(|i| {
                let v = (i % 3 != 0).then(|| vec![i; i as usize * 7]);
                (Key([i; 31]), v)
            })
            .collect();
        WalRecord {
            seq,
            prev_root: prev,
            root: Hash([seq as u8; 32]),
            changes,
        }
    }

    #[test]
    fn records_of_the_generation_are_read_back_in_order_and_stale_ones_end_the_log() {
        let (storage, dir) = empty_dir();
        let (mut wal, none) = Wal::open(&storage, dir, 1 << 16, 10, Hash::ZERO).unwrap();
        assert!(none.is_empty());
        let mut written = Vec::new();
        let mut prev = Hash::ZERO;
        for seq in 11..16 {
            let r = record(seq, prev, seq as u8 % 7);
            prev = r.root;
            assert!(wal.has_room(record_len(&r.changes)));
            wal.append(r.seq, r.prev_root, r.root, &r.changes).unwrap();
            written.push(r);
        }
        drop(wal);
        let (mut wal, read) = Wal::open(&storage, dir, 1 << 16, 10, Hash::ZERO).unwrap();
        assert_eq!(read, written);
        // A checkpoint at 15, then one record of the new generation: the older records past
        // it are not read.
        wal.restart(15);
        let r = record(16, prev, 1);
        wal.append(r.seq, r.prev_root, r.root, &r.changes).unwrap();
        drop(wal);
        let (_, read) = Wal::open(&storage, dir, 1 << 16, 15, prev).unwrap();
        assert_eq!(read, vec![r]);
        // Another meta record in force (a different generation): nothing applies.
        let (_, read) = Wal::open(&storage, dir, 1 << 16, 16, Hash::ZERO).unwrap();
        assert!(read.is_empty());
    }

    #[test]
    fn a_torn_last_record_ends_the_log_and_a_damaged_middle_one_is_an_error() {
        let (storage, dir) = empty_dir();
        let (mut wal, _) = Wal::open(&storage, dir, 1 << 16, 0, Hash::ZERO).unwrap();
        let a = record(1, Hash::ZERO, 4);
        let b = record(2, a.root, 5);
        wal.append(a.seq, a.prev_root, a.root, &a.changes).unwrap();
        wal.append(b.seq, b.prev_root, b.root, &b.changes).unwrap();
        drop(wal);
        let file = storage.open(&dir.join(WAL_FILE), false, false).unwrap();
        let a_len = record_len(&a.changes) as u64;
        let b_len = record_len(&b.changes) as u64;
        // The last record torn: the first one stands.
        file.write_all_at(&[0xAA], a_len + b_len - 3).unwrap();
        let (_, read) = Wal::open(&storage, dir, 1 << 16, 0, Hash::ZERO).unwrap();
        assert_eq!(read, vec![a.clone()]);
        // The first damaged with the second whole: an error, not a silent loss.
        let (mut wal, _) = Wal::open(&storage, dir, 1 << 16, 0, Hash::ZERO).unwrap();
        wal.restart(0);
        wal.append(a.seq, a.prev_root, a.root, &a.changes).unwrap();
        wal.append(b.seq, b.prev_root, b.root, &b.changes).unwrap();
        drop(wal);
        file.write_all_at(&[0xAA], a_len - 3).unwrap();
        let err = Wal::open(&storage, dir, 1 << 16, 0, Hash::ZERO).unwrap_err();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        // Its length damaged (where the next record starts is then unknown): an error too.
        let (mut wal, _) = Wal::open(&storage, dir, 1 << 16, 1, Hash::ZERO).unwrap();
        wal.restart(0);
        wal.append(a.seq, a.prev_root, a.root, &a.changes).unwrap();
        wal.append(b.seq, b.prev_root, b.root, &b.changes).unwrap();
        drop(wal);
        file.write_all_at(&[0x7F], 5).unwrap();
        let err = Wal::open(&storage, dir, 1 << 16, 0, Hash::ZERO).unwrap_err();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    }

    #[test]
    fn decoding_never_panics_on_noise() {
        let mut rng = 0x1234_5678_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let r = record(4, Hash::ZERO, 6);
        let good = encode(3, r.seq, r.prev_root, r.root, &r.changes);
        for _ in 0..2000 {
            let mut b = good.clone();
            let i = next() as usize % b.len();
            b[i] ^= 1 + next() as u8 % 255;
            b.truncate(next() as usize % (b.len() + 1));
            assert!(!matches!(decode(&b), Decoded::Record(_, ref r, _) if r.seq != 4));
        }
    }
}
