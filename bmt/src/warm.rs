//! Warm-up: reading, on a thread of its own, the pages that staged writes will need when they
//! are committed.
//!
//! A commit of a batch of writes first looks up every written key: its flat-store leaf (for
//! the old value) and the stored trie pages on its path. On a state larger than the page
//! cache, most of those are device reads, and the commit waits for them. With warm-up on
//! ([`crate::Options::warm_up`]), every key written on the handle or in a write session is
//! also handed to this thread, which reads those pages into the cache many at a time while
//! the caller goes on staging (or reading: a block's transactions read accounts one by one,
//! each a device read, and the pages for the writes come in meanwhile). The commit then
//! finds them cached. Nothing is computed here that the commit relies on: this thread only
//! fills the cache, so a key whose pages are not read in time (or are evicted again) costs
//! the commit its read, as without warm-up.
//!
//! The thread must cost the writer next to nothing, and take no CPU from commits when it
//! cannot help, which shaped these choices:
//!
//! - While the thread finds less than one page missing per [`WORTHWHILE`] keys looked up (a
//!   state that fits in the cache), it looks up only one key in [`SAMPLE_EVERY`], until a
//!   sample finds a page missing again; and the writer then hands keys over [`HINT_BATCH`]
//!   at a time, so that the thread is woken once per batch, not once per write. While the
//!   look-ups do find pages missing, each key is handed over at once: a batch would become
//!   a burst of device reads, and a read of the writer's own (a transfer reading an
//!   account) would wait behind it (measured at 2^24 keys: read p99 1,057 µs against 184).
//! - A commit makes the hints staged before it stale ([`WarmUp::commit_started`]): the
//!   commit reads whatever is still missing itself, many pages at a time, and a thread still
//!   reading for those keys would only compete with it for the cores and the device. Stale
//!   hints, and the keys not yet handed over, are dropped. The round being read when the
//!   commit starts is finished first, and the commit waits for it: its pages are the
//!   commit's, and looked up meanwhile, those still in flight would be read twice.
//! - A full queue drops the hint: hints never block the writer.
//!
//! The keys are read against the state committed last, in sorted rounds of those waiting. An I/O error on the data file
//! poisons the handle, as it would in the commit (see the pager); a closed or poisoned
//! handle reads nothing more.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};

use bmt_core::Key;
use parking_lot::Mutex;

use crate::db::Inner;

/// Keys gathered before they are handed to the thread, while its look-ups find everything
/// cached.
const HINT_BATCH: usize = 64;

/// Hand-overs queued at most: a little more than a large block's writes, one at a time.
const QUEUE: usize = 1 << 16;

/// Keys read per round at most.
const ROUND: usize = 4096;

/// Full look-ups go on while at least one page is read per this many keys looked up.
const WORTHWHILE: u64 = 64;

/// Keys looked up in full before [`WORTHWHILE`] is judged again.
const JUDGE_AFTER: u64 = 256;

/// While look-ups find (almost) everything cached, one key in this many is looked up.
const SAMPLE_EVERY: usize = 32;

