//! Conversions between Quench's records and the plain columns every SQL backend stores.
//!
//! Rows hold text and integers; records hold Quench's types. Each conversion from a row parses, so a
//! stored value Quench would not have written is a [`StoreError::Corrupt`] naming the value, never a
//! panic and never a record that breaks the types' promises. The conversions read rows through
//! [`Columns`], so one function serves every backend.

use quench_core::{
    Change, EdgeId, EdgeKey, Event, KeyId, KeyName, KeyRecord, Label, Owner, Prefix, Region,
    Revocation, Seq, Timestamp, Verifier,
    scope::Scopes,
    sign::{PublicKey, ack::AckKey},
    usage::Action,
};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::{
    AlertRecord, AuditEntry, DeliveryRecord, EdgeRecord, NewAlert, NewDelivery, Result, StoreError,
    TokenRecord, WebhookRecord,
};

/// A row's columns by name, as the two types every table is made of.
pub(crate) trait Columns {
    fn int(&self, name: &str) -> Result<i64>;
    fn text(&self, name: &str) -> Result<String>;
    fn maybe_int(&self, name: &str) -> Result<Option<i64>>;
    fn maybe_text(&self, name: &str) -> Result<Option<String>>;

    /// Times are stored as milliseconds since the epoch.
    fn time(&self, name: &str) -> Result<Timestamp> {
        self.int(name).map(Timestamp::from_millis)
    }

    fn maybe_time(&self, name: &str) -> Result<Option<Timestamp>> {
        Ok(self.maybe_int(name)?.map(Timestamp::from_millis))
    }
}

impl<R> Columns for R
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&self, name: &str) -> Result<i64> {
        Ok(self.try_get(name)?)
    }

    fn text(&self, name: &str) -> Result<String> {
        Ok(self.try_get(name)?)
    }

    fn maybe_int(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.try_get(name)?)
    }

    fn maybe_text(&self, name: &str) -> Result<Option<String>> {
        Ok(self.try_get(name)?)
    }
}

fn corrupt(
    what: &'static str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::corrupt(what, e)
}

/// A counter or sequence number as the databases store it (they have no unsigned 64-bit type).
pub fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub fn unsigned(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|e| corrupt("negative counter", e))
}

fn labels(json: &str) -> Result<Vec<Label>> {
    serde_json::from_str(json).map_err(|e| corrupt("label list", e))
}

fn labels_json(labels: &[Label]) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn key_id(text: &str) -> Result<KeyId> {
    KeyId::parse(text).map_err(|e| corrupt("key id", e))
}

/// A key as stored: one field per column.
pub(crate) struct KeyColumns {
    pub id: String,
    pub prefix: String,
    pub owner: String,
    pub name: Option<String>,
    pub apis: String,
    pub scopes: String,
    pub metadata: String,
    pub verifier: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    pub rotated_from: Option<String>,
    pub replaced_by: Option<String>,
}

impl KeyColumns {
    pub fn of(key: &KeyRecord) -> Self {
        Self {
            id: key.id.to_string(),
            prefix: key.prefix.to_string(),
            owner: key.owner.to_string(),
            name: key.name.as_ref().map(|n| n.as_str().to_owned()),
            apis: labels_json(&key.apis),
            scopes: labels_json(&key.scopes),
            metadata: serde_json::Value::Object(key.metadata.clone()).to_string(),
            verifier: key.verifier.encode(),
            created_at: key.created_at.as_millis(),
            expires_at: key.expires_at.map(Timestamp::as_millis),
            revoked_at: key.revoked.as_ref().map(|r| r.at.as_millis()),
            revoked_reason: key.revoked.as_ref().map(|r| r.reason.clone()),
            rotated_from: key.rotated_from.map(|k| k.to_string()),
            replaced_by: key.replaced_by.map(|k| k.to_string()),
        }
    }

