//! Simulated power loss: random workloads (large values, deletes, rollbacks, reopens) on a
//! storage that loses power at a chosen sync; after each loss, unsynced writes are kept,
//! dropped, torn or garbled at random, the database is reopened, and it must be at the last
//! acknowledged commit or at the one in flight, with exactly that state's contents and root,
//! a working rollback log, and room to go on.
//!
//! `cargo test -p bmt --test crash` runs the CI campaign (at least 500 crash points). The
//! longer run: `BMT_CRASH_WORKLOADS=480 cargo test --release -p bmt --test crash -- --nocapture`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bmt::io::Storage;
use bmt::sim::{CrashStorage, LossMode, LossReport};
use bmt::{Error, Key, Nomt, Options};
use bmt_core::ReferenceTrie;

mod common;
use common::{Rng, State, root_of};

#[derive(Debug, Clone)]
enum Step {
    Commit(Vec<(Key, Option<Vec<u8>>)>),
    Rollback(u32),
    Reopen,
}

/// A random workload over a small key space (so that updates, deletes and subtrie collapses
/// are frequent), with values from empty to large.
fn workload(seed: u64, steps: usize) -> Vec<Step> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for _ in 0..steps {
        let step = match rng.below(12) {
            0 => Step::Rollback(1 + rng.below(3) as u32),
            1 => Step::Reopen,
            _ => {
                let n = 1 + rng.below(40) as usize;
                let changes = (0..n)
                    .map(|_| {
                        let mut k = [0u8; 31];
                        // Keys share long prefixes: 3 bits of the first byte vary, then the
                        // last byte.
                        k[0] = (rng.below(8) as u8) << 5;
                        k[30] = rng.below(64) as u8;
                        let key = Key(k);
                        let value = match rng.below(10) {
                            0 => None,
                            1 => Some(vec![rng.next() as u8; rng.below(200_000) as usize]),
                            2 => Some(Vec::new()),
                            _ => Some(vec![rng.next() as u8; 1 + rng.below(64) as usize]),
                        };
                        (key, value)
                    })
                    .collect();
                Step::Commit(changes)
            }
        };
        out.push(step);
    }
    out
}

/// The database is at the last of `states` with a full rollback window, and each rollback
/// goes one state back.
fn assert_rolls_back_through(db: &Nomt, states: &[State]) {
    assert_eq!(db.root(), root_of(states.last().unwrap()));
    assert_eq!(db.rollback_window(), RETAINED);
    for n in 1..=RETAINED as usize {
        db.rollback().unwrap();
        assert_eq!(
            db.root(),
            root_of(&states[states.len() - 1 - n]),
            "rollback {n}"
        );
    }
}

/// A commit of 30 changes of 60-byte values, among the single-key commits of the scripted
/// runs: its rollback record does not ride beside many carried ones, and it fills much of the
/// tests' 16 KiB write-ahead log.
fn large(i: u8) -> Step {
    Step::Commit(
        (0..30u8)
            .map(|j| (Key([j.wrapping_mul(7) ^ i; 31]), Some(vec![j ^ i; 60])))
            .collect(),
    )
}

fn apply(state: &State, changes: &[(Key, Option<Vec<u8>>)]) -> State {
    let mut next = state.clone();
    for (k, v) in changes {
        match v {
            Some(v) => next.insert(*k, v.clone()),
            None => next.remove(k),
        };
    }
    next
}

const RETAINED: u32 = 4;

/// The options of the runs: small commits go through a write-ahead log small enough that
/// it fills (and checkpoints) every few commits.
fn options(storage: &CrashStorage) -> Options {
    Options::new("/db")
        .storage(Arc::new(storage.clone()))
        .rollback_retained(RETAINED)
        .rollback_segment_size(64 * 1024)
        .elide_below(4)
        .write_ahead_log_size(16 * 1024)
}

/// The same without the write-ahead log: small commits are made durable in place, with one
/// sync (their meta record lists their pages and carries the rollback log's records).
fn options_in_place(storage: &CrashStorage) -> Options {
    options(storage).write_ahead_log(false)
}

/// How a run opens its database.
type Opts = fn(&CrashStorage) -> Options;

