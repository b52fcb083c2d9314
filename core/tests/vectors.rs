//! Every public JAM vector in `testdata/`, through the core.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bmt_core::{
    Hash, Key, LeafNode, MerkleProof, Node, ReferenceTrie, Terminal, decode_hex, root_from_sorted,
    root_from_unsorted,
};
use serde::Deserialize;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

fn read_json<T: for<'de> Deserialize<'de>>(rel: &str) -> T {
    let path = testdata(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[derive(Deserialize)]
struct TrieCase {
    input: BTreeMap<String, String>,
    output: String,
}

/// A trie-file case as (key, value) pairs, keys truncated to 31 bytes as that format requires.
fn trie_case(case: &TrieCase) -> (Vec<(Key, Vec<u8>)>, Hash) {
    let entries = case
        .input
        .iter()
        .map(|(k, v)| {
            (
                Key::truncating(&decode_hex(k).unwrap()).unwrap(),
                decode_hex(v).unwrap(),
            )
        })
        .collect();
    (entries, case.output.parse().unwrap())
}

fn check_trie_file(rel: &str) -> usize {
    let cases: Vec<TrieCase> = read_json(rel);
    assert!(!cases.is_empty());
    for (i, case) in cases.iter().enumerate() {
        let (entries, expected) = trie_case(case);
        assert_eq!(
            root_from_unsorted(entries.clone()),
            expected,
            "{rel} case {i}"
        );
        let reference = ReferenceTrie::new(entries);
        assert_eq!(
            reference.root(),
            expected,
            "{rel} case {i} (reference trie)"
        );
    }
    cases.len()
}

#[test]
fn w3f_trie_vectors_msb() {
    assert_eq!(check_trie_file("trie/w3f-trie-pr14-msb.json"), 11);
}

#[test]
fn jamduna_bpt_simple() {
    assert_eq!(check_trie_file("trie/jamduna-bpt-proof-simple.json"), 1);
}

#[test]
fn generated_edge_cases() {
    assert_eq!(check_trie_file("trie/generated-edge-cases.json"), 17);
}

#[test]
fn obsolete_lsb_vectors_match_only_the_empty_case() {
    let cases: Vec<TrieCase> = read_json("trie/obsolete/w3f-trie-master-lsb-gp0.3.json");
    assert!(cases.len() > 1);
    for (i, case) in cases.iter().enumerate() {
        let (entries, expected) = trie_case(case);
        let matches = root_from_unsorted(entries.clone()) == expected;
        assert_eq!(
            matches,
            entries.is_empty(),
            "obsolete case {i}: only the empty trie may match"
        );
    }
}

#[derive(Deserialize)]
struct ProofFileCase {
    description: String,
    state_root: String,
    keyvals: BTreeMap<String, String>,
    proofs: Vec<ProofEntry>,
}

#[derive(Deserialize)]
struct ProofEntry {
    key: String,
    value: Option<String>,
    depth: usize,
    siblings: Vec<String>,
    terminal: TerminalEntry,
}

#[derive(Deserialize)]
struct TerminalEntry {
    kind: String,
    node: Option<String>,
}

#[test]
fn generated_proofs() {
    let cases: Vec<ProofFileCase> = read_json("trie/generated-proofs.json");
    assert_eq!(cases.len(), 3);
    let mut proofs_checked = 0;
    for case in &cases {
        let root: Hash = case.state_root.parse().unwrap();
        let trie = ReferenceTrie::new(
            case.keyvals
                .iter()
                .map(|(k, v)| (k.parse::<Key>().unwrap(), decode_hex(v).unwrap())),
        );
        assert_eq!(trie.root(), root, "{}", case.description);
        for entry in &case.proofs {
            let key: Key = entry.key.parse().unwrap();
            let value = entry.value.as_deref().map(|v| decode_hex(v).unwrap());
            let siblings: Vec<Hash> = entry.siblings.iter().map(|s| s.parse().unwrap()).collect();
            assert_eq!(siblings.len(), entry.depth);
            let terminal = match entry.terminal.kind.as_str() {
                "empty" => Terminal::Empty,
                "leaf" => {
                    let node = decode_hex(entry.terminal.node.as_deref().unwrap()).unwrap();
                    let Node::Leaf(leaf) = Node::decode(&node).unwrap() else {
                        panic!("terminal is a branch")
                    };
                    if leaf.key == key {
                        // The file gives the key's own leaf: it must be L(k, v).
                        let v = value.as_deref().expect("own leaf means present");
                        assert_eq!(leaf, LeafNode::new(key, v, &bmt_core::Blake2bValueHasher));
                        Terminal::Included
                    } else {
                        Terminal::OtherLeaf(leaf)
                    }
                }
                other => panic!("unknown terminal {other}"),
            };
            // The given proof verifies...
            let given = MerkleProof::new(key, siblings, terminal).unwrap();
            given.verify(&key, value.as_deref(), &root).unwrap();
            // ...and survives an encoding round trip...
            assert_eq!(MerkleProof::decode(&given.encode()).unwrap(), given);
            // ...and ours is the same proof.
            let ours = trie.prove(&key);
            assert_eq!(ours, given, "{}: key {key}", case.description);
            assert_eq!(ours.depth(), entry.depth);
            // A multiproof of all the case's keys gives the same single proofs.
            proofs_checked += 1;
        }
        let keys: Vec<Key> = case.proofs.iter().map(|p| p.key.parse().unwrap()).collect();
        let multi = trie.multiproof(&keys);
        multi.verify(&root).unwrap();
        for (key, proof) in keys.iter().zip(multi.proofs_of(&keys).unwrap()) {
            assert_eq!(proof, trie.prove(key));
        }
    }
    assert_eq!(proofs_checked, 14 + 20 + 3);
}

#[derive(Deserialize)]
struct KeyVal {
    key: String,
    value: String,
}

#[derive(Deserialize)]
struct State {
    state_root: String,
    keyvals: Vec<KeyVal>,
}

#[derive(Deserialize)]
struct Step {
    pre_state: State,
    post_state: State,
}

#[derive(Deserialize)]
struct Genesis {
    state: State,
}

fn check_state(state: &State, what: &str) {
    let entries: Vec<(Key, Vec<u8>)> = state
        .keyvals
        .iter()
        .map(|kv| (kv.key.parse().unwrap(), decode_hex(&kv.value).unwrap()))
        .collect();
    let expected: Hash = state.state_root.parse().unwrap();
    assert_eq!(
        root_from_sorted(entries.iter().map(|(k, v)| (k, v))).unwrap(),
        expected,
        "{what}"
    );
}

#[test]
fn every_trace_root() {
    let mut files = 0;
    for set in ["fallback", "preimages", "safrole", "storage"] {
        let dir = testdata(&format!("traces/{set}"));
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for name in names {
            let rel = format!("traces/{set}/{name}");
            if name == "genesis.json" {
                let g: Genesis = read_json(&rel);
                check_state(&g.state, &rel);
            } else {
                let step: Step = read_json(&rel);
                check_state(&step.pre_state, &format!("{rel}:pre_state"));
                check_state(&step.post_state, &format!("{rel}:post_state"));
            }
            files += 1;
        }
    }
    assert_eq!(files, 16);
}
