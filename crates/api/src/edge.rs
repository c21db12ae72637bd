//! The edge API's bodies: a verification asked and answered, and the edge's health.

use quench_core::{KeyId, Reason, Verdict};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::contract::KeyIdText;

/// Why a key was refused.
pub struct RefusalReason;

impl utoipa::PartialSchema for RefusalReason {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let reasons = [
            Reason::Malformed,
            Reason::Unknown,
            Reason::Revoked,
            Reason::Expired,
            Reason::Forbidden,
            Reason::Stale,
        ];
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(reasons.map(Reason::as_str)))
            .into()
    }
}

impl ToSchema for RefusalReason {}

/// An IPv4 or IPv6 address.
pub struct IpAddress;

impl utoipa::PartialSchema for IpAddress {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type,
        };
        let of = |format| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(format)))
        };
        AnyOfBuilder::new()
            .item(of(KnownFormat::Ipv4))
            .item(of(KnownFormat::Ipv6))
            .description(Some("An IPv4 or IPv6 address"))
            .into()
    }
}

impl ToSchema for IpAddress {}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The key as presented. Anything that is not a Quench key is answered `malformed`.
    pub key: String,
    /// The API being called: a key limited to other APIs is answered `forbidden`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// A scope the call needs: a key without it is answered `forbidden`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The address of the client that presented the key, for usage monitoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<IpAddress>)]
    pub client_ip: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    /// Why the key is refused; only when `valid` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = RefusalReason)]
    pub reason: Option<Reason>,
    /// On a refusal, only when the presented secret matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = KeyIdText)]
    pub key_id: Option<KeyId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<String>)]
    pub scopes: Option<Vec<String>>,
}

impl From<&Verdict> for VerifyResponse {
    fn from(verdict: &Verdict) -> Self {
        match verdict {
            Verdict::Valid { key_id, profile } => Self {
                valid: true,
                reason: None,
                key_id: Some(*key_id),
                owner: Some(profile.owner.to_string()),
                scopes: Some(profile.scopes.iter().map(ToString::to_string).collect()),
            },
            Verdict::Invalid { reason, key_id } => Self {
                valid: false,
                reason: Some(*reason),
                key_id: *key_id,
                owner: None,
                scopes: None,
            },
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, `starting` or `stale`.
    #[schema(pattern = "^(ok|starting|stale)$")]
    pub status: String,
    pub edge: String,
    pub region: String,
    pub applied_seq: u64,
    /// The highest log head the manager has signed to this edge; `head_seq - applied_seq` is the lag.
    pub head_seq: u64,
    /// When `applied_seq` was applied, in Unix microseconds: propagation benchmarks read it.
    pub applied_at_us: i64,
    pub staleness_ms: Option<u64>,
    pub max_staleness_ms: u64,
    pub keys: usize,
}
