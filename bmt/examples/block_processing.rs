//! Block processing on the handle: apply a block's state changes, commit them atomically,
//! and produce the witness a validator checks without the state.
//!
//! Run: `cargo run -p bmt --example block_processing`

use bmt::{Key, Nomt, Options, Witness};
use bmt_core::blake2b_256;

type Error = Box<dyn std::error::Error>;

/// One state change of a block.
enum StateChange {
    Insert(Key, Vec<u8>),
    Delete(Key),
}

fn key(label: &str) -> Key {
    Key::from_slice(&blake2b_256(label.as_bytes()).0[..31]).expect("31 bytes")
}

/// Applies `changes` and commits them as one state transition; returns its witness.
fn process_block(db: &Nomt, changes: Vec<StateChange>) -> Result<Witness, Error> {
    for change in changes {
        match change {
            StateChange::Insert(k, v) => db.insert(k, v)?,
            StateChange::Delete(k) => db.delete(k)?,
        }
    }
    let done = db.commit()?;
    Ok(done.generate_witness()?)
}

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let db = Nomt::open(Options::new(dir.path().join("state")))?;

    // Genesis: 1,000 service accounts.
    let genesis = (0..1000)
        .map(|i| {
            StateChange::Insert(
                key(&format!("account {i}")),
                (i as u64).to_le_bytes().to_vec(),
            )
        })
        .collect();
    process_block(&db, genesis)?;

    // Block 1: updates, a new account with a long value, a deleted account.
    let block = vec![
        StateChange::Insert(key("account 1"), 500u64.to_le_bytes().to_vec()),
        StateChange::Insert(key("account 2"), 501u64.to_le_bytes().to_vec()),
        StateChange::Insert(key("preimage"), vec![0xAB; 4096]),
        StateChange::Delete(key("account 3")),
    ];
    let witness = process_block(&db, block)?;

    // What travels to a validator: the encoded witness. It checks every write against the
    // previous root and recomputes the new one, with no database.
    let bytes = witness.encode();
    let received = Witness::decode(&bytes)?;
    received.verify()?;
    assert_eq!(received.root, db.root());
    println!(
        "block 1: {} -> {}, witness of {} keys in {} bytes verified",
        received.prev_root,
        received.root,
        received.keys.len(),
        bytes.len()
    );

    // A witness claiming another resulting root is rejected.
    let mut forged = received.clone();
    forged.root = forged.prev_root;
    assert!(forged.verify().is_err());
    Ok(())
}

#[test]
fn example_runs() {
    main().unwrap();
}
