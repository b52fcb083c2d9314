//! Process kills: a supervisor starts a writer process on a real database directory, kills it
//! with SIGKILL at a random moment during its commits and rollbacks, reopens the directory and
//! checks it against a model: no acknowledged step lost, the step in flight all or nothing,
//! contents and root exactly the model's, the rollback window right. Then it starts a new
//! writer from there, and again.
//!
//! The writer is this test binary run again (test `writer_child`, which does nothing unless
//! `BMT_KILL_DIR` is set). `cargo test -p bmt --test kill` runs the CI campaign (50 kills); the
//! longer run: `BMT_KILLS=1000 cargo test --release -p bmt --test kill -- --nocapture`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bmt::{Key, Nomt, Options};

mod common;
use common::{Rng, State, root_of};

#[derive(Debug, Clone)]
enum Step {
    Commit(Vec<(Key, Option<Vec<u8>>)>),
    /// Roll back this many commits, if the window holds them (else nothing).
    Rollback(u32),
}

/// Step `i` of the workload: the same in the writer and the supervisor.
fn step(seed: u64, i: u64) -> Step {
    let mut rng = Rng(seed ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D));
    if rng.below(8) == 0 {
        return Step::Rollback(1 + rng.below(3) as u32);
    }
    let n = 1 + rng.below(300) as usize;
    Step::Commit(
        (0..n)
            .map(|_| {
                let mut k = [0u8; 31];
                k[0] = rng.below(4) as u8;
                k[1..3].copy_from_slice(&(rng.below(500) as u16).to_be_bytes());
                let value = match rng.below(20) {
                    0 | 1 => None,
                    2 => Some(vec![rng.next() as u8; rng.below(100_000) as usize]),
                    _ => Some(vec![rng.next() as u8; 1 + rng.below(80) as usize]),
                };
                (Key(k), value)
            })
            .collect(),
    )
}

const RETAINED: u32 = 8;

fn options(dir: &Path) -> Options {
    Options::new(dir)
        .rollback_retained(RETAINED)
        .rollback_segment_size(1 << 20)
        .page_cache_size(16 << 20)
}

#[derive(Debug, Clone)]
struct Model {
    history: Vec<State>,
    window: u32,
}

impl Model {
    fn current(&self) -> &State {
        self.history.last().expect("never empty")
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Commit(changes) => {
                let mut next = self.current().clone();
                for (k, v) in changes {
                    match v {
                        Some(v) => next.insert(*k, v.clone()),
                        None => next.remove(k),
                    };
                }
                self.history.push(next);
                self.window = (self.window + 1).min(RETAINED);
                // Only the states a rollback can return to are needed.
                if self.history.len() > RETAINED as usize + 1 {
                    self.history.remove(0);
                }
            }
            Step::Rollback(n) => {
                if *n <= self.window {
                    self.history.truncate(self.history.len() - *n as usize);
                    self.window -= n;
                }
            }
        }
    }
}

/// The writer: runs steps from `BMT_KILL_FROM` until killed, printing `ACK <i>` after each.
#[test]
fn writer_child() {
    let Ok(dir) = std::env::var("BMT_KILL_DIR") else {
        return;
    };
    let seed: u64 = std::env::var("BMT_KILL_SEED").unwrap().parse().unwrap();
    let from: u64 = std::env::var("BMT_KILL_FROM").unwrap().parse().unwrap();
    let db = Nomt::open(options(Path::new(&dir))).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "OPEN {}", db.root()).unwrap();
    out.flush().unwrap();
    for i in from.. {
        match step(seed, i) {
            Step::Commit(changes) => {
                for (k, v) in &changes {
                    match v {
                        Some(v) => db.insert(k, v).unwrap(),
                        None => db.delete(k).unwrap(),
                    }
                }
                db.commit().unwrap();
            }
            Step::Rollback(n) => {
                if n <= db.rollback_window() {
                    db.rollback_n(n).unwrap();
                }
            }
        }
        writeln!(out, "ACK {i} {}", db.root()).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn killed_writers_lose_nothing_acknowledged() {
    let kills: u64 = std::env::var("BMT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed = 7;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(99);
    let mut model = Model {
        history: vec![State::new()],
        window: 0,
    };
    // Every key the workload can touch, to check that nothing else is readable.
    let mut touched: std::collections::BTreeSet<Key> = Default::default();
    let mut next_step = 0u64;
    let mut in_flight_recovered = 0;
    for kill in 0..kills {
        let mut child = Command::new(&exe)
            .args(["writer_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("BMT_KILL_DIR", dir.path())
            .env("BMT_KILL_SEED", seed.to_string())
            .env("BMT_KILL_FROM", next_step.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Let it acknowledge a few steps, then kill it at a random moment of the next ones.
        let acks = rng.below(4);
        let mut acked = 0;
        while acked <= acks {
            let line = lines.next().expect("the writer stopped").unwrap();
            if let Some(rest) = line.strip_prefix("ACK ") {
                let mut parts = rest.split(' ');
                let i: u64 = parts.next().unwrap().parse().unwrap();
                let root = parts.next().unwrap().to_string();
                assert_eq!(i, next_step, "kill {kill}: steps out of order");
                let s = step(seed, i);
                if let Step::Commit(changes) = &s {
                    touched.extend(changes.iter().map(|(k, _)| *k));
                }
                model.apply(&s);
                assert_eq!(
                    root,
                    root_of(model.current()).to_string(),
                    "kill {kill}, step {i}"
                );
                next_step += 1;
                acked += 1;
            } else if let Some(root) = line.strip_prefix("OPEN ") {
                assert_eq!(root, root_of(model.current()).to_string(), "kill {kill}");
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(20_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        // Steps acknowledged before the kill but not read yet count as acknowledged.
        for line in lines.map_while(|l| l.ok()) {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let i: u64 = rest.split(' ').next().unwrap().parse().unwrap();
                assert_eq!(i, next_step);
                let s = step(seed, i);
                if let Step::Commit(changes) = &s {
                    touched.extend(changes.iter().map(|(k, _)| *k));
                }
                model.apply(&s);
                next_step += 1;
            }
        }

        // Reopen: at the last acknowledged step, or with the step in flight done.
        let db = Nomt::open(options(dir.path())).unwrap();
        let in_flight = step(seed, next_step);
        let mut after = model.clone();
        after.apply(&in_flight);
        if db.root() != root_of(model.current()) {
            assert_eq!(
                db.root(),
                root_of(after.current()),
                "kill {kill}: neither the acknowledged state nor the one in flight"
            );
            if let Step::Commit(changes) = &in_flight {
                touched.extend(changes.iter().map(|(k, _)| *k));
            }
            model = after;
            next_step += 1;
            in_flight_recovered += 1;
        }
        assert_eq!(db.rollback_window(), model.window, "kill {kill}");
        assert_eq!(db.key_count(), model.current().len() as u64, "kill {kill}");
        for k in &touched {
            assert_eq!(
                db.get(k).unwrap().as_ref(),
                model.current().get(k),
                "kill {kill}"
            );
        }
        if kill % 10 == 9 {
            db.check(&mut |_| {}).unwrap();
        }
        db.close().unwrap();
    }
    println!(
        "{kills} kills, {next_step} steps acknowledged or recovered, {in_flight_recovered} \
         recovered with the step in flight"
    );
}
