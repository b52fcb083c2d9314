//! The whole API against a model: commits, rollbacks, reopens, read sessions at old roots,
//! write sessions (prepared, discarded, kept as overlays), witnesses; and readers on other
//! threads that never see a mix of two commits.

use std::collections::BTreeMap;
use std::sync::Arc;

use bmt::io::MemStorage;
use bmt::{Error, Key, Nomt, Options, Witness};
use bmt_core::ReferenceTrie;
use proptest::prelude::*;

type State = BTreeMap<Key, Vec<u8>>;

fn root_of(state: &State) -> bmt::Hash {
    ReferenceTrie::new(state.iter().map(|(k, v)| (*k, v.clone()))).root()
}

fn clustered_key(base: [u8; 31], shared: usize, tail: [u8; 31]) -> Key {
    let mut k = Key(tail);
    for i in 0..shared {
        k = k.with_bit(i, Key(base).bit(i));
    }
    k
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, [u8; 31], Vec<u8>),
    Delete(usize),
    Read(usize),
}

#[derive(Debug, Clone)]
enum Step {
    /// Changes through the handle, then commit (and check the commit's witness).
    Commit(Vec<Op>),
    /// A write session: changes and reads, its intermediate root, then commit, discard, or
    /// keep as an overlay that a second session builds on before both are committed.
    Session(Vec<Op>, u8),
    Rollback(u32),
    ReadAt(u32),
    Reopen,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop_oneof![Just(0usize), Just(200), Just(246), 0usize..248], any::<[u8; 31]>(),
              proptest::collection::vec(any::<u8>(), 0..60))
            .prop_map(|(s, t, v)| Op::Put(s, t, v)),
        2 => any::<usize>().prop_map(Op::Delete),
        1 => any::<usize>().prop_map(Op::Read),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::collection::vec(arb_op(), 1..30).prop_map(Step::Commit),
        2 => (proptest::collection::vec(arb_op(), 1..20), 0u8..3).prop_map(|(o, m)| Step::Session(o, m)),
        2 => (1u32..4).prop_map(Step::Rollback),
        2 => (0u32..5).prop_map(Step::ReadAt),
        1 => Just(Step::Reopen),
    ]
}

/// Applies `ops` to `state`, returning the sorted writes and the reads' keys.
type Writes = Vec<(Key, Option<Vec<u8>>)>;

fn resolve(base: [u8; 31], state: &State, ops: &[Op]) -> (Writes, Vec<Key>) {
    let keys: Vec<Key> = state.keys().copied().collect();
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for op in ops {
        match op {
            Op::Put(s, t, v) => writes.push((clustered_key(base, *s, *t), Some(v.clone()))),
            Op::Delete(i) if !keys.is_empty() => writes.push((keys[i % keys.len()], None)),
            Op::Delete(_) => {}
            Op::Read(i) if !keys.is_empty() => reads.push(keys[i % keys.len()]),
            Op::Read(_) => {}
        }
    }
    (writes, reads)
}

fn apply(state: &State, writes: &[(Key, Option<Vec<u8>>)]) -> State {
    let mut next = state.clone();
    for (k, v) in writes {
        match v {
            Some(v) => {
                next.insert(*k, v.clone());
            }
            None => {
                next.remove(k);
            }
        }
    }
    next
}

fn check_witness(w: &Witness, prev: &State, next: &State) {
    w.verify().unwrap();
    assert_eq!(w.prev_root, root_of(prev));
    assert_eq!(w.root, root_of(next));
    let decoded = Witness::decode(&w.encode()).unwrap();
    assert_eq!(&decoded, w);
    // A witness claiming another result fails.
    let mut bad = w.clone();
    bad.root = root_of(prev);
    if bad.root != w.root {
        assert!(bad.verify().is_err());
    }
}

