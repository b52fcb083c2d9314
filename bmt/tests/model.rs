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

/// The expected key count that, with the 1 MiB cache of [`run`] and the threshold
/// `elide_below`, gives the trie a top page of `top_levels` levels (1 to 6; see
/// `Shape::top_levels_for`): pages start at depths 0, `top_levels`, `top_levels + 6`, ...
fn expected_keys_for_top(top_levels: u32, elide_below: u32) -> u64 {
    u64::from((32 * elide_below).min(256)) << top_levels
}

fn run(
    batches: Vec<Vec<Op>>,
    base: [u8; 31],
    elide_below: u32,
    top_levels: u32,
    reopen_every: usize,
) {
    let storage = Arc::new(MemStorage::new());
    let options = Options::new("/db")
        .storage(storage.clone())
        .elide_below(elide_below)
        .page_cache_size(1 << 20)
        .expected_keys(expected_keys_for_top(top_levels, elide_below));
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
        // The full check (every page, the trie against the flat store, the free space).
        let report = db.check(&mut |_| {}).unwrap();
        assert_eq!(u32::from(report.trie_top_levels), top_levels);
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
        // Batches of up to 150 operations: commits of 64 changes or more take the parallel
        // paths (split walks and classification, subtries updated side by side).
        batches in proptest::collection::vec(proptest::collection::vec(arb_op(), 0..150), 1..8),
        base in any::<[u8; 31]>(),
        elide in prop_oneof![Just(2u32), Just(4), Just(20)],
        top_levels in 1u32..=6,
    ) {
        run(batches, base, elide, top_levels, 3);
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
    // Commits of 2,000 changes look up their trie paths in two halves; with a threshold of
    // 2 the halves share stored pages on several layers (a few commits: it is slow).
    run(batches[..4].to_vec(), [0; 31], 2, 6, 2);
    run(batches.clone(), [0; 31], 20, 6, 4);
    run(batches, [0; 31], 20, 3, 4);
}

#[test]
fn parallel_subtries_that_collapse() {
    // 3,000 keys over the whole key space, then one batch deletes every key under the first
    // 6-bit prefix but one, and every key under the second: subtries below the top page turn
    // into a single leaf and into nothing, in a batch large enough to be updated in parallel.
    let mut x = 99u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut keys = Vec::new();
    for i in 0..3000u64 {
        let mut t = [0u8; 31];
        for b in t.iter_mut() {
            *b = next() as u8;
        }
        // A third of the keys under the prefixes 000000 and 000001.
        if i % 3 == 0 {
            t[0] &= 0x07;
        }
        keys.push(t);
    }
    let load: Vec<Op> = keys.iter().map(|t| Op::Put(0, *t, vec![1; 8])).collect();
    let mut sorted: Vec<[u8; 31]> = keys.clone();
    sorted.sort();
    sorted.dedup();
    let in_first: Vec<&[u8; 31]> = sorted.iter().filter(|t| t[0] >> 2 == 0).collect();
    let in_second: Vec<&[u8; 31]> = sorted.iter().filter(|t| t[0] >> 2 == 1).collect();
    assert!(in_first.len() > 300 && in_second.len() > 300);
    let mut batch: Vec<Op> = in_first[1..]
        .iter()
        .map(|t| Op::DeleteRandom(0, **t))
        .collect();
    batch.extend(in_second.iter().map(|t| Op::DeleteRandom(0, **t)));
    // Some unrelated updates elsewhere in the same batch.
    batch.extend(
        sorted
            .iter()
            .filter(|t| t[0] >> 2 > 1)
            .take(50)
            .map(|t| Op::Put(0, *t, vec![2; 40])),
    );
    for elide in [2, 20] {
        for top_levels in [3, 6] {
            run(
                vec![load.clone(), batch.clone()],
                [0; 31],
                elide,
                top_levels,
                0,
            );
        }
    }
}

/// 3,000 keys over the whole key space (so that the top trie page and pages below it are
/// stored), from a small xorshift generator.
fn spread_keys(seed: u64) -> Vec<[u8; 31]> {
    let mut x = seed;
    (0..3000)
        .map(|_| {
            let mut t = [0u8; 31];
            for b in t.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            t
        })
        .collect()
}

