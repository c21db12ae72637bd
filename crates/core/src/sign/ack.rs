//! Acknowledgements an edge authenticates with a MAC instead of a signature.
//!
//! Every edge confirms every change it applies, so a manager checks N acknowledgements per revocation. An
//! Ed25519 verification costs tens of microseconds; an HMAC-SHA256 over the same hundred bytes, keyed
//! ahead, about one. So an edge authenticates its acknowledgements with HMAC-SHA256 under an [`AckKey`]
//! that only it and the managers know. Events, heartbeats and pages stay signed: edges must never be able
//! to make what the manager says.
//!
//! The key is derived from the edge's signing seed (so it needs no file of its own and survives restarts
//! with it) and handed to the manager once, at registration, with a [`prove`]n signature by the edge's
//! signing key over the edge id and the key. The manager stores it next to the public key, and takes it
//! only with a valid proof: holding an edge token is not enough to set the MAC key of a real edge's id,
//! which would let its holder confirm changes in that edge's name.
//!
//! What this costs: whoever reads the managers' database learns the MAC keys, and with access to the bus
//! could forge acknowledgements (not events). The database already decides every key's state, so reading
//! it is already the end of every guarantee; `docs/security.md` says so.

use std::fmt;

use hmac::{Hmac, Mac as _, digest::KeyInit};
use sha2::Sha256;
use zeroize::Zeroize;

use super::{PublicKey, Purpose, SignError, Signature, Signer, SignerId};
use crate::hash::{hex, unhex};

type HmacSha256 = Hmac<Sha256>;

/// What a MAC'd acknowledgement is, mixed into every MAC so a tag made for one use is no other's.
const ACK_TAG: &[u8] = b"quench-ack\0";
/// How the key is derived from the signing seed.
const DERIVE_TAG: &[u8] = b"quench-ack-mac-key\0";

/// An edge's acknowledgement key. It does not print; [`AckKey::to_hex`] exists only to store it.
#[derive(Clone)]
pub struct AckKey {
    bytes: [u8; 32],
    /// The HMAC state after the key's inner and outer pads and the purpose tag: cloned per message, so
    /// each MAC hashes only the message.
    keyed: HmacSha256,
}

impl fmt::Debug for AckKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AckKey(<redacted>)")
    }
}

impl PartialEq for AckKey {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.bytes[..], &other.bytes[..]).into()
    }
}

impl Eq for AckKey {}

impl Drop for AckKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl AckKey {
    fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut keyed = keyed(&bytes);
        keyed.update(ACK_TAG);
        Self { bytes, keyed }
    }

    /// The acknowledgement key of an edge's signing key: the same seed always gives the same key.
    pub fn of(signer: &Signer) -> Self {
        let mut derive = keyed(signer.key.as_bytes());
        derive.update(DERIVE_TAG);
        Self::from_bytes(derive.finalize().into_bytes().into())
    }

    pub fn parse(text: &str) -> Result<Self, SignError> {
        unhex::<32>(text.trim())
            .map(Self::from_bytes)
            .ok_or(SignError::BadAckKey)
    }

    /// The key, hex-encoded: for registering and storing it, nothing else.
    pub fn to_hex(&self) -> String {
        hex(&self.bytes)
    }

    /// The MAC of an acknowledgement's exact bytes, naming the edge's signing key as the one it speaks for.
    pub fn mac(&self, signer: &SignerId, body: &[u8]) -> AckMac {
        let mut mac = self.keyed.clone();
        mac.update(body);
        AckMac {
            signer: signer.clone(),
            bytes: mac.finalize().into_bytes().into(),
        }
    }

    /// Checks a MAC in constant time.
    pub fn verify(&self, body: &[u8], mac: &AckMac) -> Result<(), SignError> {
        let mut check = self.keyed.clone();
        check.update(body);
        check
            .verify_slice(&mac.bytes)
            .map_err(|_| SignError::Mismatch)
    }
}

/// HMAC-SHA256 keyed with 32 bytes: zero-padded to the 64-byte block, as HMAC pads a short key itself.
fn keyed(key: &[u8; 32]) -> HmacSha256 {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mac = <HmacSha256 as KeyInit>::new(&block.into());
    block.zeroize();
    mac
}

/// An acknowledgement's MAC and the signer id of the edge key it speaks for; text form
/// `<signer>.<64 hex characters>` (a signature has 128).
#[derive(Clone, PartialEq, Eq)]
pub struct AckMac {
    signer: SignerId,
    bytes: [u8; 32],
}

impl fmt::Debug for AckMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AckMac(for {})", self.signer)
    }
}

impl AckMac {
    pub fn signer(&self) -> &SignerId {
        &self.signer
    }

    pub fn encode(&self) -> String {
        format!("{}.{}", self.signer, hex(&self.bytes))
    }

