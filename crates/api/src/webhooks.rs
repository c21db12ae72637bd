//! Webhooks: subscribing a URL to revocations and usage alerts, and what was delivered to it.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::contract::Name;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// `https://` (or `http://`) URL that receives POSTs, at most 2048 characters: a host name or IPv4
    /// address, optionally credentials, a port, a path and a query; no fragment. An IP literal must be a
    /// public address or in a range the operator allowed (`--webhook-allow`); names are checked when they
    /// resolve.
    #[schema(schema_with = webhook_url_schema)]
    pub url: String,
    /// Default both. Duplicates are merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<WebhookEvent>>, min_items = 1)]
    pub events: Option<Vec<String>>,
    /// Only this owner's keys. A token confined to an owner always gets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Name>)]
    pub owner: Option<String>,
}

// The schema of `quench_core::WebhookEvent`'s wire names (the doc line below is the schema's description).
/// What a webhook is told about.
#[derive(Debug, ToSchema)]
pub enum WebhookEvent {
    #[schema(rename = "key.revoked")]
    KeyRevoked,
    #[schema(rename = "alert.raised")]
    AlertRaised,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    /// The URL with user information and query values masked (`***`).
    pub url: String,
    pub events: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// Signs every delivery (HMAC-SHA256); shown once.
    pub secret: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// Longest webhook URL accepted.
pub const MAX_URL: usize = 2048;

/// The webhook URLs accepted, in the document and by the server alike. Narrower than what a URL parser
/// takes (no IPv6 literals, no fragments, host names whose last label starts with a letter), so that
/// every URL it matches parses, and the document can say exactly what is refused.
pub const WEBHOOK_URL_PATTERN: &str = concat!(
    r"^https?://",
    r"([A-Za-z0-9._~!$&'()*+,;=%-]+(:[A-Za-z0-9._~!$&'()*+,;=%-]*)?@)?",
    r"(([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?",
    r"|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))",
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0))?",
    r"(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?",
    r"(\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$",
);

fn webhook_url_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(WEBHOOK_URL_PATTERN))
        .max_length(Some(MAX_URL))
        .build()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: u32,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<String>,
    /// Why the last attempt failed. A token confined to an owner sees only `failed` or `refused by the
    /// address guard`, never a receiver's status or a transport error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Page size, default 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}
