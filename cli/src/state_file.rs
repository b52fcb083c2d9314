//! Loading JAM state files: the one JSON loader shared by every command.
//!
//! Three shapes of file carry a state (see `testdata/VECTORS.md`):
//!
//! - a **trace step** `{pre_state: {state_root, keyvals}, post_state: {...}, block: ...}`;
//! - a **genesis** `{state: {state_root, keyvals}, header: ...}`;
//! - a **raw state** `{state_root?, keyvals: [{key, value}]}`, as written by `bmt gen-state`.
//!
//! The shape is recognised by its fields, in that order of precedence (`pre_state` or
//! `post_state` makes a step, then `state` a genesis, then `keyvals` a raw state). Every other
//! field (`block`, `header`, ...) is skipped without being built, which matters because a block
//! can be most of a trace file.
//!
//! # Why it is written this way
//!
//! The loader is on the hot path of `state-root` on large generated states (tens of MB of hex),
//! so it parses with `serde_json` into strings borrowed from the file buffer (no copy of the
//! hex), then decodes each value once, straight into its final `Vec<u8>`, with a table lookup
//! (the `hex` crate's decoder was two thirds of the run time; it still reports the errors).
//!
//! It is also the gate for untrusted input, so it never panics and never guesses: keys must be
//! 31 bytes, or 32 with a zero last byte ([`Key::from_str`], which refuses to truncate); a key
//! given twice is an error rather than "last wins", since a state is a map and a file listing a
//! key twice is broken. Each error names the field it is about (`pre_state.keyvals[3].key`),
//! and the caller adds the file name.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use bmt_core::{Hash, Key, root_from_sorted};
use serde::Deserialize;

/// One state: its key/value pairs, sorted by key with no duplicates, and the root the file
/// claims for it (if it gives one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The `state_root` given in the file, if any.
    pub expected_root: Option<Hash>,
    /// The key/value pairs, strictly increasing by key.
    pub entries: Vec<(Key, Vec<u8>)>,
}

impl State {
    /// The state root of [`State::entries`], computed with the reference builder.
    pub fn computed_root(&self) -> Result<Hash> {
        root_from_sorted(self.entries.iter().map(|(k, v)| (k, v)))
            .map_err(|e| anyhow!("internal error: entries not sorted: {e}"))
    }
}

/// A parsed state file, by shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateFile {
    /// A trace step: the state before and after one block.
    Step {
        /// `pre_state`.
        pre: State,
        /// `post_state`.
        post: State,
    },
    /// A genesis file's `state`.
    Genesis(State),
    /// A bare `{state_root?, keyvals}` object.
    Raw(State),
}

impl StateFile {
    /// Reads and parses the file at `path`. Errors do not repeat the path: callers add it.
    pub fn load(path: &Path) -> Result<StateFile> {
        let bytes = std::fs::read(path).context("cannot read file")?;
        StateFile::parse(&bytes)
    }

    /// Parses the JSON text of a state file.
    pub fn parse(bytes: &[u8]) -> Result<StateFile> {
        let raw: RawFile<'_> = serde_json::from_slice(bytes).context("not a JSON state file")?;
        if raw.pre_state.is_some() || raw.post_state.is_some() {
            let pre = raw
                .pre_state
                .ok_or_else(|| anyhow!("missing field `pre_state`"))?;
            let post = raw
                .post_state
                .ok_or_else(|| anyhow!("missing field `post_state`"))?;
            Ok(StateFile::Step {
                pre: pre.into_state("pre_state.")?,
                post: post.into_state("post_state.")?,
            })
        } else if let Some(state) = raw.state {
            Ok(StateFile::Genesis(state.into_state("state.")?))
        } else if let Some(keyvals) = raw.keyvals {
            Ok(StateFile::Raw(
                RawState {
                    state_root: raw.state_root,
                    keyvals,
                }
                .into_state("")?,
            ))
        } else {
            bail!(
                "missing field `keyvals` (expected a trace step with `pre_state`/`post_state`, \
                 a genesis with `state`, or a raw state with `keyvals`)"
            )
        }
    }

    /// The states in this file with their names: `pre_state` and `post_state` for a step,
    /// `state` for a genesis, `None` for a raw state (which has only one, unnamed).
    pub fn states(&self) -> Vec<(Option<&'static str>, &State)> {
        match self {
            StateFile::Step { pre, post } => {
                vec![(Some("pre_state"), pre), (Some("post_state"), post)]
            }
            StateFile::Genesis(state) => vec![(Some("state"), state)],
            StateFile::Raw(state) => vec![(None, state)],
        }
    }
}

/// The top-level object, with every field of every shape optional; unknown fields are skipped.
#[derive(Deserialize)]
struct RawFile<'a> {
    #[serde(borrow)]
    pre_state: Option<RawState<'a>>,
    #[serde(borrow)]
    post_state: Option<RawState<'a>>,
    #[serde(borrow)]
    state: Option<RawState<'a>>,
    #[serde(borrow)]
    state_root: Option<Cow<'a, str>>,
    #[serde(borrow)]
    keyvals: Option<Vec<RawKeyVal<'a>>>,
}

#[derive(Deserialize)]
struct RawState<'a> {
    #[serde(borrow, default)]
    state_root: Option<Cow<'a, str>>,
    #[serde(borrow)]
    keyvals: Vec<RawKeyVal<'a>>,
}

/// Hex strings never contain JSON escapes, so these borrow from the file buffer; `Cow` still
/// accepts an escaped string (which then fails as bad hex, with a clear message).
#[derive(Deserialize)]
struct RawKeyVal<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

