//! Sequences of API calls on an in-memory database, checked against a `BTreeMap` model and
//! the reference root: inserts, deletes, commits, rollbacks, reopens, reads at old roots,
//! proofs, write sessions and bad input. After every step the database agrees with the model.

#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use bmt::io::MemStorage;
use bmt::{Error, Hash, Key, Nomt, Options};
use bmt_core::ReferenceTrie;
use libfuzzer_sys::fuzz_target;

type State = BTreeMap<Key, Vec<u8>>;

const RETAINED: u32 = 3;

fn options(storage: &MemStorage) -> Options {
    Options::new("/db")
        .storage(Arc::new(storage.clone()))
        .rollback_retained(RETAINED)
        .rollback_in_memory(1, 1 << 16)
        .rollback_segment_size(16 * 1024)
        .elide_below(3)
        .max_value_size(1 << 16)
}

fn root_of(state: &State) -> Hash {
    ReferenceTrie::new(state.iter().map(|(k, v)| (*k, v.clone()))).root()
}

/// Keys from one byte: few distinct keys, sharing long prefixes.
fn key(b: u8) -> Key {
    let mut k = [0u8; 31];
    k[0] = b & 0xE0;
    k[30] = b & 0x1F;
    Key(k)
}

fuzz_target!(|data: &[u8]| {
    let storage = MemStorage::new();
    let mut db = Nomt::open(options(&storage)).expect("open");
    // Committed states, oldest first (the last is the current one), within the window.
    let mut history: Vec<State> = vec![State::new()];
    let mut window = 0u32;
    // Changes staged on the handle, not yet committed (`None`: a delete).
    let mut staged: BTreeMap<Key, Option<Vec<u8>>> = BTreeMap::new();
    let current = |history: &[State], staged: &BTreeMap<Key, Option<Vec<u8>>>| {
        let mut state = history.last().expect("never empty").clone();
        for (k, v) in staged {
            match v {
                Some(v) => state.insert(*k, v.clone()),
                None => state.remove(k),
            };
        }
        state
    };
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        match op % 9 {
            0 | 1 => {
                let len = match bytes.next().unwrap_or(0) {
                    l @ 0..=200 => l as usize % 40,
                    l => (l as usize - 200) * 1000,
                };
                let value = vec![arg; len];
                db.insert(key(arg), value.clone()).expect("insert");
                staged.insert(key(arg), Some(value));
            }
            2 => {
                db.delete(key(arg)).expect("delete");
                staged.insert(key(arg), None);
            }
            3 => {
                let done = db.commit().expect("commit");
                let next = current(&history, &staged);
                staged.clear();
                assert_eq!(done.root(), root_of(&next));
                history.push(next);
                window = (window + 1).min(RETAINED);
                if history.len() > RETAINED as usize + 1 {
                    history.remove(0);
                }
            }
            4 => {
                let n = 1 + u32::from(arg % 4);
                match db.rollback_n(n) {
                    Ok(done) => {
                        assert!(n <= window);
                        history.truncate(history.len() - n as usize);
                        window -= n;
                        // Staged changes stay staged, over the earlier state.
                        assert_eq!(done.root(), root_of(history.last().expect("never empty")));
                    }
                    Err(Error::RollbackWindow { .. }) => assert!(n > window),
                    Err(e) => panic!("rollback: {e}"),
                }
            }
            5 => {
                // Uncommitted changes are dropped by a reopen.
                db.close().expect("close");
                drop(db);
                db = Nomt::open(options(&storage)).expect("reopen");
                staged.clear();
                assert_eq!(db.rollback_window(), window);
            }
            6 => {
                let back = (arg as usize) % history.len().min(window as usize + 1);
                let state = &history[history.len() - 1 - back];
                let snapshot = db.begin_read_at(root_of(state)).expect("read at");
                let k = key(bytes.next().unwrap_or(0));
                assert_eq!(snapshot.get(k).expect("get").as_ref(), state.get(&k));
                let proof = snapshot.generate_proof(k).expect("proof");
                proof
                    .verify(&k, state.get(&k).map(|v| v.as_slice()), &root_of(state))
                    .expect("proof verifies");
            }
            7 if !staged.is_empty() => {
                let err = db.begin_write().map(|_| ()).unwrap_err();
                assert!(matches!(err, Error::WriterBusy(_)), "{err}");
            }
            7 => {
                let mut session = db.begin_write().expect("write session");
                let mut next = history.last().expect("never empty").clone();
                session
                    .insert(key(arg), vec![arg; 3])
                    .expect("session insert");
                next.insert(key(arg), vec![arg; 3]);
                let prepared = session.prepare().expect("prepare");
                assert_eq!(prepared.root(), root_of(&next));
                // Discarded: the database is unchanged.
                drop(prepared);
                assert_eq!(db.root(), root_of(history.last().expect("never empty")));
            }
            _ => {
                // Bad input: a value over the limit is refused and changes nothing.
                let err = db.insert(key(arg), vec![0; (1 << 16) + 1]).unwrap_err();
                assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
                assert!(db.insert(&[1u8; 5][..], vec![1]).is_err());
            }
        }
        let state = current(&history, &staged);
        for k in [key(arg), key(arg ^ 0x21)] {
            assert_eq!(db.get(k).expect("get").as_ref(), state.get(&k));
        }
    }
    let state = current(&history, &staged);
    db.commit().expect("final commit");
    assert_eq!(db.root(), root_of(&state));
    db.check(&mut |_| {}).expect("check");
});
