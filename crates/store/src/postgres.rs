//! PostgreSQL, for deployments with several managers.
//!
//! Every writing transaction starts by incrementing the one-row log head; the row lock it takes is held
//! until commit, so transactions from any number of managers are serialised at that point and receive
//! sequence numbers in commit order, without holes (a rolled-back transaction returns its number). See the
//! crate documentation for why a database sequence would not do. Snapshots are read in one
//! `REPEATABLE READ` transaction, so the keys and the head they report are from the same instant.
//! Migrations run under a transaction-scoped advisory lock, so managers starting together do not race.
//!
//! TLS follows libpq's `sslmode` (and `sslrootcert`, `sslcert`, `sslkey`, or `PGSSLMODE` and friends):
//! `verify-full` with the server's CA is what a database across a network wants; `require` encrypts but
//! would accept any certificate, so the store warns about it, and about anything weaker off this host.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use quench_core::{
    Change, EdgeKey, Event, KeyId, KeyRecord, Owner, Seq, Timestamp,
    record::{KeyStatus, Snapshot},
};
use sqlx::{
    PgPool, Postgres, QueryBuilder, Row, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow, PgSslMode},
};
use tokio::sync::Mutex;

use crate::{
    Actor, AuditEntry, BulkRevoked, EdgeRecord, KeyFilter, Result, Revoked, Rotated, Selector,
    Store, StoreError, TokenRecord, edges, migrate, rows,
};

pub struct PostgresStore {
    pool: PgPool,
    writer: Mutex<()>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresStore")
    }
}

type Tx<'a> = Transaction<'a, Postgres>;

macro_rules! key_columns {
    () => {
        "id, created_seq, prefix, owner, name, apis, scopes, metadata, verifier, \
         created_at, expires_at, revoked_at, revoked_reason, rotated_from, replaced_by"
    };
}
const KEY_COLUMNS: &str = key_columns!();

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

