//! Corruption: a byte flipped anywhere in any file of the database (the data file's meta
//! slots, trie, flat-store, overflow, page-table and free-list pages, and every rollback log
//! segment). Every read then returns the right data or an [`Error::Corrupted`] naming that
//! file and a position at or before the flipped byte; never wrong data, never a panic.
//! `Nomt::check` reports every flip in a page the database uses, and a rollback through a
//! damaged log record either restores the exact earlier state or fails and changes nothing.
//!
//! `cargo test -p bmt --test corruption` flips one byte in every page of the data file and
//! every 997th byte of the log; `BMT_LOG_FLIP_STRIDE=1` flips every byte of the log. A last
//! test flips every byte of the write-ahead log's records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bmt::io::{MemStorage, Storage, StorageFile};
use bmt::{Error, Hash, Key, Nomt, Options};
use bmt_core::ReferenceTrie;

type State = BTreeMap<Key, Vec<u8>>;

const PAGE: u64 = 4096;
const KEYS: u64 = 3000;

fn options(storage: &MemStorage) -> Options {
    Options::new("/db")
        .storage(Arc::new(storage.clone()))
        .rollback(true)
        .rollback_segment_size(64 * 1024)
        // Force every rollback to read its records back from the segments.
        .rollback_in_memory(0, 0)
        // Small commits made durable in place, with one sync: the tests below damage their
        // pages. (The write-ahead log has its own test, at the end.)
        .write_ahead_log(false)
}

fn key(i: u64) -> Key {
    let mut k = [0u8; 31];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8] = (i % 5) as u8;
    Key(k)
}

/// Values of every storage class: embedded (≤ 32 bytes), hashed inline, and overflow pages.
fn value(i: u64, version: u64) -> Vec<u8> {
    let len = match (i + version) % 10 {
        0..=4 => (i % 33) as usize,
        5..=8 => 33 + (i % 300) as usize,
        _ => 5000 + (i % 9000) as usize,
    };
    (0..len)
        .map(|j| (i as usize * 7 + j + version as usize * 13) as u8)
        .collect()
}

fn root_of(state: &State) -> Hash {
    ReferenceTrie::new(state.iter().map(|(k, v)| (*k, v.clone()))).root()
}

/// Builds a database over several commits (inserts, updates, deletes) and returns the state
/// after each commit, oldest first.
fn build(storage: &MemStorage) -> Vec<State> {
    let db = Nomt::open(options(storage)).unwrap();
    let mut state = State::new();
    let mut history = Vec::new();
    for i in 0..KEYS {
        db.insert(key(i), value(i, 0)).unwrap();
        state.insert(key(i), value(i, 0));
    }
    db.commit().unwrap();
    history.push(state.clone());
    for version in 1..5u64 {
        for i in (version..KEYS).step_by(11) {
            if (i + version) % 4 == 0 {
                db.delete(key(i)).unwrap();
                state.remove(&key(i));
            } else {
                db.insert(key(i), value(i, version)).unwrap();
                state.insert(key(i), value(i, version));
            }
        }
        db.commit().unwrap();
        history.push(state.clone());
    }
    // A last commit of one update: small enough to be made durable with one sync, so that
    // its pages are listed in its meta record.
    db.insert(key(1), value(1, 9)).unwrap();
    state.insert(key(1), value(1, 9));
    db.commit().unwrap();
    history.push(state.clone());
    assert_eq!(db.root(), root_of(&state));
    db.close().unwrap();
    history
}

/// Asserts `err` is a corruption report naming `file` at or before `at`.
fn assert_names(err: &Error, file: &Path, at: u64, context: &str) {
    match err {
        Error::Corrupted { path, offset, .. } => {
            assert_eq!(path, file, "{context}: {err}");
            assert!(*offset <= at, "{context}: {err} (flipped byte at {at})");
        }
        other => panic!("{context}: expected a corruption error, got {other}"),
    }
}

