//! Rollback recovery: a node follows a fork for a few blocks, the fork is abandoned, and the
//! node rolls back to the common ancestor, exactly, then follows the other branch. The
//! rollback window survives a restart, and a rollback past it is refused without changing
//! anything.
//!
//! Run: `cargo run -p bmt --example rollback_recovery`

use bmt::{Error as DbError, Key, Nomt, Options};

type Error = Box<dyn std::error::Error>;

fn key(i: u32) -> Key {
    let mut k = [0u8; 31];
    k[27..].copy_from_slice(&i.to_be_bytes());
    Key(k)
}

/// A block of `n` writes whose values depend on `fork` and `height`.
fn import(db: &Nomt, fork: u8, height: u32, n: u32) -> Result<bmt::Hash, Error> {
    for i in 0..n {
        db.insert(key(height * 1000 + i % 50), [fork; 40])?;
    }
    if height.is_multiple_of(2) {
        db.delete(key((height - 1) * 1000))?;
    }
    Ok(db.commit()?.root())
}

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let options = Options::new(dir.path().join("state")).rollback_retained(10);
    let db = Nomt::open(options.clone())?;

    let mut roots = vec![db.root()];
    for h in 1..=4 {
        roots.push(import(&db, 0, h, 200)?);
    }
    let ancestor = db.root();

    // Fork A: three blocks.
    for h in 5..=7 {
        import(&db, b'A', h, 200)?;
    }
    println!(
        "on fork A at {} (rollback window: {} commits)",
        db.root(),
        db.rollback_window()
    );

    // Fork A is abandoned: undo its three blocks in one step.
    let undo = db.rollback_n(3)?;
    assert_eq!(undo.root(), ancestor);
    assert_eq!(db.root(), ancestor);
    println!("rolled back to the common ancestor {ancestor}");

    // Follow fork B instead.
    for h in 5..=6 {
        import(&db, b'B', h, 200)?;
    }

    // The window survives a restart.
    db.close()?;
    drop(db);
    let db = Nomt::open(options)?;
    db.rollback()?;
    db.rollback()?;
    assert_eq!(db.root(), ancestor);

    // Asking for more than the window holds is refused and changes nothing.
    let window = db.rollback_window();
    match db.rollback_n(window + 1) {
        Err(DbError::RollbackWindow {
            requested,
            available,
        }) => {
            println!("rollback of {requested} refused: the log holds {available}");
        }
        other => return Err(format!("expected a window error, got {other:?}").into()),
    }
    assert_eq!(db.root(), ancestor);

    // Everything within the window comes back exactly.
    db.rollback_n(window)?;
    assert_eq!(db.root(), roots[4 - window as usize]);
    println!("rolled back {window} more commits to {}", db.root());
    Ok(())
}

#[test]
fn example_runs() {
    main().unwrap();
}
