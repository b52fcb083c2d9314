//! Helpers shared by the integration tests: run the built `bmt` binary, find the trace vectors,
//! write scratch files.

#![allow(dead_code)] // Each test crate uses a different subset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `bmt` with `args` and returns its output.
pub fn bmt<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_bmt"))
        .args(args)
        .output()
        .expect("run bmt")
}

/// `testdata/traces` of the workspace.
pub fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/traces")
}

/// Every `*.json` file under `dir`, sorted.
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Reads a JSON file into a `Value`.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A root with its first hex digit changed (keeping the `0x` prefix if any).
pub fn tamper(root: &str) -> String {
    let digits = root.strip_prefix("0x").unwrap_or(root);
    let first = if digits.starts_with('0') { '1' } else { '0' };
    format!("0x{first}{}", &digits[1..])
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}
