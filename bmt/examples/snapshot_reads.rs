//! Snapshot reads: reader threads hold read sessions while a writer imports blocks; every
//! session sees one state only, and can prove what it reads against its own root. An older
//! root within the rollback window can be opened too.
//!
//! Run: `cargo run -p bmt --example snapshot_reads`

use std::sync::Arc;
use std::thread;

use bmt::{Key, Nomt, Options};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn key(i: u32) -> Key {
    let mut k = [0u8; 31];
    k[..4].copy_from_slice(&i.to_be_bytes());
    Key(k)
}

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let db = Arc::new(Nomt::open(Options::new(dir.path().join("state")))?);
    // Every block writes its number under all 64 keys: a reader that saw two blocks at once
    // would read two different numbers.
    for i in 0..64 {
        db.insert(key(i), 0u64.to_le_bytes())?;
    }
    let genesis = db.commit()?.root();

    let readers: Vec<_> = (0..3)
        .map(|_| {
            let db = db.clone();
            thread::spawn(move || -> Result<usize, Error> {
                let mut sessions = 0;
                for _ in 0..200 {
                    let session = db.begin_read()?;
                    let first = session.get(key(0))?;
                    for i in 1..64 {
                        assert_eq!(session.get(key(i))?, first, "a mix of two blocks");
                    }
                    // What the session reads, it can prove against its own root.
                    let proof = session.generate_proof(key(63))?;
                    proof.verify(&key(63), first.as_deref(), &session.root())?;
                    sessions += 1;
                }
                Ok(sessions)
            })
        })
        .collect();

    for block in 1..=20u64 {
        for i in 0..64 {
            db.insert(key(i), block.to_le_bytes())?;
        }
        db.commit()?;
    }
    for r in readers {
        let n = r.join().expect("reader panicked")?;
        println!("a reader checked {n} consistent snapshots");
    }

    // A snapshot of an older state (here, genesis: 20 commits back, within the default
    // window of 100).
    let old = db.begin_read_at(genesis)?;
    assert_eq!(old.get(key(5))?, Some(0u64.to_le_bytes().to_vec()));
    let proof = old.generate_proof(key(5))?;
    proof.verify(&key(5), Some(&0u64.to_le_bytes()), &genesis)?;
    println!("read genesis state at {genesis} after 20 more blocks");
    Ok(())
}

#[test]
fn example_runs() {
    main().unwrap();
}