fn run(steps: Vec<Step>, base: [u8; 31], retained: u32) {
    let storage = Arc::new(MemStorage::new());
    let options = Options::new("/db")
        .storage(storage)
        .rollback_retained(retained)
        .rollback_segment_size(4096)
        .elide_below(4);
    let mut db = Nomt::open(options.clone()).unwrap();
    // Committed states, oldest first; the last is the current one.
    let mut history: Vec<State> = vec![State::new()];
    let mut window = 0u32;
    for step in steps {
        let current = history.last().unwrap().clone();
        match step {
            Step::Commit(ops) => {
                let (writes, _) = resolve(base, &current, &ops);
                for (k, v) in &writes {
                    match v {
                        Some(v) => db.insert(k, v).unwrap(),
                        None => db.delete(k).unwrap(),
                    }
                }
                let next = apply(&current, &writes);
                let done = db.commit().unwrap();
                assert_eq!(done.root(), root_of(&next));
                assert_eq!(done.prev_root(), root_of(&current));
                assert!(done.rollback_id().is_some());
                check_witness(&done.generate_witness().unwrap(), &current, &next);
                history.push(next);
                window = (window + 1).min(retained);
            }
            Step::Session(ops, mode) => {
                let (writes, reads) = resolve(base, &current, &ops);
                let mut s = db.begin_write_with_witness().unwrap();
                // The handle is busy meanwhile.
                assert!(matches!(
                    db.insert([1u8; 31], b"x"),
                    Err(Error::WriterBusy(_))
                ));
                for k in &reads {
                    assert_eq!(s.get(k).unwrap().as_ref(), current.get(k));
                }
                for (k, v) in &writes {
                    match v {
                        Some(v) => s.insert(k, v).unwrap(),
                        None => s.delete(k).unwrap(),
                    }
                }
                let next = apply(&current, &writes);
                assert_eq!(s.root().unwrap(), root_of(&next));
                let prepared = s.prepare().unwrap();
                assert_eq!(prepared.root(), root_of(&next));
                let w = prepared.witness().unwrap();
                check_witness(&w, &current, &next);
                for k in &reads {
                    assert!(w.reads.iter().any(|(r, _)| r == k));
                }
                match mode {
                    0 => {
                        let done = prepared.commit().unwrap();
                        assert_eq!(done.root(), root_of(&next));
                        // The finished session's witness has the session's reads too.
                        let fw = done.generate_witness().unwrap();
                        check_witness(&fw, &current, &next);
                        assert_eq!(fw, w);
                        history.push(next);
                        window = (window + 1).min(retained);
                    }
                    1 => {
                        prepared.rollback();
                        assert_eq!(db.root(), root_of(&current));
                    }
                    _ => {
                        let overlay = prepared.into_overlay();
                        let mut s2 = db
                            .begin_write_with_overlay(std::slice::from_ref(&overlay))
                            .unwrap();
                        // The second session sees the first one's changes.
                        for (k, _) in writes.iter().take(3) {
                            assert_eq!(s2.get(k).unwrap().as_ref(), next.get(k));
                        }
                        let extra = (clustered_key(base, 3, [0x5A; 31]), Some(vec![9u8; 40]));
                        s2.insert(extra.0, extra.1.as_ref().unwrap()).unwrap();
                        let after = apply(&next, std::slice::from_ref(&extra));
                        let p2 = s2.prepare().unwrap();
                        assert_eq!(p2.root(), root_of(&after));
                        assert_eq!(p2.prev_root(), root_of(&next));
                        // It cannot commit before its base is (unless the first session
                        // changed nothing).
                        if root_of(&next) != root_of(&current) {
                            assert!(matches!(p2.commit(), Err(Error::Stale { .. })));
                        } else {
                            p2.rollback();
                        }
                        let done = db.commit_overlay(&overlay).unwrap();
                        assert_eq!(db.root(), root_of(&next));
                        check_witness(&done.generate_witness().unwrap(), &current, &next);
                        // A session on a chain that does not start at the root is refused.
                        if root_of(&next) != root_of(&current) {
                            assert!(matches!(
                                db.begin_write_with_overlay(std::slice::from_ref(&overlay)),
                                Err(Error::InvalidOverlays(_))
                            ));
                        }
                        history.push(next);
                        window = (window + 1).min(retained);
                    }
                }
            }
            Step::Rollback(n) => {
                if n > window {
                    assert!(matches!(
                        db.rollback_n(n),
                        Err(Error::RollbackWindow { .. })
                    ));
                    assert_eq!(db.root(), root_of(&current));
                } else {
                    let done = db.rollback_n(n).unwrap();
                    history.truncate(history.len() - n as usize);
                    window -= n;
                    let back = history.last().unwrap();
                    assert_eq!(done.root(), root_of(back));
                    assert_eq!(db.root(), root_of(back));
                    // A rollback is a state transition too, with its witness.
                    check_witness(&done.generate_witness().unwrap(), &current, back);
                }
            }
            Step::ReadAt(k) => {
                if k <= window && (k as usize) < history.len() {
                    let old = &history[history.len() - 1 - k as usize];
                    let root = root_of(old);
                    let r = db.begin_read_at(root).unwrap();
                    assert_eq!(r.root(), root);
                    let reference = ReferenceTrie::new(old.iter().map(|(k, v)| (*k, v.clone())));
                    for key in old.keys().take(5).chain(current.keys().take(5)) {
                        assert_eq!(r.get(key).unwrap().as_ref(), old.get(key));
                        let p = r.generate_proof(key).unwrap();
                        assert_eq!(p, reference.prove(key));
                    }
                    let mut keys: Vec<Key> = old
                        .keys()
                        .take(5)
                        .chain(current.keys().take(5))
                        .copied()
                        .collect();
                    keys.push(clustered_key(base, 9, [0xC3; 31]));
                    let mp = r.generate_multiproof(&keys).unwrap();
                    keys.sort();
                    keys.dedup();
                    assert_eq!(mp, reference.multiproof(&keys));
                    mp.verify_entries(
                        &root,
                        keys.iter().map(|k| (k, old.get(k).map(|v| v.as_slice()))),
                        &bmt_core::Blake2bValueHasher,
                    )
                    .unwrap();
                } else if k > window && (k as usize) < history.len() {
                    let old = &history[history.len() - 1 - k as usize];
                    if root_of(old) != root_of(&current)
                        && !history[history.len() - 1 - window as usize..]
                            .iter()
                            .any(|s| root_of(s) == root_of(old))
                    {
                        assert!(matches!(
                            db.begin_read_at(root_of(old)),
                            Err(Error::UnknownRoot(_))
                        ));
                    }
                }
            }
            Step::Reopen => {
                db.close().unwrap();
                drop(db);
                db = Nomt::open(options.clone()).unwrap();
                assert_eq!(db.root(), root_of(&current));
                assert_eq!(db.rollback_window(), window);
            }
        }
        let now = history.last().unwrap();
        assert_eq!(db.root(), root_of(now));
        for (k, v) in now.iter().take(8) {
            assert_eq!(db.get(k).unwrap().as_ref(), Some(v));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn api_matches_model(
        steps in proptest::collection::vec(arb_step(), 1..25),
        base in any::<[u8; 31]>(),
        retained in prop_oneof![Just(3u32), Just(100)],
    ) {
        run(steps, base, retained);
    }
}

#[test]
fn readers_never_see_a_mix_of_two_commits() {
    // Each commit writes the same counter into every one of 64 keys; readers on other threads
    // take snapshots and check that all 64 agree and that the root matches.
    let db =
        Arc::new(Nomt::open(Options::new("/db").storage(Arc::new(MemStorage::new()))).unwrap());
    let keys: Vec<Key> = (0..64u8)
        .map(|i| {
            let mut k = [i.wrapping_mul(37); 31];
            k[30] = i;
            Key(k)
        })
        .collect();
    let state_for = |n: u64| -> State {
        keys.iter()
            .map(|k| (*k, n.to_le_bytes().to_vec()))
            .collect()
    };
    for k in &keys {
        db.insert(k, 0u64.to_le_bytes()).unwrap();
    }
    db.commit().unwrap();
    let roots: Arc<parking_lot::Mutex<BTreeMap<u64, bmt::Hash>>> = Default::default();
    roots.lock().insert(0, root_of(&state_for(0)));
    std::thread::scope(|s| {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for _ in 0..3 {
            let db = db.clone();
            let keys = keys.clone();
            let stop = stop.clone();
            let roots = roots.clone();
            s.spawn(move || {
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || seen < 10 {
                    let snap = db.begin_read().unwrap();
                    let first = snap.get(keys[0]).unwrap().unwrap();
                    for k in &keys {
                        assert_eq!(snap.get(k).unwrap().unwrap(), first, "a mixed snapshot");
                    }
                    let n = u64::from_le_bytes(first.try_into().unwrap());
                    if let Some(r) = roots.lock().get(&n) {
                        assert_eq!(snap.root(), *r);
                    }
                    seen += 1;
                }
            });
        }
        for n in 1..=40u64 {
            roots.lock().insert(n, root_of(&state_for(n)));
            for k in &keys {
                db.insert(k, n.to_le_bytes()).unwrap();
            }
            db.commit().unwrap();
            if n % 10 == 0 {
                db.rollback().unwrap();
                db.insert(keys[0], n.to_le_bytes()).unwrap();
                for k in &keys {
                    db.insert(k, n.to_le_bytes()).unwrap();
                }
                db.commit().unwrap();
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn rollback_survives_reopen_and_respects_the_window() {
    let storage = Arc::new(MemStorage::new());
    let options = Options::new("/db")
        .storage(storage)
        .rollback_retained(5)
        .rollback_segment_size(8192);
    let mut db = Nomt::open(options.clone()).unwrap();
    let mut roots = vec![db.root()];
    for round in 0..12u8 {
        for i in 0..50u8 {
            db.insert([i ^ round; 31], vec![round; 100]).unwrap();
        }
        roots.push(db.commit().unwrap().root());
        if round % 4 == 3 {
            db.close().unwrap();
            drop(db);
            db = Nomt::open(options.clone()).unwrap();
        }
    }
    assert_eq!(db.rollback_window(), 5);
    assert!(matches!(
        db.rollback_n(6),
        Err(Error::RollbackWindow {
            requested: 6,
            available: 5
        })
    ));
    assert_eq!(db.root(), roots[12]);
    db.rollback_n(2).unwrap();
    assert_eq!(db.root(), roots[10]);
    db.close().unwrap();
    drop(db);
    let db = Nomt::open(options).unwrap();
    assert_eq!(db.root(), roots[10]);
    assert_eq!(db.rollback_window(), 3);
    db.rollback().unwrap();
    assert_eq!(db.root(), roots[9]);
    let old = db.begin_read_at(roots[7]).unwrap();
    assert_eq!(old.root(), roots[7]);
    assert!(matches!(
        db.begin_read_at(roots[6]),
        Err(Error::UnknownRoot(_))
    ));
}

#[test]
fn metrics_count() {
    let db = Nomt::open(Options::new("/db").storage(Arc::new(MemStorage::new()))).unwrap();
    db.insert([1u8; 31], b"a").unwrap();
    db.get([1u8; 31]).unwrap();
    db.commit().unwrap();
    db.get([1u8; 31]).unwrap();
    let m = db.metrics();
    assert_eq!((m.writes(), m.reads(), m.commits()), (1, 2, 1));
    assert_eq!((m.overlay_hits(), m.store_reads()), (1, 1));
    assert_eq!(m.commit_latency().count(), 1);
    db.rollback().unwrap();
    assert_eq!(m.rollbacks(), 1);
    m.reset();
    assert_eq!((m.reads(), m.commits()), (0, 0));
}

/// The segment files of the log under `/db/rollback`.
fn segments(storage: &MemStorage) -> Vec<String> {
    use bmt::io::Storage;
    let mut names = storage
        .list_dir(std::path::Path::new("/db/rollback"))
        .unwrap();
    names.sort();
    names
}

#[test]
fn the_log_keeps_only_the_segments_it_uses() {
    for wal in [false, true] {
        the_log_keeps_only_the_segments_it_uses_with(wal);
    }
}

/// With the write-ahead log, commits it makes durable leave the log's old segments until the
/// next checkpoint (`sync` here): the meta record in force still counts records in them.
fn the_log_keeps_only_the_segments_it_uses_with(wal: bool) {
    let storage = Arc::new(MemStorage::new());
    // Each commit's delta (50 keys of 100-byte values) is about 6.8 KB: one segment each.
    let options = Options::new("/db")
        .storage(storage.clone())
        .rollback_retained(3)
        .rollback_segment_size(8192)
        .write_ahead_log(wal);
    let mut db = Nomt::open(options.clone()).unwrap();
    for round in 0..10u8 {
        for i in 0..50u8 {
            db.insert([i; 31], vec![round; 100]).unwrap();
        }
        db.commit().unwrap();
        if wal {
            db.sync().unwrap();
        }
        // Pruned segments go, across reopens too.
        assert!(segments(&storage).len() <= 4, "{:?}", segments(&storage));
        if round % 3 == 2 {
            db.close().unwrap();
            drop(db);
            db = Nomt::open(options.clone()).unwrap();
        }
    }
    assert_eq!(db.rollback_window(), 3);
    let root = db.root();
    db.close().unwrap();
    drop(db);

    // Commits with the log off leave it empty: its segments are removed when it is next on.
    let db = Nomt::open(options.clone().rollback(false)).unwrap();
    db.insert([1u8; 31], b"off").unwrap();
    let off_root = db.commit().unwrap().root();
    assert!(matches!(db.rollback(), Err(Error::RollbackDisabled)));
    db.close().unwrap();
    drop(db);
    let db = Nomt::open(options).unwrap();
    assert_eq!(db.root(), off_root);
    assert_eq!(db.rollback_window(), 0);
    assert!(segments(&storage).len() <= 1, "{:?}", segments(&storage));
    db.insert([1u8; 31], b"on").unwrap();
    db.commit().unwrap();
    db.rollback().unwrap();
    assert_eq!(db.root(), off_root);
    assert_ne!(off_root, root);
}
