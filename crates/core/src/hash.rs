//! How a key's secret is stored: a verifier that can confirm a presented secret but not reveal it.
//!
//! The default is SHA-256 over a per-key 32-byte random salt, zero-padded to one 64-byte SHA-256 block,
//! followed by the secret: `SHA-256(salt ‖ 0³² ‖ secret)`. Because the salt fills exactly one block, an edge
//! keeps the hash state after that block instead of the salt (same 32 bytes) and a check costs a single
//! SHA-256 compression for the 43-byte secret. A key's secret has
//! 256 bits of entropy, so a fast hash is enough to make a leaked table useless, and it keeps verification
//! at the cost of one SHA-256. Issuers that must satisfy a policy asking for password hashing can choose
//! argon2id or bcrypt; the edge then pays that cost once per key and remembers the result in memory only
//! (see `keyset`). All comparisons are constant-time.
//!
//! A verifier's text form (stored in the database and carried in events) is self-describing:
//! `sha256$<hex salt>$<hex digest>`, or the algorithm's own PHC/MCF string (`$argon2id$...`, `$2b$...`).

use std::fmt;

use argon2::{
    Argon2, PasswordHasher, PasswordVerifier,
    password_hash::{PasswordHash, SaltString},
};
use sha2::{Digest, Sha256};

use crate::key::{RandomError, Secret, fill_random};

pub const SALT_LEN: usize = 32;
pub const BCRYPT_COST: u32 = 10;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    #[default]
    Sha256,
    Argon2id,
    Bcrypt,
}

impl HashAlg {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sha256" => Some(Self::Sha256),
            "argon2id" => Some(Self::Argon2id),
            "bcrypt" => Some(Self::Bcrypt),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Argon2id => "argon2id",
            Self::Bcrypt => "bcrypt",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("hashing failed: {0}")]
    Hasher(String),
    #[error("not a verifier Quench understands")]
    Unrecognised,
}

/// A stored secret verifier.
#[derive(Clone, PartialEq, Eq)]
pub enum Verifier {
    Sha256 {
        salt: [u8; SALT_LEN],
        digest: [u8; 32],
    },
    /// argon2id or bcrypt, in the algorithm's own self-describing string.
    Slow { alg: HashAlg, encoded: Box<str> },
}

/// SHA-256's initial hash value.
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
const BLOCK: usize = 64;

/// The SHA-256 state after the salt block (`salt ‖ 0³²`): a check starts from here.
pub fn salt_state(salt: &[u8; SALT_LEN]) -> [u32; 8] {
    let mut block = [0u8; BLOCK];
    block[..SALT_LEN].copy_from_slice(salt);
    let mut state = IV;
    sha2::compress256(&mut state, &[block.into()]);
    state
}

/// Finishes SHA-256 of `salt block ‖ data` from the state after the salt block.
pub fn digest_from_state(state: &[u32; 8], data: &[u8]) -> [u8; 32] {
    let mut state = *state;
    let mut blocks = data.chunks_exact(BLOCK);
    for block in &mut blocks {
        let mut owned = [0u8; BLOCK];
        owned.copy_from_slice(block);
        sha2::compress256(&mut state, &[owned.into()]);
    }
    let rest = blocks.remainder();
    let bits = ((BLOCK + data.len()) as u64) * 8;
    let mut tail = [0u8; 2 * BLOCK];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let end = if rest.len() < BLOCK - 8 {
        BLOCK
    } else {
        2 * BLOCK
    };
    tail[end - 8..end].copy_from_slice(&bits.to_be_bytes());
    for block in tail[..end].chunks_exact(BLOCK) {
        let mut owned = [0u8; BLOCK];
        owned.copy_from_slice(block);
        sha2::compress256(&mut state, &[owned.into()]);
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// `SHA-256(salt ‖ 0³² ‖ secret)`.
pub fn salted_sha256(salt: &[u8; SALT_LEN], secret: &[u8]) -> [u8; 32] {
    digest_from_state(&salt_state(salt), secret)
}

/// Constant-time equality of two digests: no branch or early exit depends on the bytes.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u64;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let mut xa = [0u8; 8];
        let mut ya = [0u8; 8];
        xa.copy_from_slice(x);
        ya.copy_from_slice(y);
        diff |= u64::from_ne_bytes(xa) ^ u64::from_ne_bytes(ya);
    }
    std::hint::black_box(diff) == 0
}

impl Verifier {
    pub fn create(alg: HashAlg, secret: &Secret) -> Result<Self, HashError> {
        match alg {
            HashAlg::Sha256 => {
                let mut salt = [0u8; SALT_LEN];
                fill_random(&mut salt)?;
                let digest = salted_sha256(&salt, secret.as_bytes());
                Ok(Self::Sha256 { salt, digest })
            }
            HashAlg::Argon2id => {
                let mut salt = [0u8; 16];
                fill_random(&mut salt)?;
                let salt =
                    SaltString::encode_b64(&salt).map_err(|e| HashError::Hasher(e.to_string()))?;
                let hash = Argon2::default()
                    .hash_password(secret.as_bytes(), &salt)
                    .map_err(|e| HashError::Hasher(e.to_string()))?;
                Ok(Self::Slow {
                    alg,
                    encoded: hash.to_string().into(),
                })
            }
            HashAlg::Bcrypt => {
                let mut salt = [0u8; 16];
                fill_random(&mut salt)?;
                let hash = bcrypt::hash_with_salt(secret.as_bytes(), BCRYPT_COST, salt)
                    .map_err(|e| HashError::Hasher(e.to_string()))?;
                Ok(Self::Slow {
                    alg,
                    encoded: hash.format_for_version(bcrypt::Version::TwoB).into(),
                })
            }
        }
    }