/// What the database acknowledged: the committed states, oldest first, and how many of the
/// newest can be rolled back.
#[derive(Debug, Clone)]
struct Model {
    history: Vec<State>,
    window: u32,
}

impl Model {
    fn current(&self) -> &State {
        self.history.last().expect("never empty")
    }

    fn after(&self, step: &Step) -> Option<Model> {
        let mut m = self.clone();
        match step {
            Step::Commit(changes) => {
                let next = apply(self.current(), changes);
                m.history.push(next);
                m.window = (m.window + 1).min(RETAINED);
            }
            Step::Rollback(n) => {
                if *n > self.window {
                    return None;
                }
                m.history.truncate(m.history.len() - *n as usize);
                m.window -= n;
            }
            Step::Reopen => return None,
        }
        Some(m)
    }
}

/// Runs `steps` until the power goes (at sync `crash_at`, 0: never). Returns the model of
/// what was acknowledged, the outcome of the step in flight (if it changes the state), and
/// every key touched.
fn run_until_crash(
    opts: Opts,
    storage: &CrashStorage,
    steps: &[Step],
    crash_at: u64,
) -> (Model, Option<Model>, BTreeSet<Key>) {
    storage.crash_at_sync(crash_at);
    let mut model = Model {
        history: vec![State::new()],
        window: 0,
    };
    let mut touched = BTreeSet::new();
    let mut db = match Nomt::open(opts(storage)) {
        Ok(db) => db,
        Err(e) => {
            assert!(storage.is_powered_off(), "open failed without a crash: {e}");
            return (model, None, touched);
        }
    };
    for step in steps {
        let result = match step {
            Step::Commit(changes) => {
                let mut r = Ok(());
                for (k, v) in changes {
                    touched.insert(*k);
                    r = match v {
                        Some(v) => db.insert(k, v),
                        None => db.delete(k),
                    };
                    if r.is_err() {
                        break;
                    }
                }
                r.and_then(|()| db.commit().map(|_| ()))
            }
            Step::Rollback(n) => match db.rollback_n(*n) {
                Err(Error::RollbackWindow { .. }) if *n > model.window => continue,
                r => r.map(|_| ()),
            },
            Step::Reopen => {
                let closed = db.close();
                drop(db);
                match closed.and_then(|()| Nomt::open(opts(storage))) {
                    Ok(d) => {
                        db = d;
                        continue;
                    }
                    Err(e) => {
                        assert!(
                            storage.is_powered_off(),
                            "reopen failed without a crash: {e}"
                        );
                        return (model, None, touched);
                    }
                }
            }
        };
        match result {
            Ok(()) => model = model.after(step).expect("a step that succeeded"),
            Err(e) => {
                assert!(
                    storage.is_powered_off(),
                    "{step:?} failed without a crash: {e}"
                );
                let in_flight = model.after(step);
                return (model, in_flight, touched);
            }
        }
    }
    storage.power_off();
    (model, None, touched)
}

