//! `bmt replay-trace PATH...`: replays JAM trace files through the database.
//!
//! Unlike `state-root`, which builds each state from scratch, this drives a store the way a
//! node does: it loads the `pre_state` of a step, checks the root, then applies only the
//! block's *difference* (writes for keys added or changed, deletes for keys gone) and checks
//! that the store's new root is the `post_state` root. That exercises the incremental update
//! path (inserts that split leaves, deletes that pull siblings up) rather than a rebuild.
//!
//! Each file is replayed on its own, from an empty state: trace steps are samples, not a
//! contiguous chain. A genesis file (or a raw state with a `state_root`) is loaded and its root
//! checked. Folders are searched recursively for `*.json` files, taken in sorted path order;
//! files named explicitly are taken whatever their extension.
//!
//! Output: one line per file on stdout, `<file> OK` or
//! `<file> MISMATCH <state> expected <root> got <root>` (the first state that failed); a
//! malformed file gets one line on stderr instead; then `N files, M OK` on stderr. Exit code 2
//! if any file was malformed, else 1 if any mismatched, else 0.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use bmt_core::{Hash, Key};

use crate::backend::{DbBackend, MemoryBackend, StateBackend};
use crate::state_file::{State, StateFile};
use crate::{Status, report_malformed};

/// Arguments of `bmt replay-trace`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Trace files (steps or genesis) or folders holding them (searched recursively).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Where the states live: the database (a fresh temporary one per file), or the
    /// reference: an in-memory map whose root `bmt-core` rebuilds from scratch.
    #[arg(long, value_enum, default_value_t = Backend::Db)]
    backend: Backend,
}

/// The store `replay-trace` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The `bmt` database.
    Db,
    /// The in-memory reference.
    Reference,
}

/// The result of replaying one file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Ok,
    Mismatch {
        state: &'static str,
        expected: Hash,
        got: Hash,
    },
}

/// Runs the command through the chosen backend (by default the database).
pub fn run(args: &Args) -> Result<Status> {
    match args.backend {
        Backend::Db => run_with(args, &mut DbBackend::new()),
        Backend::Reference => run_with(args, &mut MemoryBackend::new()),
    }
}

/// Runs the command against any backend.
pub fn run_with(args: &Args, backend: &mut impl StateBackend) -> Result<Status> {
    let mut out = std::io::stdout().lock();
    let mut status = Status::Ok;
    let (mut files, mut ok) = (0usize, 0usize);
    for path in &args.paths {
        let expanded = match expand(path) {
            Ok(expanded) => expanded,
            Err(err) => {
                out.flush()?;
                report_malformed(path, &err);
                files += 1;
                status = Status::Malformed;
                continue;
            }
        };
        for file in expanded {
            files += 1;
            match replay_file(&file, backend) {
                Ok(Verdict::Ok) => {
                    ok += 1;
                    writeln!(out, "{} OK", file.display())?;
                }
                Ok(Verdict::Mismatch {
                    state,
                    expected,
                    got,
                }) => {
                    status = status.max(Status::Mismatch);
                    writeln!(
                        out,
                        "{} MISMATCH {state} expected {expected} got {got}",
                        file.display()
                    )?;
                }
                Err(err) => {
                    out.flush()?;
                    report_malformed(&file, &err);
                    status = Status::Malformed;
                }
            }
        }
    }
    out.flush()?;
    eprintln!("{files} files, {ok} OK");
    Ok(status)
}

/// A file stands for itself; a folder for all `*.json` files below it, in sorted path order.
fn expand(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).context("cannot access path")?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    collect_json(path, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect_json(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.is_dir() {
            collect_json(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "json") {
            files.push(path);
        }
    }
    Ok(())
}

/// Replays one file from an empty state.
fn replay_file(file: &Path, backend: &mut impl StateBackend) -> Result<Verdict> {
    match StateFile::load(file)? {
        StateFile::Step { pre, post } => {
            let pre_expected = expected_root(&pre, "pre_state")?;
            let post_expected = expected_root(&post, "post_state")?;
            let (writes, deletes) = diff(&pre.entries, post.entries);
            backend.begin_fresh()?;
            backend.apply(pre.entries, Vec::new())?;
            let got = backend.commit()?;
            if got != pre_expected {
                return Ok(mismatch("pre_state", pre_expected, got));
            }
            backend.apply(writes, deletes)?;
            let got = backend.commit()?;
            if got != post_expected {
                return Ok(mismatch("post_state", post_expected, got));
            }
            Ok(Verdict::Ok)
        }
        StateFile::Genesis(state) | StateFile::Raw(state) => {
            let expected = expected_root(&state, "state")?;
            backend.begin_fresh()?;
            backend.apply(state.entries, Vec::new())?;
            let got = backend.commit()?;
            if got != expected {
                return Ok(mismatch("state", expected, got));
            }
            Ok(Verdict::Ok)
        }
    }
}

fn expected_root(state: &State, name: &str) -> Result<Hash> {
    state
        .expected_root
        .ok_or_else(|| anyhow!("{name}: missing field `state_root` (nothing to check against)"))
}

fn mismatch(state: &'static str, expected: Hash, got: Hash) -> Verdict {
    Verdict::Mismatch {
        state,
        expected,
        got,
    }
}

/// The changes from `pre` to `post` (both sorted, without duplicates): writes for keys that are
/// new or whose value changed, deletes for keys that are gone. Both come out sorted.
fn diff(pre: &[(Key, Vec<u8>)], post: Vec<(Key, Vec<u8>)>) -> (Vec<(Key, Vec<u8>)>, Vec<Key>) {
    let mut writes = Vec::new();
    let mut deletes = Vec::new();
    let mut pre = pre.iter().peekable();
    for (key, value) in post {
        while let Some((old_key, _)) = pre.next_if(|(k, _)| *k < key) {
            deletes.push(*old_key);
        }
        match pre.next_if(|(k, _)| *k == key) {
            Some((_, old_value)) if *old_value == value => {}
            _ => writes.push((key, value)),
        }
    }
    deletes.extend(pre.map(|(k, _)| *k));
    (writes, deletes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> Key {
        Key([b; 31])
    }

    #[test]
    fn diff_finds_inserts_updates_and_deletes() {
        let pre = vec![
            (k(1), vec![1]),
            (k(2), vec![2]),
            (k(4), vec![4]),
            (k(6), vec![]),
        ];
        let post = vec![(k(2), vec![2]), (k(3), vec![3]), (k(4), vec![40])];
        let (writes, deletes) = diff(&pre, post);
        assert_eq!(writes, vec![(k(3), vec![3]), (k(4), vec![40])]);
        assert_eq!(deletes, vec![k(1), k(6)]);

        let (writes, deletes) = diff(&[], vec![(k(1), vec![])]);
        assert_eq!((writes.len(), deletes.len()), (1, 0));
        let (writes, deletes) = diff(&[(k(1), vec![])], vec![]);
        assert_eq!((writes.len(), deletes), (0, vec![k(1)]));
    }
}
