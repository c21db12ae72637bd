//! The JSON the manager API speaks. Requests are parsed into domain types in one place each
//! (`into_*`), so handlers only see valid values and every refusal names the field at fault.

use quench_core::{
    GivenId, KeyId, KeyName, KeyRecord, Label, Owner, Timestamp,
    record::{KeyStatus, REASON_MAX},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use quench_edge::contract::{ErrorDetail, ErrorResponse};
use quench_edge::{
    contract::{Cursor, Instant, KeyIdText, Name, visible_text},
    web::ApiError,
};

/// Most APIs or scopes one key may list.
pub const MAX_LABELS: usize = 64;
/// Largest metadata object, serialised, in bytes.
pub const MAX_METADATA: usize = 8 * 1024;
/// Longest lifetime or grace period accepted: ten years, in seconds.
pub const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;
pub const MAX_PAGE: u32 = 1000;
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_WAIT_MS: u64 = 60_000;
pub const MAX_BULK_IDS: usize = 10_000;
/// The body limit of `POST /v1/revocations`: room for [`MAX_BULK_IDS`] ids even pretty-printed (an id
/// takes 13 bytes as `"0123456789",` and up to 26 with indentation and a line break). Every other route
/// keeps the small default.
pub const BULK_BODY_LIMIT: usize = 256 * 1024;

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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Who the key belongs to. Required, except from a token confined to an owner, which may leave it
    /// out to mean its own.
    #[schema(value_type = Name, required = true)]
    pub owner: Option<String>,
    #[schema(schema_with = key_name_schema)]
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
    pub expires_at: Option<String>,
    /// Seconds from now, up to ten years. At most one of `expires_at` and `expires_in`.
    #[serde(default, deserialize_with = "quench_core::whole::option_u64")]
    #[schema(minimum = 1, maximum = 315360000)]
    pub expires_in: Option<u64>,
    /// Free-form JSON object, at most 8 KiB serialised; shown with the key, never sent to edges.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The issuer prefix, one of those the manager is configured with; default the first.
    pub issuer: Option<String>,
}

/// A create request after parsing.
#[derive(Debug)]
pub struct NewKey {
    pub owner: Option<Owner>,
    pub name: Option<KeyName>,
    pub apis: Vec<Label>,
    pub scopes: Vec<Label>,
    pub expires_at: Option<Timestamp>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub issuer: Option<String>,
}

fn field<T, E: std::fmt::Display>(name: &str, result: Result<T, E>) -> Result<T, ApiError> {
    result.map_err(|e| ApiError::invalid(format!("{name}: {e}")))
}

fn labels(name: &str, values: &[String]) -> Result<Vec<Label>, ApiError> {
    if values.len() > MAX_LABELS {
        return Err(ApiError::invalid(format!(
            "{name}: at most {MAX_LABELS} entries"
        )));
    }
    let mut parsed: Vec<Label> = values
        .iter()
        .map(|v| field(name, Label::parse(v)))
        .collect::<Result<_, _>>()?;
    parsed.sort();
    parsed.dedup();
    Ok(parsed)
}

pub fn expiry(
    expires_at: Option<&str>,
    expires_in: Option<u64>,
    now: Timestamp,
) -> Result<Option<Timestamp>, ApiError> {
    match (expires_at, expires_in) {
        (Some(_), Some(_)) => Err(ApiError::invalid("give expires_at or expires_in, not both")),
        (Some(at), None) => {
            let at = field("expires_at", Timestamp::parse_rfc3339(at))?;
            if at <= now {
                return Err(ApiError::invalid("expires_at: must be in the future"));
            }
            Ok(Some(at))
        }
        (None, Some(seconds)) => {
            if seconds == 0 || seconds > MAX_SECONDS {
                return Err(ApiError::invalid(format!(
                    "expires_in: between 1 and {MAX_SECONDS} seconds"
                )));
            }
            Ok(now.plus_seconds(seconds))
        }
        (None, None) => Ok(None),
    }
}

impl CreateKeyRequest {
    pub fn into_new_key(self, now: Timestamp) -> Result<NewKey, ApiError> {
        let metadata = self.metadata.unwrap_or_default();
        if serde_json::to_vec(&metadata).map_or(0, |v| v.len()) > MAX_METADATA {
            return Err(ApiError::invalid(format!(
                "metadata: at most {MAX_METADATA} bytes"
            )));
        }
        Ok(NewKey {
            owner: self
                .owner
                .as_deref()
                .map(|o| field("owner", Owner::parse(o)))
                .transpose()?,
            name: self
                .name
                .as_deref()
                .map(|n| field("name", KeyName::parse(n)))
                .transpose()?,
            apis: labels("apis", &self.apis)?,
            scopes: labels("scopes", &self.scopes)?,
            expires_at: expiry(self.expires_at.as_deref(), self.expires_in, now)?,
            metadata,
            issuer: self.issuer,
        })
    }
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

fn status_text(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "active",
        KeyStatus::Revoked => "revoked",
        KeyStatus::Expired => "expired",
    }
}