/// Reopens the storage as recovered and checks it against the acknowledged model or the one
/// in flight. Returns the recovery's report.
#[allow(clippy::too_many_arguments)] // A test helper: each argument is one aspect of the check.
fn check_recovery(
    opts: Opts,
    storage: &CrashStorage,
    mode: LossMode,
    seed: u64,
    acked: &Model,
    in_flight: Option<&Model>,
    touched: &BTreeSet<Key>,
    context: &str,
) -> LossReport {
    let (recovered, report) = storage.recover(mode, seed);
    let db = Nomt::open(opts(&recovered))
        .unwrap_or_else(|e| panic!("{context}: reopening after the crash failed: {e}"));
    let root = db.root();
    // Both, when the step in flight left the state as it was (a commit that rewrote values
    // unchanged): the rollback log then tells them apart.
    let candidates: Vec<&Model> = std::iter::once(acked)
        .chain(in_flight)
        .filter(|m| root == root_of(m.current()))
        .collect();
    let Some(&model) = candidates.first() else {
        panic!(
            "{context}: the database opened at {root}, neither the acknowledged state nor the one in flight"
        );
    };
    let state = model.current();
    assert_eq!(db.key_count(), state.len() as u64, "{context}");
    for k in touched {
        assert_eq!(
            db.get(k).unwrap().as_ref(),
            state.get(k),
            "{context}: key {k}"
        );
    }
    // Proofs from disk agree with the reference.
    let reference = ReferenceTrie::new(state.iter().map(|(k, v)| (*k, v.clone())));
    for k in touched.iter().take(4) {
        assert_eq!(
            db.generate_proof(k).unwrap(),
            reference.prove(k),
            "{context}"
        );
    }
    // The rollback log matches the state it opened at.
    let window = db.rollback_window();
    let candidates: Vec<&Model> = candidates
        .into_iter()
        .filter(|m| m.window == window)
        .collect();
    assert!(
        !candidates.is_empty(),
        "{context}: rollback window {window}"
    );
    let mut model = candidates[0];
    if window > 0 {
        db.rollback()
            .unwrap_or_else(|e| panic!("{context}: rollback: {e}"));
        let previous = |m: &Model| root_of(&m.history[m.history.len() - 2]);
        model = candidates
            .iter()
            .copied()
            .find(|m| db.root() == previous(m))
            .unwrap_or_else(|| panic!("{context}: rollback went to {}", db.root()));
    }
    // And it goes on: a commit after recovery reuses free space correctly.
    let mut next = State::new();
    for k in touched.iter().take(8) {
        db.insert(k, b"after recovery").unwrap();
    }
    let base = if window > 0 {
        model.history[model.history.len() - 2].clone()
    } else {
        state.clone()
    };
    next.extend(base);
    for k in touched.iter().take(8) {
        next.insert(*k, b"after recovery".to_vec());
    }
    assert_eq!(
        db.commit().unwrap().root(),
        root_of(&next),
        "{context}: commit after recovery"
    );
    db.close().unwrap();
    report
}

/// Runs `workloads` random workloads, each crashed at `points` syncs spread over its run, each
/// crash recovered twice (random loss with two seeds). Returns crash points and recoveries.
fn campaign(first_seed: u64, workloads: u64, points: u64) -> (u64, LossReport) {
    let mut crash_points = 0;
    let mut total = LossReport::default();
    for w in 0..workloads {
        let seed = first_seed + w;
        let steps = workload(seed, 24);
        // Every other workload without the write-ahead log.
        let opts: Opts = if seed.is_multiple_of(2) {
            options
        } else {
            options_in_place
        };
        // A run without a crash gives the number of syncs.
        let dry = CrashStorage::new();
        run_until_crash(opts, &dry, &steps, 0);
        let syncs = dry.syncs();
        let mut rng = Rng(seed ^ 0xC0FFEE);
        for p in 0..points {
            // Spread over the run, plus one past the end (a crash after the last step).
            let at = if p == points - 1 {
                syncs + 1
            } else {
                1 + rng.below(syncs.max(1))
            };
            let storage = CrashStorage::new();
            let (acked, in_flight, touched) = run_until_crash(opts, &storage, &steps, at);
            for r in 0..2 {
                let context =
                    format!("workload {seed}, crash at sync {at} of {syncs}, loss seed {r}");
                let report = check_recovery(
                    opts,
                    &storage,
                    LossMode::Random,
                    seed * 1000 + at * 2 + r,
                    &acked,
                    in_flight.as_ref(),
                    &touched,
                    &context,
                );
                total.kept += report.kept;
                total.dropped += report.dropped;
                total.torn += report.torn;
                total.garbled += report.garbled;
            }
            crash_points += 1;
        }
    }
    (crash_points, total)
}

