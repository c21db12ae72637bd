//! Signatures on everything the manager tells the edges, and everything edges report back.
//!
//! The bus is shared infrastructure: anyone able to publish on it must not be able to revive a key, hide
//! a revocation or fake an edge's confirmation. So every batch of events, every heartbeat and every
//! snapshot carries an Ed25519 signature by the manager's key, and every acknowledgement one by the edge's
//! own key. What is signed is the exact bytes sent, prefixed by what they are (`quench-events\0`, ...),
//! so a signature made for one purpose can never be replayed as another.
//!
//! A signature names its signer by a short id (the first 8 bytes of SHA-256 of the public key), so a
//! verifier can hold several trusted keys at once: that is how the manager's key is rotated.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::{
    hash::{hex, sha256, unhex},
    key::{RandomError, fill_random},
};

pub mod ack;

/// What a signature is for; part of the signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Events,
    Heartbeat,
    Snapshot,
    Ack,
    /// A page of the log read by one edge's request, bound to that request's nonce.
    Page,
    /// An edge's proof, made once at registration, that its acknowledgement MAC key belongs to its
    /// signing key (see [`crate::sign::ack`]).
    AckKey,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Events => b"quench-events\0",
            Self::Heartbeat => b"quench-heartbeat\0",
            Self::Snapshot => b"quench-snapshot\0",
            Self::Ack => b"quench-ack\0",
            Self::Page => b"quench-page\0",
            Self::AckKey => b"quench-ack-key\0",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("not a signing key: expected 64 hex characters")]
    BadSeed,
    #[error("not a public key: expected 64 hex characters of an Ed25519 point")]
    BadPublicKey,
    #[error("not a signature: expected `<signer>.<128 hex characters>`")]
    BadSignature,
    #[error("signed by {0}, which is not a trusted key")]
    UnknownSigner(String),
    #[error("not an acknowledgement key: expected 64 hex characters")]
    BadAckKey,
    #[error("the signature does not match the message")]
    Mismatch,
}

/// A short, stable name for a public key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignerId(String);

impl SignerId {
    fn of(key: &VerifyingKey) -> Self {
        Self(hex(&sha256(key.as_bytes())[..8]))
    }

    /// Reads the 16 hex characters of a signer id, as found before the `.` of a signature or a MAC.
    fn parse(text: &str) -> Option<Self> {
        (text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SignerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SignerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerId({})", self.0)
    }
}

/// A private signing key. It does not print; [`Signer::seed_hex`] exists only to store it.
pub struct Signer {
    key: SigningKey,
    id: SignerId,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}, <redacted>)", self.id)
    }
}

impl Signer {
    pub fn generate() -> Result<Self, RandomError> {
        let mut seed = [0u8; 32];
        fill_random(&mut seed)?;
        Ok(Self::from_seed(seed))
    }

    fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let id = SignerId::of(&key.verifying_key());
        Self { key, id }
    }

    pub fn from_seed_hex(text: &str) -> Result<Self, SignError> {
        unhex::<32>(text.trim())
            .map(Self::from_seed)
            .ok_or(SignError::BadSeed)
    }

    /// The secret seed, hex-encoded: for writing the key file, nothing else.
    pub fn seed_hex(&self) -> String {
        hex(self.key.as_bytes())
    }

    pub fn id(&self) -> &SignerId {
        &self.id
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
            id: self.id.clone(),
        }
    }

    pub fn sign(&self, purpose: Purpose, body: &[u8]) -> Signature {
        let message = [purpose.tag(), body].concat();
        Signature {
            signer: self.id.clone(),
            bytes: self.key.sign(&message).to_bytes(),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: SignerId,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, SignError> {
        let bytes = unhex::<32>(text.trim()).ok_or(SignError::BadPublicKey)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| SignError::BadPublicKey)?;
        let id = SignerId::of(&key);
        Ok(Self { key, id })
    }

    pub fn to_hex(&self) -> String {
        hex(self.key.as_bytes())
    }

    pub fn id(&self) -> &SignerId {
        &self.id
    }

    pub fn verify(
        &self,
        purpose: Purpose,
        body: &[u8],
        signature: &Signature,
    ) -> Result<(), SignError> {
        if signature.signer != self.id {
            return Err(SignError::UnknownSigner(signature.signer.to_string()));
        }
        let message = [purpose.tag(), body].concat();
        let parsed = ed25519_dalek::Signature::from_bytes(&signature.bytes);
        self.key
            .verify_strict(&message, &parsed)
            .map_err(|_| SignError::Mismatch)
    }
}

/// A signature and the id of the key that made it; text form `<signer>.<hex signature>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    signer: SignerId,
    bytes: [u8; 64],
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(by {})", self.signer)
    }
}

