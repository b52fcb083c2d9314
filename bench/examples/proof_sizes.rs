//! How much a multiproof saves over separate single-key proofs.
//!
//! Builds a [`ReferenceTrie`] of 2^20 random keys with 32-byte values (fixed seed), then for
//! 1,000 present keys, 1,000 absent keys and a 500/500 mix prints the total encoded size of
//! the 1,000 single [`MerkleProof`]s, the encoded size of one [`MultiProof`] of the same keys,
//! and their ratio.
//!
//! Run with `cargo run --release -p bmt-bench --example proof_sizes`.
//!
//! [`ReferenceTrie::prove`] rehashes the whole trie for each key, so the single proofs are
//! taken from the multiproof with [`MultiProof::proofs_of`] (they are the same proofs; a few
//! are checked against `prove`).

use std::time::Instant;

use bmt_bench::{DetRng, random_entries};
use bmt_core::{Key, MerkleProof, MultiProof, ReferenceTrie};

const TRIE_KEYS: usize = 1 << 20;
const PROBES: usize = 1000;

fn main() {
    let started = Instant::now();
    let entries = random_entries(20, TRIE_KEYS);
    let mut rng = DetRng::new(21);
    let present: Vec<Key> = rng
        .distinct_indices(entries.len(), PROBES)
        .into_iter()
        .map(|i| entries[i].0)
        .collect();
    let trie = ReferenceTrie::new(entries);
    assert_eq!(trie.len(), TRIE_KEYS, "random 31-byte keys are distinct");
    let root = trie.root();
    let mut absent = Vec::with_capacity(PROBES);
    while absent.len() < PROBES {
        let k = rng.key();
        if trie.get(&k).is_none() && !absent.contains(&k) {
            absent.push(k);
        }
    }
    let mixed: Vec<Key> = present[..PROBES / 2]
        .iter()
        .chain(&absent[..PROBES / 2])
        .copied()
        .collect();
    eprintln!(
        "built a trie of {} keys (root {root}) in {:.2?}",
        trie.len(),
        started.elapsed()
    );

    println!(
        "trie: 2^20 = {} random 31-byte keys, 32-byte values; {PROBES} keys per row",
        trie.len()
    );
    println!();
    println!(
        "| keys | single proofs, total bytes | bytes per single proof | mean depth | multiproof bytes | multiproof nodes | single / multi |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, keys) in [
        ("1,000 present", &present),
        ("1,000 absent", &absent),
        ("500 present + 500 absent", &mixed),
    ] {
        let multi = trie.multiproof(keys);
        multi
            .verify(&root)
            .expect("the multiproof leads to the root");
        let multi_bytes = multi.encode();
        assert_eq!(MultiProof::decode(&multi_bytes).unwrap(), multi);

        let singles = multi.proofs_of(keys).expect("every key is covered");
        let mut single_total = 0usize;
        let mut depth_total = 0usize;
        for (key, proof) in keys.iter().zip(&singles) {
            proof
                .verify(key, trie.get(key), &root)
                .expect("each single proof verifies");
            let bytes = proof.encode();
            assert_eq!(&MerkleProof::decode(&bytes).unwrap(), proof);
            single_total += bytes.len();
            depth_total += proof.depth();
        }
        // `prove` is O(n) per key: spot-check a few against the multiproof's proofs.
        for (key, proof) in keys.iter().zip(&singles).step_by(PROBES / 3) {
            assert_eq!(&trie.prove(key), proof, "proofs_of agrees with prove");
        }

        println!(
            "| {name} | {single_total} | {:.1} | {:.2} | {} | {} | {:.2} |",
            single_total as f64 / keys.len() as f64,
            depth_total as f64 / keys.len() as f64,
            multi_bytes.len(),
            multi.len(),
            single_total as f64 / multi_bytes.len() as f64,
        );
    }
    eprintln!("done in {:.2?}", started.elapsed());
}