impl PostgresStore {
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
        let store = Self {
            pool,
            writer: Mutex::new(()),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Every manager migrating this database queues on the same lock.
        sqlx::query("SELECT pg_advisory_xact_lock(7600515545)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&mut *tx)
            .await?;
        let current = current.unwrap_or(0);
        for migration in migrate::POSTGRES.iter().filter(|m| m.version > current) {
            sqlx::raw_sql(migration.sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::Migration(format!("{}: {e}", migration.name)))?;
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

    /// A writing transaction that holds the log head's row lock from its first statement, so what it
    /// reads (is this key already revoked?) cannot change under it before it commits: managers sharing
    /// the database are serialised here, as `BEGIN IMMEDIATE` serialises SQLite writers. Alert numbers
    /// are handed out under the same lock, so they too follow commit order.
    async fn write(&self) -> Result<(tokio::sync::MutexGuard<'_, ()>, Tx<'_>)> {
        let guard = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT seq FROM log_head WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        Ok((guard, tx))
    }
}

async fn next_seq(tx: &mut Tx<'_>) -> Result<Seq> {
    let seq: i64 =
        sqlx::query_scalar("UPDATE log_head SET seq = seq + 1 WHERE id = 1 RETURNING seq")
            .fetch_one(&mut **tx)
            .await?;
    Ok(Seq::new(rows::unsigned(seq)?))
}

async fn append(tx: &mut Tx<'_>, at: Timestamp, change: Change) -> Result<Event> {
    let seq = next_seq(tx).await?;
    let body = serde_json::to_string(&change).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query("INSERT INTO events (seq, at, kind, key_id, body) VALUES ($1, $2, $3, $4, $5)")
        .bind(seq.get() as i64)
        .bind(at.as_millis())
        .bind(change.kind())
        .bind(change.key_id().to_string())
        .bind(body)
        .execute(&mut **tx)
        .await?;
    Ok(Event { seq, at, change })
}

async fn audit(
    tx: &mut Tx<'_>,
    actor: &Actor,
    action: &str,
    key: Option<KeyId>,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit (at, principal, action, key_id, reason, source) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(actor.at.as_millis())
    .bind(&actor.principal)
    .bind(action)
    .bind(key.map(|k| k.to_string()))
    .bind(reason)
    .bind(&actor.source)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_key(tx: &mut Tx<'_>, key: &KeyRecord, created_seq: Seq) -> Result<()> {
    let row = rows::KeyColumns::of(key);
    let inserted = sqlx::query(concat!(
        "INSERT INTO keys (",
        key_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    ))
    .bind(&row.id)
    .bind(created_seq.get() as i64)
    .bind(&row.prefix)
    .bind(&row.owner)
    .bind(&row.name)
    .bind(&row.apis)
    .bind(&row.scopes)
    .bind(&row.metadata)
    .bind(&row.verifier)
    .bind(row.created_at)
    .bind(row.expires_at)
    .bind(row.revoked_at)
    .bind(&row.revoked_reason)
    .bind(&row.rotated_from)
    .bind(&row.replaced_by)
    .execute(&mut **tx)
    .await;
    if let Err(e) = inserted {
        if e.as_database_error()
            .is_some_and(|d| d.is_unique_violation())
        {
            return Err(StoreError::Conflict(format!("key id {}", key.id)));
        }
        return Err(e.into());
    }
    for api in &key.apis {
        sqlx::query("INSERT INTO key_apis (api, key_id) VALUES ($1, $2)")
            .bind(api.as_str())
            .bind(&row.id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn key_in(tx: &mut Tx<'_>, id: KeyId) -> Result<Option<KeyRecord>> {
    sqlx::query(concat!(
        "SELECT ",
        key_columns!(),
        " FROM keys WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?
    .map(|row| key_from_row(&row))
    .transpose()
}

async fn mark_revoked(
    tx: &mut Tx<'_>,
    mut record: KeyRecord,
    reason: &str,
    actor: &Actor,
) -> Result<Revoked> {
    sqlx::query("UPDATE keys SET revoked_at = $1, revoked_reason = $2 WHERE id = $3")
        .bind(actor.at.as_millis())
        .bind(reason)
        .bind(record.id.to_string())
        .execute(&mut **tx)
        .await?;
    let change = Change::KeyRevoked {
        id: record.id,
        reason: reason.to_owned(),
    };
    let event = append(tx, actor.at, change).await?;
    audit(tx, actor, "key.revoke", Some(record.id), Some(reason)).await?;
    record.revoked = Some(quench_core::Revocation {
        at: actor.at,
        reason: reason.to_owned(),
    });
    Ok(Revoked {
        record,
        event: Some(event),
    })
}

/// Reserves `count` consecutive sequence numbers in the log head; returns the first.
async fn reserve(tx: &mut Tx<'_>, count: usize) -> Result<u64> {
    let count = count as i64;
    let last: i64 =
        sqlx::query_scalar("UPDATE log_head SET seq = seq + $1 WHERE id = 1 RETURNING seq")
            .bind(count)
            .fetch_one(&mut **tx)
            .await?;
    rows::unsigned(last - count + 1)
}

/// Appends numbered events, and an audit record for each event's key, in multi-row statements.
async fn append_many(
    tx: &mut Tx<'_>,
    events: &[Event],
    actor: &Actor,
    action: &str,
    reason: Option<&str>,
) -> Result<()> {
    for chunk in events.chunks(BULK_ROWS) {
        let mut bodies = Vec::with_capacity(chunk.len());
        for event in chunk {
            bodies.push(
                serde_json::to_string(&event.change)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        let mut insert =
            QueryBuilder::<Postgres>::new("INSERT INTO events (seq, at, kind, key_id, body) ");
        insert.push_values(chunk.iter().zip(&bodies), |mut row, (event, body)| {
            row.push_bind(event.seq.get() as i64)
                .push_bind(event.at.as_millis())
                .push_bind(event.change.kind())
                .push_bind(event.change.key_id().to_string())
                .push_bind(body.clone());
        });
        insert.build().execute(&mut **tx).await?;
        let mut audit = QueryBuilder::<Postgres>::new(
            "INSERT INTO audit (at, principal, action, key_id, reason, source) ",
        );
        audit.push_values(chunk, |mut row, event| {
            row.push_bind(actor.at.as_millis())
                .push_bind(actor.principal.clone())
                .push_bind(action.to_owned())
                .push_bind(event.change.key_id().to_string())
                .push_bind(reason.map(str::to_owned))
                .push_bind(actor.source.clone());
        });
        audit.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Rows per multi-row statement in a bulk revocation: well under both backends' parameter limits.
const BULK_ROWS: usize = 500;

/// Revokes many keys with a few multi-row statements instead of three statements per key: one
/// sequence-number reservation, then updates, events and audit records in chunks.
async fn revoke_batch(
    tx: &mut Tx<'_>,
    ids: &[KeyId],
    reason: &str,
    actor: &Actor,
) -> Result<Vec<Event>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let first = reserve(tx, ids.len()).await?;
    let events: Vec<Event> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Event {
            seq: Seq::new(first + i as u64),
            at: actor.at,
            change: Change::KeyRevoked {
                id: *id,
                reason: reason.to_owned(),
            },
        })
        .collect();
    for chunk in ids.chunks(BULK_ROWS) {
        let mut update = QueryBuilder::<Postgres>::new("UPDATE keys SET revoked_at = ");
        update
            .push_bind(actor.at.as_millis())
            .push(", revoked_reason = ")
            .push_bind(reason)
            .push(" WHERE id IN (");
        let mut list = update.separated(", ");
        for id in chunk {
            list.push_bind(id.to_string());
        }
        list.push_unseparated(")");
        update.build().execute(&mut **tx).await?;
    }
    append_many(tx, &events, actor, "key.revoke", Some(reason)).await?;
    Ok(events)
}

fn key_from_row(row: &PgRow) -> Result<KeyRecord> {
    rows::KeyColumns {
        id: row.try_get("id")?,
        prefix: row.try_get("prefix")?,
        owner: row.try_get("owner")?,
        name: row.try_get("name")?,
        apis: row.try_get("apis")?,
        scopes: row.try_get("scopes")?,
        metadata: row.try_get("metadata")?,
        verifier: row.try_get("verifier")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_reason: row.try_get("revoked_reason")?,
        rotated_from: row.try_get("rotated_from")?,
        replaced_by: row.try_get("replaced_by")?,
    }
    .into_record()
}

fn push_status(query: &mut QueryBuilder<Postgres>, status: KeyStatus, now: Timestamp) {
    match status {
        KeyStatus::Revoked => {
            query.push(" AND revoked_at IS NOT NULL");
        }
        KeyStatus::Active => {
            query
                .push(" AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ")
                .push_bind(now.as_millis())
                .push(")");
        }
        KeyStatus::Expired => {
            query
                .push(" AND revoked_at IS NULL AND expires_at <= ")
                .push_bind(now.as_millis());
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_key(&self, key: &KeyRecord, actor: &Actor) -> Result<Event> {
        let (_guard, mut tx) = self.write().await?;
        let event = append(
            &mut tx,
            actor.at,
            Change::KeyCreated {
                key: key.edge_view(),
            },
        )
        .await?;
        insert_key(&mut tx, key, event.seq).await?;
        audit(&mut tx, actor, "key.create", Some(key.id), None).await?;
        tx.commit().await?;
        Ok(event)
    }

    async fn create_keys(&self, keys: &[KeyRecord], actor: &Actor) -> Result<Vec<Event>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (_guard, mut tx) = self.write().await?;
        let first = reserve(&mut tx, keys.len()).await?;
        let events: Vec<Event> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| Event {
                seq: Seq::new(first + i as u64),
                at: actor.at,
                change: Change::KeyCreated {
                    key: key.edge_view(),
                },
            })
            .collect();
        for (chunk, chunk_events) in keys.chunks(BULK_ROWS).zip(events.chunks(BULK_ROWS)) {
            let columns: Vec<rows::KeyColumns> = chunk.iter().map(rows::KeyColumns::of).collect();
            let mut insert =
                QueryBuilder::<Postgres>::new(concat!("INSERT INTO keys (", key_columns!(), ") "));
            insert.push_values(columns.iter().zip(chunk_events), |mut row, (c, event)| {
                row.push_bind(c.id.clone())
                    .push_bind(event.seq.get() as i64)
                    .push_bind(c.prefix.clone())
                    .push_bind(c.owner.clone())
                    .push_bind(c.name.clone())
                    .push_bind(c.apis.clone())
                    .push_bind(c.scopes.clone())
                    .push_bind(c.metadata.clone())
                    .push_bind(c.verifier.clone())
                    .push_bind(c.created_at)
                    .push_bind(c.expires_at)
                    .push_bind(c.revoked_at)
                    .push_bind(c.revoked_reason.clone())
                    .push_bind(c.rotated_from.clone())
                    .push_bind(c.replaced_by.clone());
            });
            if let Err(e) = insert.build().execute(&mut *tx).await {
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation())
                {
                    return Err(StoreError::Conflict(
                        "key id: one of the keys exists".into(),
                    ));
                }
                return Err(e.into());
            }
            let apis: Vec<(String, String)> = chunk
                .iter()
                .flat_map(|k| {
                    k.apis
                        .iter()
                        .map(|a| (a.as_str().to_owned(), k.id.to_string()))
                })
                .collect();
            for apis in apis.chunks(BULK_ROWS) {
                let mut insert =
                    QueryBuilder::<Postgres>::new("INSERT INTO key_apis (api, key_id) ");
                insert.push_values(apis, |mut row, (api, id)| {
                    row.push_bind(api.clone()).push_bind(id.clone());
                });
                insert.build().execute(&mut *tx).await?;
            }
        }
        append_many(&mut tx, &events, actor, "key.create", None).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn revoke_key(&self, id: KeyId, reason: &str, actor: &Actor) -> Result<Revoked> {
        let (_guard, mut tx) = self.write().await?;
        let record = key_in(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        if record.revoked.is_some() {
            return Ok(Revoked {
                record,
                event: None,
            });
        }
        let revoked = mark_revoked(&mut tx, record, reason, actor).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn rotate_key(
        &self,
        old: KeyId,
        new: &KeyRecord,
        old_expires_at: Timestamp,
        actor: &Actor,
    ) -> Result<Rotated> {
        let (_guard, mut tx) = self.write().await?;
        let mut record = key_in(&mut tx, old).await?.ok_or(StoreError::NotFound)?;
        if record.revoked.is_some() {
            return Err(StoreError::Conflict(format!("key {old} is revoked")));
        }
        let created = append(
            &mut tx,
            actor.at,
            Change::KeyCreated {
                key: new.edge_view(),
            },
        )
        .await?;
        insert_key(&mut tx, new, created.seq).await?;
        let expires_at = record
            .expires_at
            .map_or(old_expires_at, |at| at.min(old_expires_at));
        sqlx::query("UPDATE keys SET expires_at = $1, replaced_by = $2 WHERE id = $3")
            .bind(expires_at.as_millis())
            .bind(new.id.to_string())
            .bind(old.to_string())
            .execute(&mut *tx)
            .await?;
        let change = Change::KeyExpiryChanged {
            id: old,
            expires_at: Some(expires_at),
        };
        let expiry = append(&mut tx, actor.at, change).await?;
        audit(&mut tx, actor, "key.rotate", Some(old), None).await?;
        audit(&mut tx, actor, "key.create", Some(new.id), None).await?;
        tx.commit().await?;
        record.expires_at = Some(expires_at);
        record.replaced_by = Some(new.id);
        Ok(Rotated {
            old: record,
            events: vec![created, expiry],
        })
    }

    async fn revoke_many(
        &self,
        selector: &Selector,
        within: Option<&Owner>,
        reason: &str,
        actor: &Actor,
    ) -> Result<BulkRevoked> {
        let (_guard, mut tx) = self.write().await?;
        let mut query =
            // Only what deciding needs: parsing whole records costs more than the revocation itself.
            QueryBuilder::<Postgres>::new("SELECT id, revoked_at IS NOT NULL AS revoked FROM keys WHERE ");
        match selector {
            Selector::Owner(owner) => {
                query.push("owner = ").push_bind(owner.as_str());
            }
            Selector::Api(api) => {
                query
                    .push("id IN (SELECT key_id FROM key_apis WHERE api = ")
                    .push_bind(api.as_str())
                    .push(")");
            }
            Selector::Ids(ids) => {
                query.push("id IN (");
                let mut list = query.separated(", ");
                for id in ids {
                    list.push_bind(id.to_string());
                }
                list.push_unseparated(")");
            }
        }
        if let Some(owner) = within {
            query.push(" AND owner = ").push_bind(owner.as_str());
        }
        query.push(" ORDER BY created_seq");
        let rows = query.build().fetch_all(&mut *tx).await?;
        let mut outcome = BulkRevoked::default();
        for row in &rows {
            let id: String = row.try_get("id")?;
            let revoked: bool = row.try_get("revoked")?;
            if revoked {
                outcome.already_revoked += 1;
            } else {
                outcome
                    .revoked
                    .push(KeyId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
        }
        outcome.events = revoke_batch(&mut tx, &outcome.revoked, reason, actor).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn key(&self, id: KeyId) -> Result<Option<KeyRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(|row| key_from_row(&row))
        .transpose()
    }

    async fn list_keys(
        &self,
        filter: &KeyFilter,
        after: Option<u64>,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<(u64, KeyRecord)>> {
        let mut query =
            QueryBuilder::<Postgres>::new(format!("SELECT {KEY_COLUMNS} FROM keys WHERE 1 = 1"));
        if let Some(owner) = &filter.owner {
            query.push(" AND owner = ").push_bind(owner.as_str());
        }
        if let Some(api) = &filter.api {
            query
                .push(" AND id IN (SELECT key_id FROM key_apis WHERE api = ")
                .push_bind(api.as_str())
                .push(")");
        }
        if let Some(status) = filter.status {
            push_status(&mut query, status, now);
        }
        if let Some(after) = after {
            query.push(" AND created_seq < ").push_bind(after as i64);
        }
        query
            .push(" ORDER BY created_seq DESC LIMIT ")
            .push_bind(i64::from(limit));
        query
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let cursor: i64 = row.try_get("created_seq")?;
                Ok((rows::unsigned(cursor)?, key_from_row(row)?))
            })
            .collect()
    }

    async fn events_after(&self, after: Seq, limit: u32) -> Result<Vec<Event>> {
        sqlx::query("SELECT seq, at, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after.get() as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                rows::event(
                    row.try_get("seq")?,
                    row.try_get("at")?,
                    row.try_get("body")?,
                )
            })
            .collect()
    }

    async fn head(&self) -> Result<Seq> {
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM log_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Seq::new(rows::unsigned(seq)?))
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        // One REPEATABLE READ transaction: both reads see the same committed state.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM log_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let keys = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys ORDER BY created_seq"
        ))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| key_from_row(row).map(|k| k.edge_view()))
        .collect::<Result<Vec<EdgeKey>>>()?;
        tx.commit().await?;
        Ok(Snapshot {
            seq: Seq::new(rows::unsigned(seq)?),
            keys,
        })
    }

    async fn snapshot_page(
        &self,
        through: Seq,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, EdgeKey)>> {
        sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE created_seq <= $1 AND created_seq > $2 ORDER BY created_seq LIMIT $3"
        ))
        .bind(through.get() as i64)
        .bind(after as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            let cursor: i64 = row.try_get("created_seq")?;
            Ok((rows::unsigned(cursor)?, key_from_row(row)?.edge_view()))
        })
        .collect()
    }

    async fn create_token(&self, token: &TokenRecord, actor: &Actor) -> Result<()> {
        let (_guard, mut tx) = self.write().await?;
        let inserted = sqlx::query(
            "INSERT INTO tokens (id, verifier, scopes, owner, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token.id.to_string())
        .bind(token.verifier.encode())
        .bind(token.scopes.encode())
        .bind(token.owner.as_ref().map(|o| o.as_str()))
        .bind(token.created_at.as_millis())
        .bind(&token.created_by)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation())
            {
                return Err(StoreError::Conflict(format!("token id {}", token.id)));
            }
            return Err(e.into());
        }
        audit(
            &mut tx,
            actor,
            "token.create",
            None,
            Some(&token.scopes.encode()),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn token(&self, id: KeyId) -> Result<Option<TokenRecord>> {
        sqlx::query(
            "SELECT id, verifier, scopes, owner, created_at, created_by FROM tokens WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(|row| {
            rows::token(
                row.try_get("id")?,
                row.try_get("verifier")?,
                row.try_get("scopes")?,
                row.try_get("owner")?,
                row.try_get("created_at")?,
                row.try_get("created_by")?,
            )
        })
        .transpose()
    }

    async fn revoke_token(&self, id: KeyId, actor: &Actor) -> Result<bool> {
        let (_guard, mut tx) = self.write().await?;
        let updated =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(actor.at.as_millis())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if updated == 0 {
            let exists: Option<String> = sqlx::query_scalar("SELECT id FROM tokens WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            return match exists {
                Some(_) => Ok(false),
                None => Err(StoreError::NotFound),
            };
        }
        audit(
            &mut tx,
            actor,
            "token.revoke",
            None,
            Some(&format!("token {id}")),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn count_tokens(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&self.pool)
            .await?;
        rows::unsigned(count)
    }

    async fn audit_log(&self, key: Option<KeyId>, limit: u32) -> Result<Vec<AuditEntry>> {
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT at, principal, action, key_id, reason, source FROM audit",
        );
        if let Some(key) = key {
            query.push(" WHERE key_id = ").push_bind(key.to_string());
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit));
        query
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                rows::audit(
                    row.try_get("at")?,
                    row.try_get("principal")?,
                    row.try_get("action")?,
                    row.try_get("key_id")?,
                    row.try_get("reason")?,
                    row.try_get("source")?,
                )
            })
            .collect()
    }

    async fn published_through(&self) -> Result<Seq> {
        let seq: i64 = sqlx::query_scalar("SELECT published_seq FROM log_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Seq::new(rows::unsigned(seq)?))
    }

    async fn mark_published(&self, first: Seq, last: Seq) -> Result<()> {
        sqlx::query("UPDATE log_head SET published_seq = $1 WHERE id = 1 AND published_seq >= $2 AND published_seq < $3")
            .bind(last.get() as i64)
            .bind(first.get().saturating_sub(1) as i64)
            .bind(last.get() as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn register_edge(&self, edge: &EdgeRecord) -> Result<()> {
        let changed = sqlx::query(edges::REGISTER)
            .bind(&edge.id)
            .bind(&edge.region)
            .bind(&edge.public_key)
            .bind(edge.registered_at.as_millis())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if changed == 0 {
            return Err(edges::taken(&edge.id));
        }
        Ok(())
    }

    async fn rotate_edge(&self, id: &str, public_key: &str, actor: &Actor) -> Result<EdgeRecord> {
        let (_guard, mut tx) = self.write().await?;
        let old = sqlx::query(edges::ONE)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let old = edges::record(&old)?;
        sqlx::query(edges::ROTATE)
            .bind(id)
            .bind(public_key)
            .bind(actor.at.as_millis())
            .execute(&mut *tx)
            .await?;
        let reason = edges::rotation_reason(&old, public_key);
        audit(&mut tx, actor, edges::ROTATE_ACTION, None, Some(&reason)).await?;
        tx.commit().await?;
        Ok(old)
    }

    async fn edges(&self) -> Result<Vec<EdgeRecord>> {
        sqlx::query(edges::ALL)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(edges::record)
            .collect()
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

crate::notify::notify_store!(PostgresStore, sqlx::postgres::PgRow);

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
