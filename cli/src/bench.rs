//! `bmt bench`: the workload driver, and the side-by-side comparison with NOMT.
//!
//! Workloads follow NOMT's benchtop so that the numbers compare:
//!
//! - `randw`: each commit writes `-s` random keys (32-byte values): updates of existing keys,
//!   and with `--fresh P`, P% inserts of new keys;
//! - `randr`: `-s` random reads of existing keys per commit;
//! - `randrw`: half reads, half writes (as `randw`);
//! - `transfer`: `-s` token transfers per commit: read two random accounts (8-byte balances),
//!   write both.
//!
//! The database first holds `2^c` keys, loaded in key order in commits of `--load-batch`
//! (as a node restoring a state snapshot receives them). Keys are the BLAKE2b-256 of the
//! seed and an index (NOMT gets all 32 bytes, `bmt` the first 31), so both engines see the
//! same keys, in the same order, with the same values.
//!
//! Every measurement runs in a child process of its own (the load in another), so that each
//! engine's peak memory is its own; `--backend both` runs the engines alternately and prints
//! the ratio of every figure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bmt_core::{Key, blake2b_256};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::Status;

/// Which engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Backend {
    /// This database.
    Bmt,
    /// NOMT 1.0 (build with `--features nomt`).
    Nomt,
    /// Both, alternately, each in its own process, with the ratio of every figure.
    Both,
}

/// What each commit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Workload {
    /// Random updates of existing keys.
    Randw,
    /// Random reads of existing keys.
    Randr,
    /// Half random reads, half random updates.
    Randrw,
    /// Token transfers: read two accounts, write both.
    Transfer,
}

/// Arguments of `bmt bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The engine.
    #[arg(long, value_enum, default_value_t = Backend::Bmt)]
    backend: Backend,
    /// The workload.
    #[arg(short = 'w', long, value_enum, default_value_t = Workload::Randw)]
    workload: Workload,
    /// log2 of the number of keys in the database.
    #[arg(short = 'c', long = "capacity", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=32))]
    capacity: u32,
    /// Operations per commit.
    #[arg(short = 's', long = "size", default_value_t = 10_000)]
    size: usize,
    /// Stop after this many commits.
    #[arg(long)]
    commits: Option<u64>,
    /// Stop after this long (for example `30s` or `2m`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    time_limit: Duration,
    /// Seed of the keys and values.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Percentage of the writes of `randw` and `randrw` that insert a new key instead of
    /// updating an existing one (the database grows during the run).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    fresh: u8,
    /// Directory for the databases (kept, and reused when they hold the right keys); default:
    /// a temporary directory, removed afterwards.
    #[arg(long)]
    path: Option<PathBuf>,
    /// Memory for caches, in MiB, for each engine (NOMT: half page cache, half leaf cache).
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
    /// Keys per commit while loading (2^18 keeps the load of 2^24 keys well under 1 GiB of
    /// memory).
    #[arg(long, default_value_t = 1 << 18)]
    load_batch: usize,
    /// Keep a rollback log (both engines, 100 commits) during the measured commits. The load
    /// runs without one, as a node restoring a snapshot would.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    rollback: bool,
    /// bmt only: make small commits durable by appending them to the write-ahead log
    /// (`Options::write_ahead_log`); with `false`, every commit writes and syncs its pages.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wal: bool,
    /// Measurements per engine (with `--backend both`, the engines alternate).
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Print one JSON object per measurement instead of the table.
    #[arg(long)]
    json: bool,
    /// Internal: this process is a child that loads the database and exits.
    #[arg(long, hide = true)]
    child_load: bool,
    /// Internal: this process is a child that measures and prints JSON.
    #[arg(long, hide = true)]
    child_run: bool,
}

