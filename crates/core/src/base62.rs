//! Base62 (`0-9A-Za-z`) encodings of fixed width.
//!
//! Every field of a key has a fixed length, so a key can be split without separators and a scanner can
//! recognise one with a single pattern. Encodings here are therefore fixed-width: a number is padded with
//! leading `0` to its width, and decoding refuses anything that is not exactly that width.

pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The value of one base62 digit, or `None` for any other byte.
pub const fn digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'Z' => Some(byte - b'A' + 10),
        b'a'..=b'z' => Some(byte - b'a' + 36),
        _ => None,
    }
}

/// Writes `value` as exactly `out.len()` base62 digits, most significant first.
///
/// Returns `false` (leaving `out` unspecified) when the value needs more digits than `out` holds.
pub fn encode_fixed(mut value: u64, out: &mut [u8]) -> bool {
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    value == 0
}

/// Reads exactly `text.len()` base62 digits. `None` on a non-digit or an overflow of `u64`.
pub fn decode_fixed(text: &[u8]) -> Option<u64> {
    text.iter().try_fold(0u64, |acc, &byte| {
        acc.checked_mul(62)?.checked_add(u64::from(digit(byte)?))
    })
}

/// `62^n`, for the widths used by the key format (n <= 10).
pub const fn pow62(n: u32) -> u64 {
    let mut result = 1u64;
    let mut i = 0;
    while i < n {
        result *= 62;
        i += 1;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_the_edges_of_the_width() {
        for value in [0, 1, 61, 62, pow62(6) - 1] {
            let mut out = [0u8; 6];
            assert!(encode_fixed(value, &mut out));
            assert_eq!(decode_fixed(&out), Some(value));
        }
    }

    #[test]
    fn refuses_values_wider_than_the_field() {
        let mut out = [0u8; 6];
        assert!(!encode_fixed(pow62(6), &mut out));
    }

    #[test]
    fn rejects_non_digits_and_overflow() {
        assert_eq!(decode_fixed(b"ab-c"), None);
        assert_eq!(decode_fixed(&[b'z'; 12]), None);
    }
}
