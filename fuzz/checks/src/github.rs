//! The GitHub secret-scanning partner endpoint's parsers: the public keys document, the signature check
//! over the raw body, and the payload read once that check passed.
//!
//! Mode 0: the input is a public keys document. Mode 1: the input is a body, signed with the key the fixed
//! document names, so the payload parser behind the check is reached: the signature verifies (with the
//! identifier padded as headers may pad it), no other key or altered body verifies, and the payload either
//! parses into at most 1,000 tokens or is answered 400/422 (a client's mistake, never a 5xx). Mode 2: the
//! input is a key identifier, a signature header and a body, checked against the fixed document.

use crate::common;
use quench_core::key::PresentedKey;
use quench_manager::{
    api::leaks::{MAX_LEAKS, github_payload},
    github::{GithubKeys, SignatureError},
};

/// Runs one input; panics if a property fails.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = GithubKeys::parse(&common::github_document()).expect("the fixed document parses");
    match mode % 3 {
        0 => document(rest),
        1 => signed(&keys, rest),
        _ => headers(&keys, rest),
    }
}

fn document(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(keys) = GithubKeys::parse(text) {
        let _ = format!("{keys:?}");
        let signature = common::github_sign(b"[]");
        // Whatever the document, a missing header is refused before any key is looked up.
        assert_eq!(
            keys.verify(None, Some(&signature), b"[]"),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            keys.verify(Some(common::GITHUB_KEY_ID), None, b"[]"),
            Err(SignatureError::Missing)
        );
    }
}

fn signed(keys: &GithubKeys, body: &[u8]) {
    let signature = common::github_sign(body);
    let id = common::GITHUB_KEY_ID;
    assert_eq!(keys.verify(Some(id), Some(&signature), body), Ok(()));
    assert_eq!(
        keys.verify(
            Some(&format!(" {id}\t")),
            Some(&format!(" {signature} ")),
            body
        ),
        Ok(())
    );
    assert_eq!(
        keys.verify(Some("retired"), Some(&signature), body),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        keys.verify(Some("unknown"), Some(&signature), body),
        Err(SignatureError::UnknownKey)
    );
    let mut altered = body.to_vec();
    altered.push(b' ');
    assert_eq!(
        keys.verify(Some(id), Some(&signature), &altered),
        Err(SignatureError::Mismatch)
    );
    match github_payload(body) {
        Ok(tokens) => {
            assert!(tokens.len() <= MAX_LEAKS);
            for token in &tokens {
                // What the endpoint does next with each token's text.
                if let Ok(key) = PresentedKey::parse(token.token.trim()) {
                    assert!(!key.id().to_string().is_empty());
                }
            }
        }
        Err(error) => assert!(
            matches!(error.status.as_u16(), 400 | 422),
            "a bad payload answered {}: {}",
            error.status,
            error.message
        ),
    }
}

fn headers(keys: &GithubKeys, data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(id), Some(signature), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let (Ok(id), Ok(signature)) = (std::str::from_utf8(id), std::str::from_utf8(signature)) else {
        return;
    };
    let verdict = keys.verify(Some(id), Some(signature), body);
    if verdict.is_ok() {
        // Only a real signature by the named key over exactly these bytes gets through.
        assert_eq!(id.trim(), common::GITHUB_KEY_ID);
    }
}