    pub fn decode(text: &str) -> Result<Self, SignError> {
        let (signer, mac) = text.trim().split_once('.').ok_or(SignError::BadSignature)?;
        let signer = SignerId::parse(signer).ok_or(SignError::BadSignature)?;
        let bytes = unhex::<32>(mac).ok_or(SignError::BadSignature)?;
        Ok(Self { signer, bytes })
    }
}

/// How an acknowledgement is authenticated: a MAC under the edge's [`AckKey`], or (as edges before the
/// MAC did, and still accepted) an Ed25519 signature by its signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckSeal {
    Mac(AckMac),
    Signature(Signature),
}

impl AckSeal {
    pub fn signer(&self) -> &SignerId {
        match self {
            Self::Mac(mac) => mac.signer(),
            Self::Signature(signature) => signature.signer(),
        }
    }

    pub fn encode(&self) -> String {
        match self {
            Self::Mac(mac) => mac.encode(),
            Self::Signature(signature) => signature.encode(),
        }
    }

    /// Reads either form, told apart by length.
    pub fn decode(text: &str) -> Result<Self, SignError> {
        let text = text.trim();
        match text.split_once('.') {
            Some((_, tail)) if tail.len() == 64 => AckMac::decode(text).map(Self::Mac),
            _ => Signature::decode(text).map(Self::Signature),
        }
    }
}

fn proven_bytes(edge: &str, key: &AckKey) -> Vec<u8> {
    [edge.as_bytes(), b"\0", key.to_hex().as_bytes()].concat()
}

/// The edge's proof, by its signing key, that `key` is the acknowledgement key of the edge `edge`.
pub fn prove(signer: &Signer, edge: &str, key: &AckKey) -> Signature {
    signer.sign(Purpose::AckKey, &proven_bytes(edge, key))
}

/// Checks a [`prove`]n acknowledgement key against the public key being registered for `edge`.
pub fn check_proof(
    public: &PublicKey,
    edge: &str,
    key: &AckKey,
    proof: &Signature,
) -> Result<(), SignError> {
    public.verify(Purpose::AckKey, &proven_bytes(edge, key), proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_checks_only_under_its_key_and_for_its_bytes() {
        let edge = Signer::generate().expect("random");
        let key = AckKey::of(&edge);
        let mac = key.mac(edge.id(), b"{\"applied\":4}");
        assert_eq!(key.verify(b"{\"applied\":4}", &mac), Ok(()));
        assert_eq!(
            key.verify(b"{\"applied\":5}", &mac),
            Err(SignError::Mismatch)
        );
        let other = AckKey::of(&Signer::generate().expect("random"));
        assert_eq!(
            other.verify(b"{\"applied\":4}", &mac),
            Err(SignError::Mismatch)
        );
    }

    #[test]
    fn the_key_is_the_seeds_and_round_trips_through_text() {
        let edge = Signer::generate().expect("random");
        let again = Signer::from_seed_hex(&edge.seed_hex()).expect("seed");
        assert_eq!(AckKey::of(&edge), AckKey::of(&again));
        let stored = AckKey::parse(&AckKey::of(&edge).to_hex()).expect("hex");
        assert_eq!(stored, AckKey::of(&edge));
        assert_ne!(
            AckKey::of(&edge),
            AckKey::of(&Signer::generate().expect("random"))
        );
        assert_eq!(format!("{:?}", AckKey::of(&edge)), "AckKey(<redacted>)");
        assert_eq!(AckKey::parse("abc"), Err(SignError::BadAckKey));
    }

    #[test]
    fn seals_round_trip_and_are_told_apart() {
        let edge = Signer::generate().expect("random");
        let mac = AckSeal::Mac(AckKey::of(&edge).mac(edge.id(), b"x"));
        let signed = AckSeal::Signature(edge.sign(Purpose::Ack, b"x"));
        for seal in [mac, signed] {
            assert_eq!(AckSeal::decode(&seal.encode()), Ok(seal.clone()));
            assert_eq!(seal.signer(), edge.id());
        }
        for bad in [
            "",
            ".",
            "abc.def",
            &format!("{}.{}", edge.id(), "0".repeat(63)),
        ] {
            assert!(AckSeal::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_signing_key_proves_an_ack_key_for_its_edge() {
        let edge = Signer::generate().expect("random");
        let key = AckKey::of(&edge);
        let proof = prove(&edge, "e1", &key);
        assert_eq!(check_proof(&edge.public(), "e1", &key, &proof), Ok(()));
        // For another edge id, or another key, the proof is worthless.
        assert!(check_proof(&edge.public(), "e2", &key, &proof).is_err());
        let other = AckKey::of(&Signer::generate().expect("random"));
        assert!(check_proof(&edge.public(), "e1", &other, &proof).is_err());
        // Someone else's signature over the real key does not prove it for this edge's public key.
        let thief = Signer::generate().expect("random");
        let forged = prove(&thief, "e1", &key);
        assert!(check_proof(&edge.public(), "e1", &key, &forged).is_err());
    }
}