/// Every key ever written reads as in `state`, or fails with an error naming the damage.
/// Returns the number of reads that failed.
fn read_all(
    read: &dyn Fn(Key) -> bmt::Result<Option<Vec<u8>>>,
    state: &State,
    file: &Path,
    at: u64,
    context: &str,
) -> u32 {
    let mut failed = 0;
    for i in 0..KEYS {
        match read(key(i)) {
            Ok(v) => assert_eq!(v.as_ref(), state.get(&key(i)), "{context}: key {i}"),
            Err(e) => {
                assert_names(&e, file, at, context);
                failed += 1;
            }
        }
    }
    failed
}

/// The sequence number in the header of page `page` (the commit that wrote it).
fn page_seq(storage: &MemStorage, file: &Path, page: u64) -> u64 {
    let mut head = [0u8; 24];
    storage
        .file(file)
        .unwrap()
        .read_exact_at(&mut head, page * PAGE)
        .unwrap();
    u64::from_le_bytes(head[16..24].try_into().unwrap())
}

/// Whether page `page` starts with a page header's magic.
fn has_page_magic(storage: &MemStorage, file: &Path, page: u64) -> bool {
    let mut magic = [0u8; 4];
    storage
        .file(file)
        .unwrap()
        .read_exact_at(&mut magic, page * PAGE)
        .unwrap();
    let mut first = [0u8; 4];
    storage
        .file(file)
        .unwrap()
        .read_exact_at(&mut first, 2 * PAGE)
        .unwrap();
    magic == first
}

fn flip(storage: &MemStorage, file: &Path, at: u64, mask: u8) {
    let f = storage.file(file).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ mask], at).unwrap();
}

