//! The rollback log: for each recent commit, the values its changed keys held before it, so
//! that the commit can be undone.
//!
//! A JAM node builds on blocks that are not final yet, and must go back when a fork is
//! abandoned. Every commit appends a *reverse delta* (each changed key with its prior value,
//! or absence) to a log of segment files; rolling back `n` commits reads the last `n` deltas,
//! merges them, and applies them as one commit, whose root is then exactly the root before
//! the first of them. The log keeps the last `retained` deltas (older ones are pruned and their
//! segments deleted), the newest ones also in memory, bounded in commits and in bytes.
//!
//! Which records are live is part of the meta record (see [`LogState`]): the commit that
//! appends a delta, or that rolls back, switches the log's state at the same commit point as
//! the data. A record written past the state's end (by a commit that did not reach its commit
//! point) is ignored and overwritten.
//!
//! # Files
//!
//! `seg-NNNNNNNN.log` in the log folder (default `rollback/` in the database directory), each
//! at most `segment_size` bytes (a record larger than that takes a segment alone). Records:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"bmtR"` |
//! | 4 | kind: 1 (reverse delta) |
//! | 5 | version: 1 |
//! | 6..8 | zero |
//! | 8..12 | body length (u32) |
//! | 12..16 | CRC-32C of the header (these four bytes as zero) and the body |
//! | 16..24 | sequence number of the commit the delta undoes |
//! | 24..36 | position of the previous record (segment u32, offset u64) |
//! | 36 | 1 when there is a previous record, else 0 |
//! | 37..48 | zero |
//! | 48.. | body: root before (32), root after (32), number of entries (u32), then for each: key (31), present (1 byte), and if present the value's length (u32) and the value |
//!
//! All integers are little endian.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bmt_core::{Hash, Key};

use crate::error::{Error, Result};
use crate::io::{Storage, StorageFile};
use crate::meta::{CARRIED_OVERHEAD, CarriedRecord, LogRecordRef};

const MAGIC: [u8; 4] = *b"bmtR";
const HEADER: usize = 48;
/// How far a segment is extended past its newest record (zero-filled).
const PREALLOCATE: u64 = 1 << 20;
/// Zeros to extend segments with.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The number of a segment file's name (`seg-NNNNNNNN.log`), if it is one.
fn segment_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A position in the log: segment number and byte offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Segment number.
    pub segment: u32,
    /// Byte offset in the segment.
    pub offset: u64,
}

impl Pos {
    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.segment.to_le_bytes());
        out[4..12].copy_from_slice(&self.offset.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Pos {
        Pos {
            segment: u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
            offset: u64::from_le_bytes(b[4..12].try_into().expect("8 bytes")),
        }
    }
}

/// Which records are live, as a meta record keeps it (48 bytes).
///
/// | bytes | field |
/// |---|---|
/// | 0..12 | position of the oldest live record |
/// | 12..20 | sequence number of the oldest live record |
/// | 20..32 | position of the newest live record |
/// | 32..44 | the end: where the next record goes |
/// | 44..48 | number of live records (u32) |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// The oldest live record.
    pub first: Pos,
    /// Its sequence number.
    pub first_seq: u64,
    /// The newest live record.
    pub last: Pos,
    /// Where the next record goes.
    pub end: Pos,
    /// Live records.
    pub count: u32,
}

impl LogState {
    /// The 48-byte form kept in the meta record.
    pub fn encode(&self) -> [u8; 48] {
        let mut b = [0u8; 48];
        self.first.encode(&mut b[0..12]);
        b[12..20].copy_from_slice(&self.first_seq.to_le_bytes());
        self.last.encode(&mut b[20..32]);
        self.end.encode(&mut b[32..44]);
        b[44..48].copy_from_slice(&self.count.to_le_bytes());
        b
    }

    /// Decodes the meta record's form.
    pub fn decode(b: &[u8; 48]) -> LogState {
        LogState {
            first: Pos::decode(&b[0..12]),
            first_seq: u64::from_le_bytes(b[12..20].try_into().expect("8 bytes")),
            last: Pos::decode(&b[20..32]),
            end: Pos::decode(&b[32..44]),
            count: u32::from_le_bytes(b[44..48].try_into().expect("4 bytes")),
        }
    }
}

