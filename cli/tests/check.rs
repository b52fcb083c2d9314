//! `bmt check DIR`: OK with the root on a sound database, CORRUPTED naming the file and
//! position on a damaged one (data file or rollback log), an error on a missing one.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bmt::{Key, Nomt, Options};
use common::*;

fn key(i: u64) -> Key {
    let mut k = [0u8; 31];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    Key(k)
}

/// A database of 3,000 keys over three commits; returns its root in hex.
fn create(dir: &Path) -> String {
    let db = Nomt::open(Options::new(dir)).unwrap();
    for round in 0..3u64 {
        for i in (round..3000).step_by(1 + round as usize) {
            db.insert(key(i), vec![(i + round) as u8; (i % 100) as usize])
                .unwrap();
        }
        db.commit().unwrap();
    }
    let root = db.root();
    db.close().unwrap();
    hex::encode(root)
}

fn flip(file: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
}

#[test]
fn a_sound_database_checks_out_with_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = create(dir.path());
    let out = bmt(["check".as_ref(), dir.path().as_os_str(), "-q".as_ref()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(&format!("OK {root}\n")), "{text}");
    assert!(text.contains("3000 keys"), "{text}");
    assert!(text.contains("3 rollback records"), "{text}");
}

#[test]
fn a_damaged_data_file_is_reported_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path());
    let data = dir.path().join("data.bmt");
    let pages = std::fs::metadata(&data).unwrap().len() / 4096;
    // One byte in every page after the two meta slots: some of them are in use.
    for page in 2..pages {
        flip(&data, page * 4096 + 2000);
    }
    let out = bmt(["check".as_ref(), dir.path().as_os_str(), "-q".as_ref()]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("CORRUPTED: "), "{text}");
    assert!(text.contains("data.bmt is corrupted at offset "), "{text}");
}

#[test]
fn a_damaged_rollback_log_is_reported_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path());
    let log_dir = dir.path().join("rollback");
    let segment = std::fs::read_dir(&log_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    flip(&segment, 40);
    let out = bmt(["check".as_ref(), dir.path().as_os_str(), "-q".as_ref()]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains(name) && text.contains("corrupted at offset"),
        "{text}"
    );

    let out = bmt([
        "check".as_ref(),
        dir.path().as_os_str(),
        "-q".as_ref(),
        "--no-rollback".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
}

#[test]
fn a_missing_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = bmt(["check".as_ref(), dir.path().join("none").as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no database"), "{}", stderr(&out));
}
