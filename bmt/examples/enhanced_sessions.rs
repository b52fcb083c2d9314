//! Block import with write sessions: an author builds a block of token transfers in a write
//! session that tracks reads, a second node imports it and checks the state root before it
//! commits, rejects a block whose root does not match, and builds the next block on one not
//! yet committed (an overlay).
//!
//! Run: `cargo run -p bmt --example enhanced_sessions`

use bmt::{Error as DbError, Hash, Key, Nomt, Options, WriteSession};
use bmt_core::blake2b_256;

type Error = Box<dyn std::error::Error>;

fn account(i: u32) -> Key {
    Key::from_slice(&blake2b_256(&i.to_le_bytes()).0[..31]).expect("31 bytes")
}

/// A block: transfers `(from, to, amount)` and the state root its author claims.
struct Block {
    transfers: Vec<(u32, u32, u64)>,
    expected_root: Hash,
}

fn balance(session: &mut WriteSession, who: u32) -> Result<u64, Error> {
    let v = session.get(account(who))?.ok_or("no such account")?;
    Ok(u64::from_le_bytes(v.as_slice().try_into()?))
}

/// Applies the transfers to a session: read both balances, write both.
fn apply(session: &mut WriteSession, transfers: &[(u32, u32, u64)]) -> Result<(), Error> {
    for &(from, to, amount) in transfers {
        let (a, b) = (balance(session, from)?, balance(session, to)?);
        let a = a.checked_sub(amount).ok_or("insufficient balance")?;
        session.insert(account(from), a.to_le_bytes())?;
        session.insert(account(to), (b + amount).to_le_bytes())?;
    }
    Ok(())
}

fn genesis(path: &std::path::Path) -> Result<Nomt, Error> {
    let db = Nomt::open(Options::new(path))?;
    for i in 0..100 {
        db.insert(account(i), 1_000u64.to_le_bytes())?;
    }
    db.commit()?;
    Ok(db)
}

/// Imports `block`: its root is checked before anything is committed.
fn import(db: &Nomt, block: &Block) -> Result<bmt::Witness, Error> {
    let mut session = db.begin_write_with_witness()?;
    apply(&mut session, &block.transfers)?;
    let prepared = session.prepare()?;
    if prepared.root() != block.expected_root {
        let got = prepared.root();
        prepared.rollback(); // Discard: the database has not changed.
        return Err(format!(
            "state root mismatch: block says {}, got {got}",
            block.expected_root
        )
        .into());
    }
    let witness = prepared.witness()?;
    prepared.commit()?;
    Ok(witness)
}

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let author = genesis(&dir.path().join("author"))?;
    let node = genesis(&dir.path().join("node"))?;
    assert_eq!(author.root(), node.root());

    // The author builds block 1 and learns its root before committing.
    let transfers = vec![(1, 2, 10), (2, 3, 5), (4, 1, 300)];
    let mut session = author.begin_write()?;
    apply(&mut session, &transfers)?;
    println!("intermediate root after block 1: {}", session.root()?);
    let block1 = Block {
        transfers,
        expected_root: session.prepare()?.commit()?.root(),
    };

    // The node imports it; the witness holds the reads too (a validator re-executes the
    // block from it alone).
    let witness = import(&node, &block1)?;
    witness.verify()?;
    println!(
        "imported block 1 at {}: witness of {} reads and {} writes",
        node.root(),
        witness.reads.len(),
        witness.writes.len()
    );

    // A block with a wrong root is refused and leaves nothing behind.
    let bad = Block {
        transfers: vec![(5, 6, 1)],
        expected_root: Hash([0xEE; 32]),
    };
    let before = node.root();
    assert!(import(&node, &bad).is_err());
    assert_eq!(node.root(), before);

    // Building on blocks not yet final: block 2 is kept as an overlay, block 3 builds on it.
    let mut s2 = node.begin_write()?;
    apply(&mut s2, &[(7, 8, 1)])?;
    let block2 = s2.prepare()?.into_overlay();
    let mut s3 = node.begin_write_with_overlay(std::slice::from_ref(&block2))?;
    apply(&mut s3, &[(8, 9, 1001)])?; // Spends what block 2 gave account 8.
    let block3 = s3.prepare()?.into_overlay();
    println!(
        "block 2 root {}, block 3 root {}",
        block2.root(),
        block3.root()
    );

    // Block 3 cannot be committed before block 2: its base is not the database's root.
    assert!(matches!(
        node.commit_overlay(&block3),
        Err(DbError::Stale { .. })
    ));
    node.commit_overlay(&block2)?;
    node.commit_overlay(&block3)?;
    assert_eq!(node.root(), block3.root());

    // Optimistic concurrency: a session prepared on an old root is stale at commit.
    let mut late = node.begin_write()?;
    late.insert(account(0), 0u64.to_le_bytes())?;
    let late = late.prepare()?.into_overlay();
    node.insert(account(1), 1u64.to_le_bytes())?;
    node.commit()?;
    assert!(matches!(
        node.commit_overlay(&late),
        Err(DbError::Stale { .. })
    ));
    println!("stale overlay refused; node at {}", node.root());
    Ok(())
}

#[test]
fn example_runs() {
    main().unwrap();
}
