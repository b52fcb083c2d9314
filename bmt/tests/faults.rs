//! Injected I/O faults: EIO, ENOSPC, short writes and failed syncs at every kind of I/O site
//! (reads, writes, syncs, opens, removals), in turn at each call of a workload of commits,
//! rollbacks, reads, proofs and reopens. The call that meets the fault fails with a typed
//! error (never a panic), the handle is poisoned (later calls fail with `Error::Poisoned`),
//! and reopening (with the files as they are, and after a power loss too) finds the last
//! acknowledged state or the one in flight, nothing else.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bmt::io::Storage;
use bmt::sim::{CrashStorage, Fault, FaultStorage, LossMode, Site};
use bmt::{Error, Hash, Key, Nomt, Options};
use bmt_core::ReferenceTrie;

type State = BTreeMap<Key, Vec<u8>>;

fn root_of(state: &State) -> Hash {
    ReferenceTrie::new(state.iter().map(|(k, v)| (*k, v.clone()))).root()
}

#[derive(Debug, Clone)]
enum Step {
    Commit(Vec<(Key, Option<Vec<u8>>)>),
    Rollback,
    Read(Key),
    Reopen,
}

fn workload() -> Vec<Step> {
    let key = |i: u8| {
        let mut k = [0u8; 31];
        k[0] = i % 4;
        k[30] = i;
        Key(k)
    };
    let mut steps = Vec::new();
    for round in 0..8u8 {
        let changes = (0..12u8)
            .map(|i| {
                let k = key(round.wrapping_mul(7).wrapping_add(i * 3) % 40);
                let v = match (round + i) % 7 {
                    0 => None,
                    // Out-of-line values in even rounds only: the commits of odd rounds
                    // go through the write-ahead log.
                    1 if round % 2 == 0 => Some(vec![round; 70_000]),
                    _ => Some(vec![round ^ i; 1 + i as usize * 5]),
                };
                (k, v)
            })
            .collect();
        steps.push(Step::Commit(changes));
        steps.push(Step::Read(key(round * 5 % 40)));
        if round % 3 == 1 {
            steps.push(Step::Rollback);
        }
        if round % 4 == 2 {
            steps.push(Step::Reopen);
        }
    }
    steps
}

fn options(storage: Arc<dyn Storage>) -> Options {
    Options::new("/db")
        .storage(storage)
        .rollback_retained(3)
        .rollback_segment_size(32 * 1024)
        .elide_below(4)
        // A small write-ahead log: it fills, and checkpoints, within the workload.
        .write_ahead_log_size(8 * 1024)
        // Faults are chosen by call number: no thread of its own may read meanwhile (the
        // preload's failures are tested in preload.rs).
        .preload(false)
}

/// Runs the workload on `storage`; returns the acknowledged state, the state the step in
/// flight would give (if it changes the state), and the error it met.
fn run(storage: &FaultStorage, steps: &[Step]) -> (Vec<State>, Option<State>, Option<Error>) {
    let mut history = vec![State::new()];
    let open = || Nomt::open(options(Arc::new(storage.clone())));
    let mut db = match open() {
        Ok(db) => db,
        Err(e) => return (history, None, Some(e)),
    };
    for step in steps {
        let current = history.last().unwrap().clone();
        let result: Result<(), Error> = match step {
            Step::Commit(changes) => {
                let mut next = current.clone();
                let r = changes
                    .iter()
                    .try_for_each(|(k, v)| match v {
                        Some(v) => {
                            next.insert(*k, v.clone());
                            db.insert(k, v)
                        }
                        None => {
                            next.remove(k);
                            db.delete(k)
                        }
                    })
                    .and_then(|()| db.commit().map(|_| ()));
                match r {
                    Ok(()) => {
                        history.push(next);
                        Ok(())
                    }
                    Err(e) => return (history, Some(next), Some(e)),
                }
            }
            Step::Rollback => match db.rollback() {
                Ok(_) => {
                    history.pop();
                    Ok(())
                }
                Err(e) => {
                    let mut h = history.clone();
                    h.pop();
                    let back = h.last().cloned();
                    return (history, back, Some(e));
                }
            },
            Step::Read(k) => db
                .get(k)
                .map(|v| assert_eq!(v.as_ref(), current.get(k)))
                .and_then(|()| db.generate_proof(k).map(|_| ())),
            Step::Reopen => {
                let r = db.close();
                drop(db);
                match r.and_then(|()| open()) {
                    Ok(d) => {
                        db = d;
                        Ok(())
                    }
                    Err(e) => return (history, None, Some(e)),
                }
            }
        };
        if let Err(e) = result {
            // The handle is poisoned: everything fails fast now.
            assert!(
                matches!(db.insert([9u8; 31], b"x"), Err(Error::Poisoned)),
                "not poisoned after {e}"
            );
            assert!(matches!(db.commit(), Err(Error::Poisoned)));
            return (history, None, Some(e));
        }
    }
    (history, None, None)
}

