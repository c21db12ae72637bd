//! Usage alerts: what an edge reports when a key's traffic looks stolen, what the manager did with each
//! report, and the alerts as people read them.

use quench_core::{KeyId, Timestamp, usage::Measures};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::contract::{Cursor, KeyIdText, Name};

/// An alert as an edge raises it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageAlert {
    /// 32 hex digits, random: the same alert reported twice is recorded once (16 to 64 accepted).
    #[schema(pattern = "^[0-9A-Fa-f]+$", min_length = 16, max_length = 64)]
    pub id: String,
    #[schema(value_type = KeyIdText)]
    pub key_id: KeyId,
    /// The policy rule that fired.
    #[schema(pattern = "^[A-Za-z0-9_.:@-]+$", min_length = 1, max_length = 64)]
    pub rule: String,
    /// `distinct_addresses`, `requests` or `above_usual`.
    #[schema(pattern = "^[A-Za-z0-9_.:@-]+$", min_length = 1, max_length = 32)]
    pub kind: String,
    #[schema(value_type = crate::contract::Instant)]
    pub raised_at: Timestamp,
    #[serde(deserialize_with = "quench_core::whole::u32")]
    #[schema(value_type = u64, maximum = 4294967295_u64)]
    pub window_seconds: u32,
    #[schema(value_type = AlertMeasures)]
    pub measures: Measures,
}

/// What the rule saw (`quench_core::usage::Measures`): estimates, finite and not negative.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AlertMeasures {
    /// Requests in the sliding window.
    #[schema(minimum = 0)]
    requests: f64,
    /// Distinct client addresses in the sliding window.
    #[schema(minimum = 0)]
    distinct_addresses: f64,
    /// The key's usual requests per window.
    #[schema(minimum = 0)]
    usual: f64,
    /// Completed windows the key has been watched for.
    #[schema(value_type = u64, maximum = 4294967295_u64)]
    history_windows: u32,
}

/// What an edge sends the manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertReport {
    #[schema(value_type = crate::contract::ShortName)]
    pub edge: String,
    #[schema(value_type = crate::contract::ShortName)]
    pub region: String,
    /// 1 to 1000 alerts.
    #[schema(min_items = 1, max_items = 1000)]
    pub alerts: Vec<UsageAlert>,
}

/// What the manager did with one reported alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertOutcome {
    pub id: String,
    /// Its position in the alert log.
    pub seq: u64,
    /// `false` when this alert id was already recorded (a retried report).
    pub new: bool,
    /// `alert` or `revoke`, as the manager's policy says for the rule.
    pub action: String,
    /// This report revoked the key.
    pub revoked: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertOutcomes {
    /// One per reported alert, in order.
    pub results: Vec<AlertOutcome>,
}

#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Only alerts about this key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = KeyIdText, required = false)]
    pub key_id: Option<String>,
    /// Only alerts about this owner's keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Name, required = false)]
    pub owner: Option<String>,
    /// Page size, default 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` from the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Cursor, required = false)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    pub seq: u64,
    pub id: String,
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub rule: String,
    /// `distinct_addresses`, `requests` or `above_usual`.
    pub kind: String,
    /// `alert` or `revoke`.
    pub action: String,
    pub edge: String,
    pub raised_at: String,
    pub received_at: String,
    /// What the rule saw: region, window_seconds and measures.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<AlertView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
