//! Witnesses: what a stateless verifier needs to check one state transition.
//!
//! A witness of a transition from `prev_root` to `root` lists every key the transition read
//! or wrote, the values read (as the state before held them), the writes (new values, or
//! deletes), and one [`MultiProof`] of all those keys against `prev_root`, with the siblings
//! that the deletes expose given in full (see [`crate::multiproof`]). [`Witness::verify`]
//! checks the proof against `prev_root`, every read against the proof, and that applying the
//! writes to the proof gives `root`: the verifier needs no other part of the state.
//!
//! # Binary encoding
//!
//! ```text
//! magic      4 bytes, "BMTW"
//! version    1 byte, 1
//! prev_root  32 bytes
//! root       32 bytes
//! keys       u32 count, then the keys, 31 bytes each, strictly increasing
//! reads      u32 count, then for each: key index (u32), present (1 byte, 0 or 1), and if
//!            present a u32 length and the value; by increasing key index
//! writes     the same layout as reads (present 0 is a delete)
//! proof      u32 length, then the multiproof's encoding
//! ```
//!
//! Integers are little endian. Every key is read or written (or both); the decoder rejects
//! anything else, unsorted or repeated entries, and trailing bytes.

use crate::hash::{Blake2bValueHasher, Hash, ValueHasher};
use crate::key::{KEY_LEN, Key};
use crate::multiproof::{Lookup, MultiProof, MultiProofDecodeError, MultiProofError};
use crate::proof::{Reader, ShortInput};

/// A key and its value (or `None`: absent, or deleted).
pub type Access = (Key, Option<Vec<u8>>);

/// Everything a stateless verifier needs to check a transition. See the module docs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Witness {
    /// The root before the transition.
    pub prev_root: Hash,
    /// The root after it.
    pub root: Hash,
    /// Every key read or written, sorted.
    pub keys: Vec<Key>,
    /// Values read, as the state before held them, sorted by key.
    pub reads: Vec<Access>,
    /// Writes (`None`: delete), sorted by key.
    pub writes: Vec<Access>,
    /// A proof of every key against `prev_root`.
    pub proof: MultiProof,
}