/// One measurement, as a child reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    backend: Backend,
    workload: Workload,
    capacity: u32,
    size: usize,
    /// Whether the rollback log was on.
    #[serde(default)]
    rollback: bool,
    commits: u64,
    seconds: f64,
    ops_per_s: f64,
    commit_p50_ms: f64,
    commit_p99_ms: f64,
    commit_max_ms: f64,
    read_p50_us: Option<f64>,
    read_p99_us: Option<f64>,
    peak_rss_mib: f64,
    disk_mib: f64,
    written_bytes_per_op: f64,
    /// Bytes the device read per operation (`None` where there is no block device: tmpfs).
    #[serde(default)]
    read_bytes_per_op: Option<f64>,
    /// Where an average commit's time went (`bmt` only).
    #[serde(default)]
    phases: Option<String>,
}

/// What the load child reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Loaded {
    seconds: f64,
    peak_rss_mib: f64,
}

/// Read latencies kept for the percentiles.
const READ_SAMPLES: usize = 100_000;

/// The key of account / entry `id`.
fn key32(seed: u64, id: u64) -> [u8; 32] {
    let mut input = [0u8; 16];
    input[..8].copy_from_slice(&seed.to_le_bytes());
    input[8..].copy_from_slice(&id.to_le_bytes());
    blake2b_256(&input).0
}

/// The initial value of every key: 32 bytes for the random workloads, a balance of 1,000 for
/// transfers.
fn initial_value(workload: Workload) -> Vec<u8> {
    match workload {
        Workload::Transfer => 1000u64.to_be_bytes().to_vec(),
        _ => vec![64u8; 32],
    }
}

/// A random 32-byte value (16 random bytes, as benchtop's).
fn random_value(rng: &mut impl RngCore) -> Vec<u8> {
    let mut v = vec![0u8; 32];
    rng.fill_bytes(&mut v[..16]);
    v
}

/// The engine interface the workloads drive.
trait Engine {
    fn read(&mut self, key: &[u8; 32]) -> Result<Option<Vec<u8>>>;
    fn write(&mut self, key: &[u8; 32], value: Vec<u8>) -> Result<()>;
    fn commit(&mut self) -> Result<()>;
    /// Where an average commit's time went, if the engine says.
    fn phases(&self) -> Option<String> {
        None
    }
    fn close(self: Box<Self>) -> Result<()>;
}

struct BmtEngine {
    db: bmt::Nomt,
    phases: bmt::CommitStats,
    commits: u32,
    /// The I/O counters when the run started.
    io_start: bmt::IoStats,
    /// Pages read singly during commits (the rest of the single reads are the workload's).
    commit_single_reads: u64,
}

impl BmtEngine {
    fn open(dir: &Path, cache_mb: u64, capacity: u32, rollback: bool, wal: bool) -> Result<Self> {
        // Warm-up as NOMT's driver has it (`Options::warm_up`, and a hint per write). The
        // trie's pages cut for the key count, as NOMT's hash table is sized for it.
        let options = bmt::Options::new(dir)
            .page_cache_size(cache_mb << 20)
            .expected_keys(1 << capacity)
            .rollback(rollback)
            .rollback_retained(100)
            .write_ahead_log(wal)
            .warm_up(true);
        let db = bmt::Nomt::open(options).with_context(|| format!("opening {}", dir.display()))?;
        Ok(BmtEngine {
            io_start: db.io_stats(),
            db,
            phases: bmt::CommitStats::default(),
            commits: 0,
            commit_single_reads: 0,
        })
    }

    fn key(key: &[u8; 32]) -> Key {
        let mut k = [0u8; 31];
        k.copy_from_slice(&key[..31]);
        Key(k)
    }
}

