use quench_core::{
    EdgeId, KeyId, Label, Owner, Region, Seq, Timestamp, Verifier,
    record::KeyStatus,
    scope::Scopes,
    sign::{PublicKey, ack::AckKey},
    usage::Action,
};

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

/// An edge and the key it signs its acknowledgements with. An edge keeps its key across restarts;
/// re-registering an id with another key is refused, and only an audited rotation replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRecord {
    pub id: EdgeId,
    pub region: Region,
    pub public_key: PublicKey,
    pub registered_at: Timestamp,
    /// The MAC key its acknowledgements carry, when its registration proved one (see
    /// `quench_core::sign::ack`). A secret: never shown by the API.
    pub ack_key: Option<AckKey>,
}

/// A usage alert as an edge raised it and the manager recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    /// Chosen by the edge, so a retried report is recognised and recorded once.
    pub id: String,
    pub key_id: KeyId,
    pub owner: Option<Owner>,
    pub rule: String,
    /// The rule's condition (`distinct_addresses`, `requests`, `above_usual`): a name, not an enum,
    /// because the manager records any short name an edge reports (an edge newer than the manager may
    /// know conditions it does not).
    pub kind: String,
    /// What the manager's policy said to do.
    pub action: Action,
    pub edge: String,
    pub raised_at: Timestamp,
    pub received_at: Timestamp,
    /// The measures the rule saw, as JSON.
    pub details: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// Position in the manager's alert log: increasing, and the cursor for paging.
    pub seq: u64,
    pub alert: NewAlert,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    pub key_id: Option<KeyId>,
    pub owner: Option<Owner>,
}

/// A webhook subscription. The secret signs every delivery (HMAC-SHA256), so the manager keeps it.
#[derive(Clone, PartialEq)]
pub struct WebhookRecord {
    pub id: String,
    pub url: String,
    pub secret: String,
    /// Event types delivered: `key.revoked`, `alert.raised`.
    pub events: Vec<String>,
    /// Only this owner's keys, when set.
    pub owner: Option<Owner>,
    pub created_at: Timestamp,
    pub created_by: String,
    /// Only changes after these (the log's head and the last alert when it was created) are delivered.
    pub from_seq: Seq,
    pub from_alert: u64,
}

impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// How far notifications have been fanned out into deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotifyCursor {
    pub event_seq: Seq,
    pub alert_seq: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub webhook_id: String,
    pub event_type: String,
    /// The `data` of the delivered document, as JSON.
    pub payload: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: u64,
    pub delivery: NewDelivery,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
    pub failed_at: Option<Timestamp>,
    pub last_error: Option<String>,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered {
        at: Timestamp,
    },
    /// Failed; try again at `next`.
    Retry {
        next: Timestamp,
        error: String,
    },
    /// Failed for the last time.
    GaveUp {
        at: Timestamp,
        error: String,
    },
}
