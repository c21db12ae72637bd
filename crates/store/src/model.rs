use quench_core::{KeyId, Label, Owner, Timestamp, Verifier, record::KeyStatus, scope::Scopes};

/// Who is making a change, from where, and when: recorded with every mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token id (or `bootstrap`, `system`).
    pub principal: String,
    /// The client's address, when the change came over the network.
    pub source: Option<String>,
    pub at: Timestamp,
}

impl Actor {
    pub fn system(at: Timestamp) -> Self {
        Self {
            principal: "system".into(),
            source: None,
            at,
        }
    }
}

/// One audit record: one per key a mutation touched.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub principal: String,
    pub action: String,
    pub key_id: Option<KeyId>,
    pub reason: Option<String>,
    pub source: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyFilter {
    pub owner: Option<Owner>,
    pub status: Option<KeyStatus>,
    pub api: Option<Label>,
}

/// Which keys a bulk revocation covers.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    Owner(Owner),
    Api(Label),
    Ids(Vec<KeyId>),
}

/// A manager token. Like a key, it is stored only as a verifier.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: KeyId,
    pub verifier: Verifier,
    pub scopes: Scopes,
    /// A token confined to one owner sees and changes only that owner's keys.
    pub owner: Option<Owner>,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// An edge and the key it signs its acknowledgements with. Re-registering an id replaces its key (an
/// edge makes a new key each time it starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRecord {
    pub id: String,
    pub region: String,
    /// Hex Ed25519 public key.
    pub public_key: String,
    pub registered_at: Timestamp,
}
