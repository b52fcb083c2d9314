//! Decoders of what peers send: single proofs, multiproofs, witnesses and trie nodes. Any
//! input decodes to a value that encodes back to the same bytes (one encoding per value), or
//! to a typed error; whatever decodes can be verified, looked up and updated without a panic.

#![no_main]

use bmt_core::{Blake2bValueHasher, Key, MerkleProof, MultiProof, Node, ProofNode, Witness};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(proof) = MerkleProof::decode(bytes) {
                assert_eq!(proof.encode(), bytes, "two encodings of one proof");
                let key = *proof.key();
                let root = proof.compute_root(b"value", &Blake2bValueHasher);
                let _ = proof.verify(&key, Some(b"value"), &root);
                let _ = proof.verify(&key, None, &root);
            }
        }
        1 => {
            if let Ok(proof) = MultiProof::decode(bytes) {
                assert_eq!(proof.encode(), bytes, "two encodings of one multiproof");
                let root = proof.root();
                assert!(
                    proof.verify(&root).is_ok(),
                    "a multiproof fails its own root"
                );
                let mut keys: Vec<Key> = proof
                    .nodes()
                    .filter_map(|n| match n {
                        ProofNode::Leaf(leaf) => Some(leaf.key),
                        _ => None,
                    })
                    .take(8)
                    .collect();
                keys.push(Key([0x5A; 31]));
                for key in &keys {
                    let _ = proof.lookup(key);
                    let _ = proof.proof_of(key);
                }
                let updates = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (k, (i % 2 == 0).then_some(&b"new value"[..])));
                let _ = proof.apply_updates(updates, &Blake2bValueHasher);
            }
        }
        2 => {
            if let Ok(witness) = Witness::decode(bytes) {
                assert_eq!(witness.encode(), bytes, "two encodings of one witness");
                let _ = witness.verify();
            }
        }
        _ => {
            if let Ok(node) = Node::decode(bytes) {
                assert_eq!(&node.encode()[..], bytes, "two encodings of one node");
            }
        }
    }
});