    pub fn into_record(self) -> Result<KeyRecord> {
        let metadata = match serde_json::from_str(&self.metadata) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(corrupt("metadata", "not an object")),
            Err(e) => return Err(corrupt("metadata", e)),
        };
        let revoked = match (self.revoked_at, self.revoked_reason) {
            (Some(at), reason) => Some(Revocation {
                at: Timestamp::from_millis(at),
                reason: reason.unwrap_or_default(),
            }),
            (None, _) => None,
        };
        Ok(KeyRecord {
            id: key_id(&self.id)?,
            prefix: Prefix::parse(&self.prefix).map_err(|e| corrupt("prefix", e))?,
            owner: owner(&self.owner)?,
            name: self
                .name
                .map(|n| KeyName::parse(&n))
                .transpose()
                .map_err(|e| corrupt("name", e))?,
            apis: labels(&self.apis)?,
            scopes: labels(&self.scopes)?,
            metadata,
            created_at: Timestamp::from_millis(self.created_at),
            expires_at: self.expires_at.map(Timestamp::from_millis),
            revoked,
            rotated_from: self.rotated_from.as_deref().map(key_id).transpose()?,
            replaced_by: self.replaced_by.as_deref().map(key_id).transpose()?,
            verifier: Verifier::decode(&self.verifier).map_err(|e| corrupt("verifier", e))?,
        })
    }
}

pub(crate) const KEY_COLUMNS: &str = "id, created_seq, prefix, owner, name, apis, scopes, metadata, \
     verifier, created_at, expires_at, revoked_at, revoked_reason, rotated_from, replaced_by";

/// `SELECT` of every key column, followed by `tail` (conditions and order, placeholders only).
pub(crate) fn key_query(tail: &str) -> String {
    format!("SELECT {KEY_COLUMNS} FROM keys{tail}")
}

/// A key's row (the columns of [`KEY_COLUMNS`]) as its record.
pub(crate) fn key(row: &impl Columns) -> Result<KeyRecord> {
    KeyColumns {
        id: row.text("id")?,
        prefix: row.text("prefix")?,
        owner: row.text("owner")?,
        name: row.maybe_text("name")?,
        apis: row.text("apis")?,
        scopes: row.text("scopes")?,
        metadata: row.text("metadata")?,
        verifier: row.text("verifier")?,
        created_at: row.int("created_at")?,
        expires_at: row.maybe_int("expires_at")?,
        revoked_at: row.maybe_int("revoked_at")?,
        revoked_reason: row.maybe_text("revoked_reason")?,
        rotated_from: row.maybe_text("rotated_from")?,
        replaced_by: row.maybe_text("replaced_by")?,
    }
    .into_record()
}

/// The columns an edge's view of a key needs (see [`edge_key`]): a snapshot reads only these, since
/// it reads every key.
pub(crate) const EDGE_KEY_COLUMNS: &str =
    "id, created_seq, prefix, owner, apis, scopes, verifier, expires_at, revoked_at";

/// A row of [`EDGE_KEY_COLUMNS`] as the edge's view of the key: what `key(row)?.edge_view()` gives,
/// without reading and parsing the columns edges never see (metadata above all).
pub(crate) fn edge_key(row: &impl Columns) -> Result<EdgeKey> {
    Ok(EdgeKey {
        id: key_id(&row.text("id")?)?,
        prefix: Prefix::parse(&row.text("prefix")?).map_err(|e| corrupt("prefix", e))?,
        owner: owner(&row.text("owner")?)?,
        apis: labels(&row.text("apis")?)?,
        scopes: labels(&row.text("scopes")?)?,
        expires_at: row.maybe_int("expires_at")?.map(Timestamp::from_millis),
        revoked: row.maybe_int("revoked_at")?.is_some(),
        verifier: Verifier::decode(&row.text("verifier")?).map_err(|e| corrupt("verifier", e))?,
    })
}

/// Where paging through keys stands: the sequence number that created the row's key.
pub(crate) fn created_seq(row: &impl Columns) -> Result<u64> {
    unsigned(row.int("created_seq")?)
}

pub(crate) fn event(row: &impl Columns) -> Result<Event> {
    let body = row.text("body")?;
    let change: Change = serde_json::from_str(&body).map_err(|e| corrupt("event", e))?;
    Ok(Event {
        seq: Seq::new(unsigned(row.int("seq")?)?),
        at: row.time("at")?,
        change,
    })
}

