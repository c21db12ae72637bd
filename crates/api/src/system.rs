//! What the manager tells its edges and operators about itself: the event log, the edges and how far each
//! has got, the audit trail, its health and its signing keys.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::contract::{KeyIdText, Name};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events with a sequence number above this; default 0.
    #[param(nullable = false, minimum = 0, maximum = 9223372036854775807_i64)]
    pub after: Option<u64>,
    /// Page size, default 100.
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// 32 lowercase hex characters chosen at random by the caller for this request; the signed page
    /// carries it back, which proves the page was made after the caller asked (edges require it).
    #[param(
        nullable = false,
        pattern = "^[0-9a-f]{32}$",
        min_length = 32,
        max_length = 32
    )]
    pub nonce: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    /// 32 lowercase hex characters chosen at random by the caller; the signed header carries it back.
    #[param(
        nullable = false,
        pattern = "^[0-9a-f]{32}$",
        min_length = 32,
        max_length = 32
    )]
    pub nonce: Option<String>,
}

/// Largest `after` accepted: sequence numbers are signed 64-bit in every store.
pub const MAX_SEQ: u64 = i64::MAX as u64;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// In sequence order, without gaps.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<quench_core::Event>,
    /// The log's last sequence number when the page was read.
    #[schema(minimum = 0)]
    pub head: u64,
    /// When the page was read (the manager's clock, RFC 3339); `head` was read after it.
    #[schema(value_type = String, format = DateTime)]
    pub at: quench_core::Timestamp,
    /// The caller's nonce, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^[0-9a-f]{32}$")]
    pub nonce: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EdgeList {
    pub head_seq: u64,
    pub edges: Vec<EdgeView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only records about this key.
    #[param(value_type = KeyIdText, required = false)]
    pub key_id: Option<String>,
    /// Page size, default 100.
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRecord {
    pub at: String,
    pub principal: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub head_seq: u64,
    pub live_edges: usize,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeRegistrationRequest {
    #[schema(value_type = Name)]
    pub id: String,
    #[schema(value_type = Name)]
    pub region: String,
    /// Hex Ed25519 public key the edge signs its acknowledgements with: 64 hex digits that encode a
    /// point on the curve.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub public_key: String,
    /// Hex HMAC-SHA256 key (32 bytes) the edge authenticates its acknowledgements with instead of
    /// signing each one. A secret: sent only here, never shown again. Requires `ack_key_proof`.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub ack_key: Option<String>,
    /// `<signer>.<128 hex>`: the edge's Ed25519 signature (purpose `quench-ack-key`) over its id, a zero
    /// byte and `ack_key` in lowercase hex, proving the MAC key belongs to `public_key`.
    pub ack_key_proof: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeRotationRequest {
    /// Hex Ed25519 public key the edge now signs with (it logs it at start and when its registration
    /// is refused).
    pub public_key: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EdgeRotation {
    pub id: String,
    pub region: String,
    /// The id of the key now registered.
    pub key_id: String,
    /// The id of the key it replaced, whose acknowledgements no longer count.
    pub replaced_key_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SigningKey {
    pub id: String,
    /// Hex Ed25519 public key.
    pub public_key: String,
    /// The key the manager signs with now; the others are accepted during a rotation.
    pub current: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SigningKeys {
    pub keys: Vec<SigningKey>,
}

/// One edge as `GET /v1/edges` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EdgeView {
    pub id: String,
    pub region: String,
    pub applied_seq: u64,
    /// Events the edge has not yet applied.
    pub lag: u64,
    pub last_contact: String,
    pub live: bool,
}
