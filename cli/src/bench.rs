//! `bmt bench`: the workload driver.
//!
//! It builds a database of `2^c` random keys (32-byte values), then runs commits of `-s`
//! random writes until `--commits` commits or `--time-limit` have passed, and prints the
//! write throughput, commit latency, peak memory and disk use. Keys and values come from a
//! seeded generator, so two runs with the same arguments do the same work.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bmt::{Nomt, Options};
use bmt_core::Key;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Status;

/// Arguments of `bmt bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// log2 of the number of keys to load.
    #[arg(short = 'c', long = "capacity", default_value_t = 20)]
    capacity: u32,
    /// Writes per commit.
    #[arg(short = 's', long = "size", default_value_t = 10_000)]
    size: usize,
    /// Stop after this many commits.
    #[arg(long)]
    commits: Option<u64>,
    /// Stop after this long (for example `30s` or `2m`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    time_limit: Duration,
    /// Share of writes that insert a new key (the rest update existing keys), in percent.
    #[arg(long, default_value_t = 0)]
    insert_percent: u32,
    /// Seed of the key and value generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Database directory (default: a fresh temporary directory, removed afterwards). An
    /// existing database there with the right number of keys is reused instead of loaded.
    #[arg(long)]
    path: Option<PathBuf>,
    /// Page cache size in MiB.
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
    /// Keys per commit while loading (the keys are loaded in key order, as a node restoring
    /// a state snapshot receives them).
    #[arg(long, default_value_t = 1 << 20)]
    load_batch: usize,
}

/// The `i`-th key of a run: 31 pseudo-random bytes from the seed and `i`.
fn key_of(seed: u64, i: u64) -> Key {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut k = [0u8; 31];
    rng.fill_bytes(&mut k);
    Key(k)
}

fn value(rng: &mut impl RngCore) -> [u8; 32] {
    let mut v = [0u8; 32];
    rng.fill_bytes(&mut v);
    v
}

/// Runs the benchmark.
pub fn run(args: &Args) -> Result<Status> {
    let tmp;
    let dir: &Path = match &args.path {
        Some(p) => p,
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path()
        }
    };
    let options = Options::new(dir).page_cache_size(args.cache_mb << 20);
    let db = Nomt::open(options).context("opening the database")?;
    let n = 1u64 << args.capacity;

    // Load.
    let loaded = db.key_count();
    let load_start = Instant::now();
    if loaded != n {
        anyhow::ensure!(
            loaded == 0,
            "the database at {} holds {loaded} keys, not 0 or {n}",
            dir.display()
        );
        let bar = progress(n, "loading");
        let mut keys: Vec<Key> = (0..n).map(|i| key_of(args.seed, i)).collect();
        keys.sort_unstable();
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed.wrapping_add(1));
        for chunk in keys.chunks(args.load_batch.max(1)) {
            for key in chunk {
                db.insert(key, value(&mut rng))?;
            }
            db.commit()?;
            bar.inc(chunk.len() as u64);
        }
        drop(keys);
        bar.finish_and_clear();
    }
    let load_time = load_start.elapsed();
    if loaded != n {
        println!(
            "loaded {n} keys in {:.2} s ({:.0} keys/s)",
            load_time.as_secs_f64(),
            n as f64 / load_time.as_secs_f64()
        );
    }

    // Run.
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed.wrapping_add(2));
    let mut next_new = n;
    let mut latencies: Vec<Duration> = Vec::new();
    let mut phases = bmt::CommitStats::default();
    let start = Instant::now();
    let bar = match args.commits {
        Some(c) => progress(c, "commits"),
        None => progress(args.time_limit.as_secs(), "seconds"),
    };
    loop {
        let done = latencies.len() as u64;
        if args.commits.is_some_and(|c| done >= c)
            || (args.commits.is_none() && start.elapsed() >= args.time_limit)
        {
            break;
        }
        for _ in 0..args.size {
            let key = if rng.random_range(0..100) < args.insert_percent {
                next_new += 1;
                key_of(args.seed, next_new - 1)
            } else {
                key_of(args.seed, rng.random_range(0..n))
            };
            db.insert(key, value(&mut rng))?;
        }
        let t = Instant::now();
        db.commit()?;
        latencies.push(t.elapsed());
        let s = db.last_commit_stats();
        phases.classify += s.classify;
        phases.trie += s.trie;
        phases.btree += s.btree;
        phases.write += s.write;
        phases.sync += s.sync;
        phases.pages_written += s.pages_written;
        bar.set_position(match args.commits {
            Some(_) => latencies.len() as u64,
            None => start.elapsed().as_secs(),
        });
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed();
    let writes = latencies.len() as f64 * args.size as f64;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "randw: {} commits of {} writes in {:.2} s",
        latencies.len(),
        args.size,
        elapsed.as_secs_f64()
    );
    println!("  writes/s        {:.0}", writes / elapsed.as_secs_f64());
    println!("  commit p50      {:.2} ms", ms(pct(0.5)));
    println!("  commit p99      {:.2} ms", ms(pct(0.99)));
    println!("  commit max      {:.2} ms", ms(pct(1.0)));
    let per = |d: Duration| ms(d) / latencies.len() as f64;
    println!(
        "  commit phases   classify {:.1} ms, trie {:.1} ms, btree {:.1} ms, write {:.1} ms, sync {:.1} ms; {} pages written",
        per(phases.classify),
        per(phases.trie),
        per(phases.btree),
        per(phases.write),
        per(phases.sync),
        phases.pages_written / latencies.len() as u64
    );
    println!("  peak RSS        {:.1} MiB", peak_rss_mib());
    let disk = dir_size(dir)?;
    println!(
        "  on disk         {:.1} MiB ({:.1} bytes/key)",
        disk as f64 / (1 << 20) as f64,
        disk as f64 / db.key_count() as f64
    );
    db.close()?;
    Ok(Status::Ok)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} (eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB; 0 where unknown.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Bytes allocated on disk under `dir`.
fn dir_size(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        total += if meta.is_dir() {
            0
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}
