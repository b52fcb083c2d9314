//! Bad input on every public entry point gets a typed error and changes nothing: keys of the
//! wrong length on the handle and on sessions, oversize values, unknown roots, rollbacks out
//! of the window or disabled, a second writer, overlays that do not chain, stale prepared
//! sessions, a closed handle, unusable paths and malformed proof and witness bytes.

use std::sync::Arc;

use bmt::io::MemStorage;
use bmt::{Error, Hash, Key, KeyError, MerkleProof, MultiProof, Nomt, Options, Witness};

fn options(storage: &MemStorage) -> Options {
    Options::new("/db")
        .storage(Arc::new(storage.clone()))
        .max_value_size(1000)
}

fn key(i: u8) -> Key {
    Key([i; 31])
}

/// A database with two commits: keys 1..=3, then key 4.
fn populated() -> (MemStorage, Nomt) {
    let storage = MemStorage::new();
    let db = Nomt::open(options(&storage)).unwrap();
    for i in 1..=3 {
        db.insert(key(i), vec![i; 40]).unwrap();
    }
    db.commit().unwrap();
    db.insert(key(4), b"four").unwrap();
    db.commit().unwrap();
    (storage, db)
}

fn is_key_error(r: &Error) -> bool {
    matches!(
        r,
        Error::Key(KeyError::WrongLength(_) | KeyError::NonZeroLastByte(_))
    )
}

#[test]
fn handle_keys_of_the_wrong_length() {
    let (_s, db) = populated();
    let root = db.root();
    for bad in [&[0u8; 0][..], &[1u8; 30][..], &[1u8; 33][..]] {
        assert!(is_key_error(&db.insert(bad, b"x").unwrap_err()));
        assert!(is_key_error(&db.get(bad).unwrap_err()));
        assert!(is_key_error(&db.delete(bad).unwrap_err()));
        assert!(is_key_error(&db.generate_proof(bad).unwrap_err()));
    }
    assert!(is_key_error(&db.insert([7u8; 32], b"x").unwrap_err()));
    assert_eq!(db.commit().unwrap().root(), root, "nothing was staged");
}

#[test]
fn session_keys_of_the_wrong_length() {
    let (_s, db) = populated();
    let read = db.begin_read().unwrap();
    assert!(is_key_error(&read.get(&[1u8; 5][..]).unwrap_err()));
    assert!(is_key_error(
        &read.generate_proof(&[1u8; 5][..]).unwrap_err()
    ));
    let mut write = db.begin_write().unwrap();
    assert!(is_key_error(
        &write.insert(&[1u8; 5][..], b"x").unwrap_err()
    ));
    assert!(is_key_error(&write.delete(&[1u8; 40][..]).unwrap_err()));
    assert!(is_key_error(&write.get(&[1u8; 40][..]).unwrap_err()));
    assert_eq!(write.root().unwrap(), db.root(), "nothing was staged");
}

#[test]
fn oversize_values_on_the_handle_and_on_sessions() {
    let (_s, db) = populated();
    let root = db.root();
    let err = db.insert(key(9), vec![0; 1001]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ValueTooLarge {
                len: 1001,
                max: 1000
            }
        ),
        "{err}"
    );
    db.insert(key(9), vec![0; 1000]).unwrap();
    db.delete(key(9)).unwrap();
    assert_eq!(db.commit().unwrap().root(), root);
    let mut write = db.begin_write().unwrap();
    let err = write.insert(key(9), vec![0; 1001]).unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    assert_eq!(write.prepare().unwrap().root(), root);
}

#[test]
fn unknown_roots_and_rollbacks_out_of_the_window() {
    let (_s, db) = populated();
    let root = db.root();
    let unknown = Hash([0xAB; 32]);
    assert!(matches!(db.begin_read_at(unknown), Err(Error::UnknownRoot(r)) if r == unknown));
    assert!(matches!(
        db.rollback_n(0),
        Err(Error::RollbackWindow { requested: 0, .. })
    ));
    assert!(matches!(
        db.rollback_n(3),
        Err(Error::RollbackWindow {
            requested: 3,
            available: 2
        })
    ));
    assert_eq!(db.root(), root, "a refused rollback changes nothing");

    let storage = MemStorage::new();
    let db = Nomt::open(options(&storage).rollback(false)).unwrap();
    db.insert(key(1), b"x").unwrap();
    db.commit().unwrap();
    assert!(matches!(db.rollback(), Err(Error::RollbackDisabled)));
}

#[test]
fn a_second_writer_is_refused() {
    let (_s, db) = populated();
    let write = db.begin_write().unwrap();
    assert!(matches!(db.begin_write(), Err(Error::WriterBusy(_))));
    assert!(matches!(db.insert(key(8), b"x"), Err(Error::WriterBusy(_))));
    assert!(matches!(db.delete(key(1)), Err(Error::WriterBusy(_))));
    assert!(matches!(db.commit(), Err(Error::WriterBusy(_))));
    assert!(matches!(db.rollback(), Err(Error::WriterBusy(_))));
    drop(write);
    // Staged changes on the handle keep write sessions out.
    db.insert(key(8), b"x").unwrap();
    assert!(matches!(db.begin_write(), Err(Error::WriterBusy(_))));
}

