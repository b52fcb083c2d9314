//! Counters of what the database does, kept with atomic operations so that counting never
//! takes a lock on a read path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of the commit-latency histogram: bucket `i` counts commits that took less than
/// `2^i` microseconds (and at least `2^(i-1)`); the last bucket counts everything longer.
pub const LATENCY_BUCKETS: usize = 28;

/// Live counters of a database handle. Read them at any time; [`Metrics::reset`] starts them
/// over (for example between benchmark phases).
#[derive(Debug, Default)]
pub struct Metrics {
    writes: AtomicU64,
    commits: AtomicU64,
    failed_commits: AtomicU64,
    rollbacks: AtomicU64,
    overlay_hits: AtomicU64,
    store_reads: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
    latency_total_us: AtomicU64,
}

impl Metrics {
    /// Counts a read: one atomic operation (the total is the sum of the two kinds).
    pub(crate) fn read(&self, from_overlay: bool) {
        if from_overlay {
            self.overlay_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.store_reads.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn commit(&self, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        self.latency_total_us.fetch_add(us, Ordering::Relaxed);
        let bucket = (64 - us.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed_commit(&self) {
        self.failed_commits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rollback(&self) {
        self.rollbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads (`get` on the handle and on sessions).
    pub fn reads(&self) -> u64 {
        self.overlay_hits() + self.store_reads()
    }

    /// Writes and deletes staged.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Successful commits.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Commits that returned an error.
    pub fn failed_commits(&self) -> u64 {
        self.failed_commits.load(Ordering::Relaxed)
    }

    /// Commits undone by rollback.
    pub fn rollbacks(&self) -> u64 {
        self.rollbacks.load(Ordering::Relaxed)
    }

    /// Reads answered by uncommitted changes (the overlay).
    pub fn overlay_hits(&self) -> u64 {
        self.overlay_hits.load(Ordering::Relaxed)
    }

    /// Reads that went to the committed store.
    pub fn store_reads(&self) -> u64 {
        self.store_reads.load(Ordering::Relaxed)
    }

    /// Share of reads answered by the overlay (0 when there were no reads).
    pub fn overlay_hit_ratio(&self) -> f64 {
        let reads = self.reads();
        if reads == 0 {
            0.0
        } else {
            self.overlay_hits() as f64 / reads as f64
        }
    }

    /// The commit-latency histogram so far.
    pub fn commit_latency(&self) -> LatencyHistogram {
        LatencyHistogram {
            buckets: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
            total_us: self.latency_total_us.load(Ordering::Relaxed),
        }
    }

    /// Starts every counter over.
    pub fn reset(&self) {
        for c in [
            &self.writes,
            &self.commits,
            &self.failed_commits,
            &self.rollbacks,
            &self.overlay_hits,
            &self.store_reads,
            &self.latency_total_us,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for b in &self.latency {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// Commit latencies, in buckets of powers of two microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: [u64; LATENCY_BUCKETS],
    total_us: u64,
}

impl LatencyHistogram {
    /// Commits counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The mean latency (zero when empty).
    pub fn mean(&self) -> Duration {
        match self.count() {
            0 => Duration::ZERO,
            n => Duration::from_micros(self.total_us / n),
        }
    }

    /// An upper bound of the `p`-quantile (`p` in 0..=1): the top of the bucket holding it.
    pub fn quantile(&self, p: f64) -> Duration {
        let n = self.count();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((n as f64 * p.clamp(0.0, 1.0)).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                return Duration::from_micros(1u64 << i);
            }
        }
        Duration::from_micros(1u64 << (LATENCY_BUCKETS - 1))
    }

    /// `(upper bound, commits)` for each non-empty bucket.
    pub fn buckets(&self) -> Vec<(Duration, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (Duration::from_micros(1u64 << i), *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_quantiles() {
        let m = Metrics::default();
        m.read(true);
        m.read(false);
        m.read(false);
        m.write();
        for us in [100u64, 200, 300, 5000] {
            m.commit(Duration::from_micros(us));
        }
        assert_eq!((m.reads(), m.overlay_hits(), m.store_reads()), (3, 1, 2));
        assert!((m.overlay_hit_ratio() - 1.0 / 3.0).abs() < 1e-9);
        let h = m.commit_latency();
        assert_eq!(h.count(), 4);
        assert_eq!(h.quantile(0.5), Duration::from_micros(256));
        assert_eq!(h.quantile(1.0), Duration::from_micros(8192));
        assert_eq!(h.mean(), Duration::from_micros(1400));
        m.reset();
        assert_eq!((m.reads(), m.commit_latency().count()), (0, 0));
    }
}

/// The data file's I/O since the handle opened (a snapshot: see [`crate::Nomt::io_stats`]).
/// The page counts cover the data file only; the rollback log and the free-list journal are
/// separate files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Page reads answered by the page cache.
    pub page_cache_hits: u64,
    /// Page reads that had to go to the file one at a time (cache misses).
    pub page_cache_misses: u64,
    /// Pages read into the cache ahead of use, many at a time (commits, warm-up).
    pub pages_read_ahead: u64,
    /// Pages read into the cache by the preload at open (see [`crate::Options::preload`]).
    pub pages_preloaded: u64,
    /// Reads of the preload that failed. The preload stops at the first; the handle is not
    /// poisoned (the pages may be free ones, which nothing else reads), and a read of the
    /// same pages by a reader or commit then meets the error itself.
    pub preload_read_errors: u64,
    /// Bytes read from the file by single reads, overflow extents and the preload (not
    /// read-ahead).
    pub bytes_read: u64,
    /// Bytes written to the data file.
    pub bytes_written: u64,
    /// `fdatasync` calls on the data file.
    pub data_syncs: u64,
}

impl IoStats {
    /// The share of page reads the cache answered (1 when there were none).
    pub fn page_cache_hit_ratio(&self) -> f64 {
        let all = self.page_cache_hits + self.page_cache_misses + self.pages_read_ahead;
        if all == 0 {
            1.0
        } else {
            self.page_cache_hits as f64 / all as f64
        }
    }
}
