//! How long opening an existing database takes, with default options: the bar is
//! under 1 s for 2^24 keys. Opens and closes the database `RUNS` times (default 5) and prints
//! each time and the median. The first open after a reboot or a cache drop is the cold one.
//!
//! `cargo run --release -p bmt-bench --example open_time -- DIR [RUNS]`

use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: open_time DIR [RUNS]")?;
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(5);
    let mut times: Vec<Duration> = Vec::new();
    for run in 0..runs {
        let start = Instant::now();
        let db = bmt::Nomt::open(bmt::Options::new(&dir).create_if_missing(false))?;
        let opened = start.elapsed();
        println!(
            "open {run}: {:.1} ms, {} keys, root {}, rollback window {}",
            opened.as_secs_f64() * 1e3,
            db.key_count(),
            db.root(),
            db.rollback_window()
        );
        times.push(opened);
        db.close()?;
    }
    times.sort();
    println!(
        "median of {runs}: {:.1} ms",
        times[times.len() / 2].as_secs_f64() * 1e3
    );
    Ok(())
}
