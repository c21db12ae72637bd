//! PostgreSQL, for deployments with several managers.
//!
//! Every writing transaction starts by locking the one-row log head (`SELECT … FOR UPDATE`); the lock is
//! held until commit, so transactions from any number of managers are serialised at that point and
//! receive sequence numbers in commit order, without holes (a rolled-back transaction returns its
//! number). See the crate documentation for why a database sequence would not do. Snapshots are read in
//! one `REPEATABLE READ` transaction, so the keys and the head they report are from the same instant.
//! Migrations run under a transaction-scoped advisory lock, so managers starting together do not race.
//!
//! TLS follows libpq's `sslmode` (and `sslrootcert`, `sslcert`, `sslkey`, or `PGSSLMODE` and friends):
//! `verify-full` with the server's CA is what a database across a network wants; `require` encrypts but
//! would accept any certificate, so the store warns about it, and about anything weaker off this host.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Pool, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};

use crate::{Backend, Result, SqlStore};

/// The store on PostgreSQL.
pub type PostgresStore = SqlStore<Postgres>;

#[derive(Debug)]
pub struct Postgres;

impl Backend for Postgres {
    type Db = sqlx::Postgres;

    const INTEGER: &'static str = "BIGINT";
    const SERIAL: &'static str = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY";

    /// Holds the log head's row lock from the first statement, so what the transaction reads (is this
    /// key already revoked?) cannot change under it before it commits: managers sharing the database
    /// are serialised here, as `BEGIN IMMEDIATE` serialises SQLite writers. Alert numbers are handed
    /// out under the same lock, so they too follow commit order.
    async fn begin_write(
        pool: &Pool<sqlx::Postgres>,
    ) -> Result<Transaction<'static, sqlx::Postgres>> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT seq FROM log_head WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn begin_snapshot(
        pool: &Pool<sqlx::Postgres>,
    ) -> Result<Transaction<'static, sqlx::Postgres>> {
        Ok(pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?)
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn begin_migration(
        pool: &Pool<sqlx::Postgres>,
    ) -> Result<Transaction<'static, sqlx::Postgres>> {
        let mut tx = pool.begin().await?;
        // Every manager migrating this database queues on the same lock.
        sqlx::query("SELECT pg_advisory_xact_lock(7600515545)")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

impl SqlStore<Postgres> {
    /// Connects to a `postgres://` URL and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        if let Some(warning) = transport_warning(&options) {
            tracing::warn!(host = options.get_host(), "{warning}");
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }
}

/// What is weak about how these options reach the database, if anything: a connection whose server is
/// not authenticated by its certificate, to a host other than this one.
fn transport_warning(options: &PgConnectOptions) -> Option<&'static str> {
    match options.get_ssl_mode() {
        PgSslMode::VerifyFull => None,
        PgSslMode::VerifyCa => Some(
            "sslmode=verify-ca checks the server's certificate but not that it names the host: \
             prefer sslmode=verify-full",
        ),
        PgSslMode::Require => Some(
            "sslmode=require encrypts but accepts any server certificate (an impostor's too): \
             use sslmode=verify-full with sslrootcert=<the server's CA file>",
        ),
        PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer if !on_this_host(options) => {
            Some(
                "the connection to PostgreSQL may be unencrypted and its server is not authenticated: \
             use sslmode=verify-full with sslrootcert=<the server's CA file>",
            )
        }
        PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer => None,
    }
}

fn on_this_host(options: &PgConnectOptions) -> bool {
    let host = options.get_host();
    options.get_socket().is_some()
        || host.starts_with('/')
        || host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warning(url: &str) -> Option<&'static str> {
        transport_warning(&PgConnectOptions::from_str(url).expect("url"))
    }

    #[test]
    fn weak_transport_is_named() {
        assert_eq!(
            warning("postgres://db.internal/q?sslmode=verify-full"),
            None
        );
        assert!(
            warning("postgres://db.internal/q?sslmode=require")
                .is_some_and(|w| w.contains("any server certificate"))
        );
        assert!(warning("postgres://db.internal/q?sslmode=verify-ca").is_some());
        assert!(warning("postgres://db.internal/q?sslmode=disable").is_some());
        assert_eq!(warning("postgres://127.0.0.1/q"), None);
        assert_eq!(warning("postgres://localhost/q?sslmode=disable"), None);
        assert_eq!(warning("postgres://[::1]:5432/q"), None);
    }
}
