//! What the manager keeps about a key, and the subset every edge needs.

use serde::{Deserialize, Serialize};

use crate::{
    hash::Verifier,
    key::{KeyId, Prefix},
    names::{KeyName, Label, Owner},
    time::Timestamp,
};

/// Longest revocation reason accepted, in characters.
pub const REASON_MAX: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Revoked,
    Expired,
}

impl KeyStatus {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub at: Timestamp,
    pub reason: String,
}

/// The manager's full record of a key. It holds a verifier, never the secret.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub prefix: Prefix,
    pub owner: Owner,
    pub name: Option<KeyName>,
    pub apis: Vec<Label>,
    pub scopes: Vec<Label>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked: Option<Revocation>,
    pub rotated_from: Option<KeyId>,
    pub replaced_by: Option<KeyId>,
    pub verifier: Verifier,
}

impl KeyRecord {
    pub fn status(&self, now: Timestamp) -> KeyStatus {
        if self.revoked.is_some() {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    pub fn edge_view(&self) -> EdgeKey {
        EdgeKey {
            id: self.id,
            prefix: self.prefix,
            owner: self.owner.clone(),
            apis: self.apis.clone(),
            scopes: self.scopes.clone(),
            expires_at: self.expires_at,
            revoked: self.revoked.is_some(),
            verifier: self.verifier.clone(),
        }
    }
}

/// What an edge needs to answer "is this key valid?": carried in events and snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeKey {
    pub id: KeyId,
    pub prefix: Prefix,
    pub owner: Owner,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apis: Vec<Label>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub revoked: bool,
    pub verifier: Verifier,
}

/// Every key as the edges need it, consistent at `seq`: an edge installs it, then applies `seq + 1` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub seq: crate::event::Seq,
    pub keys: Vec<EdgeKey>,
}
