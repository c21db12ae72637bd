//! Usage alerts and webhook deliveries: the store's half of notifications.
//!
//! Notifications have their own outbox. The event log and the alert log are the sources; a cursor records
//! how far they have been fanned out into deliveries (one row per webhook and batch), and the fan-out
//! moves the cursor and writes the deliveries in one transaction, guarded by the cursor's old value, so
//! two managers never fan out the same range and a crash loses nothing. A delivery is claimed by pushing
//! its next attempt into the future (a lease) in a statement that re-checks it is still due, so two
//! managers never send it at the same moment; a manager that dies mid-attempt leaves it to be sent again
//! when the lease ends.
//!
//! The SQL is the same for SQLite and PostgreSQL (both take `$n` placeholders and `RETURNING`), so one
//! macro implements [`NotifyStore`] for both.

use async_trait::async_trait;

use crate::{
    AlertFilter, AlertRecord, Attempt, DeliveryRecord, NewAlert, NewDelivery, NotifyCursor, Result,
    WebhookRecord,
};

#[async_trait]
pub trait NotifyStore: Send + Sync {
    /// Records an alert; a second report with the same id changes nothing and returns the first
    /// (`false`: not new).
    async fn record_alert(&self, alert: &NewAlert) -> Result<(AlertRecord, bool)>;