impl RawState<'_> {
    /// Decodes, sorts and checks the state. `prefix` names it in errors (`"pre_state."`).
    fn into_state(self, prefix: &str) -> Result<State> {
        let expected_root = self
            .state_root
            .map(|s| Hash::from_str(&s))
            .transpose()
            .with_context(|| format!("{prefix}state_root"))?;
        let mut entries = Vec::with_capacity(self.keyvals.len());
        for (i, kv) in self.keyvals.iter().enumerate() {
            let key =
                Key::from_str(&kv.key).with_context(|| format!("{prefix}keyvals[{i}].key"))?;
            let value =
                decode_value(&kv.value).with_context(|| format!("{prefix}keyvals[{i}].value"))?;
            entries.push((key, value));
        }
        // Trace files are already sorted; sorting a sorted run is cheap.
        entries.sort_unstable_by_key(|a| a.0);
        if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            bail!("{prefix}keyvals: duplicate key 0x{}", w[0].0);
        }
        Ok(State {
            expected_root,
            entries,
        })
    }
}

/// Decodes a value's hex (optional `0x`).
///
/// Values are most of the bytes of a large state file, and the `hex` crate's decoders (which
/// check and locate every digit as they go) run at about 150 MB/s here: two thirds of the time
/// of `state-root` on a 60 MB state. So the common case goes through a branch-free table
/// lookup, and only a string found invalid is handed to `hex::decode_to_slice`, to produce the
/// same precise error (which character, at which position) as everywhere else.
fn decode_value(s: &str) -> Result<Vec<u8>> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let bytes = digits.as_bytes();
    let mut invalid = !bytes.len().is_multiple_of(2);
    let mut flags = 0u8;
    let mut value = Vec::with_capacity(bytes.len() / 2);
    value.extend(bytes.chunks_exact(2).map(|pair| {
        let hi = HEX_DIGIT[usize::from(pair[0])];
        let lo = HEX_DIGIT[usize::from(pair[1])];
        flags |= hi | lo;
        (hi << 4) | lo
    }));
    invalid |= flags & NOT_HEX != 0;
    if invalid {
        let mut scratch = vec![0u8; bytes.len() / 2];
        hex::decode_to_slice(digits, &mut scratch).map_err(|e| anyhow!("invalid hex: {e}"))?;
        // Unreachable in practice: the table and the `hex` crate accept the same digits.
        bail!("invalid hex");
    }
    Ok(value)
}

/// Marks a byte that is not a hex digit in [`HEX_DIGIT`].
const NOT_HEX: u8 = 0x10;

/// The value of each hex digit (either case), [`NOT_HEX`] for every other byte.
static HEX_DIGIT: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        format!("{:#}", StateFile::parse(json.as_bytes()).unwrap_err())
    }

    const K1: &str = "0x01000000000000000000000000000000000000000000000000000000000000";
    const K2: &str = "0x02000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn shapes() {
        let raw = format!(
            r#"{{"keyvals":[{{"key":"{K2}","value":"0x"}},{{"key":"{K1}","value":"ab"}}]}}"#
        );
        let StateFile::Raw(s) = StateFile::parse(raw.as_bytes()).unwrap() else {
            panic!("not raw")
        };
        assert_eq!(s.expected_root, None);
        assert_eq!(s.entries[0].1, vec![0xab]);
        assert!(s.entries[0].0 < s.entries[1].0);

        let genesis = format!(
            r#"{{"header":{{"x":1}},"state":{{"keyvals":[{{"key":"{K1}","value":""}}]}}}}"#
        );
        assert!(matches!(
            StateFile::parse(genesis.as_bytes()).unwrap(),
            StateFile::Genesis(_)
        ));

        let step = r#"{"block":[1,2],"pre_state":{"keyvals":[]},"post_state":{"state_root":"0x0000000000000000000000000000000000000000000000000000000000000000","keyvals":[]}}"#;
        let StateFile::Step { pre, post } = StateFile::parse(step.as_bytes()).unwrap() else {
            panic!("not a step")
        };
        assert_eq!(pre.computed_root().unwrap(), Hash::ZERO);
        assert_eq!(post.expected_root, Some(Hash::ZERO));
    }

    #[test]
    fn value_hex_matches_the_hex_crate() {
        for text in ["", "00", "0x", "0xdeadBEEF", "0X0123456789abcdefABCDEF"] {
            let digits = text.trim_start_matches("0x").trim_start_matches("0X");
            assert_eq!(decode_value(text).unwrap(), hex::decode(digits).unwrap());
        }
        for bad in ["0", "0x123", "0xg0", "0x0g", "zz", "0x 1", "0x\u{e9}"] {
            let e = decode_value(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid hex: "), "{bad}: {e}");
        }
        assert!(
            decode_value("0x12g4")
                .unwrap_err()
                .to_string()
                .contains("'g' at position 2")
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("[1]").contains("not a JSON state file"));
        assert!(err("{}").contains("missing field `keyvals`"));
        assert!(err(r#"{"pre_state":{"keyvals":[]}}"#).contains("post_state"));
        let dup =
            format!(r#"{{"keyvals":[{{"key":"{K1}","value":""}},{{"key":"{K1}","value":"00"}}]}}"#);
        assert!(err(&dup).contains("duplicate key"));
        let short = r#"{"state":{"keyvals":[{"key":"0x00","value":""}]}}"#;
        assert!(err(short).contains("state.keyvals[0].key"));
        let bad = format!(r#"{{"keyvals":[{{"key":"{K1}","value":"0xzz"}}]}}"#);
        assert!(err(&bad).contains("keyvals[0].value"));
    }
}