impl Engine for BmtEngine {
    fn read(&mut self, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(Self::key(key))?)
    }

    fn write(&mut self, key: &[u8; 32], value: Vec<u8>) -> Result<()> {
        Ok(self.db.insert(Self::key(key), value)?)
    }

    fn commit(&mut self) -> Result<()> {
        let before = self.db.io_stats().page_cache_misses;
        self.db.commit()?;
        self.commit_single_reads += self.db.io_stats().page_cache_misses - before;
        let s = self.db.last_commit_stats();
        self.phases.classify += s.classify;
        self.phases.trie += s.trie;
        self.phases.btree += s.btree;
        self.phases.write += s.write;
        self.phases.sync += s.sync;
        self.phases.pages_written += s.pages_written;
        self.commits += 1;
        Ok(())
    }

    fn phases(&self) -> Option<String> {
        let n = self.commits.max(1);
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / n as f64;
        let (io, start) = (self.db.io_stats(), self.io_start);
        let per_commit = |now: u64, then: u64| (now - then) / u64::from(n);
        let hits = per_commit(io.page_cache_hits, start.page_cache_hits);
        let ahead = per_commit(io.pages_read_ahead, start.pages_read_ahead);
        let single = per_commit(io.page_cache_misses, start.page_cache_misses);
        let hit_pct = 100.0 * hits as f64 / (hits + ahead + single).max(1) as f64;
        let in_commits = self.commit_single_reads / u64::from(n);
        Some(format!(
            "lookups {:.1} ms, trie and flat store {:.1} ms, page table {:.1} ms, \
             writes {:.1} ms, sync {:.1} ms; {} pages written; page reads per commit \
             (with the reads between commits): {hits} from the cache, {ahead} read ahead, \
             {single} read singly, {in_commits} of them by the commit ({hit_pct:.1}% cache \
             hits)",
            ms(self.phases.classify),
            ms(self.phases.trie),
            ms(self.phases.btree),
            ms(self.phases.write),
            ms(self.phases.sync),
            self.phases.pages_written / n as u64
        ))
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.db.close()?)
    }
}

/// Opens the engine, with the rollback log on or off.
fn open_engine(
    backend: Backend,
    dir: &Path,
    args: &Args,
    rollback: bool,
) -> Result<Box<dyn Engine>> {
    match backend {
        Backend::Bmt => Ok(Box::new(BmtEngine::open(
            dir,
            args.cache_mb,
            args.capacity,
            rollback,
            args.wal,
        )?)),
        #[cfg(feature = "nomt")]
        Backend::Nomt => Ok(Box::new(nomt_engine::NomtEngine::open(
            dir,
            args.cache_mb,
            args.capacity,
            rollback,
        )?)),
        #[cfg(not(feature = "nomt"))]
        Backend::Nomt => bail!("this build has no NOMT: rebuild with `--features nomt`"),
        Backend::Both => bail!("one engine at a time"),
    }
}

#[cfg(feature = "nomt")]
mod nomt_engine {
    //! NOMT 1.0 driven the way its benchtop drives it: one session per commit, reads through
    //! the session, every access recorded, writes warmed up, the sorted accesses given to
    //! `finish`, then `commit`.

    use std::collections::HashMap;
    use std::path::Path;

    use anyhow::Result;
    use nomt::hasher::Blake3Hasher;
    use nomt::{KeyReadWrite, Nomt, Options, Session, SessionParams};

    pub struct NomtEngine {
        // The session borrows nothing from the handle, but must end before it.
        session: Option<Session<Blake3Hasher>>,
        access: HashMap<[u8; 32], KeyReadWrite>,
        nomt: Nomt<Blake3Hasher>,
    }

    impl NomtEngine {
        pub fn open(dir: &Path, cache_mb: u64, capacity: u32, rollback: bool) -> Result<Self> {
            let mut o = Options::new();
            o.path(dir);
            o.commit_concurrency(std::thread::available_parallelism().map_or(2, |n| n.get()));
            o.hashtable_buckets((1u32 << capacity).max(1 << 16));
            o.page_cache_size((cache_mb / 2) as usize);
            o.leaf_cache_size((cache_mb / 2) as usize);
            o.warm_up(true);
            // A preallocated hash table takes 4 KiB per bucket up front (64 GiB at 2^24 keys):
            // let the file system allocate pages as NOMT writes them instead.
            o.preallocate_ht(false);
            o.rollback(rollback);
            o.max_rollback_log_len(100);
            let nomt = Nomt::open(o)?;
            Ok(NomtEngine {
                session: None,
                access: HashMap::new(),
                nomt,
            })
        }

