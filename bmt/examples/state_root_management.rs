//! State-root management: a node keeps the history of its roots, checks each block's root
//! against the one in its header, rolls back a block whose root does not match, and answers
//! queries at any root of the recent history.
//!
//! Run: `cargo run -p bmt --example state_root_management`

use bmt::{Hash, Key, Nomt, Options};
use bmt_core::ReferenceTrie;

type Error = Box<dyn std::error::Error>;

struct Block {
    writes: Vec<(Key, Vec<u8>)>,
    expected_root: Hash,
}

/// Tracks the roots the database has gone through.
struct StateManager {
    db: Nomt,
    root_history: Vec<Hash>,
}

impl StateManager {
    fn apply_block(&mut self, block: &Block) -> Result<(), Error> {
        for (k, v) in &block.writes {
            self.db.insert(k, v)?;
        }
        let done = self.db.commit()?;
        if done.root() != block.expected_root {
            // Undo the commit: the database is back at the previous root exactly.
            self.db.rollback()?;
            assert_eq!(self.db.root(), done.prev_root());
            return Err(format!(
                "root mismatch: expected {}, got {}",
                block.expected_root,
                done.root()
            )
            .into());
        }
        self.root_history.push(done.root());
        Ok(())
    }
}

fn key(i: u8) -> Key {
    Key([i; 31])
}

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let db = Nomt::open(Options::new(dir.path().join("state")))?;
    let mut manager = StateManager {
        root_history: vec![db.root()],
        db,
    };

    // Blocks whose expected roots come from an independent source: bmt-core's reference
    // builder over the full contents.
    let mut contents = std::collections::BTreeMap::new();
    for height in 1..=5u8 {
        let writes: Vec<(Key, Vec<u8>)> = (0..height * 3)
            .map(|i| (key(i), vec![height; 20 + i as usize]))
            .collect();
        contents.extend(writes.iter().cloned());
        let expected_root = ReferenceTrie::new(contents.clone()).root();
        manager.apply_block(&Block {
            writes,
            expected_root,
        })?;
        println!("block {height}: root {expected_root}");
    }

    // A block whose header root is wrong is undone.
    let bad = Block {
        writes: vec![(key(200), b"bad".to_vec())],
        expected_root: Hash([1; 32]),
    };
    let before = manager.db.root();
    assert!(manager.apply_block(&bad).is_err());
    assert_eq!(manager.db.root(), before);
    assert_eq!(manager.db.get(key(200))?, None);

    // Every root in the history can be read at (within the rollback window).
    for (height, root) in manager.root_history.iter().enumerate() {
        let snapshot = manager.db.begin_read_at(*root)?;
        assert_eq!(snapshot.root(), *root);
        println!("height {height}: {} keys at {root}", snapshot.key_count());
    }
    Ok(())
}

#[test]
fn example_runs() {
    main().unwrap();
}
