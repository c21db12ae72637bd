//! Leak intake: reports of keys found where they should not be, from a scanner or from GitHub's secret
//! scanning, and what became of each key.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most keys in one report.
pub const MAX_LEAKS: usize = 1_000;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakReport {
    /// 1 to 1000 keys.
    #[schema(min_items = 1, max_items = 1000)]
    pub keys: Vec<LeakedKey>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakedKey {
    /// The whole key, as found.
    pub key: String,
    /// Who found it (a scanner's name, a person).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Where it was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeakOutcome {
    /// Revoked by this report.
    Revoked,
    AlreadyRevoked,
    /// Well-formed, but no key with that id and secret exists.
    Unknown,
    /// Not in the Quench key format (or its checksum fails).
    NotQuenchKey,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeakResult {
    /// The key id, when the text was a well-formed key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub outcome: LeakOutcome,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeakResults {
    /// One per reported key, in order.
    pub results: Vec<LeakResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<crate::keys::Confirmation>,
}

/// One token as GitHub's secret scanning sends it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GithubToken {
    pub token: String,
    #[serde(rename = "type")]
    pub token_type: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
}

/// What GitHub sends: at most 1000 tokens (the document's request body; the handler reads
/// `Vec<GithubToken>` once the signature checks out).
pub struct GithubReport;

impl utoipa::PartialSchema for GithubReport {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name("GithubToken"))
            .max_items(Some(MAX_LEAKS))
            .description(Some("The tokens GitHub found, at most 1000"))
            .into()
    }
}

impl ToSchema for GithubReport {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            GithubToken::name().into(),
            <GithubToken as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// GitHub's feedback format: one label per reported token, identified by its SHA-256.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GithubFeedback {
    pub token_hash: String,
    pub token_type: String,
    /// `true_positive` (a live or already revoked Quench key) or `false_positive`.
    pub label: String,
}
