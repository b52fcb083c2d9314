//! Preloading at open (`Options::preload`): a data file that fits in the cache is read into
//! it, so that reads after open do not go to the file; a file larger than the cache is left
//! alone; and commits and reads that run while the file is being read see exactly the
//! committed state (held against the model and the reference root).

mod common;
mod wrapped;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bmt::io::{MemStorage, StorageFile};
use bmt::{Key, Nomt, Options};
use common::{Rng, State, root_of};
use wrapped::{Hooks, WrappedStorage};

fn options(storage: &MemStorage) -> Options {
    Options::new("/db").storage(Arc::new(storage.clone()))
}

fn key(i: u64) -> Key {
    let mut k = [0u8; 31];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    Key(k)
}

fn value(i: u64, round: u64) -> Vec<u8> {
    format!("value {i} of round {round}").into_bytes()
}

/// A database of `n` keys, committed in a few batches, closed.
fn build(storage: &MemStorage, n: u64) -> State {
    let db = Nomt::open(options(storage).preload(false)).unwrap();
    let mut state = State::new();
    for batch in (0..n).collect::<Vec<_>>().chunks(5_000) {
        for &i in batch {
            db.insert(key(i), value(i, 0)).unwrap();
            state.insert(key(i), value(i, 0));
        }
        db.commit().unwrap();
    }
    db.close().unwrap();
    state
}

#[test]
fn a_preloaded_handle_reads_without_going_to_the_file() {
    let storage = MemStorage::new();
    let state = build(&storage, 20_000);

    let db = Nomt::open(options(&storage)).unwrap();
    db.wait_for_preload();
    let before = db.io_stats();
    assert!(before.pages_preloaded > 100, "{before:?}");
    for (k, v) in &state {
        assert_eq!(db.get(*k).unwrap().as_ref(), Some(v));
    }
    let after = db.io_stats();
    assert_eq!(
        after.page_cache_misses, before.page_cache_misses,
        "{after:?}"
    );
    assert!(after.page_cache_hits > before.page_cache_hits);
    db.check(&mut |_| {}).unwrap();
    db.close().unwrap();

    // Without the preload, the same reads go to the file.
    let db = Nomt::open(options(&storage).preload(false)).unwrap();
    db.wait_for_preload();
    for (k, v) in &state {
        assert_eq!(db.get(*k).unwrap().as_ref(), Some(v));
    }
    let stats = db.io_stats();
    assert_eq!(stats.pages_preloaded, 0);
    assert!(stats.page_cache_misses > 100, "{stats:?}");
}

#[test]
fn a_file_larger_than_the_cache_is_not_read() {
    let storage = MemStorage::new();
    let state = build(&storage, 20_000);
    let db = Nomt::open(options(&storage).page_cache_size(256 << 10)).unwrap();
    db.wait_for_preload();
    assert_eq!(db.io_stats().pages_preloaded, 0);
    let (k, v) = state.iter().next().unwrap();
    assert_eq!(db.get(*k).unwrap().as_ref(), Some(v));
}