        fn session(&mut self) -> &Session<Blake3Hasher> {
            if self.session.is_none() {
                self.session = Some(self.nomt.begin_session(SessionParams::default()));
            }
            self.session.as_ref().expect("just begun")
        }
    }

    impl super::Engine for NomtEngine {
        fn read(&mut self, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
            if let Some(a) = self.access.get(key) {
                return Ok(a.last_value().map(|v| v.to_vec()));
            }
            let value = self.session().read(*key)?;
            self.access.insert(*key, KeyReadWrite::Read(value.clone()));
            Ok(value)
        }

        fn write(&mut self, key: &[u8; 32], value: Vec<u8>) -> Result<()> {
            self.session().warm_up(*key);
            match self.access.get_mut(key) {
                Some(a) => a.write(Some(value)),
                None => {
                    self.access.insert(*key, KeyReadWrite::Write(Some(value)));
                }
            }
            Ok(())
        }

        fn commit(&mut self) -> Result<()> {
            let session = match self.session.take() {
                Some(s) => s,
                None => self.nomt.begin_session(SessionParams::default()),
            };
            let mut actuals: Vec<_> = std::mem::take(&mut self.access).into_iter().collect();
            actuals.sort_by_key(|(k, _)| *k);
            session.finish(actuals)?.commit(&self.nomt)?;
            Ok(())
        }

        fn close(self: Box<Self>) -> Result<()> {
            Ok(())
        }
    }
}

/// Runs the command.
pub fn run(args: &Args) -> Result<Status> {
    if args.child_load {
        let dir = args.path.clone().context("a child needs --path")?;
        let loaded = load(args, args.backend, &dir)?;
        println!("{}", serde_json::to_string(&loaded)?);
        return Ok(Status::Ok);
    }
    if args.child_run {
        let dir = args.path.clone().context("a child needs --path")?;
        let m = measure(args, args.backend, &dir)?;
        println!("{}", serde_json::to_string(&m)?);
        return Ok(Status::Ok);
    }
    orchestrate(args)
}

/// Runs each measurement in a child process and reports.
fn orchestrate(args: &Args) -> Result<Status> {
    let tmp;
    let root: &Path = match &args.path {
        Some(p) => p,
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path()
        }
    };
    let backends: Vec<Backend> = match args.backend {
        Backend::Both => vec![Backend::Bmt, Backend::Nomt],
        b => vec![b],
    };
    if !args.json {
        println!(
            "workload {:?}: 2^{} keys, {} operations per commit ({}% of writes insert new \
             keys), caches {} MiB per engine; rollback log {} (both); warm-up of written keys \
             on (both); NOMT: hash table of {} buckets (not preallocated), commit concurrency = \
             cores; direct I/O (both); bmt: trie pages cut for 2^{} keys, write-ahead log of \
             small commits {}",
            args.workload,
            args.capacity,
            args.size,
            args.fresh,
            args.cache_mb,
            if args.rollback {
                "of 100 commits"
            } else {
                "off"
            },
            (1u64 << args.capacity).max(1 << 16),
            args.capacity,
            if args.wal { "on" } else { "off" },
        );
    }
    let mut results: Vec<Measurement> = Vec::new();
    for backend in &backends {
        let dir = db_dir(root, *backend, args);
        if !dir.join("loaded").exists() {
            std::fs::create_dir_all(&dir)?;
            let out = child(args, *backend, &dir, "--child-load")?;
            let loaded: Loaded = serde_json::from_str(out.trim()).context("load child output")?;
            std::fs::write(dir.join("loaded"), b"")?;
            if !args.json {
                println!(
                    "{:?}: loaded 2^{} keys in {:.1} s (peak RSS {:.0} MiB)",
                    backend, args.capacity, loaded.seconds, loaded.peak_rss_mib
                );
            }
        }
    }
    for _ in 0..args.rounds {
        for backend in &backends {
            let dir = db_dir(root, *backend, args);
            let out = child(args, *backend, &dir, "--child-run")?;
            let m: Measurement = serde_json::from_str(out.trim()).context("run child output")?;
            if args.json {
                println!("{}", serde_json::to_string(&m)?);
            }
            results.push(m);
        }
    }
    if !args.json {
        print_table(&results, &backends);
    }
    Ok(Status::Ok)
}