/// The prior values of one commit's changed keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseDelta {
    /// The commit it undoes.
    pub seq: u64,
    /// The root before that commit (the root a rollback returns to).
    pub prev_root: Hash,
    /// The root after it.
    pub root: Hash,
    /// Each changed key and the value it held before (`None`: absent).
    pub entries: Vec<(Key, Option<Vec<u8>>)>,
}

impl ReverseDelta {
    fn body_len(&self) -> usize {
        crate::changes::body_len(self.entries.iter().map(|(_, v)| v))
    }

    /// Bytes it takes in memory, roughly.
    fn weight(&self) -> usize {
        self.body_len() + 64
    }

    fn encode(&self, prev: Option<Pos>) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.body_len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[1, 1, 0, 0]);
        out.extend_from_slice(&(self.body_len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.seq.to_le_bytes());
        let mut p = [0u8; 12];
        if let Some(prev) = prev {
            prev.encode(&mut p);
        }
        out.extend_from_slice(&p);
        out.push(prev.is_some() as u8);
        out.extend_from_slice(&[0; 11]);
        crate::changes::encode_body(
            &mut out,
            &self.prev_root,
            &self.root,
            self.entries.iter().map(|(k, v)| (k, v)),
        );
        let crc = crc32c::crc32c(&out);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a record's body (already checked against its checksum).
    fn decode_body(seq: u64, b: &[u8]) -> std::result::Result<ReverseDelta, String> {
        let (prev_root, root, entries) = crate::changes::decode_body(b)?;
        Ok(ReverseDelta {
            seq,
            prev_root,
            root,
            entries,
        })
    }
}

/// Fuzzing: decodes `data` as a record body; a body that decodes must encode back to the
/// same bytes (the format has one encoding per delta).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_record_body(data: &[u8]) {
    if let Ok(delta) = ReverseDelta::decode_body(7, data) {
        let encoded = delta.encode(None);
        assert_eq!(&encoded[HEADER..], data, "a record body with two encodings");
    }
}

/// Options of the log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Deltas kept (commits that can be rolled back).
    pub retained: u32,
    /// Deltas also kept in memory, at most.
    pub memory_commits: usize,
    /// Bytes of deltas kept in memory, at most.
    pub memory_bytes: usize,
    /// Segment files' size.
    pub segment_size: u64,
    /// The folder of the segment files.
    pub dir: PathBuf,
}

/// The rollback log of an open database.
#[derive(Debug)]
pub struct RollbackLog {
    storage: Arc<dyn Storage>,
    options: LogOptions,
    /// Open segment files by number.
    files: BTreeMap<u32, Arc<dyn StorageFile>>,
    /// Segments that exist, whether opened or not.
    on_disk: BTreeSet<u32>,
    /// The state in force (as the last meta record has it, or as the last commit set it).
    state: LogState,
    /// Positions, sequence numbers and lengths of the live records, oldest first (read from
    /// the records' back links the first time they are needed).
    live: Option<VecDeque<(Pos, u64, u64)>>,
    /// The newest deltas, newest last, with their positions.
    recent: VecDeque<(Pos, Arc<ReverseDelta>)>,
    recent_bytes: usize,
    /// Segments written since the last sync.
    dirty: Vec<u32>,
    /// A segment was created since the last sync: the folder must be synced too.
    created: bool,
    /// What the commit in progress would make of the log, until it is accepted or rejected.
    proposal: Option<Proposal>,
    /// The records appended since the last sync, oldest first, which a one-sync meta record
    /// can carry instead of a sync (see [`crate::meta`]); `None` when they are too many to
    /// carry (or unknown), so the next commit must sync.
    unsynced: Option<Vec<CarriedRecord>>,
}

/// Most bytes of unsynced records kept to be carried (more never fit in a meta record).
const MAX_UNSYNCED: usize = crate::page::PAGE_SIZE;

/// A change to the log that waits for its commit.
#[derive(Debug)]
struct Proposal {
    state: LogState,
    live: VecDeque<(Pos, u64, u64)>,
    appended: Option<(Pos, Arc<ReverseDelta>)>,
    /// Where the appended record is and its checksum, for a one-sync meta record.
    record: Option<LogRecordRef>,
    /// The appended record's bytes, while they may still be carried by a meta record.
    bytes: Option<Vec<u8>>,
    /// The log was synced after the proposal's record was written.
    synced: bool,
}

/// The name of segment `segment` in `dir`.
fn segment_file(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("seg-{segment:08}.log"))
}

