//! `bmt bench` runs its children and reports every figure.

mod common;

use common::*;

#[test]
fn bench_reports_json_for_each_workload() {
    let dir = tempfile::tempdir().unwrap();
    for workload in ["randw", "randr", "randrw", "transfer"] {
        let out = bmt([
            "bench".as_ref(),
            "-w".as_ref(),
            workload.as_ref(),
            "-c".as_ref(),
            "10".as_ref(),
            "-s".as_ref(),
            "100".as_ref(),
            "--commits".as_ref(),
            "3".as_ref(),
            "--json".as_ref(),
            "--path".as_ref(),
            dir.path().as_os_str(),
        ]);
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
        let m: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(m["commits"], 3);
        assert!(m["ops_per_s"].as_f64().unwrap() > 0.0);
        assert!(m["disk_mib"].as_f64().unwrap() > 0.0);
        let reads = m["read_p50_us"].as_f64().is_some();
        assert_eq!(reads, workload != "randw", "{workload}");
    }
}

#[test]
fn bench_table_without_nomt_is_refused_for_nomt() {
    if cfg!(feature = "nomt") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = bmt([
        "bench".as_ref(),
        "--backend".as_ref(),
        "nomt".as_ref(),
        "-c".as_ref(),
        "8".as_ref(),
        "--commits".as_ref(),
        "1".as_ref(),
        "--path".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--features nomt"), "{}", stderr(&out));
}
