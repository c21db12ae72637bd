//! What every fuzz target and the seed generator share: fixed keys, so a target can sign whatever the
//! fuzzer made and reach the decoders that run only after a signature verifies, and so the committed seed
//! corpus stays valid from one build to the next.
//!
//! These keys are public test fixtures: they sign nothing outside this directory.

#![allow(dead_code)]

use p256::pkcs8::{EncodePublicKey, LineEnding};
use quench_core::sign::{Signer, Trust};

/// The manager key the targets trust.
pub fn manager() -> Signer {
    Signer::from_seed_hex(&"07".repeat(32)).expect("a fixed, valid seed")
}

/// An edge's key, for acknowledgements.
pub fn edge() -> Signer {
    Signer::from_seed_hex(&"0e".repeat(32)).expect("a fixed, valid seed")
}

pub fn trust() -> Trust {
    Trust::new(vec![manager().public()])
}

/// The key identifier the GitHub target's public keys document names its key by.
pub const GITHUB_KEY_ID: &str = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a";

/// GitHub's signing key, as far as the targets are concerned.
pub fn github_signing_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).expect("a fixed scalar below the order")
}

/// A public keys document in GitHub's format, naming [`github_signing_key`] and one more key.
pub fn github_document() -> String {
    let pem = github_signing_key()
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("a P-256 key encodes");
    let other = p256::ecdsa::SigningKey::from_slice(&[0x24; 32])
        .expect("a fixed scalar below the order")
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("a P-256 key encodes");
    serde_json::json!({
        "public_keys": [
            {"key_identifier": GITHUB_KEY_ID, "key": pem, "is_current": true},
            {"key_identifier": "retired", "key": other, "is_current": false},
        ]
    })
    .to_string()
}

/// Base64 DER signature over `body`, as GitHub sends it in `Github-Public-Key-Signature`.
pub fn github_sign(body: &[u8]) -> String {
    use base64::Engine;
    use p256::ecdsa::signature::Signer as _;
    let signature: p256::ecdsa::Signature = github_signing_key().sign(body);
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}

/// Structured values drawn from the fuzzer's bytes, front to back. Once the bytes run out every draw is
/// zero (the smallest choice), so a short input still builds something.
#[derive(Debug)]
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&first, rest)) => {
                self.bytes = rest;
                first
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.byte())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A number in `low..=high`.
    pub fn in_range(&mut self, low: u64, high: u64) -> u64 {
        let span = high - low;
        if span == u64::MAX {
            return self.u64();
        }
        low + self.u64_up_to(span)
    }

    /// A number in `0..=max`, from as few bytes as `max` needs.
    fn u64_up_to(&mut self, max: u64) -> u64 {
        let mut value = 0u64;
        let mut room = max;
        while room > 0 {
            value = (value << 8) | u64::from(self.byte());
            room >>= 8;
        }
        value % (max + 1)
    }

    /// An index below `len` (which must not be 0).
    pub fn index(&mut self, len: usize) -> usize {
        self.u64_up_to(len as u64 - 1) as usize
    }

    pub fn choose<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.index(items.len())]
    }
}