#[test]
fn power_loss_at_random_syncs_recovers_an_acknowledged_or_in_flight_state() {
    let workloads: u64 = std::env::var("BMT_CRASH_WORKLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    // `BMT_CRASH_FIRST=s` starts at workload seed `s` (to replay one that failed).
    let first: u64 = std::env::var("BMT_CRASH_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (points, report) = campaign(first, workloads, 21);
    println!("{points} crash points, unsynced writes after loss: {report:?}");
    assert!(points >= 500 || workloads < 25);
    assert!(report.dropped > 0 && report.torn > 0 && report.garbled > 0 && report.kept > 0);
}

#[test]
fn losing_every_unsynced_write_or_keeping_all_recovers_too() {
    for seed in 100..110 {
        let steps = workload(seed, 24);
        let opts: Opts = if seed.is_multiple_of(2) {
            options
        } else {
            options_in_place
        };
        let dry = CrashStorage::new();
        run_until_crash(opts, &dry, &steps, 0);
        for at in (1..=dry.syncs() + 1).step_by(5) {
            let storage = CrashStorage::new();
            let (acked, in_flight, touched) = run_until_crash(opts, &storage, &steps, at);
            for mode in [LossMode::DropAll, LossMode::KeepAll] {
                let context = format!("workload {seed}, crash at sync {at}, {mode:?}");
                check_recovery(
                    opts,
                    &storage,
                    mode,
                    0,
                    &acked,
                    in_flight.as_ref(),
                    &touched,
                    &context,
                );
            }
        }
    }
}

#[test]
fn small_commits_carry_their_log_records_and_a_power_loss_keeps_every_rollback() {
    let storage = CrashStorage::new();
    let db = Nomt::open(options_in_place(&storage)).unwrap();
    let mut states = vec![State::new()];
    let mut syncs_per_commit = Vec::new();
    for i in 0..12u8 {
        let key = Key([i.wrapping_mul(37); 31]);
        let value = vec![i; 1 + i as usize * 5];
        db.insert(key, &value).unwrap();
        let before = storage.syncs();
        db.commit().unwrap();
        syncs_per_commit.push(storage.syncs() - before);
        let mut next = states.last().unwrap().clone();
        next.insert(key, value);
        states.push(next);
    }
    // One sync per commit: the data file's. The log's records ride in the meta records.
    assert!(
        syncs_per_commit.iter().all(|&n| n == 1),
        "syncs per commit: {syncs_per_commit:?}"
    );
    // The power goes; every write not synced is lost, the log's records among them.
    storage.power_off();
    drop(db);
    let (recovered, _) = storage.recover(LossMode::DropAll, 0);
    // The log's segment was never synced, nor was its name.
    assert_eq!(
        recovered.list_dir(Path::new("/db/rollback")).unwrap(),
        Vec::<String>::new()
    );
    let db = Nomt::open(options_in_place(&recovered)).unwrap();
    assert_rolls_back_through(&db, &states);
    // The restored log is durable: another loss of everything unsynced changes nothing.
    db.close().unwrap();
    drop(db);
    recovered.power_off();
    let (again, _) = recovered.recover(LossMode::DropAll, 1);
    let db = Nomt::open(options_in_place(&again)).unwrap();
    assert_eq!(
        db.root(),
        root_of(&states[states.len() - 1 - RETAINED as usize])
    );
}

/// Small commits whose log records ride in their meta records, reopens between them (the
/// log's segment then exists, but nothing has synced its name), and commits whose records no
/// longer fit beside the carried ones (so they sync the log). The power is cut at every sync
/// of the run, and every unsynced write is lost, or kept, or treated at random: the database
/// opens at the last acknowledged commit or at the one in flight, and every rollback of its
/// window works.
#[test]
fn carried_log_records_survive_a_power_loss_at_any_sync() {
    let small = |i: u8| Step::Commit(vec![(Key([i; 31]), Some(vec![i; 1 + i as usize % 60]))]);
    let mut steps: Vec<Step> = (1..4).map(small).collect();
    steps.push(Step::Reopen);
    steps.push(large(1));
    steps.extend((4..18).map(small));
    steps.push(large(2));
    steps.extend((18..21).map(small));
    steps.push(Step::Reopen);
    steps.extend((21..36).map(small));
    let checked = crash_at_every_sync(options_in_place, &steps);
    assert!(checked >= 8 * 40, "{checked} recoveries");
}

/// Small commits made durable by the write-ahead log, which fills and checkpoints every few
/// commits; with rollbacks (made durable in place, with the logged commits' pages), larger
/// commits, reopens (which checkpoint), and values of every inline size. The power is cut at
/// every sync; every unsynced write is lost, kept, or treated at random. Open replays the
/// log: the database is at the last acknowledged commit or the one in flight, and every
/// rollback of its window works.
#[test]
fn logged_commits_survive_a_power_loss_at_any_sync() {
    let small = |i: u8| {
        Step::Commit(vec![
            (Key([i; 31]), Some(vec![i; i as usize * 3 % 200])),
            (
                Key([i.wrapping_mul(3); 31]),
                (!i.is_multiple_of(5)).then(|| vec![i; 8]),
            ),
        ])
    };
    let mut steps: Vec<Step> = (1..30).map(small).collect();
    steps.push(Step::Rollback(2));
    steps.extend((30..40).map(small));
    steps.push(Step::Reopen);
    steps.push(large(1));
    steps.extend((40..60).map(small));
    steps.push(Step::Rollback(1));
    steps.extend((60..70).map(small));
    let checked = crash_at_every_sync(options, &steps);
    assert!(checked >= 8 * 60, "{checked} recoveries");
}

/// Runs `steps`, crashed at each of its syncs in turn, and checks each crash recovered with
/// every unsynced write lost, with all kept, and with six random losses. Returns the
/// recoveries checked.
fn crash_at_every_sync(opts: Opts, steps: &[Step]) -> usize {
    let dry = CrashStorage::new();
    run_until_crash(opts, &dry, steps, 0);
    let syncs = dry.syncs();
    let mut checked = 0;
    for at in 1..=syncs + 1 {
        let storage = CrashStorage::new();
        let (acked, in_flight, _) = run_until_crash(opts, &storage, steps, at);
        let modes = [(LossMode::DropAll, 0), (LossMode::KeepAll, 0)]
            .into_iter()
            .chain((0..6).map(|r| (LossMode::Random, at * 10 + r)));
        for (mode, seed) in modes {
            let context = format!("crash at sync {at} of {syncs}, {mode:?} {seed}");
            let (recovered, _) = storage.recover(mode, seed);
            let db = Nomt::open(opts(&recovered))
                .unwrap_or_else(|e| panic!("{context}: reopening failed: {e}"));
            let window = db.rollback_window();
            let model = std::iter::once(&acked)
                .chain(in_flight.as_ref())
                .find(|m| db.root() == root_of(m.current()) && m.window == window)
                .unwrap_or_else(|| panic!("{context}: opened at {} (window {window})", db.root()));
            for n in 1..=window as usize {
                db.rollback()
                    .unwrap_or_else(|e| panic!("{context}: rollback {n}: {e}"));
                assert_eq!(
                    db.root(),
                    root_of(&model.history[model.history.len() - 1 - n]),
                    "{context}: rollback {n}"
                );
            }
            checked += 1;
        }
    }
    checked
}

/// With commits left unsynced (`durable_commits(false)`) and made durable by `sync`, the
/// sequence numbers of consecutive meta records do not alternate in parity. Every meta record
/// must still go to the slot that does not hold the record in force, or a power loss that
/// tears it would leave only an older record, whose pages later commits reused. The power is
/// cut at every sync, and unsynced writes are lost, kept or treated at random: the database
/// opens at the last synced state or at the one being synced.
#[test]
fn syncing_unsynced_commits_never_overwrites_the_meta_record_in_force() {
    let run = |storage: &CrashStorage, crash_at: u64| -> (Vec<State>, Option<State>) {
        storage.crash_at_sync(crash_at);
        let opts = options(storage).durable_commits(false);
        let mut synced = vec![State::new()];
        let Ok(db) = Nomt::open(opts) else {
            return (synced, None);
        };
        let mut state = State::new();
        let mut rng = Rng(7);
        for round in 0..12u64 {
            // One to three commits between syncs, so that the parity of the synced sequence
            // numbers varies.
            for _ in 0..1 + round % 3 {
                for _ in 0..1 + rng.below(20) {
                    let mut k = [0u8; 31];
                    k[0] = (rng.below(8) as u8) << 5;
                    k[30] = rng.below(64) as u8;
                    let v = vec![rng.next() as u8; 1 + rng.below(64) as usize];
                    if db.insert(Key(k), &v).is_err() {
                        return (synced, None);
                    }
                    state.insert(Key(k), v);
                }
                if db.commit().is_err() {
                    return (synced, None);
                }
            }
            match db.sync() {
                Ok(()) => synced.push(state.clone()),
                Err(_) => return (synced, Some(state)),
            }
        }
        storage.power_off();
        (synced, None)
    };
    let dry = CrashStorage::new();
    run(&dry, 0);
    let syncs = dry.syncs();
    for at in 1..=syncs + 1 {
        let storage = CrashStorage::new();
        let (synced, in_flight) = run(&storage, at);
        let acked = synced.last().expect("never empty");
        for seed in 0..12 {
            let (recovered, _) = storage.recover(LossMode::Random, at * 100 + seed);
            let db = Nomt::open(options(&recovered).durable_commits(false))
                .unwrap_or_else(|e| panic!("crash at sync {at}, seed {seed}: reopening: {e}"));
            let root = db.root();
            assert!(
                root == root_of(acked) || in_flight.as_ref().is_some_and(|s| root == root_of(s)),
                "crash at sync {at} of {syncs}, seed {seed}: opened at {root}, not the last \
                 synced state (of {} syncs) nor the one being synced",
                synced.len() - 1
            );
        }
    }
}

/// A small commit writes nothing to the data file and syncs once (its log record); a
/// checkpoint writes the pages of many; a power loss that drops every unsynced write keeps
/// every acknowledged commit, also when the database is reopened without the log, and the
/// rollback window with it.
#[test]
fn a_logged_commit_syncs_only_its_record_and_survives_a_power_loss() {
    let storage = CrashStorage::new();
    let db = Nomt::open(options(&storage)).unwrap();
    let mut states = vec![State::new()];
    let mut logged = 0;
    for i in 0..200u32 {
        let key = Key([(i % 50) as u8; 31]);
        let value = i.to_le_bytes().repeat(1 + i as usize % 8);
        db.insert(key, &value).unwrap();
        let (io, syncs) = (db.io_stats(), storage.syncs());
        db.commit().unwrap();
        let after = db.io_stats();
        if after.bytes_written == io.bytes_written {
            // Logged: one sync, of the log.
            assert_eq!(storage.syncs() - syncs, 1, "commit {i}");
            assert_eq!(after.data_syncs, io.data_syncs, "commit {i}");
            logged += 1;
        }
        let mut next = states.last().unwrap().clone();
        next.insert(key, value);
        states.push(next);
    }
    // Most were logged; the log (16 KiB) filled and checkpointed several times.
    assert!((150..200).contains(&logged), "{logged} of 200 logged");
    storage.power_off();
    drop(db);
    let (recovered, _) = storage.recover(LossMode::DropAll, 0);
    let db = Nomt::open(options_in_place(&recovered)).unwrap();
    assert_rolls_back_through(&db, &states);
}

/// A commit made durable in place right after logged ones writes their kept pages with its
/// own, and some of those it has itself replaced: they are free once it is durable, and the
/// next commit may write over them. Its meta record must therefore not list them (as a
/// one-sync record would), or a power loss during that next commit, which leaves the older
/// record in force, finds it incomplete too, and no state opens. The power is cut at every
/// sync of logged commits each followed by a rollback (made durable in place) and a commit
/// of an out-of-line value (in place too).
#[test]
fn a_commit_in_place_after_logged_ones_survives_a_power_loss_at_any_sync() {
    let mut steps = vec![Step::Commit(
        (0..30u8)
            .map(|i| (Key([i; 31]), Some(vec![i; 40])))
            .collect(),
    )];
    for i in 0..6u8 {
        steps.push(Step::Commit(vec![(Key([i; 31]), Some(vec![i ^ 0x55; 20]))]));
        steps.push(Step::Commit(vec![(Key([i + 6; 31]), None)]));
        steps.push(Step::Rollback(1));
        steps.push(Step::Commit(vec![(Key([i + 12; 31]), Some(vec![i; 9000]))]));
    }
    let checked = crash_at_every_sync(options, &steps);
    assert!(checked >= 8 * 20, "{checked} recoveries");
}
