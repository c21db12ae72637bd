//! How a key's secret is stored: a verifier that can confirm a presented secret but not reveal it.
//!
//! The default is SHA-256 over a per-key 32-byte random salt followed by the secret. A key's secret has
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
use subtle::ConstantTimeEq;

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

pub fn salted_sha256(salt: &[u8; SALT_LEN], secret: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret);
    hasher.finalize().into()
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
            Self::Sha256 { salt, digest } => salted_sha256(salt, secret).ct_eq(digest).into(),
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
