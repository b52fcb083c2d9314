//! Property tests of the core against the Gray Paper definition written out naively.

use std::collections::BTreeMap;

use bmt_core::{
    Blake2bValueHasher, Hash, Key, MerkleProof, MultiProof, MultiProofError, ReferenceTrie,
    Witness, hash_branch, hash_leaf, root_from_sorted, root_from_unsorted,
};
use proptest::prelude::*;

/// M(S, d) exactly as Appendix D states it.
fn naive_root(entries: &[(Key, Vec<u8>)], depth: usize) -> Hash {
    match entries.len() {
        0 => Hash::ZERO,
        1 => hash_leaf(&entries[0].0, &entries[0].1, &Blake2bValueHasher),
        _ => {
            let (l, r): (Vec<_>, Vec<_>) =
                entries.iter().cloned().partition(|(k, _)| !k.bit(depth));
            hash_branch(&naive_root(&l, depth + 1), &naive_root(&r, depth + 1))
        }
    }
}

/// Keys that share long prefixes with a common base: each key keeps the base's first
/// `shared` bits (0 to 247) and takes the rest from `tail`.
fn clustered_key(base: [u8; 31], shared: usize, tail: [u8; 31]) -> Key {
    let mut k = Key(tail);
    for i in 0..shared {
        k = k.with_bit(i, Key(base).bit(i));
    }
    k
}

fn arb_key() -> impl Strategy<Value = (usize, [u8; 31])> {
    (
        prop_oneof![
            Just(0usize),
            Just(8),
            Just(100),
            Just(200),
            Just(240),
            Just(246),
            Just(247),
            0usize..248
        ],
        any::<[u8; 31]>(),
    )
}

fn arb_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..=33),
        proptest::collection::vec(any::<u8>(), 0..=80),
    ]
}

/// A map of up to `max` entries, keys clustered around one random base.
fn arb_state(max: usize) -> impl Strategy<Value = BTreeMap<Key, Vec<u8>>> {
    (
        any::<[u8; 31]>(),
        proptest::collection::vec((arb_key(), arb_value()), 0..max),
    )
        .prop_map(|(base, items)| {
            items
                .into_iter()
                .map(|((shared, tail), v)| (clustered_key(base, shared, tail), v))
                .collect()
        })
}

