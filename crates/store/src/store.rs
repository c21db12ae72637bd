//! [`SqlStore`]: the one implementation of [`Store`], over any [`Backend`].
//!
//! Every method is one SQL text with `$n` placeholders that both databases run as it is. The `where`
//! clauses repeated on the generic `impl` blocks in this crate say what that SQL needs of a database
//! (connections that run queries, and 64-bit integers, text and booleans as column types); Rust does
//! not yet carry such bounds from the trait to its users, so each block states them again.

use std::fmt;

use async_trait::async_trait;
use quench_core::{
    Change, EdgeId, EdgeKey, Event, KeyId, KeyRecord, Owner, Seq, Timestamp,
    record::Snapshot,
    sign::{PublicKey, ack::AckKey},
};
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type,
};
use tokio::sync::Mutex;

use crate::{
    Actor, AuditEntry, Backend, BulkRevoked, Conflict, EdgeRecord, KeyFilter, Result, Revoked,
    Rotated, Selector, Store, StoreError, TokenRecord,
    backend::Writing,
    changes::BULK_ROWS,
    edges,
    error::unique,
    migrate, rows,
    rows::{EDGE_KEY_COLUMNS, KEY_COLUMNS, key_query},
};

/// The store: a pool of connections to one database, and this process's queue of writers.
pub struct SqlStore<B: Backend> {
    pub(crate) pool: Pool<B::Db>,
    /// Writers in this process queue here rather than in the database (where SQLite would have them
    /// spin on `SQLITE_BUSY`, and PostgreSQL would hold a pooled connection each while they wait).
    writer: Mutex<()>,
}

impl<B: Backend> fmt::Debug for SqlStore<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("database", &<B::Db as Database>::NAME)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    <B::Db as Database>::Arguments: IntoArguments<B::Db>,
    i64: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    /// The store over `pool`, once its schema is up to date.
    pub(crate) async fn migrated(pool: Pool<B::Db>) -> Result<Self> {
        migrate::run::<B>(&pool).await?;
        Ok(Self {
            pool,
            writer: Mutex::new(()),
        })
    }
}

