//! Webhooks and their deliveries: the store's half of telling subscribers about revocations and alerts.
//!
//! Deliveries have their own outbox. The event log and the alert log are the sources; a cursor records
//! how far they have been fanned out into deliveries (one row per webhook and batch), and the fan-out
//! moves the cursor and writes the deliveries in one transaction, guarded by the cursor's old value, so
//! two managers never fan out the same range and a crash loses nothing. A delivery is claimed by pushing
//! its next attempt into the future (a lease) in a statement that re-checks it is still due, so two
//! managers never send it at the same moment; a manager that dies mid-attempt leaves it to be sent again
//! when the lease ends.

use async_trait::async_trait;
use quench_core::{KeyId, Owner, Seq, Timestamp};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use crate::{
    Attempt, Backend, Conflict, DeliveryRecord, NewDelivery, NotifyCursor, Result, SqlStore,
    StoreError, WebhookRecord, error::unique, rows, rows::Columns,
};

#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, hook: &WebhookRecord) -> Result<()>;

    /// Webhooks not deleted, oldest first.
    async fn webhooks(&self) -> Result<Vec<WebhookRecord>>;

    /// Deletes a webhook and abandons its pending deliveries: `true` if this call deleted it, `false`
    /// if it already was; `NotFound` for an unknown id.
    async fn delete_webhook(&self, id: &str, at: Timestamp) -> Result<bool>;

    async fn notify_cursor(&self) -> Result<NotifyCursor>;

    /// Moves the cursor from `from` to `to` and queues `deliveries`, all or nothing. `false` (and
    /// nothing written) when the cursor is no longer at `from`: another manager fanned the range out.
    async fn advance_notify(
        &self,
        from: NotifyCursor,
        to: NotifyCursor,
        deliveries: &[NewDelivery],
    ) -> Result<bool>;

    /// Up to `limit` deliveries due at `now`, each leased until `lease_until` (not due again before).
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>>;

    async fn finish_delivery(&self, id: u64, attempt: &Attempt) -> Result<()>;

    /// A webhook's deliveries, newest first.
    async fn deliveries(&self, webhook_id: &str, limit: u32) -> Result<Vec<DeliveryRecord>>;

    /// Deliveries neither delivered nor given up.
    async fn pending_deliveries(&self) -> Result<u64>;

    /// The owners of those of `ids` that exist (any order), in one query per 500 ids: what a webhook
    /// confined to one owner needs to know of the keys in a batch.
    async fn owners(&self, ids: &[KeyId]) -> Result<Vec<(KeyId, Owner)>>;
}

const WEBHOOK_COLUMNS: &str =
    "id, url, secret, events, owner, created_at, created_by, from_seq, from_alert";
const DELIVERY_COLUMNS: &str = "id, webhook_id, event_type, payload, created_at, attempts, \
     next_attempt_at, delivered_at, failed_at, last_error";
const PENDING: &str = "delivered_at IS NULL AND failed_at IS NULL";

// The SQL texts below are assembled from these constants and placeholder numbers only: no input
// reaches them, which is why they are marked `AssertSqlSafe`.

