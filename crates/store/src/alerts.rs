//! Usage alerts: the log of what edges reported and what the manager's policy decided.
//!
//! An alert's id is chosen by the edge that raised it, so a report retried after a lost answer is
//! recognised and recorded once. Alerts are numbered as they are recorded (`seq`), under the writers'
//! lock, so the numbers follow commit order and serve as the webhook fan-out's cursor.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use crate::{AlertFilter, AlertRecord, Backend, NewAlert, Result, SqlStore, rows};

#[async_trait]
pub trait AlertStore: Send + Sync {
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
}

const ALERT_COLUMNS: &str =
    "seq, id, key_id, owner, rule, kind, action, edge, raised_at, received_at, details";

#[async_trait]
impl<B: Backend> AlertStore for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    <B::Db as Database>::Arguments: IntoArguments<B::Db>,
    i64: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    String: for<'q> Encode<'q, B::Db> + for<'r> Decode<'r, B::Db> + Type<B::Db>,
    Option<String>: for<'q> Encode<'q, B::Db>,
    for<'n> &'n str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    async fn record_alert(&self, alert: &NewAlert) -> Result<(AlertRecord, bool)> {
        let mut tx = self.write().await?;
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
        .bind(alert.action.as_str().to_owned())
        .bind(&alert.edge)
        .bind(alert.raised_at.as_millis())
        .bind(alert.received_at.as_millis())
        .bind(&alert.details)
        .execute(&mut *tx)
        .await?;
        let inserted = B::rows_affected(&inserted) == 1;
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&alert.id)
            .fetch_one(&mut *tx)
            .await?;
        let record = rows::alert(&row)?;
        tx.commit().await?;
        Ok((record, inserted))
    }

    async fn alerts(
        &self,
        filter: &AlertFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AlertRecord>> {
        let mut query =
            QueryBuilder::<B::Db>::new(format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1"));
        if let Some(id) = filter.key_id {
            query.push(" AND key_id = ").push_bind(id.to_string());
        }
        if let Some(owner) = &filter.owner {
            query
                .push(" AND owner = ")
                .push_bind(owner.as_str().to_owned());
        }
        if let Some(before) = before {
            query.push(" AND seq < ").push_bind(rows::signed(before));
        }
        query
            .push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(limit));
        query
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::alert)
            .collect()
    }

    async fn alerts_after(&self, after: u64, limit: u32) -> Result<Vec<AlertRecord>> {
        let sql =
            format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE seq > $1 ORDER BY seq LIMIT $2");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(rows::signed(after))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::alert)
            .collect()
    }

    async fn last_alert_seq(&self) -> Result<u64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM alerts")
            .fetch_one(&self.pool)
            .await?;
        rows::unsigned(seq.unwrap_or(0))
    }
}
