//! The machine's memory latency: a chain of dependent loads at random places in a buffer of
//! the given size (one cycle through every 8-byte slot, so the prefetcher cannot guess the
//! next), timed per load. A warm `get` at 2^20 keys is a handful of such loads, so this
//! figure, taken beside a benchmark, tells a slow phase of this shared machine from a slow
//! build.
//!
//! `cargo run --release -p bmt-bench --example mem_latency -- [MIB...]` (default 1 32 256)

use std::time::Instant;

use rand::{RngExt, SeedableRng, rngs::StdRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    if sizes.is_empty() {
        sizes = vec![1, 32, 256];
    }
    let mut rng = StdRng::seed_from_u64(1);
    for mib in sizes {
        let n = (mib << 20) / 8;
        // A random cyclic order of the slots (Sattolo's shuffle gives a single cycle).
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = rng.random_range(0..i);
            order.swap(i, j);
        }
        let mut next = vec![0usize; n];
        for i in 0..n {
            next[order[i]] = order[(i + 1) % n];
        }
        let loads = 20_000_000usize;
        let mut at = order[0];
        let start = Instant::now();
        for _ in 0..loads {
            at = next[at];
        }
        let ns = start.elapsed().as_secs_f64() * 1e9 / loads as f64;
        println!("{mib} MiB: {ns:.1} ns per dependent load (end {})", at % 2);
    }
    Ok(())
}