/// A witness does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// The proof is not against `prev_root`, or does not show a read value.
    #[error(transparent)]
    Proof(#[from] MultiProofError),
    /// A read does not match what the proof shows.
    #[error("the read of {0} does not match the proof")]
    ReadMismatch(Key),
    /// The writes applied to the proof do not give `root`.
    #[error("the writes give root {computed}, not {expected}")]
    RootMismatch {
        /// The witness's `root`.
        expected: Hash,
        /// What the writes give.
        computed: Hash,
    },
    /// Keys, reads and writes do not agree (unsorted, repeated, or a key neither read nor
    /// written).
    #[error("inconsistent witness: {0}")]
    Inconsistent(&'static str),
}

/// Bytes are not a witness encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessDecodeError {
    /// The input ends early.
    #[error("truncated witness: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where the read started.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// Not a witness, or a version this build does not read.
    #[error("not a witness of a known version")]
    BadHeader,
    /// Bytes after the end.
    #[error("{0} trailing bytes after the witness")]
    TrailingBytes(usize),
    /// A present byte other than 0 or 1.
    #[error("invalid presence flag {0}")]
    BadFlag(u8),
    /// The structure does not hold together.
    #[error("inconsistent witness: {0}")]
    Inconsistent(&'static str),
    /// The embedded multiproof is malformed.
    #[error("multiproof: {0}")]
    Proof(#[from] MultiProofDecodeError),
}

impl From<ShortInput> for WitnessDecodeError {
    fn from(e: ShortInput) -> Self {
        WitnessDecodeError::Truncated {
            offset: e.offset,
            needed: e.needed,
        }
    }
}

const MAGIC: [u8; 4] = *b"BMTW";
const VERSION: u8 = 1;

impl Witness {
    /// Checks the witness with the Gray Paper value hash.
    pub fn verify(&self) -> Result<(), WitnessError> {
        self.verify_with(&Blake2bValueHasher)
    }

    /// Checks the witness: the proof against `prev_root`, every read against the proof, and
    /// that the writes give `root`.
    pub fn verify_with<H: ValueHasher + ?Sized>(&self, hasher: &H) -> Result<(), WitnessError> {
        self.check_structure().map_err(WitnessError::Inconsistent)?;
        self.proof.verify(&self.prev_root)?;
        for (key, value) in &self.reads {
            let ok = match (self.proof.lookup(key)?, value) {
                (Lookup::Absent, None) => true,
                (Lookup::Present(held), Some(v)) => held.matches(v, hasher),
                _ => false,
            };
            if !ok {
                return Err(WitnessError::ReadMismatch(*key));
            }
        }
        let computed = self
            .proof
            .apply_updates(self.writes.iter().map(|(k, v)| (k, v.as_deref())), hasher)?;
        if computed != self.root {
            return Err(WitnessError::RootMismatch {
                expected: self.root,
                computed,
            });
        }
        Ok(())
    }

    /// Keys sorted and distinct; reads and writes sorted, distinct and among the keys; every
    /// key read or written.
    fn check_structure(&self) -> Result<(), &'static str> {
        if self.keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err("keys not strictly increasing");
        }
        for list in [&self.reads, &self.writes] {
            if list.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err("reads or writes not strictly increasing");
            }
            if list
                .iter()
                .any(|(k, _)| self.keys.binary_search(k).is_err())
            {
                return Err("a read or write of a key not listed");
            }
        }
        let accessed = |k: &Key| {
            self.reads.binary_search_by(|(r, _)| r.cmp(k)).is_ok()
                || self.writes.binary_search_by(|(w, _)| w.cmp(k)).is_ok()
        };
        if !self.keys.iter().all(accessed) {
            return Err("a key neither read nor written");
        }
        Ok(())
    }

    /// The binary encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(self.prev_root.as_bytes());
        out.extend_from_slice(self.root.as_bytes());
        out.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        for k in &self.keys {
            out.extend_from_slice(&k.0);
        }
        for list in [&self.reads, &self.writes] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for (k, v) in list {
                let index = self.keys.binary_search(k).unwrap_or(usize::MAX) as u32;
                out.extend_from_slice(&index.to_le_bytes());
                match v {
                    None => out.push(0),
                    Some(v) => {
                        out.push(1);
                        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                        out.extend_from_slice(v);
                    }
                }
            }
        }
        let proof = self.proof.encode();
        out.extend_from_slice(&(proof.len() as u32).to_le_bytes());
        out.extend_from_slice(&proof);
        out
    }

    /// Decodes a witness, rejecting anything [`Witness::encode`] would not produce.
    pub fn decode(bytes: &[u8]) -> Result<Witness, WitnessDecodeError> {
        let mut r = Reader::new(bytes);
        if r.array::<4>()? != MAGIC || r.array::<1>()?[0] != VERSION {
            return Err(WitnessDecodeError::BadHeader);
        }
        let prev_root = Hash(r.array::<32>()?);
        let root = Hash(r.array::<32>()?);
        let n = u32::from_le_bytes(r.array::<4>()?) as usize;
        // Bounded by the input: every key takes 31 bytes.
        if n > r.remaining() / KEY_LEN {
            return Err(WitnessDecodeError::Truncated {
                offset: r.pos,
                needed: n * KEY_LEN - r.remaining(),
            });
        }
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push(Key(r.array::<KEY_LEN>()?));
        }
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let count = u32::from_le_bytes(r.array::<4>()?) as usize;
            if count > keys.len() {
                return Err(WitnessDecodeError::Inconsistent("more entries than keys"));
            }
            let mut last: Option<usize> = None;
            for _ in 0..count {
                let index = u32::from_le_bytes(r.array::<4>()?) as usize;
                if index >= keys.len() || last.is_some_and(|l| l >= index) {
                    return Err(WitnessDecodeError::Inconsistent(
                        "bad or unsorted key index",
                    ));
                }
                last = Some(index);
                let value = match r.array::<1>()?[0] {
                    0 => None,
                    1 => {
                        let len = u32::from_le_bytes(r.array::<4>()?) as usize;
                        Some(r.take(len)?.to_vec())
                    }
                    f => return Err(WitnessDecodeError::BadFlag(f)),
                };
                list.push((keys[index], value));
            }
        }
        let len = u32::from_le_bytes(r.array::<4>()?) as usize;
        let proof = MultiProof::decode(r.take(len)?)?;
        if r.remaining() != 0 {
            return Err(WitnessDecodeError::TrailingBytes(r.remaining()));
        }
        let [reads, writes] = lists;
        let witness = Witness {
            prev_root,
            root,
            keys,
            reads,
            writes,
            proof,
        };
        witness
            .check_structure()
            .map_err(WitnessDecodeError::Inconsistent)?;
        Ok(witness)
    }
}
