//! The source of truth: keys, the event log and the audit trail.
//!
//! Every mutation is one transaction that changes the key, appends its event with the next sequence number
//! and writes its audit record (a transactional outbox: an event exists exactly when its change committed).
//! Sequence numbers come from a one-row log head that each writing transaction increments: the increment
//! takes the row's write lock until commit, so writers are serialised, numbers are handed out in commit
//! order, and a rolled-back transaction gives its number back. A database sequence would give neither
//! property. The cost is that writes are serialised; at one short transaction per change this is far above
//! any revocation rate an operator needs, and reads never wait for it.
//!
//! [`Store`] (with [`AlertStore`] and [`WebhookStore`]) is what the manager asks of its database. It is
//! written once, as [`SqlStore`], over a [`Backend`] that says only what differs between databases:
//! SQLite (the embedded default, [`sqlite::SqliteStore`]) and PostgreSQL ([`postgres::PostgresStore`]).
//! One conformance suite (`tests/conformance`) runs against each.
//!
//! Where things go: a new store method is declared on the trait of its subject and written once in the
//! matching module (`store.rs` for keys, tokens and edges, with the steps of a change in `changes.rs`;
//! `alerts.rs`; `webhooks.rs`); rows become records in `rows.rs`, where a stored value that does not
//! parse becomes [`StoreError::Corrupt`]; a schema change is a new script in `migrations/`.

mod alerts;
mod backend;
mod changes;
mod edges;
mod error;
mod migrate;
mod model;
pub mod postgres;
mod rows;
pub mod sqlite;
mod store;
mod webhooks;

use async_trait::async_trait;
use quench_core::{
    EdgeId, Event, KeyId, KeyRecord, Owner, Seq, Timestamp, record::Snapshot, sign::PublicKey,
};

pub use alerts::AlertStore;
pub use backend::Backend;
pub use error::{Conflict, StoreError};
pub use model::{
    Actor, AlertFilter, AlertRecord, Attempt, AuditEntry, DeliveryRecord, EdgeRecord, KeyFilter,
    NewAlert, NewDelivery, NotifyCursor, Selector, TokenRecord, WebhookRecord,
};
pub use store::SqlStore;
pub use webhooks::WebhookStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The outcome of a revocation: the key as it now stands and, when this call revoked it, its event.
#[derive(Debug, Clone)]
pub struct Revoked {
    pub record: KeyRecord,
    /// `None` when the key was already revoked (the call changed nothing).
    pub event: Option<Event>,
}

#[derive(Debug, Clone)]
pub struct Rotated {
    pub old: KeyRecord,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Default)]
pub struct BulkRevoked {
    pub revoked: Vec<KeyId>,
    pub already_revoked: usize,
    /// One revocation event per key revoked, in sequence order.
    pub events: Vec<Event>,
}

impl BulkRevoked {
    pub fn last_seq(&self) -> Option<Seq> {
        self.events.last().map(|e| e.seq)
    }
}

#[async_trait]
pub trait Store: AlertStore + WebhookStore + Send + Sync + 'static {
    /// Inserts a new key with its creation event. An id already used (ever) is a conflict.
    async fn create_key(&self, key: &KeyRecord, actor: &Actor) -> Result<Event>;

    /// Inserts many new keys in one transaction, with their creation events (in order) and audit records.
    /// All or nothing: an id already used anywhere is a conflict and nothing is written.
    async fn create_keys(&self, keys: &[KeyRecord], actor: &Actor) -> Result<Vec<Event>>;

    /// Revokes a key. Idempotent: revoking a revoked key changes nothing and returns its record.
    async fn revoke_key(&self, id: KeyId, reason: &str, actor: &Actor) -> Result<Revoked>;

    /// Creates `new` as the successor of `old`, whose expiry becomes `old_expires_at` (or stays earlier).
    async fn rotate_key(
        &self,
        old: KeyId,
        new: &KeyRecord,
        old_expires_at: Timestamp,
        actor: &Actor,
    ) -> Result<Rotated>;

    /// Revokes every key the selector matches (only `within` that owner's, if given), in one transaction.
    async fn revoke_many(
        &self,
        selector: &Selector,
        within: Option<&Owner>,
        reason: &str,
        actor: &Actor,
    ) -> Result<BulkRevoked>;

    async fn key(&self, id: KeyId) -> Result<Option<KeyRecord>>;

    /// Keys newest first. `after` is the cursor a previous page returned.
    async fn list_keys(
        &self,
        filter: &KeyFilter,
        after: Option<u64>,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<(u64, KeyRecord)>>;

    async fn events_after(&self, after: Seq, limit: u32) -> Result<Vec<Event>>;

    /// The last sequence number committed.
    async fn head(&self) -> Result<Seq>;

    /// Every key as an edge needs it, consistent at the returned sequence number.
    async fn snapshot(&self) -> Result<Snapshot>;

    /// A page of the keys created at or before `through`, in creation order after the cursor `after`,
    /// as they are now. Paging without one long transaction is safe for a snapshot at `through`: a key's
    /// row only ever moves forward (revoked stays revoked, ids are never reused), and the edge applies
    /// every event after `through` on top, so a change newer than `through` seen early is applied again
    /// and changes nothing.
    async fn snapshot_page(
        &self,
        through: Seq,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, quench_core::EdgeKey)>>;

    async fn create_token(&self, token: &TokenRecord, actor: &Actor) -> Result<()>;

    /// A live token: `None` for an unknown or revoked one.
    async fn token(&self, id: KeyId) -> Result<Option<TokenRecord>>;

    /// Revokes a manager token: `true` if this call revoked it, `false` if it already was; `NotFound`
    /// for an unknown id.
    async fn revoke_token(&self, id: KeyId, actor: &Actor) -> Result<bool>;

    async fn count_tokens(&self) -> Result<u64>;

    /// The newest audit records first, optionally for one key.
    async fn audit_log(&self, key: Option<KeyId>, limit: u32) -> Result<Vec<AuditEntry>>;

    /// The outbox's high-water mark: every event up to it is known to have been published.
    async fn published_through(&self) -> Result<Seq>;

    /// Records that events `first..=last` were published. Advances the mark only when it is contiguous
    /// (the mark is at `first - 1` or beyond); otherwise the gap's events are published again later,
    /// which is harmless: edges ignore what they already applied.
    async fn mark_published(&self, first: Seq, last: Seq) -> Result<()>;

    /// Records an edge's acknowledgement key. Registering an id again with the same key only refreshes
    /// its region and time; with another key it is `Conflict` and nothing changes: an edge's key is
    /// replaced only by [`Store::rotate_edge`].
    async fn register_edge(&self, edge: &EdgeRecord) -> Result<()>;

    /// Replaces a registered edge's key at `actor.at` (an operator's decision, audited as
    /// `edge.rotate` in the same transaction) and returns the record as it was. `NotFound` for an id
    /// never registered.
    async fn rotate_edge(
        &self,
        id: &EdgeId,
        public_key: &PublicKey,
        actor: &Actor,
    ) -> Result<EdgeRecord>;

    async fn edges(&self) -> Result<Vec<EdgeRecord>>;

    /// Closes the connections, waiting for those in use (graceful shutdown).
    async fn close(&self);
}

/// Opens the store a URL names: `postgres://` / `postgresql://`, or `sqlite:`.
pub async fn open_url(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            postgres::PostgresStore::open(url).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            sqlite::SqliteStore::open_url(url).await?,
        ))
    } else {
        Err(StoreError::Unsupported(
            url.split(':').next().unwrap_or("").to_owned(),
        ))
    }
}
