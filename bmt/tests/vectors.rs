//! The public JAM vectors through the database: every trie case, and every trace step
//! (pre-state, then the block's difference to the post-state).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bmt::io::MemStorage;
use bmt::{Key, Nomt, Options};
use bmt_core::{Hash, decode_hex};
use serde_json::Value;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fresh(elide_below: u32) -> Nomt {
    Nomt::open(
        Options::new("/db")
            .storage(Arc::new(MemStorage::new()))
            .elide_below(elide_below),
    )
    .unwrap()
}

#[test]
fn trie_vectors_through_the_database() {
    let mut cases = 0;
    for file in [
        "trie/w3f-trie-pr14-msb.json",
        "trie/jamduna-bpt-proof-simple.json",
        "trie/generated-edge-cases.json",
    ] {
        for case in json(&testdata(file)).as_array().unwrap() {
            let expected: Hash = case["output"].as_str().unwrap().parse().unwrap();
            // Stored pages everywhere (2) and the default elision (20).
            for elide in [2, 20] {
                let db = fresh(elide);
                for (k, v) in case["input"].as_object().unwrap() {
                    let key = Key::truncating(&decode_hex(k).unwrap()).unwrap();
                    db.insert(key, decode_hex(v.as_str().unwrap()).unwrap())
                        .unwrap();
                }
                assert_eq!(db.commit().unwrap().root(), expected, "{file}");
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 11 + 1 + 17);
}

fn state(v: &Value) -> (BTreeMap<Key, Vec<u8>>, Hash) {
    let map = v["keyvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            (
                kv["key"].as_str().unwrap().parse().unwrap(),
                decode_hex(kv["value"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    (map, v["state_root"].as_str().unwrap().parse().unwrap())
}

#[test]
fn trace_steps_through_the_database() {
    let mut steps = 0;
    for set in ["fallback", "preimages", "safrole", "storage"] {
        for entry in std::fs::read_dir(testdata(&format!("traces/{set}"))).unwrap() {
            let path = entry.unwrap().path();
            let doc = json(&path);
            if doc.get("pre_state").is_none() {
                continue;
            }
            for elide in [2, 20] {
                let db = fresh(elide);
                let (pre, pre_root) = state(&doc["pre_state"]);
                for (k, v) in &pre {
                    db.insert(k, v).unwrap();
                }
                assert_eq!(db.commit().unwrap().root(), pre_root, "{path:?} pre");
                let (post, post_root) = state(&doc["post_state"]);
                for k in pre.keys().filter(|k| !post.contains_key(k)) {
                    db.delete(k).unwrap();
                }
                for (k, v) in post.iter().filter(|(k, v)| pre.get(k) != Some(v)) {
                    db.insert(k, v).unwrap();
                }
                assert_eq!(db.commit().unwrap().root(), post_root, "{path:?} post");
                for k in post.keys().take(20) {
                    db.generate_proof(k)
                        .unwrap()
                        .verify(k, Some(&post[k]), &post_root)
                        .unwrap();
                }
            }
            steps += 1;
        }
    }
    assert_eq!(steps, 12);
}
