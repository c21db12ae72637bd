//! Parsing the manager API's requests (the JSON itself is `quench_api`'s) into domain types, in one place
//! each, so handlers only see valid values and every refusal names the field at fault; and showing domain
//! records as the API's JSON.

use quench_api::{contract::is_visible_text, web::ApiError};
use quench_core::{
    GivenId, KeyId, KeyName, KeyRecord, Label, Owner, Timestamp,
    record::{KeyStatus, REASON_MAX},
};

pub use quench_api::{
    ErrorDetail, ErrorResponse,
    keys::{
        BulkByApi, BulkByIds, BulkByOwner, BulkRevocation, BulkRevokeRequest, BulkRevokeShape,
        CreateKeyRequest, CreatedKey, KeyList, KeyStatusName, KeyView, ListQuery, Revocation,
        RevokeRequest, RotateRequest, Rotation, WaitMode, WaitQuery,
    },
    system::{
        AuditPage, AuditQuery, AuditRecord, EdgeList, EdgeRegistrationRequest, EdgeRotation,
        EdgeRotationRequest, EventPage, EventsQuery, Health, MAX_SEQ, SigningKey, SigningKeys,
        SnapshotQuery,
    },
    tokens::{CreateTokenRequest, CreatedToken, ScopeName},
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

/// A create request parsed into domain types, or 422 naming the field at fault.
pub fn new_key(request: CreateKeyRequest, now: Timestamp) -> Result<NewKey, ApiError> {
    let metadata = request.metadata.unwrap_or_default();
    if serde_json::to_vec(&metadata).map_or(0, |v| v.len()) > MAX_METADATA {
        return Err(ApiError::invalid(format!(
            "metadata: at most {MAX_METADATA} bytes"
        )));
    }
    Ok(NewKey {
        owner: request
            .owner
            .as_deref()
            .map(|o| field("owner", Owner::parse(o)))
            .transpose()?,
        name: request
            .name
            .as_deref()
            .map(|n| field("name", KeyName::parse(n)))
            .transpose()?,
        apis: labels("apis", &request.apis)?,
        scopes: labels("scopes", &request.scopes)?,
        expires_at: expiry(request.expires_at.as_deref(), request.expires_in, now)?,
        metadata,
        issuer: request.issuer,
    })
}

fn status_text(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "active",
        KeyStatus::Revoked => "revoked",
        KeyStatus::Expired => "expired",
    }
}

/// A key as the API shows it: never its secret, never its hash.
pub fn key_view(record: &KeyRecord, now: Timestamp) -> KeyView {
    KeyView {
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
    if !is_visible_text(text) {
        return Err(ApiError::invalid("reason: must not be empty"));
    }
    Ok(text.trim().to_owned())
}

/// A nonce given as a query parameter, or 422.
pub fn nonce(text: Option<&str>) -> Result<Option<quench_core::sign::Nonce>, ApiError> {
    text.map(|text| {
        quench_core::sign::Nonce::parse(text).map_err(|e| ApiError::invalid(format!("nonce: {e}")))
    })
    .transpose()
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