/// Whether the record `r` of the log in `dir` is on disk whole, with its checksum: what a
/// one-sync meta record that names it needs to count. A missing segment or a record past its
/// end is a no; an I/O error is an error.
pub fn record_is_intact(storage: &dyn Storage, dir: &Path, r: &LogRecordRef) -> Result<bool> {
    let path = segment_file(dir, r.segment);
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    if (r.len as usize) < HEADER || !storage.exists(&path).map_err(io)? {
        return Ok(false);
    }
    let file = storage.open(&path, false, false).map_err(io)?;
    let mut record = vec![0u8; r.len as usize];
    match file.read_exact_at(&mut record, r.offset) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(io(e)),
    }
    let stored = u32::from_le_bytes(record[12..16].try_into().expect("4 bytes"));
    record[12..16].fill(0);
    Ok(stored == r.crc && crc32c::crc32c(&record) == r.crc)
}

/// Puts back in their segments of the log in `dir` the records a meta record carried (see
/// [`crate::meta`]) that are not there intact, then makes them, and the segments' names,
/// durable: after this the log holds every record the meta record's state needs, whatever
/// happened to the commits' buffered writes.
pub fn restore_carried(storage: &dyn Storage, dir: &Path, records: &[CarriedRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let dir_err = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    storage.create_dir_all(dir).map_err(dir_err)?;
    let mut files: BTreeMap<u32, Arc<dyn StorageFile>> = BTreeMap::new();
    for r in records {
        let path = segment_file(dir, r.at.segment);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let intact = record_is_intact(storage, dir, &r.at)?;
        let file = match files.entry(r.at.segment) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(storage.open(&path, true, false).map_err(io)?)
            }
        };
        if !intact {
            file.write_all_at(&r.bytes, r.at.offset).map_err(io)?;
        }
    }
    for (segment, file) in &files {
        file.sync_data().map_err(|source| Error::Io {
            path: segment_file(dir, *segment),
            source,
        })?;
    }
    // The segments' names too: one that exists now may have been created by a commit that
    // carried its records and never synced the folder.
    storage.sync_dir(dir).map_err(dir_err)?;
    Ok(())
}

impl RollbackLog {
    /// Opens the log with the state the meta record in force gives. Reads no record; removes
    /// the segments that state does not use (left by pruning that a crash interrupted, by
    /// a commit that created a segment but did not reach its commit point, or by commits
    /// made with the log off).
    pub fn open(storage: Arc<dyn Storage>, options: LogOptions, state: LogState) -> Result<Self> {
        let io_err = |source| Error::Io {
            path: options.dir.clone(),
            source,
        };
        storage.create_dir_all(&options.dir).map_err(io_err)?;
        let on_disk: BTreeSet<u32> = storage
            .list_dir(&options.dir)
            .map_err(io_err)?
            .iter()
            .filter_map(|name| segment_number(name))
            .collect();
        let mut log = RollbackLog {
            storage,
            options,
            files: BTreeMap::new(),
            on_disk,
            state,
            live: None,
            recent: VecDeque::new(),
            recent_bytes: 0,
            dirty: Vec::new(),
            created: false,
            proposal: None,
            unsynced: Some(Vec::new()),
        };
        let first = if state.count > 0 {
            state.first.segment
        } else {
            state.end.segment
        };
        let dead: Vec<u32> = log
            .on_disk
            .iter()
            .copied()
            .filter(|s| *s < first || *s > state.end.segment)
            .collect();
        log.remove_segments(&dead)?;
        Ok(log)
    }

