//! Conversions between Quench's records and the plain columns every SQL backend stores.
//!
//! Rows hold text and integers; records hold Quench's types. Each conversion from a row parses, so a
//! stored value Quench would not have written is a [`StoreError::Corrupt`] naming the value, never a
//! panic and never a record that breaks the types' promises.

use quench_core::{
    Change, Event, KeyId, KeyName, KeyRecord, Label, Owner, Prefix, Revocation, Seq, Timestamp,
    Verifier, scope::Scopes,
};

use crate::{AuditEntry, Result, StoreError, TokenRecord};

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
pub struct KeyColumns {
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

pub fn event(seq: i64, at: i64, body: String) -> Result<Event> {
    let change: Change = serde_json::from_str(&body).map_err(|e| corrupt("event", e))?;
    Ok(Event {
        seq: Seq::new(unsigned(seq)?),
        at: Timestamp::from_millis(at),
        change,
    })
}

pub fn token(
    id: String,
    verifier: String,
    scopes: String,
    owner: Option<String>,
    created_at: i64,
    created_by: String,
) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: key_id(&id)?,
        verifier: Verifier::decode(&verifier).map_err(|e| corrupt("token verifier", e))?,
        scopes: Scopes::decode(&scopes).map_err(|e| corrupt("token scopes", e))?,
        owner: optional_owner(owner)?,
        created_at: Timestamp::from_millis(created_at),
        created_by,
    })
}

pub(crate) fn owner(text: &str) -> Result<Owner> {
    Owner::parse(text).map_err(|e| corrupt("owner", e))
}

pub(crate) fn optional_owner(text: Option<String>) -> Result<Option<Owner>> {
    text.as_deref().map(owner).transpose()
}

pub fn audit(
    at: i64,
    principal: String,
    action: String,
    key: Option<String>,
    reason: Option<String>,
    source: Option<String>,
) -> Result<AuditEntry> {
    Ok(AuditEntry {
        at: Timestamp::from_millis(at),
        principal,
        action,
        key_id: key.as_deref().map(key_id).transpose()?,
        reason,
        source,
    })
}
