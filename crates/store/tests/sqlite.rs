//! The conformance suite on SQLite, plus what only a file-backed store can show: data survives a reopen.

mod conformance;

use std::sync::Arc;

use quench_core::Seq;
use quench_store::{Store, sqlite::SqliteStore};

async fn fresh() -> Option<conformance::Fixture> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("quench.db");
    let store = SqliteStore::open(&path).await.expect("open");
    Some(conformance::Fixture {
        store: Arc::new(store),
        reopen: Box::new(move || {
            let path = path.clone();
            Box::pin(async move {
                let store: Arc<dyn Store> =
                    Arc::new(SqliteStore::open(&path).await.expect("reopen"));
                store
            })
        }),
        _guard: Box::new(dir),
    })
}

all_conformance_tests!();

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("quench.db");
    let key = conformance::record("team-a", &["orders"]);
    {
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .create_key(&key, &conformance::actor())
            .await
            .expect("create");
        store
            .revoke_key(key.id, "leaked", &conformance::actor())
            .await
            .expect("revoke");
        store.close().await;
    }
    let store = SqliteStore::open(&path).await.expect("reopen");
    let read = store.key(key.id).await.expect("read").expect("exists");
    assert_eq!(read.revoked.expect("still revoked").reason, "leaked");
    assert_eq!(store.head().await.expect("head"), Seq::new(2));
    // Migrations are not re-applied on an up-to-date database.
    let again = store
        .create_key(&conformance::record("team-a", &[]), &conformance::actor())
        .await;
    assert_eq!(again.expect("create").seq, Seq::new(3));
}

/// Changes a stored value behind the store's back, as a hand edit or another program might.
async fn tamper(path: &std::path::Path, sql: &'static str) {
    use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};
    let mut connection = SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .expect("open the file");
    sqlx::raw_sql(sql)
        .execute(&mut connection)
        .await
        .expect("tamper");
}

#[tokio::test]
async fn a_stored_value_quench_would_not_write_is_corrupt() {
    use quench_core::{EdgeId, KeyId, Owner, Region, Timestamp, sign::Signer, usage::Action};
    use quench_store::{AlertFilter, AlertStore, EdgeRecord, NewAlert, StoreError};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("quench.db");
    let key = conformance::record("team-a", &[]);
    {
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .create_key(&key, &conformance::actor())
            .await
            .expect("create");
        let alert = NewAlert {
            id: "al-1".into(),
            key_id: KeyId::generate().expect("id"),
            owner: Some(Owner::parse("team-a").expect("owner")),
            rule: "many-addresses".into(),
            kind: "distinct_addresses".into(),
            action: Action::Revoke,
            edge: "edge-1".into(),
            raised_at: Timestamp::from_millis(1),
            received_at: Timestamp::from_millis(2),
            details: "{}".into(),
        };
        store.record_alert(&alert).await.expect("record");
        let edge = EdgeRecord {
            id: EdgeId::parse("edge-1").expect("id"),
            region: Region::parse("eu").expect("region"),
            public_key: Signer::generate().expect("random").public(),
            registered_at: Timestamp::from_millis(3),
            ack_key: None,
        };
        store.register_edge(&edge).await.expect("register");
        store.close().await;
    }
    tamper(&path, "UPDATE alerts SET action = 'escalate'").await;
    tamper(&path, "UPDATE keys SET owner = 'Not An Owner!'").await;
    tamper(&path, "UPDATE edges SET public_key = 'not hex'").await;

    let store = SqliteStore::open(&path).await.expect("reopen");
    let alerts = store.alerts(&AlertFilter::default(), None, 10).await;
    assert!(
        matches!(
            alerts,
            Err(StoreError::Corrupt {
                what: "alert action",
                ..
            })
        ),
        "{alerts:?}"
    );
    let read = store.key(key.id).await;
    assert!(
        matches!(read, Err(StoreError::Corrupt { what: "owner", .. })),
        "{read:?}"
    );
    let edges = store.edges().await;
    assert!(
        matches!(
            edges,
            Err(StoreError::Corrupt {
                what: "edge key",
                ..
            })
        ),
        "{edges:?}"
    );
}