fn db_dir(root: &Path, backend: Backend, args: &Args) -> PathBuf {
    root.join(format!(
        "{:?}-{:?}-c{}-seed{}",
        backend, args.workload, args.capacity, args.seed
    ))
}

/// Runs this program as a child for one engine; returns its standard output.
fn child(args: &Args, backend: Backend, dir: &Path, role: &str) -> Result<String> {
    let exe = std::env::current_exe().context("finding this program")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench")
        .arg(role)
        .args(["--backend", &format!("{backend:?}").to_lowercase()])
        .args(["-w", &format!("{:?}", args.workload).to_lowercase()])
        .args(["-c", &args.capacity.to_string()])
        .args(["-s", &args.size.to_string()])
        .args([
            "--time-limit",
            &format!("{}ms", args.time_limit.as_millis()),
        ])
        .args(["--seed", &args.seed.to_string()])
        .args(["--fresh", &args.fresh.to_string()])
        .args(["--cache-mb", &args.cache_mb.to_string()])
        .args(["--load-batch", &args.load_batch.to_string()])
        .args(["--rollback", &args.rollback.to_string()])
        .args(["--wal", &args.wal.to_string()])
        .arg("--path")
        .arg(dir);
    if let Some(c) = args.commits {
        cmd.args(["--commits", &c.to_string()]);
    }
    let out = cmd.output().context("running a benchmark child")?;
    if !out.status.success() {
        bail!(
            "the {backend:?} child failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Loads `2^c` keys in key order.
fn load(args: &Args, backend: Backend, dir: &Path) -> Result<Loaded> {
    let n = 1u64 << args.capacity;
    let mut engine = open_engine(backend, dir, args, false)?;
    let start = Instant::now();
    let bar = progress(n, "loading");
    // Key order, with 8 bytes per key: the key's first 64 - c bits above its index (ties
    // of the prefix sort by index, which only reorders keys within a commit).
    let c = args.capacity;
    let mut order: Vec<u64> = (0..n)
        .map(|i| {
            let prefix = u64::from_be_bytes(key32(args.seed, i)[..8].try_into().expect("8"));
            prefix >> c << c | i
        })
        .collect();
    order.sort_unstable();
    let index_mask = (1u64 << c) - 1;
    let value = initial_value(args.workload);
    for chunk in order.chunks(args.load_batch.max(1)) {
        for packed in chunk {
            engine.write(&key32(args.seed, packed & index_mask), value.clone())?;
        }
        engine.commit()?;
        bar.inc(chunk.len() as u64);
    }
    drop(order);
    engine.close()?;
    bar.finish_and_clear();
    Ok(Loaded {
        seconds: start.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Runs the workload and measures it.
fn measure(args: &Args, backend: Backend, dir: &Path) -> Result<Measurement> {
    let n = 1u64 << args.capacity;
    // Each run on a database writes new values (a rerun of the same values would write
    // nothing): runs are counted in the database's directory.
    let runs_file = dir.join("runs");
    let run: u64 = std::fs::read_to_string(&runs_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    std::fs::write(&runs_file, (run + 1).to_string())?;
    let mut engine = open_engine(backend, dir, args, args.rollback)?;
    let mut rng = ChaCha8Rng::seed_from_u64(
        args.seed
            .wrapping_add(2)
            .wrapping_add(run.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
    );
    let mut commit_times: Vec<Duration> = Vec::new();
    let mut read_times: Vec<Duration> = Vec::new();
    let mut reads_seen = 0u64;
    let mut sample_rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x5eed);
    let written_before = write_bytes(dir);
    let read_before = device_bytes(dir, DeviceCounter::SectorsRead);
    let start = Instant::now();
    loop {
        let done = commit_times.len() as u64;
        if args.commits.is_some_and(|c| done >= c)
            || (args.commits.is_none() && start.elapsed() >= args.time_limit)
        {
            break;
        }
        let mut read = |engine: &mut Box<dyn Engine>, key: &[u8; 32]| -> Result<Option<Vec<u8>>> {
            let t = Instant::now();
            let v = engine.read(key)?;
            // A uniform sample of at most READ_SAMPLES latencies (reservoir sampling), so that
            // the harness's own memory does not grow with the run.
            reads_seen += 1;
            if read_times.len() < READ_SAMPLES {
                read_times.push(t.elapsed());
            } else {
                let slot = (sample_rng.next_u64() % reads_seen) as usize;
                if slot < READ_SAMPLES {
                    read_times[slot] = t.elapsed();
                }
            }
            Ok(v)
        };
        // An existing key, or with probability `--fresh` a new one (ids above 2^63, never
        // loaded).
        let write_key = |rng: &mut ChaCha8Rng| {
            if args.fresh > 0 && rng.random_range(0..100u8) < args.fresh {
                key32(args.seed, (1 << 63) | rng.random::<u64>())
            } else {
                key32(args.seed, rng.random_range(0..n))
            }
        };
        for i in 0..args.size {
            match args.workload {
                Workload::Randw => {
                    let key = write_key(&mut rng);
                    engine.write(&key, random_value(&mut rng))?;
                }
                Workload::Randr => {
                    let key = key32(args.seed, rng.random_range(0..n));
                    read(&mut engine, &key)?;
                }
                Workload::Randrw => {
                    let key = key32(args.seed, rng.random_range(0..n));
                    if i % 2 == 0 {
                        read(&mut engine, &key)?;
                    } else {
                        let key = write_key(&mut rng);
                        engine.write(&key, random_value(&mut rng))?;
                    }
                }
                Workload::Transfer => {
                    let from = rng.random_range(0..n);
                    let mut to = rng.random_range(0..n);
                    while to == from {
                        to = rng.random_range(0..n);
                    }
                    let (from, to) = (key32(args.seed, from), key32(args.seed, to));
                    let balance = |v: Option<Vec<u8>>| {
                        v.and_then(|v| v.try_into().ok())
                            .map_or(0, u64::from_be_bytes)
                    };
                    let a = balance(read(&mut engine, &from)?);
                    let b = balance(read(&mut engine, &to)?);
                    let a = if a == 0 { 1000 } else { a - 1 };
                    engine.write(&from, a.to_be_bytes().to_vec())?;
                    engine.write(&to, (b + 1).to_be_bytes().to_vec())?;
                }
            }
        }
        let t = Instant::now();
        engine.commit()?;
        commit_times.push(t.elapsed());
    }
    let seconds = start.elapsed().as_secs_f64();
    let phases = engine.phases();
    // Bytes written count the close too: what a commit left to write later (bmt's pages of
    // commits made durable by its write-ahead log) is written then.
    engine.close()?;
    let written = write_bytes(dir).saturating_sub(written_before);
    let read = device_bytes(dir, DeviceCounter::SectorsRead)
        .zip(read_before)
        .map(|(now, then)| now.saturating_sub(then));
    let ops = commit_times.len() as f64 * args.size as f64;
    commit_times.sort();
    read_times.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Ok(Measurement {
        backend,
        workload: args.workload,
        capacity: args.capacity,
        size: args.size,
        rollback: args.rollback,
        commits: commit_times.len() as u64,
        seconds,
        ops_per_s: ops / seconds,
        commit_p50_ms: ms(pct(&commit_times, 0.5)),
        commit_p99_ms: ms(pct(&commit_times, 0.99)),
        commit_max_ms: ms(pct(&commit_times, 1.0)),
        read_p50_us: (!read_times.is_empty()).then(|| us(pct(&read_times, 0.5))),
        read_p99_us: (!read_times.is_empty()).then(|| us(pct(&read_times, 0.99))),
        peak_rss_mib: peak_rss_mib(),
        disk_mib: dir_size(dir)? as f64 / (1 << 20) as f64,
        written_bytes_per_op: written as f64 / ops.max(1.0),
        read_bytes_per_op: read.map(|r| r as f64 / ops.max(1.0)),
        phases,
    })
}

fn print_table(results: &[Measurement], backends: &[Backend]) {
    let median = |b: Backend, f: &dyn Fn(&Measurement) -> Option<f64>| -> Option<f64> {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|m| m.backend == b)
            .filter_map(f)
            .collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    type Figure = (&'static str, fn(&Measurement) -> Option<f64>, bool);
    let figures: [Figure; 11] = [
        ("ops/s", |m| Some(m.ops_per_s), true),
        ("commit p50 ms", |m| Some(m.commit_p50_ms), false),
        ("commit p99 ms", |m| Some(m.commit_p99_ms), false),
        ("commit max ms", |m| Some(m.commit_max_ms), false),
        ("read p50 µs", |m| m.read_p50_us, false),
        ("read p99 µs", |m| m.read_p99_us, false),
        ("peak RSS MiB", |m| Some(m.peak_rss_mib), false),
        ("on disk MiB", |m| Some(m.disk_mib), false),
        ("written B/op", |m| Some(m.written_bytes_per_op), false),
        ("device read B/op", |m| m.read_bytes_per_op, false),
        ("commits", |m| Some(m.commits as f64), true),
    ];
    let rounds = results.len() / backends.len().max(1);
    print!("{:<16}", format!("(median of {rounds})"));
    for b in backends {
        print!("{:>14}", format!("{b:?}").to_lowercase());
    }
    if backends.len() == 2 {
        print!("{:>16}", "ratio bmt/nomt");
    }
    println!();
    for (name, f, _) in figures {
        let values: Vec<Option<f64>> = backends.iter().map(|b| median(*b, &f)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        print!("{name:<16}");
        for v in &values {
            match v {
                Some(v) if *v >= 100.0 => print!("{:>14.0}", v),
                Some(v) => print!("{:>14.2}", v),
                None => print!("{:>14}", "-"),
            }
        }
        if let [Some(a), Some(b)] = values[..]
            && b != 0.0
        {
            print!("{:>16.2}", a / b);
        }
        println!();
    }
    if let Some(p) = results.iter().rev().find_map(|m| m.phases.as_ref()) {
        println!("bmt commit phases (last run): {p}");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
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

/// Bytes written so far: to the block device that holds `dir`, as the device counts them
/// (`/sys/dev/block/MAJOR:MINOR/stat`, whole machine), else (no block device: tmpfs) as this
/// process's `/proc/self/io` counts them. (Not `/proc/self/io` on a disk: ext4 charges an
/// `fdatasync` of a buffered file with the whole file's size, 2 MiB for a 200-byte record in
/// an 8 MiB file, where the device receives 4.6 KB.)
fn write_bytes(dir: &Path) -> u64 {
    device_bytes(dir, DeviceCounter::SectorsWritten).unwrap_or_else(io_write_bytes)
}

/// A counter of `/sys/dev/block/MAJOR:MINOR/stat` (the kernel's `Documentation/block/stat`).
#[derive(Clone, Copy)]
enum DeviceCounter {
    /// Field 3: sectors read.
    SectorsRead = 2,
    /// Field 7: sectors written.
    SectorsWritten = 6,
}

/// Bytes read or written so far by the block device that holds `dir` (the whole machine's
/// I/O to it, in 512-byte sectors); `None` where `dir` is on no block device (tmpfs). Direct
/// I/O reads reach the device whole, so this counts both engines' reads alike.
fn device_bytes(dir: &Path, counter: DeviceCounter) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat
        .split_whitespace()
        .nth(counter as usize)?
        .parse()
        .ok()?;
    Some(sectors * 512)
}

/// Bytes this process caused to be written to storage (Linux `/proc/self/io`); 0 where
/// unknown.
fn io_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("write_bytes:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|b| b.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes allocated on disk under `dir`, recursively.
fn dir_size(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}
