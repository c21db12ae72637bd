//! The conformance suite on PostgreSQL, each test in a database of its own that is dropped afterwards.
//!
//! The server comes from `QUENCH_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`). Where
//! it cannot be reached, the tests fail under CI (`CI=true`) and are skipped, loudly, elsewhere.

mod conformance;

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use quench_store::{Store, postgres::PostgresStore};
use sqlx::{ConnectOptions, Connection, postgres::PgConnectOptions};

fn admin_url() -> String {
    std::env::var("QUENCH_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn unavailable(error: impl std::fmt::Display) -> Option<conformance::Fixture> {
    let url = admin_url();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("PostgreSQL is required in CI but {url} is unreachable: {error}");
    }
    eprintln!("SKIPPED: PostgreSQL at {url} is unreachable ({error}); set QUENCH_TEST_POSTGRES");
    None
}

/// Drops the test database when the test ends.
struct Database {
    name: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee; use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut admin = sqlx::PgConnection::connect(&admin_url()).await.ok()?;
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

async fn fresh() -> Option<conformance::Fixture> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut admin = match sqlx::PgConnection::connect(&admin_url()).await {
        Ok(admin) => admin,
        Err(e) => return unavailable(e),
    };
    let name = format!(
        "quench_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        quench_core::KeyId::generate().expect("random").as_u64() % 1_000_000
    );
    let create = format!("CREATE DATABASE \"{name}\"");
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await
    {
        return unavailable(e);
    }
    let guard = Database { name: name.clone() };
    let options = PgConnectOptions::from_str(&admin_url())
        .expect("url")
        .database(&name);
    let url = options.to_url_lossy().to_string();
    let store = PostgresStore::open(&url)
        .await
        .expect("open the test database");
    Some(conformance::Fixture {
        store: Arc::new(store),
        reopen: Box::new(move || {
            let url = url.clone();
            Box::pin(async move {
                let store: Arc<dyn Store> =
                    Arc::new(PostgresStore::open(&url).await.expect("reopen"));
                store
            })
        }),
        _guard: Box::new(guard),
    })
}

all_conformance_tests!();
