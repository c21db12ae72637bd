//! Keys over the manager API: creating, listing, revoking (one, or in bulk) and rotating them, and how far
//! a change has reached the edges when the request waited for them.

use quench_core::record::REASON_MAX;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::contract::{Cursor, Instant, KeyIdText, Name, visible_text};

/// A key's display name: 1 to 200 characters, no control characters, not blank.
fn key_name_schema() -> utoipa::openapi::schema::Object {
    nullable(visible_text(quench_core::names::KEY_NAME_MAX))
}

/// A revocation reason: 1 to 500 characters, no control characters, not blank.
fn reason_schema() -> utoipa::openapi::schema::Object {
    visible_text(REASON_MAX).build()
}

fn nullable(builder: utoipa::openapi::schema::ObjectBuilder) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    builder
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .build()
}

/// `null` where a request may say "absent": only for fields whose absence and `null` mean the same.
/// The selector fields of a bulk revocation are "exactly one of", so there `null` is refused.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Who the key belongs to. Required, except from a token confined to an owner, which may leave it
    /// out to mean its own.
    #[schema(value_type = Name, required = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[schema(schema_with = key_name_schema)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// APIs the key may call; empty means any. Duplicates are merged.
    #[serde(default)]
    #[schema(value_type = Vec<Name>, max_items = 64)]
    pub apis: Vec<String>,
    /// Scopes the key carries. Duplicates are merged.
    #[serde(default)]
    #[schema(value_type = Vec<Name>, max_items = 64)]
    pub scopes: Vec<String>,
    /// When the key stops working; must be in the future. At most one of `expires_at` and `expires_in`.
    #[schema(value_type = Option<Instant>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Seconds from now, up to ten years. At most one of `expires_at` and `expires_in`.
    #[serde(default, deserialize_with = "quench_core::whole::option_u64")]
    #[schema(minimum = 1, maximum = 315360000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// Free-form JSON object, at most 8 KiB serialised; shown with the key, never sent to edges.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The issuer prefix, one of those the manager is configured with; default the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// A key as the API shows it: never its secret, never its hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub prefix: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub apis: Vec<String>,
    pub scopes: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    /// How the secret is hashed: `sha256`, `argon2id` or `bcrypt`.
    pub hashing: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
}

/// A new key: the only time its plaintext is ever shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The plaintext key. Store it now; Quench keeps only a hash.
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
    /// Present when the request waited for the edges (`wait=all`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Confirmation>,
}

#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this owner's keys.
    #[param(value_type = Name, required = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Only keys in this state.
    #[param(value_type = KeyStatusName, required = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only keys that may call this API.
    #[param(value_type = Name, required = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// Page size, default 100.
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// `next_cursor` from the previous page.
    #[param(value_type = Cursor, required = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A key's state.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum KeyStatusName {
    Active,
    Revoked,
    Expired,
}

/// How a change waits for the edges.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum WaitMode {
    All,
    None,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// `all` (default): answer once every live edge has applied the change; `none`: answer at commit.
    #[param(value_type = WaitMode, required = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// How long `wait=all` may take, in milliseconds; default 2000.
    #[param(nullable = false, minimum = 0, maximum = 60000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why: kept in the audit log and shown on the key.
    #[schema(schema_with = reason_schema)]
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Revocation {
    pub key: KeyView,
    /// The key was already revoked; nothing changed.
    pub already_revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Confirmation>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the old key keeps working, in seconds (0 = it stops now), up to ten years.
    #[serde(deserialize_with = "quench_core::whole::u64")]
    #[schema(minimum = 0, maximum = 315360000)]
    pub grace_seconds: u64,
    /// The new key's expiry; must be in the future. By default it does not expire. At most one of
    /// `expires_at` and `expires_in`.
    #[schema(value_type = Option<Instant>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The new key's lifetime in seconds, up to ten years.
    #[serde(default, deserialize_with = "quench_core::whole::option_u64")]
    #[schema(minimum = 1, maximum = 315360000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rotation {
    #[serde(flatten)]
    pub new: CreatedKey,
    /// The key it replaces, with its new expiry.
    pub previous: KeyView,
}

/// A bulk revocation as the server parses it; [`BulkRevokeShape`] is how the document shows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRevokeRequest {
    /// Exactly one of `owner`, `api`, `ids`.
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    pub reason: String,
}

/// Which keys a bulk revocation takes: exactly one of `owner`, `api` or `ids`, and a reason.
#[derive(Deserialize, ToSchema)]
#[schema(as = BulkRevokeRequest)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum BulkRevokeShape {
    /// Every key of one owner.
    Owner(BulkByOwner),
    /// Every key that may call one API.
    Api(BulkByApi),
    /// These keys (unknown ids are skipped).
    Ids(BulkByIds),
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BulkByOwner {
    #[schema(value_type = Name)]
    owner: String,
    #[schema(schema_with = reason_schema)]
    reason: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BulkByApi {
    #[schema(value_type = Name)]
    api: String,
    #[schema(schema_with = reason_schema)]
    reason: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BulkByIds {
    #[schema(value_type = Vec<KeyIdText>, min_items = 1, max_items = 10000)]
    ids: Vec<String>,
    #[schema(schema_with = reason_schema)]
    reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkRevocation {
    pub revoked: Vec<String>,
    pub already_revoked: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Confirmation>,
}

/// Per-edge outcome of waiting for a change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EdgeConfirmation {
    pub edge: String,
    pub region: String,
    pub confirmed: bool,
    /// When the manager learned the edge had applied the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
    /// Milliseconds from the start of the wait to that moment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Confirmation {
    /// The change waited for.
    pub seq: u64,
    /// Every live edge applied it before the timeout.
    pub complete: bool,
    pub edges: Vec<EdgeConfirmation>,
}
