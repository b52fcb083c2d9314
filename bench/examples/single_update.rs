//! Single-update durable commits on a warm cache, with the phases of each commit: what the
//! issue's bar (p50 under 0.5 ms) measures once a node's cache holds its state, which a short
//! `bmt bench -s 1` run, starting from a cold cache, does not reach.
//!
//! Loads 2^20 keys into `DIR` (emptied first), reads every key once (the whole state then
//! sits in the 256 MiB cache), then makes `COMMITS` commits of one random update each and
//! prints the commits per second (the commits' own time), the p50 and p90 of the whole
//! commit, the p50 of each of its phases (`Nomt::last_commit_stats`), and how many commits
//! took over 5 ms (mostly those that checkpoint the write-ahead log first) and their share of
//! the time. `WAL` is `true` (default: small commits through the
//! write-ahead log) or `false` (made durable in place). Rollback is on (100 commits), warm-up
//! off.
//!
//! `cargo run --release -p bmt-bench --example single_update -- DIR [COMMITS] [WAL]`

use std::time::{Duration, Instant};

fn key(i: u64) -> bmt::Key {
    let mut k = [0u8; 31];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    bmt::Key(k)
}

fn p(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: single_update DIR [COMMITS] [WAL]")?;
    let commits: usize = args
        .next()
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(20_000);
    let wal: bool = args.next().map(|r| r.parse()).transpose()?.unwrap_or(true);
    const KEYS: u64 = 1 << 20;
    let _ = std::fs::remove_dir_all(&dir);
    let db = bmt::Nomt::open(bmt::Options::new(&dir).write_ahead_log(wal))?;
    let mut i = 0;
    while i < KEYS {
        for _ in 0..1 << 16 {
            db.insert(key(i), i.to_le_bytes().repeat(4))?;
            i += 1;
        }
        db.commit()?;
    }
    for i in 0..KEYS {
        db.get(key(i))?;
    }
    let mut phases: [Vec<Duration>; 6] = Default::default();
    let mut rng = 0x1234_5678_9ABC_DEF1_u64;
    for c in 0..commits as u64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        db.insert(key(rng % KEYS), (c + 1 + KEYS).to_le_bytes().repeat(4))?;
        let t = Instant::now();
        db.commit()?;
        phases[0].push(t.elapsed());
        let s = db.last_commit_stats();
        for (slot, d) in phases[1..]
            .iter_mut()
            .zip([s.classify, s.trie, s.btree, s.write, s.sync])
        {
            slot.push(d);
        }
    }
    let [total, lookups, trie, table, writes, sync] = &mut phases;
    let sum = total.iter().sum::<Duration>();
    let mean = sum.as_secs_f64() / commits as f64;
    // The slow tail: mostly the commits that checkpoint the write-ahead log first.
    let slow: Vec<Duration> = total
        .iter()
        .copied()
        .filter(|d| *d > Duration::from_millis(5))
        .collect();
    let slow_sum = slow.iter().sum::<Duration>();
    println!(
        "write-ahead log {wal}, {commits} commits: {:.0} commits/s (mean {:.0} µs), commit \
         p50 {:.0} µs, p90 {:.0} µs; phase \
         p50s: lookups {:.0}, trie and flat store {:.0}, page table {:.0}, writes {:.0}, sync \
         {:.0} µs (p90 {:.0}); {} commits over 5 ms took {:.1}% of the time",
        1.0 / mean,
        mean * 1e6,
        p(total, 0.5),
        p(total, 0.9),
        p(lookups, 0.5),
        p(trie, 0.5),
        p(table, 0.5),
        p(writes, 0.5),
        p(sync, 0.5),
        p(sync, 0.9),
        slow.len(),
        100.0 * slow_sum.as_secs_f64() / sum.as_secs_f64(),
    );
    db.close()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
