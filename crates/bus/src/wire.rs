//! What travels on the bus: signed batches of events, signed heartbeats, signed acknowledgements; and
//! what an edge reads from the manager directly: signed pages of the log.
//!
//! Each message keeps the exact bytes that were signed (`body`) next to the signature, so a receiver
//! verifies before it parses, and nothing depends on re-serialising identically.
//!
//! Freshness: a bus batch only carries events (applying an authentic event is safe whenever it comes),
//! so it proves nothing about time. A heartbeat carries the manager's signed time and log head; a page
//! read by an edge carries them too, plus the nonce the edge chose for that request. Those two are the
//! only things an edge counts as having heard the manager ([`Freshness`]).

use quench_core::{
    Event, Seq, Timestamp,
    sign::{
        Nonce, PublicKey, Purpose, SignError, Signature, Signer, SignerId, Trust,
        ack::{AckKey, AckSeal},
    },
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The manager is alive, and its log ends at `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub manager: String,
    pub head: Seq,
    pub at: Timestamp,
}

/// An edge reports what it has applied; it doubles as the edge's liveness signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub edge: String,
    pub region: String,
    pub applied: Seq,
    pub at: Timestamp,
}

/// Why a message or a snapshot could not even be read as signed: nothing in it was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unreadable {
    #[error("a message without a signature")]
    NoSignature,
    #[error("{0}")]
    Signature(#[source] SignError),
    #[error("snapshot: a line longer than {} bytes", crate::snapshot::MAX_LINE)]
    LineTooLong,
    #[error("snapshot: data after the end line")]
    AfterEnd,
    /// The stream stopped in the middle of a line.
    #[error("snapshot: truncated")]
    Truncated,
    #[error("snapshot: no end line: truncated")]
    NoEndLine,
    #[error("snapshot: no header")]
    NoHeader,
    #[error("snapshot: the key count does not match")]
    CountMismatch,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Signature(#[from] SignError),
    #[error("signed, but not a message Quench understands: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unreadable message: {0}")]
    Unreadable(#[from] Unreadable),
    /// Validly signed, but made for another request: a recorded answer replayed, or a mix-up.
    #[error("the answer is not bound to this request (a replay?): expected nonce {expected}")]
    NotFresh { expected: Nonce },
}

/// What a signed answer proves: the manager's log ended at `head` at the manager's time `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub head: Seq,
    pub at: Timestamp,
}

/// A page of the log as read by one request, opened and checked against that request's nonce.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub events: Vec<Event>,
    pub fresh: Freshness,
}

/// Bytes and the signature over them, for one purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed<const P: u8> {
    body: Vec<u8>,
    signature: Signature,
}

const EVENTS: u8 = 0;
const HEARTBEAT: u8 = 1;
const PAGE: u8 = 2;

const fn purpose(p: u8) -> Purpose {
    match p {
        EVENTS => Purpose::Events,
        HEARTBEAT => Purpose::Heartbeat,
        _ => Purpose::Page,
    }
}

/// Consecutive events, body `{"events": [...]}`: the same shape on the bus and from `GET /v1/events`.
pub type EventBatch = Sealed<EVENTS>;
pub type SignedHeartbeat = Sealed<HEARTBEAT>;
/// A page of the log for one request, body `{"events": [...], "head", "at", "nonce"?}`: what
/// `GET /v1/events` answers. `head` is read after `at` was stamped, so every change committed before
/// `at` is at or below it.
pub type SignedPage = Sealed<PAGE>;

#[derive(Serialize)]
struct EventsOut<'a> {
    events: &'a [Event],
}

#[derive(Deserialize)]
struct EventsIn {
    events: Vec<Event>,
}

#[derive(Serialize)]
struct PageOut<'a> {
    events: &'a [Event],
    head: Seq,
    at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a Nonce>,
}

#[derive(Deserialize)]
struct PageIn {
    events: Vec<Event>,
    head: Seq,
    at: Timestamp,
    nonce: Option<Nonce>,
}

/// What an edge tells the manager when it starts: who it is and the keys its acknowledgements carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeRegistration {
    pub id: String,
    pub region: String,
    /// Hex Ed25519 public key.
    pub public_key: String,
    /// Hex HMAC key the edge's acknowledgements are authenticated with (see `quench_core::sign::ack`);
    /// absent from edges that sign each acknowledgement instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_key: Option<String>,
    /// The edge's signature over its id and `ack_key`, proving the MAC key belongs to `public_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_key_proof: Option<String>,
}

