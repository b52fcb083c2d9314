//! The on-disk form of a list of key changes between two roots, shared by the rollback log's
//! records (the values before a commit) and the write-ahead log's (the values after it): one
//! encoding, one checked decoder.
//!
//! | bytes | field |
//! |---|---|
//! | 0..32 | root before |
//! | 32..64 | root after |
//! | 64..68 | number of entries (u32, little endian) |
//! | 68.. | for each entry: key (31), present (1 byte: 0 absent, 1 present), and if present the value's length (u32, little endian) and the value |

use bmt_core::{Hash, KEY_LEN, Key};

/// The bytes before the entries.
const FIXED: usize = 68;

/// The bytes the body of `entries` takes.
pub(crate) fn body_len<'a>(entries: impl Iterator<Item = &'a Option<Vec<u8>>>) -> usize {
    FIXED
        + entries
            .map(|v| KEY_LEN + 1 + v.as_ref().map_or(0, |v| 4 + v.len()))
            .sum::<usize>()
}

/// Appends the body of a change from `prev_root` to `root` by `entries` to `out`.
pub(crate) fn encode_body<'a>(
    out: &mut Vec<u8>,
    prev_root: &Hash,
    root: &Hash,
    entries: impl ExactSizeIterator<Item = (&'a Key, &'a Option<Vec<u8>>)>,
) {
    out.extend_from_slice(prev_root.as_bytes());
    out.extend_from_slice(root.as_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (k, v) in entries {
        out.extend_from_slice(&k.0);
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

/// A decoded body: root before, root after, entries in the order stored.
pub(crate) type Body = (Hash, Hash, Vec<(Key, Option<Vec<u8>>)>);

/// Decodes a body that is exactly `b` (a record's checksum already passed). Bounds-checked
/// throughout: the count of entries is checked against the bytes there before anything is
/// allocated.
pub(crate) fn decode_body(b: &[u8]) -> Result<Body, String> {
    let short = || "record body too short".to_string();
    if b.len() < FIXED {
        return Err(short());
    }
    let prev_root = Hash(b[0..32].try_into().expect("32 bytes"));
    let root = Hash(b[32..64].try_into().expect("32 bytes"));
    let n = u32::from_le_bytes(b[64..68].try_into().expect("4 bytes")) as usize;
    if n > (b.len() - FIXED) / (KEY_LEN + 1) {
        return Err(format!("record claims {n} entries"));
    }
    let mut at = FIXED;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let key = Key(b
            .get(at..at + KEY_LEN)
            .ok_or_else(short)?
            .try_into()
            .expect("31 bytes"));
        at += KEY_LEN;
        let flag = *b.get(at).ok_or_else(short)?;
        at += 1;
        let value = match flag {
            0 => None,
            1 => {
                let len = u32::from_le_bytes(
                    b.get(at..at + 4)
                        .ok_or_else(short)?
                        .try_into()
                        .expect("4 bytes"),
                ) as usize;
                at += 4;
                let v = b
                    .get(at..at.saturating_add(len))
                    .ok_or_else(short)?
                    .to_vec();
                at += len;
                Some(v)
            }
            f => return Err(format!("invalid presence flag {f}")),
        };
        entries.push((key, value));
    }
    if at != b.len() {
        return Err("trailing bytes in a record".into());
    }
    Ok((prev_root, root, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_damaged_ones_are_refused() {
        let entries = vec![
            (Key([1; 31]), None),
            (Key([2; 31]), Some(vec![])),
            (Key([3; 31]), Some(vec![7; 300])),
        ];
        let mut b = Vec::new();
        encode_body(
            &mut b,
            &Hash([4; 32]),
            &Hash([5; 32]),
            entries.iter().map(|(k, v)| (k, v)),
        );
        assert_eq!(b.len(), body_len(entries.iter().map(|(_, v)| v)));
        assert_eq!(
            decode_body(&b).unwrap(),
            (Hash([4; 32]), Hash([5; 32]), entries)
        );
        for cut in 0..b.len() {
            assert!(decode_body(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode_body(&extra).is_err());
        let mut flag = b.clone();
        flag[FIXED + KEY_LEN] = 2;
        assert!(decode_body(&flag).is_err());
    }
}
