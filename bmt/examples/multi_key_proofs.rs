//! Multi-key state proofs for validators: one multiproof of many keys (present and absent)
//! against one root, smaller than their separate proofs, checked without the database; and
//! the single proofs extracted from it for a verifier that wants them one by one.
//!
//! Run: `cargo run -p bmt --example multi_key_proofs`

use bmt::{Key, MultiProof, Nomt, Options};
use bmt_core::{Blake2bValueHasher, blake2b_256};

type Error = Box<dyn std::error::Error>;

/// A JAM-style storage key of service `service` for item `item` (an illustration, not the
/// Gray Paper's key function).
fn storage_key(service: u32, item: u32) -> Key {
    let mut input = service.to_le_bytes().to_vec();
    input.extend_from_slice(&item.to_le_bytes());
    Key::from_slice(&blake2b_256(&input).0[..31]).expect("31 bytes")
}

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let db = Nomt::open(Options::new(dir.path().join("state")))?;
    for item in 0..20_000 {
        db.insert(storage_key(7, item), vec![(item % 251) as u8; 48])?;
    }
    db.commit()?;

    // A consistent snapshot: the root and every value come from the same state.
    let snapshot = db.begin_read()?;
    let root = snapshot.root();
    let keys: Vec<Key> = (0..200)
        .map(|i| storage_key(7, i * 97))
        .chain([storage_key(8, 1)])
        .collect();
    let values: Vec<Option<Vec<u8>>> = keys
        .iter()
        .map(|k| snapshot.get(k))
        .collect::<Result<_, _>>()?;
    let proof = snapshot.generate_multiproof(&keys)?;

    // What a validator receives: root, keys, values, proof bytes.
    let bytes = proof.encode();
    let received = MultiProof::decode(&bytes)?;
    received.verify_entries(
        &root,
        keys.iter().zip(&values).map(|(k, v)| (k, v.as_deref())),
        &Blake2bValueHasher,
    )?;

    let separate: usize = keys
        .iter()
        .map(|k| snapshot.generate_proof(k).map(|p| p.encode().len()))
        .sum::<Result<_, _>>()?;
    println!(
        "{} keys: one multiproof of {} bytes, {} bytes as separate proofs ({:.2}x)",
        keys.len(),
        bytes.len(),
        separate,
        separate as f64 / bytes.len() as f64
    );
    assert!(bytes.len() < separate);

    // Single proofs come out of the multiproof, equal to those the database gives.
    let single = received.proof_of(&keys[3])?;
    assert_eq!(single, snapshot.generate_proof(keys[3])?);
    single.verify(&keys[3], values[3].as_deref(), &root)?;

    // A wrong value is caught.
    let mut wrong = values.clone();
    wrong[0] = Some(b"forged".to_vec());
    assert!(
        received
            .verify_entries(
                &root,
                keys.iter().zip(&wrong).map(|(k, v)| (k, v.as_deref())),
                &Blake2bValueHasher
            )
            .is_err()
    );
    Ok(())
}

#[test]
fn example_runs() {
    main().unwrap();
}
