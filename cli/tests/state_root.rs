//! `bmt state-root`: roots of the trace vectors, output format, mismatches and malformed input.

mod common;

use common::*;
use serde_json::json;

/// 31-byte key, `0x` hex.
fn key(byte: u8) -> String {
    format!("0x{}", hex::encode([byte; 31]))
}

#[test]
fn every_trace_file_matches_its_roots() {
    let files = json_files(&traces_dir());
    assert_eq!(files.len(), 16);
    let out =
        bmt(std::iter::once("state-root".as_ref()).chain(files.iter().map(|f| f.as_os_str())));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    // 12 steps with two states each, 4 genesis files with one.
    assert_eq!(lines.len(), 12 * 2 + 4, "{text}");
    assert!(lines.iter().all(|l| l.ends_with(" OK")), "{text}");
    assert!(stderr(&out).is_empty());
}

#[test]
fn step_prints_pre_and_post_lines_in_exact_format() {
    let file = traces_dir().join("fallback/00000001.json");
    let doc = read_json(&file);
    let pre_root = doc["pre_state"]["state_root"].as_str().unwrap();
    let post_root = doc["post_state"]["state_root"].as_str().unwrap();
    let out = bmt(["state-root".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(0));
    let name = file.display();
    assert_eq!(
        stdout(&out),
        format!(
            "{name}:pre_state {} OK\n{name}:post_state {} OK\n",
            pre_root.strip_prefix("0x").unwrap(),
            post_root.strip_prefix("0x").unwrap()
        )
    );
    // The pre-state root of this step, as given in the file.
    assert!(stdout(&out).starts_with(&format!(
        "{name}:pre_state bafd5b0b2668fef3611d9b856cb879483a4bc3c0428dd523cb95d2021c320029 OK\n"
    )));
}

#[test]
fn genesis_prints_one_state_line() {
    let file = traces_dir().join("storage/genesis.json");
    let root = read_json(&file)["state"]["state_root"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x")
        .to_string();
    let out = bmt(["state-root".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        format!("{}:state {root} OK\n", file.display())
    );
}

#[test]
fn raw_state_without_root_prints_bare_root() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write_file(dir.path(), "empty.json", r#"{"keyvals": []}"#);
    let out = bmt(["state-root".as_ref(), empty.as_os_str()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        format!("{} {}\n", empty.display(), "0".repeat(64))
    );

    // Hex without `0x` is accepted too, and a 32-byte key with a zero last byte is the same
    // key as its 31-byte form.
    let k31 = key(7);
    let k32 = format!("{}00", k31.trim_start_matches("0x"));
    let a = write_file(
        dir.path(),
        "a.json",
        json!({"keyvals": [{"key": k31, "value": "0xabcd"}]}).to_string(),
    );
    let b = write_file(
        dir.path(),
        "b.json",
        json!({"keyvals": [{"key": k32, "value": "abcd"}]}).to_string(),
    );
    let out = bmt(["state-root".as_ref(), a.as_os_str(), b.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let roots: Vec<&str> = text
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(roots.len(), 2);
    assert_eq!(roots[0], roots[1]);
    assert_eq!(roots[0].len(), 64);
}

#[test]
fn tampered_root_gives_mismatch_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc = read_json(&traces_dir().join("fallback/00000001.json"));
    let real = doc["pre_state"]["state_root"].as_str().unwrap().to_string();
    let fake = tamper(&real);
    doc["pre_state"]["state_root"] = json!(fake);
    let file = write_file(dir.path(), "tampered.json", doc.to_string());
    let out = bmt(["state-root".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{}:pre_state {} MISMATCH expected {}",
            file.display(),
            real.trim_start_matches("0x"),
            fake.trim_start_matches("0x")
        )
    );
    assert!(lines[1].ends_with(" OK"));
}

/// Runs state-root on a malformed file, next to a good one: exit 2, one stderr line naming the
/// bad file and containing `cue`, and the good file still checked.
fn assert_malformed(name: &str, contents: &str, cue: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_file(dir.path(), name, contents);
    let good = traces_dir().join("fallback/genesis.json");
    let out = bmt(["state-root".as_ref(), bad.as_os_str(), good.as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{name}: {err}");
    assert!(err.contains(&bad.display().to_string()), "{name}: {err}");
    assert!(err.contains(cue), "{name}: expected {cue:?} in {err}");
    let text = stdout(&out);
    assert!(!text.contains(name), "{name}: {text}");
    assert!(
        text.contains("genesis.json:state") && text.ends_with(" OK\n"),
        "{text}"
    );
}

#[test]
fn malformed_bad_hex_value() {
    let doc = json!({"keyvals": [{"key": key(1), "value": "0x12zz"}]});
    assert_malformed("bad-hex.json", &doc.to_string(), "keyvals[0].value");
}

#[test]
fn malformed_bad_hex_root() {
    let doc = json!({"state_root": "0x1234", "keyvals": []});
    assert_malformed("bad-root.json", &doc.to_string(), "state_root");
}

#[test]
fn malformed_30_byte_key() {
    let doc =
        json!({"state": {"keyvals": [{"key": format!("0x{}", "ab".repeat(30)), "value": "0x"}]}});
    assert_malformed("short-key.json", &doc.to_string(), "got 30 bytes");
}

#[test]
fn malformed_32_byte_key_with_nonzero_last_byte() {
    let doc = json!({
        "pre_state": {"keyvals": []},
        "post_state": {"keyvals": [{"key": format!("0x{}", "ab".repeat(32)), "value": "0x"}]},
    });
    assert_malformed(
        "long-key.json",
        &doc.to_string(),
        "post_state.keyvals[0].key",
    );
    assert_malformed(
        "long-key.json",
        &doc.to_string(),
        "must end with a zero byte",
    );
}

#[test]
fn malformed_missing_keyvals() {
    assert_malformed(
        "no-keyvals.json",
        r#"{"state_root": null, "header": {}}"#,
        "keyvals",
    );
    assert_malformed(
        "no-inner-keyvals.json",
        r#"{"state": {"state_root": null}}"#,
        "keyvals",
    );
}

#[test]
fn malformed_not_json() {
    assert_malformed("not-json.json", "this is not json", "not a JSON state file");
    assert_malformed(
        "truncated.json",
        r#"{"keyvals": [{"key": "#,
        "not a JSON state file",
    );
}

#[test]
fn malformed_duplicate_key() {
    let doc = json!({"keyvals": [
        {"key": key(2), "value": "0x01"},
        {"key": key(1), "value": "0x"},
        {"key": key(2), "value": "0x02"},
    ]});
    assert_malformed("dup.json", &doc.to_string(), "duplicate key");
}

#[test]
fn missing_file_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let out = bmt(["state-root".as_ref(), missing.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nope.json"));
}

#[test]
fn unknown_fields_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let doc = json!({"extra": [1, {"a": null}], "keyvals": [{"key": key(3), "value": "0x", "note": "x"}]});
    let file = write_file(dir.path(), "extra.json", doc.to_string());
    let out = bmt(["state-root".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