    /// Alerts newest first, before the cursor `before` (a `seq`) when given.
    async fn alerts(
        &self,
        filter: &AlertFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AlertRecord>>;

    /// Alerts after `after`, oldest first.
    async fn alerts_after(&self, after: u64, limit: u32) -> Result<Vec<AlertRecord>>;

    async fn last_alert_seq(&self) -> Result<u64>;

    async fn create_webhook(&self, hook: &WebhookRecord) -> Result<()>;

    /// Webhooks not deleted, oldest first.
    async fn webhooks(&self) -> Result<Vec<WebhookRecord>>;

    /// Deletes a webhook and abandons its pending deliveries: `true` if this call deleted it, `false`
    /// if it already was; `NotFound` for an unknown id.
    async fn delete_webhook(&self, id: &str, at: quench_core::Timestamp) -> Result<bool>;

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
        now: quench_core::Timestamp,
        lease_until: quench_core::Timestamp,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>>;

    async fn finish_delivery(&self, id: u64, attempt: &Attempt) -> Result<()>;

    /// A webhook's deliveries, newest first.
    async fn deliveries(&self, webhook_id: &str, limit: u32) -> Result<Vec<DeliveryRecord>>;

    /// Deliveries neither delivered nor given up.
    async fn pending_deliveries(&self) -> Result<u64>;

    /// The owners of those of `ids` that exist (any order), in one query per 500 ids.
    async fn owners(
        &self,
        ids: &[quench_core::KeyId],
    ) -> Result<Vec<(quench_core::KeyId, quench_core::Owner)>>;
}

pub(crate) fn events_text(events: &[String]) -> String {
    events.join(" ")
}

pub(crate) fn events_list(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

pub(crate) const ALERT_COLUMNS: &str =
    "seq, id, key_id, owner, rule, kind, action, edge, raised_at, received_at, details";
pub(crate) const WEBHOOK_COLUMNS: &str =
    "id, url, secret, events, owner, created_at, created_by, from_seq, from_alert";
pub(crate) const DELIVERY_COLUMNS: &str = "id, webhook_id, event_type, payload, created_at, attempts, \
     next_attempt_at, delivered_at, failed_at, last_error";
pub(crate) const PENDING: &str = "delivered_at IS NULL AND failed_at IS NULL";

/// Assembled from this module's constants and placeholder numbers only: no input reaches the SQL text,
/// which is why the queries built from these strings are marked `AssertSqlSafe`.
pub(crate) fn sql_alerts(filter: &AlertFilter, before: bool) -> String {
    let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1");
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if filter.key_id.is_some() {
        sql.push_str(&format!(" AND key_id = ${}", next()));
    }
    if filter.owner.is_some() {
        sql.push_str(&format!(" AND owner = ${}", next()));
    }
    if before {
        sql.push_str(&format!(" AND seq < ${}", next()));
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", next()));
    sql
}

macro_rules! notify_store {
    ($store:ty, $row:ty) => {
        fn alert_row(row: &$row) -> $crate::Result<$crate::AlertRecord> {
            use sqlx::Row;
            Ok($crate::AlertRecord {
                seq: $crate::rows::unsigned(row.try_get("seq")?)?,
                alert: $crate::NewAlert {
                    id: row.try_get("id")?,
                    key_id: $crate::rows::key_id(row.try_get::<&str, _>("key_id")?)?,
                    owner: $crate::rows::optional_owner(row.try_get("owner")?)?,
                    rule: row.try_get("rule")?,
                    kind: row.try_get("kind")?,
                    action: row.try_get("action")?,
                    edge: row.try_get("edge")?,
                    raised_at: quench_core::Timestamp::from_millis(row.try_get("raised_at")?),
                    received_at: quench_core::Timestamp::from_millis(row.try_get("received_at")?),
                    details: row.try_get("details")?,
                },
            })
        }

        fn webhook_row(row: &$row) -> $crate::Result<$crate::WebhookRecord> {
            use sqlx::Row;
            Ok($crate::WebhookRecord {
                id: row.try_get("id")?,
                url: row.try_get("url")?,
                secret: row.try_get("secret")?,
                events: $crate::notify::events_list(row.try_get::<&str, _>("events")?),
                owner: $crate::rows::optional_owner(row.try_get("owner")?)?,
                created_at: quench_core::Timestamp::from_millis(row.try_get("created_at")?),
                created_by: row.try_get("created_by")?,
                from_seq: quench_core::Seq::new($crate::rows::unsigned(row.try_get("from_seq")?)?),
                from_alert: $crate::rows::unsigned(row.try_get("from_alert")?)?,
            })
        }

        fn delivery_row(row: &$row) -> $crate::Result<$crate::DeliveryRecord> {
            use sqlx::Row;
            let millis = |name: &str| -> $crate::Result<Option<quench_core::Timestamp>> {
                Ok(row
                    .try_get::<Option<i64>, _>(name)?
                    .map(quench_core::Timestamp::from_millis))
            };
            Ok($crate::DeliveryRecord {
                id: $crate::rows::unsigned(row.try_get("id")?)?,
                delivery: $crate::NewDelivery {
                    webhook_id: row.try_get("webhook_id")?,
                    event_type: row.try_get("event_type")?,
                    payload: row.try_get("payload")?,
                    created_at: quench_core::Timestamp::from_millis(row.try_get("created_at")?),
                },
                attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                next_attempt_at: quench_core::Timestamp::from_millis(
                    row.try_get("next_attempt_at")?,
                ),
                delivered_at: millis("delivered_at")?,
                failed_at: millis("failed_at")?,
                last_error: row.try_get("last_error")?,
            })
        }

        #[async_trait::async_trait]
        impl $crate::notify::NotifyStore for $store {
            async fn record_alert(
                &self,
                alert: &$crate::NewAlert,
            ) -> $crate::Result<($crate::AlertRecord, bool)> {
                let (_guard, mut tx) = self.write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO alerts (id, key_id, owner, rule, kind, action, edge, raised_at, \
                     received_at, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&alert.id)
                .bind(alert.key_id.to_string())
                .bind(alert.owner.as_ref().map(|o| o.as_str().to_owned()))
                .bind(&alert.rule)
                .bind(&alert.kind)
                .bind(&alert.action)
                .bind(&alert.edge)
                .bind(alert.raised_at.as_millis())
                .bind(alert.received_at.as_millis())
                .bind(&alert.details)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                let sql = format!("SELECT {} FROM alerts WHERE id = $1", $crate::notify::ALERT_COLUMNS);
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&alert.id).fetch_one(&mut *tx).await?;
                let record = alert_row(&row)?;
                tx.commit().await?;
                Ok((record, inserted))
            }

            async fn alerts(
                &self,
                filter: &$crate::AlertFilter,
                before: Option<u64>,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::AlertRecord>> {
                let sql = $crate::notify::sql_alerts(filter, before.is_some());
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                if let Some(id) = filter.key_id {
                    query = query.bind(id.to_string());
                }
                if let Some(owner) = &filter.owner {
                    query = query.bind(owner.as_str().to_owned());
                }
                if let Some(before) = before {
                    query = query.bind($crate::rows::signed(before));
                }
                query
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(alert_row)
                    .collect()
            }

            async fn alerts_after(
                &self,
                after: u64,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::AlertRecord>> {
                let sql = format!(
                    "SELECT {} FROM alerts WHERE seq > $1 ORDER BY seq LIMIT $2",
                    $crate::notify::ALERT_COLUMNS
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind($crate::rows::signed(after))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(alert_row)
                    .collect()
            }

            async fn last_alert_seq(&self) -> $crate::Result<u64> {
                let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM alerts")
                    .fetch_one(&self.pool)
                    .await?;
                $crate::rows::unsigned(seq.unwrap_or(0))
            }

            async fn create_webhook(&self, hook: &$crate::WebhookRecord) -> $crate::Result<()> {
                let (_guard, mut tx) = self.write().await?;
                sqlx::query(
                    "INSERT INTO webhooks (id, url, secret, events, owner, created_at, created_by, \
                     from_seq, from_alert) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&hook.id)
                .bind(&hook.url)
                .bind(&hook.secret)
                .bind($crate::notify::events_text(&hook.events))
                .bind(hook.owner.as_ref().map(|o| o.as_str().to_owned()))
                .bind(hook.created_at.as_millis())
                .bind(&hook.created_by)
                .bind($crate::rows::signed(hook.from_seq.get()))
                .bind($crate::rows::signed(hook.from_alert))
                .execute(&mut *tx)
                .await
                .map_err(|e| match e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        $crate::StoreError::Conflict(format!("webhook {}", hook.id))
                    }
                    other => other.into(),
                })?;
                tx.commit().await?;
                Ok(())
            }

            async fn webhooks(&self) -> $crate::Result<Vec<$crate::WebhookRecord>> {
                let sql = format!(
                    "SELECT {} FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at, id",
                    $crate::notify::WEBHOOK_COLUMNS
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(webhook_row)
                    .collect()
            }

            async fn delete_webhook(
                &self,
                id: &str,
                at: quench_core::Timestamp,
            ) -> $crate::Result<bool> {
                let (_guard, mut tx) = self.write().await?;
                let deleted = sqlx::query(
                    "UPDATE webhooks SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(id)
                .bind(at.as_millis())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !deleted {
                    let known: Option<String> =
                        sqlx::query_scalar("SELECT id FROM webhooks WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    return if known.is_some() {
                        Ok(false)
                    } else {
                        Err($crate::StoreError::NotFound)
                    };
                }
                let sql = format!(
                    "UPDATE webhook_deliveries SET failed_at = $2, last_error = 'webhook deleted' \
                     WHERE webhook_id = $1 AND {}",
                    $crate::notify::PENDING
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(at.as_millis())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn notify_cursor(&self) -> $crate::Result<$crate::NotifyCursor> {
                use sqlx::Row;
                let row = sqlx::query("SELECT event_seq, alert_seq FROM notify_cursor WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?;
                Ok($crate::NotifyCursor {
                    event_seq: quench_core::Seq::new($crate::rows::unsigned(
                        row.try_get("event_seq")?,
                    )?),
                    alert_seq: $crate::rows::unsigned(row.try_get("alert_seq")?)?,
                })
            }

            async fn advance_notify(
                &self,
                from: $crate::NotifyCursor,
                to: $crate::NotifyCursor,
                deliveries: &[$crate::NewDelivery],
            ) -> $crate::Result<bool> {
                let signed = $crate::rows::signed;
                let (_guard, mut tx) = self.write().await?;
                let moved = sqlx::query(
                    "UPDATE notify_cursor SET event_seq = $3, alert_seq = $4 \
                     WHERE id = 1 AND event_seq = $1 AND alert_seq = $2",
                )
                .bind(signed(from.event_seq.get()))
                .bind(signed(from.alert_seq))
                .bind(signed(to.event_seq.get()))
                .bind(signed(to.alert_seq))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !moved {
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
                now: quench_core::Timestamp,
                lease_until: quench_core::Timestamp,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::DeliveryRecord>> {
                let pending = $crate::notify::PENDING;
                // The outer condition repeats "still due": a row another manager claimed meanwhile no
                // longer matches when this statement gets to it.
                let sql = format!(
                    "UPDATE webhook_deliveries SET next_attempt_at = $2 \
                     WHERE id IN (SELECT id FROM webhook_deliveries WHERE {pending} \
                     AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $3) \
                     AND {pending} AND next_attempt_at <= $1 RETURNING {}",
                    $crate::notify::DELIVERY_COLUMNS
                );
                // Most of the time nothing is due: find that out without taking the write lock.
                let due = format!(
                    "SELECT id FROM webhook_deliveries WHERE {pending} AND next_attempt_at <= $1 LIMIT 1"
                );
                let any: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(due))
                    .bind(now.as_millis())
                    .fetch_optional(&self.pool)
                    .await?;
                if any.is_none() {
                    return Ok(Vec::new());
                }
                let (_guard, mut tx) = self.write().await?;
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(now.as_millis())
                    .bind(lease_until.as_millis())
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                let mut claimed = rows.iter().map(delivery_row).collect::<$crate::Result<Vec<_>>>()?;
                claimed.sort_by_key(|d| d.id);
                Ok(claimed)
            }

            async fn finish_delivery(
                &self,
                id: u64,
                attempt: &$crate::Attempt,
            ) -> $crate::Result<()> {
                let id = $crate::rows::signed(id);
                let (sql, at, error) = match attempt {
                    $crate::Attempt::Delivered { at } => (
                        "UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_at = $2, \
                         last_error = $3 WHERE id = $1",
                        *at,
                        None,
                    ),
                    $crate::Attempt::Retry { next, error } => (
                        "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $2, \
                         last_error = $3 WHERE id = $1",
                        *next,
                        Some(error.clone()),
                    ),
                    $crate::Attempt::GaveUp { at, error } => (
                        "UPDATE webhook_deliveries SET attempts = attempts + 1, failed_at = $2, \
                         last_error = $3 WHERE id = $1",
                        *at,
                        Some(error.clone()),
                    ),
                };
                // Only a pending delivery: one abandoned meanwhile (its webhook deleted) stays so.
                let sql = format!("{sql} AND {}", $crate::notify::PENDING);
                let (_guard, mut tx) = self.write().await?;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(at.as_millis())
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn deliveries(
                &self,
                webhook_id: &str,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::DeliveryRecord>> {
                let sql = format!(
                    "SELECT {} FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2",
                    $crate::notify::DELIVERY_COLUMNS
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(webhook_id)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(delivery_row)
                    .collect()
            }

            async fn owners(
                &self,
                ids: &[quench_core::KeyId],
            ) -> $crate::Result<Vec<(quench_core::KeyId, quench_core::Owner)>> {
                use sqlx::Row;
                let mut owners = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(500) {
                    let placeholders: Vec<String> =
                        (1..=chunk.len()).map(|i| format!("${i}")).collect();
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
                        let id = $crate::rows::key_id(row.try_get::<&str, _>("id")?)?;
                        let owner: String = row.try_get("owner")?;
                        let owner = quench_core::Owner::parse(&owner).map_err(|e| {
                            $crate::StoreError::Corrupt(format!("owner: {e}"))
                        })?;
                        owners.push((id, owner));
                    }
                }
                Ok(owners)
            }

            async fn pending_deliveries(&self) -> $crate::Result<u64> {
                let sql = format!(
                    "SELECT COUNT(*) FROM webhook_deliveries WHERE {}",
                    $crate::notify::PENDING
                );
                let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&self.pool).await?;
                $crate::rows::unsigned(count)
            }
        }
    };
}

pub(crate) use notify_store;
