//! The leak scanner's finder over arbitrary bytes (files, git blobs, standard input).
//!
//! Properties: every finding is a checksum-valid key at the offset and length it claims, findings are in
//! order and never overlap, and a key planted in the input between separators is found exactly there.
//! The planted key is built from the input (issuer prefix, id and secret) with a correct checksum, since
//! random bytes almost never carry one.

use quench_core::{
    base62,
    key::{BODY_LEN, CHECKSUM_LEN, PresentedKey},
};
use quench_scan::find_in;

/// Runs one input; panics if a property fails.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(rest);
        return;
    }
    // Mode 1: the first 70 bytes make a key, the rest is the haystack it is planted in.
    if rest.len() < 70 {
        return;
    }
    let (seed, haystack) = rest.split_at(70);
    let key = key_from(seed);
    let at = if haystack.is_empty() {
        0
    } else {
        usize::from(mode >> 1) * haystack.len() / 128
    };
    let mut planted = haystack[..at].to_vec();
    planted.push(b'\n');
    let offset = planted.len();
    planted.extend_from_slice(key.as_bytes());
    planted.push(b'"');
    planted.extend_from_slice(&haystack[at..]);
    let found = check(&planted);
    assert!(
        found.iter().any(|(o, l)| *o == offset && *l == key.len()),
        "the planted key at {offset} was not found: {found:?}"
    );
}

/// Checks every finding; returns (offset, length) of each.
fn check(data: &[u8]) -> Vec<(usize, usize)> {
    let found = find_in(data);
    let mut end = 0;
    for candidate in &found {
        assert!(
            candidate.offset >= end,
            "findings overlap or are out of order"
        );
        end = candidate.offset + candidate.len;
        let text = std::str::from_utf8(&data[candidate.offset..end]).expect("a key is ASCII");
        let key = PresentedKey::parse(text).expect("every finding is a valid key");
        assert_eq!((key.prefix(), key.id()), (candidate.prefix, candidate.id));
        assert!(
            !data.get(end).is_some_and(u8::is_ascii_alphanumeric),
            "a finding ends mid-token"
        );
        // The secret never appears in what a finding prints.
        let secret = std::str::from_utf8(key.secret()).expect("ASCII");
        assert!(!format!("{candidate:?}").contains(secret));
    }
    found.iter().map(|c| (c.offset, c.len)).collect()
}

/// A valid key from 70 bytes: a 1-16 character prefix, an id below 62^10, a secret, the checksum.
fn key_from(seed: &[u8]) -> String {
    let lower = |b: u8| char::from(b'a' + b % 26);
    let digit = |b: u8| char::from(base62::ALPHABET[usize::from(b % 62)]);
    let prefix_len = 2 + usize::from(seed[0] % 15);
    let mut text: String = std::iter::once(lower(seed[1]))
        .chain(seed[2..prefix_len + 1].iter().map(|&b| {
            if b % 2 == 0 {
                lower(b >> 1)
            } else {
                char::from(b'0' + (b >> 1) % 10)
            }
        }))
        .collect();
    text.push('_');
    // The first id digit stays below 'A' so the id is below 62^10 whatever follows.
    text.push(digit(seed[17] % 10));
    text.extend(
        seed[18..18 + BODY_LEN - CHECKSUM_LEN - 1]
            .iter()
            .map(|&b| digit(b)),
    );
    let mut sum = [0u8; CHECKSUM_LEN];
    base62::encode_fixed(u64::from(crc32(text.as_bytes())), &mut sum);
    text.push_str(std::str::from_utf8(&sum).expect("ASCII"));
    text
}

/// CRC32 (IEEE) from its definition, independent of the crates under test.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
