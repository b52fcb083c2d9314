//! `bmt replay-trace`: the trace vectors replay, tampered roots are caught, bad files reported.

mod common;

use common::*;
use serde_json::json;

#[test]
fn whole_traces_folder_replays_ok() {
    let out = bmt(["replay-trace".as_ref(), traces_dir().as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 16, "{text}");
    assert!(lines.iter().all(|l| l.ends_with(".json OK")), "{text}");
    // Sorted path order.
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    assert_eq!(stderr(&out), "16 files, 16 OK\n");
}

#[test]
fn reference_backend_gives_the_same_verdicts() {
    let out = bmt([
        "replay-trace".as_ref(),
        "--backend".as_ref(),
        "reference".as_ref(),
        traces_dir().as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let db = bmt(["replay-trace".as_ref(), traces_dir().as_os_str()]);
    assert_eq!(stdout(&out), stdout(&db));
}

#[test]
fn step_with_deletes_replays_ok() {
    // preimages/00000048 deletes two keys between pre and post.
    let file = traces_dir().join("preimages/00000048.json");
    let out = bmt(["replay-trace".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), format!("{} OK\n", file.display()));
}

#[test]
fn tampered_post_root_gives_mismatch_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc = read_json(&traces_dir().join("storage/00000097.json"));
    let real = doc["post_state"]["state_root"]
        .as_str()
        .unwrap()
        .to_string();
    let fake = tamper(&real);
    doc["post_state"]["state_root"] = json!(fake);
    let file = write_file(dir.path(), "step.json", doc.to_string());
    let out = bmt(["replay-trace".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "{} MISMATCH post_state expected {} got {}\n",
            file.display(),
            fake.trim_start_matches("0x"),
            real.trim_start_matches("0x")
        )
    );
    assert_eq!(stderr(&out), "1 files, 0 OK\n");
}

#[test]
fn tampered_pre_root_gives_mismatch_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc = read_json(&traces_dir().join("safrole/00000012.json"));
    let fake = tamper(doc["pre_state"]["state_root"].as_str().unwrap());
    doc["pre_state"]["state_root"] = json!(fake);
    write_file(dir.path(), "step.json", doc.to_string());
    let out = bmt(["replay-trace".as_ref(), dir.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains(" MISMATCH pre_state expected "));
}

#[test]
fn tampered_post_value_is_caught() {
    // Changing a post-state value without its root must make the replayed root differ.
    let dir = tempfile::tempdir().unwrap();
    let mut doc = read_json(&traces_dir().join("fallback/00000100.json"));
    doc["post_state"]["keyvals"][0]["value"] = json!("0x00");
    let file = write_file(dir.path(), "step.json", doc.to_string());
    let out = bmt(["replay-trace".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains(" MISMATCH post_state expected "));
}

#[test]
fn folder_with_bad_file_reports_it_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let good = traces_dir().join("fallback/00000001.json");
    std::fs::copy(&good, dir.path().join("sub/a.json")).unwrap();
    write_file(dir.path(), "b.json", "{ not json");
    write_file(dir.path(), "notes.txt", "ignored: not *.json");
    let out = bmt(["replay-trace".as_ref(), dir.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stdout(&out),
        format!("{} OK\n", dir.path().join("sub/a.json").display())
    );
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains("b.json"),
        "{err}"
    );
    assert_eq!(lines[1], "2 files, 1 OK");
}

#[test]
fn raw_state_without_root_is_malformed_for_replay() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "raw.json", r#"{"keyvals": []}"#);
    let out = bmt(["replay-trace".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("raw.json"));
    assert!(stderr(&out).contains("state_root"));
}
