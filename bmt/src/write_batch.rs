//! A group of writes (or reads ahead) handed to the I/O threads, that one thread waits for
//! together: a countdown latch that also keeps the first error.
//!
//! It is the one latch in the engine built by hand from a mutex and a condition variable
//! (everything else is a plain lock, a one-shot atomic flag, or the preload's "finished"
//! flag, set once), so it is model-checked with loom: `RUSTFLAGS="--cfg loom" cargo test -p bmt --lib write_batch`
//! explores every interleaving of submitters, I/O threads and the waiter.

#[cfg(loom)]
use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
use parking_lot::{Condvar, Mutex, MutexGuard};

/// Jobs not finished, and the first error.
type State = (usize, Option<std::io::Error>);

#[cfg(not(loom))]
fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock()
}

#[cfg(loom)]
fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().expect("not poisoned")
}

/// A group of jobs to wait for together.
#[derive(Debug, Default)]
pub struct WriteBatch {
    state: Mutex<State>,
    done: Condvar,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> std::sync::Arc<WriteBatch> {
        std::sync::Arc::new(WriteBatch::default())
    }

    /// One more job belongs to the batch (before it is handed to a thread).
    pub fn add(&self) {
        lock(&self.state).0 += 1;
    }

    /// One job of the batch is done (with its error, if it failed).
    pub fn complete(&self, error: Option<std::io::Error>) {
        let mut state = lock(&self.state);
        state.0 -= 1;
        if let Some(e) = error
            && state.1.is_none()
        {
            state.1 = Some(e);
        }
        if state.0 == 0 {
            self.done.notify_all();
        }
    }

    /// Waits until every job added so far is done; returns the first error.
    pub fn wait(&self) -> Option<std::io::Error> {
        let mut state = lock(&self.state);
        while state.0 > 0 {
            #[cfg(not(loom))]
            self.done.wait(&mut state);
            #[cfg(loom)]
            {
                state = self.done.wait(state).expect("not poisoned");
            }
        }
        state.1.take()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::WriteBatch;
    use loom::sync::Arc;
    use loom::thread;

    /// Two jobs completed by two threads (one failing): the waiter returns only after both,
    /// and always sees the error.
    #[test]
    fn the_waiter_sees_every_job_done_and_the_error() {
        loom::model(|| {
            let batch = Arc::new(WriteBatch::default());
            let finished = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
            let mut threads = Vec::new();
            for fail in [false, true] {
                batch.add();
                let (batch, finished) = (batch.clone(), finished.clone());
                threads.push(thread::spawn(move || {
                    finished.fetch_add(1, loom::sync::atomic::Ordering::SeqCst);
                    batch.complete(fail.then(|| std::io::Error::other("EIO")));
                }));
            }
            let error = batch.wait();
            assert_eq!(finished.load(loom::sync::atomic::Ordering::SeqCst), 2);
            assert!(error.is_some());
            for t in threads {
                t.join().expect("joined");
            }
        });
    }

    /// A batch with nothing in it does not block; one reused after a wait starts afresh.
    #[test]
    fn an_empty_or_reused_batch() {
        loom::model(|| {
            let batch = Arc::new(WriteBatch::default());
            assert!(batch.wait().is_none());
            batch.add();
            let b = batch.clone();
            let t = thread::spawn(move || b.complete(None));
            assert!(batch.wait().is_none());
            t.join().expect("joined");
        });
    }
}