fn sorted(map: &BTreeMap<Key, Vec<u8>>) -> Vec<(Key, Vec<u8>)> {
    map.iter().map(|(k, v)| (*k, v.clone())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn root_matches_definition_in_any_order(state in arb_state(40), seed in any::<u64>()) {
        let entries = sorted(&state);
        let expected = naive_root(&entries, 0);
        prop_assert_eq!(root_from_sorted(entries.iter().map(|(k, v)| (k, v))).unwrap(), expected);
        let mut shuffled = entries.clone();
        // A deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(root_from_unsorted(shuffled.clone()), expected);
        prop_assert_eq!(ReferenceTrie::new(shuffled).root(), expected);
    }

    #[test]
    fn proofs_verify_for_present_and_absent_keys(
        state in arb_state(30),
        probes in proptest::collection::vec(arb_key(), 1..6),
        base in any::<[u8; 31]>(),
    ) {
        let trie = ReferenceTrie::new(sorted(&state));
        let root = trie.root();
        let mut keys: Vec<Key> = state.keys().copied().collect();
        keys.extend(probes.iter().map(|(s, t)| clustered_key(base, *s, *t)));
        for key in &keys {
            let proof = trie.prove(key);
            let value = trie.get(key);
            proof.verify(key, value, &root).unwrap();
            prop_assert_eq!(proof.is_inclusion(), value.is_some());
            // The wrong claim fails.
            match value {
                Some(v) => {
                    prop_assert!(proof.verify(key, None, &root).is_err());
                    let mut other = v.to_vec();
                    other.push(1);
                    prop_assert!(proof.verify(key, Some(&other), &root).is_err());
                }
                None => prop_assert!(proof.verify(key, Some(b"x"), &root).is_err()),
            }
            prop_assert_eq!(&MerkleProof::decode(&proof.encode()).unwrap(), &proof);
        }
        // One multiproof for all of them gives the same answers and the same single proofs.
        let multi = trie.multiproof(&keys);
        multi
            .verify_entries(&root, keys.iter().map(|k| (k, trie.get(k))), &Blake2bValueHasher)
            .unwrap();
        prop_assert_eq!(&MultiProof::decode(&multi.encode()).unwrap(), &multi);
        for (key, proof) in keys.iter().zip(multi.proofs_of(&keys).unwrap()) {
            prop_assert_eq!(proof, trie.prove(key));
        }
    }

    #[test]
    fn any_flipped_bit_in_a_proof_is_caught(
        state in arb_state(20),
        probe in arb_key(),
        base in any::<[u8; 31]>(),
        flip_byte in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let trie = ReferenceTrie::new(sorted(&state));
        let root = trie.root();
        let key = if state.is_empty() || probe.0 % 2 == 0 {
            clustered_key(base, probe.0, probe.1)
        } else {
            *state.keys().nth(probe.1[0] as usize % state.len()).unwrap()
        };
        let value = trie.get(&key);
        let bytes = trie.prove(&key).encode();
        // Every single-bit flip...
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 0x80 >> (i % 8);
            if let Ok(p) = MerkleProof::decode(&bad) {
                prop_assert!(p.verify(&key, value, &root).is_err(), "bit {} accepted", i);
            }
        }
        // ...and a random byte change.
        let mut bad = bytes.clone();
        bad[flip_byte.index(bytes.len())] ^= xor;
        if let Ok(p) = MerkleProof::decode(&bad) {
            prop_assert!(p.verify(&key, value, &root).is_err());
        }
        // Truncations and extensions never decode.
        for n in 0..bytes.len() {
            prop_assert!(MerkleProof::decode(&bytes[..n]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(MerkleProof::decode(&longer).is_err());
    }

    #[test]
    fn any_flipped_bit_in_a_multiproof_is_caught(
        state in arb_state(24),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..5),
    ) {
        prop_assume!(!state.is_empty());
        let trie = ReferenceTrie::new(sorted(&state));
        let root = trie.root();
        let all: Vec<Key> = state.keys().copied().collect();
        let keys: Vec<Key> = picks.iter().map(|i| all[i.index(all.len())]).collect();
        let bytes = trie.multiproof(&keys).encode();
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 0x80 >> (i % 8);
            if let Ok(p) = MultiProof::decode(&bad) {
                let ok = p.verify_entries(
                    &root,
                    keys.iter().map(|k| (k, trie.get(k))),
                    &Blake2bValueHasher,
                );
                prop_assert!(ok.is_err(), "bit {} accepted", i);
            }
        }
    }

    /// A multiproof plus writes and deletes gives the root of the updated state, including
    /// deletes that collapse subtries and inserts that split leaves.
    #[test]
    fn stateless_updates_match_the_reference(
        state in arb_state(30),
        base in any::<[u8; 31]>(),
        inserts in proptest::collection::vec((arb_key(), arb_value()), 0..6),
        deletes in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        reads in proptest::collection::vec(arb_key(), 0..3),
    ) {
        let trie = ReferenceTrie::new(sorted(&state));
        let present: Vec<Key> = state.keys().copied().collect();
        let mut updates: Vec<(Key, Option<Vec<u8>>)> = Vec::new();
        if !present.is_empty() {
            for i in &deletes {
                updates.push((present[i.index(present.len())], None));
            }
        }
        for ((s, t), v) in &inserts {
            updates.push((clustered_key(base, *s, *t), Some(v.clone())));
        }
        let read_keys: Vec<Key> = reads.iter().map(|(s, t)| clustered_key(base, *s, *t)).collect();
        let mut after = state.clone();
        for (k, v) in &updates {
            match v {
                Some(v) => { after.insert(*k, v.clone()); }
                None => { after.remove(k); }
            }
        }
        let expected = naive_root(&sorted(&after), 0);

        let proof = trie.multiproof_for_updates(&read_keys, &updates);
        proof.verify(&trie.root()).unwrap();
        let bytes = proof.encode();
        let decoded = MultiProof::decode(&bytes).unwrap();
        let new_root = decoded
            .apply_updates(updates.iter().map(|(k, v)| (k, v.as_deref())), &Blake2bValueHasher)
            .unwrap();
        prop_assert_eq!(new_root, expected);

        // Without expansion, deletes may need more of the trie, and say so; they never give
        // a wrong root.
        let plain = trie.multiproof(&updates.iter().map(|(k, _)| *k).collect::<Vec<_>>());
        match plain.apply_updates(updates.iter().map(|(k, v)| (k, v.as_deref())), &Blake2bValueHasher) {
            Ok(root) => prop_assert_eq!(root, expected),
            Err(MultiProofError::InsufficientProof(p)) => prop_assert!(!p.is_empty()),
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }

    #[test]
    fn insert_then_delete_restores_the_root(
        state in arb_state(30),
        base in any::<[u8; 31]>(),
        extra in proptest::collection::vec((arb_key(), arb_value()), 1..6),
    ) {
        let before = ReferenceTrie::new(sorted(&state));
        let new: BTreeMap<Key, Vec<u8>> = extra
            .iter()
            .map(|((s, t), v)| (clustered_key(base, *s, *t), v.clone()))
            .filter(|(k, _)| !state.contains_key(k))
            .collect();
        let inserts: Vec<(Key, Option<Vec<u8>>)> =
            new.iter().map(|(k, v)| (*k, Some(v.clone()))).collect();
        let deletes: Vec<(Key, Option<Vec<u8>>)> = new.keys().map(|k| (*k, None)).collect();
        let mut grown = state.clone();
        grown.extend(new.clone());
        let grown = ReferenceTrie::new(sorted(&grown));
        // Inserting into the old trie gives the grown root...
        let p = before.multiproof_for_updates(&[], &inserts);
        let mid = p.apply_updates(inserts.iter().map(|(k, v)| (k, v.as_deref())), &Blake2bValueHasher).unwrap();
        prop_assert_eq!(mid, grown.root());
        // ...and deleting them from the grown trie gives the old root back.
        let p = grown.multiproof_for_updates(&[], &deletes);
        let back = p.apply_updates(deletes.iter().map(|(k, v)| (k, v.as_deref())), &Blake2bValueHasher).unwrap();
        prop_assert_eq!(back, before.root());
    }

    /// A witness of reads and writes verifies; its encoding round-trips; a changed read,
    /// write, root or byte is caught.
    #[test]
    fn witnesses_verify_and_tampering_is_caught(
        state in arb_state(30),
        base in any::<[u8; 31]>(),
        reads in proptest::collection::vec(arb_key(), 0..4),
        inserts in proptest::collection::vec((arb_key(), arb_value()), 0..5),
        deletes in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        flip in any::<prop::sample::Index>(),
    ) {
        let trie = ReferenceTrie::new(sorted(&state));
        let present: Vec<Key> = state.keys().copied().collect();
        let mut read_keys: Vec<Key> = reads.iter().map(|(s, t)| clustered_key(base, *s, *t)).collect();
        read_keys.extend(present.iter().take(2));
        let mut writes: Vec<(Key, Option<Vec<u8>>)> = inserts
            .iter()
            .map(|((s, t), v)| (clustered_key(base, *s, *t), Some(v.clone())))
            .collect();
        if !present.is_empty() {
            writes.extend(deletes.iter().map(|i| (present[i.index(present.len())], None)));
        }
        prop_assume!(!read_keys.is_empty() || !writes.is_empty());
        let w = trie.witness(&read_keys, &writes);
        w.verify().unwrap();
        let bytes = w.encode();
        prop_assert_eq!(&Witness::decode(&bytes).unwrap(), &w);
        // A wrong claimed root fails.
        let mut bad = w.clone();
        bad.root = Hash([7; 32]);
        prop_assert!(bad.verify().is_err());
        // A wrong read value fails.
        if let Some((_, v)) = w.reads.first() {
            let mut bad = w.clone();
            bad.reads[0].1 = match v { Some(_) => None, None => Some(vec![1]) };
            prop_assert!(bad.verify().is_err());
        }
        // A changed write gives another root.
        if !w.writes.is_empty() {
            let mut bad = w.clone();
            bad.writes[0].1 = Some(vec![0xEE; 7]);
            if bad.writes[0].1 != w.writes[0].1 {
                prop_assert!(bad.verify().is_err());
            }
        }
        // A flipped byte in the roots or in the proof fails to decode or to verify. (A flip
        // in a key or value may give another self-consistent witness, of another read or
        // write: the verifier compares those with its own execution.)
        let proof_len = w.proof.encode().len();
        let roots = 5..69;
        let proof = bytes.len() - proof_len..bytes.len();
        for range in [roots, proof] {
            let at = range.start + flip.index(range.len());
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x20;
            if let Ok(d) = Witness::decode(&flipped) {
                prop_assert!(d.verify().is_err(), "byte {} accepted", at);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = MerkleProof::decode(&bytes);
        let _ = MultiProof::decode(&bytes);
        let _ = bmt_core::Node::decode(&bytes);
        let _ = Witness::decode(&bytes);
    }
}

#[test]
fn deepest_pair_proofs() {
    // Two keys differing only in bit 247: 248 branches, leaves at depth 248.
    let a = Key([0; 31]);
    let b = Key([0; 31]).with_bit(247, true);
    let trie = ReferenceTrie::new([(a, vec![1]), (b, vec![2])]);
    let p = trie.prove(&a);
    assert_eq!(p.depth(), 248);
    p.verify(&a, Some(&[1]), &trie.root()).unwrap();
    assert_eq!(MerkleProof::decode(&p.encode()).unwrap(), p);
    // Deleting one pulls the other all the way up: the root becomes its leaf hash.
    let updates = [(a, None)];
    let mp = trie.multiproof_for_updates(&[], &updates);
    let root = mp
        .apply_updates(
            updates
                .iter()
                .map(|(k, v): &(Key, Option<Vec<u8>>)| (k, v.as_deref())),
            &Blake2bValueHasher,
        )
        .unwrap();
    assert_eq!(root, hash_leaf(&b, &[2], &Blake2bValueHasher));
}
