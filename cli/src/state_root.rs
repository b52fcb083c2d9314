//! `bmt state-root FILE...`: the state root of every state in some JSON files.
//!
//! This is the simplest end-to-end check of the merklization: it needs no database, only the
//! `bmt-core` reference builder, so it is what to run first on a new trace, and what the
//! database's roots are compared against.
//!
//! Output, one line per state (hashes in lowercase hex, no `0x`):
//!
//! ```text
//! <file>:pre_state <root>    (trace step: two lines, pre_state then post_state)
//! <file>:state <root>        (genesis)
//! <file> <root>              (raw state)
//! ```
//!
//! followed by ` OK` when the file gives a `state_root` equal to the computed one, or
//! ` MISMATCH expected <root>` when it gives another; nothing when it gives none. A malformed
//! file is reported on stderr and the other files are still processed; the exit code is then 2
//! (else 1 on any mismatch, else 0).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::state_file::StateFile;
use crate::{Status, report_malformed};

/// Arguments of `bmt state-root`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON files: trace steps, genesis files or raw states (`{state_root?, keyvals}`).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<Status> {
    let mut out = std::io::stdout().lock();
    let mut status = Status::Ok;
    for file in &args.files {
        match check_file(file) {
            Ok((lines, file_status)) => {
                for line in lines {
                    writeln!(out, "{line}")?;
                }
                status = status.max(file_status);
            }
            Err(err) => {
                out.flush()?;
                report_malformed(file, &err);
                status = Status::Malformed;
            }
        }
    }
    out.flush()?;
    Ok(status)
}

/// Loads one file and returns its output lines. A malformed file gives an error and no lines,
/// so a step never gets a `pre_state` line without its `post_state` line.
fn check_file(file: &std::path::Path) -> Result<(Vec<String>, Status)> {
    let parsed = StateFile::load(file)?;
    let mut lines = Vec::new();
    let mut status = Status::Ok;
    for (name, state) in parsed.states() {
        let root = state.computed_root()?;
        let label = match name {
            Some(name) => format!("{}:{name}", file.display()),
            None => file.display().to_string(),
        };
        let verdict = match state.expected_root {
            None => String::new(),
            Some(expected) if expected == root => " OK".to_string(),
            Some(expected) => {
                status = Status::Mismatch;
                format!(" MISMATCH expected {expected}")
            }
        };
        lines.push(format!("{label} {root}{verdict}"));
    }
    Ok((lines, status))
}