    pub fn alg(&self) -> HashAlg {
        match self {
            Self::Sha256 { .. } => HashAlg::Sha256,
            Self::Slow { alg, .. } => *alg,
        }
    }

    /// Does `secret` match? Constant-time in the secret for SHA-256; the slow hashes compare in
    /// constant time internally.
    pub fn matches(&self, secret: &[u8]) -> bool {
        match self {
            Self::Sha256 { salt, digest } => digests_equal(&salted_sha256(salt, secret), digest),
            Self::Slow {
                alg: HashAlg::Argon2id,
                encoded,
            } => PasswordHash::new(encoded)
                .map(|parsed| Argon2::default().verify_password(secret, &parsed).is_ok())
                .unwrap_or(false),
            Self::Slow { encoded, .. } => bcrypt::verify(secret, encoded).unwrap_or(false),
        }
    }

    pub fn encode(&self) -> String {
        match self {
            Self::Sha256 { salt, digest } => format!("sha256${}${}", hex(salt), hex(digest)),
            Self::Slow { encoded, .. } => encoded.to_string(),
        }
    }

    pub fn decode(text: &str) -> Result<Self, HashError> {
        if let Some(rest) = text.strip_prefix("sha256$") {
            let (salt, digest) = rest.split_once('$').ok_or(HashError::Unrecognised)?;
            return Ok(Self::Sha256 {
                salt: unhex(salt).ok_or(HashError::Unrecognised)?,
                digest: unhex(digest).ok_or(HashError::Unrecognised)?,
            });
        }
        let alg = if text.starts_with("$argon2id$") {
            let parsed = PasswordHash::new(text).map_err(|_| HashError::Unrecognised)?;
            if parsed.hash.is_none() || parsed.salt.is_none() {
                return Err(HashError::Unrecognised);
            }
            HashAlg::Argon2id
        } else if text.starts_with("$2b$") || text.starts_with("$2y$") || text.starts_with("$2a$") {
            HashAlg::Bcrypt
        } else {
            return Err(HashError::Unrecognised);
        };
        Ok(Self::Slow {
            alg,
            encoded: text.into(),
        })
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({})", self.alg().as_str())
    }
}

impl serde::Serialize for Verifier {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

impl<'de> serde::Deserialize<'de> for Verifier {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::decode(&text).map_err(serde::de::Error::custom)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let raw = text.as_bytes();
    if raw.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        *slot = (high * 16 + low) as u8;
    }
    Some(out)
}

/// SHA-256 of arbitrary bytes, for tokens and the slow-hash cache.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::generate().expect("random")
    }

    #[test]
    fn every_algorithm_accepts_its_secret_and_refuses_another() {
        for alg in [HashAlg::Sha256, HashAlg::Argon2id, HashAlg::Bcrypt] {
            let right = secret();
            let verifier = Verifier::create(alg, &right).expect("hash");
            assert_eq!(verifier.alg(), alg);
            assert!(verifier.matches(right.as_bytes()), "{alg:?}");
            assert!(!verifier.matches(secret().as_bytes()), "{alg:?}");
            let decoded = Verifier::decode(&verifier.encode()).expect("decode");
            assert_eq!(decoded, verifier);
            assert!(decoded.matches(right.as_bytes()));
        }
    }

    #[test]
    fn the_salted_digest_is_plain_sha256_of_the_padded_salt_and_secret() {
        let salt = [7u8; SALT_LEN];
        for len in [0, 1, 43, 55, 56, 63, 64, 65, 119, 120, 200] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut reference = Sha256::new();
            reference.update(salt);
            reference.update([0u8; 32]);
            reference.update(&data);
            let expected: [u8; 32] = reference.finalize().into();
            assert_eq!(salted_sha256(&salt, &data), expected, "length {len}");
        }
    }

    #[test]
    fn digest_comparison_is_exact() {
        let a = sha256(b"a");
        let mut b = a;
        assert!(digests_equal(&a, &b));
        b[31] ^= 1;
        assert!(!digests_equal(&a, &b));
    }

    #[test]
    fn salts_differ_per_key() {
        let s = secret();
        let a = Verifier::create(HashAlg::Sha256, &s).expect("hash");
        let b = Verifier::create(HashAlg::Sha256, &s).expect("hash");
        assert_ne!(a, b);
    }

    #[test]
    fn decode_refuses_unknown_text() {
        for bad in ["", "md5$x", "sha256$zz$yy", "$argon2id$nonsense", "plain"] {
            assert!(Verifier::decode(bad).is_err(), "{bad}");
        }
    }
}