fn check_reopen(
    storage: Arc<dyn Storage>,
    acked: &State,
    in_flight: Option<&State>,
    context: &str,
) {
    let db =
        Nomt::open(options(storage)).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    let root = db.root();
    let state = if root == root_of(acked) {
        acked
    } else {
        match in_flight {
            Some(s) if root == root_of(s) => s,
            _ => panic!("{context}: reopened at {root}: neither acknowledged nor in flight"),
        }
    };
    assert_eq!(db.key_count(), state.len() as u64, "{context}");
    for (k, v) in state {
        assert_eq!(db.get(k).unwrap().as_ref(), Some(v), "{context}");
    }
    db.check(&mut |_| {})
        .unwrap_or_else(|e| panic!("{context}: check after reopen: {e}"));
}

#[test]
fn every_fault_at_every_site_fails_cleanly_and_recovers() {
    let steps = workload();
    let dry = FaultStorage::new(Arc::new(CrashStorage::new()));
    let (history, _, error) = run(&dry, &steps);
    assert!(
        error.is_none(),
        "the workload fails without faults: {error:?}"
    );
    assert_eq!(history.len(), 1 + 8 - 3);
    let calls = dry.calls();
    let by_site = dry.calls_by_site();
    for site in [
        Site::Read,
        Site::Write,
        Site::Sync,
        Site::Open,
        Site::Remove,
    ] {
        assert!(
            by_site.get(&site).copied().unwrap_or(0) > 0,
            "no {site:?} calls"
        );
    }
    let mut failed_at: HashMap<(Site, &str), u64> = HashMap::new();
    let mut runs = 0;
    for n in 1..=calls {
        for (fault, name) in [
            (Fault::Eio, "EIO"),
            (Fault::NoSpace, "ENOSPC"),
            (Fault::ShortWrite, "short write"),
            (Fault::FailedSync, "failed sync"),
        ] {
            // Every call gets EIO; the other faults every third call (they matter for writes
            // and syncs only, and those are most of the calls anyway).
            if fault != Fault::Eio && n % 3 != 0 {
                continue;
            }
            let crash = CrashStorage::new();
            let storage = FaultStorage::new(Arc::new(crash.clone()));
            storage.fail_at(n, fault);
            let (history, in_flight, error) = run(&storage, &steps);
            let site = storage.failed_site().expect("the fault happened");
            let error = error.unwrap_or_else(|| {
                panic!(
                    "call {n} ({site:?}, {name}): no error; the call:\n{}",
                    storage.failed_backtrace().unwrap_or_default()
                )
            });
            assert!(
                matches!(error, Error::Io { .. }),
                "call {n} ({site:?}, {name}): {error}"
            );
            *failed_at.entry((site, name)).or_default() += 1;
            let context = format!("call {n} of {calls} ({site:?}, {name})");
            let acked = history.last().unwrap();
            // The process goes on: the files as they are.
            check_reopen(Arc::new(crash.clone()), acked, in_flight.as_ref(), &context);
            // Or the power goes right after the failure.
            let (lost, _) = crash.recover(LossMode::DropAll, 0);
            check_reopen(
                Arc::new(lost),
                acked,
                in_flight.as_ref(),
                &format!("{context}, power loss"),
            );
            runs += 1;
        }
    }
    println!("{runs} runs over {calls} calls: {failed_at:?}");
    for site in [
        Site::Read,
        Site::Write,
        Site::Sync,
        Site::Open,
        Site::Remove,
    ] {
        assert!(failed_at.contains_key(&(site, "EIO")), "no EIO at {site:?}");
    }
}