#[async_trait]
impl<B: Backend> WebhookStore for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    <B::Db as Database>::Arguments: IntoArguments<B::Db>,
    i64: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    String: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    Option<String>: for<'q> Encode<'q, B::Db>,
    for<'n> &'n str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    async fn create_webhook(&self, hook: &WebhookRecord) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO webhooks (id, url, secret, events, owner, created_at, created_by, \
             from_seq, from_alert) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&hook.id)
        .bind(&hook.url)
        .bind(&hook.secret)
        .bind(rows::webhook_events(&hook.events))
        .bind(hook.owner.as_ref().map(|o| o.as_str().to_owned()))
        .bind(hook.created_at.as_millis())
        .bind(&hook.created_by)
        .bind(rows::signed(hook.from_seq.get()))
        .bind(rows::signed(hook.from_alert))
        .execute(&mut *tx)
        .await
        .map_err(|e| unique(e, || Conflict::WebhookId(hook.id.clone())))?;
        tx.commit().await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at, id"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::webhook)
            .collect()
    }

    async fn delete_webhook(&self, id: &str, at: Timestamp) -> Result<bool> {
        let mut tx = self.write().await?;
        let deleted =
            sqlx::query("UPDATE webhooks SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
                .bind(id.to_owned())
                .bind(at.as_millis())
                .execute(&mut *tx)
                .await?;
        if B::rows_affected(&deleted) != 1 {
            let known: Option<String> = sqlx::query_scalar("SELECT id FROM webhooks WHERE id = $1")
                .bind(id.to_owned())
                .fetch_optional(&mut *tx)
                .await?;
            return known.map(|_| false).ok_or(StoreError::NotFound);
        }
        let sql = format!(
            "UPDATE webhook_deliveries SET failed_at = $2, last_error = 'webhook deleted' \
             WHERE webhook_id = $1 AND {PENDING}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_owned())
            .bind(at.as_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn notify_cursor(&self) -> Result<NotifyCursor> {
        let row = sqlx::query("SELECT event_seq, alert_seq FROM notify_cursor WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(NotifyCursor {
            event_seq: Seq::new(rows::unsigned(row.int("event_seq")?)?),
            alert_seq: rows::unsigned(row.int("alert_seq")?)?,
        })
    }

    async fn advance_notify(
        &self,
        from: NotifyCursor,
        to: NotifyCursor,
        deliveries: &[NewDelivery],
    ) -> Result<bool> {
        let signed = rows::signed;
        let mut tx = self.write().await?;
        let moved = sqlx::query(
            "UPDATE notify_cursor SET event_seq = $3, alert_seq = $4 \
             WHERE id = 1 AND event_seq = $1 AND alert_seq = $2",
        )
        .bind(signed(from.event_seq.get()))
        .bind(signed(from.alert_seq))
        .bind(signed(to.event_seq.get()))
        .bind(signed(to.alert_seq))
        .execute(&mut *tx)
        .await?;
        if B::rows_affected(&moved) != 1 {
            return Ok(false);
        }
        for delivery in deliveries {
            sqlx::query(
                "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, created_at, \
                 next_attempt_at) VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(&delivery.webhook_id)
            .bind(&delivery.event_type)
            .bind(&delivery.payload)
            .bind(delivery.created_at.as_millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        // Most of the time nothing is due: find that out without taking the write lock.
        let due = format!(
            "SELECT id FROM webhook_deliveries WHERE {PENDING} AND next_attempt_at <= $1 LIMIT 1"
        );
        let any: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(due))
            .bind(now.as_millis())
            .fetch_optional(&self.pool)
            .await?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        // The outer condition repeats "still due": a row another manager claimed meanwhile no
        // longer matches when this statement gets to it.
        let claim = format!(
            "UPDATE webhook_deliveries SET next_attempt_at = $2 \
             WHERE id IN (SELECT id FROM webhook_deliveries WHERE {PENDING} \
             AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $3) \
             AND {PENDING} AND next_attempt_at <= $1 RETURNING {DELIVERY_COLUMNS}"
        );
        let mut tx = self.write().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(claim))
            .bind(now.as_millis())
            .bind(lease_until.as_millis())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut claimed = rows
            .iter()
            .map(rows::delivery)
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|d| d.id);
        Ok(claimed)
    }

    async fn finish_delivery(&self, id: u64, attempt: &Attempt) -> Result<()> {
        let (column, at, error) = match attempt {
            Attempt::Delivered { at } => ("delivered_at", *at, None),
            Attempt::Retry { next, error } => ("next_attempt_at", *next, Some(error.clone())),
            Attempt::GaveUp { at, error } => ("failed_at", *at, Some(error.clone())),
        };
        // Only a pending delivery: one abandoned meanwhile (its webhook deleted) stays so.
        let sql = format!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, {column} = $2, last_error = $3 \
             WHERE id = $1 AND {PENDING}"
        );
        let mut tx = self.write().await?;
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(rows::signed(id))
            .bind(at.as_millis())
            .bind(error)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    async fn deliveries(&self, webhook_id: &str, limit: u32) -> Result<Vec<DeliveryRecord>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
             ORDER BY id DESC LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(webhook_id.to_owned())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::delivery)
            .collect()
    }

    async fn pending_deliveries(&self) -> Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM webhook_deliveries WHERE {PENDING}");
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?;
        rows::unsigned(count)
    }

    async fn owners(&self, ids: &[KeyId]) -> Result<Vec<(KeyId, Owner)>> {
        let mut owners = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            // Placeholders only: the ids are bound, never spliced in.
            let sql = format!(
                "SELECT id, owner FROM keys WHERE id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&self.pool).await? {
                let id = rows::key_id(&row.text("id")?)?;
                let owner = rows::owner(&row.text("owner")?)?;
                owners.push((id, owner));
            }
        }
        Ok(owners)
    }
}
