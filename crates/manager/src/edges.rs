//! Who an edge is: the key it signs its acknowledgements with, and what an acknowledgement must be to
//! be believed.
//!
//! An edge keeps one key for its id across restarts (it persists it; see `quench_api::key_file`).
//! Registering an id again with the same key is idempotent; with another key it is refused, because
//! otherwise anyone holding an `edge` token could register a key of their own under a real edge's id,
//! after which that edge's genuine acknowledgements would no longer count. Replacing a key (an edge lost
//! its disk) is an operator's decision: [`EdgeKeys::rotate`], audited.
//!
//! Registrations are stored, so every manager sharing the database checks every edge's
//! acknowledgements. Each manager caches them and reloads the whole set from the store when an
//! acknowledgement arrives signed by a key it does not know, and at least every [`CACHE_TTL`], so a
//! rotation made through one manager stops the old key on the others within that time. Reloads happen
//! at most once a second.
//!
//! An acknowledgement is parsed here, at the boundary: its edge id and region become [`EdgeId`] and
//! [`Region`], so nothing downstream (the propagation tracker, `/metrics` labels) sees raw text.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use quench_bus::{EdgeRegistration, SignedAck};
use quench_core::{
    EdgeId, Region, Seq, Timestamp,
    sign::{
        PublicKey, Signature,
        ack::{self, AckKey, AckSeal},
    },
};
use quench_store::{Actor, EdgeRecord, Store, StoreError};

const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// The longest a manager trusts its cached registrations without reading them again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// An acknowledgement signed by the key registered for the edge it names, with its names parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAck {
    pub edge: EdgeId,
    pub region: Region,
    pub applied: Seq,
    /// When the edge says it sent it (its own clock).
    pub at: Timestamp,
}

/// A registration as the API or an embedded edge presents it, parsed, its MAC key's proof checked.
#[derive(Debug, Clone)]
pub struct Registration {
    pub id: EdgeId,
    pub region: Region,
    pub key: PublicKey,
    /// The acknowledgement MAC key, proven by `key` for `id`.
    pub ack_key: Option<AckKey>,
}