    fn remove_segments(&mut self, segments: &[u32]) -> Result<()> {
        for &segment in segments {
            self.files.remove(&segment);
            self.on_disk.remove(&segment);
            let path = self.segment_path(segment);
            match self.storage.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Io { path, source }),
            }
        }
        Ok(())
    }

    /// The state in force.
    pub fn state(&self) -> LogState {
        self.state
    }

    /// Deltas that can be rolled back.
    pub fn len(&self) -> u32 {
        self.state.count
    }

    /// Whether record `r` of this log is on disk whole (see [`record_is_intact`]).
    pub fn record_is_intact(&self, r: &LogRecordRef) -> Result<bool> {
        record_is_intact(&*self.storage, &self.options.dir, r)
    }

    /// The record the proposed commit appended, if any (for a one-sync meta record).
    pub fn proposed_record(&self) -> Option<LogRecordRef> {
        self.proposal.as_ref().and_then(|p| p.record)
    }

    fn segment_path(&self, segment: u32) -> PathBuf {
        segment_file(&self.options.dir, segment)
    }

    fn file(&mut self, segment: u32) -> Result<Arc<dyn StorageFile>> {
        if let Some(f) = self.files.get(&segment) {
            return Ok(f.clone());
        }
        let path = self.segment_path(segment);
        let f = self
            .storage
            .open(&path, true, false)
            .map_err(|source| Error::Io { path, source })?;
        self.files.insert(segment, f.clone());
        if self.on_disk.insert(segment) {
            self.created = true;
        }
        Ok(f)
    }

    fn corrupted(&self, pos: Pos, what: impl Into<String>) -> Error {
        Error::Corrupted {
            path: self.segment_path(pos.segment),
            offset: pos.offset,
            what: what.into(),
        }
    }

    /// The live records, oldest first (walking the back links from the newest the first
    /// time: at most the retained number of small reads).
    fn live(&mut self) -> Result<&mut VecDeque<(Pos, u64, u64)>> {
        if self.live.is_none() {
            let mut live = VecDeque::with_capacity(self.state.count as usize);
            let mut pos = (self.state.count > 0).then_some(self.state.last);
            for _ in 0..self.state.count {
                let p =
                    pos.ok_or_else(|| self.corrupted(self.state.last, "the log chain ends early"))?;
                let (header, _) = self.read_header(p)?;
                if header[0..4] != MAGIC {
                    return Err(self.corrupted(p, "not a rollback record"));
                }
                let len = HEADER as u64
                    + u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as u64;
                let seq = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
                live.push_front((p, seq, len));
                pos = (header[36] == 1).then(|| Pos::decode(&header[24..36]));
            }
            self.live = Some(live);
        }
        Ok(self.live.as_mut().expect("filled just above"))
    }

    /// Writes `delta` at the end of the log and proposes the state that makes it live (with
    /// the oldest deltas pruned past the retained window); returns that state, for the meta
    /// record of the commit. [`RollbackLog::accept`] once the commit happened.
    pub fn propose_append(&mut self, delta: Arc<ReverseDelta>) -> Result<LogState> {
        let retained = self.options.retained as usize;
        let mut live = self.live()?.clone();
        let mut pos = self.state.end;
        let prev = live.back().map(|(p, _, _)| *p);
        let bytes = delta.encode(prev);
        if pos.offset > 0 && pos.offset + bytes.len() as u64 > self.options.segment_size {
            pos = Pos {
                segment: pos.segment + 1,
                offset: 0,
            };
        }
        let file = self.file(pos.segment)?;
        let io = |source| Error::Io {
            path: self.segment_path(pos.segment),
            source,
        };
        let record_end = pos.offset + bytes.len() as u64;
        let size = file.size().map_err(io)?;
        file.write_all_at(&bytes, pos.offset).map_err(io)?;
        // The segment grows ahead of its records, a zeroed MiB at a time, so that most
        // appends change no file size and their sync has no metadata to commit.
        if record_end > size {
            let target = (record_end + PREALLOCATE).min(self.options.segment_size.max(record_end));
            let mut at = record_end;
            while at < target {
                let n = (target - at).min(ZEROS.len() as u64) as usize;
                file.write_all_at(&ZEROS[..n], at).map_err(io)?;
                at += n as u64;
            }
        }
        if !self.dirty.contains(&pos.segment) {
            self.dirty.push(pos.segment);
        }
        live.push_back((pos, delta.seq, bytes.len() as u64));
        while live.len() > retained {
            live.pop_front();
        }
        let end = Pos {
            segment: pos.segment,
            offset: pos.offset + bytes.len() as u64,
        };
        let state = Self::state_of(&live, end);
        let record = LogRecordRef {
            segment: pos.segment,
            offset: pos.offset,
            len: bytes.len() as u32,
            crc: u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")),
        };
        self.proposal = Some(Proposal {
            state,
            live,
            appended: Some((pos, delta)),
            record: Some(record),
            bytes: (bytes.len() <= MAX_UNSYNCED).then_some(bytes),
            synced: false,
        });
        Ok(state)
    }

    /// The state for live records `live` and end `end`.
    fn state_of(live: &VecDeque<(Pos, u64, u64)>, end: Pos) -> LogState {
        match (live.front(), live.back()) {
            (Some(first), Some(last)) => LogState {
                first: first.0,
                first_seq: first.1,
                last: last.0,
                end,
                count: live.len() as u32,
            },
            _ => LogState {
                first: end,
                first_seq: 0,
                last: end,
                end,
                count: 0,
            },
        }
    }

    fn read_header(&mut self, pos: Pos) -> Result<([u8; HEADER], Arc<dyn StorageFile>)> {
        let file = self.file(pos.segment)?;
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, pos.offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupted(pos, "a live record is past the end of its segment")
            } else {
                Error::Io {
                    path: self.segment_path(pos.segment),
                    source: e,
                }
            }
        })?;
        Ok((header, file))
    }

    /// Reads and checks the record at `pos`; returns it and the previous record's position.
    fn read(&mut self, pos: Pos) -> Result<(ReverseDelta, Option<Pos>)> {
        let (header, file) = self.read_header(pos)?;
        if header[0..4] != MAGIC || header[4] != 1 || header[5] != 1 {
            return Err(self.corrupted(pos, "not a rollback record"));
        }
        let len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
        // A damaged length must not allocate gigabytes: the record ends inside its segment.
        let size = file.size().map_err(|e| Error::Io {
            path: self.segment_path(pos.segment),
            source: e,
        })?;
        if pos.offset.saturating_add((HEADER + len) as u64) > size {
            return Err(self.corrupted(pos, "a record is cut short"));
        }
        let mut record = vec![0u8; HEADER + len];
        file.read_exact_at(&mut record, pos.offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupted(pos, "a record is cut short")
            } else {
                Error::Io {
                    path: self.segment_path(pos.segment),
                    source: e,
                }
            }
        })?;
        let stored = u32::from_le_bytes(record[12..16].try_into().expect("4 bytes"));
        record[12..16].fill(0);
        if crc32c::crc32c(&record) != stored {
            return Err(self.corrupted(pos, "rollback record checksum mismatch"));
        }
        let seq = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
        let prev = (header[36] == 1).then(|| Pos::decode(&header[24..36]));
        let delta = ReverseDelta::decode_body(seq, &record[HEADER..])
            .map_err(|e| self.corrupted(pos, e))?;
        Ok((delta, prev))
    }

    fn remember(&mut self, pos: Pos, delta: Arc<ReverseDelta>) {
        self.recent_bytes += delta.weight();
        self.recent.push_back((pos, delta));
        while self.recent.len() > self.options.memory_commits
            || (self.recent_bytes > self.options.memory_bytes && self.recent.len() > 1)
        {
            if let Some((_, d)) = self.recent.pop_front() {
                self.recent_bytes -= d.weight();
            }
        }
    }

    /// The `n` newest live deltas, newest first.
    pub fn newest(&mut self, n: u32) -> Result<Vec<Arc<ReverseDelta>>> {
        if n > self.state.count {
            return Err(Error::RollbackWindow {
                requested: n,
                available: self.state.count,
            });
        }
        let positions: Vec<Pos> = self
            .live()?
            .iter()
            .rev()
            .take(n as usize)
            .map(|(p, _, _)| *p)
            .collect();
        let mut out = Vec::with_capacity(n as usize);
        for p in positions {
            match self.recent.iter().rev().find(|(rp, _)| *rp == p) {
                Some((_, d)) => out.push(d.clone()),
                None => out.push(Arc::new(self.read(p)?.0)),
            }
        }
        Ok(out)
    }

    /// Reads every live record from disk (not from memory), checking each, and that they
    /// chain: each record's root is the next one's root before, and the newest ends at
    /// `root`. Returns the number of records.
    pub fn verify(&mut self, root: Hash) -> Result<u32> {
        let positions: Vec<Pos> = self.live()?.iter().map(|(p, _, _)| *p).collect();
        let mut expected_prev: Option<Hash> = None;
        let mut last_root = None;
        for p in &positions {
            let (delta, _) = self.read(*p)?;
            if expected_prev.is_some_and(|h| h != delta.prev_root) {
                return Err(self.corrupted(*p, "record does not follow the one before"));
            }
            expected_prev = Some(delta.root);
            last_root = Some(delta.root);
        }
        if last_root.is_some_and(|r| r != root) {
            return Err(self.corrupted(
                self.state.last,
                "the newest record does not end at the root",
            ));
        }
        Ok(positions.len() as u32)
    }

    /// Proposes the state without the `n` newest deltas (a rollback); returns it, for the
    /// meta record of the rollback's commit.
    pub fn propose_pop(&mut self, n: u32) -> Result<LogState> {
        if n > self.state.count {
            return Err(Error::RollbackWindow {
                requested: n,
                available: self.state.count,
            });
        }
        let mut live = self.live()?.clone();
        let mut end = self.state.end;
        for _ in 0..n {
            if let Some((p, _, _)) = live.pop_back() {
                end = p;
            }
        }
        let state = Self::state_of(&live, end);
        self.proposal = Some(Proposal {
            state,
            live,
            appended: None,
            record: None,
            bytes: None,
            synced: false,
        });
        Ok(state)
    }

    /// The commit of the proposal happened: it is the log's state now.
    pub fn accept(&mut self) {
        if let Some(p) = self.proposal.take() {
            self.state = p.state;
            let first = p.live.front().map(|(pos, _, _)| *pos);
            self.live = Some(p.live);
            // Deltas in memory: the live ones only.
            let last = self.state.last;
            let count = self.state.count;
            // The weights of the dropped deltas only: summing every kept one would cost a
            // pass over all the entries held (a hundred large commits) at every commit.
            let mut dropped = 0;
            self.recent.retain(|(pos, d)| {
                let keep = count > 0 && first.is_some_and(|f| *pos >= f) && *pos <= last;
                if !keep {
                    dropped += d.weight();
                }
                keep
            });
            self.recent_bytes -= dropped;
            if let Some((pos, delta)) = p.appended {
                self.remember(pos, delta);
            }
            // An appended record that the commit did not sync stays to be carried; after a
            // pop, unsynced records may lie past the new end, so the next commit syncs.
            if !p.synced {
                self.unsynced = match (self.unsynced.take(), p.record, p.bytes) {
                    (Some(mut list), Some(at), Some(bytes)) => {
                        list.push(CarriedRecord { at, bytes });
                        let total: usize = list.iter().map(|c| c.bytes.len()).sum();
                        (total <= MAX_UNSYNCED).then_some(list)
                    }
                    (Some(list), None, _) if list.is_empty() => Some(list),
                    _ => None,
                };
            }
        }
    }

    /// The records a one-sync meta record with `room` bytes to spare would carry instead of a
    /// sync of the log: every record appended since the last sync and the proposed one.
    /// `None` if the proposal appends nothing or they do not fit: the commit must sync.
    pub fn carry(&self, room: usize) -> Option<Vec<CarriedRecord>> {
        let proposal = self.proposal.as_ref()?;
        let (at, bytes) = (proposal.record?, proposal.bytes.as_ref()?);
        let mut out = self.unsynced.clone()?;
        out.push(CarriedRecord {
            at,
            bytes: bytes.clone(),
        });
        let need: usize = out.iter().map(|c| CARRIED_OVERHEAD + c.bytes.len()).sum();
        (need <= room).then_some(out)
    }

    /// The commit of the proposal failed: the log stays as it was (a record it wrote lies past
    /// the end, to be overwritten).
    pub fn reject(&mut self) {
        self.proposal = None;
    }

    /// Makes the records written since the last call durable (the proposed one included).
    pub fn sync(&mut self) -> Result<()> {
        for segment in std::mem::take(&mut self.dirty) {
            let file = self.file(segment)?;
            file.sync_data().map_err(|source| Error::Io {
                path: self.segment_path(segment),
                source,
            })?;
        }
        // A new segment's name must be durable too (removals need not be: a removed segment
        // that comes back after a crash is dead, and removed at the next open).
        if std::mem::take(&mut self.created) {
            self.storage
                .sync_dir(&self.options.dir)
                .map_err(|source| Error::Io {
                    path: self.options.dir.clone(),
                    source,
                })?;
        }
        self.unsynced = Some(Vec::new());
        if let Some(p) = self.proposal.as_mut() {
            p.bytes = None;
            p.synced = true;
        }
        Ok(())
    }

    /// `durable` is the state of a durable meta record: deletes the segments wholly before
    /// its oldest record.
    pub fn delete_before(&mut self, durable: LogState) -> Result<()> {
        let first = if durable.count > 0 {
            durable.first.segment
        } else {
            durable.end.segment
        };
        let old: Vec<u32> = self.on_disk.range(..first).copied().collect();
        self.remove_segments(&old)
    }
}
