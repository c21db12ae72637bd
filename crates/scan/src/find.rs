//! Finding keys in a buffer.

use quench_core::{
    KeyId, Prefix,
    key::{BODY_LEN, PREFIX_MAX_LEN, PresentedKey},
};

/// A confirmed key in a buffer.
#[derive(Clone)]
pub struct Candidate {
    /// Byte offset of the key's first character.
    pub offset: usize,
    pub len: usize,
    pub prefix: Prefix,
    pub id: KeyId,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Candidate({}_{} at {})",
            self.prefix, self.id, self.offset
        )
    }
}

fn is_body(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_prefix_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Every checksum-valid key in `data`, in order.
pub fn find_in(data: &[u8]) -> Vec<Candidate> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = memchr::memchr(b'_', &data[from..]).map(|i| from + i) {
        from = at + 1;
        let body_end = at + 1 + BODY_LEN;
        if body_end > data.len() || !data[at + 1..body_end].iter().all(|&b| is_body(b)) {
            continue;
        }
        // The key must end where the body ends.
        if data.get(body_end).is_some_and(|&b| is_body(b)) {
            continue;
        }
        // The prefix: the lowercase run before `_`, at most 16 long. Try each start, longest first: a key
        // glued to a word (`tokenqk_...`) is still found, because only the real prefix passes the checksum.
        let mut start = at;
        while start > 0 && at - start < PREFIX_MAX_LEN && is_prefix_char(data[start - 1]) {
            start -= 1;
        }
        for begin in start..at.saturating_sub(1) {
            if !data[begin].is_ascii_lowercase() {
                continue;
            }
            let Ok(text) = std::str::from_utf8(&data[begin..body_end]) else {
                continue;
            };
            if let Ok(key) = PresentedKey::parse(text) {
                found.push(Candidate {
                    offset: begin,
                    len: body_end - begin,
                    prefix: key.prefix(),
                    id: key.id(),
                });
                from = body_end;
                break;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use quench_core::ApiKey;

    use super::*;

    fn key(prefix: &str) -> String {
        ApiKey::generate(Prefix::parse(prefix).expect("prefix"))
            .expect("random")
            .expose()
    }

    #[test]
    fn finds_keys_in_common_settings() {
        let a = key("qk");
        let b = key("acme");
        let text = format!(
            "API_KEY={a}\n{{\"token\": \"{b}\"}}\nkey: '{a}'\nexport X=\"{b}\"; snake_case_identifiers_everywhere"
        );
        let found = find_in(text.as_bytes());
        let ids: Vec<String> = found
            .iter()
            .map(|c| format!("{}_{}", c.prefix, c.id))
            .collect();
        assert_eq!(ids.len(), 4, "{found:?}");
        assert_eq!(&text[found[0].offset..found[0].offset + found[0].len], a);
        assert_eq!(&text[found[1].offset..found[1].offset + found[1].len], b);
    }

    #[test]
    fn refuses_bad_checksums_partial_keys_and_longer_tokens() {
        let a = key("qk");
        let mut bad = a.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'a' { b'b' } else { b'a' };
        let bad = String::from_utf8(bad).expect("ascii");
        let split = format!("{}\n{}", &a[..30], &a[30..]);
        let longer = format!("{a}X");
        for text in [
            bad.as_str(),
            split.as_str(),
            longer.as_str(),
            &a[..a.len() - 1],
        ] {
            assert!(find_in(text.as_bytes()).is_empty(), "{text}");
        }
    }

    #[test]
    fn a_prefix_glued_to_a_word_is_found_by_its_checksum() {
        let a = key("qk");
        // "...xqk_..." — the checksum covers the real prefix, so the key is still found, as `qk`.
        let text = format!("mysecretx{a}");
        let found = find_in(text.as_bytes());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].prefix.as_str(), "qk");
        assert_eq!(&text[found[0].offset..], a);
        let spaced = format!("value {a} end");
        assert_eq!(find_in(spaced.as_bytes()).len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_invents_keys(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let found = find_in(&data);
            for candidate in found {
                let text = std::str::from_utf8(&data[candidate.offset..candidate.offset + candidate.len]).expect("ascii");
                proptest::prop_assert!(PresentedKey::parse(text).is_ok());
            }
        }
    }
}