#[test]
fn parallel_commit_that_removes_the_top_page() {
    // A batch large enough to update the subtries below the top page in parallel that leaves
    // fewer keys than the threshold: the top page goes, and every stored page below it with
    // it, each freed once (reopening after each commit reads the free list back).
    let load: Vec<Op> = spread_keys(7)
        .iter()
        .map(|t| Op::Put(0, *t, vec![1; 8]))
        .collect();
    for (elide, keep) in [(2u32, 1usize), (20, 5)] {
        let mut shrink: Vec<Op> = (0..3000 - keep).map(|_| Op::DeleteExisting(0)).collect();
        shrink.push(Op::Put(0, [9; 31], vec![3; 8]));
        let after = vec![Op::Put(0, [10; 31], vec![4; 8]), Op::DeleteExisting(0)];
        for top_levels in [3, 6] {
            let batches = vec![load.clone(), shrink.clone(), after.clone()];
            run(batches, [0; 31], elide, top_levels, 1);
        }
    }
}

#[test]
fn parallel_update_with_a_top_page_of_three_levels() {
    // With a top page of 3 levels, the 8 subtries below it are updated in parallel, each with
    // hundreds of changes. Here: 12,000 keys, then a batch of about 3,000 updates, inserts and
    // deletes all over, and one that empties the first eighth of the key space but five keys
    // (with a threshold of 20 its page of layer 1 goes; with 2 it stays).
    let mut x = 5u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut tail = move || {
        let mut t = [0u8; 31];
        for b in t.iter_mut() {
            *b = next() as u8;
        }
        t
    };
    let keys: Vec<[u8; 31]> = (0..12_000).map(|_| tail()).collect();
    let load: Vec<Op> = keys.iter().map(|t| Op::Put(0, *t, vec![1; 8])).collect();
    let mut mixed: Vec<Op> = keys
        .iter()
        .step_by(5)
        .map(|t| Op::Put(0, *t, vec![2; 40]))
        .collect();
    // (New keys outside the first eighth of the key space, emptied below.)
    mixed.extend((0..600).map(|_| {
        let mut t = tail();
        t[0] |= 0x20;
        Op::Put(0, t, vec![3; 8])
    }));
    mixed.extend((0..600).map(|i| Op::DeleteExisting(i * 13)));
    let mut first_eighth: Vec<Op> = keys
        .iter()
        .filter(|t| t[0] >> 5 == 0)
        .skip(5)
        .map(|t| Op::DeleteRandom(0, *t))
        .collect();
    assert!(first_eighth.len() > 1000);
    first_eighth.extend(
        keys.iter()
            .step_by(7)
            .filter(|t| t[0] >> 5 != 0)
            .map(|t| Op::Put(0, *t, vec![4; 8])),
    );
    for elide in [2u32, 20] {
        let batches = vec![load.clone(), mixed.clone(), first_eighth.clone()];
        run(batches, [0; 31], elide, 3, 2);
    }
}

#[test]
fn rollback_of_a_bulk_load_to_an_empty_state() {
    // The rollback of a load is a large commit back below the threshold (here to nothing).
    for elide in [2u32, 20] {
        let storage = Arc::new(MemStorage::new());
        let options = Options::new("/db")
            .storage(storage.clone())
            .elide_below(elide)
            .page_cache_size(1 << 20)
            .expected_keys(expected_keys_for_top(3, elide))
            .rollback(true);
        let db = Nomt::open(options.clone()).unwrap();
        for t in spread_keys(11) {
            db.insert(Key(t), [5u8; 8]).unwrap();
        }
        let loaded = db.commit().unwrap();
        assert_ne!(loaded.root(), bmt::Hash::ZERO);
        let back = db.rollback().unwrap();
        assert_eq!(back.root(), bmt::Hash::ZERO);
        assert_eq!(db.key_count(), 0);
        db.check(&mut |_| {}).unwrap();
        db.close().unwrap();
        drop(db);
        let db = Nomt::open(options).unwrap();
        assert_eq!(db.root(), bmt::Hash::ZERO);
        db.check(&mut |_| {}).unwrap();
        db.insert(Key([1; 31]), b"again").unwrap();
        db.commit().unwrap();
        db.check(&mut |_| {}).unwrap();
    }
}
