//! Schema migrations, embedded in the binary and applied in order at start-up.
//!
//! One list of scripts serves both databases. The two spell a 64-bit integer column and a numbered
//! primary key differently, so the scripts write `{integer}` and `{serial}` and each backend fills in its
//! words ([`Backend::INTEGER`], [`Backend::SERIAL`]); nothing else in them differs. Each script renders
//! byte for byte to the per-database text earlier versions shipped (a test pins them), so a database
//! migrated by them has exactly the schema a new one gets.
//!
//! A `schema_version` table records the applied versions. The pending scripts run in one transaction
//! together with their version rows, taken the way [`Backend::begin_migration`] says (so stores opening
//! one database at once take turns): a crash or a failing script leaves the schema as it was.

use std::borrow::Cow;

use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Pool, Type};

use crate::{Backend, Result, StoreError};

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    script: &'static str,
}

impl Migration {
    /// The script in the words of backend `B`.
    pub fn sql<B: Backend>(&self) -> Cow<'static, str> {
        if !self.script.contains('{') {
            return Cow::Borrowed(self.script);
        }
        Cow::Owned(
            self.script
                .replace("{serial}", B::SERIAL)
                .replace("{integer}", B::INTEGER),
        )
    }
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "keys, event log, audit, tokens",
        script: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "edge registrations",
        script: include_str!("../migrations/0002_edges.sql"),
    },
    Migration {
        version: 3,
        name: "outbox high-water mark",
        script: include_str!("../migrations/0003_outbox.sql"),
    },
    Migration {
        version: 4,
        name: "token revocation",
        script: include_str!("../migrations/0004_token_revocation.sql"),
    },
    Migration {
        version: 5,
        name: "usage alerts and webhooks",
        script: include_str!("../migrations/0005_alerts_webhooks.sql"),
    },
    Migration {
        version: 6,
        name: "edge acknowledgement MAC keys",
        script: include_str!("../migrations/0006_ack_keys.sql"),
    },
];

/// Brings the schema up to date.
pub async fn run<B: Backend>(pool: &Pool<B::Db>) -> Result<()>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    <B::Db as Database>::Arguments: IntoArguments<B::Db>,
    i64: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    usize: sqlx::ColumnIndex<<B::Db as Database>::Row>,
{
    let mut tx = B::begin_migration(pool).await?;
    let create = format!(
        "CREATE TABLE IF NOT EXISTS schema_version (version {} NOT NULL)",
        B::INTEGER
    );
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut *tx)
        .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(&mut *tx)
        .await?;
    let current = current.unwrap_or(0);
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(migration.sql::<B>().into_owned()))
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Migration {
                version: migration.version,
                name: migration.name,
                source,
            })?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(migration.version)
            .execute(&mut *tx)
            .await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "migrated the database"
        );
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{postgres::Postgres, sqlite::Sqlite};

    /// FNV-1a: enough to notice any change to a text.
    fn digest(text: &str) -> u64 {
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The texts earlier versions applied, per database. A database records only the version it is
    /// at, so a script already applied somewhere must keep meaning what it meant: change the schema
    /// with a new migration, never by editing an old one.
    #[test]
    fn applied_migrations_render_as_they_always_did() {
        let sqlite: Vec<u64> = MIGRATIONS
            .iter()
            .map(|m| digest(&m.sql::<Sqlite>()))
            .collect();
        let postgres: Vec<u64> = MIGRATIONS
            .iter()
            .map(|m| digest(&m.sql::<Postgres>()))
            .collect();
        assert_eq!(
            sqlite,
            [
                0x4ed3_1781_f50b_16e7,
                0x06c1_3a70_aad0_0acf,
                0x3eb4_84c0_f656_b80f,
                0x2544_44d1_caf6_10f7,
                0xd1a2_ae54_e98f_d48c,
                0x13a4_f5eb_338d_71ba,
            ]
        );
        assert_eq!(
            postgres,
            [
                0xc1f3_37e5_55ff_e71d,
                0xf61f_0a86_3d72_dfee,
                0x24f8_c6d5_180c_4212,
                0xcad8_204a_dfec_71c6,
                0xe924_bb13_dc04_431f,
                0x13a4_f5eb_338d_71ba,
            ]
        );
    }

    #[test]
    fn every_placeholder_is_filled() {
        for migration in MIGRATIONS {
            for sql in [migration.sql::<Sqlite>(), migration.sql::<Postgres>()] {
                assert!(!sql.contains('{'), "{}: {sql}", migration.name);
            }
        }
    }

    /// A database an earlier release left at version 3 is brought up to date on open, keeping what
    /// it holds.
    #[tokio::test]
    async fn a_database_part_way_is_migrated_the_rest() {
        use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};

        use crate::{AlertStore, Store, sqlite::SqliteStore};

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("quench.db");
        let mut old = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .expect("create");
        sqlx::raw_sql("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .execute(&mut old)
            .await
            .expect("versions");
        for migration in &MIGRATIONS[..3] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(migration.sql::<Sqlite>().into_owned()))
                .execute(&mut old)
                .await
                .expect("old migration");
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(migration.version)
                .execute(&mut old)
                .await
                .expect("version");
        }
        sqlx::raw_sql("UPDATE log_head SET seq = 41, published_seq = 41")
            .execute(&mut old)
            .await
            .expect("history");
        drop(old);

        let store = SqliteStore::open(&path).await.expect("open");
        assert_eq!(store.head().await.expect("head").get(), 41);
        assert_eq!(store.last_alert_seq().await.expect("alerts table"), 0);
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
                .fetch_all(&store.pool)
                .await
                .expect("versions");
        assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    }
}