pub(crate) fn token(row: &impl Columns) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: key_id(&row.text("id")?)?,
        verifier: Verifier::decode(&row.text("verifier")?)
            .map_err(|e| corrupt("token verifier", e))?,
        scopes: Scopes::decode(&row.text("scopes")?).map_err(|e| corrupt("token scopes", e))?,
        owner: optional_owner(row.maybe_text("owner")?)?,
        created_at: row.time("created_at")?,
        created_by: row.text("created_by")?,
    })
}

pub(crate) fn owner(text: &str) -> Result<Owner> {
    Owner::parse(text).map_err(|e| corrupt("owner", e))
}

fn optional_owner(text: Option<String>) -> Result<Option<Owner>> {
    text.as_deref().map(owner).transpose()
}

pub(crate) fn audit(row: &impl Columns) -> Result<AuditEntry> {
    Ok(AuditEntry {
        at: row.time("at")?,
        principal: row.text("principal")?,
        action: row.text("action")?,
        key_id: row
            .maybe_text("key_id")?
            .as_deref()
            .map(key_id)
            .transpose()?,
        reason: row.maybe_text("reason")?,
        source: row.maybe_text("source")?,
    })
}

pub(crate) fn edge(row: &impl Columns) -> Result<EdgeRecord> {
    Ok(EdgeRecord {
        id: EdgeId::parse(&row.text("id")?).map_err(|e| corrupt("edge id", e))?,
        region: Region::parse(&row.text("region")?).map_err(|e| corrupt("region", e))?,
        public_key: PublicKey::parse(&row.text("public_key")?)
            .map_err(|e| corrupt("edge key", e))?,
        registered_at: row.time("registered_at")?,
        ack_key: row
            .maybe_text("ack_key")?
            .map(|text| AckKey::parse(&text).map_err(|e| corrupt("edge ack key", e)))
            .transpose()?,
    })
}

pub(crate) fn alert(row: &impl Columns) -> Result<AlertRecord> {
    Ok(AlertRecord {
        seq: unsigned(row.int("seq")?)?,
        alert: NewAlert {
            id: row.text("id")?,
            key_id: key_id(&row.text("key_id")?)?,
            owner: optional_owner(row.maybe_text("owner")?)?,
            rule: row.text("rule")?,
            kind: row.text("kind")?,
            action: action(row.text("action")?)?,
            edge: row.text("edge")?,
            raised_at: row.time("raised_at")?,
            received_at: row.time("received_at")?,
            details: row.text("details")?,
        },
    })
}

/// A stored action, by the name the policy document gives it.
fn action(text: String) -> Result<Action> {
    serde_json::from_value(serde_json::Value::String(text)).map_err(|e| corrupt("alert action", e))
}

/// A webhook's event types are stored as one space-separated text.
pub(crate) fn webhook_events(events: &[String]) -> String {
    events.join(" ")
}

pub(crate) fn webhook(row: &impl Columns) -> Result<WebhookRecord> {
    Ok(WebhookRecord {
        id: row.text("id")?,
        url: row.text("url")?,
        secret: row.text("secret")?,
        events: row
            .text("events")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        owner: optional_owner(row.maybe_text("owner")?)?,
        created_at: row.time("created_at")?,
        created_by: row.text("created_by")?,
        from_seq: Seq::new(unsigned(row.int("from_seq")?)?),
        from_alert: unsigned(row.int("from_alert")?)?,
    })
}

pub(crate) fn delivery(row: &impl Columns) -> Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: unsigned(row.int("id")?)?,
        delivery: NewDelivery {
            webhook_id: row.text("webhook_id")?,
            event_type: row.text("event_type")?,
            payload: row.text("payload")?,
            created_at: row.time("created_at")?,
        },
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: row.time("next_attempt_at")?,
        delivered_at: row.maybe_time("delivered_at")?,
        failed_at: row.maybe_time("failed_at")?,
        last_error: row.maybe_text("last_error")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_back_as_stored() {
        for stored in [Action::Alert, Action::Revoke] {
            assert_eq!(action(stored.as_str().to_owned()).expect("known"), stored);
        }
    }

    #[test]
    fn an_unknown_action_is_corrupt_not_a_panic() {
        let error = action("escalate".into()).expect_err("unknown");
        assert!(
            matches!(
                error,
                StoreError::Corrupt {
                    what: "alert action",
                    ..
                }
            ),
            "{error}"
        );
    }
}
