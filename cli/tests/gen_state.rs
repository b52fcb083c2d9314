//! `bmt gen-state`: deterministic output that `state-root` and `replay-trace` accept.

mod common;

use common::*;

fn gen_state(out: &std::path::Path, keys: &str, max_value: &str, seed: &str) {
    let res = bmt([
        "gen-state".as_ref(),
        "--keys".as_ref(),
        keys.as_ref(),
        "--max-value".as_ref(),
        max_value.as_ref(),
        "--seed".as_ref(),
        seed.as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(res.status.code(), Some(0), "{}", stderr(&res));
}

#[test]
fn generated_state_is_accepted_by_state_root() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    gen_state(&file, "300", "100", "42");
    let out = bmt(["state-root".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let root = read_json(&file)["state_root"].as_str().unwrap().to_string();
    assert_eq!(
        stdout(&out),
        format!("{} {} OK\n", file.display(), root.trim_start_matches("0x"))
    );
    let out = bmt(["replay-trace".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn generated_state_has_the_requested_shape() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    gen_state(&file, "500", "64", "1");
    let doc = read_json(&file);
    let keyvals = doc["keyvals"].as_array().unwrap();
    assert_eq!(keyvals.len(), 500);
    let keys: Vec<&str> = keyvals
        .iter()
        .map(|kv| kv["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.iter()
            .all(|k| k.starts_with("0x") && k.len() == 2 + 62)
    );
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "keys sorted, distinct"
    );
    let lens: Vec<usize> = keyvals
        .iter()
        .map(|kv| (kv["value"].as_str().unwrap().len() - 2) / 2)
        .collect();
    assert!(lens.iter().all(|&l| l <= 64));
    assert!(
        lens.contains(&0) || lens.iter().any(|&l| l < 4),
        "short values occur"
    );
    assert!(lens.iter().any(|&l| l > 32), "long (hashed) values occur");
}

#[test]
fn same_seed_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    gen_state(&a, "50", "40", "7");
    gen_state(&b, "50", "40", "7");
    gen_state(&c, "50", "40", "8");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
}

#[test]
fn empty_state_has_zero_root() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.json");
    gen_state(&file, "0", "10", "0");
    assert_eq!(
        read_json(&file)["state_root"].as_str().unwrap(),
        format!("0x{}", "0".repeat(64))
    );
}
