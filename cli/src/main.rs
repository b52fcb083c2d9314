//! `bmt`: the command-line face of the JAM state database.
//!
//! This file only parses arguments, dispatches to one module per command and turns the outcome
//! into an exit code; the logic lives in the modules (and, beyond that, in the libraries).
//!
//! Exit codes are the same for every command, so scripts can tell a wrong root from a broken
//! file: 0 when everything checked out, 1 when a root did not match, 2 when an input was
//! malformed or the command could not run (usage errors included, as clap reports them).

use std::process::ExitCode;

/// mimalloc keeps freed memory for reuse instead of handing it back to the kernel and faulting
/// it in again, which matters for a database that allocates and frees thousands of 4 KiB pages
/// per commit.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t`, the same in mimalloc 2
/// and 3; the Rust bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to hand freed memory back to the kernel. By default it does so 10 ms
/// after the memory is freed, so each commit (tens of milliseconds apart) faults in and the
/// kernel zeroes again the megabytes the last one freed: 4.4% of a 2^20 `randw` commit's CPU
/// went to that zeroing (`clear_page_erms`). Measured on tmpfs, 7 alternated pairs of 10 s
/// runs: 6 faster, median +6% ops/s, commit p50 lower in 6; peak RSS within 40 MiB.
/// `MIMALLOC_PURGE_DELAY`, when set, still decides.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table, which it reads
    // when it next decides whether to purge; any value is valid for this option.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

use clap::{Parser, Subcommand};

mod backend;
mod bench;
mod check;
mod gen_state;
mod replay;
mod state_file;
mod state_root;

/// JAM state database tool: state roots, trace replay, test-state generation.
#[derive(Debug, Parser)]
#[command(name = "bmt", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Computes the state root of each state in JSON files (trace steps, genesis, raw states)
    /// and checks it against the root the file gives.
    StateRoot(state_root::Args),
    /// Replays trace files and folders: builds each pre-state, applies the changes to reach the
    /// post-state, and checks both roots.
    ReplayTrace(replay::Args),
    /// Writes a random raw-state JSON file, deterministic from a seed, with its state root.
    GenState(gen_state::Args),
    /// Benchmarks the database: loads 2^c random keys, then times commits of random writes.
    Bench(bench::Args),
    /// Reads and checks a whole database: every checksum, every value, the stored trie, the
    /// free list, the rollback log, and the root recomputed from the contents.
    Check(check::Args),
}

/// How a command ended, worst outcome first when several files are involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Every root matched.
    Ok,
    /// At least one root did not match the one given.
    Mismatch,
    /// At least one input was malformed (reported on stderr, one line each).
    Malformed,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        ExitCode::from(match status {
            Status::Ok => 0,
            Status::Mismatch => 1,
            Status::Malformed => 2,
        })
    }
}

/// Reports a malformed input on one line of stderr: `error: <file>: <what is wrong>`.
pub fn report_malformed(file: &std::path::Path, err: &anyhow::Error) {
    let message = format!("{err:#}").replace('\n', " ");
    eprintln!("error: {}: {message}", file.display());
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::StateRoot(args) => state_root::run(&args),
        Command::ReplayTrace(args) => replay::run(&args),
        Command::GenState(args) => gen_state::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Check(args) => check::run(&args),
    };
    match result {
        Ok(status) => status.into(),
        Err(err) => {
            eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
            Status::Malformed.into()
        }
    }
}