impl<B: Backend> SqlStore<B> {
    /// A writing transaction, at the head of the queue of writers.
    pub(crate) async fn write(&self) -> Result<Writing<'_, B::Db>> {
        let queue = self.writer.lock().await;
        let tx = B::begin_write(&self.pool).await?;
        Ok(Writing::new(tx, queue))
    }
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    <B::Db as Database>::Arguments: IntoArguments<B::Db>,
    i64: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    String: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    Option<i64>: for<'q> Encode<'q, B::Db>,
    Option<String>: for<'q> Encode<'q, B::Db>,
    bool: for<'r> Decode<'r, B::Db> + Type<B::Db>,
    for<'n> &'n str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    async fn create_key(&self, key: &KeyRecord, actor: &Actor) -> Result<Event> {
        let mut tx = self.write().await?;
        let change = Change::KeyCreated {
            key: key.edge_view(),
        };
        let event = Self::append(&mut tx, actor.at, change).await?;
        Self::insert_key(&mut tx, key, event.seq).await?;
        Self::audit(&mut tx, actor, "key.create", Some(key.id), None).await?;
        tx.commit().await?;
        Ok(event)
    }

    async fn create_keys(&self, keys: &[KeyRecord], actor: &Actor) -> Result<Vec<Event>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        let first = Self::reserve(&mut tx, keys.len()).await?;
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
        let seqs: Vec<Seq> = events.iter().map(|e| e.seq).collect();
        for (chunk, created) in keys.chunks(BULK_ROWS).zip(seqs.chunks(BULK_ROWS)) {
            Self::insert_keys(&mut tx, chunk, created).await?;
        }
        Self::append_many(&mut tx, &events, actor, "key.create", None).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn revoke_key(&self, id: KeyId, reason: &str, actor: &Actor) -> Result<Revoked> {
        let mut tx = self.write().await?;
        let record = Self::key_in(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if record.revoked.is_some() {
            return Ok(Revoked {
                record,
                event: None,
            });
        }
        let revoked = Self::mark_revoked(&mut tx, record, reason, actor).await?;
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
        let mut tx = self.write().await?;
        let mut record = Self::key_in(&mut tx, old)
            .await?
            .ok_or(StoreError::NotFound)?;
        if record.revoked.is_some() {
            return Err(Conflict::KeyRevoked(old).into());
        }
        let change = Change::KeyCreated {
            key: new.edge_view(),
        };
        let created = Self::append(&mut tx, actor.at, change).await?;
        Self::insert_key(&mut tx, new, created.seq).await?;
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
        let expiry = Self::append(&mut tx, actor.at, change).await?;
        Self::audit(&mut tx, actor, "key.rotate", Some(old), None).await?;
        Self::audit(&mut tx, actor, "key.create", Some(new.id), None).await?;
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
        let mut tx = self.write().await?;
        // Only what deciding needs: parsing whole records costs more than the revocation itself.
        let mut query = QueryBuilder::<B::Db>::new(
            "SELECT id, revoked_at IS NOT NULL AS revoked FROM keys WHERE ",
        );
        match selector {
            Selector::Owner(owner) => {
                query.push("owner = ").push_bind(owner.as_str().to_owned());
            }
            Selector::Api(api) => {
                query
                    .push("id IN (SELECT key_id FROM key_apis WHERE api = ")
                    .push_bind(api.as_str().to_owned())
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
            query
                .push(" AND owner = ")
                .push_bind(owner.as_str().to_owned());
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
                outcome.revoked.push(rows::key_id(&id)?);
            }
        }
        outcome.events = Self::revoke_batch(&mut tx, &outcome.revoked, reason, actor).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn key(&self, id: KeyId) -> Result<Option<KeyRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(key_query(" WHERE id = $1")))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| rows::key(&row))
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
            QueryBuilder::<B::Db>::new(format!("SELECT {KEY_COLUMNS} FROM keys WHERE 1 = 1"));
        if let Some(owner) = &filter.owner {
            query
                .push(" AND owner = ")
                .push_bind(owner.as_str().to_owned());
        }
        if let Some(api) = &filter.api {
            query
                .push(" AND id IN (SELECT key_id FROM key_apis WHERE api = ")
                .push_bind(api.as_str().to_owned())
                .push(")");
        }
        if let Some(status) = filter.status {
            Self::push_status(&mut query, status, now);
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
            .map(|row| Ok((rows::created_seq(row)?, rows::key(row)?)))
            .collect()
    }

    async fn events_after(&self, after: Seq, limit: u32) -> Result<Vec<Event>> {
        sqlx::query("SELECT seq, at, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after.get() as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::event)
            .collect()
    }

    async fn head(&self) -> Result<Seq> {
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM log_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Seq::new(rows::unsigned(seq)?))
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        let mut tx = B::begin_snapshot(&self.pool).await?;
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM log_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let keys = sqlx::query(sqlx::AssertSqlSafe(key_query(" ORDER BY created_seq")))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| rows::key(row).map(|k| k.edge_view()))
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
        let sql = format!(
            "SELECT {EDGE_KEY_COLUMNS} FROM keys \
             WHERE created_seq <= $1 AND created_seq > $2 ORDER BY created_seq LIMIT $3"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(through.get() as i64)
            .bind(after as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok((rows::created_seq(row)?, rows::edge_key(row)?)))
            .collect()
    }

    async fn create_token(&self, token: &TokenRecord, actor: &Actor) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO tokens (id, verifier, scopes, owner, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token.id.to_string())
        .bind(token.verifier.encode())
        .bind(token.scopes.encode())
        .bind(token.owner.as_ref().map(|o| o.as_str().to_owned()))
        .bind(token.created_at.as_millis())
        .bind(&token.created_by)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique(e, || Conflict::TokenId(token.id)))?;
        let scopes = token.scopes.encode();
        Self::audit(&mut tx, actor, "token.create", None, Some(&scopes)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn token(&self, id: KeyId) -> Result<Option<TokenRecord>> {
        sqlx::query(
            "SELECT id, verifier, scopes, owner, created_at, created_by FROM tokens \
             WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(|row| rows::token(&row))
        .transpose()
    }

    async fn revoke_token(&self, id: KeyId, actor: &Actor) -> Result<bool> {
        let mut tx = self.write().await?;
        let updated =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(actor.at.as_millis())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        if B::rows_affected(&updated) == 0 {
            let exists: Option<String> = sqlx::query_scalar("SELECT id FROM tokens WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            return match exists {
                Some(_) => Ok(false),
                None => Err(StoreError::NotFound),
            };
        }
        let reason = format!("token {id}");
        Self::audit(&mut tx, actor, "token.revoke", None, Some(&reason)).await?;
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
        let mut query = QueryBuilder::<B::Db>::new(
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
            .map(rows::audit)
            .collect()
    }

    async fn published_through(&self) -> Result<Seq> {
        let seq: i64 = sqlx::query_scalar("SELECT published_seq FROM log_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Seq::new(rows::unsigned(seq)?))
    }

    async fn mark_published(&self, first: Seq, last: Seq) -> Result<()> {
        sqlx::query(
            "UPDATE log_head SET published_seq = $1 \
             WHERE id = 1 AND published_seq >= $2 AND published_seq < $3",
        )
        .bind(last.get() as i64)
        .bind(first.get().saturating_sub(1) as i64)
        .bind(last.get() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn register_edge(&self, edge: &EdgeRecord) -> Result<()> {
        let registered = sqlx::query(edges::REGISTER)
            .bind(edge.id.as_str().to_owned())
            .bind(edge.region.as_str().to_owned())
            .bind(edge.public_key.to_hex())
            .bind(edge.registered_at.as_millis())
            .bind(edge.ack_key.as_ref().map(AckKey::to_hex))
            .execute(&self.pool)
            .await?;
        if B::rows_affected(&registered) == 0 {
            return Err(Conflict::EdgeKey(edge.id.clone()).into());
        }
        Ok(())
    }

    async fn rotate_edge(
        &self,
        id: &EdgeId,
        public_key: &PublicKey,
        actor: &Actor,
    ) -> Result<EdgeRecord> {
        let mut tx = self.write().await?;
        let old = sqlx::query(edges::ONE)
            .bind(id.as_str().to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let old = rows::edge(&old)?;
        sqlx::query(edges::ROTATE)
            .bind(id.as_str().to_owned())
            .bind(public_key.to_hex())
            .bind(actor.at.as_millis())
            .execute(&mut *tx)
            .await?;
        let reason = edges::rotation_reason(&old, public_key);
        Self::audit(&mut tx, actor, edges::ROTATE_ACTION, None, Some(&reason)).await?;
        tx.commit().await?;
        Ok(old)
    }

    async fn edges(&self) -> Result<Vec<EdgeRecord>> {
        sqlx::query(edges::ALL)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::edge)
            .collect()
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