fn files(storage: &MemStorage) -> (PathBuf, Vec<PathBuf>) {
    let log_dir = Path::new("/db/rollback");
    let mut segments: Vec<PathBuf> = storage
        .list_dir(log_dir)
        .unwrap()
        .into_iter()
        .map(|name| log_dir.join(name))
        .collect();
    segments.sort();
    (PathBuf::from("/db/data.bmt"), segments)
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn a_flipped_byte_in_the_data_file_is_caught_or_harmless() {
    let storage = MemStorage::new();
    let history = build(&storage);
    let last = history.last().unwrap();
    let previous = &history[history.len() - 2];
    let (data, _) = files(&storage);

    let report = Nomt::open(options(&storage))
        .unwrap()
        .check(&mut |_| {})
        .unwrap();
    let used_pages = report.file_pages - report.free_pages - 2;
    assert_eq!(
        used_pages,
        report.flat_pages
            + report.overflow_pages
            + report.table_pages
            + report.trie_pages
            + report.free_list_pages
    );

    let mut rng = Rng(0x5EED);
    let pages = storage.file(&data).unwrap().size().unwrap() / PAGE;
    let (mut caught_by_check, mut failed_opens, mut failed_reads) = (0, 0, 0);
    let mut fallbacks = 0;
    let last_seq = page_seq(&storage, &data, 0).max(page_seq(&storage, &data, 1));
    for page in 0..pages {
        let at = page * PAGE + rng.below(PAGE);
        let context = format!("data file page {page}, byte {at}");
        let damaged = storage.copy_after_crash();
        flip(&damaged, &data, at, 1 << rng.below(8));
        let db = match Nomt::open(options(&damaged)) {
            Ok(db) => db,
            Err(e) => {
                assert_names(&e, &data, at, &context);
                failed_opens += 1;
                caught_by_check += 1;
                continue;
            }
        };
        // A damaged meta slot leaves the other one: the commit before the last, whole. So
        // does a damaged page of the last commit when it was made durable with one sync (it
        // looks like a commit whose sync never returned), and open says so.
        let state = if db.root() == root_of(last) {
            assert_eq!(db.incomplete_commit_discarded(), None, "{context}");
            last
        } else {
            assert_eq!(
                db.root(),
                root_of(previous),
                "{context}: opened at an unknown root"
            );
            if page >= 2 {
                assert_eq!(
                    db.incomplete_commit_discarded(),
                    Some(last_seq),
                    "{context}"
                );
                // The page was written by the last commit: its header says so, or it is a
                // later page of an overflow extent (no header of its own).
                assert!(
                    page_seq(&storage, &data, page) == last_seq
                        || !has_page_magic(&storage, &data, page),
                    "{context}"
                );
                fallbacks += 1;
            }
            previous
        };
        failed_reads += read_all(&|k| db.get(k), state, &data, at, &context);
        for i in (0..KEYS).step_by(31) {
            match db.generate_proof(key(i)) {
                Ok(p) => p
                    .verify(
                        &key(i),
                        state.get(&key(i)).map(|v| v.as_slice()),
                        &db.root(),
                    )
                    .unwrap_or_else(|e| panic!("{context}: proof of key {i}: {e}")),
                Err(e) => assert_names(&e, &data, at, &context),
            }
        }
        match db.check(&mut |_| {}) {
            Ok(_) => {}
            Err(e) => {
                assert_names(&e, &data, at, &context);
                caught_by_check += 1;
            }
        }
    }
    println!(
        "{pages} pages flipped ({used_pages} in use): {failed_opens} refused at open, \
         {failed_reads} failed reads, {caught_by_check} caught by open or check, \
         {fallbacks} opened at the commit before"
    );
    // Every flip in a page in use is found by check, or (in a page of the last commit, made
    // durable with one sync) makes open go back to the commit before; flips in free pages
    // are harmless.
    assert!(
        caught_by_check + fallbacks >= used_pages,
        "check missed damaged pages"
    );
    assert!(fallbacks > 0, "no page of the one-sync commit was damaged");
}

#[test]
fn a_flipped_byte_in_the_rollback_log_is_caught_or_harmless() {
    let storage = MemStorage::new();
    let history = build(&storage);
    let (data, segments) = files(&storage);
    assert!(
        segments.len() >= 2,
        "the log should span segments: {segments:?}"
    );
    let _ = data;

    let stride: usize = std::env::var("BMT_LOG_FLIP_STRIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(997);
    let mut rng = Rng(0xB17);
    let (mut flips, mut caught_by_check, mut failed_rollbacks) = (0, 0, 0);
    let (mut fallbacks, mut repaired) = (0, 0);
    let last_seq = page_seq(&storage, &data, 0).max(page_seq(&storage, &data, 1));
    for segment in &segments {
        let len = storage.file(segment).unwrap().size().unwrap();
        // Every `stride`th byte, at a random bit.
        for at in (0..len).step_by(stride) {
            flips += 1;
            let context = format!("{} byte {at}", segment.display());
            let damaged = storage.copy_after_crash();
            let byte = |s: &MemStorage| {
                let mut b = [0u8];
                s.file(segment).unwrap().read_exact_at(&mut b, at).unwrap();
                b[0]
            };
            let original = byte(&damaged);
            flip(&damaged, segment, at, 1 << rng.below(8));
            let db = match Nomt::open(options(&damaged)) {
                Ok(db) => db,
                Err(e) => {
                    assert_names(&e, segment, at, &context);
                    caught_by_check += 1;
                    continue;
                }
            };
            // The last commit's record rides in its meta record too (it was made durable
            // with one sync): open puts it back.
            if byte(&damaged) == original {
                repaired += 1;
            }
            // Damage to a one-sync commit's record that the meta record does not carry looks
            // like a commit whose sync never returned: open goes back to the one before.
            let history = match db.incomplete_commit_discarded() {
                None => &history[..],
                Some(seq) => {
                    assert_eq!(seq, last_seq, "{context}");
                    fallbacks += 1;
                    &history[..history.len() - 1]
                }
            };
            let last = history.last().unwrap();
            assert_eq!(db.root(), root_of(last), "{context}");
            // The current state does not depend on the log.
            read_all(&|k| db.get(k), last, segment, 0, &context);
            if let Err(e) = db.check(&mut |_| {}) {
                assert_names(&e, segment, at, &context);
                caught_by_check += 1;
            }
            // Old snapshots and rollbacks read the log: exact, or an error and no change.
            let back = 1 + rng.below(history.len() as u64 - 1) as usize;
            let target = &history[history.len() - 1 - back];
            match db.begin_read_at(root_of(target)) {
                Ok(snapshot) => {
                    read_all(&|k| snapshot.get(k), target, segment, at, &context);
                }
                Err(e) => assert_names(&e, segment, at, &context),
            }
            match db.rollback_n(back as u32) {
                Ok(done) => {
                    assert_eq!(done.root(), root_of(target), "{context}");
                    read_all(&|k| db.get(k), target, segment, 0, &context);
                    // Damage in an older record, still in the window, is still reported.
                    if let Err(e) = db.check(&mut |_| {}) {
                        assert_names(&e, segment, at, &context);
                    }
                }
                Err(e) => {
                    assert_names(&e, segment, at, &context);
                    failed_rollbacks += 1;
                    assert_eq!(db.root(), root_of(last), "{context}: a failed rollback");
                    read_all(&|k| db.get(k), last, segment, 0, &context);
                }
            }
        }
    }
    println!(
        "{flips} log flips over {} segments: {caught_by_check} caught by open or check, \
         {failed_rollbacks} rollbacks refused, {fallbacks} opened at the commit before, \
         {repaired} repaired from the meta record",
        segments.len()
    );
    assert!(caught_by_check > 0 && failed_rollbacks > 0);
    assert!(
        repaired > 0,
        "the one-sync commit's carried log record was never damaged"
    );
}

/// Every byte of the write-ahead log's records flipped in turn, after a crash that left
/// small commits only there: open fails with `Error::Corrupted` naming `wal.bmt` (a damaged
/// record with a later one after it: an acknowledged commit lost otherwise), or, for a flip
/// in the last record (which then looks like a write the power cut), opens at the commit
/// before it, exactly. Never a wrong state, never a panic.
#[test]
fn a_flipped_byte_in_the_write_ahead_log_is_caught_or_drops_only_the_last_commit() {
    let storage = MemStorage::new();
    let opts = |s: &MemStorage| options(s).write_ahead_log(true);
    let db = Nomt::open(opts(&storage)).unwrap();
    let mut state = State::new();
    for i in 0..400 {
        state.insert(key(i), value(i, 0));
        db.insert(key(i), value(i, 0)).unwrap();
    }
    db.commit().unwrap();
    let mut history = vec![state.clone()];
    // Small commits (inline values only): each goes to the log. Their record lengths tell
    // where each record ends.
    let mut ends = Vec::new();
    let mut end = 0u64;
    for c in 1..8u64 {
        let mut len = 100;
        for i in (c * 10..c * 10 + c).map(|i| i % 400) {
            let v = vec![c as u8; (i % 60) as usize];
            len += 31 + 1 + 4 + v.len() as u64;
            state.insert(key(i), v.clone());
            db.insert(key(i), v).unwrap();
        }
        db.delete(key(399 - c)).unwrap();
        state.remove(&key(399 - c));
        len += 31 + 1;
        db.commit().unwrap();
        end += len;
        ends.push(end);
        history.push(state.clone());
    }
    let wal = PathBuf::from("/db/wal.bmt");
    let crashed = storage.copy_after_crash();
    drop(db);
    let last_start = ends[ends.len() - 2];
    let (mut caught, mut dropped_last) = (0, 0);
    for at in 0..end {
        let context = format!("log byte {at}");
        let damaged = crashed.copy_after_crash();
        flip(&damaged, &wal, at, 1 << (at % 8));
        match Nomt::open(opts(&damaged)) {
            Err(e) => {
                assert!(
                    at < last_start,
                    "{context}: the last record's damage failed open: {e}"
                );
                assert_names(&e, &wal, at, &context);
                caught += 1;
            }
            Ok(db) => {
                assert!(at >= last_start, "{context}: opened at {}", db.root());
                let before = &history[history.len() - 2];
                assert_eq!(db.root(), root_of(before), "{context}");
                for i in (0..400).step_by(7) {
                    assert_eq!(
                        db.get(key(i)).unwrap().as_ref(),
                        before.get(&key(i)),
                        "{context}"
                    );
                }
                dropped_last += 1;
            }
        }
    }
    assert_eq!(caught + dropped_last, end);
    // Undamaged, every commit is there.
    let db = Nomt::open(opts(&crashed)).unwrap();
    assert_eq!(db.root(), root_of(history.last().unwrap()));
}
