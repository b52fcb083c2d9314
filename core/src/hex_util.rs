//! Hex parsing shared by keys and hashes: lowercase or uppercase digits, optional `0x`.

/// A hex string could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HexError {
    /// A character is not a hex digit, or the number of digits is odd.
    #[error("invalid hex: {0}")]
    Invalid(#[from] hex::FromHexError),
    /// The string decodes to the wrong number of bytes.
    #[error("expected {expected} bytes of hex, found {found}")]
    WrongLength {
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
}

/// Strips an optional `0x` / `0X` prefix.
pub(crate) fn strip_0x(s: &str) -> &str {
    s.strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s)
}

/// Decodes hex (optional `0x`) into a variable-length byte vector.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, HexError> {
    Ok(hex::decode(strip_0x(s))?)
}

/// Decodes exactly `N` bytes of hex (optional `0x`).
pub(crate) fn decode_fixed_hex<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let digits = strip_0x(s);
    if digits.len() != 2 * N {
        return Err(HexError::WrongLength {
            expected: N,
            found: digits.len() / 2,
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out)?;
    Ok(out)
}