/// Small commits (made durable by the write-ahead log, whose pages stay in memory and may
/// reuse free pages), large ones (written in place), deletes and a reader, all while the
/// preload runs: every read and root must be the model's, the checker must pass, and the
/// state must survive a reopen.
#[test]
fn commits_and_reads_during_the_preload_see_the_committed_state() {
    let storage = MemStorage::new();
    let n = 40_000;
    let mut state = build(&storage, n);
    let mut rng = Rng(7);
    for round in 1..=6u64 {
        // A cache about the file's size: it fits, and the commits' new pages then evict
        // others. (That a page held back by the log and evicted is not preloaded from its
        // old bytes is tested on the pager, where the timing is not left to chance.)
        let file = storage.file(Path::new("/db/data.bmt")).unwrap();
        let cache = file.size().unwrap();
        let db = Arc::new(Nomt::open(options(&storage).page_cache_size(cache)).unwrap());
        assert_eq!(db.root(), root_of(&state), "round {round}: opened");
        // A reader of the state as opened, alongside.
        let opened = state.clone();
        // The session is taken here, before any commit: taken on the thread, it could see
        // a later state when the machine is loaded.
        let session = db.begin_read().unwrap();
        let reader = {
            std::thread::spawn(move || {
                let mut rng = Rng(round);
                for _ in 0..3_000 {
                    let k = key(rng.below(n + 1_000));
                    assert_eq!(session.get(k).unwrap().as_ref(), opened.get(&k));
                }
            })
        };
        for c in 0..60u64 {
            // Every tenth commit is large enough to be written in place.
            let changes = if c % 10 == 9 { 600 } else { 1 + rng.below(8) };
            for _ in 0..changes {
                let i = rng.below(n + 1_000);
                if rng.below(4) == 0 {
                    db.delete(key(i)).unwrap();
                    state.remove(&key(i));
                } else {
                    db.insert(key(i), value(i, round * 100 + c)).unwrap();
                    state.insert(key(i), value(i, round * 100 + c));
                }
            }
            db.commit().unwrap();
            let k = key(rng.below(n + 1_000));
            assert_eq!(db.get(k).unwrap().as_ref(), state.get(&k), "round {round}");
        }
        reader.join().unwrap();
        db.wait_for_preload();
        assert_eq!(db.root(), root_of(&state), "round {round}");
        for (i, (k, v)) in state.iter().enumerate() {
            if i % 7 == 0 {
                assert_eq!(db.get(*k).unwrap().as_ref(), Some(v), "round {round}");
            }
        }
        db.check(&mut |_| {}).unwrap();
        db.close().unwrap();
    }
    let db = Nomt::open(options(&storage).preload(false)).unwrap();
    assert_eq!(db.root(), root_of(&state));
    db.check(&mut |_| {}).unwrap();
}

/// Fails reads longer than 64 KiB (only the preload reads that much at once in a state
/// without large values) while `fail` is set.
#[derive(Debug)]
struct FailingLongReads {
    fail: Arc<AtomicBool>,
}

impl Hooks for FailingLongReads {
    fn before_read(&self, len: usize) -> io::Result<()> {
        if len > 64 << 10 && self.fail.load(Ordering::Relaxed) {
            return Err(io::Error::other("injected read failure"));
        }
        Ok(())
    }
}

/// A failed preload read stops the preload but is not the handle's failure: the pages it
/// reads may be free ones that nothing else reads. Reads and commits go on, and a later
/// open preloads again.
#[test]
fn a_failed_preload_read_stops_the_preload_and_loses_nothing() {
    let mem = MemStorage::new();
    let mut state = build(&mem, 20_000);
    let fail = Arc::new(AtomicBool::new(true));
    let hooks: Arc<dyn Hooks> = Arc::new(FailingLongReads { fail: fail.clone() });
    // The data file only (the write-ahead log is read in long reads at open).
    let storage = WrappedStorage::new(mem, move |path| {
        path.ends_with("data.bmt").then(|| hooks.clone())
    });
    let options = Options::new("/db").storage(Arc::new(storage));
    let db = Nomt::open(options.clone()).unwrap();
    db.wait_for_preload();
    let stats = db.io_stats();
    assert_eq!(stats.preload_read_errors, 1, "{stats:?}");
    assert_eq!(stats.pages_preloaded, 0, "{stats:?}");
    for (k, v) in state.iter().step_by(97) {
        assert_eq!(db.get(*k).unwrap().as_ref(), Some(v));
    }
    for i in 0..300 {
        db.insert(key(i), value(i, 1)).unwrap();
        state.insert(key(i), value(i, 1));
    }
    db.commit().unwrap();
    assert_eq!(db.root(), root_of(&state));
    db.close().unwrap();

    fail.store(false, Ordering::Relaxed);
    let db = Nomt::open(options).unwrap();
    db.wait_for_preload();
    let stats = db.io_stats();
    assert!(stats.pages_preloaded > 100, "{stats:?}");
    assert_eq!(stats.preload_read_errors, 0);
    assert_eq!(db.root(), root_of(&state));
    for (k, v) in state.iter().step_by(97) {
        assert_eq!(db.get(*k).unwrap().as_ref(), Some(v));
    }
    db.check(&mut |_| {}).unwrap();
}
