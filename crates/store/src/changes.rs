//! The steps every change is made of, inside its writing transaction: number the next events from the
//! log head, append them, write the audit records, and insert or revoke the keys themselves.
//!
//! Bulk changes (many keys created or revoked at once) take one reservation of sequence numbers and
//! write in multi-row statements of [`BULK_ROWS`] rows, instead of three statements per key.

use quench_core::{Change, Event, KeyId, KeyRecord, Seq, Timestamp, record::KeyStatus};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use crate::{
    Actor, Backend, Conflict, Result, Revoked, SqlStore, StoreError,
    error::unique,
    rows::{self, KEY_COLUMNS, key_query},
};

/// Rows per multi-row statement: well under both databases' limits on parameters.
pub(crate) const BULK_ROWS: usize = 500;

type Connection<B> = <<B as Backend>::Db as Database>::Connection;

impl<B: Backend> SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    <B::Db as Database>::Arguments: IntoArguments<B::Db>,
    i64: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    String: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    Option<i64>: for<'q> Encode<'q, B::Db>,
    Option<String>: for<'q> Encode<'q, B::Db>,
    for<'n> &'n str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    /// Reserves `count` consecutive sequence numbers in the log head; returns the first.
    pub(crate) async fn reserve(tx: &mut Connection<B>, count: usize) -> Result<u64> {
        let count = count as i64;
        let last: i64 =
            sqlx::query_scalar("UPDATE log_head SET seq = seq + $1 WHERE id = 1 RETURNING seq")
                .bind(count)
                .fetch_one(&mut *tx)
                .await?;
        rows::unsigned(last - count + 1)
    }

    pub(crate) async fn append(
        tx: &mut Connection<B>,
        at: Timestamp,
        change: Change,
    ) -> Result<Event> {
        let seq = Seq::new(Self::reserve(tx, 1).await?);
        let body = event_body(&change)?;
        sqlx::query("INSERT INTO events (seq, at, kind, key_id, body) VALUES ($1, $2, $3, $4, $5)")
            .bind(seq.get() as i64)
            .bind(at.as_millis())
            .bind(change.kind().to_owned())
            .bind(change.key_id().to_string())
            .bind(body)
            .execute(&mut *tx)
            .await?;
        Ok(Event { seq, at, change })
    }

    pub(crate) async fn audit(
        tx: &mut Connection<B>,
        actor: &Actor,
        action: &str,
        key: Option<KeyId>,
        reason: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at, principal, action, key_id, reason, source) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(actor.at.as_millis())
        .bind(&actor.principal)
        .bind(action.to_owned())
        .bind(key.map(|k| k.to_string()))
        .bind(reason.map(str::to_owned))
        .bind(&actor.source)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Appends numbered events, and an audit record for each event's key, in multi-row statements.
    pub(crate) async fn append_many(
        tx: &mut Connection<B>,
        events: &[Event],
        actor: &Actor,
        action: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        for chunk in events.chunks(BULK_ROWS) {
            let bodies = chunk
                .iter()
                .map(|event| event_body(&event.change))
                .collect::<Result<Vec<String>>>()?;
            let mut insert =
                QueryBuilder::<B::Db>::new("INSERT INTO events (seq, at, kind, key_id, body) ");
            insert.push_values(chunk.iter().zip(bodies), |mut row, (event, body)| {
                row.push_bind(event.seq.get() as i64)
                    .push_bind(event.at.as_millis())
                    .push_bind(event.change.kind().to_owned())
                    .push_bind(event.change.key_id().to_string())
                    .push_bind(body);
            });
            insert.build().execute(&mut *tx).await?;
            let mut audit = QueryBuilder::<B::Db>::new(
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
            audit.build().execute(&mut *tx).await?;
        }
        Ok(())
    }

    pub(crate) async fn insert_key(
        tx: &mut Connection<B>,
        key: &KeyRecord,
        created_seq: Seq,
    ) -> Result<()> {
        Self::insert_keys(tx, std::slice::from_ref(key), &[created_seq])
            .await
            .map_err(|e| match e {
                StoreError::Conflict(Conflict::KeyIds) => Conflict::KeyId(key.id).into(),
                other => other,
            })
    }

    /// Inserts up to [`BULK_ROWS`] keys, each created by the event numbered alongside it.
    pub(crate) async fn insert_keys(
        tx: &mut Connection<B>,
        keys: &[KeyRecord],
        created: &[Seq],
    ) -> Result<()> {
        let columns: Vec<rows::KeyColumns> = keys.iter().map(rows::KeyColumns::of).collect();
        let mut insert = QueryBuilder::<B::Db>::new(format!("INSERT INTO keys ({KEY_COLUMNS}) "));
        insert.push_values(columns.into_iter().zip(created), |mut row, (c, seq)| {
            row.push_bind(c.id)
                .push_bind(seq.get() as i64)
                .push_bind(c.prefix)
                .push_bind(c.owner)
                .push_bind(c.name)
                .push_bind(c.apis)
                .push_bind(c.scopes)
                .push_bind(c.metadata)
                .push_bind(c.verifier)
                .push_bind(c.created_at)
                .push_bind(c.expires_at)
                .push_bind(c.revoked_at)
                .push_bind(c.revoked_reason)
                .push_bind(c.rotated_from)
                .push_bind(c.replaced_by);
        });
        insert
            .build()
            .execute(&mut *tx)
            .await
            .map_err(|e| unique(e, || Conflict::KeyIds))?;
        let apis: Vec<(String, String)> = keys
            .iter()
            .flat_map(|k| {
                k.apis
                    .iter()
                    .map(|a| (a.as_str().to_owned(), k.id.to_string()))
            })
            .collect();
        for apis in apis.chunks(BULK_ROWS) {
            let mut insert = QueryBuilder::<B::Db>::new("INSERT INTO key_apis (api, key_id) ");
            insert.push_values(apis, |mut row, (api, id)| {
                row.push_bind(api.clone()).push_bind(id.clone());
            });
            insert.build().execute(&mut *tx).await?;
        }
        Ok(())
    }

    pub(crate) async fn key_in(tx: &mut Connection<B>, id: KeyId) -> Result<Option<KeyRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(key_query(" WHERE id = $1")))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| rows::key(&row))
            .transpose()
    }

    pub(crate) async fn mark_revoked(
        tx: &mut Connection<B>,
        mut record: KeyRecord,
        reason: &str,
        actor: &Actor,
    ) -> Result<Revoked> {
        sqlx::query("UPDATE keys SET revoked_at = $1, revoked_reason = $2 WHERE id = $3")
            .bind(actor.at.as_millis())
            .bind(reason.to_owned())
            .bind(record.id.to_string())
            .execute(&mut *tx)
            .await?;
        let change = Change::KeyRevoked {
            id: record.id,
            reason: reason.to_owned(),
        };
        let event = Self::append(tx, actor.at, change).await?;
        Self::audit(tx, actor, "key.revoke", Some(record.id), Some(reason)).await?;
        record.revoked = Some(quench_core::Revocation {
            at: actor.at,
            reason: reason.to_owned(),
        });
        Ok(Revoked {
            record,
            event: Some(event),
        })
    }

    /// Revokes many keys with a few multi-row statements: one sequence-number reservation, then
    /// updates, events and audit records in chunks.
    pub(crate) async fn revoke_batch(
        tx: &mut Connection<B>,
        ids: &[KeyId],
        reason: &str,
        actor: &Actor,
    ) -> Result<Vec<Event>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let first = Self::reserve(tx, ids.len()).await?;
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
            let mut update = QueryBuilder::<B::Db>::new("UPDATE keys SET revoked_at = ");
            update
                .push_bind(actor.at.as_millis())
                .push(", revoked_reason = ")
                .push_bind(reason.to_owned())
                .push(" WHERE id IN (");
            let mut list = update.separated(", ");
            for id in chunk {
                list.push_bind(id.to_string());
            }
            list.push_unseparated(")");
            update.build().execute(&mut *tx).await?;
        }
        Self::append_many(tx, &events, actor, "key.revoke", Some(reason)).await?;
        Ok(events)
    }

    pub(crate) fn push_status(query: &mut QueryBuilder<B::Db>, status: KeyStatus, now: Timestamp) {
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
}

fn event_body(change: &Change) -> Result<String> {
    serde_json::to_string(change).map_err(|e| StoreError::corrupt("event body", e))
}
