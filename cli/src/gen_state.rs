//! `bmt gen-state`: writes a random state as a raw-state JSON file, with its root.
//!
//! The public traces hold at most a hundred or so keys, so scale and speed tests need generated
//! states. This writes the same shape `state-root` reads back (`{state_root, keyvals: [{key,
//! value}]}`, `0x` hex, keys sorted), so a generated file is a self-checking fixture: its root
//! comes from the `bmt-core` reference builder, and any other implementation must agree.
//!
//! The output depends only on the arguments: the generator is ChaCha8 seeded from `--seed`
//! (`rand_chacha`, whose output is fixed by its specification, unlike `StdRng`, which may change
//! between `rand` versions). For each pair it draws the 31 key bytes, then the value length
//! (uniform in `0..=max-value`), then the value bytes; a key drawn a second time (which, at 248
//! random bits, does not happen in practice) is skipped and a new key drawn.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use bmt_core::{KEY_LEN, Key, root_from_sorted};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::Status;

/// Arguments of `bmt gen-state`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of distinct keys.
    #[arg(long, value_name = "N")]
    keys: usize,
    /// Largest value length in bytes; lengths are uniform in 0..=BYTES.
    #[arg(long, value_name = "BYTES")]
    max_value: usize,
    /// Seed of the random generator: the same seed gives the same file.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Output file (overwritten).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Serialize)]
struct RawStateOut {
    state_root: String,
    keyvals: Vec<KeyValOut>,
}

#[derive(Serialize)]
struct KeyValOut {
    key: String,
    value: String,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<Status> {
    let state = generate(args.keys, args.max_value, args.seed);
    let root = root_from_sorted(state.iter())
        .map_err(|e| anyhow!("internal error: map not sorted: {e}"))?;
    let doc = RawStateOut {
        state_root: format!("0x{root}"),
        keyvals: state
            .iter()
            .map(|(k, v)| KeyValOut {
                key: format!("0x{k}"),
                value: format!("0x{}", hex::encode(v)),
            })
            .collect(),
    };
    let write = || -> Result<()> {
        let mut out = BufWriter::new(File::create(&args.out)?);
        serde_json::to_writer_pretty(&mut out, &doc)?;
        out.write_all(b"\n")?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    };
    write().with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "{}: {} keys, state root {root}",
        args.out.display(),
        state.len()
    );
    Ok(Status::Ok)
}

/// `keys` random pairs, deterministic from `seed`.
fn generate(keys: usize, max_value: usize, seed: u64) -> BTreeMap<Key, Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut state = BTreeMap::new();
    while state.len() < keys {
        let mut key = [0u8; KEY_LEN];
        rng.fill(&mut key[..]);
        if state.contains_key(&Key(key)) {
            continue;
        }
        let len = rng.random_range(0..=max_value);
        let mut value = vec![0u8; len];
        rng.fill(&mut value[..]);
        state.insert(Key(key), value);
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_bounded() {
        let a = generate(50, 40, 7);
        assert_eq!(a, generate(50, 40, 7));
        assert_ne!(a, generate(50, 40, 8));
        assert_eq!(a.len(), 50);
        assert!(a.values().all(|v| v.len() <= 40));
        assert!(generate(0, 10, 1).is_empty());
    }
}