impl KeyView {
    pub fn of(record: &KeyRecord, now: Timestamp) -> Self {
        Self {
            id: record.id.to_string(),
            prefix: record.prefix.to_string(),
            owner: record.owner.to_string(),
            name: record.name.as_ref().map(|n| n.as_str().to_owned()),
            apis: record.apis.iter().map(ToString::to_string).collect(),
            scopes: record.scopes.iter().map(ToString::to_string).collect(),
            metadata: record.metadata.clone(),
            status: status_text(record.status(now)).into(),
            hashing: record.verifier.alg().as_str().into(),
            created_at: record.created_at.to_string(),
            expires_at: record.expires_at.map(|t| t.to_string()),
            revoked_at: record.revoked.as_ref().map(|r| r.at.to_string()),
            revoked_reason: record.revoked.as_ref().map(|r| r.reason.clone()),
            rotated_from: record.rotated_from.map(|k| k.to_string()),
            replaced_by: record.replaced_by.map(|k| k.to_string()),
        }
    }
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
    pub propagation: Option<crate::propagation::Confirmation>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this owner's keys.
    #[param(value_type = Name, required = false)]
    pub owner: Option<String>,
    /// Only keys in this state.
    #[param(value_type = KeyStatusName, required = false)]
    pub status: Option<String>,
    /// Only keys that may call this API.
    #[param(value_type = Name, required = false)]
    pub api: Option<String>,
    /// Page size, default 100.
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` from the previous page.
    #[param(value_type = Cursor, required = false)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// `all` (default): answer once every live edge has applied the change; `none`: answer at commit.
    #[param(value_type = WaitMode, required = false)]
    pub wait: Option<String>,
    /// How long `wait=all` may take, in milliseconds; default 2000.
    #[param(nullable = false, minimum = 0, maximum = 60000)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why: kept in the audit log and shown on the key.
    #[schema(schema_with = reason_schema)]
    pub reason: String,
}

/// A revocation reason, checked exactly as the document's schema says (on the text as sent), then
/// stored without surrounding white space.
pub fn reason(text: &str) -> Result<String, ApiError> {
    if text.chars().count() > REASON_MAX {
        return Err(ApiError::invalid(format!(
            "reason: at most {REASON_MAX} characters"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "reason: must not contain control characters",
        ));
    }
    if !quench_edge::contract::is_visible_text(text) {
        return Err(ApiError::invalid("reason: must not be empty"));
    }
    Ok(text.trim().to_owned())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Revocation {
    pub key: KeyView,
    /// The key was already revoked; nothing changed.
    pub already_revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<crate::propagation::Confirmation>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the old key keeps working, in seconds (0 = it stops now), up to ten years.
    #[serde(deserialize_with = "quench_core::whole::u64")]
    #[schema(minimum = 0, maximum = 315360000)]
    pub grace_seconds: u64,
    /// The new key's expiry; must be in the future. By default it does not expire. At most one of
    /// `expires_at` and `expires_in`.
    #[schema(value_type = Option<Instant>)]
    pub expires_at: Option<String>,
    /// The new key's lifetime in seconds, up to ten years.
    #[serde(default, deserialize_with = "quench_core::whole::option_u64")]
    #[schema(minimum = 1, maximum = 315360000)]
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRevokeRequest {
    /// Exactly one of `owner`, `api`, `ids`.
    #[serde(default, deserialize_with = "present")]
    pub owner: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub api: Option<String>,
    #[serde(default, deserialize_with = "present")]
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
    pub propagation: Option<crate::propagation::Confirmation>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// At least one; duplicates are merged.
    #[schema(value_type = Vec<ScopeName>, min_items = 1)]
    pub scopes: Vec<String>,
    /// Confine the token to one owner's keys.
    #[schema(value_type = Option<Name>)]
    pub owner: Option<String>,
}

/// What a manager token may do.
#[derive(Debug, Deserialize, ToSchema)]
pub enum ScopeName {
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "keys:read")]
    KeysRead,
    #[serde(rename = "keys:write")]
    KeysWrite,
    #[serde(rename = "keys:revoke")]
    KeysRevoke,
    #[serde(rename = "leaks:report")]
    LeaksReport,
    #[serde(rename = "edge")]
    Edge,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub id: String,
    /// The plaintext token, shown once.
    pub token: String,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub created_at: String,
}

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

/// A nonce given as a query parameter, or 422.
pub fn nonce(text: Option<&str>) -> Result<Option<quench_core::sign::Nonce>, ApiError> {
    text.map(|text| {
        quench_core::sign::Nonce::parse(text).map_err(|e| ApiError::invalid(format!("nonce: {e}")))
    })
    .transpose()
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

#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeList {
    pub head_seq: u64,
    pub edges: Vec<crate::propagation::EdgeView>,
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

/// A key id from a request path: 404 for anything else, and the answer never repeats the text, which
/// may be a whole key pasted where its id belongs.
pub fn key_id(text: &str) -> Result<KeyId, ApiError> {
    given_id(text, "key").map_err(ApiError::not_found)
}

/// Parses an id given for a key (or a token, which has the key format). On failure, the message to
/// answer with: it names the id of a whole key given by mistake, and never repeats the text.
pub fn given_id(text: &str, what: &str) -> Result<KeyId, String> {
    match GivenId::parse(text) {
        Ok(GivenId::Id(id)) => Ok(id),
        Ok(GivenId::WholeKey { id, .. }) => Err(whole_key_given(what, id)),
        Err(_) => Err(format!(
            "no {what} with that id: a {what} id is 10 base62 characters"
        )),
    }
}

fn whole_key_given(what: &str, id: KeyId) -> String {
    format!(
        "that is a whole {what}, secret included, not a {what} id: its id is {id}. \
         The {what} has been exposed (request logs, shell history): treat it as leaked"
    )
}

/// A `cursor` parameter: the `next_cursor` of an earlier page (1 to 19 digits, as the document says).
pub fn page_cursor(cursor: Option<&str>) -> Result<Option<u64>, ApiError> {
    cursor
        .map(|c| {
            let digits = (1..=19).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit());
            digits
                .then(|| c.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| ApiError::invalid("cursor: not one this API returned"))
        })
        .transpose()
}

pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(format!(
            "limit: between 1 and {MAX_PAGE}"
        ))),
    }
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
