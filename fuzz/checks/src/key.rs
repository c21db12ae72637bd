//! The key parser: any text an edge, the scanner or the leak intake is handed as a key.
//!
//! Properties: `ApiKey::parse` and `PresentedKey::parse` agree; a key that parses re-serialises to exactly
//! the text it came from (so nothing is trimmed, case-folded or normalised on the way in); its parts
//! round-trip on their own; and changing any one character of it is refused.
//!
//! Random text almost never carries a valid CRC32, so an input whose first byte is odd gets a correct
//! checksum appended before parsing: that reaches the prefix, key id and secret checks behind it.

use quench_core::{
    ApiKey, KeyId, Prefix, base62,
    key::{BODY_LEN, CHECKSUM_LEN, KEY_ID_LEN, PresentedKey, confirm_candidate},
};

/// Runs one input; panics if a property fails.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode & 1 == 1 {
        check(&with_checksum(text));
    } else {
        check(text);
    }
    // The parts' own parsers, on the same text.
    if let Ok(prefix) = Prefix::parse(text) {
        assert_eq!(prefix.as_str(), text);
    }
    if let Ok(id) = KeyId::parse(text) {
        assert_eq!(id.to_string(), text);
        assert_eq!(KeyId::from_u64(id.as_u64()), Ok(id));
    }
}

fn with_checksum(text: &str) -> String {
    let mut sum = [0u8; CHECKSUM_LEN];
    base62::encode_fixed(u64::from(crc32fast_hash(text.as_bytes())), &mut sum);
    format!(
        "{text}{}",
        std::str::from_utf8(&sum).expect("base62 is ASCII")
    )
}

/// CRC32 (IEEE), as the key format defines its checksum: computed here from the definition rather than
/// through the crate under test, so a bug there cannot hide itself.
fn crc32fast_hash(bytes: &[u8]) -> u32 {
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

fn check(text: &str) {
    let presented = PresentedKey::parse(text);
    let owned = ApiKey::parse(text);
    assert_eq!(
        presented.is_ok(),
        owned.is_ok(),
        "the two parsers disagree on {text:?}"
    );
    assert_eq!(presented.err(), owned.as_ref().err().copied());
    assert_eq!(
        confirm_candidate(text),
        presented.ok().map(|key| (key.prefix(), key.id()))
    );
    let (Ok(presented), Ok(owned)) = (presented, owned) else {
        return;
    };
    assert_eq!(
        owned.expose(),
        text,
        "a parsed key re-serialises to its text"
    );
    assert_eq!(presented.prefix(), owned.prefix());
    assert_eq!(presented.id(), owned.id());
    assert_eq!(presented.secret(), owned.secret().as_bytes());
    assert_eq!(text.len(), presented.prefix().as_str().len() + 1 + BODY_LEN);
    assert_eq!(
        Prefix::parse(presented.prefix().as_str()),
        Ok(presented.prefix())
    );
    let id_text = presented.id().to_string();
    assert_eq!(id_text.len(), KEY_ID_LEN);
    assert_eq!(KeyId::parse(&id_text), Ok(presented.id()));
    // The secret never shows in what a key prints.
    let secret = std::str::from_utf8(owned.secret().as_bytes()).expect("base62 is ASCII");
    assert!(!format!("{owned:?} {presented:?}").contains(secret));
    // Every single-character change is caught (CRC32 detects every error within 32 bits).
    let mut changed = text.as_bytes().to_vec();
    for at in 0..changed.len() {
        let original = changed[at];
        changed[at] = if original == b'a' { b'b' } else { b'a' };
        if let Ok(mutant) = std::str::from_utf8(&changed) {
            assert!(
                PresentedKey::parse(mutant).is_err(),
                "a one-character change at {at} was accepted"
            );
        }
        changed[at] = original;
    }
}