#[test]
fn overlays_that_do_not_chain_are_refused() {
    let (_s, db) = populated();
    let root = db.root();
    let mut a = db.begin_write().unwrap();
    a.insert(key(10), b"a").unwrap();
    let a = a.prepare().unwrap().into_overlay();
    // A sibling of `a` on the same root, not its child.
    let mut b = db.begin_write().unwrap();
    b.insert(key(11), b"b").unwrap();
    let b = b.prepare().unwrap().into_overlay();
    assert!(matches!(
        db.begin_write_with_overlay(&[a.clone(), b.clone()]),
        Err(Error::InvalidOverlays(_))
    ));
    // An overlay on a root that is no longer the database's.
    db.commit_overlay(&a).unwrap();
    assert!(matches!(
        db.begin_write_with_overlay(std::slice::from_ref(&b)),
        Err(Error::InvalidOverlays(_))
    ));
    assert!(db.commit_overlay(&b).is_err());
    assert_ne!(db.root(), root);
}

#[test]
fn a_stale_prepared_session_is_refused() {
    let (_s, db) = populated();
    let root = db.root();
    let mut a = db.begin_write().unwrap();
    a.insert(key(20), b"x").unwrap();
    let a = a.prepare().unwrap().into_overlay();
    // A session built on `a`, committed before `a` is: its base is not the database's root.
    let mut b = db
        .begin_write_with_overlay(std::slice::from_ref(&a))
        .unwrap();
    b.insert(key(21), b"y").unwrap();
    let prepared = b.prepare().unwrap();
    assert!(matches!(prepared.commit(), Err(Error::Stale { .. })));
    assert_eq!(db.root(), root);
    assert_eq!(db.get(key(20)).unwrap(), None);
    assert_eq!(db.get(key(21)).unwrap(), None);
}

#[test]
fn a_closed_handle_refuses_everything() {
    let (_s, db) = populated();
    let root = db.root();
    db.close().unwrap();
    assert!(matches!(db.get(key(1)), Err(Error::Closed)));
    assert!(matches!(db.insert(key(1), b"x"), Err(Error::Closed)));
    assert!(matches!(db.delete(key(1)), Err(Error::Closed)));
    assert!(matches!(db.commit(), Err(Error::Closed)));
    assert!(matches!(db.rollback(), Err(Error::Closed)));
    assert!(matches!(db.generate_proof(key(1)), Err(Error::Closed)));
    assert!(matches!(
        db.generate_multiproof(&[key(1)]),
        Err(Error::Closed)
    ));
    assert!(matches!(db.begin_write(), Err(Error::Closed)));
    assert!(matches!(db.begin_read(), Err(Error::Closed)));
    assert!(matches!(db.begin_read_at(root), Err(Error::Closed)));
    assert!(matches!(db.sync(), Err(Error::Closed)));
    assert!(matches!(db.check(&mut |_| {}), Err(Error::Closed)));
    // Closing twice is harmless.
    db.close().unwrap();
}

#[test]
fn sessions_opened_before_close_are_refused_after_it() {
    let (_s, db) = populated();
    let read = db.begin_read().unwrap();
    let mut write = db.begin_write().unwrap();
    db.close().unwrap();
    assert!(matches!(read.get(key(1)), Err(Error::Closed)));
    assert!(matches!(read.generate_proof(key(1)), Err(Error::Closed)));
    assert!(matches!(write.insert(key(1), b"x"), Err(Error::Closed)));
    assert!(matches!(write.prepare(), Err(Error::Closed)));
}

#[test]
fn unusable_paths_are_refused() {
    let storage = MemStorage::new();
    let missing = Options::new("/nowhere")
        .storage(Arc::new(storage.clone()))
        .create_if_missing(false);
    assert!(Nomt::open(missing).is_err());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = Nomt::open(Options::new(&file)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidPath { .. } | Error::Io { .. }),
        "{err}"
    );
}

#[test]
fn malformed_proof_and_witness_bytes() {
    let (_s, db) = populated();
    let proof = db.generate_proof(key(1)).unwrap().encode();
    let multi = db.generate_multiproof(&[key(1), key(9)]).unwrap().encode();
    let witness = {
        let mut w = db.begin_write_with_witness().unwrap();
        w.get(key(2)).unwrap();
        w.insert(key(5), b"five").unwrap();
        w.prepare().unwrap().witness().unwrap().encode()
    };
    for bytes in [&proof, &multi, &witness] {
        let mut longer = bytes.clone();
        longer.push(0);
        let cut = &bytes[..bytes.len() - 1];
        assert!(MerkleProof::decode(cut).is_err() || bytes != &proof);
        assert!(MultiProof::decode(cut).is_err() || bytes != &multi);
        assert!(Witness::decode(cut).is_err() || bytes != &witness);
        assert!(MerkleProof::decode(&longer).is_err());
        assert!(MultiProof::decode(&longer).is_err());
        assert!(Witness::decode(&longer).is_err());
    }
    assert!(MerkleProof::decode(&[]).is_err());
    assert!(MultiProof::decode(&[]).is_err());
    assert!(Witness::decode(b"BMTW").is_err());
}
