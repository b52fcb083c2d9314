//! Micro-benchmarks of `bmt-core`: the reference root builder, node hashing, single proofs
//! and multiproofs.
//!
//! Run with `cargo bench -p bmt-bench --bench core`. All data is generated deterministically
//! (see `bmt_bench`) outside the timed loops.

use std::hint::black_box;
use std::time::Duration;

use bmt_bench::{DetRng, random_entries};
use bmt_core::{
    Blake2bValueHasher, Hash, Key, MultiProof, ReferenceTrie, hash_branch, root_from_sorted,
    root_from_unsorted,
};
use criterion::{Criterion, criterion_group, criterion_main};

const MILLION: usize = 1_000_000;
const PROOF_TRIE_KEYS: usize = 1 << 16;

fn reference_root(c: &mut Criterion) {
    let unsorted = random_entries(1, MILLION);
    let mut sorted = unsorted.clone();
    sorted.sort_by_key(|e| e.0);
    sorted.dedup_by_key(|e| e.0);
    assert_eq!(sorted.len(), MILLION, "random 31-byte keys are distinct");

    let mut group = c.benchmark_group("reference_root");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("sorted_1m", |b| {
        b.iter(|| root_from_sorted(black_box(&sorted).iter().map(|(k, v)| (k, v))).unwrap())
    });
    // The input is borrowed, so the loop times the leaf hashing, the sort and the build, but
    // no copying of the values.
    group.bench_function("unsorted_1m", |b| {
        b.iter(|| root_from_unsorted(black_box(&unsorted).iter().map(|(k, v)| (*k, v))))
    });
    group.finish();
}

fn node_hashing(c: &mut Criterion) {
    let mut rng = DetRng::new(2);
    let mut l = [0u8; 32];
    let mut r = [0u8; 32];
    rng.fill(&mut l);
    rng.fill(&mut r);
    let (l, r) = (Hash(l), Hash(r));
    c.bench_function("node/hash_branch", |b| {
        b.iter(|| hash_branch(black_box(&l), black_box(&r)))
    });
}

/// A 2^16-key trie, its root, and 1,000 of its keys.
fn proof_fixture() -> (ReferenceTrie, Hash, Vec<Key>) {
    let entries = random_entries(3, PROOF_TRIE_KEYS);
    let mut rng = DetRng::new(4);
    let keys = rng
        .distinct_indices(entries.len(), 1000)
        .into_iter()
        .map(|i| entries[i].0)
        .collect();
    let trie = ReferenceTrie::new(entries);
    let root = trie.root();
    (trie, root, keys)
}

fn proofs(c: &mut Criterion) {
    let (trie, root, keys) = proof_fixture();
    let mut group = c.benchmark_group("proof");
    let mut i = 0;
    group.bench_function("generate", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            trie.prove(black_box(&keys[i]))
        })
    });
    let proofs: Vec<_> = keys
        .iter()
        .take(100)
        .map(|k| (*k, trie.get(k).unwrap().to_vec(), trie.prove(k)))
        .collect();
    let mut i = 0;
    group.bench_function("verify", |b| {
        b.iter(|| {
            i = (i + 1) % proofs.len();
            let (key, value, proof) = &proofs[i];
            proof.verify(key, Some(value), black_box(&root)).unwrap()
        })
    });
    group.finish();
}

fn multiproofs(c: &mut Criterion) {
    let (trie, root, keys) = proof_fixture();
    let multi = trie.multiproof(&keys);
    let values: Vec<(Key, Vec<u8>)> = keys
        .iter()
        .map(|k| (*k, trie.get(k).unwrap().to_vec()))
        .collect();
    let mut group = c.benchmark_group("multiproof");
    // Checks the root and that each of the 1,000 keys holds its value.
    group.bench_function("verify_1000_of_65536", |b| {
        b.iter(|| {
            black_box(&multi)
                .verify_entries(
                    &root,
                    values.iter().map(|(k, v)| (k, Some(v.as_slice()))),
                    &Blake2bValueHasher,
                )
                .unwrap()
        })
    });
    let bytes = multi.encode();
    group.bench_function("encode_decode", |b| {
        b.iter(|| MultiProof::decode(&black_box(&multi).encode()).unwrap())
    });
    assert_eq!(MultiProof::decode(&bytes).unwrap(), multi);
    group.finish();
}

criterion_group!(benches, reference_root, node_hashing, proofs, multiproofs);
criterion_main!(benches);
