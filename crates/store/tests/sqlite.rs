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
