//! Manager tokens: who may call the manager API, with which scopes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::contract::Name;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// At least one; duplicates are merged.
    #[schema(value_type = Vec<ScopeName>, min_items = 1)]
    pub scopes: Vec<String>,
    /// Confine the token to one owner's keys.
    #[serde(skip_serializing_if = "Option::is_none")]
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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenRevocation {
    pub id: String,
    /// The token was already revoked; nothing changed.
    pub already_revoked: bool,
}