impl Registration {
    pub fn parse(registration: &EdgeRegistration) -> Result<Self, RegisterError> {
        let invalid =
            |what: &str, e: &dyn std::fmt::Display| RegisterError::Invalid(format!("{what}: {e}"));
        let id = EdgeId::parse(&registration.id).map_err(|e| invalid("id", &e))?;
        let key =
            PublicKey::parse(&registration.public_key).map_err(|e| invalid("public_key", &e))?;
        let ack_key = match (&registration.ack_key, &registration.ack_key_proof) {
            (None, None) => None,
            (Some(ack_key), Some(proof)) => {
                let ack_key = AckKey::parse(ack_key).map_err(|e| invalid("ack_key", &e))?;
                let proof = Signature::decode(proof).map_err(|e| invalid("ack_key_proof", &e))?;
                ack::check_proof(&key, id.as_str(), &ack_key, &proof).map_err(|e| {
                    invalid("ack_key_proof: not signed by public_key for this id", &e)
                })?;
                Some(ack_key)
            }
            (Some(_), None) => {
                return Err(RegisterError::Invalid(
                    "ack_key needs ack_key_proof, the edge's signature over its id and the key"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(RegisterError::Invalid(
                    "ack_key_proof without ack_key".into(),
                ));
            }
        };
        Ok(Self {
            id,
            region: Region::parse(&registration.region).map_err(|e| invalid("region", &e))?,
            key,
            ack_key,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "edge {0} is registered with another key; if that edge lost its key, an unconfined admin \
         replaces it with POST /v1/edges/{0}/rotate"
    )]
    Taken(EdgeId),
    #[error("no edge {0} is registered")]
    Unknown(EdgeId),
    #[error(transparent)]
    Store(StoreError),
}

/// Every registered key, by signer id. Two ids may share a key (one operator's key file on two
/// edges); a key still speaks only for the ids registered with it.
#[derive(Default)]
struct Cache {
    by_signer: HashMap<String, KnownKey>,
    loaded: Option<Instant>,
    tried: Option<Instant>,
}

/// A registered acknowledgement key, its proven MAC key if any, and the edge ids registered with it.
struct KnownKey {
    key: PublicKey,
    mac: Option<AckKey>,
    edges: Vec<EdgeId>,
}

impl Cache {
    fn add(&mut self, edge: EdgeId, key: PublicKey, mac: Option<AckKey>) {
        let known = self
            .by_signer
            .entry(key.id().to_string())
            .or_insert_with(|| KnownKey {
                key: key.clone(),
                mac: None,
                edges: Vec::new(),
            });
        if known.key != key {
            // Two keys with one 64-bit signer id: a key ground to collide with a registered one. It
            // must not lend its MAC key, or its ids, to the other.
            tracing::warn!(signer = %key.id(), %edge, "a registered key shares its signer id with another; its acknowledgements are not counted");
            return;
        }
        // One seed gives one MAC key, so ids sharing a key share it too.
        if mac.is_some() {
            known.mac = mac;
        }
        if !known.edges.contains(&edge) {
            known.edges.push(edge);
        }
    }

    fn remove(&mut self, edge: &EdgeId, key: &PublicKey) {
        if let Some(known) = self.by_signer.get_mut(key.id().as_str()) {
            known.edges.retain(|e| e != edge);
            if known.edges.is_empty() {
                self.by_signer.remove(key.id().as_str());
            }
        }
    }

    fn should_reload(&self, unknown_signer: bool) -> bool {
        let expired = self.loaded.is_none_or(|at| at.elapsed() >= CACHE_TTL);
        let may = self
            .tried
            .is_none_or(|at| at.elapsed() >= RELOAD_AT_MOST_EVERY);
        may && (unknown_signer || expired)
    }
}

pub struct EdgeKeys {
    store: Arc<dyn Store>,
    cache: Mutex<Cache>,
}

impl EdgeKeys {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: Mutex::new(Cache::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an edge's key: new ids and the same key again are accepted, another key is
    /// [`RegisterError::Taken`].
    pub async fn register(&self, registration: &Registration) -> Result<(), RegisterError> {
        let record = EdgeRecord {
            id: registration.id.clone(),
            region: registration.region.clone(),
            public_key: registration.key.clone(),
            registered_at: Timestamp::now(),
            ack_key: registration.ack_key.clone(),
        };
        match self.store.register_edge(&record).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(RegisterError::Taken(registration.id.clone()));
            }
            Err(e) => return Err(RegisterError::Store(e)),
        }
        self.lock().add(
            registration.id.clone(),
            registration.key.clone(),
            registration.ack_key.clone(),
        );
        Ok(())
    }

    /// Replaces a registered edge's key (audited); returns the key it replaced.
    pub async fn rotate(
        &self,
        edge: &EdgeId,
        key: &PublicKey,
        actor: &Actor,
    ) -> Result<EdgeRecord, RegisterError> {
        let old = match self.store.rotate_edge(edge, key, actor).await {
            Ok(old) => old,
            Err(StoreError::NotFound) => return Err(RegisterError::Unknown(edge.clone())),
            Err(e) => return Err(RegisterError::Store(e)),
        };
        let mut cache = self.lock();
        cache.remove(edge, &old.public_key);
        cache.add(edge.clone(), key.clone(), None);
        Ok(old)
    }

    /// Reads every registration again, replacing the cache (so rotated-away keys leave it).
    async fn reload(&self, unknown_signer: bool) {
        {
            let mut cache = self.lock();
            if !cache.should_reload(unknown_signer) {
                return;
            }
            cache.tried = Some(Instant::now());
        }
        match self.store.edges().await {
            Ok(records) => {
                let mut fresh = Cache::default();
                for record in records {
                    fresh.add(record.id, record.public_key, record.ack_key);
                }
                let mut cache = self.lock();
                fresh.tried = cache.tried;
                fresh.loaded = Some(Instant::now());
                *cache = fresh;
            }
            Err(error) => tracing::warn!(%error, "reloading edge registrations failed"),
        }
    }

    fn check(&self, sealed: &SignedAck) -> Option<Result<VerifiedAck, String>> {
        let cache = self.lock();
        let KnownKey { key, mac, edges } = cache.by_signer.get(sealed.signer().as_str())?;
        if mac.is_none() && matches!(sealed.seal(), AckSeal::Mac(_)) {
            // Its MAC key may have been registered through another manager since the cache was read.
            return None;
        }
        let ack = match sealed.open(key, mac.as_ref()) {
            Ok(ack) => ack,
            Err(e) => return Some(Err(e.to_string())),
        };
        let Some(edge) = edges.iter().find(|e| e.as_str() == ack.edge) else {
            return Some(Err(format!(
                "signed with a key registered for {edges:?}, but claims to be {:?}",
                ack.edge
            )));
        };
        Some(match Region::parse(&ack.region) {
            Ok(region) => Ok(VerifiedAck {
                edge: edge.clone(),
                region,
                applied: ack.applied,
                at: ack.at,
            }),
            Err(e) => Err(format!("edge {edge}: region: {e}")),
        })
    }

    /// The acknowledgement, if a registered edge signed it for itself and it names a valid region.
    pub async fn open(&self, sealed: &SignedAck) -> Option<VerifiedAck> {
        self.reload(false).await;
        let mut checked = self.check(sealed);
        if checked.is_none() {
            self.reload(true).await;
            checked = self.check(sealed);
        }
        match checked {
            Some(Ok(ack)) => Some(ack),
            Some(Err(why)) => {
                tracing::warn!(why, "dropped an acknowledgement that is not validly signed");
                None
            }
            None => {
                tracing::warn!(signer = %sealed.signer(), "dropped an acknowledgement from an unregistered key");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use quench_bus::Ack;
    use quench_core::sign::Signer;
    use quench_store::sqlite::SqliteStore;

    use super::*;

    fn ack(edge: &str, region: &str) -> Ack {
        Ack {
            edge: edge.into(),
            region: region.into(),
            applied: Seq::new(4),
            at: Timestamp::now(),
        }
    }

    /// A registration as edges before MAC'd acknowledgements made it: the public key only.
    fn registration(id: &str, key: &Signer) -> Registration {
        Registration::parse(&EdgeRegistration {
            id: id.into(),
            region: "eu".into(),
            public_key: key.public().to_hex(),
            ack_key: None,
            ack_key_proof: None,
        })
        .expect("valid")
    }

    fn maced(key: &Signer, ack: &Ack) -> SignedAck {
        SignedAck::mac_ack(key.id(), &AckKey::of(key), ack)
    }

    #[tokio::test]
    async fn macd_acks_count_only_under_a_mac_key_its_signing_key_proved() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir).await;
        let keys = EdgeKeys::new(store.clone());
        let edge_key = Signer::generate().expect("random");

        // A holder of an edge token who knows e1's public key but not its seed cannot register a MAC
        // key of their own for it: the proof must be e1's signature.
        let thief = Signer::generate().expect("random");
        let thief_mac = AckKey::of(&thief);
        let forged = EdgeRegistration {
            ack_key: Some(thief_mac.to_hex()),
            ack_key_proof: Some(ack::prove(&thief, "e1", &thief_mac).encode()),
            ..EdgeRegistration::of("e1", "eu", &edge_key)
        };
        assert!(matches!(
            Registration::parse(&forged),
            Err(RegisterError::Invalid(why)) if why.contains("ack_key_proof")
        ));
        // A proof made for another id does not carry over either.
        let elsewhere = EdgeRegistration::of("e2", "eu", &edge_key);
        let moved = EdgeRegistration {
            id: "e1".into(),
            ..elsewhere
        };
        assert!(Registration::parse(&moved).is_err());
        let half = EdgeRegistration {
            ack_key_proof: None,
            ..EdgeRegistration::of("e1", "eu", &edge_key)
        };
        assert!(Registration::parse(&half).is_err());

        // Registered with only its public key, an edge's MAC'd acknowledgements prove nothing.
        keys.register(&registration("e1", &edge_key))
            .await
            .expect("register");
        assert_eq!(keys.open(&maced(&edge_key, &ack("e1", "eu"))).await, None);
        assert_eq!(
            keys.open(&SignedAck::mac_ack(
                edge_key.id(),
                &thief_mac,
                &ack("e1", "eu")
            ))
            .await,
            None,
            "a MAC under a key nobody proved"
        );

        // With the proven MAC key, they count; through a second manager that read the store before
        // the MAC key was registered, too.
        let other = EdgeKeys::new(store);
        assert!(
            other
                .open(&SignedAck::seal_ack(&edge_key, &ack("e1", "eu")))
                .await
                .is_some()
        );
        let proven = Registration::parse(&EdgeRegistration::of("e1", "eu", &edge_key))
            .expect("a valid proof");
        keys.register(&proven).await.expect("register the MAC key");
        assert_eq!(
            keys.open(&maced(&edge_key, &ack("e1", "eu")))
                .await
                .map(|a| a.edge.to_string()),
            Some("e1".into())
        );
        tokio::time::sleep(RELOAD_AT_MOST_EVERY).await;
        assert!(
            other
                .open(&maced(&edge_key, &ack("e1", "eu")))
                .await
                .is_some()
        );
        assert_eq!(
            keys.open(&maced(&edge_key, &ack("e2", "eu"))).await,
            None,
            "claims another edge"
        );
        assert_eq!(
            keys.open(&SignedAck::mac_ack(
                edge_key.id(),
                &thief_mac,
                &ack("e1", "eu")
            ))
            .await,
            None,
            "a MAC under another key"
        );
        let genuine = maced(&edge_key, &ack("e1", "eu"));
        let mut body = genuine.body().to_vec();
        let at = body.iter().position(|&b| b == b'4').expect("applied 4");
        body[at] = b'9';
        assert_eq!(
            keys.open(&SignedAck::from_parts(body, genuine.seal().clone()))
                .await,
            None,
            "a tampered body"
        );
    }

    async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        Arc::new(
            SqliteStore::open(&dir.path().join("q.db"))
                .await
                .expect("store"),
        )
    }

    #[tokio::test]
    async fn only_acks_signed_by_the_registered_edge_for_itself_are_accepted() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir).await;
        let keys = EdgeKeys::new(store.clone());
        let edge_key = Signer::generate().expect("random");
        keys.register(&registration("e1", &edge_key))
            .await
            .expect("register");

        let genuine = keys
            .open(&SignedAck::seal_ack(&edge_key, &ack("e1", "eu")))
            .await
            .expect("accepted");
        assert_eq!(genuine.edge.as_str(), "e1");
        assert_eq!(genuine.region.as_str(), "eu");
        assert_eq!(
            keys.open(&SignedAck::seal_ack(&edge_key, &ack("e2", "eu")))
                .await,
            None,
            "claims another edge"
        );
        assert_eq!(
            keys.open(&SignedAck::seal_ack(&edge_key, &ack("e1", "eu\"} 1\n")))
                .await,
            None,
            "a region that is not a valid name"
        );
        let stranger = Signer::generate().expect("random");
        assert_eq!(
            keys.open(&SignedAck::seal_ack(&stranger, &ack("e1", "eu")))
                .await,
            None,
            "unregistered key"
        );

        // A second manager on the same store learns the registration from it.
        let other = EdgeKeys::new(store);
        assert!(
            other
                .open(&SignedAck::seal_ack(&edge_key, &ack("e1", "eu")))
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_key_is_replaced_only_by_rotation_and_the_old_one_stops_counting() {
        let dir = tempfile::tempdir().expect("dir");
        let keys = EdgeKeys::new(store(&dir).await);
        let first = Signer::generate().expect("random");
        let second = Signer::generate().expect("random");
        keys.register(&registration("e1", &first))
            .await
            .expect("register");
        keys.register(&registration("e1", &first))
            .await
            .expect("the same key again");
        assert!(matches!(
            keys.register(&registration("e1", &second)).await,
            Err(RegisterError::Taken(_))
        ));
        // Registering someone else's public key under a new id does not silence them.
        keys.register(&registration("e9", &first))
            .await
            .expect("shared key");
        assert!(
            keys.open(&SignedAck::seal_ack(&first, &ack("e1", "eu")))
                .await
                .is_some()
        );

        let actor = Actor {
            principal: "bootstrap".into(),
            source: None,
            at: Timestamp::now(),
        };
        let id = EdgeId::parse("e1").expect("id");
        keys.rotate(&id, &second.public(), &actor)
            .await
            .expect("rotate");
        assert!(
            keys.open(&SignedAck::seal_ack(&first, &ack("e1", "eu")))
                .await
                .is_none(),
            "the replaced key no longer speaks for e1"
        );
        assert!(
            keys.open(&SignedAck::seal_ack(&second, &ack("e1", "eu")))
                .await
                .is_some()
        );
        let nobody = EdgeId::parse("nobody").expect("id");
        assert!(matches!(
            keys.rotate(&nobody, &second.public(), &actor).await,
            Err(RegisterError::Unknown(_))
        ));
    }
}
