//! The engine against a model: after every commit, the root equals the reference root of the
//! model's contents, every read equals the model, and proofs from disk verify.

use std::collections::BTreeMap;
use std::sync::Arc;

use bmt::io::MemStorage;
use bmt::{Key, Nomt, Options};
use bmt_core::ReferenceTrie;
use proptest::prelude::*;

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
    /// Delete the n-th key of the model (or nothing if empty).
    DeleteExisting(usize),
    DeleteRandom(usize, [u8; 31]),
}

fn arb_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..=40),
        2 => proptest::collection::vec(any::<u8>(), 33..=1100),
        1 => (1500usize..100_000).prop_map(|n| vec![(n % 251) as u8; n]),
    ]
}

fn arb_shared() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(8),
        Just(100),
        Just(240),
        Just(247),
        0usize..248
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (arb_shared(), any::<[u8; 31]>(), arb_value()).prop_map(|(s, t, v)| Op::Put(s, t, v)),
        3 => any::<usize>().prop_map(Op::DeleteExisting),
        1 => (arb_shared(), any::<[u8; 31]>()).prop_map(|(s, t)| Op::DeleteRandom(s, t)),
    ]
}

fn check(db: &Nomt, model: &BTreeMap<Key, Vec<u8>>, probes: &[Key]) {
    let reference = ReferenceTrie::new(model.iter().map(|(k, v)| (*k, v.clone())));
    assert_eq!(
        db.root(),
        reference.root(),
        "root differs from the reference"
    );
    assert_eq!(db.key_count(), model.len() as u64);
    for (k, v) in model.iter().take(40) {
        assert_eq!(db.get(k).unwrap().as_deref(), Some(&v[..]));
    }
    for k in model.keys().take(10).chain(probes) {
        let proof = db.generate_proof(k).unwrap();
        proof
            .verify(k, model.get(k).map(|v| &v[..]), &db.root())
            .unwrap();
        assert_eq!(proof, reference.prove(k));
    }
}

fn run(batches: Vec<Vec<Op>>, base: [u8; 31], elide_below: u32, reopen_every: usize) {
    let storage = Arc::new(MemStorage::new());
    let options = Options::new("/db")
        .storage(storage.clone())
        .elide_below(elide_below)
        .page_cache_size(1 << 20);
    let mut db = Nomt::open(options.clone()).unwrap();
    let mut model: BTreeMap<Key, Vec<u8>> = BTreeMap::new();
    for (n, batch) in batches.into_iter().enumerate() {
        let mut probes = Vec::new();
        for op in batch {
            match op {
                Op::Put(s, t, v) => {
                    let k = clustered_key(base, s, t);
                    db.insert(k, &v).unwrap();
                    model.insert(k, v);
                }
                Op::DeleteExisting(i) => {
                    if !model.is_empty() {
                        let k = *model.keys().nth(i % model.len()).unwrap();
                        db.delete(k).unwrap();
                        model.remove(&k);
                        probes.push(k);
                    }
                }
                Op::DeleteRandom(s, t) => {
                    let k = clustered_key(base, s, t);
                    db.delete(k).unwrap();
                    model.remove(&k);
                    probes.push(k);
                }
            }
        }
        let prev = db.root();
        let done = db.commit().unwrap();
        assert_eq!(done.prev_root(), prev);
        assert_eq!(done.root(), db.root());
        check(&db, &model, &probes);
        if reopen_every > 0 && n % reopen_every == reopen_every - 1 {
            db.close().unwrap();
            drop(db);
            db = Nomt::open(options.clone()).unwrap();
            check(&db, &model, &probes);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(
        batches in proptest::collection::vec(proptest::collection::vec(arb_op(), 0..60), 1..8),
        base in any::<[u8; 31]>(),
        elide in prop_oneof![Just(2u32), Just(4), Just(20)],
    ) {
        run(batches, base, elide, 3);
    }
}

#[test]
fn many_keys_many_commits() {
    // Enough keys for stored pages on several layers, with deletes that shrink them again.
    let mut batches = Vec::new();
    let mut x = 1u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..12 {
        let mut batch = Vec::new();
        for _ in 0..2000 {
            let mut t = [0u8; 31];
            for b in t.iter_mut() {
                *b = next() as u8;
            }
            if round >= 6 && next() % 3 != 0 {
                batch.push(Op::DeleteExisting(next() as usize));
            } else {
                batch.push(Op::Put(0, t, vec![next() as u8; (next() % 60) as usize]));
            }
        }
        batches.push(batch);
    }
    run(batches, [0; 31], 20, 4);
}
