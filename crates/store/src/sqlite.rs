//! The embedded default: one SQLite file in the data directory.
//!
//! WAL mode with `synchronous = FULL`: a change the API confirmed survives a crash or power loss. Writers
//! are serialised twice over: by a mutex in this process (so they queue instead of spinning on
//! `SQLITE_BUSY`) and by `BEGIN IMMEDIATE` (so another process on the same file cannot interleave). Readers
//! use the other pooled connections and never wait for a writer; in WAL mode one read transaction sees
//! one consistent state.

use std::{path::Path, str::FromStr, time::Duration};

use crate::{Backend, Result, SqlStore};
use sqlx::{
    Pool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

/// The store on SQLite.
pub type SqliteStore = SqlStore<Sqlite>;

#[derive(Debug)]
pub struct Sqlite;

impl Backend for Sqlite {
    type Db = sqlx::Sqlite;

    const INTEGER: &'static str = "INTEGER";
    // `INTEGER PRIMARY KEY` is the row id; AUTOINCREMENT keeps a deleted row's number from coming back.
    const SERIAL: &'static str = "INTEGER PRIMARY KEY AUTOINCREMENT";

    async fn begin_write(pool: &Pool<sqlx::Sqlite>) -> Result<Transaction<'static, sqlx::Sqlite>> {
        Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn begin_snapshot(
        pool: &Pool<sqlx::Sqlite>,
    ) -> Result<Transaction<'static, sqlx::Sqlite>> {
        Ok(pool.begin().await?)
    }

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn begin_migration(
        pool: &Pool<sqlx::Sqlite>,
    ) -> Result<Transaction<'static, sqlx::Sqlite>> {
        Self::begin_write(pool).await
    }
}

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::connect(options).await
    }

    /// Opens a `sqlite://` URL.
    pub async fn open_url(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<Self> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }
}
