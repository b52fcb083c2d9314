//! Basic operations: open a database, stage writes on the handle, read them back before and
//! after the commit, prove a key against the committed root, hand out the commit's witness,
//! and reopen to find the same state.
//!
//! Run: `cargo run -p bmt --example basic_operations`

use bmt::{Key, Nomt, Options};
use bmt_core::blake2b_256;

type Error = Box<dyn std::error::Error>;

/// A 31-byte state key derived from a label (JAM keys are 31 bytes).
fn key(label: &str) -> Key {
    Key::from_slice(&blake2b_256(label.as_bytes()).0[..31]).expect("31 bytes")
}

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state");
    let db = Nomt::open(Options::new(&path))?;
    println!("opened {} at root {}", path.display(), db.root());

    // Writes accumulate in the handle's overlay; reads see them at once.
    db.insert(key("alice"), b"blockchain state data")?;
    db.insert(key("bob"), vec![7u8; 100])?;
    assert_eq!(
        db.get(key("alice"))?.as_deref(),
        Some(&b"blockchain state data"[..])
    );

    // Commit: durable and atomic when it returns.
    let done = db.commit()?;
    println!(
        "commit {}: {} -> {}",
        done.seq(),
        done.prev_root(),
        done.root()
    );
    assert_eq!(db.root(), done.root());

    // A proof of a present and of an absent key, checked against the root alone.
    let proof = db.generate_proof(key("alice"))?;
    proof.verify(&key("alice"), Some(b"blockchain state data"), &db.root())?;
    let absent = db.generate_proof(key("carol"))?;
    absent.verify(&key("carol"), None, &db.root())?;
    println!(
        "proof of alice: {} siblings, {} bytes encoded",
        proof.depth(),
        proof.encode().len()
    );

    // The commit's witness lets a stateless verifier recompute the new root.
    let witness = done.generate_witness()?;
    witness.verify()?;
    println!(
        "witness: {} keys, {} bytes",
        witness.keys.len(),
        witness.encode().len()
    );

    // Deletes are staged the same way.
    db.delete(key("bob"))?;
    let done = db.commit()?;
    assert_eq!(db.get(key("bob"))?, None);

    // Close, reopen: the same root and contents.
    let root = done.root();
    db.close()?;
    drop(db);
    let db = Nomt::open(Options::new(&path))?;
    assert_eq!(db.root(), root);
    assert_eq!(db.key_count(), 1);
    println!("reopened at root {root} with {} key(s)", db.key_count());
    Ok(())
}

#[test]
fn example_runs() {
    main().unwrap();
}
