//! Messages as they come off NATS, and the signed bodies behind them.
//!
//! Mode 0 (first byte even): a raw message, the text of its `Quench-Signature` header up to the first
//! newline and the payload after it, read with `quench_bus::nats::unseal` (exactly what a subscriber runs)
//! and opened as an event batch, a heartbeat or an acknowledgement (`unseal_ack`: a signature or an
//! HMAC). A decoded signature or MAC re-encodes to the header's text (trimmed, lowercased), and nothing
//! opens unless the trusted key signed it or the edge's MAC key authenticated it.
//!
//! Otherwise the payload is signed with the fixed manager (or edge) key first, so the JSON decoding behind
//! the signature check is reached: a heartbeat, acknowledgement or edge registration that parses survives
//! sealing and opening again (signed or MAC'd), a signature made for one purpose never opens another,
//! and a body signed by the right key fails only as `Malformed`. The header's text, and a registration's public key, are
//! also read as a hex public key and signing seed (registrations, `--trust-key`, the signing key file):
//! what parses re-encodes to the same text and signs and verifies.

use crate::common;
use quench_bus::{
    EdgeRegistration, EventBatch, OpenError, Sealed, SignedAck, SignedHeartbeat,
    nats::{unseal, unseal_ack},
};
use quench_core::sign::{
    PublicKey, Purpose, SignError, Signature, Signer,
    ack::{AckKey, AckSeal},
};

/// Runs one input; panics if a property fails.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => raw(mode >> 2, rest),
        1 => heartbeat(rest),
        2 => ack(rest),
        _ => registration(rest),
    }
}

fn raw(kind: u8, data: &[u8]) {
    let (header, payload) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (std::str::from_utf8(&data[..at]).ok(), &data[at + 1..]),
        None => (None, data),
    };
    // Without a header nothing is even looked at.
    let unsigned: Result<EventBatch, _> = unseal(payload, None);
    assert!(unsigned.is_err());
    let Some(header) = header else {
        return;
    };
    key_text(header);
    match kind % 3 {
        0 => {
            let batch: Option<EventBatch> = decoded(header, payload);
            if let Some(batch) = batch {
                refused(batch.open(&common::trust()));
            }
        }
        1 => {
            let beat: Option<SignedHeartbeat> = decoded(header, payload);
            if let Some(beat) = beat {
                refused(beat.open(&common::trust()));
            }
        }
        _ => {
            if let Ok(ack) = unseal_ack(payload, Some(header)) {
                assert_eq!(ack.body(), payload);
                let encoded = ack.seal().encode();
                assert_eq!(encoded, header.trim().to_ascii_lowercase());
                assert_eq!(AckSeal::decode(&encoded).as_ref(), Ok(ack.seal()));
                let edge = common::edge();
                refused(ack.open(&edge.public(), Some(&AckKey::of(&edge))));
            }
        }
    }
}

/// Unseals a raw message and checks its signature's text form.
fn decoded<const P: u8>(header: &str, payload: &[u8]) -> Option<Sealed<P>> {
    let sealed: Sealed<P> = unseal(payload, Some(header)).ok()?;
    assert_eq!(sealed.body(), payload);
    let encoded = sealed.signature().encode();
    assert_eq!(encoded, header.trim().to_ascii_lowercase());
    assert_eq!(Signature::decode(&encoded).as_ref(), Ok(sealed.signature()));
    Some(sealed)
}

/// A message that did not come from a trusted key never opens (the fuzzer cannot forge Ed25519; the seed
/// corpus holds no signatures by the fixed keys over raw-mode inputs).
fn refused<T: std::fmt::Debug>(opened: Result<T, OpenError>) {
    assert!(
        matches!(opened, Err(OpenError::Signature(_))),
        "an unsigned message opened: {opened:?}"
    );
}

