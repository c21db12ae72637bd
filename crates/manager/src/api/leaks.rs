//! Leak intake: keys found where they should not be are revoked at once.
//!
//! A report must carry the whole key: the manager revokes only when the presented secret matches, so a
//! reporter proves the leak and nobody can revoke keys by guessing ids. A key that does not verify is
//! answered `unknown`, exactly like an id that does not exist.

use std::sync::Arc;

use axum::{Json, extract::State};
use quench_core::{KeyRecord, key::PresentedKey, record::REASON_MAX, scope::Scope};
use quench_edge::web::{ApiError, JsonBody, QueryParams};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    Wait,
    model::{ErrorResponse, WaitQuery},
    store_error,
};
use crate::{Manager, auth::Principal, metrics::ManagerMetrics, propagation::Confirmation};

/// Most keys in one report.
pub const MAX_LEAKS: usize = 1_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakReport {
    pub keys: Vec<LeakedKey>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakedKey {
    /// The whole key, as found.
    pub key: String,
    /// Who found it (a scanner's name, a person).
    pub source: Option<String>,
    /// Where it was found.
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
    pub propagation: Option<Confirmation>,
}

fn clean(text: Option<&str>) -> String {
    text.unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// Does the reported secret match the stored key? Slow hashes run off the async workers.
async fn proves(record: &KeyRecord, text: &str) -> bool {
    let verifier = record.verifier.clone();
    let text = text.to_owned();
    tokio::task::spawn_blocking(move || {
        PresentedKey::parse(&text).is_ok_and(|key| verifier.matches(key.secret()))
    })
    .await
    .unwrap_or(false)
}

#[utoipa::path(
    post, path = "/v1/leaks", tag = "keys",
    params(WaitQuery),
    request_body = LeakReport,
    responses(
        (status = 200, description = "What became of each reported key; revoked ones with reason `leaked`", body = LeakResults),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn report(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    QueryParams(wait): QueryParams<WaitQuery>,
    JsonBody(report): JsonBody<LeakReport>,
) -> Result<Json<LeakResults>, ApiError> {
    principal.require(Scope::LeaksReport)?;
    let wait = Wait::parse(&wait, manager.config.default_wait_timeout)?;
    if report.keys.is_empty() || report.keys.len() > MAX_LEAKS {
        return Err(ApiError::invalid(format!(
            "keys: between 1 and {MAX_LEAKS}"
        )));
    }
    let mut results = Vec::with_capacity(report.keys.len());
    let mut last_seq = None;
    for leaked in &report.keys {
        let Ok(key) = PresentedKey::parse(leaked.key.trim()) else {
            results.push(LeakResult {
                key_id: None,
                outcome: LeakOutcome::NotQuenchKey,
            });
            continue;
        };
        let key_id = Some(key.id().to_string());
        let record = manager.store.key(key.id()).await.map_err(store_error)?;
        let record = match record {
            Some(record)
                if record.prefix == key.prefix() && proves(&record, leaked.key.trim()).await =>
            {
                record
            }
            _ => {
                results.push(LeakResult {
                    key_id,
                    outcome: LeakOutcome::Unknown,
                });
                continue;
            }
        };
        if record.revoked.is_some() {
            results.push(LeakResult {
                key_id,
                outcome: LeakOutcome::AlreadyRevoked,
            });
            continue;
        }
        let mut reason = format!(
            "leaked: reported by {} at {}",
            clean(leaked.source.as_deref()),
            clean(leaked.url.as_deref())
        );
        reason.truncate(REASON_MAX);
        let revoked = manager
            .store
            .revoke_key(record.id, &reason, &principal.actor())
            .await
            .map_err(store_error)?;
        let outcome = match &revoked.event {
            Some(event) => {
                manager.publish(std::slice::from_ref(event)).await;
                last_seq = Some(event.seq);
                ManagerMetrics::add(&manager.metrics.keys_revoked, 1);
                ManagerMetrics::add(&manager.metrics.leaks_revoked, 1);
                tracing::warn!(key = %record.id, principal = %principal.id, "leaked key revoked");
                LeakOutcome::Revoked
            }
            None => LeakOutcome::AlreadyRevoked,
        };
        results.push(LeakResult { key_id, outcome });
    }
    let propagation = match last_seq {
        Some(seq) => manager.confirm(Some(seq), wait).await,
        None => None,
    };
    Ok(Json(LeakResults {
        results,
        propagation,
    }))
}