impl Signature {
    pub fn signer(&self) -> &SignerId {
        &self.signer
    }

    pub fn encode(&self) -> String {
        format!("{}.{}", self.signer, hex(&self.bytes))
    }

    pub fn decode(text: &str) -> Result<Self, SignError> {
        let (signer, sig) = text.trim().split_once('.').ok_or(SignError::BadSignature)?;
        let signer = SignerId::parse(signer).ok_or(SignError::BadSignature)?;
        let bytes = unhex::<64>(sig).ok_or(SignError::BadSignature)?;
        Ok(Self { signer, bytes })
    }
}

impl serde::Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> serde::Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::decode(&text).map_err(serde::de::Error::custom)
    }
}

/// The manager keys an edge accepts: the current one, and during a rotation the next or previous one.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<PublicKey>,
}

impl Trust {
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self { keys }
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    pub fn verify(
        &self,
        purpose: Purpose,
        body: &[u8],
        signature: &Signature,
    ) -> Result<(), SignError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == signature.signer)
            .ok_or_else(|| SignError::UnknownSigner(signature.signer.to_string()))?;
        key.verify(purpose, body, signature)
    }
}

/// A value an edge picks at random for one request to the manager, which the manager signs into its
/// answer. An answer carrying the nonce the edge just chose was made after the edge asked: that is
/// what lets an edge count an answer as proof of freshness, and refuse a recorded one replayed to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Nonce([u8; Nonce::LEN]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a nonce: expected 32 lowercase hex characters")]
pub struct NonceError;

impl Nonce {
    const LEN: usize = 16;

    pub fn random() -> Result<Self, RandomError> {
        let mut bytes = [0u8; Self::LEN];
        fill_random(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub fn parse(text: &str) -> Result<Self, NonceError> {
        if text.len() != 2 * Self::LEN || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(NonceError);
        }
        unhex::<{ Self::LEN }>(text).map(Self).ok_or(NonceError)
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({self})")
    }
}

impl serde::Serialize for Nonce {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Nonce {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_for_one_purpose_only() {
        let signer = Signer::generate().expect("random");
        let trust = Trust::new(vec![signer.public()]);
        let signature = signer.sign(Purpose::Events, b"[1,2,3]");
        assert_eq!(
            trust.verify(Purpose::Events, b"[1,2,3]", &signature),
            Ok(())
        );
        assert_eq!(
            trust.verify(Purpose::Events, b"[1,2,4]", &signature),
            Err(SignError::Mismatch)
        );
        assert_eq!(
            trust.verify(Purpose::Heartbeat, b"[1,2,3]", &signature),
            Err(SignError::Mismatch)
        );
    }

    #[test]
    fn another_key_is_not_trusted() {
        let trusted = Signer::generate().expect("random");
        let forger = Signer::generate().expect("random");
        let trust = Trust::new(vec![trusted.public()]);
        let forged = forger.sign(Purpose::Events, b"x");
        assert!(matches!(
            trust.verify(Purpose::Events, b"x", &forged),
            Err(SignError::UnknownSigner(_))
        ));
    }

    #[test]
    fn keys_and_signatures_round_trip_through_text() {
        let signer = Signer::generate().expect("random");
        let again = Signer::from_seed_hex(&signer.seed_hex()).expect("seed");
        assert_eq!(again.public(), signer.public());
        let public = PublicKey::parse(&signer.public().to_hex()).expect("public");
        let signature = signer.sign(Purpose::Ack, b"ok");
        let decoded = Signature::decode(&signature.encode()).expect("decode");
        assert_eq!(public.verify(Purpose::Ack, b"ok", &decoded), Ok(()));
        assert!(!format!("{signer:?}").contains(&signer.seed_hex()));
        for bad in ["", "abc", "0123456789abcdef.zz", "short.00"] {
            assert!(Signature::decode(bad).is_err(), "{bad}");
        }
        assert!(PublicKey::parse("00").is_err());
        assert!(Signer::from_seed_hex("xyz").is_err());
    }

    #[test]
    fn nonces_are_random_and_parse_only_in_their_own_form() {
        let a = Nonce::random().expect("random");
        let b = Nonce::random().expect("random");
        assert_ne!(a, b);
        assert_eq!(Nonce::parse(&a.to_string()), Ok(a.clone()));
        let json = serde_json::to_string(&a).expect("json");
        assert_eq!(serde_json::from_str::<Nonce>(&json).expect("parse"), a);
        for bad in [
            "",
            "00",
            &a.to_string().to_uppercase(),
            &format!("{a}0"),
            "zz000000000000000000000000000000",
        ] {
            assert!(Nonce::parse(bad).is_err(), "{bad}");
        }
    }
}
