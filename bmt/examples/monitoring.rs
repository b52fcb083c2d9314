//! Monitoring: the database's lock-free counters (reads, writes, commits, overlay hits,
//! store reads), the commit-latency histogram, where the last commit's time went, and
//! resetting the counters between reporting intervals.
//!
//! Run: `cargo run -p bmt --example monitoring`

use bmt::{Key, Nomt, Options};

type Error = Box<dyn std::error::Error>;

fn key(i: u32) -> Key {
    let h = bmt_core::blake2b_256(&i.to_le_bytes());
    Key::from_slice(&h.0[..31]).expect("31 bytes")
}

fn report(db: &Nomt) {
    let m = db.metrics();
    println!("database metrics:");
    println!(
        "  reads: {} (overlay hits {}, store reads {})",
        m.reads(),
        m.overlay_hits(),
        m.store_reads()
    );
    println!("  writes: {}", m.writes());
    println!(
        "  commits: {} (failed {}), rollbacks: {}",
        m.commits(),
        m.failed_commits(),
        m.rollbacks()
    );
    println!("  overlay hit ratio: {:.2}%", m.overlay_hit_ratio() * 100.0);
    let latency = m.commit_latency();
    println!(
        "  commit latency: mean {:?}, p50 {:?}, p99 {:?} over {} commits",
        latency.mean(),
        latency.quantile(0.5),
        latency.quantile(0.99),
        latency.count()
    );
    for (upper, count) in latency.buckets() {
        if count > 0 {
            println!("    < {upper:?}: {count}");
        }
    }
    let last = db.last_commit_stats();
    println!(
        "  last commit: {} changes, {} pages; classify {:?}, trie {:?}, write {:?}, sync {:?}",
        last.changes, last.pages_written, last.classify, last.trie, last.write, last.sync
    );
}

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let db = Nomt::open(Options::new(dir.path().join("state")))?;
    for block in 0..10u32 {
        for i in 0..1000 {
            db.insert(key(block * 1000 + i), i.to_le_bytes())?;
        }
        // A read of a staged key is an overlay hit; of a committed one, a store read.
        db.get(key(block * 1000))?;
        if block > 0 {
            db.get(key(0))?;
        }
        db.commit()?;
    }
    report(&db);
    let m = db.metrics();
    assert_eq!(m.commits(), 10);
    assert_eq!(m.writes(), 10_000);
    assert_eq!(m.overlay_hits(), 10);
    assert_eq!(m.store_reads(), 9);
    if m.overlay_hit_ratio() < 0.8 {
        println!("note: most reads went to the store");
    }

    // Counters are cumulative until reset, e.g. at the end of a reporting interval.
    m.reset();
    assert_eq!((m.reads(), m.writes(), m.commits()), (0, 0, 0));
    assert_eq!(m.commit_latency().count(), 0);
    Ok(())
}

#[test]
fn example_runs() {
    main().unwrap();
}