/// Makes the calling thread (the warm-up's) run only on a core nothing else wants
/// (`SCHED_IDLE` on Linux). Its look-ups are CPU work while the writer mostly waits for the
/// device (a block's transactions reading accounts one by one), and a writer whose read has
/// just completed must not wait for a core behind it: measured at 2^24 keys (transfer),
/// the writer's reads took 21.7 µs at the median with warm-up on, 20.1 µs without. A
/// commit that waits for the round being read leaves a core idle, so the round still ends.
fn yield_to_other_threads() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` with pid 0 changes only the calling thread's policy; the
        // parameter is a valid `sched_param` that outlives the call. A failure leaves the
        // thread as it was, which is only slower for the writer.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    }
}

/// A batch of keys and the commit count when they were staged.
type Batch = (u64, Vec<Key>);

/// The writer's side of the thread.
#[derive(Debug, Default)]
pub(crate) struct WarmUp {
    queue: Mutex<Queue>,
    shared: Arc<Shared>,
}

/// What the writer's side and the thread both see.
#[derive(Debug)]
struct Shared {
    /// Commits started so far: keys staged before the last one are stale.
    epoch: AtomicU64,
    /// Whether the thread's look-ups find pages missing (see [`WORTHWHILE`]).
    worthwhile: AtomicBool,
    /// Held by the thread while it reads a round.
    reading: Mutex<()>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            epoch: AtomicU64::new(0),
            worthwhile: AtomicBool::new(true),
            reading: Mutex::new(()),
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    sender: Option<SyncSender<Batch>>,
    /// Keys not yet handed over.
    pending: Vec<Key>,
}

impl WarmUp {
    /// Starts the thread for the database `db` (held weakly: the thread ends when the
    /// database does). If the thread cannot be started, warm-up stays off.
    pub(crate) fn start(&self, db: Weak<Inner>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Batch>(QUEUE);
        let shared = self.shared.clone();
        let started = std::thread::Builder::new()
            .name("bmt-warm-up".into())
            .spawn(move || {
                yield_to_other_threads();
                run(db, &shared, receiver)
            })
            .is_ok();
        self.queue.lock().sender = started.then_some(sender);
    }

    /// Queues `key`, whose pages a commit will need; dropped if the queue is full.
    pub(crate) fn hint(&self, key: Key) {
        let mut queue = self.queue.lock();
        if queue.sender.is_none() {
            return;
        }
        queue.pending.push(key);
        if queue.pending.len() < HINT_BATCH && !self.shared.worthwhile.load(Ordering::Relaxed) {
            return;
        }
        let keys = std::mem::take(&mut queue.pending);
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        if let Some(s) = queue.sender.as_ref()
            && let Err(TrySendError::Disconnected(_)) = s.try_send((epoch, keys))
        {
            queue.sender = None;
        }
    }

    /// A commit has taken the staged changes: their hints are stale. Returns once the round
    /// the thread may be reading is done: its pages are the commit's, and a commit looking
    /// them up meanwhile would read from the device the pages still in flight a second time
    /// (measured at 2^24 keys: up to 4,700 of 15,000 leaf reads in a 10,000-update commit).
    pub(crate) fn commit_started(&self) {
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        self.queue.lock().pending.clear();
        drop(self.shared.reading.lock());
    }

    /// Ends the thread (after the round it is reading).
    pub(crate) fn stop(&self) {
        let mut queue = self.queue.lock();
        queue.sender = None;
        queue.pending = Vec::new();
    }
}

/// The thread's choice of keys: stale ones dropped, all or a sample of the rest looked up,
/// and whether look-ups are worthwhile judged from what they read.
#[derive(Debug, Default)]
struct Policy {
    /// Keys looked up, and pages they read, since the last judgement.
    looked: u64,
    read: u64,
    /// Keys seen while sampling, to pick one in SAMPLE_EVERY.
    seen: usize,
}

impl Policy {
    /// Adds to `round` the keys of `batch` to look up.
    fn take(&mut self, shared: &Shared, (staged, keys): Batch, round: &mut Vec<Key>) {
        if staged != shared.epoch.load(Ordering::Acquire) {
            return;
        }
        if shared.worthwhile.load(Ordering::Relaxed) {
            round.extend_from_slice(&keys);
            return;
        }
        for key in keys {
            if self.seen.is_multiple_of(SAMPLE_EVERY) {
                round.push(key);
            }
            self.seen = self.seen.wrapping_add(1);
        }
    }

    /// Judges again after `looked` keys read `read` pages: sampling goes back to full
    /// look-ups at a sample's first miss; full look-ups go back to sampling once a few
    /// hundred keys have found too little missing.
    fn looked_up(&mut self, shared: &Shared, looked: usize, read: u64) {
        self.looked += looked as u64;
        self.read += read;
        let judged = if shared.worthwhile.load(Ordering::Relaxed) {
            (self.looked >= JUDGE_AFTER).then(|| self.read * WORTHWHILE >= self.looked)
        } else {
            (self.read > 0).then_some(true)
        };
        if let Some(next) = judged {
            shared.worthwhile.store(next, Ordering::Relaxed);
            (self.looked, self.read) = (0, 0);
        }
    }
}

fn run(db: Weak<Inner>, shared: &Shared, batches: Receiver<Batch>) {
    let mut policy = Policy::default();
    while let Ok(first) = batches.recv() {
        let mut round = Vec::with_capacity(ROUND);
        let epoch = shared.epoch.load(Ordering::Acquire);
        policy.take(shared, first, &mut round);
        while round.len() < ROUND {
            match batches.try_recv() {
                Ok(batch) => policy.take(shared, batch, &mut round),
                Err(_) => break,
            }
        }
        if round.is_empty() {
            continue;
        }
        let Some(db) = db.upgrade() else {
            return;
        };
        if db.check_usable().is_err() {
            continue;
        }
        round.sort_unstable();
        round.dedup();
        let reading = shared.reading.lock();
        // A commit that started since the round was taken has made it stale.
        if shared.epoch.load(Ordering::Acquire) != epoch {
            continue;
        }
        let version = db.version();
        let before = db.pages_read_ahead();
        // Errors are the foreground's to report: an I/O error has poisoned the handle
        // already, and a damaged page fails the commit's own read of it.
        let _ = db.read_ahead(&version, &round);
        let read = db.pages_read_ahead() - before;
        drop(reading);
        drop(db);
        policy.looked_up(shared, round.len(), read);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> Key {
        let mut k = [0u8; 31];
        k[..8].copy_from_slice(&i.to_be_bytes());
        Key(k)
    }

    /// A writer's side with a queue but no thread: what it hands over is received here.
    fn writer() -> (WarmUp, Receiver<Batch>) {
        let warm = WarmUp::default();
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
        warm.queue.lock().sender = Some(sender);
        (warm, receiver)
    }

    #[test]
    fn a_commit_waits_for_the_round_being_read() {
        let (warm, _handed) = writer();
        let reading = warm.shared.reading.lock();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                warm.commit_started();
                done.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            // The round is still being read (the lock is held): the commit has not started.
            assert!(!done.load(Ordering::SeqCst));
            drop(reading);
        });
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(warm.shared.epoch.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn keys_are_handed_over_at_once_while_look_ups_find_pages_missing() {
        let (warm, handed) = writer();
        warm.hint(key(1));
        warm.hint(key(2));
        assert_eq!(handed.try_recv().unwrap(), (0, vec![key(1)]));
        assert_eq!(handed.try_recv().unwrap(), (0, vec![key(2)]));
        assert!(handed.try_recv().is_err());
    }

    #[test]
    fn keys_are_handed_over_in_batches_while_everything_is_cached() {
        let (warm, handed) = writer();
        warm.shared.worthwhile.store(false, Ordering::Relaxed);
        for i in 0..HINT_BATCH as u64 - 1 {
            warm.hint(key(i));
        }
        assert!(handed.try_recv().is_err(), "nothing before a whole batch");
        warm.hint(key(1000));
        let (epoch, keys) = handed.try_recv().unwrap();
        assert_eq!((epoch, keys.len()), (0, HINT_BATCH));
        assert_eq!(keys[HINT_BATCH - 1], key(1000));
    }

    #[test]
    fn a_commit_drops_the_keys_staged_before_it() {
        let (warm, handed) = writer();
        warm.shared.worthwhile.store(false, Ordering::Relaxed);
        for i in 0..10 {
            warm.hint(key(i));
        }
        warm.commit_started();
        for i in 0..HINT_BATCH as u64 {
            warm.hint(key(100 + i));
        }
        let batch = handed.try_recv().unwrap();
        assert_eq!(batch.0, 1, "staged after the first commit");
        assert_eq!(
            batch.1,
            (0..HINT_BATCH as u64)
                .map(|i| key(100 + i))
                .collect::<Vec<_>>()
        );
        // On the thread's side, batches staged before a later commit are skipped.
        let mut policy = Policy::default();
        let mut round = Vec::new();
        warm.shared.worthwhile.store(true, Ordering::Relaxed);
        policy.take(&warm.shared, (1, vec![key(5)]), &mut round);
        warm.commit_started();
        policy.take(&warm.shared, (1, vec![key(6)]), &mut round);
        policy.take(&warm.shared, (2, vec![key(7)]), &mut round);
        assert_eq!(round, vec![key(5), key(7)]);
    }

    #[test]
    fn look_ups_that_find_everything_cached_fall_back_to_a_sample() {
        let shared = Shared::default();
        let mut policy = Policy::default();
        let all: Vec<Key> = (0..JUDGE_AFTER).map(key).collect();
        // Enough pages missing: full look-ups go on.
        let mut round = Vec::new();
        policy.take(&shared, (0, all.clone()), &mut round);
        assert_eq!(round.len(), all.len());
        policy.looked_up(&shared, round.len(), JUDGE_AFTER / WORTHWHILE);
        assert!(shared.worthwhile.load(Ordering::Relaxed));
        // Too few: not judged before JUDGE_AFTER keys, then sampling.
        policy.looked_up(&shared, all.len() - 1, 0);
        assert!(shared.worthwhile.load(Ordering::Relaxed));
        policy.looked_up(&shared, 1, 3);
        assert!(!shared.worthwhile.load(Ordering::Relaxed));
        let mut sample = Vec::new();
        for chunk in all.chunks(HINT_BATCH) {
            policy.take(&shared, (0, chunk.to_vec()), &mut sample);
        }
        assert_eq!(sample.len(), all.len().div_ceil(SAMPLE_EVERY));
        assert_eq!(sample[1], all[SAMPLE_EVERY]);
        // A sample with nothing missing keeps sampling; the first miss ends it.
        policy.looked_up(&shared, sample.len(), 0);
        assert!(!shared.worthwhile.load(Ordering::Relaxed));
        policy.looked_up(&shared, 1, 1);
        assert!(shared.worthwhile.load(Ordering::Relaxed));
    }
}