impl EdgeRegistration {
    /// An edge's registration with its acknowledgement key and the proof that goes with it.
    pub fn of(id: &str, region: &str, signer: &Signer) -> Self {
        let ack_key = AckKey::of(signer);
        let proof = quench_core::sign::ack::prove(signer, id, &ack_key);
        Self {
            id: id.into(),
            region: region.into(),
            public_key: signer.public().to_hex(),
            ack_key: Some(ack_key.to_hex()),
            ack_key_proof: Some(proof.encode()),
        }
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Quench's wire types are plain structs with string keys: serialising them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

impl<const P: u8> Sealed<P> {
    fn seal<T: Serialize + ?Sized>(signer: &Signer, value: &T) -> Self {
        let body = to_json(value);
        let signature = signer.sign(purpose(P), &body);
        Self { body, signature }
    }

    /// A message as received, not yet verified.
    pub fn from_parts(body: Vec<u8>, signature: Signature) -> Self {
        Self { body, signature }
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    fn open_with<T: DeserializeOwned>(&self, trust: &Trust) -> Result<T, OpenError> {
        trust.verify(purpose(P), &self.body, &self.signature)?;
        Ok(serde_json::from_slice(&self.body)?)
    }
}

impl EventBatch {
    pub fn seal_events(signer: &Signer, events: &[Event]) -> Self {
        Self::seal(signer, &EventsOut { events })
    }

    /// Verifies the manager's signature, then parses the events.
    pub fn open(&self, trust: &Trust) -> Result<Vec<Event>, OpenError> {
        self.open_with::<EventsIn>(trust).map(|batch| batch.events)
    }
}

impl SignedPage {
    /// Signs a page read at `at` with the log ending at `head`; `nonce` is the requester's, if it gave one.
    pub fn seal_page(
        signer: &Signer,
        events: &[Event],
        fresh: Freshness,
        nonce: Option<&Nonce>,
    ) -> Self {
        Self::seal(
            signer,
            &PageOut {
                events,
                head: fresh.head,
                at: fresh.at,
                nonce,
            },
        )
    }

    /// Verifies the manager's signature and that the page answers the request that chose `nonce`.
    pub fn open(&self, trust: &Trust, nonce: &Nonce) -> Result<Page, OpenError> {
        let page: PageIn = self.open_with(trust)?;
        if page.nonce.as_ref() != Some(nonce) {
            return Err(OpenError::NotFresh {
                expected: nonce.clone(),
            });
        }
        Ok(Page {
            events: page.events,
            fresh: Freshness {
                head: page.head,
                at: page.at,
            },
        })
    }
}

impl SignedHeartbeat {
    pub fn seal_heartbeat(signer: &Signer, heartbeat: &Heartbeat) -> Self {
        Self::seal(signer, heartbeat)
    }

    pub fn open(&self, trust: &Trust) -> Result<Heartbeat, OpenError> {
        self.open_with(trust)
    }
}

/// An acknowledgement's exact bytes and what authenticates them: a MAC under the edge's [`AckKey`]
/// (what edges send), or a signature by its signing key (what edges sent before, still accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAck {
    body: Vec<u8>,
    seal: AckSeal,
}

impl SignedAck {
    /// An acknowledgement MAC'd with `key`, speaking for the edge signing key `signer`.
    pub fn mac_ack(signer: &SignerId, key: &AckKey, ack: &Ack) -> Self {
        let body = to_json(ack);
        let seal = AckSeal::Mac(key.mac(signer, &body));
        Self { body, seal }
    }

    /// An acknowledgement signed with the edge's signing key.
    pub fn seal_ack(edge_key: &Signer, ack: &Ack) -> Self {
        let body = to_json(ack);
        let seal = AckSeal::Signature(edge_key.sign(Purpose::Ack, &body));
        Self { body, seal }
    }

    /// A message as received, not yet checked.
    pub fn from_parts(body: Vec<u8>, seal: AckSeal) -> Self {
        Self { body, seal }
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn seal(&self) -> &AckSeal {
        &self.seal
    }

    /// The edge signing key the acknowledgement claims to speak for.
    pub fn signer(&self) -> &SignerId {
        self.seal.signer()
    }

    /// Checks it against what the edge registered (a MAC needs the MAC key, which only edges registered
    /// with a proven one have), then parses.
    pub fn open(&self, edge_key: &PublicKey, ack_key: Option<&AckKey>) -> Result<Ack, OpenError> {
        match (&self.seal, ack_key) {
            (AckSeal::Signature(signature), _) => {
                edge_key.verify(Purpose::Ack, &self.body, signature)?;
            }
            (AckSeal::Mac(mac), Some(key)) if mac.signer() == edge_key.id() => {
                key.verify(&self.body, mac)?;
            }
            (AckSeal::Mac(mac), _) => {
                return Err(OpenError::Signature(SignError::UnknownSigner(
                    mac.signer().to_string(),
                )));
            }
        }
        Ok(serde_json::from_slice(&self.body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quench_core::{Change, KeyId};

    fn event(seq: u64) -> Event {
        Event {
            seq: Seq::new(seq),
            at: Timestamp::from_millis(5),
            change: Change::KeyRevoked {
                id: KeyId::from_u64(seq).expect("id"),
                reason: "x".into(),
            },
        }
    }

    #[test]
    fn batches_open_only_with_the_managers_key_and_untouched_bytes() {
        let manager = Signer::generate().expect("random");
        let trust = Trust::new(vec![manager.public()]);
        let batch = EventBatch::seal_events(&manager, &[event(1), event(2)]);
        assert_eq!(batch.open(&trust).expect("valid"), vec![event(1), event(2)]);

        let mut tampered = batch.body().to_vec();
        let at = tampered.len() / 2;
        tampered[at] ^= 1;
        let tampered = EventBatch::from_parts(tampered, batch.signature().clone());
        assert!(tampered.open(&trust).is_err());

        let forger = Signer::generate().expect("random");
        let forged = EventBatch::seal_events(&forger, &[event(1)]);
        assert!(matches!(
            forged.open(&trust),
            Err(OpenError::Signature(SignError::UnknownSigner(_)))
        ));

        // A heartbeat's signature does not make its bytes an event batch.
        let beat = SignedHeartbeat::seal_heartbeat(
            &manager,
            &Heartbeat {
                manager: "m".into(),
                head: Seq::new(1),
                at: Timestamp::from_millis(1),
            },
        );
        let relabelled = EventBatch::from_parts(beat.body().to_vec(), beat.signature().clone());
        assert!(relabelled.open(&trust).is_err());
    }

    #[test]
    fn acks_open_with_the_edges_own_key() {
        let edge = Signer::generate().expect("random");
        let ack = Ack {
            edge: "e1".into(),
            region: "eu".into(),
            applied: Seq::new(3),
            at: Timestamp::from_millis(1),
        };
        let other = Signer::generate().expect("random");
        let sealed = SignedAck::seal_ack(&edge, &ack);
        assert_eq!(sealed.open(&edge.public(), None).expect("valid"), ack);
        assert!(sealed.open(&other.public(), None).is_err());

        let key = AckKey::of(&edge);
        let maced = SignedAck::mac_ack(edge.id(), &key, &ack);
        assert_eq!(maced.open(&edge.public(), Some(&key)).expect("valid"), ack);
        // No MAC key registered: a MAC proves nothing.
        assert!(maced.open(&edge.public(), None).is_err());
        // Another edge's MAC key, or a MAC claiming another signer, is refused.
        let other_key = AckKey::of(&other);
        assert!(maced.open(&edge.public(), Some(&other_key)).is_err());
        assert!(maced.open(&other.public(), Some(&key)).is_err());
        let mut tampered = maced.body().to_vec();
        let at = tampered.len() / 2;
        tampered[at] ^= 1;
        let tampered = SignedAck::from_parts(tampered, maced.seal().clone());
        assert!(tampered.open(&edge.public(), Some(&key)).is_err());
    }

    #[test]
    fn pages_open_only_for_the_request_that_chose_their_nonce() {
        let manager = Signer::generate().expect("random");
        let trust = Trust::new(vec![manager.public()]);
        let fresh = Freshness {
            head: Seq::new(2),
            at: Timestamp::from_millis(9),
        };
        let asked = Nonce::random().expect("random");
        let page = SignedPage::seal_page(&manager, &[event(1), event(2)], fresh, Some(&asked));
        assert_eq!(
            page.open(&trust, &asked).expect("fresh"),
            Page {
                events: vec![event(1), event(2)],
                fresh
            }
        );
        // The same bytes replayed to a later request, or a page made for nobody in particular: refused.
        let later = Nonce::random().expect("random");
        assert!(matches!(
            page.open(&trust, &later),
            Err(OpenError::NotFresh { .. })
        ));
        let unbound = SignedPage::seal_page(&manager, &[], fresh, None);
        assert!(matches!(
            unbound.open(&trust, &asked),
            Err(OpenError::NotFresh { .. })
        ));
        // A bus batch's signature does not make its bytes a page.
        let batch = EventBatch::seal_events(&manager, &[event(1)]);
        let relabelled = SignedPage::from_parts(batch.body().to_vec(), batch.signature().clone());
        assert!(relabelled.open(&trust, &asked).is_err());
    }
}
