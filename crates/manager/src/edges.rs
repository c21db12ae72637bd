//! The keys edges sign their acknowledgements with.
//!
//! An edge registers a fresh key each time it starts (`POST /v1/edges`, or directly for the embedded
//! edge). Registrations are stored, so every manager sharing the database can check every edge's
//! acknowledgements; each manager keeps them in memory and reloads from the store when an
//! acknowledgement arrives signed by a key it does not know (at most once a second).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use quench_bus::{Ack, EdgeRegistration, SignedAck};
use quench_core::{Label, Timestamp, sign::PublicKey};
use quench_store::{EdgeRecord, Store, StoreError};

const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(1);

struct Known {
    edge: String,
    key: PublicKey,
}

pub struct EdgeKeys {
    store: Arc<dyn Store>,
    known: Mutex<(HashMap<String, Known>, Option<Instant>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EdgeKeys {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            known: Mutex::new((HashMap::new(), None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Known>, Option<Instant>)> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn register(&self, registration: &EdgeRegistration) -> Result<(), RegisterError> {
        Label::parse(&registration.id).map_err(|e| RegisterError::Invalid(format!("id: {e}")))?;
        Label::parse(&registration.region)
            .map_err(|e| RegisterError::Invalid(format!("region: {e}")))?;
        let key = PublicKey::parse(&registration.public_key)
            .map_err(|e| RegisterError::Invalid(format!("public_key: {e}")))?;
        self.store
            .register_edge(&EdgeRecord {
                id: registration.id.clone(),
                region: registration.region.clone(),
                public_key: key.to_hex(),
                registered_at: Timestamp::now(),
            })
            .await?;
        self.lock().0.insert(
            key.id().to_string(),
            Known {
                edge: registration.id.clone(),
                key,
            },
        );
        Ok(())
    }

    async fn reload(&self) {
        {
            let mut known = self.lock();
            if known
                .1
                .is_some_and(|at| at.elapsed() < RELOAD_AT_MOST_EVERY)
            {
                return;
            }
            known.1 = Some(Instant::now());
        }
        match self.store.edges().await {
            Ok(records) => {
                let mut known = self.lock();
                for record in records {
                    if let Ok(key) = PublicKey::parse(&record.public_key) {
                        known.0.insert(
                            key.id().to_string(),
                            Known {
                                edge: record.id,
                                key,
                            },
                        );
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "reloading edge registrations failed"),
        }
    }

    fn check(&self, sealed: &SignedAck) -> Option<Result<Ack, String>> {
        let known = self.lock();
        let entry = known.0.get(sealed.signature().signer().as_str())?;
        Some(match sealed.open(&entry.key) {
            Ok(ack) if ack.edge == entry.edge => Ok(ack),
            Ok(ack) => Err(format!(
                "signed by edge {}'s key but claims to be {}",
                entry.edge, ack.edge
            )),
            Err(e) => Err(e.to_string()),
        })
    }

    /// The acknowledgement, if a registered edge signed it for itself.
    pub async fn open(&self, sealed: &SignedAck) -> Option<Ack> {
        let mut checked = self.check(sealed);
        if checked.is_none() {
            self.reload().await;
            checked = self.check(sealed);
        }
        match checked {
            Some(Ok(ack)) => Some(ack),
            Some(Err(why)) => {
                tracing::warn!(why, "dropped an acknowledgement that is not validly signed");
                None
            }
            None => {
                tracing::warn!(signer = %sealed.signature().signer(), "dropped an acknowledgement from an unregistered key");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use quench_core::{Seq, sign::Signer};
    use quench_store::sqlite::SqliteStore;

    use super::*;

    fn ack(edge: &str) -> Ack {
        Ack {
            edge: edge.into(),
            region: "eu".into(),
            applied: Seq::new(4),
            at: Timestamp::now(),
        }
    }

    #[tokio::test]
    async fn only_acks_signed_by_the_registered_edge_for_itself_are_accepted() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("q.db"))
                .await
                .expect("store"),
        );
        let keys = EdgeKeys::new(store.clone());
        let edge_key = Signer::generate().expect("random");
        keys.register(&EdgeRegistration {
            id: "e1".into(),
            region: "eu".into(),
            public_key: edge_key.public().to_hex(),
        })
        .await
        .expect("register");

        let genuine = ack("e1");
        assert_eq!(
            keys.open(&SignedAck::seal_ack(&edge_key, &genuine)).await,
            Some(genuine)
        );
        assert_eq!(
            keys.open(&SignedAck::seal_ack(&edge_key, &ack("e2"))).await,
            None,
            "claims another edge"
        );
        let stranger = Signer::generate().expect("random");
        assert_eq!(
            keys.open(&SignedAck::seal_ack(&stranger, &ack("e1"))).await,
            None,
            "unregistered key"
        );

        // A second manager on the same store learns the registration from it.
        let other = EdgeKeys::new(store);
        assert!(
            other
                .open(&SignedAck::seal_ack(&edge_key, &ack("e1")))
                .await
                .is_some()
        );
    }
}
