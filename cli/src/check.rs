//! `bmt check DIR`: reads and checks a whole database (see `Nomt::check`), with a progress
//! bar, and prints what it saw.
//!
//! Exit codes: 0 when everything checked out, 1 when the database is corrupted (the first
//! problem is printed with its file and position), 2 when it could not be opened or read.

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::Status;

/// Arguments of `bmt check`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The database directory.
    dir: PathBuf,
    /// Open it without its rollback log (the log is then not checked).
    #[arg(long)]
    no_rollback: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<Status> {
    if !args.dir.join("data.bmt").exists() {
        anyhow::bail!("{} holds no database (no data.bmt)", args.dir.display());
    }
    let options = bmt::Options::new(&args.dir)
        .create_if_missing(false)
        .rollback(!args.no_rollback);
    let db = match bmt::Nomt::open(options) {
        Ok(db) => db,
        Err(e @ bmt::Error::Corrupted { .. }) => {
            println!("CORRUPTED: {e}");
            return Ok(Status::Mismatch);
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", args.dir.display())),
    };
    if let Some(seq) = db.incomplete_commit_discarded() {
        println!(
            "WARNING: commit {seq}, written with one sync, was not all on disk: the database \
             opened at the commit before it (a crash before that commit's sync returned, or \
             damage since)"
        );
    }
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(db.key_count().max(1))
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let result = db.check(&mut |p| {
        bar.set_message(format!("{:?}", p.stage));
        bar.set_length(p.total.max(1));
        bar.set_position(p.done);
    });
    bar.finish_and_clear();
    match result {
        Ok(r) => {
            println!("OK {}", r.root);
            println!(
                "{} keys; pages: {} flat store, {} overflow, {} page table, {} trie (top page of \
                 {} levels; {} elided subtries recomputed), {} free list, {} free, {} in the \
                 file; {} rollback records",
                r.keys,
                r.flat_pages,
                r.overflow_pages,
                r.table_pages,
                r.trie_pages,
                r.trie_top_levels,
                r.elided_subtries,
                r.free_list_pages,
                r.free_pages,
                r.file_pages,
                r.rollback_records
            );
            Ok(Status::Ok)
        }
        Err(e @ bmt::Error::Corrupted { .. }) => {
            println!("CORRUPTED: {e}");
            Ok(Status::Mismatch)
        }
        Err(e) => Err(e).context("checking"),
    }
}