fn heartbeat(body: &[u8]) {
    let manager = common::manager();
    let trust = common::trust();
    let sealed = SignedHeartbeat::from_parts(body.to_vec(), manager.sign(Purpose::Heartbeat, body));
    match sealed.open(&trust) {
        Ok(beat) => {
            let again = SignedHeartbeat::seal_heartbeat(&manager, &beat);
            assert_eq!(
                again.open(&trust).expect("a resealed heartbeat opens"),
                beat
            );
        }
        Err(error) => assert!(matches!(error, OpenError::Malformed(_)), "{error}"),
    }
    // A heartbeat's signature never makes its bytes events or an acknowledgement.
    let relabelled = EventBatch::from_parts(body.to_vec(), sealed.signature().clone());
    assert!(matches!(
        relabelled.open(&trust),
        Err(OpenError::Signature(SignError::Mismatch))
    ));
    let as_ack = SignedAck::from_parts(
        body.to_vec(),
        AckSeal::Signature(sealed.signature().clone()),
    );
    assert!(matches!(
        as_ack.open(&manager.public(), Some(&AckKey::of(&manager))),
        Err(OpenError::Signature(SignError::Mismatch))
    ));
}

fn ack(body: &[u8]) {
    let edge = common::edge();
    let mac_key = AckKey::of(&edge);
    let signature = edge.sign(Purpose::Ack, body);
    let signed = SignedAck::from_parts(body.to_vec(), AckSeal::Signature(signature.clone()));
    let maced = SignedAck::from_parts(body.to_vec(), AckSeal::Mac(mac_key.mac(edge.id(), body)));
    for sealed in [&signed, &maced] {
        match sealed.open(&edge.public(), Some(&mac_key)) {
            Ok(ack) => {
                for again in [
                    SignedAck::seal_ack(&edge, &ack),
                    SignedAck::mac_ack(edge.id(), &mac_key, &ack),
                ] {
                    assert_eq!(
                        again
                            .open(&edge.public(), Some(&mac_key))
                            .expect("a resealed ack opens"),
                        ack
                    );
                }
            }
            Err(error) => assert!(matches!(error, OpenError::Malformed(_)), "{error}"),
        }
        // Another key's acknowledgement, or the edge's key posing as the manager: refused.
        assert!(matches!(
            sealed.open(&common::manager().public(), Some(&mac_key)),
            Err(OpenError::Signature(SignError::UnknownSigner(_)))
        ));
    }
    // A MAC without the registered MAC key proves nothing.
    assert!(maced.open(&edge.public(), None).is_err());
    let as_heartbeat = SignedHeartbeat::from_parts(body.to_vec(), signature);
    assert!(as_heartbeat.open(&common::trust()).is_err());
}

fn registration(body: &[u8]) {
    let Ok(registration) = serde_json::from_slice::<EdgeRegistration>(body) else {
        return;
    };
    let json = serde_json::to_vec(&registration).expect("serialises");
    let again: EdgeRegistration = serde_json::from_slice(&json).expect("parses");
    assert_eq!(again, registration);
    // The key in it, read as the manager reads it: its text form is the input's, normalised.
    key_text(&registration.public_key);
}

/// A public key or signing seed in hex (registrations, `--trust-key`, the signing key file): what parses
/// re-encodes to the same text, trimmed and lowercased, and parses again to the same key.
fn key_text(text: &str) {
    if let Ok(key) = PublicKey::parse(text) {
        assert_eq!(key.to_hex(), text.trim().to_ascii_lowercase());
        assert_eq!(PublicKey::parse(&key.to_hex()).as_ref(), Ok(&key));
    }
    if let Ok(signer) = Signer::from_seed_hex(text) {
        assert_eq!(signer.seed_hex(), text.trim().to_ascii_lowercase());
        let body = text.as_bytes();
        let signature = signer.sign(Purpose::Ack, body);
        assert_eq!(
            signer.public().verify(Purpose::Ack, body, &signature),
            Ok(())
        );
    }
}
