//! The transactional outbox: an event committed but never published (the manager died in between) is
//! published by whichever manager sweeps next.

use std::sync::Arc;

use futures::StreamExt;
use quench_bus::{Bus, Delivery, InProcessBus};
use quench_core::{ApiKey, HashAlg, KeyRecord, Owner, Prefix, Seq, Timestamp, Verifier};
use quench_manager::{Manager, ManagerConfig};
use quench_store::{Actor, Store, sqlite::SqliteStore};

fn record(at: Timestamp) -> KeyRecord {
    let key = ApiKey::generate(Prefix::default()).expect("random");
    KeyRecord {
        id: key.id(),
        prefix: key.prefix(),
        owner: Owner::parse("team-a").expect("owner"),
        name: None,
        apis: vec![],
        scopes: vec![],
        metadata: serde_json::Map::new(),
        created_at: at,
        expires_at: None,
        revoked: None,
        rotated_from: None,
        replaced_by: None,
        verifier: Verifier::create(HashAlg::Sha256, key.secret()).expect("hash"),
    }
}

#[tokio::test]
async fn unpublished_events_are_published_by_the_next_sweep() {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("q.db"))
            .await
            .expect("store"),
    );
    let bus = Arc::new(InProcessBus::default());
    let manager = Manager::new(store.clone(), bus.clone(), ManagerConfig::default());
    let mut deliveries = bus.subscribe().await.expect("subscribe");

    // Committed three seconds ago by a manager that died before publishing.
    let then = Timestamp::from_millis(Timestamp::now().as_millis() - 3_000);
    let actor = Actor::system(then);
    let old = record(then);
    store.create_key(&old, &actor).await.expect("create");
    store
        .revoke_key(old.id, "leaked", &actor)
        .await
        .expect("revoke");
    // Just committed: its own manager is still expected to publish it.
    store
        .create_key(&record(Timestamp::now()), &Actor::system(Timestamp::now()))
        .await
        .expect("create");

    assert_eq!(manager.sweep_outbox().await.expect("sweep"), 2);
    assert_eq!(store.published_through().await.expect("mark"), Seq::new(2));
    let Some(Delivery::Events(batch)) = deliveries.next().await else {
        panic!("the sweep published a batch");
    };
    let events = batch.open(&manager.trust()).expect("signed by the manager");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq.get()).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(
        manager.sweep_outbox().await.expect("sweep"),
        0,
        "nothing twice"
    );
}
